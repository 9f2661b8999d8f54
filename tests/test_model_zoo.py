"""B-Free's five-crop ViT family and UnivFD's head on a CLIP tower, checked against independent
re-enactments of their reference computations (B-Free's main_bfree.py, batch 1 and the whole
image; UnivFD's validate.py), batched, with hostile rows, fused with the other detectors, and
downloaded verified from a loopback server; plus one test over every registered family."""

import hashlib
import logging
import math
import zipfile

import numpy as np
import open_clip
import pandas as pd
import pytest
import timm
import torch
import yaml
from helpers import (
    TINY_BACKBONE,
    TINY_CONFIG,
    TINY_MODEL,
    clip_config,
    clip_head_state,
    count_forward_passes,
    local_run_args,
    make_image,
    write_model_folder,
)
from PIL import Image
from torchvision import transforms as T

import main as cli
from clipdet.api import score_images
from clipdet.constants import IMAGENET_MEAN, IMAGENET_STD, OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from clipdet.models import weights as W
from clipdet.models.factory import BackboneCache, create_detector
from clipdet.models.families import families, find_family
from clipdet.models.registry import KnownDetector, known_detectors

TIMM_MODEL = "vit_base_patch14_reg4_dinov2"  # B-Free's ViT, made tiny by timm_kwargs
TINY_TIMM = {"embed_dim": 32, "depth": 2, "num_heads": 2}
SMALL = 56  # 4 x 4 patches of 14 px: the tests' grid; 504 (36 x 36) is B-Free's


def bfree_state(seed: int, size: int) -> dict:
    """A random B-Free-shaped checkpoint: timm's own keys (``patch_embed.*``, ``head.*``, the
    rest of the ViT), as B-Free saves them, with a head strong enough to spread the logits."""
    torch.manual_seed(seed)
    vit = timm.create_model(TIMM_MODEL, pretrained=False, num_classes=1, **TINY_TIMM)
    vit.set_input_size(img_size=size)
    state = vit.state_dict()
    for key, value in state.items():  # timm's init (and DINOv2's 1e-5 layer scale) would
        if key.endswith(".gamma"):  # make every image score alike
            state[key] = torch.ones_like(value)
        elif "norm" not in key:
            state[key] = torch.randn_like(value) * (0.5 if key.startswith("head.") else 0.1)
    return state


def bfree_config(name: str, size: int) -> dict:
    return {
        "arch": f"timm_c5i{size}_{TIMM_MODEL}",
        "model_name": name,
        "norm_type": "resnet",
        "weights_file": "model_epoch_best.pth",
        "timm_kwargs": TINY_TIMM,
    }


def reference_bfree_llr(state: dict, size: int, image: Image.Image) -> float:
    """B-Free's computation written out independently of clipdet, one image at a time: the
    whole image to a tensor (no resize), the patch embedding over all of it, the grid tiled
    and cut to size x size when smaller, five crops of it (centre, top-left, bottom-left,
    bottom-right, top-right), the ViT on each, the mean of the five logits."""
    vit = timm.create_model(TIMM_MODEL, pretrained=False, num_classes=1, **TINY_TIMM)
    vit.set_input_size(img_size=size)
    vit.load_state_dict(state)
    vit.eval()
    embed = vit.patch_embed
    vit.patch_embed = torch.nn.Identity()
    x = T.Compose([T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])(image)[None]
    cells = size // 14
    with torch.no_grad():
        grid = embed.proj(x)  # [1, D, H // 14, W // 14]
        if grid.shape[-2] < cells or grid.shape[-1] < cells:
            reps = (
                max(math.ceil(cells / grid.shape[-2]), 1),
                max(math.ceil(cells / grid.shape[-1]), 1),
            )
            grid = grid.repeat(1, 1, *reps)[..., :cells, :cells]
        h, w = grid.shape[-2:]
        top, left = max((h - cells) // 2, 0), max((w - cells) // 2, 0)
        crops = [
            grid[..., top : top + cells, left : left + cells],
            grid[..., :cells, :cells],
            grid[..., h - cells :, :cells],
            grid[..., h - cells :, w - cells :],
            grid[..., :cells, w - cells :],
        ]
        logits = [vit(embed.norm(c.flatten(2).transpose(1, 2)))[0, 0] for c in crops]
    return float(torch.stack(logits).mean())


def write_zoo(root) -> tuple[dict, dict]:
    """Model folders: a B-Free-shaped model at 56 px and one at B-Free's 504 px, UnivFD's head
    on the tiny CLIP tower (its published layout: ``weight``, ``bias`` at the top level), a
    normalised-feature head on the same tower and crop, a ResNet detector, probes, and the
    tiny clip-cues, RINE and Community Forensics models. Returns the B-Free states and
    UnivFD's head."""
    from helpers import resnet_state

    states = {"bfree_small": bfree_state(1, SMALL), "bfree_504": bfree_state(2, 504)}
    for name, size in (("bfree_small", SMALL), ("bfree_504", 504)):
        write_model_folder(root, name, bfree_config(name, size), states[name])
    g = torch.Generator().manual_seed(5)
    head = {"weight": torch.randn(1, TINY_CONFIG["embed_dim"], generator=g), "bias": torch.zeros(1)}
    (root / "univfd_tiny").mkdir()
    torch.save(head, root / "univfd_tiny" / "fc_weights.pth")
    (root / "univfd_tiny" / "config.yaml").write_text(
        yaml.safe_dump(
            {
                "arch": f"univfd_{TINY_BACKBONE}",
                "model_name": "univfd_tiny",
                "norm_type": "clip",
                "patch_size": 224,
                "weights_file": "fc_weights.pth",
            }
        )
    )
    write_model_folder(  # the same preprocessing as UnivFD: the two share the tower's pass
        root,
        "proj_tiny",
        {**clip_config("proj_tiny", next_to_last=False), "patch_size": 224},
        clip_head_state(3, dim=TINY_CONFIG["embed_dim"]),
    )
    write_model_folder(
        root,
        "res_tiny",
        {"arch": "res50nodown", "model_name": "res_tiny", "norm_type": "resnet",
         "patch_size": None, "weights_file": "weights.pth"},
        resnet_state(4),
    )  # fmt: skip
    torch.manual_seed(6)  # a linear probe on timm's test ViT, given as a local file
    torch.save(timm.create_model("test_vit").state_dict(), root / "test_vit.pth")
    write_model_folder(
        root,
        "probe_tiny",
        {"arch": "probe", "backbone": f"timm:test_vit:{root / 'test_vit.pth'}", "layer": -2,
         "weights_file": "weights.pth"},
        clip_head_state(7, dim=64),
    )  # fmt: skip
    write_model_folder(  # and one on the tiny CLIP tower (the run's --backbone_weights)
        root,
        "probe_oc",
        {"arch": "probe", "backbone": f"open_clip:{TINY_MODEL}", "layer": 0,
         "weights_file": "weights.pth"},
        clip_head_state(8, dim=TINY_CONFIG["vision_cfg"]["width"]),
    )  # fmt: skip
    # clip-cues, RINE and Community Forensics, tiny (tests/peer_models.py)
    from peer_models import register_tiny_openai
    from test_peer_models import write_peer_models

    register_tiny_openai(root)
    write_peer_models(root)
    return states, head


@pytest.fixture(scope="module")
def zoo(tmp_path_factory, tiny_clip_checkpoint):
    """(weights folder, B-Free states, UnivFD head); see ``write_zoo``."""
    root = tmp_path_factory.mktemp("zoo")
    states, head = write_zoo(root)
    return root, states, head


# (size, seed): smaller than the grid on both sides, a very wide one shorter than the grid,
# exactly the grid, sides not multiples of 14, large enough for five distinct crops
SMALL_CASES = [((40, 30), 0), ((400, 30), 1), ((56, 56), 2), ((61, 71), 3), ((150, 213), 4)]


@pytest.mark.parametrize(("size", "seed"), SMALL_CASES)
def test_bfree_matches_its_reference_computation(zoo, tmp_path, size, seed):
    root, states, _ = zoo
    model = create_detector("bfree_small", root)
    image = Image.open(make_image(tmp_path / "i.png", size=size, seed=seed)).convert("RGB")
    grids = model.transform(image)
    assert grids.shape[1:] == (3, SMALL, SMALL)
    assert grids.shape[0] == (5 if min(size) >= SMALL else 1)
    with torch.no_grad():
        ours = float(model.detector(grids[None]))
    assert ours == pytest.approx(reference_bfree_llr(states["bfree_small"], SMALL, image), abs=1e-4)


@pytest.mark.slow
def test_bfree_at_its_real_size_matches_the_reference(zoo, tmp_path):
    """B-Free's 504-px grids (36 x 36 patches): exactly 504, larger, and wide but short."""
    root, states, _ = zoo
    model = create_detector("bfree_504", root)
    for size, seed in (((504, 504), 0), ((800, 600), 1), ((1000, 300), 2)):
        image = Image.open(make_image(tmp_path / "i.png", size=size, seed=seed)).convert("RGB")
        with torch.no_grad():
            ours = float(model.detector(model.transform(image)[None]))
        ref = reference_bfree_llr(states["bfree_504"], 504, image)
        assert ours == pytest.approx(ref, abs=1e-3), size


@pytest.mark.slow
def test_bfree_batched_equals_batch_one_and_fuses(zoo, tmp_path, tiny_clip_checkpoint):
    """Images of every size share one ViT batch (grouped by crop count); the LLRs equal one
    image at a time, and the model fuses with CLIP heads and the ResNet."""
    root, _, _ = zoo
    paths = [
        str(make_image(tmp_path / f"{i}.png", size=size, seed=seed))
        for i, (size, seed) in enumerate(SMALL_CASES * 2)
    ]
    common = dict(weights_dir=root, backbone_weights=tiny_clip_checkpoint, device="cpu",
                  num_workers=0)  # fmt: skip
    models = ["bfree_small", "univfd_tiny", "res_tiny"]
    one = score_images(paths, models, batch_size=1, **common)
    batched = score_images(paths, models, batch_size=10, **common)
    for name in models:
        np.testing.assert_allclose(batched[name], one[name], rtol=1e-5, atol=1e-5)
    assert np.isfinite(batched["fusion"]).all() and (batched["error"] == "").all()
    assert batched["bfree_small"].std() > 0.1  # the images are told apart


def test_bfree_weights_layout_and_a_wrong_file(zoo, tmp_path):
    """``patch_embed.*`` goes to the patch embedding, ``head.*`` to the head, the rest to the
    ViT; a file without the patch embedding is refused with the keys named."""
    root, states, _ = zoo
    model = create_detector("bfree_small", root)
    backbone = model.detector.backbone
    torch.testing.assert_close(
        backbone.patch_embed.proj.weight, states["bfree_small"]["patch_embed.proj.weight"]
    )
    torch.testing.assert_close(model.detector.fc.weight, states["bfree_small"]["head.weight"])
    torch.testing.assert_close(backbone.vit.pos_embed, states["bfree_small"]["pos_embed"])
    broken = {k: v for k, v in states["bfree_small"].items() if not k.startswith("patch_embed.")}
    write_model_folder(tmp_path, "broken", bfree_config("broken", SMALL), broken)
    with pytest.raises(ValueError, match=r"model 'broken'.*missing \['patch_embed.proj"):
        create_detector("broken", tmp_path)


def reference_univfd_llr(checkpoint, head: dict, image: Image.Image) -> float:
    """UnivFD's validate.py, written out: centre crop 224 (no resize), CLIP normalisation,
    ``encode_image`` (projected, not normalised), then its ``fc``."""
    model = open_clip.create_model(TINY_MODEL, pretrained=str(checkpoint)).eval()
    transform = T.Compose(
        [T.CenterCrop(224), T.ToTensor(), T.Normalize(OPENAI_DATASET_MEAN, OPENAI_DATASET_STD)]
    )
    with torch.no_grad():
        features = model.encode_image(transform(image)[None])
        return float(features @ head["weight"].T + head["bias"])


def test_univfd_matches_its_reference_and_shares_the_backbone_pass(
    zoo, tmp_path, tiny_clip_checkpoint, monkeypatch
):
    root, _, head = zoo
    cache = BackboneCache(tiny_clip_checkpoint)
    univfd = create_detector("univfd_tiny", root, cache)
    proj = create_detector("proj_tiny", root, cache)
    assert univfd.detector.backbone is proj.detector.backbone  # one CLIP tower in memory
    images = []
    for seed, size in enumerate([(300, 260), (100, 180), (224, 224)]):
        image = Image.open(make_image(tmp_path / f"{seed}.png", size=size, seed=seed))
        images.append(image.convert("RGB"))
        with torch.no_grad():
            ours = float(univfd.detector(univfd.transform(images[-1])[None]))
        assert ours == pytest.approx(reference_univfd_llr(tiny_clip_checkpoint, head, images[-1]),
                                     abs=1e-4)  # fmt: skip
    paths = [str(tmp_path / f"{i}.png") for i in range(3)]
    calls = count_forward_passes(monkeypatch)
    table = score_images(paths, ["univfd_tiny", "proj_tiny"], root, batch_size=3, num_workers=0,
                         backbone_weights=tiny_clip_checkpoint, device="cpu")  # fmt: skip
    assert calls == [3]  # both heads read one pass over the batch
    alone = score_images(paths, ["univfd_tiny"], root, num_workers=0,
                         backbone_weights=tiny_clip_checkpoint, device="cpu")  # fmt: skip
    np.testing.assert_allclose(table["univfd_tiny"], alone["univfd_tiny"], atol=1e-5)
    assert not np.allclose(table["univfd_tiny"], table["proj_tiny"])


def test_univfd_features_are_cached_apart_from_normalised_ones(zoo, tmp_path, tiny_clip_checkpoint):
    root, _, _ = zoo
    paths = [str(make_image(tmp_path / f"{i}.png", size=(90, 120), seed=i)) for i in range(3)]
    common = dict(weights_dir=root, backbone_weights=tiny_clip_checkpoint, device="cpu",
                  num_workers=0, feature_cache=tmp_path / "cache")  # fmt: skip
    first = score_images(paths, ["univfd_tiny"], **common)
    second = score_images(paths, ["univfd_tiny", "proj_tiny"], **common)  # a hit, then a miss
    third = score_images(paths, ["proj_tiny", "univfd_tiny"], **common)
    np.testing.assert_allclose(first["univfd_tiny"], second["univfd_tiny"], atol=1e-6)
    np.testing.assert_allclose(second["proj_tiny"], third["proj_tiny"], atol=1e-6)
    assert len({p.parent for p in (tmp_path / "cache").rglob("*") if p.is_file()}) >= 2


def test_hostile_rows_with_the_new_models(zoo, tmp_path, tiny_clip_checkpoint, capsys):
    root, _, _ = zoo
    good = [make_image(tmp_path / f"g{i}.png", size=(80 + 9 * i, 70), seed=i) for i in range(3)]
    (tmp_path / "truncated.png").write_bytes(good[0].read_bytes()[:200])
    (tmp_path / "text.png").write_text("not an image")
    Image.new("RGB", (1, 1)).save(tmp_path / "dot.png")
    names = ["g0.png", "missing.png", "truncated.png", "g1.png", "text.png", "dot.png", "g2.png"]
    pd.DataFrame({"filename": names}).to_csv(tmp_path / "list.csv", index=False)
    out = tmp_path / "out.csv"
    argv = ["-i", str(tmp_path / "list.csv"), "-o", str(out), "--batch_size", "3"]
    assert (
        cli.main([*argv, *local_run_args(tiny_clip_checkpoint, root, "bfree_small,univfd_tiny")])
        == 0
    )
    table = pd.read_csv(out, keep_default_na=False)
    ok = table["filename"].isin(["g0.png", "g1.png", "g2.png"])
    assert (table.loc[ok, "error"] == "").all()
    assert table.loc[ok, ["bfree_small", "univfd_tiny"]].astype(float).notna().all().all()
    errors = dict(zip(table["filename"], table["error"], strict=True))
    assert "smaller than one 14-px patch" in errors["dot.png"]
    for name in ("missing.png", "truncated.png", "text.png"):
        assert errors[name]


def test_bfree_in_bf16_is_close_to_fp32(zoo, tmp_path):
    root, _, _ = zoo
    paths = [str(make_image(tmp_path / f"{i}.png", size=s, seed=i)) for i, (s, _) in
             enumerate(SMALL_CASES)]  # fmt: skip
    fp32 = score_images(paths, ["bfree_small"], root, device="cpu", num_workers=0)
    bf16 = score_images(paths, ["bfree_small"], root, device="cpu", num_workers=0,
                        precision="bf16")  # fmt: skip
    spread = np.abs(fp32["bfree_small"]).max()
    np.testing.assert_allclose(bf16["bfree_small"], fp32["bfree_small"], atol=0.02 * spread + 0.05)


def _zip_model_folder(path, name: str, state: dict, config: dict) -> bytes:
    """A zip laid out as B-Free's: ``<name>/config.yaml`` and ``<name>/model_epoch_best.pth``."""
    folder = path.parent / "zipsrc"
    write_model_folder(folder, name, config, state)
    with zipfile.ZipFile(path, "w") as z:
        for file in sorted((folder / name).iterdir()):
            z.write(file, f"{name}/{file.name}")
    return path.read_bytes()


def test_bfree_zip_downloads_verified_unpacked_and_licence_shown_once(
    zoo, tmp_path, http_root, monkeypatch, caplog
):
    root, states, _ = zoo
    served, base, hits = http_root
    (served / "BFREE_dino2reg4").mkdir()
    config = {**bfree_config("BFREE_dino2reg4", SMALL), "from_archive": True}
    data = _zip_model_folder(served / "BFREE_dino2reg4" / "BFREE_dino2reg4.zip",
                             "BFREE_dino2reg4", states["bfree_small"], config)  # fmt: skip
    official = known_detectors()["BFREE_dino2reg4"]
    assert official.md5 == "f3f53fa647848b16cf81c913f148a198" and official.archive == "zip"
    assert official.licence and "nonprofit" in official.licence
    tiny = KnownDetector(**{**official.__dict__, "md5": hashlib.md5(data).hexdigest(),
                            "config": bfree_config("BFREE_dino2reg4", SMALL)})  # fmt: skip
    monkeypatch.setattr(W, "known_detectors", lambda: {**known_detectors(), tiny.name: tiny})
    monkeypatch.setenv(W.BASE_URL_ENV, base)
    weights = tmp_path / "weights"
    with caplog.at_level(logging.WARNING, logger="clipdet.models.weights"):
        model = create_detector("BFREE_dino2reg4", weights)
        create_detector("BFREE_dino2reg4", weights)  # present: no second download, no notice
    assert hits == ["/BFREE_dino2reg4/BFREE_dino2reg4.zip"]
    notices = [r.message for r in caplog.records if "not Apache-2.0" in r.message]
    assert len(notices) == 1 and "nonprofit" in notices[0]
    folder = weights / "BFREE_dino2reg4"
    assert sorted(p.name for p in folder.iterdir()) == ["config.yaml", "model_epoch_best.pth"]
    assert yaml.safe_load((folder / "config.yaml").read_text())["from_archive"] is True
    torch.testing.assert_close(model.detector.fc.weight, states["bfree_small"]["head.weight"])


def test_bfree_zip_with_a_wrong_md5_leaves_nothing(zoo, tmp_path, http_root, monkeypatch):
    root, states, _ = zoo
    served, base, _ = http_root
    (served / "BFREE_dino2reg4").mkdir()
    _zip_model_folder(served / "BFREE_dino2reg4" / "BFREE_dino2reg4.zip", "BFREE_dino2reg4",
                      states["bfree_small"], bfree_config("BFREE_dino2reg4", SMALL))  # fmt: skip
    monkeypatch.setenv(W.BASE_URL_ENV, base)
    with pytest.raises(W.ChecksumError, match="f3f53fa647848b16cf81c913f148a198"):
        create_detector("BFREE_dino2reg4", tmp_path / "w")
    assert sorted(p.name for p in (tmp_path / "w" / "BFREE_dino2reg4").iterdir()) == ["config.yaml"]


def test_univfd_head_downloads_by_its_published_sha256(zoo, tmp_path, http_root, monkeypatch):
    root, _, head = zoo
    served, base, hits = http_root
    official = known_detectors()["UnivFD"]
    assert official.sha256 == "477100745713bcc957beb2b40859536859b6483fd6301b3b9293151b194c7847"
    assert official.url.endswith("/pretrained_weights/fc_weights.pth")
    assert official.config["arch"] == "univfd_clipL14openai"
    (served / "UnivFD").mkdir()
    torch.save(head, served / "UnivFD" / "fc_weights.pth")
    data = (served / "UnivFD" / "fc_weights.pth").read_bytes()
    tiny = KnownDetector(**{**official.__dict__, "sha256": hashlib.sha256(data).hexdigest()})
    monkeypatch.setattr(W, "known_detectors", lambda: {**known_detectors(), "UnivFD": tiny})
    monkeypatch.setenv(W.BASE_URL_ENV, base)
    config = W.load_model_config("UnivFD", tmp_path / "w")
    path = W.resolve_weights_file("UnivFD", config, tmp_path / "w")
    assert path.read_bytes() == data and hits == ["/UnivFD/fc_weights.pth"]


# One example config per registered family: a new family must add one here (the test below
# fails otherwise), and is then built and run on an image like every other.
FAMILY_EXAMPLES = {
    "openclip": "proj_tiny",
    "univfd": "univfd_tiny",
    "resnet": "res_tiny",
    "five_crop_vit": "bfree_small",
    "probe": "probe_tiny",
    "clipcues_linear": "cc_linear",
    "clipcues_concepts": "cc_concepts",
    "rine": "rine_tiny",
    "timm_classifier": "commfor_tiny",
}


@pytest.mark.parametrize("family", sorted(FAMILY_EXAMPLES))
def test_every_registered_family_builds_and_scores(zoo, tmp_path, tiny_clip_checkpoint, family):
    assert set(families()) == set(FAMILY_EXAMPLES)
    root, _, _ = zoo
    name = FAMILY_EXAMPLES[family]
    config = yaml.safe_load((root / name / "config.yaml").read_text())
    assert find_family(config["arch"])[0].name == family
    model = create_detector(name, root, BackboneCache(tiny_clip_checkpoint))
    image = Image.open(make_image(tmp_path / "i.png", size=(90, 70))).convert("RGB")
    with torch.no_grad():
        llr = model.detector(model.transform(image)[None])
    assert llr.shape == (1,) and torch.isfinite(llr).all()


def test_unknown_arch_lists_the_registered_families(tmp_path):
    write_model_folder(tmp_path, "odd", {"arch": "vgg16", "norm_type": "resnet",
                                         "weights_file": "weights.pth"}, {})  # fmt: skip
    with pytest.raises(ValueError) as info:
        create_detector("odd", tmp_path)
    for pattern in ("opencliplinearnext_<backbone>", "timm_c5i<size>_<timm model>",
                    "univfd_<backbone>", "res50nodown", "probe"):  # fmt: skip
        assert pattern in str(info.value)
