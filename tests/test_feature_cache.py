"""The feature cache's identity: a wrong key would silently give stale LLRs."""

import numpy as np
import open_clip
import pandas as pd
import pytest
import torch
from helpers import TINY_MODEL, local_run_args, make_image

import main as cli
from clipdet.api import score_images

MODELS = ["tiny_a", "tiny_b"]


@pytest.fixture
def paths(tmp_path):
    return [make_image(tmp_path / f"c{i}.png", size=(60 + 7 * i, 50), seed=i) for i in range(3)]


def _llrs(paths, weights_dir, checkpoint, cache=None, **kw):
    table = score_images(
        paths, MODELS, weights_dir, device="cpu", backbone_weights=checkpoint, num_workers=0,
        feature_cache=cache, **kw,
    )  # fmt: skip
    assert (table["error"] == "").all()
    return table[MODELS].to_numpy()


def test_another_backbone_file_is_another_cache_entry(
    tmp_path, paths, weights_dir, tiny_clip_checkpoint
):
    torch.manual_seed(1)
    other = tmp_path / "other_tiny.bin"
    torch.save(open_clip.create_model(TINY_MODEL).state_dict(), other)
    cache = tmp_path / "cache"
    first = _llrs(paths, weights_dir, tiny_clip_checkpoint, cache)
    cached_other = _llrs(paths, weights_dir, other, cache)
    np.testing.assert_array_equal(cached_other, _llrs(paths, weights_dir, other))
    assert not np.allclose(first, cached_other, atol=1e-3)


def test_bf16_and_fp32_features_are_kept_apart(tmp_path, paths, weights_dir, tiny_clip_checkpoint):
    cache = tmp_path / "cache"
    fp32 = _llrs(paths, weights_dir, tiny_clip_checkpoint, cache)
    bf16 = _llrs(paths, weights_dir, tiny_clip_checkpoint, cache, precision="bf16")
    np.testing.assert_array_equal(
        bf16, _llrs(paths, weights_dir, tiny_clip_checkpoint, precision="bf16")
    )
    assert not np.array_equal(fp32, bf16)
    np.testing.assert_array_equal(fp32, _llrs(paths, weights_dir, tiny_clip_checkpoint, cache))


def test_perturbed_runs_bypass_the_cache(tmp_path, paths, weights_dir, tiny_clip_checkpoint):
    cache = tmp_path / "cache"
    common = local_run_args(tiny_clip_checkpoint, weights_dir, ",".join(MODELS))

    def run(name, *extra):
        out = tmp_path / name
        assert cli.main([*map(str, paths), "-o", str(out), *common, *extra]) == 0
        return pd.read_csv(out)[MODELS].to_numpy()

    clean = run("clean.csv", "--feature_cache", str(cache))
    entries = sorted(cache.rglob("*.npy"))
    perturbed = run("p.csv", "--feature_cache", str(cache), "--perturb", "jpeg:30")
    np.testing.assert_array_equal(perturbed, run("p_nocache.csv", "--perturb", "jpeg:30"))
    assert not np.allclose(clean, perturbed, atol=1e-3)
    assert sorted(cache.rglob("*.npy")) == entries  # nothing perturbed was stored
