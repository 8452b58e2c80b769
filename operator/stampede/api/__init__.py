"""The StampedePolicy API: spec and status models, durations, conditions and CRD generation.

Everything here is pure data and validation (pydantic only), shared by the operator, the CLI and
the engine so that all of them accept and reject exactly the same policies.
"""

from .conditions import Condition, parse_condition
from .durations import format_duration, parse_duration
from .spec import Action, Mode, OnMetricsError, PolicySpec, Severity
from .status import AppliedChange, HistoryEntry, IncidentStatus, PolicyStatus, State

GROUP = "stampede.aurum.io"
VERSION = "v1alpha1"
KIND = "StampedePolicy"
PLURAL = "stampedepolicies"
SINGULAR = "stampedepolicy"
SHORT_NAME = "stp"
CATEGORY = "stampede"
API_VERSION = f"{GROUP}/{VERSION}"

__all__ = [
    "API_VERSION",
    "CATEGORY",
    "GROUP",
    "KIND",
    "PLURAL",
    "SHORT_NAME",
    "SINGULAR",
    "VERSION",
    "Action",
    "AppliedChange",
    "Condition",
    "HistoryEntry",
    "IncidentStatus",
    "Mode",
    "OnMetricsError",
    "PolicySpec",
    "PolicyStatus",
    "Severity",
    "State",
    "format_duration",
    "parse_condition",
    "parse_duration",
]
