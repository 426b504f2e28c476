"""
Failpoints: named places in the driver where a crash test can kill the process on purpose.

They exist for crash tests only, in the manner of etcd's ``gofail`` and
FoundationDB's ``BUGGIFY``: a test runs a real client (the ``townsquare``
command, say) with the environment variable ``TOWNSQUARE_FAILPOINTS`` listing
failpoint names, comma-separated; when the process reaches one of them it
sends itself SIGKILL. That is a real crash: no ``finally``, no ``atexit``, no
flushing of anything that was not already committed to disk. The test then
runs the client again without the variable and checks that nothing was lost
and nothing was stored twice (``tests/integration/test_nothing_lost.py``).

The failpoints (``docs/sdk.md``, Crash safety)::

    after-outbox-saved       send() stored the outbox entry; no request has left for it
    after-send-response      the relay answered a message POST with success; the core
                             has not seen the answer
    while-processing-commit  a fetched page of the log holds a commit; the core has
                             processed it and the store's transaction is open, its
                             COMMIT not yet run

With the variable unset (always, outside crash tests) a failpoint costs one
environment lookup and does nothing.

``while-processing-commit`` needs two places to meet: the driver knows which
answer carries a commit, the store knows when its transaction commits. The
driver marks the call that hands the answer to the core with :func:`armed`;
the store calls :func:`reached_commit` just before each ``COMMIT`` statement
(a SQLite trace callback, installed only when that failpoint is listed).
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from contextvars import ContextVar

__all__ = [
    "AFTER_OUTBOX_SAVED",
    "AFTER_SEND_RESPONSE",
    "ENVIRONMENT_VARIABLE",
    "WHILE_PROCESSING_COMMIT",
    "armed",
    "enabled",
    "failpoint",
    "reached_commit",
]

#: The environment variable that lists the failpoints to fire, comma-separated.
ENVIRONMENT_VARIABLE = "TOWNSQUARE_FAILPOINTS"
#: After ``send`` stored the outbox entry, before any request leaves for it.
AFTER_OUTBOX_SAVED = "after-outbox-saved"
#: After the relay answered a message POST with success, before the core sees the answer.
AFTER_SEND_RESPONSE = "after-send-response"
#: While a fetched page holding a commit is processed, before its batch commits.
WHILE_PROCESSING_COMMIT = "while-processing-commit"

# The failpoint that the store's next COMMIT fires, within the call marked by
# armed(). A context variable rather than a plain attribute: it is set and
# reset around one synchronous call inside one task, and no other task (a
# concurrent request's answer) must see it.
_armed_at_commit: ContextVar[str | None] = ContextVar(
    "townsquare_failpoint_at_commit", default=None
)


def enabled(name: str) -> bool:
    """
    :returns: whether ``TOWNSQUARE_FAILPOINTS`` lists ``name``.
    """
    listed = os.environ.get(ENVIRONMENT_VARIABLE)
    if not listed:
        return False
    return name in (part.strip() for part in listed.split(","))


def failpoint(name: str) -> None:
    """
    Kill this process with SIGKILL at once if ``TOWNSQUARE_FAILPOINTS`` lists ``name``.

    POSIX ``kill()``: a signal a process sends itself that it does not block is
    delivered "before kill() returns"; SIGKILL cannot be blocked, so this never
    returns when the failpoint is listed.

    :param name: the failpoint's name.
    """
    if enabled(name):
        os.kill(os.getpid(), signal.SIGKILL)


@contextlib.contextmanager
def armed(name: str) -> Iterator[None]:
    """
    Within the block, the store's next ``COMMIT`` fires the failpoint ``name`` (if listed).

    :param name: the failpoint's name.
    """
    if not enabled(name):
        yield
        return
    token = _armed_at_commit.set(name)
    try:
        yield
    finally:
        _armed_at_commit.reset(token)


def reached_commit() -> None:
    """
    Called by the store just before a transaction's ``COMMIT``: fire the armed failpoint.
    """
    name = _armed_at_commit.get()
    if name is not None:
        failpoint(name)
