"""The invisible watermarks Stable Diffusion's stock pipelines embed, read with the
``invisible-watermark`` package (``dwtDct``: DCT blocks of the Haar DWT of the U and V planes):

* SDXL (diffusers' ``StableDiffusionXLWatermarker``): the 48-bit message 0xB3EC907BB19E,
  embedded on float32 pixels in BGR order (diffusers before 0.20: the RGB array as if it were
  BGR). OpenCV's float colour conversion centres U and V on 0.5 rather than 128, so the mark is
  read back from float32 pixels too, in both channel orders;
* Stable Diffusion v1 (CompVis ``txt2img.py``): the bytes ``StableDiffusionV1`` (136 bits),
  embedded on uint8 BGR pixels.

A message matches when at most ``MAX_BIT_ERRORS`` of its bits differ, a tolerance chosen by
measurement (``benchmarks/bench_provenance.py``, figures in docs/provenance.md). Only images of
the size a generator writes are decoded: the mark lives at the generated resolution (a resize
destroys it), so larger images are skipped, not guessed.
"""

from dataclasses import dataclass

import numpy as np

SDXL_BITS = np.unpackbits(np.frombuffer(bytes.fromhex("B3EC907BB19E"), dtype=np.uint8))
SDV1_BITS = np.unpackbits(np.frombuffer(b"StableDiffusionV1", dtype=np.uint8))
MIN_PIXELS = 256 * 256  # the decoder's own lower limit
MAX_PIXELS = 2048 * 2048  # larger images are not generator outputs at their native size
MAX_BIT_ERRORS = {"sdxl": 10, "sd1": 40}


@dataclass(frozen=True)
class Watermark:
    name: str  # sdxl, sd1
    generator: str
    bits: np.ndarray
    readings: tuple[tuple[bool, bool], ...]  # (BGR channel order, float32 pixels) to try


WATERMARKS = (
    Watermark("sdxl", "Stable Diffusion XL", SDXL_BITS, ((True, True), (False, True))),
    Watermark("sd1", "Stable Diffusion v1", SDV1_BITS, ((True, False),)),
)


class WatermarkTooSmall(ValueError):
    pass


def bit_errors(rgb: np.ndarray, mark: Watermark) -> int:
    """The fewest of ``mark``'s bits that differ from those decoded from an RGB uint8 array,
    over the ways its pipelines embed it."""
    from imwatermark import WatermarkDecoder

    decoder = WatermarkDecoder("bits", len(mark.bits))
    errors = []
    for bgr, as_float in mark.readings:
        pixels = rgb[:, :, ::-1] if bgr else rgb
        pixels = np.ascontiguousarray(pixels, dtype=np.float32 if as_float else np.uint8)
        decoded = np.asarray(decoder.decode(pixels, "dwtDct"), dtype=np.uint8)
        errors.append(int(np.count_nonzero(decoded != mark.bits)))
    return min(errors)


def embed(rgb: np.ndarray, mark: Watermark) -> np.ndarray:
    """``rgb`` (uint8) with ``mark`` embedded the way its pipeline does it (SDXL: diffusers'
    float32 BGR path, clamped and rounded; SD v1: CompVis txt2img's uint8 BGR path): for
    testing and measuring the reader, since no generator output ships with clipdet."""
    from imwatermark import WatermarkEncoder

    encoder = WatermarkEncoder()
    encoder.set_watermark("bits", [int(b) for b in mark.bits])
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    if mark.name == "sdxl":
        out = encoder.encode(bgr.astype(np.float32), "dwtDct")
        return np.clip(out[:, :, ::-1], 0, 255).round().astype(np.uint8)
    return np.ascontiguousarray(encoder.encode(bgr, "dwtDct")[:, :, ::-1])


def find_watermarks(rgb: np.ndarray) -> list[Watermark]:
    """The watermarks found in an RGB uint8 image [H, W, 3]; WatermarkTooSmall below the
    decoder's 256x256 pixels, an empty list (not decoded) above MAX_PIXELS."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 array, got {rgb.dtype} {rgb.shape}")
    pixels = rgb.shape[0] * rgb.shape[1]
    if pixels < MIN_PIXELS:
        raise WatermarkTooSmall(f"{rgb.shape[1]}x{rgb.shape[0]} is under 256x256 pixels")
    if pixels > MAX_PIXELS:
        return []
    return [m for m in WATERMARKS if bit_errors(rgb, m) <= MAX_BIT_ERRORS[m.name]]
