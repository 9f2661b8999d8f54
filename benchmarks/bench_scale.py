"""The streamed Ray route at scale: driver peak RSS and rows/s for lists of 10^5 .. 10^7 rows,
against the local engine on the same list (up to --local_max rows).

    python benchmarks/bench_scale.py [--rows 100000,1000000,10000000] [--local_max 1000000]

The rows are mostly missing files plus a few tiny images, scored by a tiny random-weight ViT
(the tests' model), so the pipeline — reading the list, the stages, writing Parquet parts — is
measured, not a model. Lists are Parquet shards of 100,000 rows. Each run is a fresh process;
its peak RSS is the driver's own (Ray's workers are other processes).
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from common import REPO, bench_parser, cpu_name, peak_rss_mb

TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "patch_size": 32, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 100, "width": 32, "heads": 2, "layers": 1},
}
SHARD_ROWS = 100_000


def setup(work: Path) -> Path:
    """The tiny ViT's checkpoint and a head on it, under ``work``."""
    import open_clip
    import torch
    import yaml

    work.mkdir(parents=True, exist_ok=True)
    (work / "tiny.json").write_text(json.dumps(TINY))
    if not (work / "tiny.bin").exists():
        open_clip.add_model_config(work / "tiny.json")
        torch.manual_seed(0)
        torch.save(open_clip.create_model("tiny").state_dict(), work / "tiny.bin")
    head = work / "weights" / "tiny_head"
    head.mkdir(parents=True, exist_ok=True)
    torch.save({"model": {"fc.weight": torch.randn(1, 64), "fc.bias": torch.zeros(1)}},
               head / "weights.pth")  # fmt: skip
    (head / "config.yaml").write_text(yaml.safe_dump({
        "arch": "opencliplinearnext_tinyvit", "model_name": "tiny_head", "norm_type": "clip",
        "patch_size": "Clip224", "weights_file": "weights.pth",
    }))  # fmt: skip
    return work


def make_list(work: Path, rows: int) -> Path:
    """Parquet shards of ``rows`` names: missing files, and 8 real images in the first shard."""
    from PIL import Image

    folder = work / f"list_{rows}"
    if (folder / "done").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    (work / "img").mkdir(exist_ok=True)
    for i in range(8):
        Image.new("RGB", (64 + 8 * i, 48), (30 * i, 90, 160)).save(work / "img" / f"{i}.png")
    for start in range(0, rows, SHARD_ROWS):
        names = [f"../missing/{i}.png" for i in range(start, min(rows, start + SHARD_ROWS))]
        if start == 0:
            names[: min(8, len(names))] = [f"../img/{i}.png" for i in range(min(8, len(names)))]
        pd.DataFrame({"filename": names}).to_parquet(folder / f"part-{start:09d}.parquet")
    (folder / "done").write_text("")
    return folder


def child(work: Path, rows: int, engine: str, batch: int) -> None:
    """One run in this process, the tiny backbone registered first; prints a JSON line."""
    import open_clip

    sys.path.insert(0, str(REPO))
    from clipdet.cli.score import main
    from clipdet.models.registry import register_backbone

    open_clip.add_model_config(work / "tiny.json")
    register_backbone("tinyvit", "tiny")
    listed = make_list(work, rows)
    common = ["-w", str(work / "weights"), "-m", "tiny_head", "--backbone_weights",
              str(work / "tiny.bin"), "-d", "cpu", "--batch_size", str(batch), "-q"]  # fmt: skip
    out = work / f"out_{engine}_{rows}"
    subprocess.run(["rm", "-rf", str(out), f"{out}.parquet"], check=False)
    if engine == "ray":
        argv = ["-i", str(listed), "-o", f"{out}/", "--engine", "ray", *common]
    else:  # the local engine reads one list and writes one file
        single = work / f"list_{rows}.csv"  # the local engine reads a CSV list
        if not single.exists():
            parts = sorted(listed.glob("*.parquet"))
            table = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
            table["filename"] = table["filename"].str.replace("../", f"{listed}/../", regex=False)
            table.to_csv(single, index=False)
        argv = ["-i", str(single), "-o", f"{out}.parquet", "--num_workers", "2", *common]
    started = time.perf_counter()
    code = main(argv)
    seconds = time.perf_counter() - started
    peak = peak_rss_mb()
    print(json.dumps({"rows": rows, "engine": engine, "code": code, "seconds": seconds,
                      "peak_rss_mb": peak}))  # fmt: skip


def main() -> None:
    p = bench_parser(__doc__)
    p.add_argument("--rows", default="100000,1000000,10000000")
    p.add_argument("--local_max", type=int, default=1_000_000)
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--child", nargs=2, metavar=("ROWS", "ENGINE"), default=None)
    args = p.parse_args()
    work = args.work / "scale"
    if args.child:
        return child(work, int(args.child[0]), args.child[1], args.batch_size)
    setup(work)
    machine = f"{os.cpu_count()} CPUs ({cpu_name()})"
    print(f"# {machine}; batch {args.batch_size}; shards of {SHARD_ROWS} rows")
    print("| rows | engine | seconds | rows/s | driver peak RSS MB |")
    print("|---:|---|---:|---:|---:|")
    for rows in [int(r) for r in args.rows.split(",")]:
        for engine in ("ray", "local"):
            if engine == "local" and rows > args.local_max:
                continue
            command = [sys.executable, __file__, "--work", str(args.work), "--batch_size",
                       str(args.batch_size), "--child", str(rows), engine]  # fmt: skip
            out = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
            lines = [x for x in out.stdout.splitlines() if x.startswith("{")]
            if not lines or json.loads(lines[-1])["code"] not in (0, 1):
                print(f"| {rows} | {engine} | failed: {out.stderr[-300:]!r} | | |")
                continue
            r = json.loads(lines[-1])
            print(f"| {rows:,} | {engine} | {r['seconds']:.1f} | {rows / r['seconds']:,.0f} | "
                  f"{r['peak_rss_mb']:.0f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
