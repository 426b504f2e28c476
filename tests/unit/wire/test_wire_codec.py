"""
The envelope and its decoding pipeline: each step's rule and exact error, and the bounds.
"""

from __future__ import annotations

from datetime import UTC, datetime

import cbor2
import pytest

from townsquare import wire
from townsquare.wire import codec

ID = wire.MessageId(bytes.fromhex("00112233445566778899aabbccddeeff"))
T = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
T_MS = 1772352000000
CHINESE_20 = "明天上午九点村委会开会，请大家准时参加。"


def envelope(content: object, kind: int = 1, version: int = 1) -> bytes:
    return cbor2.dumps([version, kind, ID, T_MS, content], canonical=True)


# -- Known answers, assembled by hand from docs/wire.md ---------------------------------


def test_text_envelope_assembled_by_hand() -> None:
    body = CHINESE_20.encode()
    expected = (
        b"\x85"  # array of 5
        + b"\x01"  # version 1
        + b"\x01"  # kind 1, Text
        + b"\x50"  # byte string of 16
        + ID
        + b"\x1b"  # unsigned integer, 8 bytes follow
        + T_MS.to_bytes(8, "big")
        + b"\xa1"  # map of 1
        + b"\x00"  # key 0, body
        + b"\x78"  # text string, 1-byte length follows
        + bytes([len(body)])
        + body
    )
    message = wire.Text(CHINESE_20, message_id=ID, sent_at=T)
    assert wire.encode(message) == expected
    assert wire.decode(expected) == message


def test_a_20_character_chinese_text_takes_93_bytes() -> None:
    # The figure quoted in docs/wire.md: 60 bytes of UTF-8 and 33 of envelope.
    message = wire.Text(CHINESE_20, message_id=ID, sent_at=T)
    assert len(CHINESE_20) == 20
    assert len(wire.encode(message)) == 93


def test_reaction_envelope_assembled_by_hand() -> None:
    target = bytes(range(16))
    expected = (
        bytes.fromhex("850103")  # array of 5, version 1, kind 3 (Reaction)
        + b"\x50"
        + ID
        + b"\x1b"
        + T_MS.to_bytes(8, "big")
        + b"\xa2"  # map of 2
        + b"\x00\x50"  # key 0 (target_id), byte string of 16
        + target
        + b"\x01\x64"  # key 1 (emoji), text string of 4 bytes
        + "👍".encode()
    )
    message = wire.Reaction(wire.MessageId(target), "👍", message_id=ID, sent_at=T)
    assert wire.encode(message) == expected


# -- API misuse --------------------------------------------------------------------------


@pytest.mark.parametrize("data", [bytearray(b"\x80"), memoryview(b"\x80"), "85", None])
def test_decode_takes_bytes_only(data: object) -> None:
    with pytest.raises(wire.UsageError, match=r"expected bytes"):
        wire.decode(data)  # type: ignore[arg-type]


def test_encode_refuses_a_subclass_of_a_kind() -> None:
    class Shout(wire.Text):
        __slots__ = ()

    with pytest.raises(wire.UsageError, match=r"Shout is not a message kind"):
        wire.encode(Shout("HELLO", message_id=ID, sent_at=T))


def test_encode_refuses_a_non_message() -> None:
    with pytest.raises(wire.UsageError, match=r"str is not a message kind"):
        wire.encode("hello")  # type: ignore[arg-type]


def test_encode_rechecks_a_message_mutated_behind_its_back() -> None:
    message = wire.Text("fine", message_id=ID, sent_at=T)
    object.__setattr__(message, "body", "")
    with pytest.raises(wire.UsageError, match=r"Text.body: must not be empty"):
        wire.encode(message)


# -- Pipeline steps ------------------------------------------------------------------------


def test_size_limit_is_checked_before_parsing() -> None:
    data = b"\xff" * (wire.MAX_MESSAGE_BYTES + 1)
    with pytest.raises(wire.MessageTooLarge):
        wire.decode(data)


def test_a_message_of_exactly_the_size_limit_is_read() -> None:
    overhead = len(envelope({0: b""}, kind=42)) + 2  # the filler's length head grows by 2
    data = envelope({0: bytes(wire.MAX_MESSAGE_BYTES - overhead)}, kind=42)
    assert len(data) == wire.MAX_MESSAGE_BYTES
    with pytest.raises(wire.UnknownKind):
        wire.decode(data)


def _nested(depth: int) -> object:
    value: object = 0
    for _ in range(depth):
        value = [value]
    return value


def test_nesting_is_bounded() -> None:
    # The envelope and the content map are two levels.
    ok = envelope({0: _nested(wire.MAX_DEPTH - 2)}, kind=42)
    with pytest.raises(wire.UnknownKind):
        wire.decode(ok)
    too_deep = envelope({0: _nested(wire.MAX_DEPTH - 1)}, kind=42)
    with pytest.raises(wire.MalformedCBOR, match=r"nesting depth"):
        wire.decode(too_deep)


def test_truncation_at_every_length_is_an_invalid_message() -> None:
    data = wire.encode(wire.Text(CHINESE_20, message_id=ID, sent_at=T))
    for end in range(len(data)):
        with pytest.raises(wire.Truncated):
            wire.decode(data[:end])


def test_trailing_bytes_are_refused() -> None:
    data = wire.encode(wire.Text("x", message_id=ID, sent_at=T))
    with pytest.raises(wire.TrailingBytes, match=r"1 bytes after"):
        wire.decode(data + b"\x00")


def test_version_is_read_before_the_rest() -> None:
    # A newer client may use anything after its version number.
    with pytest.raises(wire.UnsupportedVersion) as raised:
        wire.decode(cbor2.dumps([2, None, 1.5, cbor2.CBORTag(99, "x")]))
    assert raised.value.version == 2
    assert isinstance(raised.value, wire.NotUnderstood)


@pytest.mark.parametrize("tag", codec._CBOR2_TAGS)
def test_every_tag_cbor2_knows_is_refused(tag: int) -> None:
    # Tag contents that cbor2 would otherwise turn into dates, regular
    # expressions, shared references, ... are never interpreted.
    head = cbor2.dumps(cbor2.CBORTag(tag, 0))[:-1]
    data = envelope({0: b"\x00"}).replace(b"\xa1\x00\x41\x00", b"\xa1\x00" + head + b"\x00")
    with pytest.raises(wire.UnsupportedCBOR, match=r"tags"):
        wire.decode(data)


def test_a_regular_expression_tag_is_never_compiled() -> None:
    # Tag 35 with an invalid pattern: cbor2 would raise while compiling it.
    data = envelope({0: cbor2.CBORTag(35, "[")})
    with pytest.raises(wire.UnsupportedCBOR):
        wire.decode(data)


def test_unknown_tags_are_refused() -> None:
    with pytest.raises(wire.UnsupportedCBOR, match=r"tags"):
        wire.decode(envelope({0: cbor2.CBORTag(40000, "x")}))


@pytest.mark.parametrize(
    ("value", "match"),
    [(1.0, "floating-point"), (None, "null"), (cbor2.undefined, "undefined")],
)
def test_values_outside_the_data_model_are_refused(value: object, match: str) -> None:
    with pytest.raises(wire.UnsupportedCBOR, match=match):
        wire.decode(envelope({0: value}))


def test_a_boolean_map_key_is_refused() -> None:
    with pytest.raises(wire.UnsupportedCBOR, match=r"map keys"):
        wire.decode(envelope({True: "x"}))


def test_unknown_kind_carries_the_envelope() -> None:
    with pytest.raises(wire.UnknownKind) as raised:
        wire.decode(envelope({0: "a poll", 1: [1, 2]}, kind=9))
    assert raised.value.kind == 9
    assert raised.value.message_id == ID
    assert raised.value.sent_at == T
    assert isinstance(raised.value, wire.NotUnderstood)
    assert "unknown message kind 9" in str(raised.value)


def test_unknown_kind_must_still_be_canonical() -> None:
    data = envelope({0: "x"}, kind=9).replace(b"\xa1\x00", b"\xb9\x00\x01\x00")
    with pytest.raises(wire.NonCanonical):
        wire.decode(data)


def test_field_errors_name_the_field_path() -> None:
    ref = {0: b"blob", 1: "image/png", 2: 10, 3: bytes(32), 4: bytes(31)}
    with pytest.raises(wire.InvalidValue) as raised:
        wire.decode(envelope({0: "王", 1: ref}, kind=wire.Kind.PROFILE))
    assert raised.value.field == "avatar.sha256"
    assert raised.value.detail == "31 bytes, must be exactly 32"
    assert isinstance(raised.value, wire.InvalidMessage)


def test_avatar_must_be_a_map() -> None:
    with pytest.raises(wire.WrongType, match=r"avatar: expected a map"):
        wire.decode(envelope({0: "王", 1: [1]}, kind=wire.Kind.PROFILE))


def test_cross_field_rules_are_checked_on_decode() -> None:
    ref = {0: b"blob", 1: "image/png", 2: 10, 3: bytes(32), 4: bytes(32)}
    with pytest.raises(wire.InvalidValue, match=r"content: .*width and height"):
        wire.decode(envelope({0: ref, 4: 480}, kind=wire.Kind.ATTACHMENT))


def test_decode_errors_never_chain_library_exceptions() -> None:
    # The cbor2 or Python exception is summarised in the message, not chained,
    # so that logs show one clear cause.
    for data in (b"", b"\x1c", envelope({0: 1.5}), envelope({0: ""})):
        with pytest.raises(wire.DecodeError) as raised:
            wire.decode(data)
        assert raised.value.__cause__ is None
        assert raised.value.__suppress_context__ or raised.value.__context__ is None


# -- Bounds --------------------------------------------------------------------------------

REF = wire.AttachmentRef(
    bytes(wire.MAX_BLOB_ID_BYTES),
    "a/" + "b" * (wire.MAX_CONTENT_TYPE_CHARS - 2),
    wire.MAX_SAFE_INTEGER,
    key=bytes(32),
    sha256=bytes(32),
)
LONGEST_BODY = "a" * wire.MAX_BODY_BYTES
FOUR_BYTE = "😀"  # UTF-8 takes 4 bytes: the worst case for limits in code points


@pytest.mark.parametrize(
    "message",
    [
        wire.Text(LONGEST_BODY, message_id=ID, sent_at=T),
        wire.Reply(LONGEST_BODY, ID, message_id=ID, sent_at=T),
        wire.Edit(ID, LONGEST_BODY, message_id=ID, sent_at=T),
        wire.Reaction(ID, FOUR_BYTE * wire.MAX_EMOJI_CHARS, message_id=ID, sent_at=T),
        wire.Delete(ID, message_id=ID, sent_at=T),
        wire.Attachment(
            REF,
            file_name="a" * wire.MAX_FILE_NAME_BYTES,
            caption=LONGEST_BODY,
            width=wire.MAX_IMAGE_SIDE,
            height=wire.MAX_IMAGE_SIDE,
            preview=bytes(wire.MAX_PREVIEW_BYTES),
            message_id=ID,
            sent_at=T,
        ),
        wire.Profile(FOUR_BYTE * wire.MAX_DISPLAY_NAME_CHARS, REF, message_id=ID, sent_at=T),
        wire.GroupTitle(FOUR_BYTE * wire.MAX_TITLE_CHARS, message_id=ID, sent_at=T),
    ],
    ids=lambda m: type(m).__name__,
)
def test_the_largest_message_of_each_kind_fits(message: wire.Message) -> None:
    data = wire.encode(message)
    assert len(data) <= wire.MAX_MESSAGE_BYTES
    assert wire.decode(data) == message
