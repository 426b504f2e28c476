"""
What a fuzz target is, and the checks every target shares.

A :class:`Target` pairs a ``check(data)`` function with the typed errors that
``check`` may raise for bad input (``allowed``) and the seeds it starts from.
The contract under test is the one ``codec.py`` and ``errors.py`` promise:

* a decoder given any bytes either returns a value or raises one of the
  allowed :class:`~townsquare.mls.errors.MLSError` subclasses, never
  ``IndexError``, ``struct.error``, ``KeyError``, ``ValueError``,
  ``RecursionError``, ``MemoryError`` or a :class:`~townsquare.mls.errors.UsageError`
  (which means our own code misused an API);
* whatever decodes re-encodes to the same bytes: ``encode(decode(b)) == b``.

Anything else escaping ``check`` is a finding: the engine (atheris, or the
pure-Python engine of :mod:`fuzz.engine`) saves the input and stops.

Coverage alone says little here: ``codec.py`` derives the decoders from the
structs' type hints, so much of what differs between a Commit and a KeyPackage
is data, not code. Targets therefore also report what they decoded to
:data:`FEEDBACK`, which the engine turns into extra coverage features: one per
(struct, field, variant or enum value or size class) seen, and one per typed
error. An input that decodes to a new shape (an external sender, a new
proposal type, a longer vector) then joins the corpus as an input reaching new
code would.

Targets that need several inputs (a future ``PublicGroup`` target is fed a
GroupInfo and then a run of messages) cut one fuzz input with
:func:`split_inputs`; seeds are built with :func:`join_inputs`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from townsquare.mls.codec import Struct
from townsquare.mls.errors import DecodeError, MLSError
from townsquare.mls.extensions import Extension, ExternalPub, ExternalSenders, RequiredCapabilities
from townsquare.mls.ratchet_tree import RatchetTreeNodes
from townsquare.mls.registries import ExtensionType

if TYPE_CHECKING:
    from fuzz.seeds import SeedSource

__all__ = [
    "FEEDBACK",
    "INPUT_SEPARATOR",
    "RoundTripMismatch",
    "ShapeFeedback",
    "Target",
    "attempt",
    "check_extension_payloads",
    "decode_exactly",
    "expect_round_trip",
    "join_inputs",
    "read_input",
    "shape_labels",
    "split_inputs",
]

S = TypeVar("S", bound=Struct)


class RoundTripMismatch(Exception):
    """
    A value decoded from some bytes re-encoded to different bytes: a finding.
    """


def _size_class(n: int) -> int:
    # Exact below 16 (registry values, short vectors), then by bit length, so
    # that sizes give a few dozen features, not one per length.
    return n if n < 16 else 16 + n.bit_length()


def shape_labels(value: object) -> set[str]:
    """
    Describe what a decoded value is made of, for :class:`ShapeFeedback`.

    :param value: a decoded struct (or anything inside one).
    :returns: one label per (struct, field) and what it held there: the variant's class,
        an enum value, ``None``, or the size class of an integer, byte string or vector.
    """
    labels: set[str] = set()

    def walk(node: object, where: str) -> None:
        if isinstance(node, Struct):
            name = type(node).__name__
            labels.add(f"{where}>{name}")
            for field in dataclasses.fields(node):  # type: ignore[arg-type]  # a dataclass
                walk(getattr(node, field.name), f"{name}.{field.name}")
        elif isinstance(node, tuple):
            labels.add(f"{where}#{_size_class(len(node))}")
            for item in node:
                walk(item, where)
        elif isinstance(node, enum.Enum):
            labels.add(f"{where}={node.value}")
        elif isinstance(node, bytes):
            labels.add(f"{where}:{_size_class(len(node))}")
        elif isinstance(node, int):
            labels.add(f"{where}~{_size_class(node)}")
        elif node is None:
            labels.add(f"{where}=None")

    walk(value, "")
    return labels


class ShapeFeedback:
    """
    Passes labels for what targets decoded to the engine, as extra coverage features.

    The engine installs a sink taking a 32-bit key (the CRC-32 of a label,
    stable across processes, so a saved corpus keeps its meaning); until then
    every call is a no-op, as when inputs are replayed in tests.
    """

    __slots__ = ("_sink",)

    def __init__(self) -> None:
        """
        Start with no sink.
        """
        self._sink: Callable[[int], None] | None = None

    def install(self, sink: Callable[[int], None]) -> None:
        """
        :param sink: called with each label's key.
        """
        self._sink = sink

    def note(self, label: str) -> None:
        """
        :param label: one observation, such as ``"ratchet_tree!InvalidTreeShape"``.
        """
        if self._sink is not None:
            self._sink(zlib.crc32(label.encode()))

    def note_value(self, value: object) -> None:
        """
        :param value: a decoded value, described by :func:`shape_labels`.
        """
        if self._sink is not None:
            for label in shape_labels(value):
                self._sink(zlib.crc32(label.encode()))


#: The feedback channel of this process's targets.
FEEDBACK = ShapeFeedback()


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """
    One fuzz target: a check over arbitrary bytes, the errors it may raise, and its seeds.
    """

    #: The name used by ``fuzz/run.py --target`` and for corpus folders.
    name: str
    #: One line saying what the target exercises.
    summary: str
    #: Runs the code under test on one input. Raises an ``allowed`` error to
    #: reject the input; anything else it raises is a finding.
    check: Callable[[bytes], None]
    #: The seed inputs for this target, drawn from the IETF vectors.
    seeds: Callable[[SeedSource], Iterable[bytes]]
    #: The typed errors by which ``check`` may reject an input.
    allowed: tuple[type[MLSError], ...] = (DecodeError,)

    def run(self, data: bytes) -> bool:
        """
        Run the check on one input.

        :param data: the input.
        :returns: ``True`` if it was accepted, ``False`` if rejected with an allowed error.
        :raises Exception: anything else the check raised: a finding.
        """
        try:
            self.check(data)
        except self.allowed as exc:
            FEEDBACK.note(f"{self.name}!{type(exc).__name__}")
            return False
        return True


def expect_round_trip(what: str, encoded: bytes, data: bytes) -> None:
    """
    Check that re-encoding a decoded value gave back its input.

    :param what: the value's name, for the message.
    :param encoded: the re-encoding.
    :param data: the bytes it was decoded from.
    :raises RoundTripMismatch: if they differ.
    """
    if encoded == data:
        return
    first = next(
        (i for i, (a, b) in enumerate(zip(encoded, data, strict=False)) if a != b),
        min(len(encoded), len(data)),
    )
    raise RoundTripMismatch(
        f"{what}: encode(decode(b)) != b: {len(data)} bytes in, {len(encoded)} out, "
        f"first difference at byte {first}"
    )


def decode_exactly(struct: type[S], data: bytes) -> S:
    """
    Decode ``data`` as ``struct`` and check the canonical round trip.

    :param struct: the struct class.
    :param data: exactly one encoded value.
    :returns: the value.
    :raises DecodeError: if ``data`` is not an encoding of ``struct``.
    :raises RoundTripMismatch: if the value re-encodes differently.
    """
    value = struct.decode(data)
    expect_round_trip(struct.__name__, value.encode(), data)
    FEEDBACK.note_value(value)
    return value


# The extension types whose payload this core parses (RFC 9420 §12.4.3.3, §11.1,
# §12.4.3.2, §12.1.8.1); other types are carried as opaque bytes.
_EXTENSION_PAYLOADS: Mapping[int, type[Struct]] = {
    ExtensionType.RATCHET_TREE: RatchetTreeNodes,
    ExtensionType.REQUIRED_CAPABILITIES: RequiredCapabilities,
    ExtensionType.EXTERNAL_PUB: ExternalPub,
    ExtensionType.EXTERNAL_SENDERS: ExternalSenders,
}


def attempt(label: str, call: Callable[[], object], allowed: tuple[type[MLSError], ...]) -> None:
    """
    Run one check that may reject its input, and report which way it went to :data:`FEEDBACK`.

    :param label: the check's name.
    :param call: the check.
    :param allowed: the typed errors by which it may reject.
    """
    try:
        call()
    except allowed as exc:
        FEEDBACK.note(f"{label}!{type(exc).__name__}")
    else:
        FEEDBACK.note(f"{label}:ok")


def check_extension_payloads(extensions: Iterable[Extension]) -> None:
    """
    Decode the payload of every extension whose type this core understands.

    A payload that does not decode is bad input and is skipped, so that the
    next extension is still exercised; one that decodes must round-trip.

    :param extensions: the extensions of a GroupContext, GroupInfo, KeyPackage or LeafNode.
    :raises RoundTripMismatch: if a payload re-encodes differently.
    """
    for extension in extensions:
        struct = _EXTENSION_PAYLOADS.get(extension.extension_type)
        if struct is None:
            continue
        with contextlib.suppress(DecodeError):
            decode_exactly(struct, extension.extension_data)


#: Separates the inputs of a multi-input target (see :func:`split_inputs`).
INPUT_SEPARATOR = b"\xff\xffMLS-NEXT\xff\xff"


def split_inputs(data: bytes) -> list[bytes]:
    """
    Cut one fuzz input into the several inputs of a multi-input target.

    Never fails, so mutations that break the framing still reach the code
    under test; fuzzers splice and insert the separator like any other token.

    :param data: the fuzz input.
    :returns: the parts between separators (at least one, perhaps empty).
    """
    return data.split(INPUT_SEPARATOR)


def join_inputs(parts: Sequence[bytes]) -> bytes:
    """
    Build a multi-input seed that :func:`split_inputs` cuts back into ``parts``.

    :param parts: the inputs, none containing :data:`INPUT_SEPARATOR`.
    :returns: one fuzz input.
    :raises ValueError: if a part contains the separator.
    """
    if any(INPUT_SEPARATOR in part for part in parts):
        raise ValueError("a part contains the input separator")
    return INPUT_SEPARATOR.join(parts)


def read_input(path: Path) -> bytes:
    """
    Read one fuzz input: a ``.hex`` file (hex digits; whitespace and ``#`` comment lines
    ignored), or any other file as raw bytes (libFuzzer's artifacts and corpus entries).

    :param path: the file.
    :returns: the input.
    :raises ValueError: if a ``.hex`` file holds something other than hex digits.
    """
    if path.suffix != ".hex":
        return path.read_bytes()
    lines = path.read_text().splitlines()
    return bytes.fromhex("".join(line for line in lines if not line.lstrip().startswith("#")))
