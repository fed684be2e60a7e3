"""Sessions, accounts and tokens: thin calls to identity."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status
from starlette.convertors import Convertor, register_url_convertor

from chatpop.identity.v1 import identity_pb2
from chatpop_edge import models
from chatpop_edge.backends import auth_metadata
from chatpop_edge.badges import clear_released_badges
from chatpop_edge.deps import BackendsDep, ClientIpHash, OptionalToken, RequiredToken
from chatpop_edge.errors import error_responses

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])


class _AnyTextConvertor(Convertor[str]):
    """The rest of the path, line breaks included (`:path` stops at one, and the route would not match)."""

    regex = "(?s:.*)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("anytext", _AnyTextConvertor())

FORGOT_PASSWORD_ANSWER = (
    "If an account uses this address, we sent it a link to reset the password. Check your inbox."
)


@router.post(
    "/anonymous",
    status_code=status.HTTP_201_CREATED,
    response_model=models.TokenResponse,
    responses=error_responses(403, 429),
    summary="Start an anonymous session",
)
async def create_anonymous_session(backends: BackendsDep, ip_hash: ClientIpHash) -> models.TokenResponse:
    response = await backends.identity.CreateAnonymousSession(
        identity_pb2.CreateAnonymousSessionRequest(client_ip_hash=ip_hash), timeout=backends.timeout
    )
    return models.TokenResponse.from_proto(response.identity, response.tokens)


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    response_model=models.TokenResponse,
    responses=error_responses(403, 409, 429),
    summary="Create an account and sign in",
    description="403 `site_banned` from a network banned from ChatPop.",
)
async def register(
    body: models.RegisterRequest, backends: BackendsDep, ip_hash: ClientIpHash
) -> models.TokenResponse:
    response = await backends.identity.Register(
        identity_pb2.RegisterRequest(
            email=body.email,
            password=body.password,
            reserved_username=body.reserved_username or "",
            client_ip_hash=ip_hash,
        ),
        timeout=backends.timeout,
    )
    return models.TokenResponse.from_proto(response.identity, response.tokens)


@router.post(
    "/login",
    response_model=models.TokenResponse,
    responses=error_responses(401, 403, 429),
    summary="Sign in with email and password",
    description="""401 `invalid_credentials` for a wrong email or password. 403 `site_banned` for an
account banned from ChatPop, and for anyone signing in from a network banned from it.""",
)
async def login(
    body: models.LoginRequest, backends: BackendsDep, ip_hash: ClientIpHash
) -> models.TokenResponse:
    response = await backends.identity.Login(
        identity_pb2.LoginRequest(email=body.email, password=body.password, client_ip_hash=ip_hash),
        timeout=backends.timeout,
    )
    return models.TokenResponse.from_proto(response.identity, response.tokens)


@router.post(
    "/refresh",
    response_model=models.TokenResponse,
    responses=error_responses(401, 403, 429),
    summary="Rotate a refresh token for a new token pair",
)
async def refresh(
    body: models.RefreshRequest, backends: BackendsDep, ip_hash: ClientIpHash
) -> models.TokenResponse:
    response = await backends.identity.RefreshTokens(
        identity_pb2.RefreshTokensRequest(refresh_token=body.refresh_token, client_ip_hash=ip_hash),
        timeout=backends.timeout,
    )
    return models.TokenResponse.from_proto(response.identity, response.tokens)


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(401),
    summary="Revoke a refresh token and its family",
)
async def logout(body: models.RefreshRequest, backends: BackendsDep) -> Response:
    await backends.identity.Logout(
        identity_pb2.LogoutRequest(refresh_token=body.refresh_token), timeout=backends.timeout
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/me",
    response_model=models.MeResponse,
    responses=error_responses(401),
    summary="The identity behind the access token",
)
async def me(backends: BackendsDep, token: RequiredToken) -> models.MeResponse:
    response = await backends.identity.GetIdentity(
        identity_pb2.GetIdentityRequest(), metadata=auth_metadata(token), timeout=backends.timeout
    )
    principal = await backends.verifier.verify(token)
    return models.MeResponse(
        identity=models.Identity.from_proto(response.identity),
        is_admin=principal.token_type == "access" and principal.is_admin,
    )


@router.put(
    "/me/reserved-username",
    response_model=models.MeResponse,
    responses=error_responses(401, 403, 409, 429),
    summary="Reserve a username for your account, or change the one it holds",
    description="""A reserved username is yours alone, with a verified badge in every room you join under
it. Reserving the name you already hold (in any case) changes nothing; changing only its case is
always allowed. Changing to another name:

- releases the old one, which is then held back from every other account for
  `RESERVED_USERNAME_QUARANTINE_DAYS` (30 by default) so nobody can pose as you; you may take it back;
- takes the verified badge off your participants under the old name (messages already sent keep the
  badge they were sent with);
- is allowed once per `RESERVED_USERNAME_CHANGE_INTERVAL` (24 hours by default): sooner is 429
  `username_change_too_soon` with Retry-After.

Errors: 403 `account_required` (anonymous session); 409 `username_taken`, `username_quarantined`;
422 `username_invalid`, `username_reserved`, `username_profane`.""",
)
async def reserve_username(
    body: models.ReserveUsernameRequest, backends: BackendsDep, token: RequiredToken
) -> models.MeResponse:
    response = await backends.identity.ChangeReservedUsername(
        identity_pb2.ChangeReservedUsernameRequest(username=body.reserved_username),
        metadata=auth_metadata(token),
        timeout=backends.timeout,
    )
    if response.previous_username:
        await clear_released_badges(backends, token, response.previous_username)
    principal = await backends.verifier.verify(token)
    return models.MeResponse(
        identity=models.Identity.from_proto(response.identity),
        is_admin=principal.token_type == "access" and principal.is_admin,
    )


@router.post(
    "/password/forgot",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=models.ForgotPasswordResponse,
    responses=error_responses(429),
    summary="Mail a link to reset a forgotten password",
    description="""Always 202 with the same body, whether or not an account uses the address, and the
mail is sent after the answer, so neither tells. When an account exists, it gets a mail with a link to
`{PUBLIC_URL}/reset-password?token=…` that works once, for `PASSWORD_RESET_TTL` seconds (30 minutes
by default).

Errors: 422 `invalid_email`; 429 `too_many_reset_requests` (per address and per client network, each
per hour) with Retry-After; 503 `reset_unavailable` while the limits cannot be checked.""",
)
async def forgot_password(
    body: models.ForgotPasswordRequest, backends: BackendsDep, ip_hash: ClientIpHash
) -> models.ForgotPasswordResponse:
    await backends.identity.RequestPasswordReset(
        identity_pb2.RequestPasswordResetRequest(email=body.email, client_ip_hash=ip_hash),
        timeout=backends.timeout,
    )
    return models.ForgotPasswordResponse(message=FORGOT_PASSWORD_ANSWER)


@router.post(
    "/password/reset",
    response_model=models.TokenResponse,
    responses=error_responses(),
    summary="Set a new password with the token from a reset mail, and sign in",
    description="""Uses the token up (also when it has expired), signs the account out everywhere and
answers with a new token pair for this device. The password rules are those of registration; a weak
password leaves the token usable.

Errors: 422 `weak_password`, `reset_token_invalid` (unknown or malformed), `reset_token_expired`,
`reset_token_used`.""",
)
async def reset_password(body: models.ResetPasswordRequest, backends: BackendsDep) -> models.TokenResponse:
    response = await backends.identity.ResetPassword(
        identity_pb2.ResetPasswordRequest(token=body.token, new_password=body.new_password),
        timeout=backends.timeout,
    )
    return models.TokenResponse.from_proto(response.identity, response.tokens)


@router.delete(
    "/me",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(401, 403, 429),
    summary="Delete your account for good",
    description="""Needs the account's access token and its password. At once: its email, password,
reserved username (free for anyone from now on), refresh tokens and reset links are gone, and every token
of the account stops working for signing in, refreshing and joining rooms (`401 account_deleted`). Then,
within moments: in every room the account joined it appears under a neutral name (`deleted_…`), or, with
`erase_messages`, its messages are deleted too (live clients get `participant_forgotten`); rooms it hosts
are closed (their history stays, without a host).

Errors: 401 (token); 403 `wrong_password`, `account_required`; 429 `too_many_attempts` with
Retry-After.""",
)
async def delete_account(
    body: models.DeleteAccountRequest, backends: BackendsDep, token: RequiredToken
) -> Response:
    await backends.identity.DeleteAccount(
        identity_pb2.DeleteAccountRequest(password=body.password, erase_messages=body.erase_messages),
        metadata=auth_metadata(token),
        timeout=backends.timeout,
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/password",
    response_model=models.TokenResponse,
    responses=error_responses(401, 403, 429),
    summary="Change your password, signing every other device out",
    description="""Needs an account's access token and its current password. Every other session of the
account is signed out; the answer is a new token pair for this device (the old refresh token no longer
works).

Errors: 401 (token); 403 `current_password_incorrect`, `account_required`; 422 `weak_password`;
429 `too_many_password_changes` with Retry-After.""",
)
async def change_password(
    body: models.ChangePasswordRequest, backends: BackendsDep, token: RequiredToken
) -> models.TokenResponse:
    response = await backends.identity.ChangePassword(
        identity_pb2.ChangePasswordRequest(
            current_password=body.current_password, new_password=body.new_password
        ),
        metadata=auth_metadata(token),
        timeout=backends.timeout,
    )
    return models.TokenResponse.from_proto(response.identity, response.tokens)


@router.get(
    # Any text, so that a name with a slash or a line break still gets an answer (it is invalid) rather
    # than a 404.
    "/usernames/{name:anytext}",
    response_model=models.UsernameAvailability,
    responses=error_responses(401),
    summary="Whether a username can be reserved, and why not",
)
async def username_availability(
    name: Annotated[str, Path(min_length=1, max_length=64, description="The username to check.")],
    backends: BackendsDep,
    token: OptionalToken,
) -> models.UsernameAvailability:
    response = await backends.identity.CheckUsername(
        identity_pb2.CheckUsernameRequest(username=name),
        metadata=auth_metadata(token),
        timeout=backends.timeout,
    )
    return models.UsernameAvailability.from_proto(response)
