"""Prometheus metrics of the edge (served on METRICS_PORT by chatpop_common.telemetry)."""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Sequence

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter(
    "chatpop_http_requests_total",
    "HTTP requests handled by the edge.",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "chatpop_http_request_duration_seconds",
    "Time to answer an HTTP request.",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
WS_CONNECTIONS = Gauge("chatpop_ws_connections", "Open WebSocket connections.")
WS_FRAMES_SENT = Counter("chatpop_ws_frames_sent_total", "WebSocket frames written to clients.")
MESSAGES_DELIVERED = Counter(
    "chatpop_messages_delivered_total", "Message frames written to client sockets (one per recipient)."
)
SEND_TO_DELIVER = Histogram(
    "chatpop_send_to_deliver_seconds",
    "From a message's created_at to its frame written on a recipient's socket.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RESUMES = Counter("chatpop_resume_total", "Client resumes by outcome.", ["outcome"])
ROOM_SUBSCRIPTIONS = Gauge("chatpop_room_subscriptions", "Rooms with a live messaging subscription here.")
RESUBSCRIBES = Counter(
    "chatpop_room_resubscribes_total", "Room subscriptions re-established after the stream broke."
)
SLOW_SOCKET_CLOSES = Counter(
    "chatpop_ws_slow_closes_total",
    "Sockets closed (1013) as too slow: more than WS_QUEUE_LIMIT frames or WS_SEND_BUDGET bytes waiting.",
)
WS_ABORTS = Counter(
    "chatpop_ws_aborts_total",
    "WebSocket connections aborted (TCP reset) because a close could not complete within WS_CLOSE_TIMEOUT.",
)
CONNECTIONS_PENDING = Gauge(
    "chatpop_connections_pending",
    "Connections without a complete request head yet, or whose WebSocket handshake is unanswered.",
)
CONNECTIONS_CUT = Counter(
    "chatpop_connections_cut_total",
    "Connections closed before their request was complete, by reason.",
    ["reason"],
)
WS_IDLE_CLOSES = Counter(
    "chatpop_ws_idle_closes_total",
    "Sockets closed (4408) because nothing at all came from the client for WS_IDLE_TIMEOUT seconds.",
)
SIGNALS_RECEIVED = Counter(
    "chatpop_signals_received_total",
    "Ephemeral room signals (typing, presence, room_updated, mutes_changed, kick) handled for this"
    " process's sockets, by kind.",
    ["kind"],
)
PRESENCE_REPORTS = Counter(
    "chatpop_presence_reports_total",
    "Presence reports sent to messaging (changes and refreshes), by outcome.",
    ["outcome"],
)
for _kind in ("typing", "presence", "room_updated", "mutes_changed", "kick"):
    SIGNALS_RECEIVED.labels(_kind)
for _outcome in ("ok", "failed"):
    PRESENCE_REPORTS.labels(_outcome)
for _reason in (
    "peer_limit",
    "total_limit",
    "idle",
    "header_timeout",
    "headers_too_large",
    "handshake_timeout",
    "bad_handshake",
):
    CONNECTIONS_CUT.labels(_reason)
SEND_BATCH_SIZE = Histogram(
    "chatpop_send_batch_size",
    "Sends per SendMessages call this process made (its sends collected over one tick).",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000),
)
SENDS_REFUSED = Counter(
    "chatpop_sends_refused_total",
    "Sends refused by this process before reaching messaging, by code (`overloaded`).",
    ["code"],
)


class HistogramTally:
    """Observations of an unlabelled Histogram counted here and added to it in one go (`flush`):
    what `observe` would have recorded, without its two locked increments per observation."""

    __slots__ = ("_bounds", "_histogram", "counts", "total")

    def __init__(self, histogram: Histogram) -> None:
        self._histogram = histogram
        # Histogram.observe puts an amount in the first bucket whose upper bound is not below it.
        self._bounds: list[float] = list(histogram._upper_bounds)
        self.counts = [0] * len(self._bounds)
        self.total = 0.0

    def observe(self, amount: float) -> None:
        self.total += amount
        self.counts[bisect.bisect_left(self._bounds, amount)] += 1

    def observe_many(self, amount: float, count: int) -> None:
        """observe(amount) `count` times."""
        self.total += amount * count
        self.counts[bisect.bisect_left(self._bounds, amount)] += count

    def observe_since(self, now: float, times: Sequence[float]) -> None:
        """observe(now - t) for each of `times` (0 for one after `now`)."""
        bounds, counts, total = self._bounds, self.counts, 0.0
        for at in times:
            amount = now - at if now > at else 0.0
            total += amount
            counts[bisect.bisect_left(bounds, amount)] += 1
        self.total += total

    def flush(self) -> None:
        histogram = self._histogram
        for index, count in enumerate(self.counts):
            if count:
                histogram._buckets[index].inc(count)
                self.counts[index] = 0
        histogram._sum.inc(self.total)
        self.total = 0.0


class Deliveries:
    """Frames written to sockets and the messages among them, counted into WS_FRAMES_SENT,
    MESSAGES_DELIVERED and SEND_TO_DELIVER once per turn of the event loop: a pass over a room of
    1,000 writes 1,000 frames, one metrics update instead of 3,000."""

    __slots__ = ("_delays", "_scheduled", "delivered", "frames")

    def __init__(self) -> None:
        self.frames = 0
        self.delivered = 0
        self._delays = HistogramTally(SEND_TO_DELIVER)
        self._scheduled = False

    def written(self, frames: int) -> None:
        self.frames += frames
        self._schedule()

    def delivered_after(self, delay: float) -> None:
        """A message frame written `delay` seconds after the message was created."""
        self.delivered += 1
        self._delays.observe(delay)

    def delivered_at(self, now: float, created: Sequence[float]) -> None:
        """Message frames written at `now` (time.time()) of messages created at `created`."""
        self.delivered += len(created)
        self._delays.observe_since(now, created)

    def written_together(self, now: float, created: float, frames: int) -> None:
        """The same message's frame written to `frames` sockets in one pass ending at `now`."""
        self.frames += frames
        self.delivered += frames
        self._delays.observe_many(now - created if now > created else 0.0, frames)
        self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        if self.frames:
            WS_FRAMES_SENT.inc(self.frames)
            self.frames = 0
        if self.delivered:
            MESSAGES_DELIVERED.inc(self.delivered)
            self.delivered = 0
            self._delays.flush()


DELIVERIES = Deliveries()
