"""Notifications reach a webhook receiver, and failures come back as one sentence, never raise."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from stampede.notifiers import messages
from stampede.notifiers.formats import post_json

CTX = messages.Context(
    namespace="aurum-dev",
    policy="aurum-cache",
    incident="20261127-101500",
    severity="P1",
    phase="immediate-mitigation",
    mode="Enforce",
)


class Receiver:
    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.status = 200
        self.delay = 0.0


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    state = Receiver()

    async def hook(request: web.Request) -> web.Response:
        await asyncio.sleep(state.delay)
        state.received.append(await request.json())
        return web.Response(status=state.status, text="ok" if state.status < 300 else "invalid_token")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield state, f"http://127.0.0.1:{port}/hook"
    await runner.cleanup()


async def test_a_payload_is_posted_as_json(receiver: tuple[Receiver, str]) -> None:
    state, url = receiver
    assert await post_json(url, {"text": "hello"}) is None
    assert state.received == [{"text": "hello"}]


async def test_a_rejected_message_is_reported_with_the_http_status_but_not_the_body(
    receiver: tuple[Receiver, str],
) -> None:
    state, url = receiver
    state.status = 403
    problem = await post_json(url, {"text": "hello"})
    assert problem == "the target answered HTTP 403 (Forbidden)"


async def test_a_slow_webhook_is_given_up_after_the_timeout(receiver: tuple[Receiver, str]) -> None:
    state, url = receiver
    state.delay = 2.0
    problem = await post_json(url, {"text": "hello"}, seconds=0.3)
    assert problem is not None
    assert "did not answer" in problem


async def test_an_unreachable_webhook_is_reported_without_its_url() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/secret-token-path"
    problem = await post_json(url, {"text": "hello"})
    assert problem is not None
    assert "could not be reached" in problem
    assert "secret-token-path" not in problem


@pytest.mark.parametrize("url", ["not a url", "ftp://127.0.0.1/hook", "http://[::1/hook"])
async def test_a_malformed_url_is_reported_not_raised(url: str) -> None:
    problem = await post_json(url, {"text": "hello"})
    assert problem is not None
    assert problem.startswith("the target ")
    assert url not in problem


def test_the_detected_message_names_incident_severity_and_how_to_follow() -> None:
    text = messages.detected(CTX, trigger="missRate > 0.8 held for 1m")
    assert "Cache stampede detected" in text
    assert "20261127-101500" in text
    assert "P1" in text
    assert "missRate > 0.8" in text
    assert "kubectl describe stp aurum-cache -n aurum-dev" in text


def test_the_resolved_message_lists_the_actions_taken() -> None:
    text = messages.resolved(CTX, summary="closed after 27m", actions=["scale-api", "warm-cache"])
    assert "resolved" in text
    assert "scale-api, warm-cache" in text
    assert "27m" in text


def _all_four(ctx: messages.Context) -> list[str]:
    return [
        messages.detected(ctx, trigger="missRate > 0.8 held for 1m"),
        messages.progress(ctx, detail="phase 2"),
        messages.escalated(ctx, reason="open for more than 30m"),
        messages.resolved(ctx, summary="closed after 27m", actions=["scale-api"]),
    ]


def test_dry_run_messages_say_nothing_is_changed() -> None:
    ctx = messages.Context(**{**CTX.__dict__, "mode": "DryRun"})
    for text in _all_four(ctx):
        assert "(DryRun: nothing is changed)" in text.splitlines()[0], text
    for text in _all_four(CTX):
        assert "DryRun" not in text, text
