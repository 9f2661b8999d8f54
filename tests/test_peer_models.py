"""clip-cues (linear probes, concept bottleneck), RINE and Community Forensics: clipdet's LLRs
equal what each peer's own code gave on the same tiny random weights
(``tests/fixtures/peer_llrs.json``, written by ``benchmarks/peer_parity.py`` from the peers'
repositories) on images smaller than the input, non-square with odd crop offsets, square and
12 MP; the concept column names the three strongest concepts with their signed contributions;
the heads share the backbone passes they can; a tampered download is refused."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from helpers import count_forward_passes, ctrl_c_after, make_image
from peer_models import (
    COMMFOR_KWARGS,
    COMMFOR_TIMM,
    CONCEPT_NAMES,
    FIXTURE,
    OPENAI_EMBED,
    TINY_OPENAI_BACKBONE,
    commfor_state,
    concept_state,
    linear_probe_state,
    register_tiny_openai,
    rine_head_state,
    write_concepts_csv,
    write_peer_images,
)
from PIL import Image

from clipdet.api import score_images
from clipdet.models.factory import BackboneCache, create_detector
from clipdet.pipeline import scoring

# clipdet's model name -> the fixture's key for it
PEERS = {"cc_linear": "clipcues_linear", "cc_concepts": "clipcues_concepts", "rine_tiny": "rine",
         "commfor_tiny": "commfor"}  # fmt: skip
TOLERANCE = 1e-3  # the bar; measured differences are ~1e-6 (docs/models.md)


def write_peer_models(root) -> None:
    """The tiny peers' model folders, each checkpoint in its peer's own layout."""
    from safetensors.torch import save_file

    def folder(name: str, config: dict):
        (root / name).mkdir(parents=True, exist_ok=True)
        (root / name / "config.yaml").write_text(yaml.safe_dump({"model_name": name, **config}))
        return root / name

    path = folder("cc_linear", {"arch": f"clipcueslinear_{TINY_OPENAI_BACKBONE[336]}",
                                "norm_type": "clip", "patch_size": "Resize336Bilinear",
                                "weights_file": "probe.ckpt"})  # fmt: skip
    torch.save({"state_dict": linear_probe_state(), "model_type": "linear"}, path / "probe.ckpt")
    path = folder("cc_concepts", {"arch": f"clipcuesconcepts_{TINY_OPENAI_BACKBONE[336]}",
                                  "norm_type": "clip", "patch_size": "Resize336BicubicTensor",
                                  "weights_file": "cm.ckpt",
                                  "concepts_file": "concepts.csv"})  # fmt: skip
    torch.save({"state_dict": concept_state(), "model_type": "concept"}, path / "cm.ckpt")
    write_concepts_csv(path / "concepts.csv")
    path = folder("rine_tiny", {"arch": f"rine_{TINY_OPENAI_BACKBONE[224]}", "norm_type": "clip",
                                "patch_size": 224, "weights_file": "rine.pth"})  # fmt: skip
    torch.save(rine_head_state(), path / "rine.pth")
    path = folder("commfor_tiny", {"arch": f"timmclassifier_{COMMFOR_TIMM}",
                                   "norm_type": "resnet", "patch_size": "Resize440Crop384Bilinear",
                                   "timm_kwargs": COMMFOR_KWARGS,
                                   "weights_file": "model.safetensors"})  # fmt: skip
    save_file(commfor_state(), path / "model.safetensors")


def score_peers(folder, images, table_out: list | None = None) -> tuple[dict, dict]:
    """clipdet's LLRs of the four tiny peers on ``images`` (one run, batched) and the concept
    head's per-concept contributions per image (its own computation); the run's table is
    appended to ``table_out``."""
    root = folder / "weights"
    write_peer_models(root)
    table = score_images(images, list(PEERS), root, device="cpu", num_workers=0, batch_size=3,
                         fusion=None)  # fmt: skip
    if table_out is not None:
        table_out.append(table)
    llrs = {PEERS[m]: dict(zip([p.name for p in images], table[m], strict=True)) for m in PEERS}
    model = create_detector("cc_concepts", root, BackboneCache())
    contributions = {}
    for path in images:
        x = model.transform(Image.open(path).convert("RGB"))[None]
        with torch.no_grad():
            features = model.detector.forward_features(x)
            contributions[path.name] = model.detector.fc.contributions(features)[0].tolist()
    return llrs, contributions


@pytest.fixture(scope="module")
def peers(tmp_path_factory):
    folder = tmp_path_factory.mktemp("peers")
    register_tiny_openai(folder)
    images = write_peer_images(folder / "images")
    return folder, images


@pytest.fixture(scope="module")
def scored(peers):
    tables = []
    llrs, contributions = score_peers(*peers, table_out=tables)
    return llrs, contributions, tables[0]


def test_each_peers_llrs_equal_its_own_codes(scored):
    expected = json.loads(FIXTURE.read_text())
    llrs, contributions, _ = scored
    for model, values in llrs.items():
        assert set(values) == set(expected[model]), model
        for name, value in values.items():
            assert value == pytest.approx(expected[model][name], abs=TOLERANCE), (model, name)
        spread = np.ptp(list(expected[model].values()))
        assert spread > 20 * TOLERANCE, f"{model}: the fixture's LLRs hardly differ"
    peer = expected["clipcues_concepts_contributions"]
    for name, values in contributions.items():
        np.testing.assert_allclose(values, peer[name], atol=TOLERANCE)
        logit = sum(values) + float(concept_state()["model.W_classifier.bias"])
        assert logit == pytest.approx(llrs["clipcues_concepts"][name], abs=1e-4)


def test_the_concept_column_names_the_three_strongest_concepts_with_their_signs(scored):
    """``concepts_<model>``: the peer's own three largest absolute contributions, strongest
    first, ``name:+0.123`` (> 0 towards synthetic)."""
    from clipdet.pipeline.extensions.concepts import parse_concepts

    expected = json.loads(FIXTURE.read_text())["clipcues_concepts_contributions"]
    _, _, table = scored
    column = table["concepts_cc_concepts"].tolist()
    for name, cell in zip(table["filename"], column, strict=True):
        peer = np.asarray(expected[Path(name).name])
        strongest = np.argsort(-np.abs(peer))[:3]
        pairs = parse_concepts(cell)
        assert [n for n, _ in pairs] == [CONCEPT_NAMES[i] for i in strongest], cell
        np.testing.assert_allclose([v for _, v in pairs], peer[strongest], atol=1e-3)
        assert abs(pairs[0][1]) >= abs(pairs[1][1]) >= abs(pairs[2][1])
    assert len(set(column)) == len(column)  # each image its own explanation


def test_rine_shares_univfds_pass_and_the_peers_resume_and_run_in_bf16(
    peers, tmp_path, monkeypatch
):
    """RINE reads UnivFD's tensors (a 224 crop, CLIP statistics) on the same tower: one pass
    for both. An interrupted run of the peers resumes to the uninterrupted file (the concept
    column included); bf16 gives the fp32 LLRs to within bf16's precision."""
    folder, _ = peers
    root = tmp_path / "weights"
    write_peer_models(root)
    univfd = root / "univfd_t"
    univfd.mkdir()
    head = {"weight": torch.randn(1, OPENAI_EMBED, generator=torch.Generator().manual_seed(3)),
            "bias": torch.zeros(1)}  # fmt: skip
    torch.save(head, univfd / "fc.pth")
    (univfd / "config.yaml").write_text(yaml.safe_dump({
        "arch": f"univfd_{TINY_OPENAI_BACKBONE[224]}", "norm_type": "clip", "patch_size": 224,
        "weights_file": "fc.pth"}))  # fmt: skip
    paths = [make_image(tmp_path / f"{i}.png", size=(260 + 7 * i, 231), seed=i) for i in range(4)]
    calls = count_forward_passes(monkeypatch)
    both = score_images(paths, ["rine_tiny", "univfd_t"], root, device="cpu", num_workers=0,
                        batch_size=4)  # fmt: skip
    assert calls == [4]
    monkeypatch.undo()

    models = ["cc_concepts", "rine_tiny", "commfor_tiny"]
    common = dict(device="cpu", num_workers=0, batch_size=1, fusion=None)
    clean = tmp_path / "clean.csv"
    score_images(paths, models, root, out=clean, **common)
    out = tmp_path / "resumed.csv"
    with ctrl_c_after(monkeypatch, scoring, 2), pytest.raises(KeyboardInterrupt):
        score_images(paths, models, root, out=out, **common)
    score_images(paths, models, root, out=out, resume=True, **common)
    assert out.read_bytes() == clean.read_bytes()
    table = pd.read_csv(clean)
    np.testing.assert_allclose(table["rine_tiny"], both["rine_tiny"], atol=1e-5)

    bf16 = score_images(paths, models, root, precision="bf16", **common)
    for model in models:
        spread = np.ptp(table[model]) + 1
        np.testing.assert_allclose(bf16[model], table[model], atol=0.1 * spread)
    assert bf16["concepts_cc_concepts"].str.count(":").eq(3).all()


HEADS = Path(__file__).resolve().parent / "fixtures" / "peer_heads"


def test_the_published_heads_download_verified_from_a_mirror_and_load(
    tmp_path, http_root, monkeypatch
):
    """The four committed heads, byte for byte, from a loopback mirror: each verified by its
    declared sha256 and loaded into its family's head (the CLIP towers are not needed)."""
    import shutil

    from clipdet.models import weights as W
    from clipdet.models.families.clipcues import concept_head
    from clipdet.models.registry import known_detectors
    from networks import RineHead

    served, base, hits = http_root
    shutil.copytree(HEADS, served, dirs_exist_ok=True)
    monkeypatch.setenv(W.BASE_URL_ENV, base)
    weights = tmp_path / "weights"
    paths = {}
    for name in ("clipcues_synthclic", "clipcues_synthbuster", "clipcues_concepts", "RINE"):
        config = W.load_model_config(name, weights)
        paths[name] = W.resolve_weights_file(name, config, weights)
        digest = hashlib.sha256(paths[name].read_bytes()).hexdigest()
        assert digest == known_detectors()[name].sha256
    assert sorted(hits) == sorted([
        "/clipcues_synthclic/linear_probe_synthclic.ckpt",
        "/clipcues_synthbuster/linear_probe_synthbuster.ckpt",
        "/clipcues_concepts/antonyms.csv", "/clipcues_concepts/cm_antonyms_combined.ckpt",
        "/RINE/model_2class_trainable.pth"])  # fmt: skip

    from clipdet.models.families import find_family

    for name in ("clipcues_synthclic", "clipcues_synthbuster"):
        family, _ = find_family(known_detectors()[name].config["arch"])
        state = family.convert_state_dict(W.load_state_dict(paths[name]))
        assert state["fc.weight"].shape == (1, 1024) and set(state) == {"fc.weight", "fc.bias"}
    rine = RineHead(24, 1024, 128, 4)  # ViT-L/14's 24 blocks; the 2-class head's sizes
    rine.load_state_dict(W.load_state_dict(paths["RINE"]))
    head = concept_head(paths["clipcues_concepts"], "antonyms.csv")
    assert len(head.names) == 168 and head.names[:2] == ["saturation", "desaturation"]
    x = torch.randn(2, 768)
    with torch.no_grad():
        total = head.contributions(x).sum(1) + head.W_classifier.bias
        torch.testing.assert_close(head(x)[:, 0], total, atol=1e-5, rtol=0)
        assert rine(torch.randn(2, 24 * 1024)).shape == (2, 1)


def test_a_tampered_head_is_refused_in_one_line_and_a_placed_file_is_used(
    tmp_path, http_root, monkeypatch
):
    from clipdet.models import weights as W

    served, base, _ = http_root
    (served / "RINE").mkdir()
    data = bytearray((HEADS / "RINE" / "model_2class_trainable.pth").read_bytes())
    data[-100] ^= 1
    (served / "RINE" / "model_2class_trainable.pth").write_bytes(bytes(data))
    monkeypatch.setenv(W.BASE_URL_ENV, base)
    config = W.load_model_config("RINE", tmp_path / "w")
    with pytest.raises(W.ChecksumError) as refused:
        W.resolve_weights_file("RINE", config, tmp_path / "w")
    assert "\n" not in str(refused.value) and "680d301b" in str(refused.value)
    assert sorted(p.name for p in (tmp_path / "w" / "RINE").iterdir()) == ["config.yaml"]

    # Community Forensics' weights placed by hand (no network here): used as they are
    config = W.load_model_config("CommFor384", tmp_path / "w")
    assert config.arch == "timmclassifier_vit_small_patch16_384"
    placed = tmp_path / "w" / "CommFor384" / "model.safetensors"
    placed.write_bytes(b"placed")
    assert W.resolve_weights_file("CommFor384", config, tmp_path / "w") == placed


@pytest.mark.slow
def test_the_peers_calibrate_and_give_verdicts(peers, tmp_path):
    """`clipdet calibrate` on the new detectors (the domain described in the concept model's
    features), then scoring with the calibration: each detector's verdict, and the concept
    column beside them."""
    from helpers import make_list

    from clipdet.api import calibrate
    from clipdet.options import RunOptions

    root = tmp_path / "weights"
    write_peer_models(root)
    real = make_list(tmp_path, "real", 8, seed0=0)
    listed = pd.read_csv(real)
    listed[listed["typ"] == "real"].to_csv(real, index=False)
    fake = tmp_path / "fake.csv"
    listed[listed["typ"] != "real"].to_csv(fake, index=False)
    models = ["cc_concepts", "rine_tiny", "commfor_tiny"]
    options = RunOptions(device="cpu", num_workers=0, batch_size=4)
    calibration = calibrate(real, models, root, [0.25], fake_csv=fake, options=options)
    calibration.save(tmp_path / "cal.yaml")
    paths = [tmp_path / name for name in listed["filename"]]
    table = score_images(paths, models, root, calibration=str(tmp_path / "cal.yaml"),
                         device="cpu", num_workers=0, batch_size=4)  # fmt: skip
    for model in models:
        assert set(table[f"verdict_{model}"]) <= {"real", "synthetic", "inconclusive"}
    assert table["verdict"].notna().all() and table["concepts_cc_concepts"].str.len().gt(0).all()
    assert np.isfinite(table["calibration_distance"]).all()


def test_a_wrong_concept_checkpoint_or_vocabulary_is_one_clear_error(tmp_path):
    from clipdet.models.families.clipcues import concept_head

    torch.save({"state_dict": {"model.W_concepts.weight": torch.zeros(2, 4)}}, tmp_path / "a.ckpt")
    with pytest.raises(ValueError, match="holds model.text_embeddings"):
        concept_head(tmp_path / "a.ckpt", None)
    torch.save({"state_dict": concept_state()}, tmp_path / "b.ckpt")
    (tmp_path / "few.csv").write_text("attribute_name\nonly_one\n")
    with pytest.raises(ValueError, match="names 1 concepts, the checkpoint has 12"):
        concept_head(tmp_path / "b.ckpt", "few.csv")
    assert concept_head(tmp_path / "b.ckpt", None).names[:2] == ["concept0", "concept1"]
