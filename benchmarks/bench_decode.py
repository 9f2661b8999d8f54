"""Decoding throughput of one CPU core (decode + Clip224 preprocessing), per image kind: the
limit of a GPU run, since a GPU computes ViT-L/14 features far faster than a core decodes.

    python benchmarks/bench_decode.py
"""

import time

import torch
from common import bench_parser, make_images

from clipdet.models.preprocess import make_transform
from clipdet.pipeline.images import load_rgb

KINDS = [(512, 512, "JPEG"), (1024, 1024, "PNG"), (2000, 1500, "JPEG"), (4000, 3000, "JPEG")]


def main() -> None:
    p = bench_parser(__doc__)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(1)
    transform = make_transform("Clip224", "clip")
    print(f"{'image':>16} {'decode ms':>9} {'+ Clip224 ms':>12} {'images/s/core':>13}")
    for w, h, fmt in KINDS:
        (path,) = make_images(args.work / "decode", [(w, h, fmt)])
        start = time.perf_counter()
        for _ in range(args.repeat):
            image = load_rgb(path)
        decode = (time.perf_counter() - start) / args.repeat
        start = time.perf_counter()
        for _ in range(args.repeat):
            transform(load_rgb(path))
        total = (time.perf_counter() - start) / args.repeat
        print(
            f"{f'{w}x{h} {fmt}':>16} {decode * 1e3:>9.0f} {total * 1e3:>12.0f} {1 / total:>13.1f}"
        )
        del image


if __name__ == "__main__":
    main()
