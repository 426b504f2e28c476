"""
Fuzz target ``public_group``: a relay's PublicGroup, built from a GroupInfo, then fed messages.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from fuzz.harness import Target, join_inputs, split_inputs
from townsquare.mls.errors import ProtocolError
from townsquare.mls.public_group import PublicCommit, PublicGroup

if TYPE_CHECKING:
    from fuzz.seeds import SeedSource

__all__ = ["TARGET", "check"]


def check(data: bytes) -> None:
    """
    Build the view from the first part, then process (and merge) each further part.

    :param data: the fuzz input: MLSMessage(GroupInfo), then MLSMessages, split by separators.
    :raises ProtocolError: if the GroupInfo is refused.
    """
    group_info, *messages = split_inputs(data)
    group = PublicGroup.from_group_info(group_info)
    for message in messages:
        try:
            result = group.process(message)
        except ProtocolError:
            continue
        if isinstance(result, PublicCommit):
            group.merge(result)


def _seeds(source: SeedSource) -> Iterable[bytes]:
    return (
        join_inputs([h.group_info_message, *h.messages])
        for h in source.histories
        if h.ratchet_tree is None
    )


TARGET = Target(
    name="public_group",
    summary="PublicGroup.from_group_info, then process() and merge() each message",
    check=check,
    seeds=_seeds,
    allowed=(ProtocolError,),
)
