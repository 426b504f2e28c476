"""
The load generator of ``bench/relay_fanout.py``: thousands of WebSocket devices in one process.

Run as its own process (``python bench/fanout_load.py``), driven by JSON lines
on its standard input, one answer line each on its standard output
(:class:`LoadGenerator` is the driver's side)::

    {"cmd": "connect", "url": "ws://127.0.0.1:P/v1/ws", "mode": "relay", "keys": PATH,
     "first": 0, "count": 500, "group": "<id>", "parallel": 64, "deflate": false}
        ─▶ {"connected": 500, "open": 500, "seconds": 1.9}
    {"cmd": "reset"}                            ─▶ {"ok": true}    forget every receipt
    {"cmd": "wait", "deliveries": D, "timeout": S}
        ─▶ {"received": D}                         once D notices arrived (or S passed)
    {"cmd": "report", "sends": {"<seq>": t_ns, ...}, "devices": N}
        ─▶ deliveries, latencies, time for each message to reach every device
    {"cmd": "close"}                            ─▶ {"closed": n}

Each device is a minimal RFC 6455 client over an ``asyncio.Protocol``, not a
WebSocket library: a library's per-message machinery (a task, a queue, a
decoded ``str`` per frame) would make this process, not the server, the
bottleneck on a two-core machine. The client sends the upgrade request
(offering ``permessage-deflate`` only when asked, as browsers do), checks
``Sec-WebSocket-Accept``, masks what it sends (RFC 6455 §5.3), answers pings,
and parses server frames straight from the socket's bytes. A relay device
then answers the challenge with its key (``townsquare.auth.sign_request`` over
``GET /v1/ws`` and the challenge, ``docs/protocol.md``), and subscribes to the
group; a bare-server device waits for ``ready``.

A ``message`` notice is recognised by its first bytes and only its ``seq`` is
read; each is recorded with the ``time.monotonic_ns()`` at which its bytes
were handed over by the socket (``CLOCK_MONOTONIC``, the same clock for every
process on the machine, so the sender's send times compare directly).
"""

from __future__ import annotations

import array
import asyncio
import base64
import contextlib
import hashlib
import json
import os
import secrets
import sys
import time
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from townsquare import auth

#: RFC 6455 §1.3: the GUID hashed with the key into ``Sec-WebSocket-Accept``.
WEBSOCKET_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: How every message notice begins: the relay writes compact JSON, ``type`` first.
MESSAGE_PREFIX = b'{"type":"message"'
LAGGED_FRAME = b'{"type":"lagged"}'
SEQ_KEY = b'"seq":'
OPCODE_TEXT, OPCODE_CLOSE, OPCODE_PING, OPCODE_PONG = 0x1, 0x8, 0x9, 0xA
HANDSHAKE_TIMEOUT_SECONDS = 60.0
#: RFC 7692 §7.2.2: the bytes a sender strips from the end of each compressed message.
DEFLATE_TAIL = b"\x00\x00\xff\xff"


class Receipts:
    """
    Every message notice received by any device: its ``seq`` and when it arrived.
    """

    def __init__(self) -> None:
        self.seqs = array.array("q")
        self.times = array.array("q")
        self.lagged = 0
        self.closed: dict[int, int] = {}

    def reset(self) -> None:
        self.seqs = array.array("q")
        self.times = array.array("q")
        self.lagged = 0


def _mask(payload: bytes) -> bytes:
    # RFC 6455 §5.3: every frame from a client is masked with a fresh 32-bit key.
    key = os.urandom(4)
    length = len(payload)
    repeated = (key * (length // 4 + 1))[:length]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
        length, "big"
    )
    return key + masked


def client_frame(opcode: int, payload: bytes) -> bytes:
    """
    :returns: one masked, unfragmented frame (RFC 6455 §5.2).
    """
    length = len(payload)
    if length < 126:
        header = bytes((0x80 | opcode, 0x80 | length))
    elif length < 1 << 16:
        header = bytes((0x80 | opcode, 0x80 | 126)) + length.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + length.to_bytes(8, "big")
    return header + _mask(payload)


class Device(asyncio.Protocol):
    """
    One WebSocket connection: the upgrade, control frames, and message notices counted.
    """

    def __init__(self, receipts: Receipts, host: str, path: str, *, deflate: bool) -> None:
        self._receipts = receipts
        self._key = base64.b64encode(os.urandom(16))
        self._request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            + (
                "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
                if deflate
                else ""
            )
            + f"Sec-WebSocket-Key: {self._key.decode()}\r\n\r\n"
        ).encode()
        self._buffer = b""
        self._upgraded = False
        self._inflater: Any = None
        self.transport: asyncio.Transport | None = None
        #: Frames other than message notices (challenge, ready, subscribed, errors).
        self.inbox: asyncio.Queue[str] = asyncio.Queue()
        self.upgraded: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self._request)

    def connection_lost(self, exc: Exception | None) -> None:
        del exc
        if not self.upgraded.done():
            self.upgraded.set_exception(ConnectionError("the connection closed before upgrading"))
        if not self.lost.done():
            self.lost.set_result(None)
        self.inbox.put_nowait('{"type":"connection-lost"}')

    def send_text(self, text: str) -> None:
        assert self.transport is not None
        self.transport.write(client_frame(OPCODE_TEXT, text.encode()))

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(client_frame(OPCODE_CLOSE, (1000).to_bytes(2, "big")))
            self.transport.close()

    def _upgrade(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        if not lines[0].startswith(b"HTTP/1.1 101"):
            raise ConnectionError(f"the upgrade was refused: {lines[0]!r}")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        expected = base64.b64encode(hashlib.sha1(self._key + WEBSOCKET_GUID).digest())  # noqa: S324 - RFC 6455 §4.2.2
        if headers.get(b"sec-websocket-accept") != expected:
            raise ConnectionError("Sec-WebSocket-Accept does not match the key")
        if b"permessage-deflate" in headers.get(b"sec-websocket-extensions", b""):
            self._inflater = zlib.decompressobj(wbits=-15)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        buffer = self._buffer + data if self._buffer else data
        if not self._upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self._buffer = buffer
                return
            try:
                self._upgrade(buffer[:end])
            except ConnectionError as exc:
                self.upgraded.set_exception(exc)
                assert self.transport is not None
                self.transport.close()
                return
            self._upgraded = True
            self.upgraded.set_result(None)
            buffer = buffer[end + 4 :]
        # The hot path: one pass over the frames in the bytes read, recording each
        # notice's seq with one shared arrival time. Server frames are not masked.
        seqs, times = self._receipts.seqs, self._receipts.times
        position, size = 0, len(buffer)
        while size - position >= 2:
            first, length = buffer[position], buffer[position + 1] & 0x7F
            start = position + 2
            if length == 126:
                if size - position < 4:
                    break
                length = int.from_bytes(buffer[start : start + 2], "big")
                start += 2
            elif length == 127:
                if size - position < 10:
                    break
                length = int.from_bytes(buffer[start : start + 8], "big")
                start += 8
            end = start + length
            if end > size:
                break
            if first == 0x81 and buffer.startswith(MESSAGE_PREFIX, start):
                at = buffer.find(SEQ_KEY, start, end) + len(SEQ_KEY)
                seqs.append(int(buffer[at : buffer.find(b",", at, end)]))
                times.append(now)
            else:
                self._frame(first, buffer[start:end], now)
            position = end
        self._buffer = buffer[position:] if position < size else b""

    def _frame(self, first: int, payload: bytes, now: int) -> None:
        if first & 0x40:
            # RSV1: a message compressed by permessage-deflate (RFC 7692 §6.2).
            payload = self._inflater.decompress(payload + DEFLATE_TAIL)
        if not first & 0x80:
            raise ConnectionError("the server fragmented a message; this client does not")
        opcode = first & 0x0F
        if opcode == OPCODE_TEXT:
            if payload.startswith(MESSAGE_PREFIX):
                at = payload.find(SEQ_KEY) + len(SEQ_KEY)
                self._receipts.seqs.append(int(payload[at : payload.find(b",", at)]))
                self._receipts.times.append(now)
            elif payload == LAGGED_FRAME:
                self._receipts.lagged += 1
            else:
                self.inbox.put_nowait(payload.decode())
        elif opcode == OPCODE_PING and self.transport is not None:
            self.transport.write(client_frame(OPCODE_PONG, payload))
        elif opcode == OPCODE_CLOSE:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            self._receipts.closed[code] = self._receipts.closed.get(code, 0) + 1
            self.close()


async def _expect(device: Device, kind: str) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await device.inbox.get())
    if frame.get("type") != kind:
        raise ConnectionError(f"expected {kind!r}, got {frame}")
    return frame


async def open_device(
    receipts: Receipts,
    url: str,
    *,
    mode: str,
    private_key: bytes,
    group: str,
    deflate: bool,
) -> Device:
    """
    Connect one device and bring it to the point where it receives the group's notices.

    :param url: ``ws://host:port/path``.
    :param mode: ``relay`` (challenge, auth, subscribe) or ``bare`` (wait for ``ready``).
    :param private_key: the device's Ed25519 key (relay mode).
    :param group: the group id to subscribe to, base64url (relay mode).
    :param deflate: offer permessage-deflate.
    :returns: the connected device.
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(HANDSHAKE_TIMEOUT_SECONDS):
        _, device = await loop.create_connection(
            lambda: Device(receipts, f"{host}:{port}", parts.path, deflate=deflate), host, port
        )
        await device.upgraded
        if mode == "bare":
            await _expect(device, "ready")
            return device
        challenge = auth.decode_b64u((await _expect(device, "challenge"))["challenge"])
        headers = auth.sign_request(
            device_private_key=private_key,
            method="GET",
            target=parts.path,
            body=challenge,
            timestamp=int(time.time()),
            nonce=secrets.token_bytes(auth.NONCE_BYTES),
        )
        device.send_text(json.dumps({"type": "auth", "headers": headers}))
        await _expect(device, "ready")
        device.send_text(json.dumps({"type": "subscribe", "groups": [group]}))
        subscribed = await _expect(device, "subscribed")
        if subscribed["groups"] != [group]:
            raise ConnectionError(f"the subscription was refused: {subscribed}")
        return device


def _percentile(ordered: list[int], fraction: float) -> int:
    # Nearest rank on a sorted list (the p99 of 100 values is the 99th).
    index = max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[index]


def report(receipts: Receipts, sends: dict[int, int], devices: int) -> dict[str, Any]:
    """
    Summarise the receipts of the messages sent at ``sends`` (seq to monotonic ns).

    :param devices: how many devices each message should reach.
    :returns: deliveries, their rate, latencies (ms) and per-message completion.
    """
    latencies: list[int] = []
    per_message: dict[int, list[int]] = {seq: [] for seq in sends}
    for seq, at in zip(receipts.seqs, receipts.times, strict=True):
        arrivals = per_message.get(seq)
        if arrivals is not None:
            arrivals.append(at)
            latencies.append(at - sends[seq])
    latencies.sort()
    complete = [
        max(arrivals) - sends[seq]
        for seq, arrivals in per_message.items()
        if len(arrivals) >= devices
    ]
    complete.sort()
    last = max((max(a) for a in per_message.values() if a), default=0)
    first = min(sends.values(), default=0)
    elapsed = (last - first) / 1e9 if last > first else 0.0

    def ms(values: list[int], fraction: float) -> float | None:
        return _percentile(values, fraction) / 1e6 if values else None

    return {
        "messages": len(sends),
        "deliveries": len(latencies),
        "expected": len(sends) * devices,
        "seconds": elapsed,
        "deliveries_per_s": len(latencies) / elapsed if elapsed else 0.0,
        "latency_ms": {"p50": ms(latencies, 0.5), "p99": ms(latencies, 0.99)},
        "latency_max_ms": latencies[-1] / 1e6 if latencies else None,
        "all_reached_ms": {"p50": ms(complete, 0.5), "p99": ms(complete, 0.99)},
        "all_reached_max_ms": complete[-1] / 1e6 if complete else None,
        "complete_messages": len(complete),
        # Each message's time to reach every device, when few enough to list (the tail's
        # shape: one slow message, or all of them).
        "all_reached_ms_each": (
            [round(c / 1e6, 1) for c in complete] if len(complete) <= 100 else None
        ),
        "lagged": receipts.lagged,
        "closed": {str(code): n for code, n in receipts.closed.items()},
    }


class Generator:
    """
    The load generator's state: its devices and their receipts.
    """

    def __init__(self) -> None:
        self.receipts = Receipts()
        self.devices: list[Device] = []

    async def connect(self, command: dict[str, Any]) -> dict[str, Any]:
        keys = Path(command["keys"]).read_bytes() if command.get("keys") else b""
        first, count = int(command["first"]), int(command["count"])
        gate = asyncio.Semaphore(int(command.get("parallel", 64)))

        async def one(index: int) -> Device:
            async with gate:
                return await open_device(
                    self.receipts,
                    command["url"],
                    mode=command["mode"],
                    private_key=keys[32 * index : 32 * index + 32],
                    group=command.get("group", ""),
                    deflate=bool(command.get("deflate", False)),
                )

        start = time.perf_counter()
        async with asyncio.TaskGroup() as tasks:
            opened = [tasks.create_task(one(index)) for index in range(first, first + count)]
        self.devices.extend(task.result() for task in opened)
        return {
            "connected": count,
            "open": len(self.devices),
            "seconds": time.perf_counter() - start,
        }

    async def wait(self, command: dict[str, Any]) -> dict[str, Any]:
        target, deadline = int(command["deliveries"]), time.monotonic() + float(command["timeout"])
        while len(self.receipts.seqs) < target and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        return {"received": len(self.receipts.seqs)}

    async def close(self) -> dict[str, Any]:
        closed = len(self.devices)
        for device in self.devices:
            device.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                await asyncio.gather(*(device.lost for device in self.devices))
        self.devices.clear()
        return {"closed": closed}

    async def handle(self, command: dict[str, Any]) -> dict[str, Any]:
        match command["cmd"]:
            case "connect":
                return await self.connect(command)
            case "reset":
                self.receipts.reset()
                return {"ok": True}
            case "wait":
                return await self.wait(command)
            case "report":
                sends = {int(seq): int(at) for seq, at in command["sends"].items()}
                return report(self.receipts, sends, int(command["devices"]))
            case "close":
                return await self.close()
        raise ValueError(f"unknown command {command['cmd']!r}")


async def serve_commands() -> None:
    """
    Answer commands from standard input until it closes.
    """
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    generator = Generator()
    while line := await reader.readline():
        try:
            answer = await generator.handle(json.loads(line))
        except Exception as exc:  # noqa: BLE001 - any failure is reported to the driver
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
    await generator.close()


class LoadGenerator:
    """
    The driver's handle on a load-generator process.
    """

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process

    @classmethod
    async def start(cls) -> LoadGenerator:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(Path(__file__).resolve()),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=1 << 26,
        )
        return cls(process)

    @property
    def pid(self) -> int:
        return self._process.pid

    async def call(self, command: dict[str, Any]) -> dict[str, Any]:
        """
        Send one command and wait for its answer.

        :raises RuntimeError: if the load generator reports an error or has exited.
        """
        assert self._process.stdin is not None
        assert self._process.stdout is not None
        self._process.stdin.write(json.dumps(command).encode() + b"\n")
        await self._process.stdin.drain()
        line = await self._process.stdout.readline()
        if not line:
            raise RuntimeError("the load generator exited")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"load generator: {answer['error']}")
        return answer

    async def stop(self) -> None:
        if self._process.returncode is not None:
            return
        assert self._process.stdin is not None
        self._process.stdin.close()
        try:
            async with asyncio.timeout(20):
                await self._process.wait()
        except TimeoutError:
            self._process.kill()
            await self._process.wait()


def main() -> None:
    asyncio.run(serve_commands())


if __name__ == "__main__":
    main()
