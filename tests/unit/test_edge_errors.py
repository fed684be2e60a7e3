"""How gRPC failures from the services become HTTP errors and WebSocket error frames."""

from __future__ import annotations

import json

import grpc
import pytest

from chatpop_common.errors import ERROR_CODE_KEY, RETRY_AFTER_KEY, PermissionDenied, Unauthenticated
from chatpop_edge.errors import map_rpc_error, map_service_error, validation_message
from chatpop_edge.realtime.frames import error_frame


def rpc_error(status: grpc.StatusCode, details: str = "", *trailing: tuple[str, str]) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        status, grpc.aio.Metadata(), grpc.aio.Metadata(*trailing), details=details, debug_error_string="debug"
    )


@pytest.mark.parametrize(
    ("status", "http_status", "default_code"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, 422, "invalid_argument"),
        (grpc.StatusCode.NOT_FOUND, 404, "not_found"),
        (grpc.StatusCode.ALREADY_EXISTS, 409, "already_exists"),
        (grpc.StatusCode.UNAUTHENTICATED, 401, "unauthenticated"),
        (grpc.StatusCode.PERMISSION_DENIED, 403, "forbidden"),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 429, "rate_limited"),
        (grpc.StatusCode.FAILED_PRECONDITION, 409, "failed_precondition"),
    ],
)
def test_status_maps_to_http_and_keeps_the_service_code(
    status: grpc.StatusCode, http_status: int, default_code: str
) -> None:
    mapped = map_rpc_error(rpc_error(status, "what happened", (ERROR_CODE_KEY, "specific_code")))
    assert (mapped.status, mapped.code, mapped.message) == (http_status, "specific_code", "what happened")

    bare = map_rpc_error(rpc_error(status))
    assert bare.status == http_status
    assert bare.code == default_code
    assert bare.message


def test_rate_limits_carry_retry_after() -> None:
    mapped = map_rpc_error(
        rpc_error(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "slow down",
            (ERROR_CODE_KEY, "rate_limited"),
            (RETRY_AFTER_KEY, "12"),
        )
    )
    assert (mapped.status, mapped.retry_after, mapped.retryable) == (429, 12, True)
    # A limit without a hint still tells the client to wait a little.
    assert map_rpc_error(rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED)).retry_after == 1


@pytest.mark.parametrize(
    "status", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED]
)
def test_unavailable_is_503_without_transport_details(status: grpc.StatusCode) -> None:
    mapped = map_rpc_error(rpc_error(status, "failed to connect to all addresses; ipv4:10.0.0.7:7102"))
    assert (mapped.status, mapped.code, mapped.retryable) == (503, "service_unavailable", True)
    assert "10.0.0.7" not in mapped.message


@pytest.mark.parametrize(
    "status", [grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.UNIMPLEMENTED]
)
def test_unexpected_statuses_are_500_internal_without_details(status: grpc.StatusCode) -> None:
    mapped = map_rpc_error(rpc_error(status, "Traceback: KeyError in store.py", (ERROR_CODE_KEY, "internal")))
    assert (mapped.status, mapped.code, mapped.message) == (
        500,
        "internal",
        "Something went wrong on our side.",
    )


def test_local_token_errors_map_like_service_errors() -> None:
    assert map_service_error(PermissionDenied("other room", code="wrong_room")).status == 403
    expired = map_service_error(Unauthenticated("the token has expired", code="token_expired"))
    assert (expired.status, expired.code) == (401, "token_expired")


def test_validation_messages_name_the_field() -> None:
    errors = [{"type": "missing", "loc": ("body", "username"), "msg": "Field required"}]
    assert validation_message(errors) == (422, "invalid_request", "username: Field required")
    query = [{"type": "greater_than_equal", "loc": ("query", "limit"), "msg": "Input should be >= 1"}]
    assert validation_message(query)[2] == "query.limit: Input should be >= 1"
    malformed = [{"type": "json_invalid", "loc": ("body", 7), "msg": "JSON decode error"}]
    assert validation_message(malformed)[:2] == (400, "malformed_json")


@pytest.mark.parametrize(
    "waits",
    [{}, {"retry_after": 3}, {"retry_after_ms": 200}, {"retry_after": 1, "retry_after_ms": 200}],
)
@pytest.mark.parametrize("client_msg_id", ["c-1", 'quote " and \\ backslash', "ünïcødé ✓", ""])
def test_an_error_frame_is_the_json_of_its_fields_in_order(waits: dict[str, int], client_msg_id: str) -> None:
    """Frames for a send (the part around the id encoded once) read as those encoded whole."""
    for retryable in (False, True):
        fields: dict[str, object] = {
            "type": "error",
            "code": "overloaded",
            "message": 'Busy "now"',
            "retryable": retryable,
            "client_msg_id": client_msg_id,
            **waits,
        }
        frame = error_frame(
            "overloaded", 'Busy "now"', retryable=retryable, client_msg_id=client_msg_id, **waits
        )
        assert frame == json.dumps(fields, separators=(",", ":"), ensure_ascii=False)
        assert list(json.loads(frame)) == list(fields)
        without_id = {key: value for key, value in fields.items() if key != "client_msg_id"}
        assert error_frame("overloaded", 'Busy "now"', retryable=retryable, **waits) == json.dumps(
            without_id, separators=(",", ":"), ensure_ascii=False
        )
