"""``waypoint <argv>`` with a memory sampler beside it (``bench/worker_memory.py``).

Every 50 ms a thread reads the process's RSS; at each new peak (by 1 MB or more) it notes glibc's
heap figures (``mallinfo2``: bytes in use and free inside malloc's arenas) and Python's traced
memory, and with BENCH_MEMORY_TRACEMALLOC=1 keeps a tracemalloc snapshot. At exit it prints them
to stderr: what the peak was made of.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import sys
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TRACE = os.environ.get("BENCH_MEMORY_TRACEMALLOC") == "1"


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
            "fsmblks", "uordblks", "fordblks", "keepcost",
        )
    ]  # fmt: skip


_libc = ctypes.CDLL("libc.so.6")
_libc.mallinfo2.restype = _MallInfo2


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


peak: dict[str, Any] = {"rss_kb": 0}


def sample() -> None:
    while True:
        time.sleep(0.05)
        now = rss_kb()
        if now < peak["rss_kb"] + 1024:
            continue
        m = _libc.mallinfo2()
        peak.update(
            rss_kb=now,
            at=time.time(),
            malloc_arena_mb=m.arena / 2**20,
            malloc_mmap_mb=m.hblkhd / 2**20,
            malloc_in_use_mb=(m.uordblks + m.hblkhd) / 2**20,
            malloc_free_mb=m.fordblks / 2**20,
        )
        if TRACE:
            peak["traced_mb"] = tracemalloc.get_traced_memory()[0] / 2**20
            peak["snapshot"] = tracemalloc.take_snapshot()


def report() -> None:
    out = {
        k: round(v, 1) if isinstance(v, float) else v for k, v in peak.items() if k != "snapshot"
    }
    print(f"memory peak: {out}", file=sys.stderr)
    snap = peak.get("snapshot")
    if snap is not None:
        for stat in snap.statistics("lineno")[:40]:
            print(
                f"  {stat.size / 2**20:7.2f} MB {stat.count:8d} {stat.traceback}", file=sys.stderr
            )
        print("  by file:", file=sys.stderr)
        for stat in snap.statistics("filename")[:25]:
            print(
                f"  {stat.size / 2**20:7.2f} MB {stat.count:8d} {stat.traceback}", file=sys.stderr
            )
    sys.stderr.flush()


if TRACE:
    tracemalloc.start(1)
atexit.register(report)
threading.Thread(target=sample, daemon=True).start()

from services.cli import main  # noqa: E402

sys.argv = ["waypoint", *sys.argv[1:]]
main()
