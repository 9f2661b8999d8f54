"""Precision modes and tiled full-resolution inference."""

import math

import numpy as np
import pytest
import torch
from helpers import make_image
from torchvision.models import resnet50

from clipdet.api import score_images
from clipdet.pipeline.scoring import resolve_precision
from networks import ResNetNoDownFeatures
from networks.resnet_nodown import receptive_field


def test_precision_names(monkeypatch):
    from clipdet.pipeline import scoring

    assert resolve_precision("bf16", "cpu") == torch.bfloat16
    assert resolve_precision("fp16", "cuda:0") == torch.float16
    assert resolve_precision("auto", "cuda:0") == torch.bfloat16
    monkeypatch.setattr(scoring, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision("auto", "cpu") == torch.bfloat16
    monkeypatch.setattr(scoring, "cpu_has_native_bf16", lambda: False)
    assert resolve_precision("auto", "cpu") == torch.float32
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        resolve_precision("fp8", "cpu")


def test_bf16_weights_give_close_llrs(tmp_path, weights_dir, tiny_clip_checkpoint):
    paths = [make_image(tmp_path / f"{i}.png", size=(90, 70), seed=i) for i in range(4)]
    common = dict(
        models=["tiny_a", "tiny_b"],
        weights_dir=weights_dir,
        device="cpu",
        num_workers=0,
        backbone_weights=tiny_clip_checkpoint,
    )
    fp32 = score_images(paths, **common)
    bf16 = score_images(paths, precision="bf16", **common)
    assert bf16["error"].eq("").all()
    deviation = np.abs(
        fp32[["tiny_a", "tiny_b"]].to_numpy() - bf16[["tiny_a", "tiny_b"]].to_numpy()
    )
    assert 0 < deviation.max() < 0.25  # bf16 has ~3 significant digits


def _trunk(tile):
    torch.manual_seed(0)
    state = {k: v for k, v in resnet50().state_dict().items() if not k.startswith("fc.")}
    trunk = ResNetNoDownFeatures(tile_size=tile)
    trunk.load_state_dict(state, assign=True)
    return trunk.eval()


def test_receptive_field_and_margin():
    trunk = _trunk(64)
    assert receptive_field(trunk) == (113, 8)
    assert trunk.margin % 8 == 0 and trunk.margin >= 113 // 2


@pytest.mark.parametrize(  # 2x2, 2x3, 3x2 tiles; the last two only in the full suite
    "size", [(100, 90), pytest.param((75, 140), marks=pytest.mark.slow),
             pytest.param((130, 67), marks=pytest.mark.slow)],
)  # fmt: skip
def test_tiled_features_equal_untiled(size):
    """The tile assembly (margins, ragged last tiles, core crops) called directly on small
    images; when forward() tiles is test_small_images_are_not_tiled's and the end-to-end
    Corvi2023 test's concern."""
    trunk = _trunk(64)
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        tiled = trunk._tiled(x, 64)
        trunk.tile_size = 0
        whole = trunk(x)
    torch.testing.assert_close(tiled, whole, atol=1e-3, rtol=1e-5)


def test_small_images_are_not_tiled(monkeypatch):
    trunk = _trunk(512)
    calls = []
    monkeypatch.setattr(trunk, "_tiled", lambda *a: calls.append(a))
    with torch.no_grad():
        trunk(torch.randn(1, 3, 100, 120))
    assert calls == []


def test_tile_size_flag_reaches_full_resolution_models(tmp_path, weights_dir):
    from clipdet.pipeline.scoring import load_models

    (model,) = load_models(["res_tiny"], weights_dir, tile_size=128)
    assert model.detector.backbone.tile_size == 128


@pytest.mark.slow
def test_full_resolution_model_tiles_at_the_default_size_end_to_end(
    tmp_path, weights_dir, monkeypatch
):
    """A Corvi2023-style model (res50nodown) on an image just over the default tiling bound
    ((512 + 2 * 64)^2 pixels) is tiled at the default size end to end (2x2 tiles), and its
    LLR is the tile assembly's (which equals the untiled features:
    test_tiled_features_equal_untiled). The trunk inside the tiles is swapped for one with
    its strides and width (3x3 stride-2 convolutions: the same output sizes) but not
    ResNet-50's cost: 4 tiles of 640^2 px took 16 s."""
    from clipdet.pipeline.scoring import load_models
    from networks.resnet_nodown import ResNetNoDownFeatures

    path = make_image(tmp_path / "big.png", size=(660, 630), seed=3)
    tiles = []
    original = ResNetNoDownFeatures._tiled

    cheap = {}

    def trunk(self, x):
        if self not in cheap:
            stages = [torch.nn.Conv2d(3, 8, 3, padding=1)]
            stages += [torch.nn.Conv2d(8, 8, 3, stride=2, padding=1)
                       for _ in range(int(math.log2(self.stride)))]  # fmt: skip
            cheap[self] = torch.nn.Sequential(*stages, torch.nn.Conv2d(8, self.num_features, 1))
        return cheap[self](x)

    def tiled(self, x, t):
        tiles.append(t)
        return original(self, x, t)

    monkeypatch.setattr(ResNetNoDownFeatures, "trunk", trunk)
    monkeypatch.setattr(ResNetNoDownFeatures, "_tiled", tiled)
    (model,) = load_models(["res_tiny"], weights_dir)
    assert model.detector.backbone.tile_size == 512  # the default
    tiled = score_images([path], models=["res_tiny"], weights_dir=weights_dir, device="cpu",
                         num_workers=0)  # fmt: skip
    assert tiles == [512]
    assert tiled["error"][0] == "" and np.isfinite(tiled["res_tiny"][0])


def test_fast_decoding_is_close_to_exact_and_only_for_224_px_models(
    tmp_path, weights_dir, tiny_clip_checkpoint, caplog
):
    from clipdet.api import score_images

    photos = [
        make_image(tmp_path / f"p{i}.jpg", size=(1600 + 64 * i, 1200), seed=i, format="JPEG")
        for i in range(3)
    ]
    common = dict(device="cpu", num_workers=0, backbone_weights=tiny_clip_checkpoint)
    exact = score_images(photos, ["tiny_a", "tiny_b"], weights_dir, **common)
    fast = score_images(photos, ["tiny_a", "tiny_b"], weights_dir, decode="fast", **common)
    llrs = ["tiny_a", "tiny_b"]
    difference = np.abs(fast[llrs].to_numpy() - exact[llrs].to_numpy())
    assert 0 < difference.max() < 0.25  # not bit-identical, but close (random noise images)
    from clipdet.options import RunOptions
    from clipdet.pipeline.scoring import load_models, scoring_stages

    options = RunOptions(decode="fast", **common).resolved()
    clip_only = load_models(llrs, weights_dir, options)
    assert scoring_stages(clip_only, options)[0].min_side == 448
    mixed = load_models(["tiny_a", "res_tiny"], weights_dir, options)
    assert scoring_stages(mixed, options)[0].min_side is None  # a ResNet needs every pixel
    assert "--decode fast applies when every model reads a 224-px input" in caplog.text


def test_decode_on_the_device_matches_the_pil_path_closely(
    tmp_path, weights_dir, tiny_clip_checkpoint, monkeypatch
):
    """--decode gpu on the CPU: torchvision's decode_jpeg and tensor resizing instead of PIL's.
    JPEG rows come close to the PIL path (other IDCT and resampling code), PNG rows take the
    PIL path and are identical, a damaged JPEG and an oversized header are row errors."""
    from PIL import Image

    photos = [make_image(tmp_path / f"p{i}.jpg", size=(640 + 32 * i, 480), seed=i,
                         format="JPEG", quality=90) for i in range(3)]  # fmt: skip
    png = make_image(tmp_path / "flat.png", size=(300, 200), seed=5)
    cmyk = tmp_path / "cmyk.jpg"
    Image.open(photos[0]).convert("CMYK").save(cmyk)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(photos[1].read_bytes()[:600])
    paths = [*photos, png, cmyk, broken]
    common = dict(device="cpu", num_workers=0, backbone_weights=tiny_clip_checkpoint, fusion=None)
    llrs = ["tiny_a", "tiny_b"]
    exact = score_images(paths, llrs, weights_dir, **common)
    device = score_images(paths, llrs, weights_dir, decode="gpu", **common)
    jpeg_difference = np.abs(device.loc[:2, llrs].to_numpy() - exact.loc[:2, llrs].to_numpy())
    assert 0 < jpeg_difference.max() < 0.02  # measured: 0.0012 (LLRs of 1 to 7 here)
    assert device.loc[3:4, llrs].equals(exact.loc[3:4, llrs])  # PNG and CMYK: the PIL path
    assert device["error"][5].startswith("ImageLoadError: cannot decode image")
    assert device["error"][:5].tolist() == [""] * 5

    from clipdet.pipeline import gpu_decode

    monkeypatch.setattr(gpu_decode, "MAX_IMAGE_PIXELS", 640 * 480 - 1)
    bomb = score_images(photos[:1], llrs, weights_dir, decode="gpu", **common)
    assert "possible decompression bomb" in bomb["error"][0]
