"""``<data folder>/stack.json``: how to reach the stack that ``waypoint run`` is running.

Written by the supervisor once PostgreSQL and the broker are up, removed when it stops. Every
other ``waypoint`` command reads it when the environment names no PostgreSQL or broker. It holds
no secret the data folder does not already hold: the embedded PostgreSQL's URL, and an external
one's without its password.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

FILE_NAME = "stack.json"


def without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}@{host}" if parts.username else host
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def _is_running(pid: int) -> bool:
    """Is ``pid`` a live ``waypoint run``? (A reused pid of another program is not.)"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc (macOS): the pid is alive, assume it is ours
    status = Path(f"/proc/{pid}/status").read_text(errors="replace")
    if "State:\tZ" in status:
        return False
    return b"run" in cmdline or cmdline == [b""]  # empty while it is being exec'd


@dataclass
class StackInfo:
    pid: int
    database_url: str
    kafka_bootstrap_servers: str
    broker_storage: str | None = None  # None: an external broker
    embedded_postgres: bool = True
    apis: dict[str, str] = field(default_factory=dict)  # service → base URL
    metrics: dict[str, str] = field(default_factory=dict)  # process → /metrics URL
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    def write(self, data_dir: Path) -> None:
        path = data_dir / FILE_NAME
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(asdict(self), indent=2) + "\n")
        temporary.chmod(0o600)
        temporary.replace(path)

    @classmethod
    def read(cls, data_dir: Path) -> StackInfo | None:
        try:
            raw = json.loads((data_dir / FILE_NAME).read_text())
            return cls(**raw)
        except (OSError, ValueError, TypeError):
            return None

    def running(self) -> bool:
        return _is_running(self.pid)

    @staticmethod
    def remove(data_dir: Path) -> None:
        (data_dir / FILE_NAME).unlink(missing_ok=True)


def find_running(data_dir: Path) -> StackInfo | None:
    """The stack recorded in ``data_dir`` if its supervisor still runs."""
    info = StackInfo.read(data_dir)
    return info if info is not None and info.running() else None


def fill_from_running_stack(
    data_dir: Path, *, database_url: str | None, kafka_bootstrap_servers: str | None
) -> tuple[dict[str, str], str | None]:
    """Environment variables the running stack supplies for what the environment leaves unset,
    and one line saying so (None when nothing was taken from it)."""
    if database_url and kafka_bootstrap_servers:
        return {}, None
    info = find_running(data_dir)
    if info is None:
        return {}, None
    taken: dict[str, str] = {}
    if not database_url:
        taken["DATABASE_URL"] = info.database_url
    if not kafka_bootstrap_servers:
        taken["KAFKA_BOOTSTRAP_SERVERS"] = info.kafka_bootstrap_servers
    shown = ", ".join(f"{k}={v}" for k, v in taken.items())
    return taken, f"using the stack `waypoint run` runs (pid {info.pid}, {data_dir}): {shown}"
