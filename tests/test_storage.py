"""Inputs anywhere and outputs by extension, on the local engine: images and lists over HTTP
(a 404, a server too slow to answer), lists and scores in S3 (a loopback S3-compatible
server), .parquet and .jsonl outputs equal to the CSV, compute_metrics reading them."""

import http.server
import io
import threading
import time

import numpy as np
import pandas as pd
import pytest
from helpers import local_run_args, make_image

import compute_metrics as metrics_cli
import main as cli
from clipdet import storage
from clipdet.pipeline.blocks import BlockWriter, open_blocks
from clipdet.pipeline.record import ImageResult
from clipdet.pipeline.resume import ResumeError

MODELS = "tiny_a,tiny_b"


class _Handler(http.server.SimpleHTTPRequestHandler):
    slow_seconds = 3.0

    def do_GET(self):  # noqa: N802 -- the standard library's name
        if self.path.startswith("/slow/"):
            time.sleep(self.slow_seconds)  # longer than the client's timeout
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def http_root(tmp_path):
    """A loopback HTTP server over ``tmp_path/site``; yields (folder, base URL)."""
    site = tmp_path / "site"
    site.mkdir()

    def handler(*args, **kwargs):
        return _Handler(*args, directory=str(site), **kwargs)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield site, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def score(argv, weights_dir, checkpoint) -> int:
    return cli.main([*argv, *local_run_args(checkpoint, weights_dir, MODELS)])


def test_urls_are_scored_like_files_and_failures_are_row_errors(
    http_root, weights_dir, tiny_clip_checkpoint, tmp_path, monkeypatch
):
    site, base = http_root
    make_image(site / "a.png", size=(60, 50), seed=1)
    make_image(site / "slow" / "b.png", size=(60, 50), seed=2)
    monkeypatch.setenv("CLIPDET_READ_TIMEOUT", "1")
    urls = [f"{base}/a.png", f"{base}/missing.png", f"{base}/slow/b.png"]
    out = tmp_path / "web.csv"
    started = time.monotonic()
    assert score([*urls, "-o", str(out)], weights_dir, tiny_clip_checkpoint) == 0
    assert time.monotonic() - started < 60
    web = pd.read_csv(out, keep_default_na=False)
    assert web["filename"].tolist() == urls
    assert web["error"][0] == ""
    assert web["error"][1] == f"ImageLoadError: file not found: {base}/missing.png"
    assert "timed out after 1 s" in web["error"][2] and web["error"][2].endswith("slow/b.png")
    local = tmp_path / "local.csv"
    assert score([str(site / "a.png"), "-o", str(local)], weights_dir, tiny_clip_checkpoint) == 0
    llrs = ["tiny_a", "tiny_b"]
    expected = pd.read_csv(local).loc[0, llrs].astype(float)
    np.testing.assert_allclose(web.loc[0, llrs].astype(float), expected, atol=1e-6)


def test_a_list_at_a_url_names_images_relative_to_itself(
    http_root, weights_dir, tiny_clip_checkpoint, tmp_path
):
    site, base = http_root
    make_image(site / "data" / "img" / "x.png", seed=3)
    (site / "data" / "list.csv").write_text("filename,typ\nimg/x.png,real\nimg/gone.png,real\n")
    out = tmp_path / "scores.csv"
    assert score(["-i", f"{base}/data/list.csv", "-o", str(out)], weights_dir,
                 tiny_clip_checkpoint) == 0  # fmt: skip
    table = pd.read_csv(out, keep_default_na=False)
    assert table["filename"].tolist() == ["img/x.png", "img/gone.png"]
    assert table["error"][0] == ""
    assert table["error"][1].endswith(f"file not found: {base}/data/img/gone.png")


@pytest.fixture
def scored(tmp_path, image_dir, weights_dir, tiny_clip_checkpoint):
    """The same list scored to .csv, .parquet and .jsonl (one unreadable row)."""
    (image_dir / "broken.png").write_text("not an image")
    names = [f"images/{p.name}" for p in sorted(image_dir.iterdir())]
    typs = ["real", "synthA"] * 3
    csv = tmp_path / "list.csv"
    pd.DataFrame({"filename": names, "typ": typs}).to_csv(csv, index=False)
    outputs = {}
    for ext in ("csv", "parquet", "jsonl"):
        outputs[ext] = tmp_path / f"scores.{ext}"
        argv = ["-i", str(csv), "-o", str(outputs[ext])]
        assert score(argv, weights_dir, tiny_clip_checkpoint) == 0
    return csv, outputs


def test_parquet_and_jsonl_outputs_hold_the_csv_table(scored):
    _, outputs = scored
    csv = pd.read_csv(outputs["csv"], keep_default_na=False, na_values=[""])
    parquet = pd.read_parquet(outputs["parquet"])
    jsonl = pd.read_json(outputs["jsonl"], lines=True)
    assert outputs["parquet"].read_bytes()[:4] == b"PAR1"
    assert list(parquet.columns) == list(csv.columns)
    # JSON lines also carry the verdict, as the terminal table does
    assert list(jsonl.columns) == [*csv.columns[:-1], "verdict", "error"]
    for table in (parquet, jsonl):
        assert table["filename"].tolist() == csv["filename"].tolist()
        for column in ("tiny_a", "tiny_b", "fusion"):
            np.testing.assert_allclose(table[column], csv[column], rtol=1e-12, equal_nan=True)
        assert table["error"].fillna("").tolist() == csv["error"].fillna("").tolist()
    assert jsonl["verdict"].tolist() == [
        "" if np.isnan(f) else "synthetic" if f > 0 else "real" for f in csv["fusion"]
    ]


def test_compute_metrics_reads_parquet_and_jsonl_scores(scored, tmp_path):
    in_csv, outputs = scored
    tables = {}
    for ext, scores in outputs.items():
        tab = tmp_path / f"metrics_{ext}.csv"
        argv = ["--in_csv", str(in_csv), "--out_csv", str(scores), "--metrics", "auc,acc"]
        assert metrics_cli.main([*argv, "--save_tab", str(tab)]) == 0
        tables[ext] = pd.read_csv(tab)
    assert len(tables["csv"]) >= 2
    pd.testing.assert_frame_equal(tables["parquet"], tables["csv"])
    pd.testing.assert_frame_equal(tables["jsonl"], tables["csv"])


def test_scores_to_s3_from_the_local_engine(
    s3_server, image_dir, weights_dir, tiny_clip_checkpoint, tmp_path
):
    out = "s3://clipdet/local-engine/scores.jsonl"
    paths = [str(p) for p in sorted(image_dir.glob("*.png"))]
    assert score([*paths, "-o", out, "--block_rows", "2"], weights_dir, tiny_clip_checkpoint) == 0
    table = pd.read_json(io.BytesIO(storage.read_bytes(out)), lines=True)
    assert table["filename"].tolist() == paths
    assert not storage.exists(out + ".blocks/run.json")
    assert storage.list_names("s3://clipdet/local-engine") == ["scores.jsonl"]


def _result(index: int) -> ImageResult:
    return ImageResult(index, np.array([float(index), np.nan]), "", {})


class _Model:  # what a block file needs to know of a detection model
    attribution = None

    def __init__(self, name):
        self.name = name


def test_blocks_are_written_whole_and_a_resume_reads_only_complete_ones(tmp_path):
    models = [_Model("a"), _Model("b")]
    out = str(tmp_path / "scores.parquet")
    done, writer = open_blocks(out, {"run": 1}, models, n_rows=7, resume=False, block_rows=3)
    assert done == {}
    for index in (4, 0, 2, 6, 1):  # any order: block 0 complete, 1 partial, 2 (one row) done
        writer.write(f"f{index}", _result(index))
    assert sorted(storage.list_names(writer.path)) == [
        "block-00000000.jsonl", "block-00000002.jsonl", "run.json",
    ]  # fmt: skip
    writer.close()
    with pytest.raises(ResumeError, match="add --resume"):
        open_blocks(out, {"run": 1}, models, 7, resume=False, block_rows=3)
    with pytest.raises(ResumeError, match="other images, models or weights"):
        open_blocks(out, {"run": 2}, models, 7, resume=True, block_rows=3)
    done, writer = open_blocks(out, {"run": 1}, models, 7, resume=True, block_rows=50)
    assert writer.block_rows == 3  # the recorded size wins
    assert sorted(done) == [0, 1, 2, 6]
    assert np.isnan(done[6].scores[1]) and done[6].scores[0] == 6.0
    block = tmp_path / "scores.parquet.blocks" / "block-00000002.jsonl"
    block.write_text('{"index": 6, "filename": "f6", "scores": [6.0')  # torn by a crash
    done, _ = open_blocks(out, {"run": 1}, models, 7, resume=True)
    assert sorted(done) == [0, 1, 2]
    BlockWriter(writer.path, {}, 7, 3).discard()
    assert not (tmp_path / "scores.parquet.blocks").exists()


def test_storage_paths_and_urls():
    assert storage.is_url("s3://b/k") and storage.is_url("https://x/y") and not storage.is_url("/a")
    assert storage.join("s3://b/dir/", "img/x.png") == "s3://b/dir/img/x.png"
    assert storage.join("s3://b/dir", "x.png") == "s3://b/dir/x.png"
    assert storage.join("s3://b/dir/", "https://h/x.png") == "https://h/x.png"
    assert storage.join("/data", "/abs/x.png") == "/abs/x.png"
    assert storage.parent("gs://b/lists/list.csv") == "gs://b/lists/"
