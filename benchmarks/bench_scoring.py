"""End-to-end scoring speed on CPU: clipdet vs the reference code's flow, one and two heads on
the ViT-L/14 backbone, 16 mixed images up to 4000x3000 JPEG. Each run is a fresh process, so
start-up and peak RSS are those a user sees.

    python benchmarks/bench_scoring.py [--work /tmp/clipdet-bench] [--batch_size 4]
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from common import bench_parser, make_head, make_images, make_vit_l14_checkpoint

HERE = Path(__file__).resolve().parent


def run(script: str, *args) -> dict:
    out = subprocess.run(
        [sys.executable, str(HERE / script), *map(str, args)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    args = bench_parser(__doc__, scoring=True).parse_args()

    images = make_images(args.work / "images")
    checkpoint = make_vit_l14_checkpoint(args.work / "vit_l14_random.bin")
    weights = args.work / "weights"
    make_head(weights, "head_a", 1)
    make_head(weights, "head_b", 2)
    print(
        f"machine: {os.cpu_count()} CPU cores; {len(images)} images; batch {args.batch_size}, "
        f"{args.num_workers} workers"
    )
    print(
        f"{'heads':>5} {'flow':>10} {'start-up s':>10} {'total s':>8} {'img/s':>6} "
        f"{'peak RSS MB':>11} {'speed-up':>8} {'max|dLLR|':>9}"
    )
    for models in ("head_a", "head_a,head_b"):
        ref = run("reference_flow.py", checkpoint, weights, models, *images)
        ours = run(
            "clipdet_flow.py",
            checkpoint,
            weights,
            models,
            args.batch_size,
            args.num_workers,
            "fp32",
            *images,
        )
        deviation = float(np.max(np.abs(np.asarray(ref["llrs"]) - np.asarray(ours["llrs"]))))
        heads = models.count(",") + 1
        for label, r in (("reference", ref), ("clipdet", ours)):
            speedup = ref["total_s"] / r["total_s"]
            print(
                f"{heads:>5} {label:>10} {r['startup_s']:>10.1f} {r['total_s']:>8.1f} "
                f"{len(images) / r['total_s']:>6.2f} {r['peak_rss_mb']:>11.0f} "
                f"{speedup:>7.2f}x {deviation if label == 'clipdet' else 0:>9.1e}"
            )


if __name__ == "__main__":
    main()
