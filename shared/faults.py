"""Crash points for the fault suite (tests/faults): a worker process that reaches a named point
for the n-th time kills itself with SIGKILL, as the OOM killer or a power cut would — no
``finally``, no offset commit, no broker flush, no graceful close of its connections.

Armed by ``WAYPOINT_FAULT_CRASH_AT=<stage>:<point>:<n>`` (``CommonSettings.fault_crash_at``,
refused in prod), read once when a worker process starts (``waypoint worker``) or an API process
(``waypoint serve``, one uvicorn process). Disarmed, a hook
costs one comparison. The points, in the order a batch reaches them:

- ingest: ``before_store``; ``after_store`` (stored, nothing published); ``before_commit``
  (published, offsets not committed).
- journey: ``before_store``; ``after_publish`` (activity acknowledged by the broker, the
  transaction not committed); ``before_commit`` (committed, offsets not).
- alerts: ``before_store``; ``before_commit`` (scores and alerts committed, offsets not).
- journey-engagement: ``before_commit``.
- journey-outbox (the outbox relay in the journey worker process): ``after_publish`` (the
  broker acknowledged a round's messages, the round has not deleted them nor committed).
- notifier: ``after_claim`` (outbox row locked, nothing sent); ``after_deliver`` (the receiver
  accepted, the row not yet marked delivered).
- scheduler: ``before_store`` (a batch rescored, not committed); ``after_store`` (committed,
  the pass not finished).
- journey-api: ``after_commit`` (a command with its ``Idempotency-Key`` committed, its answer
  not sent).

``before_commit`` is reached in ``BatchWorker`` for every consumer (the stage is its service).
"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass

POINTS: dict[str, tuple[str, ...]] = {
    "ingest": ("before_store", "after_store", "before_commit"),
    "journey": ("before_store", "after_publish", "before_commit"),
    "alerts": ("before_store", "before_commit"),
    "journey-engagement": ("before_commit",),
    "journey-outbox": ("after_publish",),
    "notifier": ("after_claim", "after_deliver"),
    "scheduler": ("before_store", "after_store"),
    "journey-api": ("after_commit",),
}


@dataclass(frozen=True)
class CrashAt:
    stage: str
    point: str
    nth: int = 1

    @classmethod
    def parse(cls, spec: str) -> CrashAt:
        """``stage:point[:n]`` → a crash at the n-th time (default 1) ``point`` is reached."""
        parts = spec.strip().split(":")
        if len(parts) not in (2, 3):
            raise ValueError(f"a crash point is stage:point[:n], not {spec!r}")
        stage, point = parts[0], parts[1]
        if point not in POINTS.get(stage, ()):
            known = ", ".join(f"{s}:{p}" for s, ps in POINTS.items() for p in ps)
            raise ValueError(f"unknown crash point {stage}:{point} (known: {known})")
        nth = int(parts[2]) if len(parts) == 3 else 1
        if nth < 1:
            raise ValueError("n counts from 1")
        return cls(stage, point, nth)


_armed: CrashAt | None = None
_reached = 0


def arm(spec: str | None) -> None:
    """Arm the crash point ``spec`` (None or empty: disarm) for this process."""
    global _armed, _reached
    _armed = CrashAt.parse(spec) if spec else None
    _reached = 0


def crash_point(stage: str, point: str) -> None:
    """The process dies here (SIGKILL) when this is the armed point, reached for the n-th time."""
    global _reached
    armed = _armed
    if armed is None or armed.stage != stage or armed.point != point:
        return
    _reached += 1
    if _reached < armed.nth:
        return
    sys.stderr.write(f"fault.crash stage={stage} point={point} n={_reached} pid={os.getpid()}\n")
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)
