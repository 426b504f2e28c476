"""
A small Python client for the ts-mls peer, ``tests/interop/tsmls-peer.mjs``.

The peer speaks one JSON object per line each way (docs/interop.md, "The line
protocol"). :class:`TsMlsPeer` starts ``node tsmls-peer.mjs`` with
``cwd=tests/interop``, sends one request at a time and reads its one response
line, with a timeout on every read. An ``{"error": ...}`` response raises
:class:`PeerError` (with the peer's error ``type``); a peer that exits, hangs or
writes something that is not a response raises :class:`PeerDied`,
:class:`PeerTimeout` or :class:`PeerProtocolError`, with the tail of its
stderr. Bytes go in as ``bytes`` and are sent as hex; results come back as the
peer's JSON (hex strings), which :func:`unhex` turns back into bytes.

Nothing here installs anything: if ``tests/interop/node_modules`` is missing
(``npm ci`` has not run) or ``node`` is not on ``PATH``, :meth:`TsMlsPeer.start`
raises :class:`PeerSetupError` saying what to run.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

__all__ = [
    "INTEROP_DIR",
    "PeerDied",
    "PeerError",
    "PeerProtocolError",
    "PeerSetupError",
    "PeerTimeout",
    "TsMlsPeer",
    "TsMlsPeerFailure",
    "unhex",
]

#: The folder holding the peer, its package.json and (after ``npm ci``) node_modules.
INTEROP_DIR = Path(__file__).resolve().parent
PEER_SCRIPT = "tsmls-peer.mjs"

#: Seconds to wait for any one response. The slowest op (an external join or a
#: commit in suite 5, P-521, on a loaded two-core machine) takes well under 1 s.
DEFAULT_TIMEOUT = 30.0
#: Seconds to wait for the peer to exit once stdin is closed.
CLOSE_TIMEOUT = 5.0
_STDERR_LINES = 50


class TsMlsPeerFailure(Exception):
    """
    Base of every error this module raises.
    """


class PeerSetupError(TsMlsPeerFailure):
    """
    The peer cannot start: Node or ``tests/interop/node_modules`` is missing.
    """


class PeerError(TsMlsPeerFailure):
    """
    The peer answered ``{"error": {"type": ..., "message": ...}}``.

    ``type`` is the peer's error type (``ValidationError``, ``DecodeError``, ...;
    docs/interop.md, "Error types"), ``op`` the request's op.
    """

    def __init__(self, op: str, error_type: str, message: str) -> None:
        super().__init__(f"{op}: {error_type}: {message}")
        self.op = op
        self.type = error_type
        self.message = message


class PeerTimeout(TsMlsPeerFailure):
    """
    No response within the timeout (the peer is killed: responses would be out of step).
    """


class PeerDied(TsMlsPeerFailure):
    """
    The peer exited (or closed stdout) before answering.
    """


class PeerProtocolError(TsMlsPeerFailure):
    """
    The peer wrote a line that is not a response to the request just sent.
    """


def unhex(value: object) -> bytes:
    """
    :returns: the bytes of a hex string from a peer result.
    :raises TypeError: if ``value`` is not a string.
    """
    if not isinstance(value, str):
        raise TypeError(f"expected a hex string, got {type(value).__name__}")
    return bytes.fromhex(value)


def _jsonable(value: object) -> object:
    # Bytes become hex; lists and dicts are walked.
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    return value


class TsMlsPeer:
    """
    One ``node tsmls-peer.mjs`` process.

    Use as a context manager, or call :meth:`start` and :meth:`close`::

        with TsMlsPeer() as peer:
            kp = peer.call("key_package", member="bob", suite=1, identity=b"bob")
    """

    def __init__(
        self,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        node: str = "node",
        env: dict[str, str] | None = None,
    ) -> None:
        """
        :param timeout: seconds to wait for each response.
        :param node: the Node executable (looked up on ``PATH``).
        :param env: extra environment variables for the peer (e.g. ``TSMLS_PEER_DEBUG``).
        """
        self.timeout = timeout
        self._node = node
        self._env = env or {}
        self._process: subprocess.Popen[bytes] | None = None
        self._lines: queue.Queue[bytes | None] = queue.Queue()
        self._stderr: collections.deque[str] = collections.deque(maxlen=_STDERR_LINES)
        self._next_id = 0
        self._threads: list[threading.Thread] = []
        #: How many requests were answered, and the seconds spent waiting for them.
        self.calls = 0
        self.seconds = 0.0

    # -- Life cycle ------------------------------------------------------------

    @staticmethod
    def check_setup(node: str = "node") -> str:
        """
        :returns: the path of the Node executable.
        :raises PeerSetupError: if Node or the installed ts-mls packages are missing.
        """
        executable = shutil.which(node)
        if executable is None:
            raise PeerSetupError(f"`{node}` is not on PATH; the ts-mls peer needs Node 20")
        if not (INTEROP_DIR / "node_modules" / "ts-mls" / "package.json").is_file():
            raise PeerSetupError(
                f"{INTEROP_DIR / 'node_modules'} is missing or has no ts-mls: "
                "run `npm ci` in tests/interop (scripts/test does) before the interop tests"
            )
        return executable

    def start(self) -> TsMlsPeer:
        """
        Start the peer process.

        :returns: ``self``.
        :raises PeerSetupError: as :meth:`check_setup`.
        """
        if self._process is not None:
            raise RuntimeError("the peer is already started")
        executable = self.check_setup(self._node)
        self._process = subprocess.Popen(
            [executable, PEER_SCRIPT],
            cwd=INTEROP_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, **self._env},
        )
        stdout, stderr = self._process.stdout, self._process.stderr
        assert stdout is not None
        assert stderr is not None
        self._threads = [
            threading.Thread(target=self._read_stdout, args=(stdout,), daemon=True),
            threading.Thread(target=self._read_stderr, args=(stderr,), daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def _read_stdout(self, stream: Any) -> None:
        for line in stream:
            self._lines.put(line)
        self._lines.put(None)

    def _read_stderr(self, stream: Any) -> None:
        for line in stream:
            self._stderr.append(line.decode("utf-8", "replace").rstrip("\n"))

    def close(self) -> int | None:
        """
        Close stdin (the peer then exits after answering everything) and wait for it.

        :returns: the exit status (``None`` if it never started).
        """
        process = self._process
        if process is None:
            return None
        if process.stdin is not None and not process.stdin.closed:
            with contextlib.suppress(OSError):
                process.stdin.close()
        try:
            status = process.wait(CLOSE_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            status = process.wait()
        for thread in self._threads:
            thread.join(CLOSE_TIMEOUT)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
        return status

    def kill(self) -> None:
        """
        Kill the peer (after a timeout, its responses can no longer be matched).
        """
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    def __enter__(self) -> TsMlsPeer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def stderr_tail(self) -> str:
        """
        The last lines the peer wrote to stderr.
        """
        return "\n".join(self._stderr)

    # -- Requests --------------------------------------------------------------

    def call(self, op: str, **fields: object) -> dict[str, Any]:
        """
        Send one request and return its ``result``.

        ``bytes`` values (also inside lists and dicts) are sent as hex.

        :param op: the op (docs/interop.md, "Ops").
        :param fields: the request's fields.
        :returns: the ``result`` object.
        :raises PeerError: if the peer answered with an error.
        :raises PeerTimeout: if no answer came within :attr:`timeout` (the peer is killed).
        :raises PeerDied: if the peer exited.
        :raises PeerProtocolError: if the answer is not a response to this request.
        """
        process = self._process
        if process is None or process.stdin is None:
            raise RuntimeError("the peer is not started")
        self._next_id += 1
        request_id = self._next_id
        line = json.dumps({"id": request_id, "op": op, **_jsonable(fields)})  # type: ignore[dict-item]
        started = time.monotonic()
        try:
            process.stdin.write(line.encode() + b"\n")
            process.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise PeerDied(self._died(f"{op}: cannot write to the peer")) from exc
        try:
            raw = self._lines.get(timeout=self.timeout)
        except queue.Empty:
            self.kill()
            raise PeerTimeout(
                self._died(f"{op}: no response within {self.timeout} s (peer killed)")
            ) from None
        self.seconds += time.monotonic() - started
        if raw is None:
            process.wait(CLOSE_TIMEOUT)
            raise PeerDied(
                self._died(f"{op}: the peer exited (status {process.returncode}) before answering")
            )
        try:
            response = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise PeerProtocolError(f"{op}: not JSON: {raw[:200]!r}") from exc
        if not isinstance(response, dict) or response.get("id") != request_id:
            raise PeerProtocolError(f"{op}: expected a response to id {request_id}: {raw[:200]!r}")
        self.calls += 1
        if "error" in response:
            error = response["error"]
            if not isinstance(error, dict):
                raise PeerProtocolError(f"{op}: malformed error: {raw[:200]!r}")
            raise PeerError(op, str(error.get("type")), str(error.get("message")))
        result = response.get("result")
        if not isinstance(result, dict):
            raise PeerProtocolError(f"{op}: no result object: {raw[:200]!r}")
        return result

    def _died(self, what: str) -> str:
        tail = self.stderr_tail
        return f"{what}\n--- peer stderr ---\n{tail}" if tail else what
