"""Ed25519 signing keys: loading, JWK thumbprints (the `kid`), and the key-generation CLI.

`python -m chatpop_identity.keys generate PATH` writes a new private key (PEM, mode 0600);
`python -m chatpop_identity.keys public PATH` prints its public key (PEM), which is what
IDENTITY_EXTRA_PUBLIC_KEY_FILES takes while tokens signed by a retired key are still live.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from chatpop_common.auth import ALGORITHM


class KeyFileError(ValueError):
    """A key file that is missing, unreadable or not an Ed25519 key; the message says which."""


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise KeyFileError(f"{what} {path} cannot be read: {exc.strerror}") from None


def load_private_key(path: Path) -> Ed25519PrivateKey:
    data = _read(path, "signing key file")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"signing key file {path} is not an unencrypted PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"signing key file {path} does not hold an Ed25519 key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """A PEM public key; a PEM private key is accepted too (its public half is used)."""
    data = _read(path, "public key file")
    public: object
    try:
        public = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        try:
            public = serialization.load_pem_private_key(data, password=None).public_key()
        except (ValueError, TypeError) as exc:
            raise KeyFileError(f"public key file {path} is not a PEM public key") from exc
    if not isinstance(public, Ed25519PublicKey):
        raise KeyFileError(f"public key file {path} does not hold an Ed25519 key")
    return public


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def public_jwk(public: Ed25519PublicKey) -> dict[str, str]:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": _b64url(raw)}


def thumbprint(public: Ed25519PublicKey) -> str:
    """RFC 7638 JWK thumbprint: SHA-256 of the required members, sorted, without whitespace."""
    canonical = json.dumps(public_jwk(public), sort_keys=True, separators=(",", ":"))
    return _b64url(hashlib.sha256(canonical.encode("ascii")).digest())


@dataclass(frozen=True)
class KeyRing:
    """The key that signs new tokens and every public key that still verifies, by kid."""

    signing_key: Ed25519PrivateKey
    kid: str
    public_keys: dict[str, Ed25519PublicKey] = field(default_factory=dict)

    @classmethod
    def create(cls, signing_key: Ed25519PrivateKey, extra: Sequence[Ed25519PublicKey] = ()) -> KeyRing:
        current = signing_key.public_key()
        kid = thumbprint(current)
        public_keys = {kid: current}
        for key in extra:
            public_keys.setdefault(thumbprint(key), key)
        return cls(signing_key=signing_key, kid=kid, public_keys=public_keys)

    @classmethod
    def from_files(cls, signing_key_file: Path, extra_public_key_files: Sequence[Path] = ()) -> KeyRing:
        return cls.create(
            load_private_key(signing_key_file), [load_public_key(p) for p in extra_public_key_files]
        )

    def derive_secret(self, purpose: str) -> bytes:
        """A 32-byte secret for `purpose`, derived from the signing key (HKDF-SHA256).

        Every replica holds the same signing key, so they agree on it without another secret to
        deploy; one purpose's secret tells nothing about the key or another purpose's secret.
        """
        raw = self.signing_key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=f"chatpop:{purpose}".encode())
        return hkdf.derive(raw)

    def jwks(self) -> list[dict[str, str]]:
        """The current key first, then the ones kept for rotation."""
        return [
            {**public_jwk(key), "kid": kid, "alg": ALGORITHM, "use": "sig"}
            for kid, key in self.public_keys.items()
        ]


def write_new_key(path: Path, *, overwrite: bool = False) -> Ed25519PrivateKey:
    """Write a fresh Ed25519 private key as PEM, readable by its owner only."""
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass --force to replace it")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written under a temporary name created 0600, so the key is never readable by others,
    # not even for a moment, and a crash never leaves half a key at `path`.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return key


def public_pem(public: Ed25519PublicKey) -> str:
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chatpop_identity.keys", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    generate = commands.add_parser("generate", help="write a new Ed25519 signing key (PEM, mode 0600)")
    generate.add_argument("path", type=Path)
    generate.add_argument("--force", action="store_true", help="replace an existing file")
    public = commands.add_parser("public", help="print the public key (PEM) of a signing key")
    public.add_argument("path", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "generate":
            key = write_new_key(args.path, overwrite=args.force)
            print(f"wrote {args.path} (kid {thumbprint(key.public_key())})")
        else:
            print(public_pem(load_private_key(args.path).public_key()), end="")
    except (KeyFileError, FileExistsError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
