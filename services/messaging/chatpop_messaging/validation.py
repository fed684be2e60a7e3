"""Request checks with stable error codes; nothing is stored unless they pass."""

from __future__ import annotations

import re
import unicodedata

from chatpop_common.errors import InvalidArgument

_CLIENT_MSG_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_ROOM_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_ALLOWED_CONTROLS = frozenset("\n\t")
_ORDER_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_CURRENCY = re.compile(r"[a-z]{3}")

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
    return _text(value, max_chars, "message")


def _text(value: str, max_chars: int, what: str) -> str:
    text = value.strip()
    if not text:
        raise InvalidArgument(f"The {what} is empty.", code=f"{what}_empty")
    if len(text) > max_chars:
        raise InvalidArgument(f"The {what} is longer than {max_chars} characters.", code=f"{what}_too_long")
    for char in text:
        category = unicodedata.category(char)
        if (category == "Cc" and char not in _ALLOWED_CONTROLS) or category == "Cs":
            raise InvalidArgument(
                f"The {what} contains control characters.", code=f"{what}_invalid_characters"
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


# A tip's note: checked like a message's text, and short.
TIP_NOTE_MAX_CHARS = 200


def order_id(value: str, *, field: str = "order_id") -> str:
    """A payments order's id (a paid pin's id is its first order's)."""
    if not _ORDER_ID.fullmatch(value):
        raise InvalidArgument(f"{field} is missing or malformed.", code=f"invalid_{field}")
    return value


def currency(value: str) -> str:
    """An ISO 4217 code, as Stripe writes it (lower case)."""
    code = value.lower()
    if not _CURRENCY.fullmatch(code):
        raise InvalidArgument("currency must be a three-letter ISO 4217 code.", code="invalid_currency")
    return code


def tip_note(value: str) -> str:
    """A tip's note as stored: empty, or checked as a message's text of at most 200 characters."""
    return _text(value, TIP_NOTE_MAX_CHARS, "note") if value.strip() else ""
