"""payments over gRPC: a real server on a free port, the session's migrated Postgres."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from chatpop.payments.v1 import payments_pb2, payments_pb2_grpc
from chatpop_common.devstack import free_port
from chatpop_common.server import serve
from chatpop_payments.app import NotMigrated, build
from chatpop_payments.settings import Settings
from tests.integration.identity_server import SERVICE_TOKEN_SECRET

SERVICE = "chatpop.payments.v1.PaymentsService"


class Running:
    def __init__(self, address: str, metrics_port: int) -> None:
        self.address = address
        self.metrics_port = metrics_port
        self.channel = grpc.aio.insecure_channel(address)
        self.payments = payments_pb2_grpc.PaymentsServiceStub(self.channel)


@asynccontextmanager
async def payments_server(database_url: str, **overrides: Any) -> AsyncIterator[Running]:
    settings = Settings(
        grpc_port=free_port(),
        metrics_port=free_port(),
        database_url=database_url,
        # Nothing listens here: GetConfig needs no identity, and keys are fetched lazily.
        identity_addr=f"127.0.0.1:{free_port()}",
        service_token_secret=SERVICE_TOKEN_SECRET,
        **overrides,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(
        serve("payments", settings, lambda: build(settings), drain_delay=0, stop_event=stop)
    )
    running = Running(f"127.0.0.1:{settings.grpc_port}", settings.metrics_port)
    try:
        health = health_pb2_grpc.HealthStub(running.channel)
        while True:
            if task.done():
                task.result()
                raise AssertionError("payments stopped before serving")
            try:
                await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                break
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.05)
        yield running
    finally:
        await running.channel.close()
        stop.set()
        await task


async def test_health_reports_serving(database_url: str) -> None:
    async with payments_server(database_url) as server:
        health = health_pb2_grpc.HealthStub(server.channel)
        overall = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        payments = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=5)
    assert overall.status == health_pb2.HealthCheckResponse.SERVING
    assert payments.status == health_pb2.HealthCheckResponse.SERVING


async def test_get_config_without_stripe_key_is_test_mode(database_url: str) -> None:
    async with payments_server(database_url) as server:
        config = await server.payments.GetConfig(payments_pb2.GetConfigRequest(), timeout=5)
    assert config.mode == payments_pb2.MODE_TEST
    assert config.currency == "usd"
    assert config.publishable_key == ""


async def test_get_config_with_stripe_keys_is_stripe_mode(database_url: str) -> None:
    async with payments_server(
        database_url,
        stripe_secret_key="sk_test_abc123",
        stripe_publishable_key="pk_test_abc123",
        stripe_webhook_secret="whsec_abc123",
        # Nothing listens here either: reconciliation's failed rounds are only logged.
        stripe_api_base=f"http://127.0.0.1:{free_port()}",
        currency="EUR",
        platform_fee_percent=12,
    ) as server:
        config = await server.payments.GetConfig(payments_pb2.GetConfigRequest(), timeout=5)
    assert config.mode == payments_pb2.MODE_STRIPE
    assert config.currency == "eur"
    assert config.publishable_key == "pk_test_abc123"
    assert config.platform_fee_percent == 12


async def test_reflection_lists_payments_and_health(database_url: str) -> None:
    async with payments_server(database_url) as server:
        stub = reflection_pb2_grpc.ServerReflectionStub(server.channel)

        async def one_request() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
            yield reflection_pb2.ServerReflectionRequest(list_services="")

        names: set[str] = set()
        async for response in stub.ServerReflectionInfo(one_request(), timeout=5):
            names.update(s.name for s in response.list_services_response.service)
    assert {SERVICE, "grpc.health.v1.Health"} <= names


async def test_metrics_count_handled_calls(database_url: str) -> None:
    async with payments_server(database_url) as server:
        await server.payments.GetConfig(payments_pb2.GetConfigRequest(), timeout=5)
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5)
    assert response.status_code == 200
    assert any(
        line.startswith("grpc_server_handled_total{")
        and f'grpc_service="{SERVICE}"' in line
        and 'grpc_method="GetConfig"' in line
        and 'grpc_code="OK"' in line
        for line in response.text.splitlines()
    )


def test_settings_refuse_a_secret_key_without_publishable_key(database_url: str) -> None:
    with pytest.raises(ValueError, match="STRIPE_PUBLISHABLE_KEY"):
        Settings(
            database_url=database_url,
            stripe_secret_key="sk_test_abc123",
            stripe_webhook_secret="whsec_abc123",
            service_token_secret=SERVICE_TOKEN_SECRET,
        )


def test_settings_refuse_a_bad_currency(database_url: str) -> None:
    with pytest.raises(ValueError, match="ISO 4217"):
        Settings(database_url=database_url, currency="dollars", service_token_secret=SERVICE_TOKEN_SECRET)


async def test_build_refuses_an_unmigrated_database(database_url: str) -> None:
    name = f"payments_unmigrated_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        empty_url = database_url.rsplit("/", 1)[0] + f"/{name}"
        with pytest.raises(NotMigrated, match=r"chatpop_common\.migrate payments"):
            await build(Settings(database_url=empty_url, service_token_secret=SERVICE_TOKEN_SECRET))
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await admin.close()


async def test_orders_keep_one_row_per_payment_intent_and_a_price(database_url: str) -> None:
    intent = f"pi_{uuid.uuid4().hex}"
    insert = (
        "INSERT INTO payments.orders (id, kind, state, room_id, buyer_participant_id, buyer_identity_id,"
        " host_identity_id, idempotency_key, amount_cents, fee_cents, currency, test_mode,"
        " stripe_payment_intent_id) VALUES ($1, 'tip', 'awaiting_payment', $2, $2, $3, $2, $4, $5, 0, 'usd',"
        " false, $6)"
    )
    conn = await asyncpg.connect(database_url)
    try:
        someone = uuid.uuid4()
        await conn.execute(insert, uuid.uuid4(), someone, uuid.uuid4(), "key-00001", 500, intent)
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(insert, uuid.uuid4(), someone, uuid.uuid4(), "key-00002", 500, intent)
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                insert, uuid.uuid4(), someone, uuid.uuid4(), "key-00003", 0, f"pi_{uuid.uuid4().hex}"
            )
        rows = await conn.fetchval(
            "SELECT count(*) FROM payments.orders WHERE stripe_payment_intent_id = $1", intent
        )
    finally:
        await conn.close()
    assert rows == 1
