"""Prometheus metrics of the messaging service, registered once per process."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

MESSAGES_ACCEPTED = Counter("chatpop_messages_accepted", "Messages committed to the message log.")
MESSAGES_PUBLISHED = Counter(
    "chatpop_messages_published", "Committed messages appended to the hot cache and published to Redis."
)
REDIS_FAILURES = Counter(
    "chatpop_redis_failures",
    "Redis operations that failed or were skipped because Redis was unreachable.",
    ["op"],
)
HOT_CACHE_REQUESTS = Counter(
    "chatpop_hot_cache_requests",
    "Message range reads, by whether the Redis hot cache answered them (hit) or Postgres did (miss).",
    ["result"],
)
GROUP_COMMIT_SENDS = Histogram(
    "chatpop_group_commit_sends",
    "Sends of one room committed together (one group commit).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000),
)
GROUP_COMMIT_ROOMS = Histogram(
    "chatpop_group_commit_rooms",
    "Rooms whose group commits shared one transaction.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000),
)
SENDS_OVERLOADED = Counter(
    "chatpop_sends_overloaded", "Sends refused at once because too many were in messaging already."
)
SUBSCRIBERS = Gauge("chatpop_subscribers", "Live Subscribe streams in this process.")
RATE_LIMITED = Counter("chatpop_rate_limited", "Sends refused by the per-participant rate limit.")
SEND_TOKENS = Counter(
    "chatpop_send_tokens",
    "Send tokens spent, by where the decision was made: from tokens this process held (process) or "
    "in a round trip to the Redis bucket (redis).",
    ["source"],
)
SLOW_MODE_WAITS = Counter(
    "chatpop_slow_mode_waits", "Sends refused because the room's slow mode asked the sender to wait."
)
HOT_CACHE_REBUILDS = Counter(
    "chatpop_hot_cache_rebuilds", "Room streams rebuilt from Postgres after a gap or a cache miss."
)
GAP_FILLS = Counter(
    "chatpop_gap_fills", "Live delivery gaps filled from the hot cache or Postgres.", ["reason"]
)

RESUME_READS = Counter(
    "chatpop_resume_reads",
    "Resumes (ListMessagesAfter) by where the missed messages came from: hot_cache, postgres, "
    "reload (too many missed: the client must reload) or nothing_missed.",
    ["source"],
)

# Export the labelled series from the start, so dashboards see zeros rather than gaps.
for _result in ("hit", "miss"):
    HOT_CACHE_REQUESTS.labels(_result)
for _source in ("hot_cache", "postgres", "reload", "nothing_missed"):
    RESUME_READS.labels(_source)
for _reason in ("subscriber", "live", "reconnect", "poll"):
    GAP_FILLS.labels(_reason)
for _op in ("append", "read", "rebuild", "rate_limit", "subscribe"):
    REDIS_FAILURES.labels(_op)

SIGNALS_PUBLISHED = Counter(
    "chatpop_signals_published", "Ephemeral room signals published on Redis, by kind.", ["kind"]
)
SIGNALS_DROPPED = Counter(
    "chatpop_signals_dropped",
    "Signals not handed to a Subscribe stream because it had too many waiting (messages are unaffected).",
)
PRESENCE_CHANGES = Counter(
    "chatpop_presence_changes", "Participants who came online or went offline in a room.", ["change"]
)
PRESENCE_EXPIRED = Counter(
    "chatpop_presence_expired",
    "Edge processes' presence records dropped from a room because they were not refreshed in time.",
)
for _kind in ("typing", "presence", "room_updated", "mutes_changed", "kick"):
    SIGNALS_PUBLISHED.labels(_kind)
for _change in ("online", "offline"):
    PRESENCE_CHANGES.labels(_change)
for _op in ("signal", "presence"):
    REDIS_FAILURES.labels(_op)

MEDIA_CREATED = Counter(
    "chatpop_media_created", "Media records opened for an upload (CreateMedia), by kind.", ["kind"]
)
MEDIA_COMPLETED = Counter(
    "chatpop_media_completed", "Media records whose objects were stored (CompleteMedia), by kind.", ["kind"]
)
MEDIA_PURGED = Counter(
    "chatpop_media_purged",
    "Media whose objects were deleted from storage, by why: message_deleted, abandoned, "
    "pending_expired, unreferenced, room_closed, retention.",
    ["reason"],
)
MEDIA_VACUUMS = Counter(
    "chatpop_media_vacuums", "Storage vacuums asked for after purges, by result (ok, failed).", ["result"]
)
for _kind in ("photo", "voice", "video"):
    MEDIA_CREATED.labels(_kind)
    MEDIA_COMPLETED.labels(_kind)
# Why media is purged (media.delete_reason).
MEDIA_PURGE_REASONS = (
    "message_deleted",
    "abandoned",
    "pending_expired",
    "unreferenced",
    "room_closed",
    "retention",
)
for _reason in MEDIA_PURGE_REASONS:
    MEDIA_PURGED.labels(_reason)
for _result in ("ok", "failed"):
    MEDIA_VACUUMS.labels(_result)

RETENTION_DELETED = Counter(
    "chatpop_retention_deleted",
    "Rows retention deleted, by kind: entries (messages and changes), reactions, reports, pins, "
    "paid_pins, and media (purges asked for).",
    ["kind"],
)
RETENTION_RUNS = Counter(
    "chatpop_retention_runs",
    "Retention runs by result: ok, dry_run, failed (the whole run), room_failed (one room, tried again "
    "next run).",
    ["result"],
)
RETENTION_DURATION = Histogram(
    "chatpop_retention_duration_seconds",
    "Seconds a retention run (not a dry run) took.",
    buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600),
)
RETENTION_FLOOR_LAG = Gauge(
    "chatpop_retention_floor_lag_seconds",
    "After the last full run: how far past its room's cutoff the oldest entry still kept is "
    "(0 when retention is caught up).",
)
for _kind in ("entries", "reactions", "reports", "pins", "paid_pins", "media"):
    RETENTION_DELETED.labels(_kind)
for _result in ("ok", "dry_run", "failed", "room_failed"):
    RETENTION_RUNS.labels(_result)
REDIS_FAILURES.labels("trim")

# Encryption at rest (keys.py, reencrypt.py).
CONTENT_UNREADABLE = Counter(
    "chatpop_content_unreadable",
    "Stored content that could not be decrypted (its data key is gone, or it was moved from another "
    "row): read as an unreadable message.",
)
REENCRYPTED = Counter(
    "chatpop_reencrypted",
    "Content values re-encrypted to their room's newest data key (legacy plaintext included).",
)
REENCRYPT_RUNS = Counter("chatpop_reencrypt_runs", "Background re-encryption runs by result.", ["result"])
for _result in ("ok", "failed"):
    REENCRYPT_RUNS.labels(_result)
