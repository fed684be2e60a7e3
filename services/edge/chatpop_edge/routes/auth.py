"""Sessions, accounts and tokens: thin calls to identity."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from chatpop.identity.v1 import identity_pb2
from chatpop_edge import models
from chatpop_edge.backends import auth_metadata
from chatpop_edge.deps import BackendsDep, ClientIpHash, OptionalToken, RequiredToken
from chatpop_edge.errors import error_responses

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])


@router.post(
    "/anonymous",
    status_code=status.HTTP_201_CREATED,
    response_model=models.TokenResponse,
    responses=error_responses(429),
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
    responses=error_responses(409, 429),
    summary="Create an account and sign in",
)
async def register(body: models.RegisterRequest, backends: BackendsDep) -> models.TokenResponse:
    response = await backends.identity.Register(
        identity_pb2.RegisterRequest(
            email=body.email, password=body.password, reserved_username=body.reserved_username or ""
        ),
        timeout=backends.timeout,
    )
    return models.TokenResponse.from_proto(response.identity, response.tokens)


@router.post(
    "/login",
    response_model=models.TokenResponse,
    responses=error_responses(401, 429),
    summary="Sign in with email and password",
)
async def login(body: models.LoginRequest, backends: BackendsDep) -> models.TokenResponse:
    response = await backends.identity.Login(
        identity_pb2.LoginRequest(email=body.email, password=body.password), timeout=backends.timeout
    )
    return models.TokenResponse.from_proto(response.identity, response.tokens)


@router.post(
    "/refresh",
    response_model=models.TokenResponse,
    responses=error_responses(401, 429),
    summary="Rotate a refresh token for a new token pair",
)
async def refresh(body: models.RefreshRequest, backends: BackendsDep) -> models.TokenResponse:
    response = await backends.identity.RefreshTokens(
        identity_pb2.RefreshTokensRequest(refresh_token=body.refresh_token), timeout=backends.timeout
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
    return models.MeResponse(identity=models.Identity.from_proto(response.identity))


@router.put(
    "/me/reserved-username",
    response_model=models.MeResponse,
    responses=error_responses(401, 403, 409),
    summary="Reserve a username for your account (once; it is yours in every room)",
)
async def reserve_username(
    body: models.ReserveUsernameRequest, backends: BackendsDep, token: RequiredToken
) -> models.MeResponse:
    response = await backends.identity.ReserveUsername(
        identity_pb2.ReserveUsernameRequest(username=body.reserved_username),
        metadata=auth_metadata(token),
        timeout=backends.timeout,
    )
    return models.MeResponse(identity=models.Identity.from_proto(response.identity))


@router.get(
    # `:path` so that a name with a slash still gets an answer (it is invalid) rather than a 404.
    "/usernames/{name:path}",
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
