"""Media records: what the edge stored for a room, who may reference it, and which message does.

The edge checks an upload by content, opens a PENDING record (CreateMedia), stores the variants it
produced under the record's prefix (`media/{room_id}/{media_id}/`) and completes it (CompleteMedia):
the record is READY and one message of its uploader in its room may carry it. SendMessage links the
two in the message's own transaction (`lock_for_message`, `link`), so a media is never on two
messages and never on a message of another room or sender. A purge (`request_purge`) moves the record
to `deleting` and writes a `media.purge` outbox row in the caller's transaction; the relay deletes
the objects and marks it `deleted` (media_purge.py). Clients see `deleting` as DELETED already.

Messages carry their media's record (Message.media, without URLs): rows name it in `media_id`, and
`fill` reads the records of a page of messages in one query.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from chatpop.messaging.v1 import messaging_pb2
from chatpop_common import outbox
from chatpop_common.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from chatpop_messaging.metrics import MEDIA_COMPLETED, MEDIA_CREATED

PURGE_TOPIC = "media.purge"
# Most ids one GetMedia asks about.
MAX_GET = 100

_KINDS: dict[str, messaging_pb2.MediaKind] = {
    "photo": messaging_pb2.MEDIA_KIND_PHOTO,
    "voice": messaging_pb2.MEDIA_KIND_VOICE,
    "video": messaging_pb2.MEDIA_KIND_VIDEO,
}
# The variants each kind stores: `full` always, a photo's `thumb`, a video's `poster`.
VARIANTS = {"photo": ("full", "thumb"), "voice": ("full",), "video": ("full", "poster")}
_STATES = {
    "pending": messaging_pb2.MEDIA_STATE_PENDING,
    "ready": messaging_pb2.MEDIA_STATE_READY,
    # A purge under way: never served again.
    "deleting": messaging_pb2.MEDIA_STATE_DELETED,
    "deleted": messaging_pb2.MEDIA_STATE_DELETED,
}
_MAX_CONTENT_TYPE = 100

_COLUMNS = (
    "room_id, id, uploader_participant_id, kind, state, content_type, size_bytes, width, height, "
    "duration_ms, variants, message_seq, created_at"
)
_CREATE = f"""
INSERT INTO media (room_id, id, uploader_participant_id, kind) VALUES ($1, $2, $3, $4)
RETURNING {_COLUMNS}
"""  # noqa: S608 - constant column list
_GET = f"SELECT {_COLUMNS} FROM media WHERE room_id = $1 AND id = ANY($2::uuid[])"  # noqa: S608
# Leaves out media whose message is hidden pending review: its text is withheld from everyone but the
# host, and so are its media.
_GET_SHOWN = f"""
SELECT {_COLUMNS} FROM media
WHERE room_id = $1 AND id = ANY($2::uuid[]) AND NOT EXISTS (
    SELECT 1 FROM messages m
    WHERE m.room_id = media.room_id AND m.seq = media.message_seq AND m.hidden_at IS NOT NULL
)
"""  # noqa: S608
_LOCK = f"SELECT {_COLUMNS} FROM media WHERE room_id = $1 AND id = $2 FOR UPDATE"  # noqa: S608
_ROOM_OF = "SELECT room_id FROM media WHERE id = $1 LIMIT 1"
_COMPLETE = f"""
UPDATE media SET state = 'ready', ready_at = now(), content_type = $3, size_bytes = $4, width = $5,
    height = $6, duration_ms = $7, variants = $8::jsonb
WHERE room_id = $1 AND id = $2
RETURNING {_COLUMNS}
"""  # noqa: S608 - constant column list
_PURGE = """
UPDATE media SET state = 'deleting', delete_reason = $3
WHERE room_id = $1 AND id = $2 AND state IN ('pending', 'ready')
"""


def object_prefix(room_id: str, media_id: str) -> str:
    """Where every object of a media is stored in the bucket."""
    return f"media/{room_id}/{media_id}/"


def media_id(value: str, *, code: str) -> uuid.UUID:
    """A media id as stored (a UUID); InvalidArgument with `code` otherwise."""
    try:
        return uuid.UUID(value)
    except (ValueError, AttributeError, TypeError) as exc:
        raise InvalidArgument("A media id is a UUID the platform gave an upload.", code=code) from exc


def kind_name(kind: int) -> str:
    for name, value in _KINDS.items():
        if value == kind:
            return name
    raise InvalidArgument("kind must be photo, voice or video.", code="invalid_media_kind")


def to_media(row: Any) -> messaging_pb2.Media:
    room_id, media = row["room_id"], str(row["id"])
    state = _STATES[row["state"]]
    record = messaging_pb2.Media(
        id=media,
        room_id=room_id,
        kind=_KINDS[row["kind"]],
        state=state,
        uploader_participant_id=row["uploader_participant_id"],
        content_type=row["content_type"],
        size_bytes=row["size_bytes"],
        width=row["width"],
        height=row["height"],
        duration_ms=row["duration_ms"],
        message_seq=row["message_seq"] or 0,
        object_prefix=object_prefix(room_id, media),
    )
    record.created_at.FromDatetime(row["created_at"])
    if state != messaging_pb2.MEDIA_STATE_DELETED:
        variants = row["variants"]
        for variant in json.loads(variants) if isinstance(variants, str) else variants:
            record.variants.add(**variant)
    return record


def as_deleted(media: messaging_pb2.Media) -> None:
    """What a purged media (or the media of a deleted message) reads as: DELETED, nothing to serve."""
    media.state = messaging_pb2.MEDIA_STATE_DELETED
    del media.variants[:]


@dataclass(frozen=True, slots=True)
class Completion:
    """What the edge stored for a media (CompleteMedia), checked."""

    content_type: str
    size_bytes: int
    width: int
    height: int
    duration_ms: int
    variants: list[messaging_pb2.MediaVariant]


def _content_type(value: str) -> str:
    if not value or len(value) > _MAX_CONTENT_TYPE or not value.isascii() or not value.isprintable():
        raise InvalidArgument("A stored object needs its content type.", code="invalid_media_content_type")
    return value


def completion(request: messaging_pb2.CompleteMediaRequest) -> Completion:
    """The request's description of the stored objects; InvalidArgument when it does not add up."""
    if min(request.size_bytes, request.width, request.height, request.duration_ms) < 0:
        raise InvalidArgument(
            "Sizes, dimensions and durations are never negative.", code="invalid_media_size"
        )
    names = [variant.name for variant in request.variants]
    if "full" not in names or len(set(names)) != len(names):
        raise InvalidArgument(
            "Name each stored variant once, `full` included.", code="invalid_media_variants"
        )
    variants: list[messaging_pb2.MediaVariant] = []
    for variant in request.variants:
        if min(variant.size_bytes, variant.width, variant.height) < 0:
            raise InvalidArgument("Sizes and dimensions are never negative.", code="invalid_media_size")
        variants.append(
            messaging_pb2.MediaVariant(
                name=variant.name,
                content_type=_content_type(variant.content_type),
                size_bytes=variant.size_bytes,
                width=variant.width,
                height=variant.height,
            )
        )
    return Completion(
        content_type=_content_type(request.content_type),
        size_bytes=request.size_bytes,
        width=request.width,
        height=request.height,
        duration_ms=request.duration_ms,
        variants=variants,
    )


async def request_purge(connection: asyncpg.Connection, room_id: str, media: uuid.UUID, reason: str) -> bool:
    """In the caller's transaction: the media is purged from now on (`deleting`, never served again)
    and the outbox holds the deletion of its objects. False when it was purged already."""
    status = await connection.execute(_PURGE, room_id, media, reason)
    if status != "UPDATE 1":
        return False
    payload = json.dumps({"room_id": room_id, "media_id": str(media)}).encode()
    await outbox.add(connection, PURGE_TOPIC, payload, str(media))
    return True


async def fill(
    connection: asyncpg.Pool | asyncpg.Connection, room_id: str, messages: Iterable[messaging_pb2.Message]
) -> None:
    """Give the messages (of one room) that carry media its record as it is now; a deleted message's
    media reads as DELETED."""
    carrying: dict[str, list[messaging_pb2.Message]] = {}
    for message in messages:
        if not message.HasField("media") or not message.media.id:
            continue
        if message.state.deleted:
            as_deleted(message.media)
            continue
        carrying.setdefault(message.media.id, []).append(message)
    if not carrying:
        return
    rows = await connection.fetch(_GET, room_id, [uuid.UUID(key) for key in carrying])
    for row in rows:
        record = to_media(row)
        for message in carrying.get(record.id, ()):
            message.media.CopyFrom(record)


async def lock_for_message(
    connection: asyncpg.Connection,
    room_id: str,
    sender_participant_id: str,
    media: uuid.UUID,
    allowed_kinds: Collection[str],
) -> None:
    """In the message's transaction: the media may go on a new message of this sender in this room
    (and stays locked until it does); the precise refusal otherwise."""
    row = await connection.fetchrow(_LOCK, room_id, media)
    if row is None:
        elsewhere = await connection.fetchval(_ROOM_OF, media)
        if elsewhere is not None:
            raise PermissionDenied("This media belongs to another room.", code="media_not_in_room")
        raise NotFound("There is no such media.", code="media_not_found")
    if row["uploader_participant_id"] != sender_participant_id:
        raise PermissionDenied("Only its uploader can send this media.", code="media_not_yours")
    if row["state"] != "ready":
        raise FailedPrecondition("This media is not ready to be sent.", code="media_not_ready")
    if row["message_seq"] is not None:
        raise FailedPrecondition("This media is on another message already.", code="media_in_use")
    if row["kind"] not in allowed_kinds:
        raise PermissionDenied(
            f"This room does not allow {row['kind']} messages any more.", code="media_not_allowed"
        )


async def link(connection: asyncpg.Connection, room_id: str, media: uuid.UUID, message_seq: int) -> None:
    """In the message's transaction, after `lock_for_message`: the media is carried by that message."""
    await connection.execute(
        "UPDATE media SET message_seq = $3 WHERE room_id = $1 AND id = $2", room_id, media, message_seq
    )


class MediaRecords:
    """CreateMedia, CompleteMedia, AbandonMedia and GetMedia on the `media` table."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create(self, room_id: str, uploader: str, kind: str) -> messaging_pb2.Media:
        row = await self._pool.fetchrow(_CREATE, room_id, uuid.uuid4(), uploader, kind)
        MEDIA_CREATED.labels(kind).inc()
        return to_media(row)

    async def _own(
        self, connection: asyncpg.Connection, room_id: str, uploader: str, media: uuid.UUID
    ) -> Any:
        row = await connection.fetchrow(_LOCK, room_id, media)
        if row is None:
            raise NotFound("There is no such media in this room.", code="media_not_found")
        if row["uploader_participant_id"] != uploader:
            raise PermissionDenied("Only its uploader can do this.", code="media_not_yours")
        return row

    async def complete(
        self, room_id: str, uploader: str, media: uuid.UUID, done: Completion
    ) -> messaging_pb2.Media:
        async with self._pool.acquire() as connection, connection.transaction():
            row = await self._own(connection, room_id, uploader, media)
            if row["state"] == "ready":
                return to_media(row)
            if row["state"] != "pending":
                raise FailedPrecondition("This media was deleted.", code="media_deleted")
            allowed = VARIANTS[row["kind"]]
            if any(variant.name not in allowed for variant in done.variants):
                raise InvalidArgument(
                    f"A {row['kind']} stores only: {', '.join(allowed)}.", code="invalid_media_variants"
                )
            prefix = object_prefix(room_id, str(media))
            variants = [
                {
                    "name": variant.name,
                    "content_type": variant.content_type,
                    "size_bytes": variant.size_bytes,
                    "width": variant.width,
                    "height": variant.height,
                    "object_key": prefix + variant.name,
                }
                for variant in done.variants
            ]
            row = await connection.fetchrow(
                _COMPLETE,
                room_id,
                media,
                done.content_type,
                done.size_bytes,
                done.width,
                done.height,
                done.duration_ms,
                json.dumps(variants),
            )
        MEDIA_COMPLETED.labels(row["kind"]).inc()
        return to_media(row)

    async def abandon(self, room_id: str, uploader: str, media: uuid.UUID) -> None:
        async with self._pool.acquire() as connection, connection.transaction():
            row = await self._own(connection, room_id, uploader, media)
            if row["message_seq"] is not None and row["state"] == "ready":
                raise FailedPrecondition(
                    "This media is on a message: delete the message instead.", code="media_in_use"
                )
            await request_purge(connection, room_id, media, "abandoned")

    async def get(
        self, room_id: str, ids: Sequence[uuid.UUID], *, withhold_hidden: bool = False
    ) -> list[messaging_pb2.Media]:
        """The records among `ids` in this room, in the order asked (unknown ids left out, and with
        `withhold_hidden` those on a message hidden pending review)."""
        rows = await self._pool.fetch(_GET_SHOWN if withhold_hidden else _GET, room_id, list(ids))
        found = {row["id"]: to_media(row) for row in rows}
        return [found[media] for media in dict.fromkeys(ids) if media in found]
