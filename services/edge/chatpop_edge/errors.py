"""Every error the edge returns: `{"error": {"code", "message"}}` with a fitting HTTP status.

gRPC failures from the services are mapped by status; the machine code a service attached
(chatpop-error-code) is kept, so clients see the same codes whatever hop produced them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from chatpop_common.errors import ServiceError, error_details

log = logging.getLogger(__name__)


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. `not_found`, `rate_limited`.")
    message: str = Field(description="What went wrong, for people.")
    retry_after: int | None = Field(
        default=None, description="Seconds to wait before retrying (rate limits and `service_unavailable`)."
    )


class ErrorResponse(BaseModel):
    error: ErrorDetail


@dataclass(frozen=True, slots=True)
class MappedError:
    status: int
    code: str
    message: str
    retry_after: int | None = None
    retryable: bool = False


class ApiError(Exception):
    """An error raised by the edge itself, rendered like every other error."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        retry_after: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.headers = headers or {}


# gRPC status → (HTTP status, code used when the service attached none, retryable by the client).
_GRPC_TO_HTTP: dict[grpc.StatusCode, tuple[int, str, bool]] = {
    grpc.StatusCode.INVALID_ARGUMENT: (422, "invalid_argument", False),
    grpc.StatusCode.OUT_OF_RANGE: (422, "out_of_range", False),
    grpc.StatusCode.NOT_FOUND: (404, "not_found", False),
    grpc.StatusCode.ALREADY_EXISTS: (409, "already_exists", False),
    grpc.StatusCode.UNAUTHENTICATED: (401, "unauthenticated", False),
    grpc.StatusCode.PERMISSION_DENIED: (403, "forbidden", False),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (429, "rate_limited", True),
    grpc.StatusCode.FAILED_PRECONDITION: (409, "failed_precondition", False),
    grpc.StatusCode.ABORTED: (409, "conflict", True),
}
_UNAVAILABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
_DEFAULT_MESSAGES = {
    401: "Please sign in again.",
    403: "You may not do this.",
    404: "Not found.",
    409: "That conflicts with the current state.",
    422: "The request is not valid.",
    429: "Too many requests. Please slow down.",
}


def map_rpc_error(error: grpc.aio.AioRpcError) -> MappedError:
    """The HTTP status, code and message a failed service call becomes."""
    status = error.code()
    if status in _UNAVAILABLE:
        # A restarting service, a datastore failover, a deadline hit while one was away: all retryable.
        _code, retry_after = error_details(error)
        return MappedError(
            503,
            "service_unavailable",
            "ChatPop is briefly unavailable. Please try again.",
            retry_after if retry_after is not None else 1,
            True,
        )
    mapped = _GRPC_TO_HTTP.get(status)
    if mapped is None:
        # INTERNAL, UNKNOWN, UNIMPLEMENTED, DATA_LOSS: never pass internals on.
        return MappedError(500, "internal", "Something went wrong on our side.")
    http_status, default_code, retryable = mapped
    code, retry_after = error_details(error)
    message = (error.details() or "").strip() or _DEFAULT_MESSAGES.get(http_status, "The request failed.")
    if http_status == 429 and retry_after is None:
        retry_after = 1
    return MappedError(http_status, code or default_code, message, retry_after, retryable)


def map_service_error(error: ServiceError) -> MappedError:
    """Errors raised locally by shared code (token checks) look like the same error from a service."""
    http_status, _default, retryable = _GRPC_TO_HTTP.get(error.status, (500, "internal", False))
    if http_status == 500:
        return MappedError(500, "internal", "Something went wrong on our side.")
    return MappedError(http_status, error.code, error.message, error.retry_after, retryable)


def error_body(code: str, message: str, retry_after: int | None = None) -> dict[str, Any]:
    detail: dict[str, Any] = {"code": code, "message": message}
    if retry_after is not None:
        detail["retry_after"] = retry_after
    return {"error": detail}


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    retry_after: int | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    all_headers = dict(headers or {})
    if retry_after is not None:
        all_headers["Retry-After"] = str(retry_after)
    if status == 401:
        all_headers.setdefault("WWW-Authenticate", "Bearer")
    return JSONResponse(error_body(code, message, retry_after), status_code=status, headers=all_headers)


def _mapped_response(mapped: MappedError) -> JSONResponse:
    return error_response(mapped.status, mapped.code, mapped.message, retry_after=mapped.retry_after)


def _field_name(loc: tuple[Any, ...]) -> str:
    parts = [str(part) for part in loc]
    if parts and parts[0] == "body":
        parts = parts[1:]
    return ".".join(parts) or "body"


def validation_message(errors: list[Any]) -> tuple[int, str, str]:
    """(status, code, message) for request validation errors, naming the first offending field."""
    if any(error.get("type") == "json_invalid" for error in errors):
        return 400, "malformed_json", "The request body is not valid JSON."
    if not errors:
        return 422, "invalid_request", "The request is not valid."
    media = next((error for error in errors if error.get("type") == "media_reference_invalid"), None)
    if media is not None:
        # A link or an inline object where a message takes an uploaded media's id.
        return 422, "media_reference_invalid", str(media.get("msg", ""))
    first = errors[0]
    if first.get("type") == "text_required":
        return 422, "invalid_request", str(first.get("msg", ""))
    field = _field_name(tuple(first.get("loc", ())))
    message = str(first.get("msg", "is not valid"))
    return 422, "invalid_request", f"{field}: {message}"


async def _api_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, retry_after=exc.retry_after, headers=exc.headers)


async def _rpc_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, grpc.aio.AioRpcError)
    mapped = map_rpc_error(exc)
    if mapped.status >= 500:
        log.warning(
            "service call failed",
            extra={"path": request.url.path, "grpc_code": exc.code().name, "details": exc.details()},
        )
    return _mapped_response(mapped)


async def _service_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    return _mapped_response(map_service_error(exc))


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    status, code, message = validation_message(list(exc.errors()))
    return error_response(status, code, message)


_HTTP_CODES = {
    400: ("bad_request", "The request is not valid."),
    404: ("not_found", "There is nothing at this address."),
    405: ("method_not_allowed", "This method is not allowed here."),
    413: ("payload_too_large", "The request body is too large."),
}


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    web = getattr(request.app.state, "web", None)
    if exc.status_code == 404 and web is not None:
        page: Response | None = await web.missing(request)
        if page is not None:
            return page
    code, message = _HTTP_CODES.get(exc.status_code, (f"http_{exc.status_code}", "The request failed."))
    return error_response(exc.status_code, code, message, headers=dict(exc.headers or {}))


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(grpc.aio.AioRpcError, _rpc_error)
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)


_DESCRIPTIONS = {
    400: "Malformed JSON or request",
    401: "Missing, invalid or expired token",
    403: "Not allowed (e.g. `wrong_room`: the room token is for another room)",
    404: "Not found",
    409: "Conflict with the current state",
    413: "Request body too large",
    422: "Invalid request (`invalid_request` names the field) or rejected by the service",
    429: "Rate limited; see the Retry-After header",
    500: "Unexpected error",
    503: "A backing service or its datastore is briefly unavailable (`service_unavailable`); retry after "
    "the Retry-After header's seconds",
}

COMMON_ERRORS = (400, 413, 422, 500, 503)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries documenting the error body for each status."""
    return {
        status: {"model": ErrorResponse, "description": _DESCRIPTIONS.get(status, "Error")}
        for status in sorted({*COMMON_ERRORS, *statuses})
    }
