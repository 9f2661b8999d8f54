"""--calibration (or --facts): what the verdict rules and a quality-aware calibration read of
each image, from its header (nothing decoded): width, height and JPEG quality (as its
quantisation tables say; empty for other formats). A video's are its frames' size, with no
JPEG quality. Under --perturb they are the perturbed image's: its size, and the quality of a
chain that ends in JPEG (else empty). LLRs do not change."""

import numpy as np

from clipdet.constants import IMAGE_FACT_COLUMNS
from clipdet.pipeline.columns import FACT, Column
from clipdet.pipeline.extensions.base import FileSource, RowExtension, VideoSource, values_array


class ImageFacts(RowExtension):
    """Each row's value: (width, height, JPEG quality), NaN where unknown."""

    name = "facts"
    reads_bytes = True

    @classmethod
    def from_options(cls, options, paths=None):
        return cls() if options.calibration or options.facts else None

    def signature(self) -> dict:
        return {"image_facts": True}  # rows of a run without it lack the image facts

    def columns(self) -> tuple[Column, ...]:
        return tuple(Column(name, FACT) for name in IMAGE_FACT_COLUMNS)

    def prepare_image(self, source: FileSource) -> tuple[float, float, float]:
        from clipdet.pipeline.images import image_facts

        return image_facts(source.data)

    def prepare_perturbed(self, value, perturbed) -> tuple[float, float, float]:
        last = perturbed.record[-1] if perturbed.record else {}
        quality = float(last["quality"]) if last.get("op") == "jpeg" else float("nan")
        return float(perturbed.image.width), float(perturbed.image.height), quality

    def prepare_video(self, source: VideoSource) -> tuple[float, float, float]:
        return float(source.size[0]), float(source.size[1]), float("nan")

    def table_columns(self, values: dict, n_rows: int, fusion=None) -> dict:
        facts = values_array(values, n_rows, len(IMAGE_FACT_COLUMNS))
        return dict(zip(IMAGE_FACT_COLUMNS, facts.T, strict=True))

    def to_json(self, value) -> list:
        return [None if not np.isfinite(v) else float(v) for v in np.asarray(value, dtype=float)]

    def from_json(self, stored, n_detectors: int) -> tuple[float, ...]:
        facts = tuple(float("nan") if v is None else float(v) for v in stored)
        if len(facts) != len(IMAGE_FACT_COLUMNS):
            raise ValueError("wrong image facts")
        return facts
