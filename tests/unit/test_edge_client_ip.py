"""Client IPs: X-Forwarded-For is believed only from trusted proxies; services see a keyed hash."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress

import pytest
from pydantic import ValidationError

from chatpop_edge.client_ip import ClientAddressResolver, hash_ip, parse_ip
from chatpop_edge.settings import EdgeSettings

PROXIES = ClientAddressResolver([ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8")])


def test_an_untrusted_peer_is_the_client_whatever_it_claims() -> None:
    assert PROXIES.client_ip("203.0.113.5", ["198.51.100.1"]) == "203.0.113.5"
    assert ClientAddressResolver([]).client_ip("127.0.0.1", ["198.51.100.1"]) == "127.0.0.1"


def test_a_trusted_proxy_forwards_the_nearest_untrusted_hop() -> None:
    assert PROXIES.client_ip("10.0.0.2", ["198.51.100.1"]) == "198.51.100.1"
    # The client wrote the leftmost value itself; the proxies appended the rest.
    assert PROXIES.client_ip("10.0.0.2", ["6.6.6.6, 198.51.100.1, 10.1.1.1"]) == "198.51.100.1"
    # Several headers are one list.
    assert PROXIES.client_ip("10.0.0.2", ["6.6.6.6", "198.51.100.1"]) == "198.51.100.1"


def test_forwarded_chains_of_only_proxies_and_garbage() -> None:
    assert PROXIES.client_ip("10.0.0.2", ["10.0.0.9"]) == "10.0.0.9"
    assert PROXIES.client_ip("10.0.0.2", []) == "10.0.0.2"
    assert PROXIES.client_ip("10.0.0.2", ["198.51.100.1, not-an-ip"]) == "10.0.0.2"
    assert PROXIES.client_ip("10.0.0.2", ["not-an-ip, 198.51.100.1"]) == "198.51.100.1"


def test_addresses_are_normalised() -> None:
    assert str(parse_ip("198.51.100.1:4431")) == "198.51.100.1"
    assert str(parse_ip("[2001:db8::1]:443")) == "2001:db8::1"
    assert str(parse_ip("::ffff:198.51.100.1")) == "198.51.100.1"
    assert PROXIES.client_ip("fd00::5", ["2001:db8::1"]) == "2001:db8::1"
    assert parse_ip("unknown") is None


def test_forwarded_https_only_from_trusted_proxies() -> None:
    assert PROXIES.forwarded_https("10.0.0.2", "https")
    assert not PROXIES.forwarded_https("203.0.113.5", "https")
    assert not PROXIES.forwarded_https("10.0.0.2", "http")


def test_ip_hash_is_hmac_sha256_with_the_key() -> None:
    key = b"0123456789abcdef"
    expected = hmac.new(key, b"198.51.100.1", hashlib.sha256).hexdigest()
    assert hash_ip(key, "198.51.100.1") == expected
    assert hash_ip(b"another-key-0123", "198.51.100.1") != expected
    assert "198.51.100.1" not in expected
    assert hash_ip(key, "") == ""


def test_settings_parse_trusted_proxies_and_require_the_hash_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRUSTED_PROXIES", "10.0.0.0/8, 192.168.1.7 ,fd00::/8")
    monkeypatch.setenv("IP_HASH_KEY", "k" * 32)
    monkeypatch.setenv("MEDIA_URL_KEY", "m" * 32)
    monkeypatch.setenv("SERVICE_TOKEN_SECRET", "s" * 32)
    settings = EdgeSettings()  # type: ignore[call-arg]
    assert [str(n) for n in settings.trusted_proxies] == ["10.0.0.0/8", "192.168.1.7/32", "fd00::/8"]
    assert settings.max_body_bytes == 64 * 1024
    assert (settings.http_port, settings.metrics_port) == (8080, 9100)
    assert "k" * 32 not in repr(settings)

    monkeypatch.setenv("TRUSTED_PROXIES", "10.0.0.0/8,nonsense")
    with pytest.raises(ValidationError, match="nonsense"):
        EdgeSettings()  # type: ignore[call-arg]

    monkeypatch.delenv("TRUSTED_PROXIES")
    monkeypatch.delenv("IP_HASH_KEY")
    with pytest.raises(ValidationError, match="ip_hash_key"):
        EdgeSettings()  # type: ignore[call-arg]
