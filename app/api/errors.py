"""Exception handlers: every failure leaves as `{"error": {message, type, param, code}}`.

One place maps everything a request can raise into the OpenAI error shape:
- `GatewayError` subclasses render themselves (status, headers such as `x-should-retry`).
- FastAPI's `RequestValidationError` (admin bodies, query strings) becomes a 400 naming the
  first offending field.
- Starlette's HTTP exceptions (unknown route, wrong method) keep their status.
- Database outages become 503 `SERVICE_UNAVAILABLE` with `Retry-After` (`app.db.faults` has
  already turned them into `DatabaseUnavailable` on the engine; the pool's checkout timeout
  arrives here as it is). A value the database refused (a constraint or data error) is a 400:
  validation should have caught it before any SQL ran, so it is also logged as an error.
- Anything else is a bug: logged with its traceback, answered with a bare 500, never leaked.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Final

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from app.db.faults import DatabaseUnavailable, is_outage, sqlstate
from app.errors import (
    GatewayError,
    InternalError,
    InvalidParameter,
    InvalidRequest,
    NotFound,
)
from app.observability.facts import note_error
from app.observability.metrics import DATABASE_ERRORS

logger = logging.getLogger(__name__)


def error_response(error: GatewayError) -> Response:
    note_error(error.code)  # for the access line and the request metrics
    return Response(
        orjson.dumps(error.body()),
        status_code=error.status,
        headers=error.headers(),
        media_type="application/json",
    )


def _validation_error(exc: RequestValidationError) -> GatewayError:
    errors = exc.errors()
    if not errors:
        return InvalidRequest("The request is invalid.")
    first = errors[0]
    location = [str(part) for part in first.get("loc", ()) if part not in ("body", "query")]
    param = ".".join(location) or None
    if first.get("type") == "json_invalid":
        return InvalidRequest("The request body is not valid JSON.")
    message = str(first.get("msg", "invalid value"))
    return InvalidParameter(f"Invalid value for '{param}': {message}", param=param)


class _StarletteError(GatewayError):
    """A routing-level HTTP error (405, ...), keeping the headers Starlette gave it."""

    extra_headers: dict[str, str]

    def headers(self) -> dict[str, str]:
        return {**super().headers(), **self.extra_headers}


def _http_error(exc: StarletteHTTPException) -> GatewayError:
    if exc.status_code == 404:
        return NotFound("Not found: no route matches this path.", code="NOT_FOUND")
    error = _StarletteError(str(exc.detail), code=f"HTTP_{exc.status_code}")
    error.extra_headers = dict(exc.headers or {})  # 405 carries Allow
    error.status = exc.status_code  # type: ignore[misc]  # instance override of the class default
    error.type = "invalid_request_error" if exc.status_code < 500 else "server_error"  # type: ignore[misc]
    return error


async def on_gateway_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    return error_response(exc)


async def on_validation_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return error_response(_validation_error(exc))


async def on_http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    return error_response(_http_error(exc))


async def on_database_error(request: Request, exc: Exception) -> Response:
    if is_outage(exc):
        logger.error("database unavailable: %s", type(exc).__name__)
        DATABASE_ERRORS.inc()
        return error_response(DatabaseUnavailable())
    code = sqlstate(exc) or ""
    if isinstance(exc, IntegrityError | DataError) or code[:2] in ("22", "23"):
        logger.error("the database refused a value validation let through", exc_info=exc)
        return error_response(InvalidRequest("The request has a value the gateway cannot store."))
    return await on_unexpected(request, exc)


async def on_unexpected(_: Request, exc: Exception) -> Response:
    logger.exception("unhandled error", exc_info=exc)
    return error_response(InternalError("The gateway hit an internal error."))


Handler = Callable[[Request, Exception], Awaitable[Response]]

#: what Starlette's ExceptionMiddleware answers, by exception class (the most derived class in
#: an exception's MRO wins); anything else reaches `on_unexpected` in the outer error middleware
HANDLERS: Final[dict[type[Exception], Handler]] = {
    GatewayError: on_gateway_error,
    RequestValidationError: on_validation_error,
    StarletteHTTPException: on_http_error,
    DBAPIError: on_database_error,
    PoolTimeoutError: on_database_error,
}


async def handled_response(request: Request, exc: Exception) -> Response | None:
    """The answer `HANDLERS` give `exc`, looked up as Starlette does (for routes served
    outside its router, `app.api.hot_routes`); None for what only the outer middleware
    handles."""
    for cls in type(exc).__mro__:
        handler = HANDLERS.get(cls)
        if handler is not None:
            return await handler(request, exc)
    return None


def register_error_handlers(app: FastAPI) -> None:
    for exc_class, handler in HANDLERS.items():
        app.add_exception_handler(exc_class, handler)
    app.add_exception_handler(Exception, on_unexpected)
