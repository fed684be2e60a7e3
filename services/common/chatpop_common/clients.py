"""gRPC client channels: round-robin over every resolved address, tracing, and principal forwarding."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from jwt.algorithms import OKPAlgorithm
from opentelemetry.instrumentation.grpc import aio_client_interceptors

from chatpop.identity.v1 import identity_pb2, identity_pb2_grpc
from chatpop_common.auth import KeyCache, KeyFetcher
from chatpop_common.telemetry import tracing_enabled

_RETRY_POLICY = {
    "maxAttempts": 3,
    "initialBackoff": "0.05s",
    "maxBackoff": "0.5s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}
# Calls wait (within their deadline) for a restarting peer instead of failing at once; health checks
# stay fail-fast, since a probe must answer within its own short timeout. Set here rather than by a
# client interceptor, which would cost every call on the message path a Python round of its own.
_SERVICE_CONFIG = json.dumps(
    {
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [
            {"name": [{}], "waitForReady": True, "retryPolicy": _RETRY_POLICY},
            {
                "name": [{"service": "grpc.health.v1.Health"}],
                "waitForReady": False,
                "retryPolicy": _RETRY_POLICY,
            },
        ],
    }
)


MAX_RECEIVE_BYTES = 64 * 1024 * 1024
# After a peer goes away, gRPC tries to reconnect 1 s later, then 1.6 times longer each time up to
# 120 s: a peer restarted after a short outage would wait unused for up to two minutes. Trying at
# least every second (±20% jitter) keeps a restarted peer in use within about a second of it being
# ready; each attempt still gets a second to connect. A failed connect on a LAN costs next to nothing.
RECONNECT_INITIAL_MS = 200
RECONNECT_MAX_MS = 1_000
CONNECT_TIMEOUT_MS = 1_000


def insecure_channel(address: str) -> grpc.aio.Channel:
    """A channel to `host:port`; with a headless Service (dns:///name:port) it balances per call."""
    target = address if "://" in address or address.startswith("dns:") else f"dns:///{address}"
    return grpc.aio.insecure_channel(
        target,
        options=[
            ("grpc.service_config", _SERVICE_CONFIG),
            ("grpc.enable_retries", 1),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.initial_reconnect_backoff_ms", RECONNECT_INITIAL_MS),
            ("grpc.max_reconnect_backoff_ms", RECONNECT_MAX_MS),
            # Despite its name, the least time a connection attempt is given (default 20 s).
            ("grpc.min_reconnect_backoff_ms", CONNECT_TIMEOUT_MS),
            # A resume may carry up to RESUME_MAX messages of 4,000 characters (up to 16 KB each in
            # UTF-8): far past gRPC's default 4 MB cap on a received message.
            ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
        ],
        interceptors=aio_client_interceptors() if tracing_enabled() else None,
    )


def bearer(token: str) -> Sequence[tuple[str, str]]:
    """Call metadata that carries a caller's token to the next service."""
    return (("authorization", f"Bearer {token}"),)


def jwks_to_keys(keys: Sequence[identity_pb2.PublicKey]) -> dict[str, Ed25519PublicKey]:
    result: dict[str, Ed25519PublicKey] = {}
    for key in keys:
        if key.kty != "OKP" or key.crv != "Ed25519":
            continue
        jwk = {"kty": key.kty, "crv": key.crv, "x": key.x}
        public = OKPAlgorithm.from_jwk(json.dumps(jwk))
        if isinstance(public, Ed25519PublicKey):
            result[key.kid] = public
    return result


def identity_key_fetcher(channel: grpc.aio.Channel) -> KeyFetcher:
    stub = identity_pb2_grpc.IdentityServiceStub(channel)

    async def fetch() -> Mapping[str, Ed25519PublicKey]:
        response = await stub.GetPublicKeys(identity_pb2.GetPublicKeysRequest(), timeout=5)
        return jwks_to_keys(response.keys)

    return fetch


def identity_key_cache(channel: grpc.aio.Channel) -> KeyCache:
    return KeyCache(identity_key_fetcher(channel))
