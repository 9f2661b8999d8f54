"""Reading images robustly, from local files or URLs (s3://, gs://, http(s)://): every failure
becomes an exception with a readable message."""

import asyncio
import io
import math
import os
import struct
import warnings
from pathlib import Path

from PIL import Image

from clipdet import storage

# Pillow warns above this many pixels and refuses above twice as many; clipdet refuses above it.
MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485


class ImageLoadError(OSError):
    """An image file that cannot be read; the message says why. ``unidentified``: no image
    decoder recognised the file (it may still be a video)."""

    def __init__(self, message: str, unidentified: bool = False):
        super().__init__(message)
        self.unidentified = unidentified


def describe_error(error: BaseException) -> str:
    """A row's error text: the exception's type and message on one line."""
    return f"{type(error).__name__}: {error}".replace("\n", " ")


# The IJG's luminance quantisation table at quality 50 (ITU-T T.81, Annex K, table K.1), which
# libjpeg scales for every other quality: what a JPEG's own table is compared with.
IJG_LUMINANCE = (
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
)  # fmt: skip


def ijg_table(quality: int) -> list[int]:
    """libjpeg's luminance table at ``quality`` (its jpeg_quality_scaling, baseline)."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return [min(255, max(1, (entry * scale + 50) // 100)) for entry in IJG_LUMINANCE]


_IJG_TABLES = {q: ijg_table(q) for q in range(1, 101)}


def jpeg_quality(tables: dict | None) -> float | None:
    """The IJG quality (1-100) whose luminance quantisation table is nearest a JPEG's own
    (sum of absolute differences; the tables' order does not matter): exact for files
    libjpeg (Pillow, most software) wrote at a quality setting, the nearest for custom tables.
    None without tables (not a JPEG)."""
    if not tables or 0 not in tables or len(tables[0]) != 64:
        return None
    own = sorted(int(v) for v in tables[0])

    def distance(quality: int) -> int:
        return sum(abs(a - b) for a, b in zip(own, sorted(_IJG_TABLES[quality]), strict=True))

    return float(min(_IJG_TABLES, key=lambda q: (distance(q), -q)))


def image_facts(data: bytes) -> tuple[float, float, float]:
    """(width, height, JPEG quality or NaN) read from an image file's header (its bytes),
    nothing decoded; NaNs when the header cannot be read (the decoding reports why)."""
    nan = float("nan")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                quality = jpeg_quality(getattr(image, "quantization", None))
                return float(image.width), float(image.height), nan if quality is None else quality
    except Exception:  # noqa: BLE001 -- a header that cannot be read: the decoding says why
        return nan, nan, nan


def read_image_bytes(url: str) -> bytes:
    """The bytes of an image at ``url``; ImageLoadError for a missing object (or HTTP 404), a
    timeout, an empty body or any other failure to fetch it."""
    try:
        data = storage.read_bytes(url)
    except FileNotFoundError as e:
        raise ImageLoadError(f"file not found: {url}") from e
    except (TimeoutError, asyncio.TimeoutError) as e:
        raise ImageLoadError(
            f"timed out after {storage.read_timeout():g} s (CLIPDET_READ_TIMEOUT): {url}"
        ) from e
    except Exception as e:  # noqa: BLE001 -- network and store errors of every library
        raise ImageLoadError(f"cannot read ({type(e).__name__}: {e}): {url}") from e
    if not data:
        raise ImageLoadError(f"empty file: {url}")
    return data


def load_rgb(
    path: str | os.PathLike, data: bytes | None = None, min_side: int | None = None
) -> Image.Image:
    """Decode ``path`` (a local file or a URL; ``data``: its bytes, already read) into an RGB
    PIL image (first frame of animations), as the reference does. With ``min_side``, a JPEG is
    decoded at a reduced DCT scale (1/2, 1/4 or 1/8: Pillow's draft mode) whose shorter side is
    still at least ``min_side`` pixels: several times faster for large photos, not
    bit-identical.

    Raises ImageLoadError for a missing, empty, truncated, non-image, oversized (decompression
    bomb) file, a directory, or a URL that cannot be fetched.
    """
    if data is None and storage.is_url(path):
        data = read_image_bytes(str(path))
    if data is None:
        local = Path(path)
        if local.is_dir():
            raise ImageLoadError(f"is a directory, not an image: {local}")
        if not local.exists():
            raise ImageLoadError(f"file not found: {local}")
        if local.stat().st_size == 0:
            raise ImageLoadError(f"empty file: {local}")
    try:
        return _decode(io.BytesIO(data) if data is not None else path, str(path), min_side)
    except _OversizeText:  # Pillow refuses text chunks over 64 MB; the pixels are still there
        data = data if data is not None else Path(path).read_bytes()
        return _decode(io.BytesIO(_png_without_text(data)), str(path), min_side)


class _OversizeText(ImageLoadError):
    """A PNG whose text chunks Pillow refuses to hold in memory."""


_PNG_TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")


def _png_without_text(data: bytes) -> bytes:
    """A PNG's bytes with its text chunks left out (the metadata, not the pixels)."""
    out, pos = [data[:8]], 8
    while pos + 12 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        end = pos + 12 + length
        if data[pos + 4 : pos + 8] not in _PNG_TEXT_CHUNKS:
            out.append(data[pos:end])
        pos = end
    return b"".join(out)


def _decode(source, path: str, min_side: int | None = None) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as image:
                if image.width * image.height > MAX_IMAGE_PIXELS:
                    raise ImageLoadError(
                        f"image too large ({image.width}x{image.height} pixels, limit "
                        f"{MAX_IMAGE_PIXELS}; possible decompression bomb): {path}"
                    )
                if min_side and image.format == "JPEG" and min(image.size) > min_side:
                    scale = min_side / min(image.size)
                    image.draft("RGB", (math.ceil(image.width * scale),
                                        math.ceil(image.height * scale)))  # fmt: skip
                image.load()
                return image.convert("RGB")
    except ImageLoadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageLoadError(f"possible decompression bomb: {e}") from e
    except Image.UnidentifiedImageError as e:
        raise ImageLoadError(f"not a readable image: {path}", unidentified=True) from e
    except ValueError as e:
        if "text chunks" in str(e) or "MAX_TEXT" in str(e):  # Pillow's PNG text limits
            raise _OversizeText(f"text chunks too large ({e}): {path}") from e
        raise ImageLoadError(f"cannot decode image ({e}): {path}") from e
    except (OSError, SyntaxError) as e:
        raise ImageLoadError(f"cannot decode image ({e}): {path}") from e
