"""The edge application factory: REST v1, the room WebSocket, health, docs, middleware."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, WebSocket
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from starlette.types import Receive, Scope, Send

from chatpop_common.service_auth import ServiceCredentials
from chatpop_common.telemetry import tracing_enabled
from chatpop_edge.backends import Backends
from chatpop_edge.client_ip import ClientAddressResolver
from chatpop_edge.errors import install_error_handlers
from chatpop_edge.media.runtime import MediaRuntime
from chatpop_edge.middleware import (
    BodyLimitMiddleware,
    HttpMetricsMiddleware,
    SecurityHeadersMiddleware,
    UnexpectedErrorMiddleware,
)
from chatpop_edge.realtime.batcher import SendBatcher
from chatpop_edge.realtime.hub import RoomHub
from chatpop_edge.realtime.presence import PresenceReporter
from chatpop_edge.routes import (
    admin,
    auth,
    back_room,
    bans,
    me,
    media,
    meta,
    moderation,
    mutes,
    payments,
    realtime,
    room_changes,
    rooms,
)
from chatpop_edge.settings import EdgeSettings
from chatpop_edge.web import install_web_client

DESCRIPTION = """\
ChatPop's public API. Errors are always `{"error": {"code": "...", "message": "..."}}`.

Access tokens (from `/auth/*`) authenticate sessions and accounts; joining a room returns a
**room token** for that room's messages and its WebSocket `GET /ws/v1/rooms/{code}?token=<room_token>`.
A reconnecting client adds `&after_seq=<last seq it holds>`: the missed messages then come first, in
`seq` order, before anything live (or `reload` when too many were missed). A `resume {after_seq}` frame
sent later on an open socket also gets exactly the missing messages, but live messages that arrived
before it may precede them: clients order messages by `seq`.

WebSocket frames are JSON objects with a `type`. Client → server: `send {client_msg_id, text,
reply_to_seq?, media_id?}`, `resume {after_seq}`, `typing`, `ping`. Server → client: `ready {room_id,
participant_id, last_seq}`, `message {seq, id, room_id, sender, text, reply_to_seq, client_msg_id,
created_at, deleted, deleted_by_host, reactions, my_reactions, state_seq, media}`, `ack {client_msg_id,
seq, id}`, `error {code, message, retryable, client_msg_id?}`, `reload {last_seq}`, `trimmed
{floor_seq}`, `pong` (the answer to every `ping`).

**Retention.** A room keeps its messages for its `retention_days` (0: forever); older entries are
deleted for good, from the oldest on. `floor_seq` (history pages) is the lowest seq kept. A resume
from below it is answered with `trimmed {floor_seq}` first, then the entries from `floor_seq` on: the
seqs between were deleted by the room's retention, not lost — count them as received, reload nothing.

**Room events.** Everything that changes what the room shows is an entry of the room's log with its
own `seq`, in the same gap-free sequence as the messages: live frames carry it, a resume after a seq
replays it, and a history page folds it into its messages' state (`low_seq` says which seqs a page
accounts for; `touched` brings the state of older messages that changes in that range changed).
Clients count every seq they receive, whatever its frame type, toward the position they resume from.
Changes carry the target's absolute state with `state_seq`; apply one only when its `state_seq` is
above the message's:
- `reaction {seq, target_seq, participant_id, username, emoji, added, reactions, state_seq}`: someone
  put an emoji on the message `target_seq` or took it off; `reactions` are its counts after that;
- `deleted {seq, target_seq, participant_id, by_host, state_seq}`: the message's text is gone (its
  author, or the host when `by_host`); show it as deleted, and replies to it as replying to a
  deleted message; a pinned message is unpinned by an `unpinned` frame right after;
- `pinned {seq, target_seq, message, pinned_seqs, pins_state_seq}` and `unpinned {seq, target_seq,
  pinned_seqs, pins_state_seq}`: the host pinned or unpinned a message; `pinned_seqs` are the host
  pins now, newest first (replace the list; apply only when `pins_state_seq` is above the one held);
  `message` is the pinned message as it stood, for a client that never loaded it (later changes to it
  come as frames of their own). Host pins sit above everything;
- `sticky {seq, text, sticky_seq}`: the host set the room's sticky broadcast message (empty: cleared);
- `hidden {seq, target_seq, state_seq}`: reports hid the message pending review; show it as hidden
  (its text only to the host); `restored {seq, target_seq, text, state_seq}`: the host restored it;
- `paid_pin {seq, target_seq, paid_pin, paid_pins, paid_pins_state_seq}`: someone paid to pin the
  message `target_seq`, or its buyer extended their top pin; `paid_pin_removed` (same fields): a paid pin
  came down before its time (`paid_pin.removed_reason`: `host`, `banned` when its buyer was banned,
  `message_deleted`). A paid pin is `{id, target_seq, message, participant_id, username, amount_cents,
  currency, started_at, expires_at, removed_reason}`; `paid_pins` are the room's live paid pins after the
  entry, top first (replace the list; apply only when `paid_pins_state_seq` is above the one held).
  Paid pins sit below the host's. A pin ends at its `expires_at` with no frame: drop it then;
- `tip {seq, id, room_id, sender, kind: "tip", tip {order_id, amount_cents, currency, note},
  created_at}`: `sender` tipped the room's host; show it among the messages, in `seq` order.

The newest history page (no `before_seq`) carries `board`: the host pins (each message as it now is)
with `pins_state_seq`, the sticky text with `sticky_seq`, and the live paid pins with
`paid_pins_state_seq`, as of the page's `last_seq`. History pages list tips (`kind: "tip"`) among the
messages. History gives a hidden message's text to the host alone.

**Bans.** `banned {seq, participant_id, username}` is an entry of the log too: the host banned that
participant (`POST /api/v1/rooms/{code}/bans`). Their own sockets get the frame, then close with 4403
`banned`; from then on their room tokens are refused (REST 403 `banned`, a socket closes with 4403
`banned`) and joining again is refused with 403 `banned`.

**Deleted accounts.** `participant_forgotten {seq, participant_id, username, messages_erased}` is an
entry of the log too: that participant's account was deleted. Show every message of theirs (and every
copy of one, like a pinned message) under the neutral `username` from now on, without a verified
badge; when `messages_erased`, every one of their messages is deleted as well (as by a `deleted`
frame, with no frame per message). Their own sockets get `error {code: "account_deleted"}` and close
with 4403 `account_deleted`. History already reads that way afterwards.

**Erased rooms.** A host may close a room with "delete everything" (`POST
/api/v1/rooms/{code}/close` with `{"erase": true}`): the room is closed and `erased`, its history,
media and cache are deleted for good (its encryption keys are destroyed first), and history pages
of it are empty. It cannot be undone.

**Back Room.** A room's paid Back Room is a room of its own, for its host and seat holders only.
`POST /api/v1/rooms/{code}/back-room/enter` with a main-room token gives a Back Room token; the
ordinary room routes and this WebSocket then take the Back Room's code with that token. When the
host removes a seat (or bans the holder in the main room) the holder's Back Room sockets get `error
{code: "seat_removed"}` and close with 4403 `seat_removed`, and their Back Room tokens answer 403
`seat_removed`; do not reconnect. The main room's `room_updated` carries `back_room` with the seats
left.

**Personal mutes.** `PUT /api/v1/rooms/{code}/mutes/{participant_id}` hides that participant's messages
from the caller alone, on every device of the caller's identity (`DELETE` brings them back, `GET
/api/v1/rooms/{code}/mutes` lists them); nobody else learns of it. History leaves their messages out
(its pages still account for their seqs through `low_seq`), but live frames and resumes carry every
entry of the log: right after `ready` a socket gets `mutes {participant_ids}`, the whole list, and
again whenever its participant's list changes, from any device through any edge process (like any
ephemeral frame it may be lost with a connection; the next socket starts with the list). Clients hide
`message` frames whose `sender.participant_id` is in the list, keep counting their seqs toward the
resume position, replace the list with every `mutes` frame, and read history again when someone left
the list, to show what pages left out. The muted participants' `typing` never reaches the socket. The
host's pins stay on the board whoever sent them.

**Media.** A photo, voice message or video is uploaded first (`POST /api/v1/rooms/{code}/media?kind=`,
the file as the body), then sent as a message's `media_id` (REST or the `send` frame; `text` may then
be empty). Only media the platform stored for that room from that sender can be attached: a `send`
frame or message body with `media_url` or `media` is refused with `media_reference_invalid`. Messages
(frames and history) carry `media {id, kind, state, content_type, width, height, duration_ms,
variants}` or null, never URLs: `POST /api/v1/rooms/{code}/media/urls` gives each participant URLs
signed for them (`/media/{room_id}/{media_id}/{variant}?p=&e=&s=`), valid for a few minutes with the
`cp_media` cookie that answer sets, and only while the participant stands in the room. Deleting the
message deletes its media.

Ephemeral frames are never replayed on resume and may be lost with a connection:
- `typing {participant_id, username}`: someone else in the room is typing (at most one every few
  seconds per socket; show it for a few seconds); never someone the socket's participant muted;
- `presence {online: [participant ids], offline: [participant ids], version}`: who came online (a
  first open socket on any edge) and who went offline (the last one closed, or its edge stopped
  reporting). `GET /api/v1/rooms/{code}/participants` is the snapshot, with `presence_version`: apply
  a frame whose version is above the one held; when it is more than one above (a frame was missed),
  or after reconnecting, read the snapshot again;
- `room_updated {room}`: the host changed the room's settings or closed it; `room` has the fields of
  `GET /api/v1/rooms/{code}`. Read the room again after reconnecting, in case one was missed.

**Takedowns.** When ChatPop's moderators take a room down, every socket of it, on every edge, gets
`room_updated` with the room `closed` and `taken_down`, then closes with 4410 `room_taken_down`. From
then on the room is gone for everyone but admins: `GET /api/v1/rooms/{code}`, joining, history and
every room token of it answer 404 `room_taken_down`, and a socket opened on it closes with 4410.

Client frames take the types and bounds of the REST bodies: `client_msg_id` 1-64 characters, `text`
1-20000 (0 with `media_id`), `reply_to_seq` (from 1) and `after_seq` (from 0; also in the URL) whole
numbers up to 9007199254740991 (2^53-1; `1.0`, `"1"` and `true` are not whole numbers). A frame that
breaks them is answered with `error` (code `invalid_json`, `unknown_type`, `invalid_frame` or
`media_reference_invalid`, naming the field and, for a send, its `client_msg_id`) and the socket goes
on; an `after_seq` in the URL that breaks them closes the socket with 4400.

When the platform is saturated, a send is refused at once rather than queued to time out: `error`
with code `overloaded`, `retryable: true`, `retry_after` (seconds) and `retry_after_ms` (the same wait
in milliseconds); send it again, with the same `client_msg_id`, after that wait (REST: 429 with
Retry-After). Nothing refused this way was stored.

Clients send `ping` every few seconds when they sent nothing else, and count a connection silent for
about ten seconds as lost. Close codes: 4401 invalid, expired or revoked token, 4403 token for another
room (`wrong_room`), banned from the room (`banned`) or a Back Room seat removed (`seat_removed`),
4404 unknown room, 4410 room taken down by ChatPop's moderators (`room_taken_down`; do not reconnect),
4408 nothing received from the client for `WS_IDLE_TIMEOUT` seconds (reconnect),
1013 too slow or service unavailable (reconnect and resume).
"""


class EdgeApp(FastAPI):
    """The edge's FastAPI application, with one shortcut: a room WebSocket goes straight to its handler.

    Every middleware of the edge is for HTTP only, and the route needs no dependencies; going through
    the router would keep each socket's frames of about a dozen ASGI layers (exception handlers, exit
    stacks, dependency solving) alive for as long as the socket is open — some 10 KiB per socket."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and (code := realtime.room_code_of(scope)) is not None:
            scope["app"] = self
            await realtime.room_socket(WebSocket(scope, receive, send), code)
            return
        await super().__call__(scope, receive, send)


def create_app(settings: EdgeSettings) -> FastAPI:
    resolver = ClientAddressResolver(settings.trusted_proxies)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # gRPC aio channels belong to the running loop, so they are made here, not at import.
        backends = Backends(settings)
        presence = PresenceReporter(
            backends.messaging,
            ttl=settings.presence_ttl,
            refresh=settings.presence_refresh,
            timeout=settings.rpc_timeout,
        )
        hub = RoomHub(backends, public_url=settings.public_url, presence=presence)
        # The edge's own credential: serving media asks messaging for records as the service `edge`.
        credentials = ServiceCredentials(
            backends.identity, "edge", settings.service_token_secret.get_secret_value()
        )
        media_runtime = await MediaRuntime.open(settings, credentials)
        # Every send of this process leaves in one batch per tick (on its SendStreams), as the service `edge`.
        batcher = SendBatcher(
            backends.messaging,
            credentials.metadata,
            delay=settings.send_batch_delay,
            max_batch=settings.send_batch_max,
            max_calls=settings.send_batch_calls,
            queue_limit=settings.send_queue_limit,
            timeout=settings.rpc_timeout,
            retry_after_ms=settings.send_retry_after_ms,
            streams=settings.send_streams,
            stream_max_age=settings.send_stream_max_age,
        )
        backends.sends = batcher
        app.state.backends = backends
        app.state.hub = hub
        app.state.presence = presence
        app.state.media = media_runtime
        presence.start()
        try:
            yield
        finally:
            await hub.close()
            await batcher.close()
            # Sockets are gone: nobody is online through this process any more.
            await presence.close()
            await media_runtime.close()
            await backends.close()

    app = EdgeApp(
        title="ChatPop API",
        version="1.0.0",
        description=DESCRIPTION,
        openapi_url=meta.OPENAPI_URL,
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.resolver = resolver
    install_error_handlers(app)
    app.include_router(auth.router)
    app.include_router(rooms.router)
    app.include_router(room_changes.router)
    app.include_router(bans.router)
    app.include_router(back_room.router)
    app.include_router(moderation.router)
    app.include_router(mutes.router)
    app.include_router(payments.router)
    app.include_router(me.router)
    app.include_router(admin.router)
    app.include_router(media.router)
    app.include_router(meta.router)
    app.include_router(realtime.router)
    install_web_client(app, settings.web_root, stripe=bool(settings.stripe_publishable_key))

    # add_middleware wraps: the last one added runs first.
    app.add_middleware(UnexpectedErrorMiddleware)
    # Media uploads stream their body to disk under their own, per-kind limit (routes/media.py).
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes, exempt=media.is_upload)
    app.add_middleware(HttpMetricsMiddleware)
    app.add_middleware(SecurityHeadersMiddleware, resolver=resolver)
    # WebSockets are left out: the ASGI instrumentation opens a span per frame sent, which would
    # put per-recipient work back on the fan-out path. Their gRPC calls are still traced.
    if tracing_enabled():
        # Served media is left out too: its URLs carry their signature, and a span per chunk is waste.
        FastAPIInstrumentor.instrument_app(app, excluded_urls="healthz,readyz,ws/v1/,//[^/]+/media/")
    return app
