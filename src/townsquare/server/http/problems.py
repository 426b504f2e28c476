"""
The one place where errors become responses: RFC 9457 ``application/problem+json``.

Every error response of the relay is built by :func:`problem_response`, from a
:class:`~townsquare.server.errors.ServerError` or, for the framework's own
errors (unknown route, wrong method, a body that is not JSON), from the
:class:`ServerError` that stands for it. A problem document has the RFC 9457
members ``type``, ``title``, ``status`` and ``detail`` and the extension
member ``code`` (the last segment of ``type``, for clients that key on it),
plus the error's own extension members (:meth:`ServerError.extensions`:
``retry_after`` of ``rate-limited``, the winner of ``commit-conflict``...);
``rate-limited`` also sets the ``Retry-After`` header.

:func:`documented_errors` writes the same mapping into ``/openapi.json``: for
each status an operation can answer, the exact problem types it may carry.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from townsquare.server.errors import (
    BodyTooLarge,
    FieldTooLarge,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    RateLimited,
    ServerError,
    TooManyItems,
)

__all__ = [
    "PROBLEM_MEDIA_TYPE",
    "documented_errors",
    "install_problem_handlers",
    "problem_document",
    "problem_response",
]

#: The media type of every error response (RFC 9457 §6.1).
PROBLEM_MEDIA_TYPE = "application/problem+json"

_log = logging.getLogger("townsquare.server")

# The framework's own HTTP errors, by status, as the relay's errors.
_FRAMEWORK_ERRORS: dict[int, type[ServerError]] = {
    400: InvalidRequest,
    404: NotFound,
    405: MethodNotAllowed,
    413: BodyTooLarge,
}


class ProblemResponse(JSONResponse):
    """
    A JSON response with the problem media type.
    """

    media_type = PROBLEM_MEDIA_TYPE


def problem_document(error: ServerError) -> dict[str, object]:
    """
    :returns: the RFC 9457 problem document of ``error``.
    """
    document: dict[str, object] = {
        "type": error.problem_type(),
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
        "code": error.code,
    }
    for name, value in error.extensions().items():
        document.setdefault(name, value)
    return document


def problem_response(error: ServerError, *, headers: Mapping[str, str] | None = None) -> Response:
    """
    Build the response for an error.

    :param error: the error.
    :param headers: headers to add (``Allow`` on a 405).
    :returns: an ``application/problem+json`` response with the error's status.
    """
    extra = dict(headers or {})
    if isinstance(error, RateLimited):
        extra["Retry-After"] = str(error.retry_after)
    return ProblemResponse(problem_document(error), status_code=error.status, headers=extra)


def _from_validation_error(exc: RequestValidationError) -> ServerError:
    problems = exc.errors()
    for problem in problems:
        where = ".".join(str(part) for part in problem.get("loc", ()))
        kind = problem.get("type")
        limit = problem.get("ctx", {}).get("max_length")
        if kind == "too_long":
            return TooManyItems(f"{where} has more than {limit} items")
        if kind == "string_too_long":
            return FieldTooLarge(f"{where} is longer than {limit} characters")
    details = "; ".join(
        f"{'.'.join(str(part) for part in p.get('loc', ()))}: {p.get('msg', 'invalid')}"
        for p in problems[:5]
    )
    return InvalidRequest(details or "the request does not match the schema")


def install_problem_handlers(app: FastAPI) -> None:
    """
    Make every error the application raises, and every framework error, a problem response.

    :param app: the application.
    """

    async def on_server_error(request: Request, exc: Exception) -> Response:
        if not isinstance(exc, ServerError):  # pragma: no cover - registered for ServerError
            raise exc
        if exc.status >= 500:
            _log.error("%s %s: %s: %s", request.method, request.url.path, exc.code, exc.detail)
        return problem_response(exc)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        if not isinstance(exc, RequestValidationError):  # pragma: no cover - as above
            raise exc
        return problem_response(_from_validation_error(exc))

    async def on_http_error(request: Request, exc: Exception) -> Response:
        if not isinstance(exc, StarletteHTTPException):  # pragma: no cover - as above
            raise exc
        error_class = _FRAMEWORK_ERRORS.get(exc.status_code)
        if error_class is None:
            # A status the relay never raises itself: RFC 9457 §4.2's "about:blank".
            return ProblemResponse(
                {"type": "about:blank", "title": str(exc.detail), "status": exc.status_code},
                status_code=exc.status_code,
                headers=exc.headers,
            )
        return problem_response(error_class(str(exc.detail)), headers=exc.headers)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        # Starlette calls this from its outermost middleware and re-raises the
        # exception afterwards, so the traceback is still logged by the server.
        return problem_response(ServerError("the relay failed; the failure is logged"))

    app.add_exception_handler(ServerError, on_server_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)


def documented_errors(
    *errors: type[ServerError] | Iterable[type[ServerError]],
) -> dict[int | str, dict[str, Any]]:
    """
    Describe, for ``responses=`` of a route, the problem types it may answer with.

    :param errors: error classes, or iterables of them; each becomes one allowed
        ``type`` (and ``code``) under its status.
    :returns: a FastAPI ``responses`` mapping, one entry per status.
    """
    flat: list[type[ServerError]] = []
    for item in errors:
        if isinstance(item, type):
            flat.append(item)
        else:
            flat.extend(item)
    by_status: dict[int, list[type[ServerError]]] = {}
    for error in flat:
        classes = by_status.setdefault(error.status, [])
        if error not in classes:
            classes.append(error)
    return {
        status: _problem_response_schema(status, by_status[status]) for status in sorted(by_status)
    }


def _problem_response_schema(status: int, classes: Sequence[type[ServerError]]) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "type": {"type": "string", "enum": [cls.problem_type() for cls in classes]},
        "title": {"type": "string"},
        "status": {"type": "integer", "const": status},
        "detail": {"type": "string"},
        "code": {"type": "string", "enum": [cls.code for cls in classes]},
    }
    required = ["type", "title", "status", "detail", "code"]
    for cls in classes:
        for name, member_schema in cls.extension_schema.items():
            properties.setdefault(name, dict(member_schema))
            # A member is required when every problem type of this status carries it.
            if name not in required and all(name in c.extension_schema for c in classes):
                required.append(name)
    response: dict[str, Any] = {
        "description": "; ".join(f"`{cls.code}`: {cls.title}" for cls in classes),
        "content": {
            PROBLEM_MEDIA_TYPE: {
                "schema": {
                    "type": "object",
                    "title": f"Problem{status}",
                    "properties": properties,
                    "required": required,
                }
            }
        },
    }
    if any(issubclass(cls, RateLimited) for cls in classes):
        response["headers"] = {
            "Retry-After": {
                "description": "Seconds until the quota refills (RFC 9110 §10.2.3).",
                "schema": {"type": "integer", "minimum": 1},
            }
        }
    return response
