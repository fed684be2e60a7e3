"""The edge application factory: REST v1, the room WebSocket, health, docs, middleware."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

from chatpop_common.telemetry import tracing_enabled
from chatpop_edge.backends import Backends
from chatpop_edge.client_ip import ClientAddressResolver
from chatpop_edge.errors import install_error_handlers
from chatpop_edge.middleware import (
    BodyLimitMiddleware,
    HttpMetricsMiddleware,
    SecurityHeadersMiddleware,
    UnexpectedErrorMiddleware,
)
from chatpop_edge.realtime.hub import RoomHub
from chatpop_edge.routes import auth, me, meta, realtime, rooms
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
reply_to_seq?}`, `resume {after_seq}`, `typing`, `ping`. Server → client: `ready {room_id,
participant_id, last_seq}`, `message {seq, id, room_id, sender, text, reply_to_seq, client_msg_id,
created_at}`, `ack {client_msg_id, seq, id}`, `error {code, message, retryable, client_msg_id?}`,
`reload {last_seq}`, `typing {participant_id}`, `pong`. Close codes: 4401 invalid or expired token,
4403 token for another room, 4404 unknown room, 1013 too slow or service unavailable (reconnect and
resume).
"""


def create_app(settings: EdgeSettings) -> FastAPI:
    resolver = ClientAddressResolver(settings.trusted_proxies)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # gRPC aio channels belong to the running loop, so they are made here, not at import.
        backends = Backends(settings)
        hub = RoomHub(backends)
        app.state.backends = backends
        app.state.hub = hub
        try:
            yield
        finally:
            await hub.close()
            await backends.close()

    app = FastAPI(
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
    app.include_router(me.router)
    app.include_router(meta.router)
    app.include_router(realtime.router)
    install_web_client(app, settings.web_root)

    # add_middleware wraps: the last one added runs first.
    app.add_middleware(UnexpectedErrorMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(HttpMetricsMiddleware)
    app.add_middleware(SecurityHeadersMiddleware, resolver=resolver)
    # WebSockets are left out: the ASGI instrumentation opens a span per frame sent, which would
    # put per-recipient work back on the fan-out path. Their gRPC calls are still traced.
    if tracing_enabled():
        FastAPIInstrumentor.instrument_app(app, excluded_urls="healthz,readyz,ws/v1/")
    return app
