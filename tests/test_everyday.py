"""Everyday use: paths and folders, terminal table, JSON lines, resumable runs, Ctrl-C."""

import io
import json
import os
import signal
import subprocess
import time

import numpy as np
import pandas as pd
import pytest
from helpers import REPO, local_run_args, main_command, make_image

import main as cli
from clipdet.pipeline.inputs import collect_images


def test_folders_recurse_sorted_and_skip_non_images(tmp_path):
    for rel in ["b/z.png", "b/a/y.JPG", "a.jpeg", "b/notes.txt", "b/a/x.webp"]:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    found = collect_images([str(tmp_path / "b"), str(tmp_path / "a.jpeg")])
    rel = [os.path.relpath(p, tmp_path) for p in found]
    assert rel == ["b/a/x.webp", "b/a/y.JPG", "b/z.png", "a.jpeg"]


def test_globs_missing_files_kept_and_duplicates_dropped(tmp_path):
    for name in ["c.png", "a.png", "b.jpg"]:
        (tmp_path / name).write_bytes(b"x")
    found = collect_images([str(tmp_path / "*.png"), str(tmp_path / "a.png"), "nope.jpg"])
    assert [os.path.basename(p) for p in found] == ["a.png", "c.png", "nope.jpg"]
    with pytest.raises(ValueError, match="no file matches the pattern"):
        collect_images([str(tmp_path / "*.gif")])


def test_csv_and_paths_together_are_refused(
    tmp_path, image_dir, weights_dir, tiny_clip_checkpoint, capsys
):
    code = cli.main([str(image_dir), "--in_csv", "x.csv", "-w", str(weights_dir), "-q"])
    assert code == 2 and "not both" in capsys.readouterr().err
    assert cli.main(["-w", str(weights_dir), "-q"]) == 2
    assert "not neither" in capsys.readouterr().err


def test_few_images_print_a_readable_table(image_dir, weights_dir, tiny_clip_checkpoint, capsys):
    code = cli.main(
        [
            str(image_dir / "img0.png"),
            str(image_dir / "gone.png"),
            *local_run_args(tiny_clip_checkpoint, weights_dir, "tiny_a,tiny_b"),
            "--threshold",
            "-100",
        ]
    )
    assert code == 0
    out = capsys.readouterr()
    lines = out.out.strip().splitlines()
    assert lines[0].split() == ["filename", "tiny_a", "tiny_b", "fusion", "verdict", "error"]
    assert "img0.png" in lines[1] and "synthetic" in lines[1]  # every score > -100
    assert "gone.png" in lines[2] and "file not found" in lines[2]
    assert "1 scored, 1 failed, 1 flagged as synthetic (score > -100)" in out.err


def test_jsonl_output(tmp_path, image_dir, weights_dir, tiny_clip_checkpoint):
    out = tmp_path / "r.jsonl"
    code = cli.main(
        [
            str(image_dir),
            "-o",
            str(out),
            "--format",
            "jsonl",
            *local_run_args(tiny_clip_checkpoint, weights_dir, "tiny_a"),
        ]
    )
    assert code == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [os.path.basename(r["filename"]) for r in rows] == [f"img{i}.png" for i in range(5)]
    assert all(r["verdict"] in ("real", "synthetic") and r["error"] == "" for r in rows)
    assert all(isinstance(r["tiny_a"], float) for r in rows)
    assert not (tmp_path / "r.jsonl.partial.jsonl").exists()  # removed after a complete run


def _images(folder, n):
    for i in range(n):
        make_image(folder / f"im{i:03d}.png", size=(64 + i, 48), seed=i)
    csv = folder / "list.csv"
    pd.DataFrame({"filename": [f"im{i:03d}.png" for i in range(n)] + ["missing.png"]}).to_csv(
        csv, index=False
    )
    return csv


def _wait_for_rows(partial, n, proc, timeout=120):
    start = time.time()
    while time.time() - start < timeout:
        if partial.exists() and len(partial.read_text().splitlines()) > n:
            return
        if proc.poll() is not None:
            pytest.fail(f"run ended early: {proc.stderr.read()}")
        time.sleep(0.05)
    pytest.fail("no progress")


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_csv(tmp_path, weights_dir, tiny_clip_checkpoint, capsys):
    """Only the run that is killed needs a process of its own; the others run in-process."""
    csv = _images(tmp_path / "imgs", 16)
    common = ["--in_csv", str(csv), "-w", str(weights_dir), "-m", "tiny_a,res_tiny"]
    common += ["--batch_size", "1", "--num_workers", "0", "-q"]
    in_process = [*common, "--backbone_weights", str(tiny_clip_checkpoint), "-d", "cpu"]
    clean = tmp_path / "clean.csv"
    assert cli.main([*in_process, "-o", str(clean)]) == 0

    out = tmp_path / "resumed.csv"
    partial = tmp_path / "resumed.csv.partial.jsonl"
    proc = subprocess.Popen(
        main_command(tiny_clip_checkpoint, *common, "-o", str(out)),
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for_rows(partial, 5, proc)
    proc.kill()  # SIGKILL: no chance to clean up
    proc.wait()
    assert not out.exists() and partial.exists()
    done_before = len(partial.read_text().splitlines()) - 1
    assert 0 < done_before < 17

    capsys.readouterr()
    assert cli.main([*in_process, "-o", str(out)]) == 2  # refuses to overwrite the work
    assert "--resume" in capsys.readouterr().err
    assert cli.main([*in_process, "-o", str(out), "--resume"]) == 0
    assert out.read_bytes() == clean.read_bytes()
    assert not partial.exists()


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["0", "2"])
def test_ctrl_c_writes_what_is_done_and_says_how_to_resume(
    tmp_path, weights_dir, tiny_clip_checkpoint, workers
):
    """SIGINT to the main process, with decoding in-process or in worker processes (which
    get the signal too when a terminal sends it to the process group)."""
    csv = _images(tmp_path / "imgs", 40)
    out = tmp_path / "r.csv"
    args = [
        "--in_csv",
        str(csv),
        "-o",
        str(out),
        "-w",
        str(weights_dir),
        "-m",
        "res_tiny",
        "--batch_size",
        "1",
        "--num_workers",
        workers,
        "-q",
    ]
    proc = subprocess.Popen(
        main_command(tiny_clip_checkpoint, *args),
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, like a job in a shell
        # Ctrl-C as a terminal's foreground job gets it: a shell ignores SIGINT in the jobs it
        # starts in the background (`&` without job control), and Python then keeps ignoring it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    _wait_for_rows(tmp_path / "r.csv.partial.jsonl", 3, proc)
    os.killpg(proc.pid, signal.SIGINT)  # as Ctrl-C in a terminal: the whole process group
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert "--resume" in err and "interrupted after" in err
    table = pd.read_csv(out, keep_default_na=False)
    assert len(table) == 41
    scored = table["error"] == ""
    assert 3 <= scored.sum() < 40
    assert (table.loc[~scored, "error"].str.contains("not scored|not found")).all()
    assert np.isfinite(pd.to_numeric(table.loc[scored, "res_tiny"])).all()


def test_more_than_twenty_paths_go_to_results_csv(
    tmp_path, weights_dir, tiny_clip_checkpoint, monkeypatch, capsys
):
    folder = tmp_path / "many"
    for i in range(21):
        make_image(folder / f"p{i:02d}.png", size=(40, 40), seed=i)
    monkeypatch.chdir(tmp_path)
    assert (
        cli.main([str(folder), *local_run_args(tiny_clip_checkpoint, weights_dir, "tiny_a")]) == 0
    )
    assert capsys.readouterr().out == ""
    table = pd.read_csv(tmp_path / "results.csv")
    assert list(table.columns) == ["filename", "tiny_a", "fusion", "error"] and len(table) == 21


def test_dash_writes_csv_to_stdout(image_dir, weights_dir, tiny_clip_checkpoint, capsys):
    args = [str(image_dir), "-o", "-", *local_run_args(tiny_clip_checkpoint, weights_dir, "tiny_a")]
    assert cli.main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "filename,tiny_a,fusion,error" and len(lines) == 6


def test_jsonl_failed_rows_have_null_scores_and_no_verdict(
    tmp_path, image_dir, weights_dir, tiny_clip_checkpoint
):
    out = tmp_path / "r.jsonl"
    args = [str(image_dir / "img0.png"), str(image_dir / "gone.png"), "-o", str(out)]
    args += [
        "--format",
        "jsonl",
        *local_run_args(tiny_clip_checkpoint, weights_dir, "tiny_a,tiny_b"),
    ]
    assert cli.main(args) == 0
    good, bad = (json.loads(line) for line in out.read_text().splitlines())
    assert bad["tiny_a"] is None and bad["fusion"] is None and bad["verdict"] == ""
    assert "file not found" in bad["error"]
    assert isinstance(good["fusion"], float) and good["verdict"] in ("real", "synthetic")


def test_without_fusion_the_verdict_reads_the_largest_llr(
    image_dir, weights_dir, tiny_clip_checkpoint, capsys
):
    paths = [str(p) for p in sorted(image_dir.glob("*.png"))]
    common = local_run_args(tiny_clip_checkpoint, weights_dir, "tiny_a,tiny_b")
    assert cli.main([*paths, "-o", "-", *common]) == 0
    scores = pd.read_csv(io.StringIO(capsys.readouterr().out))
    largest = scores[["tiny_a", "tiny_b"]].max(axis=1)
    threshold = float(np.median(largest))  # some images on each side
    args = [*paths, "--fusion", "none", "--format", "jsonl", "-o", "-", *common]
    assert cli.main([*args, "--threshold", str(threshold)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert "fusion" not in rows[0]
    expected = ["synthetic" if v > threshold else "real" for v in largest]
    assert [r["verdict"] for r in rows] == expected and len(set(expected)) == 2
