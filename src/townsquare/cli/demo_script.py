"""
The demo county's people and words: its villages, their bots, and what the bots say when.

Pure rules, no I/O: nothing here reads a clock, a socket or a random source
(the caller passes the random fraction that jitters the posting period), so
that each rule is unit-tested on its own. :mod:`townsquare.cli.demo_bots`
runs them against real devices.

- :class:`Script` rotates the notices a village's bots post, and who posts each.
- :class:`Host` watches one member's view of a village group and decides when
  a bot greets a newcomer (once the newcomer's Profile names them) and
  answers a newcomer's message (a question mark gets "let's discuss it on
  Friday", anything else a friendly acknowledgement).
"""

from __future__ import annotations

from dataclasses import dataclass

from townsquare.client.core.events import (
    Event,
    MemberJoined,
    MemberLeft,
    MessageReceived,
    ProfileChanged,
)

__all__ = [
    "JITTER",
    "NOTICES",
    "VILLAGES",
    "Host",
    "Line",
    "Script",
    "VillagePlan",
    "answer",
    "greeting",
    "is_question",
    "jittered",
]

#: How far a posting delay strays from the period, as a fraction of it (±25 %).
JITTER = 0.25
# The kinds of a newcomer's message that get an answer: what a person writes.
_ANSWERED_KINDS = frozenset({"text", "reply"})


@dataclass(frozen=True, slots=True, kw_only=True)
class VillagePlan:
    """
    One demo village: its names and its bots' display names.

    :param key: a short ASCII name, for folder names.
    :param name_zh: the village's Chinese name.
    :param name_en: its English name.
    :param bots: the bots' display names; the first is the village head, who creates
        the group (its admin), makes the invite links and greets newcomers.
    """

    key: str
    name_zh: str
    name_en: str
    bots: tuple[str, ...]

    @property
    def title(self) -> str:
        """
        The group's title: the Chinese name, then the English one.
        """
        return f"{self.name_zh} {self.name_en}"


#: The county, in the order ``--villages N`` takes them.
VILLAGES: tuple[VillagePlan, ...] = (
    VillagePlan(
        key="wang",
        name_zh="王家村",
        name_en="Wang Village",
        bots=("王建国", "王秀英", "刘大爷", "陈会计"),
    ),
    VillagePlan(key="li", name_zh="李庄", name_en="Li Hamlet", bots=("李德明", "李桂兰", "赵师傅")),
    VillagePlan(
        key="hekou",
        name_zh="河口镇",
        name_en="Hekou Town",
        bots=("周志强", "何丽娟", "孙老师", "吴大姐", "郑医生"),
    ),
    VillagePlan(
        key="zhangwan",
        name_zh="张家湾",
        name_en="Zhang Bay",
        bots=("张国庆", "张小梅", "马会计", "黄大叔"),
    ),
    VillagePlan(
        key="shiqiao",
        name_zh="石桥村",
        name_en="Stone Bridge Village",
        bots=("石永福", "杨春花", "林师傅"),
    ),
)

#: What the bots post: the everyday notices of a village group, in Chinese and English.
NOTICES: tuple[str, ...] = (
    "周五晚上七点在村委会开会，商量修路的事。/ Meeting at the village office Friday 7 pm about"
    " repairing the road.",
    "明天上午九点到十二点停水，请大家提前接好水。/ Water is off tomorrow 9 am to noon; please"
    " store some tonight.",
    "东头的水渠清理好了，这周可以放水浇地。/ The east ditch is cleared; fields can be watered"
    " this week.",
    "今年玉米收成不错，晒场周六开放，需要的提前说。/ A good corn harvest this year; the drying"
    " ground opens Saturday, tell us if you need it.",
    "刘奶奶腿脚不方便，谁去镇上能帮她带点药？/ Grandma Liu cannot walk far; could someone going"
    " to town bring her medicine?",
    "我明天去镇上，有要带东西的在群里说一声。/ I am going to town tomorrow; post here if you"
    " need anything brought back.",
    "下周三卫生室有免费体检，记得带身份证。/ Free health check at the clinic next Wednesday;"
    " bring your ID card.",
    "天气预报说后天有大雨，晒的粮食记得收。/ Heavy rain is forecast for the day after tomorrow;"
    " bring in the drying grain.",
    "收割机周四到，要用的人家找会计登记。/ The harvester comes Thursday; sign up with the"
    " accountant if you need it.",
    "村口的路灯修好了，晚上走路安全多了。/ The street light at the village gate is fixed;"
    " safer walking at night.",
    "合作社的化肥到了，按登记的数量来领。/ The co-op's fertilizer is here; collect the amount"
    " you signed up for.",
    "周五开会人多，谁家有多余的板凳借一下？/ Many are coming on Friday; does anyone have spare"
    " benches to lend?",
    "电工下午来检查线路，可能停电一小时。/ The electrician checks the wiring this afternoon;"
    " power may be off for an hour.",
    "王大哥家的房顶漏雨，周日上午大家去帮忙修一下。/ Brother Wang's roof leaks; let's help"
    " him fix it Sunday morning.",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Line:
    """
    Something one of a village's bots is to say.

    :param speaker: the bot's index in :attr:`VillagePlan.bots`.
    :param text: what it says.
    :param in_reply_to: the wire message id it answers (sent as a Reply), or ``None``.
    """

    speaker: int
    text: str
    in_reply_to: bytes | None = None


def jittered(period: float, fraction: float) -> float:
    """
    :param period: the mean delay, in seconds.
    :param fraction: a random number in [0, 1).
    :returns: a delay within :data:`JITTER` of ``period``, so that villages do not post in step.
    :raises ValueError: if ``fraction`` is outside [0, 1) or ``period`` is not positive.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"the fraction is in [0, 1), not {fraction}")
    if period <= 0:
        raise ValueError(f"the period is positive, not {period}")
    return period * (1.0 - JITTER + 2 * JITTER * fraction)


class Script:
    """
    The rotation of a village's posts: the next notice, said by the next bot.

    Each village starts at its own place in :data:`NOTICES` (``offset``), so
    that two villages do not post the same notice together.
    """

    def __init__(
        self, *, speakers: int, offset: int = 0, notices: tuple[str, ...] = NOTICES
    ) -> None:
        """
        :param speakers: how many bots the village has.
        :param offset: where in ``notices`` to start.
        :param notices: the lines to rotate through.
        :raises ValueError: if there are no speakers or no notices.
        """
        if speakers <= 0 or not notices:
            raise ValueError("a script needs a speaker and a notice")
        self._speakers = speakers
        self._notices = notices
        self._offset = offset
        self._count = 0

    def next(self) -> Line:
        """
        :returns: the next post: speakers take turns, notices follow in order, then repeat.
        """
        count = self._count
        self._count += 1
        return Line(
            speaker=count % self._speakers,
            text=self._notices[(self._offset + count) % len(self._notices)],
        )


def is_question(text: str) -> bool:
    """
    :returns: whether ``text`` asks something: it holds a question mark (ASCII or full-width).
    """
    return "?" in text or "？" in text


def greeting(plan: VillagePlan, name: str) -> str:
    """
    :returns: the head's welcome to a newcomer called ``name``.
    """
    return (
        f"欢迎 {name} 来到{plan.name_zh}！有事在群里说就行。"
        f"/ Welcome to {plan.name_en}, {name}! Just ask here if you need anything."
    )


def answer(name: str | None, text: str) -> str:
    """
    :param name: the newcomer's display name, if their Profile has arrived.
    :param text: what they wrote.
    :returns: a bot's answer: a question is taken to Friday's meeting, anything else thanked.
    """
    name_zh, name_en = (name, name) if name else ("朋友", "friend")
    if is_question(text):
        return (
            f"{name_zh}，好问题，我们周五开会时一起商量。"
            f"/ Good question, {name_en}, let's discuss it at Friday's meeting."
        )
    return f"收到，谢谢{name_zh}！/ Got it, thanks {name_en}!"


class Host:
    """
    Decides, from the events of one member's device, when a village's bots greet and answer.

    Fed every event of the village head's driver (:meth:`handle`), it returns
    the line to say, if any:

    - a member that is not a bot joins (``MemberJoined``): remembered; when its
      Profile arrives (``ProfileChanged``), the head greets it by name, once;
      if it leaves first (``MemberLeft``), it is forgotten;
    - a member that is not a bot sends a text or reply (``MessageReceived``):
      the next bot in turn answers it with a Reply. The core hands out each
      message's event exactly once, and only the head's events come here,
      so each newcomer message gets at most one answer.
    """

    def __init__(self, *, plan: VillagePlan, group_id: bytes, bot_keys: tuple[bytes, ...]) -> None:
        """
        :param plan: the village.
        :param group_id: its group.
        :param bot_keys: the bots' device keys, in speaker order (the head first): everyone
            else is a newcomer.
        :raises ValueError: if there are no bots.
        """
        if not bot_keys:
            raise ValueError("a village has at least one bot")
        self._plan = plan
        self._group_id = group_id
        self._speakers = len(bot_keys)
        self._bot_keys = frozenset(bot_keys)
        self._waiting_for_name: set[bytes] = set()
        self._answers = 0

    def handle(self, event: Event) -> Line | None:
        """
        :returns: what a bot is to say because of ``event``, or ``None``.
        """
        match event:
            case MemberJoined(group_id=group_id, device_key=key) if self._newcomer(group_id, key):
                self._waiting_for_name.add(key)
            case MemberLeft(group_id=group_id, device_key=key) if group_id == self._group_id:
                self._waiting_for_name.discard(key)
            case ProfileChanged(group_id=group_id, device_key=key, display_name=name) if (
                group_id == self._group_id and key in self._waiting_for_name
            ):
                self._waiting_for_name.discard(key)
                return Line(speaker=0, text=greeting(self._plan, name))
            case MessageReceived(group_id=group_id, message=message) if (
                self._newcomer(group_id, message.sender)
                and message.kind in _ANSWERED_KINDS
                and message.text is not None
                and message.message_id is not None
            ):
                speaker = self._answers % self._speakers
                self._answers += 1
                return Line(
                    speaker=speaker,
                    text=answer(message.sender_name, message.text),
                    in_reply_to=message.message_id,
                )
            case _:
                pass
        return None

    def _newcomer(self, group_id: bytes, device_key: bytes) -> bool:
        return group_id == self._group_id and device_key not in self._bot_keys
