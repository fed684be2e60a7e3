"""Messaging settings, read from the environment and validated at start-up."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator, model_validator

from chatpop_common.objectstore import S3Settings
from chatpop_common.service_auth import check_secret
from chatpop_common.settings import ServiceSettings
from chatpop_messaging.keys import MasterKeyError, MasterKeys


class MessagingSettings(ServiceSettings, S3Settings):
    grpc_port: int = Field(7103, ge=0, le=65535)
    metrics_port: int = Field(9103, ge=0, le=65535)
    # Both datastores are required: Postgres is the message log, Redis the hot cache and fan-out.
    database_url: str = Field(..., min_length=1)
    redis_url: str = Field(..., min_length=1)
    rooms_addr: str = "127.0.0.1:7102"
    identity_addr: str = "127.0.0.1:7101"

    message_max_chars: int = Field(4000, ge=1)
    # Messages kept per room in the Redis stream (approximately: trimming is done with MAXLEN ~).
    hot_cache_size: int = Field(500, ge=1)
    # Seconds an idle room's stream survives in Redis; any append or rebuild renews it.
    hot_cache_ttl: int = Field(7 * 24 * 3600, ge=60)
    # Messages per minute per participant on average, with a burst for a quick exchange; 0 turns the
    # limit off. A lively room needs a message every second or so from its most active people.
    send_rate_limit: float = Field(60, ge=0)
    send_rate_burst: int = Field(20, ge=1)
    # Seconds a process may spend send tokens it took from a participant's bucket ahead of their sends
    # (send_budget.py); 0 asks Redis on every send.
    send_rate_lease: float = Field(10.0, ge=0, le=60)
    # Above this many missed messages, resuming answers "reload" instead of the messages.
    resume_max: int = Field(1000, ge=1)
    # Seconds a participant looked up at rooms is trusted before asking again.
    participant_cache_ttl: float = Field(30.0, ge=0)
    # Seconds a room's state (closed, slow mode) is trusted before asking rooms again: short, so a
    # host's change applies at once.
    room_policy_cache_ttl: float = Field(2.0, ge=0)
    # Seconds between checks of idle rooms for messages that pub/sub did not deliver.
    hub_poll_interval: float = Field(1.5, gt=0)
    # Live messages buffered per subscriber before it is told to reload.
    subscriber_queue_size: int = Field(1000, ge=1)
    # Seconds Redis is left alone after a failure, so a dead Redis does not slow every send.
    redis_retry_after: float = Field(1.0, ge=0)
    # Sends of one room stored in one group commit at most (group_commit.py).
    group_commit_max: int = Field(1000, ge=1, le=10_000)
    # Rooms whose group commits share one transaction at most (group_commit.RoomsInserts); 1 gives
    # every room a transaction of its own (as a log distributed by room, e.g. under Citus, wants).
    group_commit_rooms_max: int = Field(32, ge=1, le=1000)
    # Connections of the pool that only runs group commits (store.COMMIT_SERVER_SETTINGS), besides
    # the DB_POOL_MAX of the main pool.
    group_commit_connections: int = Field(4, ge=1, le=100)
    # Sends in this process at once (arrived, not answered yet); past it new sends are refused at once,
    # RESOURCE_EXHAUSTED `overloaded` (retryable), rather than queued to time out.
    sends_in_flight_max: int = Field(2000, ge=1)
    # Distinct participants whose open reports hide a message pending the host's review.
    reports_to_hide: int = Field(3, ge=1)

    # Media (the S3_* settings come from S3Settings; an empty S3_BUCKET switches uploads off).
    # Seconds an upload may stay pending (checked, objects being stored) before it is purged.
    media_pending_ttl: float = Field(3600, gt=0)
    # Seconds a stored media may wait for a message to carry it before it is purged.
    media_unreferenced_ttl: float = Field(86400, gt=0)
    # Seconds between two sweeps for media to purge (each replica sweeps).
    media_sweep_interval: float = Field(60, gt=0)

    # Retention (retention.py): seconds between runs in each replica (0 turns the job off; RunRetention
    # still works), entries deleted per transaction, and seconds between two transactions.
    retention_interval: float = Field(300, ge=0)
    retention_batch: int = Field(5000, ge=1, le=100_000)
    retention_pause: float = Field(0.02, ge=0)

    # Erasing a closed room and forgetting deleted accounts (erasure.py, forgetting.py): rows changed or
    # deleted per transaction, and seconds one EraseRoom call works before answering (rooms calls
    # again until the room is erased).
    erase_batch: int = Field(5000, ge=1, le=100_000)
    erase_budget: float = Field(20.0, gt=0, le=300)

    # Encryption at rest (keys.py, reencrypt.py). The master keys: MASTER_KEYS_FILE (a JSON file, the
    # mounted secret; preferred) or MASTER_KEYS (the same JSON); one is required, checked at start-up.
    master_keys_file: str = ""
    master_keys: SecretStr = SecretStr("")
    # Seconds an unwrapped data key (and which version is a room's newest) is trusted in the process,
    # and how many are kept (LRU).
    key_cache_ttl: float = Field(30.0, gt=0, le=3600)
    key_cache_size: int = Field(10_000, ge=16)
    # The background re-encryption (plaintext from before encryption, content on older data key
    # versions): seconds between runs in each replica (0 turns it off; ReencryptRooms still works)
    # and the most values one run re-encrypts.
    reencrypt_interval: float = Field(60, ge=0)
    reencrypt_batch: int = Field(2000, ge=1, le=100_000)

    # Shared secret with which messaging proves itself to identity for its service token (audit
    # events); at least 32 characters, the same in every service.
    service_token_secret: SecretStr

    def master_key_set(self) -> MasterKeys:
        return MasterKeys.load(self.master_keys_file, self.master_keys.get_secret_value())

    @model_validator(mode="after")
    def _master_keys(self) -> MessagingSettings:
        try:
            self.master_key_set()
        except MasterKeyError as exc:
            raise ValueError(str(exc)) from None
        return self

    @field_validator("service_token_secret")
    @classmethod
    def _service_token_secret(cls, value: SecretStr) -> SecretStr:
        check_secret(value.get_secret_value())
        return value
