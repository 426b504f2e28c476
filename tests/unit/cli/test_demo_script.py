"""
The demo county's pure rules: posting rotation, jitter, greetings and answers.

:class:`~townsquare.cli.demo_script.Host` is fed the events a head bot's
driver would hand out, built from real wire messages; no relay, no clock.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from townsquare import wire
from townsquare.cli.demo_script import (
    JITTER,
    NOTICES,
    VILLAGES,
    Host,
    Line,
    Script,
    answer,
    greeting,
    is_question,
    jittered,
)
from townsquare.client.core.events import (
    EpochAdvanced,
    MemberJoined,
    MemberLeft,
    MessageReceived,
    ProfileChanged,
)
from townsquare.client.core.messages import StoredMessage

GROUP = b"g" * 16
OTHER_GROUP = b"o" * 16
BOTS = (b"head" * 8, b"bot1" * 8, b"bot2" * 8)
NEWCOMER = b"new!" * 8
WANG = VILLAGES[0]
_SENT_AT = datetime(2025, 5, 1, 9, 0, tzinfo=UTC)


def received(
    message: wire.Message, *, sender: bytes = NEWCOMER, group: bytes = GROUP, name: str | None
) -> MessageReceived:
    stored = StoredMessage(
        group_id=group,
        seq=7,
        sender=sender,
        sender_leaf=3,
        epoch=2,
        own=False,
        message=message,
        data=wire.encode(message),
        sender_name=name,
    )
    return MessageReceived(group, stored)


def text(body: str) -> wire.Text:
    return wire.Text(body, message_id=wire.new_message_id(), sent_at=_SENT_AT)


def host() -> Host:
    return Host(plan=WANG, group_id=GROUP, bot_keys=BOTS)


# -- The county --------------------------------------------------------------------------


def test_villages_have_three_to_five_named_bots_and_bilingual_titles() -> None:
    assert len(VILLAGES) >= 3
    assert len({v.key for v in VILLAGES}) == len(VILLAGES)
    for village in VILLAGES:
        assert 3 <= len(village.bots) <= 5
        assert len(set(village.bots)) == len(village.bots)
        assert village.key.isascii()
        assert village.title == f"{village.name_zh} {village.name_en}"
    assert VILLAGES[0].title == "王家村 Wang Village"


def test_every_notice_is_a_valid_text_in_chinese_and_english() -> None:
    for notice in NOTICES:
        zh, en = notice.split("/ ")
        assert not zh.isascii()
        assert en.isascii()
        text(notice)  # Raises if the Text rules refuse it.


# -- Posting ------------------------------------------------------------------------------


def test_script_rotates_speakers_and_notices_from_its_offset() -> None:
    script = Script(speakers=3, offset=2, notices=("a", "b", "c", "d"))
    lines = [script.next() for _ in range(6)]
    assert [line.speaker for line in lines] == [0, 1, 2, 0, 1, 2]
    assert [line.text for line in lines] == ["c", "d", "a", "b", "c", "d"]
    assert all(line.in_reply_to is None for line in lines)


def test_script_with_the_default_notices_goes_through_them_all() -> None:
    script = Script(speakers=4)
    said = {script.next().text for _ in NOTICES}
    assert said == set(NOTICES)


@pytest.mark.parametrize(("speakers", "notices"), [(0, ("a",)), (2, ())])
def test_script_needs_a_speaker_and_a_notice(speakers: int, notices: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="a script needs"):
        Script(speakers=speakers, notices=notices)


def test_jitter_stays_within_a_quarter_of_the_period() -> None:
    assert jittered(20.0, 0.0) == pytest.approx(20.0 * (1 - JITTER))
    assert jittered(20.0, 0.5) == pytest.approx(20.0)
    assert jittered(20.0, 0.999999) == pytest.approx(20.0 * (1 + JITTER), rel=1e-5)


@pytest.mark.parametrize(("period", "fraction"), [(20.0, -0.1), (20.0, 1.0), (0.0, 0.5)])
def test_jitter_refuses_a_fraction_outside_the_unit_interval(
    period: float, fraction: float
) -> None:
    with pytest.raises(ValueError, match="is"):
        jittered(period, fraction)


# -- Answers ------------------------------------------------------------------------------


@pytest.mark.parametrize("body", ["明天几点开会？", "When is the meeting?", "水?来了"])
def test_a_question_mark_makes_a_question(body: str) -> None:
    assert is_question(body)


@pytest.mark.parametrize("body", ["谢谢大家", "ok", "明天见。"])
def test_no_question_mark_makes_no_question(body: str) -> None:
    assert not is_question(body)


def test_a_question_is_taken_to_fridays_meeting() -> None:
    said = answer("Alice", "水什么时候来?")
    assert said.startswith("Alice，好问题")
    assert "Good question, Alice, let's discuss it at Friday's meeting." in said


def test_anything_else_is_thanked() -> None:
    assert answer("小明", "我明天去镇上") == "收到，谢谢小明！/ Got it, thanks 小明!"


def test_a_newcomer_without_a_name_is_a_friend() -> None:
    assert answer(None, "hello") == "收到，谢谢朋友！/ Got it, thanks friend!"


def test_the_greeting_names_the_newcomer_and_the_village() -> None:
    said = greeting(WANG, "Alice")
    assert said.startswith("欢迎 Alice 来到王家村！")
    assert "Welcome to Wang Village, Alice!" in said


# -- The host -----------------------------------------------------------------------------


def test_a_newcomer_is_greeted_by_the_head_once_their_name_arrives() -> None:
    h = host()
    assert h.handle(MemberJoined(GROUP, NEWCOMER, 3, 2)) is None
    assert h.handle(EpochAdvanced(GROUP, 2)) is None
    line = h.handle(ProfileChanged(GROUP, NEWCOMER, "Alice"))
    assert line == Line(speaker=0, text=greeting(WANG, "Alice"))
    # A later Profile (a rename, or the newcomer greeting the next joiner) is not greeted.
    assert h.handle(ProfileChanged(GROUP, NEWCOMER, "Alice Wang")) is None


def test_bots_joining_are_not_greeted() -> None:
    h = host()
    for key in BOTS[1:]:
        assert h.handle(MemberJoined(GROUP, key, 1, 1)) is None
        assert h.handle(ProfileChanged(GROUP, key, "王秀英")) is None


def test_a_profile_without_a_join_is_not_greeted() -> None:
    assert host().handle(ProfileChanged(GROUP, NEWCOMER, "Alice")) is None


def test_a_newcomer_who_left_before_their_name_arrived_is_not_greeted() -> None:
    h = host()
    h.handle(MemberJoined(GROUP, NEWCOMER, 3, 2))
    assert h.handle(MemberLeft(GROUP, NEWCOMER, 3, 3)) is None
    assert h.handle(ProfileChanged(GROUP, NEWCOMER, "Alice")) is None


def test_another_groups_newcomer_is_not_greeted() -> None:
    h = host()
    assert h.handle(MemberJoined(OTHER_GROUP, NEWCOMER, 3, 2)) is None
    assert h.handle(ProfileChanged(OTHER_GROUP, NEWCOMER, "Alice")) is None
    assert h.handle(ProfileChanged(GROUP, NEWCOMER, "Alice")) is None


def test_each_newcomer_message_gets_one_reply_from_the_next_bot_in_turn() -> None:
    h = host()
    question = text("周五开会吗？")
    thanks = text("谢谢")
    first = h.handle(received(question, name="Alice"))
    second = h.handle(received(thanks, name="Alice"))
    assert first == Line(
        speaker=0, text=answer("Alice", "周五开会吗？"), in_reply_to=question.message_id
    )
    assert second == Line(speaker=1, text=answer("Alice", "谢谢"), in_reply_to=thanks.message_id)
    lines = [h.handle(received(text(str(n)), name="Alice")) for n in range(4)]
    assert [line.speaker for line in lines if line is not None] == [2, 0, 1, 2]


def test_a_reply_from_a_newcomer_is_answered_too() -> None:
    reply = wire.Reply(
        "我也去？", wire.new_message_id(), message_id=wire.new_message_id(), sent_at=_SENT_AT
    )
    line = host().handle(received(reply, name="Bob"))
    assert line is not None
    assert line.text == answer("Bob", "我也去？")
    assert line.in_reply_to == reply.message_id


def test_bots_messages_and_newcomers_bookkeeping_are_not_answered() -> None:
    h = host()
    assert h.handle(received(text("周五开会"), sender=BOTS[1], name="王秀英")) is None
    profile = wire.Profile("Alice", message_id=wire.new_message_id(), sent_at=_SENT_AT)
    assert h.handle(received(profile, name="Alice")) is None
    reaction = wire.Reaction(
        wire.new_message_id(), "👍", message_id=wire.new_message_id(), sent_at=_SENT_AT
    )
    assert h.handle(received(reaction, name="Alice")) is None
    assert h.handle(received(text("hi"), group=OTHER_GROUP, name="Alice")) is None


def test_a_host_needs_bots() -> None:
    with pytest.raises(ValueError, match="at least one bot"):
        Host(plan=WANG, group_id=GROUP, bot_keys=())
