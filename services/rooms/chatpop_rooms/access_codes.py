"""Access codes of private rooms: checked only against argon2id hashes, and sealed for their host.

Hashing is deliberately slow, so it runs in a worker thread and never stalls the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import os

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


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


class AccessCodeSealer:
    """Keeps a copy of each access code that only this service can open, so the host can see it again.

    AES-256-GCM with a random 96-bit nonce; the key is derived (HKDF-SHA256) from a secret given to the
    service (`ACCESS_CODE_KEY`), and the room id is bound as associated data, so a sealed code copied
    onto another room does not open. Checking a code never uses this: only the slow hash.
    """

    _INFO = b"chatpop rooms access-code sealing v1"

    def __init__(self, secret: bytes) -> None:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=self._INFO).derive(secret)
        self._aead = AESGCM(key)

    def seal(self, room_id: str, code: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, code.encode(), room_id.encode())
        return base64.urlsafe_b64encode(nonce + sealed).decode()

    def open(self, room_id: str, sealed: str) -> str | None:
        """The code, or None when the sealed copy does not open (another key, or tampered with)."""
        try:
            raw = base64.urlsafe_b64decode(sealed.encode())
            return self._aead.decrypt(raw[:12], raw[12:], room_id.encode()).decode()
        except (InvalidTag, ValueError):
            return None
