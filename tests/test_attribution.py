"""Open-set attribution end to end with the tiny backbone: training, scoring columns, shared
backbone pass, block features, the unknown rule, evaluation and the split helper."""

import json

import numpy as np
import open_clip
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import yaml
from helpers import (
    TINY_BACKBONE,
    TINY_CONFIG,
    TINY_MODEL,
    TINY_WIDTH,
    count_forward_passes,
    local_run_args,
    save_picture,
    train_args,
)
from PIL import Image

import compute_metrics as metrics_cli
import split as split_cli
import train as train_cli
from clipdet.api import score_images
from clipdet.evaluation.attribution_metrics import evaluate_attribution, oscr
from clipdet.models.attribution import UNKNOWN, OpenSetRule, attribution_columns
from clipdet.models.factory import BackboneCache
from clipdet.models.preprocess import make_transform
from clipdet.pipeline.features import extract_features, frozen_feature_group
from clipdet.pipeline.resume import PartialWriter, load_partial, partial_path, run_signature
from clipdet.pipeline.scoring import load_models
from clipdet.training.features import feature_config

ARCH = f"opencliplinearnext_{TINY_BACKBONE}"
KNOWN = ("gen_blocky", "gen_noise", "real")  # sorted, as the model stores them
HELD_OUT = "gen_stripes"


def make_class_image(path, typ: str, seed: int):
    """Classes that differ in low-level statistics: colour, blur, noise, texture."""
    rng = np.random.default_rng(seed)
    h, w = (int(v) for v in rng.integers(64, 112, 2))
    y, x = np.mgrid[0:h, 0:w] / 100.0
    phase = rng.uniform(0, 6)
    base = np.stack(
        [0.55 + 0.2 * np.sin(3 * x + phase), 0.45 + 0.2 * y, 0.35 + 0.1 * np.cos(2 * y + phase)], -1
    )
    if typ == "real":  # smooth, warm, blurred
        pixels = base + rng.normal(0, 0.01, base.shape)
    elif typ == "gen_noise":  # cool colours, strong pixel noise
        pixels = base[..., ::-1] + rng.normal(0, 0.15, base.shape)
    elif typ == "gen_blocky":  # green 8x8 blocks
        blocks = rng.uniform(0, 1, (h // 8 + 1, w // 8 + 1, 3)) * [0.3, 0.9, 0.3]
        pixels = np.kron(blocks, np.ones((8, 8, 1)))[:h, :w]
    else:  # held-out generator: saturated magenta stripes
        stripes = (np.sin(x * 40 + phase) > 0).astype(float)
        pixels = np.stack([0.9 * stripes + 0.1, 0.1 + 0 * x, 0.8 * (1 - stripes) + 0.2], -1)
    return save_picture(path, pixels, blur=typ == "real")


def write_list(root, name, per_class: dict, seed0: int, extra_rows=()):
    rows = []
    for typ, n in per_class.items():
        for i in range(n):
            rel = f"{name}/{typ}_{i}.png"
            make_class_image(root / rel, typ, seed0 + 100 * i + len(rows))
            rows.append((rel, typ))
    rows.extend(extra_rows)
    csv = root / f"{name}.csv"
    pd.DataFrame(rows, columns=["filename", "typ"]).to_csv(csv, index=False)
    return csv


def train(root, csv, checkpoint, name, *extra):
    args = train_args(csv, root / "w", name, checkpoint, ARCH)
    return train_cli.main(["--task", "attribution", *args, *extra])


def score(root, checkpoint, filenames, models, **extra):
    """score_images on files of ``root`` with the models of ``root/w``, batches of 4."""
    return score_images(
        [root / f for f in filenames],
        models=models,
        weights_dir=root / "w",
        device="cpu",
        batch_size=4,
        num_workers=0,
        backbone_weights=checkpoint,
        **extra,
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_clip_checkpoint):
    """Attribution models trained on 3 known classes (one unreadable row): on the next-to-last
    features (``attr``) and on block 0 (``attr_b0``); a test list that also holds a held-out
    generator, scored by ``attr`` with main.py's library path."""
    root = tmp_path_factory.mktemp("attribution")
    (root / "train").mkdir()
    (root / "train" / "broken.png").write_bytes(b"not an image")
    train_csv = write_list(
        root, "train", dict.fromkeys(KNOWN, 10), 0, [("train/broken.png", "real")]
    )
    test_csv = write_list(root, "test", {**dict.fromkeys(KNOWN, 6), HELD_OUT: 6}, 50_000)
    assert train(root, train_csv, tiny_clip_checkpoint, "attr") == 0
    assert train(root, train_csv, tiny_clip_checkpoint, "attr_b0", "--block", "0") == 0
    test = pd.read_csv(test_csv)
    scores = score(root, tiny_clip_checkpoint, test["filename"], ["attr"])
    scores["filename"] = test["filename"]
    scores.to_csv(root / "scores.csv", index=False)
    return root, test, scores


def test_folder_is_self_describing_and_loadable(data):
    root, _, _ = data
    folder = root / "w" / "attr"
    config = yaml.safe_load((folder / "config.yaml").read_text())
    assert config["arch"] == ARCH and config["weights_file"] == "weights.pth"
    assert config["task"] == "attribution" and config["classes"] == list(KNOWN)
    assert config["block"] is None
    rule = config["open_set"]
    assert rule["score"] == "energy" and rule["accept_rate"] == 0.95
    assert isinstance(rule["threshold"], float) and "out-of-fold" in rule["fitted_on"]
    record = config["training"]
    assert record["images_per_class"] == dict.fromkeys(KNOWN, 10)
    assert record["images_skipped"] == 1 and record["feature_layer"] == "next_to_last"
    assert record["C"] > 0 and len(record["C_cv"]) == 7
    state = torch.load(folder / "weights.pth", weights_only=True)["model"]
    assert state["fc.weight"].shape == (3, TINY_WIDTH) and state["fc.bias"].shape == (3,)


def test_known_classes_are_attributed_and_held_out_scores_higher(data):
    _, test, scores = data
    columns = ["attr", "attr_confidence", "attr_unknown_score"] + [f"attr_p_{c}" for c in KNOWN]
    assert list(scores.columns) == ["filename", *columns, "error"]
    assert (scores["error"] == "").all()
    probs = scores[[f"attr_p_{c}" for c in KNOWN]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-9)
    np.testing.assert_allclose(scores["attr_confidence"], probs.max(axis=1))
    known = test["typ"].isin(KNOWN).to_numpy()
    closed = np.asarray(KNOWN)[probs.argmax(axis=1)]
    assert np.mean(closed[known] == test["typ"][known]) >= 0.9
    unknown_score = scores["attr_unknown_score"].to_numpy()
    assert unknown_score[~known].mean() > unknown_score[known].mean()
    # the name column: the best class unless the unknown-score is over the stored threshold
    threshold = yaml.safe_load((data[0] / "w" / "attr" / "config.yaml").read_text())["open_set"][
        "threshold"
    ]
    expected = np.where(unknown_score <= threshold, closed, UNKNOWN)
    assert list(scores["attr"]) == list(expected)
    assert (scores["attr"][~known] == UNKNOWN).mean() > 0.5


def test_saved_model_round_trips_to_the_same_probabilities(data, tiny_clip_checkpoint):
    root, test, scores = data
    state = torch.load(root / "w" / "attr" / "weights.pth", weights_only=True)["model"]
    group, transform = frozen_feature_group(
        feature_config(ARCH), BackboneCache(tiny_clip_checkpoint)
    )
    features, _ = extract_features(group, transform, [str(root / f) for f in test["filename"]])
    logits = features.astype(np.float64) @ state["fc.weight"].double().numpy().T
    logits += state["fc.bias"].double().numpy()
    probs = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
    np.testing.assert_allclose(scores[[f"attr_p_{c}" for c in KNOWN]], probs, atol=1e-4)
    np.testing.assert_allclose(
        scores["attr_unknown_score"], -torch.logsumexp(torch.from_numpy(logits), 1), atol=1e-4
    )


def test_block_features_are_the_cls_token_of_that_block(tmp_path, tiny_clip_checkpoint):
    """Re-enacted with the full open_clip model and a hook of our own on block 0."""
    images = [make_class_image(tmp_path / f"{t}.png", t, 7) for t in KNOWN]
    group, transform = frozen_feature_group(
        feature_config(ARCH, block=0), BackboneCache(tiny_clip_checkpoint)
    )
    assert group.layer == 0 and group.num_features == TINY_WIDTH and "block0" in group.identity
    ours, errors = extract_features(group, transform, [str(p) for p in images])
    assert errors == [""] * 3

    model = open_clip.create_model(TINY_MODEL, pretrained=str(tiny_clip_checkpoint)).eval()
    seen = []
    model.visual.transformer.resblocks[0].register_forward_hook(
        lambda module, args, output: seen.append(output)
    )
    prep = make_transform("Clip224", "clip")
    with torch.no_grad():
        model.encode_image(torch.stack([prep(Image.open(p).convert("RGB")) for p in images]))
    tokens = seen[0] if model.visual.transformer.batch_first else seen[0].transpose(0, 1)
    np.testing.assert_allclose(ours, F.normalize(tokens[:, 0], dim=-1).numpy(), atol=1e-5)

    # negative blocks count from the end; out of range is a clear error
    last, _ = frozen_feature_group(
        feature_config(ARCH, block=-1), BackboneCache(tiny_clip_checkpoint)
    )
    assert last.layer == 1
    with pytest.raises(ValueError, match=r"block 5 out of range: this ViT has blocks 0\.\.1"):
        frozen_feature_group(feature_config(ARCH, block=5), BackboneCache(tiny_clip_checkpoint))


def test_detectors_and_block_attributor_share_one_pass_and_detectors_are_unchanged(
    data, weights_dir, tiny_clip_checkpoint, monkeypatch
):
    root, test, _ = data
    assert yaml.safe_load((root / "w" / "attr_b0" / "config.yaml").read_text())["block"] == 0
    for name in ("tiny_a", "tiny_b"):  # the detectors beside the attribution models
        target = root / "w" / name
        target.mkdir(exist_ok=True)
        for f in (weights_dir / name).iterdir():
            (target / f.name).write_bytes(f.read_bytes())
    names = test["filename"][:8]
    alone = score(root, tiny_clip_checkpoint, names, ["tiny_a", "tiny_b"])
    calls = count_forward_passes(monkeypatch)
    mixed = score(root, tiny_clip_checkpoint, names, ["tiny_a", "attr", "tiny_b", "attr_b0"])
    assert calls == [4, 4]  # one pass per batch for two detectors and two attributors
    pd.testing.assert_frame_equal(
        mixed[["filename", "tiny_a", "tiny_b", "fusion"]], alone.drop(columns="error")
    )
    assert list(mixed.columns[:4]) == ["filename", "tiny_a", "tiny_b", "fusion"]
    assert {"attr", "attr_b0", "attr_b0_p_real", "attr_unknown_score"} <= set(mixed.columns)
    calls.clear()
    score(root, tiny_clip_checkpoint, names[:4], ["attr_b0"])
    assert calls == [4]


def test_main_writes_attribution_columns_and_resumes(tmp_path, data, tiny_clip_checkpoint, capsys):
    import main as main_cli

    root, test, _ = data
    out = tmp_path / "out.csv"
    argv = ["-i", str(root / "test.csv"), "-o", str(out)]
    argv += local_run_args(tiny_clip_checkpoint, root / "w", "attr")
    assert main_cli.main(argv) == 0
    clean = out.read_bytes()
    table = pd.read_csv(out, keep_default_na=False)
    assert "attr_p_gen_noise" in table.columns and "fusion" not in table.columns
    err = capsys.readouterr().err
    assert "flagged" not in err  # no detector, no verdict
    counts = table["attr"].value_counts()
    assert "attributed by attr: " + ", ".join(f"{k} {v}" for k, v in counts.items()) in err

    # an interrupted run: half the rows in the partial file, then --resume
    models = load_models(["attr"], root / "w", backbone_weights=tiny_clip_checkpoint)
    paths = [str(root / f) for f in test["filename"]]
    from clipdet.options import RunOptions
    from clipdet.pipeline.run import options_signature
    from clipdet.pipeline.scoring import iter_scores

    signature = run_signature(paths, models) | options_signature(RunOptions())
    writer = PartialWriter(partial_path(out), signature, False)
    for result in iter_scores(models, paths[:12]):
        writer.write(test["filename"][result.index], result)
    writer.close()
    row = json.loads(partial_path(out).read_text().splitlines()[1])
    assert set(row["logits"]) == {"attr"} and len(row["logits"]["attr"]) == 3
    done = load_partial(partial_path(out), signature, models)
    assert sorted(done) == list(range(12))
    out.unlink()
    assert main_cli.main([*argv, "--resume"]) == 0
    assert out.read_bytes() == clean and not partial_path(out).exists()


def test_terminal_table_for_attribution(data, tiny_clip_checkpoint, capsys):
    import main as main_cli

    root, test, scores = data
    image = str(root / test["filename"][0])
    args = [image, "-w", str(root / "w"), "-m", "attr", "--backbone_weights"]
    assert main_cli.main([*args, str(tiny_clip_checkpoint), "-d", "cpu", "-q"]) == 0
    header, row = (line.split() for line in capsys.readouterr().out.splitlines()[:2])
    assert row[header.index("attr")] == scores["attr"][0]  # the class (or unknown) of the image
    assert row[header.index("attr_confidence")] == f"{scores['attr_confidence'][0]:.3f}"


def train_message(tmp_path, checkpoint, rows, capsys, *extra):
    for name, typ in rows:
        if not (tmp_path / name).exists():
            make_class_image(tmp_path / name, typ if typ in KNOWN else "real", len(name))
    csv = tmp_path / "l.csv"
    pd.DataFrame(rows, columns=["filename", "typ"]).to_csv(csv, index=False)
    assert train(tmp_path, csv, checkpoint, "bad", *extra) == 2
    return capsys.readouterr().err


def test_a_class_with_fewer_than_two_images_is_refused(tmp_path, tiny_clip_checkpoint, capsys):
    rows = [("a.png", "real"), ("b.png", "real"), ("c.png", "gen_noise"), ("d.png", "gen_noise")]
    err = train_message(tmp_path, tiny_clip_checkpoint, [*rows, ("e.png", "gen_blocky")], capsys)
    assert "at least 2 usable images each" in err and "'gen_blocky': 1" in err
    (tmp_path / "f.png").write_bytes(b"")  # its only image is unreadable
    err = train_message(tmp_path, tiny_clip_checkpoint, [*rows, ("f.png", "gen_x")], capsys)
    assert "no usable image for ['gen_x']" in err and "1 unreadable skipped" in err
    err = train_message(tmp_path, tiny_clip_checkpoint, [*rows, ("g.png", "unknown")], capsys)
    assert "'unknown' is reserved" in err


def test_validation_list_sets_the_threshold_at_the_accept_rate(
    data, tmp_path, tiny_clip_checkpoint
):
    root, _, _ = data
    val_csv = write_list(root, "val", {**dict.fromkeys(KNOWN, 7), HELD_OUT: 3}, 90_000)
    extra = ["--val_csv", str(val_csv), "--unknown_score", "msp", "--accept_rate", "0.9"]
    assert train(root, root / "train.csv", tiny_clip_checkpoint, "attr_val", *extra) == 0
    config = yaml.safe_load((root / "w" / "attr_val" / "config.yaml").read_text())
    assert config["open_set"]["fitted_on"].startswith("21 known-class images of")
    assert config["training"]["validation"]["images"] == 21
    val = pd.read_csv(val_csv)
    known = val[val["typ"].isin(KNOWN)]
    scores = score(root, tiny_clip_checkpoint, known["filename"], ["attr_val"])
    accepted = scores["attr_val"] != UNKNOWN
    assert accepted.mean() >= 0.9 and accepted.mean() < 0.9 + 1 / 21 + 1e-9  # the smallest such
    np.testing.assert_allclose(scores["attr_val_unknown_score"], 1 - scores["attr_val_confidence"])


def test_open_set_rule_threshold_lies_midway_between_fitted_scores():
    logits = np.array([[4.0, 0.0], [3.0, 0.0], [2.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    rule = OpenSetRule.fit(logits, "msp", 0.8)
    scores = rule.unknown_score(logits)  # increasing: the 4th must be accepted, the 5th not
    assert rule.accepts(logits).sum() == 4
    assert rule.threshold == pytest.approx((scores[3] + scores[4]) / 2)
    # ties with the last accepted score move the threshold to the next distinct one
    tied = np.array([[2.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    rule = OpenSetRule.fit(tied, "energy", 0.5)
    energy = rule.unknown_score(tied)
    assert rule.accepts(tied).sum() == 3
    assert rule.threshold == pytest.approx((energy[1] + energy[3]) / 2)
    # accepting all: beyond the largest by half the mean gap (here 0.5 of msp's steps)
    everything = OpenSetRule.fit(logits, "msp", 1.0)
    gap = (scores.max() - scores.min()) / 4
    assert everything.threshold == pytest.approx(scores.max() + gap / 2)
    single = OpenSetRule.fit(logits[:1], "energy", 1.0)
    assert single.threshold > rule.unknown_score(logits[:1])[0] + 1e-4
    with pytest.raises(ValueError, match="valid choices: energy, msp"):
        OpenSetRule("maxlogit", 0.0)
    with pytest.raises(ValueError, match=r"accept rate must be in \(0, 1\]"):
        OpenSetRule.fit(logits, "msp", 0.0)


def test_columns_of_a_failed_image_are_empty():
    from clipdet.models.attribution import AttributionSpec

    spec = AttributionSpec(("a", "b"), None, OpenSetRule("msp", 0.2))
    cols = attribution_columns("m", spec, np.array([[2.0, 0.0], [np.nan, np.nan], [0.1, 0.0]]))
    assert list(cols["m"]) == ["a", "", UNKNOWN]
    assert np.isnan(cols["m_confidence"][1]) and np.isnan(cols["m_p_b"][1])
    assert cols["m_unknown_score"][2] > 0.2 >= cols["m_unknown_score"][0]


def test_oscr_by_hand():
    # known: scores 0.1 (correct), 0.2 (wrong), 0.3 (correct); unknown: 0.15, 0.35
    known_correct = np.array([True, False, True])
    value = oscr(known_correct, np.array([0.1, 0.2, 0.3]), np.array([0.15, 0.35]))
    # thresholds 0.1, 0.15, 0.2, 0.3, 0.35 -> (FPR, CCR): (0,1/3) (.5,1/3) (.5,1/3) (.5,2/3) (1,2/3)
    expected = 0.5 * (1 / 3) + 0.5 * (2 / 3)  # trapezoids from (0, 0); vertical steps add 0
    assert value == pytest.approx(expected)
    perfect = oscr(np.array([True, True]), np.array([0.0, 0.1]), np.array([0.5, 0.6]))
    assert perfect == pytest.approx(1.0)


def hand_made_scores(tmp_path):
    rows = [  # filename, typ, decision, p_a, p_b, unknown_score
        ("1", "a", "a", 0.9, 0.1, 0.1),
        ("2", "a", "b", 0.4, 0.6, 0.4),
        ("3", "b", "b", 0.2, 0.8, 0.2),
        ("4", "b", "unknown", 0.3, 0.7, 0.7),
        ("5", "c", "unknown", 0.5, 0.5, 0.9),
        ("6", "c", "a", 0.6, 0.4, 0.3),
    ]
    labels = pd.DataFrame([(r[0], r[1]) for r in rows], columns=["filename", "typ"])
    scores = pd.DataFrame(
        [(r[0], r[2], max(r[3], r[4]), r[5], r[3], r[4], "") for r in rows],
        columns=["filename", "m", "m_confidence", "m_unknown_score", "m_p_a", "m_p_b", "error"],
    )
    labels.to_csv(tmp_path / "in.csv", index=False)
    scores.to_csv(tmp_path / "scores.csv", index=False)
    return tmp_path / "in.csv", tmp_path / "scores.csv"


def test_attribution_figures_on_a_hand_made_table(tmp_path):
    in_csv, scores_csv = hand_made_scores(tmp_path)
    result = evaluate_attribution(in_csv, scores_csv, ["c"])
    row = result.table.loc["m"]
    assert row["closed_acc"] == pytest.approx(3 / 4)  # argmax: a, b, b, b
    assert row["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)  # F1(a) = 2/3, F1(b) = 4/5
    known_scores, unknown_scores = [0.1, 0.4, 0.2, 0.7], [0.9, 0.3]
    pairs = [(u > k) + 0.5 * (u == k) for u in unknown_scores for k in known_scores]
    assert row["auroc"] == pytest.approx(np.mean(pairs))
    # accept when score <= t; (FPR, CCR) at t = 0.1, 0.2, 0.3, 0.4, 0.7, 0.9:
    # (0, 1/4) (0, 2/4) (1/2, 2/4) (1/2, 2/4) (1/2, 3/4) (1, 3/4) -> 0.5 * 2/4 + 0.5 * 3/4
    assert row["oscr"] == pytest.approx(0.625)
    assert row["open_acc"] == pytest.approx(3 / 6)  # 1, 3 and 5 are right
    assert row["known_accepted"] == pytest.approx(3 / 4)
    assert row["unknown_rejected"] == pytest.approx(1 / 2)
    assert (row["n_known"], row["n_unknown"]) == (4, 2)
    expected = pd.DataFrame(
        [[1, 1, 0], [0, 1, 1], [1, 0, 1]],
        index=pd.Index(["a", "b", "c"], name="true"),
        columns=pd.Index(["a", "b", "unknown"], name="predicted"),
    )
    pd.testing.assert_frame_equal(result.confusion["m"], expected)


def test_compute_metrics_attribution_cli(data, tmp_path, capsys):
    root, _, _ = data
    tab, plots = tmp_path / "tab.csv", tmp_path / "plots"
    argv = ["--task", "attribution", "-i", str(root / "test.csv"), "-o", str(root / "scores.csv")]
    code = metrics_cli.main(
        [*argv, "--unknown", HELD_OUT, "--save_tab", str(tab), "--plot", str(plots)]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "closed_acc" in out and "oscr" in out and "confusion matrix of attr" in out
    table = pd.read_csv(tab, index_col="model")
    assert table.loc["attr", "closed_acc"] >= 0.9 and table.loc["attr", "auroc"] > 0.5
    assert (table.loc["attr", "n_known"], table.loc["attr", "n_unknown"]) == (18, 6)
    confusion = pd.read_csv(plots / "confusion_attr.csv", index_col="true")
    assert list(confusion.index) == [*KNOWN, HELD_OUT]
    assert list(confusion.columns) == [*KNOWN, UNKNOWN] and confusion.to_numpy().sum() == 24
    png = Image.open(plots / "confusion_attr.png")
    assert png.size[0] > 300 and png.size[1] > 200

    # the model's own class cannot be "unknown"; detection tables skip attribution columns
    assert metrics_cli.main([*argv, "--unknown", "real"]) == 2
    assert "which model 'attr' was trained on" in capsys.readouterr().err
    assert metrics_cli.main(["-i", str(root / "test.csv"), "-o", str(root / "scores.csv")]) == 2
    assert "use --task attribution" in capsys.readouterr().err


def test_split_keeps_held_out_generators_for_test(tmp_path):
    rows = [(f"img/{t}_{i}.png", t) for t in ("real", "a", "b", "c") for i in range(10)]
    rows += [("img/d_0.png", "d"), ("img/d_1.png", "d"), ("img/d_2.png", "d")]
    pd.DataFrame(rows, columns=["filename", "typ"]).to_csv(tmp_path / "all.csv", index=False)
    argv = ["-i", str(tmp_path / "all.csv"), "--unknown", "c", "--seed", "3"]
    assert split_cli.main([*argv, "-o", str(tmp_path / "s1")]) == 0
    assert split_cli.main([*argv, "-o", str(tmp_path / "s2")]) == 0
    parts = {n: pd.read_csv(tmp_path / "s1" / f"{n}.csv") for n in ("train", "val", "test")}
    for n in parts:  # same seed, same split
        assert (tmp_path / "s1" / f"{n}.csv").read_bytes() == (
            tmp_path / "s2" / f"{n}.csv"
        ).read_bytes()
    assert set(parts["train"]["typ"]) == {"real", "a", "b", "d"}
    assert set(parts["val"]["typ"]) == {"real", "a", "b"}  # d: 3 images, 2 kept for train
    assert (parts["test"]["typ"] == "c").sum() == 10
    counts = {n: p["typ"].value_counts().to_dict() for n, p in parts.items()}
    assert (
        counts["train"]["real"] == 6 and counts["val"]["real"] == 2 and counts["test"]["real"] == 2
    )
    assert counts["train"]["d"] == 2 and counts["test"]["d"] == 1
    names = pd.concat(parts.values())["filename"]
    assert sorted(names) == sorted("../" + f for f, _ in rows) and names.is_unique
    assert split_cli.main([*argv[:2], "-o", str(tmp_path / "s3"), "--seed", "4"]) == 0
    other = pd.read_csv(tmp_path / "s3" / "train.csv")
    assert set(other["filename"]) != set(parts["train"]["filename"])


def test_split_refuses_bad_requests(tmp_path, capsys):
    rows = [("x.png", "real"), ("y.png", "real"), ("z.png", "a")]
    pd.DataFrame(rows, columns=["filename", "typ"]).to_csv(tmp_path / "all.csv", index=False)
    base = ["-i", str(tmp_path / "all.csv"), "-o", str(tmp_path / "s")]
    assert split_cli.main([*base, "--unknown", "zz"]) == 2
    assert "--unknown typs not in" in capsys.readouterr().err
    assert split_cli.main(base) == 2
    assert "typ 'a' has 1 image(s): at least 2 needed" in capsys.readouterr().err


def test_feature_cache_keeps_block_features_apart_and_reuses_them(
    data, tiny_clip_checkpoint, monkeypatch, tmp_path
):
    root, test, _ = data
    names, cache = test["filename"][:4], tmp_path / "cache"
    calls = count_forward_passes(monkeypatch)
    first = score(root, tiny_clip_checkpoint, names, ["attr", "attr_b0"], feature_cache=cache)
    assert calls == [4]
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 8  # 4 images x 2 layers
    calls.clear()
    again = score(root, tiny_clip_checkpoint, names, ["attr", "attr_b0"], feature_cache=cache)
    assert calls == []
    pd.testing.assert_frame_equal(first, again)


def test_block_is_refused_for_detection_training(tmp_path, tiny_clip_checkpoint, capsys):
    csv = write_list(tmp_path, "l", {"real": 2, "gen_noise": 2}, 0)
    argv = ["-i", str(csv), "-w", str(tmp_path / "w"), "-n", "x", "--block", "0"]
    assert train_cli.main([*argv, "--backbone_weights", str(tiny_clip_checkpoint), "-q"]) == 2
    assert "--block applies to --task attribution" in capsys.readouterr().err


def test_an_explicit_detection_task_is_a_detector(weights_dir, tmp_path, tiny_clip_checkpoint):
    from clipdet.models.factory import create_detector

    config = yaml.safe_load((weights_dir / "tiny_a" / "config.yaml").read_text())
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "config.yaml").write_text(yaml.safe_dump(config | {"task": "detection"}))
    (tmp_path / "d" / "weights.pth").write_bytes(
        (weights_dir / "tiny_a" / "weights.pth").read_bytes()
    )
    model = create_detector("d", tmp_path, BackboneCache(tiny_clip_checkpoint))
    assert model.task == "detection" and model.attribution is None


@pytest.mark.parametrize(
    "change,message",
    [
        ({"classes": ["only"]}, "'classes' must list at least 2 class names"),
        ({"classes": ["a", "unknown", "b"]}, "must be distinct and not 'unknown'"),
        ({"open_set": {"score": "energy"}}, "'open_set' needs 'score' and 'threshold'"),
        ({"open_set": {"score": "odin", "threshold": 1}}, "valid choices: energy, msp"),
        ({"block": "12"}, "'block' must be an integer or null"),
        ({"task": "segmentation"}, "unknown task 'segmentation'"),
        (
            {"classes": ["a", "b"]},
            r"fc.weight has shape \(3, 64\), the architecture expects \(2, 64\)",
        ),
    ],
)
def test_broken_attribution_configs_are_clear_errors(
    data, tmp_path, tiny_clip_checkpoint, change, message
):
    from clipdet.models.factory import create_detector

    root, _, _ = data
    config = yaml.safe_load((root / "w" / "attr" / "config.yaml").read_text()) | change
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "m" / "weights.pth").write_bytes((root / "w" / "attr" / "weights.pth").read_bytes())
    with pytest.raises(ValueError, match=message):
        create_detector("m", tmp_path, BackboneCache(tiny_clip_checkpoint))


def test_attributor_module_forward_matches_the_batch_path(data, tiny_clip_checkpoint):
    root, test, _ = data
    [model] = load_models(["attr_b0"], root / "w", backbone_weights=tiny_clip_checkpoint)
    images = [Image.open(root / f).convert("RGB") for f in test["filename"][:3]]
    with torch.no_grad():
        logits = model.detector(torch.stack([model.transform(i) for i in images])).double()
    table = score(root, tiny_clip_checkpoint, test["filename"][:3], ["attr_b0"])
    probs = table[[f"attr_b0_p_{c}" for c in KNOWN]].to_numpy()
    np.testing.assert_allclose(probs, torch.softmax(logits, 1).numpy(), atol=1e-5)


def test_numeric_class_names_and_failed_rows_are_read_as_text(tmp_path):
    labels = pd.DataFrame({"filename": ["a", "b", "c", "d"], "typ": ["1", "2", "1", "9"]})
    scores = pd.DataFrame(
        {
            "filename": ["a", "b", "c", "d"],
            "m": ["1", "2", "", "2"],  # all numeric: pandas would read 1.0, 2.0
            "m_confidence": [0.9, 0.8, np.nan, 0.6],
            "m_unknown_score": [0.1, 0.2, np.nan, 0.9],
            "m_p_1": [0.9, 0.2, np.nan, 0.4],
            "m_p_2": [0.1, 0.8, np.nan, 0.6],
            "error": ["", "", "broken", ""],
        }
    )
    labels.to_csv(tmp_path / "in.csv", index=False)
    scores.to_csv(tmp_path / "scores.csv", index=False)
    row = evaluate_attribution(tmp_path / "in.csv", tmp_path / "scores.csv", ["9"]).table.loc["m"]
    assert (row["n_known"], row["n_unknown"]) == (2, 1)  # the failed row is left out
    assert row["closed_acc"] == 1.0 and row["auroc"] == 1.0
    assert row["open_acc"] == pytest.approx(2 / 3) and row["unknown_rejected"] == 0.0


def test_unreadable_images_get_empty_attribution_and_an_error(
    data, tmp_path, tiny_clip_checkpoint, capsys
):
    import main as main_cli

    root, test, _ = data
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    paths = [
        str(root / test["filename"][0]),
        str(tmp_path / "broken.jpg"),
        str(tmp_path / "gone.png"),
    ]
    out = tmp_path / "out.csv"
    argv = [*paths, "-o", str(out), "-w", str(root / "w"), "-m", "attr,attr_b0", "-q"]
    assert main_cli.main([*argv, "--backbone_weights", str(tiny_clip_checkpoint), "-d", "cpu"]) == 0
    table = pd.read_csv(out, keep_default_na=False)
    assert len(table) == 3 and table["error"][0] == ""
    assert table["attr"][0] in KNOWN + (UNKNOWN,)
    for row in (1, 2):
        assert table["error"][row] != "" and table["attr"][row] == table["attr_b0"][row] == ""
        assert table["attr_confidence"][row] == "" and table["attr_b0_p_real"][row] == ""
    assert "1 scored, 2 failed" in capsys.readouterr().err


def test_projected_features_arch_trains_an_attributor(data, tiny_clip_checkpoint):
    root, test, _ = data
    arch = ["--arch", f"opencliplinear_{TINY_BACKBONE}"]  # overrides train()'s --arch
    assert train(root, root / "train.csv", tiny_clip_checkpoint, "attr_proj", *arch) == 0
    state = torch.load(root / "w" / "attr_proj" / "weights.pth", weights_only=True)["model"]
    assert state["fc.weight"].shape == (3, TINY_CONFIG["embed_dim"])  # the projection's width
    table = score(root, tiny_clip_checkpoint, test["filename"][:4], ["attr_proj"])
    assert (table["error"] == "").all() and table["attr_proj"].isin([*KNOWN, UNKNOWN]).all()


def test_confusion_files_keep_dotted_model_names(tmp_path):
    in_csv, scores_csv = hand_made_scores(tmp_path)
    scores = pd.read_csv(scores_csv, keep_default_na=False)
    scores.columns = [c.replace("m", "attr.v2", 1) if c.startswith("m") else c for c in scores]
    scores.to_csv(scores_csv, index=False)
    argv = ["--task", "attribution", "-i", str(in_csv), "-o", str(scores_csv), "--unknown", "c"]
    assert metrics_cli.main([*argv, "--plot", str(tmp_path / "plots")]) == 0
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "confusion_attr.v2.csv",
        "confusion_attr.v2.png",
    ]


def test_a_negative_block_in_a_config_counts_from_the_end(data, tmp_path, tiny_clip_checkpoint):
    from clipdet.models.factory import create_detector

    root, test, _ = data
    config = yaml.safe_load((root / "w" / "attr_b0" / "config.yaml").read_text())
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.yaml").write_text(yaml.safe_dump(config | {"block": -2}))
    (tmp_path / "m" / "weights.pth").write_bytes(
        (root / "w" / "attr_b0" / "weights.pth").read_bytes()
    )
    model = create_detector("m", tmp_path, BackboneCache(tiny_clip_checkpoint))
    assert model.detector.layer == 0 and model.detector.backbone_key.endswith("|block0")
    image = Image.open(root / test["filename"][0]).convert("RGB")
    with torch.no_grad():
        logits = model.detector(model.transform(image)[None])
    table = score(root, tiny_clip_checkpoint, test["filename"][:1], ["attr_b0"])
    np.testing.assert_allclose(
        table[[f"attr_b0_p_{c}" for c in KNOWN]].to_numpy()[0],
        torch.softmax(logits.double(), 1).numpy()[0],
        atol=1e-5,
    )


@pytest.mark.parametrize("threads", [1, 2])
def test_threshold_holds_for_the_logits_scoring_computes(tmp_path, tiny_clip_checkpoint, threads):
    """The threshold lies between fitted scores, so on the very images it was fitted on,
    scoring accepts at least the stored share for every accept rate, whatever the batch size
    and thread count that compute the logits again (a threshold placed on a fitted score
    decided that image by its last bit: 22 of 23 on another machine)."""
    from clipdet.models.heads import AttributionHead
    from clipdet.pipeline.infer import apply_head
    from clipdet.training.detector import save_head

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, TINY_WIDTH))

    def features(n):
        y = np.arange(n) % 3
        x = centres[y] + rng.normal(scale=1.5, size=(n, TINY_WIDTH))
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), y.astype(str)

    head = AttributionHead(C=10.0).fit(*features(60))
    val, _ = features(40)
    extra = {"task": "attribution", "classes": [str(c) for c in head.classes_], "block": None}
    extra["open_set"] = {"score": "energy", "threshold": 0.0}
    features = {"arch": ARCH, "norm_type": "clip", "patch_size": "Clip224"}
    save_head(tmp_path / "m", features, "m", head, {}, extra)
    (model,) = load_models(["m"], tmp_path, backbone_weights=tiny_clip_checkpoint)
    fitted_on = head.scoring_logits(val)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for batch in (1, 4, 40):  # as the scoring loop applies a head, in batches
            with torch.inference_mode():
                batches = [
                    apply_head(model, (list(range(len(b))), torch.from_numpy(b)))
                    for b in np.split(val, len(val) // batch)
                ]
                scored = np.stack([logits for batch_ in batches for _, logits in batch_])
            for k in range(20, 41):
                for score in ("energy", "msp"):
                    rule = OpenSetRule.fit(fitted_on, score, k / 40)
                    accepted = int(rule.accepts(scored).sum())
                    assert accepted >= k, f"{score} accept rate {k}/40, batch {batch}"
    finally:
        torch.set_num_threads(before)
