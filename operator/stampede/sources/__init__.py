"""Sources: where the operator's signals come from (today: Prometheus).

This layer turns remote metrics into `Reading`s that are a number or honestly unknown; it must not import
Kubernetes or kopf (enforced by import-linter), so handlers resolve Secrets and pass plain values in.

- `readings`: the Reading, its kinds, and the pure classification of Prometheus API answers;
- `allowlist`: which Prometheus URLs policies may point at;
- `endpoints`: an endpoint and its resolved credentials;
- `client`: the adapter around prometheus-api-client, the only module that imports it;
- `pooling`: worker threads with one deadline per call;
- `prometheus`: the source the operator, `lint` and `simulate` read through.
"""

from stampede.sources.allowlist import ALLOWED_URLS_ENV, check_url_allowed, url_problem
from stampede.sources.endpoints import Auth, Endpoint
from stampede.sources.prometheus import PrometheusSource
from stampede.sources.readings import Reading, ReadingKind, reading_from_error_response, reading_from_result

__all__ = [
    "ALLOWED_URLS_ENV",
    "Auth",
    "Endpoint",
    "PrometheusSource",
    "Reading",
    "ReadingKind",
    "check_url_allowed",
    "reading_from_error_response",
    "reading_from_result",
    "url_problem",
]
