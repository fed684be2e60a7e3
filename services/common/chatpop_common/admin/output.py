"""JSON out: answers as plain objects (numbers stay numbers, enums by name, times in ISO 8601)."""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from chatpop_common.errors import error_details


def plain(message: Message) -> dict[str, Any]:
    """Every field of `message` by its proto name, set or not (an operator reads zeros too)."""
    return {field.name: _field(message, field) for field in message.DESCRIPTOR.fields}


def _field(message: Message, field: Any) -> Any:
    value = getattr(message, field.name)
    if field.is_repeated:
        return [_value(field, item) for item in value]
    if field.type == FieldDescriptor.TYPE_MESSAGE and not message.HasField(field.name):
        return None
    return _value(field, value)


def _value(field: Any, value: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        if isinstance(value, Timestamp):
            return value.ToDatetime().isoformat() + "Z"
        return plain(value)
    if field.type == FieldDescriptor.TYPE_ENUM:
        described = field.enum_type.values_by_number.get(value) if field.enum_type else None
        return described.name if described is not None else value
    if field.type == FieldDescriptor.TYPE_BYTES:
        return value.hex()
    return value


def emit(value: dict[str, Any], stream: TextIO | None = None) -> None:
    print(json.dumps(value, ensure_ascii=False), file=stream or sys.stdout, flush=True)


def rpc_error(error: grpc.aio.AioRpcError, what: str) -> dict[str, Any]:
    """A failed call as the operator reads it: what was asked, the gRPC status, ChatPop's code."""
    code, _ = error_details(error)
    return {
        "error": {
            "call": what,
            "status": error.code().name,
            "code": code,
            "message": error.details() or "",
        }
    }
