"""Sample media files for the media tests (unit, e2e, browser) and the bench — written, never downloaded.

Every function writes one file into the path it is given (made with Pillow and PyAV, or crafted byte by
byte for the hostile ones) and returns that path. The markers below are what a test searches the
stored bytes for to prove that metadata was dropped.
"""

from __future__ import annotations

import io
import math
import os
import struct
import zlib
from array import array
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Literal, cast

import av
from PIL import ExifTags, Image, ImageDraw
from PIL.PngImagePlugin import PngInfo

# Photo metadata markers.
JPEG_COMMENT = b"CHATPOP-SECRET-COMMENT"
PNG_TEXT = "CHATPOP-SECRET-PNG-TEXT"
GPS_DATUM = "CHATPOP-GPS-DATUM"  # GPSMapDatum, an ASCII EXIF value easy to find in raw bytes
XMP_GPS = b"48,51.4980N"  # the GPS latitude inside the XMP packet
XMP_MARKER = b"http://ns.adobe.com/xap/1.0/"
POLYGLOT_HTML = b"<html><script>alert(1)</script></html>"
# Video metadata markers.
VIDEO_LOCATION = "+48.8577+002.2950/"
VIDEO_TITLE = "CHATPOP-SECRET-TITLE"
VIDEO_HANDLER = "CHATPOP-SECRET-HANDLER"

AUDIO_RATE = 48000


# ---------------------------------------------------------------------------------------------------
# Photos


def _pattern(size: tuple[int, int], *, mode: str = "RGB") -> Image.Image:
    """An image whose orientation can be told apart: a red band at the top, a blue square bottom left."""
    width, height = size
    image = Image.new(mode, size, (230, 230, 230, 255) if mode == "RGBA" else (230, 230, 230))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, width - 1, max(1, height // 8)), fill=(220, 20, 20))
    draw.rectangle((0, height - height // 3, width // 3, height - 1), fill=(20, 20, 220))
    return image


def jpeg_with_metadata(path: Path, size: tuple[int, int] = (64, 48)) -> Path:
    """A JPEG with EXIF (GPS position and datum, orientation 6 = rotate 90° clockwise to display), a
    COM comment and an XMP packet holding a GPS position. Displayed, it is `size` turned on its side."""
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    exif[ExifTags.Base.Make] = "ChatPopCam"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (48.0, 51.0, 29.88)
    gps[ExifTags.GPS.GPSLongitudeRef] = "E"
    gps[ExifTags.GPS.GPSLongitude] = (2.0, 17.0, 40.2)
    gps[ExifTags.GPS.GPSMapDatum] = GPS_DATUM
    xmp = (
        b'<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        b'<rdf:Description xmlns:exif="http://ns.adobe.com/exif/1.0/" exif:GPSLatitude="' + XMP_GPS + b'"'
        b' exif:GPSLongitude="2,17.6700E"/></rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
    )
    _pattern(size).save(path, "JPEG", quality=90, exif=exif, comment=JPEG_COMMENT, xmp=xmp)
    return path


def png_with_text(path: Path, size: tuple[int, int] = (40, 30)) -> Path:
    info = PngInfo()
    info.add_text("Comment", PNG_TEXT)
    info.add_text("Author", PNG_TEXT)
    _pattern(size).save(path, "PNG", pnginfo=info)
    return path


def webp_photo(path: Path, size: tuple[int, int] = (40, 30)) -> Path:
    _pattern(size).save(path, "WEBP", quality=80)
    return path


def animated_gif(
    path: Path, size: tuple[int, int] = (32, 24), frames: int = 4, duration_ms: int = 120
) -> Path:
    """A looping animated GIF of `frames` frames with a comment that must not survive."""
    images = []
    for i in range(frames):
        image = Image.new("RGB", size, (255, 255, 255))
        ImageDraw.Draw(image).rectangle((i * 4, 2, i * 4 + 6, 10), fill=(200, 0, 0))
        images.append(image)
    images[0].save(
        path,
        "GIF",
        save_all=True,
        append_images=images[1:],
        duration=duration_ms,
        loop=0,
        comment=JPEG_COMMENT,
    )
    return path


def transparent_png(path: Path, size: tuple[int, int] = (40, 30)) -> Path:
    image = Image.new("RGBA", size, (0, 0, 0, 0))
    ImageDraw.Draw(image).ellipse((4, 4, size[0] - 4, size[1] - 4), fill=(0, 160, 0, 255))
    image.save(path, "PNG")
    return path


def jpeg_html_polyglot(path: Path) -> Path:
    """A valid JPEG that is also an HTML page: the markup sits in a COM segment and after the image."""
    buffer = io.BytesIO()
    _pattern((32, 32)).save(buffer, "JPEG", comment=POLYGLOT_HTML)
    path.write_bytes(buffer.getvalue() + POLYGLOT_HTML)
    return path


def html_as_jpg(path: Path) -> Path:
    """HTML whatever its name says (call it with a .jpg path)."""
    path.write_bytes(b"<!DOCTYPE html>\n" + POLYGLOT_HTML + b"\n")
    return path


def svg_image(path: Path) -> Path:
    path.write_bytes(
        b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
        b"<script>alert(1)</script><rect width='10' height='10'/></svg>\n"
    )
    return path


def gif_header_script(path: Path) -> Path:
    """A GIF signature and a 1x1 screen descriptor followed by script instead of image data."""
    path.write_bytes(b"GIF89a\x01\x00\x01\x00\x00\x00\x00" + b"<script>alert(1)</script>")
    return path


def truncated_jpeg(path: Path) -> Path:
    buffer = io.BytesIO()
    _noise((96, 96)).save(buffer, "JPEG", quality=95)
    data = buffer.getvalue()
    path.write_bytes(data[: len(data) * 3 // 5])
    return path


def truncated_png(path: Path) -> Path:
    buffer = io.BytesIO()
    _noise((96, 96)).save(buffer, "PNG")
    data = buffer.getvalue()
    path.write_bytes(data[: len(data) * 3 // 5])
    return path


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(path: Path, width: int = 30000, height: int = 30000) -> Path:
    """A valid 1-bit greyscale PNG of `width` x `height` pixels, all black, that compresses to a few
    hundred kilobytes: decoded as RGB it would take width*height*3 bytes."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte "None" + the packed row
    parts = []
    rows_per_block = max(1, (1 << 20) // len(row))
    for start in range(0, height, rows_per_block):
        parts.append(compressor.compress(row * min(rows_per_block, height - start)))
    parts.append(compressor.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", b"".join(parts))
        + _png_chunk(b"IEND", b"")
    )
    return path


def _noise(size: tuple[int, int]) -> Image.Image:
    return Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3))


def photo_of_exact_size(path: Path, size: int) -> Path:
    """A valid PNG of random pixels that is exactly `size` bytes long (at least 1 KiB): the image is
    made a little smaller than that, and a private ancillary chunk (which decoders skip) fills the rest."""
    if size < 1024:
        raise ValueError("photo_of_exact_size needs at least 1024 bytes")
    # Noise does not compress: a PNG holds about 3 bytes per pixel plus one filter byte per row.
    side = max(8, math.isqrt(int(size * 0.95) // 3))
    while True:
        buffer = io.BytesIO()
        _noise((side, side)).save(buffer, "PNG", compress_level=1)
        data = buffer.getvalue()
        if len(data) + 12 <= size:
            break
        side = side * 9 // 10
    iend = data.rindex(b"IEND") - 4
    padding = _png_chunk(b"chPd", b"\x00" * (size - len(data) - 12))
    path.write_bytes(data[:iend] + padding + data[iend:])
    assert path.stat().st_size == size
    return path


def bench_photo(path: Path, size: int = 5_000_000) -> Path:
    """The bench's photo: a 5 MB PNG (random pixels, so it cannot be compressed smaller)."""
    return photo_of_exact_size(path, size)


# ---------------------------------------------------------------------------------------------------
# Audio and video


def _tone(seconds: float, rate: int, channels: int, *, frame_samples: int = 1024) -> Iterator[av.AudioFrame]:
    """A tone of rate/128 Hz (375 Hz at 48 kHz) as s16 frames of `frame_samples` samples (the last one
    shorter). Its period divides the frame, so one frame's samples serve for all."""
    total = round(seconds * rate)
    layout = "mono" if channels == 1 else "stereo"
    one_frame = array("h")
    for n in range(frame_samples):
        one_frame.extend([int(8000 * math.sin(2 * math.pi * n / 128))] * channels)
    pcm = one_frame.tobytes()
    for start in range(0, total, frame_samples):
        count = min(frame_samples, total - start)
        frame = av.AudioFrame(format="s16", layout=layout, samples=count)
        frame.planes[0].update(pcm[: count * 2 * channels])
        frame.sample_rate = rate
        frame.pts = start
        frame.time_base = Fraction(1, rate)
        yield frame


def _video_frames(count: int, size: tuple[int, int]) -> Iterator[av.VideoFrame]:
    """`count` frames of a square moving across a gradient (a handful of distinct pictures, reused)."""
    width, height = size
    pictures = []
    for i in range(8):
        image = Image.new("RGB", size, (40 + i * 20, 90, 160))
        x = i * max(1, width - height // 2) // 8
        ImageDraw.Draw(image).rectangle(
            (x, height // 4, x + height // 2, height * 3 // 4), fill=(250, 220, 0)
        )
        pictures.append(image)
    for i in range(count):
        frame = av.VideoFrame.from_image(pictures[i % len(pictures)])
        frame.pts = i
        yield frame


def _encode_all(
    container: av.container.OutputContainer,
    stream: av.audio.stream.AudioStream,
    frames: Iterator[av.AudioFrame],
) -> None:
    for frame in frames:
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


def _audio_stream(
    out: av.container.OutputContainer, encoder: str, rate: int, channels: int
) -> av.audio.stream.AudioStream:
    if encoder == "vorbis":
        # FFmpeg's own Vorbis encoder is experimental and stereo only.
        stream = out.add_stream(encoder, rate=rate, layout="stereo", options={"strict": "experimental"})
    else:
        stream = out.add_stream(encoder, rate=rate, layout="mono" if channels == 1 else "stereo")
    return cast(av.audio.stream.AudioStream, stream)


VideoCodec = Literal["h264", "hevc", "mpeg4", "vp8", "vp9", "av1"]
_VIDEO_ENCODERS = {
    "h264": ("libx264", {"preset": "ultrafast", "tune": "zerolatency"}),
    "hevc": ("libx265", {"preset": "ultrafast", "x265-params": "log-level=none"}),
    "mpeg4": ("mpeg4", {}),
    "vp8": ("libvpx", {"deadline": "realtime", "cpu-used": "8"}),
    "vp9": ("libvpx-vp9", {"deadline": "realtime", "cpu-used": "8", "row-mt": "1"}),
    "av1": ("libsvtav1", {"preset": "10"}),
}
_AUDIO_ENCODERS = {
    "aac": "aac",
    "opus": "libopus",
    "vorbis": "vorbis",
    "mp3": "libmp3lame",
    "pcm": "pcm_s16le",
}


def video(
    path: Path,
    seconds: float = 2.0,
    *,
    container: Literal["mp4", "mov", "webm", "matroska"] = "mp4",
    codec: VideoCodec = "h264",
    audio: Literal["aac", "opus", "vorbis", "mp3"] | None = "aac",
    fps: int = 30,
    size: tuple[int, int] = (160, 120),
    metadata: bool = True,
) -> Path:
    """A clip of exactly round(seconds * fps) frames at `fps` (so its video lasts exactly that long), with
    a tone as long as the video when `audio` is set. With `metadata`, the container carries a location
    (3GPP loci in MP4, ©xyz in MOV), a title, and the streams a handler name: none may be stored."""
    encoder, options = _VIDEO_ENCODERS[codec]
    options_out = {"movflags": "+faststart"} if container in ("mp4", "mov") else {}
    with av.open(str(path), "w", format=container, options=options_out) as out:
        if metadata:
            out.metadata["location"] = VIDEO_LOCATION
            out.metadata["title"] = VIDEO_TITLE
            out.metadata["comment"] = VIDEO_TITLE
        vstream = cast(av.video.stream.VideoStream, out.add_stream(encoder, rate=fps, options=dict(options)))
        vstream.width, vstream.height = size
        vstream.pix_fmt = "yuv420p"
        vstream.time_base = Fraction(1, fps)
        vstream.codec_context.time_base = Fraction(1, fps)
        if codec == "mpeg4":
            vstream.codec_context.gop_size = fps
        if metadata:
            vstream.metadata["handler_name"] = VIDEO_HANDLER
            vstream.metadata["title"] = VIDEO_TITLE
        astream = None
        if audio is not None:
            astream = _audio_stream(out, _AUDIO_ENCODERS[audio], AUDIO_RATE, 1)
            if metadata:
                astream.metadata["handler_name"] = VIDEO_HANDLER
        frame_count = round(seconds * fps)
        for frame in _video_frames(frame_count, size):
            frame.time_base = Fraction(1, fps)
            out.mux(vstream.encode(frame))
        out.mux(vstream.encode(None))
        if astream is not None:
            _encode_all(out, astream, _tone(frame_count / fps, AUDIO_RATE, astream.codec_context.channels))
    return path


def mp4_video(path: Path, seconds: float = 2.0, **kwargs: object) -> Path:
    """An H.264 + AAC MP4 with location/title metadata (see `video`)."""
    return video(path, seconds, container="mp4", codec="h264", **kwargs)  # type: ignore[arg-type]


def webm_video(
    path: Path, seconds: float = 2.0, codec: Literal["vp8", "vp9"] = "vp9", **kwargs: object
) -> Path:
    """A VP8/VP9 + Opus WebM (see `video`)."""
    kwargs.setdefault("audio", "opus")
    return video(path, seconds, container="webm", codec=codec, **kwargs)  # type: ignore[arg-type]


def bench_video(path: Path) -> Path:
    """The bench's video: 20 s of H.264 + AAC at 640x360, 30 fps."""
    return video(path, 20.0, size=(640, 360), metadata=False)


VoiceContainer = Literal["webm", "ogg", "m4a", "mp3", "wav"]
_VOICE_FORMATS: dict[str, tuple[str, str]] = {
    # container → (muxer, default codec)
    "webm": ("webm", "opus"),
    "ogg": ("ogg", "opus"),
    "m4a": ("mp4", "aac"),
    "mp3": ("mp3", "mp3"),
    "wav": ("wav", "pcm"),
}


def voice_note(
    path: Path,
    container: VoiceContainer = "webm",
    seconds: float = 2.0,
    *,
    codec: Literal["opus", "vorbis", "aac", "mp3", "pcm"] | None = None,
    channels: int = 1,
    rate: int = AUDIO_RATE,
) -> Path:
    """A tone of `seconds` in `container` (webm/ogg: Opus by default, ogg also Vorbis; m4a: AAC; mp3; wav:
    16-bit PCM), with a title tag that must not be stored."""
    muxer, default_codec = _VOICE_FORMATS[container]
    codec_name = _AUDIO_ENCODERS[codec or default_codec]
    with av.open(str(path), "w", format=muxer) as out:
        out.metadata["title"] = VIDEO_TITLE
        stream = _audio_stream(out, codec_name, rate, channels)
        _encode_all(out, stream, _tone(seconds, rate, stream.codec_context.channels))
    return path


# ---------------------------------------------------------------------------------------------------
# Hostile containers


def mp4_garbage_after_ftyp(path: Path) -> Path:
    """A well-formed ftyp box (so it sniffs as MP4) followed by random bytes."""
    ftyp = struct.pack(">I", 24) + b"ftypisom" + struct.pack(">I", 512) + b"isomiso2"
    path.write_bytes(ftyp + os.urandom(8192))
    return path


def hls_playlist(path: Path) -> Path:
    """An HLS playlist pointing at outside URLs (call it with a .mp4 path)."""
    path.write_bytes(
        b"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:10\n#EXTINF:10.0,\n"
        b"http://127.0.0.1:9/evil.ts\n#EXTINF:10.0,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n"
    )
    return path


def _boxes(data: bytearray, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, start of payload, end) of each ISO-BMFF box in data[start:end]."""
    pos = start
    while pos + 8 <= end:
        size = int.from_bytes(data[pos : pos + 4], "big")
        kind = bytes(data[pos + 4 : pos + 8])
        header = 8
        if size == 1:
            size = int.from_bytes(data[pos + 8 : pos + 16], "big")
            header = 16
        elif size == 0:
            size = end - pos
        yield kind, pos + header, pos + size
        pos += size


def lying_duration_mp4(path: Path, real_seconds: float = 40.0, claimed_seconds: float = 5.0) -> Path:
    """An H.264 MP4 whose packets run `real_seconds` while its headers (mvhd, tkhd, mdhd) claim
    `claimed_seconds`. Small and quick: 160x120 at 10 fps, no audio."""
    video(path, real_seconds, fps=10, audio=None, metadata=False)
    data = bytearray(path.read_bytes())
    movie_timescale = 0

    def patch(payload: int, duration_at: tuple[int, int], scale: int) -> None:
        """Overwrite the duration field (offset for version 0, version 1) of the box at `payload`."""
        version = data[payload]
        offset, width = (duration_at[1], 8) if version == 1 else (duration_at[0], 4)
        data[payload + offset : payload + offset + width] = round(claimed_seconds * scale).to_bytes(
            width, "big"
        )

    def timescale(payload: int) -> int:
        """The timescale of an mvhd or mdhd box (after version/flags and creation/modification times)."""
        at = payload + (20 if data[payload] == 1 else 12)
        return int.from_bytes(data[at : at + 4], "big")

    for kind, payload, end in _boxes(data, 0, len(data)):
        if kind != b"moov":
            continue
        for child, child_payload, child_end in _boxes(data, payload, end):
            if child == b"mvhd":
                # version/flags 4, creation + modification 4+4 (v0) or 8+8 (v1), timescale 4, duration.
                movie_timescale = timescale(child_payload)
                patch(child_payload, (16, 24), movie_timescale)
            elif child == b"trak":
                for part, part_payload, part_end in _boxes(data, child_payload, child_end):
                    if part == b"tkhd":
                        # version/flags, creation, modification, track id, reserved, duration (movie units).
                        patch(part_payload, (20, 28), movie_timescale)
                    elif part == b"mdia":
                        for leaf, leaf_payload, _ in _boxes(data, part_payload, part_end):
                            if leaf == b"mdhd":
                                patch(leaf_payload, (16, 24), timescale(leaf_payload))
    path.write_bytes(bytes(data))
    return path
