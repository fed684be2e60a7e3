"""Which failures count as a passing datastore outage (retried, then UNAVAILABLE) and which do not."""

from __future__ import annotations

import errno

import asyncpg
import pytest
import redis.exceptions

from chatpop_common.transient import is_transient


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.exceptions.SerializationError("could not serialize access"),
        asyncpg.exceptions.DeadlockDetectedError("deadlock detected"),
        asyncpg.exceptions.TooManyConnectionsError("sorry, too many clients already"),
        asyncpg.InterfaceError("cannot call Transaction.__aexit__(): the underlying connection is closed"),
        ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed"),
        ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
        OSError(errno.EHOSTUNREACH, "No route to host"),
        TimeoutError(),
        redis.exceptions.ConnectionError("Error 111 connecting"),
        redis.exceptions.TimeoutError("Timeout reading from socket"),
        redis.exceptions.ClusterDownError("CLUSTERDOWN The cluster is down"),
        redis.exceptions.MasterDownError("MASTERDOWN Link with MASTER is down"),
        redis.exceptions.TryAgainError("TRYAGAIN Multiple keys request during rehashing of slot"),
        redis.exceptions.SlotNotCoveredError("Slot 42 is not covered by the cluster"),
    ],
)
def test_passing_failures_are_transient(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.exceptions.UniqueViolationError("duplicate key"),
        asyncpg.exceptions.UndefinedTableError("relation does not exist"),
        asyncpg.exceptions.RaiseError("raised by a trigger"),
        asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
        redis.exceptions.ResponseError("WRONGTYPE"),
        redis.exceptions.ClusterCrossSlotError("CROSSSLOT Keys in request don't hash to the same slot"),
        redis.exceptions.RedisClusterException("EVALSHA - all keys must map to the same key slot"),
        FileNotFoundError(errno.ENOENT, "no such file"),
        ValueError("bad input"),
        KeyError("x"),
    ],
)
def test_other_failures_are_not(exc: BaseException) -> None:
    assert not is_transient(exc)


def test_a_failure_raised_from_a_transient_one_is_transient() -> None:
    try:
        try:
            raise ConnectionResetError(errno.ECONNRESET, "reset")
        except ConnectionResetError as inner:
            raise RuntimeError("could not load the room") from inner
    except RuntimeError as outer:
        assert is_transient(outer)


def test_an_unrelated_failure_while_handling_a_transient_one_is_not() -> None:
    try:
        try:
            raise ConnectionResetError(errno.ECONNRESET, "reset")
        except ConnectionResetError:
            raise KeyError("bug in the handler") from None
    except KeyError as outer:
        assert not is_transient(outer)
