"""The `StampedePolicy` spec: the runbook as data.

These pydantic models are the only schema source: the CRD (`stampede crd`), `stampede lint` and
the operator all validate through them, so a policy accepted by one is accepted by all. Field
docstrings become the CRD descriptions that `kubectl explain` shows.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any, Self

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

# Limits that keep one policy from costing the operator (and the API server) more than a runbook needs:
# every list and map a policy author controls is bounded, in the CRD as in the models (issue 17).
MAX_QUERY_TIMEOUT = timedelta(seconds=60)
"""Longest `prometheus.timeout`: a worker blocked on one tenant's Prometheus is a worker others lack."""
DEFAULT_QUERY_TIMEOUT = timedelta(seconds=10)
MAX_SIGNALS = 100
MAX_CONDITIONS = 64
MAX_PHASES = 20
MAX_ACTIONS_PER_PHASE = 50
MAX_ACTIONS = 100
"""Actions of all phases together."""
MAX_RESTARTS = 10
MAX_CONFIGMAP_KEYS = 64
MAX_CONFIGMAP_VALUE = 1024 * 1024
"""A ConfigMap holds at most 1 MiB in all, so a longer value could never be written."""

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

    def model_post_init(self, context: Any, /) -> None:
        _share_fields_set(self)

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        copied = super().model_copy(update=update, deep=deep)
        _share_fields_set(copied)
        return copied


_FIELDS_SETS: dict[frozenset[str], set[str]] = {}
"""One `set` object per distinct set of field names, shared by every instance that set exactly those fields."""


def _share_fields_set(model: BaseModel) -> None:
    """Replace the instance's own `__pydantic_fields_set__` by the shared set with the same names.

    pydantic gives every instance its own set of the fields it was given: 216 to 728 bytes, often more than the
    instance's values (tracemalloc, `bench/memory.py`: a third of an idle policy's parsed spec and status). The
    models are frozen, so pydantic never adds to that set in place: `__setattr__` refuses before it would, and
    `model_copy` copies the set before updating it. The distinct sets are few (subsets of each model's fields
    that policies actually set), so the table stays small.
    """
    fields = model.__pydantic_fields_set__
    shared = _FIELDS_SETS.setdefault(frozenset(fields), fields)
    if shared is not fields:
        object.__setattr__(model, "__pydantic_fields_set__", shared)


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
    timeout: Duration | None = None
    """Timeout of one query (Go duration): at most 60s and at most pollInterval; default 10s, or pollInterval
    when that is shorter."""
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
        if self.bearer_token_secret_ref or self.basic_auth_secret_ref:
            which = "bearerTokenSecretRef" if self.bearer_token_secret_ref else "basicAuthSecretRef"
            if self.url is not None and not self.url.lower().startswith("https://"):
                raise ValueError(f"{which}: credentials are sent over https only, and url {self.url!r} is not https")
            if self.insecure_skip_verify:
                raise ValueError(
                    f"{which}: credentials are never sent with insecureSkipVerify: true "
                    "(give the server's CA in caSecretRef instead)"
                )
        if self.timeout is not None and self.timeout <= timedelta(0):
            raise ValueError(f"timeout must be positive, got {format_duration(self.timeout)!r}")
        if self.timeout is not None and self.timeout > MAX_QUERY_TIMEOUT:
            raise ValueError(
                f"timeout: {format_duration(self.timeout)!r} is longer than the maximum "
                f"{format_duration(MAX_QUERY_TIMEOUT)}"
            )
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
    any: Annotated[list[ConditionText], Field(min_length=1, max_length=MAX_CONDITIONS)]
    """Conditions `<signal> <op> <number>`; the level fires when any one holds at every poll for `for`."""
    for_: Annotated[Duration, Field(alias="for")] = timedelta(0)
    """How long a condition must hold before the level fires (Go duration)."""

    def parsed(self) -> list[Condition]:
        return [parse_condition(text) for text in self.any]


class RecoverySpec(Model):
    """When an incident is over."""

    all: Annotated[list[ConditionText], Field(min_length=1, max_length=MAX_CONDITIONS)]
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
    data: Annotated[
        dict[Annotated[str, Field(pattern=CONFIGMAP_KEY)], Annotated[str, Field(max_length=MAX_CONFIGMAP_VALUE)]],
        Field(min_length=1, max_length=MAX_CONFIGMAP_KEYS),
    ]
    """Keys and values to set during the incident (at most 64 keys)."""
    restart: Annotated[list[WorkloadRef], Field(max_length=MAX_RESTARTS)] = Field(default_factory=list)
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
    dry_run: bool = False
    """Shadow this action only: it is planned (a `WouldApply` event, recorded in status.planned) but never
    made, while the policy's other actions act; a new action can be tried during real incidents first."""

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
    actions: Annotated[list[Action], Field(min_length=1, max_length=MAX_ACTIONS_PER_PHASE)]
    """Actions applied when the phase is entered (at most 100 actions in all phases together)."""


class EscalationLevel(Model):
    """One rung of the escalation chain (the runbook's primary → secondary → emergency)."""

    name: LabelName
    """Level name, shown in the `Escalated` event, the record and `status.incident.escalationLevel`."""
    after: Duration | None = None
    """The level is reached when the incident is older than this (Go duration)."""
    at_severity: Severity | None = None
    """The level is reached when the incident reaches this severity."""
    notify: LabelName | None = None
    """Name of the notification target (in notifications.targets) that this level's message goes to."""

    @model_validator(mode="after")
    def _reachable(self) -> EscalationLevel:
        if self.after is None and self.at_severity is None:
            raise ValueError(f"escalation level {self.name!r} must set after, atSeverity or both")
        return self


class Escalation(Model):
    """When an incident is escalated to people."""

    after: Duration = timedelta(minutes=30)
    """Escalate incidents older than this (the single level `escalated`, used when `levels` is empty)."""
    at_severity: Severity = Severity.P0
    """Escalate incidents that reach this severity (the single level `escalated`, used when `levels` is empty)."""
    levels: Annotated[list[EscalationLevel], Field(max_length=10)] = Field(default_factory=list)
    """The escalation chain: levels are reached in order, each once per incident, each by age or severity."""

    def chain(self) -> list[EscalationLevel]:
        """The levels in force: `levels`, or the one level `escalated` that `after`/`atSeverity` describe."""
        if self.levels:
            return list(self.levels)
        return [EscalationLevel(name="escalated", after=self.after, at_severity=self.at_severity)]


class Rollback(Model):
    """How changes are undone after recovery."""

    step_delay: Duration = timedelta(seconds=30)
    """Wait between undoing two actions (newest first), so caches refill gradually."""
    wait_for_rollout: bool = True
    """After an undo that restarted or scaled a workload, the next undo waits until that workload's rollout
    is complete (observedGeneration ≥ generation, updatedReplicas = availableReplicas = replicas)."""
    rollout_timeout: Duration = timedelta(minutes=10)
    """Longest wait for one rollout; then a `RolloutTimedOut` warning event, and rollback goes on."""

    @model_validator(mode="after")
    def _positive_timeout(self) -> Rollback:
        if self.rollout_timeout <= timedelta(0):
            raise ValueError(f"rolloutTimeout must be positive, got {format_duration(self.rollout_timeout)!r}")
        return self


class WebhookFormat(StrEnum):
    SLACK = "slack"
    TEAMS = "teams"
    JSON = "json"


class Webhook(Model):
    """An incoming webhook (Slack-compatible by default)."""

    secret_ref: SecretKeyRef
    """Secret key holding the webhook URL."""
    format: WebhookFormat = WebhookFormat.SLACK
    """slack posts `{"text"}`, teams a MessageCard, json one object with namespace, policy, incident, event,
    severity, phase, level, message and time."""


class PagerDutySeverity(StrEnum):
    CRITICAL = "critical"
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


class PagerDuty(Model):
    """PagerDuty Events API v2: trigger on open and on each escalation, resolve on close."""

    routing_key_secret_ref: SecretKeyRef
    """Secret key holding the integration's routing key."""
    severity: PagerDutySeverity | None = None
    """PagerDuty severity of the alert; default from the incident's (P0 critical, P1 error, P2 warning)."""


class NotificationTarget(Model):
    """One place incident messages go; exactly one of webhook, pagerduty."""

    name: LabelName
    """Target name, used by escalation levels' `notify` and in the record's notifications."""
    webhook: Webhook | None = None
    """An incoming webhook."""
    pagerduty: PagerDuty | None = None
    """A PagerDuty service (Events API v2)."""

    @model_validator(mode="after")
    def _exactly_one(self) -> NotificationTarget:
        if (self.webhook is None) == (self.pagerduty is None):
            raise ValueError(f"notification target {self.name!r} must set exactly one of webhook, pagerduty")
        return self


class Notifications(Model):
    """Where incident messages go."""

    webhook: Webhook | None = None
    """POST `{"text": ...}` on incident opened, phase entered, escalated and closed (one slack target)."""
    targets: Annotated[list[NotificationTarget], Field(max_length=20)] = Field(default_factory=list)
    """The incident's notification targets. A target named by an escalation level's `notify` receives that
    level's escalation (and, for PagerDuty, the resolve) only; every other target receives every message."""

    def all_targets(self) -> list[NotificationTarget]:
        """`targets`, plus `webhook` as the slack target named `webhook`."""
        out = list(self.targets)
        if self.webhook is not None:
            out.insert(0, NotificationTarget(name="webhook", webhook=self.webhook))
        return out


class Targets(Model):
    """Response-time targets (the runbook's KPIs), each measured from the start of the breach window."""

    detection: Duration = timedelta(minutes=2)
    """Breach → incident opened."""
    mitigation: Duration = timedelta(minutes=5)
    """Breach → every action of the first phase applied (or failed for good)."""
    stabilization: Duration = timedelta(minutes=15)
    """Breach → the recovery conditions first held."""
    full_recovery: Duration = timedelta(minutes=30)
    """Breach → incident closed (every change rolled back)."""
    mttr: Duration = timedelta(minutes=15)
    """Breach → recovery confirmed (RecoveryStarted)."""


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
    signals: Annotated[list[Signal], Field(min_length=1, max_length=MAX_SIGNALS)]
    """Named PromQL queries."""
    severities: Annotated[list[SeveritySpec], Field(min_length=1, max_length=3)]
    """Conditions per severity level."""
    recovery: RecoverySpec
    """Conditions that end an incident."""
    phases: Annotated[list[Phase], Field(min_length=1, max_length=MAX_PHASES)]
    """Mitigation phases, entered by incident age."""
    escalation: Escalation = Field(default_factory=Escalation)
    """When the incident is escalated."""
    rollback: Rollback = Field(default_factory=Rollback)
    """How changes are rolled back."""
    notifications: Notifications | None = None
    """Incident notifications."""
    history_limit: Annotated[int, Field(ge=0, le=1000)] = 10
    """How many closed StampedeIncident records of this policy are kept; older ones are deleted."""
    targets: Targets = Field(default_factory=Targets)
    """Response-time targets the KPIs of every incident are measured against."""
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
        timeout = self.prometheus.timeout
        if timeout is not None and timeout > self.poll_interval:
            errors.append(
                f"prometheus.timeout: {format_duration(timeout)!r} is longer than pollInterval "
                f"{format_duration(self.poll_interval)!r} (a query must end before the next poll)"
            )
        count = sum(len(phase.actions) for phase in self.phases)
        if count > MAX_ACTIONS:
            errors.append(f"phases: {count} actions in all phases, more than the maximum {MAX_ACTIONS}")
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
        errors += _escalation_errors(self)
        if errors:
            raise ValueError("; ".join(errors))
        return self

    @property
    def query_timeout(self) -> timedelta:
        """The timeout each Prometheus query gets: `prometheus.timeout`, or 10s capped at pollInterval."""
        if self.prometheus.timeout is not None:
            return self.prometheus.timeout
        return min(DEFAULT_QUERY_TIMEOUT, self.poll_interval)

    def actions(self) -> list[tuple[int, Action]]:
        """Every action with the index of its phase, in runbook order."""
        return [(i, action) for i, phase in enumerate(self.phases) for action in phase.actions]

    def action(self, name: str) -> Action | None:
        return next((a for _, a in self.actions() if a.name == name), None)


def _escalation_errors(spec: PolicySpec) -> list[str]:
    """Level names are unique and every `notify` names a declared target, so no message goes nowhere."""
    levels = spec.escalation.levels
    errors = _duplicates("escalation level", [(f"escalation.levels[{i}].name", lv.name) for i, lv in enumerate(levels)])
    targets = spec.notifications.all_targets() if spec.notifications else []
    errors += _duplicates(
        "notification target", [(f"notifications.targets[{i}].name", t.name) for i, t in enumerate(targets)]
    )
    names = {t.name for t in targets}
    for i, level in enumerate(levels):
        if level.notify is not None and level.notify not in names:
            errors.append(f"escalation.levels[{i}].notify: names undeclared notification target {level.notify!r}")
    return errors


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
