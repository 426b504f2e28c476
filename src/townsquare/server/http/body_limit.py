"""
The request-body limit: refuse a body over the limit before the application reads it.

An ASGI middleware, outside the routing, that reads the whole body (at most
the limit) and replays it to the application: a ``Content-Length`` over the
limit is refused without reading anything, and a body that streams past the
limit is refused as soon as it does. Either way the answer is 413
``body-too-large`` and the application never runs, so the store cannot change.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from townsquare.server.errors import BodyTooLarge
from townsquare.server.http.problems import problem_response

__all__ = ["BodyLimitMiddleware"]


class BodyLimitMiddleware:
    """
    Buffers each HTTP request body up to a limit; answers 413 past it.
    """

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        """
        :param app: the application to call with the buffered body.
        :param max_body_bytes: the largest body accepted.
        """
        self._app = app
        self._limit = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """
        Serve one ASGI connection scope.
        """
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self._limit:
            await self._refuse(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._limit:
                await self._refuse(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            # After the body, only a disconnect can arrive.
            return await receive()

        await self._app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem_response(
            BodyTooLarge(f"the request body is larger than {self._limit} bytes")
        )
        await response(scope, receive, send)
