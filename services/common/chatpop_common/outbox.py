"""A transactional outbox: work for another service, recorded in the transaction of the change that
calls for it and delivered after commit until it is done.

Writing: `add(conn, topic, payload, key)` inserts one row into the service's `outbox` table inside
the caller's own transaction, so the row exists exactly when the change does (a rollback takes both
away; a crash after commit loses neither). A key is unique per topic: adding it again changes
nothing, also after delivery, for as long as delivered rows are kept (`keep_delivered`).

Delivering: a `Relay` runs in every replica of the service. Each round it claims up to `batch_size`
due rows of the topics it has handlers for (`FOR UPDATE SKIP LOCKED`, so replicas never claim the
same row) by giving them a lease: a claim token and a next-attempt time `lease` seconds ahead, set
in one short statement, so no transaction stays open while a handler talks to another service. The
rows of each topic go to that topic's handler as one batch, within `lease / 2` seconds, so the
lease never runs out under a handler still at work and no other relay can take those rows
meanwhile. Then:
- the handler returned: the rows are marked delivered (and deleted `keep_delivered` later);
- it raised `PermanentFailure`: retrying cannot mend the batch. A batch of several is handed over
  again one row at a time to find the rows at fault; a row refused on its own is dead: kept with
  its error, logged and counted, never delivered again by itself (an operator can revive it by
  setting `dead_at` back to NULL);
- it raised anything else (or ran out of time): the rows stay, with one more attempt, the error, and
  a next-attempt time backed off exponentially with jitter per row (chatpop_common.backoff); after
  `max_attempts`, when one is set, they are dead.
A relay that dies mid-round leaves leased rows that fall due again when the lease ends: delivery is
at least once, and handlers must be idempotent (each row's key is there for that).

Waking: an insert into the table notifies the channel `chatpop_outbox_<schema>` (a statement trigger,
so it fires at commit and only then); a relay given `listen_dsn` listens on it over a connection of
its own (asyncpg `add_listener`) and starts a round at once. Every relay also polls every
`poll_interval` seconds, which covers rows whose retry time came, a listener that is reconnecting,
and relays without one.

The table's shape is the same in every service: each service's migration runs `create_statements()`
(and `drop_statements()` to go back). The statements are part of those migrations' history: a new
shape needs new statements and a new migration, never an edit of these.

Metrics (labels: topic): `chatpop_outbox_pending_rows`, `chatpop_outbox_dead_rows` and
`chatpop_outbox_oldest_pending_age_seconds` (gauges, measured from the table every
`metrics_interval`), `chatpop_outbox_delivered_total`, `chatpop_outbox_failed_attempts_total` and
`chatpop_outbox_dead_total` (counters of what this process did).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import groupby

import asyncpg
from prometheus_client import Counter, Gauge

from chatpop_common.backoff import Backoff, jittered
from chatpop_common.datastores import asyncpg_dsn

log = logging.getLogger(__name__)

TABLE = "outbox"
CHANNEL_PREFIX = "chatpop_outbox_"
# Longest error text kept with a row.
ERROR_MAX = 500

PENDING = Gauge("chatpop_outbox_pending_rows", "Outbox rows waiting for delivery.", ["topic"])
DEAD = Gauge("chatpop_outbox_dead_rows", "Outbox rows given up on and kept for an operator.", ["topic"])
OLDEST_PENDING_AGE = Gauge(
    "chatpop_outbox_oldest_pending_age_seconds",
    "Age of the oldest outbox row waiting for delivery.",
    ["topic"],
)
DELIVERED = Counter("chatpop_outbox_delivered_total", "Outbox rows delivered by this process.", ["topic"])
FAILED_ATTEMPTS = Counter(
    "chatpop_outbox_failed_attempts_total",
    "Outbox rows whose delivery attempt failed (to be retried).",
    ["topic"],
)
DIED = Counter("chatpop_outbox_dead_total", "Outbox rows this process gave up on (kept as dead).", ["topic"])
ROUND_FAILURES = Counter(
    "chatpop_outbox_round_failures_total",
    "Relay rounds that failed before handing rows over (database errors).",
)


def create_statements() -> list[str]:
    """The DDL of the `outbox` table, its indexes and its notify trigger, in the current schema."""
    return [
        """
        CREATE TABLE outbox (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            topic text NOT NULL,
            key text NOT NULL,
            payload bytea NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            attempts integer NOT NULL DEFAULT 0,
            next_attempt_at timestamptz NOT NULL DEFAULT now(),
            lease uuid,
            last_error text,
            delivered_at timestamptz,
            dead_at timestamptz,
            CONSTRAINT outbox_topic_key_key UNIQUE (topic, key)
        )
        """,
        # What a relay claims: rows neither delivered nor dead, by when they are due.
        "CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE delivered_at IS NULL AND dead_at IS NULL",
        # What the gauges count: rows not delivered (pending and dead).
        "CREATE INDEX outbox_undelivered ON outbox (topic, created_at) WHERE delivered_at IS NULL",
        # What pruning deletes.
        "CREATE INDEX outbox_delivered ON outbox (delivered_at) WHERE delivered_at IS NOT NULL",
        f"""
        CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('{CHANNEL_PREFIX}' || TG_TABLE_SCHEMA, '');
            RETURN NULL;
        END
        $$
        """,
        "CREATE TRIGGER outbox_notify AFTER INSERT ON outbox"
        " FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify()",
    ]


def drop_statements() -> list[str]:
    return ["DROP TABLE outbox", "DROP FUNCTION outbox_notify()"]


async def add(conn: asyncpg.Connection, topic: str, payload: bytes, key: str) -> bool:
    """Record one message for `topic` in the caller's transaction (or on its own outside one);
    False when the topic already holds `key` (nothing changes)."""
    if not topic or not key:
        raise ValueError("an outbox message needs a topic and a key")
    status = await conn.execute(
        "INSERT INTO outbox (topic, key, payload) VALUES ($1, $2, $3) ON CONFLICT (topic, key) DO NOTHING",
        topic,
        key,
        payload,
    )
    return bool(status == "INSERT 0 1")


@dataclass(frozen=True, slots=True)
class Message:
    id: int
    topic: str
    key: str
    payload: bytes
    # Failed attempts before this one.
    attempts: int
    created_at: datetime


Handler = Callable[[Sequence[Message]], Awaitable[None]]


class PermanentFailure(Exception):
    """Raised by a handler when the receiver refused the batch for good (retrying cannot mend it)."""


_CLAIM = """
UPDATE outbox o SET lease = $4, next_attempt_at = now() + make_interval(secs => $3)
FROM (
    SELECT id FROM outbox
    WHERE delivered_at IS NULL AND dead_at IS NULL AND next_attempt_at <= now() AND topic = ANY($1::text[])
    ORDER BY id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
) due
WHERE o.id = due.id
RETURNING o.id, o.topic, o.key, o.payload, o.attempts, o.created_at
"""
_RENEW = """
UPDATE outbox SET next_attempt_at = now() + make_interval(secs => $3)
WHERE id = $1 AND lease = $2 AND delivered_at IS NULL AND dead_at IS NULL
"""
_DELIVERED = """
UPDATE outbox SET delivered_at = now(), lease = NULL, last_error = NULL
WHERE id = ANY($1::bigint[]) AND lease = $2
"""
_RETRY = """
UPDATE outbox o SET attempts = o.attempts + 1, lease = NULL, last_error = $3,
    next_attempt_at = now() + make_interval(secs => d.delay)
FROM unnest($1::bigint[], $4::float8[]) AS d(id, delay)
WHERE o.id = d.id AND o.lease = $2
"""
_DEAD = """
UPDATE outbox SET attempts = attempts + 1, lease = NULL, last_error = $3, dead_at = now()
WHERE id = ANY($1::bigint[]) AND lease = $2
"""
# Rows of a relay stopped mid-delivery: due again at once (another replica may take them).
_RELEASE = (
    "UPDATE outbox SET lease = NULL, next_attempt_at = now() WHERE id = ANY($1::bigint[]) AND lease = $2"
)
_PRUNE = """
DELETE FROM outbox WHERE id IN (
    SELECT id FROM outbox WHERE delivered_at < now() - make_interval(secs => $1)
    ORDER BY delivered_at LIMIT $2 FOR UPDATE SKIP LOCKED
)
"""
_MEASURE = """
SELECT topic,
       count(*) FILTER (WHERE dead_at IS NULL) AS pending,
       count(*) FILTER (WHERE dead_at IS NOT NULL) AS dead,
       coalesce(extract(epoch FROM now() - min(created_at) FILTER (WHERE dead_at IS NULL)), 0)::float8
           AS oldest
FROM outbox WHERE delivered_at IS NULL GROUP BY topic
"""
_SCHEMA = """
SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid = to_regclass('outbox')
"""
PRUNE_BATCH = 5000


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:ERROR_MAX]


class Relay:
    """Delivers the outbox of the service whose pool it is given; see the module's description."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        name: str,
        listen_dsn: str | None = None,
        batch_size: int = 100,
        poll_interval: float = 2.0,
        lease: float = 30.0,
        retry_first: float = 1.0,
        retry_limit: float = 60.0,
        max_attempts: int | None = None,
        keep_delivered: float = 86_400.0,
        prune_interval: float = 60.0,
        metrics_interval: float = 15.0,
    ) -> None:
        if batch_size < 1 or lease <= 0 or poll_interval <= 0:
            raise ValueError("batch_size, lease and poll_interval must be positive")
        self._pool = pool
        self._name = name
        self._listen_dsn = asyncpg_dsn(listen_dsn) if listen_dsn else None
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._lease = lease
        self._handler_timeout = lease / 2
        self._retry_first = retry_first
        self._retry_limit = retry_limit
        self._max_attempts = max_attempts
        self._keep_delivered = keep_delivered
        self._prune_interval = prune_interval
        self._metrics_interval = metrics_interval
        self._handlers: dict[str, Handler] = {}
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._listening = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._next_prune = 0.0
        self._next_measure = 0.0

    def register(self, topic: str, handler: Handler) -> None:
        """Deliver `topic`'s rows with `handler` (one handler per topic)."""
        if topic in self._handlers:
            raise ValueError(f"the outbox topic {topic!r} has a handler already")
        self._handlers[topic] = handler

    @property
    def listening(self) -> asyncio.Event:
        """Set while the relay listens for commits (LISTEN); cleared while it only polls."""
        return self._listening

    def wake(self) -> None:
        """Start a round now rather than at the next poll."""
        self._wake.set()

    # --- life cycle -----------------------------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name=f"{self._name} outbox relay")
        return self._task

    async def stop(self, grace: float = 5.0) -> None:
        """Let the round under way finish (within `grace` seconds), then end. Rows not delivered stay
        in the table for the next relay."""
        self._stopping.set()
        self._wake.set()
        task, self._task = self._task, None
        if task is None:
            return
        done, _ = await asyncio.wait({task}, timeout=grace)
        if not done:
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def run(self) -> None:
        """Rounds until `stop()` (or cancellation)."""
        listener = (
            asyncio.create_task(self._listen(), name=f"{self._name} outbox listener")
            if self._listen_dsn
            else None
        )
        backoff = Backoff(first=self._poll_interval / 2, limit=max(self._poll_interval, 30.0))
        try:
            while not self._stopping.is_set():
                self._wake.clear()
                try:
                    claimed, failed = await self.deliver_due()
                    await self._housekeeping()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    ROUND_FAILURES.inc()
                    delay = backoff.next()
                    log.warning(
                        "%s outbox relay: round failed, again in %.1fs: %s", self._name, delay, _describe(exc)
                    )
                    await self._pause(delay)
                    continue
                backoff.reset()
                # A full batch that went through: more may be due right now.
                if claimed >= self._batch_size and not failed:
                    continue
                await self._pause(self._poll_interval)
        finally:
            if listener is not None:
                listener.cancel()
                await asyncio.gather(listener, return_exceptions=True)
            self._listening.clear()

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    # --- one round ------------------------------------------------------------------------------

    async def deliver_due(self) -> tuple[int, bool]:
        """Claim the rows due now (one batch) and hand them over; (rows claimed, whether any failed)."""
        if not self._handlers:
            return 0, False
        token = uuid.uuid4()
        rows = await self._pool.fetch(_CLAIM, list(self._handlers), self._batch_size, self._lease, token)
        messages = sorted(
            (
                Message(
                    id=row["id"],
                    topic=row["topic"],
                    key=row["key"],
                    payload=bytes(row["payload"]),
                    attempts=row["attempts"],
                    created_at=row["created_at"],
                )
                for row in rows
            ),
            key=lambda message: (message.topic, message.id),
        )
        failed = False
        for topic, group in groupby(messages, key=lambda message: message.topic):
            if not await self._hand_over(topic, list(group), token):
                failed = True
        return len(messages), failed

    async def _hand_over(self, topic: str, batch: list[Message], token: uuid.UUID) -> bool:
        """Deliver one topic's batch; False when some of it is to be retried."""
        try:
            async with asyncio.timeout(self._handler_timeout):
                await self._handlers[topic](batch)
        except asyncio.CancelledError:
            await self._release(batch, token)
            raise
        except PermanentFailure as exc:
            if len(batch) == 1:
                await self._bury(topic, batch, token, exc)
                return True
            # Find the rows at fault: each on its own, under a renewed lease.
            ok = True
            for message in batch:
                if await self._pool.execute(_RENEW, message.id, token, self._lease) == "UPDATE 1":
                    ok = await self._hand_over(topic, [message], token) and ok
            return ok
        except Exception as exc:
            await self._retry(topic, batch, token, exc)
            return False
        await self._pool.execute(_DELIVERED, [message.id for message in batch], token)
        DELIVERED.labels(topic).inc(len(batch))
        return True

    async def _retry(self, topic: str, batch: list[Message], token: uuid.UUID, exc: BaseException) -> None:
        error = _describe(exc)
        if self._max_attempts is not None:
            spent = [message for message in batch if message.attempts + 1 >= self._max_attempts]
            if spent:
                await self._bury(topic, spent, token, exc, why=f"after {self._max_attempts} attempts")
                batch = [message for message in batch if message not in spent]
        if not batch:
            return
        delays = [
            jittered(message.attempts, first=self._retry_first, limit=self._retry_limit) for message in batch
        ]
        await self._pool.execute(_RETRY, [message.id for message in batch], token, error, delays)
        FAILED_ATTEMPTS.labels(topic).inc(len(batch))
        log.warning(
            "%s outbox relay: %d %s message(s) not delivered, retrying in %.1f-%.1fs: %s",
            self._name,
            len(batch),
            topic,
            min(delays),
            max(delays),
            error,
        )

    async def _bury(
        self, topic: str, batch: list[Message], token: uuid.UUID, exc: BaseException, *, why: str = "refused"
    ) -> None:
        error = _describe(exc)
        await self._pool.execute(_DEAD, [message.id for message in batch], token, error)
        DIED.labels(topic).inc(len(batch))
        for message in batch:
            log.error(
                "%s outbox relay: gave up on a %s message (%s), kept as dead: %s",
                self._name,
                topic,
                why,
                error,
                extra={"outbox_id": message.id, "outbox_key": message.key, "topic": topic},
            )

    async def _release(self, batch: list[Message], token: uuid.UUID) -> None:
        """Give claimed rows back (best effort: otherwise their lease runs out)."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await self._pool.execute(_RELEASE, [message.id for message in batch], token)

    # --- upkeep ---------------------------------------------------------------------------------

    async def _housekeeping(self) -> None:
        now = asyncio.get_running_loop().time()
        if now >= self._next_prune:
            self._next_prune = now + self._prune_interval
            await self._pool.execute(_PRUNE, self._keep_delivered, PRUNE_BATCH)
        if now >= self._next_measure:
            self._next_measure = now + self._metrics_interval
            await self.measure()

    async def measure(self) -> None:
        """Set the gauges from the table (every topic this relay delivers is reported, at 0 if idle)."""
        rows = await self._pool.fetch(_MEASURE)
        seen = {row["topic"]: row for row in rows}
        for topic in {*self._handlers, *seen}:
            row = seen.get(topic)
            PENDING.labels(topic).set(row["pending"] if row else 0)
            DEAD.labels(topic).set(row["dead"] if row else 0)
            OLDEST_PENDING_AGE.labels(topic).set(row["oldest"] if row else 0)

    # --- waking on commit -----------------------------------------------------------------------

    def _notified(self, *_: object) -> None:
        self._wake.set()

    async def _listen(self) -> None:
        """LISTEN on a connection of its own, reconnecting with backoff; the poll covers the gaps."""
        assert self._listen_dsn is not None
        backoff = Backoff(first=0.5, limit=30.0)
        while True:
            connection: asyncpg.Connection | None = None
            try:
                schema = await self._pool.fetchval(_SCHEMA)
                if schema is None:
                    raise RuntimeError(
                        "this service's database has no outbox table (migrations not applied?)"
                    )
                connection = await asyncpg.connect(self._listen_dsn, timeout=5.0)
                lost = asyncio.Event()
                connection.add_termination_listener(lambda _connection, lost=lost: lost.set())
                await connection.add_listener(CHANNEL_PREFIX + schema, self._notified)
                self._listening.set()
                # Whatever was committed before the LISTEN took effect is found by this round.
                self._wake.set()
                backoff.reset()
                await lost.wait()
                raise ConnectionError("the listening connection was closed")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._listening.clear()
                delay = backoff.next()
                log.warning(
                    "%s outbox relay: not listening, polling only; again in %.1fs: %s",
                    self._name,
                    delay,
                    _describe(exc),
                )
                await asyncio.sleep(delay)
            finally:
                if connection is not None:
                    connection.terminate()
