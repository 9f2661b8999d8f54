"""Full-resolution ResNet-50 (Corvi2023's architecture, random weights) on a 4000x3000 image:
time and peak RSS with tiled inference, and tiled-vs-untiled agreement on a size that fits.

    python benchmarks/bench_tiling.py [--tile 512]
"""

import argparse
import time

import torch
from common import peak_rss_mb
from torchvision.models import resnet50

from networks import ResNetNoDownFeatures


def random_trunk(tile: int) -> ResNetNoDownFeatures:
    torch.manual_seed(0)
    state = {k: v for k, v in resnet50().state_dict().items() if not k.startswith("fc.")}
    trunk = ResNetNoDownFeatures(tile_size=tile)
    trunk.load_state_dict(state, assign=True)
    return trunk.eval()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--tile", type=int, default=512)
    p.add_argument("--size", default="4000x3000")
    args = p.parse_args()
    trunk = random_trunk(args.tile)
    with torch.inference_mode():
        x = torch.randn(1, 3, 700, 900)
        tiled = trunk(x)
        trunk.tile_size = 0
        whole = trunk(x)
        trunk.tile_size = args.tile
        print(
            f"700x900: max |tiled - untiled| = {(tiled - whole).abs().max():.2e} "
            f"(features' mean |value| {whole.abs().mean():.2f})"
        )
        w, h = map(int, args.size.split("x"))
        start = time.perf_counter()
        trunk(torch.randn(1, 3, h, w))
        print(
            f"{w}x{h}, tile {args.tile} (+{trunk.margin} px margin): "
            f"{time.perf_counter() - start:.1f} s, peak RSS {peak_rss_mb():.0f} MB"
        )


if __name__ == "__main__":
    main()
