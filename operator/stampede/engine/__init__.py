"""The decision engine: readings + state + now → new state, changes to make or undo, events.

Pure and deterministic: no I/O, no clock, no globals. The operator, `stampede simulate` and the
tests all run this same code, and carry its decisions out through the same `executing.execute`,
worded by `outcomes`.
"""

from .changes import (
    configmap_apply_patch,
    configmap_rollback,
    plan_configmap,
    plan_scale,
    scale_rollback,
    scale_target,
)
from .conditions import set_condition
from .decide import Decision, Event, decide, record_applied, record_undone

__all__ = [
    "Decision",
    "Event",
    "configmap_apply_patch",
    "configmap_rollback",
    "decide",
    "plan_configmap",
    "plan_scale",
    "record_applied",
    "record_undone",
    "scale_rollback",
    "scale_target",
    "set_condition",
]
