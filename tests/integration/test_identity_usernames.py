"""identity's username API over gRPC: availability, reserving later, generated names, session limits.

A real identity server in-process on a free port, against the session's Postgres and Redis. Every
test makes its own accounts, names and client address hashes.
"""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from chatpop.identity.v1 import identity_pb2
from chatpop_common.clients import bearer
from chatpop_common.errors import error_details
from chatpop_common.profanity import is_profane
from tests.integration.identity_server import PASSWORD, running_identity
from tests.integration.redis_targets import RedisTarget, keys_matching

if TYPE_CHECKING:
    from chatpop.identity.v1.identity_pb2_grpc import IdentityServiceAsyncStub as Stub

_NAME_LETTERS = "bdghjmnpqrvwxz"
GENERATED = re.compile(r"[A-Z][a-z]+[A-Z][a-z]+[1-9][0-9]*")


def _letters(count: int) -> str:
    return "".join(_NAME_LETTERS[byte % len(_NAME_LETTERS)] for byte in os.urandom(count))


def _name(prefix: str = "Nm") -> str:
    return f"{prefix}_{_letters(9)}"


def _ip() -> str:
    return uuid.uuid4().hex


async def _fails(call: Any, status: grpc.StatusCode, code: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == status, info.value.details()
    assert error_details(info.value)[0] == code
    return info.value


async def _account(stub: Stub, reserved: str = "") -> identity_pb2.RegisterResponse:
    response: identity_pb2.RegisterResponse = await stub.Register(
        identity_pb2.RegisterRequest(
            email=f"{uuid.uuid4().hex}@example.com", password=PASSWORD, reserved_username=reserved
        )
    )
    return response


async def _check(stub: Stub, name: str, token: str | None = None) -> identity_pb2.CheckUsernameResponse:
    response: identity_pb2.CheckUsernameResponse = await stub.CheckUsername(
        identity_pb2.CheckUsernameRequest(username=name), metadata=bearer(token) if token else None
    )
    return response


# --- availability ---------------------------------------------------------------------------------


async def test_a_free_name_is_available(stub: Stub) -> None:
    name = _name()
    checked = await _check(stub, f"  {name} ")
    assert (checked.username, checked.available, checked.taken) == (name, True, False)
    assert checked.problem == identity_pb2.USERNAME_PROBLEM_UNSPECIFIED


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("abcd", identity_pb2.USERNAME_PROBLEM_INVALID),
        ("x' OR '1'='1", identity_pb2.USERNAME_PROBLEM_INVALID),
        ("<script>x</script>", identity_pb2.USERNAME_PROBLEM_INVALID),
        ("\u0430dmin_1", identity_pb2.USERNAME_PROBLEM_INVALID),  # Cyrillic a
        ("party\U0001f389time", identity_pb2.USERNAME_PROBLEM_INVALID),
        ("Admin_1", identity_pb2.USERNAME_PROBLEM_RESERVED_WORD),
        ("Sh1t_Head", identity_pb2.USERNAME_PROBLEM_PROFANITY),
        ("CoolAss99", identity_pb2.USERNAME_PROBLEM_PROFANITY),
    ],
)
async def test_unavailable_names_say_why(stub: Stub, name: str, problem: int) -> None:
    checked = await _check(stub, name)
    assert not checked.available
    assert checked.problem == problem
    assert checked.message


async def test_a_reserved_name_is_taken_ignoring_case_and_known_to_its_owner(stub: Stub) -> None:
    name = _name("Own")
    owner = await _account(stub, name)
    for variant in (name, name.lower(), name.upper()):
        checked = await _check(stub, variant)
        assert (checked.available, checked.problem, checked.taken, checked.yours) == (
            False,
            identity_pb2.USERNAME_PROBLEM_TAKEN,
            True,
            False,
        )
    mine = await _check(stub, name.lower(), owner.tokens.access_token)
    assert (mine.taken, mine.yours) == (True, True)
    assert "your" in mine.message
    stranger = await _account(stub)
    theirs = await _check(stub, name, stranger.tokens.access_token)
    assert (theirs.taken, theirs.yours) == (True, False)


# --- reserving later ------------------------------------------------------------------------------


async def test_an_account_reserves_a_name_later_once(stub: Stub) -> None:
    account = await _account(stub)
    token = account.tokens.access_token
    name = _name("Later")
    reserved = await stub.ReserveUsername(
        identity_pb2.ReserveUsernameRequest(username=f" {name} "), metadata=bearer(token)
    )
    assert reserved.identity.reserved_username == name
    me = await stub.GetIdentity(identity_pb2.GetIdentityRequest(), metadata=bearer(token))
    assert me.identity.reserved_username == name

    # Reserving it again (any case) changes nothing; another name is refused: reservations are permanent.
    again = await stub.ReserveUsername(
        identity_pb2.ReserveUsernameRequest(username=name.upper()), metadata=bearer(token)
    )
    assert again.identity.reserved_username == name
    await _fails(
        stub.ReserveUsername(identity_pb2.ReserveUsernameRequest(username=_name()), metadata=bearer(token)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "username_already_reserved",
    )


async def test_reserving_refuses_taken_bad_and_anonymous(stub: Stub) -> None:
    holder = await _account(stub, _name("Hold"))
    account = await _account(stub)
    token = account.tokens.access_token
    await _fails(
        stub.ReserveUsername(
            identity_pb2.ReserveUsernameRequest(username=holder.identity.reserved_username.lower()),
            metadata=bearer(token),
        ),
        grpc.StatusCode.ALREADY_EXISTS,
        "username_taken",
    )
    for bad, code in (
        ("no", "username_invalid"),
        ("Support_1", "username_reserved"),
        ("F_u_c_k_1", "username_profane"),
    ):
        await _fails(
            stub.ReserveUsername(identity_pb2.ReserveUsernameRequest(username=bad), metadata=bearer(token)),
            grpc.StatusCode.INVALID_ARGUMENT,
            code,
        )
    me = await stub.GetIdentity(identity_pb2.GetIdentityRequest(), metadata=bearer(token))
    assert me.identity.reserved_username == ""

    anonymous = await stub.CreateAnonymousSession(identity_pb2.CreateAnonymousSessionRequest())
    await _fails(
        stub.ReserveUsername(
            identity_pb2.ReserveUsernameRequest(username=_name()),
            metadata=bearer(anonymous.tokens.access_token),
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "account_required",
    )
    await _fails(
        stub.ReserveUsername(identity_pb2.ReserveUsernameRequest(username=_name())),
        grpc.StatusCode.UNAUTHENTICATED,
        "unauthenticated",
    )


async def test_concurrent_reservations_of_one_name_give_it_to_one_account(stub: Stub) -> None:
    name = _name("Race")
    accounts = await asyncio.gather(*(_account(stub) for _ in range(5)))

    async def reserve(account: identity_pb2.RegisterResponse) -> str:
        try:
            await stub.ReserveUsername(
                identity_pb2.ReserveUsernameRequest(username=name),
                metadata=bearer(account.tokens.access_token),
            )
        except grpc.aio.AioRpcError as exc:
            return error_details(exc)[0]
        return "reserved"

    outcomes = await asyncio.gather(*(reserve(a) for a in accounts))
    assert sorted(outcomes) == ["reserved"] + ["username_taken"] * 4


async def test_registering_with_a_profane_name_is_refused_and_creates_nothing(stub: Stub) -> None:
    email = f"{uuid.uuid4().hex}@example.com"
    await _fails(
        stub.Register(
            identity_pb2.RegisterRequest(email=email, password=PASSWORD, reserved_username="B1tch_Pls")
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "username_profane",
    )
    await _fails(
        stub.Login(identity_pb2.LoginRequest(email=email, password=PASSWORD)),
        grpc.StatusCode.UNAUTHENTICATED,
        "invalid_credentials",
    )


# --- generated names ------------------------------------------------------------------------------


async def test_suggested_names_are_short_clean_and_shaped(stub: Stub) -> None:
    response = await stub.SuggestUsernames(identity_pb2.SuggestUsernamesRequest(count=25, digits=3))
    names = list(response.usernames)
    assert len(names) == 25 == len(set(names))
    for name in names:
        match = GENERATED.fullmatch(name)
        assert match is not None and len(name) <= 15, name
        assert len(re.sub(r"\D", "", name)) == 3
        checked = await _check(stub, name)
        assert checked.available, (name, checked.message)
    default = await stub.SuggestUsernames(identity_pb2.SuggestUsernamesRequest())
    assert len(default.usernames) == 10
    assert all(len(re.sub(r"\D", "", name)) == 2 for name in default.usernames)


async def test_suggestions_refuse_bad_counts(stub: Stub) -> None:
    for request in (
        identity_pb2.SuggestUsernamesRequest(count=51),
        identity_pb2.SuggestUsernamesRequest(count=-1),
        identity_pb2.SuggestUsernamesRequest(digits=-2),
    ):
        await _fails(stub.SuggestUsernames(request), grpc.StatusCode.INVALID_ARGUMENT, "invalid_argument")


def _clean_noun() -> str:
    """A random noun of this test's own, so that all nine one-digit names after "Tiny" are clean."""
    while True:
        noun = f"{_letters(1).upper()}{_letters(5)}"
        if not any(is_profane(f"Tiny{noun}{digit}") for digit in range(1, 10)):
            return noun


async def test_suggestions_skip_names_accounts_reserved(
    database_url: str, redis_url: str, key_file: Path, tmp_path: Path
) -> None:
    words = tmp_path / "words"
    words.mkdir()
    (words / "adjectives.txt").write_text("Tiny\n")
    (words / "nouns.txt").write_text(f"{_clean_noun()}\n")
    async with running_identity(database_url, redis_url, key_file, username_words_dir=words) as tiny:
        all_names = set(
            (await tiny.SuggestUsernames(identity_pb2.SuggestUsernamesRequest(count=50, digits=1))).usernames
        )
        assert len(all_names) == 9
        taken = sorted(all_names)[:4]
        for name in taken:
            await _account(tiny, name.lower())
        for _ in range(5):
            offered = set(
                (
                    await tiny.SuggestUsernames(identity_pb2.SuggestUsernamesRequest(count=50, digits=1))
                ).usernames
            )
            assert offered == all_names - set(taken)


# --- session creation limit -----------------------------------------------------------------------


async def test_a_group_on_one_network_gets_sessions_but_a_flood_is_held_back(
    database_url: str, redis_target: RedisTarget, key_file: Path
) -> None:
    # The defaults: 60 an hour per address, 40 of them at once. On one Redis and on a Redis Cluster.
    async with running_identity(
        database_url, redis_target.url, key_file, redis_cluster=redis_target.cluster
    ) as limited:
        ip = _ip()

        async def start(client_ip_hash: str) -> str:
            try:
                await limited.CreateAnonymousSession(
                    identity_pb2.CreateAnonymousSessionRequest(client_ip_hash=client_ip_hash)
                )
            except grpc.aio.AioRpcError as exc:
                code, retry_after = error_details(exc)
                assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                # The bucket refills one session a minute: the next one is a minute away, not an hour.
                assert retry_after is not None and 50 <= retry_after <= 60
                assert "try again in a minute." in (exc.details() or "")
                return code
            return "created"

        # A class of 30 arriving at once gets in; one device flooding past the burst does not, and
        # concurrent requests cannot slip past the limit.
        outcomes = await asyncio.gather(*(start(ip) for _ in range(50)))
        assert sorted(outcomes) == ["created"] * 40 + ["too_many_sessions"] * 10
        redis = redis_target.client()
        try:
            # One bucket per address, tagged with it (its own cluster slot).
            assert await keys_matching(redis, f"identity:anon-sessions:*{ip}*") == [
                f"identity:anon-sessions:{{{ip}}}"
            ]
        finally:
            await redis.aclose()
        assert await start(_ip()) == "created"
        # Without an address (internal callers) nothing is counted.
        for _ in range(5):
            assert await start("") == "created"
        # Accounts are not limited by this.
        assert (await _account(limited)).identity.kind == identity_pb2.IDENTITY_KIND_USER


async def test_the_session_limit_lifts_when_the_window_ends(
    database_url: str, redis_target: RedisTarget, key_file: Path
) -> None:
    async with running_identity(
        database_url,
        redis_target.url,
        key_file,
        redis_cluster=redis_target.cluster,
        anonymous_session_limit=1,
        anonymous_session_window=1,
        anonymous_session_burst=1,
    ) as limited:
        request = identity_pb2.CreateAnonymousSessionRequest(client_ip_hash=_ip())
        await limited.CreateAnonymousSession(request)
        refused = await _fails(
            limited.CreateAnonymousSession(request), grpc.StatusCode.RESOURCE_EXHAUSTED, "too_many_sessions"
        )
        retry_after = error_details(refused)[1]
        assert retry_after == 1
        await asyncio.sleep(retry_after + 0.2)
        again = await limited.CreateAnonymousSession(request)
        assert again.identity.kind == identity_pb2.IDENTITY_KIND_ANONYMOUS
