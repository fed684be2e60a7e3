"""Domain errors and how they travel over gRPC.

Services raise a ServiceError; the server interceptor turns it into a gRPC status whose trailing
metadata carries a stable machine code (and Retry-After when relevant). The edge maps that back
to an HTTP status and a JSON error body.
"""

from __future__ import annotations

import grpc

ERROR_CODE_KEY = "chatpop-error-code"
RETRY_AFTER_KEY = "chatpop-retry-after"


class ServiceError(Exception):
    """An error a caller can act on: a gRPC status, a stable code and a human message."""

    status: grpc.StatusCode = grpc.StatusCode.INTERNAL
    default_code = "internal"

    def __init__(self, message: str, *, code: str | None = None, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.retry_after = retry_after

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        items: list[tuple[str, str]] = [(ERROR_CODE_KEY, self.code)]
        if self.retry_after is not None:
            items.append((RETRY_AFTER_KEY, str(self.retry_after)))
        return tuple(items)


class InvalidArgument(ServiceError):
    status = grpc.StatusCode.INVALID_ARGUMENT
    default_code = "invalid_argument"


class NotFound(ServiceError):
    status = grpc.StatusCode.NOT_FOUND
    default_code = "not_found"


class AlreadyExists(ServiceError):
    status = grpc.StatusCode.ALREADY_EXISTS
    default_code = "already_exists"


class Unauthenticated(ServiceError):
    status = grpc.StatusCode.UNAUTHENTICATED
    default_code = "unauthenticated"


class PermissionDenied(ServiceError):
    status = grpc.StatusCode.PERMISSION_DENIED
    default_code = "forbidden"


class FailedPrecondition(ServiceError):
    status = grpc.StatusCode.FAILED_PRECONDITION
    default_code = "failed_precondition"


class ResourceExhausted(ServiceError):
    status = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_code = "rate_limited"


class Unavailable(ServiceError):
    status = grpc.StatusCode.UNAVAILABLE
    default_code = "unavailable"


def error_details(error: grpc.aio.AioRpcError) -> tuple[str, int | None]:
    """The machine code and Retry-After seconds a ServiceError attached to a failed call."""
    code = ""
    retry_after: int | None = None
    for key, value in error.trailing_metadata() or ():
        if key == ERROR_CODE_KEY:
            code = str(value)
        elif key == RETRY_AFTER_KEY:
            retry_after = int(value)
    return code, retry_after
