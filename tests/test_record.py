"""The scored row's one home: records and their JSON form, the declared columns and their
kinds, and row extensions (a new column family is one module: no pipeline module changes)."""

import json

import numpy as np
import pandas as pd
import pytest
from helpers import ctrl_c_after, make_image

from clipdet.api import score_images
from clipdet.pipeline import columns as kinds
from clipdet.pipeline import scoring
from clipdet.pipeline.columns import Column
from clipdet.pipeline.extensions import (
    EXTENSIONS,
    RowExtension,
    register_extension,
    values_array,
)
from clipdet.pipeline.record import ImageResult, TableLayout, column_kinds, columns_of_kind
from clipdet.pipeline.resume import partial_path


class FileSize(RowExtension):
    """A toy column family: each file's size in bytes, a video's summed over nothing (its
    file's size too), as a third party would add one."""

    name = "file_size"
    reads_bytes = True

    @classmethod
    def from_options(cls, options, paths=None):
        return cls()

    def signature(self) -> dict:
        return {"file_size": True}

    def columns(self):
        return (Column("file_size", kinds.FACT),)

    def prepare_image(self, source):
        return len(source.data)

    def table_columns(self, values, n_rows, fusion=None):
        return {"file_size": values_array(values, n_rows)}


@pytest.fixture
def file_size_extension():
    register_extension(FileSize)
    yield FileSize
    del EXTENSIONS[FileSize.name]


def test_a_new_column_family_is_one_extension(
    file_size_extension, weights_dir, tiny_clip_checkpoint, tmp_path, monkeypatch
):
    paths = [make_image(tmp_path / f"im{i}.png", size=(40 + 8 * i, 40), seed=i) for i in range(4)]
    (tmp_path / "bad.png").write_bytes(b"nope")
    paths.append(tmp_path / "bad.png")
    options = {"backbone_weights": str(tiny_clip_checkpoint), "device": "cpu", "num_workers": 0}
    out = tmp_path / "out.jsonl"
    with ctrl_c_after(monkeypatch, scoring, 2), pytest.raises(KeyboardInterrupt):
        score_images(paths, ["tiny_a"], weights_dir, out=out, batch_size=1, **options)
    lines = partial_path(out).read_text().splitlines()
    header = json.loads(lines[0])
    assert header["signature"]["file_size"] is True  # its resume signature
    assert ["file_size", "fact"] in header["columns"]  # declared with its kind
    assert json.loads(lines[1])["file_size"] == paths[0].stat().st_size  # its JSON form
    table = score_images(paths, ["tiny_a"], weights_dir, out=out, resume=True, batch_size=1,
                         **options)  # fmt: skip
    assert list(table.columns) == ["filename", "tiny_a", "fusion", "file_size", "error"]
    assert table["file_size"].tolist() == [p.stat().st_size for p in paths]  # resumed rows too
    assert pd.read_json(out, lines=True)["file_size"].tolist() == table["file_size"].tolist()


def test_records_round_trip_through_json_with_their_extensions():
    from clipdet.pipeline.extensions.video_summary import VideoResult

    video = VideoResult(np.array([0.5, 1.5]), np.array([[1.0, np.nan], [2.0, 3.0]]), 2.0, 0.25)
    record = ImageResult(7, np.array([1.5, np.nan]), "", {"att": np.array([0.1, 0.2, 0.3])},
                         extras={"provenance": ("c2pa:x", "dalle3"), "video": video})  # fmt: skip
    line = record.to_json("a.mp4")
    assert list(json.loads(line)) == ["index", "filename", "scores", "logits", "provenance",
                                      "video", "error"]  # fmt: skip
    back = ImageResult.from_json(line, 2, {"att": 3})
    assert back.provenance == ("c2pa:x", "dalle3") and back.facts is None
    np.testing.assert_array_equal(back.video.frame_scores, video.frame_scores)
    assert back.to_json("a.mp4") == line
    with pytest.raises(ValueError, match="wrong number of scores"):
        ImageResult.from_json(line, 1, {"att": 3})  # a record of another run's models
    torn = line.replace('"frame_scores": [[1.0, null], [2.0, 3.0]]', '"frame_scores": [[1.0]]')
    with pytest.raises(ValueError, match="wrong number of frame scores"):
        ImageResult.from_json(torn, 2, {"att": 3})
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        back.nothing  # noqa: B018


def test_the_layout_declares_every_column_with_its_kind():
    from clipdet.models.attribution import AttributionSpec, OpenSetRule
    from clipdet.options import RunOptions

    spec = AttributionSpec(("real", "gen"), None, OpenSetRule("energy", 0.5))
    layout = TableLayout(("a", "b"), (("who", spec, 2),), ())
    declared = [(c.name, c.kind) for c in layout.columns("mean_logit")]
    assert declared == [
        ("filename", "name"), ("a", "score"), ("b", "score"), ("fusion", "fusion"),
        ("who", "attribution"), ("who_confidence", "attribution"),
        ("who_unknown_score", "attribution"), ("who_p_real", "attribution"),
        ("who_p_gen", "attribution"), ("error", "error"),
    ]  # fmt: skip
    assert [c.name for c in layout.columns("none")] == [n for n, _ in declared if n != "fusion"]
    with_videos = TableLayout.of([], RunOptions(calibration="c.yaml"), ["a.png", "b.MPG"])
    assert [ext.name for ext in with_videos.extensions] == ["facts", "video"]
    assert [ext.name for ext in TableLayout.of([], RunOptions(), ["a.png"]).extensions] == []
    with pytest.raises(ValueError, match="unknown column kind 'colour'"):
        Column("x", "colour")


def test_a_scores_file_from_elsewhere_has_its_columns_kinds_by_name():
    table = pd.DataFrame({
        "filename": ["a"], "typ": ["real"], "mine": [1.0], "theirs": [2], "fusion": [1.5],
        "jpeg_quality": [90.0], "provenance": [np.nan], "frames": [np.nan], "verdict": ["real"],
        "who": ["gen"], "who_confidence": [0.9], "who_unknown_score": [0.1], "who_p_gen": [0.9],
        "who_p_real": [0.1], "notes": ["text"], "error": [""],
    })  # fmt: skip
    found = column_kinds(table)
    assert found["mine"] == found["theirs"] == "score"
    assert found["jpeg_quality"] == "fact" and found["provenance"] == "provenance"
    assert found["frames"] == "video" and found["who_p_gen"] == "attribution"
    assert "notes" not in found  # text nobody declared: not a score
    assert columns_of_kind(table, kinds.SCORE) == ["mine", "theirs"]
    assert columns_of_kind(table, kinds.SCORE, kinds.FUSION) == ["mine", "theirs", "fusion"]
