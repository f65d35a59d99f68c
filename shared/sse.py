"""Server-sent events without a task group per stream.

sse-starlette runs four anyio tasks per stream (events, ping, shutdown, disconnect) and cancels
three of them when the stream ends: each ended stream left ~200 objects of cyclic garbage (the
cancelled tasks, their ``CancelledError`` tracebacks and frames), freed only by the cyclic GC,
in pauses that stalled every request in flight (docs/benchmarks.md, "Live streams without
cyclic garbage"). Here one coroutine per stream waits, with ``asyncio.wait``, on the next event,
the client's disconnect and the server's shutdown, and pings when idle. Two helper tasks a
stream (the pending ``receive()`` and the pending next event) end normally, or are cancelled and
their exception taken back so that nothing keeps a cycle.

Same wire format as sse-starlette 3.x (which this replaces): ``text/event-stream;
charset=utf-8``, ``Cache-Control: no-store``, ``Connection: keep-alive``, ``X-Accel-Buffering:
no``, fields ``id``, ``event``, ``data`` (one line each, multi-line data split), ``retry``, CRLF
line ends, and a ``: ping - <time>`` comment after ``ping`` seconds without a send. HEAD answers
the headers with an empty body (the stream never starts).
"""

from __future__ import annotations

import asyncio
import re
import signal
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

PING_SECONDS = 15.0
SEND_TIMEOUT_SECONDS = 30.0
SHUTDOWN_POLL_SECONDS = 0.5
SEP = "\r\n"
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class Event:
    """One server-sent event."""

    data: str
    event: str | None = None
    id: str | None = None
    retry: int | None = None  # milliseconds the browser waits before reconnecting


def encode(event: Event) -> bytes:
    """The event on the wire (each data line its own ``data:`` field; no line breaks in the
    ``id`` or ``event`` fields)."""
    lines = []
    if event.id is not None:
        lines.append("id: " + _LINE_BREAK.sub("", event.id))
    if event.event is not None:
        lines.append("event: " + _LINE_BREAK.sub("", event.event))
    lines.extend("data: " + line for line in _LINE_BREAK.split(event.data))
    if event.retry is not None:
        lines.append(f"retry: {int(event.retry)}")
    return (SEP.join(lines) + SEP + SEP).encode()


def comment(text: str) -> bytes:
    """A comment (browsers ignore it; proxies see traffic)."""
    return "".join(f": {line}{SEP}" for line in _LINE_BREAK.split(text)).encode() + SEP.encode()


def ping(now: datetime) -> bytes:
    return comment(f"ping - {now}")


class Shutdown:
    """Tells open streams that the server is shutting down.

    uvicorn's graceful shutdown waits for open connections before it runs the app's lifespan
    shutdown, and tells the app nothing: a stream would hold it for ever. Like sse-starlette,
    this finds the uvicorn server through the SIGTERM handler it installs while serving (its
    bound ``handle_exit``) and polls its ``should_exit``: one task per process, started by the
    lifespan (``watch``), not one per stream. ``set()`` ends every stream too (the lifespan's
    end, and servers that are not uvicorn)."""

    def __init__(self) -> None:
        self.future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def set(self) -> None:
        if not self.future.done():
            self.future.set_result(None)

    async def watch(self, poll: float = SHUTDOWN_POLL_SECONDS) -> None:
        server = _uvicorn_server()
        if server is None:
            return
        while not server.should_exit:
            await asyncio.sleep(poll)
        self.set()


def _uvicorn_server() -> Any:
    handler = signal.getsignal(signal.SIGTERM)
    server = getattr(handler, "__self__", None)
    return server if hasattr(server, "should_exit") else None


class EventStream(Response):
    """A server-sent events response: the events of ``events`` as they come, a ping comment
    after ``ping`` seconds without a send, and an end when the events end, the client
    disconnects, or ``shutdown`` is done. A send that takes over ``send_timeout`` seconds (a
    client that stopped reading) raises ``TimeoutError``."""

    media_type = "text/event-stream"

    def __init__(
        self,
        events: AsyncGenerator[Event, None],
        *,
        shutdown: Shutdown | None = None,
        ping: float = PING_SECONDS,
        send_timeout: float = SEND_TIMEOUT_SECONDS,
        status_code: int = 200,  # FastAPI's OpenAPI reads the default status from here
    ) -> None:
        if ping <= 0:
            raise ValueError("ping must be > 0 seconds")
        self.events = events
        self.shutdown = shutdown
        self.ping = ping
        self.send_timeout = send_timeout
        self.status_code = status_code
        self.background = None
        self.init_headers(
            {
                "Cache-Control": "no-store",
                "Connection": "keep-alive",
                "X-Accel-Buffering": "no",
                "Content-Type": f"{self.media_type}; charset={self.charset}",
            }
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            send = self._wrap_websocket_denial_send(send)
        start = {"type": "http.response.start", "status": self.status_code}
        start["headers"] = self.raw_headers
        if scope.get("method") == "HEAD":  # headers only: the stream never starts
            await self.events.aclose()
            await self._send(send, start)
            await self._send(send, _body(b"", more=False))
            return
        await self._stream(receive, send, start)

    async def _stream(self, receive: Receive, send: Send, start: Message) -> None:
        loop = asyncio.get_running_loop()
        disconnect = loop.create_task(_disconnected(receive))
        ends: set[asyncio.Future[Any]] = {disconnect}
        if self.shutdown is not None:
            ends.add(self.shutdown.future)
        pending: asyncio.Task[Event | None] | None = None
        complete = False
        try:
            await self._send(send, start)
            while True:
                if pending is None:
                    pending = loop.create_task(_next(self.events))
                done, _ = await asyncio.wait(
                    (pending, *ends), timeout=self.ping, return_when=asyncio.FIRST_COMPLETED
                )
                if pending in done:
                    event = pending.result()
                    pending = None
                    if event is None:
                        break
                    await self._send(send, _body(encode(event)))
                elif done:  # the client left, or the server is shutting down
                    break
                else:
                    await self._send(send, _body(ping(datetime.now(UTC))))
            if not disconnect.done():
                await self._send(send, _body(b"", more=False))
                complete = True
        finally:
            await _settle(pending)
            await self.events.aclose()
            if complete:
                # uvicorn answers a pending receive() with http.disconnect once the response is
                # complete: let it, rather than cancel it
                await asyncio.sleep(0)
            await _settle(disconnect)

    async def _send(self, send: Send, message: Message) -> None:
        async with asyncio.timeout(self.send_timeout):
            await send(message)


def _body(chunk: bytes, *, more: bool = True) -> Message:
    return {"type": "http.response.body", "body": chunk, "more_body": more}


async def _next(events: AsyncIterator[Event]) -> Event | None:
    try:
        return await anext(events)
    except StopAsyncIteration:
        return None


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _settle(task: asyncio.Task[Any] | None) -> None:
    """End a helper task and take its outcome back. A cancelled task keeps its
    ``CancelledError``, whose traceback holds frames that hold the task: a cycle, unless the
    error is taken (``result()`` hands it over and forgets it)."""
    if task is None:
        return
    if not task.done():
        task.cancel()
        await asyncio.wait((task,))
    try:
        task.result()
    except BaseException:  # noqa: BLE001,S110 - ended on purpose; its outcome is not wanted
        pass
