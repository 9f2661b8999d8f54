"""The Python API's front door: score_images runs the command's route (output files, resume,
calibration, provenance, videos, the Ray engine's options) and equals `clipdet score`."""

import pandas as pd
import pytest
from helpers import ctrl_c_after, local_run_args, make_image

import main as cli
from clipdet.api import calibrate, score_images
from clipdet.options import RunOptions
from clipdet.pipeline import scoring
from clipdet.pipeline.resume import partial_path


@pytest.fixture
def listed(tmp_path):
    names = [f"im{i}.png" for i in range(5)]
    for i, name in enumerate(names):
        make_image(tmp_path / name, size=(44 + 3 * i, 40), seed=i)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    names.append("bad.png")
    csv = tmp_path / "list.csv"
    pd.DataFrame({"filename": names}).to_csv(csv, index=False)
    return csv, [str(tmp_path / n) for n in names]


def api_options(checkpoint) -> dict:
    return {"backbone_weights": str(checkpoint), "device": "cpu", "num_workers": 0}


# the other two formats only in the full suite (the writers are shared: test_storage.py)
SLOW = pytest.mark.slow


@pytest.mark.parametrize(
    "suffix", [".csv", pytest.param(".parquet", marks=SLOW), pytest.param(".jsonl", marks=SLOW)]
)
def test_score_images_with_an_output_and_calibration_equals_the_command(
    listed, weights_dir, tiny_clip_checkpoint, tmp_path, suffix
):
    csv, paths = listed
    cal = tmp_path / "cal.yaml"
    options = RunOptions(**api_options(tiny_clip_checkpoint))
    calibrate(csv, ["tiny_a", "res_tiny"], weights_dir, [0.2], options=options).save(cal)
    by_command = tmp_path / f"command{suffix}"
    argv = ["-i", str(csv), "-o", str(by_command), "--calibration", str(cal), "--provenance"]
    assert (
        cli.main([*argv, *local_run_args(tiny_clip_checkpoint, weights_dir, "tiny_a,res_tiny")])
        == 0
    )
    by_api = tmp_path / f"api{suffix}"
    table = score_images(paths, ["tiny_a", "res_tiny"], weights_dir, out=by_api,
                         calibration=str(cal), provenance=True,
                         filenames=pd.read_csv(csv)["filename"].tolist(),
                         **api_options(tiny_clip_checkpoint))  # fmt: skip
    assert by_api.read_bytes() == by_command.read_bytes()
    assert {"verdict", "verdict_reason", "provenance", "jpeg_quality"} <= set(table.columns)
    assert not partial_path(by_api).exists()  # a finished run leaves no partial file


def test_an_interrupted_python_run_resumes_from_python_to_the_commands_output(
    listed, weights_dir, tiny_clip_checkpoint, tmp_path, monkeypatch
):
    csv, paths = listed
    names = pd.read_csv(csv)["filename"].tolist()
    clean = tmp_path / "clean.csv"
    argv = ["-i", str(csv), "-o", str(clean), "--batch_size", "1"]
    assert cli.main([*argv, *local_run_args(tiny_clip_checkpoint, weights_dir, "tiny_a")]) == 0
    out = tmp_path / "api.csv"
    kwargs = dict(out=out, filenames=names, batch_size=1, **api_options(tiny_clip_checkpoint))
    with ctrl_c_after(monkeypatch, scoring, 2), pytest.raises(KeyboardInterrupt):
        score_images(paths, ["tiny_a"], weights_dir, **kwargs)
    assert len(partial_path(out).read_text().splitlines()) == 3  # header + 2 rows
    assert "not scored: run interrupted" in out.read_text()  # what was done is written
    seen = []
    real = scoring.iter_scores

    def counting(models, paths, options, rows=None, *args, **kw):
        seen.extend(rows)
        return real(models, paths, options, rows, *args, **kw)

    monkeypatch.setattr(scoring, "iter_scores", counting)
    with pytest.raises(ValueError, match="--resume"):  # refused without resume
        score_images(paths, ["tiny_a"], weights_dir, **kwargs)
    table = score_images(paths, ["tiny_a"], weights_dir, resume=True, **kwargs)
    assert sorted(seen) == [2, 3, 4, 5]  # the first two rows were not scored again
    assert out.read_bytes() == clean.read_bytes()
    assert table["error"].tolist()[-1].startswith("ImageLoadError")


def test_score_images_without_an_output_keeps_its_old_form(
    listed, weights_dir, tiny_clip_checkpoint
):
    _, paths = listed
    table = score_images(paths, ["tiny_a", "tiny_b"], weights_dir, fusion=None,
                         **api_options(tiny_clip_checkpoint))  # fmt: skip
    assert list(table.columns) == ["filename", "tiny_a", "tiny_b", "error"]
    assert table["filename"].tolist() == paths
    with pytest.raises(ValueError, match="unknown engine 'spark'; valid choices: local, ray"):
        score_images(paths, ["tiny_a"], weights_dir, engine="spark",
                     **api_options(tiny_clip_checkpoint))  # fmt: skip


def test_score_images_groups_copies_given_as_labels(tmp_path, weights_dir, tiny_clip_checkpoint):
    """``group=`` a label per path gives the command's group and group_size columns."""
    from helpers import make_image

    from clipdet.api import score_images

    paths = [make_image(tmp_path / f"{i}.png", seed=i) for i in range(4)]
    table = score_images(paths, ["tiny_a"], weights_dir, device="cpu", num_workers=0,
                         backbone_weights=tiny_clip_checkpoint,
                         group=["a", "a", "b", None])  # fmt: skip
    assert table["group"].tolist() == ["a", "a", "b", "#3"]
    assert table["group_size"].tolist() == [2, 2, 1, 1]
