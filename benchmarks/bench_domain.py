"""Where a calibration holds (clipdet.pipeline.domain): how many held-out images like the
calibration set keep their verdict, how many images of another family are refused, and what
the description costs (fit time, file size, distance time per 10,000 images).

Features are CLIP-like (1024-d, L2-normalised): a family is a shared direction plus a low-rank
structure and noise; "another family" has another direction and structure; "a shifted family"
moves the first one part-way (an edge case: some refused, some kept).

    python benchmarks/bench_domain.py [--dim 1024] [--draws 20]
"""

import argparse
import json
import time

import numpy as np
from common import cpu_name

from clipdet.pipeline.domain import DomainDescription


def family(rng, n: int, dim: int, centre: np.ndarray, basis: np.ndarray) -> np.ndarray:
    x = centre + rng.normal(size=(n, len(basis))) @ basis + 0.35 * rng.normal(size=(n, dim))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--draws", type=int, default=20)
    args = parser.parse_args()
    print(f"CPU: {cpu_name()}")
    for n in (60, 300, 2000):
        kept, refused, shifted, fit_s, size = [], [], [], [], []
        for draw in range(args.draws):
            rng = np.random.default_rng(draw)
            dim = args.dim
            centre, other = 2.0 * rng.normal(size=dim), 2.0 * rng.normal(size=dim)
            basis, other_basis = rng.normal(size=(20, dim)), rng.normal(size=(20, dim))
            calibration = family(rng, n, dim, centre, basis)
            start = time.perf_counter()
            description = DomainDescription.fit(calibration, "m", seed=draw)
            fit_s.append(time.perf_counter() - start)
            size.append(len(json.dumps(description.to_dict())))
            held_out = family(rng, 1000, dim, centre, basis)
            kept.append(np.mean(~description.is_unlike(description.distance(held_out))))
            far = family(rng, 1000, dim, other, other_basis)
            refused.append(np.mean(description.is_unlike(description.distance(far))))
            moved = family(rng, 1000, dim, 0.6 * centre + 0.4 * other, basis)
            shifted.append(np.mean(description.is_unlike(description.distance(moved))))
        print(
            f"n={n:5d}: held-out kept {np.mean(kept):.3f} (min {np.min(kept):.3f}), other "
            f"family refused {np.mean(refused):.3f}, shifted family refused "
            f"{np.mean(shifted):.3f}; fit {np.mean(fit_s):.2f} s, description "
            f"{np.mean(size) / 1024:.0f} KiB"
        )
    rng = np.random.default_rng(0)
    description = DomainDescription.fit(rng.normal(size=(4096, args.dim)), "m")
    queries = rng.normal(size=(10_000, args.dim))
    start = time.perf_counter()
    description.distance(queries)
    print(f"distance of 10,000 images to 4,096 calibration images: "
          f"{time.perf_counter() - start:.2f} s")  # fmt: skip


if __name__ == "__main__":
    main()
