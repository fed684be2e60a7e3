"""Access codes of private rooms, kept only as argon2id hashes.

Hashing is deliberately slow, so it runs in a worker thread and never stalls the event loop.
"""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError


class AccessCodeHasher:
    def __init__(self, *, time_cost: int, memory_kib: int, parallelism: int) -> None:
        self._hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism)

    async def hash(self, code: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, code)

    async def verify(self, stored_hash: str, code: str) -> bool:
        return await asyncio.to_thread(self._verify, stored_hash, code)

    def _verify(self, stored_hash: str, code: str) -> bool:
        try:
            return bool(self._hasher.verify(stored_hash, code))
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
