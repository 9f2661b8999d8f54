"""Verdicts that know their limits, from scores files: each detector's own verdict and the
'detectors disagree' rule (external detectors' columns calibrated with --scores), `clipdet
decide` equal to `clipdet score --calibration`, where a calibration holds (its description and
cut-off), and model cards."""

import json

import numpy as np
import pandas as pd
import pytest

from clipdet.cli import main as clipdet
from clipdet.evaluation.calibration import Calibration
from clipdet.evaluation.verdicts import verdicts
from clipdet.pipeline.domain import DomainDescription


def run(*argv) -> int:
    return clipdet([str(a) for a in argv])


@pytest.fixture
def external_calibration(tmp_path):
    """Two other tools' scores (columns 'tool_a', 'tool_b', > 0 synthetic) on 200 real and
    100 synthetic images, calibrated at 5 % as external detectors."""
    rng = np.random.default_rng(0)
    n_real, n_fake = 200, 100
    names = [f"r{i}.jpg" for i in range(n_real)] + [f"f{i}.jpg" for i in range(n_fake)]
    scores = pd.DataFrame({
        "filename": names,
        "tool_a": np.r_[rng.normal(-4, 1, n_real), rng.normal(4, 1, n_fake)],
        "tool_b": np.r_[rng.normal(-3, 1, n_real), rng.normal(3, 1, n_fake)],
    })  # fmt: skip
    scores.to_csv(tmp_path / "scores.csv", index=False)
    for kind, listed in (("real", names[:n_real]), ("fake", names[n_real:])):
        pd.DataFrame({"filename": listed}).to_csv(tmp_path / f"{kind}.csv", index=False)
    cal = tmp_path / "cal.yaml"
    argv = ["calibrate", "--real", tmp_path / "real.csv", "--fake", tmp_path / "fake.csv",
            "--scores", tmp_path / "scores.csv", "--models", "tool_a,tool_b",
            "--fusion", "none", "--fpr", "0.05", "-o", cal, "-w", tmp_path / "w"]  # fmt: skip
    assert run(*argv) == 0
    return cal


def test_detectors_that_disagree_make_the_verdict_inconclusive(tmp_path, external_calibration):
    calibration = Calibration.load(external_calibration)
    assert calibration.models["tool_a"]["external"] and calibration.domain is None
    high = {n: calibration.point(n).threshold for n in ("tool_a", "tool_b")}
    low = {n: calibration.real_threshold(n) for n in ("tool_a", "tool_b")}
    crafted = pd.DataFrame({
        "filename": ["agree_fake", "agree_real", "a_fake_b_real", "a_real_b_fake", "a_unsure"],
        "tool_a": [high["tool_a"] + 3, low["tool_a"] - 3, high["tool_a"] + 3, low["tool_a"] - 3,
                   (high["tool_a"] + low["tool_a"]) / 2],
        "tool_b": [high["tool_b"] + 3, low["tool_b"] - 3, low["tool_b"] - 3, high["tool_b"] + 3,
                   low["tool_b"] - 3],
    })  # fmt: skip
    crafted.to_csv(tmp_path / "crafted.csv", index=False)
    outputs = {}
    for suffix in ("csv", "parquet", "jsonl"):
        outputs[suffix] = tmp_path / f"decided.{suffix}"
        assert run("decide", "--scores", tmp_path / "crafted.csv", "--calibration",
                   external_calibration, "-o", outputs[suffix]) == 0  # fmt: skip
    table = pd.read_csv(outputs["csv"], keep_default_na=False).set_index("filename")
    assert table.loc["agree_fake", "verdict"] == "synthetic"
    assert table.loc["agree_real", "verdict"] == "real"
    assert table.loc["a_fake_b_real", "verdict"] == "inconclusive"
    assert table.loc["a_fake_b_real", "verdict_reason"] == (
        "detectors disagree (tool_a synthetic, tool_b real)"
    )
    assert table.loc["a_real_b_fake", "verdict_reason"] == (
        "detectors disagree (tool_b synthetic, tool_a real)"
    )
    assert table.loc["a_unsure", "verdict_reason"] != "detectors disagree"  # not confident
    assert table["verdict_tool_a"].tolist() == [
        "synthetic", "real", "synthetic", "real", "inconclusive"
    ]  # fmt: skip
    assert table["verdict_tool_b"].tolist() == ["synthetic", "real", "real", "synthetic", "real"]
    parquet = pd.read_parquet(outputs["parquet"])
    lines = [json.loads(line) for line in outputs["jsonl"].read_text().splitlines()]
    for name in ("verdict", "verdict_reason", "verdict_tool_a", "verdict_tool_b"):
        assert parquet[name].tolist() == table[name].tolist()
        assert [line[name] for line in lines] == table[name].tolist()


def test_one_family_does_not_disagree_with_itself(external_calibration):
    calibration = Calibration.load(external_calibration)
    for name in calibration.detectors:  # two heads of one architecture
        calibration.models[name] = {"arch": "same_arch"}
    high, low = calibration.point("tool_a").threshold, calibration.real_threshold("tool_b")
    table = pd.DataFrame({"tool_a": [high + 3], "tool_b": [low - 3]})
    _, reason = verdicts(calibration, table)
    assert not reason[0].startswith("detectors disagree")


def test_decide_refuses_what_it_cannot_decide(tmp_path, external_calibration, capsys):
    pd.DataFrame({"filename": ["x"], "tool_a": [1.0]}).to_csv(tmp_path / "s.csv", index=False)
    assert run("decide", "-s", tmp_path / "s.csv", "-c", external_calibration,
               "-o", tmp_path / "o.csv") == 2  # fmt: skip
    assert "lack the calibrated columns tool_b" in capsys.readouterr().err
    assert not (tmp_path / "o.csv").exists()
    pd.DataFrame({"filename": ["x"], "tool_a": [1.0], "tool_b": [1.0]}).to_csv(
        tmp_path / "s.csv", index=False
    )
    assert run("decide", "-s", tmp_path / "s.csv", "-c", external_calibration,
               "-o", tmp_path / "o.csv", "--fpr", "0.2") == 2  # fmt: skip
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no threshold for a false-positive rate of 0.2" in err
    # an external detector's calibration cannot be applied to a clipdet run
    with pytest.raises(ValueError, match="external detectors .*`clipdet decide`"):
        Calibration.load(external_calibration).check_models({}, None)


def test_the_domain_cut_off_keeps_held_out_images_and_refuses_far_ones():
    rng = np.random.default_rng(0)
    centre = rng.normal(size=256)
    family = centre + 0.6 * rng.normal(size=(600, 256))
    other = rng.normal(size=256) + 0.6 * rng.normal(size=(100, 256))
    description = DomainDescription.fit(family[:400], "m")
    kept = description.distance(family[400:]) <= description.cutoff
    assert 0.9 <= kept.mean() <= 1.0
    assert description.is_unlike(description.distance(other)).all()
    again = DomainDescription.from_dict(json.loads(json.dumps(description.to_dict())))
    np.testing.assert_allclose(again.distance(other), description.distance(other), rtol=1e-6)
    assert np.isnan(description.distance(np.full((1, 256), np.nan))[0])
    with pytest.raises(ValueError, match="at least 10"):
        DomainDescription.fit(family[:5], "m")
    broken = description.to_dict() | {"points": {"dtype": "float16", "shape": [3, 7],
                                                 "base64": ""}}  # fmt: skip
    with pytest.raises(ValueError, match="malformed"):
        DomainDescription.from_dict(broken)


def test_every_shipped_model_has_a_card_and_a_missing_one_says_so(capsys, tmp_path):
    from clipdet.models.registry import known_detectors

    for name in known_detectors():
        assert run("models", "--card", name) == 0
        card = capsys.readouterr().out
        assert card.startswith(f"# {name}\n")
        for part in ("Trained on", "Generators covered", "Licence", "Published figures",
                     "Known blind spots"):  # fmt: skip
            assert f"**{part}**" in card, (name, part)
    own = tmp_path / "mine"
    own.mkdir()
    (own / "card.md").write_text("# mine\n\nTrained on our photos.\n")
    assert run("models", "--card", "mine", "-w", tmp_path) == 0
    assert "Trained on our photos." in capsys.readouterr().out
    assert run("models", "--card", "nothing_here", "-w", tmp_path) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nothing_here has no model card" in err
