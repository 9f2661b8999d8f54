"""clipdet's scoring path, timed: python benchmarks/clipdet_flow.py CHECKPOINT WEIGHTS_DIR MODELS
BATCH_SIZE NUM_WORKERS PRECISION IMAGE...   Prints one JSON line like reference_flow.py."""

import sys
import time

import numpy as np
from common import print_run

from clipdet.pipeline.scoring import iter_scores, load_models


def main() -> None:
    t0 = time.perf_counter()
    checkpoint, weights_dir, models, batch_size, num_workers, precision, *images = sys.argv[1:]
    loaded = load_models(
        models.split(","), weights_dir, backbone_weights=checkpoint, precision=precision
    )
    startup = time.perf_counter() - t0
    results = list(
        iter_scores(loaded, images, batch_size=int(batch_size), num_workers=int(num_workers))
    )
    print_run(
        t0,
        startup,
        [r.scores for r in results],
        logits={
            m.name: np.asarray([r.logits[m.name] for r in results]).tolist()
            for m in loaded
            if m.attribution is not None
        },
        errors=[r.error for r in results if r.error],
    )


if __name__ == "__main__":
    main()
