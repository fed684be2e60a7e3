"""Request and response bodies of REST v1 (they make the OpenAPI document) and proto conversions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from chatpop.identity.v1 import identity_pb2
from chatpop.messaging.v1 import messaging_pb2
from chatpop.rooms.v1 import rooms_pb2

Visibility = Literal["public", "private"]
Theme = Literal["purple-dream", "ocean-blue", "dark-mode"]

_VISIBILITY_OUT: dict[rooms_pb2.Visibility, Visibility] = {
    rooms_pb2.VISIBILITY_PUBLIC: "public",
    rooms_pb2.VISIBILITY_PRIVATE: "private",
}
_VISIBILITY_IN: dict[str, rooms_pb2.Visibility] = {name: value for value, name in _VISIBILITY_OUT.items()}
_THEME_OUT: dict[rooms_pb2.Theme, Theme] = {
    rooms_pb2.THEME_PURPLE_DREAM: "purple-dream",
    rooms_pb2.THEME_OCEAN_BLUE: "ocean-blue",
    rooms_pb2.THEME_DARK_MODE: "dark-mode",
}
_THEME_IN: dict[str, rooms_pb2.Theme] = {name: value for value, name in _THEME_OUT.items()}


# What a room code may look like in a request (codes are issued shorter, from a smaller alphabet).
ROOM_CODE_PATTERN = r"^[A-Za-z0-9_-]+$"
ROOM_CODE_MAX_LENGTH = 32
# The largest seq a client may send: the largest integer JavaScript holds exactly, far beyond any
# room's messages and within the services' int64.
MAX_SEQ = 2**53 - 1
# Access, refresh and room tokens are a few hundred characters; anything much longer is not one.
MAX_TOKEN_LENGTH = 4096


class RequestBody(BaseModel):
    """Request bodies reject unknown fields, so a typo is an error rather than a silent no-op, and take
    JSON types as documented: `"5"` or `true` is not an integer, `1` is not a boolean."""

    model_config = ConfigDict(extra="forbid", strict=True)


def timestamp(ts: Timestamp) -> datetime | None:
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    return ts.ToDatetime(tzinfo=UTC)


# --- identity -------------------------------------------------------------------------------------


class Identity(BaseModel):
    id: str
    kind: Literal["anonymous", "user"]
    email: str | None = Field(default=None, description="Accounts only.")
    reserved_username: str | None = Field(default=None, description="Accounts holding one only.")
    created_at: datetime | None = None

    @classmethod
    def from_proto(cls, identity: identity_pb2.Identity) -> Identity:
        return cls(
            id=identity.id,
            kind="user" if identity.kind == identity_pb2.IDENTITY_KIND_USER else "anonymous",
            email=identity.email or None,
            reserved_username=identity.reserved_username or None,
            created_at=timestamp(identity.created_at),
        )


class TokenResponse(BaseModel):
    identity: Identity
    access_token: str
    refresh_token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_in: int = Field(description="Seconds until the access token expires.")
    refresh_expires_in: int = Field(description="Seconds until the refresh token expires.")

    @classmethod
    def from_proto(cls, identity: identity_pb2.Identity, tokens: identity_pb2.TokenPair) -> TokenResponse:
        return cls(
            identity=Identity.from_proto(identity),
            access_token=tokens.access_token,
            refresh_token=tokens.refresh_token,
            expires_in=tokens.access_expires_in,
            refresh_expires_in=tokens.refresh_expires_in,
        )


class RegisterRequest(RequestBody):
    email: str = Field(min_length=3, max_length=254)
    password: str = Field(min_length=1, max_length=1024)
    reserved_username: str | None = Field(default=None, max_length=64)


class LoginRequest(RequestBody):
    email: str = Field(min_length=3, max_length=254)
    password: str = Field(min_length=1, max_length=1024)


class RefreshRequest(RequestBody):
    refresh_token: str = Field(min_length=1, max_length=MAX_TOKEN_LENGTH)


class MeResponse(BaseModel):
    identity: Identity
    is_admin: bool = Field(
        description="The access token carries the admin role, so `/admin` and `/api/v1/admin/…` accept it. "
        "Granting or revoking the role shows from the account's next sign-in or token refresh."
    )


UsernameProblem = Literal[
    "username_invalid", "username_reserved", "username_profane", "username_taken", "username_quarantined"
]
_USERNAME_PROBLEMS: dict[int, UsernameProblem] = {
    identity_pb2.USERNAME_PROBLEM_INVALID: "username_invalid",
    identity_pb2.USERNAME_PROBLEM_RESERVED_WORD: "username_reserved",
    identity_pb2.USERNAME_PROBLEM_PROFANITY: "username_profane",
    identity_pb2.USERNAME_PROBLEM_TAKEN: "username_taken",
    identity_pb2.USERNAME_PROBLEM_QUARANTINED: "username_quarantined",
}


class UsernameAvailability(BaseModel):
    username: str = Field(description="The name as it would be stored: trimmed, case kept.")
    available: bool = Field(description="Whether an account could reserve it now.")
    reason: UsernameProblem | None = Field(
        default=None,
        description="Why not: its format (5-15 letters A-Z, digits, underscores), a system word, "
        "profanity, another account holds it, or another account gave it up recently and it is held "
        "back for a while. The same codes a registration or join would fail with.",
    )
    message: str | None = Field(default=None, description="Why not, for people.")

    @classmethod
    def from_proto(cls, response: identity_pb2.CheckUsernameResponse) -> UsernameAvailability:
        if response.available:
            return cls(username=response.username, available=True)
        return cls(
            username=response.username,
            available=False,
            reason=_USERNAME_PROBLEMS.get(response.problem, "username_invalid"),
            message=response.message or None,
        )


class ReserveUsernameRequest(RequestBody):
    reserved_username: str = Field(min_length=1, max_length=64)


class ForgotPasswordRequest(RequestBody):
    email: str = Field(min_length=3, max_length=254, description="The address the account signs in with.")


class ForgotPasswordResponse(BaseModel):
    message: str = Field(description="For people; the same whether or not an account uses the address.")


class ResetPasswordRequest(RequestBody):
    token: str = Field(
        min_length=1, max_length=512, description="The `token` parameter of the link in the reset mail."
    )
    new_password: str = Field(min_length=1, max_length=1024, description="At least 8 characters.")


class DeleteAccountRequest(RequestBody):
    password: str = Field(min_length=1, max_length=1024, description="The account's password, again.")
    erase_messages: bool = Field(
        default=False,
        description="Delete every message the account sent, in every room. Otherwise they stay, under a "
        "neutral name (`deleted_…`) that no longer points at anyone.",
    )


class CloseRoomRequest(RequestBody):
    erase: bool = Field(
        default=False,
        description="Delete everything: the room's history, media and cache are destroyed for good (its "
        "encryption keys first). Also for a room closed before. Cannot be undone.",
    )


class ChangePasswordRequest(RequestBody):
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=1, max_length=1024, description="At least 8 characters.")


class Jwk(BaseModel):
    kid: str
    kty: str
    crv: str
    x: str
    alg: str
    use: str


class Jwks(BaseModel):
    keys: list[Jwk]

    @classmethod
    def from_proto(cls, response: identity_pb2.GetPublicKeysResponse) -> Jwks:
        return cls(
            keys=[
                Jwk(kid=k.kid, kty=k.kty, crv=k.crv, x=k.x, alg=k.alg or "EdDSA", use=k.use or "sig")
                for k in response.keys
            ]
        )


# --- rooms ----------------------------------------------------------------------------------------


class Media(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    photo: bool = False
    voice: bool = False
    video: bool = False

    def to_proto(self) -> rooms_pb2.MediaSettings:
        return rooms_pb2.MediaSettings(photo=self.photo, voice=self.voice, video=self.video)


class BackRoom(BaseModel):
    """A room's paid Back Room as everyone sees it on the main room."""

    enabled: bool = Field(description="Seats are on sale (holders keep their seats when it is switched off).")
    seat_price_cents: int = Field(description="What the next buyer pays for a seat.")
    seat_limit: int
    seats_taken: int
    seats_left: int
    full: bool = Field(description="No seat is left.")
    back_room_id: str | None = Field(
        default=None,
        description="The Back Room's own room id; only for its members (the host and seat holders).",
    )

    @classmethod
    def from_proto(cls, back_room: rooms_pb2.BackRoom) -> BackRoom:
        return cls(
            enabled=back_room.enabled,
            seat_price_cents=back_room.seat_price_cents,
            seat_limit=back_room.seat_limit,
            seats_taken=back_room.seats_taken,
            seats_left=max(0, back_room.seat_limit - back_room.seats_taken),
            full=back_room.full,
            back_room_id=back_room.back_room_id or None,
        )


class BackRoomSettings(RequestBody):
    """A paid Back Room (hosts with an account who can receive money). Fields left out keep their value."""

    enabled: bool | None = None
    seat_price_cents: int | None = Field(
        default=None, ge=50, le=100_000, description="50-100000 cents; a new price is for future buyers only."
    )
    seat_limit: int | None = Field(
        default=None, ge=1, le=1000, description="1-1000 seats; never below the seats already taken."
    )

    def to_proto(self) -> rooms_pb2.BackRoomSettings:
        settings = rooms_pb2.BackRoomSettings()
        if self.enabled is not None:
            settings.enabled = self.enabled
        if self.seat_price_cents is not None:
            settings.seat_price_cents = self.seat_price_cents
        if self.seat_limit is not None:
            settings.seat_limit = self.seat_limit
        return settings


class Room(BaseModel):
    id: str
    code: str
    url: str = Field(description="Shareable link: PUBLIC_URL + /c/{code}.")
    name: str
    description: str
    visibility: Visibility
    media: Media
    theme: Theme
    retention_days: int = Field(description="Days messages are kept; 0 keeps them forever.")
    slow_mode_seconds: int = Field(
        default=0, description="Seconds each participant waits between messages; 0 is off. Hosts never wait."
    )
    anonymous_names_per_network: int = Field(
        default=0,
        description="New usernames people without an account may take in this room per hour from one "
        "network (client IP): the host's choice or the platform's default. Signing in lifts it.",
    )
    closed: bool
    taken_down: bool = Field(
        default=False,
        description="ChatPop's moderators took the room down: it is closed, and its content is gone "
        "for everyone (only admins still see the room itself).",
    )
    erased: bool = Field(
        default=False,
        description='Closed with "delete everything": its history, media and cache were deleted for good.',
    )
    created_at: datetime | None = None
    updated_at: datetime | None = None
    back_room: BackRoom | None = Field(default=None, description="The room's paid Back Room, once enabled.")
    parent_room_id: str | None = Field(
        default=None, description="Set on a Back Room only: the id of the main room it belongs to."
    )

    @classmethod
    def from_proto(cls, room: rooms_pb2.Room, public_url: str) -> Room:
        return cls(
            id=room.id,
            code=room.code,
            url=f"{public_url}/c/{room.code}",
            name=room.name,
            description=room.description,
            visibility=_VISIBILITY_OUT.get(room.visibility, "public"),
            media=Media(photo=room.media.photo, voice=room.media.voice, video=room.media.video),
            theme=_THEME_OUT.get(room.theme, "purple-dream"),
            retention_days=room.retention_days,
            slow_mode_seconds=room.slow_mode_seconds,
            anonymous_names_per_network=room.anonymous_names_per_network,
            closed=room.closed,
            taken_down=room.taken_down,
            erased=room.erased,
            created_at=timestamp(room.created_at),
            updated_at=timestamp(room.updated_at),
            back_room=BackRoom.from_proto(room.back_room) if room.HasField("back_room") else None,
            parent_room_id=room.parent_room_id or None,
        )


class CreateRoomRequest(RequestBody):
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=4000)
    visibility: Visibility = "public"
    access_code: str | None = Field(default=None, max_length=256, description="Required for private rooms.")
    media: Media = Field(default_factory=Media)
    theme: Theme = "purple-dream"
    retention_days: int | None = Field(default=None, ge=0, le=36_500, description="Default 30; 0 = forever.")
    slow_mode_seconds: int = Field(default=0, ge=0, le=3600, description="0 (off) to 3600 seconds.")
    anonymous_names_per_network: int | None = Field(
        default=None, ge=1, le=1000, description="Omit for the platform's default."
    )
    back_room: BackRoomSettings | None = None

    def to_proto(self) -> rooms_pb2.CreateRoomRequest:
        request = rooms_pb2.CreateRoomRequest(
            name=self.name,
            description=self.description,
            visibility=_VISIBILITY_IN[self.visibility],
            access_code=self.access_code or "",
            media=self.media.to_proto(),
            theme=_THEME_IN[self.theme],
        )
        if self.retention_days is not None:
            request.retention_days = self.retention_days
        request.slow_mode_seconds = self.slow_mode_seconds
        if self.anonymous_names_per_network is not None:
            request.anonymous_names_per_network = self.anonymous_names_per_network
        if self.back_room is not None:
            request.back_room.CopyFrom(self.back_room.to_proto())
        return request


class UpdateRoomRequest(RequestBody):
    """Only the fields present are changed."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=4000)
    visibility: Visibility | None = None
    access_code: str | None = Field(default=None, max_length=256, description="Required to go private.")
    media: Media | None = None
    theme: Theme | None = None
    retention_days: int | None = Field(default=None, ge=0, le=36_500)
    slow_mode_seconds: int | None = Field(default=None, ge=0, le=3600, description="0 turns slow mode off.")
    anonymous_names_per_network: int | None = Field(
        default=None, ge=0, le=1000, description="0 goes back to the platform's default."
    )
    back_room: BackRoomSettings | None = None

    def to_proto(self, room_id: str) -> rooms_pb2.UpdateRoomRequest:
        request = rooms_pb2.UpdateRoomRequest(room_id=room_id)
        if self.name is not None:
            request.name = self.name
        if self.description is not None:
            request.description = self.description
        if self.visibility is not None:
            request.visibility = _VISIBILITY_IN[self.visibility]
        if self.access_code is not None:
            request.access_code = self.access_code
        if self.media is not None:
            request.media.CopyFrom(self.media.to_proto())
        if self.theme is not None:
            request.theme = _THEME_IN[self.theme]
        if self.retention_days is not None:
            request.retention_days = self.retention_days
        if self.slow_mode_seconds is not None:
            request.slow_mode_seconds = self.slow_mode_seconds
        if self.anonymous_names_per_network is not None:
            request.anonymous_names_per_network = self.anonymous_names_per_network
        if self.back_room is not None:
            request.back_room.CopyFrom(self.back_room.to_proto())
        return request


class AccessCode(BaseModel):
    access_code: str | None = Field(
        description="The private room's access code; null when it was set before codes could be shown "
        "again (set a new one to see it)."
    )


class Participant(BaseModel):
    id: str
    room_id: str
    username: str
    is_host: bool
    verified: bool = Field(description="The username is the account's reserved one.")
    joined_at: datetime | None = None

    @classmethod
    def from_proto(cls, participant: rooms_pb2.Participant) -> Participant:
        return cls(
            id=participant.id,
            room_id=participant.room_id,
            username=participant.username,
            is_host=participant.is_host,
            verified=participant.verified,
            joined_at=timestamp(participant.joined_at),
        )


class JoinRequest(RequestBody):
    username: str | None = Field(
        default=None,
        max_length=64,
        description="5-15 letters A-Z, digits or underscores; a dice roll from `usernames/suggest` "
        "is held for you for a few minutes. Accounts may omit it to join under their reserved "
        "username, which shows the verified badge.",
    )
    access_code: str | None = Field(default=None, max_length=256, description="Private rooms only.")


class RoomMember(Participant):
    online: bool = Field(description="Has at least one open WebSocket to the room right now.")

    @classmethod
    def from_participant(cls, participant: rooms_pb2.Participant, *, online: bool) -> RoomMember:
        return cls(**Participant.from_proto(participant).__dict__, online=online)


class ParticipantList(BaseModel):
    participants: list[RoomMember] = Field(description="In the order they joined; banned ones left out.")
    presence_version: int = Field(
        description="Version of the `online` flags. `presence` frames with a higher version apply on "
        "top of them; a frame more than one above the version held means one was missed: read this "
        "list again."
    )


class MyParticipant(BaseModel):
    participant: Participant
    room: Room


class UsernameSuggestion(BaseModel):
    username: str = Field(description="Adjective + Noun + Number, at most 15 characters.")
    remaining: int = Field(description="Rolls you have left in this room in the current hour.")
    held_for: int = Field(description="Seconds this username stays reserved for you to join with.")


class JoinResponse(BaseModel):
    participant: Participant
    room_token: str = Field(description="Bearer token for this room's messages and WebSocket.")
    room_token_expires_in: int
    room: Room


# --- messages -------------------------------------------------------------------------------------


class Sender(BaseModel):
    participant_id: str
    username: str
    is_host: bool
    verified: bool


REACTION_EMOJIS = ("\U0001f44d", "\u2764\ufe0f", "\U0001f602", "\U0001f62e", "\U0001f622", "\U0001f621")
Reaction = Literal["\U0001f44d", "\u2764\ufe0f", "\U0001f602", "\U0001f62e", "\U0001f622", "\U0001f621"]


def reaction_counts(state: messaging_pb2.MessageState) -> dict[str, int]:
    return {count.emoji: int(count.count) for count in state.reactions}


class Tip(BaseModel):
    order_id: str = Field(description="The order that paid for it.")
    amount_cents: int
    currency: str = Field(description="ISO 4217 code in lower case, e.g. `usd`.")
    note: str = Field(description="The tipper's note (at most 200 characters); may be empty.")

    @classmethod
    def from_proto(cls, tip: messaging_pb2.Tip) -> Tip:
        return cls(order_id=tip.order_id, amount_cents=tip.amount_cents, currency=tip.currency, note=tip.note)


EntryKind = Literal["message", "tip"]
MediaKind = Literal["photo", "voice", "video"]
MediaState = Literal["pending", "ready", "deleted"]
MEDIA_KINDS: dict[int, MediaKind] = {
    messaging_pb2.MEDIA_KIND_PHOTO: "photo",
    messaging_pb2.MEDIA_KIND_VOICE: "voice",
    messaging_pb2.MEDIA_KIND_VIDEO: "video",
}
MEDIA_STATES: dict[int, MediaState] = {
    messaging_pb2.MEDIA_STATE_PENDING: "pending",
    messaging_pb2.MEDIA_STATE_READY: "ready",
    messaging_pb2.MEDIA_STATE_DELETED: "deleted",
}


class MessageMedia(BaseModel):
    """The media a message carries (no URLs: they are per participant, from `POST …/media/urls`)."""

    id: str
    kind: MediaKind
    state: MediaState = Field(description="`deleted` once purged (its variants are then gone).")
    content_type: str = Field(description="Of the `full` variant.")
    width: int | None = Field(default=None, description="Photo and video, in pixels.")
    height: int | None = None
    duration_ms: int | None = Field(default=None, description="Voice and video.")
    variants: list[str] = Field(
        description="Stored variants: `full`, plus `thumb` (photo) or `poster` (video)."
    )

    @classmethod
    def from_proto(cls, media: messaging_pb2.Media) -> MessageMedia:
        return cls(
            id=media.id,
            kind=MEDIA_KINDS.get(media.kind, "photo"),
            state=MEDIA_STATES.get(media.state, "pending"),
            content_type=media.content_type,
            width=media.width or None,
            height=media.height or None,
            duration_ms=media.duration_ms or None,
            variants=[variant.name for variant in media.variants],
        )


class Message(BaseModel):
    seq: int = Field(description="Its place in the room's log, gap-free from 1 (changes have seqs too).")
    id: str
    room_id: str
    sender: Sender
    text: str = Field(description="Empty once the message is deleted.")
    reply_to_seq: int | None = None
    client_msg_id: str
    created_at: datetime | None = None
    deleted: bool = False
    deleted_by_host: bool = Field(default=False, description="The room's host deleted it (not its author).")
    hidden: bool = Field(
        default=False,
        description="Hidden pending review after reports: show it as such. History gives its text to the "
        "room's host alone (empty for everyone else).",
    )
    reactions: dict[str, int] = Field(
        default_factory=dict, description="Emojis with the number of people on each; none listed with 0."
    )
    my_reactions: list[str] = Field(
        default_factory=list, description="The caller's emojis on it (history pages; empty in live frames)."
    )
    state_seq: int = Field(
        default=0,
        description="Seq of the last change to this message (0: none). Apply a change (a `reaction` or "
        "`deleted` frame) only when its `state_seq` is above the one held.",
    )
    kind: EntryKind = Field(
        default="message",
        description="`tip`: not a chat message but a paid tip to the host (`tip`); `sender` tipped, and "
        "`text` is empty.",
    )
    tip: Tip | None = Field(default=None, description="For a tip only.")
    media: MessageMedia | None = Field(
        default=None, description="The photo, voice message or video it carries; null when none."
    )

    @classmethod
    def from_proto(cls, message: messaging_pb2.Message) -> Message:
        is_tip = message.kind == messaging_pb2.ENTRY_KIND_TIP
        return cls(
            media=MessageMedia.from_proto(message.media) if message.HasField("media") else None,
            kind="tip" if is_tip else "message",
            tip=Tip.from_proto(message.tip) if is_tip else None,
            deleted=message.state.deleted,
            deleted_by_host=message.state.deleted_by_host,
            hidden=message.state.hidden,
            reactions=reaction_counts(message.state),
            my_reactions=list(message.my_reactions),
            state_seq=message.state.state_seq,
            seq=message.seq,
            id=message.id,
            room_id=message.room_id,
            sender=Sender(
                participant_id=message.sender_participant_id,
                username=message.sender_username,
                is_host=message.sender_is_host,
                verified=message.sender_verified,
            ),
            text=message.text,
            reply_to_seq=message.reply_to_seq or None,
            client_msg_id=message.client_msg_id,
            created_at=timestamp(message.created_at),
        )


PaidPinRemovedReason = Literal["", "host", "banned", "message_deleted"]
_REMOVED_REASONS: dict[str, PaidPinRemovedReason] = {
    "host": "host",
    "banned": "banned",
    "message_deleted": "message_deleted",
}


class PaidPin(BaseModel):
    """A paid pin (Super-Chat style): live until `expires_at`, below the host's pins."""

    id: str = Field(description="The pin's id: the id of the order that bought it.")
    target_seq: int = Field(description="The pinned message's seq.")
    message: Message | None = Field(
        default=None,
        description="The pinned message as it stood when the entry was written (history: as it now is); "
        "later changes to it come as frames of their own.",
    )
    participant_id: str = Field(description="The buyer.")
    username: str
    amount_cents: int = Field(
        description="Everything paid for it, extensions included: what a rival must outbid."
    )
    currency: str = Field(description="ISO 4217 code in lower case, e.g. `usd`.")
    started_at: datetime | None = None
    expires_at: datetime | None = Field(default=None, description="Drop the pin at this time.")
    removed_reason: PaidPinRemovedReason = Field(
        default="",
        description="Why a removed pin came down before its time: `host` (the host or ChatPop's "
        "moderators), `banned` (its buyer was banned), `message_deleted`; empty while it stands.",
    )

    @classmethod
    def from_proto(cls, pin: messaging_pb2.PaidPin) -> PaidPin:
        return cls(
            id=pin.id,
            target_seq=pin.target_seq,
            message=Message.from_proto(pin.message) if pin.HasField("message") else None,
            participant_id=pin.participant_id,
            username=pin.username,
            amount_cents=pin.amount_cents,
            currency=pin.currency,
            started_at=timestamp(pin.started_at),
            expires_at=timestamp(pin.expires_at),
            removed_reason=_REMOVED_REASONS.get(pin.removed_reason, ""),
        )


class PaidPinRemoval(BaseModel):
    pin_id: str
    seq: int | None = Field(description="Seq of the `paid_pin_removed` entry; null when nothing changed.")
    changed: bool = Field(description="False when the pin had run out or come down already.")


PinSource = Literal["host", "paid"]
_PIN_SOURCE_OUT: dict[int, PinSource] = {
    messaging_pb2.PIN_SOURCE_HOST: "host",
    messaging_pb2.PIN_SOURCE_PAID: "paid",
}


class Pin(BaseModel):
    message: Message = Field(description="The pinned message as it now is.")
    source: PinSource = Field(description="Who pinned it: host pins sit above paid pins.")
    pinned_seq: int = Field(description="Seq of the `pinned` entry.")


class RoomBoard(BaseModel):
    """What the room shows above its messages."""

    pins: list[Pin] = Field(description="Host pins first, newest first.")
    pins_state_seq: int = Field(
        description="Seq of the last `pinned` or `unpinned` entry (0: none); apply such a frame only when "
        "its `pins_state_seq` is above this."
    )
    sticky_text: str = Field(description="The host's sticky broadcast message; empty when none.")
    sticky_seq: int = Field(description="Seq of the last `sticky` entry (0: none).")
    paid_pins: list[PaidPin] = Field(
        default_factory=list,
        description="Live paid pins, top first, below the host's pins (drop each at its `expires_at`).",
    )
    paid_pins_state_seq: int = Field(
        default=0,
        description="Seq of the last `paid_pin` or `paid_pin_removed` entry (0: none); apply such a frame "
        "only when its `paid_pins_state_seq` is above this.",
    )

    @classmethod
    def from_proto(cls, board: messaging_pb2.RoomBoard) -> RoomBoard:
        return cls(
            pins=[
                Pin(
                    message=Message.from_proto(pin.message),
                    source=_PIN_SOURCE_OUT.get(pin.source, "host"),
                    pinned_seq=pin.pinned_seq,
                )
                for pin in board.pins
            ],
            pins_state_seq=board.pins_state_seq,
            sticky_text=board.sticky_text,
            sticky_seq=board.sticky_seq,
            paid_pins=[PaidPin.from_proto(pin) for pin in board.paid_pins],
            paid_pins_state_seq=board.paid_pins_state_seq,
        )


class PinsState(BaseModel):
    target_seq: int
    pinned_seqs: list[int] = Field(description="The room's host pins now, newest first.")
    pins_state_seq: int
    changed: bool = Field(description="False when the message was already pinned (or not pinned) as asked.")


class SetStickyRequest(RequestBody):
    text: str = Field(
        max_length=20_000, description="The sticky message, checked as a message's text; empty clears it."
    )


class StickyState(BaseModel):
    text: str = Field(description="The sticky message now; empty when none.")
    sticky_seq: int
    changed: bool = Field(description="False when it already read so.")


ReportReason = Literal["spam", "harassment", "hate", "sexual", "violence", "other"]
REPORT_REASONS: dict[str, messaging_pb2.ReportReason] = {
    "spam": messaging_pb2.REPORT_REASON_SPAM,
    "harassment": messaging_pb2.REPORT_REASON_HARASSMENT,
    "hate": messaging_pb2.REPORT_REASON_HATE,
    "sexual": messaging_pb2.REPORT_REASON_SEXUAL,
    "violence": messaging_pb2.REPORT_REASON_VIOLENCE,
    "other": messaging_pb2.REPORT_REASON_OTHER,
}
_REASON_OUT: dict[int, ReportReason] = {
    messaging_pb2.REPORT_REASON_SPAM: "spam",
    messaging_pb2.REPORT_REASON_HARASSMENT: "harassment",
    messaging_pb2.REPORT_REASON_HATE: "hate",
    messaging_pb2.REPORT_REASON_SEXUAL: "sexual",
    messaging_pb2.REPORT_REASON_VIOLENCE: "violence",
    messaging_pb2.REPORT_REASON_OTHER: "other",
}


class ReportRequest(RequestBody):
    reason: ReportReason
    text: str = Field(default="", max_length=500, description="Optional details, at most 500 characters.")


class ReportReceipt(BaseModel):
    target_seq: int
    created: bool = Field(description="False when you had reported this message already.")
    hidden: bool = Field(description="The message is hidden pending the host's review.")


class Report(BaseModel):
    reporter: Sender = Field(description="Who reported it (shown to the room's host alone).")
    reason: ReportReason
    text: str
    created_at: datetime | None = None


class ReportedMessage(BaseModel):
    message: Message = Field(description="As it now is, text included even when hidden.")
    reports: list[Report] = Field(description="Open reports, oldest first.")

    @classmethod
    def from_proto(cls, item: messaging_pb2.ReportedMessage) -> ReportedMessage:
        return cls(
            message=Message.from_proto(item.message),
            reports=[
                Report(
                    reporter=Sender(
                        participant_id=r.reporter_participant_id,
                        username=r.reporter_username,
                        is_host=False,
                        verified=False,
                    ),
                    reason=_REASON_OUT.get(r.reason, "other"),
                    text=r.text,
                    created_at=timestamp(r.created_at),
                )
                for r in item.reports
            ],
        )


class ReportQueue(BaseModel):
    items: list[ReportedMessage] = Field(description="Messages with open reports, newest message first.")
    has_more: bool = Field(description="More lie below: page on with `before_seq` = the last item's seq.")


ReportAction = Literal["restore", "delete", "dismiss"]
REPORT_ACTIONS: dict[str, messaging_pb2.ReportResolution] = {
    "restore": messaging_pb2.REPORT_RESOLUTION_RESTORE,
    "delete": messaging_pb2.REPORT_RESOLUTION_DELETE,
    "dismiss": messaging_pb2.REPORT_RESOLUTION_DISMISS,
}


class ResolveReportsRequest(RequestBody):
    action: ReportAction = Field(
        description="`restore`: show it again; `delete`: delete it; `dismiss`: leave it as it is. "
        "Each closes its open reports."
    )


class ReportsResolved(BaseModel):
    target_seq: int
    action: ReportAction
    closed: int = Field(description="Open reports closed.")
    changed: bool = Field(description="The room's log got an entry (restored, or deleted).")


class MessagePage(BaseModel):
    messages: list[Message] = Field(
        description="Newest first, each with its current state; tips (`kind: tip`) among them."
    )
    board: RoomBoard | None = Field(
        default=None,
        description="The newest page only (no `before_seq`): pins and the sticky message as of `last_seq`.",
    )
    has_more: bool = Field(description="The log has entries below `low_seq`.")
    last_seq: int = Field(description="Seq of the room's newest entry.")
    low_seq: int = Field(
        description="The page accounts for every seq from here up to `before_seq` - 1 (`last_seq` for the "
        "newest page): changes among them are folded into the messages' state. Page on with "
        "`before_seq=low_seq`."
    )
    touched: list[Message] = Field(
        default_factory=list,
        description="Messages older than the page that changes within its range changed, with their state "
        "now: a client that fills a hole with this page applies them like the changes themselves.",
    )
    floor_seq: int = Field(
        default=1,
        description="The lowest seq the room's retention kept (1 when it deleted nothing): there is no "
        "history below it, so `has_more` is false once a page reaches it.",
    )


class SetReactionRequest(RequestBody):
    emoji: Reaction = Field(description="One of the six reactions.")
    on: bool = Field(description="True puts it on, false takes it off; setting what is set changes nothing.")


class ReactionState(BaseModel):
    target_seq: int
    reactions: dict[str, int]
    my_reactions: list[str]
    state_seq: int
    changed: bool = Field(description="False when the reaction was already as asked.")


class DeletedMessage(BaseModel):
    target_seq: int
    deleted: bool = True
    changed: bool = Field(description="False when it was deleted already.")


MEDIA_REFERENCE_INVALID = "media_reference_invalid"
OUTSIDE_MEDIA_MESSAGE = "Attach media by uploading it to the room; outside links cannot be attached."
TEXT_REQUIRED_MESSAGE = "text: must not be empty unless media_id is set"


def refuse_outside_media(data: Any) -> Any:
    """A message names media by the id of an upload to its room, never by a link or an inline object:
    `media_url` or `media` is refused with `media_reference_invalid`."""
    if isinstance(data, dict) and ("media_url" in data or "media" in data):
        raise PydanticCustomError(MEDIA_REFERENCE_INVALID, OUTSIDE_MEDIA_MESSAGE)
    return data


class SendMessageRequest(RequestBody):
    client_msg_id: str = Field(
        min_length=1, max_length=64, description="Client-chosen id; a retry with it never duplicates."
    )
    text: str = Field(
        default="", max_length=20_000, description="1-20000 characters; may be empty when `media_id` is set."
    )
    reply_to_seq: int | None = Field(
        default=None, ge=1, le=MAX_SEQ, description="Seq of the message this one replies to."
    )
    media_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="The id of a photo, voice message or video this participant uploaded to this room "
        "(`POST /api/v1/rooms/{code}/media`) that no message carries yet. Refused with 422 "
        "`media_reference_invalid` (not an id, or a `media_url`/`media` field instead of it), 404 "
        "`media_not_found`, 403 `media_not_in_room` / `media_not_yours` / `media_not_allowed`, 409 "
        "`media_not_ready` / `media_in_use`.",
    )

    @model_validator(mode="before")
    @classmethod
    def _no_outside_media(cls, data: Any) -> Any:
        return refuse_outside_media(data)

    @model_validator(mode="after")
    def _text_or_media(self) -> SendMessageRequest:
        if not self.text and self.media_id is None:
            raise PydanticCustomError("text_required", TEXT_REQUIRED_MESSAGE)
        return self


class SendMessageResponse(BaseModel):
    message: Message
    created: bool = Field(description="False when this client_msg_id was already sent (a retry).")


class Status(BaseModel):
    status: str


# --- my rooms -------------------------------------------------------------------------------------


class MyRoom(BaseModel):
    room: Room
    participant: Participant | None = Field(description="Null when you host the room but never joined it.")
    is_host: bool
    last_seq: int = Field(description="Seq of the room's newest message; 0 when it has none.")
    last_activity_at: datetime | None = Field(
        description="When the newest message was sent, else when you joined or created the room."
    )
    unread: int = Field(description="Messages from others since you last read the room, up to 99.")
    unread_more: bool = Field(description='True when more than 99 are unread (show "99+").')


class MyRooms(BaseModel):
    rooms: list[MyRoom] = Field(description="Most recent activity first.")


class ReadRequest(RequestBody):
    seq: int = Field(ge=0, le=MAX_SEQ, description="Seq of the newest message you have seen.")


class ReadPosition(BaseModel):
    read_seq: int = Field(description="Your read position in the room after this call.")
