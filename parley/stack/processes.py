"""Child processes for `parley dev`, the tests and the benches: started, awaited, stopped.

All of them need the same guarantees, so they are written once here: a child is never
left running after its parent (SIGTERM, then SIGKILL; on Linux also when the parent is
SIGKILLed), its output goes where someone will read it (a log file, this process's
memory, or this process's own output), and "ready" means it answers, not that it started.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO

import httpx

from parley.logs import get_logger

log = get_logger(__name__)

Probe = Callable[[], Awaitable[bool]]

STOP_TIMEOUT = 10.0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port the OS considers free on `host` right now (racy, like every such probe)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn asking Linux to SIGTERM the child when this thread's process dies.

    The kernel tracks the *thread* that forked, so spawn from a long-lived thread (the event
    loop's), never from a worker pool thread. libc is resolved here, before the fork.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGTERM))
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


class ChildExited(RuntimeError):
    """A child exited while we were waiting for it to be ready (or for a line of output)."""

    def __init__(self, child: ChildProcess) -> None:
        self.child = child
        self.code = child.returncode
        tail = child.tail()
        super().__init__(
            f"the {child.name} exited with code {self.code}" + (f":\n{tail}" if tail else "")
        )


class ChildProcess:
    """One child process, tied to this one's life.

    Output goes to `log_path` (appended, after a header line naming the command), or, with
    `capture=True`, into memory line by line (`wait_for_line`, `output`), or else to this
    process's own stdout and stderr. stdin is always empty. `new_session=True` keeps
    Ctrl-C on a terminal from reaching the child, so the parent can stop children in order.
    Spawn from the thread that outlives the child (see `die_with_parent`).
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        log_path: Path | None = None,
        capture: bool = False,
        new_session: bool = False,
        pass_fds: Sequence[int] = (),
    ) -> None:
        if log_path is not None and capture:
            raise ValueError("a child's output goes to a log file or into memory, not both")
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self._log: IO[bytes] | None = None
        self._log_offset = 0
        self._lines: list[str] = []
        self._arrived = threading.Condition()
        self._eof = False
        self._reader: threading.Thread | None = None
        stdout: IO[bytes] | int | None = None
        if log_path is not None:
            self._log = log_path.open("ab")
            self._log.write(f"\n--- {name}: {shlex.join(self.argv)}\n".encode())
            self._log.flush()
            self._log_offset = self._log.tell()  # where this run's output starts
            stdout = self._log
        elif capture:
            stdout = subprocess.PIPE
        self._popen = subprocess.Popen(
            self.argv,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.STDOUT if stdout is not None else None,
            start_new_session=new_session,
            preexec_fn=die_with_parent(),
            pass_fds=tuple(pass_fds),
        )
        if capture:
            self._reader = threading.Thread(target=self._read, name=f"{name} output", daemon=True)
            self._reader.start()
        atexit.register(self.stop)

    def __repr__(self) -> str:
        return f"ChildProcess({self.name!r}, pid={self.pid}, returncode={self.returncode})"

    # -- state -----------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        return self._popen.poll()

    def poll(self) -> int | None:
        return self._popen.poll()

    def check(self) -> None:
        """Raise `ChildExited` if the child is no longer running."""
        if self._popen.poll() is not None:
            raise ChildExited(self)

    def send_signal(self, sig: int) -> None:
        self._popen.send_signal(sig)

    def wait(self, timeout: float | None = None) -> int:
        """Block until the child exits (`subprocess.TimeoutExpired` after `timeout` s)."""
        return self._popen.wait(timeout)

    async def exited(self) -> int:
        """Wait, without blocking the event loop, until the child exits (and, with
        `capture=True`, its output is read to the end); its exit code."""
        code = await asyncio.to_thread(self._popen.wait)
        if self._reader is not None:
            await asyncio.to_thread(self._reader.join, STOP_TIMEOUT)
        return code

    # -- output ----------------------------------------------------------------------------

    def _read(self) -> None:
        assert self._popen.stdout is not None
        for raw in self._popen.stdout:
            with self._arrived:
                self._lines.append(raw.decode(errors="replace"))
                self._arrived.notify_all()
        with self._arrived:
            self._eof = True
            self._arrived.notify_all()

    @property
    def output(self) -> str:
        """What the child printed so far (`capture=True`)."""
        with self._arrived:
            return "".join(self._lines)

    async def wait_for_line(self, text: str, timeout: float) -> str:
        """The first line of output containing `text` (`capture=True`), waiting up to
        `timeout` s for it; `ChildExited` if the output ends first."""
        if self._reader is None:
            raise RuntimeError(f"the {self.name}'s output is not captured")

        def find() -> str | None:
            with self._arrived:
                found: list[str] = []

                def seen() -> bool:
                    found[:] = [line for line in self._lines if text in line][:1]
                    return bool(found) or self._eof

                if not self._arrived.wait_for(seen, timeout):
                    raise TimeoutError(f"the {self.name} did not print {text!r} in {timeout:g}s")
                return found[0] if found else None

        line = await asyncio.to_thread(find)
        if line is None:  # the output ended: the child is exiting
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(self._popen.wait, STOP_TIMEOUT)
            raise ChildExited(self)
        return line

    def tail(self, lines: int = 30) -> str:
        """The last `lines` lines this child wrote (to its log file or into memory)."""
        if self.log_path is not None:
            try:
                with self.log_path.open("rb") as f:
                    f.seek(self._log_offset)
                    text = f.read().decode(errors="replace")
            except OSError:
                return ""
        else:
            text = self.output
        return "\n".join(text.splitlines()[-lines:])

    # -- readiness -------------------------------------------------------------------------

    async def wait_http(self, url: str, timeout: float) -> None:
        """Until `url` answers 200; `ChildExited` if the child exits first."""
        await wait_until(http_ok(url), [self], timeout=timeout, what=url)

    # -- stopping --------------------------------------------------------------------------

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, then SIGKILL if still running after `timeout` s; its exit code. Idempotent."""
        atexit.unregister(self.stop)
        if self._popen.poll() is None:
            self._popen.send_signal(signal.SIGTERM)
            try:
                self._popen.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("child did not stop, killing it", child=self.name, pid=self.pid)
                self._popen.kill()
                self._popen.wait()
        if self._reader is not None:
            self._reader.join(timeout)
        if self._log is not None:
            self._log.close()
        return self._popen.returncode


def http_ok(url: str) -> Probe:
    """A probe that is true when `url` answers 200."""

    async def probe() -> bool:
        async with httpx.AsyncClient(timeout=2) as http:
            return (await http.get(url)).status_code == 200

    return probe


async def wait_until(
    probe: Probe,
    children: Iterable[ChildProcess],
    *,
    timeout: float,
    what: str,
    interval: float = 0.1,
    attempt_timeout: float = 5.0,
) -> None:
    """Call `probe` every `interval` s until it returns true.

    A probe that raises counts as not ready yet. `ChildExited` as soon as one of
    `children` exits; `TimeoutError` (naming `what` and the probe's last error) after
    `timeout` s.
    """
    children = list(children)
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        for child in children:
            child.check()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise TimeoutError(f"{what} not ready after {timeout:g}s{detail}")
        try:
            async with asyncio.timeout(min(remaining, attempt_timeout)):
                if await probe():
                    return
        except Exception as err:
            last_error = err
        await asyncio.sleep(interval)  # nothing to wait on but the next attempt
