"""Write argocd-cm-patch.yaml from health.lua (the Lua is kept in one place).

    python deploy/argocd/generate.py

tests/deploy/test_argocd.py fails while the two differ.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
KEY = "resource.customizations.health.stampede.aurum.io_StampedePolicy"
HEADER = """\
# Generated from deploy/argocd/health.lua by deploy/argocd/generate.py; do not edit.
# Merge into Argo CD's argocd-cm, e.g.
#   kubectl -n argocd patch configmap argocd-cm --patch-file deploy/argocd/argocd-cm-patch.yaml
# or list it under `patches:` of the kustomization that installs Argo CD.
apiVersion: v1
kind: ConfigMap
metadata:
  name: argocd-cm
  namespace: argocd
  labels:
    app.kubernetes.io/name: argocd-cm
    app.kubernetes.io/part-of: argocd
data:
"""


def render(lua: str) -> str:
    body = "".join(f"    {line}\n" if line else "\n" for line in lua.rstrip("\n").split("\n"))
    return f"{HEADER}  {KEY}: |\n{body}"


def main() -> None:
    lua = (HERE / "health.lua").read_text()
    (HERE / "argocd-cm-patch.yaml").write_text(render(lua))


if __name__ == "__main__":
    main()
