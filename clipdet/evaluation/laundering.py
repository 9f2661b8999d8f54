"""Writing laundered copies of a labelled image list (see perturb.py for the operations)."""

import json
import logging
import os
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from clipdet.constants import ERROR_COLUMN, FILENAME_COLUMN, TYPE_COLUMN
from clipdet.files import read_list, write_csv_atomic
from clipdet.pipeline.images import describe_error, load_rgb
from clipdet.pipeline.perturb import Perturbation

logger = logging.getLogger(__name__)

LIST_NAME = "list.csv"
FAILED_NAME = "failed.csv"


def launder_list(
    in_csv: str | os.PathLike,
    out_dir: str | os.PathLike,
    spec: str,
    seed: int = 0,
    progress: bool = False,
) -> Path:
    """Write a perturbed copy of every image of ``in_csv`` under ``out_dir`` and
    ``out_dir/list.csv`` with the same ``typ``, the new ``filename``, the source file, the
    chain and the parameters drawn for each image (JSON). Images that cannot be read are
    listed with their error in ``failed.csv`` instead. Returns the new list's path."""
    perturbation = Perturbation(spec, seed)
    source, paths = read_list(in_csv)
    filenames = source[FILENAME_COLUMN].tolist()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for index, (name, path) in enumerate(
        tqdm(list(zip(filenames, paths, strict=True)), disable=not progress, unit="img")
    ):
        row = {
            FILENAME_COLUMN: "",
            TYPE_COLUMN: source[TYPE_COLUMN].iloc[index] if TYPE_COLUMN in source else "",
            "source": name,
            "ops": perturbation.spec,
            "seed": seed,
            "params": "",
            ERROR_COLUMN: "",
        }
        try:
            result = perturbation(load_rgb(path), index)
            stem = f"{index:06d}_{Path(name).stem}"
            if result.encoded_jpeg is not None:
                target = out_dir / f"{stem}.jpg"
                target.write_bytes(result.encoded_jpeg)
            else:
                target = out_dir / f"{stem}.png"
                result.image.save(target)
            row[FILENAME_COLUMN] = target.name
            row["params"] = json.dumps(result.record)
        except Exception as e:  # a bad image is recorded, the rest go on
            row[ERROR_COLUMN] = describe_error(e)
            logger.warning("%s: %s", name, row[ERROR_COLUMN])
        rows.append(row)
    table = pd.DataFrame(rows)
    failed = table[table[ERROR_COLUMN] != ""]
    if len(failed):  # kept out of the list so that they do not poison the metrics
        write_csv_atomic(out_dir / FAILED_NAME, failed)
        logger.warning(
            "%d images could not be laundered: see %s", len(failed), out_dir / FAILED_NAME
        )
    return write_csv_atomic(
        out_dir / LIST_NAME, table[table[ERROR_COLUMN] == ""].drop(columns=ERROR_COLUMN)
    )
