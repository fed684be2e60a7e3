"""Media uploads end to end: exact size limits, Content-Length that lies or is missing, uploads the
client abandons, content the checks refuse, metadata that must not survive, kinds the room refuses.

What the platform holds afterwards is read from outside the edge: the objects in S3, messaging's media
records, the edge's spool directory.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests import media_samples as samples
from tests.e2e.chat import documented
from tests.e2e.conftest import Stack
from tests.e2e.media import (
    chunked,
    cookie_of,
    eventually,
    fetch,
    media_room,
    media_rows,
    pieces,
    raw_request,
    room_objects,
    spool_entries,
    upload,
    upload_head,
    uploaded,
)

MIB = 1024 * 1024
PHOTO_LIMIT = 10 * MIB
UPLOAD_TEMPLATE = "/api/v1/rooms/{code}/media"


async def _nothing_left(stack: Stack, room_id: str) -> None:
    """No record, no object and no spool file is left of the room's uploads."""

    async def clean() -> bool:
        return not spool_entries(stack) and not await room_objects(stack, room_id)

    await eventually(clean, what="the spool directory and the room's objects are empty")
    assert media_rows(stack, room_id) == []


async def test_a_photo_of_exactly_the_limit_is_stored_and_one_byte_more_is_refused(
    stack: Stack, client: httpx.AsyncClient, openapi: dict[str, object], tmp_path: Path
) -> None:
    room = await media_room(client)
    at_limit = samples.photo_of_exact_size(tmp_path / "limit.png", PHOTO_LIMIT)
    over = samples.photo_of_exact_size(tmp_path / "over.png", PHOTO_LIMIT + 1)

    # Refused on its Content-Length, before the body is read: the answer comes while the client is
    # still sending (a plain socket, so the early answer is read rather than lost to the closing).
    refused = raw_request(
        stack.ports.service["edge"],
        upload_head(room.code, room.host.room_token, "photo", {"Content-Length": str(PHOTO_LIMIT + 1)}),
        pieces(over.read_bytes()),
    )
    assert refused.status == 413, refused
    assert refused.json()["error"]["code"] == "media_too_large"
    assert b"connection: close" in refused.head.lower()
    await _nothing_left(stack, room.room_id)

    # The same file without Content-Length (chunked): counted as it arrives, refused past the limit.
    answer = raw_request(
        stack.ports.service["edge"],
        upload_head(room.code, room.host.room_token, "photo", {"Transfer-Encoding": "chunked"}),
        chunked(over.read_bytes()),
    )
    assert answer.status == 413, answer
    assert answer.json()["error"]["code"] == "media_too_large"
    await _nothing_left(stack, room.room_id)

    response = await upload(client, room.code, room.host.room_token, "photo", at_limit)
    assert response.status_code == 201, response.text
    body = documented(openapi, "POST", UPLOAD_TEMPLATE, response)
    media = body["media"]
    assert (media["kind"], media["state"]) == ("photo", "ready")
    assert set(media["urls"]) == {"full", "thumb"}
    assert cookie_of(response)
    keys = await room_objects(stack, room.room_id)
    assert sorted(keys) == [
        f"media/{room.room_id}/{media['id']}/full",
        f"media/{room.room_id}/{media['id']}/thumb",
    ]
    assert media_rows(stack, room.room_id) == [(media["id"], "ready")]
    assert spool_entries(stack) == []


async def test_a_chunked_upload_within_the_limit_is_stored(
    stack: Stack, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    room = await media_room(client)
    photo = samples.webp_photo(tmp_path / "p.webp").read_bytes()
    answer = raw_request(
        stack.ports.service["edge"],
        upload_head(room.code, room.host.room_token, "photo", {"Transfer-Encoding": "chunked"}),
        chunked(photo, 1000),
    )
    assert answer.status == 201, answer
    assert len(await room_objects(stack, room.room_id)) == 2


async def test_a_content_length_above_the_limit_is_refused_before_the_body_is_read(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    room = await media_room(client)
    # The answer comes although only a few bytes of the announced body were sent.
    answer = raw_request(
        stack.ports.service["edge"],
        upload_head(room.code, room.host.room_token, "photo", {"Content-Length": str(PHOTO_LIMIT + 1)}),
        [b"\x89PNG"],
        read_timeout=10,
    )
    assert answer.status == 413, answer
    assert b"media_too_large" in answer.body
    await _nothing_left(stack, room.room_id)


async def test_a_content_length_smaller_than_the_body_lets_no_more_bytes_in(
    stack: Stack, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    room = await media_room(client)
    photo = samples.photo_of_exact_size(tmp_path / "big.png", PHOTO_LIMIT + MIB).read_bytes()
    # 2 KiB announced, 11 MiB sent: the edge reads the 2 KiB it was told of (half a PNG, refused), and
    # the rest is no request at all.
    answer = raw_request(
        stack.ports.service["edge"],
        upload_head(room.code, room.host.room_token, "photo", {"Content-Length": "2048"}),
        pieces(photo),
    )
    assert answer.status in (400, 413, 422), answer
    await _nothing_left(stack, room.room_id)


async def test_a_content_length_larger_than_the_body_stores_nothing(
    stack: Stack, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    room = await media_room(client)
    photo = samples.webp_photo(tmp_path / "p.webp").read_bytes()
    # More announced than sent, then the client stops sending: the body never completes.
    answer = raw_request(
        stack.ports.service["edge"],
        upload_head(room.code, room.host.room_token, "photo", {"Content-Length": str(len(photo) + 5000)}),
        [photo],
        half_close=True,
        read_timeout=10,
    )
    assert answer.status in (None, 400), answer
    await _nothing_left(stack, room.room_id)


async def test_an_upload_the_client_abandons_mid_body_leaves_nothing(
    stack: Stack, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    room = await media_room(client)
    photo = samples.photo_of_exact_size(tmp_path / "p.png", 8 * MIB).read_bytes()
    port = stack.ports.service["edge"]
    head = upload_head(room.code, room.host.room_token, "photo", {"Content-Length": str(len(photo))})
    import asyncio
    import socket

    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        sock.sendall(head.encode() + photo[: 3 * MIB])

        async def spooling() -> bool:
            return bool(spool_entries(stack))

        # The upload is under way: its spool file exists.
        await eventually(spooling, what="the upload is spooled")
    finally:
        # Gone mid-body, with a reset.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()
    await asyncio.sleep(0)
    await _nothing_left(stack, room.room_id)


# (writer, kind, code): a representative subset; the unit tier checks every case of each.
REFUSED = [
    (samples.html_as_jpg, "photo", "media_unsupported", "page.jpg"),
    (samples.svg_image, "photo", "media_unsupported", "image.svg"),
    (samples.gif_header_script, "photo", "media_invalid", "script.gif"),
    (samples.truncated_jpeg, "photo", "media_invalid", "cut.jpg"),
    (samples.png_bomb, "photo", "media_too_many_pixels", "bomb.png"),
    (samples.mp4_garbage_after_ftyp, "video", "media_invalid", "garbage.mp4"),
    (samples.hls_playlist, "video", "media_unsupported", "playlist.mp4"),
    (samples.lying_duration_mp4, "video", "media_too_long", "lying.mp4"),
]


@pytest.mark.parametrize(("writer", "kind", "code", "name"), REFUSED, ids=[case[3] for case in REFUSED])
async def test_content_the_checks_refuse_is_answered_422_and_nothing_is_stored(
    stack: Stack,
    client: httpx.AsyncClient,
    openapi: dict[str, object],
    tmp_path: Path,
    writer: object,
    kind: str,
    code: str,
    name: str,
) -> None:
    room = await media_room(client)
    path = writer(tmp_path / name)  # type: ignore[operator]
    response = await upload(client, room.code, room.host.room_token, kind, path)
    assert response.status_code == 422, response.text
    assert documented(openapi, "POST", UPLOAD_TEMPLATE, response)["error"]["code"] == code
    await _nothing_left(stack, room.room_id)


async def test_an_empty_upload_is_refused(stack: Stack, client: httpx.AsyncClient) -> None:
    room = await media_room(client)
    response = await upload(client, room.code, room.host.room_token, "photo", b"")
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "media_empty"


async def test_a_polyglot_is_stored_as_a_picture_with_no_markup_left(
    stack: Stack, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    room = await media_room(client)
    response = await upload(
        client, room.code, room.host.room_token, "photo", samples.jpeg_html_polyglot(tmp_path / "poly.jpg")
    )
    assert response.status_code == 201, response.text
    cookie = cookie_of(response)
    for url in response.json()["media"]["urls"].values():
        served = await fetch(client, url, cookie)
        assert served.status_code == 200
        assert served.headers["content-type"].startswith("image/")
        assert samples.POLYGLOT_HTML not in served.content
        assert b"<script" not in served.content.lower() and b"<html" not in served.content.lower()


async def test_exif_gps_and_comments_are_gone_from_the_served_bytes(
    stack: Stack, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    room = await media_room(client)
    original = samples.jpeg_with_metadata(tmp_path / "gps.jpg")
    assert samples.GPS_DATUM.encode() in original.read_bytes()  # the marker is really there to lose
    body = await uploaded(client, room.code, room.host.room_token, "photo", original)
    grant = await client.post(
        f"/api/v1/rooms/{room.code}/media/urls",
        json={"media_ids": [body["media"]["id"]]},
        headers={"Authorization": f"Bearer {room.guest.room_token}"},
    )
    assert grant.status_code == 200, grant.text
    cookie = cookie_of(grant)
    for url in grant.json()["media"][0]["urls"].values():
        served = await fetch(client, url, cookie)
        assert served.status_code == 200, served.text
        for marker in (samples.GPS_DATUM.encode(), samples.XMP_GPS, samples.XMP_MARKER, samples.JPEG_COMMENT):
            assert marker not in served.content


async def test_a_video_of_30_seconds_is_stored_and_one_of_30_5_is_refused(
    stack: Stack, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    room = await media_room(client)
    longer = await upload(
        client, room.code, room.host.room_token, "video", samples.mp4_video(tmp_path / "long.mp4", 30.5)
    )
    assert longer.status_code == 422, longer.text
    assert longer.json()["error"]["code"] == "media_too_long"
    body = await uploaded(
        client, room.code, room.host.room_token, "video", samples.mp4_video(tmp_path / "ok.mp4", 30.0)
    )
    media = body["media"]
    assert media["kind"] == "video"
    assert media["content_type"] == "video/mp4"
    assert 29_500 <= media["duration_ms"] <= 30_100
    assert set(media["urls"]) == {"full", "poster"}


async def test_a_voice_note_is_stored_as_aac_in_mp4(
    stack: Stack, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    room = await media_room(client)
    body = await uploaded(
        client, room.code, room.host.room_token, "voice", samples.voice_note(tmp_path / "v.webm", "webm", 2.0)
    )
    assert body["media"]["content_type"] == "audio/mp4"
    assert set(body["media"]["urls"]) == {"full"}


async def test_a_kind_the_room_does_not_allow_is_refused_before_the_body_is_read(
    stack: Stack, client: httpx.AsyncClient, openapi: dict[str, object], tmp_path: Path
) -> None:
    room = await media_room(client, {"photo": True, "voice": False, "video": False})
    response = await upload(
        client, room.code, room.host.room_token, "video", samples.mp4_video(tmp_path / "v.mp4", 1.0)
    )
    assert response.status_code == 403, response.text
    assert documented(openapi, "POST", UPLOAD_TEMPLATE, response)["error"]["code"] == "media_not_allowed"
    await _nothing_left(stack, room.room_id)
