"""Evidence maps on disk (``main.py --maps DIR``).

A full-resolution detector (Corvi2023's ResNet-50) ends with global average pooling and a
linear layer, so its LLR is exactly the mean of the linear layer applied at every location of
the last feature map. That map, at the network's output stride (8 px), is saved per image and
model as ``DIR/<row>.<model>.npy`` (float32; its mean is the row's LLR) with a heat-map overlay
``DIR/<row>.<model>.png`` (red: evidence for synthetic, blue: for real). ``DIR/maps.csv`` lists
them by file name. CLIP heads read one pooled token: they get no map.
"""

import logging
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from clipdet.constants import FILENAME_COLUMN
from clipdet.files import write_csv_atomic
from clipdet.pipeline.images import load_rgb
from clipdet.pipeline.record import ImageResult

logger = logging.getLogger(__name__)

MANIFEST = "maps.csv"
OVERLAY_SIDE = 768  # longest side of an overlay, in pixels
_NAME = re.compile(r"^(\d{6,})\.(.+)\.npy$")


def _stem(index: int, model: str) -> str:
    return f"{index:06d}.{re.sub(r'[^A-Za-z0-9_.-]', '_', model)}"


def heat_overlay(image: Image.Image, logit_map: np.ndarray, alpha: float = 0.55) -> Image.Image:
    """``image`` (shrunk to OVERLAY_SIDE) under the map in a diverging colour scale symmetric
    around 0: red where a location speaks for synthetic, blue for real."""
    from matplotlib import colormaps

    image = image.copy()
    image.thumbnail((OVERLAY_SIDE, OVERLAY_SIDE))
    limit = float(np.max(np.abs(logit_map))) or 1.0
    colours = colormaps["RdBu_r"]((logit_map / limit + 1) / 2)[..., :3]
    heat = Image.fromarray((colours * 255).astype(np.uint8)).resize(image.size, Image.BILINEAR)
    return Image.blend(image.convert("RGB"), heat, alpha)


class MapWriter:
    """Saves the maps that results carry, as they come; ``write_manifest`` lists every map of
    the folder (also those a resumed run wrote before)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.written = 0

    def write(self, index: int, path: str, maps: dict[str, np.ndarray]) -> None:
        try:
            image = load_rgb(
                path, min_side=OVERLAY_SIDE
            )  # a JPEG at a reduced scale: shrunk anyway
        except OSError:
            image = None  # scored, then moved: the map is kept without its overlay
        for model, logit_map in maps.items():
            stem = self.folder / _stem(index, model)
            np.save(stem.with_name(stem.name + ".npy"), logit_map.astype(np.float32))
            if image is not None:
                heat_overlay(image, logit_map).save(stem.with_name(stem.name + ".png"))
            self.written += 1

    def wrap(self, results: Iterator[ImageResult], paths: Sequence[str]) -> Iterator[ImageResult]:
        """``results`` unchanged, their maps saved on the way."""
        for result in results:
            if result.maps:
                self.write(result.index, paths[result.index], result.maps)
            yield result

    def write_manifest(self, filenames: Sequence[str]) -> Path:
        rows = []
        for npy in sorted(self.folder.glob("*.npy")):
            match = _NAME.match(npy.name)
            if not match or int(match.group(1)) >= len(filenames):
                continue
            index = int(match.group(1))
            overlay = npy.with_suffix(".png")
            rows.append({
                FILENAME_COLUMN: filenames[index],
                "model": match.group(2),
                "map": npy.name,
                "overlay": overlay.name if overlay.exists() else "",
                "mean": float(np.load(npy).astype(np.float64).mean()),
            })  # fmt: skip
        columns = [FILENAME_COLUMN, "model", "map", "overlay", "mean"]
        return write_csv_atomic(self.folder / MANIFEST, pd.DataFrame(rows, columns=columns))


def read_manifest(folder: str | Path) -> pd.DataFrame:
    """The maps of a folder written by ``MapWriter`` (empty when there is none)."""
    path = Path(folder) / MANIFEST
    if not path.exists():
        return pd.DataFrame(columns=[FILENAME_COLUMN, "model", "map", "overlay", "mean"])
    return pd.read_csv(path, dtype={FILENAME_COLUMN: str, "model": str}, keep_default_na=False)
