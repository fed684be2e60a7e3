"""Which container a file really is, named from its first bytes only.

The file name and the Content-Type the client claimed are never consulted: an upload is whatever its
bytes say. Anything not positively recognised (HTML, SVG, playlists, text, PDF, ...) is UNKNOWN.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

# Enough for every signature below, including an EBML header with its DocType.
HEAD_BYTES = 4096


class Container(StrEnum):
    JPEG = "jpeg"
    PNG = "png"
    WEBP = "webp"
    GIF = "gif"
    WEBM = "webm"
    MATROSKA = "matroska"
    OGG = "ogg"
    MP4 = "mp4"
    MOV = "mov"
    MP3 = "mp3"
    WAV = "wav"
    UNKNOWN = "unknown"


# ISO base media file format brands of audio and video files (ISO/IEC 14496-12/14/15, 3GPP, Apple,
# AV1-ISOBMFF, CMAF/DASH). Image brands (heic, mif1, avif, ...) are deliberately absent: those are
# still images in an ISO-BMFF shell, not accepted media.
_MP4_BRANDS = frozenset(
    {
        b"isom", b"iso2", b"iso3", b"iso4", b"iso5", b"iso6", b"iso7", b"iso8", b"iso9",
        b"mp41", b"mp42", b"mp71", b"avc1", b"av01", b"dash", b"cmfc", b"cmf2", b"mmp4",
        b"M4A ", b"M4B ", b"M4P ", b"M4V ", b"M4VH", b"M4VP", b"f4v ", b"f4a ", b"MSNV",
        b"NDAS", b"NDSC", b"NDSH", b"NDSM", b"NDSP", b"NDSS", b"NDXC", b"NDXH", b"NDXM",
        b"NDXP", b"NDXS", b"XAVC", b"3gp4", b"3gp5", b"3gp6", b"3gp7", b"3gp8", b"3gp9",
        b"3gg6", b"3ge6", b"3ge7", b"3gs7", b"3g2a", b"3g2b", b"3g2c", b"mp21", b"iso ",
    }
)  # fmt: skip
_QUICKTIME_BRAND = b"qt  "

_EBML_MAGIC = b"\x1a\x45\xdf\xa3"
_EBML_DOCTYPE_ID = 0x4282

# MPEG audio: bitrate index 0 (free format) and 15 (bad) and sample-rate index 3 are not real frames.
_MPEG_BITRATES_KBPS = {
    # (version is MPEG-1, layer III)
    1: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 0),
    # MPEG-2 / 2.5, layer III
    2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160, 0),
}
_MPEG_SAMPLE_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def sniff_file(path: Path) -> Container:
    """The container of the file at `path`, judged by its first bytes."""
    with path.open("rb") as fp:
        return sniff(fp.read(HEAD_BYTES))


def sniff(head: bytes) -> Container:
    """The container whose signature `head` (the first bytes of a file) starts with."""
    if head.startswith(b"\xff\xd8\xff"):
        return Container.JPEG
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return Container.PNG
    if head.startswith((b"GIF87a", b"GIF89a")):
        return Container.GIF
    if len(head) >= 12 and head.startswith(b"RIFF"):
        if head[8:12] == b"WEBP":
            return Container.WEBP
        if head[8:12] == b"WAVE":
            return Container.WAV
        return Container.UNKNOWN
    if head.startswith(_EBML_MAGIC):
        return _ebml_kind(head)
    # OggS capture pattern followed by stream structure version 0.
    if head.startswith(b"OggS\x00"):
        return Container.OGG
    if head[4:8] == b"ftyp":
        return _iso_bmff_kind(head)
    if _is_mp3(head):
        return Container.MP3
    return Container.UNKNOWN


def _iso_bmff_kind(head: bytes) -> Container:
    size = int.from_bytes(head[0:4], "big")
    # A real ftyp box holds a major brand, a minor version and whole compatible brands.
    if size < 16 or size > 4096 or (size - 16) % 4 or len(head) < 16:
        return Container.UNKNOWN
    major = head[8:12]
    if major == _QUICKTIME_BRAND:
        return Container.MOV
    if major in _MP4_BRANDS:
        return Container.MP4
    compatible = {head[i : i + 4] for i in range(16, min(size, len(head)) - 3, 4)}
    if compatible & _MP4_BRANDS:
        return Container.MP4
    return Container.UNKNOWN


def _read_vint(data: bytes, pos: int, *, keep_marker: bool) -> tuple[int, int] | None:
    """An EBML variable-length integer at `pos`: (value, position after it), or None if cut short."""
    if pos >= len(data):
        return None
    first = data[pos]
    if first == 0:
        return None
    length = 1
    while not first & (0x80 >> (length - 1)):
        length += 1
    if pos + length > len(data):
        return None
    value = first if keep_marker else first & (0xFF >> length)
    for byte in data[pos + 1 : pos + length]:
        value = (value << 8) | byte
    return value, pos + length


def _ebml_kind(head: bytes) -> Container:
    """WebM or Matroska from the DocType inside the EBML header; UNKNOWN for any other EBML DocType."""
    header_size = _read_vint(head, 4, keep_marker=False)
    if header_size is None:
        return Container.UNKNOWN
    size, pos = header_size
    end = min(pos + size, len(head))
    while pos < end:
        element = _read_vint(head, pos, keep_marker=True)
        if element is None:
            break
        element_id, pos = element
        element_size = _read_vint(head, pos, keep_marker=False)
        if element_size is None:
            break
        length, pos = element_size
        if element_id == _EBML_DOCTYPE_ID:
            doctype = head[pos : pos + length].rstrip(b"\x00")
            if doctype == b"webm":
                return Container.WEBM
            if doctype == b"matroska":
                return Container.MATROSKA
            return Container.UNKNOWN
        pos += length
    return Container.UNKNOWN


def _mpeg_frame_length(head: bytes, pos: int) -> int | None:
    """Length of the MPEG audio layer III frame whose header starts at `pos`, or None if there is none."""
    if pos + 4 > len(head) or head[pos] != 0xFF or head[pos + 1] & 0xE0 != 0xE0:
        return None
    version_bits = (head[pos + 1] >> 3) & 0b11  # 3 = MPEG-1, 2 = MPEG-2, 0 = MPEG-2.5, 1 reserved
    layer_bits = (head[pos + 1] >> 1) & 0b11  # 1 = layer III (0 would be AAC's ADTS)
    if version_bits == 1 or layer_bits != 1:
        return None
    bitrate_index = head[pos + 2] >> 4
    rate_index = (head[pos + 2] >> 2) & 0b11
    if rate_index == 3:
        return None
    bitrate = _MPEG_BITRATES_KBPS[1 if version_bits == 3 else 2][bitrate_index] * 1000
    if not bitrate:
        return None
    sample_rate = _MPEG_SAMPLE_RATES[version_bits][rate_index]
    padding = (head[pos + 2] >> 1) & 1
    coefficient = 144 if version_bits == 3 else 72
    return coefficient * bitrate // sample_rate + padding


def _is_mp3(head: bytes) -> bool:
    # ID3v2 tag: "ID3", major version 2-4, revision, flags, then a syncsafe size (high bits clear).
    if head.startswith(b"ID3"):
        return len(head) >= 10 and 2 <= head[3] <= 4 and head[4] != 0xFF and all(b < 0x80 for b in head[6:10])
    # A bare MPEG audio stream: a valid frame header, and the next frame header where it should be
    # (one lone sync word is too easy to hit by chance).
    length = _mpeg_frame_length(head, 0)
    if length is None:
        return False
    if length + 4 > len(head):
        return True
    return _mpeg_frame_length(head, length) is not None
