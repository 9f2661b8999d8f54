"""Dataset downloads against a loopback HTTP server: checksums, resume, safe unpacking, dead
links; no test touches the real hosts."""

import hashlib
import http.server
import importlib.util
import io
import threading
import time
import zipfile
from dataclasses import replace

import pandas as pd
import pytest

from clipdet import datasets
from clipdet.download import ChecksumMismatch, DownloadError, UnsafeArchiveError, fetch

REPO_DATA = datasets.DATA_DIR


class Server:
    """Files by URL path; Range requests; a path can be cut once mid-body, stall, or 404."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.cut_once: set[str] = set()
        self.stall: set[str] = set()
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                path = self.path.split("?")[0]
                server.requests.append((path, self.headers.get("Range")))
                if path in server.stall:
                    time.sleep(2)
                if path not in server.files:
                    self.send_error(404)
                    return
                data = server.files[path]
                start = 0
                if self.headers.get("Range"):
                    start = int(self.headers["Range"].removeprefix("bytes=").rstrip("-"))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if path in server.cut_once:
                    server.cut_once.discard(path)
                    body = body[: len(body) // 2]
                    self.close_connection = True
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.handle_error = lambda request, address: None  # clients that gave up
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return buffer.getvalue()


def _md5(data: bytes) -> str:
    return "md5:" + hashlib.md5(data).hexdigest()


def test_interrupted_transfer_resumes_and_is_verified(tmp_path, server):
    data = bytes(range(256)) * 400
    server.files["/big.bin"] = data
    server.cut_once.add("/big.bin")
    dest = tmp_path / "big.bin"
    with pytest.raises(DownloadError, match="run again to resume"):
        fetch(f"{server.url}/big.bin", dest, _md5(data), progress=False)
    part = tmp_path / "big.bin.part"
    kept = part.stat().st_size
    assert not dest.exists() and 0 < kept <= len(data) // 2
    fetch(f"{server.url}/big.bin", dest, _md5(data), progress=False)
    assert dest.read_bytes() == data and not part.exists()
    assert server.requests[-1] == ("/big.bin", f"bytes={kept}-")  # only the rest was asked for


def test_wrong_checksum_is_refused_and_the_partial_file_removed(tmp_path, server):
    server.files["/f.zip"] = b"not what was promised"
    with pytest.raises(ChecksumMismatch, match="expected md5 0000"):
        fetch(f"{server.url}/f.zip", tmp_path / "f.zip", "md5:" + "0" * 32, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_a_zip_entry_escaping_the_folder_is_refused(tmp_path, server):
    evil = _zip({"ok/a.png": b"a", "../../escaped.txt": b"x"})
    server.files["/synthbuster.zip"] = evil
    recipe = replace(
        datasets.RECIPES["synthbuster"],
        archives=(datasets.Archive("synthbuster.zip", "unused", _md5(evil)),),
    )
    dest = tmp_path / "deep" / "data"
    with pytest.MonkeyPatch.context() as m:
        m.setitem(datasets.RECIPES, "synthbuster", recipe)
        with pytest.raises(UnsafeArchiveError, match="outside"):
            datasets.download_dataset("synthbuster", dest, mirror=server.url, progress=False)
    assert not (tmp_path / "escaped.txt").exists() and not (dest / "ok").exists()


def _serve_synthbuster(server, monkeypatch, tmp_path, fake: dict, real: dict) -> None:
    """Serve the two Synthbuster archives (``fake`` entries, ``real`` RAISE entries) and ship
    their list (typ from the folder) as data/commercial_tools.csv."""
    recipe = datasets.RECIPES["synthbuster"]
    archives = {recipe.archives[0].filename: _zip(fake), recipe.archives[1].filename: _zip(real)}
    for name, data in archives.items():
        server.files[f"/{name}"] = data
    fixed = tuple(replace(a, checksum=_md5(archives[a.filename])) for a in recipe.archives)
    monkeypatch.setitem(datasets.RECIPES, "synthbuster", replace(recipe, archives=fixed))
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    rows = [(f, f.split("/")[1]) for f in fake] + [(f"synthbuster/{f}", "real") for f in real]
    pd.DataFrame(rows, columns=["filename", "typ"]).to_csv(
        shipped / "commercial_tools.csv", index=False
    )
    monkeypatch.setattr(datasets, "DATA_DIR", shipped)


def _load_cli():
    spec = importlib.util.spec_from_file_location("download_cli", REPO_DATA / "download.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_synthbuster_recipe_gives_the_lists_layout(tmp_path, server, monkeypatch, capsys):
    fake = {f"synthbuster/{g}/{g}{i}.png": f"{g}{i}".encode() for g in ("dalle2", "firefly")
            for i in range(2)}  # fmt: skip
    real = {f"real_RAISE_1k/r{i}.png": b"r" for i in range(2)}
    _serve_synthbuster(server, monkeypatch, tmp_path, fake, real)

    dest = tmp_path / "data"
    cli = _load_cli()
    assert cli.main(["synthbuster", "--dest", str(dest), "--mirror", server.url, "-q"]) == 0
    listed = pd.read_csv(dest / "commercial_tools.csv")
    assert all((dest / f).is_file() for f in listed["filename"]) and len(listed) == 6
    assert "non-commercial" in capsys.readouterr().err  # the licence note
    served = len(server.requests)
    assert cli.main(["synthbuster", "--dest", str(dest), "--mirror", server.url, "-q"]) == 0
    assert len(server.requests) == served  # verified archives on disk: nothing fetched again


def test_grip_recipe_lists_typ_from_folder_keys(tmp_path, server, monkeypatch):
    entries = {"test_set/coco_valid/a.png": b"1", "test_set/ffhq/b.png": b"2",
               "test_set/dalle3/c.png": b"3", "test_set/gigaGAN/sub/d.jpg": b"4"}  # fmt: skip
    archive = _zip(entries)
    server.files["/test_set.zip"] = archive
    recipe = datasets.RECIPES["grip_test"]
    fixed = replace(recipe, archives=(replace(recipe.archives[0], checksum=_md5(archive)),))
    monkeypatch.setitem(datasets.RECIPES, "grip_test", fixed)
    out = datasets.download_dataset("grip_test", tmp_path, mirror=server.url, progress=False)
    table = pd.read_csv(out)
    assert dict(zip(table["filename"], table["typ"], strict=True)) == {
        "test_set/coco_valid/a.png": "real",
        "test_set/dalle3/c.png": "dalle3",
        "test_set/ffhq/b.png": "real",
        "test_set/gigaGAN/sub/d.jpg": "gigaGAN",
    }


@pytest.mark.slow
def test_synthwildx_counts_dead_links_and_fetches_only_what_is_missing(tmp_path, server, caplog):
    server.files["/a.jpg"] = b"A"
    server.files["/b.jpg"] = b"B"
    server.stall.add("/slow.jpg")
    rows = [
        (f"{server.url}/a.jpg", "dalle3/a.jpg", "dalle3"),
        (f"{server.url}/gone.jpg", "real/gone.jpg", "real"),
        (f"{server.url}/slow.jpg", "firefly/slow.jpg", "firefly"),
        (f"{server.url}/b.jpg?format=jpg&name=large", "real/b.jpg", "real"),
    ]
    url_list = tmp_path / "list.csv"
    pd.DataFrame(rows, columns=["url", "filename", "typ"]).to_csv(url_list, index=False)
    dest = tmp_path / "data"
    out = datasets.download_dataset(
        "synthwildx", dest, url_list=url_list, delay=0.0, timeout=0.5, progress=False
    )
    table = pd.read_csv(out)
    assert list(table["filename"]) == ["synthwildx/dalle3/a.jpg", "synthwildx/real/b.jpg"]
    assert (dest / "synthwildx" / "real" / "b.jpg").read_bytes() == b"B"
    assert "2 fetched, 0 already there, 2 dead links" in caplog.text
    server.requests.clear()
    datasets.download_dataset(
        "synthwildx", dest, url_list=url_list, delay=0.0, timeout=0.5, progress=False
    )
    assert {path for path, _ in server.requests} == {"/gone.jpg", "/slow.jpg"}


def test_shipped_synthwildx_list_has_the_papers_2000_images():
    table = pd.read_csv(REPO_DATA / "synthwildx.csv")
    assert list(table.columns) == ["url", "filename", "typ"] and len(table) == 2000
    assert table["typ"].value_counts().to_dict() == {
        "dalle3": 500, "firefly": 500, "midjourney_v5": 500, "real": 500,
    }  # fmt: skip


def test_a_run_with_every_image_missing_names_the_download_command(
    tmp_path, weights_dir, tiny_clip_checkpoint, capsys
):
    from helpers import local_run_args

    import compute_metrics as metrics_cli
    import main as main_cli

    rows = [("synthbuster/real_RAISE_1k/r1.png", "real"), ("synthbuster/dalle2/d1.png", "dalle2")]
    csv = tmp_path / "commercial_tools.csv"
    pd.DataFrame(rows, columns=["filename", "typ"]).to_csv(csv, index=False)
    out = tmp_path / "scores.csv"
    args = ["-i", str(csv), "-o", str(out), *local_run_args(tiny_clip_checkpoint, weights_dir)]
    assert main_cli.main([*args, "-m", "tiny_a"]) == 0
    err = capsys.readouterr().err
    assert "none of the 2 images was found" in err and "python data/download.py" in err
    assert "r1.png: " not in err  # one line, not one per row
    assert metrics_cli.main(["-i", str(csv), "-o", str(out)]) == 0
    assert "python data/download.py synthbuster" in capsys.readouterr().err


def _image_bytes(seed: int, fmt: str = "PNG", tint: int = 0) -> bytes:
    """A small random image (``tint`` shifts the colours, to tell classes apart)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 128, size=(36, 40, 3), dtype=np.uint8) + np.uint8(tint)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def _serve_recipe(server, monkeypatch, name: str, entries: dict[str, bytes]):
    """Serve one zip per archive of recipe ``name`` (all of ``entries`` in the first)."""
    recipe = datasets.RECIPES[name]
    archives = []
    for i, archive in enumerate(recipe.archives):
        data = _zip(entries if i == 0 else {})
        server.files[f"/{archive.filename}"] = data
        archives.append(replace(archive, checksum=_md5(data)))
    monkeypatch.setitem(datasets.RECIPES, name, replace(recipe, archives=tuple(archives)))


def test_grip_train_takes_its_real_half_from_coco_by_image_id(tmp_path, server, monkeypatch):
    ids = (139, 285, 632)
    entries = {f"train_set/latent_diffusion/ldm_{i:012d}.png": _image_bytes(i) for i in ids}
    _serve_recipe(server, monkeypatch, "grip_train", entries)
    for i in ids[:2]:  # the third id is a dead link
        server.files[f"/coco/{i:012d}.jpg"] = _image_bytes(i, "JPEG")
    args = dict(mirror=server.url, coco=f"{server.url}/coco", delay=0.0, progress=False)
    out = datasets.download_dataset("grip_train", tmp_path, **args)
    table = pd.read_csv(out)
    real = table.loc[table["typ"] == "real", "filename"].tolist()
    assert real == [f"train_set/real_coco/{i:012d}.jpg" for i in ids[:2]]
    assert (table["typ"] == "latent_diffusion").sum() == 3
    assert (tmp_path / real[0]).read_bytes() == server.files["/coco/000000000139.jpg"]
    server.requests.clear()
    again = pd.read_csv(datasets.download_dataset("grip_train", tmp_path, **args))
    assert again.equals(table)  # the real images are listed once, not again as a folder key
    assert [path for path, _ in server.requests] == ["/coco/000000000632.jpg"]  # only the missing

    local = tmp_path / "coco_copy"
    local.mkdir()
    (local / "000000000632.jpg").write_bytes(_image_bytes(632, "JPEG"))
    args["coco"] = str(local)
    table = pd.read_csv(datasets.download_dataset("grip_train", tmp_path, **args))
    assert (table["typ"] == "real").sum() == 3


@pytest.mark.slow
def test_reproduce_runs_end_to_end_on_loopback_datasets(
    tmp_path, server, monkeypatch, weights_dir, tiny_clip_checkpoint, capsys
):
    import shutil

    from helpers import TINY_BACKBONE

    import reproduce

    generators = ("dalle2", "firefly")
    fake = {f"synthbuster/{g}/{g}{i}.png": _image_bytes(10 * k + i, tint=100)
            for k, g in enumerate(generators) for i in range(4)}  # fmt: skip
    real = {f"real_RAISE_1k/r{i}.png": _image_bytes(50 + i) for i in range(4)}
    _serve_synthbuster(server, monkeypatch, tmp_path, fake, real)
    ids = range(1, 9)
    train = {f"train_set/latent_diffusion/{i:012d}.png": _image_bytes(i, tint=100) for i in ids}
    _serve_recipe(server, monkeypatch, "grip_train", train)
    for i in ids:
        server.files[f"/coco/{i:012d}.jpg"] = _image_bytes(100 + i, "JPEG")
    weights = tmp_path / "weights"
    shutil.copytree(weights_dir / "tiny_a", weights / "clipdet_latent10k")
    shutil.copytree(weights_dir / "tiny_b", weights / "other")
    out = tmp_path / "out"

    argv = ["--data", str(tmp_path / "data"), "--out", str(out), "-w", str(weights),
            "-m", "other,clipdet_latent10k", "--train", "--train_arch",
            f"opencliplinearnext_{TINY_BACKBONE}", "--mirror", server.url,
            "--coco", f"{server.url}/coco", "--backbone_weights", str(tiny_clip_checkpoint),
            "-d", "cpu", "--num_workers", "0", "-q"]  # fmt: skip
    assert reproduce.main(argv) == 0
    report = (out / "reproduce.md").read_text()
    assert report in capsys.readouterr().out
    header = next(line for line in report.splitlines() if line.startswith("| model"))
    assert header == "| model · condition | dalle2 | firefly | AVG |"
    labels = [line.split(" | ")[0].lstrip("| ") for line in report.splitlines()
              if " · " in line and not line.startswith("| model")]  # fmt: skip
    models = ("other", "clipdet_latent10k", "clipdet_grip_train", "fusion")
    assert labels == [f"{m} · {c}" for m in models for c in ("clean", "postprocessed")]
    for step in ("python data/download.py synthbuster", "python data/download.py grip_train",
                 "python train.py", "python main.py", "python launder.py -i",
                 "python compute_metrics.py"):  # fmt: skip
        assert step in report
    assert "--ops postprocessed --seed 0" in report and "- torch: " in report
    scores = pd.read_csv(out / "scores.csv")
    assert len(scores) == 12 and scores["error"].isna().all()
    laundered = pd.read_csv(out / "scores_laundered.csv")
    assert len(laundered) == 12 and not scores["other"].equals(laundered["other"])
    assert (weights / "clipdet_grip_train" / "config.yaml").is_file()

    served = len(server.requests)  # a second run finds the datasets complete: nothing fetched
    assert reproduce.main([*argv, "--limit", "2"]) == 0
    assert len(server.requests) == served
    assert len(pd.read_csv(out / "scores.csv")) == 6  # 2 of each typ
