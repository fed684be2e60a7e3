"""Which datastore failures are transient: the same call may succeed when tried again a moment later.

A Postgres restart, failover or admin shutdown, a refused or reset connection, a serialization
failure or deadlock, Redis going away, a Redis Cluster shard failing over (CLUSTERDOWN, TRYAGAIN, a
slot briefly served by nobody): each of these says nothing about the request itself. The
server retries such a call within its deadline (interceptors.py) and, when the datastore is still
away, answers UNAVAILABLE so that clients retry too, never INTERNAL.
"""

from __future__ import annotations

import errno

import asyncpg
import redis.exceptions

# Class 08 (connection exception) is matched by prefix; these are the others worth another try.
_TRANSIENT_SQLSTATES = frozenset(
    {
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "53300",  # too_many_connections
        "57P01",  # admin_shutdown
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now (starting up or shutting down)
        "58000",  # system_error (e.g. the server could not fork a backend)
    }
)
_TRANSIENT_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.EPIPE,
        errno.ETIMEDOUT,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ENETDOWN,
    }
)
# A Redis Cluster while a master fails over or a slot moves (the client refreshes its map and retries a
# few times itself; these are what is left when that was not enough). Cross-slot errors are bugs.
_PASSING_CLUSTER_STATES = (
    redis.exceptions.ClusterDownError,  # and MasterDownError
    redis.exceptions.TryAgainError,
    redis.exceptions.SlotNotCoveredError,
)
# asyncpg reports a connection that died under an operation with these client-side errors.
_CLOSED_CONNECTION_HINTS = ("connection is closed", "connection was closed", "pool is closing")


def _one_is_transient(exc: BaseException) -> bool:
    if isinstance(exc, asyncpg.PostgresError):
        state = str(getattr(exc, "sqlstate", "") or "")
        return state.startswith("08") or state in _TRANSIENT_SQLSTATES
    if isinstance(exc, asyncpg.InterfaceError):
        message = str(exc)
        return any(hint in message for hint in _CLOSED_CONNECTION_HINTS)
    if isinstance(exc, asyncpg.exceptions.InternalClientError):
        # "another operation is in progress" after the server dropped the connection mid-call.
        return True
    if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
        return True
    if isinstance(exc, _PASSING_CLUSTER_STATES):
        return True
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    if isinstance(exc, OSError):
        return exc.errno in _TRANSIENT_ERRNOS
    return False


def is_transient(exc: BaseException) -> bool:
    """True when `exc`, or an error it was raised from (`raise … from`), is a passing datastore failure."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if _one_is_transient(current):
            return True
        seen.add(id(current))
        current = current.__cause__
    return False
