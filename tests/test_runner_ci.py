"""``.ci/run``: the fault suite runs after the suite by default, on its own time budget cut to
what is left of CI's limit, and an unrun or failed fault suite fails the run. ``make`` is a
stand-in here (a script on PATH recording its targets), the script itself is the real one."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FAKE_MAKE = """#!/usr/bin/env bash
echo "$@" >> made.txt
case "$1" in
    test) mkdir -p .venv; echo "${FAKE_TEST_STATUS:-0}" > .venv/.pytest-exit
          exit "${FAKE_TEST_STATUS:-0}" ;;
    faults) exit "${FAKE_FAULTS_STATUS:-0}" ;;
esac
"""


def run_ci(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    (tmp_path / ".ci").mkdir()
    shutil.copy(ROOT / ".ci" / "run", tmp_path / ".ci" / "run")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("make", FAKE_MAKE), ("chromium", "#!/bin/sh\nexit 0\n")):
        (bin_dir / name).write_text(body)
        (bin_dir / name).chmod(0o755)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CI_")}
    environ["PATH"] = f"{bin_dir}{os.pathsep}{environ['PATH']}"
    done = subprocess.run(
        ["bash", str(tmp_path / ".ci" / "run")],
        cwd=tmp_path,
        env={**environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    made = tmp_path / "made.txt"
    return done, made.read_text().split("\n")[:-1] if made.exists() else []


def test_the_fault_suite_runs_after_the_suite_by_default(tmp_path: Path) -> None:
    done, made = run_ci(tmp_path)
    assert made == ["test", "faults"], done.stderr
    assert done.returncode == 0, done.stderr
    assert "the fault suite, with 2700s" in done.stdout
    assert "the fault suite passed" in done.stdout


def test_ci_faults_0_skips_it(tmp_path: Path) -> None:
    done, made = run_ci(tmp_path, CI_FAULTS="0")
    assert made == ["test"]
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(("status", "expected"), [(1, 1), (124, 124)])
def test_a_failed_or_timed_out_fault_suite_fails_the_run(
    tmp_path: Path, status: int, expected: int
) -> None:
    done, made = run_ci(tmp_path, FAKE_FAULTS_STATUS=str(status))
    assert made == ["test", "faults"]
    assert done.returncode == expected
    assert "fault suite" in done.stderr


def test_its_budget_is_cut_to_what_is_left_of_the_ci_limit(tmp_path: Path) -> None:
    done, made = run_ci(tmp_path, CI_LIMIT_SECONDS="1300")
    assert made == ["test", "faults"]
    budget = int(done.stdout.split("the fault suite, with ")[1].split("s")[0])
    assert 990 <= budget <= 1000  # 1,300 s less the 300 s margin, less the seconds used


def test_with_too_little_time_left_it_does_not_start_and_the_run_fails(tmp_path: Path) -> None:
    done, made = run_ci(tmp_path, CI_LIMIT_SECONDS="800")
    assert made == ["test"]
    assert done.returncode == 124
    assert "no time left for the fault suite" in done.stderr
