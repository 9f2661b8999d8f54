"""Image impairments ("laundering") for robustness evaluation: JPEG re-compression, resizing,
cropping, blur and noise, chained, with parameters drawn per image from a seeded generator.

Operations: jpeg:QUALITY, webp:QUALITY, resize:SCALE[/method], crop, ccrop, blur:SIGMA,
noise:STD. A chain is written ``op:value`` or ``op:low..high`` (a range to draw from), joined
by commas, applied left to right, e.g. ``crop:0.5..1,resize:0.5..1.5/bilinear,jpeg:65..100``.
A preset name stands for its chain (see PRESETS).
"""

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "area": Image.Resampling.BOX,
}

ENCODED_KEY = "_encoded"  # the JPEG bytes, so that a chain ending in JPEG is saved as such

# The paper's "post-processed" setting (random crop, resize, JPEG), as in Corvi et al. 2023:
# crop 50-100 % of each side (what social networks and users cut), resize by 0.5-1.5x with
# bicubic (platform re-scaling up and down), JPEG quality 65-100 (the range of platforms'
# re-compression).
PRESETS = {
    "postprocessed": "crop:0.5..1,resize:0.5..1.5/bicubic,jpeg:65..100",
    "social": "resize:0.5..1/bicubic,jpeg:70..90",
}


@dataclass(frozen=True)
class Range:
    low: float
    high: float

    def draw(self, rng: np.random.Generator, integer: bool = False) -> float:
        if self.low == self.high:
            return int(self.low) if integer else self.low
        if integer:
            return int(rng.integers(int(self.low), int(self.high) + 1))
        return float(rng.uniform(self.low, self.high))


def _recompress(image: Image.Image, quality: int, fmt: str) -> tuple[Image.Image, bytes]:
    """The image encoded as ``fmt`` at ``quality`` and decoded again, and its bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, quality=quality)
    buffer.seek(0)
    out = Image.open(buffer)
    out.load()
    return out.convert("RGB"), buffer.getvalue()


def _jpeg(image: Image.Image, rng, value: Range, option):
    quality = value.draw(rng, integer=True)
    out, data = _recompress(image, quality, "JPEG")
    return out, {"quality": quality, ENCODED_KEY: data}


def _webp(image: Image.Image, rng, value: Range, option):
    quality = value.draw(rng, integer=True)
    return _recompress(image, quality, "WEBP")[0], {"quality": quality}


def _resize(image, rng, value: Range, option):
    scale = value.draw(rng)
    method = option or "bicubic"
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, INTERPOLATIONS[method]), {
        "scale": round(scale, 6),
        "size": size,
        "interpolation": method,
    }


def _crop(image, rng, value: Range, option, centre=False):
    amount = value.draw(rng, integer=value.low > 1)
    if amount > 1:  # pixels
        w, h = min(int(amount), image.width), min(int(amount), image.height)
    else:  # fraction of each side
        w, h = max(1, round(image.width * amount)), max(1, round(image.height * amount))
    if centre:
        left, top = (image.width - w) // 2, (image.height - h) // 2
    else:
        left = int(rng.integers(0, image.width - w + 1))
        top = int(rng.integers(0, image.height - h + 1))
    box = (left, top, left + w, top + h)
    return image.crop(box), {"box": box}


def _blur(image, rng, value: Range, option):
    sigma = value.draw(rng)
    return image.filter(ImageFilter.GaussianBlur(sigma)), {"sigma": round(sigma, 6)}


def _noise(image, rng, value: Range, option):
    std = value.draw(rng)
    pixels = np.asarray(image, dtype=np.float32) + rng.normal(
        0, std, (image.height, image.width, 3)
    )
    out = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))
    return out, {"std": round(std, 6)}


# name -> (function, valid value bounds, allowed options)
OPERATIONS: dict[str, tuple[Callable, tuple[float, float], tuple[str, ...]]] = {
    "jpeg": (_jpeg, (1, 100), ()),
    "webp": (_webp, (1, 100), ()),
    "resize": (_resize, (1e-3, 16), tuple(INTERPOLATIONS)),
    "crop": (_crop, (1e-3, 1e6), ()),
    "ccrop": (lambda *a: _crop(*a, centre=True), (1e-3, 1e6), ()),
    "blur": (_blur, (0, 100), ()),
    "noise": (_noise, (0, 255), ()),
}


@dataclass(frozen=True)
class Step:
    name: str
    value: Range
    option: str | None = None

    def apply(self, image: Image.Image, rng: np.random.Generator):
        function = OPERATIONS[self.name][0]
        image, params = function(image, rng, self.value, self.option)
        return image, {"op": self.name, **params}


def parse_chain(spec: str) -> list[Step]:
    """``"jpeg:75,resize:0.5..1/bilinear"`` -> steps; a preset name expands to its chain."""
    spec = PRESETS.get(spec.strip(), spec)
    steps = []
    for part in (p.strip() for p in spec.split(",")):
        name, _, rest = part.partition(":")
        if name not in OPERATIONS:
            raise ValueError(
                f"unknown operation {name!r} in {spec!r}; valid: {', '.join(OPERATIONS)} "
                f"(presets: {', '.join(PRESETS)})"
            )
        _, (low_bound, high_bound), options = OPERATIONS[name]
        value_text, _, option = rest.partition("/")
        if option and option not in options:
            raise ValueError(f"{name}: unknown option {option!r}; valid: {', '.join(options)}")
        try:
            low, _, high = value_text.partition("..")
            value = Range(float(low), float(high or low))
        except ValueError as e:
            raise ValueError(f"{part!r}: expected {name}:VALUE or {name}:LOW..HIGH") from e
        if not (low_bound <= value.low <= value.high <= high_bound):
            raise ValueError(
                f"{part!r}: values must satisfy {low_bound:g} <= low <= high <= {high_bound:g}"
            )
        steps.append(Step(name, value, option or None))
    return steps


class Perturbation:
    """A parsed chain; image ``index`` always gets the same draws for the same seed."""

    def __init__(self, spec: str, seed: int = 0):
        self.spec = spec
        self.steps = parse_chain(spec)
        self.seed = seed

    def __call__(self, image: Image.Image, index: int) -> "Perturbed":
        rng = np.random.default_rng([self.seed, index])
        record, encoded = [], None
        for step in self.steps:
            image, params = step.apply(image, rng)
            encoded = params.pop(ENCODED_KEY, None)
            record.append(params)
        return Perturbed(image, record, encoded)


def parse_views(spec: str, seed: int = 0) -> tuple["Perturbation", ...]:
    """``"jpeg:75;resize:0.5;social"`` -> one Perturbation per view (same draws per image as
    ``--perturb`` of the same chain and seed)."""
    names = [part.strip() for part in str(spec).split(";") if part.strip()]
    if not names:
        raise ValueError("--views needs at least one chain, e.g. 'jpeg:75;resize:0.5'")
    if len(set(names)) != len(names):
        raise ValueError(f"a view is named twice in {spec!r}")
    return tuple(Perturbation(name, seed) for name in names)


@dataclass
class Perturbed:
    image: Image.Image
    record: list[dict]  # the operations applied, with the parameters drawn
    encoded_jpeg: bytes | None  # set when the chain ends with JPEG compression
