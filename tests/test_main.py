"""main.py end to end: reference flags, output layout, hostile inputs, exit codes."""

import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import REPO, local_run_args, main_command, make_image
from PIL import Image

import main as cli
from clipdet.api import score_images
from clipdet.pipeline import images as images_module
from clipdet.pipeline.scoring import load_models

CLIP_MODELS = "tiny_a,tiny_b"


def run_main(tmp_path, csv, weights_dir, checkpoint, *extra, models=CLIP_MODELS):
    out = tmp_path / "out" / "results.csv"
    argv = ["-i", str(csv), "-o", str(out), *local_run_args(checkpoint, weights_dir, models)]
    argv += extra
    code = cli.main(argv)
    return code, (pd.read_csv(out, keep_default_na=False, na_values=[""]) if out.exists() else None)


def write_csv(path: Path, filenames) -> Path:
    pd.DataFrame({"filename": filenames, "typ": ["real"] * len(filenames)}).to_csv(
        path, index=False
    )
    return path


def test_output_columns_order_and_relative_paths(
    tmp_path, image_dir, weights_dir, tiny_clip_checkpoint
):
    names = [f"images/img{i}.png" for i in (3, 0, 4, 1)]
    code, table = run_main(
        tmp_path, write_csv(tmp_path / "list.csv", names), weights_dir, tiny_clip_checkpoint
    )
    assert code == 0
    assert list(table.columns) == ["filename", "tiny_a", "tiny_b", "fusion", "error"]
    assert table["filename"].tolist() == names
    assert table["error"].isna().all()  # empty cells
    assert np.isfinite(table[["tiny_a", "tiny_b", "fusion"]].to_numpy()).all()
    # fusion is soft-or of the two LLRs
    p = 1 / (1 + np.exp(-table[["tiny_a", "tiny_b"]].to_numpy()))
    expected = np.log(1 - np.prod(1 - p, 1)) - np.log(np.prod(1 - p, 1))
    np.testing.assert_allclose(table["fusion"], expected, atol=1e-6)


def test_scores_do_not_depend_on_batching_or_workers(
    tmp_path, image_dir, weights_dir, tiny_clip_checkpoint
):
    paths = sorted(image_dir.glob("*.png"))
    common = dict(
        models=["tiny_a", "tiny_b", "res_tiny"],
        weights_dir=weights_dir,
        device="cpu",
        backbone_weights=tiny_clip_checkpoint,
    )
    one = score_images(paths, batch_size=1, num_workers=0, **common)
    many = score_images(paths, batch_size=4, num_workers=2, **common)
    cols = ["tiny_a", "tiny_b", "res_tiny", "fusion"]
    np.testing.assert_allclose(one[cols].to_numpy(), many[cols].to_numpy(), rtol=1e-5, atol=1e-5)


def test_absolute_paths_unicode_and_commas(tmp_path, weights_dir, tiny_clip_checkpoint):
    odd = make_image(tmp_path / "dir, with comma" / "ïmage, “quoted”.png", seed=3)
    code, table = run_main(
        tmp_path,
        write_csv(tmp_path / "l.csv", [str(odd), "x.png"]),
        weights_dir,
        tiny_clip_checkpoint,
    )
    assert code == 0
    assert table["filename"].tolist() == [str(odd), "x.png"]
    assert np.isfinite(table.loc[0, "tiny_a"]) and np.isnan(table.loc[1, "tiny_a"])


def _hostile_files(folder: Path) -> dict[str, str]:
    """filename -> expected fragment of its error ('' for files that must be scored)."""
    folder.mkdir()
    make_image(folder / "ok.png", seed=1)
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.png").write_text("not an image")
    data = make_image(folder / "full.jpg", size=(200, 160), format="JPEG").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (folder / "adir").mkdir()
    make_image(folder / "bomb.png", size=(300, 200))
    Image.new("CMYK", (40, 30), (1, 2, 3, 4)).save(folder / "cmyk.jpg")
    Image.fromarray(np.full((30, 20), 50000, np.uint16)).save(folder / "16bit.png")
    make_image(folder / "palette.png", mode="P")
    make_image(folder / "rgba.png", mode="RGBA")
    make_image(folder / "tiny.png", size=(1, 1))
    make_image(folder / "thin.png", size=(4000, 8))
    return {
        "ok.png": "",
        "empty.jpg": "empty file",
        "text.png": "not a readable image",
        "truncated.jpg": "cannot decode",
        "adir": "is a directory",
        "missing.png": "not found",
        "bomb.png": "decompression bomb",
        "cmyk.jpg": "",
        "16bit.png": "",
        "palette.png": "",
        "rgba.png": "",
        "tiny.png": "",
        "thin.png": "",
        "full.jpg": "",
    }


def test_hostile_inputs_get_nan_and_a_message_and_others_are_scored(
    tmp_path, weights_dir, tiny_clip_checkpoint, monkeypatch, capsys
):
    expected = _hostile_files(tmp_path / "h")
    monkeypatch.setattr(images_module, "MAX_IMAGE_PIXELS", 50_000)
    csv = write_csv(tmp_path / "h.csv", [f"h/{name}" for name in expected])
    code, table = run_main(
        tmp_path, csv, weights_dir, tiny_clip_checkpoint, models="tiny_a,res_tiny"
    )
    assert code == 0
    assert len(table) == len(expected)
    for (name, fragment), (_, row) in zip(expected.items(), table.iterrows(), strict=True):
        assert row["filename"] == f"h/{name}"
        if fragment:
            assert fragment in row["error"], (name, row["error"])
            assert np.isnan(row["tiny_a"]) and np.isnan(row["res_tiny"]) and np.isnan(row["fusion"])
        else:
            assert pd.isna(row["error"]), (name, row["error"])
            assert np.isfinite(row["tiny_a"]) and np.isfinite(row["res_tiny"])
    err = capsys.readouterr().err
    assert "6 failed" in err and "h/empty.jpg: ImageLoadError: empty file" in err


def test_strict_exits_1_when_a_row_failed(tmp_path, image_dir, weights_dir, tiny_clip_checkpoint):
    csv = write_csv(tmp_path / "l.csv", ["images/img0.png", "images/nope.png"])
    code, table = run_main(tmp_path, csv, weights_dir, tiny_clip_checkpoint, "--strict")
    assert code == 1 and len(table) == 2  # output still written


@pytest.mark.parametrize(
    "setup,message",
    [
        (lambda p: p / "absent.csv", "input CSV not found"),
        (lambda p: _text(p / "bad.csv", "path,typ\na.png,real\n"), "no 'filename' column"),
    ],
)
def test_fatal_input_errors_are_one_line(
    tmp_path, weights_dir, tiny_clip_checkpoint, capsys, setup, message
):
    code, table = run_main(tmp_path, setup(tmp_path), weights_dir, tiny_clip_checkpoint)
    assert code == 2 and table is None
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0]


def _text(path, content):
    path.write_text(content)
    return path


def test_unknown_model_lists_valid_choices(
    tmp_path, image_dir, weights_dir, tiny_clip_checkpoint, capsys
):
    csv = write_csv(tmp_path / "l.csv", ["images/img0.png"])
    code, _ = run_main(tmp_path, csv, weights_dir, tiny_clip_checkpoint, models="tiny_a,nope")
    assert code == 2
    err = capsys.readouterr().err
    assert "unknown model 'nope'" in err and "Corvi2023" in err and "tiny_b" in err


def test_backbone_runs_once_per_batch_for_two_heads(
    tmp_path, image_dir, weights_dir, tiny_clip_checkpoint, monkeypatch
):
    models = load_models(["tiny_a", "tiny_b"], weights_dir, backbone_weights=tiny_clip_checkpoint)
    backbone = models[0].detector.backbone
    calls = []
    backbone.visual.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    decoded = []
    original = images_module.load_rgb
    monkeypatch.setattr(
        "clipdet.pipeline.prepare.load_rgb",
        lambda p, *args: decoded.append(p) or original(p, *args),
    )
    from clipdet.pipeline.scoring import iter_scores

    paths = [str(p) for p in sorted(image_dir.glob("*.png"))]
    results = list(iter_scores(models, paths, batch_size=2, num_workers=0))
    assert [r.index for r in results] == list(range(5))
    assert calls == [2, 2, 1]  # one backbone pass per batch, shared by both heads
    assert sorted(decoded) == paths  # each image decoded once


@pytest.mark.slow
def test_fusion_none_and_reference_command_line(
    tmp_path, image_dir, weights_dir, tiny_clip_checkpoint
):
    """The reference's command line, run as a script, with --fusion none."""
    csv = write_csv(tmp_path / "l.csv", ["images/img1.png", "images/img2.png"])
    out = tmp_path / "r.csv"
    proc = subprocess.run(
        main_command(
            tiny_clip_checkpoint,
            "--in_csv",
            str(csv),
            "--out_csv",
            str(out),
            "--weights_dir",
            str(weights_dir),
            "--models",
            "tiny_a",
            "--fusion",
            "none",
        ),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(out)
    assert list(table.columns) == ["filename", "tiny_a", "error"]
    assert "2 scored, 0 failed" in proc.stderr
