"""FastAPI dependencies: the app's backends and settings, bearer tokens, the client's IP hash."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from chatpop_edge.backends import Backends
from chatpop_edge.client_ip import ClientAddressResolver, hash_ip
from chatpop_edge.errors import ApiError
from chatpop_edge.models import MAX_TOKEN_LENGTH
from chatpop_edge.settings import EdgeSettings

_bearer_scheme = HTTPBearer(
    auto_error=False,
    description="An access token (auth endpoints, room creation, join) or a room token (messages).",
)


def get_settings(request: Request) -> EdgeSettings:
    settings: EdgeSettings = request.app.state.settings
    return settings


def get_backends(request: Request) -> Backends:
    backends: Backends = request.app.state.backends
    return backends


def get_resolver(request: Request) -> ClientAddressResolver:
    resolver: ClientAddressResolver = request.app.state.resolver
    return resolver


def optional_token(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer_scheme)],
) -> str | None:
    if credentials is None or not credentials.credentials.strip():
        return None
    token = credentials.credentials.strip()
    if len(token) > MAX_TOKEN_LENGTH:
        # No token of ours is this long: refused here rather than parsed by a service.
        raise ApiError(401, "invalid_token", "The token is not valid.")
    return token


def required_token(token: Annotated[str | None, Depends(optional_token)]) -> str:
    if token is None:
        raise ApiError(401, "unauthenticated", "An `Authorization: Bearer <token>` header is required.")
    return token


def client_ip_hash(
    request: Request,
    settings: Annotated[EdgeSettings, Depends(get_settings)],
    resolver: Annotated[ClientAddressResolver, Depends(get_resolver)],
) -> str:
    client = request.client.host if request.client else None
    ip = resolver.client_ip(client, request.headers.getlist("x-forwarded-for"))
    return hash_ip(settings.ip_hash_secret, ip)


SettingsDep = Annotated[EdgeSettings, Depends(get_settings)]
BackendsDep = Annotated[Backends, Depends(get_backends)]
OptionalToken = Annotated[str | None, Depends(optional_token)]
RequiredToken = Annotated[str, Depends(required_token)]
ClientIpHash = Annotated[str, Depends(client_ip_hash)]
