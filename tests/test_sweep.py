"""`clipdet sweep`: linear probes on two tiny random-weight backbones (open_clip's test ViT
and timm's test_vit, as local files) at three layers each; one pass per batch whatever the
layers; an interrupted sweep continues from its cache; the best row saved and scored."""

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import TIMM_MODEL, TINY_MODEL, count_forward_passes, make_list

from clipdet.cli import main as clipdet
from clipdet.pipeline.backbone_pass import FeatureInfer


@pytest.fixture
def two_backbones(tiny_clip_checkpoint, tiny_timm_checkpoint) -> list[str]:
    return [
        f"timm:{TIMM_MODEL}:{tiny_timm_checkpoint}",
        f"open_clip:{TINY_MODEL}:{tiny_clip_checkpoint}",
    ]


def sweep(tmp_path, csv, backbones, layers="embed,0,-1", *extra, out="sweep.csv") -> int:
    argv = ["sweep", "-i", csv, "-b", ",".join(backbones), "--layers", layers, "--folds", "3",
            "-o", tmp_path / out, "-w", tmp_path / "w", "--n_boot", "50", "-d", "cpu",
            "--num_workers", "0", "-q", *extra]  # fmt: skip
    return clipdet([str(a) for a in argv])


@pytest.mark.slow
def test_two_backbones_three_layers_give_six_rows_and_the_best_is_saved(
    tmp_path, two_backbones, capsys
):
    csv = make_list(tmp_path, "train", 8, 0)
    assert sweep(tmp_path, csv, two_backbones, "embed,0,-1", "--save", "best") == 0
    table = pd.read_csv(tmp_path / "sweep.csv", keep_default_na=False, na_values=[""])
    assert len(table) == 6
    assert sorted(zip(table["backbone"], table["layer"].astype(str), strict=True)) == sorted(
        (b, layer) for b in two_backbones for layer in ("embed", "0", "-1")
    )
    assert {"auc", "auc_lo", "auc_hi", "bacc", "tpr_at_fpr1", "ece", "images_per_s",
            "peak_rss_mb"} <= set(table.columns)  # fmt: skip
    assert (np.diff(table["auc"]) <= 0).all()  # best cross-validated AUC first
    assert (table["auc_lo"] <= table["auc"]).all() and (table["auc"] <= table["auc_hi"]).all()
    assert (table["images"] == 16).all() and (table["skipped"] == 0).all()
    assert (table["images_per_s"] > 0).all() and (table["peak_rss_mb"] > 100).all()
    blocks = dict(zip(table["backbone"] + "|" + table["layer"].astype(str), table["block"],
                      strict=True))  # fmt: skip
    assert blocks[f"{two_backbones[0]}|-1"] == 5 and blocks[f"{two_backbones[1]}|-1"] == 1
    assert (tmp_path / "sweep.png").stat().st_size > 1000
    printed = capsys.readouterr().out
    assert all(b in printed for b in two_backbones) and "auc" in printed

    config = yaml.safe_load((tmp_path / "w" / "best" / "config.yaml").read_text())
    top = table.iloc[0]
    assert config["backbone"] == top["backbone"] and config["arch"] == "probe"
    assert str(config["layer"]) in (str(top["layer"]), str(top["block"]))
    assert config["training"]["sweep"]["cv_auc"] == pytest.approx(top["auc"], abs=1e-6)
    out = tmp_path / "scores.csv"
    assert clipdet(["score", "-i", str(csv), "-o", str(out), "-w", str(tmp_path / "w"), "-m",
                    "best", "-d", "cpu", "--num_workers", "0", "-q"]) == 0  # fmt: skip
    assert pd.read_csv(out)["best"].notna().all()


def test_three_layers_cost_one_pass_as_one_layer_does(tmp_path, two_backbones, monkeypatch):
    csv = make_list(tmp_path, "train", 5, 0)
    passes = count_forward_passes(monkeypatch)
    assert sweep(tmp_path, csv, two_backbones[:1], "embed", out="one.csv") == 0
    one = list(passes)
    passes.clear()  # (decoded in a worker process: the speed counts what the infer stage did)
    assert sweep(tmp_path, csv, two_backbones[:1], "-1,0,embed", "--num_workers", "1",
                 out="three.csv") == 0  # fmt: skip
    assert passes == one == [4, 4, 2]  # 10 images, batches of 4: one pass per batch
    assert (pd.read_csv(tmp_path / "three.csv")["images_per_s"] > 0).all()


def test_an_interrupted_sweep_keeps_its_features_and_continues(
    tmp_path, two_backbones, monkeypatch, capsys
):
    csv = make_list(tmp_path, "train", 6, 0)
    assert sweep(tmp_path, csv, two_backbones[:1], "embed,-1", out="whole.csv") == 0
    original = FeatureInfer.__call__
    calls = []

    def interrupted(self, batch):
        calls.append(len(batch))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(FeatureInfer, "__call__", interrupted)
    assert sweep(tmp_path, csv, two_backbones[:1], "embed,-1") == 130
    assert "run the same command to continue" in capsys.readouterr().err
    cached = list((tmp_path / "sweep.features").rglob("*.npy"))
    assert len(cached) == 2 * 4  # the first batch's 4 images, at both layers
    monkeypatch.setattr(FeatureInfer, "__call__", original)
    passes = count_forward_passes(monkeypatch)
    assert sweep(tmp_path, csv, two_backbones[:1], "embed,-1") == 0
    assert sum(passes) == 12 - 4  # only the images not cached yet
    whole = pd.read_csv(tmp_path / "whole.csv")
    resumed = pd.read_csv(tmp_path / "sweep.csv")
    columns = ["backbone", "layer", "auc", "bacc", "tpr_at_fpr1", "ece"]
    pd.testing.assert_frame_equal(whole[columns], resumed[columns])


def test_bad_images_are_skipped_and_counted_and_rows_say_what_failed(
    tmp_path, two_backbones, caplog
):
    csv = make_list(tmp_path, "train", 5, 0, extra_rows=[("train/missing.png", "real"),
                                                         ("train/notes.png", "gen_x")])  # fmt: skip
    (tmp_path / "train" / "notes.png").write_text("not an image")
    assert sweep(tmp_path, csv, two_backbones[1:], "embed,7") == 0
    table = pd.read_csv(tmp_path / "sweep.csv", keep_default_na=False, na_values=[""])
    good = table[table["layer"] == "embed"].iloc[0]
    assert (good["images"], good["skipped"]) == (10, 2)
    assert "2 unreadable images skipped" in caplog.text
    bad = table[table["layer"] == "7"].iloc[0]  # the tiny ViT has blocks 0 and 1
    assert "block 7 out of range" in bad["error"] and np.isnan(bad["auc"])


def test_pick_chooses_the_saved_row_and_wrong_flags_are_clear(tmp_path, two_backbones, capsys):
    csv = make_list(tmp_path, "train", 5, 0)
    pick = f"{two_backbones[0]}:0"
    assert sweep(tmp_path, csv, two_backbones[:1], "embed,0", "--save", "p", "--pick", pick) == 0
    config = yaml.safe_load((tmp_path / "w" / "p" / "config.yaml").read_text())
    assert (config["backbone"], config["layer"]) == (two_backbones[0], 0)
    assert sweep(tmp_path, csv, two_backbones[:1], "embed", "--save", "q", "--pick", "x:9") == 2
    assert "--pick 'x:9' is not a row of the sweep; valid choices:" in capsys.readouterr().err
    assert sweep(tmp_path, csv, two_backbones[:1], "embed", "--folds", "1") == 2
    assert "--folds must be at least 2" in capsys.readouterr().err
    assert sweep(tmp_path, csv, ["torchhub:dino"], "embed") == 2
    assert "unknown backbone 'torchhub:dino'" in capsys.readouterr().err
