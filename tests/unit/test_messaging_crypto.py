"""Sealing content and wrapping data keys: the stored formats, and that a sealed value opens only where
it was sealed for (its room, row, column and key version)."""

from __future__ import annotations

import base64
import json
import os
import struct
import uuid

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from chatpop.messaging.v1 import messaging_pb2
from chatpop_messaging import crypto
from chatpop_messaging.keys import MasterKeyError, MasterKeys, Opener, Sealer, unwrap, wrap

ROOM = "room-a"
OTHER_ROOM = "room-b"


@pytest.fixture
def cipher() -> AESGCM:
    return AESGCM(os.urandom(32))


def test_a_sealed_value_has_the_documented_layout(cipher: AESGCM) -> None:
    value = crypto.seal(cipher, 7, ROOM, "m1", crypto.TEXT, b"hello there")
    assert value[0] == crypto.SEALED
    assert struct.unpack(">I", value[1:5]) == (7,)
    assert len(value) == 1 + 4 + 12 + len(b"hello there") + 16
    assert b"hello there" not in value
    assert crypto.version_of(value) == 7
    assert crypto.open_value(cipher, ROOM, "m1", crypto.TEXT, value) == b"hello there"


def test_each_seal_takes_a_fresh_nonce(cipher: AESGCM) -> None:
    first = crypto.seal(cipher, 1, ROOM, "m1", crypto.TEXT, b"same")
    second = crypto.seal(cipher, 1, ROOM, "m1", crypto.TEXT, b"same")
    assert first[5:17] != second[5:17]
    assert first != second


@pytest.mark.parametrize(
    ("room", "entity", "field"),
    [(OTHER_ROOM, "m1", crypto.TEXT), (ROOM, "m2", crypto.TEXT), (ROOM, "m1", crypto.PAYLOAD)],
)
def test_a_value_moved_elsewhere_does_not_open(cipher: AESGCM, room: str, entity: str, field: str) -> None:
    value = crypto.seal(cipher, 1, ROOM, "m1", crypto.TEXT, b"secret")
    with pytest.raises(crypto.Unreadable):
        crypto.open_value(cipher, room, entity, field, value)


def test_a_value_relabelled_with_another_version_does_not_open(cipher: AESGCM) -> None:
    value = crypto.seal(cipher, 1, ROOM, "m1", crypto.TEXT, b"secret")
    relabelled = value[:1] + struct.pack(">I", 2) + value[5:]
    with pytest.raises(crypto.Unreadable):
        crypto.open_value(cipher, ROOM, "m1", crypto.TEXT, relabelled)


def test_a_tampered_value_does_not_open(cipher: AESGCM) -> None:
    value = bytearray(crypto.seal(cipher, 1, ROOM, "m1", crypto.TEXT, b"secret"))
    value[-1] ^= 1
    with pytest.raises(crypto.Unreadable):
        crypto.open_value(cipher, ROOM, "m1", crypto.TEXT, bytes(value))


def test_empty_and_legacy_plaintext_values(cipher: AESGCM) -> None:
    assert crypto.seal(cipher, 1, ROOM, "m1", crypto.TEXT, b"") == b""
    assert crypto.open_value(cipher, ROOM, "m1", crypto.TEXT, b"") == b""
    assert crypto.open_value(None, ROOM, "m1", crypto.TEXT, None) is None
    assert crypto.version_of(b"\x00old text") is None
    assert crypto.open_value(None, ROOM, "m1", crypto.TEXT, b"\x00old text") == b"old text"
    with pytest.raises(crypto.Unreadable):
        crypto.version_of(b"\x07unknown format")


def test_a_value_whose_key_is_gone_does_not_open(cipher: AESGCM) -> None:
    value = crypto.seal(cipher, 3, ROOM, "m1", crypto.TEXT, b"secret")
    with pytest.raises(crypto.Unreadable):
        Opener(ROOM, {}).text("m1", crypto.TEXT, value)


def _entry(room_id: str = ROOM) -> messaging_pb2.Message:
    return messaging_pb2.Message(id=str(uuid.uuid4()), room_id=room_id, seq=5, text="a marker text")


def test_a_redis_envelope_opens_in_its_room_only(cipher: AESGCM) -> None:
    entry = _entry()
    value = Sealer(ROOM, 4, cipher).entry(entry)
    assert value[0] == crypto.ENVELOPE and b"a marker text" not in value
    assert crypto.envelope_header(value)[:2] == (4, entry.id)
    assert Opener(ROOM, {4: cipher}).entry(value) == entry
    with pytest.raises(crypto.Unreadable):
        Opener(OTHER_ROOM, {4: cipher}).entry(value)
    # The id in the clear names the message: another id does not open.
    other = crypto.seal_envelope(cipher, 4, ROOM, entry.id, entry.SerializeToString())
    swapped = other.replace(entry.id.encode(), str(uuid.uuid4()).encode())
    with pytest.raises(crypto.Unreadable):
        Opener(ROOM, {4: cipher}).entry(swapped)
    with pytest.raises(crypto.Unreadable):
        Opener(ROOM, {4: cipher}).entry(entry.SerializeToString())


def _keys(current: int, **keys: bytes) -> str:
    return json.dumps(
        {
            "current": current,
            "keys": {name.lstrip("v"): base64.b64encode(k).decode() for name, k in keys.items()},
        }
    )


def test_master_keys_parse_and_wrap_data_keys() -> None:
    master = MasterKeys.parse(_keys(2, v1=os.urandom(32), v2=os.urandom(32)))
    assert master.current == 2 and sorted(master.keys) == [1, 2]
    data_key = os.urandom(32)
    wrapped = wrap(master, 2, ROOM, 1, data_key)
    assert data_key not in wrapped
    assert unwrap(master, 2, ROOM, 1, wrapped) == data_key
    with pytest.raises(crypto.Unreadable):
        unwrap(master, 2, OTHER_ROOM, 1, wrapped)
    with pytest.raises(crypto.Unreadable):
        unwrap(master, 2, ROOM, 2, wrapped)


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        json.dumps({"keys": {"1": base64.b64encode(bytes(32)).decode()}}),
        json.dumps({"current": 2, "keys": {"1": base64.b64encode(bytes(32)).decode()}}),
        json.dumps({"current": 1, "keys": {"1": base64.b64encode(bytes(16)).decode()}}),
        json.dumps({"current": 1, "keys": {"1": "%%%"}}),
        json.dumps({"current": 1, "keys": {"one": base64.b64encode(bytes(32)).decode()}}),
    ],
)
def test_malformed_master_keys_fail(text: str) -> None:
    with pytest.raises(MasterKeyError):
        MasterKeys.parse(text)
