"""
Hypothesis over the wire protocol: every kind round-trips; no input escapes the error hierarchy.

Strategies are written from the limits in ``docs/wire.md``, not from the
field tables the codec uses, so a rule the codec applies differently from
how it is documented shows up as a failure.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import cbor2
from hypothesis import given, settings
from hypothesis import strategies as st

from townsquare import wire

# Timing is not under test, and machines shared with other jobs stall; a
# deadline would only make these flaky.
NO_DEADLINE = settings(deadline=None)

# Any Unicode scalar value: surrogates cannot be encoded in UTF-8.
ANY_CHAR = st.characters(exclude_categories=["Cs"])
# What a one-line field allows: no control characters (category Cc).
LINE_CHAR = st.characters(exclude_categories=["Cs", "Cc"])
CHINESE = st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF)

ids = st.binary(min_size=16, max_size=16).map(wire.MessageId)
times = st.integers(min_value=0, max_value=wire.MAX_SENT_AT).map(
    lambda ms: datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
)
bodies = st.one_of(
    st.text(ANY_CHAR, min_size=1, max_size=200),
    st.text(CHINESE, min_size=1, max_size=200),
    st.text(CHINESE, min_size=5000, max_size=5461),
).filter(lambda s: len(s.encode()) <= wire.MAX_BODY_BYTES)


def line(max_chars: int, *, min_size: int = 1) -> st.SearchStrategy[str]:
    return st.text(LINE_CHAR, min_size=min_size, max_size=max_chars).filter(
        lambda s: not s.isspace()
    )


def common() -> dict[str, st.SearchStrategy[object]]:
    return {"message_id": ids, "sent_at": times}


refs = st.builds(
    wire.AttachmentRef,
    st.binary(min_size=1, max_size=wire.MAX_BLOB_ID_BYTES),
    st.sampled_from(["image/jpeg", "image/png", "audio/ogg", "application/pdf", "video/mp4"]),
    st.integers(min_value=0, max_value=wire.MAX_SAFE_INTEGER),
    key=st.binary(min_size=32, max_size=32),
    sha256=st.binary(min_size=32, max_size=32),
)
sides = st.integers(min_value=1, max_value=wire.MAX_IMAGE_SIDE)


@st.composite
def attachments(draw: st.DrawFn) -> wire.Attachment:
    size = draw(st.none() | st.tuples(sides, sides))
    return wire.Attachment(
        draw(refs),
        file_name=draw(st.none() | line(60).filter(lambda s: len(s.encode()) <= 255)),
        caption=draw(st.none() | bodies),
        width=None if size is None else size[0],
        height=None if size is None else size[1],
        preview=draw(st.none() | st.binary(min_size=1, max_size=wire.MAX_PREVIEW_BYTES)),
        message_id=draw(ids),
        sent_at=draw(times),
    )


messages: st.SearchStrategy[wire.Message] = st.one_of(
    st.builds(wire.Text, bodies, **common()),
    st.builds(wire.Reply, bodies, ids, **common()),
    st.builds(wire.Reaction, ids, st.just("") | line(wire.MAX_EMOJI_CHARS), **common()),
    st.builds(wire.Edit, ids, bodies, **common()),
    st.builds(wire.Delete, ids, **common()),
    attachments(),
    st.builds(wire.Profile, line(wire.MAX_DISPLAY_NAME_CHARS), st.none() | refs, **common()),
    st.builds(wire.GroupTitle, line(wire.MAX_TITLE_CHARS), **common()),
)


@NO_DEADLINE
@given(messages)
def test_every_kind_round_trips(message: wire.Message) -> None:
    data = wire.encode(message)
    assert len(data) <= wire.MAX_MESSAGE_BYTES
    decoded = wire.decode(data)
    assert decoded == message
    assert type(decoded) is type(message)
    assert wire.encode(decoded) == data


@NO_DEADLINE
@given(messages)
def test_encoding_is_deterministic_cbor(message: wire.Message) -> None:
    # RFC 8949 §4.2.1: cbor2's canonical re-encoding of the generic value is
    # the same bytes, so any other deterministic encoder (the web client's)
    # agrees with ours.
    data = wire.encode(message)
    assert cbor2.dumps(cbor2.loads(data), canonical=True) == data


def _decodes_or_fails_cleanly(data: bytes) -> None:
    try:
        message = wire.decode(data)
    except wire.DecodeError:
        return
    # Anything that decodes is the one encoding of what it decodes to.
    assert wire.encode(message) == data


@NO_DEADLINE
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_decode_errors(data: bytes) -> None:
    _decodes_or_fails_cleanly(data)


@NO_DEADLINE
@given(messages, st.data())
def test_corrupted_messages_raise_only_decode_errors(
    message: wire.Message, data: st.DataObject
) -> None:
    encoded = bytearray(wire.encode(message))
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        position = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
        action = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        if action == "flip":
            encoded[position] ^= data.draw(st.integers(min_value=1, max_value=255))
        elif action == "insert":
            encoded.insert(position, data.draw(st.integers(min_value=0, max_value=255)))
        elif len(encoded) > 1:
            del encoded[position]
    _decodes_or_fails_cleanly(bytes(encoded))


cbor_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20)
    | st.builds(cbor2.CBORTag, st.integers(min_value=0, max_value=2**16), st.integers()),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.integers(min_value=-2, max_value=30) | st.text(max_size=3), children)
    ),
    max_leaves=6,
)


@NO_DEADLINE
@given(
    st.integers(min_value=0, max_value=10),
    st.one_of(st.just(wire.MessageId(bytes(16))), cbor_values),
    st.one_of(st.integers(min_value=0, max_value=2**63), cbor_values),
    st.dictionaries(st.integers(min_value=0, max_value=7), cbor_values, max_size=4),
)
def test_arbitrary_envelopes_raise_only_decode_errors(
    kind: int, message_id: object, sent_at: object, content: dict[int, object]
) -> None:
    _decodes_or_fails_cleanly(cbor2.dumps([1, kind, message_id, sent_at, content]))
