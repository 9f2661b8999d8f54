"""Linear probes on the foundation backbones, random weights, at each backbone's native input
size: seconds per image and peak RSS in fp32 and bf16 (each run in its own process, scoring 4
mixed images from 512 px to a 12 MP JPEG after one warm-up image, batch 1, through
`clipdet score`'s code path); then a sweep's extraction cost for 1 layer vs 3 (one pass).

    python benchmarks/bench_probes.py [--work /tmp/clipdet-bench] [--backbones a,b] [--images 4]

The random weights are written once per backbone under --work (up to 3.4 GB for ViT-H+) and
loaded as a user's weights file is: `--backbone LIB:MODEL:FILE`.
"""

import argparse
import json
import time
from pathlib import Path

import torch
from common import MIXED_SIZES, bench_parser, child_rows, cpu_name, make_images, peak_rss_mb

BACKBONES = (
    "pe-core-b16",
    "pe-core-l14-336",
    "siglip2-so400m16-384",
    "metaclip2-h14-worldwide",
    "dinov2-vitl14-reg4",
    "dinov3-vitl16",
    "dinov3-vith16plus",
    "clipL14commonpool",
)


def random_weights(alias: str, folder: Path) -> str:
    """``LIB:MODEL:FILE`` of the backbone with random weights (written once)."""
    from clipdet.models.backbones import build_visual_tower
    from clipdet.models.registry import parse_backbone

    spec = parse_backbone(alias)
    path = folder / f"{alias}.pth"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        if spec.library == "timm":
            import timm

            state = timm.create_model(f"{spec.model}.{spec.pretrained}").state_dict()
        else:
            visual = build_visual_tower(spec)
            if next(visual.parameters()).is_meta:  # a plain ViT: fill it from one noise buffer
                visual = visual.to_empty(device="cpu")
                noise = torch.randn(1_000_003) * 0.02
                with torch.no_grad():
                    for p in visual.parameters():
                        flat = p.view(-1)
                        flat.copy_(noise.repeat(flat.numel() // noise.numel() + 1)[: flat.numel()])
            state = {f"visual.{k}": v for k, v in visual.state_dict().items()}
        torch.save(state, path)
    return f"{spec.library}:{spec.model}:{path}"


def one(backbone: str, precision: str, images: list[str]) -> dict:
    """Score ``images`` with a random probe on ``backbone`` (in this process), as load_models
    and iter_scores run a probe model folder."""
    from clipdet.models.factory import LoadedModel, create_frozen_network
    from clipdet.pipeline.scoring import PRECISIONS, iter_scores

    start = time.perf_counter()
    config = {"arch": "probe", "backbone": backbone, "layer": "embed"}
    detector, preprocessing = create_frozen_network(config)
    torch.nn.init.normal_(detector.fc.weight)
    detector.backbone.to(PRECISIONS[precision])
    model = LoadedModel("p", detector, preprocessing.key, preprocessing.transform, config, Path())
    loaded = time.perf_counter() - start
    options = dict(device="cpu", batch_size=1, num_workers=1, precision=precision)
    list(iter_scores([model], images[:1], **options))  # warm-up
    start = time.perf_counter()
    results = list(iter_scores([model], images, **options))
    seconds = time.perf_counter() - start
    assert not any(r.error for r in results), [r.error for r in results]
    return {"load_s": loaded, "s_per_image": seconds / len(images), "peak_rss_mb": peak_rss_mb(),
            "dim": detector.fc.in_features, "preprocessing": preprocessing.key}  # fmt: skip


def sweep_cost(backbone: str, images: list[str], work: Path) -> dict:
    """Extraction wall time of a sweep with 1 layer and with 3 (fresh feature caches)."""
    import shutil

    import pandas as pd

    from clipdet.training.sweep import sweep

    csv = work / "sweep_list.csv"
    typs = ["real" if i % 2 else "gen" for i in range(len(images))]
    pd.DataFrame({"filename": images, "typ": typs}).to_csv(csv, index=False)
    out = {}
    for layers in (["embed"], ["embed", -2, -4]):
        cache = work / "sweep_cache"
        shutil.rmtree(cache, ignore_errors=True)
        report = sweep(csv, [backbone], layers, folds=2, n_boot=0, device="cpu", batch_size=1,
                       num_workers=1, feature_cache=str(cache))  # fmt: skip
        assert not report.table["error"].astype(bool).any(), report.table["error"]
        out[len(layers)] = len(images) / float(report.table["images_per_s"].iloc[0])
    return out


def main() -> None:
    p = bench_parser(__doc__)
    p.add_argument("--backbones", default=",".join(BACKBONES))
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--one", nargs=2, metavar=("BACKBONE", "PRECISION"), help=argparse.SUPPRESS)
    args = p.parse_args()
    every = [str(i) for i in make_images(args.work / "images", MIXED_SIZES)]
    images = every[: args.images]
    if args.one:
        print(json.dumps(one(args.one[0], args.one[1], images)))
        return
    print(f"machine: {cpu_name()}")
    print(f"{len(images)} images (512 px to 12 MP), batch 1, random weights, through `clipdet "
          "score`'s code path; each row in a fresh process")  # fmt: skip
    aliases = args.backbones.split(",")
    backbones = [random_weights(alias, args.work / "backbones") for alias in aliases]
    child_rows(__file__, args.work, args.images, backbones, "backbone")
    alias = args.backbones.split(",")[0]
    cost = sweep_cost(random_weights(alias, args.work / "backbones"), every[:8], args.work)
    print(
        f"sweep extraction on {alias}, 8 images: 1 layer {cost[1]:.1f} s, "
        f"3 layers {cost[3]:.1f} s ({cost[3] / cost[1]:.2f}x)"
    )


if __name__ == "__main__":
    main()
