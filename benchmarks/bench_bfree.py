"""B-Free in clipdet's batched pipeline: images/s at batch 1 (the reference's way) and batched,
peak memory on a 12 MP JPEG, and, given a clone of B-Free's code, the LLRs of its own
Wrapper5crops on the same random weights.

    python benchmarks/bench_bfree.py [--images 8] [--bfree_code /path/to/B-Free/code]
        [--device cuda:0]

The model is B-Free's architecture at its real size (timm vit_base_patch14_reg4_dinov2, 504-px
grids) with random weights; each run is a fresh process (model loading included). Figures are
printed with the CPU they were measured on.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from common import MIXED_SIZES, REPO, bench_parser, cpu_name, make_images, peak_rss_mb

NAME = "bfree_random"
TIMM_MODEL = "vit_base_patch14_reg4_dinov2"
SIZE = 504


def make_model(work: Path) -> Path:
    """weights/<NAME>/ with B-Free's config keys and a {'model': timm state} file."""
    import timm
    import yaml

    folder = work / "weights" / NAME
    if not (folder / "model_epoch_best.pth").exists():
        torch.manual_seed(0)
        vit = timm.create_model(TIMM_MODEL, pretrained=False, num_classes=1)
        vit.set_input_size(img_size=SIZE)
        state = vit.state_dict()
        for key, value in state.items():  # DINOv2's 1e-5 layer scale makes every image alike
            if key.endswith(".gamma"):
                state[key] = torch.ones_like(value) * 0.1
        folder.mkdir(parents=True, exist_ok=True)
        torch.save({"model": state}, folder / "model_epoch_best.pth")
        config = {"arch": f"timm_c5i{SIZE}_{TIMM_MODEL}", "model_name": NAME,
                  "norm_type": "resnet", "weights_file": "model_epoch_best.pth"}  # fmt: skip
        (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return folder.parent


def child(args) -> None:
    """One timed scoring run; prints a JSON line."""
    from clipdet.api import score_images

    paths = [line for line in Path(args.list).read_text().splitlines() if line]
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    table = score_images(paths, [NAME], args.weights, fusion=None, device=args.device,
                         batch_size=args.batch_size, num_workers=args.num_workers,
                         precision=args.precision)  # fmt: skip
    seconds = time.perf_counter() - started
    errors = [e for e in table["error"] if e]
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_rss_mb(), "errors": errors,
                      "llrs": table[NAME].tolist()}))  # fmt: skip


def reference(args) -> None:
    """B-Free's own network code (``networks.get_network`` / ``load_weights`` of its repository)
    on the same weights and images, one image at a time as its main_bfree.py runs it."""
    from PIL import Image
    from torchvision import transforms as T

    sys.path.insert(0, args.bfree_code)
    from networks import get_network, load_weights  # B-Free's, not clipdet's

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    weights = str(Path(args.weights) / NAME / "model_epoch_best.pth")
    model = load_weights(get_network(f"timm_c5i{SIZE}_{TIMM_MODEL}"), weights).eval()
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    transform = T.Compose([T.ToTensor(), T.Normalize(mean, std)])
    llrs = []
    with torch.no_grad():
        for path in Path(args.list).read_text().splitlines():
            image = transform(Image.open(path).convert("RGB"))[None]
            llrs.append(float(model(image)[0, 0]))
    seconds = time.perf_counter() - started
    print(json.dumps({"llrs": llrs, "seconds": seconds, "peak_rss_mb": peak_rss_mb()}))


def run(*argv) -> dict:
    out = subprocess.run([sys.executable, __file__, *map(str, argv)], capture_output=True,
                         text=True, check=True, cwd=REPO)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = bench_parser(__doc__)
    p.add_argument("--images", type=int, default=8, help="images from the mixed set")
    p.add_argument("--bfree_code", default=None, help="B-Free's code/ folder (a clone)")
    p.add_argument("--device", default="cpu", help="torch device of clipdet's runs")
    p.add_argument("--child", action="store_true", help=argparse_hidden())
    p.add_argument("--reference", action="store_true", help=argparse_hidden())
    p.add_argument("--list", default=None, help=argparse_hidden())
    p.add_argument("--weights", default=None, help=argparse_hidden())
    p.add_argument("--batch_size", type=int, default=1, help=argparse_hidden())
    p.add_argument("--num_workers", type=int, default=2, help=argparse_hidden())
    p.add_argument("--threads", type=int, default=2, help=argparse_hidden())
    p.add_argument("--precision", default="fp32", help=argparse_hidden())
    args = p.parse_args()
    if args.child:
        return child(args)
    if args.reference:
        return reference(args)

    weights = make_model(args.work)
    sizes = (MIXED_SIZES * 4)[: args.images]
    paths = make_images(args.work / "images", sizes)
    paths += make_images(args.work / "images_small", [(300, 420, "JPEG")])  # under 504: tiled
    listed = args.work / "bfree_list.txt"
    listed.write_text("\n".join(map(str, paths)))
    print(f"# {len(paths)} images ({', '.join(f'{w}x{h}' for w, h, _ in sizes)}, 300x420); "
          f"{cpu_name()}")  # fmt: skip
    common = ["--child", "--list", listed, "--weights", weights, "--device", args.device]
    rows, base = [], None
    runs = ((1, "fp32"), (4, "fp32"), (8, "fp32"), (1, "bf16"), (4, "bf16"))
    for batch, precision in runs:
        result = run(*common, "--batch_size", batch, "--num_workers", 2, "--precision", precision)
        llrs = np.array(result["llrs"])
        base = llrs if base is None else base
        rows.append((precision, batch, result["seconds"], len(paths) / result["seconds"],
                     result["peak_rss_mb"], float(np.max(np.abs(llrs - base)))))  # fmt: skip
    print("| precision | batch | seconds | images/s | vs fp32 batch 1 | peak RSS MB | "
          "max |dLLR| vs fp32 batch 1 |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|")
    for precision, batch, seconds, rate, rss, delta in rows:
        print(f"| {precision} | {batch} | {seconds:.1f} | {rate:.3f} | {rate / rows[0][3]:.2f}x "
              f"| {rss:.0f} | {delta:.1e} |")  # fmt: skip

    for w, h in ((512, 512), (4000, 3000)):  # memory: does the image's size matter?
        one = args.work / f"bfree_one_{w}x{h}.txt"
        one.write_text(str(make_images(args.work / "images", [(w, h, "JPEG")])[0]))
        result = run(
            "--child",
            "--list",
            one,
            "--weights",
            weights,
            "--num_workers",
            0,
            "--device",
            args.device,
        )
        line = (f"one {w}x{h} JPEG, batch 1, no workers: clipdet {result['seconds']:.1f} s, "
                f"peak RSS {result['peak_rss_mb']:.0f} MB")  # fmt: skip
        if args.bfree_code:
            ref = run("--reference", "--list", one, "--weights", weights,
                      "--bfree_code", args.bfree_code)  # fmt: skip
            line += f"; B-Free's code {ref['seconds']:.1f} s, {ref['peak_rss_mb']:.0f} MB"
        print(line)
    if args.bfree_code:
        ref = run("--reference", "--list", listed, "--weights", weights,
                  "--bfree_code", args.bfree_code)  # fmt: skip
        llrs = np.array(ref["llrs"])
        print(f"B-Free's own code, the same {len(paths)} images and weights: {ref['seconds']:.1f}"
              f" s ({len(paths) / ref['seconds']:.3f} images/s, decoding in line); max |dLLR| vs "
              f"clipdet batch 1 {np.max(np.abs(llrs - base)):.1e} (LLRs {llrs.min():.2f} .. "
              f"{llrs.max():.2f})")  # fmt: skip


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
