"""Held-out-generator protocol for open-set attribution: one labelled list split into train,
validation and test lists, in which the chosen generators appear only in test."""

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from clipdet.constants import FILENAME_COLUMN, TYPE_COLUMN
from clipdet.files import read_list, write_csv_atomic

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
MIN_TRAIN_IMAGES = 2


def split_open_set(
    in_csv: str | os.PathLike,
    out_dir: str | os.PathLike,
    unknown: list[str] = (),
    val: float = 0.2,
    test: float = 0.2,
    seed: int = 0,
) -> pd.DataFrame:
    """Write ``train.csv``, ``val.csv`` and ``test.csv`` into ``out_dir``.

    Images of each known typ are shuffled with ``seed`` and split by the ``val`` and ``test``
    shares (at least 2 stay in train); every image of an ``unknown`` typ goes to test.
    Filenames are rewritten relative to ``out_dir``, so the lists work from there; other
    columns are kept. Returns the images per typ and split."""
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise ValueError(f"val and test shares must be in [0, 1) with a sum < 1, got {val}, {test}")
    out_dir = Path(out_dir)
    table, paths = read_list(in_csv)
    if TYPE_COLUMN not in table.columns:
        raise ValueError(f"{in_csv} has no {TYPE_COLUMN!r} column")
    table[TYPE_COLUMN] = table[TYPE_COLUMN].str.strip()
    present = set(table[TYPE_COLUMN])
    absent = sorted(set(unknown) - present)
    if absent:
        raise ValueError(
            f"--unknown typs not in {in_csv}: {', '.join(absent)}; typs there: "
            + ", ".join(sorted(present))
        )
    known = sorted(present - set(unknown))
    if len(known) < 2:
        raise ValueError(f"at least 2 known typs are needed for training, got {known}")
    rng = np.random.default_rng(seed)
    split = pd.Series("test", index=table.index, name="split")
    for typ in known:
        rows = table.index[table[TYPE_COLUMN] == typ].to_numpy()
        n = len(rows)
        if n < MIN_TRAIN_IMAGES:
            raise ValueError(f"typ {typ!r} has {n} image(s): at least {MIN_TRAIN_IMAGES} needed")
        n_test = min(round(n * test), n - MIN_TRAIN_IMAGES)
        n_val = min(round(n * val), n - MIN_TRAIN_IMAGES - n_test)
        order = rng.permutation(rows)
        split[order[n_test : n_test + n_val]] = "val"
        split[order[n_test + n_val :]] = "train"
    out_dir.mkdir(parents=True, exist_ok=True)
    relocated = table.copy()
    relocated[FILENAME_COLUMN] = [os.path.relpath(path, out_dir.resolve()) for path in paths]
    for name in SPLITS:
        write_csv_atomic(out_dir / f"{name}.csv", relocated[split == name])
    counts = pd.crosstab(table[TYPE_COLUMN], split).reindex(columns=list(SPLITS), fill_value=0)
    logger.info("images per typ and split:\n%s", counts.to_string())
    return counts
