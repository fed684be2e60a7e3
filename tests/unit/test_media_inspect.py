"""The media content check: what is refused (and with which code), and what is stored of what is accepted.

Samples are written once per module (tests/media_samples.py) at small sizes; each check writes its
output into a directory of its own, and the assertions read the stored bytes back.
"""

from __future__ import annotations

import pickle
import shutil
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import pytest
from PIL import Image

from chatpop_edge.media.inspect import Checked, Limits, MediaRejected, Variant, check_media
from chatpop_edge.media.sniff import Container, sniff, sniff_file
from tests import media_samples as samples

LIMITS = Limits()


class Samples:
    """Sample files made on first use and kept for the module."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._made: dict[str, Path] = {}

    def get(self, name: str, make: Callable[[Path], Path]) -> Path:
        if name not in self._made:
            self._made[name] = make(self.root / name)
        return self._made[name]


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Samples]:
    root = tmp_path_factory.mktemp("media-samples")
    yield Samples(root)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path / "out"


def checked(kind: str, source: Path, workdir: Path, limits: Limits = LIMITS) -> Checked:
    result = check_media(kind, source, workdir, limits)
    for variant in result.variants:
        assert variant.path.parent == workdir
        assert variant.size_bytes == variant.path.stat().st_size > 0
    assert result.variants[0].name == "full"
    assert result.size_bytes == result.variants[0].size_bytes
    assert result.content_type == result.variants[0].content_type
    return result


def rejected(kind: str, source: Path, workdir: Path, limits: Limits = LIMITS) -> MediaRejected:
    with pytest.raises(MediaRejected) as caught:
        check_media(kind, source, workdir, limits)
    return caught.value


def variant(result: Checked, name: str) -> Variant:
    return next(v for v in result.variants if v.name == name)


def top_level_boxes(data: bytes) -> list[bytes]:
    kinds, pos = [], 0
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        kinds.append(data[pos + 4 : pos + 8])
        if size == 1:
            size = int.from_bytes(data[pos + 8 : pos + 16], "big")
        if size < 8:
            break
        pos += size
    return kinds


def assert_fast_start(data: bytes) -> None:
    boxes = top_level_boxes(data)
    assert b"moov" in boxes and b"mdat" in boxes
    assert boxes.index(b"moov") < boxes.index(b"mdat"), boxes


# --- sniffing ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "container"),
    [
        (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", Container.JPEG),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", Container.PNG),
        (b"GIF87a\x01\x00\x01\x00", Container.GIF),
        (b"GIF89a\x01\x00\x01\x00", Container.GIF),
        (b"RIFF\x24\x00\x00\x00WEBPVP8 ", Container.WEBP),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", Container.WAV),
        (b"RIFF\x24\x00\x00\x00AVI LIST", Container.UNKNOWN),
        (b"OggS\x00\x02" + bytes(20), Container.OGG),
        (b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2", Container.MP4),
        (b"\x00\x00\x00\x14ftypqt  \x00\x00\x02\x00qt  ", Container.MOV),
        (b"\x00\x00\x00\x18ftypM4A \x00\x00\x02\x00M4A mp42", Container.MP4),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", Container.UNKNOWN),
        (b"\x00\x00\x00\x18ftypabcd\x00\x00\x00\x00efghijkl", Container.UNKNOWN),
        (b"\x00\x00\x00\x07ftypisom\x00\x00\x02\x00", Container.UNKNOWN),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x84webm\x42\x87\x81\x04", Container.WEBM),
        (b"\x1a\x45\xdf\xa3\xa3\x42\x86\x81\x01\x42\x82\x88matroska\x42\x87\x81\x04", Container.MATROSKA),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x84evil\x42\x87\x81\x04", Container.UNKNOWN),
        (b"ID3\x04\x00\x00\x00\x00\x00\x10", Container.MP3),
        (b"\xff\xf1\x50\x80\x02\x1f\xfc", Container.UNKNOWN),  # AAC in ADTS, not MPEG layer III
        (b"<!DOCTYPE html><html><script>alert(1)</script>", Container.UNKNOWN),
        (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>', Container.UNKNOWN),
        (b"#EXTM3U\n#EXTINF:10,\nhttp://x/a.ts\n", Container.UNKNOWN),
        (b"%PDF-1.7\n", Container.UNKNOWN),
        (b"hello, world\n", Container.UNKNOWN),
        (b"", Container.UNKNOWN),
    ],
)
def test_sniff_names_the_container_from_magic_bytes(head: bytes, container: Container) -> None:
    assert sniff(head) == container


@pytest.mark.parametrize(
    ("name", "make", "container"),
    [
        ("s.jpg", samples.jpeg_with_metadata, Container.JPEG),
        ("s.webp", samples.webp_photo, Container.WEBP),
        ("s.gif", samples.animated_gif, Container.GIF),
        ("s.mp4", lambda p: samples.mp4_video(p, 0.5), Container.MP4),
        ("s.webm", lambda p: samples.voice_note(p, "webm", 0.3), Container.WEBM),
        ("s.ogg", lambda p: samples.voice_note(p, "ogg", 0.3), Container.OGG),
        ("s.m4a", lambda p: samples.voice_note(p, "m4a", 0.3), Container.MP4),
        ("s.mp3", lambda p: samples.voice_note(p, "mp3", 0.3), Container.MP3),
        ("s.wav", lambda p: samples.voice_note(p, "wav", 0.3), Container.WAV),
        ("s.mkv", lambda p: samples.video(p, 0.5, container="matroska"), Container.MATROSKA),
        ("page.jpg", samples.html_as_jpg, Container.UNKNOWN),
        ("playlist.mp4", samples.hls_playlist, Container.UNKNOWN),
    ],
)
def test_sniff_recognises_real_files(
    made: Samples, name: str, make: Callable[[Path], Path], container: Container
) -> None:
    assert sniff_file(made.get(name, make)) == container


def test_a_bare_mp3_stream_is_recognised_by_its_frames(made: Samples) -> None:
    mp3 = made.get("s.mp3", lambda p: samples.voice_note(p, "mp3", 0.3)).read_bytes()
    start = mp3.index(b"\xff\xfb") if not mp3.startswith(b"\xff") else 0
    if mp3.startswith(b"ID3"):
        start = 10 + sum(b << (7 * (3 - i)) for i, b in enumerate(mp3[6:10]))
    assert sniff(mp3[start:]) == Container.MP3
    assert sniff(b"\xff\xfb\x90\x00" + b"\x00" * 1000) == Container.UNKNOWN  # one sync word is not a stream


# --- refusals ------------------------------------------------------------------------------------

Make = Callable[[Path], Path]
REFUSALS: list[tuple[str, str, Make, str]] = [
    # photos
    ("page.jpg", "photo", samples.html_as_jpg, "media_unsupported"),
    ("image.svg", "photo", samples.svg_image, "media_unsupported"),
    ("script.gif", "photo", samples.gif_header_script, "media_invalid"),
    ("cut.jpg", "photo", samples.truncated_jpeg, "media_invalid"),
    ("cut.png", "photo", samples.truncated_png, "media_invalid"),
    ("bomb.png", "photo", samples.png_bomb, "media_too_many_pixels"),
    # above MAX_IMAGE_PIXELS but under twice that, where Pillow only warns
    ("warn-bomb.png", "photo", lambda p: samples.png_bomb(p, 7000, 7000), "media_too_many_pixels"),
    ("voice-as-photo.webm", "photo", lambda p: samples.voice_note(p, "webm", 0.3), "media_unsupported"),
    ("empty.jpg", "photo", lambda p: (p.write_bytes(b""), p)[1], "media_empty"),
    # videos
    ("hevc.mp4", "video", lambda p: samples.video(p, 0.5, codec="hevc"), "media_unsupported"),
    ("mpeg4.mp4", "video", lambda p: samples.video(p, 0.5, codec="mpeg4"), "media_unsupported"),
    ("garbage.mp4", "video", samples.mp4_garbage_after_ftyp, "media_invalid"),
    ("playlist.mp4", "video", samples.hls_playlist, "media_unsupported"),
    ("long.mp4", "video", lambda p: samples.mp4_video(p, 30.5), "media_too_long"),
    ("lying.mp4", "video", samples.lying_duration_mp4, "media_too_long"),
    ("photo-as-video.png", "video", samples.png_with_text, "media_unsupported"),
    ("sound-only.m4a", "video", lambda p: samples.voice_note(p, "m4a", 0.3), "media_unsupported"),
    ("voice-as-video.mp3", "video", lambda p: samples.voice_note(p, "mp3", 0.3), "media_unsupported"),
    # voice notes
    ("video-as-voice.mp4", "voice", lambda p: samples.mp4_video(p, 0.5), "media_unsupported"),
    ("video-as-voice.webm", "voice", lambda p: samples.webm_video(p, 0.5), "media_unsupported"),
    ("photo-as-voice.jpg", "voice", samples.jpeg_with_metadata, "media_unsupported"),
    ("garbage-voice.mp4", "voice", samples.mp4_garbage_after_ftyp, "media_invalid"),
    ("playlist-voice.mp4", "voice", samples.hls_playlist, "media_unsupported"),
]


@pytest.mark.parametrize(("name", "kind", "make", "code"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_refused_with_its_code(
    made: Samples, workdir: Path, name: str, kind: str, make: Make, code: str
) -> None:
    error = rejected(kind, made.get(name, make), workdir)
    assert error.code == code, error
    assert error.message
    # Nothing that was refused is left to be stored.
    assert not workdir.exists() or not any(workdir.iterdir())


def test_lying_header_really_claims_less(made: Samples) -> None:
    """The header of the lying sample says 5 s (so the refusal above comes from counting packets)."""
    with av.open(str(made.get("lying.mp4", samples.lying_duration_mp4))) as container:
        assert container.duration is not None
        assert abs(container.duration / 1_000_000 - 5.0) < 0.01


def test_voice_note_over_its_limit_is_too_long(made: Samples, workdir: Path) -> None:
    note = made.get("voice-2s.webm", lambda p: samples.voice_note(p, "webm", 2.0))
    assert rejected("voice", note, workdir, Limits(voice_max_seconds=1.0)).code == "media_too_long"
    assert checked("voice", note, workdir, Limits(voice_max_seconds=3.0)).duration_ms


def test_animation_with_too_many_pixels_over_its_frames(made: Samples, workdir: Path) -> None:
    gif = made.get("anim.gif", samples.animated_gif)  # 32x24, 4 frames
    error = rejected("photo", gif, workdir, Limits(animation_max_pixels=32 * 24 * 3))
    assert error.code == "media_too_many_pixels"


def test_pixel_limit_comes_from_limits(made: Samples, workdir: Path) -> None:
    photo = made.get("text.png", samples.png_with_text)  # 40x30
    assert rejected("photo", photo, workdir, Limits(max_pixels=40 * 30 - 1)).code == "media_too_many_pixels"
    assert checked("photo", photo, workdir, Limits(max_pixels=40 * 30)).width == 40


# --- photos --------------------------------------------------------------------------------------

PHOTO_MARKERS = (
    samples.GPS_DATUM.encode(),
    samples.XMP_GPS,
    samples.XMP_MARKER,
    samples.JPEG_COMMENT,
    b"ChatPopCam",
    b"Exif\x00\x00",
)


def test_jpeg_loses_exif_gps_xmp_and_comment_and_is_turned_upright(made: Samples, workdir: Path) -> None:
    original = made.get("meta.jpg", samples.jpeg_with_metadata)
    raw = original.read_bytes()
    assert all(marker in raw for marker in PHOTO_MARKERS)  # the sample really carries them

    result = checked("photo", original, workdir)

    assert result.content_type == "image/jpeg"
    # 64x48 stored with orientation 6 displays as 48x64.
    assert (result.width, result.height) == (48, 64)
    assert result.duration_ms is None
    for name in ("full", "thumb"):
        stored = variant(result, name)
        data = stored.path.read_bytes()
        for marker in PHOTO_MARKERS:
            assert marker not in data, (name, marker)
        with Image.open(stored.path) as image:
            assert image.format == "JPEG"
            assert (image.width, image.height) == (stored.width, stored.height) == (48, 64)
            assert not image.getexif()
            assert not {"exif", "xmp", "comment", "icc_profile"} & set(image.info)
            # The red band along the top of the sensor image is on the right once turned upright.
            red, green, blue = image.convert("RGB").getpixel((image.width - 2, image.height // 2))  # type: ignore[misc]
            assert red > 150 and green < 100 and blue < 100


def test_png_loses_its_text_chunks(made: Samples, workdir: Path) -> None:
    original = made.get("text.png", samples.png_with_text)
    assert samples.PNG_TEXT.encode() in original.read_bytes()
    result = checked("photo", original, workdir)
    assert (result.content_type, result.width, result.height) == ("image/png", 40, 30)
    for stored in result.variants:
        assert samples.PNG_TEXT.encode() not in stored.path.read_bytes()
        assert b"tEXt" not in stored.path.read_bytes()
    with Image.open(result.variants[0].path) as image:
        assert image.format == "PNG" and not image.text  # type: ignore[attr-defined]
    assert variant(result, "thumb").content_type == "image/jpeg"


def test_webp_stays_webp(made: Samples, workdir: Path) -> None:
    result = checked("photo", made.get("s.webp", samples.webp_photo), workdir)
    assert (result.content_type, result.width, result.height) == ("image/webp", 40, 30)
    with Image.open(result.variants[0].path) as image:
        assert image.format == "WEBP"
        assert not image.getexif()


def test_animated_gif_keeps_frames_timing_and_loop_but_not_its_comment(made: Samples, workdir: Path) -> None:
    original = made.get("anim.gif", samples.animated_gif)
    assert samples.JPEG_COMMENT in original.read_bytes()
    result = checked("photo", original, workdir)
    assert (result.content_type, result.width, result.height) == ("image/gif", 32, 24)
    full = result.variants[0].path
    assert samples.JPEG_COMMENT not in full.read_bytes()
    with Image.open(full) as image:
        assert image.n_frames == 4  # type: ignore[attr-defined]
        assert image.info.get("loop") == 0
        assert "comment" not in image.info
        durations = []
        for index in range(image.n_frames):  # type: ignore[attr-defined]
            image.seek(index)
            durations.append(image.info["duration"])
        assert durations == [120] * 4
    thumb = variant(result, "thumb")
    assert thumb.content_type == "image/jpeg"
    with Image.open(thumb.path) as image:
        assert getattr(image, "n_frames", 1) == 1


def test_transparent_png_keeps_alpha_and_gets_a_png_thumb(made: Samples, workdir: Path) -> None:
    result = checked("photo", made.get("alpha.png", samples.transparent_png), workdir)
    assert result.content_type == "image/png"
    for stored in result.variants:
        assert stored.content_type == "image/png"
        with Image.open(stored.path) as image:
            assert image.mode == "RGBA"
            assert image.getpixel((0, 0))[3] == 0  # type: ignore[index]


def test_polyglot_keeps_only_the_picture(made: Samples, workdir: Path) -> None:
    original = made.get("poly.jpg", samples.jpeg_html_polyglot)
    assert original.read_bytes().count(b"<script") == 2
    result = checked("photo", original, workdir)
    assert result.content_type == "image/jpeg"
    for stored in result.variants:
        data = stored.path.read_bytes()
        assert b"<html" not in data and b"<script" not in data
        assert data.endswith(b"\xff\xd9")


def test_thumb_is_at_most_480_px(tmp_path: Path, workdir: Path) -> None:
    big = tmp_path / "big.png"
    Image.new("RGB", (1200, 300), (10, 200, 10)).save(big)
    result = checked("photo", big, workdir)
    assert (result.width, result.height) == (1200, 300)
    thumb = variant(result, "thumb")
    assert (thumb.width, thumb.height) == (480, 120)


def test_photo_of_exact_size_is_exact_and_accepted(tmp_path: Path, workdir: Path) -> None:
    size = 10 * 1024 * 1024
    photo = samples.photo_of_exact_size(tmp_path / "exact.png", size)
    assert photo.stat().st_size == size
    result = checked("photo", photo, workdir)
    assert result.content_type == "image/png"
    # The padding chunk is gone (compared by chunk type: 10 MB of compressed noise may hold the bytes).
    assert "chPd" not in png_chunk_types(result.variants[0].path.read_bytes())


def png_chunk_types(data: bytes) -> list[str]:
    """The types of a PNG's chunks, in order."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    types: list[str] = []
    at = 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        types.append(data[at + 4 : at + 8].decode("ascii"))
        at += 12 + length
    return types


# --- videos --------------------------------------------------------------------------------------

VIDEO_MARKERS = (
    samples.VIDEO_LOCATION.encode(),
    samples.VIDEO_TITLE.encode(),
    samples.VIDEO_HANDLER.encode(),
)


def assert_no_video_metadata(path: Path) -> None:
    data = path.read_bytes()
    for marker in VIDEO_MARKERS:
        assert marker not in data, marker
    # Locations: QuickTime's ©xyz (a string), 3GPP's loci (binary coordinates, what MP4 files carry).
    assert b"\xa9xyz" not in data and b"loci" not in data
    with av.open(str(path)) as container:
        keys = {key.lower() for key in container.metadata}
        assert not keys & {
            "location",
            "location-eng",
            "title",
            "comment",
            "com.apple.quicktime.location.iso6709",
        }
        for stream in container.streams:
            assert samples.VIDEO_HANDLER not in stream.metadata.values()
            assert "title" not in {key.lower() for key in stream.metadata}


def test_video_of_exactly_30_seconds_is_accepted_and_remuxed_clean(made: Samples, workdir: Path) -> None:
    original = made.get("30s.mp4", lambda p: samples.mp4_video(p, 30.0))
    assert b"loci" in original.read_bytes()  # the location really is there to lose
    with av.open(str(original)) as container:
        assert container.metadata["location"] == samples.VIDEO_LOCATION

    result = checked("video", original, workdir)

    assert (result.content_type, result.width, result.height, result.duration_ms) == (
        "video/mp4",
        160,
        120,
        30000,
    )
    full = result.variants[0].path
    data = full.read_bytes()
    assert_fast_start(data)
    assert_no_video_metadata(full)
    with av.open(str(full)) as container:
        assert [s.codec.canonical_name for s in container.streams] == ["h264", "aac"]
        assert sum(1 for _ in container.decode(video=0)) == 900  # remuxed, every frame still there
    poster = variant(result, "poster")
    assert poster.content_type == "image/jpeg"
    with Image.open(poster.path) as image:
        assert image.format == "JPEG" and image.size == (160, 120) == (poster.width, poster.height)


def test_webm_vp9_opus_stays_webm(made: Samples, workdir: Path) -> None:
    original = made.get("vp9.webm", lambda p: samples.webm_video(p, 1.0, "vp9"))
    result = checked("video", original, workdir)
    assert (result.content_type, result.width, result.height, result.duration_ms) == (
        "video/webm",
        160,
        120,
        1000,
    )
    assert_no_video_metadata(result.variants[0].path)
    with av.open(str(result.variants[0].path)) as container:
        assert [s.codec.canonical_name for s in container.streams] == ["vp9", "opus"]
    assert variant(result, "poster").path.exists()


def test_webm_vp8_vorbis_is_accepted(made: Samples, workdir: Path) -> None:
    original = made.get("vp8.webm", lambda p: samples.webm_video(p, 1.0, "vp8", audio="vorbis"))
    result = checked("video", original, workdir)
    assert (result.content_type, result.duration_ms) == ("video/webm", 1000)


def test_av1_mp4_is_accepted(made: Samples, workdir: Path) -> None:
    original = made.get("av1.mp4", lambda p: samples.video(p, 1.0, codec="av1", audio="opus"))
    result = checked("video", original, workdir)
    assert (result.content_type, result.duration_ms) == ("video/mp4", 1000)
    assert_fast_start(result.variants[0].path.read_bytes())
    with av.open(str(result.variants[0].path)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 30


def test_h264_in_matroska_is_stored_as_mp4(made: Samples, workdir: Path) -> None:
    """WebM cannot carry H.264 (Chrome records it that way): the packets move into an MP4."""
    original = made.get("s.mkv", lambda p: samples.video(p, 0.5, container="matroska"))
    result = checked("video", original, workdir)
    assert result.content_type == "video/mp4"
    assert_fast_start(result.variants[0].path.read_bytes())
    assert_no_video_metadata(result.variants[0].path)


def test_quicktime_mov_is_stored_as_mp4(made: Samples, workdir: Path) -> None:
    original = made.get("s.mov", lambda p: samples.video(p, 0.5, container="mov"))
    assert sniff_file(original) == Container.MOV
    assert samples.VIDEO_LOCATION.encode() in original.read_bytes()  # as ©xyz
    result = checked("video", original, workdir)
    assert (result.content_type, result.duration_ms) == ("video/mp4", 500)
    assert_no_video_metadata(result.variants[0].path)


def test_video_without_sound_is_accepted(made: Samples, workdir: Path) -> None:
    original = made.get("mute.mp4", lambda p: samples.video(p, 0.5, audio=None))
    result = checked("video", original, workdir)
    with av.open(str(result.variants[0].path)) as container:
        assert [s.type for s in container.streams] == ["video"]


# --- voice notes ---------------------------------------------------------------------------------

VOICE = [
    ("webm", None, 1),
    ("ogg", None, 1),
    ("ogg", "vorbis", 2),
    ("m4a", None, 1),
    ("mp3", None, 1),
    ("wav", None, 1),
]


@pytest.mark.parametrize(
    ("container", "codec", "channels"), VOICE, ids=[f"{c}-{k or 'default'}" for c, k, _ in VOICE]
)
def test_voice_note_is_reencoded_to_aac_in_mp4(
    made: Samples, workdir: Path, container: samples.VoiceContainer, codec: str | None, channels: int
) -> None:
    name = f"voice-{container}-{codec}.{container}"
    original = made.get(name, lambda p: samples.voice_note(p, container, 2.0, codec=codec))  # type: ignore[arg-type]
    result = checked("voice", original, workdir)

    assert (result.content_type, result.width, result.height) == ("audio/mp4", None, None)
    assert result.duration_ms is not None and 1990 <= result.duration_ms <= 2100
    assert [v.name for v in result.variants] == ["full"]
    full = result.variants[0].path
    data = full.read_bytes()
    assert_fast_start(data)
    assert samples.VIDEO_TITLE.encode() not in data
    assert b"Lavc" not in data and b"Lavf" not in data
    with av.open(str(full)) as stored:
        assert not {"title", "encoder"} & {key.lower() for key in stored.metadata}
        (stream,) = stored.streams.audio
        assert stream.codec.canonical_name == "aac"
        assert stream.codec_context.channels == channels
        samples_decoded = sum(frame.samples for packet in stored.demux(stream) for frame in packet.decode())
        rate = stream.codec_context.sample_rate
    assert 1.95 <= samples_decoded / rate <= 2.2


def test_empty_voice_note(tmp_path: Path, workdir: Path) -> None:
    empty = tmp_path / "empty.webm"
    empty.write_bytes(b"")
    assert rejected("voice", empty, workdir).code == "media_empty"


# --- results cross a process boundary ------------------------------------------------------------


def test_results_and_refusals_pickle(made: Samples, workdir: Path) -> None:
    result = checked("photo", made.get("s.webp", samples.webp_photo), workdir)
    assert pickle.loads(pickle.dumps(result)) == result
    error = pickle.loads(pickle.dumps(MediaRejected("media_invalid", "broken")))
    assert (error.code, error.message) == ("media_invalid", "broken")


def test_unknown_kind_is_a_programming_error(made: Samples, workdir: Path) -> None:
    with pytest.raises(ValueError):
        check_media("sticker", made.get("s.webp", samples.webp_photo), workdir, LIMITS)
