"""Streamed Ray runs (an output folder, --in_wds): the cluster reads list files or WebDataset
tars and writes Parquet parts; each row once, the local engine's LLRs, errors marked; a killed
driver resumed; S3 in and out. Plus the pieces on their own (no Ray needed)."""

import io
import json
import os
import signal
import subprocess
import tarfile
import time

import numpy as np
import pandas as pd
import pytest
from helpers import local_run_args, main_command, make_image

import main as cli
from clipdet.files import read_scores_folder, read_table
from clipdet.pipeline.ray_stream import DONE, RUN_RECORD, _ShardCounter
from clipdet.pipeline.shards import _tar_rows, expand_braces, find_shards

MODELS = "tiny_a,tiny_b"


# ---- the pieces -----------------------------------------------------------------------------


def test_brace_patterns_and_shard_discovery(tmp_path):
    assert expand_braces("s/{00008..00011}.tar") == [f"s/000{n:02d}.tar" for n in (8, 9, 10, 11)]
    assert expand_braces("{a,b}/x{1..2}") == ["a/x1", "a/x2", "b/x1", "b/x2"]
    for name in ("b.csv", "a.parquet", "notes.txt"):
        (tmp_path / name).write_text("filename\n")
    folder = [s.location for s in find_shards(in_list=str(tmp_path))]
    assert folder == [str(tmp_path / "a.parquet"), str(tmp_path / "b.csv")]
    assert [s.location for s in find_shards(in_list=str(tmp_path / "*.csv"))] == [
        str(tmp_path / "b.csv")
    ]
    with pytest.raises(ValueError, match="no input shard found"):
        find_shards(in_wds=str(tmp_path / "none-*.tar"))


def write_tar(path, samples) -> None:
    """A WebDataset shard: members ``key.ext`` in sample order."""
    with tarfile.open(path, "w") as tar:
        for key, members in samples:
            for extension, data in members.items():
                info = tarfile.TarInfo(f"{key}.{extension}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def test_tar_samples_group_members_by_key_and_name_their_errors(tmp_path):
    image = make_image(tmp_path / "i.png").read_bytes()
    write_tar(tmp_path / "s.tar", [("a/001", {"png": image, "json": b"{}"}),
                                   ("a/002", {"txt": b"caption only"}),
                                   ("a/003", {"jpg": b"not a jpeg", "cls": b"1"})])  # fmt: skip
    rows = list(_tar_rows(str(tmp_path / "s.tar")))
    assert [r[0] for r in rows] == ["a/001", "a/002", "a/003"]
    assert rows[0][2] == image and rows[0][3] == ""
    assert rows[1][2] is None and "no image or video member" in rows[1][3]
    assert rows[2][2] == b"not a jpeg"  # decoding it is the prepare stage's error
    (tmp_path / "cut.tar").write_bytes((tmp_path / "s.tar").read_bytes()[:1200])
    cut = list(_tar_rows(str(tmp_path / "cut.tar")))
    assert "unreadable tar" in cut[-1][3]


def test_a_shard_is_done_once_each_of_its_rows_is_written_whatever_the_repeats():
    counter = _ShardCounter()
    assert not counter.add(0, [0, 1], [], -1)
    assert not counter.add(0, [1, 2], [2], -1)  # row 1 reported twice (a retried task)
    assert not counter.add(0, [3], [], 5)  # the last row tells the total: 4 of 5 so far
    assert counter.add(0, [4], [4], -1)
    assert counter.pop(0) == (5, 2)


def test_a_folder_read_back_keeps_each_row_once(tmp_path):
    part = pd.DataFrame({"filename": ["x", "y"], "source": ["s0", "s0"], "source_row": [0, 1],
                         "m": [1.0, 2.0], "error": ["", ""]})  # fmt: skip
    (tmp_path / "shard-000000").mkdir()
    part.to_parquet(tmp_path / "shard-000000" / "part-1.parquet")
    part.iloc[::-1].to_parquet(tmp_path / "shard-000000" / "part-2.parquet")  # written twice
    table = read_table(str(tmp_path) + "/")
    assert table["filename"].tolist() == ["x", "y"] and table["m"].tolist() == [1.0, 2.0]


# ---- whole runs on a local Ray instance -----------------------------------------------------


@pytest.fixture(scope="module")
def sharded_list(tmp_path_factory):
    """3,000 rows in three list files (CSV, CSV, Parquet): mostly missing files, 12 images of
    several sizes and formats, a truncated and a text file."""
    root = tmp_path_factory.mktemp("sharded")
    names = [f"missing/{i}.png" for i in range(3000)]
    for i in range(12):
        fmt = ("png", "jpg", "webp")[i % 3]
        make_image(root / f"img{i}.{fmt}", size=(40 + 7 * i, 50), seed=i)
        names[250 * i + 7] = f"img{i}.{fmt}"
    good = make_image(root / "whole.jpg", size=(120, 90), format="JPEG").read_bytes()
    (root / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (root / "notes.png").write_text("not an image")
    names[1500], names[2999] = "truncated.jpg", "notes.png"
    lists = root / "lists"
    lists.mkdir()
    for i, chunk in enumerate((names[:1000], names[1000:2000], names[2000:])):
        table = pd.DataFrame({"filename": [f"../{n}" for n in chunk]})
        table.to_parquet(lists / f"part{i}.parquet") if i == 2 else table.to_csv(
            lists / f"part{i}.csv", index=False
        )
    pd.DataFrame({"filename": names}).to_csv(root / "all.csv", index=False)
    return root


@pytest.mark.slow
def test_a_streamed_run_writes_each_row_once_with_the_local_engines_scores(
    ray_instance,
    tmp_path,
    sharded_list,
    weights_dir,
    tiny_clip_checkpoint,
):
    flags = local_run_args(tiny_clip_checkpoint, weights_dir, MODELS)
    out = tmp_path / "scores"
    argv = ["-i", str(sharded_list / "lists"), "-o", f"{out}/", "--engine", "ray"]
    assert cli.main([*argv, "--batch_size", "8", "--group", "auto", *flags]) == 0
    streamed = read_scores_folder(str(out))
    assert len(streamed) == 3000
    assert not streamed.duplicated(["source", "source_row"]).any()
    assert sorted(p.name for p in out.iterdir()) == [
        "_groups.parquet",  # the copies found, from a pass over the parts
        RUN_RECORD,
        *(f"shard-00000{i}" for i in range(3)),
    ]
    for i in range(3):
        assert json.loads((out / f"shard-00000{i}" / DONE).read_text())["rows"] == 1000
    record = json.loads((out / RUN_RECORD).read_text())
    assert (record["status"], record["rows"], record["shards"]) == ("complete", 3000, 3)
    assert record["failed"] == 3000 - 12
    local_argv = ["-i", str(sharded_list / "all.csv"), "-o", str(tmp_path / "local.csv")]
    assert cli.main([*local_argv, "--group", "auto", *flags]) == 0
    local = pd.read_csv(tmp_path / "local.csv", keep_default_na=False, na_values=[""])
    assert streamed["filename"].str.removeprefix("../").tolist() == local["filename"].tolist()
    groups = pd.read_parquet(out / "_groups.parquet")  # the same copies as the local run's
    assert groups["filename"].tolist() == streamed["filename"].tolist()
    assert groups["group_size"].tolist() == local["group_size"].tolist()
    for column in ("tiny_a", "tiny_b", "fusion"):
        np.testing.assert_allclose(streamed[column], local[column], atol=1e-5, equal_nan=True)
    errors = streamed["error"].fillna("")
    assert (errors != "").sum() == 3000 - 12
    bad = dict(zip(streamed["filename"], errors, strict=True))
    assert (
        "cannot decode image" in bad["../truncated.jpg"]
        and "not a readable image" in bad["../notes.png"]
    )
    assert "file not found" in bad["../missing/0.png"]


@pytest.mark.slow
def test_webdataset_shards_with_corrupt_members_and_videos(
    ray_instance,
    tmp_path,
    weights_dir,
    tiny_clip_checkpoint,
):
    """Two shards: images, a corrupt JPEG, a sample with no image, a video (one task's unit,
    its frames folded into its row) and a broken one; the local engine's LLRs."""
    pytest.importorskip("av")
    from videos import pattern, write_video

    images = [make_image(tmp_path / f"i{i}.png", size=(50 + 9 * i, 40), seed=i) for i in range(6)]
    write_video(tmp_path / "i6.mkv", lambda k: pattern(64, 48, k), 8)
    samples = [(f"{k:05d}", {"png": images[k].read_bytes(), "txt": b"caption"}) for k in range(6)]
    samples[2] = ("00002", {"jpg": b"\xff\xd8 corrupt", "txt": b"caption"})
    samples[4] = ("00004", {"txt": b"no image"})
    samples.append(("00006", {"mkv": (tmp_path / "i6.mkv").read_bytes(), "txt": b"clip"}))
    samples.append(("00007", {"mp4": b"\x00\x00\x00\x18ftypmp42 broken", "txt": b"bad"}))
    write_tar(tmp_path / "shard-00000.tar", samples[:3])
    write_tar(tmp_path / "shard-00001.tar", samples[3:])
    flags = [*local_run_args(tiny_clip_checkpoint, weights_dir, MODELS), "--video_frames", "4"]
    out = f"{tmp_path}/scores/"
    shards = str(tmp_path / "shard-{00000..00001}.tar")
    assert cli.main(["--in_wds", shards, "-o", out, "--engine", "ray", *flags]) == 0
    table = read_scores_folder(out)
    assert table["filename"].tolist() == [f"{k:05d}" for k in range(8)]
    assert table["source"].str.endswith(("shard-00000.tar", "shard-00001.tar")).all()
    errors = table["error"].fillna("")
    assert "cannot decode image" in errors[2] or "not a readable image" in errors[2]
    assert "no image or video member" in errors[4]
    assert "not a readable video" in errors[7]
    assert table["frames"][6] == 4 and table["frames"][:6].isna().all()
    good = [0, 1, 3, 5, 6]
    names = [f"i{k}.png" for k in good[:-1]] + ["i6.mkv"]
    pd.DataFrame({"filename": names}).to_csv(tmp_path / "l.csv", index=False)
    assert cli.main(["-i", str(tmp_path / "l.csv"), "-o", str(tmp_path / "local.csv"), *flags]) == 0
    local = pd.read_csv(tmp_path / "local.csv")
    for column in MODELS.split(","):
        np.testing.assert_allclose(table.loc[good, column], local[column], atol=1e-4)


@pytest.mark.slow
def test_a_killed_driver_resumes_and_each_row_is_kept_once(
    ray_instance,
    tmp_path,
    sharded_list,
    weights_dir,
    tiny_clip_checkpoint,
    capsys,
):
    out = tmp_path / "scores"
    flags = ["-w", str(weights_dir), "-m", MODELS, "--num_workers", "0", "-q"]
    argv = ["-i", str(sharded_list / "lists"), "-o", f"{out}/", "--engine", "ray"]
    argv += ["--batch_size", "1"]  # small batches: the run lasts long enough to be killed
    driver = subprocess.Popen(main_command(tiny_clip_checkpoint, *argv, *flags),
                              start_new_session=True, stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not list(out.glob("shard-*/part-*.parquet")):
        if driver.poll() is not None:
            pytest.fail(f"driver ended early: {driver.stderr.read().decode()[-2000:]}")
        time.sleep(0.2)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    record = json.loads((out / RUN_RECORD).read_text())
    assert record["status"] == "running"  # killed before the end
    in_process = [*argv, *local_run_args(tiny_clip_checkpoint, weights_dir, MODELS)]
    capsys.readouterr()
    assert cli.main(in_process) == 2  # refuses to mix with the run it finds
    assert "--resume" in capsys.readouterr().err
    faster = ["--batch_size", "32"]  # (not part of a run's signature)
    assert cli.main([*in_process, "--resume", *faster]) == 0
    resumed = read_scores_folder(str(out))
    assert len(resumed) == 3000 and not resumed.duplicated(["source", "source_row"]).any()
    assert json.loads((out / RUN_RECORD).read_text())["rows"] == 3000
    local = tmp_path / "local.csv"  # the reference: the local engine, the same rows
    local_argv = ["-i", str(sharded_list / "all.csv"), "-o", str(local)]
    assert cli.main([*local_argv, *local_run_args(tiny_clip_checkpoint, weights_dir, MODELS)]) == 0
    reference = pd.read_csv(local, keep_default_na=False, na_values=[""])
    assert resumed["filename"].str.removeprefix("../").tolist() == reference["filename"].tolist()
    np.testing.assert_allclose(resumed["tiny_a"], reference["tiny_a"], atol=1e-5, equal_nan=True)


@pytest.mark.slow
def test_a_streamed_run_reads_and_writes_s3(
    ray_instance,
    s3_server,
    tmp_path,
    weights_dir,
    tiny_clip_checkpoint,
):
    import boto3

    bucket = boto3.client("s3")
    names = []
    for i in range(5):
        path = make_image(tmp_path / f"s{i}.png", size=(48, 40 + i), seed=i)
        bucket.upload_file(str(path), "clipdet", f"stream/images/s{i}.png")
        names.append(f"images/s{i}.png")
    names.append("images/gone.png")
    for i, chunk in enumerate((names[:3], names[3:])):
        body = pd.DataFrame({"filename": chunk}).to_csv(index=False).encode()
        bucket.put_object(Bucket="clipdet", Key=f"stream/list{i}.csv", Body=body)
    out = "s3://clipdet/stream/scores/"
    argv = ["-i", "s3://clipdet/stream/list*.csv", "-o", out, "--engine", "ray"]
    assert cli.main([*argv, *local_run_args(tiny_clip_checkpoint, weights_dir, MODELS)]) == 0
    table = read_scores_folder(out)
    assert table["filename"].tolist() == names
    assert table["tiny_a"].notna().sum() == 5 and "gone.png" in table["error"].iloc[-1]
