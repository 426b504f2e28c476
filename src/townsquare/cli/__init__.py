"""
The ``townsquare`` command.

``townsquare serve`` runs a relay; the member commands (``init``, ``group``,
``invite``, ``join``, ``send``, ``sync``, ...) join as the client SDK lands.
Each subcommand lives in its own module with an ``add_parser`` function that
registers it and a ``run`` function that returns the exit status.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from townsquare import __version__
from townsquare.cli import serve

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="townsquare",
        description="Group chat that a community owns: end-to-end encrypted village groups.",
    )
    parser.add_argument("--version", action="version", version=f"townsquare {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run the ``townsquare`` command.

    :param argv: the arguments after the program name (default: ``sys.argv[1:]``).
    :returns: the exit status.
    """
    args = _parser().parse_args(argv)
    status: int = args.run(args)
    return status
