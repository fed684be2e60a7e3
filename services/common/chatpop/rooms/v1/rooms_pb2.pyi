import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SeatOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEAT_OUTCOME_UNSPECIFIED: _ClassVar[SeatOutcome]
    SEAT_OUTCOME_GRANTED: _ClassVar[SeatOutcome]
    SEAT_OUTCOME_FULL: _ClassVar[SeatOutcome]
    SEAT_OUTCOME_ALREADY_HOLDER: _ClassVar[SeatOutcome]
    SEAT_OUTCOME_BANNED: _ClassVar[SeatOutcome]
    SEAT_OUTCOME_UNAVAILABLE: _ClassVar[SeatOutcome]

class Visibility(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VISIBILITY_UNSPECIFIED: _ClassVar[Visibility]
    VISIBILITY_PUBLIC: _ClassVar[Visibility]
    VISIBILITY_PRIVATE: _ClassVar[Visibility]

class Theme(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    THEME_UNSPECIFIED: _ClassVar[Theme]
    THEME_PURPLE_DREAM: _ClassVar[Theme]
    THEME_OCEAN_BLUE: _ClassVar[Theme]
    THEME_DARK_MODE: _ClassVar[Theme]

class BanTier(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BAN_TIER_UNSPECIFIED: _ClassVar[BanTier]
    BAN_TIER_SESSION: _ClassVar[BanTier]
    BAN_TIER_DEVICE: _ClassVar[BanTier]
    BAN_TIER_IP: _ClassVar[BanTier]
SEAT_OUTCOME_UNSPECIFIED: SeatOutcome
SEAT_OUTCOME_GRANTED: SeatOutcome
SEAT_OUTCOME_FULL: SeatOutcome
SEAT_OUTCOME_ALREADY_HOLDER: SeatOutcome
SEAT_OUTCOME_BANNED: SeatOutcome
SEAT_OUTCOME_UNAVAILABLE: SeatOutcome
VISIBILITY_UNSPECIFIED: Visibility
VISIBILITY_PUBLIC: Visibility
VISIBILITY_PRIVATE: Visibility
THEME_UNSPECIFIED: Theme
THEME_PURPLE_DREAM: Theme
THEME_OCEAN_BLUE: Theme
THEME_DARK_MODE: Theme
BAN_TIER_UNSPECIFIED: BanTier
BAN_TIER_SESSION: BanTier
BAN_TIER_DEVICE: BanTier
BAN_TIER_IP: BanTier

class BackRoom(_message.Message):
    __slots__ = ("enabled", "seat_price_cents", "seat_limit", "seats_taken", "full", "back_room_id")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    SEAT_PRICE_CENTS_FIELD_NUMBER: _ClassVar[int]
    SEAT_LIMIT_FIELD_NUMBER: _ClassVar[int]
    SEATS_TAKEN_FIELD_NUMBER: _ClassVar[int]
    FULL_FIELD_NUMBER: _ClassVar[int]
    BACK_ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    seat_price_cents: int
    seat_limit: int
    seats_taken: int
    full: bool
    back_room_id: str
    def __init__(self, enabled: _Optional[bool] = ..., seat_price_cents: _Optional[int] = ..., seat_limit: _Optional[int] = ..., seats_taken: _Optional[int] = ..., full: _Optional[bool] = ..., back_room_id: _Optional[str] = ...) -> None: ...

class BackRoomSettings(_message.Message):
    __slots__ = ("enabled", "seat_price_cents", "seat_limit")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    SEAT_PRICE_CENTS_FIELD_NUMBER: _ClassVar[int]
    SEAT_LIMIT_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    seat_price_cents: int
    seat_limit: int
    def __init__(self, enabled: _Optional[bool] = ..., seat_price_cents: _Optional[int] = ..., seat_limit: _Optional[int] = ...) -> None: ...

class Seat(_message.Message):
    __slots__ = ("participant_id", "username", "order_id", "price_cents", "granted_at")
    PARTICIPANT_ID_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    PRICE_CENTS_FIELD_NUMBER: _ClassVar[int]
    GRANTED_AT_FIELD_NUMBER: _ClassVar[int]
    participant_id: str
    username: str
    order_id: str
    price_cents: int
    granted_at: _timestamp_pb2.Timestamp
    def __init__(self, participant_id: _Optional[str] = ..., username: _Optional[str] = ..., order_id: _Optional[str] = ..., price_cents: _Optional[int] = ..., granted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GrantSeatRequest(_message.Message):
    __slots__ = ("order_id", "room_id", "participant_id", "price_cents")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANT_ID_FIELD_NUMBER: _ClassVar[int]
    PRICE_CENTS_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    room_id: str
    participant_id: str
    price_cents: int
    def __init__(self, order_id: _Optional[str] = ..., room_id: _Optional[str] = ..., participant_id: _Optional[str] = ..., price_cents: _Optional[int] = ...) -> None: ...

class GrantSeatResponse(_message.Message):
    __slots__ = ("outcome", "seat", "back_room", "created")
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    SEAT_FIELD_NUMBER: _ClassVar[int]
    BACK_ROOM_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    outcome: SeatOutcome
    seat: Seat
    back_room: BackRoom
    created: bool
    def __init__(self, outcome: _Optional[_Union[SeatOutcome, str]] = ..., seat: _Optional[_Union[Seat, _Mapping]] = ..., back_room: _Optional[_Union[BackRoom, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class RemoveSeatRequest(_message.Message):
    __slots__ = ("room_id", "participant_id", "refund")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANT_ID_FIELD_NUMBER: _ClassVar[int]
    REFUND_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    participant_id: str
    refund: bool
    def __init__(self, room_id: _Optional[str] = ..., participant_id: _Optional[str] = ..., refund: _Optional[bool] = ...) -> None: ...

class RemoveSeatResponse(_message.Message):
    __slots__ = ("seat", "changed", "back_room", "back_room_participant_id", "refund")
    SEAT_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    BACK_ROOM_FIELD_NUMBER: _ClassVar[int]
    BACK_ROOM_PARTICIPANT_ID_FIELD_NUMBER: _ClassVar[int]
    REFUND_FIELD_NUMBER: _ClassVar[int]
    seat: Seat
    changed: bool
    back_room: BackRoom
    back_room_participant_id: str
    refund: bool
    def __init__(self, seat: _Optional[_Union[Seat, _Mapping]] = ..., changed: _Optional[bool] = ..., back_room: _Optional[_Union[BackRoom, _Mapping]] = ..., back_room_participant_id: _Optional[str] = ..., refund: _Optional[bool] = ...) -> None: ...

class ListSeatsRequest(_message.Message):
    __slots__ = ("room_id",)
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    def __init__(self, room_id: _Optional[str] = ...) -> None: ...

class ListSeatsResponse(_message.Message):
    __slots__ = ("seats", "back_room")
    SEATS_FIELD_NUMBER: _ClassVar[int]
    BACK_ROOM_FIELD_NUMBER: _ClassVar[int]
    seats: _containers.RepeatedCompositeFieldContainer[Seat]
    back_room: BackRoom
    def __init__(self, seats: _Optional[_Iterable[_Union[Seat, _Mapping]]] = ..., back_room: _Optional[_Union[BackRoom, _Mapping]] = ...) -> None: ...

class EnterBackRoomRequest(_message.Message):
    __slots__ = ("room_id",)
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    def __init__(self, room_id: _Optional[str] = ...) -> None: ...

class EnterBackRoomResponse(_message.Message):
    __slots__ = ("back_room", "participant", "room_token", "room_token_expires_in")
    BACK_ROOM_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANT_FIELD_NUMBER: _ClassVar[int]
    ROOM_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ROOM_TOKEN_EXPIRES_IN_FIELD_NUMBER: _ClassVar[int]
    back_room: Room
    participant: Participant
    room_token: str
    room_token_expires_in: int
    def __init__(self, back_room: _Optional[_Union[Room, _Mapping]] = ..., participant: _Optional[_Union[Participant, _Mapping]] = ..., room_token: _Optional[str] = ..., room_token_expires_in: _Optional[int] = ...) -> None: ...

class MediaSettings(_message.Message):
    __slots__ = ("photo", "voice", "video")
    PHOTO_FIELD_NUMBER: _ClassVar[int]
    VOICE_FIELD_NUMBER: _ClassVar[int]
    VIDEO_FIELD_NUMBER: _ClassVar[int]
    photo: bool
    voice: bool
    video: bool
    def __init__(self, photo: _Optional[bool] = ..., voice: _Optional[bool] = ..., video: _Optional[bool] = ...) -> None: ...

class Room(_message.Message):
    __slots__ = ("id", "code", "name", "description", "visibility", "media", "theme", "retention_days", "host_id", "closed", "created_at", "updated_at", "slow_mode_seconds", "anonymous_names_per_network", "taken_down", "back_room", "parent_room_id", "erased")
    ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    VISIBILITY_FIELD_NUMBER: _ClassVar[int]
    MEDIA_FIELD_NUMBER: _ClassVar[int]
    THEME_FIELD_NUMBER: _ClassVar[int]
    RETENTION_DAYS_FIELD_NUMBER: _ClassVar[int]
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    CLOSED_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    SLOW_MODE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ANONYMOUS_NAMES_PER_NETWORK_FIELD_NUMBER: _ClassVar[int]
    TAKEN_DOWN_FIELD_NUMBER: _ClassVar[int]
    BACK_ROOM_FIELD_NUMBER: _ClassVar[int]
    PARENT_ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    ERASED_FIELD_NUMBER: _ClassVar[int]
    id: str
    code: str
    name: str
    description: str
    visibility: Visibility
    media: MediaSettings
    theme: Theme
    retention_days: int
    host_id: str
    closed: bool
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    slow_mode_seconds: int
    anonymous_names_per_network: int
    taken_down: bool
    back_room: BackRoom
    parent_room_id: str
    erased: bool
    def __init__(self, id: _Optional[str] = ..., code: _Optional[str] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., visibility: _Optional[_Union[Visibility, str]] = ..., media: _Optional[_Union[MediaSettings, _Mapping]] = ..., theme: _Optional[_Union[Theme, str]] = ..., retention_days: _Optional[int] = ..., host_id: _Optional[str] = ..., closed: _Optional[bool] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., slow_mode_seconds: _Optional[int] = ..., anonymous_names_per_network: _Optional[int] = ..., taken_down: _Optional[bool] = ..., back_room: _Optional[_Union[BackRoom, _Mapping]] = ..., parent_room_id: _Optional[str] = ..., erased: _Optional[bool] = ...) -> None: ...

class Participant(_message.Message):
    __slots__ = ("id", "room_id", "subject", "username", "is_host", "version", "banned", "verified", "joined_at", "seat_removed")
    ID_FIELD_NUMBER: _ClassVar[int]
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    IS_HOST_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    BANNED_FIELD_NUMBER: _ClassVar[int]
    VERIFIED_FIELD_NUMBER: _ClassVar[int]
    JOINED_AT_FIELD_NUMBER: _ClassVar[int]
    SEAT_REMOVED_FIELD_NUMBER: _ClassVar[int]
    id: str
    room_id: str
    subject: str
    username: str
    is_host: bool
    version: int
    banned: bool
    verified: bool
    joined_at: _timestamp_pb2.Timestamp
    seat_removed: bool
    def __init__(self, id: _Optional[str] = ..., room_id: _Optional[str] = ..., subject: _Optional[str] = ..., username: _Optional[str] = ..., is_host: _Optional[bool] = ..., version: _Optional[int] = ..., banned: _Optional[bool] = ..., verified: _Optional[bool] = ..., joined_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., seat_removed: _Optional[bool] = ...) -> None: ...

class CreateRoomRequest(_message.Message):
    __slots__ = ("name", "description", "visibility", "access_code", "media", "theme", "retention_days", "slow_mode_seconds", "anonymous_names_per_network", "back_room")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    VISIBILITY_FIELD_NUMBER: _ClassVar[int]
    ACCESS_CODE_FIELD_NUMBER: _ClassVar[int]
    MEDIA_FIELD_NUMBER: _ClassVar[int]
    THEME_FIELD_NUMBER: _ClassVar[int]
    RETENTION_DAYS_FIELD_NUMBER: _ClassVar[int]
    SLOW_MODE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ANONYMOUS_NAMES_PER_NETWORK_FIELD_NUMBER: _ClassVar[int]
    BACK_ROOM_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    visibility: Visibility
    access_code: str
    media: MediaSettings
    theme: Theme
    retention_days: int
    slow_mode_seconds: int
    anonymous_names_per_network: int
    back_room: BackRoomSettings
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., visibility: _Optional[_Union[Visibility, str]] = ..., access_code: _Optional[str] = ..., media: _Optional[_Union[MediaSettings, _Mapping]] = ..., theme: _Optional[_Union[Theme, str]] = ..., retention_days: _Optional[int] = ..., slow_mode_seconds: _Optional[int] = ..., anonymous_names_per_network: _Optional[int] = ..., back_room: _Optional[_Union[BackRoomSettings, _Mapping]] = ...) -> None: ...

class CreateRoomResponse(_message.Message):
    __slots__ = ("room",)
    ROOM_FIELD_NUMBER: _ClassVar[int]
    room: Room
    def __init__(self, room: _Optional[_Union[Room, _Mapping]] = ...) -> None: ...

class GetRoomRequest(_message.Message):
    __slots__ = ("code", "room_id")
    CODE_FIELD_NUMBER: _ClassVar[int]
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    code: str
    room_id: str
    def __init__(self, code: _Optional[str] = ..., room_id: _Optional[str] = ...) -> None: ...

class GetRoomResponse(_message.Message):
    __slots__ = ("room",)
    ROOM_FIELD_NUMBER: _ClassVar[int]
    room: Room
    def __init__(self, room: _Optional[_Union[Room, _Mapping]] = ...) -> None: ...

class UpdateRoomRequest(_message.Message):
    __slots__ = ("room_id", "name", "description", "visibility", "access_code", "media", "theme", "retention_days", "slow_mode_seconds", "anonymous_names_per_network", "back_room")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    VISIBILITY_FIELD_NUMBER: _ClassVar[int]
    ACCESS_CODE_FIELD_NUMBER: _ClassVar[int]
    MEDIA_FIELD_NUMBER: _ClassVar[int]
    THEME_FIELD_NUMBER: _ClassVar[int]
    RETENTION_DAYS_FIELD_NUMBER: _ClassVar[int]
    SLOW_MODE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ANONYMOUS_NAMES_PER_NETWORK_FIELD_NUMBER: _ClassVar[int]
    BACK_ROOM_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    name: str
    description: str
    visibility: Visibility
    access_code: str
    media: MediaSettings
    theme: Theme
    retention_days: int
    slow_mode_seconds: int
    anonymous_names_per_network: int
    back_room: BackRoomSettings
    def __init__(self, room_id: _Optional[str] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., visibility: _Optional[_Union[Visibility, str]] = ..., access_code: _Optional[str] = ..., media: _Optional[_Union[MediaSettings, _Mapping]] = ..., theme: _Optional[_Union[Theme, str]] = ..., retention_days: _Optional[int] = ..., slow_mode_seconds: _Optional[int] = ..., anonymous_names_per_network: _Optional[int] = ..., back_room: _Optional[_Union[BackRoomSettings, _Mapping]] = ...) -> None: ...

class UpdateRoomResponse(_message.Message):
    __slots__ = ("room",)
    ROOM_FIELD_NUMBER: _ClassVar[int]
    room: Room
    def __init__(self, room: _Optional[_Union[Room, _Mapping]] = ...) -> None: ...

class CloseRoomRequest(_message.Message):
    __slots__ = ("room_id", "erase")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    ERASE_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    erase: bool
    def __init__(self, room_id: _Optional[str] = ..., erase: _Optional[bool] = ...) -> None: ...

class CloseRoomResponse(_message.Message):
    __slots__ = ("room",)
    ROOM_FIELD_NUMBER: _ClassVar[int]
    room: Room
    def __init__(self, room: _Optional[_Union[Room, _Mapping]] = ...) -> None: ...

class JoinRoomRequest(_message.Message):
    __slots__ = ("code", "username", "access_code", "client_ip_hash")
    CODE_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    ACCESS_CODE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_IP_HASH_FIELD_NUMBER: _ClassVar[int]
    code: str
    username: str
    access_code: str
    client_ip_hash: str
    def __init__(self, code: _Optional[str] = ..., username: _Optional[str] = ..., access_code: _Optional[str] = ..., client_ip_hash: _Optional[str] = ...) -> None: ...

class JoinRoomResponse(_message.Message):
    __slots__ = ("room", "participant", "room_token", "room_token_expires_in")
    ROOM_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANT_FIELD_NUMBER: _ClassVar[int]
    ROOM_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ROOM_TOKEN_EXPIRES_IN_FIELD_NUMBER: _ClassVar[int]
    room: Room
    participant: Participant
    room_token: str
    room_token_expires_in: int
    def __init__(self, room: _Optional[_Union[Room, _Mapping]] = ..., participant: _Optional[_Union[Participant, _Mapping]] = ..., room_token: _Optional[str] = ..., room_token_expires_in: _Optional[int] = ...) -> None: ...

class GetParticipantRequest(_message.Message):
    __slots__ = ("room_id", "participant_id")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANT_ID_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    participant_id: str
    def __init__(self, room_id: _Optional[str] = ..., participant_id: _Optional[str] = ...) -> None: ...

class GetParticipantResponse(_message.Message):
    __slots__ = ("participant",)
    PARTICIPANT_FIELD_NUMBER: _ClassVar[int]
    participant: Participant
    def __init__(self, participant: _Optional[_Union[Participant, _Mapping]] = ...) -> None: ...

class GetParticipantsRequest(_message.Message):
    __slots__ = ("lookups",)
    LOOKUPS_FIELD_NUMBER: _ClassVar[int]
    lookups: _containers.RepeatedCompositeFieldContainer[GetParticipantRequest]
    def __init__(self, lookups: _Optional[_Iterable[_Union[GetParticipantRequest, _Mapping]]] = ...) -> None: ...

class GetParticipantsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ParticipantLookup]
    def __init__(self, results: _Optional[_Iterable[_Union[ParticipantLookup, _Mapping]]] = ...) -> None: ...

class ParticipantLookup(_message.Message):
    __slots__ = ("participant", "error_code")
    PARTICIPANT_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    participant: Participant
    error_code: str
    def __init__(self, participant: _Optional[_Union[Participant, _Mapping]] = ..., error_code: _Optional[str] = ...) -> None: ...

class ListParticipantsRequest(_message.Message):
    __slots__ = ("room_id",)
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    def __init__(self, room_id: _Optional[str] = ...) -> None: ...

class ListParticipantsResponse(_message.Message):
    __slots__ = ("participants",)
    PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    participants: _containers.RepeatedCompositeFieldContainer[Participant]
    def __init__(self, participants: _Optional[_Iterable[_Union[Participant, _Mapping]]] = ...) -> None: ...

class SuggestUsernameRequest(_message.Message):
    __slots__ = ("code", "client_ip_hash")
    CODE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_IP_HASH_FIELD_NUMBER: _ClassVar[int]
    code: str
    client_ip_hash: str
    def __init__(self, code: _Optional[str] = ..., client_ip_hash: _Optional[str] = ...) -> None: ...

class SuggestUsernameResponse(_message.Message):
    __slots__ = ("username", "remaining", "held_for_seconds")
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    HELD_FOR_SECONDS_FIELD_NUMBER: _ClassVar[int]
    username: str
    remaining: int
    held_for_seconds: int
    def __init__(self, username: _Optional[str] = ..., remaining: _Optional[int] = ..., held_for_seconds: _Optional[int] = ...) -> None: ...

class GetMyParticipantRequest(_message.Message):
    __slots__ = ("code",)
    CODE_FIELD_NUMBER: _ClassVar[int]
    code: str
    def __init__(self, code: _Optional[str] = ...) -> None: ...

class GetMyParticipantResponse(_message.Message):
    __slots__ = ("room", "participant")
    ROOM_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANT_FIELD_NUMBER: _ClassVar[int]
    room: Room
    participant: Participant
    def __init__(self, room: _Optional[_Union[Room, _Mapping]] = ..., participant: _Optional[_Union[Participant, _Mapping]] = ...) -> None: ...

class ListMyRoomsRequest(_message.Message):
    __slots__ = ("limit",)
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    limit: int
    def __init__(self, limit: _Optional[int] = ...) -> None: ...

class MyRoom(_message.Message):
    __slots__ = ("room", "participant", "is_host")
    ROOM_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANT_FIELD_NUMBER: _ClassVar[int]
    IS_HOST_FIELD_NUMBER: _ClassVar[int]
    room: Room
    participant: Participant
    is_host: bool
    def __init__(self, room: _Optional[_Union[Room, _Mapping]] = ..., participant: _Optional[_Union[Participant, _Mapping]] = ..., is_host: _Optional[bool] = ...) -> None: ...

class ListMyRoomsResponse(_message.Message):
    __slots__ = ("rooms",)
    ROOMS_FIELD_NUMBER: _ClassVar[int]
    rooms: _containers.RepeatedCompositeFieldContainer[MyRoom]
    def __init__(self, rooms: _Optional[_Iterable[_Union[MyRoom, _Mapping]]] = ...) -> None: ...

class GetAccessCodeRequest(_message.Message):
    __slots__ = ("room_id",)
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    def __init__(self, room_id: _Optional[str] = ...) -> None: ...

class GetAccessCodeResponse(_message.Message):
    __slots__ = ("access_code", "available")
    ACCESS_CODE_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    access_code: str
    available: bool
    def __init__(self, access_code: _Optional[str] = ..., available: _Optional[bool] = ...) -> None: ...

class ClearVerifiedUsernameRequest(_message.Message):
    __slots__ = ("username",)
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    username: str
    def __init__(self, username: _Optional[str] = ...) -> None: ...

class ClearVerifiedUsernameResponse(_message.Message):
    __slots__ = ("participants",)
    PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    participants: _containers.RepeatedCompositeFieldContainer[Participant]
    def __init__(self, participants: _Optional[_Iterable[_Union[Participant, _Mapping]]] = ...) -> None: ...

class Ban(_message.Message):
    __slots__ = ("id", "room_id", "participant_id", "username", "tier", "reason", "banned_by", "created_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANT_ID_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    BANNED_BY_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    room_id: str
    participant_id: str
    username: str
    tier: BanTier
    reason: str
    banned_by: str
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., room_id: _Optional[str] = ..., participant_id: _Optional[str] = ..., username: _Optional[str] = ..., tier: _Optional[_Union[BanTier, str]] = ..., reason: _Optional[str] = ..., banned_by: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class BanParticipantRequest(_message.Message):
    __slots__ = ("room_id", "participant_id", "tier", "reason")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANT_ID_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    participant_id: str
    tier: BanTier
    reason: str
    def __init__(self, room_id: _Optional[str] = ..., participant_id: _Optional[str] = ..., tier: _Optional[_Union[BanTier, str]] = ..., reason: _Optional[str] = ...) -> None: ...

class BanParticipantResponse(_message.Message):
    __slots__ = ("ban", "participant", "created", "back_room_id", "back_room_participant_id")
    BAN_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANT_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    BACK_ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    BACK_ROOM_PARTICIPANT_ID_FIELD_NUMBER: _ClassVar[int]
    ban: Ban
    participant: Participant
    created: bool
    back_room_id: str
    back_room_participant_id: str
    def __init__(self, ban: _Optional[_Union[Ban, _Mapping]] = ..., participant: _Optional[_Union[Participant, _Mapping]] = ..., created: _Optional[bool] = ..., back_room_id: _Optional[str] = ..., back_room_participant_id: _Optional[str] = ...) -> None: ...

class UnbanParticipantRequest(_message.Message):
    __slots__ = ("room_id", "ban_id")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    BAN_ID_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    ban_id: str
    def __init__(self, room_id: _Optional[str] = ..., ban_id: _Optional[str] = ...) -> None: ...

class UnbanParticipantResponse(_message.Message):
    __slots__ = ("ban", "changed")
    BAN_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    ban: Ban
    changed: bool
    def __init__(self, ban: _Optional[_Union[Ban, _Mapping]] = ..., changed: _Optional[bool] = ...) -> None: ...

class ListBansRequest(_message.Message):
    __slots__ = ("room_id", "limit")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    limit: int
    def __init__(self, room_id: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ListBansResponse(_message.Message):
    __slots__ = ("bans",)
    BANS_FIELD_NUMBER: _ClassVar[int]
    bans: _containers.RepeatedCompositeFieldContainer[Ban]
    def __init__(self, bans: _Optional[_Iterable[_Union[Ban, _Mapping]]] = ...) -> None: ...

class TakeDownRoomRequest(_message.Message):
    __slots__ = ("code", "room_id", "reason")
    CODE_FIELD_NUMBER: _ClassVar[int]
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    code: str
    room_id: str
    reason: str
    def __init__(self, code: _Optional[str] = ..., room_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class TakeDownRoomResponse(_message.Message):
    __slots__ = ("taken_down", "changed")
    TAKEN_DOWN_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    taken_down: TakenDownRoom
    changed: bool
    def __init__(self, taken_down: _Optional[_Union[TakenDownRoom, _Mapping]] = ..., changed: _Optional[bool] = ...) -> None: ...

class RestoreRoomRequest(_message.Message):
    __slots__ = ("code", "room_id")
    CODE_FIELD_NUMBER: _ClassVar[int]
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    code: str
    room_id: str
    def __init__(self, code: _Optional[str] = ..., room_id: _Optional[str] = ...) -> None: ...

class RestoreRoomResponse(_message.Message):
    __slots__ = ("room", "changed")
    ROOM_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    room: Room
    changed: bool
    def __init__(self, room: _Optional[_Union[Room, _Mapping]] = ..., changed: _Optional[bool] = ...) -> None: ...

class TakenDownRoom(_message.Message):
    __slots__ = ("room", "reason", "taken_down_by", "taken_down_at")
    ROOM_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TAKEN_DOWN_BY_FIELD_NUMBER: _ClassVar[int]
    TAKEN_DOWN_AT_FIELD_NUMBER: _ClassVar[int]
    room: Room
    reason: str
    taken_down_by: str
    taken_down_at: _timestamp_pb2.Timestamp
    def __init__(self, room: _Optional[_Union[Room, _Mapping]] = ..., reason: _Optional[str] = ..., taken_down_by: _Optional[str] = ..., taken_down_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListTakenDownRoomsRequest(_message.Message):
    __slots__ = ("limit",)
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    limit: int
    def __init__(self, limit: _Optional[int] = ...) -> None: ...

class ListTakenDownRoomsResponse(_message.Message):
    __slots__ = ("rooms",)
    ROOMS_FIELD_NUMBER: _ClassVar[int]
    rooms: _containers.RepeatedCompositeFieldContainer[TakenDownRoom]
    def __init__(self, rooms: _Optional[_Iterable[_Union[TakenDownRoom, _Mapping]]] = ...) -> None: ...

class GetRoomStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetRoomStatsResponse(_message.Message):
    __slots__ = ("total", "open", "created_today")
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    OPEN_FIELD_NUMBER: _ClassVar[int]
    CREATED_TODAY_FIELD_NUMBER: _ClassVar[int]
    total: int
    open: int
    created_today: int
    def __init__(self, total: _Optional[int] = ..., open: _Optional[int] = ..., created_today: _Optional[int] = ...) -> None: ...

class RevokeSiteBannedRequest(_message.Message):
    __slots__ = ("identity_id", "client_ip_hash")
    IDENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_IP_HASH_FIELD_NUMBER: _ClassVar[int]
    identity_id: str
    client_ip_hash: str
    def __init__(self, identity_id: _Optional[str] = ..., client_ip_hash: _Optional[str] = ...) -> None: ...

class RevokedParticipant(_message.Message):
    __slots__ = ("room_id", "participant_id")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANT_ID_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    participant_id: str
    def __init__(self, room_id: _Optional[str] = ..., participant_id: _Optional[str] = ...) -> None: ...

class RevokeSiteBannedResponse(_message.Message):
    __slots__ = ("participants", "total")
    PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    participants: _containers.RepeatedCompositeFieldContainer[RevokedParticipant]
    total: int
    def __init__(self, participants: _Optional[_Iterable[_Union[RevokedParticipant, _Mapping]]] = ..., total: _Optional[int] = ...) -> None: ...

class ForgetSubjectRequest(_message.Message):
    __slots__ = ("subject", "erase_messages")
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    ERASE_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    subject: str
    erase_messages: bool
    def __init__(self, subject: _Optional[str] = ..., erase_messages: _Optional[bool] = ...) -> None: ...

class ForgetSubjectResponse(_message.Message):
    __slots__ = ("participants", "rooms_closed")
    PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    ROOMS_CLOSED_FIELD_NUMBER: _ClassVar[int]
    participants: int
    rooms_closed: int
    def __init__(self, participants: _Optional[int] = ..., rooms_closed: _Optional[int] = ...) -> None: ...

class ListRetentionPoliciesRequest(_message.Message):
    __slots__ = ("room_ids",)
    ROOM_IDS_FIELD_NUMBER: _ClassVar[int]
    room_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, room_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class RetentionPolicy(_message.Message):
    __slots__ = ("room_id", "retention_days", "closed", "erased")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    RETENTION_DAYS_FIELD_NUMBER: _ClassVar[int]
    CLOSED_FIELD_NUMBER: _ClassVar[int]
    ERASED_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    retention_days: int
    closed: bool
    erased: bool
    def __init__(self, room_id: _Optional[str] = ..., retention_days: _Optional[int] = ..., closed: _Optional[bool] = ..., erased: _Optional[bool] = ...) -> None: ...

class ListRetentionPoliciesResponse(_message.Message):
    __slots__ = ("policies",)
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    policies: _containers.RepeatedCompositeFieldContainer[RetentionPolicy]
    def __init__(self, policies: _Optional[_Iterable[_Union[RetentionPolicy, _Mapping]]] = ...) -> None: ...
