"""The RPCs behind ephemeral room signals: typing, presence reports and snapshots, room updates,
kicks.

Each checks its caller and its input, then changes presence (`presence.py`) or simply publishes a
signal (`signals.py`). None of them touches the message log, a seq or a resume position.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence

import grpc

from chatpop.messaging.v1 import messaging_pb2
from chatpop.rooms.v1 import rooms_pb2_grpc
from chatpop_common.auth import Principal
from chatpop_common.errors import InvalidArgument, PermissionDenied, Unavailable
from chatpop_common.service_auth import is_service
from chatpop_messaging import validation
from chatpop_messaging.presence import PresenceBook, PresenceStep, RoomReport
from chatpop_messaging.rooms_lookup import get_room
from chatpop_messaging.signals import SignalPublisher

_INSTANCE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_PARTICIPANT_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
DEFAULT_PRESENCE_TTL = 30
MAX_PRESENCE_TTL = 3600
MAX_PRESENCE_ROOMS = 500
MAX_PRESENCE_IDS = 10_000
# Kicks: why a participant's sockets are closed (the edge's close reason), and how many one call names.
# `site_banned`: an admin's site-wide ban; `seat_removed`: a Back Room holder lost their seat (its host
# kicks them, naming only rooms they host).
SITE_BANNED, SEAT_REMOVED = "site_banned", "seat_removed"
KICK_CODES = frozenset({SITE_BANNED, SEAT_REMOVED})
MAX_KICK_TARGETS = 10_000
# Signals in flight at once while a call publishes its kicks.
_KICK_BATCH = 100


def _participant_ids(values: Sequence[str]) -> list[str]:
    if len(values) > MAX_PRESENCE_IDS:
        raise InvalidArgument(
            f"A report names at most {MAX_PRESENCE_IDS} participants per room.", code="too_many_participants"
        )
    for value in values:
        if not _PARTICIPANT_ID.fullmatch(value):
            raise InvalidArgument("A participant id is missing or malformed.", code="invalid_participant_id")
    return list(values)


def kick_targets(request: messaging_pb2.KickParticipantsRequest) -> tuple[list[tuple[str, str]], str]:
    """The distinct (room id, participant id) targets of a kick, in order, and its code; checked."""
    if request.code not in KICK_CODES:
        raise InvalidArgument(f"code must be one of: {', '.join(sorted(KICK_CODES))}.", code="invalid_code")
    if not 1 <= len(request.targets) <= MAX_KICK_TARGETS:
        raise InvalidArgument(f"Name 1 to {MAX_KICK_TARGETS} participants to kick.", code="invalid_targets")
    targets: dict[tuple[str, str], None] = {}
    for target in request.targets:
        key = (validation.room_id(target.room_id), validation.participant_id(target.participant_id))
        targets[key] = None
    return list(targets), request.code


def presence_reports(request: messaging_pb2.ReportPresenceRequest) -> tuple[str, int, list[RoomReport]]:
    """The instance, its ttl in milliseconds and its reports, checked; InvalidArgument otherwise."""
    if not _INSTANCE_ID.fullmatch(request.instance_id):
        raise InvalidArgument(
            "instance_id is required: 1-64 letters, digits, '_' or '-'.", code="invalid_instance_id"
        )
    ttl = request.ttl_seconds or DEFAULT_PRESENCE_TTL
    if not 1 <= ttl <= MAX_PRESENCE_TTL:
        raise InvalidArgument(
            f"ttl_seconds must be between 1 and {MAX_PRESENCE_TTL}.", code="invalid_ttl_seconds"
        )
    if len(request.rooms) > MAX_PRESENCE_ROOMS:
        raise InvalidArgument(f"Report at most {MAX_PRESENCE_ROOMS} rooms at a time.", code="too_many_rooms")
    reports: list[RoomReport] = []
    seen: set[str] = set()
    for room in request.rooms:
        room_id = validation.room_id(room.room_id)
        if room_id in seen:
            raise InvalidArgument("Each room may appear once in a report.", code="duplicate_room")
        seen.add(room_id)
        if room.count < 0:
            raise InvalidArgument("count must not be negative.", code="invalid_count")
        reports.append(
            RoomReport(
                room_id=room_id,
                joined=_participant_ids(room.joined),
                left=[] if room.complete else _participant_ids(room.left),
                complete=room.complete,
                count=room.count,
            )
        )
    return request.instance_id, ttl * 1000, reports


class RoomSignals:
    def __init__(
        self, publisher: SignalPublisher, presence: PresenceBook, rooms_channel: grpc.aio.Channel
    ) -> None:
        self._publisher = publisher
        self._presence = presence
        self._rooms = rooms_pb2_grpc.RoomsServiceStub(rooms_channel)

    async def typing(self, room_id: str, participant_id: str, username: str) -> None:
        await self._publisher.publish(
            messaging_pb2.Signal(
                room_id=room_id,
                typing=messaging_pb2.Typing(participant_id=participant_id, username=username),
            )
        )

    async def _announce_presence(self, steps: Sequence[PresenceStep]) -> None:
        changed = [step for step in steps if step.changed]
        await asyncio.gather(
            *(
                self._publisher.publish(
                    messaging_pb2.Signal(
                        room_id=step.room_id,
                        presence=messaging_pb2.PresenceChange(
                            online=step.online, offline=step.offline, version=step.version
                        ),
                    )
                )
                for step in changed
            )
        )

    async def report_presence(
        self, request: messaging_pb2.ReportPresenceRequest
    ) -> messaging_pb2.ReportPresenceResponse:
        instance, ttl_ms, reports = presence_reports(request)
        steps = await self._presence.report(instance, ttl_ms, reports)
        await self._announce_presence(steps)
        return messaging_pb2.ReportPresenceResponse(
            resync_room_ids=[step.room_id for step in steps if step.resync]
        )

    async def presence(self, room_id: str) -> messaging_pb2.GetPresenceResponse:
        step = await self._presence.read(room_id)
        # Reading dropped a dead edge's people: tell the room, as a report would have.
        await self._announce_presence([step])
        return messaging_pb2.GetPresenceResponse(online=step.everyone or [], version=step.version)

    async def announce_room_update(
        self, principal: Principal, room_id: str
    ) -> messaging_pb2.AnnounceRoomUpdateResponse:
        room_id = validation.room_id(room_id)
        if principal.token_type == "room":
            principal.require_room(room_id)
        room = await get_room(self._rooms, room_id)
        is_host = principal.subject == room.host_id or (principal.token_type == "room" and principal.is_host)
        # Admins announce what they did to a room (a takedown, a restore).
        is_admin = principal.token_type == "access" and principal.is_admin
        # payments announces the Back Room seats a paid order took.
        if not is_host and not is_admin and not is_service(principal, ("payments",)):
            raise PermissionDenied("Only the host can announce changes to this room.", code="not_host")
        published = await self._publisher.publish(
            messaging_pb2.Signal(room_id=room_id, room_updated=messaging_pb2.RoomUpdated(room=room))
        )
        if not published:
            raise Unavailable("The change could not be announced; try again.", code="signals_unavailable")
        return messaging_pb2.AnnounceRoomUpdateResponse(room=room)

    async def kick(
        self, principal: Principal, request: messaging_pb2.KickParticipantsRequest
    ) -> tuple[list[tuple[str, str]], int]:
        """One Kick signal per target on its room's channel: the targets, and how many of their
        signals Redis could not take. Admins kick anyone; a host kicks only from rooms they host, and only
        for a removed seat."""
        is_admin = principal.token_type == "access" and principal.is_admin
        if not is_admin and (request.code != SEAT_REMOVED or principal.token_type not in ("access", "room")):
            raise PermissionDenied("Only admins may do this.", code="forbidden")
        targets, code = kick_targets(request)
        if not is_admin:
            for room_id in dict.fromkeys(room_id for room_id, _ in targets):
                room = await get_room(self._rooms, room_id)
                if room.host_id != principal.subject:
                    raise PermissionDenied(
                        "Only the host can disconnect people from this room.", code="not_host"
                    )
        failed = 0
        for start in range(0, len(targets), _KICK_BATCH):
            published = await asyncio.gather(
                *(
                    self._publisher.publish(
                        messaging_pb2.Signal(
                            room_id=room_id, kick=messaging_pb2.Kick(participant_id=participant_id, code=code)
                        )
                    )
                    for room_id, participant_id in targets[start : start + _KICK_BATCH]
                )
            )
            failed += published.count(False)
        return targets, failed
