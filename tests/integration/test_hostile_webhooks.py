"""Webhooks that answer with hostile replies: redirects, huge bodies, echoed secrets, and URLs off the allow-list.

Each test runs the real posting code (`formats.post_json`, or the notifier that turns its sentence into a
NotificationFailed event) against local servers on 127.0.0.1 that misbehave on purpose.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import pytest
from aiohttp import web

from stampede.actuators.policies import Policies
from stampede.api.spec import NotificationTarget
from stampede.handlers.notifying import Notifier
from stampede.notifiers.formats import Notice, post_json

MARKER = "sk-LEAKED-0123456789abcdef"
"""A secret-looking string a hostile webhook puts in its answers; it must reach no event."""
HUGE = 200 * 1024 * 1024


@dataclass
class Server:
    url: str
    requests: list[bytes] = field(default_factory=list)


@contextlib.asynccontextmanager
async def serve(handler: Any) -> AsyncIterator[Server]:
    app = web.Application()
    server = Server(url="")

    async def recording(request: web.Request) -> web.StreamResponse:
        server.requests.append(await request.read())
        return cast(web.StreamResponse, await handler(request))

    app.router.add_route("*", "/{tail:.*}", recording)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    server.url = f"http://127.0.0.1:{port}"
    try:
        yield server
    finally:
        await runner.cleanup()


async def test_a_307_is_an_error_and_the_second_server_receives_nothing() -> None:
    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async with serve(ok) as second:

        async def redirect(_: web.Request) -> web.Response:
            return web.Response(status=307, headers={"Location": f"{second.url}/stolen"})

        async with serve(redirect) as first:
            problem = await post_json(f"{first.url}/hook", {"text": "incident"})
    assert problem == "the target answered with a redirect (HTTP 307), which is never followed"
    assert len(first.requests) == 1
    assert second.requests == []


@dataclass
class Firehose:
    """A raw TCP server answering every request with a 200 MiB body, counting the bytes it managed to send."""

    status: int
    sent: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            head = f"HTTP/1.1 {self.status} Whatever {MARKER}\r\nContent-Length: {HUGE}\r\n\r\n".encode()
            writer.write(head)
            chunk = (MARKER.encode() + b" ") * (65536 // (len(MARKER) + 1))
            while self.sent < HUGE:
                writer.write(chunk)
                await writer.drain()  # waits while the client does not read: what it reads is what is sent
                self.sent += len(chunk)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self.done.set()


@pytest.mark.parametrize("status", [200, 500])
async def test_a_200_mib_answer_is_not_read(status: int) -> None:
    firehose = Firehose(status=status)
    server = await asyncio.start_server(firehose.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        problem = await post_json(f"http://127.0.0.1:{port}/hook", {"text": "incident"}, seconds=30)
        await asyncio.wait_for(firehose.done.wait(), 30)
    finally:
        server.close()
        await server.wait_closed()
    assert problem == (None if status == 200 else "the target answered HTTP 500 (Internal Server Error)")
    # What the socket buffers on both sides hold, not the body: the client closed the connection unread.
    assert firehose.sent < 16 * 1024 * 1024


def notice() -> Notice:
    return Notice(
        namespace="aurum-dev",
        policy="aurum-cache",
        incident="20261203-120000",
        event="IncidentOpened",
        severity="P1",
        phase="immediate-mitigation",
        level="",
        text="*Cache stampede detected*",
        summary="Incident 20261203-120000 opened.",
        time=datetime(2026, 12, 3, 12, tzinfo=UTC),
    )


class SecretsOf:
    """The Secret reads the notifier makes, answered from a dict (the API server is not the subject here)."""

    def __init__(self, urls: dict[str, str]) -> None:
        self.urls = urls

    def read_secret(self, namespace: str, name: str, key: str) -> str:
        return self.urls[name]


async def failures(url: str, *, allowed: tuple[str, ...] = ()) -> list[str]:
    """The messages of the events the real notifier emits for one message to a slack target at `url`."""
    emitted: list[str] = []
    notifier = Notifier(
        policies=cast(Policies, SecretsOf({"hook": url})),
        emit=lambda _body, _type, reason, message: emitted.append(f"{reason}: {message}"),
        note=lambda **_: asyncio.sleep(0),
        pagerduty_url="https://events.pagerduty.com/v2/enqueue",
        allowed_webhook_urls=allowed,
        background=set(),
    )
    target = NotificationTarget.model_validate(
        {"name": "chat", "webhook": {"secretRef": {"name": "hook", "key": "url"}, "format": "slack"}}
    )
    await notifier._send({}, target, notice())
    return emitted


async def test_a_secret_in_the_answer_reaches_no_event() -> None:
    async def leaky(_: web.Request) -> web.Response:
        return web.Response(status=403, reason=f"Forbidden {MARKER}", text=f"invalid_token {MARKER}")

    async with serve(leaky) as server:
        emitted = await failures(f"{server.url}/services/T0/B0/XOXB-PATH-SECRET")
    assert emitted == [
        "NotificationFailed: Notification of IncidentOpened for incident 20261203-120000 to target chat failed: "
        "the target answered HTTP 403 (Forbidden)."
    ]
    assert all(MARKER not in text and "XOXB-PATH-SECRET" not in text for text in emitted)


async def test_a_url_outside_the_allow_list_is_refused_before_any_connection() -> None:
    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async with serve(ok) as server:
        allowed = ("https://hooks.slack.com/services",)
        emitted = await failures(f"{server.url}/services/XOXB-PATH-SECRET", allowed=allowed)
        admitted = await failures(f"{server.url}/services/XOXB-PATH-SECRET", allowed=(f"{server.url}/services",))
    host = server.url.removeprefix("http://")
    assert emitted == [
        "NotificationFailed: Notification of IncidentOpened for incident 20261203-120000 to target chat failed: "
        f"its URL (at http://{host}) is not under any prefix allowed by STAMPEDE_ALLOWED_WEBHOOK_URLS; "
        "nothing was sent."
    ]
    assert admitted == []
    assert len(server.requests) == 1  # the admitted one only


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/services.evil.example/x",
        "http://127.0.0.1:90/services/x",
        "https://127.0.0.1:9/services/x",
        "http://user:pw@127.0.0.1:9/services/x",
        "http://127.0.0.1:9/services/../admin",
        "http://127.0.0.1:9/servicesX",
    ],
)
async def test_the_webhook_allow_list_matches_parsed_urls_like_the_prometheus_one(url: str) -> None:
    problem = await post_json(url, {"text": "x"}, allowed_prefixes=("http://127.0.0.1:9/services",))
    assert problem is not None
    assert "STAMPEDE_ALLOWED_WEBHOOK_URLS" in problem
    assert "pw" not in problem


async def test_an_answer_with_endless_headers_is_cut_short() -> None:
    sent = 0
    done = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\n")
            for i in range(1_000_000):
                line = f"X-Junk-{i}: {MARKER * 100}\r\n".encode()
                writer.write(line)
                await writer.drain()
                sent += len(line)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            done.set()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        problem = await post_json(f"http://127.0.0.1:{port}/hook", {"text": "incident"}, seconds=30)
        await asyncio.wait_for(done.wait(), 30)
    finally:
        server.close()
        await server.wait_closed()
    assert problem is not None
    assert problem.startswith("the target could not be reached (")
    assert MARKER not in problem
    assert sent < 16 * 1024 * 1024
