"""Signed media URLs and binding cookies: what they accept and every way a changed one is refused."""

from __future__ import annotations

import pytest

from chatpop_edge.media import signing

KEY = b"k" * 32
ROOM, MEDIA, WHO = "room-1", "media-1", "participant-1"


def _params(url: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in url.split("?", 1)[1].split("&"))


def test_a_signed_url_verifies_for_exactly_what_it_names() -> None:
    url = signing.signed_url(KEY, ROOM, MEDIA, "full", WHO, 1_900_000_000)
    assert url.startswith(f"/media/{ROOM}/{MEDIA}/full?")
    p = _params(url)
    assert signing.verify_url(KEY, ROOM, MEDIA, "full", p["p"], p["e"], p["s"]) == (WHO, 1_900_000_000)
    changed = [
        (b"x" * 32, ROOM, MEDIA, "full", p["p"], p["e"], p["s"]),
        (KEY, "room-2", MEDIA, "full", p["p"], p["e"], p["s"]),
        (KEY, ROOM, "media-2", "full", p["p"], p["e"], p["s"]),
        (KEY, ROOM, MEDIA, "thumb", p["p"], p["e"], p["s"]),
        (KEY, ROOM, MEDIA, "full", "participant-2", p["e"], p["s"]),
        (KEY, ROOM, MEDIA, "full", p["p"], "1900000001", p["s"]),
        (KEY, ROOM, MEDIA, "full", p["p"], p["e"], p["s"][:-1] + ("A" if p["s"][-1] != "A" else "B")),
        (KEY, ROOM, MEDIA, "full", p["p"], "-1", p["s"]),
        (KEY, ROOM, MEDIA, "full", p["p"], "", p["s"]),
        (KEY, ROOM, MEDIA, "full", "", p["e"], p["s"]),
        (KEY, ROOM, MEDIA, "full", p["p"], p["e"], ""),
        (KEY, ROOM, MEDIA, "full", p["p"], "²", p["s"]),
    ]
    for args in changed:
        with pytest.raises(signing.InvalidSignature):
            signing.verify_url(*args)


def test_the_binding_cookie_names_its_participant_for_its_room_only() -> None:
    value = signing.binding_cookie(KEY, ROOM, WHO, 1_900_000_000)
    assert signing.verify_cookie(KEY, ROOM, value) == signing.Binding(WHO, 1_900_000_000)
    for room, cookie in [
        ("room-2", value),
        (ROOM, value.replace(WHO, "participant-2")),
        (ROOM, value.replace("1900000000", "1900000001")),
        (ROOM, value + "x"),
        (ROOM, ""),
        (ROOM, "a.b"),
        # A URL's signature is not a cookie's.
        (ROOM, f"{WHO}.1900000000.{signing.url_signature(KEY, ROOM, MEDIA, 'full', WHO, 1_900_000_000)}"),
    ]:
        with pytest.raises(signing.InvalidSignature):
            signing.verify_cookie(KEY, room, cookie)


def test_expiry_is_at_least_the_ttl_away_on_a_step_boundary() -> None:
    for now in (1_000_000.0, 1_000_059.5, 1_000_060.0):
        exp = signing.expiry(now, 300)
        assert exp % signing.EXPIRY_STEP == 0
        assert now + 300 <= exp < now + 300 + signing.EXPIRY_STEP
