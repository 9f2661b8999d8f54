"""main.py --profile: where the time went, stage by stage, adding up to the run."""

import re

from helpers import local_run_args

import main as cli


def test_profile_accounts_for_the_run(
    tmp_path, image_dir, weights_dir, tiny_clip_checkpoint, capsys
):
    (image_dir / "broken.png").write_text("not an image")
    argv = [str(image_dir), "-o", str(tmp_path / "s.csv"), "--profile", "--batch_size", "2"]
    assert (
        cli.main([*argv, *local_run_args(tiny_clip_checkpoint, weights_dir, "tiny_a,res_tiny")])
        == 0
    )
    err = capsys.readouterr().err
    header = re.search(r"where the time went: (\d+) images in ([\d.]+) s", err)
    assert header and int(header.group(1)) == 6
    seconds = {
        m.group(1).strip(): float(m.group(2))
        for m in re.finditer(r"^    (\S[^\d]*?)\s+([\d.]+) s", err, re.M)
    }
    stages = ["read+decode", "preprocess", "waiting for images", "host->device copy",
              "device decode", "backbone", "heads", "writing", "other (start-up, ...)"]  # fmt: skip
    assert list(seconds) == stages
    assert seconds["read+decode"] > 0 and seconds["backbone"] > 0
    main_stages = sum(seconds[s] for s in stages[2:])
    # the shares add up to the run, within what rounding to the printed digits can move them
    # (half a unit in the last place of each of the 8 figures)
    decimals = len(header.group(2).partition(".")[2])
    assert decimals >= 2
    assert abs(main_stages - float(header.group(2))) <= 8 * 0.5 * 10**-decimals + 1e-9
    shares = [float(s) for s in re.findall(r"([\d.]+) %", err)]
    assert len(shares) == 7 and abs(sum(shares) - 100) < 0.5
    assert re.search(r"(compute|decode)-bound: waited [\d.]+ s", err)
