"""The local engine vs the Ray engine on this machine: the same 64 mixed images (512^2 JPEG up
to 4000x3000 JPEG) scored by one head on a random-weight ViT-L/14, each run a fresh
`python main.py` process (so Ray's start-up of a local instance is counted). The Ray engine
runs with 1 and 2 infer actors; the table gives wall time, images/s, the overhead against the
local engine and the largest LLR difference.

    python benchmarks/bench_engines.py [--work /tmp/clipdet-bench] [--batch_size 4]
"""

import os
import subprocess
import sys
import time

import numpy as np
import pandas as pd
from common import MIXED_SIZES, REPO, bench_parser, make_head, make_images, make_vit_l14_checkpoint


def score(out, csv, weights, checkpoint, batch_size, *extra) -> float:
    """Wall seconds of one main.py run, start-up included."""
    command = [
        sys.executable, str(REPO / "main.py"), "-i", str(csv), "-o", str(out),
        "-w", str(weights), "-m", "head_a", "--backbone_weights", str(checkpoint),
        "-d", "cpu", "--batch_size", str(batch_size), "-q", *extra,
    ]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    args = bench_parser(__doc__, scoring=True).parse_args()
    images = make_images(args.work / "images", sizes=MIXED_SIZES * 4)
    checkpoint = make_vit_l14_checkpoint(args.work / "vit_l14_random.bin")
    weights = args.work / "weights"
    make_head(weights, "head_a", 1)
    csv = args.work / "engines.csv"
    pd.DataFrame({"filename": [str(p) for p in images]}).to_csv(csv, index=False)
    print(
        f"machine: {os.cpu_count()} CPU cores; {len(images)} images; ViT-L/14 (random), fp32, "
        f"batch {args.batch_size}"
    )
    runs = [
        ("local", f"{args.num_workers} decoding workers", []),
        ("ray", "1 actor x 1 CPU", ["--engine", "ray", "--workers", "1"]),
        ("ray", "1 actor x 1.5 CPU", ["--engine", "ray", "--workers", "1",
                                      "--cpus_per_worker", "1.5"]),
        ("ray", "2 actors x 0.75 CPU", ["--engine", "ray", "--workers", "2",
                                        "--cpus_per_worker", "0.75"]),
    ]  # fmt: skip
    print(
        f"{'engine':>6} {'set-up':>22} {'wall s':>7} {'img/s':>6} {'vs local':>8} {'max|dLLR|':>9}"
    )
    reference = None
    for engine, setup, extra in runs:
        out = args.work / f"engines_{engine}_{setup.replace(' ', '_')}.csv"
        if engine == "local":
            extra = ["--num_workers", str(args.num_workers)]
        wall = score(out, csv, weights, checkpoint, args.batch_size, *extra)
        llrs = pd.read_csv(out)["head_a"].to_numpy()
        if reference is None:
            reference = (wall, llrs)
        deviation = float(np.max(np.abs(llrs - reference[1])))
        print(
            f"{engine:>6} {setup:>22} {wall:>7.1f} {len(images) / wall:>6.2f} "
            f"{wall / reference[0]:>7.2f}x {deviation:>9.1e}"
        )


if __name__ == "__main__":
    main()
