"""
The relay's listening socket: connections inherit TCP_USER_TIMEOUT, so one that never reads ends.

Real sockets on loopback and the real kernel: a peer that stops reading fills
the relay's send buffer, its receive window shuts, and the kernel drops the
connection once the window has stayed shut for the user timeout (Linux since
5.x applies TCP_USER_TIMEOUT to zero-window probes). This is what frees the
socket of a push connection the relay gave up on (``docs/protocol.md``).
"""

from __future__ import annotations

import socket
import time

import pytest

from townsquare.cli.serve import TCP_USER_TIMEOUT_SECONDS, listening_socket

needs_user_timeout = pytest.mark.skipif(
    not hasattr(socket, "TCP_USER_TIMEOUT"), reason="TCP_USER_TIMEOUT is Linux's"
)


@needs_user_timeout
def test_accepted_connections_inherit_the_user_timeout() -> None:
    with listening_socket("127.0.0.1", 0) as listener:
        listener.listen()
        with socket.create_connection(listener.getsockname()) as _peer:
            accepted, _ = listener.accept()
            with accepted:
                option = accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT)
                assert option == TCP_USER_TIMEOUT_SECONDS * 1000


@needs_user_timeout
@pytest.mark.slow
def test_a_peer_that_never_reads_is_dropped_after_the_user_timeout() -> None:
    with listening_socket("127.0.0.1", 0, user_timeout_seconds=1.0) as listener:
        listener.listen()
        with socket.socket() as peer:
            peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            peer.connect(listener.getsockname())
            accepted, _ = listener.accept()
            with accepted:
                accepted.settimeout(0)
                # Fill every buffer between the two: the peer reads nothing.
                filled = False
                while not filled:
                    try:
                        accepted.send(b"x" * 65536)
                    except BlockingIOError:
                        filled = True
                started = time.monotonic()
                dropped: OSError | None = None
                while time.monotonic() - started < 30:
                    time.sleep(0.2)
                    try:
                        accepted.send(b"y")
                    except BlockingIOError:
                        continue
                    except OSError as exc:
                        dropped = exc
                        break
                assert isinstance(dropped, TimeoutError), dropped


def test_an_address_in_use_is_an_os_error() -> None:
    with listening_socket("127.0.0.1", 0) as first:
        first.listen()
        port = first.getsockname()[1]
        with pytest.raises(OSError, match="in use"):
            listening_socket("127.0.0.1", port)
