"""--group auto: how well copies are found, and what it costs.

1. Precision and recall on copies made with clipdet's laundering operations from varied
   photo-like pictures (a smooth ground and five shapes; the tests' make_scene): resized,
   recompressed (JPEG, WebP), bordered, centre- and randomly cropped, chained; beside them
   the same scene with one object moved by 1-2 % of the width (an edit: not a copy), the
   scene with one more object (a bigger edit), another shot of the scene (the camera panned
   by 2 %, other sensor noise, with and without an object moved: a burst), and distinct
   pictures; then second shots panned 1-15 % among the source's copies. Perceptual hashes and
   thumbnails only (the rule's feature check needs a real backbone, which cannot be
   downloaded here).
2. Time and peak memory of the grouping pass (find_copies) on synthetic keys: groups of 1-20
   copies whose hashes differ by a few bits and whose thumbnails by two grey levels, with
   64-d sketches, at 10^4, 10^5 and 10^6 rows, each in a fresh process (peak resident memory
   from getrusage).

    python benchmarks/bench_copies.py [--sources 100] [--rows 10000,100000,1000000]
"""

import argparse
import collections
import itertools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import REPO, cpu_name

sys.path.insert(0, str(REPO / "tests"))

CHAINS = ("resize:0.5/bicubic", "jpeg:60", "webp:70", "resize:0.3,jpeg:50", "resize:0.25,jpeg:40",
          "resize:0.4,webp:60", "ccrop:0.9,jpeg:85", "ccrop:0.85,resize:1.2,jpeg:80",
          "crop:0.95,jpeg:80", "crop:0.9")  # fmt: skip


def quality(sources: int) -> list[list[str]]:
    """Prints how often each kind of copy or edit joins its source; returns the keys of each
    source and its copies (the source first), for second_shots."""
    from helpers import make_scene
    from PIL import Image, ImageDraw, ImageOps

    from clipdet.evaluation.copies import find_copies
    from clipdet.pipeline.extensions.copy_keys import perceptual_hashes
    from clipdet.pipeline.perturb import Perturbation

    rows = []  # (truth, kind, hashes)
    copies = []  # per source: its keys and its copies'
    with tempfile.TemporaryDirectory() as folder:
        for s in range(sources):
            image = Image.open(make_scene(Path(folder) / f"{s}.png", s)).convert("RGB")
            items = [("source", image)]
            items += [(c, Perturbation(c, 0)(image, s).image) for c in CHAINS]
            items.append(("border", ImageOps.expand(image, 16, (0, 0, 0))))
            for kind, picture in items:
                rows.append((s, kind, perceptual_hashes(np.asarray(picture))))
            copies.append([keys for _, _, keys in rows[-len(items) :]])
            for shift in (3, 6):  # the same scene with its top shape drawn shift px further
                edited = make_scene(Path(folder) / f"m{s}-{shift}.png", s, moved=shift)
                rows.append((-1 - s, f"edit: an object moved {shift} px",
                             perceptual_hashes(np.asarray(Image.open(edited)))))  # fmt: skip
            for pan, moved in ((6, 0), (6, 6)):  # another shot: the camera panned 2 %
                shot = make_scene(Path(folder) / f"b{s}-{moved}.png", s, moved=moved, pan=pan,
                                  noise_seed=50_000 + s)  # fmt: skip
                kind = "another shot: panned 6 px, new noise" + (", an object moved" * bool(moved))
                rows.append((-1 - s, kind, perceptual_hashes(np.asarray(Image.open(shot)))))
            added = image.copy()
            ImageDraw.Draw(added).ellipse([200, 40, 260, 100], fill=(240, 30, 30))
            rows.append((-1 - s, "edit: an object added", perceptual_hashes(np.asarray(added))))
            added = image.copy()
            ImageDraw.Draw(added).ellipse([220, 60, 250, 90], fill=(240, 30, 30))
            rows.append(
                (-1 - s, "edit: a small object added", perceptual_hashes(np.asarray(added)))
            )
            distinct = make_scene(Path(folder) / f"d{s}.png", 10_000 + s)
            rows.append(
                (20_000 + s, "distinct", perceptual_hashes(np.asarray(Image.open(distinct))))
            )
    labels = find_copies([r[2] for r in rows])
    source_label = {r[0]: labels[k] for k, r in enumerate(rows) if r[1] == "source"}
    joined = collections.defaultdict(list)
    sizes = collections.Counter(labels)
    for k, (truth, kind, _) in enumerate(rows):
        if kind == "distinct":  # alone, in a group of its own
            joined["distinct picture, in a group of its own"].append(sizes[labels[k]] == 1)
        elif kind != "source":
            joined[kind].append(labels[k] == source_label[truth if truth >= 0 else -1 - truth])
    tp = fp = fn = 0
    truth = [r[0] for r in rows]
    for a, b in itertools.combinations(range(len(rows)), 2):
        same, said = truth[a] == truth[b], labels[a] == labels[b]
        tp, fp, fn = tp + (same and said), fp + (said and not same), fn + (same and not said)
    print(f"{sources} sources, {len(rows)} images (perceptual hashes and thumbnails):")
    for kind, found in joined.items():
        what = "" if kind.startswith("distinct") else " joined with its source"
        print(f"  {kind + what:60s} {np.mean(found):6.1%}")
    print(f"  pairs: precision {tp / max(tp + fp, 1):.3f}, recall {tp / max(tp + fn, 1):.3f} "
          "(edits, second shots and distinct pictures count as not copies)")  # fmt: skip
    return copies


def second_shots(copies: list[list[str]], pans=(3, 6, 12, 24, 48)) -> None:
    """How far the camera must move before a second shot of a scene stays out of the group
    of its source and the source's copies (``copies``: quality's keys, per source)."""
    from helpers import make_scene
    from PIL import Image

    from clipdet.evaluation.copies import find_copies
    from clipdet.pipeline.extensions.copy_keys import perceptual_hashes

    shots = {pan: [] for pan in pans}
    with tempfile.TemporaryDirectory() as folder:
        for s in range(len(copies)):
            for pan in pans:
                shot = make_scene(
                    Path(folder) / f"{s}-{pan}.png", s, pan=pan, noise_seed=50_000 + s
                )
                shots[pan].append(perceptual_hashes(np.asarray(Image.open(shot))))
    print(
        "a second shot of the scene (camera panned, other sensor noise) among its source's copies:"
    )
    for pan, found in shots.items():
        rows, pairs = [], []
        for keys, shot in zip(copies, found, strict=True):
            pairs.append((len(rows), len(rows) + len(keys)))
            rows += [*keys, shot]
        labels = find_copies(rows)
        joined = np.mean([labels[a] == labels[b] for a, b in pairs])
        print(f"  panned {pan:2d} px ({pan / 320:4.0%} of the width): joined {joined:6.1%}")


def scale_child(rows: int) -> None:
    """In a fresh process: group ``rows`` synthetic rows; print seconds and peak memory."""
    import base64
    import resource

    from clipdet.evaluation.copies import find_copies

    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 21, rows)
    source = np.repeat(np.arange(rows), sizes)[:rows]
    base = rng.integers(0, 2**63, (rows, 3), dtype=np.int64).astype(np.uint64)[source]
    flips = rng.integers(0, 64, (rows, 3))  # one or two bits differ between copies
    base ^= np.left_shift(np.uint64(1), flips.astype(np.uint64)) * (rng.random((rows, 3)) < 0.5)
    fine = rng.integers(0, 2**63, (rows, 4), dtype=np.int64).astype(np.uint64)[source]
    # the three 8 x 8 colour thumbnails: a source's, give or take two grey levels per copy
    thumbs = rng.integers(2, 254, (rows, 576), dtype=np.int16)[source]
    thumbs = (thumbs + rng.integers(-2, 3, (rows, 576))).astype(np.uint8)
    hashes = [",".join(f"{v:016x}" for v in row) + "," + "".join(f"{v:016x}" for v in f) + ","
              + base64.b64encode(t.tobytes()).decode()
              for row, f, t in zip(base, fine, thumbs, strict=True)]  # fmt: skip
    del thumbs
    centre = rng.normal(size=(rows, 64)).astype(np.float32)[source]
    vectors = centre + 0.05 * rng.normal(size=(rows, 64)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    sketches = [base64.b64encode(v.astype(np.float16).tobytes()).decode() for v in vectors]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    labels = find_copies(hashes, sketches)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    truth_groups = len(np.unique(source))
    print(json.dumps({"rows": rows, "seconds": round(seconds, 1), "peak_mib": round(peak),
                      "keys_mib": round(before), "groups": int(len(set(labels))),
                      "true_groups": truth_groups}))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sources", type=int, default=100)
    parser.add_argument("--rows", default="10000,100000,1000000")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        scale_child(args.child)
        return
    print(f"CPU: {cpu_name()}")
    second_shots(quality(args.sources))
    for rows in (int(r) for r in args.rows.split(",") if r):
        out = subprocess.run([sys.executable, __file__, "--child", str(rows)], check=True,
                             capture_output=True, text=True)  # fmt: skip
        found = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{found['rows']:>9,} rows: {found['seconds']:7.1f} s, peak {found['peak_mib']:,} "
              f"MiB (keys alone {found['keys_mib']:,} MiB), {found['groups']:,} groups found of "
              f"{found['true_groups']:,}")  # fmt: skip


if __name__ == "__main__":
    main()
