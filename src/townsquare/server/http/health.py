"""
``GET /healthz``: whether the relay can serve requests.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict

from townsquare.server.errors import StorageFailure, Unavailable
from townsquare.server.http.problems import documented_errors
from townsquare.server.storage import Storage

__all__ = ["Health", "router"]


class Health(BaseModel):
    """
    The answer of a relay that is ready.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    status: Literal["ok"]


def router(storage: Storage) -> APIRouter:
    """
    Build the health route.

    :param storage: the store whose readiness is the relay's.
    :returns: the router.
    """
    routes = APIRouter(tags=["health"])

    @routes.get(
        "/healthz",
        response_model=Health,
        summary="Is the relay ready?",
        description="200 once the store is open and answers queries; unsigned.",
        responses=documented_errors(StorageFailure, Unavailable),
        operation_id="health",
    )
    async def health() -> Health:
        await storage.check_ready()
        return Health(status="ok")

    return routes
