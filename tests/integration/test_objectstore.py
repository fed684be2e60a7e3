"""chatpop_common.objectstore against a real S3: the session's private SeaweedFS (`s3_server`)."""

from __future__ import annotations

import asyncio
import secrets
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from chatpop_common.devstack import SeaweedS3, free_port
from chatpop_common.errors import Unavailable
from chatpop_common.objectstore import (
    ObjectMissing,
    ObjectStore,
    RangeNotSatisfiable,
    S3Settings,
    StorageUnavailable,
    vacuum,
)

# A store that is down must answer within this (a guard against hanging, not a measurement).
OUTAGE_GUARD = 15.0


def settings_for(server: SeaweedS3, **overrides: object) -> S3Settings:
    values: dict[str, object] = {
        "s3_endpoint_url": server.url,
        "s3_bucket": server.bucket,
        "s3_access_key_id": SecretStr(server.access_key),
        "s3_secret_access_key": SecretStr(server.secret_key),
    }
    values.update(overrides)
    return S3Settings.model_validate(values)


@pytest.fixture
async def store(s3_server: SeaweedS3) -> AsyncIterator[ObjectStore]:
    opened = await ObjectStore.open(settings_for(s3_server))
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def prefix() -> str:
    return f"media/{uuid.uuid4()}/{uuid.uuid4()}/"


def write(tmp_path: Path, data: bytes, name: str = "upload") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


async def read_all(store: ObjectStore, key: str, range_header: str | None = None) -> tuple[int, bytes]:
    stored = await store.get(key, range_header=range_header)
    body = b"".join([chunk async for chunk in stored.chunks()])
    return stored.status, body


def test_settings_defaults_and_media_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("S3_ENDPOINT_URL", "S3_BUCKET", "S3_ADDRESSING_STYLE", "S3_REGION", "S3_VACUUM_URL"):
        monkeypatch.delenv(name, raising=False)
    settings = S3Settings()
    assert settings.s3_addressing_style == "path"
    assert settings.s3_region == "us-east-1"
    assert not settings.media_enabled
    monkeypatch.setenv("S3_BUCKET", "media")
    monkeypatch.setenv("S3_SECRET_ACCESS_KEY", "hush")
    settings = S3Settings()
    assert settings.media_enabled
    assert "hush" not in repr(settings)
    monkeypatch.setenv("S3_ADDRESSING_STYLE", "sideways")
    with pytest.raises(ValueError, match="s3_addressing_style"):
        S3Settings()


async def test_put_then_get_whole_object(store: ObjectStore, prefix: str, tmp_path: Path) -> None:
    data = secrets.token_bytes(300_000)
    await store.put_file(prefix + "full", write(tmp_path, data), "image/jpeg")

    stored = await store.get(prefix + "full")
    assert (stored.status, stored.content_type, stored.content_length) == (200, "image/jpeg", len(data))
    assert stored.content_range is None
    assert stored.etag
    assert stored.last_modified is not None
    assert b"".join([chunk async for chunk in stored.chunks()]) == data
    assert await store.ready()


async def test_ranges(store: ObjectStore, prefix: str, tmp_path: Path) -> None:
    data = bytes(range(256)) * 40
    await store.put_file(prefix + "full", write(tmp_path, data), "video/mp4")

    stored = await store.get(prefix + "full", range_header="bytes=2-5")
    assert (stored.status, stored.content_length, stored.content_range) == (206, 4, f"bytes 2-5/{len(data)}")
    assert b"".join([chunk async for chunk in stored.chunks()]) == data[2:6]
    assert await read_all(store, prefix + "full", "bytes=-3") == (206, data[-3:])
    assert await read_all(store, prefix + "full", "bytes=10000-") == (206, data[10000:])
    with pytest.raises(RangeNotSatisfiable):
        await store.get(prefix + "full", range_header=f"bytes={len(data) + 10}-")


async def test_missing_object(store: ObjectStore, prefix: str) -> None:
    with pytest.raises(ObjectMissing):
        await store.get(prefix + "full")
    with pytest.raises(ObjectMissing):
        await store.get(prefix + "full", range_header="bytes=0-1")


async def test_an_unread_object_releases_its_connection(
    store: ObjectStore, prefix: str, tmp_path: Path
) -> None:
    await store.put_file(prefix + "full", write(tmp_path, b"x" * 200_000), "audio/mp4")
    # More opened-and-closed reads than the client's connection pool holds (10).
    for _ in range(25):
        stored = await store.get(prefix + "full")
        await stored.close()
    assert await read_all(store, prefix + "full", "bytes=0-0") == (206, b"x")


async def test_keys_delete_and_delete_prefix(store: ObjectStore, prefix: str, tmp_path: Path) -> None:
    other = f"media/{uuid.uuid4()}/{uuid.uuid4()}/"
    source = write(tmp_path, b"bytes")
    for key in (prefix + "full", prefix + "thumb", prefix + "poster", other + "full"):
        await store.put_file(key, source, "image/png")

    assert sorted(await store.keys(prefix)) == [prefix + name for name in ("full", "poster", "thumb")]
    await store.delete([prefix + "poster", prefix + "never-existed"])
    assert sorted(await store.keys(prefix)) == [prefix + "full", prefix + "thumb"]
    assert await store.delete_prefix(prefix) == 2
    assert await store.keys(prefix) == []
    assert await store.delete_prefix(prefix) == 0
    assert await store.keys(other) == [other + "full"]
    await store.delete([])


async def test_delete_prefix_past_one_request(store: ObjectStore, prefix: str, tmp_path: Path) -> None:
    """DeleteObjects takes 1000 keys a request, and a listing page holds 1000: 1003 needs two."""
    source = write(tmp_path, b"b")
    keys = [f"{prefix}{n:05d}" for n in range(1003)]
    gate = asyncio.Semaphore(20)

    async def put(key: str) -> None:
        async with gate:
            await store.put_file(key, source, "image/png")

    await asyncio.gather(*(put(key) for key in keys))
    assert len(await store.keys(prefix)) == 1003
    await store.delete(keys[:1001])
    assert await store.keys(prefix) == keys[1001:]
    await asyncio.gather(*(put(key) for key in keys[:1001]))
    assert await store.delete_prefix(prefix) == 1003
    assert await store.keys(prefix) == []


async def test_credentials_are_required(s3_server: SeaweedS3, prefix: str, tmp_path: Path) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        unsigned = await http.get(f"{s3_server.url}/{s3_server.bucket}?list-type=2")
        unsigned_put = await http.put(f"{s3_server.url}/{s3_server.bucket}/{prefix}full", content=b"x")
    assert unsigned.status_code == 403
    assert unsigned_put.status_code == 403

    for overrides in (
        {"s3_secret_access_key": SecretStr("not-the-secret")},
        {"s3_access_key_id": SecretStr("nobody"), "s3_secret_access_key": SecretStr("nothing")},
    ):
        wrong = await ObjectStore.open(settings_for(s3_server, **overrides))
        try:
            assert not await wrong.ready()
            with pytest.raises(StorageUnavailable):
                await wrong.put_file(prefix + "full", write(tmp_path, b"x"), "image/png")
            with pytest.raises(StorageUnavailable):
                await wrong.get(prefix + "full")
            with pytest.raises(StorageUnavailable):
                await wrong.keys(prefix)
        finally:
            await wrong.close()


async def test_unknown_bucket_is_unavailable_not_missing(s3_server: SeaweedS3, prefix: str) -> None:
    store = await ObjectStore.open(settings_for(s3_server, s3_bucket=f"absent-{uuid.uuid4().hex[:8]}"))
    try:
        assert not await store.ready()
        with pytest.raises(StorageUnavailable):
            await store.get(prefix + "full")
    finally:
        await store.close()


@pytest.fixture
def doomed_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """A server of the test's own, which the test stops."""
    root = tmp_path_factory.mktemp("doomed-s3")
    server = SeaweedS3.on_free_ports(root / "s3")
    server.start(root / "s3.log")
    try:
        yield server
    finally:
        server.stop(kill=True)
        shutil.rmtree(root, ignore_errors=True)


async def test_a_stopped_store_answers_unavailable(doomed_s3: SeaweedS3, prefix: str, tmp_path: Path) -> None:
    store = await ObjectStore.open(settings_for(doomed_s3))
    try:
        source = write(tmp_path, b"payload")
        await store.put_file(prefix + "full", source, "image/png")
        assert await store.ready()
        await asyncio.to_thread(doomed_s3.stop, True)

        async with asyncio.timeout(OUTAGE_GUARD):
            assert not await store.ready()
            with pytest.raises(StorageUnavailable) as failure:
                await store.get(prefix + "full")
            with pytest.raises(StorageUnavailable):
                await store.put_file(prefix + "thumb", source, "image/png")
            with pytest.raises(StorageUnavailable):
                await store.delete([prefix + "full"])
            with pytest.raises(StorageUnavailable):
                await store.delete_prefix(prefix)
            with pytest.raises(StorageUnavailable):
                await vacuum(doomed_s3.master_url)
    finally:
        await store.close()
    assert isinstance(failure.value, Unavailable)
    assert failure.value.code == "storage_unavailable"


async def test_nothing_listening_is_unavailable(prefix: str) -> None:
    store = await ObjectStore.open(
        S3Settings.model_validate(
            {
                "s3_endpoint_url": f"http://127.0.0.1:{free_port()}",
                "s3_bucket": "media",
                "s3_access_key_id": SecretStr("a"),
                "s3_secret_access_key": SecretStr("b"),
            }
        )
    )
    try:
        async with asyncio.timeout(OUTAGE_GUARD):
            with pytest.raises(StorageUnavailable):
                await store.get(prefix + "full")
    finally:
        await store.close()


def volume_files_holding(datadir: Path, marker: bytes) -> list[Path]:
    return [
        path for path in (datadir / "volumes").iterdir() if path.is_file() and marker in path.read_bytes()
    ]


async def test_delete_then_vacuum_removes_the_bytes_from_disk(
    store: ObjectStore, s3_server: SeaweedS3, prefix: str, tmp_path: Path
) -> None:
    marker = f"chatpop-vacuum-marker-{uuid.uuid4().hex}".encode()
    await store.put_file(prefix + "full", write(tmp_path, marker * 500), "audio/mp4")
    assert volume_files_holding(s3_server.datadir, marker)

    assert await store.delete_prefix(prefix) == 1
    # The filer passes the deletion on to the volume server a moment after DeleteObjects answered,
    # so vacuum is asked again until the bytes are gone (as messaging's next purge would).
    deadline = time.monotonic() + 60
    while volume_files_holding(s3_server.datadir, marker):
        assert time.monotonic() < deadline, "the deleted bytes are still in the volume files"
        await vacuum(s3_server.master_url)
        await asyncio.sleep(0.5)
    with pytest.raises(ObjectMissing):
        await store.get(prefix + "full")
