"""Resumable runs through main.py: what a resume refuses, a torn last line, rows not redone."""

import os

import pandas as pd
import pytest
from helpers import ctrl_c_after, local_run_args, make_image

import main as cli
from clipdet.pipeline import scoring as run_module  # the local route scores with it
from clipdet.pipeline.resume import partial_path


@pytest.fixture
def interrupted(tmp_path, weights_dir, tiny_clip_checkpoint, monkeypatch, capsys):
    """A run of 6 images stopped by Ctrl-C after 2 rows: (argv, output)."""
    names = [f"im{i}.png" for i in range(6)]
    for i, name in enumerate(names):
        make_image(tmp_path / name, size=(50 + i, 40), seed=i)
    csv = tmp_path / "list.csv"
    pd.DataFrame({"filename": names}).to_csv(csv, index=False)
    out = tmp_path / "r.csv"
    argv = ["-i", str(csv), "-o", str(out), "--batch_size", "1"]
    argv += local_run_args(tiny_clip_checkpoint, weights_dir, "tiny_a,res_tiny")

    with ctrl_c_after(monkeypatch, run_module, 2):
        assert cli.main(argv) == 130
    assert len(partial_path(out).read_text().splitlines()) == 3  # signature + 2 rows
    capsys.readouterr()
    return argv, out


def uninterrupted(argv, folder) -> bytes:
    """The output of the same run, not interrupted."""
    assert cli.main([*argv[:3], str(folder / "clean.csv"), *argv[4:]]) == 0
    return (folder / "clean.csv").read_bytes()


def test_resume_scores_only_the_missing_rows(interrupted, monkeypatch, tmp_path):
    argv, out = interrupted
    clean = uninterrupted(argv, tmp_path)
    seen = []
    real = run_module.iter_scores
    monkeypatch.setattr(
        run_module,
        "iter_scores",
        lambda models, paths, options, rows, *rest: (
            seen.extend(paths[i] for i in rows) or real(models, paths, options, rows, *rest)
        ),
    )
    assert cli.main([*argv, "--resume"]) == 0
    assert [os.path.basename(p) for p in seen] == [f"im{i}.png" for i in range(2, 6)]
    assert out.read_bytes() == clean and not partial_path(out).exists()


def test_a_torn_last_line_is_cut_and_its_row_scored_again(interrupted, tmp_path):
    argv, out = interrupted
    clean = uninterrupted(argv, tmp_path)
    with open(partial_path(out), "a", encoding="utf-8") as f:
        f.write('{"index": 2, "filename": "im2.png", "scores": [0.1')  # killed mid-write
    assert cli.main([*argv, "--resume"]) == 0
    assert out.read_bytes() == clean


@pytest.mark.parametrize("change", ["images", "models", "weights", "perturb"])
def test_resume_refuses_another_run(interrupted, weights_dir, change, capsys, tmp_path):
    argv, out = interrupted
    argv = list(argv)
    if change == "images":
        csv = tmp_path / "list.csv"
        table = pd.read_csv(csv)
        table.loc[len(table)] = ["im0.png"]
        table.to_csv(csv, index=False)
    elif change == "models":
        argv[argv.index("tiny_a,res_tiny")] = "tiny_a,tiny_b"
    elif change == "weights":  # same file name, new contents
        path = weights_dir / "tiny_a" / "weights.pth"
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    else:
        argv += ["--perturb", "jpeg:80"]
    before = partial_path(out).read_bytes()
    try:
        assert cli.main([*argv, "--resume"]) == 2
    finally:
        if change == "weights":  # the folder is shared by the session's tests
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert "other images, models or weights" in capsys.readouterr().err
    assert partial_path(out).read_bytes() == before  # the work is kept


def test_an_unexpected_error_mid_run_still_writes_the_output(tmp_path, monkeypatch, interrupted):
    argv, out = interrupted
    partial_path(out).unlink()
    real = run_module.iter_scores

    def two_then_crash(*args, **kwargs):
        for count, result in enumerate(real(*args, **kwargs)):
            if count == 2:
                raise RuntimeError("disk on fire")
            yield result

    monkeypatch.setattr(run_module, "iter_scores", two_then_crash)
    assert cli.main(argv) == 2
    table = pd.read_csv(out, keep_default_na=False)
    assert (table["error"] == "not scored: run interrupted").sum() == 4
    assert len(partial_path(out).read_text().splitlines()) == 3  # kept for --resume
