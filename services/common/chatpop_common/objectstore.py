"""Media objects on an S3-compatible store (AWS S3, SeaweedFS, MinIO, R2, …).

One `ObjectStore` per process, opened at start-up and closed at shutdown: a single aiobotocore client
with its connection pool. Timeouts are short and retries few, so while the store is down a request
is answered `StorageUnavailable` within seconds instead of hanging; every failure of the store or of
the way to it becomes that one error (code `storage_unavailable`). A missing object is
`ObjectMissing`, a range the object cannot satisfy `RangeNotSatisfiable`.

`vacuum()` asks a SeaweedFS master to compact its volumes, so that the bytes of deleted objects are
gone from disk too, not only unreachable.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import aiohttp
import httpx
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from chatpop_common.errors import Unavailable

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import ObjectIdentifierTypeDef

log = logging.getLogger(__name__)

# Seconds to open a connection to the store, and to wait for any read from it.
CONNECT_TIMEOUT = 2.0
READ_TIMEOUT = 10.0
# Attempts per request in all (the first one included).
TOTAL_ATTEMPTS = 2
# DeleteObjects takes at most this many keys per request.
DELETE_BATCH = 1000
CHUNK_SIZE = 64 * 1024
# A volume with more than this share of deleted bytes is compacted by vacuum(): any at all.
VACUUM_GARBAGE_THRESHOLD = 0.0001
# The S3 error codes that mean "no such object" and "range outside the object".
_MISSING = frozenset({"NoSuchKey", "404", "NotFound"})
_BAD_RANGE = frozenset({"InvalidRange", "416"})

# Failures on the way to the store that botocore does not wrap itself.
_TRANSPORT_ERRORS = (BotoCoreError, aiohttp.ClientError, httpx.HTTPError, OSError, TimeoutError)


class S3Settings(BaseSettings):
    """The S3 block of a service's settings (a mixin: the edge and messaging inherit it).

    An empty `S3_BUCKET` switches media off.
    """

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", case_sensitive=False)

    # Unset: the AWS endpoint of the region.
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_bucket: str = ""
    s3_access_key_id: SecretStr | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_addressing_style: Literal["path", "virtual", "auto"] = "path"
    # A SeaweedFS master (http://host:9333) asked to vacuum after purges (messaging only).
    s3_vacuum_url: str | None = None

    @property
    def media_enabled(self) -> bool:
        return bool(self.s3_bucket)


class StorageUnavailable(Unavailable):
    """The object store could not be reached or did not do what was asked."""

    default_code = "storage_unavailable"


class ObjectMissing(Exception):
    """No object under that key."""


class RangeNotSatisfiable(Exception):
    """The requested range lies outside the object."""


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _unavailable(what: str, exc: BaseException) -> StorageUnavailable:
    """The error to raise for `exc`; its type and S3 code are logged, never a URL with secrets."""
    detail = _error_code(exc) if isinstance(exc, ClientError) else type(exc).__name__
    log.warning("object store: %s failed (%s)", what, detail)
    return StorageUnavailable("Media storage is unavailable; try again shortly.")


@dataclass
class StoredObject:
    """An object being read; `chunks()` streams its bytes, `close()` releases the connection."""

    status: int
    content_type: str
    content_length: int
    content_range: str | None
    etag: str
    last_modified: datetime | None
    _body: Any = field(repr=False, default=None)

    async def chunks(self) -> AsyncIterator[bytes]:
        if self._body is None:
            return
        try:
            async for chunk in self._body.iter_chunks(CHUNK_SIZE):
                yield chunk
        except _TRANSPORT_ERRORS as exc:
            raise _unavailable("reading an object", exc) from exc
        finally:
            await self.close()

    async def close(self) -> None:
        body, self._body = self._body, None
        if body is not None:
            with contextlib.suppress(Exception):
                await body.aclose()


class ObjectStore:
    """One bucket of an S3-compatible store, through one long-lived client."""

    def __init__(self, client: S3Client, bucket: str, exit_stack: contextlib.AsyncExitStack) -> None:
        self._client = client
        self.bucket = bucket
        self._exit_stack = exit_stack

    @classmethod
    async def open(cls, settings: S3Settings) -> ObjectStore:
        config = AioConfig(
            region_name=settings.s3_region,
            signature_version="s3v4",
            s3={"addressing_style": settings.s3_addressing_style},
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=READ_TIMEOUT,
            retries={"total_max_attempts": TOTAL_ATTEMPTS, "mode": "standard"},
            # Checksums only where S3 demands them: several S3-compatible stores refuse the
            # flexible (CRC) checksums newer clients send by default.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        stack = contextlib.AsyncExitStack()
        client: S3Client = await stack.enter_async_context(
            get_session().create_client(
                "s3",
                endpoint_url=settings.s3_endpoint_url or None,
                region_name=settings.s3_region,
                aws_access_key_id=(
                    settings.s3_access_key_id.get_secret_value() if settings.s3_access_key_id else None
                ),
                aws_secret_access_key=(
                    settings.s3_secret_access_key.get_secret_value()
                    if settings.s3_secret_access_key
                    else None
                ),
                config=config,
            )
        )
        return cls(client, settings.s3_bucket, stack)

    async def close(self) -> None:
        await self._exit_stack.aclose()

    async def ready(self) -> bool:
        """Whether the bucket answers (HeadBucket); False on any failure."""
        try:
            await self._client.head_bucket(Bucket=self.bucket)
        except Exception:
            return False
        return True

    async def put_file(self, key: str, path: Path, content_type: str) -> None:
        """Store the file at `path` under `key`, streamed from disk."""
        with path.open("rb") as body:
            size = os.fstat(body.fileno()).st_size
            try:
                await self._client.put_object(
                    Bucket=self.bucket, Key=key, Body=body, ContentLength=size, ContentType=content_type
                )
            except (ClientError, *_TRANSPORT_ERRORS) as exc:
                raise _unavailable("put", exc) from exc

    async def get(self, key: str, *, range_header: str | None = None) -> StoredObject:
        """The object under `key`, or the range a `Range: bytes=…` header asks for (status 206)."""
        try:
            if range_header:
                response = await self._client.get_object(Bucket=self.bucket, Key=key, Range=range_header)
            else:
                response = await self._client.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            code = _error_code(exc)
            if code in _MISSING:
                raise ObjectMissing(key) from exc
            if code in _BAD_RANGE:
                raise RangeNotSatisfiable(range_header or "") from exc
            raise _unavailable("get", exc) from exc
        except _TRANSPORT_ERRORS as exc:
            raise _unavailable("get", exc) from exc
        content_range = response.get("ContentRange") or None
        status = int(response["ResponseMetadata"].get("HTTPStatusCode", 200))
        return StoredObject(
            status=206 if content_range and status == 206 else 200,
            content_type=response.get("ContentType") or "application/octet-stream",
            content_length=int(response.get("ContentLength", 0)),
            content_range=content_range if status == 206 else None,
            etag=response.get("ETag", ""),
            last_modified=response.get("LastModified"),
            _body=response["Body"],
        )

    async def delete(self, keys: Sequence[str]) -> None:
        """Delete `keys` (DeleteObjects, 1000 at a time); keys that do not exist are fine."""
        for start in range(0, len(keys), DELETE_BATCH):
            batch: list[ObjectIdentifierTypeDef] = [
                {"Key": key} for key in keys[start : start + DELETE_BATCH]
            ]
            try:
                response = await self._client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
                )
            except (ClientError, *_TRANSPORT_ERRORS) as exc:
                raise _unavailable("delete", exc) from exc
            errors = [e for e in response.get("Errors", []) if e.get("Code") not in _MISSING]
            if errors:
                log.warning(
                    "object store: delete refused for %d of %d keys (%s)",
                    len(errors),
                    len(batch),
                    errors[0].get("Code", ""),
                )
                raise StorageUnavailable("Media storage did not delete every object; try again shortly.")

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every object whose key starts with `prefix`; how many there were."""
        keys = await self.keys(prefix)
        await self.delete(keys)
        return len(keys)

    async def keys(self, prefix: str) -> list[str]:
        """Every key starting with `prefix`, in S3's order."""
        found: list[str] = []
        try:
            paginator = self._client.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                found.extend(item["Key"] for item in page.get("Contents", []) if "Key" in item)
        except (ClientError, *_TRANSPORT_ERRORS) as exc:
            raise _unavailable("list", exc) from exc
        return found


async def vacuum(url: str, *, timeout: float = 30.0) -> None:  # noqa: ASYNC109 - an HTTP timeout
    """Ask the SeaweedFS master at `url` to compact every volume holding deleted bytes.

    SeaweedFS marks a deleted object's bytes as garbage and removes them from its volume files only
    when the volume is vacuumed. The master runs the vacuum before it answers. Note that SeaweedFS's
    filer hands the deletion of an object's chunks to the volume servers a moment after DeleteObject
    answered, so bytes deleted just before may only go with the next vacuum.
    """
    endpoint = f"{url.rstrip('/')}/vol/vacuum"
    try:
        async with httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=CONNECT_TIMEOUT)) as http:
            response = await http.post(endpoint, params={"garbageThreshold": str(VACUUM_GARBAGE_THRESHOLD)})
    except httpx.HTTPError as exc:
        raise _unavailable("vacuum", exc) from exc
    if response.status_code != 200:
        log.warning("object store: vacuum answered HTTP %d", response.status_code)
        raise StorageUnavailable("Media storage did not vacuum; try again later.")
