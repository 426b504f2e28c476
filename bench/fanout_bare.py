"""
The bare broadcast server of ``bench/relay_fanout.py``: uvicorn + Starlette, no auth, no database.

What the relay's fan-out is measured against: the least a server of the same
framework can do to push one message to every connected WebSocket. A device
connects to ``/v1/ws`` and is sent ``{"type": "ready"}`` once it is in the
set of connections; ``POST /broadcast`` with the relay's message body
(``{"client_message_id", "message"}``) numbers the message and sends every
connection the very frame the relay would push (``{"type": "message",
"group", "seq", "epoch", "kind", "message"}``), awaiting each send in turn,
then answers ``{"seq": n}``. So the load generator and the sender treat both
servers alike, and the difference is the relay's own work: authentication,
membership, the log in SQLite, and its push path.

uvicorn runs with the settings ``townsquare serve`` gives it (the sans-I/O
``websockets`` implementation, the same frame limit, log level ``info``).
"""

from __future__ import annotations

import argparse
import json

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

#: The group id the frames name (any 32 bytes, base64url as the relay writes them).
GROUP = "YmFyZS1icm9hZGNhc3QtYmVuY2gtZ3JvdXAtMDAwMDA"


class Broadcaster:
    """
    The set of connected WebSockets and the message counter.
    """

    def __init__(self) -> None:
        self.connections: set[WebSocket] = set()
        self.seq = 0

    async def websocket(self, websocket: WebSocket) -> None:
        await websocket.accept()
        self.connections.add(websocket)
        try:
            await websocket.send_text('{"type":"ready"}')
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
        except WebSocketDisconnect:
            return
        finally:
            self.connections.discard(websocket)

    async def broadcast(self, request: Request) -> Response:
        body = await request.json()
        self.seq += 1
        text = json.dumps(
            {
                "type": "message",
                "group": GROUP,
                "seq": self.seq,
                "epoch": 1,
                "kind": "application",
                "message": body["message"],
            },
            separators=(",", ":"),
        )
        for websocket in tuple(self.connections):
            try:
                await websocket.send_text(text)
            except (WebSocketDisconnect, RuntimeError, OSError):
                self.connections.discard(websocket)
        return JSONResponse({"seq": self.seq, "epoch": 1}, status_code=201)


async def healthz(_request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def create_app() -> Starlette:
    broadcaster = Broadcaster()
    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/broadcast", broadcaster.broadcast, methods=["POST"]),
            WebSocketRoute("/v1/ws", broadcaster.websocket),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    # The settings of townsquare.cli.serve.relay_config (bench scripts do not import
    # the cli package), so that both servers run the same uvicorn the same way.
    config = uvicorn.Config(
        create_app(),
        host="127.0.0.1",
        port=args.port,
        log_level="info",
        lifespan="off",
        server_header=False,
        timeout_keep_alive=30,
        ws="websockets-sansio",
        ws_max_size=70 * 1024,
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
