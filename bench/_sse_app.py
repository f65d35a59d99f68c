"""The app ``bench/sse_streams.py`` serves: the live stream's shape (a ``ContextHub``
subscription, a first event, then one per notification) without the database, through either
``shared.sse.EventStream`` (``BENCH_SSE_IMPL=ours``) or sse-starlette's ``EventSourceResponse``
(``BENCH_SSE_IMPL=sse-starlette``; not a dependency: install it by hand to compare). ``GET
/gc`` answers what the cyclic GC collected since the last call and the process's CPU time."""

from __future__ import annotations

import gc
import os
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from services.journey.context.stream import ContextHub
from shared.sse import Event, EventStream, Shutdown

IMPL = os.environ.get("BENCH_SSE_IMPL", "ours")
THRESHOLD = int(os.environ.get("BENCH_SSE_GC_THRESHOLD", "5000"))
DATA = "x" * 2000  # about a context card's JSON
_collected = {"objects": 0, "collections": 0}


def _count(phase: str, info: dict[str, Any]) -> None:
    if phase == "stop":
        _collected["objects"] += info["collected"]
        _collected["collections"] += 1


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.hub = ContextHub("postgresql://unused/none", "unused")
    app.state.shutdown = Shutdown()
    gc.collect()
    gc.freeze()
    gc.set_threshold(THRESHOLD, 50, 100)
    gc.callbacks.append(_count)
    yield
    app.state.shutdown.set()


app = FastAPI(lifespan=lifespan)


@app.get("/stream/{events}")
async def stream(events: int, request: Request) -> Response:
    hub: ContextHub = request.app.state.hub
    customer = uuid.uuid4()

    async def ours() -> AsyncGenerator[Event, None]:
        with hub.subscribe("t", customer) as queue:
            yield Event(DATA, event="context", id="0")
            for n in range(1, events):
                await queue.get()
                yield Event(DATA, event="context.changed", id=str(n))
            if events:
                return
            await queue.get()  # 0 events: until the client leaves

    if IMPL == "ours":
        return EventStream(ours(), shutdown=request.app.state.shutdown)
    from sse_starlette import EventSourceResponse

    async def theirs() -> AsyncIterator[dict[str, str]]:
        async for event in ours():
            yield {"event": event.event or "", "id": event.id or "", "data": event.data}

    return EventSourceResponse(theirs(), ping=15, send_timeout=30)


@app.post("/notify")
async def notify(request: Request) -> dict[str, int]:
    """One notification to every open stream (as a NOTIFY from the worker would)."""
    hub: ContextHub = request.app.state.hub
    for queues in list(hub._subscribers.values()):
        for queue in queues:
            queue.put_nowait(1)
    return {"streams": sum(len(q) for q in hub._subscribers.values())}


@app.get("/gc")
async def collected() -> dict[str, float]:
    found = gc.collect()
    answer = {
        "auto_collected": _collected["objects"] - found,
        "collected": _collected["objects"],
        "collections": _collected["collections"] - 1,
        "final_collect": found,
        "cpu_s": time.process_time(),
    }
    _collected["objects"] = _collected["collections"] = 0
    return answer
