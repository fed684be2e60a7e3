"""The content check of an upload: what it really is, whether it is allowed, and the bytes we store.

`check_media` runs in a worker process (see pool.py), never on the event loop. It trusts nothing the
client said: the container comes from the magic bytes, images are decoded with only that format's
plugin, audio and video are demuxed with the sniffed format given explicitly (never probed). What is
stored is always re-made by us — photos re-encoded, voice notes re-encoded to AAC, videos remuxed — so
no metadata, trailing bytes or polyglot payload of the upload survives.
"""

from __future__ import annotations

import itertools
import logging
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple, cast

import av
import av.error
from PIL import Image, ImageOps

from chatpop_edge.media.sniff import Container, sniff_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    """What a check accepts (besides byte sizes, which the edge enforces while receiving)."""

    max_pixels: int = 40_000_000  # one picture (photo, animation frame, video frame)
    video_max_seconds: float = 30.0
    voice_max_seconds: float = 600.0
    # All frames of an animated image together: each frame is held decoded while it is re-encoded.
    animation_max_pixels: int = 100_000_000


class MediaRejected(Exception):
    """The upload is not acceptable; `code` is the error code the edge answers with (422)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class Variant(NamedTuple):
    """One stored file: `full`, `thumb` (photo) or `poster` (video)."""

    name: str
    path: Path
    content_type: str
    width: int | None
    height: int | None
    size_bytes: int


@dataclass(frozen=True)
class Checked:
    """An accepted upload: the record's fields and the files to store (the first variant is `full`)."""

    content_type: str
    width: int | None
    height: int | None
    duration_ms: int | None
    size_bytes: int
    variants: list[Variant] = field(default_factory=list)


ALLOWED_CONTAINERS: dict[str, frozenset[Container]] = {
    "photo": frozenset({Container.JPEG, Container.PNG, Container.WEBP, Container.GIF}),
    # MOV and Matroska share their demuxer with MP4 and WebM; what is inside is checked codec by codec.
    "voice": frozenset(
        {Container.WEBM, Container.MATROSKA, Container.OGG, Container.MP4, Container.MOV}
        | {Container.MP3, Container.WAV}
    ),
    "video": frozenset({Container.MP4, Container.MOV, Container.WEBM, Container.MATROSKA}),
}
_UNSUPPORTED_MESSAGES = {
    "photo": "Photos must be JPEG, PNG, WebP or GIF images.",
    "voice": "Voice notes must be WebM, Ogg, MP4, MP3 or WAV audio.",
    "video": "Videos must be MP4 or WebM files.",
}


def check_media(kind: str, source: Path, workdir: Path, limits: Limits) -> Checked:
    """Check the upload at `source` as a `kind` (photo|voice|video) and write what is to be stored into
    `workdir`. Raises MediaRejected with media_unsupported, media_invalid, media_too_long,
    media_too_many_pixels or media_empty."""
    if kind not in ALLOWED_CONTAINERS:
        raise ValueError(f"unknown media kind {kind!r}")
    if source.stat().st_size == 0:
        raise MediaRejected("media_empty", "The file is empty.")
    container = sniff_file(source)
    if container not in ALLOWED_CONTAINERS[kind]:
        raise MediaRejected("media_unsupported", _UNSUPPORTED_MESSAGES[kind])
    workdir.mkdir(parents=True, exist_ok=True)
    if kind == "photo":
        return _check_photo(container, source, workdir, limits)
    if kind == "voice":
        return _check_voice(container, source, workdir, limits)
    return _check_video(container, source, workdir, limits)


def _variant(name: str, path: Path, content_type: str, width: int | None, height: int | None) -> Variant:
    return Variant(name, path, content_type, width, height, path.stat().st_size)


# ---------------------------------------------------------------------------------------------------
# Photos (Pillow)

_PIL_FORMATS = {Container.JPEG: "JPEG", Container.PNG: "PNG", Container.WEBP: "WEBP", Container.GIF: "GIF"}
_IMAGE_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif"}
_EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif"}
FULL_MAX_SIDE = 4096
THUMB_MAX_SIDE = 480
POSTER_MAX_SIDE = 1280


@dataclass
class _Picture:
    """A decoded photo: its frames (one unless animated), already turned upright, with no metadata."""

    frames: list[Image.Image]
    durations: list[int]
    loop: int | None
    has_alpha: bool


def _too_many_pixels(width: int, height: int, limits: Limits) -> None:
    if width * height > limits.max_pixels:
        raise MediaRejected(
            "media_too_many_pixels",
            f"The picture is {width}x{height}; at most {limits.max_pixels:,} pixels are accepted.",
        )


def _check_photo(container: Container, source: Path, workdir: Path, limits: Limits) -> Checked:
    pil_format = _PIL_FORMATS[container]
    picture = _decode_photo(pil_format, source, limits)
    return _store_photo(picture, pil_format, workdir)


def _decode_photo(pil_format: str, source: Path, limits: Limits) -> _Picture:
    # The worker process checks one file at a time, so setting Pillow's global limit here is safe.
    Image.MAX_IMAGE_PIXELS = limits.max_pixels
    with warnings.catch_warnings():
        # Above MAX_IMAGE_PIXELS Pillow only warns (it raises above twice that): both are refusals.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            # verify() checks the structure (chunk CRCs, ...) without decoding; the image cannot be used
            # afterwards, hence the second open that decodes every pixel.
            with source.open("rb") as fp, Image.open(fp, formats=[pil_format]) as image:
                _too_many_pixels(image.width, image.height, limits)
                image.verify()
            with source.open("rb") as fp, Image.open(fp, formats=[pil_format]) as image:
                _too_many_pixels(image.width, image.height, limits)
                return _read_frames(image, limits)
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
            raise MediaRejected(
                "media_too_many_pixels", f"The picture has more than {limits.max_pixels:,} pixels."
            ) from exc
        except MediaRejected:
            raise
        except MemoryError:
            raise
        except Exception as exc:
            # Truncated data (ImageFile.LOAD_TRUNCATED_IMAGES stays off), bad CRCs, broken headers, or
            # anything else a decoder chokes on: the image is not a complete, valid picture.
            log.debug("photo refused as invalid", exc_info=True)
            raise MediaRejected("media_invalid", "The image is damaged or incomplete.") from exc


def _read_frames(image: Image.Image, limits: Limits) -> _Picture:
    # Animations are kept for GIF, WebP and APNG. A JPEG's further pictures (MPO: the depth map or
    # preview many phones add) are dropped with the rest of its metadata.
    frame_count = getattr(image, "n_frames", 1) if image.format in ("GIF", "WEBP", "PNG") else 1
    if frame_count > 1 and image.width * image.height * frame_count > limits.animation_max_pixels:
        raise MediaRejected(
            "media_too_many_pixels",
            f"The animation has too many frames for its size (at most {limits.animation_max_pixels:,} pixels "
            "over all frames).",
        )
    loop = image.info.get("loop")
    frames: list[Image.Image] = []
    durations: list[int] = []
    has_alpha = False
    for index in range(frame_count):
        image.seek(index)
        image.load()
        alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
        has_alpha = has_alpha or alpha
        durations.append(int(image.info.get("duration", 100) or 100))
        upright = ImageOps.exif_transpose(image)
        mode = "RGBA" if alpha else ("L" if upright.mode in ("1", "L", "I", "I;16", "F") else "RGB")
        frame = upright.convert(mode)
        # Nothing of the source's metadata goes into the re-encoded file: Pillow's writers pick up
        # comments, ICC profiles, XMP and transparency keys from `info`.
        frame.info.clear()
        frames.append(frame)
    if has_alpha:
        frames = [frame if frame.mode == "RGBA" else frame.convert("RGBA") for frame in frames]
        # An alpha channel that is opaque everywhere is no transparency.
        has_alpha = any(_min_alpha(frame) < 255 for frame in frames)
        if not has_alpha:
            frames = [frame.convert("RGB") for frame in frames]
    for frame in frames:
        frame.info.clear()
    return _Picture(frames, durations, int(loop) if loop is not None else None, has_alpha)


def _min_alpha(frame: Image.Image) -> int:
    low, _ = cast(tuple[int, int], frame.getchannel("A").getextrema())
    return low


def _store_photo(picture: _Picture, pil_format: str, workdir: Path) -> Checked:
    frames = picture.frames
    for frame in frames:
        if max(frame.size) > FULL_MAX_SIDE:
            frame.thumbnail((FULL_MAX_SIDE, FULL_MAX_SIDE), Image.Resampling.LANCZOS)
    first = frames[0]
    full_path = workdir / f"full{_EXTENSIONS[pil_format]}"
    options: dict[str, object] = {}
    if pil_format == "JPEG":
        options = {"quality": 85, "optimize": True, "progressive": True}
    elif pil_format == "PNG":
        options = {"compress_level": 6}
    elif pil_format == "WEBP":
        options = {"quality": 85, "method": 4}
    if len(frames) > 1:
        options |= {"save_all": True, "append_images": frames[1:], "duration": picture.durations}
        if picture.loop is not None:
            options["loop"] = picture.loop
    first.save(full_path, pil_format, **options)
    full = _variant("full", full_path, _IMAGE_TYPES[pil_format], first.width, first.height)

    thumb_image = first.copy()
    thumb_image.thumbnail((THUMB_MAX_SIDE, THUMB_MAX_SIDE), Image.Resampling.LANCZOS)
    if picture.has_alpha:
        thumb_path = workdir / "thumb.png"
        thumb_image.save(thumb_path, "PNG", compress_level=6)
        thumb_type = "image/png"
    else:
        thumb_path = workdir / "thumb.jpg"
        thumb_image.convert("RGB").save(thumb_path, "JPEG", quality=80, optimize=True)
        thumb_type = "image/jpeg"
    thumb = _variant("thumb", thumb_path, thumb_type, thumb_image.width, thumb_image.height)
    return Checked(full.content_type, full.width, full.height, None, full.size_bytes, [full, thumb])


# ---------------------------------------------------------------------------------------------------
# Audio and video (PyAV)

# The demuxer for each sniffed container, named explicitly so FFmpeg never probes (which could pick
# HLS, concat or another format that opens URLs or other files).
_DEMUXERS = {
    Container.WEBM: "matroska",
    Container.MATROSKA: "matroska",
    Container.OGG: "ogg",
    Container.MP4: "mp4",
    Container.MOV: "mov",
    Container.MP3: "mp3",
    Container.WAV: "wav",
}
_VOICE_CODECS = frozenset({"opus", "vorbis", "aac", "mp3", "flac", "pcm_s16le", "pcm_s24le", "pcm_f32le"})
_AAC_RATES = frozenset({8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000})
# h264 plays everywhere; VP8/VP9/AV1 in every current browser. HEVC is refused: Firefox and Chrome on
# many systems cannot decode it, so a stored HEVC video would not play for part of the room.
_VIDEO_CODECS = frozenset({"h264", "vp8", "vp9", "av1"})
_VIDEO_AUDIO_CODECS = frozenset({"aac", "opus", "vorbis", "mp3"})
# Which codecs each stored container can carry (and browsers play from it).
_REMUX_TARGETS = {
    "mp4": (frozenset({"h264", "vp9", "av1"}), frozenset({"aac", "mp3", "opus"})),
    "webm": (frozenset({"vp8", "vp9", "av1"}), frozenset({"opus", "vorbis"})),
}
# The muxers never write an "encoder" tag or other identifying metadata with bitexact set.
_MP4_OPTIONS = {"movflags": "+faststart", "fflags": "+bitexact"}
_WEBM_OPTIONS = {"fflags": "+bitexact"}
# Timestamps in WebM are whole milliseconds: a clip of exactly the limit may measure a millisecond over.
_DURATION_SLACK = Fraction(1, 1000)
# Audio comes in codec frames (and AAC with priming samples): a video's sound may run a little past
# its pictures without the clip being longer.
_VIDEO_AUDIO_SLACK = Fraction(1)
# No real clip has more frames per second than this; more packets than the limit allows at this rate
# means timestamps squeezed to look short.
_MAX_FRAME_RATE = 300


class _Span:
    """How long a stream really lasts, from its packets: the earliest pts to the end of the latest one.
    Headers (mvhd, Matroska Duration, ...) are never consulted: they can say anything."""

    def __init__(self, time_base: Fraction | None) -> None:
        self.time_base = time_base or Fraction(1, 1)
        self.start: int | None = None
        self.end: int | None = None
        self.last_pts: int | None = None
        self.packets = 0
        self.pts: list[int] = []
        self._missing_duration = False

    def add(self, packet: av.Packet[Any]) -> None:
        pts = packet.pts if packet.pts is not None else packet.dts
        if pts is None:
            return
        self.packets += 1
        self.pts.append(pts)
        duration = packet.duration or 0
        if duration <= 0:
            self._missing_duration = True
        self.start = pts if self.start is None else min(self.start, pts)
        self.last_pts = pts if self.last_pts is None else max(self.last_pts, pts)
        end = pts + max(duration, 0)
        self.end = end if self.end is None else max(self.end, end)

    @property
    def seconds_so_far(self) -> Fraction:
        """A cheap lower bound while packets still arrive (the last one's length may be unknown yet)."""
        if self.start is None or self.end is None or self.last_pts is None:
            return Fraction(0)
        return Fraction(max(self.end, self.last_pts) - self.start) * self.time_base

    @property
    def seconds(self) -> Fraction:
        """The duration once every packet was added."""
        if self.start is None or self.end is None or self.last_pts is None:
            return Fraction(0)
        end = self.end
        if self._missing_duration and len(self.pts) > 1:
            # Packets without a duration (common in Matroska): the last one lasts as long as a usual one.
            ordered = sorted(set(self.pts))
            steps = Counter(b - a for a, b in itertools.pairwise(ordered))
            if steps:
                end = max(end, self.last_pts + steps.most_common(1)[0][0])
        return Fraction(end - self.start) * self.time_base


def _ms(seconds: Fraction) -> int:
    return round(seconds * 1000)


def _open_input(source: Path, container: Container) -> tuple[av.container.InputContainer, BinaryIO]:
    """The upload opened from a Python file object (no FFmpeg protocol, so no URL is ever opened) with
    the demuxer named by the sniff."""
    fp = source.open("rb")
    try:
        return av.open(fp, "r", format=_DEMUXERS[container]), fp
    except Exception as exc:
        fp.close()
        if isinstance(exc, MemoryError):
            raise
        log.debug("media refused as invalid at open", exc_info=True)
        raise MediaRejected("media_invalid", "The file is damaged or not a complete recording.") from exc


def _codec_name(stream: av.stream.Stream) -> str:
    return stream.codec.canonical_name if stream.codec_context is not None else "unknown"


# ---- voice


def _check_voice(container: Container, source: Path, workdir: Path, limits: Limits) -> Checked:
    inp, fp = _open_input(source, container)
    out_path = workdir / "full.m4a"
    try:
        streams = list(inp.streams)
        if not streams:
            raise MediaRejected("media_empty", "The file holds no sound.")
        if any(stream.type != "audio" for stream in streams):
            raise MediaRejected(
                "media_unsupported", "A voice note must contain sound only (no pictures or video)."
            )
        if len(streams) != 1:
            raise MediaRejected("media_unsupported", "A voice note must have exactly one sound track.")
        stream = inp.streams.audio[0]
        codec = _codec_name(stream)
        if codec not in _VOICE_CODECS:
            raise MediaRejected("media_unsupported", f"Voice notes in {codec} sound are not accepted.")
        span = _reencode_voice(inp, stream, out_path, limits)
        if span.seconds > Fraction(limits.voice_max_seconds) + _DURATION_SLACK:
            raise _too_long(limits.voice_max_seconds, "voice note")
    except BaseException:
        out_path.unlink(missing_ok=True)
        raise
    finally:
        inp.close()
        fp.close()
    full = _variant("full", out_path, "audio/mp4", None, None)
    return Checked("audio/mp4", None, None, _ms(span.seconds), full.size_bytes, [full])


def _too_long(limit: float, what: str) -> MediaRejected:
    return MediaRejected("media_too_long", f"The {what} is longer than {limit:g} s, the longest accepted.")


def _decoded_audio(
    inp: av.container.InputContainer, stream: av.audio.stream.AudioStream, span: _Span, limits: Limits
) -> Iterator[av.AudioFrame]:
    """Every decoded frame of the voice note, refusing it as soon as packets or samples run too long."""
    limit = Fraction(limits.voice_max_seconds)
    decoded_samples = 0
    try:
        for packet in inp.demux(stream):
            span.add(packet)
            if span.seconds_so_far > limit + _DURATION_SLACK:
                raise _too_long(limits.voice_max_seconds, "voice note")
            for frame in packet.decode():
                assert isinstance(frame, av.AudioFrame)
                decoded_samples += frame.samples
                if frame.sample_rate and Fraction(decoded_samples, frame.sample_rate) > limit + 1:
                    raise _too_long(limits.voice_max_seconds, "voice note")
                yield frame
    except (MediaRejected, MemoryError):
        raise
    except Exception as exc:
        log.debug("voice note refused as invalid", exc_info=True)
        raise MediaRejected("media_invalid", "The sound is damaged and cannot be played.") from exc


def _reencode_voice(
    inp: av.container.InputContainer, stream: av.audio.stream.AudioStream, out_path: Path, limits: Limits
) -> _Span:
    span = _Span(stream.time_base)
    out: av.container.OutputContainer | None = None
    ostream: av.audio.stream.AudioStream | None = None
    resampler: av.AudioResampler | None = None
    fifo = av.AudioFifo()
    samples_out = 0
    frame_size = 1024
    try:
        for frame in _decoded_audio(inp, stream, span, limits):
            if out is None:
                channels = 1 if frame.layout.nb_channels == 1 else 2
                layout = "mono" if channels == 1 else "stereo"
                rate = frame.sample_rate if frame.sample_rate in _AAC_RATES else 48000
                out = av.open(str(out_path), "w", format="mp4", options=dict(_MP4_OPTIONS))
                # bitexact: FFmpeg's AAC encoder otherwise writes its name and version into the stream.
                ostream = out.add_stream("aac", rate=rate, layout=layout, options={"flags": "+bitexact"})
                ostream.bit_rate = 64_000 if channels == 1 else 96_000
                resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
            assert ostream is not None and resampler is not None
            frame.pts = None  # the resampler numbers its output; input timestamps may be anything
            for converted in resampler.resample(frame):
                fifo.write(converted)
            samples_out = _encode_from_fifo(out, ostream, fifo, frame_size, samples_out, final=False)
        if out is None or ostream is None or resampler is None:
            if span.packets == 0:
                raise MediaRejected("media_empty", "The file holds no sound.")
            raise MediaRejected("media_invalid", "The sound could not be decoded.")
        for converted in resampler.resample(None):
            fifo.write(converted)
        _encode_from_fifo(out, ostream, fifo, frame_size, samples_out, final=True)
        out.mux(ostream.encode(None))
    finally:
        if out is not None:
            out.close()
    return span


def _encode_from_fifo(
    out: av.container.OutputContainer,
    ostream: av.audio.stream.AudioStream,
    fifo: av.AudioFifo,
    frame_size: int,
    samples_out: int,
    *,
    final: bool,
) -> int:
    """Feed the AAC encoder whole frames of `frame_size` samples (and the partial rest when `final`)."""
    while fifo.samples >= frame_size or (final and fifo.samples > 0):
        chunk = fifo.read(frame_size, partial=final)
        if chunk is None:
            break
        chunk.pts = samples_out
        chunk.time_base = Fraction(1, ostream.codec_context.sample_rate)
        samples_out += chunk.samples
        out.mux(ostream.encode(chunk))
    return samples_out


# ---- video


def _check_video(container: Container, source: Path, workdir: Path, limits: Limits) -> Checked:
    inp, fp = _open_input(source, container)
    outputs: list[Path] = []
    try:
        video, audio = _video_streams(inp, limits)
        width, height = video.codec_context.width, video.codec_context.height
        vcodec = _codec_name(video)
        acodec = _codec_name(audio) if audio is not None else None
        target = _remux_target(container, vcodec, acodec)
        full_path = workdir / f"full.{target}"
        poster_path = workdir / "poster.jpg"
        outputs = [full_path, poster_path]
        seconds = _remux_video(inp, video, audio, full_path, poster_path, target, limits)
    except BaseException:
        for path in outputs:
            path.unlink(missing_ok=True)
        raise
    finally:
        inp.close()
        fp.close()
    content_type = "video/mp4" if target == "mp4" else "video/webm"
    full = _variant("full", full_path, content_type, width, height)
    with Image.open(poster_path, formats=["JPEG"]) as poster_image:
        poster_size = poster_image.size
    poster = _variant("poster", poster_path, "image/jpeg", *poster_size)
    return Checked(content_type, width, height, _ms(seconds), full.size_bytes, [full, poster])


def _video_streams(
    inp: av.container.InputContainer, limits: Limits
) -> tuple[av.video.stream.VideoStream, av.audio.stream.AudioStream | None]:
    """The one picture track and the optional sound track. Data, subtitle and attachment streams (timed
    metadata, chapters, fonts, ...) are dropped: they are never copied into the stored file."""
    videos = [s for s in inp.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
    audios = list(inp.streams.audio)
    if not videos:
        if not inp.streams.audio and not inp.streams.video:
            raise MediaRejected("media_empty", "The file holds no video.")
        raise MediaRejected("media_unsupported", "The file holds no video track.")
    # Cover art (an attached picture) is dropped like the data streams; a second real video track is refused.
    if len(videos) > 1:
        raise MediaRejected("media_unsupported", "A video must have exactly one picture track.")
    if len(audios) > 1:
        raise MediaRejected("media_unsupported", "A video may have at most one sound track.")
    video = videos[0]
    vcodec = _codec_name(video)
    if vcodec == "hevc":
        raise MediaRejected(
            "media_unsupported",
            "HEVC (H.265) video does not play in every browser; please send H.264, VP9 or AV1.",
        )
    if vcodec not in _VIDEO_CODECS:
        raise MediaRejected(
            "media_unsupported", f"Videos in {vcodec} are not accepted; use H.264, VP8, VP9 or AV1."
        )
    audio = audios[0] if audios else None
    if audio is not None and _codec_name(audio) not in _VIDEO_AUDIO_CODECS:
        raise MediaRejected("media_unsupported", f"Video sound in {_codec_name(audio)} is not accepted.")
    width, height = video.codec_context.width, video.codec_context.height
    if width <= 0 or height <= 0:
        raise MediaRejected("media_invalid", "The video has no picture size.")
    _too_many_pixels(width, height, limits)
    return video, audio


def _remux_target(container: Container, vcodec: str, acodec: str | None) -> str:
    """mp4 or webm: the family the upload came in when it can carry both codecs, else the other one."""
    order = ("mp4", "webm") if container in (Container.MP4, Container.MOV) else ("webm", "mp4")
    for target in order:
        videos, audios = _REMUX_TARGETS[target]
        if vcodec in videos and (acodec is None or acodec in audios):
            return target
    raise MediaRejected("media_unsupported", f"{vcodec} video with {acodec} sound cannot be stored.")


def _remux_video(
    inp: av.container.InputContainer,
    video: av.video.stream.VideoStream,
    audio: av.audio.stream.AudioStream | None,
    full_path: Path,
    poster_path: Path,
    target: str,
    limits: Limits,
) -> Fraction:
    """Copy the packets (no re-encoding) into a fresh container without any metadata, measuring the
    duration from the packets and decoding the first picture for the poster. Returns the duration."""
    limit = Fraction(limits.video_max_seconds)
    max_packets = int(limits.video_max_seconds * _MAX_FRAME_RATE)
    vspan = _Span(video.time_base)
    aspan = _Span(audio.time_base if audio is not None else None)
    poster_done = False
    options = _MP4_OPTIONS if target == "mp4" else _WEBM_OPTIONS
    try:
        with av.open(str(full_path), "w", format=target, options=dict(options)) as out:
            # opaque: keep the decoder's codec object (there may be no encoder of that name, e.g. AV1).
            mapping: dict[int, av.stream.Stream] = {
                video.index: out.add_stream_from_template(video, opaque=True)
            }
            if audio is not None:
                mapping[audio.index] = out.add_stream_from_template(audio)
            for ostream in mapping.values():
                ostream.metadata.clear()
            kept = [video] if audio is None else [video, audio]
            for packet in inp.demux(kept):
                if packet.dts is None and packet.pts is None:
                    continue  # the empty packet PyAV yields at the end to flush decoders
                is_video = packet.stream.index == video.index
                span = vspan if is_video else aspan
                span.add(packet)
                if (
                    vspan.seconds_so_far > limit + _DURATION_SLACK
                    or aspan.seconds_so_far > limit + _VIDEO_AUDIO_SLACK
                ):
                    raise _too_long(limits.video_max_seconds, "video")
                if vspan.packets > max_packets:
                    raise MediaRejected("media_too_long", "The video has more frames than its length allows.")
                if is_video and not poster_done:
                    poster_done = _poster_from(video, packet, poster_path, limits)
                if packet.pts is None:
                    packet.pts = packet.dts
                packet.stream = mapping[packet.stream.index]
                out.mux(packet)
            if not poster_done:
                poster_done = _poster_from(video, None, poster_path, limits)
    except (MediaRejected, MemoryError):
        raise
    except Exception as exc:
        log.debug("video refused as invalid", exc_info=True)
        raise MediaRejected("media_invalid", "The video is damaged and cannot be played.") from exc
    if vspan.packets == 0:
        raise MediaRejected("media_empty", "The video holds no pictures.")
    if vspan.seconds > limit + _DURATION_SLACK or aspan.seconds > limit + _VIDEO_AUDIO_SLACK:
        raise _too_long(limits.video_max_seconds, "video")
    if not poster_done:
        raise MediaRejected("media_invalid", "No picture of the video could be decoded.")
    return vspan.seconds


def _poster_from(
    video: av.video.stream.VideoStream, packet: av.Packet[Any] | None, poster_path: Path, limits: Limits
) -> bool:
    """Feed one packet (None: flush) to the decoder; on the first picture, write the poster JPEG."""
    for frame in video.codec_context.decode(packet):
        assert isinstance(frame, av.VideoFrame)
        _too_many_pixels(frame.width, frame.height, limits)
        image = frame.to_image()
        image.thumbnail((POSTER_MAX_SIDE, POSTER_MAX_SIDE), Image.Resampling.LANCZOS)
        image.save(poster_path, "JPEG", quality=80, optimize=True)
        return True
    return False
