"""Master keys and each room's data keys.

Master keys come from a secret (MASTER_KEYS_FILE or MASTER_KEYS: `{"current": 2, "keys": {"1":
"<base64 of 32 bytes>", "2": …}}`), never from the database. A room's data keys (32 random bytes, one
per version) are stored in `room_keys` wrapped with AES-256-GCM by a master key version (random nonce;
AAD `chatpop-room-key|{room_id}|{version}|{master_version}`; stored as nonce + ciphertext + tag). The
first write to a room creates its version 1; new content is sealed with the newest version.

Unwrapped keys are cached in the process (LRU, bounded, each entry trusted for `ttl` seconds): the
message path costs no database round trip. Which version is a room's newest is trusted for `ttl` too,
so after RotateRoomKeys other processes seal with the old version for at most that long, and a data
key version is retired (deleted) only by a re-encryption pass that started later than that.

Erasing a room (`destroy_room_keys`, in the eraser's transaction) deletes its wrapped keys and records
it in `erased_rooms`: no key can be created for it again, so no later write can seal anything for it
(FAILED_PRECONDITION `room_erased`). Creation and destruction serialise on a per-room advisory lock.

The keyring is one per process (`install`, by the app at start-up): sealing and opening happen in
free functions of every capability module (log entries, pins, reports, the hot cache), which would
otherwise all have to be handed it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import os
import time
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from chatpop.messaging.v1 import messaging_pb2
from chatpop_common.errors import FailedPrecondition, Unavailable
from chatpop_messaging import crypto

log = logging.getLogger(__name__)

# A per-room advisory lock (two int4 keys: this namespace, hashtext(room_id)).
_LOCK_NAMESPACE = 0x6B657973  # "keys"
_LOCK = "SELECT pg_advisory_xact_lock($1, hashtext($2))"
_NEWEST = (
    "SELECT version, wrapped_key, master_version, created_at FROM room_keys WHERE room_id = $1 "
    "ORDER BY version DESC LIMIT 1"
)
_VERSIONS = (
    "SELECT version, wrapped_key, master_version FROM room_keys "
    "WHERE room_id = $1 AND version = ANY($2::int[])"
)
_ERASED = "SELECT EXISTS (SELECT 1 FROM erased_rooms WHERE room_id = $1)"
_INSERT_KEY = """
INSERT INTO room_keys (room_id, version, wrapped_key, master_version) VALUES ($1, $2, $3, $4)
ON CONFLICT (room_id, version) DO NOTHING
"""
# Content on older versions is brought to the newest by the re-encryption (reencrypt.py).
QUEUE_ROOM = """
INSERT INTO reencrypt_rooms (room_id) VALUES ($1)
ON CONFLICT (room_id) DO UPDATE SET next_seq = 0, started_at = NULL, queued_at = now()
"""


class MasterKeyError(ValueError):
    """MASTER_KEYS is missing or malformed."""


@dataclass(frozen=True)
class MasterKeys:
    """The master key versions this process holds, and the one new data keys are wrapped with."""

    current: int
    keys: Mapping[int, bytes]

    @classmethod
    def parse(cls, text: str) -> MasterKeys:
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise MasterKeyError(f"master keys are not JSON: {exc.msg}") from None
        if not isinstance(document, dict) or not isinstance(document.get("keys"), dict):
            raise MasterKeyError('master keys must be {"current": N, "keys": {"N": "<base64>"}}')
        current = document.get("current")
        if not isinstance(current, int) or isinstance(current, bool) or current <= 0:
            raise MasterKeyError("master keys: `current` must be a positive integer")
        keys: dict[int, bytes] = {}
        for name, value in document["keys"].items():
            if not str(name).isdigit() or int(name) <= 0:
                raise MasterKeyError(f"master key version {name!r} is not a positive integer")
            try:
                key = base64.b64decode(str(value), validate=True)
            except (binascii.Error, ValueError):
                raise MasterKeyError(f"master key {name} is not base64") from None
            if len(key) != crypto.KEY_SIZE:
                raise MasterKeyError(f"master key {name} must be {crypto.KEY_SIZE} bytes, not {len(key)}")
            keys[int(name)] = key
        if current not in keys:
            raise MasterKeyError(f"master keys: the current version {current} is not among the keys")
        return cls(current=current, keys=keys)

    @classmethod
    def load(cls, file: str | None, value: str | None) -> MasterKeys:
        """From MASTER_KEYS_FILE (preferred) or MASTER_KEYS."""
        if file:
            try:
                text = Path(file).read_text()
            except OSError as exc:
                raise MasterKeyError(f"cannot read MASTER_KEYS_FILE {file}: {exc.strerror}") from None
            return cls.parse(text)
        if value:
            return cls.parse(value)
        raise MasterKeyError("MASTER_KEYS_FILE or MASTER_KEYS is required")

    def cipher(self, version: int) -> AESGCM:
        key = self.keys.get(version)
        if key is None:
            raise FailedPrecondition(
                f"Master key version {version} is not in MASTER_KEYS; add it back or re-wrap first.",
                code="master_key_missing",
            )
        return AESGCM(key)


def generate_master_keys(version: int = 1) -> str:
    """A new MASTER_KEYS document with one random key (for `make run` and tests)."""
    key = base64.b64encode(os.urandom(crypto.KEY_SIZE)).decode()
    return json.dumps({"current": version, "keys": {str(version): key}})


def _wrap_aad(room_id: str, version: int, master_version: int) -> bytes:
    return f"chatpop-room-key|{room_id}|{version}|{master_version}".encode()


def wrap(master: MasterKeys, master_version: int, room_id: str, version: int, data_key: bytes) -> bytes:
    nonce = os.urandom(crypto.NONCE_SIZE)
    sealed = master.cipher(master_version).encrypt(
        nonce, data_key, _wrap_aad(room_id, version, master_version)
    )
    return nonce + sealed


def unwrap(master: MasterKeys, master_version: int, room_id: str, version: int, wrapped: bytes) -> bytes:
    nonce, sealed = bytes(wrapped[: crypto.NONCE_SIZE]), bytes(wrapped[crypto.NONCE_SIZE :])
    try:
        return master.cipher(master_version).decrypt(
            nonce, sealed, _wrap_aad(room_id, version, master_version)
        )
    except InvalidTag:
        raise crypto.Unreadable(f"data key {version} of room {room_id} does not unwrap") from None


class Sealer:
    """A room's newest data key: what new content is sealed with."""

    __slots__ = ("_cipher", "room_id", "version")

    def __init__(self, room_id: str, version: int, cipher: AESGCM) -> None:
        self.room_id = room_id
        self.version = version
        self._cipher = cipher

    def data(self, entity_id: str, field: str, data: bytes | None) -> bytes | None:
        if data is None:
            return None
        return crypto.seal(self._cipher, self.version, self.room_id, entity_id, field, data)

    def text(self, entity_id: str, field: str, text: str) -> bytes:
        return crypto.seal(self._cipher, self.version, self.room_id, entity_id, field, text.encode())

    def opener(self) -> Opener:
        """Opens what this key sealed."""
        return Opener(self.room_id, {self.version: self._cipher})

    def entry(self, message: messaging_pb2.Message) -> bytes:
        """The Redis value of a log entry (hot cache, tombstone, pub/sub)."""
        return crypto.seal_envelope(
            self._cipher, self.version, self.room_id, message.id, message.SerializeToString()
        )


class Opener:
    """The data keys of a room that some stored values were sealed with."""

    __slots__ = ("_ciphers", "room_id")

    def __init__(self, room_id: str, ciphers: Mapping[int, AESGCM]) -> None:
        self.room_id = room_id
        self._ciphers = ciphers

    def data(self, entity_id: str, field: str, value: bytes | None) -> bytes | None:
        """The plaintext of a column value; crypto.Unreadable when it cannot be opened here."""
        version = crypto.version_of(value)
        cipher = None if version is None else self._ciphers.get(version)
        return crypto.open_value(cipher, self.room_id, entity_id, field, value)

    def text(self, entity_id: str, field: str, value: bytes | None) -> str:
        data = self.data(entity_id, field, value)
        try:
            return (data or b"").decode()
        except UnicodeDecodeError:
            raise crypto.Unreadable("not text") from None

    def entry(self, value: bytes) -> messaging_pb2.Message:
        """The log entry a Redis value holds; crypto.Unreadable if it is not one of this room's."""
        version, _, _ = crypto.envelope_header(value)
        message_id, plaintext = crypto.open_envelope(self._ciphers.get(version), self.room_id, value)
        try:
            message = messaging_pb2.Message.FromString(plaintext)
        except Exception:
            raise crypto.Unreadable("not an encoded message") from None
        if message.id != message_id or message.room_id != self.room_id:
            raise crypto.Unreadable("the message is not the one sealed")
        return message


def versions_in(values: Iterable[bytes | None]) -> set[int]:
    """The data key versions column values (or Redis envelopes) were sealed with."""
    found: set[int] = set()
    for value in values:
        if not value:
            continue
        try:
            if value[0] == crypto.ENVELOPE:
                found.add(crypto.envelope_header(value)[0])
            else:
                version = crypto.version_of(value)
                if version is not None:
                    found.add(version)
        except crypto.Unreadable:
            continue
    return found


class Keyring:
    """The process's master keys and its cache of unwrapped data keys."""

    def __init__(
        self, pool: asyncpg.Pool, master: MasterKeys, *, cache_size: int = 10_000, ttl: float = 30.0
    ):
        self._pool = pool
        self.master = master
        self._cache_size = cache_size
        self._ttl = ttl
        # (room, version) -> (cipher, expires); room -> (newest version, expires).
        self._ciphers: OrderedDict[tuple[str, int], tuple[AESGCM, float]] = OrderedDict()
        self._newest: OrderedDict[str, tuple[int, float]] = OrderedDict()
        # Rooms whose newest key is being made ready in the background (warm).
        self._warming: dict[str, asyncio.Task[None]] = {}
        _KEYRINGS.add(self)

    @property
    def pool(self) -> asyncpg.Pool:
        return self._pool

    @property
    def ttl(self) -> float:
        return self._ttl

    async def check(self) -> None:
        """Fail at start-up when data keys are wrapped by a master version this process lacks."""
        rows = await self._pool.fetch("SELECT DISTINCT master_version FROM room_keys")
        missing = sorted(
            int(row["master_version"]) for row in rows if row["master_version"] not in self.master.keys
        )
        if missing:
            raise MasterKeyError(
                f"data keys are wrapped by master key versions {missing} that MASTER_KEYS lacks: "
                "add them back (and run RotateMasterKey before removing them)"
            )

    def forget(self, room_id: str) -> None:
        """Drop what is cached about a room (its keys were destroyed or rotated)."""
        self._newest.pop(room_id, None)
        for cached in [key for key in self._ciphers if key[0] == room_id]:
            del self._ciphers[cached]

    def _cached(self, room_id: str, version: int, now: float) -> AESGCM | None:
        found = self._ciphers.get((room_id, version))
        if found is None:
            return None
        if found[1] < now:
            del self._ciphers[(room_id, version)]
            return None
        self._ciphers.move_to_end((room_id, version))
        return found[0]

    def _remember(self, room_id: str, version: int, data_key: bytes, now: float) -> AESGCM:
        cipher = AESGCM(data_key)
        self._ciphers[(room_id, version)] = (cipher, now + self._ttl)
        self._ciphers.move_to_end((room_id, version))
        while len(self._ciphers) > self._cache_size:
            self._ciphers.popitem(last=False)
        return cipher

    def _remember_newest(self, room_id: str, version: int, now: float) -> None:
        self._newest[room_id] = (version, now + self._ttl)
        self._newest.move_to_end(room_id)
        while len(self._newest) > self._cache_size:
            self._newest.popitem(last=False)

    def _unwrap_row(self, room_id: str, row: Any, now: float) -> AESGCM:
        data_key = unwrap(self.master, row["master_version"], room_id, row["version"], row["wrapped_key"])
        return self._remember(room_id, int(row["version"]), data_key, now)

    async def sealer(self, room_id: str) -> Sealer:
        """The room's newest data key, created on the room's first write; FAILED_PRECONDITION
        `room_erased` for a room whose keys were destroyed."""
        now = time.monotonic()
        newest = self._newest.get(room_id)
        if newest is not None and newest[1] >= now:
            cipher = self._cached(room_id, newest[0], now)
            if cipher is not None:
                return Sealer(room_id, newest[0], cipher)
        row = await self._pool.fetchrow(_NEWEST, room_id)
        if row is None:
            row = await self._create(room_id)
        cipher = self._cached(room_id, row["version"], now) or self._unwrap_row(room_id, row, now)
        self._remember_newest(room_id, int(row["version"]), now)
        return Sealer(room_id, int(row["version"]), cipher)

    def warm(self, room_id: str) -> None:
        """Have the room's newest data key ready before its first write needs it (created now when
        the room has none yet), in the background. Best effort: a failure (the room was erased,
        Postgres is away) leaves it to the first write, as without this."""
        newest = self._newest.get(room_id)
        if room_id in self._warming or (newest is not None and newest[1] >= time.monotonic()):
            return
        task = asyncio.get_running_loop().create_task(self._warm(room_id), name="ready a room's key")
        self._warming[room_id] = task

    async def _warm(self, room_id: str) -> None:
        try:
            await self.sealer(room_id)
        except Exception as exc:
            log.debug("readying room %s's data key failed: %s", room_id, exc)
        finally:
            self._warming.pop(room_id, None)

    def stop_warming(self) -> None:
        for task in self._warming.values():
            task.cancel()
        self._warming.clear()

    async def _create(self, room_id: str) -> Any:
        try:
            async with self._pool.acquire() as connection, connection.transaction():
                # Never wait long behind an eraser: the caller may hold locks of its own.
                await connection.execute("SET LOCAL lock_timeout = '5s'")
                await connection.execute(_LOCK, _LOCK_NAMESPACE, room_id)
                if await connection.fetchval(_ERASED, room_id):
                    raise FailedPrecondition("This room was erased.", code="room_erased")
                master = self.master.current
                await connection.execute(
                    _INSERT_KEY,
                    room_id,
                    1,
                    wrap(self.master, master, room_id, 1, os.urandom(crypto.KEY_SIZE)),
                    master,
                )
                return await connection.fetchrow(_NEWEST, room_id)
        except asyncpg.LockNotAvailableError as exc:
            raise Unavailable("The room's keys are busy; try again.", code="keys_busy") from exc

    async def opener(self, room_id: str, values: Iterable[bytes | None], *, connection: Any = None) -> Opener:
        """The keys that open `values` of the room (those it still has: an erased room's are gone);
        `connection` reads the keys not cached (inside the caller's transaction)."""
        wanted = versions_in(values)
        now = time.monotonic()
        ciphers: dict[int, AESGCM] = {}
        missing = []
        for version in wanted:
            cipher = self._cached(room_id, version, now)
            if cipher is None:
                missing.append(version)
            else:
                ciphers[version] = cipher
        if missing:
            rows = await (connection or self._pool).fetch(_VERSIONS, room_id, missing)
            for row in rows:
                ciphers[int(row["version"])] = self._unwrap_row(room_id, row, now)
        return Opener(room_id, ciphers)

    async def rotate_room(self, connection: asyncpg.Connection, room_id: str) -> int | None:
        """A new newest data key version for a room that has keys (inside the caller's transaction);
        the new version, or None for a room without keys (it gets one on its first write)."""
        await connection.execute(_LOCK, _LOCK_NAMESPACE, room_id)
        newest = await connection.fetchrow(_NEWEST, room_id)
        if newest is None:
            return None
        version = int(newest["version"]) + 1
        master = self.master.current
        await connection.execute(
            _INSERT_KEY,
            room_id,
            version,
            wrap(self.master, master, room_id, version, os.urandom(crypto.KEY_SIZE)),
            master,
        )
        await connection.execute(QUEUE_ROOM, room_id)
        self.forget(room_id)
        return version

    async def rotate_master(self, batch: int = 500) -> int:
        """Re-wrap every data key wrapped by an older master version with the current one, a batch per
        transaction (replicas doing it together skip each other's rows); how many this call re-wrapped."""
        current = self.master.current
        rewrapped = 0
        while True:
            async with self._pool.acquire() as connection, connection.transaction():
                rows = await connection.fetch(
                    "SELECT room_id, version, wrapped_key, master_version FROM room_keys "
                    "WHERE master_version <> $1 ORDER BY room_id, version LIMIT $2 FOR UPDATE SKIP LOCKED",
                    current,
                    batch,
                )
                if not rows:
                    return rewrapped
                for row in rows:
                    data_key = unwrap(
                        self.master, row["master_version"], row["room_id"], row["version"], row["wrapped_key"]
                    )
                    await connection.execute(
                        "UPDATE room_keys SET wrapped_key = $3, master_version = $4 "
                        "WHERE room_id = $1 AND version = $2",
                        row["room_id"],
                        row["version"],
                        wrap(self.master, current, row["room_id"], row["version"], data_key),
                        current,
                    )
                rewrapped += len(rows)


# Every keyring of the process, so destroying a room's keys drops them from every cache at once.
_KEYRINGS: weakref.WeakSet[Keyring] = weakref.WeakSet()
_INSTALLED: list[Keyring] = []


def install(keyring: Keyring) -> None:
    """Make `keyring` the process's, until it is uninstalled (the app installs one at start-up and
    uninstalls it when it stops; with several apps in one process, as tests run them, the newest
    still running is used: they share their database and master keys)."""
    _INSTALLED.append(keyring)


def uninstall(keyring: Keyring) -> None:
    keyring.stop_warming()
    if keyring in _INSTALLED:
        _INSTALLED.remove(keyring)


def keyring() -> Keyring:
    if not _INSTALLED:
        raise RuntimeError("no keyring installed: messaging's app installs one at start-up")
    return _INSTALLED[-1]


async def destroy_room_keys(connection: asyncpg.Connection, room_id: str) -> int:
    """Crypto-shred a room inside the caller's transaction: delete its wrapped data keys and record it
    as erased, so no key can be created for it again. How many keys were destroyed."""
    await connection.execute(_LOCK, _LOCK_NAMESPACE, room_id)
    await connection.execute(
        "INSERT INTO erased_rooms (room_id) VALUES ($1) ON CONFLICT (room_id) DO NOTHING", room_id
    )
    status = await connection.execute("DELETE FROM room_keys WHERE room_id = $1", room_id)
    await connection.execute("DELETE FROM reencrypt_rooms WHERE room_id = $1", room_id)
    for ring in list(_KEYRINGS):
        ring.forget(room_id)
    return int(status.rsplit(" ", 1)[-1])


async def is_erased(connection: Any, room_id: str) -> bool:
    return bool(await connection.fetchval(_ERASED, room_id))
