"""What the edge's media routes run on: the object store, the check pool and the edge's service
credential. Made in the app's lifespan from the settings, closed at shutdown."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from chatpop_common.objectstore import ObjectStore
from chatpop_common.service_auth import ServiceCredentials
from chatpop_edge.media.inspect import Limits
from chatpop_edge.media.pool import MediaChecker
from chatpop_edge.settings import EdgeSettings

log = logging.getLogger(__name__)


def check_limits(settings: EdgeSettings) -> Limits:
    return Limits(
        max_pixels=settings.media_max_pixels,
        video_max_seconds=settings.media_video_max_seconds,
        voice_max_seconds=settings.media_voice_max_seconds,
    )


@dataclass
class MediaRuntime:
    """The store and the checker are None while media is switched off (no S3_BUCKET)."""

    credentials: ServiceCredentials
    store: ObjectStore | None = None
    checker: MediaChecker | None = None

    @classmethod
    async def open(cls, settings: EdgeSettings, credentials: ServiceCredentials) -> MediaRuntime:
        if not settings.media_enabled:
            log.info("media is switched off (S3_BUCKET is empty)")
            return cls(credentials)
        if settings.media_spool_dir is not None:
            settings.media_spool_dir.mkdir(parents=True, exist_ok=True)
        store = await ObjectStore.open(settings)
        checker = MediaChecker(
            workers=settings.media_check_workers,
            queue=settings.media_check_queue,
            timeout=settings.media_check_timeout,
            memory_mb=settings.media_check_memory_mb,
            limits=check_limits(settings),
        )
        try:
            # The check workers' forkserver imports Pillow and PyAV now, not on the first upload.
            await checker.start()
        except BaseException:
            await store.close()
            raise
        return cls(credentials, store, checker)

    async def close(self) -> None:
        if self.checker is not None:
            await self.checker.close()
        if self.store is not None:
            await self.store.close()
