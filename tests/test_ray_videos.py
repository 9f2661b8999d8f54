"""Videos on the Ray engine: rows, video columns and frames files equal to the local engine's,
with a row extension registered at run time (the infer actors register it too). WebDataset
samples holding videos: test_ray_stream.py."""

import sys

import numpy as np
import pandas as pd
import pytest
from helpers import local_run_args
from test_ray_engine import assert_same_scores
from test_video import stills as stills  # the module's images and videos (a fixture)

import main as cli
from clipdet.pipeline import columns as kinds
from clipdet.pipeline.columns import Column
from clipdet.pipeline.extensions import EXTENSIONS, RowExtension, register_extension, values_array

pytest.importorskip("av")  # the [video] extra; requirements-dev.txt installs it
pytestmark = pytest.mark.slow


class FrameCount(RowExtension):
    """A toy family that only videos have: how many frames their row folded."""

    name = "frame_count"

    @classmethod
    def from_options(cls, options, paths=None):
        return cls()

    def columns(self):
        return (Column("frame_count", kinds.VIDEO),)

    def fold_frames(self, value, frames):
        return len(frames.times)

    def table_columns(self, values, n_rows, fusion=None):
        return {"frame_count": values_array(values, n_rows)}


@pytest.fixture
def frame_count():
    """FrameCount registered in this process for one test; it reaches the Ray actors by value
    (they cannot import this module)."""
    from ray import cloudpickle  # (Ray's own copy ships the tasks' arguments)

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    register_extension(FrameCount)
    yield FrameCount
    del EXTENSIONS[FrameCount.name]
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def test_the_ray_engine_scores_videos_as_the_local_engine(
    ray_instance, stills, weights_dir, tiny_clip_checkpoint, tmp_path, frame_count
):
    """Each video is one task's unit; the rows, the video columns and the frames file equal
    the local engine's (blocks of 2 rows: videos go through the resumable blocks too), and an
    extension registered at run time folds each video's frames on Ray as in this process."""
    (stills / "broken.mp4").write_bytes(b"not a video")
    names = ["a.mkv", "a.png", "broken.mp4", "ab.mkv", "ba.mkv"]
    pd.DataFrame({"filename": names}).to_csv(stills / "ray_list.csv", index=False)
    tables = {}
    for engine in ("local", "ray"):
        out = tmp_path / f"{engine}.csv"
        extra = ["--engine", "ray", "--block_rows", "2", "--batch_size", "2"] * (engine == "ray")
        argv = ["-i", str(stills / "ray_list.csv"), "-o", str(out), "--frames_out",
                str(tmp_path / f"{engine}.frames.csv"), "--video_frames", "4", *extra,
                *local_run_args(tiny_clip_checkpoint, weights_dir, "tiny_a,res_tiny")]  # fmt: skip
        assert cli.main(argv) == 0
        tables[engine] = pd.read_csv(out, keep_default_na=False, na_values=[""])
    assert_same_scores(tables["local"], tables["ray"], atol=1e-4)  # batches of other sizes
    ray = tables["ray"]
    assert ray["frames"][0] == 4 and np.isnan(ray["frames"][1])
    assert np.isnan(ray["frame_count"][1]) and ray["frame_count"][[0, 3, 4]].tolist() == [4] * 3
    assert "not a readable video" in ray["error"][2]
    frames = {e: pd.read_csv(tmp_path / f"{e}.frames.csv") for e in ("local", "ray")}
    assert len(frames["ray"]) == 12  # 3 videos x 4 frames
    assert_same_scores(frames["local"], frames["ray"], atol=1e-4)
