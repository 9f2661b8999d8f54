"""`clipdet sweep`'s cost beyond the backbone pass: fitting and figures per (backbone, layer)
row on 700 images x 768 dims (the trainer's liblinear head vs the exact solver the sweep
uses, same figures), and a whole sweep of 96 small images at 1 layer vs 3 (one pass).

    python benchmarks/bench_sweep.py [--work /tmp/clipdet_bench]
"""

import argparse
import contextlib
import io
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from common import REPO, cpu_name, make_images

sys.path.insert(0, str(REPO / "tests"))


def features(n: int = 710, dim: int = 768, seed: int = 0):
    """Probe-like features: a low-rank structure, noise and a weak class direction."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 2).astype(int)
    basis = rng.normal(size=(40, dim))
    X = rng.normal(size=(n, 40)) @ basis + 2.0 * rng.normal(size=(n, dim))
    X[y == 1] += 0.9 * basis[0]
    return X / np.linalg.norm(X, axis=1, keepdims=True), y


def fitting(solver: str) -> tuple[float, dict]:
    import clipdet.training.sweep as sweep_module

    X, y = features()
    real = sweep_module._solver
    sweep_module._solver = lambda rows: solver  # the row's heads with this solver
    try:
        start = time.perf_counter()
        oof = sweep_module._out_of_fold_llrs(X, y, np.ones(len(y), bool), 5, None)
        figures = sweep_module._figures(y, oof, 0.95, 1000)
    finally:
        sweep_module._solver = real
    return time.perf_counter() - start, figures


def whole_sweep(work: Path, layers: str) -> float:
    import json

    import open_clip
    import torch
    from helpers import TINY_CONFIG, TINY_MODEL

    from clipdet.cli import main as clipdet

    folder = work / "tiny_clip"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{TINY_MODEL}.json").write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(folder / f"{TINY_MODEL}.json")
    checkpoint = folder / "open_clip.bin"
    if not checkpoint.exists():
        torch.manual_seed(0)
        torch.save(open_clip.create_model(TINY_MODEL).state_dict(), checkpoint)
    images = make_images(work / "small", [(96, 80, "PNG")] * 96)
    csv = work / "small.csv"
    pd.DataFrame({"filename": [str(p) for p in images],
                  "typ": ["real", "fake"] * 48}).to_csv(csv, index=False)  # fmt: skip
    out = work / f"sweep_{layers.count(',') + 1}.csv"
    for stale in work.glob("sweep_cache*"):
        import shutil

        shutil.rmtree(stale)
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # the sweep prints its table
        code = clipdet(["sweep", "-i", str(csv), "-b", f"open_clip:{TINY_MODEL}:{checkpoint}",
                    "--layers", layers, "-o", str(out), "--feature_cache",
                        str(work / "sweep_cache"), "-d", "cpu", "--num_workers", "0",
                        "-q"])  # fmt: skip
    if code != 0:
        raise RuntimeError(f"sweep failed ({code})")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/clipdet_bench"))
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    print(f"CPU: {cpu_name()}")
    (old_s, old), (new_s, new) = fitting("liblinear"), fitting("exact")
    worst = max(abs(old[k] - new[k]) for k in old)
    print(f"fitting + figures per row, 710 x 768, 5 folds, 1000 bootstraps: liblinear "
          f"{old_s:.1f} s, exact {new_s:.1f} s ({old_s / new_s:.1f}x); largest figure "
          f"difference {worst:.1e}")  # fmt: skip
    whole_sweep(args.work, "embed")  # warm: the images made, the libraries loaded
    one, three = whole_sweep(args.work, "embed"), whole_sweep(args.work, "embed,0,-1")
    print(f"whole sweep of 96 small images (tiny ViT): 1 layer {one:.1f} s, 3 layers "
          f"{three:.1f} s ({three / one:.2f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
