"""
The fuzz targets, one module per parser, registered by name in :data:`TARGETS`.

To add a target, write a module here that defines ``TARGET = Target(...)``
(see :class:`fuzz.harness.Target`) and list it below.
"""

from __future__ import annotations

from collections.abc import Mapping

from fuzz.harness import Target
from fuzz.targets import (
    group_info,
    key_package,
    mls_message,
    public_group,
    ratchet_tree,
    welcome,
)

__all__ = ["TARGETS"]

#: Every target, by name, in the order the runner runs them.
TARGETS: Mapping[str, Target] = {
    target.name: target
    for target in (
        mls_message.TARGET,
        welcome.TARGET,
        key_package.TARGET,
        group_info.TARGET,
        ratchet_tree.TARGET,
        public_group.TARGET,
    )
}
