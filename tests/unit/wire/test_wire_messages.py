"""
Building messages: every rule refuses bad values with UsageError, and good values come out intact.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone

import pytest

from townsquare import wire
from townsquare.wire.messages import MESSAGE_CLASSES

ID = wire.MessageId(bytes(range(16)))
OTHER = wire.MessageId(bytes(range(16, 32)))
T = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
REF = wire.AttachmentRef(b"blob", "image/png", 1000, key=bytes(32), sha256=bytes(32))


def text(body: object = "你好", **changes: object) -> wire.Text:
    arguments: dict[str, object] = {"message_id": ID, "sent_at": T, **changes}
    return wire.Text(body, **arguments)  # type: ignore[arg-type]


# -- The envelope's fields --------------------------------------------------------------


def test_new_message_ids_are_16_random_bytes() -> None:
    first, second = wire.new_message_id(), wire.new_message_id()
    assert len(first) == wire.MESSAGE_ID_BYTES
    assert first != second


@pytest.mark.parametrize(
    ("message_id", "match"),
    [
        (bytes(15), "exactly 16"),
        (bytes(17), "exactly 16"),
        (bytearray(16), "byte string"),
        ("0" * 16, "byte string"),
        (None, "required"),
    ],
)
def test_message_id_must_be_16_bytes(message_id: object, match: str) -> None:
    with pytest.raises(wire.UsageError, match=f"Text.message_id: .*{match}"):
        text(message_id=message_id)


def test_sent_at_must_be_aware() -> None:
    with pytest.raises(wire.UsageError, match=r"Text.sent_at: must be timezone-aware"):
        text(sent_at=datetime(2026, 3, 1, 8, 0))


def test_sent_at_must_be_a_datetime() -> None:
    with pytest.raises(wire.UsageError, match=r"Text.sent_at: expected a datetime, got an integer"):
        text(sent_at=1772352000000)


@pytest.mark.parametrize(
    "sent_at",
    [
        datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=UTC),
        # The last instant Python represents, at UTC-1, is after 9999 in UTC.
        datetime.max.replace(tzinfo=timezone(timedelta(hours=-1))),
    ],
    ids=["before-1970", "after-9999"],
)
def test_sent_at_must_fall_between_1970_and_9999(sent_at: datetime) -> None:
    with pytest.raises(wire.UsageError, match=r"Text.sent_at: .* is outside"):
        text(sent_at=sent_at)


def test_sent_at_is_stored_in_utc_floored_to_the_millisecond() -> None:
    beijing = timezone(timedelta(hours=8))
    message = text(sent_at=datetime(2026, 3, 1, 16, 0, 0, 123999, tzinfo=beijing))
    assert message.sent_at == datetime(2026, 3, 1, 8, 0, 0, 123000, tzinfo=UTC)
    assert message.sent_at.tzinfo is UTC
    assert wire.decode(wire.encode(message)) == message


# -- Text rules ------------------------------------------------------------------------


def test_body_must_be_a_string() -> None:
    with pytest.raises(wire.UsageError, match=r"Text.body: expected a text string, got a byte"):
        text(b"hello")


def test_body_must_not_be_empty() -> None:
    with pytest.raises(wire.UsageError, match=r"Text.body: must not be empty"):
        text("")


def test_body_may_be_white_space() -> None:
    assert text(" \n").body == " \n"


def test_body_is_limited_in_utf8_bytes_not_characters() -> None:
    assert text("水" * 5461 + "a").body  # 16,384 bytes
    with pytest.raises(wire.UsageError, match=r"16385 UTF-8 bytes, at most 16384"):
        text("水" * 5461 + "ab")
    # The same number of characters in ASCII is far under the limit.
    assert text("a" * 5462).body


def test_body_with_a_lone_surrogate_is_refused() -> None:
    with pytest.raises(wire.UsageError, match=r"lone surrogate"):
        text("bad \ud800 half")


def test_text_is_not_normalised() -> None:
    # CJK compatibility ideograph U+F900 would become U+8C48 under NFC, and
    # "e" + U+0301 would become U+00E9: neither happens.
    body = "\uf900 cafe\u0301"
    message = wire.decode(wire.encode(text(body)))
    assert isinstance(message, wire.Text)
    assert message.body == body
    assert message.body != "\u8c48 caf\u00e9"


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: wire.Profile("", message_id=ID, sent_at=T), "must not be empty"),
        (lambda: wire.Profile(" \u3000", message_id=ID, sent_at=T), "only white space"),
        (lambda: wire.Profile("王\t建国", message_id=ID, sent_at=T), "control characters"),
        (lambda: wire.Profile("王\x85", message_id=ID, sent_at=T), "control characters"),
        (lambda: wire.Profile("王\x7f", message_id=ID, sent_at=T), "control characters"),
        (lambda: wire.Profile("张" * 65, message_id=ID, sent_at=T), "65 code points, at most 64"),
        (lambda: wire.GroupTitle("村" * 129, message_id=ID, sent_at=T), "129 code points"),
        (lambda: wire.GroupTitle("\n", message_id=ID, sent_at=T), "only white space"),
        (lambda: wire.Reaction(ID, "👍" * 17, message_id=OTHER, sent_at=T), "17 code points"),
        (lambda: wire.Reaction(ID, " ", message_id=OTHER, sent_at=T), "only white space"),
    ],
)
def test_single_line_fields_refuse_bad_text(build: object, match: str) -> None:
    assert callable(build)
    with pytest.raises(wire.UsageError, match=match):
        build()


def test_limits_count_code_points_for_names() -> None:
    # A family emoji is 7 code points but one grapheme; 16 code points fit.
    family = "👨\u200d👩\u200d👧\u200d👦"
    assert wire.Reaction(ID, family + "👍" * 9, message_id=OTHER, sent_at=T).emoji
    assert wire.Profile("张" * 64, message_id=ID, sent_at=T).display_name


def test_empty_reaction_means_removal() -> None:
    assert wire.Reaction(ID, "", message_id=OTHER, sent_at=T).emoji == ""


def test_reply_and_edit_refer_by_message_id() -> None:
    with pytest.raises(wire.UsageError, match=r"Reply.in_reply_to: 4 bytes, must be exactly 16"):
        wire.Reply("x", wire.MessageId(b"abcd"), message_id=ID, sent_at=T)
    with pytest.raises(wire.UsageError, match=r"Edit.target_id"):
        wire.Edit(None, "x", message_id=ID, sent_at=T)  # type: ignore[arg-type]
    with pytest.raises(wire.UsageError, match=r"Delete.target_id"):
        wire.Delete(wire.MessageId(b""), message_id=ID, sent_at=T)


# -- Attachments -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"blob_id": b""}, "blob_id: 0 bytes, at least 1"),
        ({"blob_id": bytes(65)}, "blob_id: 65 bytes, at most 64"),
        ({"content_type": "image"}, "content_type: 'image' is not"),
        ({"content_type": "Image/PNG"}, "content_type: 'Image/PNG' is not"),
        ({"content_type": "image/png "}, "content_type"),
        ({"content_type": "image/png\n"}, "content_type"),
        ({"content_type": "a/" + "b" * 126}, "content_type: 128 characters, at most 127"),
        ({"content_type": 7}, "content_type: expected a text string, got an integer"),
        ({"size": -1}, "size: -1 is outside"),
        ({"size": 2**53}, "size: 9007199254740992 is outside"),
        ({"size": True}, "size: expected an integer, got a boolean"),
        ({"size": 1.0}, "size: expected an integer, got float"),
        ({"key": bytes(16)}, "key: 16 bytes, must be exactly 32"),
        ({"sha256": bytes(31)}, "sha256: 31 bytes, must be exactly 32"),
    ],
)
def test_attachment_ref_rules(changes: dict[str, object], match: str) -> None:
    with pytest.raises(wire.UsageError, match=f"AttachmentRef\\.{match}"):
        dataclasses.replace(REF, **changes)  # type: ignore[arg-type]


def test_attachment_ref_hides_its_key() -> None:
    secret = bytes.fromhex("5e" * 32)
    ref = dataclasses.replace(REF, key=secret)
    assert "5e5e" not in repr(ref)
    assert repr(secret) not in repr(wire.Attachment(ref, message_id=ID, sent_at=T))


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"width": 640}, "width and height come together"),
        ({"height": 480}, "width and height come together"),
        ({"width": 0, "height": 480}, "Attachment.width: 0 is outside 1..65535"),
        ({"width": 640, "height": 65536}, "Attachment.height: 65536 is outside"),
        ({"preview": b""}, "Attachment.preview: 0 bytes, at least 1"),
        ({"preview": bytes(4097)}, "Attachment.preview: 4097 bytes, at most 4096"),
        ({"file_name": "a/b\x00"}, "Attachment.file_name: must not contain control"),
        ({"file_name": "文" * 86}, "Attachment.file_name: 258 UTF-8 bytes, at most 255"),
        ({"caption": ""}, "Attachment.caption: must not be empty"),
    ],
)
def test_attachment_rules(changes: dict[str, object], match: str) -> None:
    with pytest.raises(wire.UsageError, match=match):
        wire.Attachment(REF, message_id=ID, sent_at=T, **changes)  # type: ignore[arg-type]


def test_attachment_ref_must_be_an_attachment_ref() -> None:
    with pytest.raises(
        wire.UsageError, match=r"Attachment.ref: expected an AttachmentRef, got dict"
    ):
        wire.Attachment({"blob_id": b"x"}, message_id=ID, sent_at=T)  # type: ignore[arg-type]
    with pytest.raises(wire.UsageError, match=r"Profile.avatar: expected an AttachmentRef"):
        wire.Profile("王", b"avatar", message_id=ID, sent_at=T)  # type: ignore[arg-type]


def test_optional_fields_default_to_absent() -> None:
    attachment = wire.Attachment(REF, message_id=ID, sent_at=T)
    assert attachment.content() == {0: REF.content()}
    assert wire.Profile("王", message_id=ID, sent_at=T).content() == {0: "王"}


# -- Values and classes -----------------------------------------------------------------


def test_messages_are_frozen_and_slotted() -> None:
    message = text()
    with pytest.raises(dataclasses.FrozenInstanceError):
        message.body = "changed"  # type: ignore[misc]
    assert not hasattr(message, "__dict__")


def test_message_base_class_cannot_be_built() -> None:
    with pytest.raises(TypeError):
        wire.Message(message_id=ID, sent_at=T)  # type: ignore[abstract]


def test_positional_then_keyword_only_arguments() -> None:
    assert text().__match_args__ == ("body",)
    assert wire.Attachment.__match_args__ == ("ref",)
    assert wire.AttachmentRef.__match_args__ == ("blob_id", "content_type", "size")
    with pytest.raises(TypeError):
        wire.Text("x", ID, T)  # type: ignore[misc]


def test_each_kind_has_a_unique_number_and_a_complete_field_table() -> None:
    assert sorted(MESSAGE_CLASSES) == [kind.value for kind in wire.Kind]
    for number, cls in MESSAGE_CLASSES.items():
        assert number == cls.KIND
        attributes = [f.name for f in dataclasses.fields(cls)]
        table = [f.name for f in cls.FIELDS]
        assert sorted(attributes) == sorted(["message_id", "sent_at", *table]), cls
        # Keys are 0, 1, 2, ... in the order of the table, each one CBOR byte.
        assert [f.key for f in cls.FIELDS] == list(range(len(cls.FIELDS))), cls
    ref_table = [f.name for f in wire.AttachmentRef.FIELDS]
    assert ref_table == [f.name for f in dataclasses.fields(wire.AttachmentRef)]


def test_kind_zero_is_never_assigned() -> None:
    assert 0 not in MESSAGE_CLASSES
    assert min(wire.Kind) == 1
