"""Serving media: only through URLs signed for a participant, with their binding cookie, while they
stand in the room; exact headers, byte ranges, HEAD; deleted messages and closed rooms take their
media with them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from chatpop_edge.media import signing
from tests import media_samples as samples
from tests.e2e.chat import bearer, new_id
from tests.e2e.conftest import Stack
from tests.e2e.media import (
    MediaRoom,
    cookie_of,
    eventually,
    fetch,
    media_room,
    room_objects,
    uploaded,
    url_key,
    urls,
)

SERVE_TEMPLATE = "/media/{room_id}/{media_id}/{variant}"


async def _shared_photo(client: httpx.AsyncClient, room: MediaRoom, tmp_path: Path) -> tuple[str, int]:
    """A photo the host sent to the room: (media id, message seq)."""
    body = await uploaded(
        client, room.code, room.host.room_token, "photo", samples.png_with_text(tmp_path / "p.png")
    )
    media_id = str(body["media"]["id"])
    sent = await client.post(
        f"/api/v1/rooms/{room.code}/messages",
        json={"client_msg_id": new_id(), "text": "a photo", "media_id": media_id},
        headers=bearer(room.host.room_token),
    )
    assert sent.status_code == 201, sent.text
    return media_id, int(sent.json()["message"]["seq"])


async def _grant(
    client: httpx.AsyncClient, room: MediaRoom, room_token: str, media_id: str
) -> tuple[dict[str, Any], str]:
    response = await urls(client, room.code, room_token, [media_id])
    assert response.status_code == 200, response.text
    return response.json()["media"][0], cookie_of(response)


def _error(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


async def test_a_member_gets_the_bytes_with_exact_headers_ranges_and_head(
    stack: Stack, client: httpx.AsyncClient, openapi: dict[str, Any], tmp_path: Path
) -> None:
    room = await media_room(client)
    media_id, _seq = await _shared_photo(client, room, tmp_path)
    granted = await urls(client, room.code, room.guest.room_token, [media_id])
    assert granted.status_code == 200, granted.text
    assert set(granted.json()) == {"expires_at", "media"}
    item = granted.json()["media"][0]
    assert (item["id"], item["state"], item["kind"]) == (media_id, "ready", "photo")
    set_cookie = granted.headers["set-cookie"]
    assert f"Path=/media/{room.room_id}/" in set_cookie
    assert "HttpOnly" in set_cookie and "SameSite=strict" in set_cookie.replace("Strict", "strict")
    cookie = cookie_of(granted)
    url = item["urls"]["full"]

    served = await fetch(client, url, cookie)
    assert served.status_code == 200, served.text
    headers = served.headers
    assert headers["content-type"] == "image/png"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["content-disposition"] == "inline"
    assert headers["content-security-policy"] == "default-src 'none'; sandbox"
    assert headers["accept-ranges"] == "bytes"
    assert headers["etag"]
    expires = int(url.split("&e=")[1].split("&")[0])
    max_age = int(headers["cache-control"].removeprefix("private, max-age="))
    assert headers["cache-control"].startswith("private, max-age=")
    assert 0 < max_age <= expires - time.time() + 1
    assert int(headers["content-length"]) == len(served.content)
    whole = served.content
    assert whole.startswith(b"\x89PNG")
    assert samples.PNG_TEXT.encode() not in whole

    head = await fetch(client, url, cookie, method="HEAD")
    assert head.status_code == 200
    assert head.content == b""
    for name in ("content-type", "content-length", "etag", "content-security-policy", "accept-ranges"):
        assert head.headers[name] == headers[name]

    ranged = await fetch(client, url, cookie, Range="bytes=10-29")
    assert ranged.status_code == 206, ranged.text
    assert ranged.content == whole[10:30]
    assert ranged.headers["content-range"] == f"bytes 10-29/{len(whole)}"
    assert ranged.headers["content-type"] == "image/png"
    tail = await fetch(client, url, cookie, Range="bytes=-5")
    assert (tail.status_code, tail.content) == (206, whole[-5:])
    outside = await fetch(client, url, cookie, Range=f"bytes={len(whole) + 10}-")
    assert outside.status_code == 416
    assert outside.headers["content-range"] == f"bytes */{len(whole)}"

    thumb = await fetch(client, item["urls"]["thumb"], cookie)
    assert thumb.status_code == 200
    assert thumb.headers["content-type"] in ("image/jpeg", "image/png", "image/webp")
    del openapi


async def test_every_serving_rule_refuses_with_its_code(
    stack: Stack, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    room = await media_room(client)
    other = await media_room(client)
    media_id, _seq = await _shared_photo(client, room, tmp_path)
    item, guest_cookie = await _grant(client, room, room.guest.room_token, media_id)
    url = item["urls"]["full"]
    path, _, query = url.partition("?")
    params = dict(part.split("=", 1) for part in query.split("&"))
    assert (await fetch(client, url, guest_cookie)).status_code == 200

    # Someone of another room cannot ask for the room's URLs.
    refused = await urls(client, room.code, other.host.room_token, [media_id])
    assert refused.status_code == 403, refused.text

    # An altered signature, participant or variant; the path of another room.
    flipped = params["s"][:-1] + ("A" if params["s"][-1] != "A" else "B")
    assert _error(
        await fetch(client, f"{path}?p={params['p']}&e={params['e']}&s={flipped}", guest_cookie)
    ) == (
        403,
        "media_url_invalid",
    )
    assert _error(
        await fetch(
            client, f"{path}?p={room.host.participant_id}&e={params['e']}&s={params['s']}", guest_cookie
        )
    ) == (403, "media_url_invalid")
    assert _error(await fetch(client, url.replace("/full?", "/thumb?"), guest_cookie)) == (
        403,
        "media_url_invalid",
    )
    assert _error(await fetch(client, url.replace(room.room_id, other.room_id), guest_cookie)) == (
        403,
        "media_url_invalid",
    )
    assert _error(await fetch(client, path, guest_cookie)) == (403, "media_url_invalid")

    # Expired: properly signed, for a time gone by.
    key = url_key(stack)
    past = int(time.time()) - 5
    expired = signing.signed_url(key, room.room_id, media_id, "full", room.guest.participant_id, past)
    assert _error(await fetch(client, expired, guest_cookie)) == (403, "media_url_expired")

    # Another participant's URL: without a cookie, or with the holder's own cookie for someone else.
    host_item, host_cookie = await _grant(client, room, room.host.room_token, media_id)
    assert _error(await fetch(client, host_item["urls"]["full"], None)) == (403, "media_url_not_yours")
    assert _error(await fetch(client, host_item["urls"]["full"], guest_cookie)) == (
        403,
        "media_url_not_yours",
    )
    assert _error(await fetch(client, url, host_cookie)) == (403, "media_url_not_yours")
    forged = f"{room.guest.participant_id}.{params['e']}.{params['s']}"
    assert _error(await fetch(client, url, forged)) == (403, "media_url_not_yours")

    # A media id the room does not have, signed properly: not found.
    ghost = signing.signed_url(
        key, room.room_id, new_id(), "full", room.guest.participant_id, int(params["e"])
    )
    assert _error(await fetch(client, ghost, guest_cookie)) == (404, "media_not_found")

    # Banned: access ends at once, the URL and cookie being still good.
    banned = await client.post(
        f"/api/v1/rooms/{room.code}/bans",
        json={"participant_id": room.guest.participant_id, "tier": "session", "reason": ""},
        headers=bearer(room.host.room_token),
    )
    assert banned.status_code in (200, 201), banned.text
    assert _error(await fetch(client, url, guest_cookie)) == (403, "banned")
    assert (await fetch(client, host_item["urls"]["full"], host_cookie)).status_code == 200


async def test_deleting_the_message_deletes_its_media(
    stack: Stack, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    room = await media_room(client)
    media_id, seq = await _shared_photo(client, room, tmp_path)
    item, cookie = await _grant(client, room, room.guest.room_token, media_id)
    assert (await fetch(client, item["urls"]["full"], cookie)).status_code == 200
    prefix = f"media/{room.room_id}/{media_id}/"
    assert sorted(await room_objects(stack, room.room_id)) == [prefix + "full", prefix + "thumb"]

    deleted = await client.delete(
        f"/api/v1/rooms/{room.code}/messages/{seq}", headers=bearer(room.host.room_token)
    )
    assert deleted.status_code == 200, deleted.text

    async def gone() -> bool:
        return not await room_objects(stack, room.room_id)

    await eventually(gone, what="the deleted message's objects are gone from S3")
    assert _error(await fetch(client, item["urls"]["full"], cookie)) == (404, "media_not_found")
    again = await urls(client, room.code, room.guest.room_token, [media_id])
    assert again.json()["media"][0]["state"] == "deleted"
    assert again.json()["media"][0]["urls"] == {}


async def test_closing_the_room_purges_its_media(
    stack: Stack, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    room = await media_room(client)
    media_id, _seq = await _shared_photo(client, room, tmp_path)
    # An upload no message carries goes too.
    await uploaded(client, room.code, room.guest.room_token, "photo", samples.webp_photo(tmp_path / "w.webp"))
    assert len(await room_objects(stack, room.room_id)) == 4
    closed = await client.post(f"/api/v1/rooms/{room.code}/close", headers=bearer(room.host.token))
    assert closed.status_code == 200, closed.text

    async def gone() -> bool:
        return not await room_objects(stack, room.room_id)

    await eventually(gone, deadline=30, what="the closed room's objects are gone from S3")
    del media_id
