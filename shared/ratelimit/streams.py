"""A cap on live streams (server-sent events) open at once per API key, in one API process.

Per process, not shared: a stream holds a connection, and what a process can hold is what the
cap protects. With P processes behind a balancer a key can hold up to P × the cap.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from shared.errors import TooManyRequests
from shared.ratelimit.limiter import RATE_LIMITED

RETRY_SECONDS = 5


class StreamSlots:
    def __init__(self, per_key: int):
        self.per_key = per_key
        self._open: dict[str, int] = {}

    def open_count(self, key_id: str) -> int:
        return self._open.get(key_id, 0)

    @contextmanager
    def hold(self, key_id: str) -> Iterator[None]:
        held = self._open.get(key_id, 0)
        if 0 < self.per_key <= held:
            RATE_LIMITED.labels("stream", "key").inc()
            raise TooManyRequests(
                f"this API key already has {held} live streams open here (the limit); "
                "close one first",
                limit=self.per_key,
                retry_after=RETRY_SECONDS,
                window=None,
            )
        self._open[key_id] = held + 1
        try:
            yield
        finally:
            left = self._open.get(key_id, 1) - 1
            if left > 0:
                self._open[key_id] = left
            else:
                self._open.pop(key_id, None)
