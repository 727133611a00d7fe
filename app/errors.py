"""One error hierarchy for the whole gateway, rendered once into the OpenAI error shape.

Every failure a client can see is a `GatewayError` carrying its HTTP status, machine-readable
`code`, OpenAI-style `type`, a human `message` and the offending `param` (or None). The
exception handlers in `app.api.errors` turn them into

    {"error": {"message": ..., "type": ..., "param": ..., "code": ...}}

with `x-should-retry: false` on every 4xx a retry cannot fix (all but 408/409/429) and
`Retry-After` where the error carries one; every 503 carries one (`UNAVAILABLE_RETRY_AFTER_S`
when the error has no better figure, e.g. a provider that is down without saying for how
long). Adapters translate provider failures into the `Upstream*` / `ContentBlocked` classes at
their own boundary, chaining the cause with `raise ... from exc`; nothing else should leak out
of an adapter.
"""

from __future__ import annotations

from typing import Any, ClassVar

#: `Retry-After` of a 503 that has no figure of its own: long enough for a restarted provider
#: or database to come back, short enough that a client does not give up on us
UNAVAILABLE_RETRY_AFTER_S = 5.0


class GatewayError(Exception):
    status: ClassVar[int] = 500
    type: ClassVar[str] = "server_error"
    default_code: ClassVar[str] = "INTERNAL_ERROR"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.param = param
        self.retry_after = retry_after

    @property
    def should_retry(self) -> bool:
        return not (400 <= self.status < 500) or self.status in (408, 409, 429)

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        if not self.should_retry:
            headers["x-should-retry"] = "false"
        retry_after = self.retry_after
        if retry_after is None and self.status == 503:
            retry_after = UNAVAILABLE_RETRY_AFTER_S
        if retry_after is not None:
            headers["retry-after"] = str(max(1, round(retry_after)))
        return headers


# 400 -------------------------------------------------------------------------------------
class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"
    default_code = "INVALID_REQUEST"


class InvalidParameter(InvalidRequest):
    default_code = "INVALID_PARAMETER"


class MissingParameter(InvalidRequest):
    default_code = "MISSING_PARAMETER"


class PromptTooLong(InvalidRequest):
    default_code = "PROMPT_TOO_LONG"


class ModelNotFound(InvalidRequest):
    default_code = "MODEL_NOT_FOUND"


class ContentBlocked(InvalidRequest):
    default_code = "CONTENT_BLOCKED"


# 401 / 402 / 403 / 404 / 409 / 413 / 429 -------------------------------------------------
class AuthenticationError(GatewayError):
    status = 401
    type = "authentication_error"
    default_code = "INVALID_API_KEY"


class InsufficientBalance(GatewayError):
    status = 402
    type = "insufficient_quota"
    default_code = "INSUFFICIENT_BALANCE"


class BudgetExceeded(GatewayError):
    """The key's spend limit for a period would be exceeded (SPEC 9)."""

    status = 402
    type = "insufficient_quota"
    default_code = "BUDGET_EXCEEDED"


class PermissionDenied(GatewayError):
    """403: KEY_REVOKED, KEY_EXPIRED, MODEL_NOT_ALLOWED, ACCOUNT_SUSPENDED (pass `code`)."""

    status = 403
    type = "permission_error"
    default_code = "PERMISSION_DENIED"


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    default_code = "NOT_FOUND"


class Conflict(GatewayError):
    status = 409
    type = "invalid_request_error"
    default_code = "CONFLICT"


class PayloadTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    default_code = "PAYLOAD_TOO_LARGE"


class RateLimited(GatewayError):
    status = 429
    type = "rate_limit_error"
    default_code = "RATE_LIMITED"


# 5xx -------------------------------------------------------------------------------------
class UpstreamError(GatewayError):
    """The provider failed or answered something we cannot use (502)."""

    status = 502
    type = "upstream_error"
    default_code = "UPSTREAM_ERROR"
    #: whether the next route of the model may be tried
    retryable: bool = True


class UpstreamUnavailable(UpstreamError):
    status = 503
    default_code = "UPSTREAM_UNAVAILABLE"


class UpstreamTimeout(UpstreamError):
    status = 504
    default_code = "UPSTREAM_TIMEOUT"


class ServiceUnavailable(GatewayError):
    """Our own dependency (the database) is down (503)."""

    status = 503
    type = "server_error"
    default_code = "SERVICE_UNAVAILABLE"


class InternalError(GatewayError):
    status = 500
    type = "server_error"
    default_code = "INTERNAL_ERROR"
