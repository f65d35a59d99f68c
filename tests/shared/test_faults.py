"""Crash points (shared/faults.py): the spec, the guard against prod, and a process that dies
of SIGKILL at the n-th time it reaches the armed point — and only then."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
from pydantic import ValidationError

from shared.config import CommonSettings
from shared.faults import CrashAt


def test_a_crash_point_names_a_known_stage_and_point() -> None:
    assert CrashAt.parse("ingest:after_store:3") == CrashAt("ingest", "after_store", 3)
    assert CrashAt.parse("notifier:after_deliver") == CrashAt("notifier", "after_deliver", 1)
    for bad in ("ingest", "ingest:nowhere:1", "nobody:before_store", "ingest:before_store:0"):
        with pytest.raises(ValueError):  # noqa: PT011 - each says why in its message
            CrashAt.parse(bad)


def test_crash_points_are_refused_in_prod_and_checked_elsewhere() -> None:
    infra = {"database_url": "postgresql://x/y", "kafka_bootstrap_servers": "k:9092"}
    with pytest.raises(ValidationError, match="never prod"):
        CommonSettings(**infra, env="prod", fault_crash_at="ingest:before_store:1")
    with pytest.raises(ValidationError, match="unknown crash point"):
        CommonSettings(**infra, env="test", fault_crash_at="ingest:later:1")
    assert CommonSettings(**infra, env="test").fault_crash_at is None


def test_the_process_kills_itself_at_the_nth_time_only() -> None:
    script = (
        "from shared import faults\n"
        "faults.arm('journey:after_publish:3')\n"
        "for i in range(5):\n"
        "    faults.crash_point('journey', 'before_store')\n"
        "    faults.crash_point('journey', 'after_publish')\n"
        "    print(i, flush=True)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == -signal.SIGKILL
    assert done.stdout.split() == ["0", "1"]
    assert "fault.crash stage=journey point=after_publish n=3" in done.stderr
