"""The Ray Data engine on a real local Ray instance (2 CPUs) started here: same LLRs as the local
engine, hostile rows, a killed infer actor, a killed driver resumed, S3 input and output."""

import os
import signal
import struct
import subprocess
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import ray
from helpers import TINY_BACKBONE, local_run_args, main_command, make_image, train_args

import main as cli
import train as train_cli
from clipdet.options import RunOptions
from clipdet.pipeline.ray_engine import RayEngine, RayOptions
from clipdet.pipeline.scoring import iter_scores, load_models, scoring_stages

pytestmark = pytest.mark.slow

CLIP_MODELS = "tiny_a,tiny_b,attr"


def png_bomb(path: Path) -> Path:
    """A PNG header declaring 100,000 x 100,000 pixels (and no pixel data)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory, weights_dir, tiny_clip_checkpoint):
    """The shared tiny detectors plus an attribution model trained on two colours."""
    root = tmp_path_factory.mktemp("ray_models")
    for name in ("tiny_a", "tiny_b", "res_tiny"):
        os.symlink(weights_dir / name, root / name)
    rows = []
    for typ, seed0 in (("real", 0), ("gen", 500)):
        for i in range(4):
            make_image(root / "train" / f"{typ}{i}.png", size=(48, 48), seed=seed0 + i)
            rows.append((f"train/{typ}{i}.png", typ))
    csv = root / "train.csv"
    pd.DataFrame(rows, columns=["filename", "typ"]).to_csv(csv, index=False)
    args = train_args(
        csv, root, "attr", tiny_clip_checkpoint, f"opencliplinearnext_{TINY_BACKBONE}"
    )
    assert train_cli.main(["--task", "attribution", *args]) == 0
    return root


@pytest.fixture(scope="module")
def mixed_list(tmp_path_factory):
    """12 good images of several sizes and formats, and four hostile rows."""
    root = tmp_path_factory.mktemp("ray_images")
    names = []
    for i in range(12):
        fmt = ("png", "jpg", "webp")[i % 3]
        make_image(root / f"img{i}.{fmt}", size=(40 + 9 * i, 60 - 2 * i), seed=i)
        names.append(f"img{i}.{fmt}")
    good = make_image(root / "whole.jpg", size=(200, 150), format="JPEG").read_bytes()
    (root / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (root / "notes.png").write_text("hello, not an image")
    png_bomb(root / "bomb.png")
    hostile = ["missing.png", "truncated.jpg", "notes.png", "bomb.png"]
    for position, name in zip((0, 5, 9, 14), hostile, strict=True):
        names.insert(position, name)
    csv = root / "list.csv"
    pd.DataFrame({"filename": names}).to_csv(csv, index=False)
    return csv, hostile


def run(csv, out, models_dir, checkpoint, *extra, models=CLIP_MODELS) -> pd.DataFrame:
    argv = ["-i", str(csv), "-o", str(out), *local_run_args(checkpoint, models_dir, models)]
    assert cli.main([*argv, *extra]) == 0
    return pd.read_csv(out, keep_default_na=False, na_values=[""])


def assert_same_scores(a: pd.DataFrame, b: pd.DataFrame, atol=1e-5, rtol=2e-6) -> None:
    """Equal to float32's batch-composition noise (which grows with the LLR's magnitude)."""
    assert list(a.columns) == list(b.columns)
    for column in a.columns:
        if pd.api.types.is_float_dtype(a[column]):
            np.testing.assert_allclose(a[column], b[column], atol=atol, rtol=rtol,
                                       equal_nan=True, err_msg=column)  # fmt: skip
        else:
            assert a[column].fillna("").tolist() == b[column].fillna("").tolist(), column


def test_ray_engine_gives_the_local_engines_rows(
    ray_instance, tmp_path, models_dir, mixed_list, tiny_clip_checkpoint
):
    """Two infer actors give the local engine's rows: LLRs, attribution, hostile rows' errors,
    and every row extension read in the prepare tasks (image size and JPEG quality, so the
    calibrated verdicts and their reasons; views scored in the same pass; copy keys and groups;
    provenance, where c2pa is installed): one Ray run, its columns equal to the local run's."""
    import importlib.util

    from clipdet.cli import main as clipdet
    from clipdet.provenance.samples import WEBUI, picture, png_bytes

    csv, hostile = mixed_list
    calibration = tmp_path / "cal.yaml"
    common = local_run_args(tiny_clip_checkpoint, models_dir, "tiny_a,tiny_b")
    assert clipdet(["calibrate", "--real", str(csv), "-o", str(calibration), *common]) == 0
    flags = ["--calibration", str(calibration), "--views", "blur:1;jpeg:50", "--group", "auto"]
    listed = pd.read_csv(csv)["filename"].tolist()
    provenance = importlib.util.find_spec("c2pa") is not None
    if provenance:
        flags.append("--provenance")
        (csv.parent / "webui.png").write_bytes(
            png_bytes(picture(300, 300), texts=[("parameters", WEBUI)])
        )
        listed.append("webui.png")
    listed_csv = csv.parent / "rows.csv"
    pd.DataFrame({"filename": listed}).to_csv(listed_csv, index=False)
    local = run(listed_csv, tmp_path / "local.csv", models_dir, tiny_clip_checkpoint, *flags)
    on_ray = run(
        listed_csv, tmp_path / "ray.csv", models_dir, tiny_clip_checkpoint, *flags,
        "--engine", "ray", "--batch_size", "3", "--workers", "2", "--cpus_per_worker", "0.5",
    )  # fmt: skip
    assert_same_scores(local, on_ray)
    assert on_ray["filename"].tolist() == listed
    assert {"tiny_a", "tiny_b", "fusion", "attr", "attr_p_gen", "attr_p_real"} <= set(on_ray)
    failed = on_ray[on_ray["error"].notna()]
    assert sorted(failed["filename"]) == sorted(hostile)
    messages = dict(zip(failed["filename"], failed["error"], strict=True))
    assert "file not found" in messages["missing.png"]
    assert "cannot decode image" in messages["truncated.jpg"]
    assert "not a readable image" in messages["notes.png"]
    assert "decompression bomb" in messages["bomb.png"]
    good = on_ray[on_ray["error"].isna()]
    assert len(good) == len(listed) - 4
    assert np.isfinite(good[["tiny_a", "tiny_b", "fusion"]]).all().all()
    assert not (tmp_path / "ray.csv.blocks").exists()  # removed once the output is written
    # the row extensions
    assert {"verdict", "verdict_reason", "width", "height", "jpeg_quality"} <= set(on_ray)
    views = ["llr@blur:1", "llr@jpeg:50"]  # scored in the same pass as the image
    np.testing.assert_allclose(on_ray[views], local[views], rtol=1e-5)
    assert on_ray[views].notna().sum().min() > 0
    np.testing.assert_allclose(on_ray["calibration_distance"], local["calibration_distance"],
                               rtol=1e-4, atol=1e-6)  # fmt: skip
    assert on_ray["verdict_reason"].tolist() == local["verdict_reason"].tolist()
    assert on_ray["group"].tolist() == local["group"].tolist()  # copies found alike
    assert on_ray["copy_hash"].tolist() == local["copy_hash"].tolist()
    small = good[good["filename"] != "webui.png"]  # all under 224 px
    assert (small["verdict_reason"] == "smaller_than_input").all()
    assert on_ray.loc[on_ray["filename"].isin(hostile), "verdict_reason"].eq("not_scored").all()
    if provenance:
        assert on_ray["provenance"].iloc[-1] == "a1111:sd_xl_base_1.0"


def test_ray_engine_runs_bfree_and_univfd_as_the_local_engine(
    ray_instance, tmp_path, mixed_list, tiny_clip_checkpoint
):
    """The five-crop ViT (built in each actor from its config's timm_kwargs), UnivFD's raw
    CLIP features beside a normalised head, linear probes on a timm ViT and on the tiny CLIP
    tower (its open_clip config declared again in each actor), clip-cues' concept model (its
    concepts column), RINE and Community Forensics' ViT, with hostile rows."""
    from test_model_zoo import write_zoo

    csv, hostile = mixed_list
    write_zoo(tmp_path / "zoo")
    models = (
        "bfree_small,univfd_tiny,proj_tiny,probe_tiny,probe_oc,cc_concepts,rine_tiny,commfor_tiny"
    )
    local = run(csv, tmp_path / "local.csv", tmp_path / "zoo", tiny_clip_checkpoint, models=models)
    on_ray = run(csv, tmp_path / "ray.csv", tmp_path / "zoo", tiny_clip_checkpoint,
                 "--engine", "ray", "--batch_size", "4", models=models)  # fmt: skip
    assert_same_scores(local, on_ray)
    assert sorted(on_ray.loc[on_ray["error"].notna(), "filename"]) == sorted(hostile)
    good = on_ray.loc[on_ray["error"].isna()]
    assert np.isfinite(good[["bfree_small", "probe_tiny", "probe_oc", "rine_tiny"]]).all().all()
    assert good["concepts_cc_concepts"].str.count(":").eq(3).all()


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, from /proc."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:  # /proc/PID/stat: "pid (name) state ppid ..."
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                parents[int(entry.name)] = int(fields[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = [], [pid]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_a_killed_infer_actor_is_replaced_and_no_row_is_lost(
    ray_instance, tmp_path, models_dir, tiny_clip_checkpoint
):
    """The actor is killed once the first result is back, with most of the list still to do:
    the full-resolution ResNet on one thread takes ~0.06 s per 48-px image."""
    paths = [str(make_image(tmp_path / f"i{i}.png", size=(48, 48), seed=i)) for i in range(24)]
    local_options = RunOptions(device="cpu", batch_size=2, num_workers=0)
    models = load_models(["res_tiny"], models_dir, local_options)
    engine = RayEngine(RayOptions(workers=1))
    options = engine.run_options(local_options)
    preparer, _ = scoring_stages(models, options)
    results = engine.iter_scores(preparer, models, str(models_dir), paths, range(24), options)
    seen = [next(results)]
    actors = [p for p in descendants(os.getpid()) if "InferActor" in command_line(p)]
    assert len(actors) == 1, [command_line(p) for p in descendants(os.getpid())]
    os.kill(actors[0], signal.SIGKILL)
    seen += list(results)
    assert sorted(r.index for r in seen) == list(range(24))  # every row, once
    replacement = [p for p in descendants(os.getpid()) if "InferActor" in command_line(p)]
    assert replacement and replacement != actors  # Ray started another actor
    assert not any(r.error for r in seen)
    # the local reference for the first row and the last 6 (the replacement's), not all 24
    sample = [seen[0], *seen[-6:]]
    local = iter_scores(models, [paths[r.index] for r in sample], local_options)
    for r, reference in zip(sample, local, strict=True):
        np.testing.assert_allclose(r.scores, reference.scores, rtol=1e-5)  # LLRs near 50


def test_resume_after_the_driver_is_killed_gives_the_uninterrupted_file(
    ray_instance, tmp_path, models_dir, tiny_clip_checkpoint, caplog
):
    """A driver in its own process on this Ray instance is killed (SIGKILL) once its first
    block of 4 rows is written: rows reach it 8 at a time (an input block), and its one actor
    takes ~0.5 s over the next 8 (~0.06 s per 48-px image), so 2 of the 6 blocks are on disk;
    --resume scores only the blocks not written."""
    for i in range(24):
        make_image(tmp_path / "images" / f"i{i}.png", size=(48, 48), seed=i)
    csv = tmp_path / "list.csv"
    pd.DataFrame({"filename": [f"images/i{i}.png" for i in range(24)]}).to_csv(csv, index=False)
    out = tmp_path / "scores.csv"
    flags = ["--engine", "ray", "--block_rows", "4", "--batch_size", "2"]
    address = ray.get_runtime_context().gcs_address
    command = main_command(
        tiny_clip_checkpoint, "-i", str(csv), "-o", str(out), "-w", str(models_dir),
        "-m", "res_tiny", "--num_workers", "0", "-q", "--ray_address", address, *flags,
    )  # fmt: skip
    driver = subprocess.Popen(command, start_new_session=True, stderr=subprocess.PIPE)
    # the reference, while the driver starts (its imports hold one core for seconds)
    whole = run(csv, tmp_path / "whole.csv", models_dir, tiny_clip_checkpoint, models="res_tiny")
    blocks = tmp_path / "scores.csv.blocks"
    deadline = time.monotonic() + 180
    while not list(blocks.glob("block-*.jsonl")):
        assert driver.poll() is None, driver.stderr.read().decode()
        assert time.monotonic() < deadline, "no block written in time"
        time.sleep(0.05)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    assert driver.returncode == -signal.SIGKILL, driver.stderr.read().decode()
    written = len(list(blocks.glob("block-*.jsonl")))
    assert 1 <= written < 6 and not out.exists()

    caplog.set_level("INFO", logger="clipdet")
    resumed = run(csv, out, models_dir, tiny_clip_checkpoint, *flags, "--resume", models="res_tiny")
    assert f"resuming: {4 * written} of 24 images already scored" in caplog.text
    assert not blocks.exists()
    assert resumed["filename"].tolist() == whole["filename"].tolist()
    # the local engine's reference: float32 sums differ with the thread count (LLRs near 50)
    np.testing.assert_allclose(resumed["res_tiny"], whole["res_tiny"], rtol=1e-5)
    assert resumed["error"].isna().all()


def test_lists_images_and_scores_in_s3(
    ray_instance, s3_server, tmp_path, models_dir, mixed_list, tiny_clip_checkpoint
):
    """A list in an S3 bucket naming its images relative to itself (one object missing),
    scores written to the bucket as Parquet: the same as the local engine on local files."""
    import boto3

    csv, _ = mixed_list
    bucket = boto3.client("s3")
    listed = pd.read_csv(csv)["filename"].tolist()
    for name in listed:
        if (csv.parent / name).exists():
            bucket.upload_file(str(csv.parent / name), "clipdet", f"data/{name}")
    bucket.upload_file(str(csv), "clipdet", "data/list.csv")
    out = "s3://clipdet/results/scores.parquet"
    argv = ["-i", "s3://clipdet/data/list.csv", "-o", out, "--engine", "ray", "--batch_size", "4"]
    assert cli.main([*argv, *local_run_args(tiny_clip_checkpoint, models_dir, CLIP_MODELS)]) == 0
    on_s3 = pd.read_parquet(out)
    local = run(csv, tmp_path / "local.csv", models_dir, tiny_clip_checkpoint)
    assert on_s3["filename"].tolist() == local["filename"].tolist()
    on_s3["error"] = on_s3["error"].replace("", np.nan).str.replace("s3://clipdet/data/", "")
    local["error"] = local["error"].str.replace(f"{csv.parent}/", "")
    assert_same_scores(local, on_s3)
    keys = [
        o["Key"] for o in bucket.list_objects_v2(Bucket="clipdet", Prefix="results/")["Contents"]
    ]
    assert keys == ["results/scores.parquet"]  # the blocks are gone
