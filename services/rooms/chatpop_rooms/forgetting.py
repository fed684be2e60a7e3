"""Forgetting a deleted account (ForgetSubject, identity's service credential).

In one transaction, every participant of the account:
- gets a neutral name, `deleted_` and six random letters or digits, unique in its room (names are
  5-15 characters, unique per room ignoring case), without the verified badge;
- is detached from the account (its subject becomes `deleted:<participant id>`, which names no
  identity) and loses the hashed network it joined from;
- has its version bumped, so every room token it holds stops working.
The rooms the account hosts are closed (with their Back Rooms), not handed over: nobody else agreed
to host them, and a host's powers (bans, the reports queue, the Back Room's seats) should not pass to
someone who never asked for them. Their history stays readable like any closed room's.

messaging is told through the outbox (`participants.forgotten`, at most 10,000 participants per row),
with the account's choice to erase its messages passed on; the relay calls ForgetParticipants with
rooms' service credential until it succeeds. The subject is remembered in `forgotten_subjects`, so
an access token the account still holds cannot create a room or join one afterwards. Calling again
changes nothing: the account has no participants left and its rooms are closed.
"""

from __future__ import annotations

import json
import secrets
import string
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
import grpc

from chatpop.messaging.v1 import messaging_pb2, messaging_pb2_grpc
from chatpop_common import outbox
from chatpop_common.errors import InvalidArgument, PermissionDenied
from chatpop_common.service_auth import ServiceCredentials

FORGOTTEN_TOPIC = "participants.forgotten"
# ForgetParticipants takes at most this many participants per call.
BATCH_MAX = 10_000
NAME_PREFIX = "deleted_"
NAME_ALPHABET = string.ascii_lowercase + string.digits
NAME_RANDOM = 6
NAME_DRAWS = 20
DETACHED_PREFIX = "deleted:"
FORGET_TIMEOUT = 30.0

_PARTICIPANTS = """
SELECT id, room_id FROM participants WHERE subject = $1 ORDER BY room_id FOR UPDATE
"""
_NAME_FREE = "SELECT NOT EXISTS (SELECT 1 FROM participants WHERE room_id = $1 AND username_lower = $2)"
_FORGET = """
UPDATE participants SET username = $3, subject = $4, verified = false, version = version + 1,
                        client_ip_hash = NULL
WHERE room_id = $1 AND id = $2
"""
_HOSTED = """
SELECT id, back_room_id FROM rooms WHERE host_id = $1 AND closed_at IS NULL AND parent_room_id IS NULL
FOR UPDATE
"""
_CLOSE = """
UPDATE rooms SET closed_at = coalesce(closed_at, now()), updated_at = now() WHERE id = ANY($1::uuid[])
"""
_IS_FORGOTTEN = "SELECT EXISTS (SELECT 1 FROM forgotten_subjects WHERE subject = $1)"
_REMEMBER = """
INSERT INTO forgotten_subjects (subject) VALUES ($1) ON CONFLICT (subject) DO NOTHING
"""


@dataclass(frozen=True, slots=True)
class Forgotten:
    room_id: str
    participant_id: str
    username: str


@dataclass(frozen=True, slots=True)
class Outcome:
    participants: list[Forgotten]
    # Ids of the rooms (main rooms and their Back Rooms) closed.
    rooms_closed: list[str]


def neutral_name() -> str:
    return NAME_PREFIX + "".join(secrets.choice(NAME_ALPHABET) for _ in range(NAME_RANDOM))


def subject_of(raw: str) -> str:
    subject = raw.strip()
    if not subject or len(subject) > 128 or subject.startswith(DETACHED_PREFIX):
        raise InvalidArgument("subject must name an identity.", code="invalid_subject")
    return subject


async def is_forgotten(pool: asyncpg.Pool, subject: str) -> bool:
    return bool(await pool.fetchval(_IS_FORGOTTEN, subject))


async def refuse_forgotten(pool: asyncpg.Pool, subject: str) -> None:
    """PERMISSION_DENIED `account_deleted` for a token of an account deleted since it was issued."""
    if await is_forgotten(pool, subject):
        raise PermissionDenied("This account was deleted.", code="account_deleted")


async def _free_name(conn: asyncpg.Connection, room_id: object) -> str:
    for _ in range(NAME_DRAWS):
        name = neutral_name()
        if await conn.fetchval(_NAME_FREE, room_id, name):
            return name
    raise RuntimeError("no free neutral name after many draws")


async def forget_subject(pool: asyncpg.Pool, subject: str, *, erase_messages: bool) -> Outcome:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(_REMEMBER, subject)
        forgotten: list[Forgotten] = []
        for row in await conn.fetch(_PARTICIPANTS, subject):
            # Names are drawn while the participants are locked; another join of the room waits on
            # the room's join lock, and a clash with it would roll the whole call back, to be retried.
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"rooms.join:{row['room_id']}"
            )
            name = await _free_name(conn, row["room_id"])
            await conn.execute(_FORGET, row["room_id"], row["id"], name, f"{DETACHED_PREFIX}{row['id']}")
            forgotten.append(Forgotten(str(row["room_id"]), str(row["id"]), name))
        hosted = await conn.fetch(_HOSTED, subject)
        closing = [row["id"] for row in hosted]
        closing += [row["back_room_id"] for row in hosted if row["back_room_id"] is not None]
        if closing:
            await conn.execute(_CLOSE, closing)
        for start in range(0, len(forgotten), BATCH_MAX):
            batch = forgotten[start : start + BATCH_MAX]
            payload = {
                "erase_messages": erase_messages,
                "participants": [
                    {"room_id": f.room_id, "participant_id": f.participant_id, "username": f.username}
                    for f in batch
                ],
            }
            await outbox.add(
                conn,
                FORGOTTEN_TOPIC,
                json.dumps(payload).encode(),
                f"{subject}:{batch[0].participant_id}",
            )
    return Outcome(forgotten, [str(room_id) for room_id in closing])


def _request(message: outbox.Message) -> messaging_pb2.ForgetParticipantsRequest:
    try:
        body = json.loads(message.payload)
        return messaging_pb2.ForgetParticipantsRequest(
            participants=[
                messaging_pb2.ForgottenParticipant(
                    room_id=str(p["room_id"]),
                    participant_id=str(p["participant_id"]),
                    username=str(p["username"]),
                )
                for p in body["participants"]
            ],
            erase_messages=bool(body["erase_messages"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise outbox.PermanentFailure(f"not a forgetting: {exc}") from exc


class ForgottenDelivery:
    """The `participants.forgotten` outbox handler: messaging's ForgetParticipants."""

    def __init__(
        self, messaging: messaging_pb2_grpc.MessagingServiceStub, credentials: ServiceCredentials
    ) -> None:
        self._messaging = messaging
        self._credentials = credentials

    async def __call__(self, messages: Sequence[outbox.Message]) -> None:
        for message in messages:
            try:
                await self._messaging.ForgetParticipants(
                    _request(message), metadata=await self._credentials.metadata(), timeout=FORGET_TIMEOUT
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                    raise outbox.PermanentFailure(f"ForgetParticipants refused: {exc.details()}") from exc
                raise
