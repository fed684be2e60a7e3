"""After identity released an account's reserved username, rooms takes its verified badge away.

identity and rooms own different data, so the edge makes the second call as soon as the first one
succeeded, with the caller's own access token: rooms lets a caller touch only their own participants.
The change itself has happened by then, so a failure here is retried while rooms is briefly away,
then logged and counted, never turned into an error for the person who changed their name.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
from prometheus_client import Counter

from chatpop.rooms.v1 import rooms_pb2
from chatpop_edge.backends import Backends, auth_metadata

log = logging.getLogger(__name__)

BADGE_CLEAR_FAILURES = Counter(
    "chatpop_edge_badge_clear_failures",
    "Released reserved usernames whose verified badges rooms could not take off.",
)
_RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
ATTEMPTS = 4
_FIRST_PAUSE = 0.2


async def clear_released_badges(backends: Backends, token: str, username: str) -> int:
    """How many of the caller's participants lost the badge of `username`; -1 when rooms never answered."""
    for attempt in range(ATTEMPTS):
        try:
            response = await backends.rooms.ClearVerifiedUsername(
                rooms_pb2.ClearVerifiedUsernameRequest(username=username),
                metadata=auth_metadata(token),
                timeout=backends.timeout,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() in _RETRYABLE and attempt + 1 < ATTEMPTS:
                await asyncio.sleep(_FIRST_PAUSE * 2**attempt)
                continue
            BADGE_CLEAR_FAILURES.inc()
            log.error(
                "rooms could not take the verified badge off a released username",
                extra={"grpc_code": exc.code().name, "details": exc.details()},
            )
            return -1
        return len(response.participants)
    return -1
