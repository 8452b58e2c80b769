"""URL allow-lists shared by every place a policy names a URL the operator will send to (no SSRF through policies).

A StampedePolicy names its own Prometheus, and its webhook Secrets name the URLs notifications go to, so
without a check anyone who may create a policy could make the operator send requests anywhere, with its
network position. Both lists (`STAMPEDE_ALLOWED_PROMETHEUS_URLS`, `STAMPEDE_ALLOWED_WEBHOOK_URLS`) have one
syntax and one meaning, so they share this module; it sits below sources/ and notifiers/ (import-linter's
layers) because both use it. URLs are compared as parsed URLs, never as strings. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote, urlsplit

_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


@dataclass(frozen=True)
class _UrlParts:
    scheme: str
    host: str
    port: int
    segments: tuple[str, ...]


def _split_url(url: str) -> tuple[_UrlParts | None, str | None]:
    if any(ch.isspace() or ord(ch) < 0x20 or ch == "\\" for ch in url):
        return None, "contains whitespace, control characters or backslashes"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return None, f"cannot be parsed ({exc})"
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        return None, "must use http or https"
    if "@" in parts.netloc or parts.username is not None or parts.password is not None:
        # Credentials belong in a Secret, and "@" is the classic way to disguise the real host.
        return None, "must not contain user information (user:password@); put credentials in a Secret"
    if not parts.hostname:
        return None, "has no host"
    raw_segments = [segment for segment in parts.path.split("/") if segment]
    decoded = [unquote(segment) for segment in raw_segments]
    if any(segment in {".", ".."} or "/" in segment or "\\" in segment for segment in decoded):
        return None, "contains dot segments or encoded slashes in its path"
    return (
        _UrlParts(
            scheme=scheme,
            host=parts.hostname.lower(),
            port=port if port is not None else _DEFAULT_PORTS[scheme],
            segments=tuple(raw_segments),
        ),
        None,
    )


def url_problem(url: str) -> str | None:
    """Why `url` is not a plain http(s) URL without credentials, or None when it is."""
    return _split_url(url)[1]


def is_allowed(url: str, allowed_prefixes: Sequence[str]) -> bool:
    """Whether the plain http(s) `url` is under one of `allowed_prefixes` (False for a URL that is not plain).

    Prefixes are compared as parsed URLs (scheme, host, effective port, then whole path segments), never
    as strings, so "http://prom.ok:9090" does not admit "http://prom.ok:9090.evil.com",
    "http://prom.ok:9090@evil.com" or "http://prom.ok:90901". Callers decide what an empty list means.
    """
    target, _ = _split_url(url)
    if target is None:
        return False
    for prefix in allowed_prefixes:
        allowed, _ = _split_url(prefix.strip())
        if allowed is None:
            continue
        if (allowed.scheme, allowed.host, allowed.port) == (
            target.scheme,
            target.host,
            target.port,
        ) and target.segments[: len(allowed.segments)] == allowed.segments:
            return True
    return False


def origin(url: str) -> str:
    """`scheme://host:port` of `url`, for messages about URLs whose path may itself be a secret (webhooks)."""
    parts, _ = _split_url(url)
    if parts is None:
        return "<not a plain http(s) URL>"
    return f"{parts.scheme}://{parts.host}:{parts.port}"


def redact_url(url: str) -> str:
    """The URL without any user information, for messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]).geturl()


__all__ = ["is_allowed", "origin", "redact_url", "url_problem"]
