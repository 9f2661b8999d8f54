"""The prepare and infer stages called directly, as another engine would call them; and the
layering rules that let one (networks/ standalone, cheap imports, shared literals)."""

import pickle
import subprocess
import sys

import numpy as np
import open_clip.constants as oc
import pytest
from helpers import REPO, make_image, tiny_backbone_code

from clipdet import constants
from clipdet.options import RunOptions
from clipdet.pipeline.fusion import FUSIONS
from clipdet.pipeline.perturb import Perturbation
from clipdet.pipeline.scoring import iter_scores, load_models, scoring_stages


@pytest.fixture
def stages(weights_dir, tiny_clip_checkpoint):
    options = RunOptions(device="cpu", num_workers=0, backbone_weights=tiny_clip_checkpoint)
    models = load_models(["tiny_a", "tiny_proj", "res_tiny"], weights_dir, options)
    return models, options.resolved()


def test_prepare_gives_an_error_string_for_a_hostile_file(tmp_path, stages):
    models, options = stages
    preparer, _ = scoring_stages(models, options)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    item = preparer(7, str(tmp_path / "bad.png"))
    assert item.index == 7 and item.tensors == {}
    assert item.error.startswith("ImageLoadError") or "cannot" in item.error.lower()
    missing = preparer(3, str(tmp_path / "nope.jpg"))
    assert missing.index == 3 and "nope.jpg" in missing.error


def test_prepare_is_picklable_and_infer_equals_the_local_engine(tmp_path, stages):
    models, options = stages
    paths = [
        str(make_image(tmp_path / f"i{i}.png", size=(40 + 9 * i, 50), seed=i)) for i in range(5)
    ]
    paths.insert(2, str(tmp_path / "missing.png"))
    options = RunOptions(**{**vars(options), "batch_size": len(paths)})
    preparer, infer = scoring_stages(models, options)
    preparer = pickle.loads(pickle.dumps(preparer))  # what a worker process or Ray task gets
    engine = list(iter_scores(models, paths, options))  # one batch of every row
    direct = infer([preparer(i, p) for i, p in enumerate(paths)])
    assert [r.index for r in direct] == [r.index for r in engine] == list(range(6))
    for ours, theirs in zip(direct, engine, strict=True):
        assert ours.error == theirs.error
        np.testing.assert_array_equal(ours.scores, theirs.scores)  # bit for bit, fp32
    assert "missing.png" in direct[2].error and np.isnan(direct[2].scores).all()
    rows = [5, 0, 2, 3]  # any rows, in any order, in smaller batches: indices are the caller's
    again = infer([preparer(i, paths[i]) for i in rows])
    assert [r.index for r in again] == rows
    for r in again:
        np.testing.assert_allclose(r.scores, engine[r.index].scores, rtol=1e-5, atol=1e-5)


def test_prepare_perturbs_with_the_callers_row_index(tmp_path, stages):
    models, options = stages
    options = RunOptions(**{**vars(options), "perturb": "crop:0.3..0.9", "perturb_seed": 4})
    preparer, _ = scoring_stages(models, options)
    path = str(make_image(tmp_path / "a.png", size=(64, 60)))
    from clipdet.pipeline.images import load_rgb

    key = models[0].transform_key
    expected = models[0].transform(Perturbation("crop:0.3..0.9", 4)(load_rgb(path), 9).image)
    assert np.array_equal(preparer(9, path).tensors[key].numpy(), expected.numpy())
    assert not np.array_equal(preparer(1, path).tensors[key].numpy(), expected.numpy())


def test_shared_literals_agree_with_their_sources():
    assert constants.OPENAI_DATASET_MEAN == oc.OPENAI_DATASET_MEAN
    assert constants.OPENAI_DATASET_STD == oc.OPENAI_DATASET_STD
    assert constants.IMAGENET_MEAN == oc.IMAGENET_MEAN
    assert constants.IMAGENET_STD == oc.IMAGENET_STD
    assert tuple(FUSIONS) == constants.FUSION_NAMES


def _imported_after(*steps: str) -> list[set[str]]:
    """The modules loaded in a fresh interpreter after each step; later steps run in the same
    process, so each set holds the earlier steps' too."""
    probe = "import sys\n" + "".join(f"{code}\nprint(' '.join(sorted(sys.modules)))\n"
                                      for code in steps)  # fmt: skip
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True,
                         text=True, check=True)  # fmt: skip
    return [set(line.split()) for line in out.stdout.splitlines()[-len(steps) :]]


@pytest.mark.slow
def test_what_networks_the_clis_the_api_and_a_local_run_import(
    tmp_path, image_dir, weights_dir, tiny_clip_checkpoint
):
    """networks/ imports nothing from clipdet; the CLIs start light; the scoring path loads no
    training, evaluation or scikit-learn; and the local engine works without Ray installed: a
    whole run imports none of it."""
    for cli in ("main", "train"):  # what a CLI imports before it parses its arguments
        (loaded,) = _imported_after(f"import {cli}")
        assert {"torch", "open_clip", "pandas"}.isdisjoint(loaded), cli
    (plain,), (api,) = _imported_after("import clipdet"), _imported_after("import clipdet.api")
    assert "torch" not in plain and "torch" not in api  # names load when used
    # torch's import is the cost (~5 s): networks, then scoring, then a whole local run, in
    # one interpreter
    args = [str(image_dir), "-o", str(tmp_path / "s.csv"), "-w", str(weights_dir), "-m", "tiny_a",
            "--backbone_weights", str(tiny_clip_checkpoint), "-d", "cpu", "-q"]  # fmt: skip
    run = (
        f"{tiny_backbone_code(tiny_clip_checkpoint)}; import main; assert main.main({args!r}) == 0"
    )
    networks, scoring, after_run = _imported_after(
        "import networks", "from clipdet.api import score_images; import clipdet.pipeline.run", run
    )
    assert "torch" in networks and not any(m.startswith("clipdet") for m in networks)
    assert {"torch", "open_clip", "clipdet.pipeline.scoring"} <= scoring
    heavy = ("sklearn", "scipy.stats", "matplotlib", "clipdet.training", "clipdet.evaluation")
    assert not {m for m in scoring if m.startswith(heavy)}  # neither networks nor scoring
    assert not {m for m in after_run if m == "ray" or m.startswith("ray.")}
    assert (tmp_path / "s.csv").exists()


def test_pyproject_dependencies_are_requirements_txt():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lines = (REPO / "requirements.txt").read_text().splitlines()
    assert project["dependencies"] == [line.strip() for line in lines if line.strip()]
