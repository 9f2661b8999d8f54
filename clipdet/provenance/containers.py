"""The metadata blocks of an image file, read from its bytes without decoding pixels: XMP
packets, PNG text chunks, the EXIF block. JPEG (APP1 segments), PNG (tEXt, zTXt, iTXt, eXIf)
and WebP (RIFF EXIF and XMP chunks). Every length is checked against the file; a text larger
than ``MAX_TEXT`` (compressed or not) is not kept, only named in ``oversize``.
"""

import struct
import zlib
from dataclasses import dataclass, field

MAX_TEXT = 4 * 1024 * 1024  # bytes of one metadata text kept (WebUI parameters are a few kB)
MAX_BLOCKS = 10_000  # segments or chunks walked before giving up on a file
XMP_KEYWORD = "XML:com.adobe.xmp"
_JPEG_XMP = b"http://ns.adobe.com/xap/1.0/\x00"
_JPEG_EXIF = b"Exif\x00\x00"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass
class Metadata:
    format: str = ""  # jpeg, png, webp, or "" for others
    xmp: list[bytes] = field(default_factory=list)
    text: dict[str, str] = field(default_factory=dict)  # PNG text chunks by keyword
    exif: bytes | None = None  # a TIFF-structured EXIF block
    oversize: set[str] = field(default_factory=set)  # keywords (or "xmp") too large to keep
    damaged: bool = False  # the walk stopped at a length that runs past the file


def image_format(data: bytes) -> str:
    if data.startswith(b"\xff\xd8"):
        return "jpeg"
    if data.startswith(_PNG_SIGNATURE):
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return ""


def read_metadata(data: bytes) -> Metadata:
    meta = Metadata(format=image_format(data))
    reader = {"jpeg": _jpeg, "png": _png, "webp": _webp}.get(meta.format)
    if reader is not None:
        try:
            reader(data, meta)
        except (struct.error, IndexError, ValueError, zlib.error):
            meta.damaged = True
    return meta


def _keep_xmp(meta: Metadata, packet: bytes) -> None:
    if len(packet) > MAX_TEXT:
        meta.oversize.add("xmp")
    else:
        meta.xmp.append(packet)


def _jpeg(data: bytes, meta: Metadata) -> None:
    pos = 2
    for _ in range(MAX_BLOCKS):
        if pos + 4 > len(data) or data[pos] != 0xFF:
            return
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no metadata beyond
            return
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        end = pos + 2 + length
        if length < 2 or end > len(data):
            meta.damaged = True
            return
        body = data[pos + 4 : end]
        if marker == 0xE1 and body.startswith(_JPEG_XMP):
            _keep_xmp(meta, body[len(_JPEG_XMP) :])
        elif marker == 0xE1 and body.startswith(_JPEG_EXIF) and meta.exif is None:
            meta.exif = body[len(_JPEG_EXIF) :]
        pos = end


def _png(data: bytes, meta: Metadata) -> None:
    pos = len(_PNG_SIGNATURE)
    for _ in range(MAX_BLOCKS):
        if pos + 8 > len(data):
            return
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        end = pos + 12 + length
        if end > len(data):
            meta.damaged = True
            return
        body = data[pos + 8 : pos + 8 + length]
        if kind in (b"tEXt", b"zTXt", b"iTXt"):
            _png_text(kind, body, meta)
        elif kind == b"eXIf" and meta.exif is None:
            meta.exif = body
        elif kind == b"IEND":
            return
        pos = end


def _png_text(kind: bytes, body: bytes, meta: Metadata) -> None:
    keyword, _, rest = body.partition(b"\x00")
    key = keyword.decode("latin-1")
    if kind == b"tEXt":
        raw, encoding, compressed = rest, "latin-1", False
    elif kind == b"zTXt":  # compression method byte, then zlib data
        raw, encoding, compressed = rest[1:], "latin-1", True
    else:  # iTXt: flag, method, language\0, translated keyword\0, text (UTF-8)
        compressed = rest[:1] == b"\x01"
        _, _, rest = rest[2:].partition(b"\x00")
        _, _, raw = rest.partition(b"\x00")
        encoding = "utf-8"
    if compressed:
        inflate = zlib.decompressobj()
        raw = inflate.decompress(raw, MAX_TEXT + 1)
    if len(raw) > MAX_TEXT:
        meta.oversize.add("xmp" if key == XMP_KEYWORD else key)
        return
    if key == XMP_KEYWORD:
        meta.xmp.append(raw)
    else:
        meta.text.setdefault(key, raw.decode(encoding, errors="replace"))


def _webp(data: bytes, meta: Metadata) -> None:
    pos = 12
    for _ in range(MAX_BLOCKS):
        if pos + 8 > len(data):
            return
        kind, length = struct.unpack("<4sI", data[pos : pos + 8])
        end = pos + 8 + length + (length & 1)
        if pos + 8 + length > len(data):
            meta.damaged = True
            return
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"XMP ":
            _keep_xmp(meta, body)
        elif kind == b"EXIF" and meta.exif is None:
            meta.exif = body[len(_JPEG_EXIF) :] if body.startswith(_JPEG_EXIF) else body
        pos = end
