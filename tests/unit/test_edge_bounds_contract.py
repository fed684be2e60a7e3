"""Everything a client sends is bounded, and the bounds are in the contract.

Every integer, string and list a request or a WebSocket frame may carry has documented limits (the
services store seqs as int64, counts as int32, and text in bounded columns), and values outside them
are refused by the edge with a clear error instead of failing somewhere behind it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from chatpop_edge import models
from chatpop_edge.app import create_app
from chatpop_edge.realtime import frames
from chatpop_edge.settings import EdgeSettings

METHODS = {"get", "post", "put", "patch", "delete"}
INT64_MAX = 2**63 - 1


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return create_app(
        EdgeSettings.model_validate(
            {
                "ip_hash_key": "unit-test-ip-hash-key",
                "media_url_key": "m" * 32,
                "service_token_secret": "s" * 32,
            }
        )
    ).openapi()


def unbounded(schema: Any, definitions: dict[str, Any], where: str) -> list[str]:
    """Where a schema lets a value through without an upper bound (or an integer without a lower one)."""
    if not isinstance(schema, dict):
        return []
    ref = schema.get("$ref")
    if ref:
        return unbounded(definitions[ref.rsplit("/", 1)[-1]], definitions, where)
    found: list[str] = []
    for keyword in ("anyOf", "oneOf", "allOf"):
        for branch in schema.get(keyword, []):
            found += unbounded(branch, definitions, where)
    if "enum" in schema or "const" in schema:
        return found
    kind = schema.get("type")
    if kind == "integer" or kind == "number":
        if "maximum" not in schema or "minimum" not in schema:
            found.append(f"{where}: {kind} without minimum and maximum")
        elif kind == "integer" and not -(2**63) <= schema["minimum"] <= schema["maximum"] <= INT64_MAX:
            found.append(f"{where}: integer bounds outside int64")
    elif kind == "string" and "maxLength" not in schema:
        found.append(f"{where}: string without maxLength")
    elif kind == "array":
        if "maxItems" not in schema:
            found.append(f"{where}: array without maxItems")
        found += unbounded(schema.get("items"), definitions, f"{where}[]")
    elif kind == "object":
        for name, field in schema.get("properties", {}).items():
            found += unbounded(field, definitions, f"{where}.{name}")
        if schema.get("additionalProperties", False) is not False:
            found.append(f"{where}: object open to any further property")
    return found


def client_inputs(document: dict[str, Any]) -> list[tuple[str, Any]]:
    """(where, schema) of every parameter and request body of every operation."""
    inputs: list[tuple[str, Any]] = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method not in METHODS:
                continue
            for parameter in operation.get("parameters", []):
                inputs.append(
                    (f"{method.upper()} {path} {parameter['in']} {parameter['name']}", parameter["schema"])
                )
            for content in operation.get("requestBody", {}).get("content", {}).values():
                inputs.append((f"{method.upper()} {path} body", content["schema"]))
    return inputs


def test_every_request_input_is_bounded_in_the_openapi_document(document: dict[str, Any]) -> None:
    inputs = client_inputs(document)
    assert any(where.endswith("query before_seq") for where, _ in inputs)
    problems = [
        p for where, schema in inputs for p in unbounded(schema, document["components"]["schemas"], where)
    ]
    assert problems == []


def test_every_websocket_frame_field_is_bounded() -> None:
    schema = TypeAdapter(frames.ClientFrame).json_schema(ref_template="#/$defs/{model}")
    definitions = schema.get("$defs", {})
    assert {"SendFrame", "ResumeFrame", "TypingFrame", "PingFrame"} <= set(definitions)
    assert unbounded(schema, definitions, "frame") == []


def test_seqs_are_bounded_alike_everywhere(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    parameters = document["paths"]["/api/v1/rooms/{code}/messages"]["get"]["parameters"]
    before_seq = next(p for p in parameters if p["name"] == "before_seq")["schema"]["anyOf"][0]
    reply_to_seq = schemas["SendMessageRequest"]["properties"]["reply_to_seq"]["anyOf"][0]
    read_seq = schemas["ReadRequest"]["properties"]["seq"]
    assert before_seq["maximum"] == reply_to_seq["maximum"] == read_seq["maximum"] == models.MAX_SEQ
    assert models.MAX_SEQ == 2**53 - 1
    # The WebSocket frames, described in the document's text, say the same.
    assert f"up to {models.MAX_SEQ} (2^53-1;" in " ".join(document["info"]["description"].split())


# --- bodies ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply_to_seq",
    [2**63, models.MAX_SEQ + 1, 0, -1, "5", True, 1.5, 1.0, [], {}, {"seq": 1}],
)
def test_a_send_body_takes_only_an_integer_seq_in_range(reply_to_seq: Any) -> None:
    body = {"client_msg_id": "c", "text": "hi", "reply_to_seq": reply_to_seq}
    with pytest.raises(ValidationError) as refused:
        models.SendMessageRequest.model_validate(json.loads(json.dumps(body)))
    assert refused.value.errors()[0]["loc"][0] == "reply_to_seq"


def test_a_send_body_takes_the_largest_seq_and_null() -> None:
    body = {"client_msg_id": "c", "text": "hi", "reply_to_seq": models.MAX_SEQ}
    assert models.SendMessageRequest.model_validate(body).reply_to_seq == models.MAX_SEQ
    assert models.SendMessageRequest.model_validate({**body, "reply_to_seq": None}).reply_to_seq is None


@pytest.mark.parametrize(
    "fields",
    [
        {"retention_days": "30"},
        {"retention_days": True},
        {"slow_mode_seconds": False},
        {"anonymous_names_per_network": 1.0},
        {"media": {"photo": 1}},
        {"media": {"video": "true"}},
        {"name": 5},
    ],
)
def test_room_bodies_take_json_types_as_documented(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        models.CreateRoomRequest.model_validate({"name": "Room", **fields})
    with pytest.raises(ValidationError):
        models.UpdateRoomRequest.model_validate(fields)


# --- frames ---------------------------------------------------------------------------------------


def frame_error(frame: Any) -> tuple[str, str]:
    return refusal(frame).code, refusal(frame).message


def refusal(frame: Any) -> frames.FrameError:
    raw = frame if isinstance(frame, str) else json.dumps(frame)
    with pytest.raises(frames.FrameError) as refused:
        frames.parse_client_frame(raw)
    return refused.value


SEND = {"type": "send", "client_msg_id": "c-1", "text": "hi"}


@pytest.mark.parametrize(
    "value",
    [2**63, models.MAX_SEQ + 1, 10**400, 0, -1, 1.5, 1.0, True, False, "3", [1], {"a": {"b": [None]}}],
)
def test_a_send_frame_with_a_bad_reply_to_seq_is_refused_naming_it(value: Any) -> None:
    refused = refusal({**SEND, "reply_to_seq": value})
    assert refused.code == "invalid_frame"
    assert refused.message.startswith("reply_to_seq: ")
    # The error names the send, so the client can mark that message as failed.
    assert refused.client_msg_id == "c-1"


@pytest.mark.parametrize(
    "value", [2**63, models.MAX_SEQ + 1, 10**400, -1, 1.5, 1.0, True, None, "3", [], {"after_seq": 1}]
)
def test_a_resume_frame_with_a_bad_after_seq_is_refused_naming_it(value: Any) -> None:
    code, message = frame_error({"type": "resume", "after_seq": value})
    assert code == "invalid_frame"
    assert message.startswith("after_seq: ")


@pytest.mark.parametrize(
    ("frame", "field"),
    [
        ({**SEND, "client_msg_id": None}, "client_msg_id"),
        ({**SEND, "client_msg_id": 7}, "client_msg_id"),
        ({**SEND, "client_msg_id": "x" * 65}, "client_msg_id"),
        ({**SEND, "text": ["hi"]}, "text"),
        ({**SEND, "text": "x" * 20_001}, "text"),
        ({**SEND, "text": {"nested": {"junk": [1, 2, {"x": None}]}}}, "text"),
    ],
)
def test_a_send_frame_with_bad_fields_is_refused_naming_the_field(frame: dict[str, Any], field: str) -> None:
    refused = refusal(frame)
    assert (refused.code, refused.message.split(":")[0]) == ("invalid_frame", field)
    assert refused.client_msg_id == (None if field == "client_msg_id" else "c-1")


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("{not json", "invalid_json"),
        ('{"type": "send", "client_msg_id": "c", "text": "\\ud800"}', "invalid_json"),
        ("[" * 100_000 + "]" * 100_000, "invalid_json"),
        ("1" * 100_000, "invalid_json"),
        ("null", "invalid_frame"),
        ("true", "invalid_frame"),
        ("[]", "invalid_frame"),
        ('"send"', "invalid_frame"),
        ('{"type": null}', "unknown_type"),
        ('{"type": 5}', "unknown_type"),
        ('{"type": ["send"]}', "unknown_type"),
        ('{"type": "dance"}', "unknown_type"),
    ],
)
def test_frames_that_are_not_client_frames_are_refused(raw: str, code: str) -> None:
    assert frame_error(raw)[0] == code


def test_good_frames_parse_with_the_largest_seqs() -> None:
    send = frames.parse_client_frame(json.dumps({**SEND, "reply_to_seq": models.MAX_SEQ, "extra": [1]}))
    assert isinstance(send, frames.SendFrame) and send.reply_to_seq == models.MAX_SEQ
    resume = frames.parse_client_frame(json.dumps({"type": "resume", "after_seq": models.MAX_SEQ}))
    assert isinstance(resume, frames.ResumeFrame) and resume.after_seq == models.MAX_SEQ
    assert isinstance(frames.parse_client_frame('{"type": "ping", "junk": {"a": 1e400}}'), frames.PingFrame)


@pytest.mark.parametrize("raw", ["0", "17", str(models.MAX_SEQ)])
def test_after_seq_in_the_socket_url_takes_whole_numbers_in_range(raw: str) -> None:
    assert frames.parse_after_seq(raw) == int(raw)


@pytest.mark.parametrize(
    "raw", ["", "-1", "1.0", " 1", "²", "١٢", "0x10", str(models.MAX_SEQ + 1), str(2**63), "9" * 5000]
)
def test_after_seq_in_the_socket_url_refuses_anything_else(raw: str) -> None:
    with pytest.raises(frames.FrameError) as refused:
        frames.parse_after_seq(raw)
    assert refused.value.code == "invalid_after_seq"
