"""Room codes: short, unguessable, easy to read aloud and type.

Eight characters from a CSPRNG over an alphabet without the look-alikes 0/O, 1/I/L: 31**8 ≈ 8.5e11
codes, so guessing a live one is hopeless while the link `/c/{code}` stays short.
"""

from __future__ import annotations

import secrets

ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
LENGTH = 8


def new_room_code() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))


def normalize_room_code(raw: str) -> str | None:
    """The canonical (upper-case) form of a code typed in any case, or None if it cannot be one."""
    code = raw.strip().upper()
    if len(code) != LENGTH or any(ch not in ALPHABET for ch in code):
        return None
    return code
