"""Decoding throughput of one CPU core (decode + Clip224 preprocessing), per image kind, exact
and with --decode fast (JPEGs at a reduced DCT scale, shorter side >= 448 px): the limit of a
GPU run, since a GPU computes ViT-L/14 features far faster than a core decodes. Then the cost
of fast decoding in accuracy, on a random-weight ViT-L/14 and a random head: cosine similarity
of the features and |dLLR| against the exact path.

    python benchmarks/bench_decode.py [--repeat 5] [--no-accuracy]
"""

import time

import numpy as np
import torch
from common import bench_parser, make_head, make_images, make_vit_l14_checkpoint
from torchvision.io import ImageReadMode, decode_jpeg

from clipdet.models.preprocess import make_transform
from clipdet.pipeline.gpu_decode import clip224
from clipdet.pipeline.images import load_rgb
from clipdet.pipeline.scoring import FAST_DECODE_SIDE

KINDS = [(512, 512, "JPEG"), (1024, 1024, "PNG"), (2000, 1500, "JPEG"), (4000, 3000, "JPEG")]


def per_image(function, repeat: int) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        function()
    return (time.perf_counter() - start) / repeat


def speed(args, transform) -> None:
    print(
        f"{'image':>16} {'decode':>6} {'decode ms':>9} {'+ Clip224 ms':>12} {'images/s/core':>13}"
    )
    for w, h, fmt in KINDS:
        (path,) = make_images(args.work / "decode", [(w, h, fmt)])
        rates = {}
        for mode, side in (("exact", None), ("fast", FAST_DECODE_SIDE)):

            def read(path=path, side=side):
                return load_rgb(path, min_side=side)

            decode = per_image(read, args.repeat)
            total = per_image(lambda read=read: transform(read()), args.repeat)
            rates[mode] = 1 / total
            print(f"{f'{w}x{h} {fmt}':>16} {mode:>6} {decode * 1e3:>9.0f} {total * 1e3:>12.0f} "
                  f"{1 / total:>13.1f}")  # fmt: skip
        if fmt == "JPEG":  # --decode gpu's path, here on the CPU: torchvision decode + tensors
            data = path.read_bytes()

            def on_device(data=data):
                encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)
                return clip224(decode_jpeg(encoded, mode=ImageReadMode.RGB), "clip")

            total = per_image(on_device, args.repeat)
            rates["gpu"] = 1 / total
            print(f"{f'{w}x{h} {fmt}':>16} {'gpu*':>6} {'':>9} {total * 1e3:>12.0f} "
                  f"{1 / total:>13.1f}")  # fmt: skip
        print(f"{'':>16} fast / exact: {rates['fast'] / rates['exact']:.1f}x")


def accuracy(args, transform) -> None:
    from clipdet.pipeline.scoring import load_models

    checkpoint = make_vit_l14_checkpoint(args.work / "vit_l14_random.bin")
    weights = args.work / "weights"
    make_head(weights, "head_a", 1)
    (model,) = load_models(["head_a"], weights, device="cpu", backbone_weights=checkpoint)
    sizes = [(2000, 1500, "JPEG"), (4000, 3000, "JPEG"), (1200, 900, "JPEG")] * 2
    paths = make_images(args.work / "decode_accuracy", sizes, seed=7)
    cosines, deltas = [], []
    with torch.inference_mode():
        for path in paths:
            x = torch.stack(
                [transform(load_rgb(path, min_side=s)) for s in (None, FAST_DECODE_SIDE)]
            )
            features = model.detector.backbone(x)
            llrs = model.detector.forward_head(features)
            cosines.append(
                torch.nn.functional.cosine_similarity(features[0], features[1], 0).item()
            )
            deltas.append(abs(llrs[0] - llrs[1]).item())
    print(
        f"\naccuracy of --decode fast on {len(paths)} JPEGs (1200x900 to 4000x3000), random "
        f"ViT-L/14 + random head: feature cosine min {min(cosines):.5f} / mean "
        f"{np.mean(cosines):.5f}; |dLLR| max {max(deltas):.3f} / mean {np.mean(deltas):.3f}"
    )


def main() -> None:
    p = bench_parser(__doc__)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--no-accuracy", dest="accuracy", action="store_false")
    args = p.parse_args()
    torch.set_num_threads(1)
    transform = make_transform("Clip224", "clip")
    speed(args, transform)
    print("gpu*: --decode gpu's code (decode_jpeg + tensor Clip224) run on this CPU, one thread")
    if args.accuracy:
        torch.set_num_threads(2)
        accuracy(args, transform)


if __name__ == "__main__":
    main()
