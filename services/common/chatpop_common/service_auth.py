"""Service credentials: how one ChatPop service proves to another that it is a ChatPop service.

A service asks identity for a short-lived service token (`IssueServiceToken`), proving itself with
an HMAC-SHA256, keyed with the shared SERVICE_TOKEN_SECRET, of its name and the current Unix time
(`service_proof`): the secret itself never crosses the wire, and a proof is only accepted within
PROOF_MAX_AGE seconds of its time. identity signs the token like every other (EdDSA, `typ: service`,
`sub: <service>`, audience `chatpop:service`); callees verify it locally with identity's public keys
and check the caller's name (`require_service`). `ServiceCredentials` keeps one token per process
and fetches the next one before the current one expires.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING

from chatpop.identity.v1 import identity_pb2, identity_pb2_grpc
from chatpop_common.auth import SERVICE_TOKEN_TYPE, Principal, current_principal
from chatpop_common.errors import PermissionDenied, Unauthenticated

if TYPE_CHECKING:
    from chatpop.identity.v1.identity_pb2_grpc import IdentityServiceAsyncStub

log = logging.getLogger(__name__)

# The services that may hold a service token.
# `cli` is the operator's admin CLI (python -m chatpop_common.admin).
SERVICE_NAMES = frozenset({"identity", "rooms", "messaging", "payments", "edge", "cli"})
SECRET_MIN_LENGTH = 32
# Seconds a proof is accepted either side of identity's clock.
PROOF_MAX_AGE = 60
# A token is replaced once less than this share of its lifetime is left.
REFRESH_SHARE = 0.5
ISSUE_TIMEOUT = 5.0

Clock = Callable[[], float]


def check_secret(value: str) -> str:
    if len(value) < SECRET_MIN_LENGTH:
        raise ValueError(f"SERVICE_TOKEN_SECRET must be a secret of at least {SECRET_MIN_LENGTH} characters")
    return value


def service_proof(secret: str, service: str, issued_at: int) -> str:
    """Hex HMAC-SHA256 of `service` and `issued_at` (Unix seconds), keyed with the shared secret."""
    message = f"chatpop-service-token:{service}:{issued_at}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def proof_is_valid(secret: str, service: str, issued_at: int, proof: str, now: float) -> bool:
    if abs(now - issued_at) > PROOF_MAX_AGE:
        return False
    return hmac.compare_digest(service_proof(secret, service, issued_at), proof)


def is_service(principal: Principal | None, allowed: Collection[str]) -> bool:
    return (
        principal is not None and principal.token_type == SERVICE_TOKEN_TYPE and principal.subject in allowed
    )


def require_service(*allowed: str, admins: bool = False) -> Principal:
    """The caller's principal when it is a service token of one of `allowed` (or, with `admins`,
    an admin's access token); otherwise the call is refused. A user's token never passes as a
    service's."""
    principal = current_principal()
    if principal is None:
        raise Unauthenticated("A service credential is required.", code="unauthenticated")
    if is_service(principal, allowed):
        return principal
    if admins and principal.token_type == "access" and principal.is_admin:
        return principal
    raise PermissionDenied("Only ChatPop's own services may call this.", code="forbidden")


class ServiceCredentials:
    """This service's token, fetched from identity on first use and again before it expires.

    `metadata()` returns call metadata that carries it; concurrent callers share one fetch.
    """

    def __init__(
        self,
        identity: identity_pb2_grpc.IdentityServiceStub | IdentityServiceAsyncStub,
        service: str,
        secret: str,
        *,
        clock: Clock = time.time,
    ) -> None:
        if service not in SERVICE_NAMES:
            raise ValueError(f"{service!r} is not a ChatPop service")
        self._identity = identity
        self._service = service
        self._secret = check_secret(secret)
        self._clock = clock
        self._token = ""
        self._refresh_at = 0.0
        self._expires_at = 0.0
        self._lock = asyncio.Lock()

    async def token(self) -> str:
        if self._token and self._clock() < self._refresh_at:
            return self._token
        async with self._lock:
            now = self._clock()
            if self._token and now < self._refresh_at:
                return self._token
            try:
                await self._fetch()
            except Exception:
                # A token that is still valid keeps serving while identity is briefly away.
                if self._token and self._clock() < self._expires_at:
                    log.warning("could not renew the service token; the current one is still valid")
                    return self._token
                raise
            return self._token

    async def _fetch(self) -> None:
        issued_at = int(self._clock())
        response = await self._identity.IssueServiceToken(
            identity_pb2.IssueServiceTokenRequest(
                service=self._service,
                issued_at=issued_at,
                proof=service_proof(self._secret, self._service, issued_at),
            ),
            timeout=ISSUE_TIMEOUT,
        )
        lifetime = max(1, int(response.expires_in))
        self._token = str(response.service_token)
        self._expires_at = issued_at + lifetime
        self._refresh_at = issued_at + lifetime * REFRESH_SHARE

    async def metadata(self) -> Sequence[tuple[str, str]]:
        """Call metadata carrying this service's token (`authorization: Bearer …`)."""
        return (("authorization", f"Bearer {await self.token()}"),)
