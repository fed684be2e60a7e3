"""Request checks with stable error codes; nothing is stored unless they pass."""

from __future__ import annotations

import re
import unicodedata

from chatpop_common.errors import InvalidArgument

_CLIENT_MSG_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_ROOM_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_ALLOWED_CONTROLS = frozenset("\n\t")

DEFAULT_PAGE = 50
MAX_PAGE = 100


def client_msg_id(value: str) -> str:
    if not _CLIENT_MSG_ID.fullmatch(value):
        raise InvalidArgument(
            "client_msg_id is required: 1-64 letters, digits, '_' or '-'.", code="invalid_client_msg_id"
        )
    return value


def message_text(value: str, max_chars: int) -> str:
    """The text as stored: trimmed, non-empty, not too long, no control characters but \\n and \\t."""
    text = value.strip()
    if not text:
        raise InvalidArgument("The message is empty.", code="message_empty")
    if len(text) > max_chars:
        raise InvalidArgument(f"The message is longer than {max_chars} characters.", code="message_too_long")
    for char in text:
        category = unicodedata.category(char)
        if (category == "Cc" and char not in _ALLOWED_CONTROLS) or category == "Cs":
            raise InvalidArgument(
                "The message contains control characters.", code="message_invalid_characters"
            )
    return text


def room_id(value: str) -> str:
    if not _ROOM_ID.fullmatch(value):
        raise InvalidArgument("room_id is missing or malformed.", code="invalid_room_id")
    return value


def participant_id(value: str) -> str:
    if not _ROOM_ID.fullmatch(value):
        raise InvalidArgument("participant_id is missing or malformed.", code="invalid_participant_id")
    return value


def page_limit(value: int) -> int:
    if value == 0:
        return DEFAULT_PAGE
    if not 1 <= value <= MAX_PAGE:
        raise InvalidArgument(f"Limit must be between 1 and {MAX_PAGE}.", code="invalid_limit")
    return value


def target_seq(value: int) -> int:
    if value < 1:
        raise InvalidArgument("target_seq must name a message (1 or more).", code="invalid_target_seq")
    return value
