"""
The request-body limit: refuse a body over the limit before the application reads it.

An ASGI middleware, outside the routing, that reads the whole body (at most
the limit) and replays it to the application: a ``Content-Length`` over the
limit is refused without reading anything, and a body that streams past the
limit is refused as soon as it does. Either way the answer is 413
``body-too-large`` and the application never runs, so the store cannot change.

A route whose body is larger by nature (an attachment upload) has a limit of
its own, a :class:`BodyLimit` keyed by its method and path, with its own
problem type (``attachment-too-large``); it is enforced the same way.
Townsquare choice: such a body is still held in memory, at most its limit,
because the request signature covers the hash of the exact body and the
authenticator takes the body's bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from townsquare.server.errors import BodyTooLarge, ContentTooLarge
from townsquare.server.http.problems import problem_response

__all__ = ["BodyLimit", "BodyLimitMiddleware"]


@dataclass(frozen=True, slots=True)
class BodyLimit:
    """
    The body limit of one route: its largest body and the error past it.
    """

    max_bytes: int
    #: The 413 problem answered past the limit.
    error: type[ContentTooLarge] = BodyTooLarge
    #: What the body is, for the problem's detail.
    what: str = "request body"


class BodyLimitMiddleware:
    """
    Buffers each HTTP request body up to a limit; answers 413 past it.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        routes: Mapping[tuple[str, str], BodyLimit] | None = None,
    ) -> None:
        """
        :param app: the application to call with the buffered body.
        :param max_body_bytes: the largest body accepted.
        :param routes: other limits, by (method, path) exactly as requested.
        """
        self._app = app
        self._default = BodyLimit(max_body_bytes)
        self._routes = dict(routes or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """
        Serve one ASGI connection scope.
        """
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        limit = self._routes.get((scope["method"], scope["path"]), self._default)
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit.max_bytes:
            await self._refuse(limit, scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit.max_bytes:
                await self._refuse(limit, scope, receive, send)
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

    @staticmethod
    async def _refuse(limit: BodyLimit, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem_response(
            limit.error(f"the {limit.what} is larger than {limit.max_bytes} bytes")
        )
        await response(scope, receive, send)
