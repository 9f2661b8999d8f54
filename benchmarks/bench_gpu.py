"""GPU throughput of the whole scoring path (run it on a GPU host; it stops at once without one):
images/s and peak GPU memory for one head on a random-weight ViT-L/14, in fp32 and bf16, with
and without --compile, decoding exact / fast / gpu, on 512x512 and 4000x3000 JPEGs. Each
configuration runs twice in one process (the first run warms up: CUDA context, cuDNN, compile)
and the second is timed.

    python benchmarks/bench_gpu.py [--work /tmp/clipdet-bench] [--images 256] [--batch_size 32]
"""

import sys
import time

import torch
from common import bench_parser, make_head, make_images, make_vit_l14_checkpoint

from clipdet.options import RunOptions
from clipdet.pipeline.scoring import iter_scores, load_models


def main() -> None:
    p = bench_parser(__doc__, scoring=True)
    p.add_argument("--images", type=int, default=256)
    p.set_defaults(batch_size=32)
    args = p.parse_args()
    if not torch.cuda.is_available():
        sys.exit("no CUDA device: this benchmark measures the GPU path")
    checkpoint = make_vit_l14_checkpoint(args.work / "vit_l14_random.bin")
    weights = args.work / "weights"
    make_head(weights, "head_a", 1)
    kinds = {
        "512x512 JPEG": make_images(args.work / "gpu_512", [(512, 512, "JPEG")] * 16),
        "4000x3000 JPEG": make_images(args.work / "gpu_12mp", [(4000, 3000, "JPEG")] * 16),
    }
    print(f"device: {torch.cuda.get_device_name(0)}; {args.images} images per run, batch "
          f"{args.batch_size}, {args.num_workers} decoding workers")  # fmt: skip
    print(f"{'images':>15} {'precision':>9} {'compile':>7} {'decode':>6} {'images/s':>9} "
          f"{'peak GPU MiB':>12}")  # fmt: skip
    for kind, files in kinds.items():
        paths = [str(files[i % len(files)]) for i in range(args.images)]
        for precision in ("fp32", "bf16"):
            for compile_ in (False, True):
                for decode in ("exact", "fast", "gpu"):
                    options = RunOptions(
                        device="cuda:0", precision=precision, compile=compile_, decode=decode,
                        batch_size=args.batch_size, num_workers=args.num_workers,
                        backbone_weights=checkpoint,
                    ).resolved()  # fmt: skip
                    models = load_models(["head_a"], weights, options)
                    for _warm_up_then_timed in range(2):
                        torch.cuda.reset_peak_memory_stats()
                        start = time.perf_counter()
                        count = sum(1 for _ in iter_scores(models, paths, options))
                        torch.cuda.synchronize()
                        seconds = time.perf_counter() - start
                    peak = torch.cuda.max_memory_allocated() / 2**20
                    print(f"{kind:>15} {precision:>9} {str(compile_):>7} {decode:>6} "
                          f"{count / seconds:>9.1f} {peak:>12.0f}")  # fmt: skip
                    del models
                    torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
