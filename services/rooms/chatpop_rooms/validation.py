"""Checks and defaults for room settings as clients send them.

Each check returns the value to store or raises InvalidArgument with a stable code, so a bad field
never reaches the database.
"""

from __future__ import annotations

import unicodedata

from chatpop.rooms.v1 import rooms_pb2
from chatpop_common.errors import InvalidArgument

NAME_MAX = 80
DESCRIPTION_MAX = 500
ACCESS_CODE_MIN = 4
ACCESS_CODE_MAX = 64
RETENTION_MAX_DAYS = 3650
SLOW_MODE_MAX_SECONDS = 3600
NAMES_PER_NETWORK_MAX = 1000
DEFAULT_RETENTION_DAYS = 30

PUBLIC = "public"
PRIVATE = "private"
VISIBILITIES: dict[int, str] = {
    rooms_pb2.VISIBILITY_PUBLIC: PUBLIC,
    rooms_pb2.VISIBILITY_PRIVATE: PRIVATE,
}
THEMES: dict[int, str] = {
    rooms_pb2.THEME_PURPLE_DREAM: "purple-dream",
    rooms_pb2.THEME_OCEAN_BLUE: "ocean-blue",
    rooms_pb2.THEME_DARK_MODE: "dark-mode",
}
DEFAULT_THEME = "purple-dream"

# Bidirectional overrides and isolates can make a name render as something else entirely.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})


def _has_forbidden_char(text: str, allowed: frozenset[str] = frozenset()) -> bool:
    return any(
        ch not in allowed and (ch in _BIDI_CONTROLS or unicodedata.category(ch) in _FORBIDDEN_CATEGORIES)
        for ch in text
    )


def validate_name(raw: str) -> str:
    name = raw.strip()
    if not name:
        raise InvalidArgument("The room needs a name.", code="invalid_name")
    if len(name) > NAME_MAX:
        raise InvalidArgument(f"A room name has at most {NAME_MAX} characters.", code="invalid_name")
    if _has_forbidden_char(name):
        raise InvalidArgument("A room name cannot contain control characters.", code="invalid_name")
    return name


def validate_description(raw: str) -> str:
    description = raw.strip()
    if len(description) > DESCRIPTION_MAX:
        raise InvalidArgument(
            f"A description has at most {DESCRIPTION_MAX} characters.", code="invalid_description"
        )
    if _has_forbidden_char(description, allowed=frozenset("\n\t")):
        raise InvalidArgument(
            "A description cannot contain control characters other than line breaks and tabs.",
            code="invalid_description",
        )
    return description


def validate_visibility(value: int) -> str:
    if value == rooms_pb2.VISIBILITY_UNSPECIFIED:
        return PUBLIC
    try:
        return VISIBILITIES[value]
    except KeyError:
        raise InvalidArgument("Visibility must be public or private.", code="invalid_visibility") from None


def validate_theme(value: int) -> str:
    if value == rooms_pb2.THEME_UNSPECIFIED:
        return DEFAULT_THEME
    try:
        return THEMES[value]
    except KeyError:
        raise InvalidArgument(
            "Theme must be purple-dream, ocean-blue or dark-mode.", code="invalid_theme"
        ) from None


def validate_retention_days(value: int | None) -> int:
    if value is None:
        return DEFAULT_RETENTION_DAYS
    if not 0 <= value <= RETENTION_MAX_DAYS:
        raise InvalidArgument(
            f"Retention must be between 0 (keep forever) and {RETENTION_MAX_DAYS} days.",
            code="invalid_retention",
        )
    return value


def validate_slow_mode(value: int) -> int:
    if not 0 <= value <= SLOW_MODE_MAX_SECONDS:
        raise InvalidArgument(
            f"Slow mode is between 0 (off) and {SLOW_MODE_MAX_SECONDS} seconds.", code="invalid_slow_mode"
        )
    return value


def validate_names_per_network(value: int) -> int:
    if not 1 <= value <= NAMES_PER_NETWORK_MAX:
        raise InvalidArgument(
            f"The limit of anonymous names per network is between 1 and {NAMES_PER_NETWORK_MAX}.",
            code="invalid_names_per_network",
        )
    return value


def normalize_access_code(raw: str) -> str:
    """Codes are compared after trimming, so a stray space when typing or pasting does not lock anyone out."""
    return raw.strip()


def validate_new_access_code(raw: str) -> str:
    """A code a host sets: empty means none was given (the caller decides whether one is needed)."""
    code = normalize_access_code(raw)
    if not code:
        return ""
    if not ACCESS_CODE_MIN <= len(code) <= ACCESS_CODE_MAX:
        raise InvalidArgument(
            f"An access code has {ACCESS_CODE_MIN} to {ACCESS_CODE_MAX} characters.",
            code="invalid_access_code",
        )
    if _has_forbidden_char(code):
        raise InvalidArgument("An access code cannot contain control characters.", code="invalid_access_code")
    return code


def require_access_code_for(visibility: str, code: str) -> None:
    """Private rooms need a code; a code on a public room would protect nothing and mislead the host."""
    if visibility == PRIVATE and not code:
        raise InvalidArgument("A private room needs an access code.", code="access_code_required")
    if visibility == PUBLIC and code:
        raise InvalidArgument("Only private rooms take an access code.", code="access_code_not_allowed")
