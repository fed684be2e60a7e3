"""Sealing message content with a room's data key (AES-256-GCM), and the stored formats.

A content value in Postgres (`messages.text`, `messages.payload`, `messages.pinned_message`,
`room_boards.sticky_text`, `reports.text`) is one `bytea`:

- empty: no content (an entry without text, a cleared sticky text, a deleted message's text);
- `0x00` + the plaintext: stored before encryption existed (migration 0010 marked it so); read as it
  is, and re-encrypted by the background job; nothing new is ever written this way;
- `0x01` + key version (uint32, big-endian) + nonce (12 random bytes) + ciphertext and 16-byte tag.

A Redis value holding a message (a hot cache stream entry, a tombstone, a pub/sub payload) is the
encoded `Message` sealed as a whole, in a self-describing envelope, since a reader of Redis has no row
to say which message it is:

- `0x02` + key version (uint32, big-endian) + length of the message id (1 byte) + the message id
  (UTF-8) + nonce (12 random bytes) + ciphertext and tag.

The additional authenticated data binds a sealed value to where it belongs:
`chatpop-content|{room_id}|{id}|{key_version}|{field}`, where `id` is the message's id (for a sticky
text `sticky:{sticky_seq}`, for a report `report:{message_seq}:{reporter_participant_id}`) and `field`
names the column (`text`, `payload`, `pinned_message`, `sticky_text`, `report_text`, and `entry` for
Redis). A value copied to another row, room, column or version does not open.
"""

from __future__ import annotations

import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PLAIN = 0x00
SEALED = 0x01
ENVELOPE = 0x02

NONCE_SIZE = 12
TAG_SIZE = 16
KEY_SIZE = 32

_HEADER = struct.Struct(">BI")

# AAD fields.
TEXT = "text"
PAYLOAD = "payload"
PINNED_MESSAGE = "pinned_message"
STICKY_TEXT = "sticky_text"
REPORT_TEXT = "report_text"
ENTRY = "entry"


class Unreadable(Exception):
    """A stored value that cannot be opened: unknown format, a key that is gone, or it was not sealed
    for this place (tampered with, or moved)."""


def sticky_id(sticky_seq: int) -> str:
    return f"sticky:{sticky_seq}"


def report_id(message_seq: int, reporter_participant_id: str) -> str:
    return f"report:{message_seq}:{reporter_participant_id}"


def aad(room_id: str, entity_id: str, version: int, field: str) -> bytes:
    return f"chatpop-content|{room_id}|{entity_id}|{version}|{field}".encode()


def seal(cipher: AESGCM, version: int, room_id: str, entity_id: str, field: str, plaintext: bytes) -> bytes:
    """A column value sealing `plaintext` (empty plaintext stays empty: there is nothing to hide)."""
    if not plaintext:
        return b""
    nonce = os.urandom(NONCE_SIZE)
    return (
        _HEADER.pack(SEALED, version)
        + nonce
        + cipher.encrypt(nonce, plaintext, aad(room_id, entity_id, version, field))
    )


def version_of(value: bytes | None) -> int | None:
    """The data key version a column value was sealed with; None for no content or plaintext."""
    if not value or value[0] == PLAIN:
        return None
    if value[0] == SEALED and len(value) >= _HEADER.size + NONCE_SIZE + TAG_SIZE:
        return int(_HEADER.unpack_from(value)[1])
    raise Unreadable("unknown content format")


def open_value(
    cipher: AESGCM | None, room_id: str, entity_id: str, field: str, value: bytes | None
) -> bytes | None:
    """The plaintext of a column value (None stays None); `cipher` is the key of its version."""
    if value is None:
        return None
    if not value:
        return b""
    if value[0] == PLAIN:
        return bytes(value[1:])
    version = version_of(value)
    if cipher is None or version is None:
        raise Unreadable("no key for this value")
    start = _HEADER.size
    nonce = bytes(value[start : start + NONCE_SIZE])
    try:
        return cipher.decrypt(
            nonce, bytes(value[start + NONCE_SIZE :]), aad(room_id, entity_id, version, field)
        )
    except InvalidTag:
        raise Unreadable("the value was not sealed for this place") from None


def seal_envelope(cipher: AESGCM, version: int, room_id: str, message_id: str, plaintext: bytes) -> bytes:
    """A Redis value sealing an encoded message."""
    ident = message_id.encode()
    if len(ident) > 255:
        raise ValueError("message id too long")
    nonce = os.urandom(NONCE_SIZE)
    sealed = cipher.encrypt(nonce, plaintext, aad(room_id, message_id, version, ENTRY))
    return _HEADER.pack(ENVELOPE, version) + bytes((len(ident),)) + ident + nonce + sealed


def envelope_header(value: bytes) -> tuple[int, str, int]:
    """(key version, message id, offset of the nonce) of a Redis value; Unreadable if it is not one."""
    if len(value) < _HEADER.size + 1 or value[0] != ENVELOPE:
        raise Unreadable("not a sealed envelope")
    version = int(_HEADER.unpack_from(value)[1])
    size = value[_HEADER.size]
    start = _HEADER.size + 1
    if len(value) < start + size + NONCE_SIZE + TAG_SIZE:
        raise Unreadable("truncated envelope")
    try:
        message_id = bytes(value[start : start + size]).decode()
    except UnicodeDecodeError:
        raise Unreadable("malformed envelope") from None
    return version, message_id, start + size


def open_envelope(cipher: AESGCM | None, room_id: str, value: bytes) -> tuple[str, bytes]:
    """(message id, encoded message) of a Redis value of the room."""
    version, message_id, offset = envelope_header(value)
    if cipher is None:
        raise Unreadable("no key for this value")
    nonce = bytes(value[offset : offset + NONCE_SIZE])
    try:
        plaintext = cipher.decrypt(
            nonce, bytes(value[offset + NONCE_SIZE :]), aad(room_id, message_id, version, ENTRY)
        )
    except InvalidTag:
        raise Unreadable("the value was not sealed for this room") from None
    return message_id, plaintext
