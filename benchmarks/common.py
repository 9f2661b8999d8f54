"""Helpers shared by the benchmarks: generated test images and a random-weight ViT-L/14."""

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# (width, height, format): a realistic mix, up to a 12-megapixel camera JPEG.
MIXED_SIZES = [
    (512, 512, "JPEG"),
    (1024, 1024, "PNG"),
    (2000, 1500, "JPEG"),
    (4000, 3000, "JPEG"),
] * 4


def make_images(folder: Path, sizes=MIXED_SIZES, seed: int = 0) -> list[Path]:
    """Photo-like images (smooth gradients plus noise) so that JPEG decoding costs what it does
    on real photographs."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i, (w, h, fmt) in enumerate(sizes):
        path = folder / f"img{i:02d}_{w}x{h}.{'jpg' if fmt == 'JPEG' else 'png'}"
        if not path.exists():
            y, x = np.mgrid[0:h, 0:w].astype(np.float32)
            base = 128 + 60 * np.sin(x / (37 + i)) * np.cos(y / (53 + i))
            noise = rng.normal(0, 12, (h, w, 3)).astype(np.float32)
            pixels = np.clip(base[..., None] + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(path, format=fmt, quality=92)
        paths.append(path)
    return paths


def make_vit_l14_checkpoint(path: Path) -> Path:
    """A full open_clip ViT-L/14 checkpoint (image and text towers, ~1.7 GB) with random
    weights: the same size and layout as commonpool_xl_s13b_b90k's."""
    if not path.exists():
        import open_clip

        torch.manual_seed(0)
        model = open_clip.create_model("ViT-L-14")
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), path)
    return path


def _write_model(folder: Path, name: str, state: dict, **config) -> None:
    """A model folder on the ViT-L/14 backbone: config.yaml and weights.pth."""
    import yaml

    (folder / name).mkdir(parents=True, exist_ok=True)
    config = {
        "arch": "opencliplinearnext_clipL14commonpool",
        "model_name": name,
        "norm_type": "clip",
        "patch_size": "Clip224",
        "weights_file": "weights.pth",
        **config,
    }
    (folder / name / "config.yaml").write_text(yaml.safe_dump(config))
    torch.save({"model": state}, folder / name / "weights.pth")


def make_head(folder: Path, name: str, seed: int, dim: int = 1024) -> None:
    g = torch.Generator().manual_seed(seed)
    state = {"fc.weight": torch.randn(1, dim, generator=g) * 5, "fc.bias": torch.zeros(1)}
    _write_model(folder, name, state)


def make_attribution_head(
    folder: Path, name: str, seed: int, classes, block=None, dim: int = 1024
) -> None:
    """A random attribution model (``block``: CLS features of that transformer block)."""
    g = torch.Generator().manual_seed(seed)
    state = {
        "fc.weight": torch.randn(len(classes), dim, generator=g) * 5,
        "fc.bias": torch.zeros(len(classes)),
    }
    open_set = {"score": "energy", "threshold": 0.0}
    _write_model(
        folder,
        name,
        state,
        task="attribution",
        classes=list(classes),
        block=block,
        open_set=open_set,
    )


def bench_parser(description: str, scoring: bool = False) -> argparse.ArgumentParser:
    """--work (where images, checkpoints and models are kept); with ``scoring`` also
    --batch_size and --num_workers."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--work", type=Path, default=Path("/tmp/clipdet-bench"))
    if scoring:
        p.add_argument("--batch_size", type=int, default=4)
        p.add_argument("--num_workers", type=int, default=min(4, os.cpu_count() or 1))
    return p


def child_rows(script: str, work: Path, images: int, entries, label: str) -> None:
    """Run ``script --one ENTRY PRECISION`` in a fresh process for each entry and precision
    (fp32, bf16) and print its row: load s, s/img, peak RSS (the child's last line, JSON)."""
    import subprocess
    import sys

    print(f"{label:>24} {'prec':>5} {'load s':>7} {'s/img':>7} {'peak RSS MB':>11}")
    for entry in entries:
        for precision in ("fp32", "bf16"):
            child = subprocess.run(
                [sys.executable, script, "--work", str(work), "--images", str(images),
                 "--one", entry, precision],
                capture_output=True, text=True, cwd=REPO,
            )  # fmt: skip
            if child.returncode:
                print(f"{entry:>24} {precision:>5} failed: {child.stderr.strip()[-300:]}")
                continue
            r = json.loads(child.stdout.strip().splitlines()[-1])
            print(f"{entry:>24} {precision:>5} {r['load_s']:>7.1f} {r['s_per_image']:>7.2f} "
                  f"{r['peak_rss_mb']:>11.0f}" + (f" dim {r['dim']}" if "dim" in r else ""),
                  flush=True)  # fmt: skip


def print_run(t0: float, startup: float, llrs, **extra) -> None:
    """One JSON line describing a timed scoring run (read by bench_scoring.run)."""
    total = time.perf_counter() - t0
    record = {"startup_s": startup, "total_s": total, "peak_rss_mb": peak_rss_mb()}
    print(json.dumps(record | {"llrs": np.asarray(llrs).tolist()} | extra))


def cpu_name() -> str:
    """The CPU's model, torch's thread count and the flags that decide bf16 speed."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                  if line.startswith("model name")), "unknown CPU")  # fmt: skip
    flags = [f for f in ("avx512f", "avx512_bf16", "amx_bf16", "avx2") if f" {f} " in info]
    return f"{model}, {torch.get_num_threads()} threads, flags: {', '.join(flags) or 'none'}"


def peak_rss_mb() -> float:
    """This process's peak resident set size: VmHWM where there is /proc (getrusage's
    ru_maxrss keeps the parent's peak across fork and exec, so a benchmark's child process
    would report its parent's memory), else ru_maxrss."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
