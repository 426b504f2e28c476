"""
``townsquare serve``: run a relay with uvicorn.

With no flags it is a complete relay: SQLite in ``$TOWNSQUARE_DATA`` (else
``./townsquare-data``), listening on 127.0.0.1:8080. It stops cleanly on
SIGINT or SIGTERM: uvicorn finishes the requests in flight, then the
application's lifespan closes the store.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import socket
from dataclasses import replace
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from townsquare.server import Settings, create_app
from townsquare.server.config import Limits

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "TCP_USER_TIMEOUT_SECONDS",
    "RelayServer",
    "add_parser",
    "listening_socket",
    "run",
]

#: Loopback by default: exposing a relay to a network is a deliberate choice.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
# Seconds uvicorn waits for requests in flight at shutdown.
_GRACEFUL_SHUTDOWN_SECONDS = 10
# Seconds an idle keep-alive connection stays open.
_KEEP_ALIVE_SECONDS = 30
#: How long the kernel lets data sent on a connection go unacknowledged, or a peer's
#: receive window stay shut, before it drops the connection (TCP_USER_TIMEOUT).
TCP_USER_TIMEOUT_SECONDS = 60
# uvicorn's exit status when it cannot start.
_STARTUP_FAILURE = 3

_log = logging.getLogger("townsquare.server")


def _default_data_dir() -> Path:
    return Path(os.environ.get("TOWNSQUARE_DATA", "townsquare-data"))


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """
    Register ``serve`` on the command's subparsers.

    :param commands: the object ``ArgumentParser.add_subparsers`` returned.
    """
    parser = commands.add_parser("serve", help="run a relay", description="Run a Townsquare relay.")
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        metavar="DIR",
        help="the data folder (default: $TOWNSQUARE_DATA, else ./townsquare-data)",
    )
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help=f"the address to listen on (default: {DEFAULT_HOST})"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"the TCP port to listen on (default: {DEFAULT_PORT})",
    )
    parser.add_argument(
        "--retention-days",
        type=float,
        default=None,
        metavar="DAYS",
        help="delete log entries and attachments older than this, read or not (default: 30)",
    )
    parser.add_argument(
        "--housekeeping-seconds",
        type=float,
        default=None,
        metavar="SECONDS",
        help="how often expired data is deleted (default: 60)",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=("critical", "error", "warning", "info", "debug"),
        help="how much to log (default: info)",
    )
    parser.set_defaults(run=run)


def tune_garbage_collector() -> None:
    """
    Collect the youngest generation less often.

    A relay with thousands of idle WebSockets holds about a million tracked
    objects; with CPython's default thresholds a full collection (about 350 ms
    here at 5,000 connections) runs every few hundred fan-outs and stalls every
    delivery behind it. Fewer, larger young collections make full ones rarer
    (measured: 5,000-device p99 from ~600 ms to under 200 ms; docs/benchmarks.md).
    """
    gc.set_threshold(10_000, 10, 10)


def listening_socket(
    host: str, port: int, *, user_timeout_seconds: float = TCP_USER_TIMEOUT_SECONDS
) -> socket.socket:
    """
    Bind the relay's listening socket (as uvicorn would), its connections bounded in time.

    Townsquare choice: TCP_USER_TIMEOUT, which accepted connections inherit. When
    the relay drops a push connection that stopped reading (its sends waited past
    ``Limits.websocket_send_timeout_seconds``), the server can only close it
    gracefully: the socket stays open, with up to a few MiB of notices in the
    kernel's buffers, until the device reads them or goes away, which a device that
    never reads (a frozen app, or a hostile one) never does. With this option
    Linux drops such a connection once its receive window has stayed shut, or data
    has gone unacknowledged, for ``user_timeout_seconds``; a device on a bad
    network that lost a minute reconnects and fetches from its cursor. Elsewhere
    (no TCP_USER_TIMEOUT) the socket is bound without it.

    :param host: the address to listen on (an IPv6 one if it contains ``:``).
    :param port: the TCP port (0: any free one).
    :param user_timeout_seconds: the bound, in seconds.
    :returns: the bound socket, not yet listening (uvicorn listens on it).
    :raises OSError: if the address cannot be bound.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        user_timeout = getattr(socket, "TCP_USER_TIMEOUT", None)
        if user_timeout is not None:
            sock.setsockopt(socket.IPPROTO_TCP, user_timeout, int(user_timeout_seconds * 1000))
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


class RelayServer(uvicorn.Server):
    """
    uvicorn's server on a socket of :func:`listening_socket`.
    """

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        """
        Serve on ``sockets``, or on a listening socket bound to the configured address.
        """
        if sockets is None:
            try:
                sock = listening_socket(self.config.host, self.config.port)
            except OSError as exc:
                # As uvicorn does when it cannot bind.
                _log.error("cannot listen on %s:%d: %s", self.config.host, self.config.port, exc)
                raise SystemExit(_STARTUP_FAILURE) from exc
            host, port = sock.getsockname()[:2]
            _log.info("listening on http://%s:%d (Ctrl+C to stop)", host, port)
            sockets = [sock]
        await super().serve(sockets=sockets)


def relay_config(
    app: FastAPI,
    *,
    host: str,
    port: int,
    log_level: str,
    graceful_shutdown_seconds: float = _GRACEFUL_SHUTDOWN_SECONDS,
    access_log: bool = True,
) -> uvicorn.Config:
    """
    The uvicorn settings of a relay (``serve`` and ``demo`` share them).

    :returns: the configuration, for ``uvicorn.Server``.
    """
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=access_log,
        lifespan="on",
        server_header=False,
        timeout_graceful_shutdown=int(graceful_shutdown_seconds),
        timeout_keep_alive=_KEEP_ALIVE_SECONDS,
        # The sans-I/O websockets implementation, and a frame limit just above
        # the relay's own 64 KiB message limit, so uvicorn never buffers the
        # 16 MiB frames it would accept by default.
        ws="websockets-sansio",
        ws_max_size=70 * 1024,
        # Notices are base64 ciphertext, which does not compress: permessage-deflate
        # would only cost about 37 KiB per (browser) connection.
        ws_per_message_deflate=False,
    )


def run(args: argparse.Namespace) -> int:
    """
    Serve until stopped.

    :param args: the parsed arguments.
    :returns: 0 after a clean stop; non-zero if the relay could not start (uvicorn may
        exit with its own status 3 first).
    """
    data_dir: Path = args.data if args.data is not None else _default_data_dir()
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s: %(message)s")
    _log.info("Townsquare relay, data in %s", data_dir.resolve())
    limits = Limits()
    if args.retention_days is not None:
        if args.retention_days <= 0:
            raise SystemExit("townsquare serve: --retention-days must be positive")
        limits = replace(limits, retention_seconds=int(args.retention_days * 86_400))
    if args.housekeeping_seconds is not None:
        if args.housekeeping_seconds <= 0:
            raise SystemExit("townsquare serve: --housekeeping-seconds must be positive")
        limits = replace(limits, housekeeping_interval_seconds=args.housekeeping_seconds)
    tune_garbage_collector()
    app = create_app(Settings(data_dir=data_dir, limits=limits))
    server = RelayServer(
        relay_config(app, host=args.host, port=args.port, log_level=args.log_level)
    )
    server.run()
    return 0 if server.started else 1
