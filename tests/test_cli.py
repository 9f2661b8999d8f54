"""The `clipdet` command: subcommands equal to the scripts, shared options declared once, instant
help, the program's own name in the commands it shows, and a real `pip install .`."""

import dataclasses
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pandas as pd
import pytest
from helpers import REPO, local_run_args, make_image, tiny_backbone_code

import main as main_script
from clipdet import __version__
from clipdet.cli import COMMANDS, build_parser
from clipdet.cli import main as clipdet
from clipdet.cli.models import DOWNLOADED, MISSING, ON_FIRST_USE, model_table
from clipdet.cli.options import SCRIPTS, shown_command
from clipdet.cli.score import add_parser as score_parser
from clipdet.options import RunOptions
from clipdet.pipeline.routes import EngineOptions

HEAVY = ("torch", "open_clip", "pandas", "numpy", "sklearn", "ray")


def test_help_of_every_command_imports_nothing_heavy():
    """`--help` answers at once: no command imports torch, pandas or numpy to build its
    parser."""
    names = [c.__name__.rsplit(".", 1)[-1] for c in COMMANDS]
    probe = (
        "import sys, contextlib, io\n"
        "from clipdet.cli import main\n"
        f"for argv in [['--help'], *[[n, '--help'] for n in {names!r}]]:\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        try: main(argv)\n"
        "        except SystemExit: pass\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True,
                         text=True, check=True)  # fmt: skip
    assert out.stdout.strip() == ""


def test_version_and_the_list_of_commands(capsys):
    with pytest.raises(SystemExit) as stop:
        clipdet(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"clipdet {__version__}"
    with pytest.raises(SystemExit):
        clipdet(["--help"])
    listed = capsys.readouterr().out
    for name in SCRIPTS:
        assert name in listed
    assert "models" in listed
    with pytest.raises(SystemExit) as stop:
        clipdet([])  # a command is required
    assert stop.value.code == 2


def test_every_run_option_and_engine_option_has_a_flag():
    """The options a scoring run resolves are all settable from `clipdet score`, under their
    own names (no field silently left at its default)."""
    args = build_parser().parse_args(["score", "x.png"])
    given = vars(args)
    missing = [f.name for f in dataclasses.fields(RunOptions) if f.name not in given]
    assert missing == ["progress", "copy_keys"]  # set by --quiet, and by --group auto
    assert not [f.name for f in dataclasses.fields(EngineOptions) if f.name not in given]
    args = build_parser().parse_args(
        ["score", "x.png", "--precision", "bf16", "--decode", "fast", "--tile_size", "64",
         "--engine", "ray", "--workers", "3", "--block_rows", "7", "-q"]
    )  # fmt: skip
    options, engine = RunOptions.from_args(args), EngineOptions.from_args(args)
    assert (options.precision, options.decode, options.tile_size) == ("bf16", "fast", 64)
    assert options.progress is False
    assert (engine.engine, engine.workers, engine.block_rows) == ("ray", 3, 7)


def test_train_and_reproduce_share_the_compute_flags():
    train = build_parser().parse_args(["train", "-i", "t.csv", "-n", "m", "-d", "cpu"])
    reproduce = build_parser().parse_args(["reproduce", "-d", "cpu", "--feature_cache", "c"])
    for args in (train, reproduce):
        assert {"device", "batch_size", "num_workers", "backbone_weights", "feature_cache"} <= set(
            vars(args)
        )
    assert train.device == reproduce.device == "cpu" and reproduce.feature_cache == "c"


def test_shown_commands_name_the_program_that_was_run():
    via_clipdet = build_parser().parse_args(["score", "a.png"])
    via_script = score_parser().parse_args(["a.png"])  # the parser main.py uses
    argv = ["-i", "my list.csv", "--resume"]
    assert shown_command(via_clipdet, argv) == "clipdet score -i 'my list.csv' --resume"
    assert shown_command(via_script, argv) == "python main.py -i 'my list.csv' --resume"
    assert shown_command(via_clipdet, ["synthbuster"], "download") == (
        "clipdet download synthbuster"
    )
    assert shown_command(via_script, ["synthbuster"], "download") == (
        "python data/download.py synthbuster"
    )


def test_clipdet_score_writes_what_main_py_writes(
    tmp_path, image_dir, weights_dir, tiny_clip_checkpoint, capsys
):
    common = [str(image_dir), *local_run_args(tiny_clip_checkpoint, weights_dir, "tiny_a,tiny_b")]
    assert main_script.main([*common, "-o", str(tmp_path / "script.csv")]) == 0
    assert clipdet(["score", *common, "-o", str(tmp_path / "command.csv")]) == 0
    script = (tmp_path / "script.csv").read_bytes()
    assert script == (tmp_path / "command.csv").read_bytes()
    table = pd.read_csv(tmp_path / "script.csv")
    assert list(table.columns) == ["filename", "tiny_a", "tiny_b", "fusion", "error"]
    assert len(table) == 5 and table["tiny_a"].notna().all()


def test_models_lists_known_and_local_models_with_their_state(tmp_path, capsys):
    from helpers import clip_config, clip_head_state, write_model_folder

    write_model_folder(tmp_path, "mine", clip_config("mine"), clip_head_state(1))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.yaml").write_text(
        "arch: res50nodown\nnorm_type: resnet\npatch_size: null\nweights_file: w.pth\n"
    )
    (tmp_path / "Corvi2023").mkdir()
    (tmp_path / "Corvi2023" / "weights.pth").write_bytes(b"x")
    rows = {row["name"]: row for row in model_table(tmp_path)}
    assert rows["mine"]["state"] == DOWNLOADED and rows["mine"]["source"] == "local"
    assert rows["broken"]["state"] == MISSING and rows["broken"]["arch"] == "res50nodown"
    assert rows["Corvi2023"]["state"] == DOWNLOADED and rows["Corvi2023"]["source"] == "known"
    assert rows["clipdet_latent10k"]["state"] == ON_FIRST_USE
    assert clipdet(["models", "-w", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["name", "arch", "task", "source", "state"]
    assert any(line.startswith("broken ") and line.endswith(MISSING) for line in out)
    assert any(line.startswith("BFREE_dino2reg4: ") and "nonprofit" in line for line in out)
    assert not any(line.startswith("Corvi2023: ") for line in out)  # Apache-2.0: no notice


@pytest.mark.slow
def test_pip_install_gives_a_clipdet_command_equal_to_main_py(
    tmp_path, image_dir, weights_dir, tiny_clip_checkpoint
):
    """`pip install .` (offline: no build isolation, no dependencies) puts `clipdet` on the
    PATH; run from another folder it imports the installed package, not the source tree, and
    writes the same scores as main.py."""
    source = tmp_path / "source"  # a copy: the build writes build/ and *.egg-info into it
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    for name in ("clipdet", "networks", "configs"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    prefix = tmp_path / "prefix"
    installed_before = _installed_clipdet()
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--ignore-installed", "--prefix", str(prefix), str(source)],
        check=True, capture_output=True, cwd=tmp_path,
    )  # fmt: skip
    command = prefix / "bin" / "clipdet"
    assert command.is_file()
    assert _installed_clipdet() == installed_before  # the running environment's copy untouched
    site = sysconfig.get_path("purelib", vars={"base": str(prefix), "platbase": str(prefix)})
    env = {**os.environ, "PYTHONPATH": site}
    version = subprocess.run([sys.executable, str(command), "--version"], env=env, cwd=tmp_path,
                             capture_output=True, text=True, check=True)  # fmt: skip
    assert version.stdout.strip() == f"clipdet {__version__}"

    make_image(image_dir / "sub" / "deep.png", seed=9)
    args = [str(image_dir), *local_run_args(tiny_clip_checkpoint, weights_dir, "tiny_a")]
    assert main_script.main([*args, "-o", str(tmp_path / "script.csv")]) == 0
    launcher = (  # the tiny backbone registered, then the installed command
        f"import runpy, sys, clipdet; {tiny_backbone_code(tiny_clip_checkpoint)}; "
        "print(clipdet.__file__); "
        "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    out = tmp_path / "command.csv"
    run = subprocess.run(
        [sys.executable, "-c", launcher, str(command), "score", *args, "-o", str(out)],
        env=env, cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert Path(run.stdout.splitlines()[0]).is_relative_to(prefix)  # the installed package
    assert out.read_bytes() == (tmp_path / "script.csv").read_bytes()
    assert len(pd.read_csv(out)) == 6


def _installed_clipdet() -> list[str]:
    """Where clipdet is installed in this environment (an editable install, or none)."""
    from importlib import metadata

    found = [d for d in metadata.distributions() if d.metadata["Name"] == "clipdet"]
    return sorted(str(d.locate_file("")) + ":" + (d.read_text("RECORD") or "") for d in found)
