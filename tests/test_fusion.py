import numpy as np
import pytest
from scipy.special import expit, logit

from clipdet.pipeline.fusion import FUSIONS, apply_fusion

X = np.array([[-2.0, 0.5, 3.0], [0.0, 0.0, 0.0], [-7.5, -1.0, 2.25], [4.0, 4.0, -9.0]])


def direct(name, x):
    p = expit(x)
    return {
        "mean_logit": x.mean(1),
        "max_logit": x.max(1),
        "median_logit": np.median(x, 1),
        "lse_logit": np.log(np.exp(x).sum(1)),
        "mean_prob": logit(p.mean(1)),
        "soft_or_prob": logit(1 - np.prod(1 - p, 1)),
    }[name]


@pytest.mark.parametrize("name", sorted(FUSIONS))
def test_fusion_matches_direct_formula(name):
    np.testing.assert_allclose(
        apply_fusion(X, name, axis=1), direct(name, X), rtol=1e-10, atol=1e-10
    )


@pytest.mark.parametrize("name", ["soft_or_prob", "mean_prob"])
def test_probability_fusions_are_stable_for_extreme_scores(name):
    x = np.array([[800.0, 700.0], [-800.0, -700.0], [-800.0, 900.0]])
    out = apply_fusion(x, name, axis=1)
    assert np.all(np.isfinite(out))
    assert out[0] > 600 and out[1] < -600 and out[2] >= 0


def test_soft_or_with_one_model_is_identity():
    x = np.array([[-3.0], [0.25], [12.0]])
    np.testing.assert_allclose(apply_fusion(x, "soft_or_prob", axis=1), x[:, 0], atol=1e-9)


def test_soft_or_is_at_least_the_max():
    out = apply_fusion(X, "soft_or_prob", axis=1)
    assert np.all(out >= X.max(1) - 1e-12)


def test_failed_model_gives_nan_fusion():
    out = apply_fusion(np.array([[1.0, np.nan], [1.0, 2.0]]), "soft_or_prob", axis=1)
    assert np.isnan(out[0]) and np.isfinite(out[1])


def test_unknown_fusion_lists_valid_choices():
    with pytest.raises(ValueError, match="unknown fusion 'avg'.*soft_or_prob.*none"):
        apply_fusion(X, "avg")


def test_soft_or_of_very_negative_scores_stays_finite_and_ordered():
    out = apply_fusion(
        np.array([[-800.0, -900.0], [-800.0, -700.0], [-30.0, -31.0]]), "soft_or_prob", 1
    )
    assert np.all(np.isfinite(out))
    assert out[0] == pytest.approx(-800.0, abs=1e-6)
    assert out[1] == pytest.approx(-700.0, abs=1e-6)
    assert out[2] == pytest.approx(np.log(np.exp(-30.0) + np.exp(-31.0)), abs=1e-9)
