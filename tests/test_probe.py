"""Linear probes on foundation backbones named by their libraries: backbone names, the
libraries' own preprocessing, training and scoring equal to a computation with only the
library's code, one shared pass with the CLIP heads, hostile rows, precision, resume, report;
the backbones are tiny random-weight models given as local files (open_clip's test ViT and
timm's ``test_vit``)."""

import pickle

import numpy as np
import open_clip
import pandas as pd
import pytest
import timm
import torch
import torch.nn.functional as F
import yaml
from helpers import (
    TIMM_MODEL,
    TINY_MODEL,
    count_forward_passes,
    ctrl_c_after,
    local_run_args,
    make_image,
    make_list,
    write_model_folder,
)
from PIL import Image
from timm.data import create_transform, resolve_model_data_config

from clipdet.cli import main as clipdet
from clipdet.models.backbones import backbone_preprocessing, create_frozen_features
from clipdet.models.preprocess import make_transform
from clipdet.models.registry import declared_backbones, parse_backbone
from clipdet.models.weights import WeightsUnavailableError


@pytest.fixture
def backbones(tiny_clip_checkpoint, tiny_timm_checkpoint) -> dict[str, str]:
    return {
        "open_clip": f"open_clip:{TINY_MODEL}:{tiny_clip_checkpoint}",
        "timm": f"timm:{TIMM_MODEL}:{tiny_timm_checkpoint}",
    }


@pytest.fixture(scope="module")
def probe_images(tmp_path_factory):
    """Smaller than the inputs, non-square, and a 12-megapixel photo-like JPEG."""
    root = tmp_path_factory.mktemp("probe_images")
    make_image(root / "small.png", size=(40, 30), seed=1)
    make_image(root / "wide.jpg", size=(500, 90), seed=2, format="JPEG", quality=90)
    coarse = np.random.default_rng(3).integers(0, 256, (750, 1000, 3), dtype=np.uint8)
    photo = Image.fromarray(coarse).resize((4000, 3000), Image.Resampling.BILINEAR)
    photo.save(root / "photo12mp.jpg", quality=90)
    csv = root / "list.csv"
    pd.DataFrame({"filename": ["small.png", "wide.jpg", "photo12mp.jpg"]}).to_csv(csv, index=False)
    return csv


def run(*argv) -> int:
    return clipdet([str(a) for a in argv])


def library_features(library: str, checkpoint, layer, image: Image.Image) -> torch.Tensor:
    """The features computed with the library's code alone: its model and weights file, its
    eval transform, its image embedding (or its forward_intermediates), L2-normalised."""
    with torch.no_grad():
        if library == "open_clip":
            model, _, preprocess = open_clip.create_model_and_transforms(
                TINY_MODEL, pretrained=str(checkpoint)
            )
            model.eval()
            x = preprocess(image)[None]
            if layer == "embed":
                features = model.encode_image(x)
            else:
                out = model.visual.forward_intermediates(
                    x, indices=[layer], intermediates_only=True, output_fmt="NLC",
                    output_extra_tokens=True,
                )  # fmt: skip
                features = out["image_intermediates_prefix"][0][:, 0]
        else:
            model = timm.create_model(TIMM_MODEL)
            model.load_state_dict(torch.load(checkpoint, weights_only=True))
            model.eval()
            x = create_transform(**resolve_model_data_config(model))(image)[None]
            if layer == "embed":
                features = model.forward_head(model.forward_features(x), pre_logits=True)
            else:
                (_, prefix), = model.forward_intermediates(
                    x, indices=[layer], intermediates_only=True, return_prefix_tokens=True,
                    output_fmt="NLC",
                )  # fmt: skip
                features = prefix[:, 0]
    return F.normalize(features, dim=-1)


@pytest.mark.parametrize("library", ["open_clip", "timm"])
def test_a_trained_probe_scores_as_the_library_computes(
    tmp_path, backbones, probe_images, tiny_clip_checkpoint, tiny_timm_checkpoint, library
):
    """`clipdet train --backbone LIB:MODEL:FILE` then `clipdet score --models NAME` equals
    the library's own computation with the saved fc.weight / fc.bias, to 1e-4 in fp32, on
    images smaller than the input, non-square and of 12 MP; at the embedding and a block."""
    train = make_list(tmp_path, "train", 6, 0)
    weights = tmp_path / "w"
    layers = {"embed": f"probe_{library}", -1: f"probe_{library}_last"}
    for layer, name in layers.items():
        extra = [] if layer == "embed" else ["--layer", layer]
        argv = ["train", "-i", train, "-w", weights, "-n", name, "--backbone", backbones[library]]
        assert run(*argv, *extra, "-d", "cpu", "--num_workers", "0", "-q") == 0
    out = tmp_path / "scores.csv"
    models = ",".join(layers.values())
    assert run("score", "-i", probe_images, "-o", out, "-w", weights, "-m", models, "-d", "cpu",
               "--num_workers", "0", "-q") == 0  # fmt: skip
    scores = pd.read_csv(out)
    assert scores["error"].isna().all()
    checkpoint = tiny_clip_checkpoint if library == "open_clip" else tiny_timm_checkpoint
    for layer, name in layers.items():
        config = yaml.safe_load((weights / name / "config.yaml").read_text())
        assert config["arch"] == "probe" and config["backbone"] == backbones[library]
        blocks = 2 if library == "open_clip" else 6
        assert config["layer"] == ("embed" if layer == "embed" else blocks - 1)
        head = torch.load(weights / name / "weights.pth", weights_only=True)["model"]
        expected = []
        for filename in scores["filename"]:
            image = Image.open(probe_images.parent / filename).convert("RGB")
            features = library_features(library, checkpoint, layer, image)
            expected.append(float(features @ head["fc.weight"].T + head["fc.bias"]))
        np.testing.assert_allclose(scores[name], expected, atol=1e-4, rtol=0)
        assert np.ptp(expected) > 1e-3  # the images are told apart: the check is not vacuous


def test_backbone_names_aliases_and_files(tmp_path, tiny_timm_checkpoint):
    spec = parse_backbone("pe-core-l14-336")
    assert (spec.library, spec.model, spec.pretrained) == ("open_clip", "PE-Core-L-14-336", "meta")
    spec = parse_backbone("timm:vit_large_patch16_dinov3.lvd1689m")  # timm's own name.tag
    assert (spec.library, spec.model, spec.pretrained) == ("timm", "vit_large_patch16_dinov3",
                                                          "lvd1689m")  # fmt: skip
    spec = parse_backbone(f"timm:{TIMM_MODEL}:{tiny_timm_checkpoint}")
    assert spec.file == str(tiny_timm_checkpoint) and spec.pretrained is None
    assert parse_backbone("open_clip:ViT-L-14:openai").reference == "open_clip:ViT-L-14:openai"
    with pytest.raises(ValueError, match="LIB:MODEL.*valid aliases: .*dinov3-vitl16"):
        parse_backbone("torchhub:dino")
    with pytest.raises(ValueError, match="timm has no model 'no_such_vit'"):
        create_frozen_features(parse_backbone("timm:no_such_vit"))
    with pytest.raises(ValueError, match="no pretrained tag 'nope'.*valid choices: r160_in1k"):
        create_frozen_features(parse_backbone("timm:test_vit:nope"))
    with pytest.raises(ValueError, match="block 9 out of range: this ViT has blocks 0..5"):
        create_frozen_features(parse_backbone(f"timm:{TIMM_MODEL}:{tiny_timm_checkpoint}"))(
            torch.zeros(1, 3, 160, 160), [9]
        )


def test_every_alias_names_a_model_and_tag_its_library_knows():
    """Checked in the libraries' registries (nothing downloaded): the issue's backbones are
    there, and the ones that are not permissive say so."""
    aliases = declared_backbones()
    for name in ("pe-core-l14-336", "pe-core-b16", "siglip2-so400m16-384",
                 "metaclip2-h14-worldwide", "dinov3-vitl16", "dinov3-vith16plus",
                 "dinov2-vitl14-reg4", "clipL14commonpool"):  # fmt: skip
        assert name in aliases
    for name, spec in aliases.items():
        if spec.library == "open_clip":
            assert open_clip.get_model_config(spec.model) is not None, name
            assert open_clip.get_pretrained_cfg(spec.model, spec.pretrained), name
        else:
            assert f"{spec.model}.{spec.pretrained}" in timm.list_pretrained(f"{spec.model}.*")
    assert "CC-BY-NC-4.0" in aliases["metaclip2-h14-worldwide"].licence
    assert "DINOv3 License" in aliases["dinov3-vitl16"].licence
    assert not aliases["pe-core-l14-336"].licence


def test_the_libraries_eval_transforms_are_used_and_picklable(
    tmp_path, tiny_clip_checkpoint, tiny_timm_checkpoint
):
    images = [
        Image.open(make_image(tmp_path / f"{i}.png", size=size, seed=i)).convert("RGB")
        for i, size in enumerate([(40, 30), (300, 120), (224, 224)])
    ]
    timm_spec = parse_backbone(f"timm:{TIMM_MODEL}:{tiny_timm_checkpoint}")
    timm_module = create_frozen_features(timm_spec)
    ours = backbone_preprocessing(timm_spec, timm_module)
    theirs = create_transform(**resolve_model_data_config(timm_module.model))
    assert ours.key.startswith("timm_")
    clip_spec = parse_backbone(f"open_clip:{TINY_MODEL}:{tiny_clip_checkpoint}")
    clip = backbone_preprocessing(clip_spec, create_frozen_features(clip_spec))
    assert clip.key == "Clip224_clip"  # open_clip's defaults are the CLIP 224-px pipeline
    reference = make_transform("Clip224", "clip")
    for image in images:
        assert torch.equal(ours.transform(image), theirs(image))
        assert tuple(ours.transform(image).shape) == (3, 160, 160)
        assert torch.equal(clip.transform(image), reference(image))
        restored = pickle.loads(pickle.dumps(ours.transform))  # to decoding workers and Ray
        assert torch.equal(restored(image), theirs(image))
    # a tag's own preprocessing: PE's mean/std and squash resize give another key
    pe = parse_backbone("pe-core-b16")
    from open_clip.transform import PreprocessCfg, merge_preprocess_dict

    config = merge_preprocess_dict(
        {**vars(PreprocessCfg()), "size": (224, 224)},
        open_clip.get_pretrained_cfg(pe.model, pe.pretrained),
    )
    assert config["resize_mode"] == "squash" and config["mean"] == (0.5, 0.5, 0.5)


def test_a_probe_and_clip_heads_share_one_pass_and_clip_llrs_do_not_change(
    tmp_path, weights_dir, image_dir, tiny_clip_checkpoint, backbones, monkeypatch
):
    """A probe on the CLIP detectors' own open_clip tower and preprocessing, at its embedding
    and at a block, runs in the detectors' pass: one backbone pass per batch for all four."""
    for name, layer in (("p_embed", "embed"), ("p_block", 0)):
        config = {"arch": "probe", "backbone": backbones["open_clip"], "layer": layer,
                  "weights_file": "weights.pth"}  # fmt: skip
        dim = 32 if layer == "embed" else 64
        g = torch.Generator().manual_seed(7)
        state = {"fc.weight": torch.randn(1, dim, generator=g), "fc.bias": torch.zeros(1)}
        write_model_folder(weights_dir, name, config, state)
    csv = image_dir / "list.csv"
    pd.DataFrame({"filename": sorted(p.name for p in image_dir.glob("*.png"))}).to_csv(
        csv, index=False
    )
    alone, both = tmp_path / "alone.csv", tmp_path / "both.csv"
    base = local_run_args(tiny_clip_checkpoint, weights_dir)
    base += ["--batch_size", "2"]
    assert run("score", "-i", csv, "-o", alone, *base, "-m", "tiny_a,tiny_proj") == 0
    passes = count_forward_passes(monkeypatch)
    models = "tiny_a,tiny_proj,p_embed,p_block"
    assert run("score", "-i", csv, "-o", both, *base, "-m", models) == 0
    assert passes == [2, 2, 1]  # 5 images: one pass per batch for four heads on one tower
    alone, both = pd.read_csv(alone), pd.read_csv(both)
    for column in ("tiny_a", "tiny_proj"):
        np.testing.assert_array_equal(alone[column], both[column])
    assert both[["p_embed", "p_block"]].notna().all().all()


def test_offline_download_failure_is_one_line_naming_the_backbone(capsys, tmp_path):
    """HF_HUB_OFFLINE is set for every test: the weights cannot be fetched."""
    fixes = {
        "open_clip:ViT-B-32:openai": "--backbone_weights PATH",
        "timm:test_vit:r160_in1k": "--backbone timm:test_vit.r160_in1k:PATH",
    }
    for name, fix in fixes.items():
        with pytest.raises(WeightsUnavailableError) as info:
            create_frozen_features(parse_backbone(name))
        message = str(info.value)
        assert f"backbone {name!r}" in message and fix in message and "\n" not in message
    train = make_list(tmp_path, "train", 3, 0)
    assert run("train", "-i", train, "-w", tmp_path, "-n", "x", "--backbone",
               "timm:test_vit:r160_in1k", "-d", "cpu", "-q") == 2  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: could not obtain the weights of backbone")


def test_a_licence_is_shown_when_the_weights_are_downloaded_only(
    tmp_path, tiny_clip_checkpoint, monkeypatch, caplog
):
    from clipdet.models import backbones as B
    from clipdet.models.registry import register_backbone

    spec = register_backbone("tiny_nc", TINY_MODEL, hf_hub="test-org/tiny-nc/",
                             licence="non-commercial use only")  # fmt: skip
    downloads = []

    def download(cfg, cache_dir=None):
        downloads.append(cfg)
        return tiny_clip_checkpoint

    monkeypatch.setattr(open_clip, "download_pretrained", download)
    with caplog.at_level("WARNING"):
        B.resolve_checkpoint(spec)
    assert len(downloads) == 1 and "non-commercial use only" in caplog.text
    caplog.clear()
    monkeypatch.setattr(B, "_find_in_hub_cache", lambda *a: tiny_clip_checkpoint)  # cached now
    with caplog.at_level("WARNING"):
        B.resolve_checkpoint(spec)
    assert len(downloads) == 1 and "non-commercial" not in caplog.text


@pytest.fixture
def probe_run(tmp_path, weights_dir, backbones):
    """A labelled list with hostile rows, and a probe on timm's test ViT (at block -2) beside
    a CLIP detector: (csv, argv of a scoring run without the output)."""
    config = {"arch": "probe", "backbone": backbones["timm"], "layer": -2,
              "weights_file": "weights.pth"}  # fmt: skip
    g = torch.Generator().manual_seed(8)
    state = {"fc.weight": torch.randn(1, 64, generator=g) * 20, "fc.bias": torch.zeros(1)}
    write_model_folder(weights_dir, "probe_t", config, state)
    folder = tmp_path / "images"
    names, typs = [], []
    for i in range(6):
        make_image(folder / f"img{i}.png", size=(70 + 9 * i, 60), seed=i)
        names.append(f"img{i}.png")
        typs.append("real" if i % 2 else "gen")
    good = make_image(folder / "whole.jpg", size=(200, 150), format="JPEG").read_bytes()
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (folder / "notes.png").write_text("not an image")
    names += ["missing.png", "truncated.jpg", "notes.png"]
    typs += ["real", "gen", "gen"]
    csv = folder / "list.csv"
    pd.DataFrame({"filename": names, "typ": typs}).to_csv(csv, index=False)
    return csv, ["score", "-i", csv, "-w", weights_dir, "-m", "probe_t,tiny_a", "-d", "cpu",
                 "--num_workers", "0", "-q", "--batch_size", "2"]  # fmt: skip


def test_probes_with_hostile_rows_cache_bf16_metrics_and_report(
    tmp_path, probe_run, tiny_clip_checkpoint, monkeypatch
):
    csv, argv = probe_run
    argv += ["--backbone_weights", tiny_clip_checkpoint]  # the CLIP detector's tower
    out, cache = tmp_path / "scores.csv", tmp_path / "cache"
    report = tmp_path / "report.html"
    assert run(*argv, "-o", out, "--feature_cache", cache, "--report", report) == 0
    scores = pd.read_csv(out, keep_default_na=False, na_values=[""])
    bad = scores["filename"].isin(["missing.png", "truncated.jpg", "notes.png"])
    assert (
        scores.loc[bad, "error"].str.len().gt(0).all() and scores.loc[bad, "probe_t"].isna().all()
    )
    assert scores.loc[~bad, "probe_t"].notna().all() and scores.loc[~bad, "error"].isna().all()
    assert np.ptp(scores.loc[~bad, "probe_t"]) > 1e-3
    page = report.read_text()
    assert "probe_t" in page and "notes.png" in page

    passes = count_forward_passes(monkeypatch)  # a second run: every feature from the cache
    again = tmp_path / "again.csv"
    assert run(*argv, "-o", again, "--feature_cache", cache) == 0
    assert passes == []
    columns = ["filename", "probe_t", "tiny_a", "fusion", "error"]
    pd.testing.assert_frame_equal(pd.read_csv(again)[columns], pd.read_csv(out)[columns])

    bf16 = tmp_path / "bf16.csv"
    assert run(*argv, "-o", bf16, "--precision", "bf16") == 0
    deviation = np.abs(pd.read_csv(bf16)["probe_t"] - scores["probe_t"])[~bad]
    assert 0 < deviation.max() < 0.25 * np.ptp(scores.loc[~bad, "probe_t"])

    table = tmp_path / "auc.csv"
    assert run("metrics", "-i", csv, "-o", out, "--metrics", "auc", "--save_tab", table) == 0
    assert "probe_t" in pd.read_csv(table).iloc[:, 0].tolist()


def test_an_interrupted_probe_run_resumes_to_the_same_file(
    tmp_path, probe_run, tiny_clip_checkpoint, monkeypatch
):
    from clipdet.pipeline import scoring

    csv, argv = probe_run  # batches of one: a resumed run's batches are the same
    argv += ["--backbone_weights", tiny_clip_checkpoint, "--batch_size", "1"]
    clean, out = tmp_path / "clean.csv", tmp_path / "out.csv"
    assert run(*argv, "-o", clean) == 0
    with ctrl_c_after(monkeypatch, scoring, 3):
        assert run(*argv, "-o", out) == 130
    assert run(*argv, "-o", out, "--resume") == 0
    assert out.read_bytes() == clean.read_bytes()


def test_an_attribution_model_on_a_probes_features(tmp_path, backbones):
    from helpers import make_pair_image

    rows = []
    for i in range(6):
        for typ, kind in (("real", "real"), ("gen_a", "fake")):
            make_pair_image(tmp_path / "t" / f"{typ}{i}.png", kind, 10 * i + len(typ))
            rows.append((f"t/{typ}{i}.png", typ))
    csv = tmp_path / "train.csv"
    pd.DataFrame(rows, columns=["filename", "typ"]).to_csv(csv, index=False)
    weights = tmp_path / "w"
    assert run("train", "--task", "attribution", "-i", csv, "-w", weights, "-n", "who",
               "--backbone", backbones["timm"], "--layer", "-1", "-d", "cpu", "--num_workers",
               "0", "-q") == 0  # fmt: skip
    config = yaml.safe_load((weights / "who" / "config.yaml").read_text())
    assert (config["arch"], config["layer"], config["block"]) == ("probe", 5, None)
    assert config["classes"] == ["gen_a", "real"]
    out = tmp_path / "who.csv"
    assert run("score", "-i", csv, "-o", out, "-w", weights, "-m", "who", "-d", "cpu",
               "--num_workers", "0", "-q") == 0  # fmt: skip
    scored = pd.read_csv(out)
    assert (scored["who"] == pd.read_csv(csv)["typ"]).mean() > 0.8
