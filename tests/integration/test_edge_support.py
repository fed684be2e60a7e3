"""Fakes for the edge's integration tests: real gRPC servers with small in-memory logic.

identity, rooms, messaging and payments run in one grpc.aio server started through
chatpop_common.server.serve (so the real interceptors map errors and verify tokens), and the edge
runs under a real uvicorn on a free port. Tokens are real EdDSA JWTs signed with a test key that
the fake identity publishes through GetPublicKeys.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
import jsonschema  # type: ignore[import-untyped]
import jwt
import uvicorn
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from google.protobuf.timestamp_pb2 import Timestamp

from chatpop.identity.v1 import identity_pb2, identity_pb2_grpc
from chatpop.messaging.v1 import messaging_pb2, messaging_pb2_grpc
from chatpop.payments.v1 import payments_pb2, payments_pb2_grpc
from chatpop.rooms.v1 import rooms_pb2, rooms_pb2_grpc
from chatpop_common import errors
from chatpop_common.auth import ISSUER, KeyCache, TokenVerifier, require_principal, room_audience
from chatpop_common.devstack import free_port
from chatpop_common.server import GrpcApp, Registration, serve
from chatpop_common.service_auth import require_service
from chatpop_common.settings import ServiceSettings
from chatpop_edge.app import create_app
from chatpop_edge.connections import EdgeServerConfig
from chatpop_edge.settings import EdgeSettings
from chatpop_messaging.send_streams import SendStreams

IP_HASH_KEY = "edge-test-ip-hash-key-0123456789"
PUBLIC_URL = "https://chat.example.test"


def unique(prefix: str = "") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


class Signer:
    """The test key pair identity signs with."""

    def __init__(self) -> None:
        self.kid = unique("kid-")
        self.key = Ed25519PrivateKey.generate()

    def public(self) -> Ed25519PublicKey:
        return self.key.public_key()

    def jwk_x(self) -> str:
        raw = self.public().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    def sign(self, claims: dict[str, Any], ttl: int = 900, *, kid: str | None = None) -> str:
        now = int(time.time())
        payload = {"iss": ISSUER, "iat": now, "nbf": now, "exp": now + ttl, "jti": unique(), **claims}
        return jwt.encode(payload, self.key, algorithm="EdDSA", headers={"kid": kid or self.kid})

    def access(self, subject: str, kind: str = "anonymous", ttl: int = 900) -> str:
        return self.sign({"sub": subject, "aud": "chatpop", "typ": "access", "knd": kind}, ttl)

    def room(
        self, room_id: str, participant_id: str, subject: str, *, is_host: bool = False, ttl: int = 900
    ) -> str:
        return self.sign(
            {
                "sub": subject,
                "aud": room_audience(room_id),
                "typ": "room",
                "knd": "anonymous",
                "rid": room_id,
                "pid": participant_id,
                "ver": 1,
                "host": is_host,
            },
            ttl,
        )


def now_ts() -> Timestamp:
    ts = Timestamp()
    ts.GetCurrentTime()
    return ts


# --- identity -------------------------------------------------------------------------------------


class FakeIdentity(identity_pb2_grpc.IdentityServiceServicer):
    def __init__(self, signer: Signer) -> None:
        self.signer = signer
        self.accounts: dict[str, tuple[str, str, str]] = {}  # email → (id, password, reserved)
        self.refresh: dict[
            str, tuple[str, identity_pb2.IdentityKind]
        ] = {}  # refresh token → (identity id, kind)
        self.ip_hashes: list[str] = []

    def _pair(self, identity_id: str, kind: identity_pb2.IdentityKind) -> identity_pb2.TokenPair:
        refresh = unique("rt-")
        self.refresh[refresh] = (identity_id, kind)
        knd = "user" if kind == identity_pb2.IDENTITY_KIND_USER else "anonymous"
        return identity_pb2.TokenPair(
            access_token=self.signer.access(identity_id, knd),
            refresh_token=refresh,
            access_expires_in=900,
            refresh_expires_in=86400,
        )

    def _identity(
        self, identity_id: str, kind: identity_pb2.IdentityKind, email: str = "", reserved: str = ""
    ) -> identity_pb2.Identity:
        return identity_pb2.Identity(
            id=identity_id, kind=kind, email=email, reserved_username=reserved, created_at=now_ts()
        )

    async def CreateAnonymousSession(self, request: Any, context: Any) -> Any:
        self.ip_hashes.append(request.client_ip_hash)
        identity_id = str(uuid.uuid4())
        kind = identity_pb2.IDENTITY_KIND_ANONYMOUS
        return identity_pb2.CreateAnonymousSessionResponse(
            identity=self._identity(identity_id, kind), tokens=self._pair(identity_id, kind)
        )

    async def Register(self, request: Any, context: Any) -> Any:
        if request.email.startswith("explode"):
            raise RuntimeError("database password is hunter2")
        if "@" not in request.email:
            raise errors.InvalidArgument("email is not valid", code="invalid_email")
        if request.email in self.accounts:
            raise errors.AlreadyExists("this email is already registered", code="email_taken")
        identity_id = str(uuid.uuid4())
        self.accounts[request.email] = (identity_id, request.password, request.reserved_username)
        kind = identity_pb2.IDENTITY_KIND_USER
        return identity_pb2.RegisterResponse(
            identity=self._identity(identity_id, kind, request.email, request.reserved_username),
            tokens=self._pair(identity_id, kind),
        )

    async def Login(self, request: Any, context: Any) -> Any:
        account = self.accounts.get(request.email)
        if account is None or account[1] != request.password:
            raise errors.Unauthenticated("wrong email or password", code="invalid_credentials")
        kind = identity_pb2.IDENTITY_KIND_USER
        return identity_pb2.LoginResponse(
            identity=self._identity(account[0], kind, request.email, account[2]),
            tokens=self._pair(account[0], kind),
        )

    async def RefreshTokens(self, request: Any, context: Any) -> Any:
        found = self.refresh.pop(request.refresh_token, None)
        if found is None:
            raise errors.Unauthenticated("the refresh token is not valid", code="invalid_refresh_token")
        identity_id, kind = found
        return identity_pb2.RefreshTokensResponse(
            identity=self._identity(identity_id, kind), tokens=self._pair(identity_id, kind)
        )

    async def Logout(self, request: Any, context: Any) -> Any:
        if self.refresh.pop(request.refresh_token, None) is None:
            raise errors.Unauthenticated("the refresh token is not valid", code="invalid_refresh_token")
        return identity_pb2.LogoutResponse()

    async def GetIdentity(self, request: Any, context: Any) -> Any:
        principal = require_principal()
        if principal.token_type != "access":
            raise errors.Unauthenticated("an access token is required", code="invalid_token")
        kind = (
            identity_pb2.IDENTITY_KIND_USER
            if principal.kind == "user"
            else identity_pb2.IDENTITY_KIND_ANONYMOUS
        )
        return identity_pb2.GetIdentityResponse(identity=self._identity(principal.subject, kind))

    async def IssueServiceToken(self, request: Any, context: Any) -> Any:
        # The edge's own credential (it sends SendMessages with it); the proof is not checked here.
        token = self.signer.sign({"sub": request.service, "aud": "chatpop:service", "typ": "service"}, 900)
        return identity_pb2.IssueServiceTokenResponse(service_token=token, expires_in=900)

    async def GetPublicKeys(self, request: Any, context: Any) -> Any:
        return identity_pb2.GetPublicKeysResponse(
            keys=[
                identity_pb2.PublicKey(
                    kid=self.signer.kid,
                    kty="OKP",
                    crv="Ed25519",
                    x=self.signer.jwk_x(),
                    alg="EdDSA",
                    use="sig",
                )
            ]
        )

    async def IssueRoomToken(self, request: Any, context: Any) -> Any:
        token = self.signer.room(
            request.room_id, request.participant_id, request.subject, is_host=request.is_host
        )
        return identity_pb2.IssueRoomTokenResponse(room_token=token, expires_in=900)


# --- rooms ----------------------------------------------------------------------------------------


@dataclass
class RoomState:
    room: rooms_pb2.Room
    access_code: str = ""
    participants: dict[str, rooms_pb2.Participant] = field(default_factory=dict)  # by subject


class FakeRooms(rooms_pb2_grpc.RoomsServiceServicer):
    def __init__(self, signer: Signer) -> None:
        self.signer = signer
        self.rooms: dict[str, RoomState] = {}
        self.codes: dict[str, str] = {}
        self.join_ip_hashes: list[str] = []

    def create(self, host_id: str = "", name: str = "Room", *, access_code: str = "") -> rooms_pb2.Room:
        room_id = str(uuid.uuid4())
        code = uuid.uuid4().hex[:8].upper()
        room = rooms_pb2.Room(
            id=room_id,
            code=code,
            name=name,
            visibility=rooms_pb2.VISIBILITY_PRIVATE if access_code else rooms_pb2.VISIBILITY_PUBLIC,
            media=rooms_pb2.MediaSettings(),
            theme=rooms_pb2.THEME_PURPLE_DREAM,
            retention_days=30,
            host_id=host_id or str(uuid.uuid4()),
            created_at=now_ts(),
            updated_at=now_ts(),
        )
        self.rooms[room_id] = RoomState(room, access_code)
        self.codes[code] = room_id
        return room

    def join(self, room: rooms_pb2.Room, username: str | None = None) -> tuple[str, str]:
        """A participant joined directly: (participant id, room token)."""
        subject = str(uuid.uuid4())
        participant_id = str(uuid.uuid4())
        state = self.rooms[room.id]
        state.participants[subject] = rooms_pb2.Participant(
            id=participant_id, room_id=room.id, subject=subject, username=username or unique("u"), version=1
        )
        return participant_id, self.signer.room(room.id, participant_id, subject)

    def _state(self, room_id: str = "", code: str = "") -> RoomState:
        room_id = room_id or self.codes.get(code, "")
        state = self.rooms.get(room_id)
        if state is None:
            raise errors.NotFound("no such room", code="room_not_found")
        return state

    async def CreateRoom(self, request: Any, context: Any) -> Any:
        principal = require_principal()
        if principal.token_type != "access":
            raise errors.Unauthenticated("an access token is required", code="invalid_token")
        if request.name == "too-many":
            raise errors.ResourceExhausted("you created too many rooms", code="room_limit", retry_after=42)
        if not request.name.strip():
            raise errors.InvalidArgument("name is required", code="invalid_name")
        if request.visibility == rooms_pb2.VISIBILITY_PRIVATE and not request.access_code:
            raise errors.InvalidArgument("a private room needs an access code", code="access_code_required")
        room = self.create(principal.subject, request.name, access_code=request.access_code)
        room.description = request.description
        room.theme = request.theme or rooms_pb2.THEME_PURPLE_DREAM
        room.media.CopyFrom(request.media)
        if request.HasField("retention_days"):
            room.retention_days = request.retention_days
        return rooms_pb2.CreateRoomResponse(room=room)

    async def GetRoom(self, request: Any, context: Any) -> Any:
        state = self._state(room_id=request.room_id, code=request.code)
        return rooms_pb2.GetRoomResponse(room=state.room)

    async def UpdateRoom(self, request: Any, context: Any) -> Any:
        principal = require_principal()
        state = self._state(room_id=request.room_id)
        if principal.subject != state.room.host_id:
            raise errors.PermissionDenied("only the host can edit the room", code="not_host")
        if request.HasField("name"):
            state.room.name = request.name
        if request.HasField("description"):
            state.room.description = request.description
        if request.HasField("theme"):
            state.room.theme = request.theme
        if request.HasField("retention_days"):
            state.room.retention_days = request.retention_days
        return rooms_pb2.UpdateRoomResponse(room=state.room)

    async def CloseRoom(self, request: Any, context: Any) -> Any:
        raise errors.FailedPrecondition("not in this fake", code="unsupported")

    async def JoinRoom(self, request: Any, context: Any) -> Any:
        principal = require_principal()
        state = self._state(code=request.code)
        self.join_ip_hashes.append(request.client_ip_hash)
        if state.access_code and request.access_code != state.access_code:
            raise errors.PermissionDenied("wrong access code", code="wrong_access_code")
        taken = {p.username.lower(): s for s, p in state.participants.items()}
        if taken.get(request.username.lower(), principal.subject) != principal.subject:
            raise errors.AlreadyExists("this username is taken in this room", code="username_taken")
        participant = state.participants.get(principal.subject)
        if participant is None:
            participant = rooms_pb2.Participant(
                id=str(uuid.uuid4()),
                room_id=state.room.id,
                subject=principal.subject,
                username=request.username,
                is_host=principal.subject == state.room.host_id,
                version=1,
                joined_at=now_ts(),
            )
            state.participants[principal.subject] = participant
        token = self.signer.room(
            state.room.id, participant.id, principal.subject, is_host=participant.is_host
        )
        return rooms_pb2.JoinRoomResponse(
            room=state.room, participant=participant, room_token=token, room_token_expires_in=900
        )

    async def GetParticipant(self, request: Any, context: Any) -> Any:
        state = self.rooms.get(request.room_id)
        for participant in state.participants.values() if state is not None else ():
            if participant.id == request.participant_id:
                return rooms_pb2.GetParticipantResponse(participant=participant)
        raise errors.NotFound("There is no such participant in this room.", code="participant_not_found")

    async def ListParticipants(self, request: Any, context: Any) -> Any:
        state = self.rooms.get(request.room_id)
        participants = list(state.participants.values()) if state is not None else []
        return rooms_pb2.ListParticipantsResponse(participants=participants)

    def username(self, room_id: str, participant_id: str) -> str:
        state = self.rooms.get(room_id)
        for participant in state.participants.values() if state is not None else ():
            if participant.id == participant_id:
                return participant.username
        return ""


# --- messaging ------------------------------------------------------------------------------------

_BREAK = object()


class FakeMessaging(messaging_pb2_grpc.MessagingServiceServicer):
    def __init__(self, rooms: FakeRooms) -> None:
        self.rooms = rooms
        self.log: dict[str, list[messaging_pb2.Message]] = defaultdict(list)
        self.by_client_id: dict[tuple[str, str, str], messaging_pb2.Message] = {}
        self.subscribers: dict[str, set[asyncio.Queue[Any]]] = defaultdict(set)
        self.subscribe_calls: dict[str, list[int]] = defaultdict(list)  # after_seq of each Subscribe
        self.backfill_limit = 1000
        # Rooms whose new messages are committed but not published (a lost live event).
        self.unpublished: set[str] = set()
        # Presence as edges reported it: room → instance → participants; and each room's version.
        self.presence: dict[str, dict[str, set[str]]] = defaultdict(dict)
        self.presence_versions: dict[str, int] = defaultdict(int)
        self.typing_calls: list[tuple[str, str]] = []  # (room id, participant id)
        # Every SendMessages call's sends, in order; while `batch_gate` is set and closed, calls wait
        # for it before storing anything (tests that need sends to pile up in the edge's batcher).
        self.batches: list[list[messaging_pb2.BatchedSend]] = []
        self.batch_gate: asyncio.Event | None = None
        # How many of those came on a SendStream; with `send_streams` off SendStream is UNIMPLEMENTED,
        # as in a messaging of an older version.
        self.streamed = 0
        self.send_streams = True
        self._streams = SendStreams()
        self.announce_fails = False
        # Presence changes become frames only where a test asks for them, so other tests see
        # exactly the frames they expect.
        self.presence_signals = False

    def signal(self, signal: messaging_pb2.Signal) -> None:
        """Publish an ephemeral signal to the room's live streams, as Redis pub/sub would."""
        for queue in list(self.subscribers[signal.room_id]):
            queue.put_nowait(signal)

    def online(self, room_id: str) -> set[str]:
        return set().union(*self.presence[room_id].values()) if self.presence[room_id] else set()

    def append(
        self,
        room_id: str,
        text: str,
        participant_id: str = "",
        username: str = "someone",
        client_msg_id: str = "",
        reply_to_seq: int = 0,
    ) -> messaging_pb2.Message:
        """Commit a message (as another edge process would have), then publish it."""
        messages = self.log[room_id]
        message = messaging_pb2.Message(
            id=str(uuid.uuid4()),
            room_id=room_id,
            seq=len(messages) + 1,
            sender_participant_id=participant_id or str(uuid.uuid4()),
            sender_username=username,
            client_msg_id=client_msg_id or unique("c-"),
            text=text,
            reply_to_seq=reply_to_seq,
            created_at=now_ts(),
        )
        messages.append(message)
        if room_id not in self.unpublished:
            for queue in list(self.subscribers[room_id]):
                queue.put_nowait(message)
        return message

    def append_batch(self, room_id: str, texts: list[str]) -> None:
        """Commit several messages together, published as ONE batch event (a group commit)."""
        if room_id in self.unpublished:
            for text in texts:
                self.append(room_id, text)
            return
        self.unpublished.add(room_id)
        try:
            batch = [self.append(room_id, text) for text in texts]
        finally:
            self.unpublished.discard(room_id)
        for queue in list(self.subscribers[room_id]):
            queue.put_nowait(messaging_pb2.MessageBatch(messages=batch))

    def break_streams(self, room_id: str) -> None:
        """Every live Subscribe of the room fails with UNAVAILABLE, as on a messaging restart."""
        for queue in list(self.subscribers[room_id]):
            queue.put_nowait(_BREAK)

    @staticmethod
    def _room_principal(room_id: str) -> Any:
        return require_principal().require_room(room_id)

    async def SendMessage(self, request: Any, context: Any) -> Any:
        principal = self._room_principal(request.room_id)
        return self._store(request, principal.participant_id)

    async def SendMessages(self, request: Any, context: Any) -> Any:
        require_service("edge")
        self.batches.append(list(request.sends))
        if self.batch_gate is not None:
            await self.batch_gate.wait()
        results = []
        for batched in request.sends:
            try:
                sent = self._store(batched.send, batched.participant_id)
            except errors.ServiceError as exc:
                error = messaging_pb2.SendError(
                    status=exc.status.value[0],
                    code=exc.code,
                    message=exc.message,
                    retryable=exc.status == grpc.StatusCode.RESOURCE_EXHAUSTED,
                    retry_after_ms=(exc.retry_after or 0) * 1000,
                )
                results.append(messaging_pb2.SendResult(error=error))
            else:
                results.append(messaging_pb2.SendResult(sent=sent))
        return messaging_pb2.SendMessagesResponse(results=results)

    async def SendStream(self, request_iterator: Any, context: Any) -> Any:
        require_service("edge")
        if not self.send_streams:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not implemented!")

        async def answer(request: messaging_pb2.SendStreamRequest) -> list[messaging_pb2.SendResult]:
            self.streamed += 1
            batch = messaging_pb2.SendMessagesRequest(sends=request.sends)
            return list((await self.SendMessages(batch, context)).results)

        def refusal(exc: Exception) -> messaging_pb2.SendError:
            return messaging_pb2.SendError(status=grpc.StatusCode.INTERNAL.value[0], code="internal")

        async for response in self._streams.serve(request_iterator, answer, refusal):
            yield response

    def _store(self, request: Any, participant_id: str) -> Any:
        key = (request.room_id, participant_id, request.client_msg_id)
        existing = self.by_client_id.get(key)
        if existing is not None:
            return messaging_pb2.SendMessageResponse(message=existing, created=False)
        text = request.text.strip()
        if not text:
            raise errors.InvalidArgument("text must not be empty", code="invalid_text")
        if text == "slow down":
            raise errors.ResourceExhausted("too many messages", code="rate_limited", retry_after=7)
        message = self.append(
            request.room_id,
            text,
            participant_id,
            "sender",
            client_msg_id=request.client_msg_id,
            reply_to_seq=request.reply_to_seq,
        )
        self.by_client_id[key] = message
        return messaging_pb2.SendMessageResponse(message=message, created=True)

    async def ListMessages(self, request: Any, context: Any) -> Any:
        self._room_principal(request.room_id)
        messages = self.log[request.room_id]
        before = request.before_seq or len(messages) + 1
        older = [m for m in messages if m.seq < before]
        limit = request.limit or 50
        page = list(reversed(older))[:limit]
        return messaging_pb2.ListMessagesResponse(
            messages=page, has_more=len(older) > limit, last_seq=len(messages)
        )

    async def ListMessagesAfter(self, request: Any, context: Any) -> Any:
        self._room_principal(request.room_id)
        messages = self.log[request.room_id]
        after = [m for m in messages if m.seq > request.after_seq]
        if len(after) > (request.limit or 100):
            return messaging_pb2.ListMessagesAfterResponse(reload=True, last_seq=len(messages))
        return messaging_pb2.ListMessagesAfterResponse(messages=after, last_seq=len(messages))

    async def Subscribe(self, request: Any, context: Any) -> AsyncIterator[Any]:
        self._room_principal(request.room_id)
        room_id = request.room_id
        self.subscribe_calls[room_id].append(request.after_seq)
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self.subscribers[room_id].add(queue)
        try:
            last = request.after_seq
            if request.after_seq >= 0:
                backlog = [m for m in self.log[room_id] if m.seq > request.after_seq]
                if len(backlog) > self.backfill_limit:
                    last = len(self.log[room_id])
                    yield messaging_pb2.SubscribeResponse(reload=messaging_pb2.Reload(last_seq=last))
                else:
                    for message in backlog:
                        yield messaging_pb2.SubscribeResponse(message=message)
                        last = message.seq
            while True:
                item = await queue.get()
                if item is _BREAK:
                    raise errors.Unavailable("messaging is restarting", code="unavailable")
                if isinstance(item, messaging_pb2.Signal):
                    yield messaging_pb2.SubscribeResponse(signal=item)
                    continue
                if isinstance(item, messaging_pb2.MessageBatch):
                    fresh = [m for m in item.messages if m.seq > last]
                    if fresh:
                        last = fresh[-1].seq
                        yield messaging_pb2.SubscribeResponse(
                            batch=messaging_pb2.MessageBatch(messages=fresh)
                        )
                    continue
                if item.seq > last:
                    last = item.seq
                    yield messaging_pb2.SubscribeResponse(message=item)
        finally:
            self.subscribers[room_id].discard(queue)

    async def SendTyping(self, request: Any, context: Any) -> Any:
        principal = self._room_principal(request.room_id)
        self.typing_calls.append((request.room_id, principal.participant_id))
        username = self.rooms.username(request.room_id, principal.participant_id)
        self.signal(
            messaging_pb2.Signal(
                room_id=request.room_id,
                typing=messaging_pb2.Typing(participant_id=principal.participant_id, username=username),
            )
        )
        return messaging_pb2.SendTypingResponse()

    async def ListMutes(self, request: Any, context: Any) -> Any:
        # Every socket asks for its participant's mutes before it goes live; nobody mutes here.
        self._room_principal(request.room_id)
        return messaging_pb2.ListMutesResponse()

    async def ReportPresence(self, request: Any, context: Any) -> Any:
        for report in request.rooms:
            before = self.online(report.room_id)
            held = self.presence[report.room_id].setdefault(request.instance_id, set())
            if report.complete:
                held.clear()
            held.update(report.joined)
            held.difference_update(report.left)
            if not held:
                del self.presence[report.room_id][request.instance_id]
            after = self.online(report.room_id)
            if after != before:
                self.presence_versions[report.room_id] += 1
            if after != before and self.presence_signals:
                self.signal(
                    messaging_pb2.Signal(
                        room_id=report.room_id,
                        presence=messaging_pb2.PresenceChange(
                            online=sorted(after - before),
                            offline=sorted(before - after),
                            version=self.presence_versions[report.room_id],
                        ),
                    )
                )
        return messaging_pb2.ReportPresenceResponse()

    async def GetPresence(self, request: Any, context: Any) -> Any:
        self._room_principal(request.room_id)
        return messaging_pb2.GetPresenceResponse(
            online=sorted(self.online(request.room_id)), version=self.presence_versions[request.room_id]
        )

    async def AnnounceRoomUpdate(self, request: Any, context: Any) -> Any:
        principal = require_principal()
        room = self.rooms._state(room_id=request.room_id).room
        if principal.subject != room.host_id:
            raise errors.PermissionDenied("only the host", code="not_host")
        if self.announce_fails:
            raise errors.Unavailable("signals are down", code="signals_unavailable")
        self.signal(messaging_pb2.Signal(room_id=room.id, room_updated=messaging_pb2.RoomUpdated(room=room)))
        return messaging_pb2.AnnounceRoomUpdateResponse(room=room)


class FakePayments(payments_pb2_grpc.PaymentsServiceServicer):
    async def GetConfig(self, request: Any, context: Any) -> Any:
        return payments_pb2.GetConfigResponse(mode=payments_pb2.MODE_TEST, currency="usd")


# --- processes ------------------------------------------------------------------------------------


@dataclass
class FakeServices:
    signer: Signer
    identity: FakeIdentity
    rooms: FakeRooms
    messaging: FakeMessaging
    port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


async def _wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.02)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return


@contextlib.asynccontextmanager
async def fake_services() -> AsyncIterator[FakeServices]:
    signer = Signer()
    rooms = FakeRooms(signer)
    fakes = FakeServices(signer, FakeIdentity(signer), rooms, FakeMessaging(rooms), free_port())

    async def fetch_keys() -> Mapping[str, Ed25519PublicKey]:
        return {signer.kid: signer.public()}

    async def build() -> GrpcApp:
        return GrpcApp(
            registrations=[
                Registration(
                    "chatpop.identity.v1.IdentityService",
                    identity_pb2_grpc.add_IdentityServiceServicer_to_server,
                    fakes.identity,
                ),
                Registration(
                    "chatpop.rooms.v1.RoomsService",
                    rooms_pb2_grpc.add_RoomsServiceServicer_to_server,
                    fakes.rooms,
                ),
                Registration(
                    "chatpop.messaging.v1.MessagingService",
                    messaging_pb2_grpc.add_MessagingServiceServicer_to_server,
                    fakes.messaging,
                ),
                Registration(
                    "chatpop.payments.v1.PaymentsService",
                    payments_pb2_grpc.add_PaymentsServiceServicer_to_server,
                    FakePayments(),
                ),
            ],
            verifier=TokenVerifier(KeyCache(fetch_keys)),
        )

    settings = ServiceSettings.model_validate({"grpc_port": fakes.port, "metrics_port": 0})
    stop = asyncio.Event()
    task = asyncio.create_task(serve("fakes", settings, build, drain_delay=0, stop_event=stop))
    await _wait_for_port(fakes.port)
    try:
        yield fakes
    finally:
        stop.set()
        await task


def edge_settings(fakes: FakeServices, **overrides: Any) -> EdgeSettings:
    values: dict[str, Any] = {
        "identity_addr": fakes.address,
        "rooms_addr": fakes.address,
        "messaging_addr": fakes.address,
        "payments_addr": fakes.address,
        "ip_hash_key": IP_HASH_KEY,
        "media_url_key": "m" * 32,
        "service_token_secret": "s" * 32,
        "public_url": PUBLIC_URL,
        "http_port": free_port(),
        "rpc_timeout": 5.0,
        **overrides,
    }
    return EdgeSettings(**values)


@contextlib.asynccontextmanager
async def running_edge(settings: EdgeSettings) -> AsyncIterator[str]:
    """The edge under a real uvicorn with its production protocols and limits, on
    settings.http_port; yields its base URL."""
    config = EdgeServerConfig(
        create_app(settings),
        settings,
        host="127.0.0.1",
        port=settings.http_port,
        proxy_headers=False,
        lifespan="on",
        log_level="warning",
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("the edge did not start")
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{settings.http_port}"
    finally:
        server.should_exit = True
        await task


# --- OpenAPI ----------------------------------------------------------------------------------------


def assert_matches_openapi(document: dict[str, Any], method: str, path: str, status: int, body: Any) -> None:
    """The response is documented for this operation and its JSON validates against the schema."""
    responses = document["paths"][path][method.lower()]["responses"]
    assert str(status) in responses, f"{method} {path} does not document status {status}"
    content = responses[str(status)].get("content")
    if content is None:
        assert body in (None, b"", ""), f"{method} {path} {status} documents no body"
        return
    schema = dict(content["application/json"]["schema"])
    schema["components"] = document["components"]
    jsonschema.Draft202012Validator(schema).validate(body)


def json_or_none(raw: bytes) -> Any:
    return json.loads(raw) if raw else None
