"""
One fuzzing process: ``python -m fuzz.worker --target NAME [options] CORPUS_DIR...``.

``fuzz/run.py`` starts one worker per target, because libFuzzer owns the
process it runs in: it exits when done and stops at the first finding. The
worker imports the targets (and so ``townsquare``) only inside atheris's import
hook, so that every ``townsquare`` module, including the decoders ``codec.py``
derives at run time, is instrumented for coverage. Nothing here may import
``townsquare`` at module level.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import sys
from pathlib import Path
from types import CodeType, FunctionType, ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fuzz.harness import Target

__all__ = ["GENERATED_PREFIX", "main"]

#: How the file names of code ``townsquare`` compiles at run time begin.
GENERATED_PREFIX = "<townsquare"

# How many distinct shape features atheris can tell apart; labels share one
# when their CRC-32s agree modulo this.
_FEATURE_POOL = 4096


def _feature() -> None:
    """
    The body of every shape-feature function: reaching it is the feature.
    """


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fuzz.worker", description=__doc__)
    parser.add_argument(
        "--target", required=True, help="a registered target's name, or module:attribute"
    )
    parser.add_argument("--engine", choices=("atheris", "python"), required=True)
    parser.add_argument("--seconds", type=float, required=True, help="the time budget")
    parser.add_argument("--artifact-prefix", required=True, help="where findings are written")
    parser.add_argument("--seed", type=int, required=True, help="the mutation seed")
    parser.add_argument("--timeout", type=int, required=True, help="seconds one input may take")
    parser.add_argument("--max-len", type=int, default=0, help="longest input (0: engine default)")
    parser.add_argument("corpus", nargs="+", type=Path, help="corpus folders; new inputs: first")
    return parser


def _load_target(spec: str) -> Target:
    """
    :param spec: a name in :data:`fuzz.targets.TARGETS`, or ``module:attribute``.
    :returns: the target it names.
    """
    from fuzz.targets import TARGETS  # noqa: PLC0415 - see the module docstring

    if ":" not in spec:
        return TARGETS[spec]
    module, attribute = spec.split(":", 1)
    target: Target = getattr(importlib.import_module(module), attribute)
    return target


def _warm_up(target: Target, corpus_dirs: list[Path]) -> None:
    """
    Run every corpus input once, so that the codec generates the code of every struct they hold.
    """
    for directory in corpus_dirs:
        for path in sorted(directory.iterdir()) if directory.is_dir() else ():
            # A finding here resurfaces when libFuzzer runs the same input.
            with contextlib.suppress(Exception):
                target.run(path.read_bytes())


def _instrument_generated(atheris: ModuleType) -> int:
    """
    Instrument the functions ``townsquare`` compiled at run time, which no import hook saw.

    ``codec.py`` may generate each struct's encoder and decoder from source
    (named ``<townsquare.mls.codec ...>``); without this their branches would
    be invisible to libFuzzer. Functions are patched in place, once per code object.

    :returns: how many code objects were instrumented.
    """
    patched: dict[int, CodeType] = {}
    done: set[int] = set()
    for obj in gc.get_objects():
        if not isinstance(obj, FunctionType):
            continue
        code = obj.__code__
        if id(code) in done or not code.co_filename.startswith(GENERATED_PREFIX):
            continue
        if id(code) in patched:
            obj.__code__ = patched[id(code)]
            continue
        atheris.instrument_func(obj)
        patched[id(code)] = obj.__code__
        done.add(id(obj.__code__))
    return len(patched)


def main(argv: list[str] | None = None) -> int:
    """
    Fuzz one target with the chosen engine.

    :param argv: the command-line arguments (default: ``sys.argv[1:]``).
    :returns: the exit status (with atheris, libFuzzer exits the process itself).
    """
    args = _parser().parse_args(argv)
    if args.engine == "python":
        from fuzz.engine import fuzz  # noqa: PLC0415 - see the module docstring

        return fuzz(
            _load_target(args.target),
            corpus_dirs=args.corpus,
            seconds=args.seconds,
            artifact_prefix=args.artifact_prefix,
            seed=args.seed,
            timeout=args.timeout,
            max_len=args.max_len,
        )

    # Optional (no wheel outside x86-64 Linux) and untyped: imported by name.
    atheris = importlib.import_module("atheris")

    with atheris.instrument_imports(include=["townsquare"]):
        from fuzz.harness import FEEDBACK  # noqa: PLC0415 - must load under the hook

        target = _load_target(args.target)

    # Shape feedback (fuzz/harness.py): a pool of distinct instrumented
    # functions, one coverage counter each; calling the one a key selects
    # marks that key's feature as reached.
    pool = [
        atheris.instrument_func(
            FunctionType(_feature.__code__.replace(co_name=f"shape_feature_{i}"), {})
        )
        for i in range(_FEATURE_POOL)
    ]
    FEEDBACK.install(lambda key: pool[key % _FEATURE_POOL]())
    _warm_up(target, args.corpus)
    count = _instrument_generated(atheris)
    sys.stderr.write(f"INFO: instrumented {count} code objects generated at run time\n")

    def test_one_input(data: bytes) -> None:
        target.run(data)

    libfuzzer_args = [
        sys.argv[0],
        *(str(p) for p in args.corpus),
        f"-max_total_time={max(1, round(args.seconds))}",
        f"-artifact_prefix={args.artifact_prefix}",
        f"-seed={args.seed}",
        f"-timeout={args.timeout}",
        "-print_final_stats=1",
    ]
    if args.max_len:
        libfuzzer_args.append(f"-max_len={args.max_len}")
    atheris.Setup(libfuzzer_args, test_one_input)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
