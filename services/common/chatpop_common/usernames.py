"""Username rules shared by accounts (reserved usernames) and rooms (participant names).

A username is 5-15 ASCII letters, digits or underscores once surrounding whitespace is stripped.
Case is kept for display; uniqueness compares `username_key()` (lower case). System words are
reserved, also when only digits or underscores decorate them ("Admin_1", "_host_"), so nobody can
pass for staff; names starting with the product's own name are reserved too. Names with profanity
(chatpop_common.profanity, which sees through leet-speak and separators) are refused.
"""

from __future__ import annotations

import re

from chatpop_common.errors import InvalidArgument
from chatpop_common.profanity import is_profane

USERNAME_MIN_LENGTH = 5
USERNAME_MAX_LENGTH = 15

RESERVED_WORDS: frozenset[str] = frozenset(
    {
        "admin",
        "administrator",
        "anonymous",
        "api",
        "billing",
        "bot",
        "chatpop",
        "everyone",
        "help",
        "host",
        "mod",
        "moderator",
        "null",
        "official",
        "owner",
        "payments",
        "root",
        "security",
        "server",
        "staff",
        "superuser",
        "support",
        "sysadmin",
        "system",
        "undefined",
    }
)
_BRAND = "chatpop"

_ALLOWED = re.compile(r"[A-Za-z0-9_]+")
_DECORATION = re.compile(r"[0-9_]+")


def username_key(username: str) -> str:
    """The form two usernames are compared in: "Alice" and "alice" are the same name."""
    return username.lower()


def is_reserved(username: str) -> bool:
    core = _DECORATION.sub("", username_key(username))
    return core in RESERVED_WORDS or core.startswith(_BRAND)


def normalize_username(raw: str, *, check_profanity: bool = True) -> str:
    """The username to store (trimmed, case kept), or InvalidArgument with a stable code.

    Codes: `username_invalid` (empty, length, characters), `username_reserved` (system words) and
    `username_profane`. `check_profanity=False` is for names the platform generated (and filtered)
    itself.
    """
    name = raw.strip()
    if not name:
        raise InvalidArgument("A username is required.", code="username_invalid")
    if not _ALLOWED.fullmatch(name):
        raise InvalidArgument(
            "A username may contain only letters A-Z, digits and underscores.", code="username_invalid"
        )
    if not USERNAME_MIN_LENGTH <= len(name) <= USERNAME_MAX_LENGTH:
        raise InvalidArgument(
            f"A username must be {USERNAME_MIN_LENGTH} to {USERNAME_MAX_LENGTH} characters long.",
            code="username_invalid",
        )
    if is_reserved(name):
        raise InvalidArgument(f"The username {name!r} is reserved.", code="username_reserved")
    if check_profanity and is_profane(name):
        raise InvalidArgument("That username contains a word that is not allowed.", code="username_profane")
    return name
