"""Reading images robustly: every failure becomes an exception with a readable message."""

import os
import warnings
from pathlib import Path

from PIL import Image

# Pillow warns above this many pixels and refuses above twice as many; clipdet refuses above it.
MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485


class ImageLoadError(OSError):
    """An image file that cannot be read; the message says why."""


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Decode ``path`` into an RGB PIL image (first frame of animations), as the reference does.

    Raises ImageLoadError for a missing, empty, truncated, non-image, oversized (decompression
    bomb) file or a directory.
    """
    path = Path(path)
    if path.is_dir():
        raise ImageLoadError(f"is a directory, not an image: {path}")
    if not path.exists():
        raise ImageLoadError(f"file not found: {path}")
    if path.stat().st_size == 0:
        raise ImageLoadError(f"empty file: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if image.width * image.height > MAX_IMAGE_PIXELS:
                    raise ImageLoadError(
                        f"image too large ({image.width}x{image.height} pixels, limit "
                        f"{MAX_IMAGE_PIXELS}; possible decompression bomb): {path}"
                    )
                image.load()
                return image.convert("RGB")
    except ImageLoadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageLoadError(f"possible decompression bomb: {e}") from e
    except Image.UnidentifiedImageError as e:
        raise ImageLoadError(f"not a readable image: {path}") from e
    except (OSError, ValueError, SyntaxError) as e:
        raise ImageLoadError(f"cannot decode image ({e}): {path}") from e
