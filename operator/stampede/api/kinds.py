"""The kinds of object a change lands on, and which of them a rollback restores.

"Jobs are not undone" is a fact about a kind, stated once here for the engine (which steps a rollback
takes), the caller of the engine (what is checked for drift) and the actuators.
"""

from __future__ import annotations

from enum import StrEnum


class ChangeKind(StrEnum):
    """Kinds of object a change lands on (a scale action lands on its HPA when one targets the workload)."""

    CONFIG_MAP = "ConfigMap"
    DEPLOYMENT = "Deployment"
    STATEFUL_SET = "StatefulSet"
    HORIZONTAL_POD_AUTOSCALER = "HorizontalPodAutoscaler"
    JOB = "Job"

    @property
    def reversible(self) -> bool:
        """Whether a rollback restores the object; a Job is left to finish (its TTL removes it)."""
        return self is not ChangeKind.JOB


__all__ = ["ChangeKind"]
