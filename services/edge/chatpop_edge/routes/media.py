"""Media: uploads checked by content and stored by the platform, and signed URLs to serve them.

`POST /api/v1/rooms/{code}/media?kind=` takes the file as the raw body. The body is counted into a
spool file as it arrives and refused (413) as soon as it passes the kind's limit; then a worker
process checks it and produces the variants (media/inspect.py, never on the event loop), messaging
opens the record, the variants go to the object store and the record is completed. Whatever happens,
the spool and work files go with the request; a failure after the record was opened abandons it.

`GET /media/{room_id}/{media_id}/{variant}` serves a stored variant to whoever holds a URL signed for
them and the binding cookie (media/signing.py), while they still stand in the room.
"""

from __future__ import annotations

import logging
import re
import time
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import grpc
from fastapi import APIRouter, Path, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from starlette.requests import ClientDisconnect
from starlette.types import Scope

from chatpop.messaging.v1 import messaging_pb2
from chatpop_common.errors import ServiceError
from chatpop_common.objectstore import ObjectMissing, RangeNotSatisfiable, StorageUnavailable
from chatpop_edge import models
from chatpop_edge.backends import Backends, auth_metadata
from chatpop_edge.deps import BackendsDep, RequiredToken, SettingsDep
from chatpop_edge.errors import ApiError, error_responses, map_rpc_error, map_service_error
from chatpop_edge.media import signing
from chatpop_edge.media.inspect import Checked, MediaRejected
from chatpop_edge.media.pool import CheckerBusy
from chatpop_edge.media.runtime import MediaRuntime
from chatpop_edge.media.spool import TooLarge, spool, upload_dir
from chatpop_edge.routes.rooms import RoomCode, room_principal
from chatpop_edge.settings import EdgeSettings

log = logging.getLogger(__name__)

router = APIRouter(tags=["media"])

UPLOAD_PATH = re.compile(r"/api/v1/rooms/[^/]+/media")
_PROTO_KINDS = {
    "photo": messaging_pb2.MEDIA_KIND_PHOTO,
    "voice": messaging_pb2.MEDIA_KIND_VOICE,
    "video": messaging_pb2.MEDIA_KIND_VIDEO,
}
_SINGLE_RANGE = re.compile(r"bytes=(\d{0,15})-(\d{0,15})")
# What every served variant is: the types the checks produce (nothing else is ever stored).
SERVED_TYPES = (
    "image/jpeg",
    "image/png",
    "image/webp",
    "image/gif",
    "audio/mp4",
    "video/mp4",
    "video/webm",
)
MEDIA_CSP = "default-src 'none'; sandbox"
_UUID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"


def is_upload(scope: Scope) -> bool:
    """A media upload: its body is streamed and limited by its route, not by BodyLimitMiddleware."""
    return scope.get("method") == "POST" and UPLOAD_PATH.fullmatch(str(scope.get("path", ""))) is not None


def _runtime(request: Request) -> MediaRuntime:
    runtime: MediaRuntime = request.app.state.media
    return runtime


# --- bodies ---------------------------------------------------------------------------------------


class MediaItem(BaseModel):
    id: str
    kind: models.MediaKind
    state: models.MediaState = Field(description="Only `ready` media has URLs.")
    content_type: str = Field(description="Of the `full` variant.")
    width: int | None = None
    height: int | None = None
    duration_ms: int | None = None
    urls: dict[str, str] = Field(
        description="Signed URL of each variant (`full`, and `thumb` for a photo or `poster` for a video), "
        "good until `expires_at` for the caller alone (with the `cp_media` cookie this answer sets)."
    )


class UploadedMedia(BaseModel):
    expires_at: datetime = Field(description="When the URLs stop working; ask `…/media/urls` for new ones.")
    media: MediaItem


class MediaUrls(BaseModel):
    expires_at: datetime = Field(description="When the URLs stop working.")
    media: list[MediaItem] = Field(
        description="The ids asked for that the room has; unknown ids are left out."
    )


class MediaUrlsRequest(models.RequestBody):
    media_ids: list[Annotated[str, Field(max_length=36, pattern=_UUID)]] = Field(min_length=1, max_length=100)


MediaKindQuery = Annotated[
    Literal["photo", "voice", "video"],
    Query(description="What the file is meant to be; it is checked by its content, never by its name."),
]


# --- signed URLs ----------------------------------------------------------------------------------


def _issue(
    settings: EdgeSettings, records: list[messaging_pb2.Media], room_id: str, participant_id: str
) -> tuple[int, list[MediaItem]]:
    exp = signing.expiry(time.time(), settings.media_url_ttl)
    key = settings.media_url_secret
    items = []
    for record in records:
        state = models.MEDIA_STATES.get(record.state, "pending")
        urls = (
            {
                variant.name: signing.signed_url(key, room_id, record.id, variant.name, participant_id, exp)
                for variant in record.variants
            }
            if state == "ready"
            else {}
        )
        items.append(
            MediaItem(
                id=record.id,
                kind=models.MEDIA_KINDS.get(record.kind, "photo"),
                state=state,
                content_type=record.content_type,
                width=record.width or None,
                height=record.height or None,
                duration_ms=record.duration_ms or None,
                urls=urls,
            )
        )
    return exp, items


def _set_binding_cookie(
    response: Response, settings: EdgeSettings, room_id: str, participant_id: str, exp: int
) -> None:
    response.set_cookie(
        signing.COOKIE_NAME,
        signing.binding_cookie(settings.media_url_secret, room_id, participant_id, exp),
        max_age=max(1, exp - int(time.time())),
        path=signing.cookie_path(room_id),
        httponly=True,
        samesite="strict",
        secure=settings.public_url.startswith("https://"),
    )


def _expires_at(exp: int) -> datetime:
    return datetime.fromtimestamp(exp, UTC)


# --- upload ---------------------------------------------------------------------------------------


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        "media_too_large",
        f"The file is larger than {limit:,} bytes.",
        # The rest of the body is never read: the connection goes with the answer.
        headers={"Connection": "close"},
    )


def _storage_unavailable() -> ApiError:
    return ApiError(
        503, "storage_unavailable", "Media storage is briefly unavailable. Please try again.", retry_after=5
    )


def _declared_length(request: Request) -> int | None:
    raw = request.headers.get("content-length")
    if raw is None:
        return None
    raw = raw.strip()
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise ApiError(400, "bad_request", "Content-Length is not a number.", headers={"Connection": "close"})
    return int(raw)


@router.post(
    "/api/v1/rooms/{code}/media",
    status_code=status.HTTP_201_CREATED,
    response_model=UploadedMedia,
    responses={
        **error_responses(401, 403, 404, 409, 413, 422, 503),
        201: {
            "model": UploadedMedia,
            "description": "Stored; the answer sets the `cp_media` cookie its URLs need.",
        },
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "The file itself (any Content-Type; never trusted).",
            "content": {
                "application/octet-stream": {
                    # The largest limit (video, by default); each kind has its own (see above).
                    "schema": {"type": "string", "format": "binary", "maxLength": 50 * 1024 * 1024}
                }
            },
        }
    },
    summary="Upload a photo, voice message or video to the room (room token); the body is the file",
    description="Photo ≤ 10 MiB (JPEG, PNG, WebP, GIF), voice ≤ 10 MiB (WebM, Ogg, MP4, MP3, WAV), video "
    "≤ 50 MiB and ≤ 30 s (MP4, WebM), when the room allows the kind (403 `media_not_allowed`). Checked by "
    "content and stored re-encoded or remuxed without metadata. 413 `media_too_large` (at once when "
    "Content-Length says so, else as soon as the body passes the limit; the connection is closed); 422 "
    "`media_unsupported`, `media_invalid`, `media_too_long`, `media_too_many_pixels`, `media_empty`; 503 "
    "`media_disabled` (no storage configured), `media_busy` and `storage_unavailable` (retry after "
    "Retry-After). Send the answer's `media.id` as a message's `media_id`; media no message carries is "
    "purged after a day.",
)
async def upload_media(
    code: RoomCode,
    kind: MediaKindQuery,
    request: Request,
    response: Response,
    backends: BackendsDep,
    settings: SettingsDep,
    token: RequiredToken,
) -> UploadedMedia:
    try:
        return await _upload(code, kind, request, response, backends, settings, token)
    except ApiError as exc:
        # An answer given before the body was read to its end ends the connection: the client may still
        # be sending, and nothing else may be read from it as a request.
        exc.headers.setdefault("Connection", "close")
        raise
    except (grpc.aio.AioRpcError, ServiceError) as exc:
        mapped = map_rpc_error(exc) if isinstance(exc, grpc.aio.AioRpcError) else map_service_error(exc)
        raise ApiError(
            mapped.status,
            mapped.code,
            mapped.message,
            retry_after=mapped.retry_after,
            headers={"Connection": "close"},
        ) from exc


async def _upload(
    code: str,
    kind: str,
    request: Request,
    response: Response,
    backends: Backends,
    settings: EdgeSettings,
    token: str,
) -> UploadedMedia:
    room_id, principal = await room_principal(backends, code, token)
    room = await backends.get_room(code, token)
    if not getattr(room.media, kind):
        raise ApiError(403, "media_not_allowed", f"This room does not accept {kind} uploads.")
    runtime = _runtime(request)
    if runtime.store is None or runtime.checker is None:
        raise ApiError(
            503, "media_disabled", "Media uploads are switched off on this server.", retry_after=60
        )
    limit = settings.media_max_bytes(kind)
    declared = _declared_length(request)
    if declared is not None and declared > limit:
        raise _too_large(limit)
    with upload_dir(settings.media_spool_dir) as workdir:
        source = workdir / "upload"
        try:
            with source.open("wb") as out:
                size = await spool(request.stream(), out, limit)
        except TooLarge:
            raise _too_large(limit) from None
        except ClientDisconnect:
            # Nobody is left to answer; nothing was recorded or stored.
            log.info("media upload abandoned by the client", extra={"room_id": room_id})
            raise ApiError(400, "upload_incomplete", "The upload did not complete.") from None
        if size == 0:
            raise ApiError(422, "media_empty", "The file is empty.")
        try:
            checked = await runtime.checker.check(kind, source, workdir / "work")
        except MediaRejected as exc:
            raise ApiError(422, exc.code, exc.message) from None
        except CheckerBusy:
            raise ApiError(
                503, "media_busy", "Too many uploads are being checked; try again shortly.", retry_after=2
            ) from None
        record = await _store(backends, runtime, room_id, kind, checked, token)
    exp, items = _issue(settings, [record], room_id, principal.participant_id)
    _set_binding_cookie(response, settings, room_id, principal.participant_id, exp)
    return UploadedMedia(expires_at=_expires_at(exp), media=items[0])


async def _store(
    backends: Backends, runtime: MediaRuntime, room_id: str, kind: str, checked: Checked, token: str
) -> messaging_pb2.Media:
    """Open the record, put every variant under its prefix, complete it; abandon it on failure."""
    assert runtime.store is not None
    metadata = auth_metadata(token)
    created = await backends.messaging.CreateMedia(
        messaging_pb2.CreateMediaRequest(room_id=room_id, kind=_PROTO_KINDS[kind]),
        metadata=metadata,
        timeout=backends.timeout,
    )
    media = created.media
    try:
        for variant in checked.variants:
            await runtime.store.put_file(
                media.object_prefix + variant.name, variant.path, variant.content_type
            )
        completed = await backends.messaging.CompleteMedia(
            messaging_pb2.CompleteMediaRequest(
                room_id=room_id,
                media_id=media.id,
                content_type=checked.content_type,
                size_bytes=checked.size_bytes,
                width=checked.width or 0,
                height=checked.height or 0,
                duration_ms=checked.duration_ms or 0,
                variants=[
                    messaging_pb2.MediaVariant(
                        name=variant.name,
                        content_type=variant.content_type,
                        size_bytes=variant.size_bytes,
                        width=variant.width or 0,
                        height=variant.height or 0,
                    )
                    for variant in checked.variants
                ],
            ),
            metadata=metadata,
            timeout=backends.timeout,
        )
    except StorageUnavailable:
        await _abandon(backends, room_id, media.id, token)
        raise _storage_unavailable() from None
    except Exception:
        await _abandon(backends, room_id, media.id, token)
        raise
    stored: messaging_pb2.Media = completed.media
    return stored


async def _abandon(backends: Backends, room_id: str, media_id: str, token: str) -> None:
    """Best effort: what is not abandoned now, messaging's sweeper purges once it is stale."""
    try:
        await backends.messaging.AbandonMedia(
            messaging_pb2.AbandonMediaRequest(room_id=room_id, media_id=media_id),
            metadata=auth_metadata(token),
            timeout=backends.timeout,
        )
    except grpc.aio.AioRpcError as exc:
        log.warning(
            "could not abandon a media record",
            extra={"room_id": room_id, "media_id": media_id, "grpc_code": exc.code().name},
        )


# --- URLs -----------------------------------------------------------------------------------------


@router.post(
    "/api/v1/rooms/{code}/media/urls",
    response_model=MediaUrls,
    responses=error_responses(401, 403, 404),
    summary="Signed URLs of the room's media for the caller (room token); sets the `cp_media` cookie",
    description="Up to 100 ids. Media that is not `ready` (purged: `deleted`) comes back without URLs; "
    "ids the room does not have are left out. The URLs work with the cookie this answer sets, for the "
    "caller alone, until `expires_at`, and only while the caller stands in the room.",
)
async def media_urls(
    code: RoomCode,
    body: MediaUrlsRequest,
    response: Response,
    backends: BackendsDep,
    settings: SettingsDep,
    token: RequiredToken,
) -> MediaUrls:
    room_id, principal = await room_principal(backends, code, token)
    found = await backends.messaging.GetMedia(
        messaging_pb2.GetMediaRequest(room_id=room_id, media_ids=list(dict.fromkeys(body.media_ids))),
        metadata=auth_metadata(token),
        timeout=backends.timeout,
    )
    exp, items = _issue(settings, list(found.media), room_id, principal.participant_id)
    _set_binding_cookie(response, settings, room_id, principal.participant_id, exp)
    return MediaUrls(expires_at=_expires_at(exp), media=items)


# --- serving --------------------------------------------------------------------------------------

_BINARY = {"schema": {"type": "string", "format": "binary"}}
_SERVE_RESPONSES: dict[int | str, dict[str, Any]] = {
    **error_responses(403, 404, 416, 503),
    200: {"description": "The variant's bytes", "content": {kind: _BINARY for kind in SERVED_TYPES}},
    206: {"description": "The range asked for", "content": {kind: _BINARY for kind in SERVED_TYPES}},
}
_SERVE_RESPONSES[416] = {**_SERVE_RESPONSES[416], "description": "The range lies outside the variant"}
_SERVE_RESPONSES[403] = {
    **_SERVE_RESPONSES[403],
    "description": "`media_url_invalid`, `media_url_expired`, `media_url_not_yours` (no or another "
    "participant's `cp_media` cookie), `not_a_participant`, `banned`, `seat_removed`",
}

PathId = Annotated[str, Path(min_length=1, max_length=64)]
SignedParam = Annotated[str, Query(max_length=128)]


@router.get(
    "/media/{room_id}/{media_id}/{variant}",
    responses=_SERVE_RESPONSES,
    response_class=Response,
    summary="A stored media variant, through a URL signed for the caller (also HEAD)",
    description="Needs the `cp_media` cookie set with the URL. Checked in this order: signature (403 "
    "`media_url_invalid`), expiry (403 `media_url_expired`), the cookie names the URL's participant (403 "
    "`media_url_not_yours`), the participant still stands in the room (403 `not_a_participant` / "
    "`banned` / `seat_removed`, 404 `room_taken_down`), the media is ready and has the variant (404 "
    "`media_not_found`). Single byte ranges are served (206 with Content-Range; 416 outside the "
    "variant). The answer carries the stored type, `X-Content-Type-Options: nosniff`, "
    "`Content-Disposition: inline`, `Content-Security-Policy: default-src 'none'; sandbox`, "
    "`Cache-Control: private, max-age=<seconds until the URL expires>`, `Accept-Ranges: bytes` and an "
    "ETag. `HEAD` answers the same headers without the bytes.",
)
async def serve_media(
    room_id: PathId,
    media_id: PathId,
    variant: PathId,
    request: Request,
    backends: BackendsDep,
    settings: SettingsDep,
    p: SignedParam = "",
    e: SignedParam = "",
    s: SignedParam = "",
) -> Response:
    key = settings.media_url_secret
    try:
        participant_id, exp = signing.verify_url(key, room_id, media_id, variant, p, e, s)
    except signing.InvalidSignature:
        raise ApiError(403, "media_url_invalid", "This media link is not valid.") from None
    now = time.time()
    if exp < now:
        raise ApiError(403, "media_url_expired", "This media link has expired; reload the room.")
    try:
        binding = signing.verify_cookie(key, room_id, request.cookies.get(signing.COOKIE_NAME, ""))
    except signing.InvalidSignature:
        binding = None
    if binding is None or binding.participant_id != participant_id or binding.exp < now:
        raise ApiError(403, "media_url_not_yours", "This media link was issued to someone else.")
    await backends.standing.check_participant(room_id, participant_id)
    runtime = _runtime(request)
    if runtime.store is None:
        raise ApiError(404, "media_not_found", "This media does not exist.")
    found = await backends.messaging.GetMedia(
        messaging_pb2.GetMediaRequest(room_id=room_id, media_ids=[media_id]),
        metadata=await runtime.credentials.metadata(),
        timeout=backends.timeout,
    )
    record = next((m for m in found.media if m.id == media_id), None)
    stored = None
    if record is not None and record.state == messaging_pb2.MEDIA_STATE_READY:
        stored = next((v for v in record.variants if v.name == variant), None)
    if stored is None or not stored.object_key:
        raise ApiError(404, "media_not_found", "This media does not exist.")
    try:
        obj = await runtime.store.get(stored.object_key, range_header=_single_range(request))
    except ObjectMissing:
        raise ApiError(404, "media_not_found", "This media does not exist.") from None
    except RangeNotSatisfiable:
        return Response(
            status_code=416,
            headers={
                "Content-Range": f"bytes */{stored.size_bytes}",
                **_served_headers(stored.content_type, exp, now),
            },
        )
    except StorageUnavailable:
        raise _storage_unavailable() from None
    headers = {
        **_served_headers(stored.content_type, exp, now),
        "Content-Length": str(obj.content_length),
    }
    if obj.etag:
        headers["ETag"] = obj.etag
    if obj.content_range:
        headers["Content-Range"] = obj.content_range
    if obj.last_modified is not None:
        headers["Last-Modified"] = obj.last_modified.strftime("%a, %d %b %Y %H:%M:%S GMT")
    if request.method == "HEAD":
        await obj.close()
        return Response(status_code=obj.status, headers=headers)
    return StreamingResponse(obj.chunks(), status_code=obj.status, headers=headers)


def _served_headers(content_type: str, exp: int, now: float) -> dict[str, str]:
    return {
        # The type recorded when the platform stored it; never anything a client said.
        "Content-Type": content_type,
        "X-Content-Type-Options": "nosniff",
        "Content-Disposition": "inline",
        "Content-Security-Policy": MEDIA_CSP,
        "Cache-Control": f"private, max-age={max(0, int(exp - now))}",
        "Accept-Ranges": "bytes",
    }


def _single_range(request: Request) -> str | None:
    """A single `bytes=` range, passed on to the store; anything else is ignored (the whole variant)."""
    raw = request.headers.get("range", "").strip()
    match = _SINGLE_RANGE.fullmatch(raw)
    if match is None or not (match.group(1) or match.group(2)):
        return None
    return raw


# HEAD shares GET's handler; documented with it.
router.add_api_route(
    "/media/{room_id}/{media_id}/{variant}",
    serve_media,
    methods=["HEAD"],
    include_in_schema=False,
    response_class=Response,
)
