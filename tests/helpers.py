"""Helpers the tests share: the tiny random-weight backbones' names and configs, detector
folders in the reference layout, generated images and lists, the command lines of in-process
runs, and spies on the pipeline. Fixtures are in conftest.py."""

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from PIL import Image, ImageFilter

TINY_MODEL = "clipdet-test-tiny-vit"
TINY_BACKBONE = "tinyvit"
TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "patch_size": 32, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 100, "width": 32, "heads": 2, "layers": 1},
}
TINY_WIDTH = TINY_CONFIG["vision_cfg"]["width"]


TIMM_MODEL = "test_vit"  # timm's own test ViT: 160 px, 6 blocks, 64-d, a class token


def write_model_folder(weights_dir: Path, name: str, config: dict, state: dict) -> Path:
    folder = weights_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    torch.save({"model": state}, folder / config.get("weights_file", "weights.pth"))
    return folder


def clip_head_state(seed: int, dim: int = TINY_WIDTH, prefix: str = "") -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        f"{prefix}fc.weight": torch.randn(1, dim, generator=g) * 3,
        f"{prefix}fc.bias": torch.randn(1, generator=g),
    }


def clip_config(name: str, next_to_last: bool = True) -> dict:
    arch = "opencliplinearnext_" if next_to_last else "opencliplinear_"
    return {
        "arch": arch + TINY_BACKBONE,
        "model_name": name,
        "norm_type": "clip",
        "patch_size": "Clip224",
        "weights_file": "weights.pth",
    }


def resnet_state(seed: int) -> dict:
    torch.manual_seed(seed)
    from torchvision.models import resnet50

    model = resnet50(num_classes=1)
    for m in model.modules():  # non-trivial BatchNorm statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model.state_dict()


def make_image(path: Path, size=(48, 40), seed: int = 0, mode: str = "RGB", **save_kwargs) -> Path:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    if mode != "RGB":
        image = image.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **save_kwargs)
    return path


REPO = Path(__file__).resolve().parent.parent


def tiny_backbone_code(checkpoint: Path) -> str:
    """Python source that registers the tiny backbone in a fresh interpreter (it exists only
    once registered): open_clip's config beside ``checkpoint``, then clipdet's alias."""
    config_json = checkpoint.parent / f"{TINY_MODEL}.json"
    return (
        "import open_clip; from clipdet.models.registry import register_backbone; "
        f"open_clip.add_model_config({str(config_json)!r}); "
        f"register_backbone({TINY_BACKBONE!r}, {TINY_MODEL!r})"
    )


def main_command(checkpoint: Path, *args: str) -> list[str]:
    """argv running main.py as a script in a fresh interpreter, with the tiny backbone
    registered first."""
    import sys

    launcher = (
        f"import runpy, sys; {tiny_backbone_code(checkpoint)}; "
        "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    return [
        sys.executable,
        "-c",
        launcher,
        str(REPO / "main.py"),
        *args,
        "--backbone_weights",
        str(checkpoint),
        "--device",
        "cpu",
    ]


@contextmanager
def ctrl_c_after(monkeypatch, module, rows: int):
    """Within the block, ``module.iter_scores`` (as a run calls it) stops with Ctrl-C once it
    has yielded ``rows`` results; the real one is back after the block."""
    real = module.iter_scores

    def stopping(*args, **kwargs):
        for count, result in enumerate(real(*args, **kwargs)):
            if count == rows:
                raise KeyboardInterrupt
            yield result

    monkeypatch.setattr(module, "iter_scores", stopping)
    try:
        yield
    finally:
        monkeypatch.setattr(module, "iter_scores", real)


def local_run_args(checkpoint: Path, weights_dir: Path | None = None, models: str | None = None):
    """Flags every in-process CLI run shares: the tiny backbone's checkpoint, CPU, no worker
    processes, quiet; plus the weights folder and models when given."""
    args = [] if weights_dir is None else ["-w", str(weights_dir)]
    args += [] if models is None else ["-m", models]
    return [*args, "--backbone_weights", str(checkpoint), "-d", "cpu", "--num_workers", "0", "-q"]


def train_args(csv: Path, weights_dir: Path, name: str, checkpoint: Path, arch: str) -> list[str]:
    """train.py flags for a head on the tiny backbone."""
    return ["-i", str(csv), "-n", name, "--arch", arch, *local_run_args(checkpoint, weights_dir)]


def count_forward_passes(monkeypatch) -> list[int]:
    """Images through a ViT's patch embedding (its only Conv2d), one entry per backbone pass.
    Counted below the module boundary so that every kind of pass is seen: plain forward,
    block-feature passes (forward_layers) and passes stopped early."""
    calls = []
    original = torch.nn.Module.__call__

    def spy(self, *args, **kwargs):
        if isinstance(self, torch.nn.Conv2d):
            calls.append(args[0].shape[0])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "__call__", spy)
    return calls


WORKER_ENV = {"HF_HUB_OFFLINE": "1", "CLIPDET_WEIGHTS_BASE_URL": "http://127.0.0.1:9"}


def make_pair_image(path, kind: str, seed: int):
    """Real: smooth, warm, low noise. Synthetic: cooler and with strong high-frequency noise."""
    rng = np.random.default_rng(seed)
    h, w = rng.integers(60, 120, 2)
    y, x = np.mgrid[0:h, 0:w] / 100.0
    base = np.stack([0.6 + 0.2 * np.sin(3 * x + seed), 0.4 + 0.2 * y, 0.3 + 0 * x], -1)
    if kind == "real":
        pixels = base + rng.normal(0, 0.01, base.shape)
    else:
        pixels = base[..., ::-1] + rng.normal(0, 0.15, base.shape)
    return save_picture(path, pixels, blur=kind == "real")


def save_picture(path: Path, pixels: np.ndarray, blur: bool = False) -> Path:
    """RGB pixels in [0, 1] saved as an 8-bit picture, blurred by a 1-px Gaussian if asked."""
    image = Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8))
    if blur:
        image = image.filter(ImageFilter.GaussianBlur(1))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def make_list(folder, name, n_per_class, seed0, extra_rows=()):
    rows = []
    for i in range(n_per_class):
        for kind in ("real", "fake"):
            rel = f"{name}/{kind}_{i}.png"
            make_pair_image(folder / rel, kind, seed0 + 2 * i + (kind == "fake"))
            rows.append((rel, "real" if kind == "real" else "gen_x"))
    rows.extend(extra_rows)
    csv = folder / f"{name}.csv"
    pd.DataFrame(rows, columns=["filename", "typ"]).to_csv(csv, index=False)
    return csv


# Debian's chromium, driven by Playwright (the report's browser tests; make test installs it)
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@contextmanager
def ram_folder(fallback: Path):
    """A temporary folder in RAM (/dev/shm) where the machine has one, else ``fallback``: for
    a file of a GB, which this machine's disk takes 9 s to write (/dev/shm: 1.2 s)."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield fallback
        return
    with tempfile.TemporaryDirectory(dir=shm) as folder:
        yield Path(folder)


def make_scene(path, seed: int, size=(320, 240), moved: int = 0, pan: int = 0,
               noise_seed: int | None = None):  # fmt: skip
    """A photo-like picture: a smooth coloured ground and five filled shapes, mild noise;
    distinct seeds give distinct pictures; ``moved`` draws the last shape that many pixels
    to the right (the same scene with one object moved: an edit); ``pan`` moves the camera
    that many pixels to the right and ``noise_seed`` draws other sensor noise (another shot
    of the same scene, as in a burst)."""
    from PIL import ImageDraw

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : size[1], 0 : size[0]] / 100.0
    x = x + pan / 100.0
    c = rng.uniform(0.2, 0.8, 3)
    base = np.stack([c[0] + 0.2 * np.sin(x * rng.uniform(1, 3)), c[1] + 0.2 * y,
                     c[2] + 0.1 * np.cos(2 * y)], -1)  # fmt: skip
    image = Image.fromarray((np.clip(base, 0, 1) * 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for shape_index in range(5):
        x0, y0 = rng.integers(0, size[0] - 60), rng.integers(0, size[1] - 60)
        x0 += (moved if shape_index == 4 else 0) - pan
        w, h = rng.integers(20, 100, 2)
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([x0, y0, x0 + w, y0 + h], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    noise_rng = rng if noise_seed is None else np.random.default_rng(noise_seed)
    noise = noise_rng.normal(0, 4, (size[1], size[0], 3))
    pixels = np.clip(np.asarray(image, float) + noise, 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path
