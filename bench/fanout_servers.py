"""
The servers of ``bench/relay_fanout.py``, each a process of its own: the relay and the bare one.

:class:`ServerProcess` starts a command that listens on a free loopback port,
waits until ``GET /healthz`` answers, reads the process's resident memory
(``VmRSS`` in ``/proc/PID/status``) and stops it with SIGTERM. The relay is
the real ``townsquare serve`` (``python -m townsquare.cli serve``), exactly as
an operator starts it; the bare server is ``bench/fanout_bare.py`` with the
same uvicorn settings.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

BENCH = Path(__file__).resolve().parent
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 20.0


def raise_open_file_limit() -> int:
    """
    Raise this process's soft limit of open files to its hard limit.

    Children inherit it, so the relay, the bare server and the load generator
    can each hold thousands of sockets.

    :returns: the soft limit now in force.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def free_port() -> int:
    """
    :returns: a TCP port on 127.0.0.1 that was free a moment ago.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def rss_kib(pid: int) -> int:
    """
    :returns: the resident set size of process ``pid`` in KiB (``VmRSS``).
    """
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


@dataclass
class ServerProcess:
    """
    One server process on a free loopback port, its output in ``log_path``.
    """

    name: str
    #: The command, with ``{port}`` where the port goes.
    command: tuple[str, ...]
    log_path: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError(f"{self.name} is not running")
        return self.process.pid

    def start(self) -> None:
        for _attempt in range(3):
            self.port = free_port()
            if self._start_once():
                return
        raise RuntimeError(f"{self.name} did not start:\n{self.log_tail()}")

    def _start_once(self) -> bool:
        argv = [part.replace("{port}", str(self.port)) for part in self.command]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and scripts
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False  # The port was taken meanwhile, say; try another.
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return True
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer /healthz in time:\n{self.log_tail()}")

    def rss_kib(self) -> int:
        return rss_kib(self.pid)

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        self.process = None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def relay_process(data_dir: Path, log_path: Path) -> ServerProcess:
    """
    :returns: the real relay over ``data_dir``, not started yet.
    """
    command = (
        sys.executable,
        "-m",
        "townsquare.cli",
        "serve",
        "--data",
        str(data_dir),
        "--host",
        "127.0.0.1",
        "--port",
        "{port}",
    )
    return ServerProcess("relay", command, log_path)


def bare_process(log_path: Path) -> ServerProcess:
    """
    :returns: the bare broadcast server (``bench/fanout_bare.py``), not started yet.
    """
    command = (sys.executable, str(BENCH / "fanout_bare.py"), "--port", "{port}")
    return ServerProcess("bare", command, log_path)
