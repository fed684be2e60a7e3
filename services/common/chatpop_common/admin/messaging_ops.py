"""Commands answered by messaging: a room's hot cache and erasure, retention, encryption keys."""

from __future__ import annotations

import argparse

from chatpop.messaging.v1 import messaging_pb2
from chatpop_common.admin.calls import call, room_id
from chatpop_common.admin.connection import Services, UsageError
from chatpop_common.admin.output import emit, plain

# Rounds `keys reencrypt --until-done` makes at most before it stops and says more is left.
REENCRYPT_ROUNDS_MAX = 10_000


async def room_inspect(services: Services, args: argparse.Namespace) -> None:
    room = await room_id(services, args.room)
    response = await call(
        services,
        services.messaging.InspectRoom,
        messaging_pb2.InspectRoomRequest(room_id=room),
        "InspectRoom",
    )
    emit({"room_id": room, **plain(response)})


async def room_rebuild_cache(services: Services, args: argparse.Namespace) -> None:
    room = await room_id(services, args.room)
    response = await call(
        services,
        services.messaging.RebuildHotCache,
        messaging_pb2.RebuildHotCacheRequest(room_id=room),
        "RebuildHotCache",
    )
    emit({"room_id": room, **plain(response)})


async def room_erase(services: Services, args: argparse.Namespace) -> None:
    if not args.yes:
        raise UsageError("erasing a room cannot be undone: add --yes to confirm")
    room = await room_id(services, args.room)
    response = await call(
        services, services.messaging.EraseRoom, messaging_pb2.EraseRoomRequest(room_id=room), "EraseRoom"
    )
    emit({"room_id": room, **plain(response)})


async def retention_run(services: Services, args: argparse.Namespace) -> None:
    room = await room_id(services, args.room) if args.room else ""
    response = await call(
        services,
        services.messaging.RunRetention,
        messaging_pb2.RunRetentionRequest(room_id=room, dry_run=not args.apply),
        "RunRetention",
    )
    emit(plain(response))


async def keys_versions(services: Services, args: argparse.Namespace) -> None:
    room = await room_id(services, args.room) if args.room else ""
    response = await call(
        services,
        services.messaging.GetKeyVersions,
        messaging_pb2.GetKeyVersionsRequest(room_id=room),
        "GetKeyVersions",
    )
    emit({"room_id": room or None, **plain(response)})


async def keys_rotate_master(services: Services, args: argparse.Namespace) -> None:
    response = await call(
        services,
        services.messaging.RotateMasterKey,
        messaging_pb2.RotateMasterKeyRequest(),
        "RotateMasterKey",
    )
    emit(plain(response))


async def _rooms(services: Services, rooms: list[str] | None) -> list[str]:
    return [await room_id(services, room) for room in rooms or ()]


async def keys_rotate_rooms(services: Services, args: argparse.Namespace) -> None:
    rooms = await _rooms(services, args.room)
    response = await call(
        services,
        services.messaging.RotateRoomKeys,
        messaging_pb2.RotateRoomKeysRequest(room_ids=rooms),
        "RotateRoomKeys",
    )
    emit(plain(response))


async def keys_reencrypt(services: Services, args: argparse.Namespace) -> None:
    rooms = await _rooms(services, args.room)
    request = messaging_pb2.ReencryptRoomsRequest(room_ids=rooms, limit=args.limit)
    total, rounds, more = 0, 0, True
    while more and rounds < (REENCRYPT_ROUNDS_MAX if args.until_done else 1):
        response = await call(services, services.messaging.ReencryptRooms, request, "ReencryptRooms")
        total += response.reencrypted
        rounds += 1
        more = response.more
    emit({"reencrypted": total, "more": more, "calls": rounds})
