"""
A small coverage-guided fuzzer in pure Python, for machines where atheris does not install.

atheris ships wheels for CPython 3.11 to 3.13 on x86-64 Linux only; elsewhere
(macOS, ARM, newer Pythons) ``fuzz/run.py`` falls back to this engine. It
keeps libFuzzer's shape, much slower (roughly 1/10 of the speed) and with
cruder feedback:

* coverage is the set of line-to-line arcs executed in ``townsquare`` code,
  recorded with :func:`sys.settrace`, plus the shape features targets report
  (:data:`fuzz.harness.FEEDBACK`);
* an input that reaches a new arc joins the corpus (and the corpus folder);
* each round picks a corpus entry and applies one to four mutations (bit
  flips, interesting bytes, minimal varints, inserted, erased, copied or
  spliced ranges);
* a non-allowed exception writes ``<artifact_prefix>crash-<sha1>`` and exits 77,
  and an input running longer than the timeout writes ``timeout-<sha1>`` and
  exits 70, as libFuzzer does.

Its output uses libFuzzer's status and ``stat::`` lines, so the runner reads
both engines alike. Randomness is a seeded SplitMix64, so a run replays.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import townsquare
from fuzz.harness import FEEDBACK, Target

__all__ = ["CRASH_EXIT", "TIMEOUT_EXIT", "SplitMix64", "fuzz", "mutate"]

#: libFuzzer's exit status for a crash (``-error_exitcode``).
CRASH_EXIT = 77
#: libFuzzer's exit status for a timeout (``-timeout_exitcode``).
TIMEOUT_EXIT = 70

# What sys.settrace accepts: a function of (frame, event, arg) returning the
# function that traces the frame's lines, or None.
_TraceFunction = Callable[[FrameType, str, Any], "_TraceFunction | None"]

_MASK64 = (1 << 64) - 1
# Values that sit on the boundaries of RFC 9420 §2.1 encodings: varint
# prefixes (0x40, 0x80, 0xc0), presence octets, the ends of uint ranges.
_INTERESTING = (0x00, 0x01, 0x02, 0x03, 0x3F, 0x40, 0x7F, 0x80, 0xBF, 0xC0, 0xFE, 0xFF)
_VARINTS = (0, 1, 63, 64, 16383, 16384, (1 << 30) - 1)


class SplitMix64:
    """
    A tiny seeded generator (Steele, Lea and Flood's SplitMix64): replayable, not secret.
    """

    __slots__ = ("_state",)

    def __init__(self, seed: int) -> None:
        """
        :param seed: any integer.
        """
        self._state = seed & _MASK64

    def next64(self) -> int:
        """
        :returns: the next 64-bit value.
        """
        self._state = (self._state + 0x9E3779B97F4A7C15) & _MASK64
        z = self._state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        return z ^ (z >> 31)

    def below(self, n: int) -> int:
        """
        :returns: an integer in ``[0, n)``; 0 when ``n`` is 0.
        """
        return self.next64() % n if n > 0 else 0


def _varint(value: int) -> bytes:
    if value < 0x40:
        return bytes([value])
    if value < 0x4000:
        return (0x4000 | value).to_bytes(2, "big")
    return (0x80000000 | value).to_bytes(4, "big")


def mutate(data: bytes, rng: SplitMix64, corpus: Sequence[bytes], max_len: int) -> bytes:
    """
    Apply one to four random mutations to ``data``.

    :param data: the input to start from.
    :param rng: the generator.
    :param corpus: other inputs, for splicing.
    :param max_len: the longest result allowed.
    :returns: the mutated input, at most ``max_len`` bytes.
    """
    out = bytearray(data)
    for _ in range(1 + rng.below(4)):
        kind = rng.below(9)
        pos = rng.below(len(out) + 1)
        if kind == 0 and out:
            out[pos % len(out)] ^= 1 << rng.below(8)
        elif kind == 1 and out:
            out[pos % len(out)] = _INTERESTING[rng.below(len(_INTERESTING))]
        elif kind == 2 and out:
            out[pos % len(out)] = rng.below(256)
        elif kind == 3:
            out[pos:pos] = bytes(rng.below(256) for _ in range(1 + rng.below(8)))
        elif kind == 4 and out:
            del out[pos : pos + 1 + rng.below(16)]
        elif kind == 5 and out:
            # Overwrite with a varint, often a length prefix's new value.
            value = _VARINTS[rng.below(len(_VARINTS))] if rng.below(2) else rng.below(len(out) + 2)
            encoded = _varint(value)
            out[pos : pos + len(encoded)] = encoded
        elif kind == 6 and out:
            start = rng.below(len(out))
            chunk = out[start : start + 1 + rng.below(32)]
            out[pos:pos] = chunk
        elif kind == 7 and corpus:
            other = corpus[rng.below(len(corpus))]
            start = rng.below(len(other))
            out[pos:] = other[start:]
        elif kind == 8:
            del out[pos:]
    return bytes(out[:max_len])


class _Coverage:
    """
    Line-to-line arcs executed in files under one folder.
    """

    def __init__(self, root: str) -> None:
        self.root = root
        self.arcs: set[tuple[int, int, int]] = set()
        self._run: set[tuple[int, int, int]] = set()

    def _global(self, frame: FrameType, event: str, arg: object) -> _TraceFunction | None:
        del arg
        code = frame.f_code
        # Files under the package, and the code it compiles at run time
        # (codec.py may generate each struct's decoder as <townsquare.mls.codec ...>).
        if event != "call" or not code.co_filename.startswith((self.root, "<townsquare")):
            return None
        key = id(code)
        previous = -1
        run = self._run

        def local(frame: FrameType, event: str, arg: object) -> _TraceFunction:
            nonlocal previous
            del arg
            if event == "line":
                run.add((key, previous, frame.f_lineno))
                previous = frame.f_lineno
            return local

        return local

    def note(self, key: int) -> None:
        """
        Count a shape feature (see :data:`fuzz.harness.FEEDBACK`) as covered by this run.
        """
        self._run.add((-1, -1, key))

    def trace(self, call: Callable[[], object]) -> int:
        """
        Run ``call`` under tracing.

        :returns: how many arcs it reached that no earlier call had.
        """
        self._run = set()
        sys.settrace(self._global)
        try:
            call()
        finally:
            sys.settrace(None)
        new = self._run - self.arcs
        self.arcs |= new
        return len(new)


class _Timeout(Exception):
    """
    Raised by the alarm when one input runs longer than the timeout.
    """


class _Stop(Exception):
    """
    Ends the run after a finding has been reported, carrying the exit status.
    """

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    del signum, frame
    raise _Timeout


def _say(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _write_artifact(prefix: str, kind: str, data: bytes) -> str:
    path = f"{prefix}{kind}-{hashlib.sha1(data, usedforsecurity=False).hexdigest()}"
    Path(path).write_bytes(data)
    return path


def _read_corpus(directories: Iterable[Path]) -> list[bytes]:
    inputs: list[bytes] = []
    for directory in directories:
        if directory.is_dir():
            inputs.extend(p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file())
    return inputs


def fuzz(
    target: Target,
    *,
    corpus_dirs: Sequence[Path],
    seconds: float,
    artifact_prefix: str,
    seed: int,
    timeout: float,
    max_len: int,
) -> int:
    """
    Fuzz ``target`` until ``seconds`` have passed or a finding.

    :param target: the target.
    :param corpus_dirs: corpus folders to start from; new inputs go to the first.
    :param seconds: the time budget.
    :param artifact_prefix: where a finding is written (a folder path ending in ``/``).
    :param seed: the generator's seed.
    :param timeout: seconds one input may take before it counts as a finding.
    :param max_len: the longest input generated (0: the longest seed, at least 4096).
    :returns: the exit status: 0, :data:`CRASH_EXIT` or :data:`TIMEOUT_EXIT`.
    """
    coverage = _Coverage(os.path.dirname(townsquare.__file__))
    FEEDBACK.install(coverage.note)
    rng = SplitMix64(seed)
    seeds = _read_corpus(corpus_dirs) or [b""]
    max_len = max_len or max(4096, *(len(s) for s in seeds))
    out_dir = corpus_dirs[0] if corpus_dirs else None
    use_alarm = hasattr(signal, "setitimer")
    if use_alarm:
        signal.signal(signal.SIGALRM, _on_alarm)
    _say(f"INFO: Seed: {seed}")
    _say(f"INFO: pure-Python engine, {len(seeds)} seed inputs, -max_len={max_len}")

    corpus: list[bytes] = []
    start = time.monotonic()
    runs = 0
    new_units = 0

    def status(label: str) -> None:
        elapsed = max(time.monotonic() - start, 1e-9)
        size = sum(len(c) for c in corpus)
        _say(
            f"#{runs}\t{label} cov: {len(coverage.arcs)} ft: {len(coverage.arcs)} "
            f"corp: {len(corpus)}/{size}b exec/s: {int(runs / elapsed)}"
        )

    def execute(data: bytes) -> int:
        """
        Run one input and return the number of new arcs; report a finding by raising _Stop.
        """
        nonlocal runs
        runs += 1
        try:
            if use_alarm:
                signal.setitimer(signal.ITIMER_REAL, timeout)
            try:
                return coverage.trace(lambda: target.run(data))
            finally:
                if use_alarm:
                    signal.setitimer(signal.ITIMER_REAL, 0)
        except _Timeout:
            _say(f"ALARM: working on the last Unit for {timeout} seconds")
            path = _write_artifact(artifact_prefix, "timeout", data)
            _say(f"artifact_prefix='{artifact_prefix}'; Test unit written to {path}")
            raise _Stop(TIMEOUT_EXIT) from None
        except Exception:  # noqa: BLE001 - every escape is the finding we look for
            _say("\n === Uncaught Python exception: ===")
            _say(traceback.format_exc().rstrip())
            path = _write_artifact(artifact_prefix, "crash", data)
            _say(f"artifact_prefix='{artifact_prefix}'; Test unit written to {path}")
            raise _Stop(CRASH_EXIT) from None

    def finish(code: int) -> int:
        elapsed = max(time.monotonic() - start, 1e-9)
        status("DONE")
        _say(f"Done {runs} runs in {int(elapsed)} second(s)")
        _say(f"stat::number_of_executed_units: {runs}")
        _say(f"stat::average_exec_per_sec:     {int(runs / elapsed)}")
        _say(f"stat::new_units_added:          {new_units}")
        return code

    try:
        for data in seeds:
            if execute(data[:max_len]):
                corpus.append(data[:max_len])
        if not corpus:
            corpus.append(seeds[0][:max_len])
        status("INITED")

        deadline = start + seconds
        next_pulse = time.monotonic() + 2
        while time.monotonic() < deadline:
            data = mutate(corpus[rng.below(len(corpus))], rng, corpus, max_len)
            if execute(data):
                corpus.append(data)
                new_units += 1
                if out_dir is not None:
                    name = hashlib.sha1(data, usedforsecurity=False).hexdigest()
                    (out_dir / name).write_bytes(data)
                status("NEW")
            if time.monotonic() >= next_pulse:
                status("pulse")
                next_pulse += 2
    except _Stop as stop:
        return finish(stop.code)
    return finish(0)
