"""
``townsquare demo``: a relay on an embedded database, with a living demo county.

One process, one asyncio loop: the relay (uvicorn, SQLite in ``--data DIR``,
by default a fresh temporary folder removed at exit) and, once its
``/healthz`` answers, a few village groups whose member bots are real
devices (:mod:`townsquare.cli.demo_bots`): they post notices every
``--post-every`` seconds, greet a newcomer by name and answer what a
newcomer writes (:mod:`townsquare.cli.demo_script`). It prints the relay's
URL and an invite link per village, and how to join with the CLI.

It stops on Ctrl-C or SIGTERM, in this order: the bots (their drivers close
their push channels and homes), then the relay (uvicorn finishes what is in
flight and closes the store), then the temporary folder is removed. A second
Ctrl-C stops the relay without waiting for its connections.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import shlex
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from townsquare.cli.demo_bots import VillageReady, run_county
from townsquare.cli.demo_script import VILLAGES
from townsquare.cli.serve import (
    DEFAULT_HOST,
    RelayServer,
    relay_config,
    tune_garbage_collector,
)
from townsquare.cli.session import CommandError, encode_id, out, probe
from townsquare.client.errors import ClientError
from townsquare.server import Settings, create_app

__all__ = [
    "DEFAULT_PORT",
    "DEFAULT_POST_EVERY_SECONDS",
    "DEFAULT_VILLAGES",
    "MIN_POST_EVERY_SECONDS",
    "add_parser",
    "run",
]

DEFAULT_PORT = 8000
DEFAULT_VILLAGES = 3
#: The mean seconds between two posts in one village.
DEFAULT_POST_EVERY_SECONDS = 20.0
#: The shortest period: a bot posting faster would meet the relay's post quota.
MIN_POST_EVERY_SECONDS = 1.0
# The most the relay may take to start and answer /healthz, in seconds.
_START_TIMEOUT_SECONDS = 30.0
# Seconds uvicorn waits for requests in flight at shutdown (the bots have closed by then).
_GRACEFUL_SHUTDOWN_SECONDS = 5
# Addresses that mean "every interface": the bots reach the relay on the loopback.
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1"}  # noqa: S104 - a lookup, not a bind

_log = logging.getLogger("townsquare.demo")


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """
    Register ``demo`` on the command's subparsers.

    :param commands: the object ``ArgumentParser.add_subparsers`` returned.
    """
    parser = commands.add_parser(
        "demo",
        help="run a relay with demo villages whose bots post, greet and answer",
        description=(
            "Run a relay with a demo county: village groups whose member bots post notices,"
            " greet newcomers and answer them. Prints an invite link per village."
        ),
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep the relay and the bots here, and resume them when run again"
        " (default: a temporary folder, removed at exit)",
    )
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help=f"the address to listen on (default: {DEFAULT_HOST})"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"the TCP port to listen on, 0 for any free one (default: {DEFAULT_PORT})",
    )
    parser.add_argument(
        "--villages",
        type=int,
        default=DEFAULT_VILLAGES,
        metavar="N",
        help=f"how many villages, 1 to {len(VILLAGES)} (default: {DEFAULT_VILLAGES})",
    )
    parser.add_argument(
        "--post-every",
        type=float,
        default=DEFAULT_POST_EVERY_SECONDS,
        metavar="SECONDS",
        help="the mean seconds between two posts in a village, jittered"
        f" (at least {MIN_POST_EVERY_SECONDS:g}; default: {DEFAULT_POST_EVERY_SECONDS:g})",
    )
    parser.set_defaults(run=run)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Options:
    data_dir: Path | None
    host: str
    port: int
    villages: int
    post_every: float


def _options(args: argparse.Namespace) -> _Options:
    """
    :raises CommandError: (status 2) for an option out of range; nothing is created then.
    """
    if not 1 <= args.villages <= len(VILLAGES):
        raise CommandError(f"--villages is 1 to {len(VILLAGES)}, not {args.villages}", status=2)
    # "not >=" also refuses NaN.
    if not args.post_every >= MIN_POST_EVERY_SECONDS or args.post_every == float("inf"):
        raise CommandError(
            f"--post-every is at least {MIN_POST_EVERY_SECONDS:g} s, not {args.post_every}",
            status=2,
        )
    if not 0 <= args.port <= 65535:
        raise CommandError(f"--port is 0 to 65535, not {args.port}", status=2)
    if args.data is not None and args.data.exists() and not args.data.is_dir():
        raise CommandError(f"--data {args.data} is not a folder", status=2)
    return _Options(
        data_dir=args.data,
        host=args.host,
        port=args.port,
        villages=args.villages,
        post_every=args.post_every,
    )


def run(args: argparse.Namespace) -> int:
    """
    Run the relay and the demo county until stopped.

    :param args: the parsed arguments.
    :returns: 0 after a clean stop (Ctrl-C or SIGTERM).
    :raises CommandError: for a bad option (status 2), or if the relay or the county could
        not start or failed.
    """
    options = _options(args)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    if options.data_dir is not None:
        return asyncio.run(_demo(options, options.data_dir, temporary=False))
    data_dir = Path(tempfile.mkdtemp(prefix="townsquare-demo-"))
    try:
        return asyncio.run(_demo(options, data_dir, temporary=True))
    finally:
        # Only this run's own folder, which it made; nothing in it is worth an error.
        shutil.rmtree(data_dir, ignore_errors=True)


class _Relay(RelayServer):
    """
    A uvicorn server that leaves the signals to ``townsquare demo``.

    uvicorn's own handlers would stop the relay before the bots, and raise the
    signal again once it has stopped, ending the process with the signal's
    status instead of 0.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """
        Install no signal handlers (:func:`_demo` installs its own).
        """
        yield


async def _serve(server: _Relay) -> None:
    try:
        await server.serve()
    except SystemExit:
        # uvicorn exits the process when it cannot start (a port taken); here
        # that ends this task, and the demo reports it.
        _log.debug("the relay exited at startup")


def _http_host(host: str) -> str:
    host = _WILDCARDS.get(host, host)
    return f"[{host}]" if ":" in host else host


async def _started(server: _Relay, serving: asyncio.Task[None], options: _Options) -> str:
    """
    Wait until the relay listens and answers ``/healthz``.

    :returns: its URL.
    :raises CommandError: if it did not start, or did not answer in time.
    """
    where = f"{options.host}:{options.port}"
    try:
        async with asyncio.timeout(_START_TIMEOUT_SECONDS):
            while not server.started:
                if serving.done():
                    raise CommandError(f"the relay could not start on {where} (see above)")
                await asyncio.sleep(0.05)
            port = options.port or server.servers[0].sockets[0].getsockname()[1]
            url = f"http://{_http_host(options.host)}:{port}"
            async with httpx.AsyncClient() as http:
                while not await probe(http, url):
                    await asyncio.sleep(0.05)
    except TimeoutError as exc:
        raise CommandError(f"the relay on {where} did not answer /healthz in time") from exc
    return url


def _say(line: str) -> None:
    out(line)
    # Lines go out as they happen, also into a pipe or a file.
    sys.stdout.flush()


def _banner(
    url: str, data_dir: Path, *, temporary: bool
) -> Callable[[Sequence[VillageReady]], None]:
    def show(villages: Sequence[VillageReady]) -> None:
        kept = "removed at exit" if temporary else "kept"
        _say(f"Townsquare demo: {len(villages)} village(s); data in {data_dir} ({kept}).")
        _say(f"Relay: {url}")
        for village in villages:
            _say("")
            _say(f"{village.title}  ({len(village.names)} members: {', '.join(village.names)})")
            _say(f"  group:  {encode_id(village.group_id)}")
            _say(f"  invite: {village.link}")
        first = villages[0]
        me = "townsquare --home ~/demo-me"
        _say("")
        _say("Join a village from another terminal (put your name for YOU; another village's")
        _say("link and group work the same way):")
        _say(
            f"  {me} init --relay {url} --name YOU"
            f" && {me} join {shlex.quote(first.link)}"
            f" && {me} messages {encode_id(first.group_id)}"
        )
        _say(f'Then `{me} send GROUP "你好"`, and `{me} sync` before `messages` to see answers.')
        _say("Ctrl-C stops the demo.")
        _say("")

    return show


async def _serve_county(
    server: _Relay,
    serving: asyncio.Task[None],
    options: _Options,
    data_dir: Path,
    *,
    temporary: bool,
) -> None:
    url = await _started(server, serving, options)
    await run_county(
        VILLAGES[: options.villages],
        data_dir=data_dir,
        relay=url,
        period=options.post_every,
        say=_say,
        on_ready=_banner(url, data_dir, temporary=temporary),
    )


def _failure(task: asyncio.Task[None]) -> CommandError:
    """
    :returns: the error to report for the county's task, which ended.
    :raises BaseException: the task's own exception, if it is a bug (not an expected failure).
    """
    exc = task.exception()
    # The county runs its villages in a task group: report the first failure of one.
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    if isinstance(exc, CommandError):
        return exc
    if isinstance(exc, (ClientError, OSError)):
        return CommandError(f"the demo county failed: {type(exc).__name__}: {exc}")
    if exc is None:  # pragma: no cover - the county never returns
        return CommandError("the demo county stopped")
    raise exc


async def _demo(options: _Options, data_dir: Path, *, temporary: bool) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    tune_garbage_collector()
    app = create_app(Settings(data_dir=data_dir))
    server = _Relay(
        relay_config(
            app,
            host=options.host,
            port=options.port,
            log_level="warning",
            access_log=False,
            graceful_shutdown_seconds=_GRACEFUL_SHUTDOWN_SECONDS,
        )
    )

    def on_signal() -> None:
        if stop.is_set():
            server.force_exit = True
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    serving = asyncio.create_task(_serve(server), name="townsquare-demo-relay")
    county = asyncio.create_task(
        _serve_county(server, serving, options, data_dir, temporary=temporary),
        name="townsquare-demo",
    )
    stopping = asyncio.create_task(stop.wait(), name="townsquare-demo-stop")
    try:
        await asyncio.wait({county, stopping, serving}, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            return 0
        if county.done():
            raise _failure(county)
        if not server.started:
            where = f"{options.host}:{options.port}"
            raise CommandError(f"the relay could not start on {where} (see above)")
        raise CommandError("the relay stopped unexpectedly")
    finally:
        # The bots first, while the relay still answers them; then the relay.
        for task in (county, stopping):
            task.cancel()
        await asyncio.wait({county, stopping})
        if not county.cancelled() and (failed := county.exception()) is not None:
            # Reported above, or it failed while stopping: logged, never silently dropped.
            _log.warning("the demo county ended with %s: %s", type(failed).__name__, failed)
        server.should_exit = True
        await serving
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
