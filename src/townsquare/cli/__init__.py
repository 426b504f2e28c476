"""
The ``townsquare`` command.

``townsquare serve`` runs a relay (``townsquare demo``, one with a demo
county); the member commands (``init``, ``whoami``, ``group create``, ``group settings``,
``add``, ``send``, ``sync``, ``messages``, ``members``, ``remove``,
``leave``, ``invite``, ``join``, ``requests``, ``approve``, ``deny``,
``admin``, ``rekey``) drive the client SDK on a device's home folder, given as
``--home DIR`` before the command. Each subcommand module has an
``add_parser(s)`` function that registers it and ``run`` functions that
return the exit status. Expected failures print one line on stderr and exit non-zero.
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Sequence

from townsquare import __version__
from townsquare.cli import demo, member, serve
from townsquare.cli.session import CommandError, error
from townsquare.client.driver import HOME_ENVIRONMENT_VARIABLE
from townsquare.client.errors import ClientError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="townsquare",
        description="Group chat that a community owns: end-to-end encrypted village groups.",
    )
    parser.add_argument("--version", action="version", version=f"townsquare {__version__}")
    parser.add_argument(
        "--home",
        default=None,
        metavar="DIR",
        help=f"this device's folder (default: ${HOME_ENVIRONMENT_VARIABLE}, else ~/.townsquare)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve.add_parser(commands)
    demo.add_parser(commands)
    member.add_parsers(commands)
    return parser


# The member commands' options; every other argument is a positional one.
_FLAGS = frozenset(
    {"--json", "--all", "-h", "--help", "--approval", "--members-can-add", "--reset", "--remove"}
)
_VALUED = ("--timeout", "--relay", "--name", "--days", "--uses")
_GLOBAL_VALUED = ("--home",)
# Options that take a value in one subcommand (``on``/``off``) and are flags elsewhere.
_VALUED_IN = {("group", "settings"): ("--approval", "--members-can-add")}


def _positionals_last(argv: list[str]) -> list[str]:
    """
    Put a member command's options first and its positional arguments after ``--``.

    Ids are base64url, and one in 32 starts with ``-``: argparse would take
    ``-Zk3…`` for an option. After ``--`` it is an argument, whatever it looks
    like (a text may start with ``-`` too). ``serve`` is left as it is.
    """
    head: list[str] = []
    rest = iter(argv)
    for token in rest:
        head.append(token)
        if token in _GLOBAL_VALUED:
            head.append(next(rest, ""))
        elif not token.startswith("-"):
            break
    else:
        return argv
    if head[-1] not in member.COMMANDS:
        return argv
    extra: tuple[str, ...] = ()
    if head[-1] == "group":
        sub = next(rest, None)
        if sub is None:
            return argv
        head.append(sub)
        extra = _VALUED_IN.get(("group", sub), ())
    flags = _FLAGS - set(extra)
    valued = (*_VALUED, *extra)
    options: list[str] = []
    positionals: list[str] = []
    for token in rest:
        if token == "--":  # noqa: S105 - not a password
            positionals.extend(rest)
        elif token in flags or token.startswith(tuple(f"{v}=" for v in valued)):
            options.append(token)
        elif token in valued:
            options.extend((token, next(rest, "")))
        else:
            positionals.append(token)
    return [*head, *options, *(["--", *positionals] if positionals else [])]


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run the ``townsquare`` command.

    :param argv: the arguments after the program name (default: ``sys.argv[1:]``).
    :returns: the exit status: 0, 1 for an error, 2 for a usage error (or a command
        that is not available yet), 130 when interrupted.
    """
    args = _parser().parse_args(_positionals_last(list(sys.argv[1:] if argv is None else argv)))
    if args.command == "serve":
        # The relay handles its own signals and errors, as it always has.
        served: int = args.run(args)
        return served
    for stream in (sys.stdout, sys.stderr):
        # Names and messages are any Unicode; a terminal that cannot show a
        # character gets an escape, not a traceback.
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    try:
        status: int = args.run(args)
    except CommandError as exc:
        error(str(exc))
        return exc.status
    except ClientError as exc:
        error(str(exc) or type(exc).__name__)
        return 1
    except OSError as exc:
        error(str(exc))
        return 1
    except KeyboardInterrupt:
        error("interrupted")
        return 130
    return status
