"""
Runs the IETF MLS interop test vectors (mlswg/mls-implementations) against this implementation.

Each kind of vector file that ``FORMAT.md`` describes has a module here with a
``check(case)`` function that verifies one JSON entry completely and raises on
the first difference. ``python -m townsquare.mls.testvectors [DIR]`` runs every
vector file of a known kind in DIR; the pytest suite parametrises over the same
cases (one test id per entry).
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from townsquare.mls.testvectors.fields import VectorMismatch

__all__ = [
    "KINDS",
    "UnsupportedKind",
    "VectorCase",
    "VectorMismatch",
    "default_vector_dir",
    "load_checker",
    "load_file",
]

# The file stem of each kind in mls-implementations' test-vectors folder,
# mapped to the module here that checks it.
KINDS: Mapping[str, str] = {
    "tree-math": "tree_math",
    "crypto-basics": "crypto_basics",
    "secret-tree": "secret_tree",
    "message-protection": "message_protection",
    "key-schedule": "key_schedule",
    "psk_secret": "psk_secret",
    "transcript-hashes": "transcript_hashes",
    "welcome": "welcome",
    "tree-operations": "tree_operations",
    "tree-validation": "tree_validation",
    "treekem": "treekem",
    "messages": "messages",
    "deserialization": "deserialization",
    "passive-client-welcome": "passive_client",
    "passive-client-handling-commit": "passive_client",
    "passive-client-random": "passive_client",
}

Checker = Callable[[Mapping[str, object]], None]


class UnsupportedKind(Exception):
    """
    A vector file is of a kind this implementation does not check yet.
    """


@dataclass(frozen=True, slots=True)
class VectorCase:
    """
    One entry of a vector file, with the id tests and the runner report it under.
    """

    file: str
    index: int
    kind: str
    data: Mapping[str, object]

    @property
    def case_id(self) -> str:
        """
        ``<file>[<index>]``, with ``-suite<n>`` when the entry names a cipher suite.
        """
        suite = self.data.get("cipher_suite")
        suffix = f"-suite{suite}" if isinstance(suite, int) else ""
        return f"{self.file}[{self.index}]{suffix}"


def default_vector_dir() -> Path:
    """
    :returns: ``$MLS_TEST_VECTORS`` if set, else the repository's ``tests/vectors/mls``.
    """
    env = os.environ.get("MLS_TEST_VECTORS")
    if env:
        return Path(env)
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "tests" / "vectors" / "mls"
        if candidate.is_dir():
            return candidate
    return Path.cwd() / "tests" / "vectors" / "mls"


# The fields that only passive-client scenarios have (FORMAT.md, "Passive
# Client Scenarios"): a file holding them is of that kind whatever its name.
_PASSIVE_CLIENT_FIELDS = frozenset(("welcome", "epochs", "initial_epoch_authenticator"))


def kind_of(path: Path) -> str | None:
    """
    :returns: the vector kind of the file at ``path``: from its name, or, for a file of
        another name, ``passive-client-random`` if its entries have the passive-client
        fields; ``None`` if it is of no known kind.
    """
    if path.stem in KINDS:
        return path.stem
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if (
        isinstance(entries, list)
        and entries
        and all(isinstance(e, dict) and e.keys() >= _PASSIVE_CLIENT_FIELDS for e in entries)
    ):
        return "passive-client-random"
    return None


def load_file(path: Path) -> list[VectorCase]:
    """
    :returns: every case of the vector file at ``path``.
    :raises UnsupportedKind: if the file is of no known kind.
    :raises VectorMismatch: if the file is not a JSON array of objects.
    """
    kind = kind_of(path)
    if kind is None:
        raise UnsupportedKind(f"{path.name} is not a known vector kind")
    entries = json.loads(path.read_text())
    if not isinstance(entries, list):
        raise VectorMismatch(f"{path.name} is not a JSON array")
    cases = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise VectorMismatch(f"{path.name}[{index}] is not a JSON object")
        cases.append(VectorCase(file=path.name, index=index, kind=kind, data=entry))
    return cases


def load_checker(kind: str) -> Checker:
    """
    :returns: the ``check`` function for ``kind``.
    :raises UnsupportedKind: if no module checks that kind yet.
    """
    module_name = f"townsquare.mls.testvectors.{KINDS[kind]}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise UnsupportedKind(f"{kind} vectors are not supported yet") from None
    checker: Checker = module.check
    return checker


def vector_files(directory: Path) -> Sequence[Path]:
    """
    :returns: the files in ``directory`` that are of a known vector kind, sorted by name.
    """
    return sorted(p for p in directory.glob("*.json") if kind_of(p) is not None)
