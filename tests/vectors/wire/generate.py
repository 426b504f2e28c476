"""
Regenerate the wire-protocol vectors: ``messages.json`` (valid) and ``invalid.json`` (must fail).

Usage, from the repository root::

    .venv/bin/python tests/vectors/wire/generate.py          # rewrite both files
    .venv/bin/python tests/vectors/wire/generate.py --check  # exit 1 if they are stale

Valid vectors are built with ``townsquare.wire`` and encoded by it; the
known-answer tests then check them in both directions, and the web client
checks them independently. Invalid vectors are built by hand from raw CBOR
values (or raw hex where cbor2 would not write the bytes), never by the
encoder under test; each names the error class a decoder must raise. The
script refuses to write a vector that the current decoder disagrees with.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import unicodedata
from datetime import UTC, datetime
from pathlib import Path

import cbor2

from townsquare import wire

HERE = Path(__file__).resolve().parent
MESSAGES_FILE = HERE / "messages.json"
INVALID_FILE = HERE / "invalid.json"

# 2026-03-01T08:00:00.000Z, a Sunday morning.
SENT_AT = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
SENT_AT_MS = 1772352000000

CHINESE_20 = "明天上午九点村委会开会，请大家准时参加。"


def message_id(name: str) -> wire.MessageId:
    """
    Derive a fixed, random-looking message id from a name.

    :param name: any label.
    :returns: the first 16 bytes of its SHA-256.
    """
    return wire.MessageId(hashlib.sha256(f"townsquare wire {name}".encode()).digest()[:16])


def blob(name: str, size: int) -> bytes:
    """
    Derive fixed bytes of a given length from a name.

    :param name: any label.
    :param size: how many bytes.
    :returns: SHAKE-256 output of that length.
    """
    return hashlib.shake_256(f"townsquare wire {name}".encode()).digest(size)


PHOTO = wire.AttachmentRef(
    blob("photo blob id", 16),
    "image/jpeg",
    183_502,
    key=blob("photo key", 32),
    sha256=blob("photo sha256", 32),
)
AVATAR = wire.AttachmentRef(
    blob("avatar blob id", 16),
    "image/webp",
    9_876,
    key=blob("avatar key", 32),
    sha256=blob("avatar sha256", 32),
)
MAX_REF = wire.AttachmentRef(
    blob("max blob id", wire.MAX_BLOB_ID_BYTES),
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    wire.MAX_SAFE_INTEGER,
    key=blob("max key", 32),
    sha256=blob("max sha256", 32),
)


def valid_messages() -> list[tuple[str, wire.Message]]:
    """
    :returns: (description, message) for every valid vector, in file order.
    """
    mid = message_id
    t = SENT_AT
    family = "👨\u200d👩\u200d👧\u200d👦"
    return [
        ("text: English", wire.Text("Hello, neighbours!", message_id=mid("text en"), sent_at=t)),
        (
            "text: 20 Chinese characters (the typical message of the size figure)",
            wire.Text(CHINESE_20, message_id=mid("text zh"), sent_at=t),
        ),
        (
            "text: Chinese, English, digits and emoji mixed, over two lines",
            wire.Text(
                "水管修好了 👍\nThe water main is fixed, 谢谢 Lao Wang!",
                message_id=mid("text mixed"),
                sent_at=t,
            ),
        ),
        (
            "text: a single character, the smallest body",
            wire.Text("好", message_id=mid("text one"), sent_at=t),
        ),
        (
            "text: not normalised: CJK compatibility ideograph U+F900, decomposed e + U+0301,"
            " ZWJ emoji, kept exactly",
            wire.Text(
                "\uf900 caf\u0065\u0301 " + family,
                message_id=mid("text no nfc"),
                sent_at=t,
            ),
        ),
        (
            "text: body of exactly 16,384 UTF-8 bytes (5,461 Chinese characters and one ASCII)",
            wire.Text("水" * 5461 + "a", message_id=mid("text max"), sent_at=t),
        ),
        (
            "text: sent_at 0, the Unix epoch",
            wire.Text(
                "epoch", message_id=mid("text epoch"), sent_at=datetime(1970, 1, 1, tzinfo=UTC)
            ),
        ),
        (
            "text: sent_at at its maximum, 9999-12-31T23:59:59.999Z",
            wire.Text(
                "far future",
                message_id=mid("text max time"),
                sent_at=datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC),
            ),
        ),
        (
            "reply: Chinese",
            wire.Reply("收到，我会准时到。", mid("text zh"), message_id=mid("reply"), sent_at=t),
        ),
        (
            "reaction: thumbs up",
            wire.Reaction(mid("text zh"), "👍", message_id=mid("reaction up"), sent_at=t),
        ),
        (
            "reaction: a family ZWJ sequence (7 code points)",
            wire.Reaction(mid("text zh"), family, message_id=mid("reaction family"), sent_at=t),
        ),
        (
            "reaction: 16 code points, the maximum",
            wire.Reaction(mid("text zh"), "🎉" * 16, message_id=mid("reaction max"), sent_at=t),
        ),
        (
            "reaction: empty emoji removes the member's reaction",
            wire.Reaction(mid("text zh"), "", message_id=mid("reaction remove"), sent_at=t),
        ),
        (
            "edit: new Chinese body",
            wire.Edit(
                mid("text zh"),
                "明天上午十点村委会开会，请大家准时参加。",
                message_id=mid("edit"),
                sent_at=t,
            ),
        ),
        ("delete", wire.Delete(mid("text en"), message_id=mid("delete"), sent_at=t)),
        (
            "attachment: reference only",
            wire.Attachment(PHOTO, message_id=mid("attachment min"), sent_at=t),
        ),
        (
            "attachment: photo with Chinese file name, caption, size and preview",
            wire.Attachment(
                PHOTO,
                file_name="村口的路.jpg",
                caption="村口的路又坏了，谁知道该找谁？",
                width=4032,
                height=3024,
                preview=bytes.fromhex("ffd8ffe000104a464946") + blob("preview", 54),
                message_id=mid("attachment photo"),
                sent_at=t,
            ),
        ),
        (
            "attachment: every field at its maximum",
            wire.Attachment(
                MAX_REF,
                file_name="文" * 85,
                caption="文" * 5461 + "a",
                width=wire.MAX_IMAGE_SIDE,
                height=wire.MAX_IMAGE_SIDE,
                preview=blob("max preview", wire.MAX_PREVIEW_BYTES),
                message_id=mid("attachment max"),
                sent_at=t,
            ),
        ),
        (
            "profile: Chinese display name",
            wire.Profile("王建国", message_id=mid("profile"), sent_at=t),
        ),
        (
            "profile: display name and avatar",
            wire.Profile("Li Mei 李梅", AVATAR, message_id=mid("profile avatar"), sent_at=t),
        ),
        (
            "profile: display name of 64 code points, the maximum",
            wire.Profile("张" * 64, message_id=mid("profile max"), sent_at=t),
        ),
        (
            "group title: Chinese",
            wire.GroupTitle("东山村村民群", message_id=mid("title"), sent_at=t),
        ),
        (
            "group title: 128 code points, the maximum",
            wire.GroupTitle("村" * 128, message_id=mid("title max"), sent_at=t),
        ),
    ]


def _json_value(value: object) -> object:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, wire.AttachmentRef):
        return {
            "blob_id": value.blob_id.hex(),
            "content_type": value.content_type,
            "size": value.size,
            "key": value.key.hex(),
            "sha256": value.sha256.hex(),
        }
    return value


def message_to_json(message: wire.Message) -> dict[str, object]:
    """
    Describe a message as JSON: bytes as hex, ``sent_at`` as integer milliseconds.

    :param message: any message.
    :returns: its fields; absent optional fields are left out.
    """
    fields: dict[str, object] = {
        "message_id": message.message_id.hex(),
        "sent_at_ms": (message.sent_at - datetime(1970, 1, 1, tzinfo=UTC)) // _MS,
    }
    for field in message.FIELDS:
        value = getattr(message, field.name)
        if value is not None:
            fields[field.name] = _json_value(value)
    return fields


_MS = datetime(1970, 1, 1, 0, 0, 0, 1000, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)


# -- Invalid vectors ------------------------------------------------------------------

ID = message_id("invalid")
MS = SENT_AT_MS


def enc(value: object) -> bytes:
    """
    Encode a raw CBOR value deterministically, bypassing ``townsquare.wire``.

    :param value: a cbor2-encodable value.
    :returns: its canonical encoding.
    """
    return cbor2.dumps(value, canonical=True)


def text_envelope(content: object, kind: int = 1) -> list[object]:
    """
    :param content: the content map (or a wrong value in its place).
    :param kind: the kind number.
    :returns: a raw envelope around it.
    """
    return [1, kind, ID, MS, content]


REF_MAP = {0: blob("ref blob", 16), 1: "image/png", 2: 1000, 3: bytes(32), 4: bytes(32)}


def ref_with(**changes: object) -> dict[int, object]:
    """
    :param changes: ``k<key>=value`` to replace, or ``k<key>=None`` to drop, an entry.
    :returns: a raw attachment-reference map.
    """
    ref: dict[int, object] = dict(REF_MAP)
    for name, value in changes.items():
        key = int(name.removeprefix("k"))
        if value is None:
            del ref[key]
        else:
            ref[key] = value
    return ref


def nested_arrays(depth: int) -> object:
    """
    :param depth: how many arrays.
    :returns: ``[[...[0]...]]``, ``depth`` arrays deep.
    """
    value: object = 0
    for _ in range(depth):
        value = [value]
    return value


def canonical_text_hex(body: str) -> str:
    """
    :param body: a text body.
    :returns: the hex of a valid Text envelope with that body.
    """
    return enc(text_envelope({0: body})).hex()


# Each entry: description, hex, error class name, attributes the error must carry.
Invalid = tuple[str, str, str, dict[str, object]]


def f(name: str) -> dict[str, object]:
    """
    :param name: a field path.
    :returns: the error attributes of an InvalidField for that path.
    """
    return {"field": name}


def invalid_vectors() -> list[Invalid]:
    """
    :returns: every invalid vector, in file order.
    """
    valid = enc(text_envelope({0: "你好"}))
    valid_hex = valid.hex()
    id_hex = ID.hex()
    ms_head = "1b" + MS.to_bytes(8, "big").hex()
    head = "85" + "01" + "01" + "50" + id_hex + ms_head  # [1, 1, ID, MS, ...
    return [
        # -- Not one well-formed CBOR item
        ("empty input", "", "Truncated", {}),
        ("truncated: the last byte is missing", valid_hex[:-2], "Truncated", {}),
        ("a byte string whose length runs past the end", "5b00000000ffffffff", "Truncated", {}),
        ("trailing byte after the envelope", valid_hex + "00", "TrailingBytes", {}),
        ("reserved additional information 28", "1c", "MalformedCBOR", {}),
        ("a lone break byte", "ff", "MalformedCBOR", {}),
        (
            "nesting 17 deep (the envelope, the content map and 15 arrays)",
            enc(text_envelope({0: nested_arrays(15)})).hex(),
            "MalformedCBOR",
            {},
        ),
        (
            "over 32 KiB (an unknown kind carrying 32,768 bytes)",
            enc(text_envelope({0: bytes(32768)}, kind=42)).hex(),
            "MessageTooLarge",
            {},
        ),
        # -- Envelope
        ("top level is a map", enc({0: 1, 1: 1}).hex(), "InvalidEnvelope", {}),
        ("top level is an empty array", "80", "InvalidEnvelope", {}),
        ("top level is an integer", "01", "InvalidEnvelope", {}),
        ("version is a text string", enc(["1", 1, ID, MS, {0: "x"}]).hex(), "InvalidEnvelope", {}),
        ("version is negative", enc([-1, 1, ID, MS, {0: "x"}]).hex(), "InvalidEnvelope", {}),
        ("version 0 is never used", enc([0, 1, ID, MS, {0: "x"}]).hex(), "InvalidEnvelope", {}),
        ("four items", enc([1, 1, ID, MS]).hex(), "InvalidEnvelope", {}),
        ("six items", enc([*text_envelope({0: "x"}), 0]).hex(), "InvalidEnvelope", {}),
        # -- Newer versions and kinds
        (
            "version 2, from a newer client: the rest is not read (here a float and a tag)",
            enc([2, 1.5, cbor2.CBORTag(1, 0)]).hex(),
            "UnsupportedVersion",
            {"version": 2},
        ),
        (
            "version 2**64 - 1",
            enc([2**64 - 1]).hex(),
            "UnsupportedVersion",
            {"version": 2**64 - 1},
        ),
        (
            "unknown kind 42, with content this client cannot read",
            enc(text_envelope({0: "投票", 1: [1, 2, 3], 2: True}, kind=42)).hex(),
            "UnknownKind",
            {"kind": 42, "message_id": id_hex, "sent_at_ms": MS},
        ),
        (
            "kind 0 is never assigned",
            enc(text_envelope({0: "x"}, kind=0)).hex(),
            "UnknownKind",
            {"kind": 0, "message_id": id_hex, "sent_at_ms": MS},
        ),
        (
            "unknown kind, but the message id is wrong: the envelope is checked first",
            enc([1, 42, ID[:8], MS, {}]).hex(),
            "InvalidValue",
            f("message_id"),
        ),
        # -- Envelope fields
        ("kind is a text string", enc([1, "text", ID, MS, {0: "x"}]).hex(), "WrongType", f("kind")),
        ("kind is negative", enc([1, -1, ID, MS, {0: "x"}]).hex(), "InvalidValue", f("kind")),
        (
            "message id of 15 bytes",
            enc([1, 1, ID[:15], MS, {0: "x"}]).hex(),
            "InvalidValue",
            f("message_id"),
        ),
        (
            "message id is a text string",
            enc([1, 1, ID.hex(), MS, {0: "x"}]).hex(),
            "WrongType",
            f("message_id"),
        ),
        ("sent_at is negative", enc([1, 1, ID, -1, {0: "x"}]).hex(), "InvalidValue", f("sent_at")),
        (
            "sent_at after 9999-12-31T23:59:59.999Z",
            enc([1, 1, ID, wire.MAX_SENT_AT + 1, {0: "x"}]).hex(),
            "InvalidValue",
            f("sent_at"),
        ),
        ("sent_at is a boolean", enc([1, 1, ID, True, {0: "x"}]).hex(), "WrongType", f("sent_at")),
        ("content is an array", enc([1, 1, ID, MS, ["x"]]).hex(), "WrongType", f("content")),
        # -- Outside the data model
        (
            "sent_at as a tag-1 epoch date",
            enc([1, 1, ID, cbor2.CBORTag(1, MS // 1000), {0: "x"}]).hex(),
            "UnsupportedCBOR",
            {},
        ),
        (
            "sent_at as a bignum (tag 2)",
            enc([1, 1, ID, cbor2.CBORTag(2, MS.to_bytes(6, "big")), {0: "x"}]).hex(),
            "UnsupportedCBOR",
            {},
        ),
        ("a tag cbor2 does not know (tag 9999)", head + "a100d9270f6178", "UnsupportedCBOR", {}),
        (
            "self-described CBOR: tag 55799 around the envelope hides the array",
            "d9d9f7" + valid_hex,
            "InvalidEnvelope",
            {},
        ),
        ("a float in the body", enc(text_envelope({0: 1.5})).hex(), "UnsupportedCBOR", {}),
        (
            "null for an absent field",
            enc(text_envelope({0: REF_MAP, 2: None}, kind=6)).hex(),
            "UnsupportedCBOR",
            {},
        ),
        ("undefined", head + "a100f7", "UnsupportedCBOR", {}),
        ("simple value 16", head + "a100f0", "UnsupportedCBOR", {}),
        ("a text-string map key", enc(text_envelope({"body": "x"})).hex(), "UnsupportedCBOR", {}),
        ("a negative map key", enc(text_envelope({-1: "x"})).hex(), "UnsupportedCBOR", {}),
        # -- Invalid UTF-8
        ("invalid UTF-8: byte 0xff", head + "a10062ff61", "InvalidUtf8", {}),
        ("invalid UTF-8: an encoded surrogate (ED A0 80)", head + "a10063eda080", "InvalidUtf8", {}),
        ("invalid UTF-8: overlong '/' (C0 AF)", head + "a10062c0af", "InvalidUtf8", {}),
        ("invalid UTF-8: cut inside a Chinese character", head + "a10062e4bd", "InvalidUtf8", {}),
        # -- Not the deterministic encoding
        (
            "non-canonical: kind 1 written in two bytes (18 01)",
            "85" + "01" + "1801" + "50" + id_hex + ms_head + "a10061" + "78",
            "NonCanonical",
            {},
        ),
        (
            "non-canonical: a text length written in two bytes (78 01)",
            head + "a100" + "7801" + "78",
            "NonCanonical",
            {},
        ),
        (
            "non-canonical: the content map's length written in two bytes (b9 0001)",
            head + "b90001" + "006178",
            "NonCanonical",
            {},
        ),
        (
            "non-canonical: map keys out of order (Reply with key 1 before key 0)",
            "85" + "01" + "02" + "50" + id_hex + ms_head + "a2" + "0150" + id_hex + "006178",
            "NonCanonical",
            {},
        ),
        (
            "non-canonical: an indefinite-length text string",
            head + "a100" + "7f" + "6178" + "6179" + "ff",
            "NonCanonical",
            {},
        ),
        (
            "non-canonical: an indefinite-length envelope",
            "9f" + "01" + "01" + "50" + id_hex + ms_head + "a1006178" + "ff",
            "NonCanonical",
            {},
        ),
        ("non-canonical: a duplicate map key", head + "a200617800617a", "NonCanonical", {}),
        # -- Fields of known kinds
        ("text without a body", enc(text_envelope({})).hex(), "MissingField", f("body")),
        (
            "text with an undefined key 1",
            enc(text_envelope({0: "x", 1: "y"})).hex(),
            "UnexpectedField",
            f("1"),
        ),
        (
            "text body is a byte string",
            enc(text_envelope({0: "x".encode()})).hex(),
            "WrongType",
            f("body"),
        ),
        ("text body is empty", enc(text_envelope({0: ""})).hex(), "InvalidValue", f("body")),
        (
            "text body of 16,385 UTF-8 bytes",
            canonical_text_hex("水" * 5461 + "ab"),
            "TooLong",
            f("body"),
        ),
        (
            "reply whose in_reply_to has 17 bytes",
            enc(text_envelope({0: "x", 1: ID + b"\x00"}, kind=2)).hex(),
            "InvalidValue",
            f("in_reply_to"),
        ),
        (
            "reaction of 17 code points",
            enc(text_envelope({0: ID, 1: "🎉" * 17}, kind=3)).hex(),
            "TooLong",
            f("emoji"),
        ),
        (
            "reaction with a newline",
            enc(text_envelope({0: ID, 1: "👍\n"}, kind=3)).hex(),
            "InvalidValue",
            f("emoji"),
        ),
        (
            "edit without a target",
            enc(text_envelope({1: "x"}, kind=4)).hex(),
            "MissingField",
            f("target_id"),
        ),
        (
            "delete with a body",
            enc(text_envelope({0: ID, 1: "x"}, kind=5)).hex(),
            "UnexpectedField",
            f("1"),
        ),
        (
            "attachment key of 31 bytes",
            enc(text_envelope({0: ref_with(k3=bytes(31))}, kind=6)).hex(),
            "InvalidValue",
            f("ref.key"),
        ),
        (
            "attachment content type in upper case",
            enc(text_envelope({0: ref_with(k1="Image/PNG")}, kind=6)).hex(),
            "InvalidValue",
            f("ref.content_type"),
        ),
        (
            "attachment content type with a parameter",
            enc(text_envelope({0: ref_with(k1="text/plain; charset=utf-8")}, kind=6)).hex(),
            "InvalidValue",
            f("ref.content_type"),
        ),
        (
            "attachment size of 2**53, past what JavaScript holds exactly",
            enc(text_envelope({0: ref_with(k2=2**53)}, kind=6)).hex(),
            "InvalidValue",
            f("ref.size"),
        ),
        (
            "attachment reference without its hash",
            enc(text_envelope({0: ref_with(k4=None)}, kind=6)).hex(),
            "MissingField",
            f("ref.sha256"),
        ),
        (
            "attachment blob id of 65 bytes",
            enc(text_envelope({0: ref_with(k0=bytes(65))}, kind=6)).hex(),
            "TooLong",
            f("ref.blob_id"),
        ),
        (
            "attachment reference with an undefined key 5",
            enc(text_envelope({0: ref_with(k5=1)}, kind=6)).hex(),
            "UnexpectedField",
            f("ref.5"),
        ),
        (
            "attachment width without height",
            enc(text_envelope({0: REF_MAP, 3: 640}, kind=6)).hex(),
            "InvalidValue",
            f("content"),
        ),
        (
            "attachment width 0",
            enc(text_envelope({0: REF_MAP, 3: 0, 4: 480}, kind=6)).hex(),
            "InvalidValue",
            f("width"),
        ),
        (
            "attachment height as true",
            enc(text_envelope({0: REF_MAP, 3: 640, 4: True}, kind=6)).hex(),
            "WrongType",
            f("height"),
        ),
        (
            "attachment preview of 4,097 bytes",
            enc(text_envelope({0: REF_MAP, 5: bytes(4097)}, kind=6)).hex(),
            "TooLong",
            f("preview"),
        ),
        (
            "attachment file name of 256 UTF-8 bytes",
            enc(text_envelope({0: REF_MAP, 1: "a" * 256}, kind=6)).hex(),
            "TooLong",
            f("file_name"),
        ),
        (
            "attachment file name with a NUL",
            enc(text_envelope({0: REF_MAP, 1: "a\x00.jpg"}, kind=6)).hex(),
            "InvalidValue",
            f("file_name"),
        ),
        (
            "profile display name of 65 code points",
            enc(text_envelope({0: "张" * 65}, kind=7)).hex(),
            "TooLong",
            f("display_name"),
        ),
        (
            "profile display name of ideographic spaces only",
            enc(text_envelope({0: "\u3000\u3000"}, kind=7)).hex(),
            "InvalidValue",
            f("display_name"),
        ),
        (
            "profile display name with a line feed",
            enc(text_envelope({0: "王\n建国"}, kind=7)).hex(),
            "InvalidValue",
            f("display_name"),
        ),
        (
            "profile avatar is a byte string",
            enc(text_envelope({0: "王建国", 1: bytes(16)}, kind=7)).hex(),
            "WrongType",
            f("avatar"),
        ),
        (
            "group title of 129 code points",
            enc(text_envelope({0: "村" * 129}, kind=8)).hex(),
            "TooLong",
            f("title"),
        ),
    ]


def _check_invalid(description: str, data: bytes, error: str) -> None:
    try:
        wire.decode(data)
    except wire.DecodeError as raised:
        if type(raised).__name__ != error:
            raise SystemExit(f"{description}: expected {error}, got {raised!r}") from None
        return
    raise SystemExit(f"{description}: expected {error}, but it decoded")


def build() -> dict[str, str]:
    """
    Build both files' text.

    :returns: file name to JSON text.
    """
    messages = []
    for description, message in valid_messages():
        encoded = wire.encode(message)
        if wire.decode(encoded) != message:
            raise SystemExit(f"{description}: does not round-trip")
        messages.append(
            {
                "description": description,
                "kind": message.KIND.name.lower(),
                "kind_number": message.KIND.value,
                "message": message_to_json(message),
                "encoded": encoded.hex(),
            }
        )
    invalid = []
    for description, hex_data, error, attributes in invalid_vectors():
        _check_invalid(description, bytes.fromhex(hex_data), error)
        entry: dict[str, object] = {"description": description, "encoded": hex_data, "error": error}
        if attributes:
            entry["error_attributes"] = attributes
        invalid.append(entry)
    header = {
        "protocol_version": wire.PROTOCOL_VERSION,
        "generator": "tests/vectors/wire/generate.py",
        "format": "see tests/vectors/wire/README.md",
    }
    files = {
        MESSAGES_FILE.name: {
            **header,
            "description": "Valid messages: decode 'encoded' to 'message', encode 'message' to"
            " 'encoded', byte for byte.",
            "vectors": messages,
        },
        INVALID_FILE.name: {
            **header,
            "description": "Invalid input: decoding 'encoded' must raise 'error' (a class name of"
            " townsquare.wire.errors) and nothing else.",
            "vectors": invalid,
        },
    }
    return {
        name: _escape_fragile(json.dumps(content, ensure_ascii=False, indent=2)) + "\n"
        for name, content in files.items()
    }


def _escape_fragile(text: str) -> str:
    # Chinese and emoji stay readable, but characters that an editor could
    # silently normalise, or that are invisible (combining marks, ZWJ, CJK
    # compatibility ideographs), are written as JSON escapes so the files
    # survive being opened and saved.
    return "".join(json.dumps(char)[1:-1] if _is_fragile(char) else char for char in text)


def _is_fragile(char: str) -> bool:
    if char.isascii():
        return False
    category = unicodedata.category(char)
    return category[0] in "MCZ" or unicodedata.normalize("NFC", char) != char


def main() -> int:
    """
    Write the vector files, or with ``--check`` compare them.

    :returns: the exit status.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--check", action="store_true", help="exit 1 if the files are stale")
    arguments = parser.parse_args()
    stale = []
    for name, text in build().items():
        path = HERE / name
        if arguments.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
    if stale:
        sys.stderr.write(f"stale: {', '.join(stale)}; run tests/vectors/wire/generate.py\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
