"""
``python -m townsquare.mls.testvectors [DIR]``: run every MLS test-vector file in DIR.

Prints ``<file>: N passed, M failed`` per file and a last line ``N passed, M
failed``. Exits 1 on any failure or on a file of a kind not supported yet (it
never skips a case silently), 2 when DIR holds no vector file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from townsquare.mls.errors import MLSError
from townsquare.mls.testvectors import (
    UnsupportedKind,
    VectorMismatch,
    default_vector_dir,
    kind_of,
    load_checker,
    load_file,
    vector_files,
)

# How many failing cases of one file to describe before only counting them.
_SHOWN_FAILURES = 5


def main(argv: list[str] | None = None) -> int:
    """
    Run the vectors and print the summary.

    :returns: the process exit code.
    """
    parser = argparse.ArgumentParser(prog="python -m townsquare.mls.testvectors")
    parser.add_argument(
        "directory",
        nargs="?",
        type=Path,
        help="folder of vector files (default: $MLS_TEST_VECTORS or tests/vectors/mls)",
    )
    args = parser.parse_args(argv)
    directory: Path = args.directory or default_vector_dir()
    files = vector_files(directory)
    if not files:
        print(f"no MLS test-vector files in {directory}", file=sys.stderr)
        return 2

    total_passed = total_failed = 0
    unsupported: list[str] = []
    for path in files:
        cases = load_file(path)
        try:
            check = load_checker(cases[0].kind if cases else str(kind_of(path)))
        except UnsupportedKind as exc:
            print(f"{path.name}: not supported: {exc}")
            unsupported.append(path.name)
            continue
        passed = failed = 0
        for case in cases:
            try:
                check(case.data)
            except (VectorMismatch, MLSError) as exc:
                failed += 1
                if failed <= _SHOWN_FAILURES:
                    print(f"  FAIL {case.case_id}: {type(exc).__name__}: {exc}")
            else:
                passed += 1
        print(f"{path.name}: {passed} passed, {failed} failed")
        total_passed += passed
        total_failed += failed

    if unsupported:
        print(f"not supported: {', '.join(unsupported)}")
    print(f"{total_passed} passed, {total_failed} failed")
    return 1 if total_failed or unsupported else 0


if __name__ == "__main__":
    sys.exit(main())
