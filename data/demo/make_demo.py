"""Regenerate the bundled demo images (procedural pictures, not real photographs or generator
outputs: they exercise the pipeline, they say nothing about accuracy).

    python data/demo/make_demo.py
"""

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

HERE = Path(__file__).resolve().parent


def scene(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    w, h = size
    y, x = np.mgrid[0:h, 0:w] / max(w, h)
    base = np.stack([np.sin(6 * x + rng.uniform(0, 6)) * 0.5 + 0.5 for _ in range(3)], -1)
    base = base * rng.uniform(0.4, 1.0, 3) + y[..., None] * rng.uniform(-0.3, 0.3, 3)
    image = Image.fromarray((np.clip(base, 0, 1) * 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x0, y0 = rng.integers(0, w), rng.integers(0, h)
        r = int(rng.integers(8, max(w, h) // 4))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        draw.ellipse([x0 - r, y0 - r, x0 + r, y0 + r], fill=colour)
    return image


def main() -> None:
    rng = np.random.default_rng(2024)
    rows = ["filename,typ"]
    for i in range(4):  # "real": camera-like sensor noise, JPEG
        image = scene(rng, (512, 384))
        noisy = np.asarray(image, np.float32) + rng.normal(0, 6, (384, 512, 3))
        name = f"real_{i}.jpg"
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(HERE / name, quality=90)
        rows.append(f"{name},real")
    for i in range(4):  # "synthetic": smooth, noiseless, PNG
        image = scene(rng, (512, 512)).filter(ImageFilter.GaussianBlur(1.5))
        name = f"synthetic_{i}.png"
        image.save(HERE / name)
        rows.append(f"{name},demo_generator")
    (HERE / "demo.csv").write_text("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
