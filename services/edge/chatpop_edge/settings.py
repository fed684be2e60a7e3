"""The edge's settings, read from the environment and validated at start-up (fail fast)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from chatpop_common.objectstore import S3Settings
from chatpop_common.service_auth import check_secret
from chatpop_common.settings import ServiceAddresses

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


MIB = 1024 * 1024
MEDIA_URL_KEY_MIN_LENGTH = 32


class EdgeSettings(ServiceAddresses, S3Settings):
    """HTTP/WebSocket front settings, where the four services listen, and the media store (S3_*)."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", case_sensitive=False)

    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65535)
    metrics_port: int = Field(default=9100, ge=0, le=65535)
    # Base of the links handed out for rooms (`{public_url}/c/{code}`).
    public_url: str = "http://localhost:8080"
    # Socket peers whose X-Forwarded-For / X-Forwarded-Proto are believed (comma-separated CIDRs).
    trusted_proxies: Annotated[tuple[IPNetwork, ...], NoDecode] = ()
    # Secret for HMAC-SHA256 of client IPs: services only ever see the keyed hash.
    ip_hash_key: SecretStr
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)
    log_level: str = "INFO"
    log_format: str = Field(default="json", pattern="^(json|text)$")
    # Deadline for every unary call to a service.
    rpc_timeout: float = Field(default=5.0, gt=0)
    # How long GET /.well-known/jwks.json reuses identity's answer.
    jwks_cache_seconds: float = Field(default=60.0, ge=0)
    # Frames a socket may have waiting before it is closed as too slow (1013, reconnect and resume).
    ws_queue_limit: int = Field(default=1000, ge=10)
    # Sends (WebSocket and REST) leave for messaging together: at once when no SendMessages call is
    # in flight, else one call per SEND_BATCH_DELAY seconds, or as soon as SEND_BATCH_MAX are waiting,
    # at most SEND_BATCH_CALLS calls at a time. Past SEND_QUEUE_LIMIT sends waiting or in flight in
    # this process (those sockets hold behind their unanswered ones included), a send is refused
    # the moment it is read (`overloaded`, retryable after SEND_RETRY_AFTER_MS) instead of queued.
    # It must exceed SEND_BATCH_CALLS * SEND_BATCH_MAX, or the calls never fill.
    send_batch_delay: float = Field(default=0.001, ge=0, le=0.1)
    send_batch_max: int = Field(default=256, ge=1, le=1000)
    send_batch_calls: int = Field(default=4, ge=1, le=64)
    # The batches go on up to SEND_STREAMS long-lived SendStream calls (0: a SendMessages call each),
    # each retired after SEND_STREAM_MAX_AGE seconds so messaging processes that joined get a share.
    send_streams: int = Field(default=2, ge=0, le=16)
    send_stream_max_age: float = Field(default=60.0, ge=1, le=3600)
    send_queue_limit: int = Field(default=2000, ge=1)
    send_retry_after_ms: int = Field(default=200, ge=1, le=60_000)
    # Most messages a resume backfills before the client is told to reload.
    resume_limit: int = Field(default=500, ge=1, le=10_000)
    # Minimum seconds between two typing frames relayed for one socket.
    typing_interval: float = Field(default=2.0, ge=0)
    # A socket the edge heard nothing from (no frame at all, pings included) for this long is closed
    # (4408): clients ping every few seconds, so only half-dead connections reach it.
    ws_idle_timeout: float = Field(default=30.0, ge=1)
    # Seconds between refreshes of what this process reports as online, and how long a report lives
    # at messaging without one: a process killed without a goodbye drops out after presence_ttl.
    presence_refresh: float = Field(default=10.0, gt=0)
    presence_ttl: int = Field(default=30, ge=2, le=3600)
    # Seconds open connections get to finish on SIGTERM.
    shutdown_grace: float = Field(default=10.0, ge=0)
    # --- what a connection may cost before it is authenticated (chatpop_edge.connections) -----------
    # A request line and its headers must arrive within this many seconds of connect, or of the first
    # byte after a keep-alive pause; 408 (or, if nothing came at all, a plain close) otherwise.
    http_header_timeout: float = Field(default=10.0, gt=0, le=300)
    # Seconds an idle keep-alive connection is kept. Behind a proxy that reuses connections to the
    # edge, set it above the proxy's own idle timeout.
    http_keep_alive_timeout: int = Field(default=5, ge=1, le=3600)
    # Most bytes of a request line plus headers; larger heads get 431 and the connection is closed.
    http_max_header_bytes: int = Field(default=16 * 1024, ge=1024, le=1024 * 1024)
    # Connections that have not yet sent a complete request head (or whose WebSocket handshake the app
    # has not answered yet), per TCP peer and in all: past either limit new connections are answered
    # 503 and closed at once. The per-peer limit does not apply to TRUSTED_PROXIES (their connections
    # carry many clients, and a proxy reads a request's head itself before it forwards it), only the
    # total does; IPv6 peers count per /64.
    pending_connections_per_ip: int = Field(default=64, ge=1)
    pending_connections_total: int = Field(default=2048, ge=1)
    # Seconds from a WebSocket upgrade request to the app accepting or refusing it (503 after).
    ws_handshake_timeout: float = Field(default=10.0, gt=0, le=300)
    # WebSocket protocol pings: one every WS_PING_INTERVAL seconds, closed (1011) when its pong has not
    # come WS_PING_TIMEOUT seconds later.
    ws_ping_interval: float = Field(default=20.0, gt=0)
    ws_ping_timeout: float = Field(default=20.0, gt=0)
    # Outgoing bytes one WebSocket may have waiting (queued frames plus the transport's write buffer)
    # before it is closed with 1013 as too slow, counted while the transport is at its high-water mark
    # (the peer is behind): frames arriving together while it is not go out at the writer's next turn.
    # A resume's backfill (at most RESUME_LIMIT messages) may exceed it: the client asked for it.
    ws_send_budget: int = Field(default=256 * 1024, ge=16 * 1024, le=64 * 1024 * 1024)
    # SO_SNDBUF of WebSocket connections, so a client that stops reading is noticed after this much
    # rather than after the megabytes the kernel would buffer by itself; 0 keeps the kernel's sizing.
    ws_send_buffer: int = Field(default=64 * 1024, ge=0, le=16 * 1024 * 1024)
    # Seconds a closing WebSocket gets to deliver its close frame and hear the answer before the
    # connection is aborted (a peer that stopped reading never takes the close frame).
    ws_close_timeout: float = Field(default=5.0, gt=0, le=300)
    # The built web client (index.html + assets/); unset: services/edge/web/dist from `make web`.
    web_root: Path | None = None
    # Stripe's publishable key, the same one payments hands to clients. Set only when payments go
    # through Stripe: the pages' Content-Security-Policy then lets Stripe.js load (web.py); unset (test
    # mode), nothing may load from another origin.
    stripe_publishable_key: str = ""
    # Shared secret with which the edge proves itself to identity for its service token (`edge`),
    # which it shows messaging when it serves media; at least 32 characters, the same in every service.
    service_token_secret: SecretStr
    # --- media (photo, voice, video; stored in S3_BUCKET, served through signed URLs) ---------------
    # HMAC key of media URLs and of the cookie that binds them to their participant (≥ 32 characters).
    media_url_key: SecretStr
    # Seconds a signed media URL is good for.
    media_url_ttl: int = Field(default=300, ge=30, le=24 * 3600)
    # Worker processes checking uploads, and uploads that may wait for one (past it: 503 media_busy).
    media_check_workers: int = Field(default=1, ge=1, le=64)
    media_check_queue: int = Field(default=4, ge=0, le=1000)
    # Seconds one check may take before its worker is killed; address space of a worker (MB).
    media_check_timeout: float = Field(default=120.0, gt=0, le=3600)
    media_check_memory_mb: int = Field(default=1536, ge=128, le=65536)
    # Where uploads are spooled while they are counted and checked; unset: the system's temp dir.
    media_spool_dir: Path | None = None
    media_photo_max_bytes: int = Field(default=10 * MIB, ge=1024, le=1024 * MIB)
    media_voice_max_bytes: int = Field(default=10 * MIB, ge=1024, le=1024 * MIB)
    media_video_max_bytes: int = Field(default=50 * MIB, ge=1024, le=4096 * MIB)
    media_video_max_seconds: float = Field(default=30.0, gt=0, le=3600)
    media_voice_max_seconds: float = Field(default=600.0, gt=0, le=24 * 3600)
    # Most pixels a picture (or a video frame) may decode to: larger is a decompression bomb.
    media_max_pixels: int = Field(default=40_000_000, ge=1, le=1_000_000_000)

    def media_max_bytes(self, kind: str) -> int:
        """The most bytes an upload of `kind` (photo, voice, video) may have."""
        limits = {
            "photo": self.media_photo_max_bytes,
            "voice": self.media_voice_max_bytes,
            "video": self.media_video_max_bytes,
        }
        return limits[kind]

    @property
    def media_url_secret(self) -> bytes:
        return self.media_url_key.get_secret_value().encode()

    @field_validator("media_url_key")
    @classmethod
    def _media_url_key(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < MEDIA_URL_KEY_MIN_LENGTH:
            raise ValueError(
                f"MEDIA_URL_KEY must be a secret of at least {MEDIA_URL_KEY_MIN_LENGTH} characters"
            )
        return value

    @field_validator("service_token_secret")
    @classmethod
    def _service_token_secret(cls, value: SecretStr) -> SecretStr:
        check_secret(value.get_secret_value())
        return value

    @model_validator(mode="after")
    def _presence_ttl_outlives_refreshes(self) -> EdgeSettings:
        if self.presence_ttl < 2 * self.presence_refresh:
            raise ValueError(
                "PRESENCE_TTL must be at least twice PRESENCE_REFRESH, so one late refresh is not fatal"
            )
        return self

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError("PUBLIC_URL must start with http:// or https://")
        return value

    @field_validator("stripe_publishable_key")
    @classmethod
    def _stripe_publishable_key(cls, value: str) -> str:
        value = value.strip()
        if value and not value.startswith("pk_"):
            raise ValueError(
                "STRIPE_PUBLISHABLE_KEY must be Stripe's publishable key (pk_…), never a secret key"
            )
        return value

    @field_validator("ip_hash_key")
    @classmethod
    def _ip_hash_key(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 16:
            raise ValueError("IP_HASH_KEY must be a secret of at least 16 characters")
        return value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _trusted_proxies(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [item.strip() for item in value.split(",") if item.strip()]
        if isinstance(value, list | tuple):
            networks: list[IPNetwork] = []
            for item in value:
                try:
                    networks.append(ipaddress.ip_network(str(item).strip(), strict=False))
                except ValueError as exc:
                    raise ValueError(f"TRUSTED_PROXIES: {item!r} is not an IP address or CIDR") from exc
            return tuple(networks)
        return value

    @property
    def ip_hash_secret(self) -> bytes:
        return self.ip_hash_key.get_secret_value().encode()
