"""
Shared timing harness for the benchmarks: repeated runs, median and p99, JSON-lines results.

Benchmarks print figures; tests never assert timings. Each measurement is a
number of rounds of a fixed number of calls; the figures are per call.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


@dataclass(frozen=True, slots=True)
class Figure:
    name: str
    params: dict[str, object]
    n: int
    median_us: float
    p99_us: float

    @property
    def ops_per_s(self) -> float:
        return 1e6 / self.median_us if self.median_us else float("inf")


def measure(
    name: str,
    fn: Callable[[], object],
    *,
    rounds: int = 30,
    calls: int = 20,
    warmup: int = 3,
    **params: object,
) -> Figure:
    """
    Time ``fn`` over ``rounds`` rounds of ``calls`` calls; per-call median and p99 of the rounds.
    """
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter() - start) / calls * 1e6)
    samples.sort()
    p99 = samples[min(len(samples) - 1, round(0.99 * (len(samples) - 1)))]
    return Figure(name, params, rounds * calls, statistics.median(samples), p99)


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


def machine() -> str:
    cpu = "unknown cpu"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    system = f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores"
    return f"{system}, {cpu}, Python {platform.python_version()}"


def record(benchmark: str, figures: list[Figure]) -> Path:
    """
    Append one JSON line per figure to ``bench/results/<benchmark>.jsonl``.
    """
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{benchmark}.jsonl"
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    commit, host = _commit(), machine()
    with path.open("a") as out:
        for figure in figures:
            line = {"date": stamp, "commit": commit, "machine": host, **asdict(figure)}
            out.write(json.dumps(line, sort_keys=True) + "\n")
    return path
