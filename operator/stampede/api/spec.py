"""The `StampedePolicy` spec: the runbook as data.

These pydantic models are the only schema source: the CRD (`stampede crd`), `stampede lint` and
the operator all validate through them, so a policy accepted by one is accepted by all. Field
docstrings become the CRD descriptions that `kubectl explain` shows.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, ValidationInfo, model_validator
from pydantic.alias_generators import to_camel

from .conditions import SIGNAL_NAME_PATTERN, Condition, ConditionText, parse_condition
from .durations import Duration, format_duration
from .kinds import ChangeKind

# The API server's own grammars (k8s.io/apimachinery/pkg/util/validation): IsDNS1123Subdomain (dot-separated
# labels, so no `..` or `.-`), IsDNS1123Label, and IsConfigMapKey (not `.`, `..` or a leading `..`). Lengths
# are bounded with max_length where these are used; the patterns are RE2-compatible, as the CRD needs.
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
CONFIGMAP_KEY = r"^\.?[-_a-zA-Z0-9][-._a-zA-Z0-9]{0,251}$"
URL_PATTERN = r"^https?://[^\s/@]+(/[^\s]*)?$"

#: Booleans and integers are strict: the API server refuses `"true"` or `"10"` where the CRD says boolean or
#: integer, so the models must not coerce them either. The one exception is a policy rendered from a template:
#: `$(param)` substitution only ever yields text, and that text never passed the CRD's type checks, so there
#: (validation context `TEMPLATE_RENDERED`) a whole-number or true/false text takes its typed value.
TEMPLATE_RENDERED = "templateRendered"


def _typed_template_text(value: Any, info: ValidationInfo) -> Any:
    if not isinstance(value, str) or not (info.context or {}).get(TEMPLATE_RENDERED):
        return value
    text = value.strip()
    if text in ("true", "false"):
        return text == "true"
    if text.lstrip("-").isdigit() and text.isascii():
        return int(text)
    return value


StrictBool = Annotated[bool, Field(strict=True), BeforeValidator(_typed_template_text)]

Name = Annotated[str, Field(pattern=DNS_SUBDOMAIN, max_length=253)]
LabelName = Annotated[str, Field(pattern=DNS_LABEL, max_length=63)]


class Model(BaseModel):
    """Shared configuration: camelCase on the wire, unknown fields rejected, docstrings as docs."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
        frozen=True,
    )


class Severity(StrEnum):
    """Incident severity; P0 is the most severe."""

    P0 = "P0"
    P1 = "P1"
    P2 = "P2"

    @property
    def rank(self) -> int:
        """Higher is more severe (P0 → 2, P2 → 0), so `max` picks the worst."""
        return 2 - int(self.value[1])

    def at_least(self, other: Severity) -> bool:
        """True when this severity is as severe as `other` or more."""
        return self.rank >= other.rank


class Mode(StrEnum):
    ENFORCE = "Enforce"
    DRY_RUN = "DryRun"


class OnMetricsError(StrEnum):
    HOLD = "Hold"
    CONTINUE = "Continue"


class SecretKeyRef(Model):
    """A key of a Secret in the policy's own namespace."""

    name: Name
    """Name of the Secret (in the policy's namespace)."""
    key: Annotated[str, Field(pattern=CONFIGMAP_KEY)]
    """Key inside the Secret's data."""


class SecretRef(Model):
    """A Secret in the policy's own namespace."""

    name: Name
    """Name of the Secret (in the policy's namespace)."""


class PrometheusSpec(Model):
    """Where and how to query Prometheus."""

    url: Annotated[str, Field(pattern=URL_PATTERN, max_length=2048)] | None = None
    """Base URL of the Prometheus HTTP API; defaults to the operator's STAMPEDE_PROMETHEUS_URL."""
    timeout: Duration = timedelta(seconds=10)
    """Timeout of one query (Go duration)."""
    bearer_token_secret_ref: SecretKeyRef | None = None
    """Secret key holding a bearer token sent as `Authorization: Bearer`."""
    basic_auth_secret_ref: SecretRef | None = None
    """Secret with keys `username` and `password` for HTTP basic auth."""
    ca_secret_ref: SecretKeyRef | None = None
    """Secret key holding a PEM CA bundle used to verify the server's certificate."""
    insecure_skip_verify: StrictBool = False
    """Skip TLS certificate verification (not for production)."""

    @model_validator(mode="after")
    def _one_auth(self) -> PrometheusSpec:
        if self.bearer_token_secret_ref and self.basic_auth_secret_ref:
            raise ValueError("set at most one of bearerTokenSecretRef and basicAuthSecretRef")
        if self.timeout <= timedelta(0):
            raise ValueError(f"timeout must be positive, got {format_duration(self.timeout)!r}")
        return self


class Signal(Model):
    """A named PromQL query that yields one number."""

    name: Annotated[str, Field(pattern=SIGNAL_NAME_PATTERN)]
    """Name used by conditions, e.g. `hitRate`."""
    query: Annotated[str, Field(min_length=1, max_length=8192)]
    """PromQL yielding a scalar or a single-element vector; anything else makes the signal unknown."""


class SeveritySpec(Model):
    """When an incident of this level fires."""

    level: Severity
    """P0 (most severe), P1 or P2."""
    any: Annotated[list[ConditionText], Field(min_length=1, max_length=64)]
    """Conditions `<signal> <op> <number>`; the level fires when any one holds at every poll for `for`."""
    for_: Annotated[Duration, Field(alias="for")] = timedelta(0)
    """How long a condition must hold before the level fires (Go duration)."""

    def parsed(self) -> list[Condition]:
        return [parse_condition(text) for text in self.any]


class RecoverySpec(Model):
    """When an incident is over."""

    all: Annotated[list[ConditionText], Field(min_length=1, max_length=64)]
    """Conditions that must all hold, at every poll, for `for` before rollback starts."""
    for_: Annotated[Duration, Field(alias="for")] = timedelta(0)
    """How long recovery must hold (Go duration)."""

    def parsed(self) -> list[Condition]:
        return [parse_condition(text) for text in self.all]


class WorkloadKind(StrEnum):
    DEPLOYMENT = "Deployment"
    STATEFUL_SET = "StatefulSet"
    DAEMON_SET = "DaemonSet"


class ScalableKind(StrEnum):
    DEPLOYMENT = "Deployment"
    STATEFUL_SET = "StatefulSet"


class WorkloadRef(Model):
    """A workload in the policy's namespace."""

    kind: WorkloadKind
    """Deployment, StatefulSet or DaemonSet."""
    name: Name
    """Name of the workload."""


class ConfigMapAction(Model):
    """Merge keys into a ConfigMap; the earlier values are recorded and restored on rollback."""

    name: Name
    """Name of the ConfigMap (in the policy's namespace)."""
    data: Annotated[dict[Annotated[str, Field(pattern=CONFIGMAP_KEY)], str], Field(min_length=1)]
    """Keys and values to set during the incident."""
    restart: list[WorkloadRef] = Field(default_factory=list)
    """Workloads that read this ConfigMap as environment variables: rollout-restarted after the change
    and again after rollback."""


class ScaleAction(Model):
    """Scale a workload up to at least `replicas` (never down)."""

    kind: ScalableKind
    """Deployment or StatefulSet."""
    name: Name
    """Name of the workload."""
    replicas: Annotated[int, Field(ge=1, le=100000, strict=True), BeforeValidator(_typed_template_text)]
    """Minimum replicas during the incident (capped by the operator's STAMPEDE_MAX_REPLICAS); an HPA's
    minReplicas is raised instead when one targets the workload."""


class JobAction(Model):
    """Create one Job per incident from a CronJob's jobTemplate."""

    from_cron_job: Name
    """Name of the CronJob whose jobTemplate is instantiated, like `kubectl create job --from=cronjob/NAME`."""


class Action(Model):
    """One mitigation step; exactly one of configMap, scale, job."""

    name: LabelName
    """Unique name of the action within the policy (used in status and events)."""
    min_severity: Severity = Severity.P2
    """Skip this action for incidents milder than this severity."""
    config_map: ConfigMapAction | None = None
    """Merge keys into a ConfigMap."""
    scale: ScaleAction | None = None
    """Scale a Deployment or StatefulSet up."""
    job: JobAction | None = None
    """Create a Job from a CronJob."""

    @model_validator(mode="after")
    def _exactly_one(self) -> Action:
        chosen = [
            name
            for name, value in (("configMap", self.config_map), ("scale", self.scale), ("job", self.job))
            if value is not None
        ]
        if len(chosen) != 1:
            got = ", ".join(chosen) if chosen else "none"
            raise ValueError(f"action {self.name!r} must set exactly one of configMap, scale, job (got {got})")
        return self

    @property
    def kind(self) -> ChangeKind:
        """Kind of the target object."""
        if self.config_map is not None:
            return ChangeKind.CONFIG_MAP
        if self.scale is not None:
            return ChangeKind(self.scale.kind.value)
        return ChangeKind.JOB

    @property
    def target(self) -> str:
        """Name of the target object (the CronJob for jobs)."""
        if self.config_map is not None:
            return self.config_map.name
        if self.scale is not None:
            return self.scale.name
        assert self.job is not None
        return self.job.from_cron_job


class Phase(Model):
    """A time-boxed mitigation phase; phases are cumulative."""

    name: LabelName
    """Unique phase name, shown in status and `kubectl get`."""
    after: Duration = timedelta(0)
    """Time since incident start at which this phase is entered (non-decreasing across phases)."""
    actions: Annotated[list[Action], Field(min_length=1, max_length=100)]
    """Actions applied when the phase is entered."""


class Escalation(Model):
    """When an incident is escalated to people."""

    after: Duration = timedelta(minutes=30)
    """Escalate incidents older than this."""
    at_severity: Severity = Severity.P0
    """Escalate incidents that reach this severity."""


class Rollback(Model):
    """How changes are undone after recovery."""

    step_delay: Duration = timedelta(seconds=30)
    """Wait between undoing two actions (newest first), so caches refill gradually."""


class Webhook(Model):
    """A Slack-compatible incoming webhook."""

    secret_ref: SecretKeyRef
    """Secret key holding the webhook URL."""


class Notifications(Model):
    """Where incident messages go."""

    webhook: Webhook | None = None
    """POST `{"text": ...}` on incident opened, phase entered, escalated and closed."""


class TemplateKind(StrEnum):
    NAMESPACED = "StampedePolicyTemplate"
    CLUSTER = "ClusterStampedePolicyTemplate"


PARAMETER_NAME = r"^[A-Za-z_][A-Za-z0-9_.-]{0,62}$"
ParameterName = Annotated[str, Field(pattern=PARAMETER_NAME, max_length=63)]


class TemplateRef(Model):
    """The template this policy is rendered from."""

    kind: TemplateKind
    """StampedePolicyTemplate (in the policy's namespace) or ClusterStampedePolicyTemplate."""
    name: Name
    """Name of the template."""


class PolicySpec(Model):
    """Desired behaviour of a StampedePolicy: signals, severities, recovery and the phased runbook."""

    mode: Mode = Mode.ENFORCE
    """Enforce applies changes; DryRun only records in status.planned what it would change."""
    suspend: StrictBool = False
    """Keep polling and reporting, but take no action and no rollback."""
    poll_interval: Duration = timedelta(seconds=15)
    """How often Prometheus is queried (minimum 1s)."""
    prometheus: PrometheusSpec = Field(default_factory=PrometheusSpec)
    """Prometheus connection."""
    on_metrics_error: OnMetricsError = OnMetricsError.HOLD
    """Hold freezes the incident while any signal is unknown; Continue lets phases advance by time."""
    signals: Annotated[list[Signal], Field(min_length=1, max_length=100)]
    """Named PromQL queries."""
    severities: Annotated[list[SeveritySpec], Field(min_length=1, max_length=3)]
    """Conditions per severity level."""
    recovery: RecoverySpec
    """Conditions that end an incident."""
    phases: Annotated[list[Phase], Field(min_length=1, max_length=20)]
    """Mitigation phases, entered by incident age."""
    escalation: Escalation = Field(default_factory=Escalation)
    """When the incident is escalated."""
    rollback: Rollback = Field(default_factory=Rollback)
    """How changes are rolled back."""
    notifications: Notifications | None = None
    """Incident notifications."""
    template_ref: TemplateRef | None = None
    """Render this policy from a template: its `spec.policy` with `$(name)` replaced by `arguments`, then
    this policy's own top-level spec fields laid over it. Signals, severities, recovery and phases may then
    come from the template alone."""
    arguments: dict[Annotated[str, Field(pattern=PARAMETER_NAME)], Annotated[str, Field(max_length=8192)]] = Field(
        default_factory=dict
    )
    """Values of the template's parameters, by name (strings; `"8"` fills a number field)."""

    _template_generation: int | None = PrivateAttr(default=None)

    @property
    def template_generation(self) -> int | None:
        """metadata.generation of the template this spec was rendered from (None without a template)."""
        return self._template_generation

    @model_validator(mode="after")
    def _cross_field(self) -> PolicySpec:
        errors: list[str] = []
        if self.poll_interval < timedelta(seconds=1):
            errors.append(f"pollInterval: must be at least 1s, got {format_duration(self.poll_interval)!r}")
        names = [signal.name for signal in self.signals]
        errors += _duplicates("signal name", [(f"signals[{i}].name", s.name) for i, s in enumerate(self.signals)])
        errors += _duplicates(
            "severity level", [(f"severities[{i}].level", s.level.value) for i, s in enumerate(self.severities)]
        )
        errors += _duplicates("phase name", [(f"phases[{i}].name", p.name) for i, p in enumerate(self.phases)])
        errors += _duplicates(
            "action name",
            [
                (f"phases[{i}].actions[{j}].name", a.name)
                for i, p in enumerate(self.phases)
                for j, a in enumerate(p.actions)
            ],
        )
        declared = set(names)
        for i, severity in enumerate(self.severities):
            for j, condition in enumerate(severity.parsed()):
                if condition.signal not in declared:
                    errors.append(
                        f"severities[{i}].any[{j}]: condition {condition.text!r} names undeclared "
                        f"signal {condition.signal!r}"
                    )
        for j, condition in enumerate(self.recovery.parsed()):
            if condition.signal not in declared:
                errors.append(
                    f"recovery.all[{j}]: condition {condition.text!r} names undeclared signal {condition.signal!r}"
                )
        for i in range(1, len(self.phases)):
            if self.phases[i].after < self.phases[i - 1].after:
                errors.append(
                    f"phases[{i}].after: {format_duration(self.phases[i].after)!r} is earlier than "
                    f"phases[{i - 1}].after {format_duration(self.phases[i - 1].after)!r} (must be non-decreasing)"
                )
        if errors:
            raise ValueError("; ".join(errors))
        return self

    def actions(self) -> list[tuple[int, Action]]:
        """Every action with the index of its phase, in runbook order."""
        return [(i, action) for i, phase in enumerate(self.phases) for action in phase.actions]

    def action(self, name: str) -> Action | None:
        return next((a for _, a in self.actions() if a.name == name), None)


def _duplicates(what: str, located: list[tuple[str, str]]) -> list[str]:
    """One error per repeated value, at the path of the repeat, so lint points at the line to fix."""
    seen: set[str] = set()
    errors = []
    for path, value in located:
        if value in seen:
            errors.append(f"{path}: duplicate {what} {value!r}")
        seen.add(value)
    return errors


class ObjectMeta(BaseModel):
    """The part of metadata `stampede lint` checks; everything else passes through."""

    model_config = ConfigDict(extra="allow")
    name: Annotated[str, Field(pattern=DNS_SUBDOMAIN, max_length=253)]
    namespace: Annotated[str, Field(pattern=DNS_LABEL)] | None = None


class StampedePolicyDocument(BaseModel):
    """A whole StampedePolicy object as written in YAML (for `stampede lint`)."""

    model_config = ConfigDict(extra="forbid")
    apiVersion: str  # Kubernetes wire name, kept as is
    kind: str
    metadata: ObjectMeta
    spec: PolicySpec
    status: dict[str, Any] | None = None
