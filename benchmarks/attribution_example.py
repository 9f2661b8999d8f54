"""The README's attribution example, end to end through the command-line front ends: generated
images whose classes differ in colour, blur, noise and texture (tests/test_attribution.py), a
tiny random-weight ViT (tests/helpers.py), split.py -> train.py (energy and msp rules) ->
main.py -> compute_metrics.py --task attribution. It shows the protocol and its tables, not
accuracy on real generators.

    python benchmarks/attribution_example.py [--work /tmp/clipdet-attribution]
"""

import argparse
import json
import sys
from pathlib import Path

import open_clip
import torch
from common import REPO

sys.path.insert(0, str(REPO / "tests"))

from helpers import TINY_BACKBONE, TINY_CONFIG, TINY_MODEL  # noqa: E402
from test_attribution import HELD_OUT, KNOWN, write_list  # noqa: E402

import compute_metrics  # noqa: E402
import main as main_cli  # noqa: E402
import split  # noqa: E402
import train  # noqa: E402
from clipdet.models.registry import register_backbone  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--work", type=Path, default=Path("/tmp/clipdet-attribution"))
    work = p.parse_args().work
    work.mkdir(parents=True, exist_ok=True)
    config = work / f"{TINY_MODEL}.json"
    config.write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(config)
    register_backbone(TINY_BACKBONE, TINY_MODEL)
    torch.manual_seed(0)
    checkpoint = work / "tiny_vit.bin"
    torch.save(open_clip.create_model(TINY_MODEL).state_dict(), checkpoint)
    common = ["--backbone_weights", str(checkpoint), "-d", "cpu", "-q"]

    all_csv = write_list(work, "all", {**dict.fromkeys(KNOWN, 20), HELD_OUT: 10}, 0)
    split.main(["-i", str(all_csv), "-o", str(work / "splits"), "--unknown", HELD_OUT])
    splits = work / "splits"
    for rule in ("energy", "msp"):
        train.main(
            [
                "--task",
                "attribution",
                "-i",
                str(splits / "train.csv"),
                "--val_csv",
                str(splits / "val.csv"),
                "-w",
                str(work / "weights"),
                "-n",
                rule,
                "--arch",
                f"opencliplinearnext_{TINY_BACKBONE}",
                "--unknown_score",
                rule,
                *common,
            ]
        )
    scores = work / "scores.csv"
    main_cli.main(
        ["-i", str(splits / "test.csv"), "-o", str(scores), "-w", str(work / "weights")]
        + ["-m", "energy,msp", *common]
    )
    compute_metrics.main(
        ["--task", "attribution", "-i", str(splits / "test.csv"), "-o", str(scores)]
        + ["--unknown", HELD_OUT, "--plot", str(work / "plots")]
        + ["--save_tab", str(work / "attribution.md"), "--format", "md"]
    )
    print((work / "attribution.md").read_text())


if __name__ == "__main__":
    main()
