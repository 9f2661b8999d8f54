"""Laundering operations, chains, seeds, launder.py and the clean-vs-laundered comparison."""

import io
import json

import numpy as np
import pandas as pd
import pytest
from helpers import local_run_args, make_image
from PIL import Image

import compute_metrics as metrics_cli
import launder as launder_cli
import main as main_cli
from clipdet.pipeline.perturb import PRESETS, Perturbation, parse_chain


def _photo(w=200, h=150, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = 120 + 60 * np.sin(x / 9.0)[..., None] * np.cos(y / 7.0)[..., None]
    return Image.fromarray(np.clip(base + rng.normal(0, 10, (h, w, 3)), 0, 255).astype(np.uint8))


def test_jpeg_quality_sets_quantisation_and_size():
    image = _photo()
    low = Perturbation("jpeg:30")(image, 0)
    high = Perturbation("jpeg:95")(image, 0)
    assert low.record == [{"op": "jpeg", "quality": 30}]
    assert len(low.encoded_jpeg) < len(high.encoded_jpeg)
    q_low = Image.open(io.BytesIO(low.encoded_jpeg)).quantization[0]
    q_high = Image.open(io.BytesIO(high.encoded_jpeg)).quantization[0]
    assert np.mean(q_low) > np.mean(q_high)
    assert low.image.size == image.size and low.image.mode == "RGB"


def test_resize_dimensions_and_interpolation():
    out = Perturbation("resize:0.5/bilinear")(_photo(200, 150), 0)
    assert out.image.size == (100, 75)
    assert out.record[0]["interpolation"] == "bilinear"


@pytest.mark.parametrize("spec,size", [("ccrop:0.5", (100, 75)), ("ccrop:64", (64, 64))])
def test_centre_crop_box(spec, size):
    image = _photo(200, 150)
    out = Perturbation(spec)(image, 0)
    assert out.image.size == size
    left, top = (200 - size[0]) // 2, (150 - size[1]) // 2
    assert out.record[0]["box"] == (left, top, left + size[0], top + size[1])
    assert np.array_equal(
        np.asarray(out.image), np.asarray(image)[top : top + size[1], left : left + size[0]]
    )


def test_random_crop_is_reproducible_per_seed_and_index():
    image = _photo()
    a = Perturbation("crop:0.3..0.9", seed=1)(image, 7)
    b = Perturbation("crop:0.3..0.9", seed=1)(image, 7)
    c = Perturbation("crop:0.3..0.9", seed=2)(image, 7)
    assert a.record == b.record and np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert a.record != c.record


def test_blur_and_noise_change_pixels_as_specified():
    image = _photo()
    blurred = np.asarray(Perturbation("blur:2")(image, 0).image, float)
    assert (
        np.abs(np.diff(blurred, axis=1)).mean()
        < np.abs(np.diff(np.asarray(image, float), axis=1)).mean()
    )
    noisy = np.asarray(
        Perturbation("noise:20")(Image.new("RGB", (300, 300), (128,) * 3), 0).image, float
    )
    assert abs(noisy.std() - 20) < 1.0 and abs(noisy.mean() - 128) < 0.5


def test_chain_composes_in_order():
    out = Perturbation("ccrop:100,resize:0.5,jpeg:80")(_photo(200, 150), 0)
    assert [r["op"] for r in out.record] == ["ccrop", "resize", "jpeg"]
    assert out.image.size == (50, 50) and out.encoded_jpeg is not None
    reverse = Perturbation("resize:0.5,ccrop:100")(_photo(200, 150), 0)
    assert reverse.image.size == (100, 75)


def test_presets_expand():
    assert [s.name for s in parse_chain("postprocessed")] == ["crop", "resize", "jpeg"]
    assert set(PRESETS) >= {"postprocessed"}


@pytest.mark.parametrize(
    "spec,message",
    [
        ("sharpen:1", "unknown operation 'sharpen'"),
        ("jpeg:101", "values must satisfy"),
        ("jpeg:90..60", "values must satisfy"),
        ("resize:half", "expected resize:VALUE"),
        ("resize:0.5/cubic", "unknown option 'cubic'"),
    ],
)
def test_bad_parameters_are_clear_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_chain(spec)


def test_launder_writes_images_and_list(tmp_path):
    for i in range(3):
        make_image(tmp_path / "src" / f"a{i}.png", size=(120, 90), seed=i)
    pd.DataFrame(
        {
            "filename": ["src/a0.png", "src/a1.png", "src/gone.png", "src/a2.png"],
            "typ": ["real", "gen", "gen", "gen"],
        }
    ).to_csv(tmp_path / "in.csv", index=False)
    out = tmp_path / "out"
    assert (
        launder_cli.main(
            ["-i", str(tmp_path / "in.csv"), "-o", str(out), "--ops", "resize:0.5,jpeg:70", "-q"]
        )
        == 0
    )
    table = pd.read_csv(out / "list.csv")
    assert table["typ"].tolist() == ["real", "gen", "gen"]
    assert table["source"].tolist() == ["src/a0.png", "src/a1.png", "src/a2.png"]
    assert all(name.endswith(".jpg") for name in table["filename"])
    assert Image.open(out / table["filename"][0]).size == (60, 45)
    assert json.loads(table["params"][0]) == [
        {"op": "resize", "scale": 0.5, "size": [60, 45], "interpolation": "bicubic"},
        {"op": "jpeg", "quality": 70},
    ]
    assert "file not found" in pd.read_csv(out / "failed.csv")["error"][0]
    first = (out / table["filename"][1]).read_bytes()
    launder_cli.main(
        [
            "-i",
            str(tmp_path / "in.csv"),
            "-o",
            str(tmp_path / "again"),
            "--ops",
            "resize:0.5,jpeg:70",
            "-q",
        ]
    )
    assert (tmp_path / "again" / table["filename"][1]).read_bytes() == first


@pytest.mark.parametrize(
    "spec",
    [
        "ccrop:0.8,resize:0.7..0.9,blur:0.5",  # lossless end: PNG files equal in-memory images
        "postprocessed",  # the paper's chain, ending in JPEG: the files hold those very bytes
    ],
)
def test_perturb_on_the_fly_equals_scoring_laundered_files(
    tmp_path, weights_dir, tiny_clip_checkpoint, spec
):
    for i in range(3):
        make_image(tmp_path / f"a{i}.png", size=(120, 90), seed=i)
    pd.DataFrame({"filename": [f"a{i}.png" for i in range(3)], "typ": "real"}).to_csv(
        tmp_path / "in.csv", index=False
    )
    launder_cli.main(
        [
            "-i",
            str(tmp_path / "in.csv"),
            "-o",
            str(tmp_path / "l"),
            "--ops",
            spec,
            "--seed",
            "3",
            "-q",
        ]
    )
    common = local_run_args(tiny_clip_checkpoint, weights_dir, "tiny_a")
    main_cli.main(
        [
            "-i",
            str(tmp_path / "in.csv"),
            "-o",
            str(tmp_path / "fly.csv"),
            "--perturb",
            spec,
            "--perturb_seed",
            "3",
            *common,
        ]
    )
    main_cli.main(
        ["-i", str(tmp_path / "l" / "list.csv"), "-o", str(tmp_path / "files.csv"), *common]
    )
    main_cli.main(["-i", str(tmp_path / "in.csv"), "-o", str(tmp_path / "clean.csv"), *common])
    fly = pd.read_csv(tmp_path / "fly.csv")["tiny_a"]
    files = pd.read_csv(tmp_path / "files.csv")["tiny_a"]
    clean = pd.read_csv(tmp_path / "clean.csv")["tiny_a"]
    np.testing.assert_allclose(fly, files, atol=1e-5)
    assert not np.allclose(fly, clean, atol=1e-3)


def test_compare_clean_and_laundered_tables(tmp_path, capsys):
    rng = np.random.default_rng(0)
    typs = ["real"] * 20 + ["gen"] * 20
    label = np.array([t != "real" for t in typs])
    for name, shift in (("clean", 3.0), ("laundered", 0.5)):
        files = [f"{name}{i}.png" for i in range(40)]
        pd.DataFrame({"filename": files, "typ": typs}).to_csv(
            tmp_path / f"{name}_in.csv", index=False
        )
        pd.DataFrame({"filename": files, "m": rng.normal(label * shift, 1)}).to_csv(
            tmp_path / f"{name}_scores.csv", index=False
        )
    out = tmp_path / "cmp.csv"
    assert (
        metrics_cli.main(
            [
                "-i",
                str(tmp_path / "clean_in.csv"),
                "-o",
                str(tmp_path / "clean_scores.csv"),
                "--compare",
                f"{tmp_path / 'laundered_in.csv'},{tmp_path / 'laundered_scores.csv'}",
                "--save_tab",
                str(out),
            ]
        )
        == 0
    )
    table = pd.read_csv(out, index_col=0)
    assert list(table.columns) == [
        "gen:clean",
        "gen:laundered",
        "gen:drop",
        "AVG:clean",
        "AVG:laundered",
        "AVG:drop",
    ]
    row = table.loc["m"]
    assert row["gen:drop"] == pytest.approx(row["gen:clean"] - row["gen:laundered"])
    assert row["gen:drop"] > 0.1
