"""The zoo's clip-cues, RINE and Community Forensics detectors at full size, random weights:
seconds per image and peak RSS in fp32 and bf16 (each run in its own process, 4 mixed images
from 512 px to a 12 MP JPEG after one warm-up image, batch 1, through `clipdet score`'s code
path), with the registry's own configs (preprocessing, arch).

    python benchmarks/bench_peers.py [--work /tmp/clipdet-bench] [--models a,b] [--images 4]

The random CLIP towers (ViT-L/14 and ViT-L/14 at 336 px, about 1.2 GB each) and heads are
written once under --work and given as a user's files are (`--backbone_weights`, a model
folder).
"""

import argparse
import json
import time
from pathlib import Path

import torch
import yaml
from common import MIXED_SIZES, bench_parser, child_rows, cpu_name, make_images, peak_rss_mb

MODELS = ("clipcues_synthclic", "clipcues_concepts", "RINE", "CommFor384", "RINE+UnivFD")
TOWERS = {"clipL14openai": "ViT-L-14", "clipL14_336openai": "ViT-L-14-336"}


def random_tower(alias: str, folder: Path) -> Path:
    from clipdet.models.backbones import build_visual_tower
    from clipdet.models.registry import parse_backbone

    path = folder / f"{alias}.pth"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        visual = build_visual_tower(parse_backbone(alias)).to_empty(device="cpu")
        torch.manual_seed(0)
        with torch.no_grad():
            for p in visual.parameters():
                p.normal_(0, 0.02)
        torch.save({f"visual.{k}": v for k, v in visual.state_dict().items()}, path)
    return path


def random_model(name: str, weights: Path) -> None:
    """``weights/<name>`` with the registry's config and a random head of the real shapes."""
    from clipdet.models.registry import known_detectors

    known = known_detectors()[name]
    folder = weights / name
    if (folder / known.config["weights_file"]).exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(known.config))
    g = torch.Generator().manual_seed(0)
    path = folder / known.config["weights_file"]
    if name.startswith("clipcues_synth"):
        torch.save(
            {
                "state_dict": {
                    "model.classification_head.fc.weight": torch.randn(1, 1024),
                    "model.classification_head.fc.bias": torch.zeros(1),
                }
            },
            path,
        )
    elif name == "clipcues_concepts":
        n = 168
        state = {"text_embeddings": torch.nn.functional.normalize(torch.randn(n, 768), dim=1),
                 "W_concepts.weight": torch.randn(n, 768) * 0.05, "W_concepts.bias":
                 torch.zeros(n), "W_classifier.weight": torch.randn(1, n), "W_classifier.bias":
                 torch.zeros(1)}  # fmt: skip
        torch.save({"state_dict": {f"model.{k}": v for k, v in state.items()}}, path)
        names = ["attribute_name"] + [f"concept{i}" for i in range(n)]
        (folder / "antonyms.csv").write_text("\n".join(names) + "\n")
    elif name == "RINE":
        from networks import RineHead

        torch.save(RineHead(24, 1024, 128, 4).state_dict(), path)
    elif name == "UnivFD":
        torch.save({"weight": torch.randn(1, 768, generator=g), "bias": torch.zeros(1)}, path)
    elif name == "CommFor384":
        import timm
        from safetensors.torch import save_file

        vit = timm.create_model("vit_small_patch16_384", pretrained=False, num_classes=1)
        save_file({f"vit.{k}": v.contiguous() for k, v in vit.state_dict().items()}, path)


def one(models: list[str], precision: str, images: list[str], work: Path) -> dict:
    from clipdet.pipeline.scoring import iter_scores, load_models

    tower = {"clipcues": "clipL14_336openai", "RINE": "clipL14openai", "UnivFD": "clipL14openai"}
    alias = next((t for prefix, t in tower.items() if models[0].startswith(prefix)), None)
    options = dict(device="cpu", batch_size=1, num_workers=1, precision=precision)
    start = time.perf_counter()
    loaded = load_models(
        models,
        work / "weights",
        **options,
        backbone_weights=random_tower(alias, work / "towers") if alias else None,
    )
    load_s = time.perf_counter() - start
    list(iter_scores(loaded, images[:1], **options))  # warm-up
    start = time.perf_counter()
    results = list(iter_scores(loaded, images, **options))
    seconds = time.perf_counter() - start
    if any(r.error for r in results):
        raise RuntimeError([r.error for r in results])
    return {"load_s": load_s, "s_per_image": seconds / len(images), "peak_rss_mb": peak_rss_mb()}


def main() -> None:
    p = bench_parser(__doc__)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--one", nargs=2, metavar=("MODELS", "PRECISION"), help=argparse.SUPPRESS)
    args = p.parse_args()
    images = [str(i) for i in make_images(args.work / "images", MIXED_SIZES[: args.images])]
    if args.one:
        print(json.dumps(one(args.one[0].split("+"), args.one[1], images, args.work)))
        return
    print(f"machine: {cpu_name()}")
    print(f"{len(images)} images (512 px to 12 MP), batch 1, random weights, the registry's "
          "configs, through `clipdet score`'s code path; each row in a fresh process")  # fmt: skip
    for entry in args.models.split(","):
        for name in entry.split("+"):
            random_model(name, args.work / "weights")
    child_rows(__file__, args.work, args.images, args.models.split(","), "models")


if __name__ == "__main__":
    main()
