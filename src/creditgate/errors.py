"""The exception tree. Every error a client can see is a `GatewayError`.

    GatewayError                     500 server_error
    ├── BadRequest                   400 invalid_request_error
    ├── Unauthorized                 401 authentication_error   (code invalid_api_key)
    ├── PaymentRequired              402 insufficient_credits
    ├── Forbidden                    403 permission_error
    ├── NotFound                     404 not_found_error        (code model_not_found for models)
    ├── Conflict                     409 conflict_error
    ├── PayloadTooLarge              413 request_too_large
    ├── RateLimited                  429 rate_limit_error       (Retry-After header)
    ├── UpstreamError                an upstream answered with an error or broke; carries the
    │                                upstream status so routing can decide to fail over
    ├── AllUpstreamsFailed           502 upstream_error
    │   └── AllUpstreamsTimedOut     504 timeout_error          (the last one timed out)
    ├── NoDeployment                 503 service_unavailable
    └── UpstreamTimeout              504 timeout_error

Dialects render these into their own envelopes (see `dialects/`); nothing here knows about
wire formats. Messages say what was wrong and what to do, and never carry upstream hosts
or credentials.
"""

from __future__ import annotations

from typing import ClassVar


class GatewayError(Exception):
    status: ClassVar[int] = 500
    type: ClassVar[str] = "server_error"
    default_code: ClassVar[str | None] = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.headers = headers or {}


class BadRequest(GatewayError):
    status = 400
    type = "invalid_request_error"


class Unauthorized(GatewayError):
    status = 401
    type = "authentication_error"
    default_code = "invalid_api_key"


class PaymentRequired(GatewayError):
    status = 402
    type = "insufficient_credits"
    default_code = "insufficient_credits"


class Forbidden(GatewayError):
    status = 403
    type = "permission_error"
    default_code = "forbidden"


class NotFound(GatewayError):
    status = 404
    type = "not_found_error"
    default_code = "not_found"


class Conflict(GatewayError):
    status = 409
    type = "conflict_error"
    default_code = "conflict"


class PayloadTooLarge(GatewayError):
    status = 413
    type = "request_too_large"
    default_code = "request_too_large"


class RateLimited(GatewayError):
    status = 429
    type = "rate_limit_error"
    default_code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: int, code: str | None = None) -> None:
        retry_after = max(1, int(retry_after))
        super().__init__(message, code=code, headers={"retry-after": str(retry_after)})
        self.retry_after = retry_after


class UpstreamError(GatewayError):
    """An upstream failed. `upstream_status` is the upstream's HTTP status (0 for a broken
    connection); `retryable` says whether another deployment could succeed."""

    status = 502
    type = "upstream_error"
    default_code = "upstream_error"
    RETRYABLE: ClassVar[frozenset[int]] = frozenset({0, 408, 429, 500, 502, 503, 504, 529})

    def __init__(
        self,
        message: str,
        *,
        upstream_status: int,
        kind: str = "upstream_error",
        retry_after: float | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message, param=param)
        self.upstream_status = upstream_status
        self.kind = kind
        self.retry_after = retry_after
        self.retryable = upstream_status in self.RETRYABLE
        # A client error upstream (bad request, unknown model there) is shown to the client
        # with the upstream's own status so it can fix its request.
        if upstream_status in (400, 404, 413, 422):
            self.status_override: int | None = 400 if upstream_status == 422 else upstream_status
        else:
            self.status_override = None

    @property
    def http_status(self) -> int:
        return self.status_override or self.status


class UpstreamTimeout(UpstreamError):
    status = 504
    type = "timeout_error"
    default_code = "upstream_timeout"

    def __init__(self, message: str, *, phase: str) -> None:
        super().__init__(message, upstream_status=0, kind=f"timeout_{phase}")
        self.phase = phase


class AllUpstreamsFailed(GatewayError):
    status = 502
    type = "upstream_error"
    default_code = "upstream_failed"


class AllUpstreamsTimedOut(AllUpstreamsFailed):
    """Every deployment tried failed, the last by not answering in time."""

    status = 504
    type = "timeout_error"
    default_code = "upstream_timeout"


class NoDeployment(GatewayError):
    status = 503
    type = "service_unavailable"
    default_code = "no_deployment_available"


def http_status(err: GatewayError) -> int:
    if isinstance(err, UpstreamError):
        return err.http_status
    return err.status
