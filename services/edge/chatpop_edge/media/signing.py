"""Signed media URLs and the cookie that binds them to their participant.

A URL `/media/{room}/{media}/{variant}?p={participant}&e={unix expiry}&s={sig}` is good until `e` for
the participant `p`: `sig` is base64url(HMAC-SHA256(MEDIA_URL_KEY, "v1|room|media|variant|participant|
exp")). Whoever holds a URL also needs the binding cookie `cp_media` = `{participant}.{exp}.{sig}`
(same key, a message of its own), set on the room's media path whenever URLs are handed out, so a URL
copied out of one browser does not work in another. Every comparison is constant-time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
from dataclasses import dataclass

COOKIE_NAME = "cp_media"
# Expiry times are rounded up to this many seconds, so the URLs of one media stay the same for a while
# and browsers reuse what they cached.
EXPIRY_STEP = 60
_SIG_LENGTH = 43  # base64url of 32 bytes, unpadded


class InvalidSignature(Exception):
    """The URL or cookie was not signed by us for what it names."""


def _sign(key: bytes, message: str) -> str:
    digest = hmac.new(key, message.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _matches(expected: str, given: str) -> bool:
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace"))


def expiry(now: float, ttl: int) -> int:
    """The expiry of URLs handed out at `now`: at least `ttl` seconds away, on an EXPIRY_STEP boundary."""
    return math.ceil((now + ttl) / EXPIRY_STEP) * EXPIRY_STEP


def url_signature(
    key: bytes, room_id: str, media_id: str, variant: str, participant_id: str, exp: int
) -> str:
    return _sign(key, f"v1|{room_id}|{media_id}|{variant}|{participant_id}|{exp}")


def media_path(room_id: str, media_id: str, variant: str) -> str:
    return f"/media/{room_id}/{media_id}/{variant}"


def cookie_path(room_id: str) -> str:
    return f"/media/{room_id}/"


def signed_url(key: bytes, room_id: str, media_id: str, variant: str, participant_id: str, exp: int) -> str:
    sig = url_signature(key, room_id, media_id, variant, participant_id, exp)
    return f"{media_path(room_id, media_id, variant)}?p={participant_id}&e={exp}&s={sig}"


def verify_url(
    key: bytes, room_id: str, media_id: str, variant: str, participant: str, exp: str, sig: str
) -> tuple[str, int]:
    """(participant id, expiry) of a URL signed by us for exactly this room, media and variant;
    InvalidSignature otherwise. Expiry is the caller's to check."""
    if not (exp.isascii() and exp.isdigit() and len(exp) <= 12) or len(sig) != _SIG_LENGTH or not participant:
        raise InvalidSignature
    expected = url_signature(key, room_id, media_id, variant, participant, int(exp))
    if not _matches(expected, sig):
        raise InvalidSignature
    return participant, int(exp)


def _cookie_signature(key: bytes, room_id: str, participant_id: str, exp: int) -> str:
    return _sign(key, f"v1-cookie|{room_id}|{participant_id}|{exp}")


def binding_cookie(key: bytes, room_id: str, participant_id: str, exp: int) -> str:
    """The value of `cp_media` for a participant of a room, good until `exp`."""
    return f"{participant_id}.{exp}.{_cookie_signature(key, room_id, participant_id, exp)}"


@dataclass(frozen=True, slots=True)
class Binding:
    participant_id: str
    exp: int


def verify_cookie(key: bytes, room_id: str, value: str) -> Binding:
    """Whom a `cp_media` cookie of this room names; InvalidSignature when it is not ours."""
    parts = value.split(".")
    if len(parts) != 3:
        raise InvalidSignature
    participant, exp, sig = parts
    if not participant or not (exp.isascii() and exp.isdigit() and len(exp) <= 12) or len(sig) != _SIG_LENGTH:
        raise InvalidSignature
    if not _matches(_cookie_signature(key, room_id, participant, int(exp)), sig):
        raise InvalidSignature
    return Binding(participant, int(exp))
