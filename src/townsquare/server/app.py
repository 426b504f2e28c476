"""
The relay's ASGI application: FastAPI routes over the directory and the store.

:func:`create_app` wires the parts explicitly (no global state): a store, a
clock, the fan-out, the directory, the delivery service, the authenticator, a
router per resource, the WebSocket endpoint, the body limit and the problem
handlers. The lifespan opens the store (applying
migrations) before the first request and runs housekeeping until shutdown:
each round (:func:`housekeep`) deletes expired nonces and quota windows, and
applies retention (log entries every member device has acknowledged, and log
entries, Welcomes and attachments older than ``retention_seconds``).

``/openapi.json`` describes every operation exactly, including each status's
problem types; FastAPI's generic 422 validation response is replaced by the
relay's own (400 ``invalid-request``, 413 for limits).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.types import Receive, Scope, Send

from townsquare import __version__
from townsquare.server.auth import Authenticator
from townsquare.server.clock import Clock, SystemClock
from townsquare.server.config import Limits, Settings
from townsquare.server.delivery import CommitPolicy, DeliveryService
from townsquare.server.directory import Directory
from townsquare.server.errors import ServerError
from townsquare.server.fanout import Fanout, InMemoryFanout
from townsquare.server.http import (
    accounts,
    attachments,
    groups,
    health,
    join_requests,
    key_packages,
    welcomes,
)
from townsquare.server.http.body_limit import BodyLimitMiddleware
from townsquare.server.http.problems import install_problem_handlers
from townsquare.server.http.signing import Signatures
from townsquare.server.rate_limits import DeviceRateLimits
from townsquare.server.storage import SQLiteStorage, Storage
from townsquare.server.websocket import WEBSOCKET_PATH, PushEndpoint

__all__ = ["RelayApp", "create_app", "housekeep"]

_log = logging.getLogger("townsquare.server")


async def housekeep(storage: Storage, now: int, limits: Limits) -> int:
    """
    Run one round of housekeeping: expired nonces and quota windows, then retention.

    :param storage: the store.
    :param now: the current time.
    :param limits: ``retention_seconds``.
    :returns: how many records were deleted.
    :raises ServerError: if the store fails (a later round retries).
    """
    deleted = await storage.purge_expired(now)
    report = await storage.apply_retention(now, retention_seconds=limits.retention_seconds)
    return deleted + report.total


async def _housekeeping(storage: Storage, clock: Clock, limits: Limits) -> None:
    while True:
        await asyncio.sleep(limits.housekeeping_interval_seconds)
        try:
            deleted = await housekeep(storage, clock.now(), limits)
        except ServerError as exc:
            # A failed purge only delays deletion; the next round retries.
            _log.warning("housekeeping failed: %s: %s", exc.code, exc.detail)
        else:
            _log.debug("housekeeping deleted %d expired records", deleted)


class RelayApp(FastAPI):
    """
    The relay's FastAPI application, which hands the push channel's connections to its endpoint.

    ``/v1/ws`` is dispatched here, before the middleware stack and the router:
    each of their layers would stay on every idle connection's stack and wrap
    every notice sent to it, and the push endpoint uses none of them (it
    authenticates, limits and answers errors itself). Measured with 2,000 idle
    connections: about 4 KiB less per connection (``docs/benchmarks.md``).
    """

    def __init__(self, push: PushEndpoint, **kwargs: Any) -> None:
        """
        :param push: the endpoint of ``/v1/ws``.
        :param kwargs: FastAPI's own parameters.
        """
        super().__init__(**kwargs)
        self.push = push

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """
        Serve one ASGI connection.
        """
        if scope["type"] == "websocket" and scope["path"] == WEBSOCKET_PATH:
            await self.push(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(
    settings: Settings,
    *,
    storage: Storage | None = None,
    clock: Clock | None = None,
    fanout: Fanout | None = None,
    policy: CommitPolicy | None = None,
) -> RelayApp:
    """
    Build the relay application.

    :param settings: the data folder and limits.
    :param storage: the store (default: SQLite in ``settings.data_dir``); the app opens it
        at startup and closes it at shutdown.
    :param clock: the wall clock (default: the system's).
    :param fanout: where notices of appended messages go (default: in this process only).
    :param policy: who may change a group (default: any member; the admin hook).
    :returns: the ASGI application.
    """
    store: Storage = storage if storage is not None else SQLiteStorage(settings.data_dir)
    wall_clock: Clock = clock if clock is not None else SystemClock()
    notices: Fanout = fanout if fanout is not None else InMemoryFanout()
    limits = settings.limits
    directory = Directory(store, wall_clock, limits)
    delivery = DeliveryService(store, wall_clock, notices, limits, policy=policy)
    authenticator = Authenticator(store, wall_clock, clock_skew_seconds=limits.clock_skew_seconds)
    signatures = Signatures(authenticator)
    rate_limits = DeviceRateLimits(store, wall_clock, limits)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await store.open()
        try:
            async with asyncio.TaskGroup() as tasks:
                housekeeping = tasks.create_task(_housekeeping(store, wall_clock, limits))
                try:
                    yield
                finally:
                    housekeeping.cancel()
        finally:
            await store.close()

    push = PushEndpoint(
        authenticator=authenticator, delivery=delivery, fanout=notices, limits=limits
    )
    app = RelayApp(
        push,
        title="Townsquare relay",
        version=__version__,
        description="The HTTP API of a Townsquare relay; see docs/protocol.md.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.include_router(health.router(store))
    app.include_router(accounts.router(directory, signatures))
    app.include_router(key_packages.router(directory, signatures))
    app.include_router(groups.router(delivery, signatures, rate_limits=rate_limits))
    app.include_router(attachments.router(store, wall_clock, limits, rate_limits, signatures))
    app.include_router(join_requests.router(delivery, signatures))
    app.include_router(welcomes.router(delivery, signatures))
    install_problem_handlers(app)
    app.add_middleware(
        BodyLimitMiddleware,
        max_body_bytes=limits.max_body_bytes,
        routes=attachments.body_limit(limits),
    )

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _without_generic_validation_errors(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    description=app.description,
                    routes=app.routes,
                )
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _without_generic_validation_errors(schema: dict[str, Any]) -> dict[str, Any]:
    # FastAPI adds a 422 "HTTPValidationError" response to every operation with
    # parameters; the relay answers those cases with its own documented problems.
    generic = "#/components/schemas/HTTPValidationError"
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            response = operation.get("responses", {}).get("422")
            if response is None:
                continue
            content = response.get("content", {}).get("application/json", {})
            if content.get("schema", {}).get("$ref") == generic:
                del operation["responses"]["422"]
    schemas = schema.get("components", {}).get("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    return schema
