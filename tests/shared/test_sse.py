"""The hand-written SSE response (``shared.sse``) over a real uvicorn server: sse-starlette's
wire format, events in order, a ping when idle, an end on disconnect and on shutdown, a send
timeout, HEAD without a stream, and no cyclic garbage per ended stream."""

from __future__ import annotations

import asyncio
import gc
import types
from collections.abc import AsyncGenerator, AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import Response

from shared.sse import Event, EventStream, Shutdown, encode
from tests.support import eventually, served


def test_encode_splits_data_lines_and_keeps_fields_on_one_line():
    wire = encode(Event("a\nb\r\nc\rd", event="con\ntext", id="4\r2", retry=1500))
    assert wire == (
        b"id: 42\r\nevent: context\r\ndata: a\r\ndata: b\r\ndata: c\r\ndata: d\r\n"
        b"retry: 1500\r\n\r\n"
    )
    assert encode(Event("")) == b"data: \r\n\r\n"


class Probe:
    """A tiny app streaming what the test puts in its queue; it records how streams ended."""

    def __init__(self, *, ping: float = 15.0) -> None:
        self.app = FastAPI()
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue()
        self.open = 0
        self.started = 0
        self.ended = 0
        self.shutdown: Shutdown | None = None

        @self.app.api_route("/stream", methods=["GET", "HEAD"])
        async def stream() -> Response:
            return EventStream(self.events(), shutdown=self.shutdown, ping=ping)

    async def events(self) -> AsyncGenerator[Event, None]:
        self.started += 1
        self.open += 1
        try:
            yield Event("hello", event="first", id="0")
            while (event := await self.queue.get()) is not None:
                yield event
        finally:
            self.open -= 1
            self.ended += 1


async def take(lines: AsyncIterator[str], count: int) -> list[str]:
    """The next ``count`` lines, or fewer when the stream ends."""
    got: list[str] = []
    async for line in lines:
        got.append(line)
        if len(got) == count:
            break
    return got


async def test_events_arrive_in_order_with_sse_starlettes_headers_and_framing():
    probe = Probe()
    async with served(probe.app) as client, client.stream("GET", "/stream") as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["connection"] == "keep-alive"
        assert response.headers["x-accel-buffering"] == "no"
        for n in range(1, 4):
            probe.queue.put_nowait(Event(f"line {n}\nmore", event="changed", id=str(n)))
        probe.queue.put_nowait(None)  # the source ends: so does the stream
        body = b"".join([chunk async for chunk in response.aiter_raw()])
    assert body == b"id: 0\r\nevent: first\r\ndata: hello\r\n\r\n" + b"".join(
        f"id: {n}\r\nevent: changed\r\ndata: line {n}\r\ndata: more\r\n\r\n".encode()
        for n in range(1, 4)
    )
    assert probe.ended == 1


async def test_an_idle_stream_is_pinged():
    probe = Probe(ping=0.05)
    async with served(probe.app) as client, client.stream("GET", "/stream") as response:
        lines = await asyncio.wait_for(take(response.aiter_lines(), 7), 10)
    assert lines[:4] == ["id: 0", "event: first", "data: hello", ""]
    assert lines[4].startswith(": ping - ")  # a comment: browsers ignore it
    assert lines[5] == ""
    assert lines[6].startswith(": ping - ")


async def test_the_stream_ends_when_the_client_leaves():
    probe = Probe()
    async with served(probe.app) as client:
        async with client.stream("GET", "/stream") as response:
            assert await asyncio.wait_for(take(response.aiter_lines(), 3), 10) == [
                "id: 0",
                "event: first",
                "data: hello",
            ]
            assert probe.open == 1
        # the event source is closed (its subscription ends) without any event or ping
        assert await eventually(lambda: _true(probe.open == 0 and probe.ended == 1), timeout=10)


async def test_the_stream_ends_when_the_server_shuts_down():
    probe = Probe()
    async with served(probe.app) as client:
        probe.shutdown = Shutdown()
        async with client.stream("GET", "/stream") as response:
            lines = response.aiter_lines()
            assert len(await asyncio.wait_for(take(lines, 4), 10)) == 4
            probe.shutdown.set()
            rest = await asyncio.wait_for(take(lines, 100), 10)  # it ends: no more lines
        assert rest == []
        assert probe.ended == 1


async def test_a_client_that_stops_reading_is_dropped_after_the_send_timeout():
    async def one() -> AsyncGenerator[Event, None]:
        yield Event("never delivered")

    async def receive() -> dict[str, str]:
        await asyncio.Event().wait()  # the client neither reads nor leaves
        raise AssertionError("unreachable")

    async def stuck_send(message: dict[str, object]) -> None:
        if message["type"] == "http.response.body":
            await asyncio.Event().wait()  # the socket's buffer is full

    response = EventStream(one(), send_timeout=0.05)
    scope = {"type": "http", "method": "GET"}
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(response(scope, receive, stuck_send), 10)


async def test_head_answers_the_headers_without_starting_the_stream():
    probe = Probe()
    async with served(probe.app) as client:
        response = await asyncio.wait_for(client.head("/stream"), 10)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.content == b""
    assert probe.started == 0


async def test_ended_streams_leave_no_cyclic_garbage():
    """sse-starlette left ~120-140 objects per ended stream, its tasks' frames and
    ``CancelledError`` tracebacks (docs/benchmarks.md). What this loop's connections leave
    (asyncio's transports and httpx's pool: per connection, with any response) is not counted:
    frames, tracebacks, exceptions, tasks and coroutines are what an ended stream would leave."""
    probe = Probe()
    streams = 20
    async with served(probe.app) as client:
        for _ in range(3):  # warm up: first-use caches are not garbage
            await _open_and_leave(client)
        await eventually(lambda: _true(probe.open == 0), timeout=10)
        gc.collect()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            for _ in range(streams):
                await _open_and_leave(client)
            await eventually(lambda: _true(probe.open == 0), timeout=10)
            for _ in range(streams):  # and as many that the server ends
                probe.queue.put_nowait(None)
                async with client.stream("GET", "/stream") as response:
                    await response.aread()
            gc.collect()
            left = [type(o).__name__ for o in gc.garbage if isinstance(o, STREAM_GARBAGE)]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
    assert probe.ended == 2 * streams + 3
    assert left == [], f"{len(left)} objects from {2 * streams} streams: {sorted(set(left))}"


STREAM_GARBAGE = (
    types.FrameType,
    types.TracebackType,
    BaseException,
    asyncio.Future,  # tasks too
    types.CoroutineType,
    types.AsyncGeneratorType,
)


async def _open_and_leave(client: httpx.AsyncClient) -> None:
    async with client.stream("GET", "/stream") as response:
        await asyncio.wait_for(take(response.aiter_lines(), 3), 10)


async def _true(value: bool) -> bool:
    return value
