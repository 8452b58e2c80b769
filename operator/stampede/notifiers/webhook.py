"""POST a message to a Slack-compatible incoming webhook, bounded in time and never raising.

A notification is a courtesy to people; remediation must never wait for it or fail with it, so
the caller fires it in the background and turns a failure into a `NotificationFailed` event.
"""

from __future__ import annotations

import aiohttp


async def post(url: str, text: str, *, seconds: float = 5.0) -> str | None:
    """Send `{"text": ...}`; None on success, else one sentence saying what failed (URL not included)."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=seconds)) as session,
            session.post(url, json={"text": text}) as response,
        ):
            if response.status >= 300:
                body = (await response.text())[:200]
                return f"the webhook answered HTTP {response.status}: {body}"
            return None
    except TimeoutError:
        return f"the webhook did not answer within {seconds:g}s"
    except aiohttp.ClientError as error:
        return f"the webhook could not be reached ({type(error).__name__})"
    except ValueError:
        return "the webhook URL in the Secret is not a valid URL"
