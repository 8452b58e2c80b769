"""stampede-operator: detects cache stampedes from Prometheus and runs the mitigation runbook."""

__version__ = "0.1.0"
