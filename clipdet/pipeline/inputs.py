"""Image and video paths from the command line: files, folders (recursive) and glob
patterns."""

import glob
import os
from pathlib import Path

from clipdet.pipeline.video_sampling import VIDEO_EXTENSIONS
from clipdet.storage import is_url

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".jfif", ".heic", ".avif"}
)


def is_image_name(path: Path) -> bool:
    """An image or a video, by its extension."""
    return path.suffix.lower() in IMAGE_EXTENSIONS or path.suffix.lower() in VIDEO_EXTENSIONS


def collect_images(arguments: list[str]) -> list[str]:
    """Expand positional arguments into image paths, in argument order.

    A folder contributes its image and video files (by extension, recursively, sorted); a glob
    pattern its matches (sorted); a URL and any other argument are kept as given, so that a
    missing or unreadable file becomes a row with an error rather than vanishing. A path listed
    twice is kept once.
    """
    paths: list[str] = []
    for argument in arguments:
        if is_url(argument):
            found = [argument]
        elif os.path.isdir(argument):
            found = sorted(
                str(p) for p in Path(argument).rglob("*") if p.is_file() and is_image_name(p)
            )
        elif glob.has_magic(argument) and not os.path.exists(argument):
            found = sorted(glob.glob(argument, recursive=True))
            found = [p for p in found if not os.path.isdir(p)]
            if not found:
                raise ValueError(f"no file matches the pattern {argument!r}")
        else:
            found = [argument]
        paths.extend(found)
    return list(dict.fromkeys(paths))
