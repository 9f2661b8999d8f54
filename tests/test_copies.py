"""Evidence from every copy: quality-aware calibration (QuAD) recovering known laws, its
verdicts, degraded copies, near-duplicate groups and the copies' evidence added up."""

import numpy as np
import pandas as pd
import pytest

from clipdet.cli import main as clipdet
from clipdet.evaluation.calibration import Calibration
from clipdet.evaluation.quality import QualityModel, quality_features


def run(*argv) -> int:
    return clipdet([str(a) for a in argv])


def laws(log_pixels, quality, fake: bool):
    """Known score laws given quality: (mean, log variance)."""
    if fake:
        return -2.0 + 0.5 * log_pixels + 0.05 * quality, 0.5 - 1.0 * quality / 100
    return 1.0 - 0.4 * log_pixels - 0.02 * quality, 0.2 + 0.25 * (log_pixels - 12)


def crafted_scores(rng, n: int, fake: bool, prefix: str, sources: int | None = None):
    width, height = rng.integers(200, 2000, n), rng.integers(200, 2000, n)
    quality = rng.integers(40, 101, n).astype(float)
    quality[rng.random(n) < 0.2] = np.nan  # PNG: counts as 100
    mean, log_var = laws(np.log(width * height), np.where(np.isnan(quality), 100, quality), fake)
    table = pd.DataFrame({
        "filename": [f"{prefix}{i}.jpg" for i in range(n)],
        "tool": mean + np.exp(log_var / 2) * rng.normal(size=n),
        "width": width, "height": height, "jpeg_quality": quality,
    })  # fmt: skip
    if sources:
        table["group"] = [f"{prefix}src{i % sources}" for i in range(n)]
    return table


@pytest.fixture(scope="module")
def quality_calibration(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("quality")
    rng = np.random.default_rng(0)
    real = crafted_scores(rng, 3000, False, "r", sources=1000)
    fake = crafted_scores(rng, 3000, True, "f", sources=1000)
    pd.concat([real, fake]).to_csv(tmp_path / "scores.csv", index=False)
    for kind, table in (("real", real), ("fake", fake)):
        table[["filename"]].to_csv(tmp_path / f"{kind}.csv", index=False)
    cal = tmp_path / "cal.yaml"
    assert run("calibrate", "--real", tmp_path / "real.csv", "--fake", tmp_path / "fake.csv",
               "--scores", tmp_path / "scores.csv", "-m", "tool", "--quality", "--fpr", "0.05",
               "-o", cal, "-w", tmp_path / "w") == 0  # fmt: skip
    return cal, real, fake


def test_a_quality_calibration_recovers_known_laws(quality_calibration):
    cal, real, fake = quality_calibration
    model = QualityModel.from_dict(Calibration.load(cal).quality)
    for table, fake_class in ((real, False), (fake, True)):
        q = quality_features(table)
        mean, log_var = laws(q[:, 0], q[:, 1], fake_class)
        fit = model.fits["tool"][int(fake_class)]
        X = model.design(q)
        assert np.abs(X @ fit.mean_coef - mean).max() < 0.15
        assert np.abs(X @ fit.logvar_coef - log_var).max() < 0.25
    # the calibrated LLR is the log-density ratio of the two fitted laws
    q = quality_features(real.head(5))
    s = real["tool"].to_numpy()[:5]
    (m0, v0), (m1, v1) = laws(q[:, 0], q[:, 1], False), laws(q[:, 0], q[:, 1], True)
    truth = -0.5 * (v1 + (s - m1) ** 2 / np.exp(v1)) + 0.5 * (v0 + (s - m0) ** 2 / np.exp(v0))
    np.testing.assert_allclose(model.llr("tool", s, q), truth, rtol=0.1)


def test_quality_verdicts_read_the_calibrated_llrs(tmp_path, quality_calibration):
    cal, real, fake = quality_calibration
    suspects = pd.concat([real.head(20), fake.head(20)])
    suspects.to_csv(tmp_path / "s.csv", index=False)
    assert run("decide", "-s", tmp_path / "s.csv", "-c", cal, "-o", tmp_path / "v.jsonl") == 0
    out = pd.read_json(tmp_path / "v.jsonl", lines=True)
    calibration = Calibration.load(cal)
    model = calibration.quality_model()
    expected = model.llr("tool", suspects["tool"].to_numpy(), quality_features(suspects))
    np.testing.assert_allclose(out["qllr_tool"], expected, rtol=1e-9)
    high = calibration.point().threshold
    scored = out[out["verdict_reason"] != "low_jpeg_quality"]  # (JPEGs under 65)
    assert ((scored["qllr_tool"] > high) == (scored["verdict"] == "synthetic")).all()
    said = out["verdict"].to_numpy()
    assert (said[:20] == "synthetic").sum() == 0 and (said[20:] == "real").sum() == 0
    assert (said[20:] == "synthetic").sum() >= 10


def test_quality_needs_both_lists_and_its_columns(tmp_path, quality_calibration, capsys):
    cal, real, _ = quality_calibration
    folder = cal.parent
    argv = ["calibrate", "--real", folder / "real.csv", "--scores", folder / "scores.csv",
            "-m", "tool", "--quality", "-o", tmp_path / "x.yaml", "-w", tmp_path]  # fmt: skip
    assert run(*argv) == 2
    assert "give --fake" in capsys.readouterr().err
    real.drop(columns=["width", "jpeg_quality"]).to_csv(tmp_path / "s.csv", index=False)
    assert run("decide", "-s", tmp_path / "s.csv", "-c", cal, "-o", tmp_path / "v.csv") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "lack the quality columns width, jpeg_quality" in err
    assert run("calibrate", "--real", folder / "real.csv", "--fake", folder / "fake.csv",
               "--scores", folder / "scores.csv", "-m", "tool", "--degrade", "2",
               "-o", tmp_path / "x.yaml", "-w", tmp_path) == 2  # fmt: skip
    assert "add --quality" in capsys.readouterr().err


@pytest.mark.slow
def test_degraded_copies_join_the_fit_and_facts_follow_the_perturbation(
    tmp_path, weights_dir, tiny_clip_checkpoint, monkeypatch
):
    """calibrate --quality --degrade 2 scores two in-memory degraded copies of each listed
    image (nothing written) and fits on them too; under --perturb the image facts are the
    perturbed image's (its size, the JPEG quality it was compressed at)."""
    from helpers import local_run_args, make_pair_image

    from clipdet.evaluation import calibration_run

    for kind in ("real", "fake"):
        names = [make_pair_image(tmp_path / kind / f"{i}.png", kind, i + 50 * (kind == "fake")).name
                 for i in range(12)]  # fmt: skip
        pd.DataFrame({"filename": names}).to_csv(tmp_path / kind / "list.csv", index=False)
    seen = []
    real_fit = QualityModel.fit
    monkeypatch.setattr(calibration_run.QualityModel, "fit",
                        lambda *a: seen.append(a) or real_fit(*a))  # fmt: skip
    common = local_run_args(tiny_clip_checkpoint, weights_dir, "tiny_a")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    cal = tmp_path / "cal.yaml"
    assert run("calibrate", "--real", tmp_path / "real" / "list.csv", "--fake",
               tmp_path / "fake" / "list.csv", "--quality", "--degrade", "2", "--fpr", "0.1",
               "-o", cal, "--no_domain", *common) == 0  # fmt: skip
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted([*before, "cal.yaml"])
    fit_real, fit_fake = seen[0][0], seen[0][1]
    assert len(fit_real) == len(fit_fake) == 36  # 12 images and 2 copies of each
    assert fit_real["group"].value_counts().eq(3).all()
    assert (fit_real["width"].to_numpy()[12:] < fit_real["width"].to_numpy()[:12].max()).any()
    assert fit_real["jpeg_quality"].to_numpy()[12:24].min() >= 50  # the JPEG copies
    calibration = Calibration.load(cal)
    assert calibration.quality["degraded_copies"]["per_image"] == 2
    out = tmp_path / "v.csv"
    listed = tmp_path / "real" / "list.csv"
    assert run("score", "-i", listed, "-o", out, "--calibration", cal, "--perturb",
               "resize:0.5,jpeg:70", *common) == 0  # fmt: skip
    table = pd.read_csv(out)
    assert "qllr_tiny_a" in table and table["qllr_tiny_a"].notna().all()
    assert (table["jpeg_quality"] == 70).all()
    from PIL import Image

    sizes = [Image.open(tmp_path / "real" / name).size for name in table["filename"]]
    assert table["width"].tolist() == [max(1, round(w * 0.5)) for w, _ in sizes]


COPY_CHAINS = ("resize:0.5/bicubic", "jpeg:60", "resize:0.7/bilinear,jpeg:75", "webp:70",
               "ccrop:0.9,jpeg:85")  # fmt: skip


@pytest.fixture(scope="module")
def copies_run(tmp_path_factory, weights_dir, tiny_clip_checkpoint):
    """6 source pictures, each with 5 laundered copies and a bordered one, 6 distinct
    pictures, a missing and a truncated file; a calibration of tiny_a on other pictures;
    the list scored with --group auto and --groups_out."""
    from helpers import local_run_args, make_scene
    from PIL import Image, ImageOps

    from clipdet.evaluation.laundering import launder_list
    from clipdet.pipeline.perturb import Perturbation

    root = tmp_path_factory.mktemp("copies")
    rows = []  # (filename, true source)
    for s in range(6):
        source = make_scene(root / f"src{s}.png", s)
        rows.append((source.name, f"s{s}"))
        image = Image.open(source).convert("RGB")
        for k, chain in enumerate(COPY_CHAINS):
            copy = Perturbation(chain, k)(image, s)
            name = f"copy{s}_{k}." + ("jpg" if copy.encoded_jpeg else "png")
            if copy.encoded_jpeg:
                (root / name).write_bytes(copy.encoded_jpeg)
            else:
                copy.image.save(root / name)
            rows.append((name, f"s{s}"))
        ImageOps.expand(image, 16, (0, 0, 0)).save(root / f"border{s}.png")
        rows.append((f"border{s}.png", f"s{s}"))
    for d in range(6):
        rows.append((make_scene(root / f"other{d}.png", 100 + d).name, f"d{d}"))
    good = (root / "src0.png").read_bytes()
    (root / "truncated.png").write_bytes(good[: len(good) // 3])
    rows += [("missing.png", "x1"), ("truncated.png", "x2")]
    listed = root / "list.csv"
    pd.DataFrame({"filename": [r[0] for r in rows], "source": [r[1] for r in rows]}).to_csv(
        listed, index=False
    )
    cal_list = root / "cal" / "real.csv"  # calibration pictures: other scenes and noise
    names = [make_scene(root / "cal" / f"r{i}.png", 200 + i).name for i in range(12)]
    pd.DataFrame({"filename": names}).to_csv(cal_list, index=False)
    assert launder_list(cal_list, root / "cal" / "fake", "noise:20", 0) is not None
    common = local_run_args(tiny_clip_checkpoint, weights_dir, "tiny_a")
    cal = root / "cal.yaml"
    assert run("calibrate", "--real", cal_list, "--fake", root / "cal" / "fake" / "list.csv",
               "--fpr", "0.1", "-o", cal, *common) == 0  # fmt: skip
    out, groups = root / "scores.csv", root / "groups.csv"
    assert run("score", "-i", listed, "-o", out, "--group", "auto", "--calibration", cal,
               "--groups_out", groups, "--report", root / "report.html", *common) == 0  # fmt: skip
    return root, rows, cal, out, groups, common


@pytest.mark.slow
def test_every_copy_is_grouped_with_its_source_and_nothing_else(copies_run):
    _, rows, _, out, _, _ = copies_run
    table = pd.read_csv(out, keep_default_na=False)
    truth = dict(rows)
    found = dict(zip(table["filename"], table["group"], strict=True))
    for a, b in ((a, b) for a in truth for b in truth if a < b):
        assert (found[a] == found[b]) == (truth[a] == truth[b]), (a, b)
    sizes = dict(zip(table["filename"], table["group_size"], strict=True))
    assert sizes["src0.png"] == 1 + len(COPY_CHAINS) + 1 and sizes["other0.png"] == 1
    assert sizes["missing.png"] == 1 and sizes["truncated.png"] == 1
    assert table.loc[table["filename"] == "missing.png", "error"].item() != ""


@pytest.mark.slow
def test_a_group_adds_up_its_copies_and_decide_gives_the_same(copies_run, tmp_path):
    root, rows, cal, out, groups_file, _ = copies_run
    table = pd.read_csv(out, keep_default_na=False)
    groups = pd.read_csv(groups_file, keep_default_na=False)
    assert len(groups) == table["group"].nunique() == 6 + 6 + 2
    assert list(groups.columns[:3]) == ["group", "size", "tiny_a"]
    for group in groups.itertuples(index=False):
        members = table[table["group"] == group.group]
        assert group.size == len(members)
        llrs = pd.to_numeric(members["tiny_a"], errors="coerce")
        if llrs.notna().any():
            assert float(group.tiny_a) == pytest.approx(llrs.sum(), rel=1e-9)
            assert group.best_copy in set(members["filename"])
        else:
            assert group.verdict_reason == "not_scored"
    again = tmp_path / "g.jsonl"
    assert run("decide", "-s", out, "-c", cal, "--group", "group", "-o", tmp_path / "d.csv",
               "--groups_out", again) == 0  # fmt: skip
    decided = pd.read_json(again, lines=True, dtype=False)
    pd.testing.assert_frame_equal(
        decided[["group", "size", "verdict", "best_copy"]].astype(str),
        groups[["group", "size", "verdict", "best_copy"]].astype(str),
    )
    decided_llr = pd.to_numeric(decided["tiny_a"], errors="coerce")
    np.testing.assert_allclose(decided_llr, pd.to_numeric(groups["tiny_a"], errors="coerce"),
                               rtol=1e-9)  # fmt: skip


def test_copies_that_disagree_make_the_group_inconclusive(tmp_path):
    """Five copies at LLR -3 and one at +8 (a tool calibrated on real ~ N(-4, 1) and
    synthetic ~ N(4, 1): -3 is confidently real, +8 confidently synthetic)."""
    rng = np.random.default_rng(1)
    names = [f"r{i}.jpg" for i in range(300)] + [f"f{i}.jpg" for i in range(300)]
    scores = np.r_[rng.normal(-4, 1, 300), rng.normal(4, 1, 300)]
    pd.DataFrame({"filename": names, "tool": scores}).to_csv(tmp_path / "cal.csv", index=False)
    for kind, part in (("real", names[:300]), ("fake", names[300:])):
        pd.DataFrame({"filename": part}).to_csv(tmp_path / f"{kind}.csv", index=False)
    cal = tmp_path / "cal.yaml"
    assert run("calibrate", "--real", tmp_path / "real.csv", "--fake", tmp_path / "fake.csv",
               "--scores", tmp_path / "cal.csv", "-m", "tool", "--fpr", "0.05", "-o", cal,
               "-w", tmp_path / "w") == 0  # fmt: skip
    rows = pd.DataFrame({
        "filename": [f"c{i}.jpg" for i in range(6)] + ["alone.jpg", "nogroup.jpg"],
        "tool": [-3.0] * 5 + [8.0, 9.0, -9.0],
        "group": ["viral"] * 6 + ["single", None],
    })  # fmt: skip
    rows.to_csv(tmp_path / "s.csv", index=False)
    assert run("decide", "-s", tmp_path / "s.csv", "-c", cal, "--group", "group",
               "-o", tmp_path / "v.csv", "--groups_out", tmp_path / "g.csv") == 0  # fmt: skip
    members = pd.read_csv(tmp_path / "v.csv", keep_default_na=False)
    assert members["verdict"].tolist()[:6] == ["real"] * 5 + ["synthetic"]
    groups = pd.read_csv(tmp_path / "g.csv", keep_default_na=False).set_index("group")
    assert groups.loc["viral", "verdict"] == "inconclusive"
    assert groups.loc["viral", "verdict_reason"] == "copies disagree"
    assert groups.loc["viral", "tool"] == pytest.approx(5 * -3.0 + 8.0)
    assert groups.loc["viral", "dissent"] == "c0.jpg;c1.jpg;c2.jpg;c3.jpg;c4.jpg;c5.jpg"
    assert groups.loc["single", "verdict"] == "synthetic"
    assert len(groups) == 3  # the row without a group is a group of its own


@pytest.mark.slow
def test_the_report_shows_each_group_with_its_copies(copies_run, browser):
    from test_report import open_page

    root, rows, _, out, groups_file, _ = copies_run
    page, errors, _ = open_page(browser, root / "report.html")
    groups = pd.read_csv(groups_file, keep_default_na=False)
    shown = page.eval_on_selector_all(
        ".copy-group",
        "gs => gs.map(g => [g.dataset.group, g.querySelectorAll('figure').length,"
        " g.querySelector('.group-head').textContent])",
    )
    several = groups[groups["size"] > 1]
    assert [(g, n) for g, n, _ in shown] == list(
        zip(several["group"], several["size"], strict=True)
    )
    for (_, _, head), verdict in zip(shown, several["verdict"], strict=True):
        assert f"7 copies, {verdict}" in head and "best copy" in head
    assert page.locator(".card .group").count() == 6 * 7
    assert not errors, errors


@pytest.mark.slow
def test_a_grouped_run_resumes_to_the_same_files(copies_run, tmp_path, monkeypatch, capsys):
    """--group auto with --groups_out, stopped by Ctrl-C and resumed: the copy keys come back
    from the partial file, and both outputs are the uninterrupted run's bytes."""
    from helpers import ctrl_c_after

    from clipdet.pipeline import scoring as run_module

    root, _, cal, _, _, common = copies_run
    flags = ["-i", root / "list.csv", "--group", "auto", "--calibration", cal, "--batch_size",
             "4", *common]  # fmt: skip
    out, groups = tmp_path / "clean.csv", tmp_path / "clean_groups.csv"
    assert run("score", "-o", out, *flags, "--groups_out", groups) == 0
    again, again_groups = tmp_path / "s.csv", tmp_path / "g.csv"
    with ctrl_c_after(monkeypatch, run_module, 20):
        assert run("score", "-o", again, *flags, "--groups_out", again_groups) == 130
    capsys.readouterr()
    assert run("score", "-o", again, *flags, "--groups_out", again_groups, "--resume") == 0
    assert again.read_bytes() == out.read_bytes()
    assert again_groups.read_bytes() == groups.read_bytes()


def test_an_edited_derivative_is_kept_apart_from_the_copies_of_its_source(tmp_path):
    """A picture with an object added is not a copy of its source (nor of the source's
    copies: resized, recompressed, centrally cropped); the edit's own copies join it. Keys
    written without thumbnails (an earlier clipdet's) are grouped as before."""
    from helpers import make_scene
    from PIL import Image, ImageDraw

    from clipdet.evaluation.copies import find_copies
    from clipdet.pipeline.extensions.copy_keys import perceptual_hashes
    from clipdet.pipeline.perturb import Perturbation

    chains = ("jpeg:60", "resize:0.5,jpeg:70", "ccrop:0.9,jpeg:85")
    truth, keys = [], []
    for s in range(4):
        source = Image.open(make_scene(tmp_path / f"{s}.png", s)).convert("RGB")
        edited = source.copy()
        ImageDraw.Draw(edited).ellipse([200, 40, 260, 100], fill=(240, 30, 30))
        for label, picture in ((f"s{s}", source), (f"e{s}", edited)):
            for k, chain in enumerate(("none", *chains)):
                copy = picture if chain == "none" else Perturbation(chain, k)(picture, s).image
                truth.append(label)
                keys.append(perceptual_hashes(np.asarray(copy)))
    groups = find_copies(keys)
    for a in range(len(truth)):
        for b in range(a):
            assert (groups[a] == groups[b]) == (truth[a] == truth[b]), (truth[a], truth[b])
    without = find_copies([key.rsplit(",", 1)[0] for key in keys])  # the hashes alone
    assert len(set(without)) < len(set(groups))  # edits then joined their sources
