"""Status is never trusted for targets: a change's kind and name come from the spec action of its name.

Anyone who may write `stampedepolicies/status` could otherwise plant a record naming any object and
have the operator "roll it back" with its own rights. So before an undo, a re-apply or a journal
reconciliation, the record is re-derived from the spec: the ConfigMap and restart list of a configMap
action, the workload of a scale action (or an HPA, which the actuator then requires to carry the
policy's `applied-by` mark), and only keys the action sets. A record the spec does not account for is
refused, with a sentence saying why.
"""

from __future__ import annotations

from ..api.kinds import ChangeKind
from ..api.spec import PolicySpec
from ..api.status import AppliedChange, WorkloadStatusRef

SCALED_FIELDS = {
    ChangeKind.DEPLOYMENT: {"replicas"},
    ChangeKind.STATEFUL_SET: {"replicas"},
    ChangeKind.HORIZONTAL_POD_AUTOSCALER: {"minReplicas"},
}


def from_spec(spec: PolicySpec, change: AppliedChange) -> AppliedChange | str:
    """The record with its target taken from the spec, or why the spec does not account for it."""
    action = spec.action(change.action)
    if action is None:
        return f"the spec has no action {change.action}"
    if action.config_map is not None:
        if change.kind != ChangeKind.CONFIG_MAP:
            return f"action {action.name} changes a ConfigMap, not a {change.kind}"
        unknown = sorted(set(change.applied) - set(action.config_map.data))
        if unknown:
            return f"action {action.name} does not set {', '.join(unknown)}"
        restart = [WorkloadStatusRef(kind=w.kind.value, name=w.name) for w in action.config_map.restart]
        return change.model_copy(update={"name": action.config_map.name, "restart": restart})
    if action.scale is not None:
        workload = ChangeKind(action.scale.kind.value)
        if change.kind not in (workload, ChangeKind.HORIZONTAL_POD_AUTOSCALER):
            return f"action {action.name} scales a {workload}, not a {change.kind}"
        if not set(change.applied) <= SCALED_FIELDS[change.kind]:
            return f"action {action.name} sets no {', '.join(sorted(change.applied))} on a {change.kind}"
        if change.kind == workload:
            return change.model_copy(update={"name": action.scale.name, "restart": []})
        return change.model_copy(update={"restart": []})  # the HPA: its mark is checked on the object
    if change.kind != ChangeKind.JOB:
        return f"action {action.name} creates a Job, not a {change.kind}"
    return change.model_copy(update={"restart": []})


__all__ = ["from_spec"]
