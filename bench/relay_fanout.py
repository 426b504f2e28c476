"""
Relay fan-out: one sender, a group of connected devices, the relay against a bare server.

What it measures, each on loopback with the devices in a second process
(``bench/fanout_load.py``) and the relay a real ``townsquare serve`` over a
copy of a cached data folder (``bench/fanout_fixture.py``: registered
devices, one real MLS group built by real commits):

1. **Throughput.** A group of ``--devices`` members (500), every device
   connected and subscribed; ``--rounds`` times, ``--messages`` real MLS
   application messages (each a PrivateMessage holding a short
   ``wire.Text``, encrypted by a member's ``Group``; the members take turns,
   which keeps each under the relay's post quota) are posted through
   ``POST /v1/groups/{id}/messages``, ``--in-flight`` at a time, from this
   process; deliveries/s is every notice received divided by the time from
   the first send to the last receipt. The same load generator and sender
   then run against the bare broadcast server (``bench/fanout_bare.py``:
   uvicorn + Starlette, no auth, no database) with the same frames; the
   ratio is ours / bare. Each server's CPU time per delivery is printed too:
   on a shared machine it is the steadier figure.
2. **Latency.** Send-to-receipt time of each delivery (the receipt's
   ``CLOCK_MONOTONIC`` in the load generator minus the send's here), with the
   messages sent one every ``--latency-interval-ms``, so that it measures
   the path rather than a queue.
3. **Memory per idle connection.** A fresh server, warmed by a few
   connections, its ``VmRSS`` with 0 and then with ``--idle`` (2,000)
   authenticated, subscribed, idle connections: (RSS(idle) − RSS(0)) / idle.
   Also with ``permessage-deflate`` offered, as browsers do.
4. **A large group.** All ``--large`` (5,000) members of a group connected;
   for each of ``--large-messages`` messages, the time until the last device
   has it; p50 and p99 over the messages.

Targets (issue 5) are printed beside the figures. Figures go to
``bench/results/relay_fanout.jsonl`` (``--record``); nothing here asserts a
timing. ``--quick`` is a smoke run at toy sizes (about 15 s);
``tests/integration/test_bench_smoke.py`` runs it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from fanout_fixture import CACHE, Fixture, fixture, signed_headers
from fanout_load import LoadGenerator
from fanout_servers import ServerProcess, bare_process, raise_open_file_limit, relay_process
from harness import machine
from townsquare import auth, wire

RESULTS = Path(__file__).resolve().parent / "results"
#: Issue 5's targets.
TARGET_RATIO = 0.60
TARGET_IDLE_KIB = 30.0
TARGET_LARGE_P99_MS = 250.0
#: How long to wait for the last notices after the last send.
DRAIN_TIMEOUT_SECONDS = 60.0
#: Connections that warm a fresh server's code paths before its baseline RSS.
WARMUP_CONNECTIONS = 10
#: A short chat message: what each application message carries, encrypted.
TEXT = "明天上午九点在村委会开会，讨论修路的事。"

Request = tuple[str, bytes, dict[str, str]]


def log(message: str) -> None:
    print(message, flush=True)


def cpu_seconds(pid: int) -> float:
    """
    :returns: user + system CPU seconds used so far by process ``pid``.
    """
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- Senders: the relay's signed MLS messages, or the bare server's broadcast ---------------


class RelaySender:
    """
    The fixture's members in turn: real application messages, signed requests.

    One sending device would soon meet the relay's post quota
    (``Limits.posts_per_window``); taking turns keeps each under it.
    """

    def __init__(self, group_fixture: Fixture) -> None:
        group_fixture.check_members()
        self._fixture = group_fixture
        self._target = f"/v1/groups/{group_fixture.group_text}/messages"
        self._turn = 0

    def requests(self, count: int) -> list[Request]:
        # Encrypted and signed before the clock starts, so that the sender's own
        # CPU (this process) stays out of the relay's way; a signature is valid
        # for 300 s, longer than any phase.
        prepared = []
        for _ in range(count):
            index = self._turn % self._fixture.n
            self._turn += 1
            group, key = self._fixture.member(index), self._fixture.device_key(index)
            text = wire.Text(TEXT, message_id=wire.new_message_id(), sent_at=datetime.now(UTC))
            message = group.encrypt(wire.encode(text), rng=secrets.token_bytes)
            body = json.dumps(
                {
                    "client_message_id": auth.encode_b64u(secrets.token_bytes(16)),
                    "message": auth.encode_b64u(message),
                }
            ).encode()
            prepared.append((self._target, body, signed_headers(key, "POST", self._target, body)))
        return prepared

    def message_bytes(self) -> int:
        return len(auth.decode_b64u(json.loads(self.requests(1)[0][1])["message"]))


class BareSender:
    """
    The same request bodies, message bytes of the relay's size, to ``POST /broadcast``.
    """

    def __init__(self, message_bytes: int) -> None:
        self._message_bytes = message_bytes

    def requests(self, count: int) -> list[Request]:
        prepared = []
        for _ in range(count):
            body = json.dumps(
                {
                    "client_message_id": auth.encode_b64u(secrets.token_bytes(16)),
                    "message": auth.encode_b64u(secrets.token_bytes(self._message_bytes)),
                }
            ).encode()
            prepared.append(("/broadcast", body, {"content-type": "application/json"}))
        return prepared


async def _post(http: httpx.AsyncClient, request: Request, sends: dict[str, int]) -> None:
    target, body, headers = request
    sent_at = time.monotonic_ns()
    response = await http.post(target, content=body, headers=headers)
    if response.status_code != 201:
        raise RuntimeError(f"POST {target}: {response.status_code} {response.text}")
    sends[str(response.json()["seq"])] = sent_at


async def post_all(
    http: httpx.AsyncClient, requests: list[Request], in_flight: int
) -> dict[str, int]:
    """
    Post every request, ``in_flight`` at a time.

    :returns: each message's seq and the monotonic ns just before its request was sent.
    """
    sends: dict[str, int] = {}
    pending = iter(requests)

    async def worker() -> None:
        for request in pending:
            await _post(http, request, sends)

    async with asyncio.TaskGroup() as tasks:
        for _ in range(in_flight):
            tasks.create_task(worker())
    return sends


async def post_paced(
    http: httpx.AsyncClient, requests: list[Request], interval_seconds: float
) -> dict[str, int]:
    """
    Post one request every ``interval_seconds``.

    :returns: as :func:`post_all`.
    """
    sends: dict[str, int] = {}
    start = time.monotonic()
    for index, request in enumerate(requests):
        await asyncio.sleep(max(0.0, start + index * interval_seconds - time.monotonic()))
        await _post(http, request, sends)
    return sends


async def settle(load: LoadGenerator) -> None:
    """
    Give the notices of unmeasured messages (warm-ups) a second to arrive.
    """
    await load.call({"cmd": "wait", "deliveries": 1 << 62, "timeout": 1.0})


async def delivered(load: LoadGenerator, sends: dict[str, int], devices: int) -> dict[str, Any]:
    """
    Wait until every device has every message (or the drain timeout), then summarise.
    """
    await load.call(
        {"cmd": "wait", "deliveries": devices * len(sends), "timeout": DRAIN_TIMEOUT_SECONDS}
    )
    return await load.call({"cmd": "report", "sends": sends, "devices": devices})


# -- Phases -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Server:
    """
    A running server, how devices reach it, and the sender's requests for it.
    """

    name: str
    process: ServerProcess
    mode: str
    requests: Callable[[int], list[Request]]
    group: str = ""
    keys: str = ""

    async def connect(
        self, load: LoadGenerator, first: int, count: int, *, deflate: bool = False
    ) -> dict[str, Any]:
        return await load.call(
            {
                "cmd": "connect",
                "url": f"ws://127.0.0.1:{self.process.port}/v1/ws",
                "mode": self.mode,
                "keys": self.keys,
                "first": first,
                "count": count,
                "group": self.group,
                "parallel": 32,
                "deflate": deflate,
            }
        )


async def throughput_phase(
    server: Server, load: LoadGenerator, args: argparse.Namespace
) -> dict[str, Any]:
    """
    ``--devices`` connected; rounds of ``--messages`` as fast as the server takes them;
    then latency at a steady pace.
    """
    connected = await server.connect(load, 0, args.devices)
    log(f"  {server.name}: {connected['open']:,} devices connected in {connected['seconds']:.1f} s")
    rounds = []
    async with httpx.AsyncClient(base_url=server.process.url, timeout=60.0) as http:
        # Warm the HTTP connections and the server's code paths; not measured.
        await post_all(http, server.requests(args.in_flight * 4), args.in_flight)
        await settle(load)
        for number in range(args.rounds):
            requests = server.requests(args.messages)
            await load.call({"cmd": "reset"})
            cpu_before = {
                "server": cpu_seconds(server.process.pid),
                "load": cpu_seconds(load.pid),
                "sender": time.process_time(),
            }
            sends = await post_all(http, requests, args.in_flight)
            summary = await delivered(load, sends, args.devices)
            summary["cpu_seconds"] = {
                "server": cpu_seconds(server.process.pid) - cpu_before["server"],
                "load": cpu_seconds(load.pid) - cpu_before["load"],
                "sender": time.process_time() - cpu_before["sender"],
            }
            rounds.append(summary)
            log(
                f"    round {number + 1}: {summary['deliveries']:,}/{summary['expected']:,} "
                f"deliveries in {summary['seconds']:.2f} s = "
                f"{summary['deliveries_per_s']:,.0f}/s (CPU s: "
                + ", ".join(f"{k} {v:.1f}" for k, v in summary["cpu_seconds"].items())
                + ")"
            )
        requests = server.requests(args.latency_messages)
        await load.call({"cmd": "reset"})
        sends = await post_paced(http, requests, args.latency_interval_ms / 1000)
        latency = await delivered(load, sends, args.devices)
    await load.call({"cmd": "close"})
    rates = [r["deliveries_per_s"] for r in rounds]
    return {
        "devices": args.devices,
        "messages_per_round": args.messages,
        "rounds": rounds,
        "deliveries_per_s_median": statistics.median(rates),
        "deliveries_per_s_max": max(rates),
        "latency": latency,
    }


async def _settled_rss(process: ServerProcess, seconds: float) -> int:
    # Let the server finish what the connections started, then read its RSS.
    await asyncio.sleep(seconds)
    return process.rss_kib()


async def memory_and_large_phase(
    server: Server, load: LoadGenerator, args: argparse.Namespace, *, deflate: bool
) -> dict[str, Any]:
    """
    On a fresh server: RSS with 0 and ``--idle`` connections; then, unless ``deflate``,
    ``--large`` connected and the time for each message to reach all of them.
    """
    await server.connect(load, 0, WARMUP_CONNECTIONS, deflate=deflate)
    await load.call({"cmd": "close"})
    rss_0 = await _settled_rss(server.process, args.settle_seconds)
    connected = await server.connect(load, 0, args.idle, deflate=deflate)
    rss_idle = await _settled_rss(server.process, args.settle_seconds)
    result: dict[str, Any] = {
        "deflate": deflate,
        "idle": args.idle,
        "rss_0_kib": rss_0,
        "rss_idle_kib": rss_idle,
        "kib_per_idle": (rss_idle - rss_0) / args.idle,
        "connect_seconds": connected["seconds"],
    }
    log(
        f"  {server.name}{' (permessage-deflate)' if deflate else ''}: RSS {rss_0:,} KiB "
        f"with 0, {rss_idle:,} KiB with {args.idle:,} idle connections: "
        f"{result['kib_per_idle']:.1f} KiB each"
    )
    if deflate or args.large <= args.idle:
        await load.call({"cmd": "close"})
        return result
    await server.connect(load, args.idle, args.large - args.idle)
    result["rss_large_kib"] = await _settled_rss(server.process, args.settle_seconds)
    async with httpx.AsyncClient(base_url=server.process.url, timeout=60.0) as http:
        await post_paced(http, server.requests(2), 0.5)
        await settle(load)
        await load.call({"cmd": "reset"})
        sends = await post_paced(
            http, server.requests(args.large_messages), args.large_interval_ms / 1000
        )
        result["large"] = await delivered(load, sends, args.large)
    await load.call({"cmd": "close"})
    large = result["large"]
    log(
        f"  {server.name}: {args.large:,} connected, {large['complete_messages']}/"
        f"{large['messages']} messages reached all: p50 {_ms(large['all_reached_ms']['p50'])}, "
        f"p99 {_ms(large['all_reached_ms']['p99'])}"
    )
    return result


# -- Running the servers ------------------------------------------------------------------


async def with_relay(
    group_fixture: Fixture, work: Path, run: Callable[[Server], Awaitable[dict[str, Any]]]
) -> dict[str, Any]:
    data = group_fixture.copy_data(work / f"relay-{secrets.token_hex(4)}")
    process = relay_process(data, work / "relay.log")
    process.start()
    try:
        sender = RelaySender(group_fixture)
        server = Server(
            name="relay",
            process=process,
            mode="relay",
            requests=sender.requests,
            group=group_fixture.group_text,
            keys=str(group_fixture.keys_path),
        )
        return await run(server)
    finally:
        process.stop()


async def with_bare(
    message_bytes: int, work: Path, run: Callable[[Server], Awaitable[dict[str, Any]]]
) -> dict[str, Any]:
    process = bare_process(work / "bare.log")
    process.start()
    try:
        sender = BareSender(message_bytes)
        return await run(
            Server(name="bare", process=process, mode="bare", requests=sender.requests)
        )
    finally:
        process.stop()


async def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    small = await fixture(args.devices, cache=args.cache, rebuild=args.rebuild, log=log)
    large = await fixture(
        max(args.large, args.idle + WARMUP_CONNECTIONS),
        cache=args.cache,
        rebuild=args.rebuild,
        log=log,
    )
    message_bytes = RelaySender(small).message_bytes()
    log(f"  one message: {message_bytes} bytes of MLS PrivateMessage")
    load = await LoadGenerator.start()
    try:
        results: dict[str, Any] = {"message_bytes": message_bytes}
        if "throughput" in args.phases:
            log(f"Throughput and latency, {args.devices:,} devices:")
            results["relay"] = await with_relay(
                small, work, lambda server: throughput_phase(server, load, args)
            )
            results["bare"] = await with_bare(
                message_bytes, work, lambda server: throughput_phase(server, load, args)
            )
        if "memory" not in args.phases:
            return results
        log(f"Memory per idle connection, then {args.large:,} connected:")
        results["relay_memory"] = await with_relay(
            large, work, lambda server: memory_and_large_phase(server, load, args, deflate=False)
        )
        results["bare_memory"] = await with_bare(
            message_bytes,
            work,
            lambda server: memory_and_large_phase(server, load, args, deflate=False),
        )
        if args.deflate:
            results["relay_memory_deflate"] = await with_relay(
                large, work, lambda server: memory_and_large_phase(server, load, args, deflate=True)
            )
            results["bare_memory_deflate"] = await with_bare(
                message_bytes,
                work,
                lambda server: memory_and_large_phase(server, load, args, deflate=True),
            )
        return results
    finally:
        await load.stop()


# -- Output -------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} ms"


def _verdict(ok: bool) -> str:  # noqa: FBT001 - a table cell
    return "met" if ok else "MISSED"


def _cpu_us_per_delivery(figures: dict[str, Any]) -> float:
    # The server's CPU time over the rounds, per delivery: unlike deliveries/s, it
    # hardly depends on what else the (shared) machine is doing.
    cpu = sum(r["cpu_seconds"]["server"] for r in figures["rounds"])
    deliveries = sum(r["deliveries"] for r in figures["rounds"])
    return cpu / deliveries * 1e6 if deliveries else float("nan")


def _throughput_table(results: dict[str, Any], args: argparse.Namespace) -> list[tuple[str, ...]]:
    relay, bare = results["relay"], results["bare"]
    ratio = relay["deliveries_per_s_median"] / bare["deliveries_per_s_median"]
    cpu_ratio = _cpu_us_per_delivery(bare) / _cpu_us_per_delivery(relay)
    results["ratio"] = ratio
    results["cpu_ratio"] = cpu_ratio
    print(
        f"Fan-out to {args.devices:,} connected devices: {args.rounds} rounds of "
        f"{args.messages:,} messages, {args.in_flight} in flight; deliveries/s is the median "
        "of the rounds (the best in brackets); latency is of "
        f"{args.latency_messages} more messages, one every {args.latency_interval_ms:g} ms, "
        "from just before the POST to the bytes read by each device."
    )
    print()
    print("| server | deliveries/s | server CPU per delivery | latency p50 | latency p99 | lost |")
    print("|---|---|---|---|---|---|")
    for name, figures in (("relay", relay), ("bare", bare)):
        latency = figures["latency"]
        lost = sum(r["expected"] - r["deliveries"] for r in figures["rounds"])
        lost += latency["expected"] - latency["deliveries"]
        print(
            f"| {name} | {figures['deliveries_per_s_median']:,.0f} "
            f"({figures['deliveries_per_s_max']:,.0f}) | "
            f"{_cpu_us_per_delivery(figures):.1f} µs | {_ms(latency['latency_ms']['p50'])} | "
            f"{_ms(latency['latency_ms']['p99'])} | {lost} |"
        )
    print()
    return [
        (
            "relay / bare, deliveries/s",
            f"{ratio:.0%}",
            f"≥ {TARGET_RATIO:.0%}",
            _verdict(ratio >= TARGET_RATIO),
        ),
        ("relay / bare, deliveries per CPU second", f"{cpu_ratio:.0%}", "", ""),
    ]


def _memory_rows(results: dict[str, Any], args: argparse.Namespace) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for key, label in (
        ("relay_memory", "relay"),
        ("relay_memory_deflate", "relay, permessage-deflate"),
        ("bare_memory", "bare"),
        ("bare_memory_deflate", "bare, permessage-deflate"),
    ):
        if key not in results:
            continue
        memory = results[key]
        per = memory["kib_per_idle"]
        target = key.startswith("relay")
        rows.append(
            (
                f"RSS per idle connection, 0 → {args.idle:,} ({label})",
                f"{per:.1f} KiB",
                f"≤ {TARGET_IDLE_KIB:.0f} KiB" if target else "",
                _verdict(per <= TARGET_IDLE_KIB) if target else "",
            )
        )
        if "rss_large_kib" in memory:
            marginal = (memory["rss_large_kib"] - memory["rss_idle_kib"]) / (args.large - args.idle)
            memory["kib_per_idle_marginal"] = marginal
            rows.append(
                (
                    f"RSS per connection, {args.idle:,} → {args.large:,} ({label})",
                    f"{marginal:.1f} KiB",
                    "",
                    "",
                )
            )
    for key, label in (("relay_memory", "relay"), ("bare_memory", "bare")):
        large = results.get(key, {}).get("large")
        if large is None:
            continue
        p99 = large["all_reached_ms"]["p99"]
        complete = large["complete_messages"] == large["messages"]
        target = key == "relay_memory"
        rows.append(
            (
                f"{args.large:,} devices, time for a message to reach all, p50 / p99 ({label})",
                f"{_ms(large['all_reached_ms']['p50'])} / {_ms(p99)}"
                + (
                    ""
                    if complete
                    else f" ({large['complete_messages']}/{large['messages']} complete)"
                ),
                f"p99 ≤ {TARGET_LARGE_P99_MS:.0f} ms" if target else "",
                _verdict(complete and p99 is not None and p99 <= TARGET_LARGE_P99_MS)
                if target
                else "",
            )
        )
    return rows


def print_tables(results: dict[str, Any], args: argparse.Namespace) -> None:
    print()
    if args.quick:
        print("(--quick: a smoke run at toy sizes; its figures say nothing about the targets)")
        print()
    rows: list[tuple[str, ...]] = []
    if "relay" in results and "bare" in results:
        rows += _throughput_table(results, args)
    rows += _memory_rows(results, args)
    print("| figure | measured | target | |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607 - git from PATH
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()


def record(results: dict[str, Any], args: argparse.Namespace) -> Path:
    path: Path = args.record
    path.parent.mkdir(parents=True, exist_ok=True)
    line = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": _commit(),
        "machine": machine(),
        "load_average": os.getloadavg(),
        "params": {
            k: sorted(v) if isinstance(v, set) else v
            for k, v in vars(args).items()
            if k not in ("rebuild", "no_record", "cache", "record")
        },
        "targets": {
            "ratio": TARGET_RATIO,
            "kib_per_idle": TARGET_IDLE_KIB,
            "large_all_reached_p99_ms": TARGET_LARGE_P99_MS,
        },
        **results,
    }
    with path.open("a") as out:
        out.write(json.dumps(line, sort_keys=True, ensure_ascii=False) + "\n")
    return path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--devices", type=int, default=500, help="group size for throughput")
    parser.add_argument("--messages", type=int, default=1000, help="messages per round")
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds")
    parser.add_argument("--in-flight", type=int, default=8, help="posts in flight")
    parser.add_argument("--latency-messages", type=int, default=200)
    parser.add_argument("--latency-interval-ms", type=float, default=20.0)
    parser.add_argument("--idle", type=int, default=2000, help="idle connections for RSS")
    parser.add_argument("--large", type=int, default=5000, help="the large group's size")
    parser.add_argument("--large-messages", type=int, default=30)
    parser.add_argument("--large-interval-ms", type=float, default=400.0)
    parser.add_argument(
        "--no-deflate",
        dest="deflate",
        action="store_false",
        help="skip the idle-memory runs with permessage-deflate offered",
    )
    parser.add_argument(
        "--phases",
        type=lambda text: set(text.split(",")),
        default={"throughput", "memory"},
        help="which phases to run: throughput,memory (default: both)",
    )
    parser.add_argument(
        "--settle-seconds",
        type=float,
        default=2.0,
        help="pause before each RSS reading (default: 2)",
    )
    parser.add_argument(
        "--cache", type=Path, default=CACHE, help=f"where the built groups are kept ({CACHE})"
    )
    parser.add_argument("--rebuild", action="store_true", help="rebuild the cached groups")
    parser.add_argument(
        "--record",
        type=Path,
        default=RESULTS / "relay_fanout.jsonl",
        help="the JSON-lines file the figures are appended to",
    )
    parser.add_argument("--no-record", action="store_true", help="do not append the figures")
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run with very small numbers (seconds)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        # One 30-device group serves every phase, so a first run builds one fixture.
        args.devices, args.messages, args.rounds, args.in_flight = 30, 40, 1, 4
        args.latency_messages, args.latency_interval_ms = 10, 10.0
        args.idle, args.large, args.large_messages, args.large_interval_ms = 20, 30, 3, 50.0
        args.settle_seconds, args.deflate = 0.3, False
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    limit = raise_open_file_limit()
    needed = max(args.devices, args.large) + 100
    if limit < needed:
        log(f"the open-file limit is {limit}; {needed} are needed (ulimit -n)")
        return 1
    log(f"Relay fan-out: {machine()}; open-file limit {limit}")
    with tempfile.TemporaryDirectory(prefix="relay-fanout-") as work:
        results = asyncio.run(run(args, Path(work)))
    print_tables(results, args)
    if not args.no_record:
        log(f"Appended to {record(results, args)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
