"""The decision engine: readings + state + now → new state, changes to make or undo, events.

Pure and deterministic: no I/O, no clock, no globals. The operator, `stampede simulate` and the
tests all run this same code.
"""

from .changes import configmap_apply_patch, configmap_rollback, plan_configmap, scale_target
from .conditions import set_condition
from .decide import Decision, Event, decide, record_applied, record_undone

__all__ = [
    "Decision",
    "Event",
    "configmap_apply_patch",
    "configmap_rollback",
    "decide",
    "plan_configmap",
    "record_applied",
    "record_undone",
    "scale_target",
    "set_condition",
]
