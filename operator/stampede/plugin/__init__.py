"""`kubectl stampede`: the on-call view of stampede policies, as a kubectl plugin.

A separate client of the API server (the user's kubeconfig, never an operator endpoint), so it works
wherever `kubectl` works and sees exactly what RBAC lets the user see. `views` turns objects into
tables and timelines (pure, tested without a cluster), `kube` reads and patches them, `main` is the
command line with kubectl's habits.
"""
