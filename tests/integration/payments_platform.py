"""The real platform in-process for payments' integration tests: identity, rooms, messaging and
payments gRPC servers and the edge under uvicorn, each on a free port, against the session's
Postgres and Redis. payments runs in test mode unless Stripe settings are given (a fake Stripe API in
tests). Tests drive it through the edge's REST API (every answer checked against the OpenAPI
document) and read payments' tables to see the ledger, events and outbox behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import httpx
from test_edge_support import IP_HASH_KEY, assert_matches_openapi, json_or_none, running_edge
from test_rooms_service import identity_server, rooms_serving

from chatpop.identity.v1 import identity_pb2, identity_pb2_grpc
from chatpop.messaging.v1 import messaging_pb2_grpc
from chatpop.payments.v1 import payments_pb2_grpc
from chatpop.rooms.v1 import rooms_pb2_grpc
from chatpop_common.devstack import free_port
from chatpop_common.server import serve
from chatpop_edge.settings import EdgeSettings
from chatpop_messaging.app import build as build_messaging
from chatpop_messaging.settings import MessagingSettings
from chatpop_payments.app import build as build_payments
from chatpop_payments.settings import Settings as PaymentsSettings
from tests.admin_cli import cli_env, grant_admin
from tests.integration.encryption_keys import MASTER_KEYS
from tests.integration.identity_server import SERVICE_TOKEN_SECRET
from tests.integration.inprocess import wait_serving

PUBLIC_URL = "https://chat.example.test"
PASSWORD = "correct horse battery"
SETTLE_TIMEOUT = 20.0
# Consonants only: random names can then never spell a word the profanity filter refuses.
_LETTERS = "bdghjmnpqrvwxz"


def name() -> str:
    return "u_" + "".join(_LETTERS[b % len(_LETTERS)] for b in os.urandom(10))


def key() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class Member:
    """Someone in a room: their room token, participant and identity."""

    code: str
    room_id: str
    participant_id: str
    identity_id: str
    token: str


@dataclass
class Platform:
    http: httpx.AsyncClient
    openapi: dict[str, Any]
    database_url: str
    base_url: str
    identity: identity_pb2_grpc.IdentityServiceStub
    messaging: messaging_pb2_grpc.MessagingServiceStub
    rooms: rooms_pb2_grpc.RoomsServiceStub
    payments: payments_pb2_grpc.PaymentsServiceStub
    payments_address: str
    identity_address: str
    payments_metrics: str
    pool: asyncpg.Pool
    _tokens: dict[str, str] = field(default_factory=dict)

    async def call(
        self,
        method: str,
        url: str,
        *,
        expect: int,
        token: str | None = None,
        template: str | None = None,
        **kw: Any,
    ) -> Any:
        """A request through the edge: its status must be `expect`, its body the documented one."""
        headers = dict(kw.pop("headers", {}))
        if token:
            headers["Authorization"] = f"Bearer {token}"
        response = await self.http.request(method, url, headers=headers, **kw)
        assert response.status_code == expect, f"{method} {url}: {response.status_code} {response.text}"
        body = json_or_none(response.content)
        assert_matches_openapi(
            self.openapi, method, template or url.split("?")[0], response.status_code, body
        )
        return body

    async def error(self, method: str, url: str, *, expect: int, template: str, **kw: Any) -> str:
        """The error code of a refused request."""
        body = await self.call(method, url, expect=expect, template=template, **kw)
        return str(body["error"]["code"])

    # --- people and rooms -------------------------------------------------------------------------

    async def account(self) -> str:
        """A new registered account's access token."""
        email = f"pay-{uuid.uuid4().hex[:12]}@example.com"
        body = await self.call(
            "POST", "/api/v1/auth/register", expect=201, json={"email": email, "password": PASSWORD}
        )
        self._tokens[str(body["access_token"])] = email
        return str(body["access_token"])

    async def anonymous(self) -> str:
        body = await self.call("POST", "/api/v1/auth/anonymous", expect=201)
        return str(body["access_token"])

    async def admin(self) -> str:
        """An admin's access token (an account made admin on the command line, signed in again)."""
        token = await self.account()
        email = self._tokens[token]
        await grant_admin(cli_env(self.identity_address, SERVICE_TOKEN_SECRET), email)
        body = await self.call(
            "POST", "/api/v1/auth/login", expect=200, json={"email": email, "password": PASSWORD}
        )
        return str(body["access_token"])

    async def room(self, host_token: str) -> dict[str, Any]:
        body: dict[str, Any] = await self.call(
            "POST", "/api/v1/rooms", expect=201, token=host_token, json={"name": "Money room"}
        )
        return body

    async def join(self, code: str, token: str) -> Member:
        body = await self.call(
            "POST",
            f"/api/v1/rooms/{code}/join",
            template="/api/v1/rooms/{code}/join",
            expect=200,
            token=token,
            json={"username": name()},
            headers={"X-Forwarded-For": f"10.{os.urandom(1)[0]}.{os.urandom(1)[0]}.{os.urandom(1)[0]}"},
        )
        participant = body["participant"]
        return Member(
            code=code,
            room_id=body["room"]["id"],
            participant_id=participant["id"],
            identity_id=await self._subject(token),
            token=str(body["room_token"]),
        )

    async def _subject(self, token: str) -> str:
        body = await self.call("GET", "/api/v1/auth/me", expect=200, token=token)
        return str(body["identity"]["id"])

    async def say(self, member: Member, text: str) -> int:
        body = await self.call(
            "POST",
            f"/api/v1/rooms/{member.code}/messages",
            template="/api/v1/rooms/{code}/messages",
            expect=201,
            token=member.token,
            json={"client_msg_id": key()[:20], "text": text},
        )
        return int(body["message"]["seq"])

    async def onboard_test_host(self, host_token: str) -> dict[str, Any]:
        started = await self.call(
            "POST", "/api/v1/payments/payout-account/onboarding", expect=200, token=host_token, json={}
        )
        assert started["onboarding_url"].startswith(f"{PUBLIC_URL}/payouts/test-onboarding?return_url=")
        done = await self.call(
            "POST", "/api/v1/payments/payout-account/test-complete", expect=200, token=host_token
        )
        assert done["account"]["can_receive"] is True
        return dict(done["account"])

    # --- orders -----------------------------------------------------------------------------------

    async def order(self, member: Member, item: Mapping[str, Any], *, expect: int = 201, **extra: Any) -> Any:
        return await self.call(
            "POST",
            f"/api/v1/rooms/{member.code}/orders",
            template="/api/v1/rooms/{code}/orders",
            expect=expect,
            token=member.token,
            json={"idempotency_key": extra.pop("idempotency_key", key()), **item},
        )

    async def get_order(self, order_id: str, token: str) -> dict[str, Any]:
        body = await self.call(
            "GET",
            f"/api/v1/payments/orders/{order_id}",
            template="/api/v1/payments/orders/{order_id}",
            expect=200,
            token=token,
        )
        return dict(body["order"])

    async def settle(
        self, order_id: str, token: str, *states: str, timeout: float = SETTLE_TIMEOUT
    ) -> dict[str, Any]:
        """Read the order until it stands in one of `states` (as a client follows it)."""
        deadline = time.monotonic() + timeout
        while True:
            order = await self.get_order(order_id, token)
            if order["state"] in states:
                return order
            assert time.monotonic() < deadline, f"order {order_id} stayed {order['state']}, not {states}"
            await asyncio.sleep(0.05)

    async def test_confirm(self, order_id: str, token: str, outcome: str = "succeed") -> dict[str, Any]:
        body = await self.call(
            "POST",
            f"/api/v1/payments/orders/{order_id}/test-confirm",
            template="/api/v1/payments/orders/{order_id}/test-confirm",
            expect=200,
            token=token,
            json={"outcome": outcome},
        )
        return dict(body["order"])

    async def sales(self, code: str, token: str | None = None) -> dict[str, Any]:
        body = await self.call(
            "GET",
            f"/api/v1/rooms/{code}/sales",
            template="/api/v1/rooms/{code}/sales",
            expect=200,
            token=token,
        )
        return dict(body)

    # --- what payments recorded -------------------------------------------------------------------

    async def ledger(self, order_id: str) -> list[tuple[str, int]]:
        rows = await self.pool.fetch(
            "SELECT kind, amount_cents FROM payments.ledger_entries WHERE order_id = $1 ORDER BY id",
            uuid.UUID(order_id),
        )
        return [(row["kind"], row["amount_cents"]) for row in rows]

    async def outbox(self, key_: str) -> asyncpg.Record | None:
        return await self.pool.fetchrow(
            "SELECT topic, attempts, delivered_at, dead_at, last_error FROM payments.outbox WHERE key = $1",
            key_,
        )

    async def delivered(self, key_: str, timeout: float = SETTLE_TIMEOUT) -> asyncpg.Record:
        """The outbox row `key_` once the relay marked it delivered. The relay does so after its
        handler returned, and the handler commits its own work (the order's new state) before that
        and may still call another service after it (a seat's announcement), so the row can still
        be pending a moment after the order reads fulfilled or refunded."""
        deadline = time.monotonic() + timeout
        while True:
            row = await self.outbox(key_)
            assert row is not None, f"the outbox holds no {key_}"
            if row["delivered_at"] is not None:
                return row
            assert row["dead_at"] is None, f"{key_} died: {row['last_error']}"
            assert time.monotonic() < deadline, f"{key_} was never delivered: {dict(row)}"
            await asyncio.sleep(0.05)

    async def events_of(self, order_id: str) -> list[tuple[str, str, str]]:
        """(type, source, outcome) of the events recorded about the order, oldest first."""
        rows = await self.pool.fetch(
            """
            SELECT type, source, outcome FROM payments.stripe_events
            WHERE payload->'data'->'object'->'metadata'->>'order_id' = $1
               OR payload->'data'->'object'->>'payment_intent' IN (
                    SELECT stripe_payment_intent_id FROM payments.orders WHERE id = $2)
               OR payload->'data'->'object'->>'id' IN (
                    SELECT stripe_payment_intent_id FROM payments.orders WHERE id = $2)
            ORDER BY received_at, id
            """,
            order_id,
            uuid.UUID(order_id),
        )
        return [(row["type"], row["source"], row["outcome"]) for row in rows]

    async def audit_events(self, admin_token: str, kind: str, target: str) -> list[identity_pb2.AuditEvent]:
        response = await self.identity.ListAuditEvents(
            identity_pb2.ListAuditEventsRequest(kind=kind, target=target),
            metadata=(("authorization", f"Bearer {admin_token}"),),
            timeout=10,
        )
        return list(response.events)


@contextlib.asynccontextmanager
async def _serving(name_: str, settings: Any, build: Any) -> AsyncIterator[str]:
    stop = asyncio.Event()
    task = asyncio.create_task(serve(name_, settings, build, drain_delay=0, stop_event=stop))
    address = f"127.0.0.1:{settings.grpc_port}"
    try:
        await wait_serving(address, task)
        yield address
    finally:
        stop.set()
        await task


@contextlib.asynccontextmanager
async def running_platform(
    database_url: str, redis_url: str, signing_key: Path, *, payments: Mapping[str, Any] | None = None
) -> AsyncIterator[Platform]:
    """The whole platform; `payments` adds or overrides payments' settings (Stripe's among them)."""
    async with (
        identity_server(database_url, redis_url, signing_key) as identity_addr,
        rooms_serving(database_url, redis_url, identity_addr) as rooms_addr,
    ):
        messaging_settings = MessagingSettings(
            grpc_port=free_port(),
            metrics_port=free_port(),
            database_url=database_url,
            redis_url=redis_url,
            rooms_addr=rooms_addr,
            identity_addr=identity_addr,
            shutdown_grace=1.0,
            hub_poll_interval=0.5,
            log_format="text",
            send_rate_limit=100_000,
            send_rate_burst=1000,
            service_token_secret=SERVICE_TOKEN_SECRET,  # type: ignore[arg-type]
            master_keys=MASTER_KEYS,  # type: ignore[arg-type]
        )
        async with _serving("messaging", messaging_settings, lambda: build_messaging(messaging_settings)) as (
            messaging_addr
        ):
            payments_settings = PaymentsSettings.model_validate(
                {
                    "grpc_port": free_port(),
                    "metrics_port": free_port(),
                    "database_url": database_url,
                    "identity_addr": identity_addr,
                    "rooms_addr": rooms_addr,
                    "messaging_addr": messaging_addr,
                    "service_token_secret": SERVICE_TOKEN_SECRET,
                    "shutdown_grace": 1.0,
                    "log_format": "text",
                    **(payments or {}),
                }
            )
            async with _serving("payments", payments_settings, lambda: build_payments(payments_settings)) as (
                payments_addr
            ):
                edge = EdgeSettings.model_validate(
                    {
                        "identity_addr": identity_addr,
                        "rooms_addr": rooms_addr,
                        "messaging_addr": messaging_addr,
                        "payments_addr": payments_addr,
                        "ip_hash_key": IP_HASH_KEY,
                        "media_url_key": "m" * 32,
                        "service_token_secret": SERVICE_TOKEN_SECRET,
                        "public_url": PUBLIC_URL,
                        "http_port": free_port(),
                        "metrics_port": 0,
                        "trusted_proxies": "127.0.0.1/32",
                        "rpc_timeout": 10.0,
                    }
                )
                async with (
                    running_edge(edge) as base_url,
                    httpx.AsyncClient(base_url=base_url, timeout=30) as http,
                    grpc.aio.insecure_channel(identity_addr) as identity_channel,
                    grpc.aio.insecure_channel(messaging_addr) as messaging_channel,
                    grpc.aio.insecure_channel(rooms_addr) as rooms_channel,
                    grpc.aio.insecure_channel(payments_addr) as payments_channel,
                ):
                    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
                    try:
                        openapi = (await http.get("/api/v1/openapi.json")).json()
                        yield Platform(
                            http=http,
                            openapi=openapi,
                            database_url=database_url,
                            base_url=base_url,
                            identity=identity_pb2_grpc.IdentityServiceStub(identity_channel),
                            messaging=messaging_pb2_grpc.MessagingServiceStub(messaging_channel),
                            rooms=rooms_pb2_grpc.RoomsServiceStub(rooms_channel),
                            payments=payments_pb2_grpc.PaymentsServiceStub(payments_channel),
                            payments_address=payments_addr,
                            identity_address=identity_addr,
                            payments_metrics=f"http://127.0.0.1:{payments_settings.metrics_port}/metrics",
                            pool=pool,
                        )
                    finally:
                        await pool.close()
