import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class IdentityKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IDENTITY_KIND_UNSPECIFIED: _ClassVar[IdentityKind]
    IDENTITY_KIND_ANONYMOUS: _ClassVar[IdentityKind]
    IDENTITY_KIND_USER: _ClassVar[IdentityKind]

class UsernameProblem(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    USERNAME_PROBLEM_UNSPECIFIED: _ClassVar[UsernameProblem]
    USERNAME_PROBLEM_INVALID: _ClassVar[UsernameProblem]
    USERNAME_PROBLEM_RESERVED_WORD: _ClassVar[UsernameProblem]
    USERNAME_PROBLEM_PROFANITY: _ClassVar[UsernameProblem]
    USERNAME_PROBLEM_TAKEN: _ClassVar[UsernameProblem]
    USERNAME_PROBLEM_QUARANTINED: _ClassVar[UsernameProblem]
IDENTITY_KIND_UNSPECIFIED: IdentityKind
IDENTITY_KIND_ANONYMOUS: IdentityKind
IDENTITY_KIND_USER: IdentityKind
USERNAME_PROBLEM_UNSPECIFIED: UsernameProblem
USERNAME_PROBLEM_INVALID: UsernameProblem
USERNAME_PROBLEM_RESERVED_WORD: UsernameProblem
USERNAME_PROBLEM_PROFANITY: UsernameProblem
USERNAME_PROBLEM_TAKEN: UsernameProblem
USERNAME_PROBLEM_QUARANTINED: UsernameProblem

class TokenPair(_message.Message):
    __slots__ = ("access_token", "refresh_token", "access_expires_in", "refresh_expires_in")
    ACCESS_TOKEN_FIELD_NUMBER: _ClassVar[int]
    REFRESH_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ACCESS_EXPIRES_IN_FIELD_NUMBER: _ClassVar[int]
    REFRESH_EXPIRES_IN_FIELD_NUMBER: _ClassVar[int]
    access_token: str
    refresh_token: str
    access_expires_in: int
    refresh_expires_in: int
    def __init__(self, access_token: _Optional[str] = ..., refresh_token: _Optional[str] = ..., access_expires_in: _Optional[int] = ..., refresh_expires_in: _Optional[int] = ...) -> None: ...

class Identity(_message.Message):
    __slots__ = ("id", "kind", "email", "reserved_username", "created_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    RESERVED_USERNAME_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: IdentityKind
    email: str
    reserved_username: str
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[_Union[IdentityKind, str]] = ..., email: _Optional[str] = ..., reserved_username: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateAnonymousSessionRequest(_message.Message):
    __slots__ = ("client_ip_hash",)
    CLIENT_IP_HASH_FIELD_NUMBER: _ClassVar[int]
    client_ip_hash: str
    def __init__(self, client_ip_hash: _Optional[str] = ...) -> None: ...

class CreateAnonymousSessionResponse(_message.Message):
    __slots__ = ("identity", "tokens")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    identity: Identity
    tokens: TokenPair
    def __init__(self, identity: _Optional[_Union[Identity, _Mapping]] = ..., tokens: _Optional[_Union[TokenPair, _Mapping]] = ...) -> None: ...

class RegisterRequest(_message.Message):
    __slots__ = ("email", "password", "reserved_username", "client_ip_hash")
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    RESERVED_USERNAME_FIELD_NUMBER: _ClassVar[int]
    CLIENT_IP_HASH_FIELD_NUMBER: _ClassVar[int]
    email: str
    password: str
    reserved_username: str
    client_ip_hash: str
    def __init__(self, email: _Optional[str] = ..., password: _Optional[str] = ..., reserved_username: _Optional[str] = ..., client_ip_hash: _Optional[str] = ...) -> None: ...

class RegisterResponse(_message.Message):
    __slots__ = ("identity", "tokens")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    identity: Identity
    tokens: TokenPair
    def __init__(self, identity: _Optional[_Union[Identity, _Mapping]] = ..., tokens: _Optional[_Union[TokenPair, _Mapping]] = ...) -> None: ...

class LoginRequest(_message.Message):
    __slots__ = ("email", "password", "client_ip_hash")
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    CLIENT_IP_HASH_FIELD_NUMBER: _ClassVar[int]
    email: str
    password: str
    client_ip_hash: str
    def __init__(self, email: _Optional[str] = ..., password: _Optional[str] = ..., client_ip_hash: _Optional[str] = ...) -> None: ...

class LoginResponse(_message.Message):
    __slots__ = ("identity", "tokens")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    identity: Identity
    tokens: TokenPair
    def __init__(self, identity: _Optional[_Union[Identity, _Mapping]] = ..., tokens: _Optional[_Union[TokenPair, _Mapping]] = ...) -> None: ...

class RefreshTokensRequest(_message.Message):
    __slots__ = ("refresh_token", "client_ip_hash")
    REFRESH_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CLIENT_IP_HASH_FIELD_NUMBER: _ClassVar[int]
    refresh_token: str
    client_ip_hash: str
    def __init__(self, refresh_token: _Optional[str] = ..., client_ip_hash: _Optional[str] = ...) -> None: ...

class RefreshTokensResponse(_message.Message):
    __slots__ = ("identity", "tokens")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    identity: Identity
    tokens: TokenPair
    def __init__(self, identity: _Optional[_Union[Identity, _Mapping]] = ..., tokens: _Optional[_Union[TokenPair, _Mapping]] = ...) -> None: ...

class LogoutRequest(_message.Message):
    __slots__ = ("refresh_token",)
    REFRESH_TOKEN_FIELD_NUMBER: _ClassVar[int]
    refresh_token: str
    def __init__(self, refresh_token: _Optional[str] = ...) -> None: ...

class LogoutResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetIdentityRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetIdentityResponse(_message.Message):
    __slots__ = ("identity",)
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    identity: Identity
    def __init__(self, identity: _Optional[_Union[Identity, _Mapping]] = ...) -> None: ...

class GetPublicKeysRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PublicKey(_message.Message):
    __slots__ = ("kid", "kty", "crv", "x", "alg", "use")
    KID_FIELD_NUMBER: _ClassVar[int]
    KTY_FIELD_NUMBER: _ClassVar[int]
    CRV_FIELD_NUMBER: _ClassVar[int]
    X_FIELD_NUMBER: _ClassVar[int]
    ALG_FIELD_NUMBER: _ClassVar[int]
    USE_FIELD_NUMBER: _ClassVar[int]
    kid: str
    kty: str
    crv: str
    x: str
    alg: str
    use: str
    def __init__(self, kid: _Optional[str] = ..., kty: _Optional[str] = ..., crv: _Optional[str] = ..., x: _Optional[str] = ..., alg: _Optional[str] = ..., use: _Optional[str] = ...) -> None: ...

class GetPublicKeysResponse(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[PublicKey]
    def __init__(self, keys: _Optional[_Iterable[_Union[PublicKey, _Mapping]]] = ...) -> None: ...

class IssueRoomTokenRequest(_message.Message):
    __slots__ = ("room_id", "participant_id", "subject", "version", "is_host", "username")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANT_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    IS_HOST_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    participant_id: str
    subject: str
    version: int
    is_host: bool
    username: str
    def __init__(self, room_id: _Optional[str] = ..., participant_id: _Optional[str] = ..., subject: _Optional[str] = ..., version: _Optional[int] = ..., is_host: _Optional[bool] = ..., username: _Optional[str] = ...) -> None: ...

class IssueRoomTokenResponse(_message.Message):
    __slots__ = ("room_token", "expires_in")
    ROOM_TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_IN_FIELD_NUMBER: _ClassVar[int]
    room_token: str
    expires_in: int
    def __init__(self, room_token: _Optional[str] = ..., expires_in: _Optional[int] = ...) -> None: ...

class CheckUsernameRequest(_message.Message):
    __slots__ = ("username",)
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    username: str
    def __init__(self, username: _Optional[str] = ...) -> None: ...

class CheckUsernameResponse(_message.Message):
    __slots__ = ("username", "available", "problem", "message", "taken", "yours")
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TAKEN_FIELD_NUMBER: _ClassVar[int]
    YOURS_FIELD_NUMBER: _ClassVar[int]
    username: str
    available: bool
    problem: UsernameProblem
    message: str
    taken: bool
    yours: bool
    def __init__(self, username: _Optional[str] = ..., available: _Optional[bool] = ..., problem: _Optional[_Union[UsernameProblem, str]] = ..., message: _Optional[str] = ..., taken: _Optional[bool] = ..., yours: _Optional[bool] = ...) -> None: ...

class ReserveUsernameRequest(_message.Message):
    __slots__ = ("username",)
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    username: str
    def __init__(self, username: _Optional[str] = ...) -> None: ...

class ReserveUsernameResponse(_message.Message):
    __slots__ = ("identity",)
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    identity: Identity
    def __init__(self, identity: _Optional[_Union[Identity, _Mapping]] = ...) -> None: ...

class SuggestUsernamesRequest(_message.Message):
    __slots__ = ("count", "digits")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    DIGITS_FIELD_NUMBER: _ClassVar[int]
    count: int
    digits: int
    def __init__(self, count: _Optional[int] = ..., digits: _Optional[int] = ...) -> None: ...

class SuggestUsernamesResponse(_message.Message):
    __slots__ = ("usernames",)
    USERNAMES_FIELD_NUMBER: _ClassVar[int]
    usernames: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, usernames: _Optional[_Iterable[str]] = ...) -> None: ...

class RequestPasswordResetRequest(_message.Message):
    __slots__ = ("email", "client_ip_hash")
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    CLIENT_IP_HASH_FIELD_NUMBER: _ClassVar[int]
    email: str
    client_ip_hash: str
    def __init__(self, email: _Optional[str] = ..., client_ip_hash: _Optional[str] = ...) -> None: ...

class RequestPasswordResetResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ResetPasswordRequest(_message.Message):
    __slots__ = ("token", "new_password")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    NEW_PASSWORD_FIELD_NUMBER: _ClassVar[int]
    token: str
    new_password: str
    def __init__(self, token: _Optional[str] = ..., new_password: _Optional[str] = ...) -> None: ...

class ResetPasswordResponse(_message.Message):
    __slots__ = ("identity", "tokens")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    identity: Identity
    tokens: TokenPair
    def __init__(self, identity: _Optional[_Union[Identity, _Mapping]] = ..., tokens: _Optional[_Union[TokenPair, _Mapping]] = ...) -> None: ...

class ChangePasswordRequest(_message.Message):
    __slots__ = ("current_password", "new_password")
    CURRENT_PASSWORD_FIELD_NUMBER: _ClassVar[int]
    NEW_PASSWORD_FIELD_NUMBER: _ClassVar[int]
    current_password: str
    new_password: str
    def __init__(self, current_password: _Optional[str] = ..., new_password: _Optional[str] = ...) -> None: ...

class ChangePasswordResponse(_message.Message):
    __slots__ = ("identity", "tokens")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    identity: Identity
    tokens: TokenPair
    def __init__(self, identity: _Optional[_Union[Identity, _Mapping]] = ..., tokens: _Optional[_Union[TokenPair, _Mapping]] = ...) -> None: ...

class ChangeReservedUsernameRequest(_message.Message):
    __slots__ = ("username",)
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    username: str
    def __init__(self, username: _Optional[str] = ...) -> None: ...

class ChangeReservedUsernameResponse(_message.Message):
    __slots__ = ("identity", "previous_username")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_USERNAME_FIELD_NUMBER: _ClassVar[int]
    identity: Identity
    previous_username: str
    def __init__(self, identity: _Optional[_Union[Identity, _Mapping]] = ..., previous_username: _Optional[str] = ...) -> None: ...

class AuditEvent(_message.Message):
    __slots__ = ("id", "at", "kind", "actor", "target", "room_id", "ip_hash", "details_json")
    ID_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    IP_HASH_FIELD_NUMBER: _ClassVar[int]
    DETAILS_JSON_FIELD_NUMBER: _ClassVar[int]
    id: int
    at: _timestamp_pb2.Timestamp
    kind: str
    actor: str
    target: str
    room_id: str
    ip_hash: str
    details_json: str
    def __init__(self, id: _Optional[int] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., kind: _Optional[str] = ..., actor: _Optional[str] = ..., target: _Optional[str] = ..., room_id: _Optional[str] = ..., ip_hash: _Optional[str] = ..., details_json: _Optional[str] = ...) -> None: ...

class ListAuditEventsRequest(_message.Message):
    __slots__ = ("kind", "actor", "target", "room_id", "since", "until", "before_id", "page_size")
    KIND_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    BEFORE_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    kind: str
    actor: str
    target: str
    room_id: str
    since: _timestamp_pb2.Timestamp
    until: _timestamp_pb2.Timestamp
    before_id: int
    page_size: int
    def __init__(self, kind: _Optional[str] = ..., actor: _Optional[str] = ..., target: _Optional[str] = ..., room_id: _Optional[str] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., before_id: _Optional[int] = ..., page_size: _Optional[int] = ...) -> None: ...

class ListAuditEventsResponse(_message.Message):
    __slots__ = ("events", "next_before_id")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_BEFORE_ID_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[AuditEvent]
    next_before_id: int
    def __init__(self, events: _Optional[_Iterable[_Union[AuditEvent, _Mapping]]] = ..., next_before_id: _Optional[int] = ...) -> None: ...

class NewAuditEvent(_message.Message):
    __slots__ = ("kind", "actor", "target", "room_id", "ip_hash", "details_json", "idempotency_key")
    KIND_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    IP_HASH_FIELD_NUMBER: _ClassVar[int]
    DETAILS_JSON_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    kind: str
    actor: str
    target: str
    room_id: str
    ip_hash: str
    details_json: str
    idempotency_key: str
    def __init__(self, kind: _Optional[str] = ..., actor: _Optional[str] = ..., target: _Optional[str] = ..., room_id: _Optional[str] = ..., ip_hash: _Optional[str] = ..., details_json: _Optional[str] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class RecordAuditEventsRequest(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[NewAuditEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[NewAuditEvent, _Mapping]]] = ...) -> None: ...

class RecordAuditEventsResponse(_message.Message):
    __slots__ = ("recorded",)
    RECORDED_FIELD_NUMBER: _ClassVar[int]
    recorded: int
    def __init__(self, recorded: _Optional[int] = ...) -> None: ...

class SiteBan(_message.Message):
    __slots__ = ("id", "identity_id", "client_ip_hash", "reason", "banned_by", "created_at", "lifted_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_IP_HASH_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    BANNED_BY_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    LIFTED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    identity_id: str
    client_ip_hash: str
    reason: str
    banned_by: str
    created_at: _timestamp_pb2.Timestamp
    lifted_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., identity_id: _Optional[str] = ..., client_ip_hash: _Optional[str] = ..., reason: _Optional[str] = ..., banned_by: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., lifted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class BanSiteRequest(_message.Message):
    __slots__ = ("identity_id", "client_ip_hash", "reason")
    IDENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_IP_HASH_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    identity_id: str
    client_ip_hash: str
    reason: str
    def __init__(self, identity_id: _Optional[str] = ..., client_ip_hash: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class BanSiteResponse(_message.Message):
    __slots__ = ("ban", "changed")
    BAN_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    ban: SiteBan
    changed: bool
    def __init__(self, ban: _Optional[_Union[SiteBan, _Mapping]] = ..., changed: _Optional[bool] = ...) -> None: ...

class LiftSiteBanRequest(_message.Message):
    __slots__ = ("ban_id",)
    BAN_ID_FIELD_NUMBER: _ClassVar[int]
    ban_id: str
    def __init__(self, ban_id: _Optional[str] = ...) -> None: ...

class LiftSiteBanResponse(_message.Message):
    __slots__ = ("ban", "changed")
    BAN_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    ban: SiteBan
    changed: bool
    def __init__(self, ban: _Optional[_Union[SiteBan, _Mapping]] = ..., changed: _Optional[bool] = ...) -> None: ...

class ListSiteBansRequest(_message.Message):
    __slots__ = ("limit",)
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    limit: int
    def __init__(self, limit: _Optional[int] = ...) -> None: ...

class ListSiteBansResponse(_message.Message):
    __slots__ = ("bans",)
    BANS_FIELD_NUMBER: _ClassVar[int]
    bans: _containers.RepeatedCompositeFieldContainer[SiteBan]
    def __init__(self, bans: _Optional[_Iterable[_Union[SiteBan, _Mapping]]] = ...) -> None: ...

class CheckSiteBanRequest(_message.Message):
    __slots__ = ("identity_id", "client_ip_hash")
    IDENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_IP_HASH_FIELD_NUMBER: _ClassVar[int]
    identity_id: str
    client_ip_hash: str
    def __init__(self, identity_id: _Optional[str] = ..., client_ip_hash: _Optional[str] = ...) -> None: ...

class CheckSiteBanResponse(_message.Message):
    __slots__ = ("banned",)
    BANNED_FIELD_NUMBER: _ClassVar[int]
    banned: bool
    def __init__(self, banned: _Optional[bool] = ...) -> None: ...

class IssueServiceTokenRequest(_message.Message):
    __slots__ = ("service", "issued_at", "proof")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    PROOF_FIELD_NUMBER: _ClassVar[int]
    service: str
    issued_at: int
    proof: str
    def __init__(self, service: _Optional[str] = ..., issued_at: _Optional[int] = ..., proof: _Optional[str] = ...) -> None: ...

class IssueServiceTokenResponse(_message.Message):
    __slots__ = ("service_token", "expires_in")
    SERVICE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_IN_FIELD_NUMBER: _ClassVar[int]
    service_token: str
    expires_in: int
    def __init__(self, service_token: _Optional[str] = ..., expires_in: _Optional[int] = ...) -> None: ...

class GetAuditStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetAuditStatsResponse(_message.Message):
    __slots__ = ("events_today",)
    EVENTS_TODAY_FIELD_NUMBER: _ClassVar[int]
    events_today: int
    def __init__(self, events_today: _Optional[int] = ...) -> None: ...

class DeleteAccountRequest(_message.Message):
    __slots__ = ("password", "erase_messages")
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    ERASE_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    password: str
    erase_messages: bool
    def __init__(self, password: _Optional[str] = ..., erase_messages: _Optional[bool] = ...) -> None: ...

class DeleteAccountResponse(_message.Message):
    __slots__ = ("subject",)
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    subject: str
    def __init__(self, subject: _Optional[str] = ...) -> None: ...

class GrantAdminRequest(_message.Message):
    __slots__ = ("email",)
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    email: str
    def __init__(self, email: _Optional[str] = ...) -> None: ...

class GrantAdminResponse(_message.Message):
    __slots__ = ("user_id", "changed")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    changed: bool
    def __init__(self, user_id: _Optional[str] = ..., changed: _Optional[bool] = ...) -> None: ...

class RevokeAdminRequest(_message.Message):
    __slots__ = ("email",)
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    email: str
    def __init__(self, email: _Optional[str] = ...) -> None: ...

class RevokeAdminResponse(_message.Message):
    __slots__ = ("user_id", "changed")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    changed: bool
    def __init__(self, user_id: _Optional[str] = ..., changed: _Optional[bool] = ...) -> None: ...

class ListAdminsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AdminAccount(_message.Message):
    __slots__ = ("user_id", "email", "username", "granted_at")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    GRANTED_AT_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    email: str
    username: str
    granted_at: _timestamp_pb2.Timestamp
    def __init__(self, user_id: _Optional[str] = ..., email: _Optional[str] = ..., username: _Optional[str] = ..., granted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListAdminsResponse(_message.Message):
    __slots__ = ("admins",)
    ADMINS_FIELD_NUMBER: _ClassVar[int]
    admins: _containers.RepeatedCompositeFieldContainer[AdminAccount]
    def __init__(self, admins: _Optional[_Iterable[_Union[AdminAccount, _Mapping]]] = ...) -> None: ...
