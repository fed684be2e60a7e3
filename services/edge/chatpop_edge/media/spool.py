"""An upload's body, counted and written to a spool file chunk by chunk, refused once past its limit.

Nothing is buffered whole: chunks are gathered up to FLUSH_BYTES and written by a worker thread, so
the event loop never waits on the disk. When the count passes the limit, reading stops at once (the
rest of the body is never read; the route answers 413 and closes the connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import BinaryIO

FLUSH_BYTES = 1024 * 1024
DIR_PREFIX = "chatpop-media-"


class TooLarge(Exception):
    """The body passed the limit; `read` bytes were read when that was noticed."""

    def __init__(self, read: int) -> None:
        super().__init__(read)
        self.read = read


async def spool(chunks: AsyncIterator[bytes], out: BinaryIO, limit: int) -> int:
    """Write `chunks` to `out`; the number of bytes. TooLarge as soon as they pass `limit`."""
    size = 0
    pending: list[bytes] = []
    pending_size = 0
    async for chunk in chunks:
        if not chunk:
            continue
        size += len(chunk)
        if size > limit:
            raise TooLarge(size)
        pending.append(chunk)
        pending_size += len(chunk)
        if pending_size >= FLUSH_BYTES:
            await asyncio.to_thread(out.write, b"".join(pending))
            pending, pending_size = [], 0
    if pending:
        await asyncio.to_thread(out.write, b"".join(pending))
    await asyncio.to_thread(out.flush)
    return size


@contextlib.contextmanager
def upload_dir(spool_dir: Path | None) -> Iterator[Path]:
    """A private directory for one upload (its spool file and the checker's work files), removed with
    everything in it when the upload ends, however it ends."""
    path = Path(tempfile.mkdtemp(prefix=DIR_PREFIX, dir=spool_dir))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
