"""RoomsService: rooms, their settings and who joined them."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

import grpc
import redis

from chatpop.identity.v1 import identity_pb2, identity_pb2_grpc
from chatpop.rooms.v1 import rooms_pb2, rooms_pb2_grpc
from chatpop_common.audit_events import AuditLog
from chatpop_common.auth import Principal, bearer_from_metadata, current_principal, require_principal
from chatpop_common.clients import bearer
from chatpop_common.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from chatpop_common.fixed_window import FixedWindowLimiter
from chatpop_common.keyslots import tagged
from chatpop_common.service_auth import require_service
from chatpop_common.usernames import USERNAME_MAX_LENGTH, normalize_username
from chatpop_common.wording import wait_words
from chatpop_rooms import audit
from chatpop_rooms.access_codes import AccessCodeHasher, AccessCodeSealer
from chatpop_rooms.back_rooms import (
    OUTCOMES,
    BackRoomChanges,
    BackRoomStore,
    back_room_message,
    no_back_room,
    require_complete,
    validate_order_id,
    validate_settings,
)
from chatpop_rooms.badges import VerifiedBadges
from chatpop_rooms.bans import BanStore, ban_message, validate_limit, validate_reason, validate_tier
from chatpop_rooms.codes import new_room_code, normalize_room_code
from chatpop_rooms.convert import participant_message, room_message
from chatpop_rooms.erasure import close_and_erase
from chatpop_rooms.forgetting import forget_subject, refuse_forgotten, subject_of
from chatpop_rooms.limits import JoinAttemptLimiter
from chatpop_rooms.rolls import UsernameRolls
from chatpop_rooms.site_bans import SiteBanCheck, SiteBanRevocations, revocation_target
from chatpop_rooms.store import (
    AlreadyJoined,
    AnonymousLimitReached,
    CodeTaken,
    NewRoom,
    ParticipantRow,
    RoomRow,
    RoomStore,
    UsernameTaken,
    parse_uuid,
)
from chatpop_rooms.takedowns import (
    Takedown,
    Takedowns,
    require_admin,
    room_taken_down,
    validate_list_limit,
    validate_takedown_reason,
)
from chatpop_rooms.validation import (
    ACCESS_CODE_MAX,
    PRIVATE,
    PUBLIC,
    normalize_access_code,
    require_access_code_for,
    validate_description,
    validate_name,
    validate_names_per_network,
    validate_new_access_code,
    validate_retention_days,
    validate_slow_mode,
    validate_theme,
    validate_visibility,
)

log = logging.getLogger(__name__)

# A fresh code collides only if the RNG is broken or the code space is nearly full; a few draws suffice.
CODE_DRAWS = 8
CLIENT_IP_HASH_MAX = 128
IDENTITY_TIMEOUT = 5.0
# Rolls draw this many candidates per call to identity, first with 2-digit numbers, then with more
# digits each time a whole batch is already in use in the room or held: the number range grows as
# the room's namespace fills up.
ROLL_BATCH = 16
ROLL_DIGITS = (2, 3, 4, 5, 6)
ANONYMOUS = "anonymous"
MY_ROOMS_DEFAULT = 100
MY_ROOMS_MAX = 200
# Lookups one GetParticipants call may hold.
PARTICIPANT_LOOKUPS_MAX = 1000


def _window_words(seconds: int) -> str:
    """'hour' for 3600, '2 hours', '30 minutes', '45 seconds': the span a per-window limit counts over."""
    for unit, size in (("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return unit if count == 1 else f"{count} {unit}s"
    return f"{seconds} seconds"


def _require_access_token() -> Principal:
    principal = require_principal()
    if principal.token_type != "access":
        raise PermissionDenied(
            "This call needs an access token, not a room token.", code="access_token_required"
        )
    return principal


def _require_host(principal: Principal, room: RoomRow) -> None:
    if principal.token_type == "room":
        principal.require_room(room.id)
    if principal.subject != room.host_id:
        raise PermissionDenied("Only the host can do this.", code="not_host")


def _banned() -> PermissionDenied:
    return PermissionDenied(
        "You were banned from this room by its host, so you cannot join it again.", code="banned"
    )


def _participant_not_found() -> NotFound:
    return NotFound("There is no such participant in this room.", code="participant_not_found")


def _require_open(room: RoomRow) -> None:
    if room.closed_at is not None:
        raise FailedPrecondition("This room is closed.", code="room_closed")


def _room_not_found() -> NotFound:
    return NotFound("There is no such room.", code="room_not_found")


def _too_many_rolls(retry_after: int) -> ResourceExhausted:
    return ResourceExhausted(
        "You rolled the dice too often in this room. Type a username, or roll again"
        f" {wait_words(retry_after)}.",
        code="too_many_rolls",
        retry_after=retry_after,
    )


# Most rooms one ListRetentionPolicies names.
MAX_RETENTION_ROOMS = 1000


class RoomsServicer(rooms_pb2_grpc.RoomsServiceServicer):
    def __init__(
        self,
        *,
        store: RoomStore,
        hasher: AccessCodeHasher,
        sealer: AccessCodeSealer,
        limiter: JoinAttemptLimiter,
        identity: identity_pb2_grpc.IdentityServiceStub,
        rolls: UsernameRolls,
        room_limiter: FixedWindowLimiter,
        badges: VerifiedBadges,
        bans: BanStore,
        takedowns: Takedowns,
        site_bans: SiteBanCheck,
        revocations: SiteBanRevocations,
        audit_log: AuditLog,
        back_rooms: BackRoomStore,
        anonymous_usernames_per_ip: int,
        anonymous_usernames_window: int = 3600,
        join_attempt_window: int = 900,
        room_codes: Callable[[], str] = new_room_code,
    ) -> None:
        self._audit = audit_log
        self._join_attempt_window = join_attempt_window
        self._store = store
        self._hasher = hasher
        self._sealer = sealer
        self._limiter = limiter
        self._identity = identity
        self._rolls = rolls
        self._room_limiter = room_limiter
        self._badges = badges
        self._bans = bans
        self._takedowns = takedowns
        self._site_bans = site_bans
        self._revocations = revocations
        self._back_rooms = back_rooms
        self._anonymous_usernames_per_ip = anonymous_usernames_per_ip
        self._anonymous_usernames_window = anonymous_usernames_window
        self._room_codes = room_codes

    async def CreateRoom(
        self, request: rooms_pb2.CreateRoomRequest, context: grpc.aio.ServicerContext
    ) -> rooms_pb2.CreateRoomResponse:
        principal = _require_access_token()
        await refuse_forgotten(self._store.pool, principal.subject)
        name = validate_name(request.name)
        description = validate_description(request.description)
        visibility = validate_visibility(request.visibility)
        access_code = validate_new_access_code(request.access_code)
        require_access_code_for(visibility, access_code)
        retention_days = validate_retention_days(
            request.retention_days if request.HasField("retention_days") else None
        )
        theme = validate_theme(request.theme)
        slow_mode = validate_slow_mode(request.slow_mode_seconds)
        names_per_network = (
            validate_names_per_network(request.anonymous_names_per_network)
            if request.HasField("anonymous_names_per_network")
            else None
        )
        back_room = self._back_room_changes(
            principal, request.back_room if request.HasField("back_room") else None
        )
        if back_room is not None:
            require_complete(back_room, None)
        if principal.kind == ANONYMOUS:
            await self._limit_room_creation(principal.subject)
        room_id = str(uuid.uuid4())
        new_room = NewRoom(
            id=room_id,
            name=name,
            description=description,
            visibility=visibility,
            access_code_hash=await self._hasher.hash(access_code) if access_code else None,
            access_code_sealed=self._sealer.seal(room_id, access_code) if access_code else None,
            media_photo=request.media.photo,
            media_voice=request.media.voice,
            media_video=request.media.video,
            theme=theme,
            retention_days=retention_days,
            slow_mode_seconds=slow_mode,
            anonymous_names_per_network=names_per_network,
            host_id=principal.subject,
        )
        for _ in range(CODE_DRAWS):
            try:
                row = await self._store.insert_room(new_room, self._room_codes())
            except CodeTaken:
                continue
            if back_room is not None:
                row = await self._back_rooms.apply_settings(row.id, back_room, self._room_codes)
            return rooms_pb2.CreateRoomResponse(room=self._room_message(row, show_back_room_id=True))
        log.error("no free room code after %d draws", CODE_DRAWS)
        raise Unavailable("Could not allocate a room code; try again.", code="room_code_unavailable")

    async def GetRoom(
        self, request: rooms_pb2.GetRoomRequest, context: grpc.aio.ServicerContext
    ) -> rooms_pb2.GetRoomResponse:
        key = request.WhichOneof("key")
        principal = current_principal()
        if key == "code":
            # A Back Room's code reads like no room at all to anyone but its members.
            room = await self._room_by_code(request.code, principal)
        elif key == "room_id":
            room = await self._room_by_id(request.room_id)
        else:
            raise InvalidArgument("Name the room by its code or its id.", code="room_key_required")
        member = await self._back_room_member(principal, room)
        return rooms_pb2.GetRoomResponse(room=self._room_message(room, show_back_room_id=member))

    async def UpdateRoom(
        self, request: rooms_pb2.UpdateRoomRequest, context: grpc.aio.ServicerContext
    ) -> rooms_pb2.UpdateRoomResponse:
        principal = require_principal()
        room = await self._room_by_id(request.room_id)
        _require_host(principal, room)
        _require_open(room)

        changes: dict[str, object] = {}
        if request.HasField("name"):
            changes["name"] = validate_name(request.name)
        if request.HasField("description"):
            changes["description"] = validate_description(request.description)
        if request.HasField("media"):
            changes["media_photo"] = request.media.photo
            changes["media_voice"] = request.media.voice
            changes["media_video"] = request.media.video
        # An explicit UNSPECIFIED keeps the current value rather than resetting it to the default.
        if request.HasField("theme") and request.theme:
            changes["theme"] = validate_theme(request.theme)
        if request.HasField("retention_days"):
            changes["retention_days"] = validate_retention_days(request.retention_days)
        if request.HasField("slow_mode_seconds"):
            changes["slow_mode_seconds"] = validate_slow_mode(request.slow_mode_seconds)
        if request.HasField("anonymous_names_per_network"):
            # 0 hands the choice back to the platform's default.
            changes["anonymous_names_per_network"] = (
                validate_names_per_network(request.anonymous_names_per_network)
                if request.anonymous_names_per_network
                else None
            )

        visibility = room.visibility
        if request.HasField("visibility") and request.visibility:
            visibility = validate_visibility(request.visibility)
            changes["visibility"] = visibility
        access_code = validate_new_access_code(request.access_code) if request.HasField("access_code") else ""
        if visibility == PRIVATE and not access_code and room.visibility == PUBLIC:
            raise InvalidArgument("A private room needs an access code.", code="access_code_required")
        if visibility == PUBLIC:
            require_access_code_for(PUBLIC, access_code)
            if room.visibility == PRIVATE:
                changes["access_code_hash"] = None
                changes["access_code_sealed"] = None
        elif access_code:
            changes["access_code_hash"] = await self._hasher.hash(access_code)
            changes["access_code_sealed"] = self._sealer.seal(room.id, access_code)

        back_room = self._back_room_changes(
            principal, request.back_room if request.HasField("back_room") else None
        )
        if room.is_back_room and ("visibility" in changes or access_code):
            raise FailedPrecondition(
                "A Back Room admits only its host and seat holders: it has no visibility or access code.",
                code="back_room_setting",
            )
        if back_room is not None:
            # Checked before anything is saved, so a refused Back Room change leaves the room as it was.
            if room.is_back_room:
                raise FailedPrecondition("A Back Room has no Back Room of its own.", code="back_room_nested")
            require_complete(back_room, room)
        updated: RoomRow | None = room
        if changes:
            updated = await self._store.update_room(room.id, changes)
            if updated is None:
                raise _room_not_found()
        if back_room is not None:
            updated = await self._back_rooms.apply_settings(room.id, back_room, self._room_codes)
        assert updated is not None
        return rooms_pb2.UpdateRoomResponse(room=self._room_message(updated, show_back_room_id=True))

    async def CloseRoom(
        self, request: rooms_pb2.CloseRoomRequest, context: grpc.aio.ServicerContext
    ) -> rooms_pb2.CloseRoomResponse:
        principal = require_principal()
        room = await self._room_by_id(request.room_id)
        _require_host(principal, room)
        if request.erase:
            closed = await close_and_erase(self._store.pool, room.id)
        else:
            closed = await self._store.close_room(room.id)
        if closed is None:
            raise _room_not_found()
        return rooms_pb2.CloseRoomResponse(room=self._room_message(closed, show_back_room_id=True))

    async def ForgetSubject(
        self, request: rooms_pb2.ForgetSubjectRequest, context: grpc.aio.ServicerContext
    ) -> rooms_pb2.ForgetSubjectResponse:
        require_service("identity")
        outcome = await forget_subject(
            self._store.pool, subject_of(request.subject), erase_messages=request.erase_messages
        )
        return rooms_pb2.ForgetSubjectResponse(
            participants=len(outcome.participants), rooms_closed=len(outcome.rooms_closed)
        )

    async def JoinRoom(
        self, request: rooms_pb2.JoinRoomRequest, context: grpc.aio.ServicerContext
    ) -> rooms_pb2.JoinRoomResponse:
        principal = _require_access_token()
        await refuse_forgotten(self._store.pool, principal.subject)
        if len(request.client_ip_hash) > CLIENT_IP_HASH_MAX:
            raise InvalidArgument("client_ip_hash is too long to be a hash.", code="invalid_client_ip_hash")
        room = await self._room_by_code(request.code)
        if room.is_back_room:
            # Entered only through EnterBackRoom; to JoinRoom it is no room at all.
            raise _room_not_found()
        if room.taken_down_at is not None:
            raise room_taken_down()
        await self._site_bans.refuse_banned(principal.subject, request.client_ip_hash)
        _require_open(room)
        caller_token = bearer_from_metadata(context.invocation_metadata()) or ""

        participant = await self._store.participant_by_subject(room.id, principal.subject)
        if participant is not None and participant.banned:
            raise _banned()
        if principal.subject != room.host_id:
            # Before any name checks: a banned identity is told so, whatever name it tries.
            refused = await self._bans.refusing_tier(
                room.id,
                subject=principal.subject,
                client_ip_hash=request.client_ip_hash,
                anonymous=principal.kind == ANONYMOUS,
            )
            if refused is not None:
                raise _banned()
        if participant is None:
            participant = await self._admit(room, request, principal, caller_token)
        if participant.banned:
            raise _banned()

        issued = await self._issue_room_token(participant, caller_token)
        return rooms_pb2.JoinRoomResponse(
            room=self._room_message(room),
            participant=participant_message(participant),
            room_token=issued.room_token,
            room_token_expires_in=issued.expires_in,
        )

    async def GetParticipant(
        self, request: rooms_pb2.GetParticipantRequest, context: grpc.aio.ServicerContext
    ) -> rooms_pb2.GetParticipantResponse:
        participant = await self._store.participant(request.room_id, request.participant_id)
        if participant is None:
            raise _participant_not_found()
        rooms = await self._store.rooms_by_ids([participant.room_id])
        return rooms_pb2.GetParticipantResponse(participant=await self._participant_view(participant, rooms))

    async def GetParticipants(
        self, request: rooms_pb2.GetParticipantsRequest, context: grpc.aio.ServicerContext
    ) -> rooms_pb2.GetParticipantsResponse:
        if len(request.lookups) > PARTICIPANT_LOOKUPS_MAX:
            raise InvalidArgument(
                f"At most {PARTICIPANT_LOOKUPS_MAX} participants can be looked up at once.",
                code="too_many_lookups",
            )
        keys = [(lookup.room_id, lookup.participant_id) for lookup in request.lookups]
        found = await self._store.participants_by_keys(keys)
        rooms = await self._store.rooms_by_ids({row.room_id for row in found.values()})
        results = []
        for room_id, participant_id in keys:
            room_key, participant_key = parse_uuid(room_id), parse_uuid(participant_id)
            participant = found.get((str(room_key), str(participant_key)))
            try:
                if participant is None:
                    raise _participant_not_found()
                view = await self._participant_view(participant, rooms)
            except NotFound as exc:
                results.append(rooms_pb2.ParticipantLookup(error_code=exc.code))
                continue
            results.append(rooms_pb2.ParticipantLookup(participant=view))
        return rooms_pb2.GetParticipantsResponse(results=results)

    async def _participant_view(
        self, participant: ParticipantRow, rooms: dict[str, RoomRow]
    ) -> rooms_pb2.Participant:
        """The participant as GetParticipant answers it, with its room from `rooms` (more read when
        a Back Room's main room is needed and missing); NotFound when its room was taken down."""
        room = rooms.get(participant.room_id)
        # No room token of a room taken down works any more, wherever it is checked.
        if room is not None and room.taken_down_at is not None:
            raise room_taken_down()
        seat_removed = False
        if room is not None and room.parent_room_id is not None:
            # A Back Room goes with its main room's takedown.
            if room.parent_room_id not in rooms:
                rooms.update(await self._store.rooms_by_ids([room.parent_room_id]))
            parent = rooms.get(room.parent_room_id)
            if parent is not None and parent.taken_down_at is not None:
                raise room_taken_down()
            if not participant.is_host:
                seat_removed = not await self._back_rooms.holds_seat(room.parent_room_id, participant.subject)
        return participant_message(participant, seat_removed=seat_removed)

    async def ListParticipants(
        self, request: rooms_pb2.ListParticipantsRequest, context: grpc.aio.ServicerContext
    ) -> rooms_pb2.ListParticipantsResponse:
        room = await self._room_by_id(request.room_id)
        participants = await self._store.participants(room.id)
        return rooms_pb2.ListParticipantsResponse(participants=[participant_message(p) for p in participants])

    async def SuggestUsername(
        self, request: rooms_pb2.SuggestUsernameRequest, context: grpc.aio.ServicerContext
    ) -> rooms_pb2.SuggestUsernameResponse:
        principal = _require_access_token()
        if len(request.client_ip_hash) > CLIENT_IP_HASH_MAX:
            raise InvalidArgument("client_ip_hash is too long to be a hash.", code="invalid_client_ip_hash")
        room = await self._room_by_code(request.code)
        if room.is_back_room:
            raise _room_not_found()
        _require_open(room)
        try:
            left = await self._rolls.peek(room.id, principal.subject)
            if left.exhausted:
                raise _too_many_rolls(left.retry_after)
            for digits in ROLL_DIGITS:
                candidates = await self._candidates(digits)
                taken = await self._store.taken_usernames(room.id, [name.lower() for name in candidates])
                free = [name for name in candidates if name.lower() not in taken]
                if not free:
                    continue
                roll = await self._rolls.take(room.id, principal.subject, free)
                if roll.exhausted:
                    raise _too_many_rolls(roll.retry_after)
                if roll.username is not None:
                    return rooms_pb2.SuggestUsernameResponse(
                        username=roll.username,
                        remaining=roll.remaining,
                        held_for_seconds=self._rolls.hold_seconds,
                    )
        except redis.RedisError as exc:
            log.warning("username rolls unavailable: %s", exc)
            raise Unavailable(
                "The dice are unavailable right now; type a username instead.", code="rolls_unavailable"
            ) from exc
        log.error("no free generated username in room %s", room.id)
        raise Unavailable("No free username could be found; type one instead.", code="no_username_available")

    async def _candidates(self, digits: int) -> list[str]:
        try:
            response = await self._identity.SuggestUsernames(
                identity_pb2.SuggestUsernamesRequest(count=ROLL_BATCH, digits=digits),
                timeout=IDENTITY_TIMEOUT,
            )
        except grpc.aio.AioRpcError as exc:
            log.warning("identity could not suggest usernames: %s", exc.code().name)
            raise Unavailable(
                "The dice are unavailable right now; try again.", code="identity_unavailable"
            ) from exc
        return list(response.usernames)

    async def GetMyParticipant(
        self, request: rooms_pb2.GetMyParticipantRequest, context: grpc.aio.ServicerContext
    ) -> rooms_pb2.GetMyParticipantResponse:
        principal = _require_access_token()
        room = await self._room_by_code(request.code, principal)
        participant = await self._store.participant_by_subject(room.id, principal.subject)
        if participant is None:
            raise NotFound("You have not joined this room yet.", code="not_joined")
        return rooms_pb2.GetMyParticipantResponse(
            room=self._room_message(room), participant=participant_message(participant)
        )

    async def ListMyRooms(
        self, request: rooms_pb2.ListMyRoomsRequest, context: grpc.aio.ServicerContext
    ) -> rooms_pb2.ListMyRoomsResponse:
        principal = _require_access_token()
        if request.limit < 0 or request.limit > MY_ROOMS_MAX:
            raise InvalidArgument(f"Ask for 1 to {MY_ROOMS_MAX} rooms.", code="invalid_limit")
        mine = await self._store.my_rooms(principal.subject, request.limit or MY_ROOMS_DEFAULT)
        response = rooms_pb2.ListMyRoomsResponse()
        for room, participant in mine:
            entry = response.rooms.add(
                room=self._room_message(room), is_host=room.host_id == principal.subject
            )
            if participant is not None:
                entry.participant.CopyFrom(participant_message(participant))
        return response

    async def GetAccessCode(
        self, request: rooms_pb2.GetAccessCodeRequest, context: grpc.aio.ServicerContext
    ) -> rooms_pb2.GetAccessCodeResponse:
        principal = require_principal()
        room = await self._room_by_id(request.room_id)
        _require_host(principal, room)
        if room.visibility != PRIVATE:
            raise FailedPrecondition("This room is public: it has no access code.", code="room_public")
        code = self._sealer.open(room.id, room.access_code_sealed) if room.access_code_sealed else None
        if code is None:
            return rooms_pb2.GetAccessCodeResponse(available=False)
        return rooms_pb2.GetAccessCodeResponse(access_code=code, available=True)

    async def ClearVerifiedUsername(
        self, request: rooms_pb2.ClearVerifiedUsernameRequest, context: grpc.aio.ServicerContext
    ) -> rooms_pb2.ClearVerifiedUsernameResponse:
        principal = _require_access_token()
        if principal.kind == ANONYMOUS:
            raise PermissionDenied("Only accounts hold reserved usernames.", code="account_required")
        username = request.username.strip()
        if not username or len(username) > USERNAME_MAX_LENGTH:
            raise InvalidArgument(
                f"Name the username to clear (at most {USERNAME_MAX_LENGTH} characters).",
                code="invalid_argument",
            )
        # Only a name the account no longer holds loses its badge: one it still holds keeps it.
        ownership = await self._check_username(
            username, bearer_from_metadata(context.invocation_metadata()) or ""
        )
        if ownership.yours:
            raise FailedPrecondition(
                "You still hold this reserved username, so its badge stays.", code="username_still_yours"
            )
        cleared = await self._badges.clear(principal.subject, username)
        participants = [await self._store.participant(room_id, pid) for room_id, pid in cleared]
        return rooms_pb2.ClearVerifiedUsernameResponse(
            participants=[participant_message(p) for p in participants if p is not None]
        )

    # --- bans (bans.py) ------------------------------------------------------------------------------

    async def BanParticipant(
        self, request: rooms_pb2.BanParticipantRequest, context: grpc.aio.ServicerContext
    ) -> rooms_pb2.BanParticipantResponse:
        principal = require_principal()
        room = await self._room_by_id(request.room_id)
        _require_host(principal, room)
        tier = validate_tier(request.tier)
        reason = validate_reason(request.reason)
        outcome = await self._bans.ban(
            room_id=room.id,
            host_id=room.host_id,
            participant_id=request.participant_id,
            tier=tier,
            reason=reason,
            banned_by=principal.subject,
            on_banned=audit.on_banned(principal.subject, principal.participant_id),
        )
        if outcome.created:
            log.info(
                "participant banned",
                extra={"room_id": room.id, "participant_id": outcome.participant.id, "tier": tier},
            )
        # Pins: the banned participant's pins are removed by messaging when it appends the ban entry
        # (AppendBan), in the same transaction as the entry, so every client learns both together.
        return rooms_pb2.BanParticipantResponse(
            ban=ban_message(outcome.ban),
            participant=participant_message(outcome.participant),
            created=outcome.created,
            back_room_id=outcome.back_room_id,
            back_room_participant_id=outcome.back_room_participant_id,
        )

    async def UnbanParticipant(
        self, request: rooms_pb2.UnbanParticipantRequest, context: grpc.aio.ServicerContext
    ) -> rooms_pb2.UnbanParticipantResponse:
        principal = require_principal()
        room = await self._room_by_id(request.room_id)
        _require_host(principal, room)
        ban, changed = await self._bans.lift(
            room_id=room.id,
            ban_id=request.ban_id,
            lifted_by=principal.subject,
            on_lifted=audit.on_lifted(principal.subject, principal.participant_id),
        )
        return rooms_pb2.UnbanParticipantResponse(ban=ban_message(ban), changed=changed)

    async def ListBans(
        self, request: rooms_pb2.ListBansRequest, context: grpc.aio.ServicerContext
    ) -> rooms_pb2.ListBansResponse:
        principal = require_principal()
        room = await self._room_by_id(request.room_id)
        _require_host(principal, room)
        bans = await self._bans.in_force(room.id, validate_limit(request.limit))
        return rooms_pb2.ListBansResponse(bans=[ban_message(ban) for ban in bans])

    async def _issue_room_token(
        self, participant: ParticipantRow, caller_token: str
    ) -> identity_pb2.IssueRoomTokenResponse:
        """A room token for the participant, audience its room, signed by identity."""
        try:
            issued: identity_pb2.IssueRoomTokenResponse = await self._identity.IssueRoomToken(
                identity_pb2.IssueRoomTokenRequest(
                    room_id=participant.room_id,
                    participant_id=participant.id,
                    subject=participant.subject,
                    version=participant.version,
                    is_host=participant.is_host,
                    username=participant.username,
                ),
                metadata=bearer(caller_token) if caller_token else None,
                timeout=IDENTITY_TIMEOUT,
            )
        except grpc.aio.AioRpcError as exc:
            log.warning("identity refused a room token: %s", exc.code().name)
            # The participant is stored, so asking again returns it with a new token.
            raise Unavailable(
                "Could not issue a room token; try again.", code="identity_unavailable"
            ) from exc
        return issued

    # --- Back Rooms (back_rooms.py) ----------------------------------------------------------------

    def _back_room_changes(
        self, principal: Principal, settings: rooms_pb2.BackRoomSettings | None
    ) -> BackRoomChanges | None:
        if settings is None:
            return None
        changes = validate_settings(settings)
        if changes.empty:
            return None
        if changes.needs_payouts and principal.kind == ANONYMOUS:
            raise PermissionDenied(
                "A Back Room sells seats, so its host needs an account: sign in to open one.",
                code="anonymous_host",
            )
        return changes

    async def _back_room_member(self, principal: Principal | None, room: RoomRow) -> bool:
        """Whether the caller belongs in this Back Room (or the main room's): a ChatPop service, its
        host, someone holding a seat now, or the holder of a room token for the Back Room itself (whose
        standing the caller of GetRoom checks, so a removed holder learns `seat_removed`)."""
        main_room_id = room.parent_room_id if room.is_back_room else room.id
        back_room_id = room.id if room.is_back_room else room.back_room_id
        if principal is None or main_room_id is None or back_room_id is None:
            return False
        if principal.token_type == "service":
            return True
        if principal.token_type == "room" and principal.room_id == back_room_id:
            return True
        if principal.subject == room.host_id:
            return True
        return await self._back_rooms.holds_seat(main_room_id, principal.subject)

    def _back_room(self, room: RoomRow, *, member: bool) -> rooms_pb2.BackRoom:
        return back_room_message(room, show_id=member) or rooms_pb2.BackRoom()

    async def GrantSeat(
        self, request: rooms_pb2.GrantSeatRequest, context: grpc.aio.ServicerContext
    ) -> rooms_pb2.GrantSeatResponse:
        require_service("payments")
        order_id = validate_order_id(request.order_id)
        if request.price_cents < 0:
            raise InvalidArgument("A price cannot be negative.", code="invalid_price")
        grant = await self._back_rooms.grant(
            order_id=order_id,
            room_id=request.room_id,
            participant_id=request.participant_id,
            price_cents=request.price_cents,
        )
        if grant.created:
            log.info(
                "seat order decided",
                extra={"room_id": grant.room.id, "order_id": order_id, "outcome": grant.outcome},
            )
        response = rooms_pb2.GrantSeatResponse(
            outcome=OUTCOMES[grant.outcome],
            back_room=self._back_room(grant.room, member=True),
            created=grant.created,
        )
        if grant.seat is not None:
            response.seat.CopyFrom(grant.seat.message())
        return response

    async def RemoveSeat(
        self, request: rooms_pb2.RemoveSeatRequest, context: grpc.aio.ServicerContext
    ) -> rooms_pb2.RemoveSeatResponse:
        principal = require_principal()
        room = await self._room_by_id(request.room_id)
        _require_host(principal, room)
        if room.is_back_room:
            raise no_back_room()
        removal = await self._back_rooms.remove(
            room_id=room.id, participant_id=request.participant_id, refund=request.refund
        )
        if removal.changed:
            log.info(
                "seat removed",
                extra={
                    "room_id": room.id,
                    "participant_id": removal.seat.participant_id,
                    "refund": removal.refund,
                },
            )
        return rooms_pb2.RemoveSeatResponse(
            seat=removal.seat.message(),
            changed=removal.changed,
            back_room=self._back_room(removal.room, member=True),
            back_room_participant_id=removal.back_room_participant_id,
            refund=removal.refund,
        )

    async def ListSeats(
        self, request: rooms_pb2.ListSeatsRequest, context: grpc.aio.ServicerContext
    ) -> rooms_pb2.ListSeatsResponse:
        principal = require_principal()
        room = await self._room_by_id(request.room_id)
        if principal.token_type == "room":
            principal.require_room(room.id)
        if room.is_back_room or room.back_room_id is None:
            raise no_back_room()
        if principal.token_type == "service" or principal.subject == room.host_id:
            allowed = True
        else:
            allowed = await self._back_rooms.holds_seat(room.id, principal.subject)
        if not allowed:
            raise PermissionDenied("Only the host and seat holders see who holds a seat.", code="no_seat")
        seats = await self._back_rooms.seats(room.id)
        return rooms_pb2.ListSeatsResponse(
            seats=[seat.message() for seat in seats], back_room=self._back_room(room, member=True)
        )

    async def EnterBackRoom(
        self, request: rooms_pb2.EnterBackRoomRequest, context: grpc.aio.ServicerContext
    ) -> rooms_pb2.EnterBackRoomResponse:
        principal = require_principal()
        room = await self._room_by_id(request.room_id)
        # Only a room token of the main room itself: its standing is checked here, below.
        principal.require_room(room.id)
        if room.taken_down_at is not None:
            raise room_taken_down()
        if room.is_back_room or room.back_room_id is None:
            raise no_back_room()
        _require_open(room)
        mine = await self._store.participant(room.id, principal.participant_id)
        if mine is None:
            raise PermissionDenied("You are not a participant of this room.", code="not_a_participant")
        if mine.banned:
            raise _banned()
        if principal.version < mine.version:
            raise Unauthenticated("This room token was revoked; join the room again.", code="token_revoked")
        is_host = principal.subject == room.host_id
        if not is_host and not await self._back_rooms.holds_seat(room.id, principal.subject):
            raise PermissionDenied("Only the host and seat holders enter the Back Room.", code="no_seat")
        back_room = await self._room_by_id(room.back_room_id)
        if back_room.taken_down_at is not None:
            raise room_taken_down()
        participant = await self._store.participant_by_subject(back_room.id, principal.subject)
        if participant is None:
            try:
                participant = await self._store.insert_participant(
                    room_id=back_room.id,
                    subject=principal.subject,
                    username=mine.username,
                    is_host=is_host,
                    verified=mine.verified,
                    identity_kind=ANONYMOUS if principal.kind == ANONYMOUS else "user",
                )
            except AlreadyJoined as raced:
                participant = raced.participant
            except UsernameTaken:
                raise AlreadyExists(
                    "Someone in the Back Room already uses your username.", code="username_taken"
                ) from None
        if participant.banned:
            raise _banned()
        caller_token = bearer_from_metadata(context.invocation_metadata()) or ""
        issued = await self._issue_room_token(participant, caller_token)
        return rooms_pb2.EnterBackRoomResponse(
            back_room=self._room_message(back_room, show_back_room_id=True),
            participant=participant_message(participant),
            room_token=issued.room_token,
            room_token_expires_in=issued.expires_in,
        )

    # --- takedowns (admins) ------------------------------------------------------------------------

    async def _room_by_key(
        self, request: rooms_pb2.TakeDownRoomRequest | rooms_pb2.RestoreRoomRequest
    ) -> RoomRow:
        key = request.WhichOneof("key")
        if key == "code":
            return await self._room_by_code(request.code)
        if key == "room_id":
            return await self._room_by_id(request.room_id)
        raise InvalidArgument("Name the room by its code or its id.", code="room_key_required")

    def _takedown_message(self, takedown: Takedown) -> rooms_pb2.TakenDownRoom:
        message = rooms_pb2.TakenDownRoom(
            room=self._room_message(takedown.room),
            reason=takedown.reason,
            taken_down_by=takedown.taken_down_by,
        )
        message.taken_down_at.FromDatetime(takedown.taken_down_at)
        return message

    async def TakeDownRoom(
        self, request: rooms_pb2.TakeDownRoomRequest, context: grpc.aio.ServicerContext
    ) -> rooms_pb2.TakeDownRoomResponse:
        admin = require_admin()
        reason = validate_takedown_reason(request.reason)
        room = await self._room_by_key(request)
        takedown, changed = await self._takedowns.take_down(room.id, reason, admin.subject)
        return rooms_pb2.TakeDownRoomResponse(taken_down=self._takedown_message(takedown), changed=changed)

    async def RestoreRoom(
        self, request: rooms_pb2.RestoreRoomRequest, context: grpc.aio.ServicerContext
    ) -> rooms_pb2.RestoreRoomResponse:
        require_admin()
        room = await self._room_by_key(request)
        restored, changed = await self._takedowns.restore(room.id)
        return rooms_pb2.RestoreRoomResponse(room=self._room_message(restored or room), changed=changed)

    async def ListTakenDownRooms(
        self, request: rooms_pb2.ListTakenDownRoomsRequest, context: grpc.aio.ServicerContext
    ) -> rooms_pb2.ListTakenDownRoomsResponse:
        require_admin()
        takedowns = await self._takedowns.listed(validate_list_limit(request.limit))
        return rooms_pb2.ListTakenDownRoomsResponse(rooms=[self._takedown_message(t) for t in takedowns])

    async def GetRoomStats(
        self, request: rooms_pb2.GetRoomStatsRequest, context: grpc.aio.ServicerContext
    ) -> rooms_pb2.GetRoomStatsResponse:
        require_admin()
        total, open_rooms, today = await self._takedowns.counts()
        return rooms_pb2.GetRoomStatsResponse(total=total, open=open_rooms, created_today=today)

    async def RevokeSiteBanned(
        self, request: rooms_pb2.RevokeSiteBannedRequest, context: grpc.aio.ServicerContext
    ) -> rooms_pb2.RevokeSiteBannedResponse:
        require_admin()
        identity_id, client_ip_hash = revocation_target(request)
        revocation = await self._revocations.revoke(identity_id=identity_id, client_ip_hash=client_ip_hash)
        self._site_bans.forget(subject=identity_id, client_ip_hash=client_ip_hash)
        if revocation.total:
            log.info(
                "site-banned participants revoked",
                extra={"participants": revocation.total, "network": bool(client_ip_hash)},
            )
        return revocation.message()

    def _names_per_network(self, room: RoomRow) -> int:
        return room.anonymous_names_per_network or self._anonymous_usernames_per_ip

    def _room_message(self, row: RoomRow, *, show_back_room_id: bool = False) -> rooms_pb2.Room:
        return room_message(
            row,
            names_per_network_default=self._anonymous_usernames_per_ip,
            show_back_room_id=show_back_room_id,
        )

    async def _room_by_code(self, raw: str, principal: Principal | None = None) -> RoomRow:
        """The room with this code. A Back Room is found only for its members (pass the caller)."""
        code = normalize_room_code(raw)
        room = await self._store.room_by_code(code) if code else None
        if room is None:
            raise _room_not_found()
        if room.is_back_room and not await self._back_room_member(principal, room):
            raise _room_not_found()
        return room

    async def _room_by_id(self, room_id: str) -> RoomRow:
        room = await self._store.room_by_id(room_id)
        if room is None:
            raise _room_not_found()
        return room

    async def _admit(
        self, room: RoomRow, request: rooms_pb2.JoinRoomRequest, principal: Principal, caller_token: str
    ) -> ParticipantRow:
        """A first join: username rules, then the access code, then the row (unique per room).

        A name the caller rolled skips the profanity filter (identity checked it when drawing it) and
        is theirs while held; a name held for someone else, or reserved by another account, is refused.
        Only the account that reserved a name joins under it with the verified badge.
        """
        raw = request.username.strip() or await self._reserved_username(principal, caller_token)
        username = normalize_username(raw, check_profanity=False)
        holder = await self._roll_holder(room.id, username)
        own_roll = holder == principal.subject
        if not own_roll:
            normalize_username(username)
        ownership = await self._check_username(username, caller_token)
        if ownership.taken and not ownership.yours:
            if ownership.problem == identity_pb2.USERNAME_PROBLEM_QUARANTINED:
                # Given up by an account recently: held back so nobody can pose as its owner.
                raise AlreadyExists(ownership.message, code="username_taken")
            raise AlreadyExists("A registered user has reserved that username.", code="username_taken")
        if holder is not None and not own_roll and not ownership.yours:
            raise AlreadyExists(
                "That username was just rolled by someone else; roll again or pick another.",
                code="username_held",
            )
        is_host = principal.subject == room.host_id
        if room.visibility == PRIVATE and not is_host:
            client = f"ip:{request.client_ip_hash}" if request.client_ip_hash else f"sub:{principal.subject}"
            await self._check_access_code(
                room, client, request.access_code, subject=principal.subject, ip_hash=request.client_ip_hash
            )
        try:
            participant = await self._store.insert_participant(
                room_id=room.id,
                subject=principal.subject,
                username=username,
                is_host=is_host,
                verified=ownership.yours,
                identity_kind=ANONYMOUS if principal.kind == ANONYMOUS else "user",
                client_ip_hash=request.client_ip_hash or None,
                anonymous_ip_limit=self._names_per_network(room),
                anonymous_ip_window=self._anonymous_usernames_window,
            )
        except AlreadyJoined as raced:
            return raced.participant
        except UsernameTaken:
            raise AlreadyExists(
                "Someone in this room already uses that username.", code="username_taken"
            ) from None
        except AnonymousLimitReached:
            limit = self._names_per_network(room)
            raise PermissionDenied(
                f"{limit} people on your network already joined this room without an account in the"
                f" last {_window_words(self._anonymous_usernames_window)}. Sign in to join now, or try"
                " again later.",
                code="too_many_anonymous_usernames",
            ) from None
        await self._release_rolls(room.id, principal.subject)
        return participant

    async def _check_username(self, username: str, caller_token: str) -> identity_pb2.CheckUsernameResponse:
        """Whether an account reserved the name, and whether it is the caller's."""
        try:
            response: identity_pb2.CheckUsernameResponse = await self._identity.CheckUsername(
                identity_pb2.CheckUsernameRequest(username=username),
                metadata=bearer(caller_token) if caller_token else None,
                timeout=IDENTITY_TIMEOUT,
            )
        except grpc.aio.AioRpcError as exc:
            log.warning("identity could not check a username: %s", exc.code().name)
            raise Unavailable(
                "Usernames cannot be checked right now; try again.", code="identity_unavailable"
            ) from exc
        return response

    async def _roll_holder(self, room_id: str, username: str) -> str | None:
        try:
            return await self._rolls.holder(room_id, username)
        except redis.RedisError as exc:
            # Holds are a courtesy to whoever rolled; without Redis the join goes ahead without them.
            log.warning("username holds unavailable: %s", exc)
            return None

    async def _release_rolls(self, room_id: str, subject: str) -> None:
        try:
            await self._rolls.release(room_id, subject)
        except redis.RedisError as exc:
            log.warning("could not give rolled usernames back: %s", exc)

    async def _limit_room_creation(self, subject: str) -> None:
        """Anonymous sessions may open only a few rooms per window; accounts are not limited."""
        try:
            decision = await self._room_limiter.hit(tagged("rooms:room-creations", subject))
        except redis.RedisError as exc:
            # A Redis outage must not stop people from opening rooms; the limit resumes with Redis.
            log.warning("room creation limits unavailable: %s", exc)
            return
        if not decision.allowed:
            raise ResourceExhausted(
                f"You opened the most rooms allowed for now. Sign in to open more, or try again"
                f" {wait_words(decision.retry_after)}.",
                code="too_many_rooms",
                retry_after=decision.retry_after,
            )

    async def _check_access_code(
        self, room: RoomRow, client: str, raw_code: str, *, subject: str, ip_hash: str
    ) -> None:
        """Reserve an attempt first, so a locked-out client never reaches the hash check."""
        try:
            reservation = await self._limiter.reserve(room.id, client)
        except redis.RedisError as exc:
            log.warning("join attempt limits unavailable: %s", exc)
            raise Unavailable(
                "Private rooms cannot be joined right now; try again shortly.",
                code="attempt_limits_unavailable",
            ) from exc
        if not reservation.granted:
            raise ResourceExhausted(
                f"Too many wrong access codes. Try again {wait_words(reservation.retry_after)}.",
                code="too_many_attempts",
                retry_after=reservation.retry_after,
            )
        code = normalize_access_code(raw_code)
        stored_hash = room.access_code_hash or ""
        if not code or len(code) > ACCESS_CODE_MAX or not await self._hasher.verify(stored_hash, code):
            if reservation.last_for_client or reservation.last_for_room:
                # This attempt used up the last one: the one moment a lockout begins.
                await self._record_lockout(
                    audit.access_code_lockout(
                        room.id,
                        subject,
                        ip_hash,
                        whole_room=reservation.last_for_room and not reservation.last_for_client,
                        window_seconds=self._join_attempt_window,
                        key=uuid.uuid4().hex,
                    )
                )
            if not code:
                raise PermissionDenied(
                    "This room is private: enter its access code.", code="access_code_required"
                )
            raise PermissionDenied("That access code is not right.", code="invalid_access_code")
        try:
            await self._limiter.release(reservation)
        except redis.RedisError as exc:
            # The right code still gets in; the cost is one attempt counted that should not have been.
            log.warning("could not give a join attempt back: %s", exc)

    async def _record_lockout(self, event: identity_pb2.NewAuditEvent) -> None:
        try:
            await self._audit.record(event)
        except Exception:
            # The lockout is counted in Redis and holds either way; the caller still learns that the
            # code was wrong. Only a Postgres outage at this very moment leaves it unrecorded.
            log.exception("could not record an access-code lockout")

    async def _reserved_username(self, principal: Principal, caller_token: str) -> str:
        """An account's reserved username: the name it joins with when it names none."""
        if principal.kind != "user" or not caller_token:
            return ""
        try:
            response = await self._identity.GetIdentity(
                identity_pb2.GetIdentityRequest(), metadata=bearer(caller_token), timeout=IDENTITY_TIMEOUT
            )
        except grpc.aio.AioRpcError as exc:
            # Without it the caller is asked for a name, as anyone else would be.
            log.warning("could not read the caller's identity: %s", exc.code().name)
            return ""
        return str(response.identity.reserved_username)

    # --- retention (messaging's retention job) ------------------------------------------------------

    async def ListRetentionPolicies(
        self, request: rooms_pb2.ListRetentionPoliciesRequest, context: grpc.aio.ServicerContext
    ) -> rooms_pb2.ListRetentionPoliciesResponse:
        require_service("messaging", "cli")
        if not 1 <= len(request.room_ids) <= MAX_RETENTION_ROOMS:
            raise InvalidArgument(
                f"Ask about 1 to {MAX_RETENTION_ROOMS} rooms at a time.", code="invalid_room_ids"
            )
        rows = await self._store.retention_policies(list(request.room_ids))
        return rooms_pb2.ListRetentionPoliciesResponse(
            policies=[
                rooms_pb2.RetentionPolicy(
                    room_id=row["room_id"],
                    retention_days=row["retention_days"],
                    closed=row["closed"],
                    erased=row["erased"],
                )
                for row in rows
            ]
        )
