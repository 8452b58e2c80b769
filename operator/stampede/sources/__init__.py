"""Sources: where the operator's signals come from (today: Prometheus).

This layer turns remote metrics into `Reading`s that are a number or honestly unknown; it must not import
Kubernetes or kopf (enforced by import-linter), so handlers resolve Secrets and pass plain values in.
"""

from stampede.sources.prometheus import (
    ALLOWED_URLS_ENV,
    Auth,
    Endpoint,
    PrometheusSource,
    Reading,
    ReadingKind,
    allowed_prefixes_from_env,
    check_url_allowed,
    reading_from_error_response,
    reading_from_result,
)

__all__ = [
    "ALLOWED_URLS_ENV",
    "Auth",
    "Endpoint",
    "PrometheusSource",
    "Reading",
    "ReadingKind",
    "allowed_prefixes_from_env",
    "check_url_allowed",
    "reading_from_error_response",
    "reading_from_result",
]
