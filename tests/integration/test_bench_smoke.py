"""
The relay fan-out benchmark runs end to end at toy sizes: ``bench/relay_fanout.py --quick``.

It starts the real relay and the bare server, a load-generator process, and a
30-device MLS group built on the relay; this checks that every notice sent
reached every connected device and that each figure was produced, never how
fast (benchmarks print figures; tests do not assert timings).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]

BENCHMARK = Path(__file__).resolve().parents[2] / "bench" / "relay_fanout.py"
TIMEOUT_SECONDS = 180


def test_relay_fanout_quick_run_delivers_every_notice(tmp_path: Path) -> None:
    results = tmp_path / "relay_fanout.jsonl"
    run = subprocess.run(
        [
            sys.executable,
            str(BENCHMARK),
            "--quick",
            "--cache",
            str(tmp_path / "cache"),
            "--record",
            str(results),
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECONDS,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    (line,) = results.read_text().splitlines()
    figures = json.loads(line)
    for server in ("relay", "bare"):
        for measured in (*figures[server]["rounds"], figures[server]["latency"]):
            assert measured["deliveries"] == measured["expected"] > 0
            assert measured["lagged"] == 0
        memory = figures[f"{server}_memory"]
        assert memory["rss_idle_kib"] > 0
        assert memory["rss_0_kib"] > 0
        large = memory["large"]
        assert large["complete_messages"] == large["messages"] > 0
    assert figures["ratio"] > 0
    assert "| relay / bare, deliveries/s |" in run.stdout
