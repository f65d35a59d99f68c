"""The pipeline as real processes, one ``waypoint worker`` each, on this session's PostgreSQL and
broker: its own topics and consumer groups, so stacks never share work. A process can be started
with a crash point armed (``WAYPOINT_FAULT_CRASH_AT``), SIGKILLed, and started again. An API
(``waypoint serve``, named in ``APIS``) can be run the same way, on a port of its own."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.embedded import die_with_parent

ROOT = Path(__file__).resolve().parents[2]

# name → (service, process) as ``waypoint worker SERVICE PROCESS`` takes them
PROCESSES: dict[str, tuple[str, str]] = {
    "ingest": ("ingest", "worker"),
    "journey": ("journey", "worker"),
    "engagement": ("journey", "engagement"),
    "maps": ("journey", "maps"),
    "alerts": ("alerts", "worker"),
    "notifier": ("alerts", "notifier"),
    "scheduler": ("alerts", "scheduler"),
}
# name → service, as ``waypoint serve SERVICE`` takes it; never started by default
APIS: dict[str, str] = {"journey-api": "journey"}


@dataclass
class Stack:
    """Worker processes of one pipeline; ``env`` is what each of them reads."""

    name: str
    env: dict[str, str]
    logs: Path
    processes: dict[str, list[subprocess.Popen[bytes]]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    @classmethod
    def create(cls, infra: dict[str, str], logs: Path, **extra: str) -> Stack:
        run = uuid.uuid4().hex[:8]
        name = f"faults-{run}"
        env = {
            **os.environ,
            "DATABASE_URL": infra["database_url"],
            "KAFKA_BOOTSTRAP_SERVERS": infra["kafka_bootstrap_servers"],
            "WAYPOINT_ENV": "test",
            "WAYPOINT_LOG_JSON": "false",
            "WAYPOINT_LOG_LEVEL": "INFO",
            "WAYPOINT_TOPIC_RAW": f"{name}.raw",
            "WAYPOINT_TOPIC_NORMALIZED": f"{name}.normalized",
            "WAYPOINT_TOPIC_DEAD_LETTER": f"{name}.deadletter",
            "WAYPOINT_TOPIC_ACTIVITY": f"{name}.activity",
            "WAYPOINT_TOPIC_ENGAGEMENT": f"{name}.engagement",
            "WAYPOINT_TOPIC_PARTITIONS": "1",  # one order of application: comparable runs
            "WAYPOINT_INGEST_CONSUMER_GROUP": f"{name}-ingest",
            "WAYPOINT_JOURNEY_CONSUMER_GROUP": f"{name}-journey",
            "WAYPOINT_JOURNEY_ENGAGEMENT_CONSUMER_GROUP": f"{name}-engagement",
            "WAYPOINT_ALERTS_CONSUMER_GROUP": f"{name}-alerts",
            # A SIGKILLed member holds its partitions until its session times out: short
            # sessions (production: 10 s) make every restart after a kill that much quicker.
            # Heartbeats stay well inside them (ingest 1 s, journey a tenth, alerts 1 s).
            "WAYPOINT_INGEST_SESSION_TIMEOUT_MS": "4000",
            "WAYPOINT_JOURNEY_SESSION_TIMEOUT_MS": "4000",
            "WAYPOINT_ALERTS_CONSUMER_SESSION_TIMEOUT_MS": "4000",
            "WAYPOINT_INGEST_BATCH_SIZE": "100",  # several batches per scenario: kills land mid-way
            "WAYPOINT_JOURNEY_CHUNK_SIZE": "50",
            "WAYPOINT_EGRESS_ALLOW": "127.0.0.1",  # the local receiver
            "WAYPOINT_ALERTS_NOTIFIER_POLL_SECONDS": "0.5",
            "WAYPOINT_ALERTS_RETRY_BASE_SECONDS": "0.2",
            "WAYPOINT_ALERTS_RETRY_MAX_SECONDS": "1.0",
            "WAYPOINT_ALERTS_DELIVERY_TIMEOUT_SECONDS": "2.0",
            "WAYPOINT_ALERTS_DELIVERY_MAX_ATTEMPTS": "1000",
            "WAYPOINT_ALERTS_ENGAGEMENT_POLL_SECONDS": "0.5",
            "WAYPOINT_JOURNEY_MAP_POLL_SECONDS": "0.2",
            "WAYPOINT_API_KEY_CACHE_SECONDS": "0",
        }
        env.pop("WAYPOINT_FAULT_CRASH_AT", None)
        env.update(extra)
        logs.mkdir(parents=True, exist_ok=True)
        return cls(name=name, env=env, logs=logs)

    def topic(self, which: str) -> str:
        return self.env[f"WAYPOINT_TOPIC_{which.upper()}"]

    def group(self, which: str) -> str:
        return self.env[f"WAYPOINT_{which.upper()}_CONSUMER_GROUP"]

    def overrides(self) -> dict[str, Any]:
        """Keyword arguments for a settings class, as this stack's processes read theirs (for
        the APIs the tests call in-process)."""
        topics = ("raw", "normalized", "dead_letter", "activity", "engagement")
        return {
            "database_url": self.env["DATABASE_URL"],
            "kafka_bootstrap_servers": self.env["KAFKA_BOOTSTRAP_SERVERS"],
            "env": "test",
            "log_json": False,
            "topic_partitions": int(self.env["WAYPOINT_TOPIC_PARTITIONS"]),
            "api_key_cache_seconds": 0.0,
            "egress_allow": "127.0.0.1",
            **{f"topic_{t}": self.env[f"WAYPOINT_TOPIC_{t.upper()}"] for t in topics},
        }

    def start(
        self, name: str, *, crash_at: str | None = None, **extra: str
    ) -> subprocess.Popen[bytes]:
        """Start one more ``name`` process (optionally with a crash point armed)."""
        if name in APIS:
            command = ["serve", APIS[name], "--port", str(self.port(name))]
        else:
            command = ["worker", *PROCESSES[name]]
        if crash_at:
            extra = {**extra, "WAYPOINT_FAULT_CRASH_AT": crash_at}
        popen = self.spawn(command, name, **extra)
        self.processes.setdefault(name, []).append(popen)
        return popen

    def spawn(self, command: list[str], log: str, **extra: str) -> subprocess.Popen[bytes]:
        """``waypoint COMMAND…`` in this stack's environment (and ``extra``), its output added
        to ``<log>.log``; it never outlives the test run, and ``close`` leaves it alone."""
        out = (self.logs / f"{log}.log").open("ab")
        try:
            return subprocess.Popen(
                [sys.executable, "-m", "services.cli", *command],
                cwd=ROOT,
                env={**self.env, **extra},
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent(signal.SIGKILL),  # noqa: PLW1509 - never outlive the run
            )
        finally:
            out.close()

    def port(self, name: str) -> int:
        """The port of the API ``name``: a free one, chosen at its first start and kept across
        restarts (a client retries the same address)."""
        if name not in self.ports:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                self.ports[name] = probe.getsockname()[1]
        return self.ports[name]

    def running(self, name: str) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.processes.get(name, []) if p.poll() is None]

    def kill(self, name: str) -> None:
        """SIGKILL every running ``name`` process."""
        for process in self.running(name):
            process.kill()
            process.wait()

    def stop(self, name: str, timeout: float = 30) -> None:
        """SIGTERM every running ``name`` process: each finishes its batch in flight, exits."""
        for process in self.running(name):
            process.send_signal(signal.SIGTERM)
        for process in self.processes.get(name, []):
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def close(self) -> None:
        for name in list(self.processes):
            for process in self.running(name):
                process.send_signal(signal.SIGTERM)
        for name in list(self.processes):
            self.stop(name)

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def crashed(self, process: subprocess.Popen[bytes]) -> bool:
        """``process`` died of its armed crash point (SIGKILLed itself)."""
        return process.poll() == -signal.SIGKILL
