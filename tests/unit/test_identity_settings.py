"""Start-up checks: the key CLI, and settings that fail fast on a missing or unusable key."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from pydantic import ValidationError

from chatpop_identity.keys import KeyRing, load_private_key, load_public_key
from chatpop_identity.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PYTHONPATH = os.pathsep.join(
    str(ROOT / "services" / name) for name in ("common", "identity", "rooms", "messaging", "payments", "edge")
)


def _python(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": PYTHONPATH}
    return subprocess.run(
        [sys.executable, *args], env={**base, **(env or {})}, capture_output=True, text=True, timeout=60
    )


def _generate(path: Path) -> str:
    result = _python("-m", "chatpop_identity.keys", "generate", str(path))
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_generate_writes_a_private_ed25519_key(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "signing.pem"
    output = _generate(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert KeyRing.create(load_private_key(path)).kid in output
    assert list(tmp_path.joinpath("keys").iterdir()) == [path]


def test_generate_refuses_to_replace_a_key_unless_forced(tmp_path: Path) -> None:
    path = tmp_path / "signing.pem"
    _generate(path)
    before = path.read_bytes()
    again = _python("-m", "chatpop_identity.keys", "generate", str(path))
    assert again.returncode == 1
    assert "already exists" in again.stderr
    assert path.read_bytes() == before
    forced = _python("-m", "chatpop_identity.keys", "generate", "--force", str(path))
    assert forced.returncode == 0, forced.stderr
    assert path.read_bytes() != before


def test_public_subcommand_prints_the_matching_public_key(tmp_path: Path) -> None:
    private = tmp_path / "signing.pem"
    _generate(private)
    result = _python("-m", "chatpop_identity.keys", "public", str(private))
    assert result.returncode == 0, result.stderr
    public = tmp_path / "public.pem"
    public.write_text(result.stdout)
    expected = load_private_key(private).public_key().public_bytes_raw()
    assert load_public_key(public).public_bytes_raw() == expected


def _settings(**overrides: object) -> Settings:
    defaults = {
        "database_url": "postgresql://db.invalid/chatpop",
        "redis_url": "redis://redis.invalid:6379/0",
        "service_token_secret": "unit-test-service-token-secret-0123456789",
    }
    return Settings(**{**defaults, **overrides})  # type: ignore[arg-type]


def test_settings_defaults(tmp_path: Path) -> None:
    key = tmp_path / "signing.pem"
    _generate(key)
    settings = _settings(identity_signing_key_file=key)
    assert (settings.grpc_port, settings.metrics_port) == (7101, 9101)
    assert (settings.access_token_ttl, settings.refresh_token_ttl, settings.room_token_ttl) == (
        900,
        30 * 86400,
        3600,
    )
    assert settings.extra_public_key_paths == []
    assert settings.argon2_time_cost is None
    assert (
        settings.anonymous_session_limit,
        settings.anonymous_session_window,
        settings.anonymous_session_burst,
    ) == (60, 3600, 40)
    assert (settings.username_words_dir / "adjectives.txt").is_file()


def test_unusable_username_word_lists_fail_fast(tmp_path: Path) -> None:
    key = tmp_path / "signing.pem"
    _generate(key)
    with pytest.raises(ValidationError) as missing:
        _settings(identity_signing_key_file=key, username_words_dir=tmp_path / "nowhere")
    assert "cannot be read" in str(missing.value)
    words = tmp_path / "words"
    words.mkdir()
    (words / "adjectives.txt").write_text("Swift\nbad word\n")
    (words / "nouns.txt").write_text("Wolf\n")
    with pytest.raises(ValidationError) as malformed:
        _settings(identity_signing_key_file=key, username_words_dir=words)
    assert "not a capitalised word" in str(malformed.value)


def test_redis_is_required(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    key = tmp_path / "signing.pem"
    _generate(key)
    with pytest.raises(ValidationError) as info:
        Settings(database_url="postgresql://db.invalid/chatpop", identity_signing_key_file=key)  # type: ignore[call-arg]
    assert "redis_url" in str(info.value)


def test_settings_read_extra_public_keys(tmp_path: Path) -> None:
    key, old = tmp_path / "signing.pem", tmp_path / "old.pem"
    _generate(key)
    _generate(old)
    settings = _settings(identity_signing_key_file=key, identity_extra_public_key_files=f" {old} ,")
    assert settings.extra_public_key_paths == [old]


def test_missing_signing_key_fails_fast(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as info:
        _settings(identity_signing_key_file=tmp_path / "nope.pem")
    assert "does not exist" in str(info.value)


def test_signing_key_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IDENTITY_SIGNING_KEY_FILE", raising=False)
    with pytest.raises(ValidationError) as info:
        _settings()
    assert "identity_signing_key_file" in str(info.value)


def test_garbage_signing_key_fails_fast(tmp_path: Path) -> None:
    path = tmp_path / "signing.pem"
    path.write_text("not a key")
    with pytest.raises(ValidationError) as info:
        _settings(identity_signing_key_file=path)
    assert "not an unencrypted PEM private key" in str(info.value)


def test_non_ed25519_signing_key_fails_fast(tmp_path: Path) -> None:
    path = tmp_path / "ec.pem"
    pem = generate_private_key(SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.write_bytes(pem)
    with pytest.raises(ValidationError) as info:
        _settings(identity_signing_key_file=path)
    assert "Ed25519" in str(info.value)


def test_bad_extra_public_key_fails_fast(tmp_path: Path) -> None:
    key = tmp_path / "signing.pem"
    _generate(key)
    with pytest.raises(ValidationError) as info:
        _settings(identity_signing_key_file=key, identity_extra_public_key_files=str(tmp_path / "gone.pem"))
    assert "does not exist" in str(info.value)


def test_process_refuses_to_start_without_database_or_key(tmp_path: Path) -> None:
    result = _python(
        "-m", "chatpop_identity", env={"IDENTITY_SIGNING_KEY_FILE": str(tmp_path / "missing.pem")}
    )
    assert result.returncode == 2
    assert "DATABASE_URL" in result.stderr
    assert "REDIS_URL" in result.stderr
    assert "IDENTITY_SIGNING_KEY_FILE" in result.stderr
    assert "does not exist" in result.stderr
    assert "Traceback" not in result.stderr
