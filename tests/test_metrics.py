"""Metrics against direct computations on small hand-made cases (ties included), the
reference's tables, and compute_metrics.py's outputs and errors."""

import json

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

import compute_metrics as cli
from clipdet.evaluation.metrics import (
    METRICS,
    bootstrap_interval,
    compute_metric_table,
    load_evaluation_data,
    parse_metric_names,
)

# 4 real, 4 fake; a tie between a real and a fake at 0.5 and two scores exactly at 0.
LABEL = np.array([0, 0, 0, 0, 1, 1, 1, 1])
SCORE = np.array([-2.0, -1.0, 0.0, 0.5, 0.5, 0.0, 1.5, 3.0])


def test_auc_counts_ties_as_half():
    # pairs (fake > real): fake 0.5 beats -2,-1,0 ties 0.5; fake 0 beats -2,-1 ties 0;
    # fake 1.5 and 3 beat all 4.  (3.5 + 2.5 + 4 + 4) / 16
    assert METRICS["auc"](LABEL, SCORE) == pytest.approx(14 / 16)


def test_balanced_accuracy_at_threshold_zero():
    # real correct when score <= 0: 3 of 4; fake correct when score > 0: 3 of 4
    assert METRICS["acc"](LABEL, SCORE) == pytest.approx(0.75)
    assert METRICS["acc_real"](LABEL, SCORE) == pytest.approx(0.75)
    assert METRICS["acc_fake"](LABEL, SCORE) == pytest.approx(0.75)


def test_average_precision_matches_step_formula():
    # sklearn's AP: sum over thresholds of (R_n - R_{n-1}) P_n, ties grouped
    thresholds = np.unique(SCORE)[::-1]
    ap, prev_recall = 0.0, 0.0
    for t in thresholds:
        predicted = SCORE >= t
        tp = np.sum(predicted & (LABEL == 1))
        recall, precision = tp / 4, tp / predicted.sum()
        ap += (recall - prev_recall) * precision
        prev_recall = recall
    assert METRICS["ap"](LABEL, SCORE) == pytest.approx(ap)


def test_eer_on_separable_and_symmetric_cases():
    assert METRICS["eer"](np.array([0, 0, 1, 1]), np.array([-1.0, -0.5, 0.5, 1.0])) == 0.0
    # one real above one fake out of 2 each: the curves cross at 0.5
    assert METRICS["eer"](np.array([0, 0, 1, 1]), np.array([-1.0, 0.7, 0.5, 1.0])) == pytest.approx(
        0.5
    )


def test_pd_at_fpr_is_the_best_tpr_within_the_budget():
    label = np.array([0] * 10 + [1] * 4)
    score = np.array([*range(-9, 0), 5.0, 6.0, 4.0, -3.5, 7.0])  # one real at 5.0
    # FPR 0 -> threshold above 5: fakes 6 and 7 caught -> 0.5; FPR 10% allows the real at 5 -> 3/4
    assert METRICS["pd_fpr1"](label, score) == pytest.approx(0.5)
    assert METRICS["pd_fpr5"](label, score) == pytest.approx(0.5)
    assert METRICS["pd_fpr10"](label, score) == pytest.approx(0.75)


def test_log_loss_and_cllr_against_direct_formulas():
    p = 1 / (1 + np.exp(-SCORE))
    assert METRICS["logloss"](LABEL, SCORE) == pytest.approx(skm.log_loss(LABEL, p))
    fake = np.mean(np.log2(1 + np.exp(-SCORE[LABEL == 1])))
    real = np.mean(np.log2(1 + np.exp(SCORE[LABEL == 0])))
    assert METRICS["cllr"](LABEL, SCORE) == pytest.approx((fake + real) / 2)
    assert METRICS["cllr"](LABEL, np.zeros(8)) == pytest.approx(1.0)


def test_ece_of_perfectly_calibrated_and_overconfident_scores():
    label = np.array([1, 0, 1, 0])
    assert METRICS["ece"](label, np.zeros(4)) == pytest.approx(0.0)  # p = 0.5, half are fake
    # all called fake with p ~ 1 while half are real -> ECE ~ 0.5
    assert METRICS["ece"](label, np.full(4, 20.0)) == pytest.approx(0.5, abs=1e-6)


def test_bootstrap_interval_is_reproducible_and_brackets_the_value():
    a = bootstrap_interval(METRICS["auc"], LABEL, SCORE, 0.9, n_boot=200)
    b = bootstrap_interval(METRICS["auc"], LABEL, SCORE, 0.9, n_boot=200)
    assert a == b
    assert a[0] <= METRICS["auc"](LABEL, SCORE) <= a[1]


def test_unknown_metric_lists_valid_ones():
    with pytest.raises(ValueError, match="unknown metric f1; valid choices: auc, acc, ap"):
        parse_metric_names("auc,f1")


# --- tables -------------------------------------------------------------------------------


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    typs = ["real"] * 6 + ["gen_b"] * 4 + ["gen_a"] * 5
    names = [f"img{i}.png" for i in range(len(typs))]
    label = np.array([t != "real" for t in typs])
    pd.DataFrame({"filename": names, "typ": typs}).to_csv(tmp_path / "in.csv", index=False)
    scores = pd.DataFrame(
        {
            "filename": names,
            "m1": rng.normal(label * 1.5, 1.0),
            "m2": np.round(rng.normal(label * 0.5, 1.0), 1),  # ties
            "fusion": rng.normal(label * 2.0, 1.0),
            "error": [""] * len(names),
        }
    )
    scores.to_csv(tmp_path / "scores.csv", index=False)
    return tmp_path / "in.csv", tmp_path / "scores.csv"


def reference_table(in_csv, scores_csv, fun):
    """The reference's compute_metrics logic, written out (error column dropped first)."""
    table = pd.read_csv(scores_csv).drop(columns=["error"])
    algs = [c for c in table.columns if c != "filename"]
    table = pd.read_csv(in_csv).merge(table, on=["filename"])
    typs = sorted(t for t in set(table["typ"]) if t != "real")
    table["label"] = table["typ"] != "real"
    out = pd.DataFrame(index=algs, columns=typs, dtype=float)
    for typ in typs:
        sub = table[table["typ"].isin(["real", typ])]
        for alg in algs:
            out.loc[alg, typ] = fun(sub["label"].values, sub[alg].values)
    out["AVG"] = out.mean(axis=1)
    return out


@pytest.mark.parametrize(
    "name,fun",
    [("auc", skm.roc_auc_score), ("acc", lambda y, s: skm.balanced_accuracy_score(y, s > 0))],
)
def test_tables_equal_the_reference(files, name, fun):
    ours = compute_metric_table(load_evaluation_data(*files), name)
    ref = reference_table(*files, fun)
    assert list(ours.columns) == ["gen_a", "gen_b", "AVG"]
    assert list(ours.index) == ["m1", "m2", "fusion"] and ours.index.name == name
    np.testing.assert_array_equal(ours.to_numpy(), ref.to_numpy())


def test_cli_saves_the_reference_csv_layout(files, tmp_path, capsys):
    out = tmp_path / "tab.csv"
    assert (
        cli.main(
            ["-i", str(files[0]), "-o", str(files[1]), "--metrics", "auc", "--save_tab", str(out)]
        )
        == 0
    )
    saved = pd.read_csv(out, index_col=0)
    assert saved.index.name == "auc" and list(saved.columns) == ["gen_a", "gen_b", "AVG"]
    printed = capsys.readouterr().out
    assert "gen_a" in printed and f"{saved.loc['m1', 'gen_a']:5.3f}" in printed


def test_non_finite_scores_give_nan_and_name_the_files(files, caplog):
    in_csv, scores_csv = files
    scores = pd.read_csv(scores_csv)
    scores.loc[scores["filename"] == "img7.png", "m1"] = np.nan
    scores.to_csv(scores_csv, index=False)
    table = compute_metric_table(load_evaluation_data(in_csv, scores_csv), "auc")
    assert np.isnan(table.loc["m1", "gen_b"]) and np.isfinite(table.loc["m1", "gen_a"])
    assert table.loc["m1", "AVG"] == table.loc["m1", "gen_a"]
    assert "img7.png" in caplog.text


def test_ci_columns_and_long_json(files, tmp_path):
    out = tmp_path / "tab.json"
    assert (
        cli.main(
            [
                "-i",
                str(files[0]),
                "-o",
                str(files[1]),
                "--metrics",
                "auc,eer",
                "--ci",
                "0.9",
                "--n_boot",
                "50",
                "--save_tab",
                str(out),
                "--format",
                "json",
            ]
        )
        == 0
    )
    records = json.loads(out.read_text())
    assert len(records) == 2 * 3 * 3  # metrics x models x (2 typs + AVG)
    row = next(r for r in records if (r["metric"], r["model"], r["typ"]) == ("auc", "m1", "gen_a"))
    assert row["ci_low"] <= row["value"] <= row["ci_high"]


def test_markdown_output(files, tmp_path):
    out = tmp_path / "tab.md"
    assert (
        cli.main(
            [
                "-i",
                str(files[0]),
                "-o",
                str(files[1]),
                "--metrics",
                "acc,ap",
                "--save_tab",
                str(out),
                "--format",
                "md",
            ]
        )
        == 0
    )
    text = out.read_text()
    assert text.startswith("| acc | gen_a | gen_b | AVG |") and "| ap |" in text


def test_plots_are_written(files, tmp_path):
    assert cli.main(["-i", str(files[0]), "-o", str(files[1]), "--plot", str(tmp_path / "p")]) == 0
    names = sorted(p.name for p in (tmp_path / "p").iterdir())
    assert names == [
        "hist_fusion.png",
        "hist_m1.png",
        "hist_m2.png",
        "roc_gen_a.png",
        "roc_gen_b.png",
    ]
    assert all((tmp_path / "p" / n).stat().st_size > 5000 for n in names)


def test_missing_files_are_counted_and_named(files, caplog):
    in_csv, scores_csv = files
    scores = pd.read_csv(scores_csv)
    scores[~scores["filename"].isin(["img1.png", "img12.png"])].to_csv(scores_csv, index=False)
    load_evaluation_data(in_csv, scores_csv)
    assert "2 of 15 input files have no scores" in caplog.text and "img12.png" in caplog.text


@pytest.mark.parametrize(
    "typs,message",
    [(["gen_a"] * 15, "no 'real' images"), (["real"] * 15, "no synthetic images")],
)
def test_label_errors(files, typs, message, capsys):
    in_csv, scores_csv = files
    table = pd.read_csv(in_csv)
    table["typ"] = typs
    table.to_csv(in_csv, index=False)
    assert cli.main(["-i", str(in_csv), "-o", str(scores_csv)]) == 2
    assert message in capsys.readouterr().err


def test_unknown_metric_on_the_command_line(files, capsys):
    assert cli.main(["-i", str(files[0]), "-o", str(files[1]), "--metrics", "auroc"]) == 2
    assert "valid choices: auc" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["auc", "acc", "pd_fpr1", "pd_fpr5"])
def test_batched_bootstrap_gives_the_loops_values(name):
    """The batched metrics equal sklearn's per resample (ties, an FPR budget of 0 and more)."""
    rng = np.random.default_rng(2)
    label = np.repeat([0, 1], [120, 80])
    score = np.round(rng.normal(size=200) + label, 1)  # rounded: many ties
    metric = METRICS[name]
    assert hasattr(metric, "batched")
    real, fake = np.flatnonzero(label == 0), np.flatnonzero(label == 1)
    reals = np.stack([rng.choice(real, real.size) for _ in range(50)])
    fakes = np.stack([rng.choice(fake, fake.size) for _ in range(50)])
    batched = metric.batched(score[reals], score[fakes])
    looped = [
        metric(label[np.r_[r, f]], score[np.r_[r, f]]) for r, f in zip(reals, fakes, strict=True)
    ]
    np.testing.assert_allclose(batched, looped, atol=1e-12)
    plain = lambda lab, s: metric(lab, s)  # noqa: E731 -- the same metric without its batched form
    assert bootstrap_interval(metric, label, score, 0.9, n_boot=100) == pytest.approx(
        bootstrap_interval(plain, label, score, 0.9, n_boot=100), abs=1e-12
    )
