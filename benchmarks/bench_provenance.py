"""Provenance reading (clipdet.provenance): the cost per image of each kind of evidence beside
decoding the pixels, then invisible watermarks: bit errors of watermarked images after a PNG
round trip and after JPEG 90, of images without a watermark, the match and false-match rates at
the tolerance clipdet uses, and the decoding time per image.

    python benchmarks/bench_provenance.py [--marked 100] [--unmarked 1000]

Watermarks are embedded the way the stock pipelines do (SDXL: diffusers' float32 BGR path; SD
v1: CompVis txt2img's uint8 BGR path). The images are generated (smooth gradients, shapes,
texture, noise at several levels, 256 to 1024 px) plus the bundled demo images resized: no
photograph or generator output is bundled, so rates on real images may differ.
"""

import io
import time

import numpy as np
from common import REPO, bench_parser
from PIL import Image

from clipdet.provenance.watermarks import MAX_BIT_ERRORS, WATERMARKS, bit_errors, embed


def picture(seed: int) -> np.ndarray:
    """A varied RGB picture: gradients, a few shapes, texture and noise."""
    rng = np.random.default_rng(seed)
    h, w = (int(v) for v in rng.choice([256, 320, 384, 512, 640, 768, 1024], size=2))
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    image = rng.uniform(40, 200, 3) + rng.uniform(-60, 60, 3) * (x / w)[..., None]
    image = image + 40 * np.sin(x / rng.uniform(5, 80) + y / rng.uniform(5, 80))[..., None]
    for _ in range(int(rng.integers(0, 6))):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(10, min(h, w) / 2)
        image[(y - cy) ** 2 + (x - cx) ** 2 < r**2] = rng.uniform(0, 255, 3)
    image = image + rng.normal(0, rng.choice([0, 2, 6, 12]), image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def demo_pictures() -> list[np.ndarray]:
    folder = REPO / "data" / "demo"
    return [
        np.asarray(Image.open(p).convert("RGB").resize((512, 512)))
        for p in sorted(folder.glob("*.*"))
        if p.suffix in (".jpg", ".png")
    ]


def round_trip(rgb: np.ndarray, fmt: str) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def summary(errors: list[int], limit: int) -> str:
    e = np.array(errors)
    matched = int((e <= limit).sum())
    return (f"{matched}/{len(e)} match ({100 * matched / len(e):.1f} %); bit errors min "
            f"{e.min()}, median {np.median(e):.0f}, max {e.max()}")  # fmt: skip


def overhead() -> None:
    """Milliseconds per file: decoding the pixels (what scoring does anyway), reading the
    metadata kinds from the bytes, and the watermark from the decoded pixels."""
    from clipdet.pipeline.images import load_rgb
    from clipdet.provenance import ProvenanceReader
    from clipdet.provenance.samples import (
        WEBUI,
        c2pa_signed,
        certificate_chain,
        jpeg_bytes,
        picture,
        png_bytes,
        xmp_packet,
    )  # fmt: skip

    reader, chain = ProvenanceReader(), certificate_chain("Bench")[:2]
    files = {
        "camera JPEG 2000x1500, no metadata": jpeg_bytes(picture(1500, 2000)),
        "WebUI PNG 1024x1024": png_bytes(picture(1024, 1024), texts=[("parameters", WEBUI)]),
        "IPTC JPEG 1024x1024": jpeg_bytes(picture(1024, 1024), xmp=xmp_packet()),
        "C2PA JPEG 1024x1024": c2pa_signed(jpeg_bytes(picture(1024, 1024)), "image/jpeg", *chain),
    }
    print("| file | decode pixels ms | metadata ms | watermarks ms | evidence |")
    print("|---|---:|---:|---:|---|")
    for name, data in files.items():
        timings = []
        for _ in range(3):
            t0 = time.perf_counter()
            rgb = np.asarray(load_rgb("bench", data))
            t1 = time.perf_counter()
            found = reader.read(data, None)
            t2 = time.perf_counter()
            reader._watermarks(data, rgb, found)
            t3 = time.perf_counter()
            timings.append((t1 - t0, t2 - t1, t3 - t2))
        best = np.min(np.array(timings), axis=0) * 1000
        print(f"| {name} | {best[0]:.0f} | {best[1]:.1f} | {best[2]:.0f} | {found.text} |")


def main() -> None:
    p = bench_parser(__doc__)
    p.add_argument("--marked", type=int, default=100, help="watermarked images per mark")
    p.add_argument("--unmarked", type=int, default=1000, help="images without a watermark")
    args = p.parse_args()
    overhead()
    pictures = demo_pictures()
    marked_sources = [picture(10_000 + i) for i in range(args.marked - len(pictures))] + pictures
    for mark in WATERMARKS:
        limit = MAX_BIT_ERRORS[mark.name]
        png, jpeg = [], []
        for rgb in marked_sources:
            marked = embed(rgb, mark)
            png.append(bit_errors(round_trip(marked, "PNG"), mark))
            jpeg.append(bit_errors(round_trip(marked, "JPEG"), mark))
        print(f"{mark.name} ({len(mark.bits)} bits, tolerance {limit}): after PNG: "
              f"{summary(png, limit)}; after JPEG 90: {summary(jpeg, limit)}")  # fmt: skip

    clean = {m.name: [] for m in WATERMARKS}
    seconds, pixels = 0.0, 0
    sources = [picture(i) for i in range(args.unmarked - len(pictures))] + pictures
    for i, rgb in enumerate(sources):
        if i % 2:  # half of them as JPEG 90, as photos usually are
            rgb = round_trip(rgb, "JPEG")
        started = time.perf_counter()
        for mark in WATERMARKS:
            clean[mark.name].append(bit_errors(rgb, mark))
        seconds += time.perf_counter() - started
        pixels += rgb.shape[0] * rgb.shape[1]
    for mark in WATERMARKS:
        limit = MAX_BIT_ERRORS[mark.name]
        print(f"{mark.name} on {len(sources)} images without a watermark: false "
              f"{summary(clean[mark.name], limit)}")  # fmt: skip
    print(f"reading both marks: {1000 * seconds / len(sources):.0f} ms per image on average "
          f"({1000 * seconds / (pixels / 1e6):.0f} ms per megapixel)")  # fmt: skip


if __name__ == "__main__":
    main()
