"""WebSocket frames: what clients may send (validated) and how server frames are encoded."""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from chatpop.messaging.v1 import messaging_pb2
from chatpop.rooms.v1 import rooms_pb2
from chatpop_edge import models


class _ClientFrame(BaseModel):
    # JSON types as documented, as for REST bodies: `1.0`, `"1"` and `true` are not integers.
    model_config = ConfigDict(extra="ignore", strict=True)


class SendFrame(_ClientFrame):
    type: Literal["send"]
    client_msg_id: str = Field(min_length=1, max_length=64)
    # Empty only with media_id (a photo, voice message or video uploaded to the room).
    text: str = Field(default="", max_length=20_000)
    reply_to_seq: int | None = Field(default=None, ge=1, le=models.MAX_SEQ)
    media_id: str | None = Field(default=None, min_length=1, max_length=64)

    @model_validator(mode="before")
    @classmethod
    def _no_outside_media(cls, data: Any) -> Any:
        return models.refuse_outside_media(data)

    @model_validator(mode="after")
    def _text_or_media(self) -> SendFrame:
        if not self.text and self.media_id is None:
            raise PydanticCustomError("text_required", models.TEXT_REQUIRED_MESSAGE)
        return self


class ResumeFrame(_ClientFrame):
    type: Literal["resume"]
    after_seq: int = Field(ge=0, le=models.MAX_SEQ)


class TypingFrame(_ClientFrame):
    type: Literal["typing"]


class PingFrame(_ClientFrame):
    type: Literal["ping"]


ClientFrame = Annotated[SendFrame | ResumeFrame | TypingFrame | PingFrame, Field(discriminator="type")]
_client_frames: TypeAdapter[SendFrame | ResumeFrame | TypingFrame | PingFrame] = TypeAdapter(ClientFrame)


class _SendId(_ClientFrame):
    """Just the id of a send frame, to name it in the error about the rest of it."""

    type: Literal["send"]
    client_msg_id: str = Field(min_length=1, max_length=64)


class FrameError(Exception):
    def __init__(self, code: str, message: str, client_msg_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.client_msg_id = client_msg_id


def parse_client_frame(text: str) -> SendFrame | ResumeFrame | TypingFrame | PingFrame:
    """The frame a client sent, or FrameError with a code the client can act on."""
    try:
        return _client_frames.validate_json(text)
    except ValidationError as exc:
        errors = exc.errors()
        kinds = {error["type"] for error in errors}
        if "json_invalid" in kinds:
            raise FrameError("invalid_json", "The frame is not valid JSON.") from None
        if kinds & {"union_tag_invalid", "union_tag_not_found", "model_attributes_type", "model_type"}:
            raise FrameError(
                "unknown_type", "The frame needs a `type` of send, resume, typing or ping."
            ) from None
        if models.MEDIA_REFERENCE_INVALID in kinds:
            raise FrameError(
                models.MEDIA_REFERENCE_INVALID, models.OUTSIDE_MEDIA_MESSAGE, _send_id(text)
            ) from None
        first = errors[0]
        if first["type"] == "text_required":
            raise FrameError("invalid_frame", f"{first['msg']}.", _send_id(text)) from None
        field = ".".join(str(part) for part in first["loc"][1:]) or "frame"
        raise FrameError("invalid_frame", f"{field}: {first['msg']}.", _send_id(text)) from None


def _send_id(text: str) -> str | None:
    """The client_msg_id of a send frame that is otherwise invalid, so the client knows which failed."""
    try:
        return _SendId.model_validate_json(text).client_msg_id
    except ValidationError:
        return None


_SEQ_DIGITS = len(str(models.MAX_SEQ))


def parse_after_seq(raw: str) -> int:
    """The `after_seq` query parameter of a connecting socket: ASCII digits, 0 to MAX_SEQ."""
    # isdigit() alone lets "²" through, which int() refuses; the length check keeps int() cheap.
    if raw.isascii() and raw.isdigit() and len(raw) <= _SEQ_DIGITS and int(raw) <= models.MAX_SEQ:
        return int(raw)
    raise FrameError("invalid_after_seq", f"after_seq must be a whole number from 0 to {models.MAX_SEQ}.")


def dumps(frame: dict[str, Any]) -> str:
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


class MessageFrame(models.Message):
    type: Literal["message"] = "message"


def message_frame(message: messaging_pb2.Message) -> str:
    """The frame of an entry of the room's log, encoded once and shared by every recipient: `message`
    for a message, or the frame of the change it is."""
    if message.kind == messaging_pb2.ENTRY_KIND_REACTION:
        return dumps(
            {
                "type": "reaction",
                "seq": message.seq,
                "target_seq": message.target_seq,
                "participant_id": message.sender_participant_id,
                "username": message.sender_username,
                "emoji": message.emoji,
                "added": message.added,
                "reactions": models.reaction_counts(message.state),
                "state_seq": message.state.state_seq,
            }
        )
    if message.kind == messaging_pb2.ENTRY_KIND_DELETION:
        return dumps(
            {
                "type": "deleted",
                "seq": message.seq,
                "target_seq": message.target_seq,
                "participant_id": message.sender_participant_id,
                "by_host": message.state.deleted_by_host,
                "state_seq": message.state.state_seq,
            }
        )
    if message.kind in (messaging_pb2.ENTRY_KIND_PIN, messaging_pb2.ENTRY_KIND_UNPIN):
        frame: dict[str, Any] = {
            "type": "pinned" if message.kind == messaging_pb2.ENTRY_KIND_PIN else "unpinned",
            "seq": message.seq,
            "target_seq": message.target_seq,
            "pinned_seqs": list(message.pinned_seqs),
            "pins_state_seq": message.seq,
        }
        if message.HasField("pinned_message"):
            frame["message"] = models.Message.from_proto(message.pinned_message).model_dump(mode="json")
        return dumps(frame)
    if message.kind == messaging_pb2.ENTRY_KIND_STICKY:
        return dumps({"type": "sticky", "seq": message.seq, "text": message.text, "sticky_seq": message.seq})
    if message.kind in (messaging_pb2.ENTRY_KIND_HIDE, messaging_pb2.ENTRY_KIND_RESTORE):
        frame = {
            "type": "hidden" if message.kind == messaging_pb2.ENTRY_KIND_HIDE else "restored",
            "seq": message.seq,
            "target_seq": message.target_seq,
            "state_seq": message.state.state_seq,
        }
        if message.kind == messaging_pb2.ENTRY_KIND_RESTORE:
            frame["text"] = message.text
        return dumps(frame)
    if message.kind == messaging_pb2.ENTRY_KIND_BAN:
        return banned_frame(message)
    if message.kind == messaging_pb2.ENTRY_KIND_PARTICIPANT_FORGOTTEN:
        return participant_forgotten_frame(message)
    if message.kind in (messaging_pb2.ENTRY_KIND_PAID_PIN, messaging_pb2.ENTRY_KIND_PAID_PIN_REMOVED):
        return paid_pin_frame(message)
    # Validated once, as the frame itself (from_proto builds the class it is called on).
    if message.kind == messaging_pb2.ENTRY_KIND_TIP:
        return TipFrame.from_proto(message).model_dump_json()
    return MessageFrame.from_proto(message).model_dump_json()


class TipFrame(models.Message):
    """A paid tip to the host: an item of the conversation like a message (`kind: tip`)."""

    type: Literal["tip"] = "tip"


def paid_pin_frame(message: messaging_pb2.Message) -> str:
    """A paid pin granted or extended (`paid_pin`), or taken down before its time (`paid_pin_removed`):
    the pin as it stands after the entry, and the room's live paid pins after it (absolute state)."""
    removed = message.kind == messaging_pb2.ENTRY_KIND_PAID_PIN_REMOVED
    frame: dict[str, Any] = {
        "type": "paid_pin_removed" if removed else "paid_pin",
        "seq": message.seq,
        "target_seq": message.target_seq,
        "paid_pin": models.PaidPin.from_proto(message.paid_pin).model_dump(mode="json"),
        "paid_pins": [models.PaidPin.from_proto(pin).model_dump(mode="json") for pin in message.paid_pins],
        "paid_pins_state_seq": message.seq,
    }
    return dumps(frame)


def banned_frame(message: messaging_pb2.Message) -> str:
    """A ban entry: the participant it names was removed from the room by its host."""
    return dumps(
        {
            "type": "banned",
            "seq": message.seq,
            "participant_id": message.sender_participant_id,
            "username": message.sender_username,
        }
    )


def participant_forgotten_frame(message: messaging_pb2.Message) -> str:
    """A participant's account was deleted: every message of theirs reads under `username` from now
    on, and is deleted too when `messages_erased`."""
    return dumps(
        {
            "type": "participant_forgotten",
            "seq": message.seq,
            "participant_id": message.sender_participant_id,
            "username": message.sender_username,
            "messages_erased": message.messages_erased,
        }
    )


def ready_frame(room_id: str, participant_id: str, last_seq: int) -> str:
    return dumps(
        {"type": "ready", "room_id": room_id, "participant_id": participant_id, "last_seq": last_seq}
    )


def mutes_frame(participant_ids: Sequence[str]) -> str:
    """The participants whose messages this socket's participant muted (the whole list, newest first)."""
    return dumps({"type": "mutes", "participant_ids": list(participant_ids)})


def ack_frame(client_msg_id: str, seq: int, message_id: str) -> str:
    return dumps({"type": "ack", "client_msg_id": client_msg_id, "seq": seq, "id": message_id})


def error_frame(
    code: str,
    message: str,
    *,
    retryable: bool = False,
    client_msg_id: str | None = None,
    retry_after: int | None = None,
    retry_after_ms: int | None = None,
) -> str:
    if client_msg_id is None:
        return dumps(_error_fields(code, message, retryable, retry_after, retry_after_ms))
    # A send's refusal (under overload, thousands a second alike but for the id): the frame around
    # the id is encoded once.
    head, tail = _error_around_id(code, message, retryable, retry_after, retry_after_ms)
    return head + json.dumps(client_msg_id, ensure_ascii=False) + tail


def _error_fields(
    code: str, message: str, retryable: bool, retry_after: int | None, retry_after_ms: int | None
) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "error", "code": code, "message": message, "retryable": retryable}
    if retry_after is not None:
        frame["retry_after"] = retry_after
    if retry_after_ms is not None:
        # The same wait in milliseconds, for waits shorter than a second (`overloaded`).
        frame["retry_after_ms"] = retry_after_ms
    return frame


@functools.lru_cache(maxsize=256)
def _error_around_id(
    code: str, message: str, retryable: bool, retry_after: int | None, retry_after_ms: int | None
) -> tuple[str, str]:
    """The encoded error frame before and after its client_msg_id's value (the key order of
    _error_fields with client_msg_id after `retryable`)."""
    fields = _error_fields(code, message, retryable, None, None)
    waits = _error_fields(code, message, retryable, retry_after, retry_after_ms)
    after = {key: value for key, value in waits.items() if key not in fields}
    head = dumps(fields)[:-1] + ',"client_msg_id":'
    tail = "," + dumps(after)[1:] if after else "}"
    return head, tail


def reload_frame(last_seq: int) -> str:
    return dumps({"type": "reload", "last_seq": last_seq})


def trimmed_frame(floor_seq: int) -> str:
    """Retention deleted the entries below `floor_seq` that a resume asked for: not a loss."""
    return dumps({"type": "trimmed", "floor_seq": floor_seq})


def typing_frame(participant_id: str, username: str) -> str:
    return dumps({"type": "typing", "participant_id": participant_id, "username": username})


def presence_frame(change: messaging_pb2.PresenceChange) -> str:
    return dumps(
        {
            "type": "presence",
            "online": list(change.online),
            "offline": list(change.offline),
            "version": change.version,
        }
    )


class RoomUpdatedFrame(BaseModel):
    type: Literal["room_updated"] = "room_updated"
    room: models.Room


def room_updated_frame(room: rooms_pb2.Room, public_url: str) -> str:
    """The room's public fields, exactly as `GET /api/v1/rooms/{code}` shows them."""
    return RoomUpdatedFrame(room=models.Room.from_proto(room, public_url)).model_dump_json()


PONG = dumps({"type": "pong"})
