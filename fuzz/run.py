"""
Fuzz the MLS decoders: ``python fuzz/run.py [--target NAME]... [--seconds N]``.

For each target (all by default) the runner writes the seed corpus drawn
from the IETF vectors to a temporary folder, starts a worker process
(:mod:`fuzz.worker`) that fuzzes the target for ``--seconds`` with atheris
(libFuzzer) or, where atheris is not installed, the pure-Python engine of
:mod:`fuzz.engine`, and reads the engine's statistics from its output. New
inputs accumulate in ``--corpus-dir/<target>/`` between runs; a finding is
written to ``--artifacts`` and reported with its input in hex and the Python
traceback. The exit status is 1 if any target had a finding.

Other modes: ``--replay FILE...`` runs saved inputs in this process (no
engine) and reports what each raised; ``--write-seeds DIR`` writes the seed
corpus; ``--list`` names the targets. See ``fuzz/README.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# Run as a script (python fuzz/run.py), Python puts fuzz/ itself on the path;
# the package's parent must be there for `import fuzz.*`.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fuzz.harness import Target, read_input
from fuzz.seeds import load_seed_source, write_corpus
from fuzz.targets import TARGETS

__all__ = [
    "ROOT",
    "Finding",
    "TargetResult",
    "atheris_available",
    "describe",
    "fuzz_target",
    "main",
    "replay",
]

#: The repository's root folder.
ROOT = Path(__file__).resolve().parents[1]

#: How long a worker may run beyond its budget (loading a large corpus) before it counts as hung.
WORKER_SLACK_SECONDS = 300

_STATUS = re.compile(r"^#(\d+)\s+(INITED|NEW|REDUCE|pulse|DONE|RELOAD)\b")
_COV = re.compile(r"\bcov: (\d+)")
_FT = re.compile(r"\bft: (\d+)")
_CORP = re.compile(r"\bcorp: (\d+)/(\d+)(b|Kb|Mb)")
_STAT = re.compile(r"^stat::(\w+):\s+(\d+)")
_ARTIFACT = re.compile(r"Test unit written to (\S+)")
_UNITS = {"b": 1, "Kb": 1 << 10, "Mb": 1 << 20}


@dataclass(frozen=True, slots=True)
class Finding:
    """
    What a fuzzing run found: the kind (``crash``, ``timeout``, ``oom``, ``worker``), the input,
    and the traceback or the end of the engine's output.
    """

    kind: str
    artifact: str | None
    input_hex: str | None
    details: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TargetResult:
    """
    The statistics of one target's run, as the engine reported them.
    """

    target: str
    engine: str
    seconds: float
    runs: int
    exec_per_sec: int
    seed_coverage: int | None
    coverage: int | None
    features: int | None
    corpus_inputs: int | None
    corpus_bytes: int | None
    new_inputs: int | None
    finding: Finding | None

    def summary(self) -> str:
        """
        :returns: one line for people: runs, speed, coverage and corpus reached, outcome.
        """

        def shown(value: int | None) -> str:
            return "?" if value is None else f"{value:,}"

        kib = "?" if self.corpus_bytes is None else f"{self.corpus_bytes / 1024:.0f}"
        outcome = "ok" if self.finding is None else f"FINDING ({self.finding.kind})"
        return (
            f"{self.target:<13} {self.engine:<7} {self.seconds:5.1f} s "
            f"{self.runs:>10,} runs {self.exec_per_sec:>7,} exec/s  "
            f"cov {shown(self.coverage)} (seeds {shown(self.seed_coverage)}) "
            f"ft {shown(self.features)}  corpus {shown(self.corpus_inputs)} inputs/{kib} KiB "
            f"(+{shown(self.new_inputs)} new)  {outcome}"
        )


def atheris_available() -> bool:
    """
    :returns: whether atheris can be imported here.
    """
    return importlib.util.find_spec("atheris") is not None


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _traceback(lines: Sequence[str]) -> str:
    """
    The Python traceback atheris (or the pure-Python engine) printed for an uncaught exception.
    """
    for start, line in enumerate(lines):
        if "=== Uncaught Python exception: ===" in line:
            out = []
            for follow in lines[start + 1 :]:
                if re.match(r"^==\d+== ERROR|^MS: |^artifact_prefix=|^SUMMARY: ", follow):
                    break
                out.append(follow)
            return "\n".join(out).strip()
    return ""


def _finding(target: str, lines: Sequence[str], returncode: int | None) -> Finding | None:
    artifact = next((m.group(1) for line in lines if (m := _ARTIFACT.search(line))), None)
    if artifact is None and returncode == 0:
        return None
    if artifact is None:
        tail = "\n".join(lines[-40:])
        reason = "hung and was killed" if returncode is None else f"exited {returncode}"
        return Finding("worker", None, None, f"the worker {reason}:\n{tail}")
    # Artifacts are named <target>-<kind>-<sha1> (the prefix fuzz_target gives).
    name = Path(artifact).name.removeprefix(f"{target}-")
    kind = name.split("-", 1)[0] if "-" in name else "crash"
    data = Path(artifact).read_bytes() if Path(artifact).is_file() else b""
    details = _traceback(lines) or "\n".join(
        line for line in lines if "ERROR" in line or "ALARM" in line
    )
    return Finding(kind, artifact, data.hex(), details)


def _parse(
    target: str, engine: str, seconds: float, lines: Sequence[str], returncode: int | None
) -> TargetResult:
    stats: dict[str, int] = {}
    last: dict[str, int] = {}
    seed_coverage = None
    for line in lines:
        if m := _STAT.match(line):
            stats[m.group(1)] = int(m.group(2))
        elif m := _STATUS.match(line):
            last["runs"] = int(m.group(1))
            if cov := _COV.search(line):
                last["cov"] = int(cov.group(1))
                if m.group(2) == "INITED":
                    seed_coverage = last["cov"]
            if ft := _FT.search(line):
                last["ft"] = int(ft.group(1))
            if corp := _CORP.search(line):
                last["units"] = int(corp.group(1))
                last["bytes"] = int(corp.group(2)) * _UNITS[corp.group(3)]
    runs = stats.get("number_of_executed_units", last.get("runs", 0))
    return TargetResult(
        target=target,
        engine=engine,
        seconds=seconds,
        runs=runs,
        exec_per_sec=stats.get("average_exec_per_sec", int(runs / seconds) if seconds else 0),
        seed_coverage=seed_coverage,
        coverage=last.get("cov"),
        features=last.get("ft"),
        corpus_inputs=last.get("units"),
        corpus_bytes=last.get("bytes"),
        new_inputs=stats.get("new_units_added"),
        finding=_finding(target, lines, returncode),
    )


def fuzz_target(
    target: Target,
    *,
    engine: str,
    seconds: float,
    seed_dir: Path,
    corpus_dir: Path,
    artifacts: Path,
    seed: int,
    timeout: int,
    max_len: int,
    verbose: bool,
    spec: str | None = None,
) -> TargetResult:
    """
    Fuzz one target in a worker process and collect its statistics.

    :param target: the target.
    :param engine: ``atheris`` or ``python``.
    :param seconds: the time budget.
    :param seed_dir: the folder of seed inputs (read only).
    :param corpus_dir: the folder of the target's corpus, where new inputs are added.
    :param artifacts: the folder findings are written to.
    :param seed: the mutation seed.
    :param timeout: seconds one input may take.
    :param max_len: the longest input (0: the engine's default).
    :param verbose: whether to echo the engine's output.
    :param spec: how the worker finds the target: ``module:attribute`` for one outside
        :data:`~fuzz.targets.TARGETS` (default: its name there).
    :returns: the run's result.
    """
    corpus_dir.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    prefix = f"{artifacts.resolve()}/{target.name}-"
    command = [
        sys.executable,
        "-m",
        "fuzz.worker",
        f"--target={spec or target.name}",
        f"--engine={engine}",
        f"--seconds={seconds}",
        f"--artifact-prefix={prefix}",
        f"--seed={seed}",
        f"--timeout={timeout}",
        f"--max-len={max_len}",
        str(corpus_dir.resolve()),
        str(seed_dir.resolve()),
    ]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    lines: list[str] = []
    started = time.monotonic()
    # The command is this interpreter running our own worker module.
    with subprocess.Popen(  # noqa: S603
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        env=env,
    ) as process:
        assert process.stdout is not None  # noqa: S101 - set by stdout=PIPE
        # A worker that stops printing (stuck loading its corpus) would block
        # the read below forever; the watchdog kills it instead.
        killed = threading.Event()

        def kill() -> None:
            killed.set()
            process.kill()

        watchdog = threading.Timer(seconds + WORKER_SLACK_SECONDS, kill)
        watchdog.start()
        try:
            for line in process.stdout:
                lines.append(line.rstrip("\n"))
                if verbose:
                    _say(f"  [{target.name}] {lines[-1]}")
            returncode: int | None = process.wait()
        finally:
            watchdog.cancel()
        if killed.is_set():
            returncode = None
    elapsed = time.monotonic() - started
    return _parse(target.name, engine, elapsed, lines, returncode)


def replay(target: Target, paths: Sequence[Path]) -> int:
    """
    Run saved inputs through a target in this process and say what each did.

    :param target: the target.
    :param paths: input files (raw bytes, or ``.hex``).
    :returns: the number of inputs that raised something other than an allowed error.
    """
    findings = 0
    for path in paths:
        data = read_input(path)
        try:
            accepted = target.run(data)
        except Exception:  # noqa: BLE001 - reporting any escape is this mode's job
            findings += 1
            _say(f"{path}: FINDING ({len(data)} bytes)\n{traceback.format_exc().rstrip()}")
            continue
        _say(f"{path}: ok, {'accepted' if accepted else 'rejected with an allowed error'}")
    return findings


def _target_of(path: Path, explicit: list[str]) -> Target | None:
    if len(explicit) == 1:
        return TARGETS[explicit[0]]
    if path.parent.name in TARGETS:
        return TARGETS[path.parent.name]
    return next((t for name, t in TARGETS.items() if path.name.startswith(f"{name}-")), None)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python fuzz/run.py", description=__doc__.split("\n\n", 1)[0] if __doc__ else None
    )
    parser.add_argument(
        "--target", action="append", choices=sorted(TARGETS), default=[], help="(repeatable)"
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="budget per target")
    parser.add_argument("--engine", choices=("auto", "atheris", "python"), default="auto")
    parser.add_argument("--corpus-dir", type=Path, default=ROOT / "fuzz" / "corpus")
    parser.add_argument("--artifacts", type=Path, default=ROOT / "fuzz" / "artifacts")
    parser.add_argument("--vectors", type=Path, default=None, help="IETF MLS vector folder")
    parser.add_argument("--seed", type=int, default=None, help="mutation seed (default: random)")
    parser.add_argument("--timeout", type=int, default=10, help="seconds one input may take")
    parser.add_argument("--max-len", type=int, default=0, help="longest input (0: default)")
    parser.add_argument("--json", type=Path, default=None, help="write results here as JSON")
    parser.add_argument("--verbose", action="store_true", help="echo the engines' output")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--list", action="store_true", help="list the targets and exit")
    mode.add_argument("--write-seeds", type=Path, metavar="DIR", help="write seeds and exit")
    mode.add_argument("--replay", type=Path, nargs="+", metavar="FILE", help="rerun inputs")
    return parser


def main(argv: list[str] | None = None) -> int:
    """
    Run the command line.

    :param argv: the arguments (default: ``sys.argv[1:]``).
    :returns: the exit status: 0, or 1 if anything was found (2 for usage errors).
    """
    args = _parser().parse_args(argv)
    names: list[str] = args.target or list(TARGETS)
    if args.list:
        for name, target in TARGETS.items():
            _say(f"{name:<13} {target.summary}")
        return 0
    if args.replay:
        findings = 0
        for path in args.replay:
            owner = _target_of(path, args.target)
            if owner is None:
                _say(f"{path}: cannot tell its target; pass --target")
                return 2
            findings += replay(owner, [path])
        return 1 if findings else 0

    source = load_seed_source(args.vectors)
    if args.write_seeds:
        for name in names:
            count = write_corpus(TARGETS[name].seeds(source), args.write_seeds / name)
            _say(f"{name}: {count} seeds")
        return 0

    engine = args.engine
    if engine == "auto":
        engine = "atheris" if atheris_available() else "python"
    seed = args.seed if args.seed is not None else 1 + secrets.randbelow(2**31 - 1)
    _say(f"engine {engine}, seed {seed}, {args.seconds:g} s per target")
    results = []
    with tempfile.TemporaryDirectory(prefix="townsquare-seeds-") as tmp:
        for name in names:
            seed_dir = Path(tmp) / name
            write_corpus(TARGETS[name].seeds(source), seed_dir)
            result = fuzz_target(
                TARGETS[name],
                engine=engine,
                seconds=args.seconds,
                seed_dir=seed_dir,
                corpus_dir=args.corpus_dir / name,
                artifacts=args.artifacts,
                seed=seed,
                timeout=args.timeout,
                max_len=args.max_len,
                verbose=args.verbose,
            )
            results.append(result)
            _say(result.summary())
            if result.finding is not None:
                _say(describe(result.finding))
    if args.json:
        args.json.write_text(json.dumps([dataclasses.asdict(r) for r in results], indent=2))
    return 1 if any(r.finding for r in results) else 0


def describe(finding: Finding) -> str:
    """
    :returns: a finding for people: its kind, artifact, input (hex, cut after 256 bytes),
        traceback and the command that replays it.
    """
    hex_input = finding.input_hex or ""
    shown = (
        hex_input if len(hex_input) <= 512 else f"{hex_input[:512]}... ({len(hex_input) // 2} B)"
    )
    return (
        f"  {finding.kind}: {finding.artifact}\n  input: {shown}\n"
        + "\n".join(f"    {line}" for line in finding.details.splitlines())
        + (
            f"\n  replay: python fuzz/run.py --replay {finding.artifact}"
            if finding.artifact
            else ""
        )
    )


if __name__ == "__main__":
    sys.exit(main())
