"""--group auto: what finds the copies of one picture among a run's images, read in the run.

- ``copy_hash``: perceptual hashes (imagehash's pHash, 64 bits) of the image with any uniform
  border trimmed, and of its central 90 % and 80 % (mild crops), and a 256-bit pHash of the
  trimmed image (finer: more of an edit shows in it), as ``h1,h2,h3,h4`` in hex;
  then colour thumbnails (8 x 8 px, area means) of the trimmed image and of its central 90 %
  and 80 %, together in base64: an object added or removed shows in a few of their cells,
  recompression and resizing in none;
- ``copy_sketch``: the image's features from the run's first frozen backbone (else its first
  network), L2-normalised and projected on 64 seeded random directions (cosines survive the
  projection), float16 in base64.

``find_copies`` (clipdet.evaluation.copies) groups the rows from these columns, so a scores
file or a streamed run's parts hold what grouping needs. LLRs do not change."""

import base64
import functools

import numpy as np

from clipdet.pipeline.columns import GROUP, Column
from clipdet.pipeline.extensions.base import FileSource, RowExtension

HASH_COLUMN = "copy_hash"
SKETCH_COLUMN = "copy_sketch"

SKETCH_DIM = 64
KEY_COLUMNS = (HASH_COLUMN, SKETCH_COLUMN)
CENTRES = (1.0, 0.9, 0.8)  # the trimmed image and its central crops
FINE_HASH_SIZE = 16  # and a 256-bit pHash of the whole: local edits show in it
THUMB_SIDE = 8  # and 8 x 8 colour thumbnails of the same parts: added objects show in them
BORDER_TOLERANCE = 12  # grey levels a uniform border may vary by


def trim_border(pixels: np.ndarray) -> np.ndarray:
    """The image without a uniform border (letterbox, frame) of the corner's colour."""
    corner = pixels[0, 0].astype(int)
    off = np.abs(pixels.astype(int) - corner).max(axis=2) > BORDER_TOLERANCE
    rows, cols = np.flatnonzero(off.any(axis=1)), np.flatnonzero(off.any(axis=0))
    if rows.size < 8 or cols.size < 8:
        return pixels  # uniform, or nearly: nothing to trim
    return pixels[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def perceptual_hashes(pixels: np.ndarray) -> str:
    import imagehash
    from PIL import Image

    trimmed = trim_border(pixels)  # RGB, [H, W, 3]
    h, w = trimmed.shape[:2]
    parts = []  # the trimmed image (CENTRES[0] is 1) and its central parts
    for keep in CENTRES:
        dh, dw = int(round(h * (1 - keep) / 2)), int(round(w * (1 - keep) / 2))
        parts.append(Image.fromarray(trimmed[dh : h - dh or None, dw : w - dw or None]))
    hashes = [str(imagehash.phash(part)) for part in parts]
    hashes.append(str(imagehash.phash(parts[0], hash_size=FINE_HASH_SIZE)))
    thumbs = [part.resize((THUMB_SIDE, THUMB_SIDE), Image.BOX).tobytes() for part in parts]
    hashes.append(base64.b64encode(b"".join(thumbs)).decode())
    return ",".join(hashes)


@functools.lru_cache(maxsize=4)
def _projection(dim: int) -> np.ndarray:
    return np.random.default_rng(dim).normal(size=(dim, SKETCH_DIM)) / np.sqrt(SKETCH_DIM)


def sketch(embedding: np.ndarray) -> str:
    vector = np.asarray(embedding, dtype=np.float64)
    vector = vector / (np.linalg.norm(vector) or 1.0)
    projected = vector @ _projection(vector.size)
    projected /= np.linalg.norm(projected) or 1.0
    return base64.b64encode(projected.astype(np.float16).tobytes()).decode()


class CopyKeys(RowExtension):
    """Each row's value: [hashes, sketch] (either may be None)."""

    name = "copy_keys"
    reads_pixels = True
    reads_embedding = True  # embedding_model None: the run's first frozen backbone

    @classmethod
    def from_options(cls, options, paths=None):
        return cls() if options.copy_keys else None

    def signature(self) -> dict:
        return {"copy_keys": 1}

    def columns(self) -> tuple[Column, ...]:
        return tuple(Column(name, GROUP) for name in KEY_COLUMNS)

    def prepare_image(self, source: FileSource):
        if source.pixels is None:
            return None
        return [perceptual_hashes(source.pixels), None]

    def fold_embedding(self, value, embedding):
        if embedding is None or value is None:
            return value
        return [value[0], sketch(embedding)]

    def table_columns(self, values: dict, n_rows: int, fusion=None) -> dict:
        columns = {name: np.full(n_rows, "", dtype=object) for name in KEY_COLUMNS}
        for index, keys in values.items():
            for name, key in zip(KEY_COLUMNS, keys, strict=True):
                columns[name][index] = key or ""
        return columns

    def to_json(self, value) -> list:
        return list(value)

    def from_json(self, stored, n_detectors: int) -> list:
        if not isinstance(stored, list) or len(stored) != len(KEY_COLUMNS):
            raise ValueError("wrong copy keys")
        return stored
