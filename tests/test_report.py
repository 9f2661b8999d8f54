"""Evidence maps that add up to the score, and the HTML report: its content from the HTML, bad
inputs, and the page in a real headless Chromium (Debian's package, driven by Playwright)."""

import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import local_run_args, make_image

import main as cli
import report as report_cli
from clipdet.evaluation import html_report

HOSTILE_NAME = "<img src=x onerror=alert(1)>.png"
UNICODE_NAME = "日本語 фото é.png"


def scored_run(tmp_path, weights_dir, checkpoint, models, *extra):
    """A labelled list (real / gen) with a hostile name, a unicode name and an unreadable
    file, scored by main.py with --maps and --report."""
    folder = tmp_path / "images"
    names, typs = [], []
    for i in range(6):
        name = [f"img{i}.png", HOSTILE_NAME, UNICODE_NAME][i] if i < 3 else f"img{i}.jpg"
        make_image(folder / name, size=(72 + 8 * i, 64), seed=i)
        names.append(f"images/{name}")
        typs.append("real" if i % 2 else "gen")
    (folder / "broken.png").write_text("not an image")
    names.append("images/broken.png")
    typs.append("gen")
    csv = tmp_path / "list.csv"
    pd.DataFrame({"filename": names, "typ": typs}).to_csv(csv, index=False)
    out = tmp_path / "scores.csv"
    argv = ["-i", str(csv), "-o", str(out), "--maps", str(tmp_path / "maps")]
    argv += ["--report", str(tmp_path / "report.html"), *extra]
    assert cli.main([*argv, *local_run_args(checkpoint, weights_dir, models)]) == 0
    return csv, pd.read_csv(out, keep_default_na=False, na_values=[""])


@pytest.mark.parametrize(  # tiled maps: the full suite (tiling itself: test_speed_modes.py)
    "tile", ["0", pytest.param("48", marks=pytest.mark.slow)], ids=["whole", "tiled"]
)
def test_evidence_map_mean_is_the_llr(tmp_path, weights_dir, tiny_clip_checkpoint, tile):
    _, table = scored_run(tmp_path, weights_dir, tiny_clip_checkpoint, "res_tiny,tiny_a",
                          "--tile_size", tile)  # fmt: skip
    manifest = pd.read_csv(tmp_path / "maps" / "maps.csv")
    assert set(manifest["model"]) == {"res_tiny"}  # a CLIP head reads one token: no map
    assert len(manifest) == 6  # every readable image, not the broken one
    for row in manifest.itertuples():
        logit_map = np.load(tmp_path / "maps" / row.map)
        llr = table.loc[table["filename"] == row.filename, "res_tiny"].item()
        assert logit_map.dtype == np.float32 and logit_map.ndim == 2
        numbered = re.search(r"/img(\d)\.", row.filename)
        if numbered:  # 64 px high, 72 + 8i wide; output stride 8: ceil(side / 8)
            assert logit_map.shape == (8, -(-(72 + 8 * int(numbered.group(1))) // 8))
        assert abs(logit_map.astype(np.float64).mean() - llr) <= 1e-4
        assert (tmp_path / "maps" / row.overlay).exists()


@pytest.mark.slow
def test_tiled_and_whole_maps_agree(tmp_path, weights_dir, tiny_clip_checkpoint):
    maps = {}
    for tile in ("0", "48"):
        run_dir = tmp_path / tile
        scored_run(run_dir, weights_dir, tiny_clip_checkpoint, "res_tiny", "--tile_size", tile)
        maps[tile] = np.load(run_dir / "maps" / "000005.res_tiny.npy")
    np.testing.assert_allclose(maps["48"], maps["0"], atol=1e-4)


def page_data(html_text: str) -> dict:
    found = re.search(r'<script id="clipdet-data" type="application/json">(.*?)</script>',
                      html_text, re.S)  # fmt: skip
    return json.loads(found.group(1))


@pytest.fixture(scope="module")
def report_run(tmp_path_factory, weights_dir, tiny_clip_checkpoint):
    tmp_path = tmp_path_factory.mktemp("report")
    csv, table = scored_run(tmp_path, weights_dir, tiny_clip_checkpoint, "tiny_a,res_tiny")
    return tmp_path, csv, table


def test_report_holds_every_row_with_verdicts_errors_and_escaped_names(report_run):
    tmp_path, _, table = report_run
    text = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "<img src=x" not in text and "onerror=alert" in text  # only inside escaped JSON
    assert text.count("<script") == 2  # the data and the page's own code, nothing else
    data = page_data(text)
    rows = data["rows"]
    assert [r["name"] for r in rows] == table["filename"].tolist()
    assert any(r["name"].endswith(HOSTILE_NAME) for r in rows)
    assert any(r["name"].endswith(UNICODE_NAME) for r in rows)
    for row, (_, expected) in zip(rows, table.iterrows(), strict=True):
        if pd.isna(expected["error"]):
            assert row["verdict"] == ("synthetic" if expected["fusion"] > 0 else "real")
            assert row["scores"]["tiny_a"] == pytest.approx(expected["tiny_a"])
            assert row["thumb"].startswith("data:image/jpeg;base64,")
            assert [m["model"] for m in row["maps"]] == ["res_tiny"]
        else:
            assert row["error"] == expected["error"] and "not a readable image" in row["error"]
            assert row["thumb"] is None and row["maps"] == [] and row["verdict"] == ""
    summary = data["summary"]
    assert (summary["images"], summary["failed"], summary["scored"]) == (7, 1, 6)
    assert summary["flagged"] == int((table["fusion"] > 0).sum())
    assert summary["command"].startswith("python main.py -i")
    metrics = data["metrics"]["tables"]["auc"]
    assert metrics["columns"][-1] == "AVG" and [r[0] for r in metrics["rows"]] == [
        "tiny_a", "res_tiny", "fusion"
    ]  # fmt: skip
    assert len(data["metrics"]["plots"]) == 1 + 3  # one ROC figure, three histograms


def test_report_cli_from_files_and_bad_inputs(report_run, tmp_path, capsys):
    run_dir, csv, table = report_run
    moved = tmp_path / "moved.csv"
    shutil.copy(csv, moved)  # the list now sits where its images are not
    scores = run_dir / "scores.csv"
    out = tmp_path / "r.html"
    assert report_cli.main(["--scores", str(scores), "--in_csv", str(moved), "-o", str(out)]) == 0
    rows = page_data(out.read_text(encoding="utf-8"))["rows"]
    assert len(rows) == len(table) and all(r["thumb"] is None for r in rows)
    nan_scores = tmp_path / "nan.csv"
    table.assign(tiny_a=np.nan).to_csv(nan_scores, index=False)
    assert report_cli.main(["--scores", str(nan_scores), "-o", str(out)]) == 0
    assert all(r["scores"]["tiny_a"] is None for r in page_data(out.read_text())["rows"])
    no_names = tmp_path / "nofile.csv"
    table.drop(columns="filename").to_csv(no_names, index=False)
    assert report_cli.main(["--scores", str(no_names), "-o", str(out)]) == 2
    assert "no 'filename' column" in capsys.readouterr().err


def test_large_reports_keep_thumbnails_and_data_beside_the_page(report_run, tmp_path, monkeypatch):
    run_dir, csv, _ = report_run
    monkeypatch.setattr(html_report, "EMBED_LIMIT", 3)
    out = tmp_path / "big.html"
    argv = ["--scores", str(run_dir / "scores.csv"), "--in_csv", str(csv), "-o", str(out)]
    assert report_cli.main([*argv, "--maps", str(run_dir / "maps")]) == 0
    files = tmp_path / "big_files"
    assert (files / "data.js").exists() and len(list((files / "thumbs").glob("*.jpg"))) == 6
    assert 'src="big_files/data.js"' in out.read_text()
    assert "data:image" not in (files / "data.js").read_text()


# --- the page in a real browser ----------------------------------------------------------


def open_page(browser, html_path: Path):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors, requests = [], []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(html_path.as_uri())
    page.wait_for_selector(".card")
    return page, errors, requests


def wait_until(condition, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"the page did not settle in {timeout_s:.0f} s")
        time.sleep(0.05)


def card_names(page) -> list[str]:
    return page.eval_on_selector_all(".card .name", "nodes => nodes.map(n => n.textContent)")


@pytest.mark.slow
def test_the_page_in_headless_chromium(report_run, browser, tmp_path, monkeypatch):
    run_dir, csv, table = report_run
    page, errors, requests = open_page(browser, run_dir / "report.html")
    assert len(card_names(page)) == len(table)
    # the hostile name is shown as text, and nothing ran it
    assert any(n.endswith(HOSTILE_NAME) for n in card_names(page))
    assert page.evaluate("document.querySelectorAll('.card img[src=x]').length") == 0
    page.select_option("#sort", "fusion")
    fused = table.dropna(subset=["fusion"]).sort_values("fusion", ascending=False, kind="stable")
    assert card_names(page)[: len(fused)] == fused["filename"].tolist()
    page.select_option("#sort", "input")
    assert card_names(page) == table["filename"].tolist()
    page.select_option("#filter", "errors")
    assert card_names(page) == table.loc[table["error"].notna(), "filename"].tolist()
    page.select_option("#filter", "all")
    page.fill("#search", "JPG")  # case-insensitive
    assert card_names(page) == [f"images/img{i}.jpg" for i in (3, 4, 5)]
    page.fill("#search", "")
    page.click(".maps img")
    assert page.is_visible("#lightbox")
    page.screenshot(path=str(tmp_path / "report.png"), full_page=False)
    assert not errors, errors
    assert all(u.startswith(("file:", "data:")) for u in requests), requests

    monkeypatch.setattr(html_report, "EMBED_LIMIT", 3)
    monkeypatch.setattr(html_report, "PAGE_ROWS", 4)
    big = tmp_path / "big.html"
    scores = pd.read_csv(run_dir / "scores.csv")  # with a concept model's column
    scores["concepts_cm"] = ""
    scores.loc[0, "concepts_cm"] = "vignetting:+0.412;<b>bokeh</b>:-0.305;saturation:+0.118"
    scores.to_csv(tmp_path / "scores.csv", index=False)
    argv = ["--scores", str(tmp_path / "scores.csv"), "--in_csv", str(csv), "-o", str(big)]
    cards = tmp_path / "own"  # a card for one of the two detectors: its name links to it
    (cards / "res_tiny").mkdir(parents=True)
    (cards / "res_tiny" / "card.md").write_text("# res_tiny\n\n- **Trained on**: <noise>\n")
    assert report_cli.main([*argv, "--maps", str(run_dir / "maps"), "-w", str(cards)]) == 0
    page, errors, requests = open_page(browser, big)
    assert page.eval_on_selector_all("#summary a", "a => a.map(n => n.textContent)") == ["res_tiny"]
    assert not page.is_visible("#card-res_tiny pre")
    page.click("#summary a")
    assert page.is_visible("#card-res_tiny pre")
    assert "**Trained on**: <noise>" in page.inner_text("#card-res_tiny pre")
    assert len(card_names(page)) == 4  # pages of 4
    concepts = page.eval_on_selector_all(".card .concepts", "n => n.map(c => c.textContent)")
    assert concepts == ["cm concepts: vignetting +0.41, <b>bokeh</b> -0.30, saturation +0.12"]
    page.click("#next")
    assert len(card_names(page)) == 3
    shown = "Array.from(document.querySelectorAll('.card img'))"
    # polled from here: wait_for_function evaluates its string with eval inside the page,
    # which the report's Content-Security-Policy (no 'unsafe-eval') rightly refuses
    wait_until(lambda: page.evaluate(f"{shown}.every(i => i.complete)"))
    assert page.evaluate(f"{shown}.filter(i => i.complete && !i.naturalWidth).length") == 0
    assert page.evaluate(f"{shown}.length") >= 3
    assert not errors, errors
    assert all(u.startswith(("file:", "data:")) for u in requests), requests
