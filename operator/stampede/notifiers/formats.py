"""One incident message in the shape each kind of target expects, and one bounded POST to send it.

Adding a target kind means one payload function here (KEDA's one-backend-per-file habit, scaled to a
function each: they are a few lines). Payloads never carry secrets: the URL or routing key is only
used to send, and errors are described without it. Posting is bounded and inert to hostile servers: the
webhook allow-list is checked first, redirects are never followed, and answers' bodies are never read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from http import HTTPStatus
from typing import Any, Final

import aiohttp

from ..api.status import format_time
from ..urls import is_allowed, origin, url_problem

PAGERDUTY_DEFAULT_URL = "https://events.pagerduty.com/v2/enqueue"
"""PagerDuty's public Events API v2 endpoint (override with STAMPEDE_PAGERDUTY_URL)."""
PAGERDUTY_SEVERITY = {"P0": "critical", "P1": "error", "P2": "warning"}
TEAMS_COLOURS = {
    "IncidentOpened": "C62828",
    "PhaseEntered": "EF6C00",
    "Escalated": "6A1B9A",
    "IncidentClosed": "2E7D32",
}


@dataclass(frozen=True)
class Notice:
    """One thing to tell people about an incident."""

    namespace: str
    policy: str
    incident: str
    event: str
    """IncidentOpened, PhaseEntered, Escalated or IncidentClosed."""
    severity: str
    phase: str
    level: str
    """Escalation level (Escalated only)."""
    text: str
    """The runbook's message for people (Slack-style markup)."""
    summary: str
    """The event's one-sentence message."""
    time: datetime

    @property
    def dedup_key(self) -> str:
        return f"{self.namespace}/{self.policy}/{self.incident}"


def slack(notice: Notice) -> dict[str, Any]:
    return {"text": notice.text}


def teams(notice: Notice) -> dict[str, Any]:
    """A Microsoft Teams incoming-webhook MessageCard."""
    title = notice.text.splitlines()[0].replace("*", "") if notice.text else notice.event
    return {
        "@type": "MessageCard",
        "@context": "https://schema.org/extensions",
        "summary": notice.summary[:200],
        "themeColor": TEAMS_COLOURS.get(notice.event, "607D8B"),
        "title": title,
        "text": notice.text.replace("\n", "\n\n"),
    }


def json_notice(notice: Notice) -> dict[str, Any]:
    return {
        "namespace": notice.namespace,
        "policy": notice.policy,
        "incident": notice.incident,
        "event": notice.event,
        "severity": notice.severity,
        "phase": notice.phase,
        "level": notice.level,
        "message": notice.summary,
        "time": format_time(notice.time),
    }


def pagerduty(notice: Notice, *, routing_key: str, severity: str | None) -> dict[str, Any] | None:
    """An Events API v2 event: trigger on open and escalation, resolve on close; None for other events."""
    if notice.event == "IncidentClosed":
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": notice.dedup_key}
    if notice.event not in ("IncidentOpened", "Escalated"):
        return None
    return {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": notice.dedup_key,
        "payload": {
            "summary": notice.summary[:1024],
            "source": f"{notice.namespace}/{notice.policy}",
            "severity": severity or PAGERDUTY_SEVERITY.get(notice.severity, "error"),
            "timestamp": format_time(notice.time),
            "component": notice.policy,
            "group": notice.namespace,
            "class": "cache-stampede",
            "custom_details": {
                "incident": notice.incident,
                "severity": notice.severity,
                "phase": notice.phase,
                "level": notice.level,
                "event": notice.event,
            },
        },
    }


WEBHOOK_ALLOWED_URLS_ENV: Final = "STAMPEDE_ALLOWED_WEBHOOK_URLS"
MAX_ANSWER_HEADERS: Final = 64
"""Headers an answer may carry (aiohttp's default is 32768, each up to 8 KiB)."""
ANSWER_READ_BUFFER: Final = 1024
"""Bytes of an answer's body aiohttp may buffer before it stops reading the socket (default 64 KiB)."""


def webhook_url_problem(url: str, allowed_prefixes: Sequence[str]) -> str | None:
    """Why the operator may not send to `url` under the webhook allow-list, or None (an empty list: any URL).

    The sentence names the URL's scheme, host and port only: a webhook's path is often its secret.
    """
    if not allowed_prefixes or is_allowed(url, allowed_prefixes):
        return None
    problem = url_problem(url)
    if problem is not None:
        return f"its URL {problem}, and {WEBHOOK_ALLOWED_URLS_ENV} admits only plain http(s) URLs; nothing was sent"
    return f"its URL (at {origin(url)}) is not under any prefix allowed by {WEBHOOK_ALLOWED_URLS_ENV}; nothing was sent"


async def post_json(
    url: str, payload: dict[str, Any], *, seconds: float = 5.0, allowed_prefixes: Sequence[str] = ()
) -> str | None:
    """POST `payload`; None on success, else one sentence of our own saying what failed (never the URL).

    The URL is checked against `allowed_prefixes` (`STAMPEDE_ALLOWED_WEBHOOK_URLS`) before any connection.
    A 3xx answer is an error and never followed: a 307 keeps the POST and its payload, and would carry
    them to a host the allow-list never saw. The response body is never read: the status is all we need,
    a server's text must not reach events (it may echo secrets), and a huge body must not cost memory.
    Leaving the response unread makes aiohttp close the connection instead of draining it.
    """
    refused = webhook_url_problem(url, allowed_prefixes)
    if refused is not None:
        return refused
    try:
        async with (
            aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=seconds),
                # What a hostile answer can make us hold: a few headers, and a small read buffer for the
                # body we never read (aiohttp stops reading the socket when it is full).
                max_headers=MAX_ANSWER_HEADERS,
                read_bufsize=ANSWER_READ_BUFFER,
            ) as session,
            session.post(url, json=payload, allow_redirects=False) as response,
        ):
            if 300 <= response.status < 400:
                return f"the target answered with a redirect (HTTP {response.status}), which is never followed"
            if response.status >= 400:
                return f"the target answered HTTP {response.status}{_phrase(response.status)}"
            return None
    except TimeoutError:
        return f"the target did not answer within {seconds:g}s"
    except aiohttp.ClientError as error:
        return f"the target could not be reached ({type(error).__name__})"
    except ValueError:
        return "the target's URL is not a valid URL"


def _phrase(status: int) -> str:
    """The standard phrase of an HTTP status (ours, not the server's reason text, which it chooses)."""
    try:
        return f" ({HTTPStatus(status).phrase})"
    except ValueError:
        return ""
