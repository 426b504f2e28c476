"""
The body limit, the framework's own errors as problems, and health.
"""

from __future__ import annotations

import httpx
import pytest

from townsquare.server import Settings, create_app
from townsquare.server.errors import StorageFailure
from townsquare.server.storage import SQLiteStorage

pytestmark = pytest.mark.anyio


async def test_healthz_is_ok_when_the_store_is_open(relay):
    response = await relay.client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_healthz_is_unavailable_before_the_store_opens(tmp_path, problem):
    app = create_app(Settings(data_dir=tmp_path), storage=SQLiteStorage(tmp_path))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://relay.test"
    ) as client:
        problem(await client.get("/healthz"), 503, "unavailable")


async def test_a_body_declared_over_the_limit_is_refused_unread(relay, identity, problem, limits):
    await relay.register(identity)
    before = relay.snapshot()
    body = b"x" * (limits.max_body_bytes + 1)
    response = await relay.client.post(
        "/v1/key-packages",
        content=body,
        headers={"content-type": "application/json"},
        auth=relay.signer(identity),
    )
    problem(response, 413, "body-too-large")
    assert relay.snapshot() == before


async def test_a_streamed_body_over_the_limit_is_refused(relay, identity, problem, limits):
    await relay.register(identity)
    before = relay.snapshot()
    chunk = b"x" * 1024

    async def stream():
        for _ in range(limits.max_body_bytes // len(chunk) + 2):
            yield chunk

    # No Content-Length: the limit is found while reading.
    response = await relay.client.post(
        "/v1/accounts", content=stream(), headers={"content-type": "application/json"}
    )
    problem(response, 413, "body-too-large")
    assert relay.snapshot() == before


async def test_a_body_at_the_limit_passes_the_limit(relay, identity, problem, limits):
    await relay.register(identity)
    filler = b" " * (limits.max_body_bytes - 2)
    response = await relay.client.post(
        "/v1/key-packages",
        content=b"{" + filler + b"}",
        headers={"content-type": "application/json"},
        auth=relay.signer(identity),
    )
    assert response.status_code == 200


async def test_an_unknown_route_is_a_problem(relay, problem):
    problem(await relay.client.get("/v1/nothing-here"), 404, "not-found")


async def test_a_wrong_method_is_a_problem_with_allow(relay, problem):
    response = await relay.client.delete("/healthz")
    problem(response, 405, "method-not-allowed")
    assert response.headers["allow"] == "GET"


class FailingStorage(SQLiteStorage):
    """A real store whose readiness check fails the way it is told to."""

    def __init__(self, data_dir, failure):
        super().__init__(data_dir)
        self.failure = failure

    async def check_ready(self):
        raise self.failure


@pytest.mark.parametrize(
    ("failure", "code"),
    [
        (StorageFailure("disk I/O error"), "storage-failure"),
        (RuntimeError("a bug"), "internal-error"),
    ],
)
async def test_server_failures_are_problems_too(tmp_path, problem, failure, code):
    storage = FailingStorage(tmp_path, failure)
    app = create_app(Settings(data_dir=tmp_path), storage=storage)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
            base_url="http://relay.test",
        ) as client,
    ):
        document = problem(await client.get("/healthz"), 500, code)
    assert "a bug" not in document["detail"]
