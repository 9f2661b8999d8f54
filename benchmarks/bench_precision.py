"""Precision modes on the CPU: end-to-end time and LLR deviation from fp32, ViT-L/14, one head,
16 mixed images up to 4000x3000 JPEG. Baseline: fp32 at batch size 1 without decoding workers.

    python benchmarks/bench_precision.py [--work /tmp/clipdet-bench]
"""

import os

import numpy as np
from bench_scoring import run
from common import bench_parser, make_head, make_images, make_vit_l14_checkpoint

RUNS = [  # (label, batch size, workers, precision)
    ("fp32 batch 1", 1, 0, "fp32"),
    ("fp32", 4, 2, "fp32"),
    ("bf16 weights", 4, 2, "bf16"),
]


def main() -> None:
    args = bench_parser(__doc__).parse_args()
    images = make_images(args.work / "images")
    checkpoint = make_vit_l14_checkpoint(args.work / "vit_l14_random.bin")
    make_head(args.work / "weights", "head_a", 1)
    print(f"machine: {os.cpu_count()} CPU cores; {len(images)} images")
    print(
        f"{'mode':>14} {'batch':>5} {'workers':>7} {'total s':>8} {'img/s':>6} "
        f"{'speed-up':>8} {'max|dLLR|':>9} {'peak RSS MB':>11}"
    )
    results = {}
    for label, batch, workers, precision in RUNS:
        r = run(
            "clipdet_flow.py",
            checkpoint,
            args.work / "weights",
            "head_a",
            batch,
            workers,
            precision,
            *images,
        )
        results[label] = r
        base = results[RUNS[0][0]]
        deviation = np.max(np.abs(np.asarray(r["llrs"]) - np.asarray(base["llrs"])))
        print(
            f"{label:>14} {batch:>5} {workers:>7} {r['total_s']:>8.1f} "
            f"{len(images) / r['total_s']:>6.2f} {base['total_s'] / r['total_s']:>7.2f}x "
            f"{deviation:>9.1e} {r['peak_rss_mb']:>11.0f}"
        )


if __name__ == "__main__":
    main()
