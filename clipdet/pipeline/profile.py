"""Where a run's time goes (``main.py --profile``): the prepare stage's reading + decoding and
preprocessing, summed over the decoding workers (CPU seconds), and the main process's wall
time: waiting for decoded images, host-to-device copies, backbone passes, heads and writing.
The main process waiting for images most of the time means the run is decode-bound (more
workers or a faster decoder help); busy in the backbone, compute-bound."""

import time
from collections import defaultdict
from contextlib import contextmanager

WORKER_STAGES = ("read+decode", "preprocess")
MAIN_STAGES = (
    "waiting for images", "host->device copy", "device decode", "backbone", "heads", "writing",
)  # fmt: skip


class Profile:
    def __init__(self, device: str = "cpu"):
        self.seconds: dict[str, float] = defaultdict(float)
        self.images = 0
        self.started = time.perf_counter()
        self.synchronize = _synchronizer(device)

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] += seconds

    @contextmanager
    def timed(self, stage: str):
        """Time a block; on CUDA the device's queued work is waited for at both ends, so
        that the time lands in the stage that caused it."""
        self.synchronize()
        start = time.perf_counter()
        try:
            yield
        finally:
            self.synchronize()
            self.seconds[stage] += time.perf_counter() - start

    def report(self) -> str:
        wall = time.perf_counter() - self.started
        rate = f", {self.images / wall:.2f} images/s" if wall > 0 else ""
        lines = [f"where the time went: {self.images} images in {wall:.3f} s{rate}"]
        lines.append("  decoding workers (CPU seconds, summed over workers)")
        for stage in WORKER_STAGES:
            per_image = 1000 * self.seconds[stage] / max(1, self.images)
            lines.append(f"    {stage:<22}{self.seconds[stage]:9.3f} s  {per_image:7.1f} ms/image")
        lines.append("  main process (wall seconds, share of the run)")
        accounted = 0.0
        for stage in MAIN_STAGES:
            accounted += self.seconds[stage]
            lines.append(
                f"    {stage:<22}{self.seconds[stage]:9.3f} s  {_share(self.seconds[stage], wall)}"
            )
        other = max(0.0, wall - accounted)
        lines.append(f"    {'other (start-up, ...)':<22}{other:9.3f} s  {_share(other, wall)}")
        waiting, compute = self.seconds["waiting for images"], self.seconds["backbone"]
        verdict = "decode-bound" if waiting > compute else "compute-bound"
        lines.append(
            f"  {verdict}: waited {waiting:.1f} s for decoded images, computed {compute:.1f} s "
            "in the backbones"
        )
        return "\n".join(lines)


def _share(seconds: float, wall: float) -> str:
    return f"{100 * seconds / wall:5.1f} %" if wall > 0 else "    -"


def _synchronizer(device: str):
    if str(device).startswith("cuda"):
        import torch

        return torch.cuda.synchronize
    return lambda: None
