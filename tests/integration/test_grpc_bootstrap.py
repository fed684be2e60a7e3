"""The shared grpc.aio bootstrap: health, reflection, interceptors on unary and streaming calls, shutdown."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import REGISTRY

from chatpop_common.auth import KeyCache, TokenVerifier, require_principal
from chatpop_common.clients import insecure_channel
from chatpop_common.devstack import free_port
from chatpop_common.errors import ERROR_CODE_KEY, RETRY_AFTER_KEY, ResourceExhausted, error_details
from chatpop_common.server import GrpcApp, Registration, serve
from chatpop_common.settings import ServiceSettings

SERVICE = "chatpop.test.v1.ProbeService"
KEY = Ed25519PrivateKey.generate()
KID = "probe-key"


def _token(**overrides: Any) -> str:
    now = int(time.time())
    claims = {
        "iss": "chatpop",
        "aud": "chatpop",
        "sub": str(uuid.uuid4()),
        "typ": "access",
        "knd": "anonymous",
        "iat": now,
        "nbf": now,
        "exp": now + 60,
    }
    claims.update(overrides)
    return jwt.encode(claims, KEY, algorithm="EdDSA", headers={"kid": KID})


async def _keys() -> Mapping[str, Ed25519PublicKey]:
    return {KID: KEY.public_key()}


async def _whoami(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return require_principal().subject.encode()


async def _limited(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    raise ResourceExhausted("slow down", code="rate_limited", retry_after=7)


async def _count(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    for i in range(int(request.decode())):
        yield str(i).encode()
    raise RuntimeError("secret internals")


def _add(_servicer: object, server: grpc.aio.Server) -> None:
    identity = None  # raw bytes in and out
    handlers = {
        "WhoAmI": grpc.unary_unary_rpc_method_handler(_whoami, identity, identity),
        "Limited": grpc.unary_unary_rpc_method_handler(_limited, identity, identity),
        "Count": grpc.unary_stream_rpc_method_handler(_count, identity, identity),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))


@pytest.fixture
async def probe() -> AsyncIterator[tuple[grpc.aio.Channel, asyncio.Event, asyncio.Task[None]]]:
    settings = ServiceSettings(grpc_port=free_port(), metrics_port=free_port(), shutdown_grace=1)
    closed = asyncio.Event()

    async def close() -> None:
        closed.set()

    async def build() -> GrpcApp:
        return GrpcApp(
            registrations=[Registration(SERVICE, _add, None)],
            verifier=TokenVerifier(KeyCache(_keys)),
            cleanups=[close],
        )

    stop = asyncio.Event()
    task = asyncio.create_task(serve("probe", settings, build, drain_delay=0, stop_event=stop))
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{settings.grpc_port}")
    await asyncio.wait_for(channel.channel_ready(), 10)
    yield channel, stop, task
    stop.set()
    await task
    await channel.close()
    assert closed.is_set()


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_health_and_reflection(probe: tuple[grpc.aio.Channel, asyncio.Event, Any]) -> None:
    channel, _, _ = probe
    health = health_pb2_grpc.HealthStub(channel)
    response = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE))
    assert response.status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)

    async def requests() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    names = set()
    async for reply in stub.ServerReflectionInfo(requests()):
        names = {s.name for s in reply.list_services_response.service}
    assert {SERVICE, "grpc.health.v1.Health"} <= names


async def test_principal_from_metadata(probe: tuple[grpc.aio.Channel, asyncio.Event, Any]) -> None:
    channel, _, _ = probe
    whoami = channel.unary_unary(f"/{SERVICE}/WhoAmI")
    subject = str(uuid.uuid4())
    assert (
        await whoami(b"", metadata=(("authorization", f"Bearer {_token(sub=subject)}"),)) == subject.encode()
    )

    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await whoami(b"")
    assert missing.value.code() == grpc.StatusCode.UNAUTHENTICATED

    forged = jwt.encode({"sub": "x"}, Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": KID})
    for bad in (forged, _token(exp=int(time.time()) - 60), _token(aud="elsewhere"), "not-a-token"):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await whoami(b"", metadata=(("authorization", f"Bearer {bad}"),))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_errors_and_metrics_cover_unary_and_streams(
    probe: tuple[grpc.aio.Channel, asyncio.Event, Any],
) -> None:
    channel, _, _ = probe
    labels = {"grpc_service": SERVICE, "grpc_method": "Limited", "grpc_type": "unary"}
    before = _metric("grpc_server_handled_total", **labels, grpc_code="RESOURCE_EXHAUSTED")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await channel.unary_unary(f"/{SERVICE}/Limited")(b"")
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_details(err.value) == ("rate_limited", 7)
    keys = {k for k, _ in err.value.trailing_metadata()}
    assert {ERROR_CODE_KEY, RETRY_AFTER_KEY} <= keys
    assert _metric("grpc_server_handled_total", **labels, grpc_code="RESOURCE_EXHAUSTED") == before + 1

    stream_labels = {"grpc_service": SERVICE, "grpc_method": "Count", "grpc_type": "server_stream"}
    sent_before = _metric("grpc_server_msg_sent_total", **stream_labels)
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for item in channel.unary_stream(f"/{SERVICE}/Count")(b"3"):
            received.append(item)
    assert received == [b"0", b"1", b"2"]
    assert err.value.code() == grpc.StatusCode.INTERNAL
    assert "secret" not in (err.value.details() or "")
    assert _metric("grpc_server_msg_sent_total", **stream_labels) == sent_before + 3
    assert _metric("grpc_server_handled_total", **stream_labels, grpc_code="INTERNAL") >= 1
    assert _metric("grpc_server_handling_seconds_count", **stream_labels) >= 1


async def test_shutdown_flips_health_then_stops(probe: tuple[grpc.aio.Channel, asyncio.Event, Any]) -> None:
    channel, stop, task = probe
    health = health_pb2_grpc.HealthStub(channel)
    updates = health.Watch(health_pb2.HealthCheckRequest(service=SERVICE))
    first = await updates.read()
    assert first.status == health_pb2.HealthCheckResponse.SERVING
    stop.set()
    second = await updates.read()
    assert second.status == health_pb2.HealthCheckResponse.NOT_SERVING
    await asyncio.wait_for(task, 10)


async def test_service_channels_wait_for_a_starting_peer_but_health_checks_fail_fast() -> None:
    """A call made while its peer (re)starts waits within its deadline; a health probe answers at once."""
    port = free_port()
    settings = ServiceSettings(grpc_port=port, metrics_port=0, shutdown_grace=1)

    async def build() -> GrpcApp:
        return GrpcApp(
            registrations=[Registration(SERVICE, _add, None)], verifier=TokenVerifier(KeyCache(_keys))
        )

    channel = insecure_channel(f"127.0.0.1:{port}")
    stop = asyncio.Event()
    server: asyncio.Task[None] | None = None
    try:
        with pytest.raises(grpc.aio.AioRpcError) as probe_down:
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert probe_down.value.code() == grpc.StatusCode.UNAVAILABLE

        whoami = channel.unary_unary(f"/{SERVICE}/WhoAmI")
        subject = str(uuid.uuid4())
        call = asyncio.ensure_future(
            whoami(b"", metadata=(("authorization", f"Bearer {_token(sub=subject)}"),), timeout=15)
        )
        await asyncio.sleep(0.5)
        assert not call.done(), "the call failed instead of waiting for its peer"
        server = asyncio.create_task(serve("probe", settings, build, drain_delay=0, stop_event=stop))
        assert await call == subject.encode()

        # A deadline still bounds the wait.
        stop.set()
        await server
        with pytest.raises(grpc.aio.AioRpcError) as late:
            await whoami(b"", metadata=(("authorization", f"Bearer {_token()}"),), timeout=0.5)
        assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        stop.set()
        if server is not None:
            await server
        await channel.close()
