"""Thresholds at a stated false-positive rate: exact on the real list (ties included), the
Clopper-Pearson bound as scipy computes it, the small-list warning, a held-out list within the
bound in a seeded simulation; three verdicts and their reasons in every output, the report and
the metrics; a calibration refused for changed weights."""

import io
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import local_run_args, write_model_folder
from PIL import Image
from scipy.stats import binomtest

from clipdet.cli import main as clipdet
from clipdet.evaluation.calibration import (
    Calibration,
    clopper_pearson,
    fpr_threshold,
    miss_threshold,
)
from clipdet.evaluation.calibration_run import calibrate_scores, small_list_warning
from clipdet.pipeline.images import jpeg_quality


@pytest.mark.parametrize("n", [50, 200, 1000])
@pytest.mark.parametrize("fpr", [0.01, 0.05, 0.1])
@pytest.mark.parametrize("ties", [False, True])
def test_the_threshold_allows_at_most_the_target_on_the_list(n, fpr, ties):
    scores = np.random.default_rng(n).normal(size=n)
    if ties:  # many equal scores, some of them where the threshold falls
        scores = np.round(scores, 1)
    threshold = fpr_threshold(scores, fpr)
    allowed = math.floor(fpr * n)
    assert (scores > threshold).sum() <= allowed
    assert not np.isin(threshold, scores)  # never on a fitted score
    below = scores[scores <= threshold].max()  # the next lower threshold would allow too many
    assert (scores >= below).sum() > allowed


def test_the_lower_threshold_mirrors_it_and_bounds_are_scipys():
    fake = np.round(np.random.default_rng(1).normal(3, 1, size=200), 1)
    low = miss_threshold(fake, 0.05)
    assert (fake < low).sum() <= 10 and (fake <= fake[fake >= low].min()).sum() > 10
    for k, n in [(0, 50), (3, 200), (10, 1000), (200, 200)]:
        expected = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
        assert clopper_pearson(k, n) == (expected.low, expected.high)


def test_a_list_too_small_for_its_target_is_said():
    for n, warned in [(299, True), (300, False)]:
        real = pd.DataFrame({"m": np.random.default_rng(n).normal(size=n)})
        _, columns = calibrate_scores(real, None, ["m"], [0.01])
        warning = small_list_warning(columns["m"].points[0])
        assert (warning is not None) == warned
    assert "at least 300 (3 / fpr)" in small_list_warning(
        calibrate_scores(pd.DataFrame({"m": np.zeros(40)}), None, ["m"], [0.01])[1]["m"].points[0]
    )


def test_a_held_out_real_list_stays_within_the_bound():
    """1,000 seeded draws: calibrate at 5 % on 200 real scores, then draw a held-out list of
    2,000 from the same population; its false-positive rate is within the bound in at least
    95 % of the draws (measured: 98.1 %; with a held-out list as small as the calibration's,
    its own sampling noise adds and about 94 % are)."""
    rng = np.random.default_rng(0)
    within = 0
    for _ in range(1000):
        real = rng.normal(size=200)
        threshold = fpr_threshold(real, 0.05)
        bound = clopper_pearson(int((real > threshold).sum()), real.size)[1]
        within += np.mean(rng.normal(size=2000) > threshold) <= bound
    assert within >= 950


def test_jpeg_quality_is_read_from_the_quantisation_tables():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 48, 3), np.uint8))
    for quality in (1, 30, 50, 65, 95, 100):
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=quality)
        assert jpeg_quality(Image.open(buffer).quantization) == quality
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    assert jpeg_quality(getattr(Image.open(buffer), "quantization", None)) is None


def photo(path, kind: str, seed: int, size=(256, 240), fmt="PNG", quality=95):
    """A 256x240 picture (larger than the CLIP heads' 224-px input): real ones smooth, fake
    ones with strong noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : size[1], 0 : size[0]] / 100.0
    base = np.stack([0.5 + 0.2 * np.sin(3 * x + seed), 0.4 + 0.2 * y, 0.3 + 0 * x], -1)
    noise = 0.01 if kind == "real" else 0.2
    pixels = np.clip(base + rng.normal(0, noise, base.shape), 0, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((pixels * 255).astype(np.uint8)).save(path, fmt, quality=quality)
    return path.name


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory, weights_dir, tiny_clip_checkpoint):
    """A calibration of two CLIP heads and their fusion on 60 real and 20 fake pictures, and
    a test list: real and fake pictures, one smaller than the input, JPEGs at 30 and 95 (made
    once for the module: tests read them, and write in their own folders)."""
    tmp_path = tmp_path_factory.mktemp("calibrated")
    lists = {}
    for kind, count in (("real", 60), ("fake", 20)):
        names = [photo(tmp_path / kind / f"{i}.png", kind, i + 100 * (kind == "fake"))
                 for i in range(count)]  # fmt: skip
        lists[kind] = tmp_path / kind / "list.csv"
        pd.DataFrame({"filename": names}).to_csv(lists[kind], index=False)
    rows = [(photo(tmp_path / "t" / f"r{i}.png", "real", 500 + i), "real") for i in range(3)]
    rows += [(photo(tmp_path / "t" / f"f{i}.png", "fake", 600 + i), "gen") for i in range(3)]
    rows.append((photo(tmp_path / "t" / "small.png", "fake", 7, size=(120, 100)), "gen"))
    rows.append((photo(tmp_path / "t" / "q30.jpg", "fake", 8, fmt="JPEG", quality=30), "gen"))
    rows.append((photo(tmp_path / "t" / "q95.jpg", "real", 9, fmt="JPEG", quality=95), "real"))
    test = tmp_path / "t" / "list.csv"
    pd.DataFrame(rows, columns=["filename", "typ"]).to_csv(test, index=False)
    common = local_run_args(tiny_clip_checkpoint, weights_dir, "tiny_a,tiny_b")
    out = tmp_path / "cal.yaml"
    argv = ["calibrate", "--real", lists["real"], "--fake", lists["fake"], "--fpr", "0.05,0.02",
            "-o", out, *common]  # fmt: skip
    assert clipdet([str(a) for a in argv]) == 0
    return out, test, common


def run(*argv) -> int:
    return clipdet([str(a) for a in argv])


def test_three_verdicts_and_their_reasons_in_every_output(tmp_path, calibrated, capsys):
    cal_file, test, common = calibrated
    calibration = Calibration.load(cal_file)
    assert calibration.decision == "fusion" and calibration.fusion == "soft_or_prob"
    point = calibration.point()
    assert point.target_fpr == 0.05 and point.n_real == 60 and point.n_fake == 20
    assert (
        point.false_positives <= 3
        and point.fpr_upper == clopper_pearson(point.false_positives, 60)[1]
    )
    assert calibration.min_side == 224 and calibration.min_jpeg_quality == 65
    assert len(calibration.lists["real"]["sha256"]) == 64
    capsys.readouterr()

    outputs = {}
    for suffix in ("csv", "parquet", "jsonl"):
        out = tmp_path / f"v.{suffix}"
        assert run("score", "-i", test, "-o", out, "--calibration", cal_file, *common) == 0
        outputs[suffix] = out
    summary = capsys.readouterr().err
    assert "inconclusive" in summary and "calibrated at FPR 0.05 on 60 real images" in summary
    table = pd.read_csv(outputs["csv"], keep_default_na=False)
    assert list(table.columns[-5:]) == ["verdict", "verdict_reason", "verdict_tiny_a",
                                        "verdict_tiny_b", "error"]  # fmt: skip
    reasons = dict(zip(table["filename"], table["verdict_reason"], strict=True))
    verdicts = dict(zip(table["filename"], table["verdict"], strict=True))
    assert (verdicts["small.png"], reasons["small.png"]) == ("inconclusive", "smaller_than_input")
    assert (verdicts["q30.jpg"], reasons["q30.jpg"]) == ("inconclusive", "low_jpeg_quality")
    assert reasons["q95.jpg"] != "low_jpeg_quality"
    assert float(table.loc[table["filename"] == "q30.jpg", "jpeg_quality"].item()) == 30
    fusion = table["fusion"].to_numpy()
    high, low = point.threshold, calibration.real_threshold()
    for name, score, verdict, reason in zip(table["filename"], fusion, table["verdict"],
                                            table["verdict_reason"], strict=True):  # fmt: skip
        if reason in ("smaller_than_input", "low_jpeg_quality", "unlike the calibration images"):
            continue
        expected = "synthetic" if score > high else "real" if score < low else "inconclusive"
        assert verdict == expected, name
    parquet = pd.read_parquet(outputs["parquet"])
    assert parquet["verdict"].tolist() == table["verdict"].tolist()
    decided = tmp_path / "decided.csv"  # the same verdicts from the scores file alone
    assert run("decide", "-s", outputs["parquet"], "-c", cal_file, "-o", decided) == 0
    assert pd.read_csv(decided, keep_default_na=False).equals(table)
    lines = [json.loads(line) for line in outputs["jsonl"].read_text().splitlines()]
    assert [r["verdict_reason"] for r in lines] == table["verdict_reason"].tolist()
    images = sorted((test.parent).glob("*.png"))[:2]
    assert run("score", *images, "--calibration", cal_file, *common) == 0  # terminal table
    shown = capsys.readouterr().out
    assert "verdict_reason" in shown and "verdict" in shown

    report = tmp_path / "r.html"
    assert run("report", "-s", outputs["csv"], "-i", test, "-o", report,
               "--calibration", cal_file) == 0  # fmt: skip
    page = report.read_text()
    assert "calibrated at FPR 0.05 on 60 real images" in page and "smaller_than_input" in page

    saved = tmp_path / "tables.csv"
    assert run("metrics", "-i", test, "-o", outputs["csv"], "--calibration", cal_file,
               "--save_tab", saved) == 0  # fmt: skip
    printed = capsys.readouterr().out
    for name in ("tpr@0.05", "fpr@0.05", "inconclusive@0.05", "coverage@0.05", "tpr@0.02"):
        assert name in printed
    assert "width" not in printed  # image facts are not detectors
    long = pd.read_csv(saved)  # one row per (table, column, typ)
    found = long[(long["metric"] == "inconclusive@0.05") & (long["model"] == "fusion")]
    gen = table[table["filename"].str.startswith(("f", "small", "q30"))]
    expected = np.mean(gen["verdict"] == "inconclusive")
    assert found.set_index("typ").loc["gen", "value"] == pytest.approx(expected)
    decided = long[(long["metric"] == "coverage@0.05") & (long["model"] == "fusion")]
    scored = gen[gen["verdict"] != ""]
    expected = np.mean(scored["verdict"].isin(["synthetic", "real"]))
    assert decided.set_index("typ").loc["gen", "value"] == pytest.approx(expected)


def test_a_calibration_is_refused_for_changed_weights_or_models(
    tmp_path, calibrated, weights_dir, capsys
):
    cal_file, test, common = calibrated
    assert run("score", "-i", test, "-o", tmp_path / "x.csv", "--calibration", cal_file,
               *common, "-m", "tiny_a") == 2  # fmt: skip
    assert "the calibration is for the models tiny_a,tiny_b" in capsys.readouterr().err
    folder = tmp_path / "w"  # the same models, tiny_b's head retrained
    for name in ("tiny_a", "tiny_b"):
        (folder / name).mkdir(parents=True)
        for item in (weights_dir / name).iterdir():
            (folder / name / item.name).write_bytes(item.read_bytes())
    state = torch.load(folder / "tiny_b" / "weights.pth", weights_only=True)["model"]
    write_model_folder(folder, "tiny_b", yaml_config(folder / "tiny_b"),
                       {k: v * 1.01 for k, v in state.items()})  # fmt: skip
    argv = ["score", "-i", test, "-o", tmp_path / "y.csv", "--calibration", cal_file, *common]
    argv[argv.index("-w") + 1] = folder
    assert run(*argv) == 2
    err = capsys.readouterr().err
    assert "weights changed since it was made for tiny_b (weights_sha256" in err
    assert "tiny_a" not in err.split("made for", 1)[1]
    assert not (tmp_path / "y.csv").exists()


def yaml_config(folder) -> dict:
    import yaml

    return yaml.safe_load((folder / "config.yaml").read_text())


def test_image_facts_survive_a_resume_and_change_its_signature():
    from clipdet.options import RunOptions
    from clipdet.pipeline.record import ImageResult
    from clipdet.pipeline.run import options_signature

    result = ImageResult(3, np.array([0.5]), "", extras={"facts": (256.0, 240.0, float("nan"))})
    back = ImageResult.from_json(result.to_json("a.png"), 1, {})
    np.testing.assert_array_equal(back.facts, result.facts)
    assert "image_facts" in options_signature(RunOptions(calibration="c.yaml"))
    assert "image_facts" not in options_signature(RunOptions())


def test_a_scores_file_is_read_instead_of_scoring_again(tmp_path, calibrated, monkeypatch):
    cal_file, _, common = calibrated
    real = cal_file.parent / "real" / "list.csv"  # the calibration's own list
    scores = tmp_path / "real_scores.csv"
    assert run("score", "-i", real, "-o", scores, *common) == 0
    from clipdet.evaluation import calibration_run

    monkeypatch.setattr(calibration_run, "score_table", lambda *a, **k: pytest.fail("scored again"))
    again = tmp_path / "again.yaml"
    assert run("calibrate", "--real", real, "--scores", scores, "--fpr", "0.05,0.02", "-o",
               again, *common) == 0  # fmt: skip
    first, second = Calibration.load(cal_file), Calibration.load(again)
    for column in ("tiny_a", "tiny_b", "fusion"):
        assert [p.threshold for p in first.columns[column].points] == [
            p.threshold for p in second.columns[column].points
        ]
    assert "fake" not in second.lists and second.columns["fusion"].real_rule.startswith("default")
    missing = tmp_path / "more.csv"
    pd.DataFrame({"filename": ["0.png", "nope.png"]}).to_csv(missing, index=False)
    assert run("calibrate", "--real", missing, "--scores", scores, "-o", again, *common) == 2


def shapes(path, seed: int, size=(256, 240)):
    """A picture of another family: flat-coloured rectangles on a dark ground, no gradient."""
    rng = np.random.default_rng(seed)
    pixels = np.full((size[1], size[0], 3), 20, dtype=np.uint8)
    for _ in range(6):
        x0, y0 = rng.integers(0, size[0] - 40), rng.integers(0, size[1] - 40)
        w, h = rng.integers(20, 120, 2)
        pixels[y0 : y0 + h, x0 : x0 + w] = rng.integers(0, 256, 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path.name


def test_images_unlike_the_calibration_set_are_inconclusive(tmp_path, calibrated, capsys):
    """Held-out pictures of the calibrated family keep their verdicts (at least 90 %); pictures
    of a visibly different family are inconclusive, 'unlike the calibration images'; the share
    decided (coverage) is printed."""
    cal_file, _, common = calibrated
    domain = Calibration.load(cal_file).domain
    assert domain["model"] == "tiny_a" and domain["n_images"] == 80 and domain["cutoff"] > 0
    rows = [(photo(tmp_path / "h" / f"r{i}.png", "real", 900 + i), "real") for i in range(20)]
    rows += [(photo(tmp_path / "h" / f"f{i}.png", "fake", 950 + i), "gen") for i in range(10)]
    rows += [(shapes(tmp_path / "h" / f"s{i}.png", i), "other") for i in range(10)]
    test = tmp_path / "h" / "list.csv"
    pd.DataFrame(rows, columns=["filename", "typ"]).to_csv(test, index=False)
    out = tmp_path / "v.csv"
    capsys.readouterr()
    assert run("score", "-i", test, "-o", out, "--calibration", cal_file, *common) == 0
    assert "coverage" in capsys.readouterr().err
    table = pd.read_csv(out, keep_default_na=False)
    unlike = table["verdict_reason"] == "unlike the calibration images"
    assert (table.loc[unlike, "verdict"] == "inconclusive").all()
    family = table["filename"].str.startswith(("r", "f"))
    assert unlike[~family].all()
    assert (~unlike[family]).mean() >= 0.9
    distance = table["calibration_distance"].to_numpy(float)
    assert np.array_equal(unlike, distance > domain["cutoff"])


@pytest.mark.slow
def test_a_verdict_that_flips_under_a_view_is_inconclusive(tmp_path, calibrated):
    """--views 'blur:2' (a deterministic view): exactly the rows whose verdict differs under
    --perturb blur:2 are inconclusive, 'flips under blur:2'; the others keep their verdict;
    llr@blur:2 is the perturbed run's decision LLR."""
    cal_file, _, common = calibrated
    calibration = Calibration.load(cal_file)
    calibration.domain = None  # the view's verdict by the score and image rules alone
    cal_file = calibration.save(tmp_path / "cal_no_domain.yaml")
    rows = [(photo(tmp_path / "v" / f"r{i}.png", "real", 700 + i), "real") for i in range(6)]
    rows += [(photo(tmp_path / "v" / f"f{i}.png", "fake", 750 + i), "gen") for i in range(6)]
    rows.append((photo(tmp_path / "v" / "small.png", "fake", 7, size=(120, 100)), "gen"))
    rows.append(("missing.png", "gen"))
    test = tmp_path / "v" / "list.csv"
    pd.DataFrame(rows, columns=["filename", "typ"]).to_csv(test, index=False)
    out = {name: tmp_path / f"{name}.csv" for name in ("plain", "viewed", "perturbed")}
    flags = {"plain": [], "viewed": ["--views", "blur:2"], "perturbed": ["--perturb", "blur:2"]}
    for name, path in out.items():
        assert run("score", "-i", test, "-o", path, "--calibration", cal_file, *flags[name],
                   *common) == 0  # fmt: skip
    plain, viewed, perturbed = (pd.read_csv(out[n], keep_default_na=False) for n in out)

    def numbers(column):
        return pd.to_numeric(column, errors="coerce").to_numpy()

    np.testing.assert_allclose(numbers(viewed["fusion"]), numbers(plain["fusion"]))
    np.testing.assert_allclose(numbers(viewed["llr@blur:2"]), numbers(perturbed["fusion"]),
                               rtol=1e-5, atol=1e-5)  # fmt: skip
    differs = plain["verdict"] != perturbed["verdict"]
    flipped = viewed["verdict_reason"] == "flips under blur:2"
    assert 0 < differs.sum() < len(plain) - 2, "the fixture must hold flips and non-flips"
    assert flipped.tolist() == differs.tolist()
    assert (viewed.loc[flipped, "verdict"] == "inconclusive").all()
    kept = ~flipped
    assert viewed.loc[kept, "verdict"].tolist() == plain.loc[kept, "verdict"].tolist()
    assert viewed.loc[viewed["filename"] == "missing.png", "verdict_reason"].item() == "not_scored"


@pytest.mark.slow
def test_views_and_the_calibration_domain_resume_to_the_same_file(
    tmp_path, calibrated, monkeypatch, capsys
):
    """A run with views and a calibration's domain, stopped by Ctrl-C and resumed, writes
    the uninterrupted run's bytes; resuming with other views is refused."""
    from helpers import ctrl_c_after

    from clipdet.pipeline import scoring as run_module
    from clipdet.pipeline.resume import partial_path

    cal_file, test, common = calibrated
    flags = ["-i", test, "--calibration", cal_file, "--views", "blur:2;jpeg:40", "--batch_size",
             "1", *common]  # fmt: skip
    assert run("score", "-o", tmp_path / "clean.csv", *flags) == 0
    out = tmp_path / "r.csv"
    with ctrl_c_after(monkeypatch, run_module, 3):
        assert run("score", "-o", out, *flags) == 130
    assert len(partial_path(out).read_text().splitlines()) == 4  # header + 3 rows
    capsys.readouterr()
    other = [*flags[:5], "blur:1", *flags[6:]]
    assert run("score", "-o", out, *other, "--resume") == 2
    assert "views" in capsys.readouterr().err
    assert run("score", "-o", out, *flags, "--resume") == 0
    assert out.read_bytes() == (tmp_path / "clean.csv").read_bytes()
    table = pd.read_csv(out)
    assert {"llr@blur:2", "llr@jpeg:40", "calibration_distance"} <= set(table.columns)
