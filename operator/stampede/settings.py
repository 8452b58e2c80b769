"""The operator's settings: every `STAMPEDE_*` environment variable, read and checked in this one place.

A typo in a Deployment's environment should stop `stampede run` at start with a line naming the variable and
the value, in the same one-line-per-problem form as `stampede lint`, rather than surface as a traceback or,
worse, as a policy misbehaving hours later. So each setting has bounds, the environment is read only by
`load_settings`, and everything else (handlers, `simulate`) takes a `Settings` value.

pydantic-settings reads and validates the variables (prefix `STAMPEDE_`); docs/configuration.md lists them.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Final

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails, InitErrorDetails
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .linting import validation_lines
from .notifiers.formats import PAGERDUTY_DEFAULT_URL
from .urls import redact_url, url_problem

ENV_PREFIX: Final = "STAMPEDE_"


class SettingsError(Exception):
    """The environment holds invalid settings; `lines` has one line per problem, each naming the variable."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


class Settings(BaseSettings):
    """Operator-wide settings; frozen, so a value handed around cannot drift from what was checked."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    prometheus_url: str | None = Field(default=None, max_length=2048)
    """Prometheus of policies without `spec.prometheus.url`."""
    allowed_prometheus_urls: Annotated[tuple[str, ...], NoDecode] = Field(default=(), max_length=100)
    """Comma-separated URL prefixes a policy's Prometheus must be under. Closed by default: unset, only
    `prometheus_url` may be queried; `*` (alone) opens it to any URL on purpose. Empty after loading: any."""
    allowed_webhook_urls: Annotated[tuple[str, ...], NoDecode] = Field(default=(), max_length=100)
    """Comma-separated URL prefixes a webhook target's URL (from its Secret) must be under, matched like
    `allowed_prometheus_urls`. Open by default, so existing webhooks keep working: unset or `*` (alone), any
    URL. Empty after loading: any."""
    require_target_opt_in: bool = False
    """Stricter mode for clusters without the admission policies: the operator writes to a target only if
    the target's `stampede.aurum.io/allowed-policies` annotation names the policy (undo is always allowed)."""
    max_replicas: int = Field(default=50, ge=1, le=10_000)
    """Cap of every scale action (replicas or an HPA's minReplicas)."""
    status_refresh_seconds: float = Field(default=60.0, ge=0.1, le=3600)
    """Steady-state status writes (signal values, lastPollTime) happen at most this often."""
    peering_priority: int | None = Field(default=None, ge=0, le=2**31 - 1)
    """kopf peering priority of this instance; `--priority` overrides it, and unset means a random draw."""
    peering_lifetime: int = Field(default=20, ge=5, le=3600)
    """Seconds a silent peer counts as alive (the bound on a failover); `--peering-lifetime` overrides it."""
    pagerduty_url: str = Field(default=PAGERDUTY_DEFAULT_URL, max_length=2048)
    """Where PagerDuty notification targets send Events API v2 events (a proxy, or PagerDuty's EU endpoint)."""
    max_concurrent_incidents: int = Field(default=0, ge=0, le=10_000)
    """Storm breaker: with this many policies already acting on an incident, a further policy that fires opens
    its incident but applies nothing until fewer are open (0: off)."""

    journal_namespace: str = Field(
        default="stampede-system",
        pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$",
        validation_alias=AliasChoices("STAMPEDE_JOURNAL_NAMESPACE", "POD_NAMESPACE", "journal_namespace"),
    )
    """Where the originals of ConfigMap changes are kept, one Secret per policy and action (never in a policy's
    status): STAMPEDE_JOURNAL_NAMESPACE, else the operator pod's own namespace (POD_NAMESPACE, set by the
    Deployment), else stampede-system."""
    metrics_per_policy_poll_duration: bool = True
    """`stampede_poll_duration_seconds` per policy (14 series each); false: per namespace only (policy="")."""
    metrics_signal_values: bool = True
    """`stampede_signal_value`, one series per policy and signal; false: not exported (status.signals keeps them)."""

    deletion_attempts: ClassVar[int] = 10
    """Rollback attempts on deletion before the finalizer is released with the changes left in place."""

    @field_validator("prometheus_url", mode="before")
    @classmethod
    def _empty_url_is_unset(cls, value: object) -> object:
        # A ConfigMap entry `STAMPEDE_PROMETHEUS_URL=` means "no default Prometheus", not an invalid URL.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("pagerduty_url", mode="before")
    @classmethod
    def _empty_pagerduty_url_is_default(cls, value: object) -> object:
        return PAGERDUTY_DEFAULT_URL if isinstance(value, str) and not value.strip() else value

    @field_validator("prometheus_url", "pagerduty_url")
    @classmethod
    def _plain_url(cls, value: str | None) -> str | None:
        if value is not None:
            problem = url_problem(value)
            if problem:
                raise ValueError(f"the URL {redact_url(value)!r} {problem}")
        return value

    @field_validator("allowed_prometheus_urls", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("allowed_webhook_urls", mode="before")
    @classmethod
    def _star_is_any(cls, value: object) -> object:
        # `*` says "any URL" on purpose, the same word as the Prometheus list; stored as the empty list.
        parts = cls._comma_separated(value)
        return () if isinstance(parts, tuple | list) and tuple(parts) == ("*",) else parts

    @model_validator(mode="before")
    @classmethod
    def _closed_by_default(cls, data: object) -> object:
        # Left empty, the list would let any policy make the operator send requests anywhere (SSRF); a
        # cluster that really wants that says so with `*`.
        if not isinstance(data, dict):
            return data
        raw = data.get("allowed_prometheus_urls")
        parts = cls._comma_separated(raw) if raw is not None else ()
        if parts in (("*",), ["*"]):
            return {**data, "allowed_prometheus_urls": ()}
        default = data.get("prometheus_url")
        # A bad default URL is reported once, as itself, not again as a bad prefix.
        if not parts and isinstance(default, str) and default.strip() and not url_problem(default.strip()):
            return {**data, "allowed_prometheus_urls": (default.strip(),)}
        return data

    @field_validator("allowed_prometheus_urls", "allowed_webhook_urls")
    @classmethod
    def _plain_prefixes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        # An unparseable prefix would silently admit nothing (or, worse, be mistaken for a restriction).
        problems = [f"{redact_url(prefix)!r} {problem}" for prefix in value if (problem := url_problem(prefix))]
        if problems:
            raise ValueError("; ".join(f"the prefix {text}" for text in problems))
        return value


def load_settings() -> Settings:
    """The settings from the process environment; raises SettingsError with one line per problem."""
    try:
        return Settings()
    except ValidationError as error:
        raise SettingsError(settings_lines(error)) from None


def settings_lines(error: ValidationError) -> list[str]:
    """`STAMPEDE_NAME: message (got value)` lines, formatted as `stampede lint` formats a policy's problems."""
    return validation_lines(ValidationError.from_exception_data(error.title, [_renamed(d) for d in error.errors()]))


def _renamed(detail: ErrorDetails) -> InitErrorDetails:
    """The problem located at the environment variable, with any credentials in a URL blanked out."""
    loc = detail["loc"]
    field = str(loc[0]) if loc else ""
    variable = f"{ENV_PREFIX}{field.upper()}" if field in Settings.model_fields else field
    value = detail["input"]
    if field in _URL_FIELDS and isinstance(value, str):
        value = ",".join(redact_url(part) for part in value.split(","))
    renamed = InitErrorDetails(type=detail["type"], loc=(variable, *loc[1:]), input=value)
    if "ctx" in detail:
        renamed["ctx"] = detail["ctx"]
    return renamed


_URL_FIELDS: Final = {"prometheus_url", "allowed_prometheus_urls", "allowed_webhook_urls", "pagerduty_url"}


__all__ = ["ENV_PREFIX", "Settings", "SettingsError", "load_settings", "settings_lines"]
