"""Accounts that can be recovered and managed, over identity's gRPC API: forgotten passwords (a real
SMTP server receives the mail and the test follows its link), password changes, and reserved
usernames that change with a quarantine and a limit on how often.

identity runs in-process on a free port against the session's Postgres and Redis; mail goes to the
session's aiosmtpd server (tests/mailbox.py). Every test makes its own accounts and addresses.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import grpc
import pytest
from prometheus_client import REGISTRY

from chatpop.identity.v1 import identity_pb2
from chatpop_common.clients import bearer
from chatpop_common.devstack import free_port
from chatpop_common.errors import error_details
from tests.integration.identity_server import PASSWORD, running_identity
from tests.integration.redis_targets import RedisTarget, keys_matching
from tests.integration.test_identity_usernames import _clean_noun
from tests.mailbox import Mailbox

if TYPE_CHECKING:
    from chatpop.identity.v1.identity_pb2_grpc import IdentityServiceAsyncStub as Stub

PUBLIC_URL = "https://chat.example.test"
NEW_PASSWORD = "a brand new passphrase"
# Consonants only: random names can never spell a word the profanity filter refuses.
_LETTERS = "bdghjmnpqrvwxz"


def _email() -> str:
    return f"reset-{uuid.uuid4().hex[:12]}@example.com"


def _name(prefix: str = "Nm") -> str:
    return prefix + "_" + "".join(_LETTERS[b % len(_LETTERS)] for b in os.urandom(9))


def _ip() -> str:
    return hashlib.sha256(os.urandom(8)).hexdigest()


@pytest.fixture(scope="module")
async def stub(database_url: str, redis_url: str, key_file: Path, mailbox: Mailbox) -> AsyncIterator[Stub]:
    async with running_identity(
        database_url,
        redis_url,
        key_file,
        smtp_url=mailbox.url,
        mail_from="ChatPop <no-reply@chat.example.test>",
        public_url=PUBLIC_URL + "/",
    ) as client:
        yield client


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url, server_settings={"search_path": "identity"})
    yield conn
    await conn.close()


async def _fails(call: Any, status: grpc.StatusCode, code: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == status, info.value.details()
    assert error_details(info.value)[0] == code, info.value.details()
    return info.value


async def _register(stub: Stub, email: str | None = None, **fields: Any) -> identity_pb2.RegisterResponse:
    response: identity_pb2.RegisterResponse = await stub.Register(
        identity_pb2.RegisterRequest(email=email or _email(), password=PASSWORD, **fields)
    )
    return response


async def _login(stub: Stub, email: str, password: str = PASSWORD) -> identity_pb2.LoginResponse:
    response: identity_pb2.LoginResponse = await stub.Login(
        identity_pb2.LoginRequest(email=email, password=password)
    )
    return response


async def _forgot(stub: Stub, email: str, ip: str | None = None) -> identity_pb2.RequestPasswordResetResponse:
    response: identity_pb2.RequestPasswordResetResponse = await stub.RequestPasswordReset(
        identity_pb2.RequestPasswordResetRequest(email=email, client_ip_hash=ip or _ip())
    )
    return response


def _token(link: str) -> str:
    return parse_qs(urlsplit(link).query)["token"][0]


async def _mailed_token(stub: Stub, mailbox: Mailbox, email: str, count: int = 1) -> str:
    await _forgot(stub, email)
    mail = await mailbox.wait_for(email, count=count)
    return _token(mail.reset_link())


def _sign_in_refused(error: grpc.aio.AioRpcError) -> None:
    assert error_details(error)[0] in ("invalid_refresh_token", "refresh_token_reused")


# --- forgot and reset -------------------------------------------------------------------------


async def test_the_mailed_link_sets_a_new_password_once_and_signs_every_device_out(
    stub: Stub, mailbox: Mailbox, db: asyncpg.Connection
) -> None:
    email = _email()
    account = await _register(stub, email)
    phone = await _login(stub, email)

    assert await _forgot(stub, email.upper() + "  ") == identity_pb2.RequestPasswordResetResponse()
    mail = await mailbox.wait_for(email)
    assert mail.recipients == [email]
    assert mail.message["Subject"] == "Reset your ChatPop password"
    assert mail.message["From"] == "ChatPop <no-reply@chat.example.test>"
    link = mail.reset_link()
    assert link.startswith(f"{PUBLIC_URL}/reset-password?token=")
    assert "30 minutes" in mail.text
    assert mail.html is not None and link in mail.html
    token = _token(link)
    assert len(token) >= 43  # 32 random bytes, base64url

    # Only the token's SHA-256 is stored: nothing in the row gives the token back.
    rows = await db.fetch(
        "SELECT token_hash, expires_at - created_at AS ttl, used_at FROM password_resets"
        " WHERE identity_id = $1",
        uuid.UUID(account.identity.id),
    )
    assert len(rows) == 1
    assert bytes(rows[0]["token_hash"]) == hashlib.sha256(token.encode()).digest()
    assert token not in str(dict(rows[0]))
    assert rows[0]["ttl"] == timedelta(seconds=1800)
    assert rows[0]["used_at"] is None

    reset = await stub.ResetPassword(
        identity_pb2.ResetPasswordRequest(token=token, new_password=NEW_PASSWORD)
    )
    assert reset.identity.id == account.identity.id
    assert reset.identity.email == email
    assert reset.tokens.access_token and reset.tokens.refresh_token

    # The old password is gone, the new one works.
    await _fails(_login(stub, email), grpc.StatusCode.UNAUTHENTICATED, "invalid_credentials")
    assert (await _login(stub, email, NEW_PASSWORD)).identity.id == account.identity.id
    # Every earlier session is signed out; the one the reset started lives on.
    for earlier in (account.tokens.refresh_token, phone.tokens.refresh_token):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.RefreshTokens(identity_pb2.RefreshTokensRequest(refresh_token=earlier))
        _sign_in_refused(refused.value)
    renewed = await stub.RefreshTokens(
        identity_pb2.RefreshTokensRequest(refresh_token=reset.tokens.refresh_token)
    )
    assert renewed.identity.id == account.identity.id

    # The link works once.
    again = await _fails(
        stub.ResetPassword(identity_pb2.ResetPasswordRequest(token=token, new_password="yet another one")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "reset_token_used",
    )
    assert again.details() == "This reset link was already used. Ask for a new one if you still need it."
    assert (await _login(stub, email, NEW_PASSWORD)).identity.id == account.identity.id


async def test_an_expired_link_is_refused_and_used_up(
    stub: Stub, mailbox: Mailbox, db: asyncpg.Connection
) -> None:
    email = _email()
    await _register(stub, email)
    token = await _mailed_token(stub, mailbox, email)
    token_hash = hashlib.sha256(token.encode()).digest()
    await db.execute(
        "UPDATE password_resets SET expires_at = now() - interval '1 second' WHERE token_hash = $1",
        token_hash,
    )
    expired = await _fails(
        stub.ResetPassword(identity_pb2.ResetPasswordRequest(token=token, new_password=NEW_PASSWORD)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "reset_token_expired",
    )
    assert expired.details() == "This reset link has expired. Ask for a new one."
    assert (
        await db.fetchval("SELECT used_at FROM password_resets WHERE token_hash = $1", token_hash) is not None
    )
    # Even were its time extended, the token is spent; the password never changed.
    await db.execute(
        "UPDATE password_resets SET expires_at = now() + interval '1 hour' WHERE token_hash = $1", token_hash
    )
    await _fails(
        stub.ResetPassword(identity_pb2.ResetPasswordRequest(token=token, new_password=NEW_PASSWORD)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "reset_token_used",
    )
    assert (await _login(stub, email)).identity.email == email


async def test_a_weak_password_keeps_the_link_and_bad_tokens_are_refused(
    stub: Stub, mailbox: Mailbox
) -> None:
    email = _email()
    await _register(stub, email)
    token = await _mailed_token(stub, mailbox, email)
    weak = await _fails(
        stub.ResetPassword(identity_pb2.ResetPasswordRequest(token=token, new_password="short")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "weak_password",
    )
    assert weak.details() == "The password must be at least 8 characters long."
    await stub.ResetPassword(identity_pb2.ResetPasswordRequest(token=token, new_password=NEW_PASSWORD))
    assert (await _login(stub, email, NEW_PASSWORD)).identity.email == email

    for bad in ("", "   ", token[:-1], "x" * 500, "not-a-token"):
        error = await _fails(
            stub.ResetPassword(identity_pb2.ResetPasswordRequest(token=bad, new_password=NEW_PASSWORD)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "reset_token_invalid",
        )
        assert error.details().endswith(".")


async def test_a_newer_link_and_a_password_change_end_older_links(stub: Stub, mailbox: Mailbox) -> None:
    email = _email()
    account = await _register(stub, email)
    first = await _mailed_token(stub, mailbox, email, count=1)
    second = await _mailed_token(stub, mailbox, email, count=2)
    assert first != second
    # Either link works while the password is unchanged; using one ends the other.
    await stub.ResetPassword(identity_pb2.ResetPasswordRequest(token=second, new_password=NEW_PASSWORD))
    await _fails(
        stub.ResetPassword(identity_pb2.ResetPasswordRequest(token=first, new_password="another passphrase")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "reset_token_used",
    )
    third = await _mailed_token(stub, mailbox, email, count=3)
    signed_in = await _login(stub, email, NEW_PASSWORD)
    await stub.ChangePassword(
        identity_pb2.ChangePasswordRequest(current_password=NEW_PASSWORD, new_password="changed by hand"),
        metadata=bearer(signed_in.tokens.access_token),
    )
    await _fails(
        stub.ResetPassword(identity_pb2.ResetPasswordRequest(token=third, new_password=NEW_PASSWORD)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "reset_token_used",
    )
    assert (await _login(stub, email, "changed by hand")).identity.id == account.identity.id


async def test_asking_tells_nothing_about_whether_an_account_exists(
    stub: Stub, mailbox: Mailbox, db: asyncpg.Connection
) -> None:
    known, unknown = _email(), _email()
    await _register(stub, known)
    for_unknown = await _forgot(stub, unknown)
    for_known = await _forgot(stub, known)
    assert for_unknown.SerializeToString() == for_known.SerializeToString() == b""
    await mailbox.wait_for(known)
    assert mailbox.to(unknown) == []
    assert await db.fetchval("SELECT count(*) FROM identities WHERE email = $1", unknown) == 0
    # Only a malformed address is refused, whoever it might belong to.
    await _fails(_forgot(stub, "not an email"), grpc.StatusCode.INVALID_ARGUMENT, "invalid_email")


async def test_requests_are_limited_per_email_and_per_network(
    database_url: str, redis_target: RedisTarget, key_file: Path, mailbox: Mailbox
) -> None:
    async with running_identity(
        database_url,
        redis_target.url,
        key_file,
        redis_cluster=redis_target.cluster,
        smtp_url=mailbox.url,
        password_reset_email_limit=2,
        password_reset_network_limit=3,
    ) as stub:
        email = _email()
        await _register(stub, email)
        for _ in range(2):
            await _forgot(stub, email)
        limited = await _fails(
            _forgot(stub, email), grpc.StatusCode.RESOURCE_EXHAUSTED, "too_many_reset_requests"
        )
        _code, retry_after = error_details(limited)
        assert retry_after is not None and 3500 <= retry_after <= 3600
        assert limited.details() == "Too many password reset requests. Try again in 60 minutes."
        # Any spelling of the address counts against the same limit.
        await _fails(
            _forgot(stub, f"  {email.upper()}"), grpc.StatusCode.RESOURCE_EXHAUSTED, "too_many_reset_requests"
        )
        # An address that has no account is limited just the same.
        stranger = _email()
        for _ in range(2):
            await _forgot(stub, stranger)
        await _fails(_forgot(stub, stranger), grpc.StatusCode.RESOURCE_EXHAUSTED, "too_many_reset_requests")

        network = _ip()
        for _ in range(3):
            await _forgot(stub, _email(), network)
        await _fails(
            _forgot(stub, _email(), network), grpc.StatusCode.RESOURCE_EXHAUSTED, "too_many_reset_requests"
        )
        await _forgot(stub, _email(), _ip())

    # Redis holds keyed hashes, never an address; each limit's key is tagged with its own hash.
    client = redis_target.client()
    try:
        keys = await keys_matching(client, "identity:reset-*")
    finally:
        await client.aclose()
    assert keys
    assert not [key for key in keys if "@" in key or email.split("@")[0] in key]
    assert f"identity:reset-network:{{{network}}}" in keys
    assert all(re.fullmatch(r"identity:reset-(email|network):\{[0-9a-f]+\}", key) for key in keys)


async def test_mail_that_cannot_be_sent_is_counted_and_never_shown(
    database_url: str, redis_url: str, key_file: Path
) -> None:
    failures = "chatpop_identity_mail_failures_total"
    labels = {"kind": "password_reset"}
    before = REGISTRY.get_sample_value(failures, labels) or 0.0
    # Nothing listens there: every attempt fails to connect.
    async with running_identity(
        database_url, redis_url, key_file, smtp_url=f"smtp://127.0.0.1:{free_port()}", smtp_timeout=2
    ) as stub:
        email = _email()
        await _register(stub, email)
        assert await _forgot(stub, email) == identity_pb2.RequestPasswordResetResponse()
        for _ in range(200):
            if (REGISTRY.get_sample_value(failures, labels) or 0.0) > before:
                break
            await asyncio.sleep(0.05)
        assert (REGISTRY.get_sample_value(failures, labels) or 0.0) == before + 1


async def test_without_smtp_the_link_is_logged_and_works(
    database_url: str, redis_url: str, key_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="chatpop_identity.password_changes")
    async with running_identity(
        database_url, redis_url, key_file, public_url="http://localhost:8123"
    ) as stub:
        email = _email()
        await _register(stub, email)
        await _forgot(stub, email)
        pattern = re.compile(
            r"Password reset link \(no SMTP_URL set, nothing was mailed\) for (\S+): "
            r"(http://localhost:8123/reset-password\?token=\S+)"
        )
        found: list[re.Match[str]] = []
        for _ in range(200):
            found = [m for r in caplog.records if (m := pattern.fullmatch(r.getMessage()))]
            if found:
                break
            await asyncio.sleep(0.05)
        assert len(found) == 1 and found[0].group(1) == email
        reset = await stub.ResetPassword(
            identity_pb2.ResetPasswordRequest(token=_token(found[0].group(2)), new_password=NEW_PASSWORD)
        )
        assert reset.identity.email == email


# --- change password --------------------------------------------------------------------------


async def test_changing_the_password_needs_the_current_one_and_signs_other_devices_out(stub: Stub) -> None:
    email = _email()
    account = await _register(stub, email)
    laptop = await _login(stub, email)
    token = account.tokens.access_token

    wrong = await _fails(
        stub.ChangePassword(
            identity_pb2.ChangePasswordRequest(current_password="not my password", new_password=NEW_PASSWORD),
            metadata=bearer(token),
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "current_password_incorrect",
    )
    assert wrong.details() == "Your current password is not right."
    await _fails(
        stub.ChangePassword(
            identity_pb2.ChangePasswordRequest(current_password=PASSWORD, new_password="       "),
            metadata=bearer(token),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "weak_password",
    )
    # Nothing changed so far: the laptop still refreshes.
    laptop_now = await stub.RefreshTokens(
        identity_pb2.RefreshTokensRequest(refresh_token=laptop.tokens.refresh_token)
    )

    changed = await stub.ChangePassword(
        identity_pb2.ChangePasswordRequest(current_password=PASSWORD, new_password=NEW_PASSWORD),
        metadata=bearer(token),
    )
    assert changed.identity.id == account.identity.id
    await _fails(_login(stub, email), grpc.StatusCode.UNAUTHENTICATED, "invalid_credentials")
    assert (await _login(stub, email, NEW_PASSWORD)).identity.id == account.identity.id
    for other in (account.tokens.refresh_token, laptop_now.tokens.refresh_token):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.RefreshTokens(identity_pb2.RefreshTokensRequest(refresh_token=other))
        _sign_in_refused(refused.value)
    kept = await stub.RefreshTokens(
        identity_pb2.RefreshTokensRequest(refresh_token=changed.tokens.refresh_token)
    )
    assert kept.identity.id == account.identity.id


async def test_only_accounts_change_passwords_and_guesses_are_limited(
    database_url: str, redis_target: RedisTarget, key_file: Path
) -> None:
    async with running_identity(
        database_url, redis_target.url, key_file, redis_cluster=redis_target.cluster, password_change_limit=3
    ) as stub:
        anonymous = await stub.CreateAnonymousSession(identity_pb2.CreateAnonymousSessionRequest())
        await _fails(
            stub.ChangePassword(
                identity_pb2.ChangePasswordRequest(current_password=PASSWORD, new_password=NEW_PASSWORD),
                metadata=bearer(anonymous.tokens.access_token),
            ),
            grpc.StatusCode.PERMISSION_DENIED,
            "account_required",
        )
        await _fails(
            stub.ChangePassword(
                identity_pb2.ChangePasswordRequest(current_password=PASSWORD, new_password=NEW_PASSWORD)
            ),
            grpc.StatusCode.UNAUTHENTICATED,
            "unauthenticated",
        )
        account = await _register(stub)
        md = bearer(account.tokens.access_token)
        for guess in ("guess one", "guess two", "guess three"):
            await _fails(
                stub.ChangePassword(
                    identity_pb2.ChangePasswordRequest(current_password=guess, new_password=NEW_PASSWORD),
                    metadata=md,
                ),
                grpc.StatusCode.PERMISSION_DENIED,
                "current_password_incorrect",
            )
        limited = await _fails(
            stub.ChangePassword(
                identity_pb2.ChangePasswordRequest(current_password=PASSWORD, new_password=NEW_PASSWORD),
                metadata=md,
            ),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "too_many_password_changes",
        )
        assert re.fullmatch(
            r"Too many attempts to change your password\. Try again in (an hour|\d+ minutes)\.",
            limited.details(),
        )


# --- reserved username changes ------------------------------------------------------------------


async def _change(stub: Stub, token: str, name: str) -> identity_pb2.ChangeReservedUsernameResponse:
    response: identity_pb2.ChangeReservedUsernameResponse = await stub.ChangeReservedUsername(
        identity_pb2.ChangeReservedUsernameRequest(username=name), metadata=bearer(token)
    )
    return response


async def _check(stub: Stub, name: str, token: str | None = None) -> identity_pb2.CheckUsernameResponse:
    response: identity_pb2.CheckUsernameResponse = await stub.CheckUsername(
        identity_pb2.CheckUsernameRequest(username=name), metadata=bearer(token) if token else None
    )
    return response


async def test_a_changed_name_is_held_back_from_everyone_else(stub: Stub, db: asyncpg.Connection) -> None:
    old, new = _name("Old"), _name("New")
    owner = await _register(stub, reserved_username=old)
    token = owner.tokens.access_token
    changed = await _change(stub, token, f" {new} ")
    assert (changed.identity.reserved_username, changed.previous_username) == (new, old)
    me = await stub.GetIdentity(identity_pb2.GetIdentityRequest(), metadata=bearer(token))
    assert me.identity.reserved_username == new

    stranger = await _register(stub)
    checked = await _check(stub, old.lower(), stranger.tokens.access_token)
    assert (checked.available, checked.problem, checked.taken, checked.yours) == (
        False,
        identity_pb2.USERNAME_PROBLEM_QUARANTINED,
        True,
        False,
    )
    assert re.fullmatch(
        r"That username was given up recently and is held back, .* It is free again in 30 days\.",
        checked.message,
    )
    # The previous owner may take it back; nobody else may have it.
    mine = await _check(stub, old, token)
    assert (mine.available, mine.taken) == (True, False)
    for attempt in (
        _change(stub, stranger.tokens.access_token, old),
        stub.ReserveUsername(
            identity_pb2.ReserveUsernameRequest(username=old.upper()),
            metadata=bearer(stranger.tokens.access_token),
        ),
        _register(stub, reserved_username=old),
    ):
        await _fails(attempt, grpc.StatusCode.ALREADY_EXISTS, "username_quarantined")

    # Once the quarantine ends, the name is free for anyone.
    await db.execute(
        "UPDATE released_usernames SET held_until = now() - interval '1 second' WHERE username_lower = $1",
        old.lower(),
    )
    assert (await _check(stub, old, stranger.tokens.access_token)).available
    taken = await _change(stub, stranger.tokens.access_token, old)
    assert (taken.identity.reserved_username, taken.previous_username) == (old, "")


async def test_a_name_changes_at_most_once_a_day_and_the_owner_may_take_the_old_one_back(
    stub: Stub, db: asyncpg.Connection
) -> None:
    first, second, third = _name("One"), _name("Two"), _name("Three")
    account = await _register(stub)
    token = account.tokens.access_token
    # Reserving a first name, and changing only its case, are not changes.
    assert (await _change(stub, token, first)).previous_username == ""
    assert (await _change(stub, token, first.upper())).identity.reserved_username == first.upper()
    assert (await _change(stub, token, second)).previous_username == first.upper()

    too_soon = await _fails(
        _change(stub, token, third), grpc.StatusCode.RESOURCE_EXHAUSTED, "username_change_too_soon"
    )
    _code, retry_after = error_details(too_soon)
    assert retry_after is not None and 86_000 < retry_after <= 86_400
    assert too_soon.details() == (
        "You changed your reserved username recently. You can change it again in 24 hours."
    )
    # The same name again is no change at all.
    assert (await _change(stub, token, second)).previous_username == ""
    assert (await _check(stub, third)).available

    await db.execute(
        "UPDATE identities SET reserved_username_changed_at = now() - interval '25 hours' WHERE id = $1",
        uuid.UUID(account.identity.id),
    )
    back = await _change(stub, token, first)
    assert (back.identity.reserved_username, back.previous_username) == (first, second)
    # Taken back, the first name is no longer in quarantine; the second one now is.
    assert (
        await db.fetchval("SELECT count(*) FROM released_usernames WHERE username_lower = $1", first.lower())
        == 0
    )
    assert (await _check(stub, second)).problem == identity_pb2.USERNAME_PROBLEM_QUARANTINED
    assert (await _check(stub, first)).problem == identity_pb2.USERNAME_PROBLEM_TAKEN


async def test_dice_rolls_never_offer_a_name_in_quarantine(
    database_url: str, redis_url: str, key_file: Path, tmp_path: Path
) -> None:
    words = tmp_path / "words"
    words.mkdir()
    (words / "adjectives.txt").write_text("Tiny\n")
    (words / "nouns.txt").write_text(f"{_clean_noun()}\n")
    async with running_identity(database_url, redis_url, key_file, username_words_dir=words) as tiny:

        async def offered() -> set[str]:
            response = await tiny.SuggestUsernames(identity_pb2.SuggestUsernamesRequest(count=50, digits=1))
            return set(response.usernames)

        all_names = await offered()
        assert len(all_names) == 9
        given_up = sorted(all_names)[0]
        account = await _register(tiny, reserved_username=given_up)
        await _change(tiny, account.tokens.access_token, _name("Else"))
        for _ in range(3):
            assert await offered() == all_names - {given_up}


async def test_changing_refuses_taken_bad_and_anonymous(stub: Stub) -> None:
    holder = await _register(stub, reserved_username=_name("Hold"))
    account = await _register(stub, reserved_username=_name("Mine"))
    token = account.tokens.access_token
    await _fails(
        _change(stub, token, holder.identity.reserved_username.lower()),
        grpc.StatusCode.ALREADY_EXISTS,
        "username_taken",
    )
    for bad, code in (
        ("no", "username_invalid"),
        ("Support_1", "username_reserved"),
        ("F_u_c_k_1", "username_profane"),
    ):
        await _fails(_change(stub, token, bad), grpc.StatusCode.INVALID_ARGUMENT, code)
    # Refusals change nothing and are not counted as changes.
    assert (
        await _change(stub, token, _name("Fresh"))
    ).previous_username == account.identity.reserved_username
    anonymous = await stub.CreateAnonymousSession(identity_pb2.CreateAnonymousSessionRequest())
    await _fails(
        _change(stub, anonymous.tokens.access_token, _name()),
        grpc.StatusCode.PERMISSION_DENIED,
        "account_required",
    )
