"""Videos: frames sampled with PyAV, one row per video, hostile files as rows' errors; every
video here is made by the test with PyAV."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from helpers import ctrl_c_after, local_run_args
from PIL import Image
from videos import pattern, write_video

import compute_metrics as metrics_cli
import main as cli
from clipdet.api import score_images
from clipdet.pipeline import video as video_module
from clipdet.pipeline.extensions.video_summary import temporal_statistic
from clipdet.pipeline.video import FrameSampling, open_video
from clipdet.pipeline.video_sampling import MAX_FRAMES

pytest.importorskip("av")  # the [video] extra; requirements-dev.txt installs it

A = pattern(96, 72, 0)
B = pattern(96, 72, 1)


def decoded_times(path, **sampling) -> list[float]:
    with open_video(str(path), None, FrameSampling(**sampling)) as reader:
        return [round(f.time, 4) for f in reader.frames()]


def nearest_pattern(image: Image.Image, candidates: list[np.ndarray]) -> int:
    pixels = np.asarray(image).astype(int)
    return int(np.argmin([np.abs(pixels - c).mean() for c in candidates]))


# ---- sampling and decoding ------------------------------------------------------------------


def test_uniform_targets_and_fps_targets():
    assert FrameSampling(frames=4).targets(8.0) == [1.0, 3.0, 5.0, 7.0]
    assert FrameSampling(fps=2).targets(2.0) == [0.25, 0.75, 1.25, 1.75]
    assert len(FrameSampling(fps=1000).targets(600.0)) == MAX_FRAMES
    assert FrameSampling().targets(0.0) == [0.0]  # unknown duration: the first frame
    with pytest.raises(ValueError, match="--video_frames"):
        FrameSampling(frames=0)
    with pytest.raises(ValueError, match="--animated"):
        FrameSampling(animated="gif")


@pytest.mark.parametrize("gop", [12, 100_000], ids=["keyframe every 12", "one keyframe"])
def test_each_target_gets_its_own_frame_whatever_the_keyframes(tmp_path, gop):
    """A clip with one keyframe (as generated ones are): a seek lands on the first frame for
    every target; frames are decoded forward to each target instead."""
    frames = [pattern(64, 48, k) for k in range(10)]
    path = write_video(tmp_path / "v.mp4", lambda k: frames[k % 10], 240, fps=24,
                       codec="libx264", gop=gop, pix_fmt="yuv444p",
                       options={"qp": "0"})  # fmt: skip
    with open_video(str(path), None, FrameSampling(frames=8)) as reader:
        assert reader.header.duration == pytest.approx(10.0)
        sampled = list(reader.frames())
    assert [f.time for f in sampled] == pytest.approx([(k + 0.5) * 10 / 8 for k in range(8)])
    for f in sampled:  # the frame shown at that time: index round(t * 24) mod 10
        assert nearest_pattern(f.image, frames) == round(f.time * 24) % 10


def test_a_clip_shorter_than_n_frames_gives_each_frame_once(tmp_path):
    path = write_video(tmp_path / "short.mkv", [A, B, A], fps=8)
    assert decoded_times(path, frames=16) == [0.0, 0.125, 0.25]


def test_variable_frame_rate_takes_the_frame_shown_at_each_time(tmp_path):
    times = [0, 0.1, 0.15, 1.0, 1.05, 2.0, 2.5, 2.6, 2.7, 4.0]
    path = write_video(tmp_path / "vfr.mkv", lambda k: pattern(64, 48, k), 10, times=times)
    # targets at the middle of 5 spans of 4.125 s: 0.41, 1.24, 2.06, 2.89, 3.71
    assert decoded_times(path, frames=5) == [0.15, 1.05, 2.0, 2.7]


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_rotated_videos_are_upright_as_players_show_them(tmp_path, rotation):
    path = write_video(tmp_path / "r.mp4", [A] * 4, codec="libx264", rotation=rotation,
                       pix_fmt="yuv444p", options={"qp": "0"})  # fmt: skip
    with open_video(str(path), None, FrameSampling(frames=1)) as reader:
        (frame,) = list(reader.frames())
    turned = np.rot90(A, k=(rotation // 90) % 4)  # counterclockwise, as the display matrix
    assert frame.image.size == (turned.shape[1], turned.shape[0])
    assert np.abs(np.asarray(frame.image).astype(int) - turned).mean() < 3


@pytest.mark.parametrize(
    ("codec", "pix_fmt", "suffix"),
    [("ffv1", "yuv420p10le", ".mkv"), ("libx264", "yuv444p", ".mkv"), ("ffv1", "yuv444p", ".mkv"),
     ("libvpx-vp9", None, ".webm"), ("mpeg4", None, ".avi"), ("libx264", None, ".mov")],
)  # fmt: skip
def test_high_bit_depth_444_and_other_containers_decode_to_rgb(tmp_path, codec, pix_fmt, suffix):
    path = write_video(tmp_path / f"v{suffix}", [A] * 6, codec=codec, pix_fmt=pix_fmt)
    with open_video(str(path), None, FrameSampling(frames=2)) as reader:
        images = [f.image for f in reader.frames()]
    assert images and all(i.mode == "RGB" and i.size == (96, 72) for i in images)
    assert nearest_pattern(images[0], [B, A]) == 1  # 4:2:0 blurs the noise, not the picture
    assert np.abs(np.asarray(images[0]).astype(int) - A).mean() < 20


def test_animated_images_are_videos_only_when_asked(tmp_path, weights_dir, tiny_clip_checkpoint):
    path = tmp_path / "anim.gif"
    frames = [Image.fromarray(x).quantize(64) for x in (A, B, A, B)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=250, loop=0)
    with open_video(str(path), None, FrameSampling(frames=4, animated="video")) as reader:
        assert reader.header.duration == pytest.approx(1.0)
        assert [f.time for f in reader.frames()] == pytest.approx([0.0, 0.25, 0.5, 0.75])
    common = {"backbone_weights": tiny_clip_checkpoint, "device": "cpu", "num_workers": 0}
    still = tmp_path / "still.png"
    Image.fromarray(A).save(still)
    as_image = score_images([path, still], ["tiny_a"], weights_dir, **common)
    as_video = score_images([path, still], ["tiny_a"], weights_dir, animated="video", **common)
    assert "frames" not in as_image.columns
    assert as_video.loc[0, "frames"] == 4 and as_video.loc[0, "error"] == ""
    # an image that is not animated stays an image, with its image's LLR
    assert np.isnan(as_video.loc[1, "frames"]) and as_video.loc[1, "error"] == ""
    assert as_video.loc[1, "tiny_a"] == as_image.loc[1, "tiny_a"]


# ---- scores ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stills(tmp_path_factory):
    """Images A and B (PNG), a lossless video of A repeated, one of A then B, one of B then A."""
    root = tmp_path_factory.mktemp("stills")
    Image.fromarray(A).save(root / "a.png")
    Image.fromarray(B).save(root / "b.png")
    write_video(root / "a.mkv", [A] * 12)
    write_video(root / "ab.mkv", lambda k: A if k < 6 else B, 12)
    write_video(root / "ba.mkv", lambda k: B if k < 6 else A, 12)
    return root


def tiny_a_features(paths, weights_dir, checkpoint) -> tuple[np.ndarray, list[str]]:
    """The features tiny_a's head reads, as training extracts them, and each row's error."""
    from clipdet.pipeline.features import extract_group_features
    from clipdet.pipeline.infer import feature_groups
    from clipdet.pipeline.scoring import load_models

    models = load_models(["tiny_a"], weights_dir, device="cpu", backbone_weights=checkpoint)
    groups, _ = feature_groups(models)
    transforms = {models[0].transform_key: models[0].transform}
    features, errors = extract_group_features(groups, transforms, paths)
    return features[groups[0].key], errors


def _scores(root, names, models, weights_dir, checkpoint, **options):
    paths = [root / n for n in names]
    return score_images(paths, models, weights_dir, backbone_weights=checkpoint, device="cpu",
                        num_workers=0, fusion="mean_logit", **options)  # fmt: skip


@pytest.mark.parametrize(
    "models",
    [
        ["tiny_a", "tiny_b", "tiny_proj"],
        pytest.param(["res_tiny"], marks=pytest.mark.slow),
        ["bfree_small"],
    ],
    ids=["CLIP heads", "Corvi2023 (full-resolution ResNet)", "B-Free"],
)
def test_a_still_video_scores_its_image_and_a_two_part_one_between(
    stills, weights_dir, tiny_clip_checkpoint, tmp_path, models
):
    if models == ["bfree_small"]:
        from test_model_zoo import write_zoo

        write_zoo(tmp_path)
        weights_dir = tmp_path
    names = ["a.png", "b.png", "a.mkv", "ab.mkv"]
    table = _scores(stills, names, models, weights_dir, tiny_clip_checkpoint, video_frames=4)
    assert (table["error"] == "").all()
    for model in models:
        a, b, video_a, video_ab = table[model]
        assert video_a == pytest.approx(a, abs=1e-4)
        assert min(a, b) - 1e-4 <= video_ab <= max(a, b) + 1e-4
        assert video_ab == pytest.approx((a + b) / 2, abs=1e-4)  # 2 frames of each
    assert table["frames"].tolist()[2:] == [4, 4] and np.isnan(table["frames"][0])
    assert table["duration_s"].tolist()[2:] == pytest.approx([1.5, 1.5])
    # the largest frame's fusion: B's frames in ab
    assert table.loc[3, "frame_max"] == pytest.approx(max(table["fusion"][:2]), abs=1e-4)


def test_temporal_statistic_is_the_spread_of_second_differences():
    steady = np.cumsum(np.ones((6, 4)), axis=0)  # constant velocity: no second difference
    assert temporal_statistic(steady) == pytest.approx(0.0)
    jerky = np.array([[0, 0], [1, 0], [1, 0], [3, 0], [3, 0]], dtype=float)
    second = np.abs(np.diff(jerky[:, 0], n=2))  # 1, 2, 2
    assert temporal_statistic(jerky) == pytest.approx(second.std())
    assert np.isnan(temporal_statistic(jerky[:3]))  # one second difference: no spread


def test_temporal_comes_from_the_frame_features_of_the_run(
    stills, weights_dir, tiny_clip_checkpoint
):
    """ab.mkv is 6 frames of A then 6 of B at 8 fps: 5 frames sampled are A, A, B, B, B, whose
    second differences are b - a, a - b and 0 (a, b: the images' normalised features)."""
    images = [str(stills / "a.png"), str(stills / "b.png")]
    features, _ = tiny_a_features(images, weights_dir, tiny_clip_checkpoint)
    a, b = features.astype(np.float64)
    step = float(np.linalg.norm(b - a))
    table = _scores(stills, ["a.mkv", "ab.mkv", "a.png"], ["tiny_a"], weights_dir,
                    tiny_clip_checkpoint, video_frames=5)  # fmt: skip
    assert table.loc[0, "temporal"] == pytest.approx(0.0, abs=1e-6)  # a still: no motion
    assert table.loc[1, "temporal"] == pytest.approx(np.std([step, step, 0.0]), rel=1e-3)
    assert np.isnan(table.loc[2, "temporal"])  # an image
    three = _scores(stills, ["ab.mkv"], ["tiny_a"], weights_dir, tiny_clip_checkpoint,
                    video_frames=3)  # fmt: skip
    assert np.isnan(three.loc[0, "temporal"])  # one second difference: no spread


# ---- whole runs -----------------------------------------------------------------------------


def hostile_videos(root) -> list[str]:
    """Bad videos, each of which must become its row's error (or a row scored on what could
    be decoded), beside good ones."""
    import av

    good = write_video(root / "good.mp4", lambda k: pattern(64, 48, k), 24, codec="libx264")
    data = good.read_bytes()
    (root / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (root / "header_only.mp4").write_bytes(data[:200])
    (root / "garbage.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    (root / "empty.webm").write_bytes(b"")
    (root / "folder.mkv").mkdir()
    with av.open(str(root / "audio_only.mp4"), "w") as container:
        stream = container.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), "fltp", "mono")
        frame.sample_rate = 8000
        for k in range(8):
            frame.pts = k * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with av.open(str(root / "no_frames.mkv"), "w") as container:  # a video stream, no packet
        stream = container.add_stream("ffv1", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "bgr0"
        sound = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), "s16", "mono")
        frame.sample_rate, frame.pts = 8000, 0
        for packet in sound.encode(frame):
            container.mux(packet)
    lossless = write_video(root / "whole.mkv", lambda k: pattern(64, 48, k), 24).read_bytes()
    (root / "cut.mkv").write_bytes(lossless[: len(lossless) * 6 // 10])
    write_video(root / "big.mkv", [pattern(200, 150, 3)] * 2)  # over the test's pixel limit
    write_video(root / "slow.mkv", lambda k: pattern(64, 48, k), 400)
    Image.fromarray(A).save(root / "still.png")
    return ["good.mp4", "truncated.mp4", "cut.mkv", "header_only.mp4", "garbage.mp4", "empty.webm",
            "folder.mkv", "audio_only.mp4", "no_frames.mkv", "big.mkv", "slow.mkv",
            "missing.mov", "still.png"]  # fmt: skip


def test_hostile_videos_in_a_whole_run(tmp_path, weights_dir, tiny_clip_checkpoint, monkeypatch):
    names = hostile_videos(tmp_path)
    pd.DataFrame({"filename": names}).to_csv(tmp_path / "list.csv", index=False)
    monkeypatch.setattr(video_module, "MAX_IMAGE_PIXELS", 100 * 100)
    real_time = video_module.VideoReader.check_time

    def slow_video_times_out(self):
        if self.path.endswith("slow.mkv"):
            self.deadline = 0  # as if it had decoded for --video_timeout seconds
        real_time(self)

    monkeypatch.setattr(video_module.VideoReader, "check_time", slow_video_times_out)
    out, frames_out = tmp_path / "out.csv", tmp_path / "frames.csv"
    argv = [
        "-i",
        str(tmp_path / "list.csv"),
        "-o",
        str(out),
        "--frames_out",
        str(frames_out),
        "--video_frames",
        "4",
        *local_run_args(tiny_clip_checkpoint, weights_dir, "tiny_a"),
    ]
    assert cli.main(argv) == 0  # fmt: skip
    table = pd.read_csv(out, keep_default_na=False, na_values=[""]).set_index("filename")
    assert list(table.index) == names  # every row answered, in order
    errors = table["error"].fillna("")
    for name, expected in {
        "header_only.mp4": "VideoLoadError", "garbage.mp4": "not a readable video",
        "empty.webm": "empty file", "folder.mkv": "is a directory",
        "audio_only.mp4": "no video stream (streams: audio)",
        "no_frames.mkv": "no frame could be decoded", "big.mkv": "too large (200x150 pixels",
        "slow.mkv": "longer than 120 s (--video_timeout)", "missing.mov": "file not found",
    }.items():  # fmt: skip
        assert expected in errors[name], (name, errors[name])
        assert np.isnan(table.loc[name, "tiny_a"])
    for name in ("good.mp4", "still.png"):
        assert errors[name] == "" and np.isfinite(table.loc[name, "tiny_a"])
    assert table.loc["good.mp4", "frames"] == 4
    # a truncated file is scored on the frames before the cut (or is an error: never a crash)
    truncated = table.loc["truncated.mp4"]  # its index (moov) was at the end
    assert "not a readable video" in truncated["error"] and np.isnan(truncated["tiny_a"])
    cut = table.fillna({"error": ""}).loc["cut.mkv"]  # Matroska: the frames before the cut
    assert cut["error"] == "" and np.isfinite(cut["tiny_a"]) and 1 <= cut["frames"] <= 4
    frames = pd.read_csv(frames_out)
    assert list(frames.columns) == ["filename", "frame", "time_s", "tiny_a", "fusion"]
    good = frames[frames["filename"] == "good.mp4"]
    assert good["frame"].tolist() == [0, 1, 2, 3]
    assert good["time_s"].tolist() == pytest.approx([0.375, 1.125, 1.875, 2.625])
    assert good["tiny_a"].mean() == pytest.approx(table.loc["good.mp4", "tiny_a"], abs=1e-6)


def test_an_interrupted_video_run_resumes_to_the_same_files(
    stills, weights_dir, tiny_clip_checkpoint, monkeypatch, tmp_path
):
    from clipdet.pipeline import scoring

    names = ["a.mkv", "a.png", "ab.mkv", "ba.mkv"]
    pd.DataFrame({"filename": names}).to_csv(stills / "list.csv", index=False)
    flags = [*local_run_args(tiny_clip_checkpoint, weights_dir, "tiny_a,tiny_b"), "--batch_size",
             "1", "--video_frames", "5"]  # fmt: skip

    def run(out, *extra):
        return cli.main(["-i", str(stills / "list.csv"), "-o", str(out), "--frames_out",
                         str(out.with_suffix(".frames.csv")), *flags, *extra])  # fmt: skip

    assert run(tmp_path / "clean.csv") == 0
    out = tmp_path / "out.csv"
    with ctrl_c_after(monkeypatch, scoring, 2):
        assert run(out) == 130
    lines = (tmp_path / "out.csv.partial.jsonl").read_text().splitlines()[1:]
    assert len(json.loads(lines[0])["video"]["frame_scores"]) == 5
    assert run(out, "--resume") == 0
    assert out.read_bytes() == (tmp_path / "clean.csv").read_bytes()
    frames = out.with_suffix(".frames.csv").read_bytes()
    assert frames == (tmp_path / "clean.frames.csv").read_bytes()


def test_metrics_on_a_labelled_video_list(stills, weights_dir, tiny_clip_checkpoint, tmp_path):
    listed = pd.DataFrame({"filename": ["a.mkv", "ab.mkv", "ba.mkv", "a.png"],
                           "typ": ["real", "gen", "gen", "real"]})  # fmt: skip
    listed.to_csv(stills / "labels.csv", index=False)
    out = tmp_path / "scores.csv"
    argv = ["-i", str(stills / "labels.csv"), "-o", str(out), "--video_frames", "4",
            *local_run_args(tiny_clip_checkpoint, weights_dir, "tiny_a,tiny_b")]  # fmt: skip
    assert cli.main(argv) == 0
    table_path = tmp_path / "auc.csv"
    argv = ["--in_csv", str(stills / "labels.csv"), "--out_csv", str(out), "--metrics", "auc",
            "--save_tab", str(table_path)]  # fmt: skip
    assert metrics_cli.main(argv) == 0
    tab = pd.read_csv(table_path, index_col=0)  # a row per model, a column per generator
    assert list(tab.index) == ["tiny_a", "tiny_b", "fusion"]  # no video column is a score
    scores = pd.read_csv(out)
    for model in ("tiny_a", "tiny_b"):
        real = scores[model][[0, 3]].to_numpy()
        fake = scores[model][[1, 2]].to_numpy()
        expected = np.mean([[float(f > r) + 0.5 * (f == r) for r in real] for f in fake])
        assert tab.loc[model, "gen"] == pytest.approx(expected, abs=1e-9)


def test_container_tags_and_c2pa_in_mp4_are_provenance(tmp_path):
    pytest.importorskip("c2pa")
    from clipdet.provenance import ProvenanceReader
    from clipdet.provenance.samples import c2pa_signed, certificate_chain

    tagged = write_video(tmp_path / "sora.mp4", [A] * 4, codec="libx264",
                         metadata={"comment": "made with Sora 2"})  # fmt: skip
    plain = write_video(tmp_path / "plain.mp4", [A] * 4, codec="libx264")
    reader = ProvenanceReader(watermarks=False)
    with open_video(str(tagged), None, FrameSampling()) as video:
        found = reader.read_video(str(tagged), None, video.header.tags)
    assert found.tokens == ["container:comment=made with Sora 2"] and found.generator == "Sora"
    with open_video(str(plain), None, FrameSampling()) as video:
        assert video.header.tags["container:encoder"].startswith("Lavf")  # not a generator
        assert reader.read_video(str(plain), None, video.header.tags).tokens == []
    chain, key, _ = certificate_chain("OpenAI Test")
    signed = tmp_path / "signed.mp4"
    signed.write_bytes(c2pa_signed(plain.read_bytes(), "video/mp4", chain, key))
    found = reader.read_video(str(signed), None, {})
    assert found.tokens == ["c2pa:trainedAlgorithmicMedia(valid, untrusted; OpenAI Test)"]


@pytest.mark.slow
def test_a_long_video_costs_no_more_memory_than_a_short_one(tmp_path):
    """Peak RSS (VmHWM) of decoding 16 frames of a 10-minute video (25 fps, 160x120: 864 MB of
    RGB frames, were they held) and of a 10-second one, each in a fresh interpreter: the long
    one within 300 MB of the short one."""
    cycle = [pattern(160, 120, k) for k in range(7)]
    options = {"preset": "ultrafast"}
    long = write_video(tmp_path / "long.mp4", lambda k: cycle[k % 7], 15_000, fps=25,
                       codec="libx264", gop=250, options=options)  # fmt: skip
    short = write_video(tmp_path / "short.mp4", lambda k: cycle[k % 7], 250, fps=25,
                        codec="libx264", gop=250, options=options)  # fmt: skip
    probe = (
        "import sys; from clipdet.pipeline.video import open_video, FrameSampling\n"
        "with open_video(sys.argv[1], None, FrameSampling(frames=16)) as r:\n"
        "    n = sum(1 for _ in r.frames())\n"
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0]\n"
        "print(n, hwm.split()[1])"
    )
    peaks = {}
    for name, path in (("long", long), ("short", short)):
        done = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True,
                              text=True, check=True)  # fmt: skip
        frames, peak_kb = map(int, done.stdout.split())
        assert frames == 16
        peaks[name] = peak_kb / 1024
    assert peaks["long"] <= peaks["short"] + 300, peaks


@pytest.mark.slow
def test_the_report_shows_a_video_card_with_its_frames_in_chromium(
    stills, weights_dir, tiny_clip_checkpoint, tmp_path, browser
):
    from test_report import card_names, open_page, wait_until

    names = ["a.png", "ab.mkv", "a.mkv"]
    pd.DataFrame({"filename": names}).to_csv(stills / "report_list.csv", index=False)
    report, frames = tmp_path / "report.html", tmp_path / "frames.csv"
    argv = ["-i", str(stills / "report_list.csv"), "-o", str(tmp_path / "s.csv"), "--report",
            str(report), "--frames_out", str(frames), "--video_frames", "4",
            *local_run_args(tiny_clip_checkpoint, weights_dir, "tiny_a,tiny_b")]  # fmt: skip
    assert cli.main(argv) == 0
    page, errors, requests = open_page(browser, report)
    page.select_option("#sort", "input")
    assert card_names(page) == names
    strips = "Array.from(document.querySelectorAll('.card .strip img'))"
    wait_until(lambda: page.evaluate(f"{strips}.every(i => i.complete)"))
    per_card = page.eval_on_selector_all(
        ".card", "cards => cards.map(c => c.querySelectorAll('.strip img').length)"
    )
    assert per_card == [0, 4, 4]  # the image has none; each video its 4 scored frames
    assert page.evaluate(f"{strips}.filter(i => !i.naturalWidth).length") == 0
    points = page.eval_on_selector_all(
        ".card",
        "cards => cards.map(c => { const p = c.querySelector('.curve polyline');"
        " return p ? p.getAttribute('points').split(' ').length : 0; })",
    )
    assert points == [0, 4, 4]
    facts = page.eval_on_selector_all(".video-facts", "nodes => nodes.map(n => n.textContent)")
    assert facts[0].startswith("4 frames of 1.5 s")
    assert not errors, errors
    assert all(u.startswith(("file:", "data:")) for u in requests), requests
    # the report command reads the same files into the same cards
    import report as report_cli

    again = tmp_path / "again.html"
    assert report_cli.main(["--scores", str(tmp_path / "s.csv"), "--in_csv",
                            str(stills / "report_list.csv"), "--frames", str(frames), "-o",
                            str(again)]) == 0  # fmt: skip
    page, errors, _ = open_page(browser, again)
    wait_until(lambda: page.evaluate(f"{strips}.every(i => i.complete)"))
    assert page.evaluate(f"{strips}.length") == 8 and not errors


def test_feature_extraction_for_training_refuses_videos_per_row(
    stills, weights_dir, tiny_clip_checkpoint
):
    paths = [str(stills / "a.png"), str(stills / "a.mkv")]
    values, errors = tiny_a_features(paths, weights_dir, tiny_clip_checkpoint)
    assert errors[0] == "" and "training takes images" in errors[1]
    assert np.isfinite(values[0]).all() and np.isnan(values[1]).all()


def test_a_batch_of_videos_runs_at_most_batch_size_frames_per_pass(
    stills, weights_dir, tiny_clip_checkpoint, monkeypatch
):
    """--batch_size is images per forward pass: 2 videos of 5 frames and an image in one
    batch of 3 go through the backbone 3 at a time, and score as one at a time does."""
    from helpers import count_forward_passes

    names = ["ab.mkv", "a.png", "ba.mkv"]
    one = _scores(stills, names, ["tiny_a"], weights_dir, tiny_clip_checkpoint,
                  video_frames=5, batch_size=1)  # fmt: skip
    passes = count_forward_passes(monkeypatch)
    three = _scores(stills, names, ["tiny_a"], weights_dir, tiny_clip_checkpoint,
                    video_frames=5, batch_size=3)  # fmt: skip
    assert sum(passes) == 11 and max(passes) == 3
    np.testing.assert_allclose(three["tiny_a"], one["tiny_a"], atol=1e-5)


def test_a_video_at_a_url_and_in_a_folder_scores_as_the_local_file(
    stills, weights_dir, tiny_clip_checkpoint, http_root, tmp_path
):
    import shutil

    from clipdet.pipeline.inputs import collect_images

    root, base, hits = http_root
    shutil.copy(stills / "ab.mkv", root / "clip.mkv")
    folder = tmp_path / "folder"
    folder.mkdir()
    shutil.copy(stills / "ab.mkv", folder / "clip.MKV")
    (folder / "notes.txt").write_text("not media")
    found = collect_images([str(folder)])
    assert found == [str(folder / "clip.MKV")]  # videos are collected, by extension
    common = {"backbone_weights": tiny_clip_checkpoint, "device": "cpu", "num_workers": 0,
              "video_frames": 4}  # fmt: skip
    paths = [stills / "ab.mkv", f"{base}/clip.mkv", f"{base}/clip.mkv?version=2", *found]
    table = score_images(paths, ["tiny_a"], weights_dir, **common)
    assert (table["error"] == "").all(), table["error"].tolist()
    np.testing.assert_allclose(table["tiny_a"], table["tiny_a"][0], atol=1e-6)
    assert (table["frames"] == 4).all() and "/clip.mkv" in hits


def test_video_fps_samples_one_frame_every_1_over_f_seconds(
    stills, weights_dir, tiny_clip_checkpoint, tmp_path
):
    frames_out = tmp_path / "frames.csv"
    pd.DataFrame({"filename": ["ab.mkv"]}).to_csv(stills / "fps.csv", index=False)
    argv = ["-i", str(stills / "fps.csv"), "-o", str(tmp_path / "s.csv"), "--video_fps", "4",
            "--frames_out", str(frames_out),
            *local_run_args(tiny_clip_checkpoint, weights_dir, "tiny_a")]  # fmt: skip
    assert cli.main(argv) == 0
    frames = pd.read_csv(frames_out)
    # 1.5 s at 8 fps; targets 0.125, 0.375, ... 1.375 s take frames 1, 3, ... 11
    assert frames["time_s"].tolist() == pytest.approx([0.125, 0.375, 0.625, 0.875, 1.125, 1.375])
    assert pd.read_csv(tmp_path / "s.csv")["frames"][0] == 6


def test_without_pyav_each_video_row_says_how_to_install_it(
    stills, weights_dir, tiny_clip_checkpoint, monkeypatch
):
    monkeypatch.setitem(sys.modules, "av", None)  # as if PyAV were not installed
    table = _scores(stills, ["a.mkv", "a.png"], ["tiny_a"], weights_dir, tiny_clip_checkpoint)
    assert "pip install 'clipdet[video]'" in table.loc[0, "error"]
    assert table.loc[1, "error"] == "" and np.isfinite(table.loc[1, "tiny_a"])


@pytest.mark.slow
def test_a_killed_video_run_resumes_to_the_same_files(tmp_path, weights_dir, tiny_clip_checkpoint):
    """SIGKILL in the middle of a run of 24 videos (its own process); --resume gives the output
    and the frames file of an uninterrupted run."""
    from helpers import REPO, main_command
    from test_everyday import _wait_for_rows

    names = []
    for i in range(24):
        write_video(tmp_path / f"v{i}.mkv", lambda k, i=i: pattern(80, 60, 7 * i + k), 24)
        names.append(f"v{i}.mkv")
    pd.DataFrame({"filename": names}).to_csv(tmp_path / "list.csv", index=False)
    common = ["-i", str(tmp_path / "list.csv"), "-w", str(weights_dir), "-m", "tiny_a,tiny_b",
              "--batch_size", "1", "--num_workers", "0", "-q", "--video_frames", "6"]  # fmt: skip
    in_process = [*common, "--backbone_weights", str(tiny_clip_checkpoint), "-d", "cpu"]

    def outputs(stem):
        return ["-o", str(tmp_path / f"{stem}.csv"), "--frames_out",
                str(tmp_path / f"{stem}.frames.csv")]  # fmt: skip

    assert cli.main([*in_process, *outputs("clean")]) == 0
    partial = tmp_path / "out.csv.partial.jsonl"
    proc = subprocess.Popen(main_command(tiny_clip_checkpoint, *common, *outputs("out")),
                            cwd=REPO, stderr=subprocess.PIPE, text=True)  # fmt: skip
    _wait_for_rows(partial, 3, proc)
    proc.kill()  # SIGKILL: no chance to clean up
    proc.wait()
    done_before = len(partial.read_text().splitlines()) - 1
    assert 0 < done_before < 24 and not (tmp_path / "out.csv").exists()
    assert cli.main([*in_process, *outputs("out"), "--resume"]) == 0
    for name in ("csv", "frames.csv"):
        assert (tmp_path / f"out.{name}").read_bytes() == (tmp_path / f"clean.{name}").read_bytes()


def test_frames_out_needs_an_output_file_not_a_folder(tmp_path, capsys):
    argv = ["-i", str(tmp_path / "list.csv"), "-o", f"{tmp_path}/scores/", "--engine", "ray",
            "--frames_out", str(tmp_path / "frames.csv")]  # fmt: skip
    assert cli.main(argv) == 2
    assert "--frames_out write into output files, not an output folder" in capsys.readouterr().err


def test_videos_are_found_by_content_and_by_the_common_extensions(
    stills, weights_dir, tiny_clip_checkpoint, tmp_path
):
    """A camera's MPEG-1 .MPG is a video by its extension; a video under a name no image
    decoder reads is one by its content; a broken image stays an image error."""
    for suffix in (".mpg", ".mpeg", ".m2ts", ".mts", ".ts", ".3gp", ".wmv", ".flv", ".ogv",
                   ".vob", ".mxf"):  # fmt: skip
        assert FrameSampling().is_video(f"clip{suffix.upper()}")
    write_video(tmp_path / "MVC-007W.MPG", [A] * 12, fps=25, codec="mpeg1video", pix_fmt="yuv420p")
    write_video(tmp_path / "a.mkv", [A] * 12)
    (tmp_path / "a.mkv").rename(tmp_path / "renamed.bin")  # a video by its content only
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    names = ["MVC-007W.MPG", "renamed.bin", "broken.png", "a.png"]
    (tmp_path / "a.png").write_bytes((stills / "a.png").read_bytes())
    table = _scores(tmp_path, names, ["tiny_a"], weights_dir, tiny_clip_checkpoint,
                    video_frames=4).set_index("filename")  # fmt: skip
    still = table.loc[str(tmp_path / "a.png"), "tiny_a"]
    mpg = table.loc[str(tmp_path / "MVC-007W.MPG")]
    assert mpg["error"] == "" and 1 <= mpg["frames"] <= 4  # (MPEG-1 drops a few frames)
    assert mpg["tiny_a"] == pytest.approx(still, abs=0.5)  # lossy MPEG-1 of the same image
    renamed = table.loc[str(tmp_path / "renamed.bin")]
    assert renamed["error"] == "" and renamed["tiny_a"] == pytest.approx(still, abs=1e-4)
    assert renamed["frames"] == 4
    broken = table.loc[str(tmp_path / "broken.png")]
    assert "not a readable image" in broken["error"] and np.isnan(broken["tiny_a"])
