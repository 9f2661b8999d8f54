"""Videos: sampled frames decoded per second, and decoded + scored per second with a CLIP
ViT-L/14 head (random weights, `clipdet score`'s code path, one video at a time), for 720p and
1080p H.264 and VP9 clips of 10 s at N = 8, 16, 32 frames; then a long H.264 video (default
10 minutes) against a 10-second one at N = 16, each scored in its own process: seconds and
peak RSS.

    python benchmarks/bench_video.py [--work /tmp/clipdet-bench] [--minutes 10] [--precision auto]

Clips are generated once under --work with PyAV (a moving gradient with noise, 25 fps, a
keyframe every 10 s, as many generated clips have one): a 10-minute 1080p one takes minutes.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from common import REPO, bench_parser, cpu_name, make_head, make_vit_l14_checkpoint, peak_rss_mb

SIZES = {"720p": (1280, 720), "1080p": (1920, 1080)}
CODECS = {"h264": ("libx264", ".mp4"), "vp9": ("libvpx-vp9", ".webm")}
FPS = 25
FRAME_COUNTS = (8, 16, 32)


CYCLE = 2 * FPS  # the clips loop over 2 s of distinct frames (made once, encoded many times)


def make_clip(path: Path, size: tuple[int, int], codec: str, seconds: float) -> Path:
    """A clip of a moving gradient with noise (written once)."""
    if path.exists():
        return path
    import av

    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    noise = np.random.default_rng(0).normal(0, 8, (height, width, 1)).astype(np.float32)
    frames = []
    for k in range(CYCLE):
        phase = 2 * np.pi * k / CYCLE
        base = 128 + 90 * np.sin(x / 97 + phase) * np.cos(y / 71 - phase)
        rgb = np.clip(base[..., None] + noise + [0, 20 * np.sin(phase), -20], 0, 255)
        frames.append(av.VideoFrame.from_ndarray(rgb.astype(np.uint8), format="rgb24"))
    if codec == "libx264":
        options = {"preset": "ultrafast"}
    else:
        options = {"deadline": "realtime", "cpu-used": "8"}
    partial = path.with_name("partial-" + path.name)
    with av.open(str(partial), "w") as out:
        stream = out.add_stream(codec, rate=FPS, options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = 10 * FPS
        for k in range(round(seconds * FPS)):
            frame = frames[k % CYCLE]
            frame.pts = None
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    partial.rename(path)
    return path


def decode_seconds(path: Path, frames: int) -> float:
    from clipdet.pipeline.video import FrameSampling, open_video

    start = time.perf_counter()
    with open_video(str(path), None, FrameSampling(frames=frames)) as reader:
        count = sum(1 for _ in reader.frames())
    if count != frames:
        raise RuntimeError(f"{path.name}: {count} frames decoded, {frames} asked for")
    return time.perf_counter() - start


def score_once(work: Path, path: Path, frames: int, precision: str) -> dict:
    """One video scored in this process (models loaded first, not timed)."""
    from clipdet.options import RunOptions
    from clipdet.pipeline.scoring import load_models, score_table

    options = RunOptions(device="cpu", precision=precision, num_workers=0, batch_size=8,
                         backbone_weights=str(work / "vit_l14_random.pt"),
                         video_frames=frames).resolved()  # fmt: skip
    models = load_models(["bench_a"], work / "models", options)
    start = time.perf_counter()
    table = score_table(models, [str(path)], options, fusion=None)
    seconds = time.perf_counter() - start
    if table["error"][0]:
        raise RuntimeError(table["error"][0])
    return {"seconds": seconds, "frames": int(table["frames"][0]), "peak_rss_mb": peak_rss_mb()}


def main() -> None:
    p = bench_parser(__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10.0, help="the long video's duration")
    p.add_argument("--precision", default="auto", help="the backbone's precision (auto: bf16 "
                   "on a CPU with native bf16)")  # fmt: skip
    p.add_argument("--child", nargs=2, default=None, help=argparse_hidden())
    p.add_argument("--decode_only", action="store_true", help=argparse_hidden())
    args = p.parse_args()
    work = args.work
    if args.child:  # one run in a fresh process: seconds and peak RSS
        clip, frames = Path(args.child[0]), int(args.child[1])
        if args.decode_only:
            seconds = decode_seconds(clip, frames)
            print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_rss_mb()}))
        else:
            print(json.dumps(score_once(work, clip, frames, args.precision)))
        return
    make_vit_l14_checkpoint(work / "vit_l14_random.pt")
    make_head(work / "models", "bench_a", seed=1)
    clips = work / "videos"
    clips.mkdir(parents=True, exist_ok=True)
    print(f"CPU: {cpu_name()}; backbone precision {args.precision}")
    print(f"{'clip (10 s, 25 fps)':<22} {'N':>3} {'decode f/s':>11} {'decode+score f/s':>17}")
    for size_name, size in SIZES.items():
        for codec_name, (codec, suffix) in CODECS.items():
            clip = make_clip(clips / f"{size_name}_{codec_name}_10s{suffix}", size, codec, 10)
            for n in FRAME_COUNTS:
                decoded = decode_seconds(clip, n)
                scored = score_once(work, clip, n, args.precision)["seconds"]
                print(f"{size_name + ' ' + codec_name:<22} {n:>3} {n / decoded:>11.1f} "
                      f"{n / scored:>17.2f}", flush=True)  # fmt: skip
    print(f"\n{'H.264, N = 16':<14} {'duration':>9} {'decode s':>9} {'decode RSS MB':>14} "
          f"{'decode+score s':>15} {'score RSS MB':>13}")  # fmt: skip
    for size_name, size in SIZES.items():
        for seconds in (10, 60 * args.minutes):
            name = f"{size_name}_h264_{seconds:g}s.mp4"
            clip = make_clip(clips / name, size, "libx264", seconds)
            decoded = child(work, clip, args.precision, decode_only=True)
            scored = child(work, clip, args.precision)
            print(f"{size_name:<14} {seconds:>8g}s {decoded['seconds']:>9.2f} "
                  f"{decoded['peak_rss_mb']:>14.0f} {scored['seconds']:>15.2f} "
                  f"{scored['peak_rss_mb']:>13.0f}", flush=True)  # fmt: skip


def child(work: Path, clip: Path, precision: str, decode_only: bool = False) -> dict:
    """16 frames of ``clip`` decoded (and scored) in a fresh process."""
    command = [sys.executable, __file__, "--work", str(work), "--precision", precision,
               "--child", str(clip), "16"] + ["--decode_only"] * decode_only  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(done.stdout.strip().splitlines()[-1])


def argparse_hidden():
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
