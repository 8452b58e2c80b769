"""The Prometheus URL allow-list: which Prometheus URLs a policy may make the operator query.

The matching itself (parsed URLs, whole path segments) is `stampede.urls`, shared with the webhook
allow-list; this module adds the Prometheus wording. The list comes from the operator's settings
(`STAMPEDE_ALLOWED_PROMETHEUS_URLS`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from ..urls import is_allowed, redact_url, url_problem

ALLOWED_URLS_ENV: Final = "STAMPEDE_ALLOWED_PROMETHEUS_URLS"


def check_url_allowed(url: str, allowed_prefixes: Sequence[str]) -> str | None:
    """None when `url` may be queried, otherwise the reason it may not.

    An empty allow-list means no restriction, but a URL must still be a plain http(s) URL without
    credentials (see `stampede.urls.is_allowed` for how prefixes match).
    """
    problem = url_problem(url)
    if problem is not None:
        return f"Prometheus URL {redact_url(url)!r} {problem}."
    if not allowed_prefixes or is_allowed(url, allowed_prefixes):
        return None
    return (
        f"Prometheus URL {redact_url(url)!r} is not under any prefix allowed by {ALLOWED_URLS_ENV} "
        f"({', '.join(allowed_prefixes)})."
    )


__all__ = ["ALLOWED_URLS_ENV", "check_url_allowed", "redact_url", "url_problem"]
