"""``waypoint worker SERVICE PROCESS`` never serves HTTP, so it must not import FastAPI or
Starlette (about 7 MB of the journey worker's 150 MB bound, docs/benchmarks.md). Each process
is imported as ``waypoint worker`` imports it (the CLI, then its target), in a fresh
interpreter: this test session has long imported both. typer is the CLI's own and stays."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from services.registry import SERVICES

ROOT = Path(__file__).resolve().parents[1]
HTTP_STACK = ("fastapi", "starlette")
PROCESSES = [
    pytest.param(target, id=f"{service}-{process}")
    for service, spec in SERVICES.items()
    for process, target in spec.processes.items()
]


def _imported_http_stack(target: str) -> list[str]:
    code = (
        "import json, sys\n"
        "import services.cli\n"
        "from services.registry import load\n"
        f"load({target!r})\n"
        f"print(json.dumps([m for m in {HTTP_STACK!r} if m in sys.modules]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    found: list[str] = json.loads(done.stdout.splitlines()[-1])
    return found


@pytest.mark.parametrize("target", PROCESSES)
def test_a_worker_process_does_not_import_the_http_stack(target: str) -> None:
    assert _imported_http_stack(target) == []
