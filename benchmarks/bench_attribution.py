"""Cost of attribution models beside a detector on CPU, ViT-L/14 (random weights), 16 mixed
images up to 4000x3000 JPEG: they read the detector's backbone pass (next-to-last features, or
the CLS token of block 12 captured on the way), so adding them costs almost nothing; alone, a
block-12 model stops the pass halfway.

    python benchmarks/bench_attribution.py [--work /tmp/clipdet-bench]
"""

import os

import numpy as np
from bench_scoring import run
from common import (
    bench_parser,
    make_attribution_head,
    make_head,
    make_images,
    make_vit_l14_checkpoint,
)

CLASSES = ("real", "dalle2", "dalle3", "firefly", "midjourney-v5")
RUNS = [  # (label, models)
    ("detector", "head_a"),
    ("detector + attribution", "head_a,attr_next"),
    ("detector + attribution (block 12)", "head_a,attr_b12"),
    ("attribution (block 12) alone", "attr_b12"),
    ("attribution alone", "attr_next"),
]


def main() -> None:
    args = bench_parser(__doc__, scoring=True).parse_args()
    images = make_images(args.work / "images")
    checkpoint = make_vit_l14_checkpoint(args.work / "vit_l14_random.bin")
    weights = args.work / "weights"
    make_head(weights, "head_a", 1)
    make_attribution_head(weights, "attr_next", 3, CLASSES)
    make_attribution_head(weights, "attr_b12", 4, CLASSES, block=12)
    print(
        f"machine: {os.cpu_count()} CPU cores; {len(images)} images; batch {args.batch_size}, "
        f"{args.num_workers} workers; {len(CLASSES)} classes"
    )
    print(f"{'models':>34} {'total s':>8} {'img/s':>6} {'vs detector':>11}")
    results = {}
    for label, models in RUNS:
        results[label] = r = run(
            "clipdet_flow.py",
            checkpoint,
            weights,
            models,
            args.batch_size,
            args.num_workers,
            "fp32",
            *images,
        )
        ratio = r["total_s"] / results["detector"]["total_s"]
        print(
            f"{label:>34} {r['total_s']:>8.1f} {len(images) / r['total_s']:>6.2f} {ratio:>10.2f}x"
        )
    # the same numbers whether a model runs alone or beside others
    for name, alone, mixed in (
        ("attr_b12", "attribution (block 12) alone", "detector + attribution (block 12)"),
        ("attr_next", "attribution alone", "detector + attribution"),
    ):
        diff = np.max(
            np.abs(np.subtract(results[alone]["logits"][name], results[mixed]["logits"][name]))
        )
        print(f"{name}: max |logit difference| alone vs beside the detector: {diff:.1e}")
    separate = results["detector"]["total_s"] + results["attribution (block 12) alone"]["total_s"]
    shared = results["detector + attribution (block 12)"]["total_s"]
    print(
        f"detector and block-12 attribution as two runs: {separate:.1f} s; one run: {shared:.1f} s"
    )


if __name__ == "__main__":
    main()
