import datetime

from chatpop.rooms.v1 import rooms_pb2 as _rooms_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EntryKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENTRY_KIND_UNSPECIFIED: _ClassVar[EntryKind]
    ENTRY_KIND_MESSAGE: _ClassVar[EntryKind]
    ENTRY_KIND_REACTION: _ClassVar[EntryKind]
    ENTRY_KIND_DELETION: _ClassVar[EntryKind]
    ENTRY_KIND_PIN: _ClassVar[EntryKind]
    ENTRY_KIND_UNPIN: _ClassVar[EntryKind]
    ENTRY_KIND_STICKY: _ClassVar[EntryKind]
    ENTRY_KIND_HIDE: _ClassVar[EntryKind]
    ENTRY_KIND_RESTORE: _ClassVar[EntryKind]
    ENTRY_KIND_BAN: _ClassVar[EntryKind]
    ENTRY_KIND_PAID_PIN: _ClassVar[EntryKind]
    ENTRY_KIND_PAID_PIN_REMOVED: _ClassVar[EntryKind]
    ENTRY_KIND_TIP: _ClassVar[EntryKind]
    ENTRY_KIND_PARTICIPANT_FORGOTTEN: _ClassVar[EntryKind]

class PinSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PIN_SOURCE_UNSPECIFIED: _ClassVar[PinSource]
    PIN_SOURCE_HOST: _ClassVar[PinSource]
    PIN_SOURCE_PAID: _ClassVar[PinSource]

class ReportReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REPORT_REASON_UNSPECIFIED: _ClassVar[ReportReason]
    REPORT_REASON_SPAM: _ClassVar[ReportReason]
    REPORT_REASON_HARASSMENT: _ClassVar[ReportReason]
    REPORT_REASON_HATE: _ClassVar[ReportReason]
    REPORT_REASON_SEXUAL: _ClassVar[ReportReason]
    REPORT_REASON_VIOLENCE: _ClassVar[ReportReason]
    REPORT_REASON_OTHER: _ClassVar[ReportReason]

class ReportResolution(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REPORT_RESOLUTION_UNSPECIFIED: _ClassVar[ReportResolution]
    REPORT_RESOLUTION_RESTORE: _ClassVar[ReportResolution]
    REPORT_RESOLUTION_DELETE: _ClassVar[ReportResolution]
    REPORT_RESOLUTION_DISMISS: _ClassVar[ReportResolution]

class PaidPinOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PAID_PIN_OUTCOME_UNSPECIFIED: _ClassVar[PaidPinOutcome]
    PAID_PIN_OUTCOME_GRANTED: _ClassVar[PaidPinOutcome]
    PAID_PIN_OUTCOME_OUTBID: _ClassVar[PaidPinOutcome]
    PAID_PIN_OUTCOME_NOT_TOP: _ClassVar[PaidPinOutcome]
    PAID_PIN_OUTCOME_MESSAGE_GONE: _ClassVar[PaidPinOutcome]
    PAID_PIN_OUTCOME_BANNED: _ClassVar[PaidPinOutcome]

class MediaKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MEDIA_KIND_UNSPECIFIED: _ClassVar[MediaKind]
    MEDIA_KIND_PHOTO: _ClassVar[MediaKind]
    MEDIA_KIND_VOICE: _ClassVar[MediaKind]
    MEDIA_KIND_VIDEO: _ClassVar[MediaKind]

class MediaState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MEDIA_STATE_UNSPECIFIED: _ClassVar[MediaState]
    MEDIA_STATE_PENDING: _ClassVar[MediaState]
    MEDIA_STATE_READY: _ClassVar[MediaState]
    MEDIA_STATE_DELETED: _ClassVar[MediaState]
ENTRY_KIND_UNSPECIFIED: EntryKind
ENTRY_KIND_MESSAGE: EntryKind
ENTRY_KIND_REACTION: EntryKind
ENTRY_KIND_DELETION: EntryKind
ENTRY_KIND_PIN: EntryKind
ENTRY_KIND_UNPIN: EntryKind
ENTRY_KIND_STICKY: EntryKind
ENTRY_KIND_HIDE: EntryKind
ENTRY_KIND_RESTORE: EntryKind
ENTRY_KIND_BAN: EntryKind
ENTRY_KIND_PAID_PIN: EntryKind
ENTRY_KIND_PAID_PIN_REMOVED: EntryKind
ENTRY_KIND_TIP: EntryKind
ENTRY_KIND_PARTICIPANT_FORGOTTEN: EntryKind
PIN_SOURCE_UNSPECIFIED: PinSource
PIN_SOURCE_HOST: PinSource
PIN_SOURCE_PAID: PinSource
REPORT_REASON_UNSPECIFIED: ReportReason
REPORT_REASON_SPAM: ReportReason
REPORT_REASON_HARASSMENT: ReportReason
REPORT_REASON_HATE: ReportReason
REPORT_REASON_SEXUAL: ReportReason
REPORT_REASON_VIOLENCE: ReportReason
REPORT_REASON_OTHER: ReportReason
REPORT_RESOLUTION_UNSPECIFIED: ReportResolution
REPORT_RESOLUTION_RESTORE: ReportResolution
REPORT_RESOLUTION_DELETE: ReportResolution
REPORT_RESOLUTION_DISMISS: ReportResolution
PAID_PIN_OUTCOME_UNSPECIFIED: PaidPinOutcome
PAID_PIN_OUTCOME_GRANTED: PaidPinOutcome
PAID_PIN_OUTCOME_OUTBID: PaidPinOutcome
PAID_PIN_OUTCOME_NOT_TOP: PaidPinOutcome
PAID_PIN_OUTCOME_MESSAGE_GONE: PaidPinOutcome
PAID_PIN_OUTCOME_BANNED: PaidPinOutcome
MEDIA_KIND_UNSPECIFIED: MediaKind
MEDIA_KIND_PHOTO: MediaKind
MEDIA_KIND_VOICE: MediaKind
MEDIA_KIND_VIDEO: MediaKind
MEDIA_STATE_UNSPECIFIED: MediaState
MEDIA_STATE_PENDING: MediaState
MEDIA_STATE_READY: MediaState
MEDIA_STATE_DELETED: MediaState

class ReactionCount(_message.Message):
    __slots__ = ("emoji", "count")
    EMOJI_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    emoji: str
    count: int
    def __init__(self, emoji: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class MessageState(_message.Message):
    __slots__ = ("deleted", "deleted_by_host", "reactions", "state_seq", "hidden")
    DELETED_FIELD_NUMBER: _ClassVar[int]
    DELETED_BY_HOST_FIELD_NUMBER: _ClassVar[int]
    REACTIONS_FIELD_NUMBER: _ClassVar[int]
    STATE_SEQ_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    deleted_by_host: bool
    reactions: _containers.RepeatedCompositeFieldContainer[ReactionCount]
    state_seq: int
    hidden: bool
    def __init__(self, deleted: _Optional[bool] = ..., deleted_by_host: _Optional[bool] = ..., reactions: _Optional[_Iterable[_Union[ReactionCount, _Mapping]]] = ..., state_seq: _Optional[int] = ..., hidden: _Optional[bool] = ...) -> None: ...

class Message(_message.Message):
    __slots__ = ("id", "room_id", "seq", "sender_participant_id", "sender_username", "sender_is_host", "client_msg_id", "text", "reply_to_seq", "created_at", "sender_verified", "kind", "target_seq", "state", "emoji", "added", "my_reactions", "pinned_message", "pinned_seqs", "paid_pin", "paid_pins", "tip", "media", "messages_erased")
    ID_FIELD_NUMBER: _ClassVar[int]
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    SENDER_PARTICIPANT_ID_FIELD_NUMBER: _ClassVar[int]
    SENDER_USERNAME_FIELD_NUMBER: _ClassVar[int]
    SENDER_IS_HOST_FIELD_NUMBER: _ClassVar[int]
    CLIENT_MSG_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    REPLY_TO_SEQ_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    SENDER_VERIFIED_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TARGET_SEQ_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    EMOJI_FIELD_NUMBER: _ClassVar[int]
    ADDED_FIELD_NUMBER: _ClassVar[int]
    MY_REACTIONS_FIELD_NUMBER: _ClassVar[int]
    PINNED_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PINNED_SEQS_FIELD_NUMBER: _ClassVar[int]
    PAID_PIN_FIELD_NUMBER: _ClassVar[int]
    PAID_PINS_FIELD_NUMBER: _ClassVar[int]
    TIP_FIELD_NUMBER: _ClassVar[int]
    MEDIA_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_ERASED_FIELD_NUMBER: _ClassVar[int]
    id: str
    room_id: str
    seq: int
    sender_participant_id: str
    sender_username: str
    sender_is_host: bool
    client_msg_id: str
    text: str
    reply_to_seq: int
    created_at: _timestamp_pb2.Timestamp
    sender_verified: bool
    kind: EntryKind
    target_seq: int
    state: MessageState
    emoji: str
    added: bool
    my_reactions: _containers.RepeatedScalarFieldContainer[str]
    pinned_message: Message
    pinned_seqs: _containers.RepeatedScalarFieldContainer[int]
    paid_pin: PaidPin
    paid_pins: _containers.RepeatedCompositeFieldContainer[PaidPin]
    tip: Tip
    media: Media
    messages_erased: bool
    def __init__(self, id: _Optional[str] = ..., room_id: _Optional[str] = ..., seq: _Optional[int] = ..., sender_participant_id: _Optional[str] = ..., sender_username: _Optional[str] = ..., sender_is_host: _Optional[bool] = ..., client_msg_id: _Optional[str] = ..., text: _Optional[str] = ..., reply_to_seq: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., sender_verified: _Optional[bool] = ..., kind: _Optional[_Union[EntryKind, str]] = ..., target_seq: _Optional[int] = ..., state: _Optional[_Union[MessageState, _Mapping]] = ..., emoji: _Optional[str] = ..., added: _Optional[bool] = ..., my_reactions: _Optional[_Iterable[str]] = ..., pinned_message: _Optional[_Union[Message, _Mapping]] = ..., pinned_seqs: _Optional[_Iterable[int]] = ..., paid_pin: _Optional[_Union[PaidPin, _Mapping]] = ..., paid_pins: _Optional[_Iterable[_Union[PaidPin, _Mapping]]] = ..., tip: _Optional[_Union[Tip, _Mapping]] = ..., media: _Optional[_Union[Media, _Mapping]] = ..., messages_erased: _Optional[bool] = ...) -> None: ...

class PaidPin(_message.Message):
    __slots__ = ("id", "target_seq", "message", "participant_id", "username", "amount_cents", "currency", "started_at", "expires_at", "removed_reason")
    ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_SEQ_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANT_ID_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_CENTS_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    REMOVED_REASON_FIELD_NUMBER: _ClassVar[int]
    id: str
    target_seq: int
    message: Message
    participant_id: str
    username: str
    amount_cents: int
    currency: str
    started_at: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    removed_reason: str
    def __init__(self, id: _Optional[str] = ..., target_seq: _Optional[int] = ..., message: _Optional[_Union[Message, _Mapping]] = ..., participant_id: _Optional[str] = ..., username: _Optional[str] = ..., amount_cents: _Optional[int] = ..., currency: _Optional[str] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., removed_reason: _Optional[str] = ...) -> None: ...

class Tip(_message.Message):
    __slots__ = ("order_id", "amount_cents", "currency", "note")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_CENTS_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    amount_cents: int
    currency: str
    note: str
    def __init__(self, order_id: _Optional[str] = ..., amount_cents: _Optional[int] = ..., currency: _Optional[str] = ..., note: _Optional[str] = ...) -> None: ...

class Pin(_message.Message):
    __slots__ = ("message", "source", "pinned_seq")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    PINNED_SEQ_FIELD_NUMBER: _ClassVar[int]
    message: Message
    source: PinSource
    pinned_seq: int
    def __init__(self, message: _Optional[_Union[Message, _Mapping]] = ..., source: _Optional[_Union[PinSource, str]] = ..., pinned_seq: _Optional[int] = ...) -> None: ...

class RoomBoard(_message.Message):
    __slots__ = ("pins", "pins_state_seq", "sticky_text", "sticky_seq", "paid_pins", "paid_pins_state_seq")
    PINS_FIELD_NUMBER: _ClassVar[int]
    PINS_STATE_SEQ_FIELD_NUMBER: _ClassVar[int]
    STICKY_TEXT_FIELD_NUMBER: _ClassVar[int]
    STICKY_SEQ_FIELD_NUMBER: _ClassVar[int]
    PAID_PINS_FIELD_NUMBER: _ClassVar[int]
    PAID_PINS_STATE_SEQ_FIELD_NUMBER: _ClassVar[int]
    pins: _containers.RepeatedCompositeFieldContainer[Pin]
    pins_state_seq: int
    sticky_text: str
    sticky_seq: int
    paid_pins: _containers.RepeatedCompositeFieldContainer[PaidPin]
    paid_pins_state_seq: int
    def __init__(self, pins: _Optional[_Iterable[_Union[Pin, _Mapping]]] = ..., pins_state_seq: _Optional[int] = ..., sticky_text: _Optional[str] = ..., sticky_seq: _Optional[int] = ..., paid_pins: _Optional[_Iterable[_Union[PaidPin, _Mapping]]] = ..., paid_pins_state_seq: _Optional[int] = ...) -> None: ...

class SendMessageRequest(_message.Message):
    __slots__ = ("room_id", "client_msg_id", "text", "reply_to_seq", "media_id")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_MSG_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    REPLY_TO_SEQ_FIELD_NUMBER: _ClassVar[int]
    MEDIA_ID_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    client_msg_id: str
    text: str
    reply_to_seq: int
    media_id: str
    def __init__(self, room_id: _Optional[str] = ..., client_msg_id: _Optional[str] = ..., text: _Optional[str] = ..., reply_to_seq: _Optional[int] = ..., media_id: _Optional[str] = ...) -> None: ...

class SendMessageResponse(_message.Message):
    __slots__ = ("message", "created")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    message: Message
    created: bool
    def __init__(self, message: _Optional[_Union[Message, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class ListMessagesRequest(_message.Message):
    __slots__ = ("room_id", "before_seq", "limit")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    BEFORE_SEQ_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    before_seq: int
    limit: int
    def __init__(self, room_id: _Optional[str] = ..., before_seq: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class ListMessagesResponse(_message.Message):
    __slots__ = ("messages", "has_more", "last_seq", "low_seq", "board", "touched", "floor_seq")
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    HAS_MORE_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    LOW_SEQ_FIELD_NUMBER: _ClassVar[int]
    BOARD_FIELD_NUMBER: _ClassVar[int]
    TOUCHED_FIELD_NUMBER: _ClassVar[int]
    FLOOR_SEQ_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[Message]
    has_more: bool
    last_seq: int
    low_seq: int
    board: RoomBoard
    touched: _containers.RepeatedCompositeFieldContainer[Message]
    floor_seq: int
    def __init__(self, messages: _Optional[_Iterable[_Union[Message, _Mapping]]] = ..., has_more: _Optional[bool] = ..., last_seq: _Optional[int] = ..., low_seq: _Optional[int] = ..., board: _Optional[_Union[RoomBoard, _Mapping]] = ..., touched: _Optional[_Iterable[_Union[Message, _Mapping]]] = ..., floor_seq: _Optional[int] = ...) -> None: ...

class ListMessagesAfterRequest(_message.Message):
    __slots__ = ("room_id", "after_seq", "limit")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    after_seq: int
    limit: int
    def __init__(self, room_id: _Optional[str] = ..., after_seq: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class ListMessagesAfterResponse(_message.Message):
    __slots__ = ("messages", "reload", "last_seq", "floor_seq")
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    RELOAD_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    FLOOR_SEQ_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[Message]
    reload: bool
    last_seq: int
    floor_seq: int
    def __init__(self, messages: _Optional[_Iterable[_Union[Message, _Mapping]]] = ..., reload: _Optional[bool] = ..., last_seq: _Optional[int] = ..., floor_seq: _Optional[int] = ...) -> None: ...

class SubscribeRequest(_message.Message):
    __slots__ = ("room_id", "after_seq")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    after_seq: int
    def __init__(self, room_id: _Optional[str] = ..., after_seq: _Optional[int] = ...) -> None: ...

class Reload(_message.Message):
    __slots__ = ("last_seq",)
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    last_seq: int
    def __init__(self, last_seq: _Optional[int] = ...) -> None: ...

class Trimmed(_message.Message):
    __slots__ = ("floor_seq",)
    FLOOR_SEQ_FIELD_NUMBER: _ClassVar[int]
    floor_seq: int
    def __init__(self, floor_seq: _Optional[int] = ...) -> None: ...

class Signal(_message.Message):
    __slots__ = ("room_id", "typing", "presence", "room_updated", "kick", "mutes_changed")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    TYPING_FIELD_NUMBER: _ClassVar[int]
    PRESENCE_FIELD_NUMBER: _ClassVar[int]
    ROOM_UPDATED_FIELD_NUMBER: _ClassVar[int]
    KICK_FIELD_NUMBER: _ClassVar[int]
    MUTES_CHANGED_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    typing: Typing
    presence: PresenceChange
    room_updated: RoomUpdated
    kick: Kick
    mutes_changed: MutesChanged
    def __init__(self, room_id: _Optional[str] = ..., typing: _Optional[_Union[Typing, _Mapping]] = ..., presence: _Optional[_Union[PresenceChange, _Mapping]] = ..., room_updated: _Optional[_Union[RoomUpdated, _Mapping]] = ..., kick: _Optional[_Union[Kick, _Mapping]] = ..., mutes_changed: _Optional[_Union[MutesChanged, _Mapping]] = ...) -> None: ...

class Kick(_message.Message):
    __slots__ = ("participant_id", "code")
    PARTICIPANT_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    participant_id: str
    code: str
    def __init__(self, participant_id: _Optional[str] = ..., code: _Optional[str] = ...) -> None: ...

class Typing(_message.Message):
    __slots__ = ("participant_id", "username")
    PARTICIPANT_ID_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    participant_id: str
    username: str
    def __init__(self, participant_id: _Optional[str] = ..., username: _Optional[str] = ...) -> None: ...

class PresenceChange(_message.Message):
    __slots__ = ("online", "offline", "version")
    ONLINE_FIELD_NUMBER: _ClassVar[int]
    OFFLINE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    online: _containers.RepeatedScalarFieldContainer[str]
    offline: _containers.RepeatedScalarFieldContainer[str]
    version: int
    def __init__(self, online: _Optional[_Iterable[str]] = ..., offline: _Optional[_Iterable[str]] = ..., version: _Optional[int] = ...) -> None: ...

class MutesChanged(_message.Message):
    __slots__ = ("participant_id", "muted_participant_ids")
    PARTICIPANT_ID_FIELD_NUMBER: _ClassVar[int]
    MUTED_PARTICIPANT_IDS_FIELD_NUMBER: _ClassVar[int]
    participant_id: str
    muted_participant_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, participant_id: _Optional[str] = ..., muted_participant_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class RoomUpdated(_message.Message):
    __slots__ = ("room",)
    ROOM_FIELD_NUMBER: _ClassVar[int]
    room: _rooms_pb2.Room
    def __init__(self, room: _Optional[_Union[_rooms_pb2.Room, _Mapping]] = ...) -> None: ...

class SubscribeResponse(_message.Message):
    __slots__ = ("message", "reload", "signal", "trimmed", "batch")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RELOAD_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    TRIMMED_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    message: Message
    reload: Reload
    signal: Signal
    trimmed: Trimmed
    batch: MessageBatch
    def __init__(self, message: _Optional[_Union[Message, _Mapping]] = ..., reload: _Optional[_Union[Reload, _Mapping]] = ..., signal: _Optional[_Union[Signal, _Mapping]] = ..., trimmed: _Optional[_Union[Trimmed, _Mapping]] = ..., batch: _Optional[_Union[MessageBatch, _Mapping]] = ...) -> None: ...

class MessageBatch(_message.Message):
    __slots__ = ("messages",)
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[Message]
    def __init__(self, messages: _Optional[_Iterable[_Union[Message, _Mapping]]] = ...) -> None: ...

class MarkReadRequest(_message.Message):
    __slots__ = ("room_id", "seq")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    seq: int
    def __init__(self, room_id: _Optional[str] = ..., seq: _Optional[int] = ...) -> None: ...

class MarkReadResponse(_message.Message):
    __slots__ = ("read_seq",)
    READ_SEQ_FIELD_NUMBER: _ClassVar[int]
    read_seq: int
    def __init__(self, read_seq: _Optional[int] = ...) -> None: ...

class RoomParticipantRef(_message.Message):
    __slots__ = ("room_id", "participant_id")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANT_ID_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    participant_id: str
    def __init__(self, room_id: _Optional[str] = ..., participant_id: _Optional[str] = ...) -> None: ...

class GetRoomActivityRequest(_message.Message):
    __slots__ = ("participants",)
    PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    participants: _containers.RepeatedCompositeFieldContainer[RoomParticipantRef]
    def __init__(self, participants: _Optional[_Iterable[_Union[RoomParticipantRef, _Mapping]]] = ...) -> None: ...

class RoomActivity(_message.Message):
    __slots__ = ("room_id", "participant_id", "last_seq", "last_message_at", "read_seq", "unread")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANT_ID_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    LAST_MESSAGE_AT_FIELD_NUMBER: _ClassVar[int]
    READ_SEQ_FIELD_NUMBER: _ClassVar[int]
    UNREAD_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    participant_id: str
    last_seq: int
    last_message_at: _timestamp_pb2.Timestamp
    read_seq: int
    unread: int
    def __init__(self, room_id: _Optional[str] = ..., participant_id: _Optional[str] = ..., last_seq: _Optional[int] = ..., last_message_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., read_seq: _Optional[int] = ..., unread: _Optional[int] = ...) -> None: ...

class GetRoomActivityResponse(_message.Message):
    __slots__ = ("activities",)
    ACTIVITIES_FIELD_NUMBER: _ClassVar[int]
    activities: _containers.RepeatedCompositeFieldContainer[RoomActivity]
    def __init__(self, activities: _Optional[_Iterable[_Union[RoomActivity, _Mapping]]] = ...) -> None: ...

class SendTypingRequest(_message.Message):
    __slots__ = ("room_id",)
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    def __init__(self, room_id: _Optional[str] = ...) -> None: ...

class SendTypingResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReportPresenceRequest(_message.Message):
    __slots__ = ("instance_id", "ttl_seconds", "rooms")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ROOMS_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    ttl_seconds: int
    rooms: _containers.RepeatedCompositeFieldContainer[PresenceReport]
    def __init__(self, instance_id: _Optional[str] = ..., ttl_seconds: _Optional[int] = ..., rooms: _Optional[_Iterable[_Union[PresenceReport, _Mapping]]] = ...) -> None: ...

class PresenceReport(_message.Message):
    __slots__ = ("room_id", "joined", "left", "complete", "count")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    JOINED_FIELD_NUMBER: _ClassVar[int]
    LEFT_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    joined: _containers.RepeatedScalarFieldContainer[str]
    left: _containers.RepeatedScalarFieldContainer[str]
    complete: bool
    count: int
    def __init__(self, room_id: _Optional[str] = ..., joined: _Optional[_Iterable[str]] = ..., left: _Optional[_Iterable[str]] = ..., complete: _Optional[bool] = ..., count: _Optional[int] = ...) -> None: ...

class ReportPresenceResponse(_message.Message):
    __slots__ = ("resync_room_ids",)
    RESYNC_ROOM_IDS_FIELD_NUMBER: _ClassVar[int]
    resync_room_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, resync_room_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class GetPresenceRequest(_message.Message):
    __slots__ = ("room_id",)
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    def __init__(self, room_id: _Optional[str] = ...) -> None: ...

class GetPresenceResponse(_message.Message):
    __slots__ = ("online", "version")
    ONLINE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    online: _containers.RepeatedScalarFieldContainer[str]
    version: int
    def __init__(self, online: _Optional[_Iterable[str]] = ..., version: _Optional[int] = ...) -> None: ...

class AnnounceRoomUpdateRequest(_message.Message):
    __slots__ = ("room_id",)
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    def __init__(self, room_id: _Optional[str] = ...) -> None: ...

class AnnounceRoomUpdateResponse(_message.Message):
    __slots__ = ("room",)
    ROOM_FIELD_NUMBER: _ClassVar[int]
    room: _rooms_pb2.Room
    def __init__(self, room: _Optional[_Union[_rooms_pb2.Room, _Mapping]] = ...) -> None: ...

class SetReactionRequest(_message.Message):
    __slots__ = ("room_id", "target_seq", "emoji", "on")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_SEQ_FIELD_NUMBER: _ClassVar[int]
    EMOJI_FIELD_NUMBER: _ClassVar[int]
    ON_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    target_seq: int
    emoji: str
    on: bool
    def __init__(self, room_id: _Optional[str] = ..., target_seq: _Optional[int] = ..., emoji: _Optional[str] = ..., on: _Optional[bool] = ...) -> None: ...

class SetReactionResponse(_message.Message):
    __slots__ = ("entry", "changed", "state", "my_reactions")
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    MY_REACTIONS_FIELD_NUMBER: _ClassVar[int]
    entry: Message
    changed: bool
    state: MessageState
    my_reactions: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, entry: _Optional[_Union[Message, _Mapping]] = ..., changed: _Optional[bool] = ..., state: _Optional[_Union[MessageState, _Mapping]] = ..., my_reactions: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteMessageRequest(_message.Message):
    __slots__ = ("room_id", "target_seq")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_SEQ_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    target_seq: int
    def __init__(self, room_id: _Optional[str] = ..., target_seq: _Optional[int] = ...) -> None: ...

class DeleteMessageResponse(_message.Message):
    __slots__ = ("entry", "changed")
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    entry: Message
    changed: bool
    def __init__(self, entry: _Optional[_Union[Message, _Mapping]] = ..., changed: _Optional[bool] = ...) -> None: ...

class SetPinRequest(_message.Message):
    __slots__ = ("room_id", "target_seq", "pinned")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_SEQ_FIELD_NUMBER: _ClassVar[int]
    PINNED_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    target_seq: int
    pinned: bool
    def __init__(self, room_id: _Optional[str] = ..., target_seq: _Optional[int] = ..., pinned: _Optional[bool] = ...) -> None: ...

class SetPinResponse(_message.Message):
    __slots__ = ("entry", "changed", "pinned_seqs", "pins_state_seq")
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    PINNED_SEQS_FIELD_NUMBER: _ClassVar[int]
    PINS_STATE_SEQ_FIELD_NUMBER: _ClassVar[int]
    entry: Message
    changed: bool
    pinned_seqs: _containers.RepeatedScalarFieldContainer[int]
    pins_state_seq: int
    def __init__(self, entry: _Optional[_Union[Message, _Mapping]] = ..., changed: _Optional[bool] = ..., pinned_seqs: _Optional[_Iterable[int]] = ..., pins_state_seq: _Optional[int] = ...) -> None: ...

class SetStickyRequest(_message.Message):
    __slots__ = ("room_id", "text")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    text: str
    def __init__(self, room_id: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class SetStickyResponse(_message.Message):
    __slots__ = ("entry", "changed", "text", "sticky_seq")
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    STICKY_SEQ_FIELD_NUMBER: _ClassVar[int]
    entry: Message
    changed: bool
    text: str
    sticky_seq: int
    def __init__(self, entry: _Optional[_Union[Message, _Mapping]] = ..., changed: _Optional[bool] = ..., text: _Optional[str] = ..., sticky_seq: _Optional[int] = ...) -> None: ...

class ReportMessageRequest(_message.Message):
    __slots__ = ("room_id", "target_seq", "reason", "text")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_SEQ_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    target_seq: int
    reason: ReportReason
    text: str
    def __init__(self, room_id: _Optional[str] = ..., target_seq: _Optional[int] = ..., reason: _Optional[_Union[ReportReason, str]] = ..., text: _Optional[str] = ...) -> None: ...

class ReportMessageResponse(_message.Message):
    __slots__ = ("created", "entry", "hidden")
    CREATED_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_FIELD_NUMBER: _ClassVar[int]
    created: bool
    entry: Message
    hidden: bool
    def __init__(self, created: _Optional[bool] = ..., entry: _Optional[_Union[Message, _Mapping]] = ..., hidden: _Optional[bool] = ...) -> None: ...

class Report(_message.Message):
    __slots__ = ("reporter_participant_id", "reporter_username", "reason", "text", "created_at")
    REPORTER_PARTICIPANT_ID_FIELD_NUMBER: _ClassVar[int]
    REPORTER_USERNAME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    reporter_participant_id: str
    reporter_username: str
    reason: ReportReason
    text: str
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, reporter_participant_id: _Optional[str] = ..., reporter_username: _Optional[str] = ..., reason: _Optional[_Union[ReportReason, str]] = ..., text: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ReportedMessage(_message.Message):
    __slots__ = ("message", "reports")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    REPORTS_FIELD_NUMBER: _ClassVar[int]
    message: Message
    reports: _containers.RepeatedCompositeFieldContainer[Report]
    def __init__(self, message: _Optional[_Union[Message, _Mapping]] = ..., reports: _Optional[_Iterable[_Union[Report, _Mapping]]] = ...) -> None: ...

class ListReportsRequest(_message.Message):
    __slots__ = ("room_id", "before_seq", "limit")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    BEFORE_SEQ_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    before_seq: int
    limit: int
    def __init__(self, room_id: _Optional[str] = ..., before_seq: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class ListReportsResponse(_message.Message):
    __slots__ = ("items", "has_more")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    HAS_MORE_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[ReportedMessage]
    has_more: bool
    def __init__(self, items: _Optional[_Iterable[_Union[ReportedMessage, _Mapping]]] = ..., has_more: _Optional[bool] = ...) -> None: ...

class ResolveReportsRequest(_message.Message):
    __slots__ = ("room_id", "target_seq", "resolution")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_SEQ_FIELD_NUMBER: _ClassVar[int]
    RESOLUTION_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    target_seq: int
    resolution: ReportResolution
    def __init__(self, room_id: _Optional[str] = ..., target_seq: _Optional[int] = ..., resolution: _Optional[_Union[ReportResolution, str]] = ...) -> None: ...

class ResolveReportsResponse(_message.Message):
    __slots__ = ("entries", "closed")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    CLOSED_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[Message]
    closed: int
    def __init__(self, entries: _Optional[_Iterable[_Union[Message, _Mapping]]] = ..., closed: _Optional[int] = ...) -> None: ...

class AppendBanRequest(_message.Message):
    __slots__ = ("room_id", "participant_id", "ban_id")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANT_ID_FIELD_NUMBER: _ClassVar[int]
    BAN_ID_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    participant_id: str
    ban_id: str
    def __init__(self, room_id: _Optional[str] = ..., participant_id: _Optional[str] = ..., ban_id: _Optional[str] = ...) -> None: ...

class AppendBanResponse(_message.Message):
    __slots__ = ("entry", "created")
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    entry: Message
    created: bool
    def __init__(self, entry: _Optional[_Union[Message, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class Mute(_message.Message):
    __slots__ = ("participant_id", "username", "created_at")
    PARTICIPANT_ID_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    participant_id: str
    username: str
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, participant_id: _Optional[str] = ..., username: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class MuteParticipantRequest(_message.Message):
    __slots__ = ("room_id", "participant_id")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANT_ID_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    participant_id: str
    def __init__(self, room_id: _Optional[str] = ..., participant_id: _Optional[str] = ...) -> None: ...

class MuteParticipantResponse(_message.Message):
    __slots__ = ("changed", "mutes")
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    MUTES_FIELD_NUMBER: _ClassVar[int]
    changed: bool
    mutes: _containers.RepeatedCompositeFieldContainer[Mute]
    def __init__(self, changed: _Optional[bool] = ..., mutes: _Optional[_Iterable[_Union[Mute, _Mapping]]] = ...) -> None: ...

class UnmuteParticipantRequest(_message.Message):
    __slots__ = ("room_id", "participant_id")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANT_ID_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    participant_id: str
    def __init__(self, room_id: _Optional[str] = ..., participant_id: _Optional[str] = ...) -> None: ...

class UnmuteParticipantResponse(_message.Message):
    __slots__ = ("changed", "mutes")
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    MUTES_FIELD_NUMBER: _ClassVar[int]
    changed: bool
    mutes: _containers.RepeatedCompositeFieldContainer[Mute]
    def __init__(self, changed: _Optional[bool] = ..., mutes: _Optional[_Iterable[_Union[Mute, _Mapping]]] = ...) -> None: ...

class ListMutesRequest(_message.Message):
    __slots__ = ("room_id",)
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    def __init__(self, room_id: _Optional[str] = ...) -> None: ...

class ListMutesResponse(_message.Message):
    __slots__ = ("mutes",)
    MUTES_FIELD_NUMBER: _ClassVar[int]
    mutes: _containers.RepeatedCompositeFieldContainer[Mute]
    def __init__(self, mutes: _Optional[_Iterable[_Union[Mute, _Mapping]]] = ...) -> None: ...

class GetMessagingStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DailyCount(_message.Message):
    __slots__ = ("day", "count")
    DAY_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    day: str
    count: int
    def __init__(self, day: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class GetMessagingStatsResponse(_message.Message):
    __slots__ = ("messages_per_day", "open_reports")
    MESSAGES_PER_DAY_FIELD_NUMBER: _ClassVar[int]
    OPEN_REPORTS_FIELD_NUMBER: _ClassVar[int]
    messages_per_day: _containers.RepeatedCompositeFieldContainer[DailyCount]
    open_reports: int
    def __init__(self, messages_per_day: _Optional[_Iterable[_Union[DailyCount, _Mapping]]] = ..., open_reports: _Optional[int] = ...) -> None: ...

class KickTarget(_message.Message):
    __slots__ = ("room_id", "participant_id")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANT_ID_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    participant_id: str
    def __init__(self, room_id: _Optional[str] = ..., participant_id: _Optional[str] = ...) -> None: ...

class KickParticipantsRequest(_message.Message):
    __slots__ = ("targets", "code")
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    targets: _containers.RepeatedCompositeFieldContainer[KickTarget]
    code: str
    def __init__(self, targets: _Optional[_Iterable[_Union[KickTarget, _Mapping]]] = ..., code: _Optional[str] = ...) -> None: ...

class KickParticipantsResponse(_message.Message):
    __slots__ = ("published",)
    PUBLISHED_FIELD_NUMBER: _ClassVar[int]
    published: int
    def __init__(self, published: _Optional[int] = ...) -> None: ...

class GetPaidPinQuoteRequest(_message.Message):
    __slots__ = ("room_id",)
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    def __init__(self, room_id: _Optional[str] = ...) -> None: ...

class GetPaidPinQuoteResponse(_message.Message):
    __slots__ = ("paid_pins", "min_cents", "my_top_pin_id")
    PAID_PINS_FIELD_NUMBER: _ClassVar[int]
    MIN_CENTS_FIELD_NUMBER: _ClassVar[int]
    MY_TOP_PIN_ID_FIELD_NUMBER: _ClassVar[int]
    paid_pins: _containers.RepeatedCompositeFieldContainer[PaidPin]
    min_cents: int
    my_top_pin_id: str
    def __init__(self, paid_pins: _Optional[_Iterable[_Union[PaidPin, _Mapping]]] = ..., min_cents: _Optional[int] = ..., my_top_pin_id: _Optional[str] = ...) -> None: ...

class ApplyPaidPinRequest(_message.Message):
    __slots__ = ("order_id", "room_id", "participant_id", "amount_cents", "currency", "target_seq", "extend_pin_id")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANT_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_CENTS_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    TARGET_SEQ_FIELD_NUMBER: _ClassVar[int]
    EXTEND_PIN_ID_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    room_id: str
    participant_id: str
    amount_cents: int
    currency: str
    target_seq: int
    extend_pin_id: str
    def __init__(self, order_id: _Optional[str] = ..., room_id: _Optional[str] = ..., participant_id: _Optional[str] = ..., amount_cents: _Optional[int] = ..., currency: _Optional[str] = ..., target_seq: _Optional[int] = ..., extend_pin_id: _Optional[str] = ...) -> None: ...

class ApplyPaidPinResponse(_message.Message):
    __slots__ = ("outcome", "entry", "pin", "created")
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    PIN_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    outcome: PaidPinOutcome
    entry: Message
    pin: PaidPin
    created: bool
    def __init__(self, outcome: _Optional[_Union[PaidPinOutcome, str]] = ..., entry: _Optional[_Union[Message, _Mapping]] = ..., pin: _Optional[_Union[PaidPin, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class ApplyTipRequest(_message.Message):
    __slots__ = ("order_id", "room_id", "participant_id", "amount_cents", "currency", "note")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANT_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_CENTS_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    room_id: str
    participant_id: str
    amount_cents: int
    currency: str
    note: str
    def __init__(self, order_id: _Optional[str] = ..., room_id: _Optional[str] = ..., participant_id: _Optional[str] = ..., amount_cents: _Optional[int] = ..., currency: _Optional[str] = ..., note: _Optional[str] = ...) -> None: ...

class ApplyTipResponse(_message.Message):
    __slots__ = ("entry", "created")
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    entry: Message
    created: bool
    def __init__(self, entry: _Optional[_Union[Message, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class RemovePaidPinRequest(_message.Message):
    __slots__ = ("room_id", "pin_id")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    PIN_ID_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    pin_id: str
    def __init__(self, room_id: _Optional[str] = ..., pin_id: _Optional[str] = ...) -> None: ...

class RemovePaidPinResponse(_message.Message):
    __slots__ = ("entry", "changed")
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    entry: Message
    changed: bool
    def __init__(self, entry: _Optional[_Union[Message, _Mapping]] = ..., changed: _Optional[bool] = ...) -> None: ...

class MediaVariant(_message.Message):
    __slots__ = ("name", "content_type", "size_bytes", "width", "height", "object_key")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    OBJECT_KEY_FIELD_NUMBER: _ClassVar[int]
    name: str
    content_type: str
    size_bytes: int
    width: int
    height: int
    object_key: str
    def __init__(self, name: _Optional[str] = ..., content_type: _Optional[str] = ..., size_bytes: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., object_key: _Optional[str] = ...) -> None: ...

class Media(_message.Message):
    __slots__ = ("id", "room_id", "kind", "state", "uploader_participant_id", "content_type", "size_bytes", "width", "height", "duration_ms", "variants", "message_seq", "created_at", "object_prefix")
    ID_FIELD_NUMBER: _ClassVar[int]
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    UPLOADER_PARTICIPANT_ID_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    VARIANTS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_SEQ_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    OBJECT_PREFIX_FIELD_NUMBER: _ClassVar[int]
    id: str
    room_id: str
    kind: MediaKind
    state: MediaState
    uploader_participant_id: str
    content_type: str
    size_bytes: int
    width: int
    height: int
    duration_ms: int
    variants: _containers.RepeatedCompositeFieldContainer[MediaVariant]
    message_seq: int
    created_at: _timestamp_pb2.Timestamp
    object_prefix: str
    def __init__(self, id: _Optional[str] = ..., room_id: _Optional[str] = ..., kind: _Optional[_Union[MediaKind, str]] = ..., state: _Optional[_Union[MediaState, str]] = ..., uploader_participant_id: _Optional[str] = ..., content_type: _Optional[str] = ..., size_bytes: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., duration_ms: _Optional[int] = ..., variants: _Optional[_Iterable[_Union[MediaVariant, _Mapping]]] = ..., message_seq: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., object_prefix: _Optional[str] = ...) -> None: ...

class CreateMediaRequest(_message.Message):
    __slots__ = ("room_id", "kind")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    kind: MediaKind
    def __init__(self, room_id: _Optional[str] = ..., kind: _Optional[_Union[MediaKind, str]] = ...) -> None: ...

class CreateMediaResponse(_message.Message):
    __slots__ = ("media",)
    MEDIA_FIELD_NUMBER: _ClassVar[int]
    media: Media
    def __init__(self, media: _Optional[_Union[Media, _Mapping]] = ...) -> None: ...

class CompleteMediaRequest(_message.Message):
    __slots__ = ("room_id", "media_id", "content_type", "size_bytes", "width", "height", "duration_ms", "variants")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    MEDIA_ID_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    VARIANTS_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    media_id: str
    content_type: str
    size_bytes: int
    width: int
    height: int
    duration_ms: int
    variants: _containers.RepeatedCompositeFieldContainer[MediaVariant]
    def __init__(self, room_id: _Optional[str] = ..., media_id: _Optional[str] = ..., content_type: _Optional[str] = ..., size_bytes: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., duration_ms: _Optional[int] = ..., variants: _Optional[_Iterable[_Union[MediaVariant, _Mapping]]] = ...) -> None: ...

class CompleteMediaResponse(_message.Message):
    __slots__ = ("media",)
    MEDIA_FIELD_NUMBER: _ClassVar[int]
    media: Media
    def __init__(self, media: _Optional[_Union[Media, _Mapping]] = ...) -> None: ...

class AbandonMediaRequest(_message.Message):
    __slots__ = ("room_id", "media_id")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    MEDIA_ID_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    media_id: str
    def __init__(self, room_id: _Optional[str] = ..., media_id: _Optional[str] = ...) -> None: ...

class AbandonMediaResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetMediaRequest(_message.Message):
    __slots__ = ("room_id", "media_ids")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    MEDIA_IDS_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    media_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, room_id: _Optional[str] = ..., media_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class GetMediaResponse(_message.Message):
    __slots__ = ("media",)
    MEDIA_FIELD_NUMBER: _ClassVar[int]
    media: _containers.RepeatedCompositeFieldContainer[Media]
    def __init__(self, media: _Optional[_Iterable[_Union[Media, _Mapping]]] = ...) -> None: ...

class EraseRoomRequest(_message.Message):
    __slots__ = ("room_id",)
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    def __init__(self, room_id: _Optional[str] = ...) -> None: ...

class EraseRoomResponse(_message.Message):
    __slots__ = ("erased", "entries_deleted", "media_purged")
    ERASED_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_DELETED_FIELD_NUMBER: _ClassVar[int]
    MEDIA_PURGED_FIELD_NUMBER: _ClassVar[int]
    erased: bool
    entries_deleted: int
    media_purged: int
    def __init__(self, erased: _Optional[bool] = ..., entries_deleted: _Optional[int] = ..., media_purged: _Optional[int] = ...) -> None: ...

class ForgottenParticipant(_message.Message):
    __slots__ = ("room_id", "participant_id", "username")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANT_ID_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    participant_id: str
    username: str
    def __init__(self, room_id: _Optional[str] = ..., participant_id: _Optional[str] = ..., username: _Optional[str] = ...) -> None: ...

class ForgetParticipantsRequest(_message.Message):
    __slots__ = ("participants", "erase_messages")
    PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    ERASE_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    participants: _containers.RepeatedCompositeFieldContainer[ForgottenParticipant]
    erase_messages: bool
    def __init__(self, participants: _Optional[_Iterable[_Union[ForgottenParticipant, _Mapping]]] = ..., erase_messages: _Optional[bool] = ...) -> None: ...

class ForgetParticipantsResponse(_message.Message):
    __slots__ = ("entries", "messages_changed")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_CHANGED_FIELD_NUMBER: _ClassVar[int]
    entries: int
    messages_changed: int
    def __init__(self, entries: _Optional[int] = ..., messages_changed: _Optional[int] = ...) -> None: ...

class RunRetentionRequest(_message.Message):
    __slots__ = ("room_id", "dry_run")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    dry_run: bool
    def __init__(self, room_id: _Optional[str] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class RoomRetention(_message.Message):
    __slots__ = ("room_id", "retention_days", "entries", "media", "floor_seq")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    RETENTION_DAYS_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    MEDIA_FIELD_NUMBER: _ClassVar[int]
    FLOOR_SEQ_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    retention_days: int
    entries: int
    media: int
    floor_seq: int
    def __init__(self, room_id: _Optional[str] = ..., retention_days: _Optional[int] = ..., entries: _Optional[int] = ..., media: _Optional[int] = ..., floor_seq: _Optional[int] = ...) -> None: ...

class RunRetentionResponse(_message.Message):
    __slots__ = ("rooms", "entries", "media", "dry_run")
    ROOMS_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    MEDIA_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    rooms: _containers.RepeatedCompositeFieldContainer[RoomRetention]
    entries: int
    media: int
    dry_run: bool
    def __init__(self, rooms: _Optional[_Iterable[_Union[RoomRetention, _Mapping]]] = ..., entries: _Optional[int] = ..., media: _Optional[int] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class InspectRoomRequest(_message.Message):
    __slots__ = ("room_id",)
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    def __init__(self, room_id: _Optional[str] = ...) -> None: ...

class LogRange(_message.Message):
    __slots__ = ("count", "min_seq", "max_seq")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    MIN_SEQ_FIELD_NUMBER: _ClassVar[int]
    MAX_SEQ_FIELD_NUMBER: _ClassVar[int]
    count: int
    min_seq: int
    max_seq: int
    def __init__(self, count: _Optional[int] = ..., min_seq: _Optional[int] = ..., max_seq: _Optional[int] = ...) -> None: ...

class InspectRoomResponse(_message.Message):
    __slots__ = ("postgres", "hot_cache", "hot_cache_available", "floor_seq", "missing_in_cache", "extra_in_cache", "differing", "consistent", "key_versions")
    POSTGRES_FIELD_NUMBER: _ClassVar[int]
    HOT_CACHE_FIELD_NUMBER: _ClassVar[int]
    HOT_CACHE_AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    FLOOR_SEQ_FIELD_NUMBER: _ClassVar[int]
    MISSING_IN_CACHE_FIELD_NUMBER: _ClassVar[int]
    EXTRA_IN_CACHE_FIELD_NUMBER: _ClassVar[int]
    DIFFERING_FIELD_NUMBER: _ClassVar[int]
    CONSISTENT_FIELD_NUMBER: _ClassVar[int]
    KEY_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    postgres: LogRange
    hot_cache: LogRange
    hot_cache_available: bool
    floor_seq: int
    missing_in_cache: _containers.RepeatedScalarFieldContainer[int]
    extra_in_cache: _containers.RepeatedScalarFieldContainer[int]
    differing: _containers.RepeatedScalarFieldContainer[int]
    consistent: bool
    key_versions: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, postgres: _Optional[_Union[LogRange, _Mapping]] = ..., hot_cache: _Optional[_Union[LogRange, _Mapping]] = ..., hot_cache_available: _Optional[bool] = ..., floor_seq: _Optional[int] = ..., missing_in_cache: _Optional[_Iterable[int]] = ..., extra_in_cache: _Optional[_Iterable[int]] = ..., differing: _Optional[_Iterable[int]] = ..., consistent: _Optional[bool] = ..., key_versions: _Optional[_Iterable[int]] = ...) -> None: ...

class RebuildHotCacheRequest(_message.Message):
    __slots__ = ("room_id",)
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    def __init__(self, room_id: _Optional[str] = ...) -> None: ...

class RebuildHotCacheResponse(_message.Message):
    __slots__ = ("entries", "hot_cache")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    HOT_CACHE_FIELD_NUMBER: _ClassVar[int]
    entries: int
    hot_cache: LogRange
    def __init__(self, entries: _Optional[int] = ..., hot_cache: _Optional[_Union[LogRange, _Mapping]] = ...) -> None: ...

class RotateMasterKeyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RotateMasterKeyResponse(_message.Message):
    __slots__ = ("master_version", "rewrapped")
    MASTER_VERSION_FIELD_NUMBER: _ClassVar[int]
    REWRAPPED_FIELD_NUMBER: _ClassVar[int]
    master_version: int
    rewrapped: int
    def __init__(self, master_version: _Optional[int] = ..., rewrapped: _Optional[int] = ...) -> None: ...

class RotateRoomKeysRequest(_message.Message):
    __slots__ = ("room_ids",)
    ROOM_IDS_FIELD_NUMBER: _ClassVar[int]
    room_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, room_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class RotateRoomKeysResponse(_message.Message):
    __slots__ = ("rotated",)
    ROTATED_FIELD_NUMBER: _ClassVar[int]
    rotated: int
    def __init__(self, rotated: _Optional[int] = ...) -> None: ...

class ReencryptRoomsRequest(_message.Message):
    __slots__ = ("room_ids", "limit")
    ROOM_IDS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    room_ids: _containers.RepeatedScalarFieldContainer[str]
    limit: int
    def __init__(self, room_ids: _Optional[_Iterable[str]] = ..., limit: _Optional[int] = ...) -> None: ...

class ReencryptRoomsResponse(_message.Message):
    __slots__ = ("reencrypted", "more")
    REENCRYPTED_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    reencrypted: int
    more: bool
    def __init__(self, reencrypted: _Optional[int] = ..., more: _Optional[bool] = ...) -> None: ...

class GetKeyVersionsRequest(_message.Message):
    __slots__ = ("room_id",)
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    def __init__(self, room_id: _Optional[str] = ...) -> None: ...

class KeyVersionUse(_message.Message):
    __slots__ = ("version", "count")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    version: int
    count: int
    def __init__(self, version: _Optional[int] = ..., count: _Optional[int] = ...) -> None: ...

class GetKeyVersionsResponse(_message.Message):
    __slots__ = ("current_master_version", "available_master_versions", "master_versions", "data_key_versions", "current_data_key_version")
    CURRENT_MASTER_VERSION_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_MASTER_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    MASTER_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    DATA_KEY_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    CURRENT_DATA_KEY_VERSION_FIELD_NUMBER: _ClassVar[int]
    current_master_version: int
    available_master_versions: _containers.RepeatedScalarFieldContainer[int]
    master_versions: _containers.RepeatedCompositeFieldContainer[KeyVersionUse]
    data_key_versions: _containers.RepeatedCompositeFieldContainer[KeyVersionUse]
    current_data_key_version: int
    def __init__(self, current_master_version: _Optional[int] = ..., available_master_versions: _Optional[_Iterable[int]] = ..., master_versions: _Optional[_Iterable[_Union[KeyVersionUse, _Mapping]]] = ..., data_key_versions: _Optional[_Iterable[_Union[KeyVersionUse, _Mapping]]] = ..., current_data_key_version: _Optional[int] = ...) -> None: ...

class BatchedSend(_message.Message):
    __slots__ = ("send", "participant_id", "token_version", "traceparent", "tracestate")
    SEND_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANT_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_VERSION_FIELD_NUMBER: _ClassVar[int]
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    TRACESTATE_FIELD_NUMBER: _ClassVar[int]
    send: SendMessageRequest
    participant_id: str
    token_version: int
    traceparent: str
    tracestate: str
    def __init__(self, send: _Optional[_Union[SendMessageRequest, _Mapping]] = ..., participant_id: _Optional[str] = ..., token_version: _Optional[int] = ..., traceparent: _Optional[str] = ..., tracestate: _Optional[str] = ...) -> None: ...

class SendMessagesRequest(_message.Message):
    __slots__ = ("sends",)
    SENDS_FIELD_NUMBER: _ClassVar[int]
    sends: _containers.RepeatedCompositeFieldContainer[BatchedSend]
    def __init__(self, sends: _Optional[_Iterable[_Union[BatchedSend, _Mapping]]] = ...) -> None: ...

class SendError(_message.Message):
    __slots__ = ("status", "code", "message", "retryable", "retry_after_ms")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RETRYABLE_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    status: int
    code: str
    message: str
    retryable: bool
    retry_after_ms: int
    def __init__(self, status: _Optional[int] = ..., code: _Optional[str] = ..., message: _Optional[str] = ..., retryable: _Optional[bool] = ..., retry_after_ms: _Optional[int] = ...) -> None: ...

class SendResult(_message.Message):
    __slots__ = ("sent", "error")
    SENT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    sent: SendMessageResponse
    error: SendError
    def __init__(self, sent: _Optional[_Union[SendMessageResponse, _Mapping]] = ..., error: _Optional[_Union[SendError, _Mapping]] = ...) -> None: ...

class SendStreamRequest(_message.Message):
    __slots__ = ("batch_id", "sends", "timeout_ms")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    SENDS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    batch_id: int
    sends: _containers.RepeatedCompositeFieldContainer[BatchedSend]
    timeout_ms: int
    def __init__(self, batch_id: _Optional[int] = ..., sends: _Optional[_Iterable[_Union[BatchedSend, _Mapping]]] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class SendStreamResponse(_message.Message):
    __slots__ = ("batch_id", "results", "draining")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    batch_id: int
    results: _containers.RepeatedCompositeFieldContainer[SendResult]
    draining: bool
    def __init__(self, batch_id: _Optional[int] = ..., results: _Optional[_Iterable[_Union[SendResult, _Mapping]]] = ..., draining: _Optional[bool] = ...) -> None: ...

class SendMessagesResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SendResult]
    def __init__(self, results: _Optional[_Iterable[_Union[SendResult, _Mapping]]] = ...) -> None: ...
