"""Process health that explains tail latency: cyclic GC pauses and event-loop lag.

Both are Prometheus histograms on every service's ``/metrics`` (the benchmarks read them to say
whether a slow request met a collection or a blocked loop).
"""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

from prometheus_client import Histogram

GC_PAUSE = Histogram(
    "waypoint_gc_pause_seconds",
    "Pauses of the cyclic garbage collector, by generation.",
    ["generation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
)
LOOP_LAG = Histogram(
    "waypoint_event_loop_lag_seconds",
    "How late a periodic timer fires on the event loop: time the loop spent on other work "
    "(a long callback, a GC pause, a starved CPU) before it could run.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
_GENERATIONS = [GC_PAUSE.labels(str(g)) for g in range(3)]
_started: list[float] = [0.0]


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started[0] = time.perf_counter()
    else:
        _GENERATIONS[info["generation"]].observe(time.perf_counter() - _started[0])


def watch_gc() -> None:
    """Time every collection of this process (idempotent; a few hundred ns a collection)."""
    if _on_gc not in gc.callbacks:
        gc.callbacks.append(_on_gc)


async def watch_loop_lag(interval: float = 0.1) -> None:
    """Run as a task: observe how late each ``interval`` sleep wakes up, until cancelled."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + interval
        await asyncio.sleep(interval)
        LOOP_LAG.observe(max(0.0, loop.time() - due))
