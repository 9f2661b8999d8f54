"""The paper's datasets in one command: verified archives, unpacked, with a list CSV.

Recipes: ``synthbuster`` (Synthbuster + RAISE-1k: the layout of data/commercial_tools.csv),
``grip_test`` (4,000 real + 20,000 synthetic images of 20 generators), ``grip_train`` (the LDM
training images) and ``synthwildx`` (2,000 in-the-wild images fetched from their URLs).
"""

import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from clipdet.constants import FILENAME_COLUMN, REAL, TYPE_COLUMN
from clipdet.download import DownloadError, fetch, make_session, safe_extract

logger = logging.getLogger(__name__)

# The source tree's data/ (it ships the lists); an installed clipdet uses ./data.
_SOURCE_DATA = Path(__file__).resolve().parent.parent / "data"
DATA_DIR = _SOURCE_DATA if (_SOURCE_DATA / "download.py").is_file() else Path("data")
GRIP_AREA = "https://www.grip.unina.it/download/prog/DMimageDetection/"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp"}
# Folder keys of the GRIP sets that hold real images (their README's tables).
GRIP_REAL_KEYS = {"coco_valid", "ffhq", "imagenet_valid", "lsun", "coco", "real"}
# grip_train's real half: the COCO train2017 images whose ids the LDM file names carry.
COCO_TRAIN_URL = "http://images.cocodataset.org/train2017/"
COCO_REAL_FOLDER = "train_set/real_coco"


@dataclass(frozen=True)
class Archive:
    filename: str
    url: str
    checksum: str
    unpack_into: str = "."  # relative to the destination folder


@dataclass(frozen=True)
class Recipe:
    name: str
    archives: tuple[Archive, ...]
    list_name: str
    note: str
    shipped_list: str | None = None  # a list in data/ whose files the archives must give
    folder_keys: str | None = None  # else: list built from this unpacked folder's subfolders


RECIPES = {
    "synthbuster": Recipe(
        "synthbuster",
        (
            Archive(
                "synthbuster.zip",
                "https://zenodo.org/records/10066460/files/synthbuster.zip?download=1",
                "md5:0695bd328e16ea21c5c9cc2ae1d994ff",
            ),
            Archive(
                "real_RAISE_1k.zip",
                GRIP_AREA + "real_RAISE_1k.zip",
                "md5:a6aad7728226218f22a28b9c9aacaa2c",
                "synthbuster",
            ),
        ),
        "commercial_tools.csv",
        "Synthbuster (Bammey, IEEE OJSP 2023) and RAISE (Dang-Nguyen et al., ACM MMSys 2015) "
        "are for non-commercial research use: cite both.",
        shipped_list="commercial_tools.csv",
    ),
    "grip_test": Recipe(
        "grip_test",
        (
            Archive(
                "test_set.zip", GRIP_AREA + "test_set.zip", "md5:4a61d5185acc034e2a9884ccc3ff4e09"
            ),
        ),
        "grip_test.csv",
        "GRIP test set (Cozzolino et al., CVPRW 2024): research use; cite the paper.",
        folder_keys="test_set",
    ),
    "grip_train": Recipe(
        "grip_train",
        (
            Archive(
                "train_set.zip", GRIP_AREA + "train_set.zip", "md5:20febd0ca0a4ddb22848a0961b5c6c59"
            ),
        ),
        "grip_train.csv",
        "GRIP training set (Cozzolino et al., CVPRW 2024): the 10,000 LDM images; its real half "
        "is COCO train2017 (Lin et al., ECCV 2014; CC BY 4.0 annotations, images under their "
        "Flickr terms) picked by the image ids in the LDM file names.",
        folder_keys="train_set",
    ),
}
SYNTHWILDX = "synthwildx"
DATASETS = (*RECIPES, SYNTHWILDX)


def download_dataset(
    name: str,
    dest: str | os.PathLike = DATA_DIR,
    *,
    mirror: str | None = None,
    url_list: str | os.PathLike | None = None,
    coco: str | os.PathLike | None = None,
    delay: float = 0.5,
    timeout: float = 30.0,
    progress: bool = True,
) -> Path:
    """Fetch, verify and unpack dataset ``name`` into ``dest``; returns its list CSV.
    ``mirror`` replaces the archives' host (a base URL serving the same file names).
    ``coco`` (grip_train): a local COCO train2017 folder, or a base URL, to take the real half
    from (default: images.cocodataset.org, one image per ``delay`` seconds)."""
    if name == SYNTHWILDX:
        url_list = url_list or DATA_DIR / "synthwildx.csv"
        return download_synthwildx(dest, url_list, delay, timeout, progress)
    if name not in RECIPES:
        raise ValueError(f"unknown dataset {name!r}; valid choices: {', '.join(DATASETS)}")
    recipe = RECIPES[name]
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    session = make_session()
    for archive in recipe.archives:
        url = f"{mirror.rstrip('/')}/{archive.filename}" if mirror else archive.url
        path = fetch(url, dest / archive.filename, archive.checksum, session=session,
                     progress=progress)  # fmt: skip
        written = safe_extract(path, dest / archive.unpack_into)
        logger.info("%s: %d files unpacked into %s", archive.filename, written, dest)
    if recipe.shipped_list:
        return _check_list(DATA_DIR / recipe.shipped_list, dest, dest / recipe.list_name)
    out = _list_from_folder_keys(dest, recipe.folder_keys, dest / recipe.list_name)
    if name == "grip_train":
        _add_coco_real_half(out, dest, coco or COCO_TRAIN_URL, delay, timeout)
    return out


def _check_list(shipped: Path, dest: Path, out: Path) -> Path:
    """Copy the shipped list beside the images (if elsewhere) and check every file is there."""
    table = pd.read_csv(shipped, keep_default_na=False)
    missing = [f for f in table[FILENAME_COLUMN] if not (dest / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of {len(table)} files of {shipped.name} are missing under {dest} "
            f"after unpacking, e.g. {missing[0]}"
        )
    if out.resolve() != shipped.resolve():
        shutil.copyfile(shipped, out)
    return out


def _list_from_folder_keys(dest: Path, folder: str, out: Path) -> Path:
    """``filename,typ``: typ is the first folder below ``folder`` (real keys become 'real')."""
    root = dest / folder
    if not root.is_dir():
        raise FileNotFoundError(f"unpacking gave no folder {root}")
    rows = []
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        key = path.relative_to(root).parts[0]
        typ = REAL if key in GRIP_REAL_KEYS else key
        rows.append((path.relative_to(dest).as_posix(), typ))
    if not rows:
        raise FileNotFoundError(f"no image found under {root}")
    pd.DataFrame(rows, columns=[FILENAME_COLUMN, TYPE_COLUMN]).to_csv(out, index=False)
    return out


def coco_id(filename: str) -> int | None:
    """The COCO image id an LDM training image is named after: the last digit run of its stem."""
    digits = re.findall(r"\d+", Path(filename).stem)
    return int(digits[-1]) if digits else None


def _add_coco_real_half(out: Path, dest: Path, coco, delay: float, timeout: float) -> None:
    """Put the COCO train2017 images whose ids the synthetic files carry under
    ``COCO_REAL_FOLDER`` (copied from a local folder, or fetched from a base URL) and append
    those present to the list as ``real``."""
    table = pd.read_csv(out, keep_default_na=False)
    table = table[~table[FILENAME_COLUMN].str.startswith(COCO_REAL_FOLDER + "/")]
    synthetic = table.loc[table[TYPE_COLUMN] != REAL, FILENAME_COLUMN]
    ids = sorted({i for i in map(coco_id, synthetic) if i is not None})
    if not ids:
        raise ValueError(f"no COCO image id in the file names of {out}; cannot pick the real half")
    folder = dest / COCO_REAL_FOLDER
    names = [f"{i:012d}.jpg" for i in ids]  # COCO's own naming
    if Path(str(coco)).is_dir():
        for name in names:
            source, target = Path(coco) / name, folder / name
            if source.is_file() and not target.is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)
    else:
        base = str(coco).rstrip("/") + "/"
        fetch_each([(base + n, folder / n) for n in names], delay, timeout, "COCO train2017")
    present = [f"{COCO_REAL_FOLDER}/{n}" for n in names if (folder / n).is_file()]
    real = pd.DataFrame({FILENAME_COLUMN: present, TYPE_COLUMN: REAL})
    pd.concat([table, real], ignore_index=True).to_csv(out, index=False)
    logger.warning("grip_train: %d of %d real COCO images present", len(present), len(names))


def fetch_each(
    items: list[tuple[str, Path]], delay: float, timeout: float, what: str
) -> tuple[int, list[tuple[str, str]]]:
    """Fetch each (url, target) whose target is not there yet, at most one request per
    ``delay`` seconds; a dead link is counted and reported, never fatal. Returns (fetched,
    [(url, error)])."""
    session = make_session(retries=2, backoff=delay)
    dead, fetched, last = [], 0, 0.0
    for url, target in items:
        if target.is_file():
            continue
        time.sleep(max(0.0, last + delay - time.monotonic()))
        last = time.monotonic()
        try:
            fetch(url, target, session=session, timeout=timeout, progress=False)
            fetched += 1
        except DownloadError as e:
            dead.append((url, str(e)))
            logger.warning("dead link: %s", e)
    logger.warning("%s: %d fetched, %d dead links", what, fetched, len(dead))
    return fetched, dead


def download_synthwildx(
    dest: str | os.PathLike,
    url_list: str | os.PathLike,
    delay: float = 0.5,
    timeout: float = 30.0,
    progress: bool = True,
) -> Path:
    """Fetch each image of ``url_list`` (``url,filename,typ``) that is not there yet, at most
    one request per ``delay`` seconds; a dead link is reported and counted, never fatal. The
    list of the images present is written as ``<dest>/synthwildx.csv``."""
    dest = Path(dest)
    folder = dest / SYNTHWILDX
    table = pd.read_csv(url_list, keep_default_na=False)
    items = [(row.url, folder / row.filename) for row in table.itertuples(index=False)]
    fetched, dead = fetch_each(items, delay, timeout, SYNTHWILDX)
    present = table[[(folder / f).is_file() for f in table[FILENAME_COLUMN]]]
    out = dest / f"{SYNTHWILDX}.csv"
    listed = present.assign(filename=[f"{SYNTHWILDX}/{f}" for f in present[FILENAME_COLUMN]])
    listed[[FILENAME_COLUMN, TYPE_COLUMN]].to_csv(out, index=False)
    logger.warning(
        "synthwildx: %d fetched, %d already there, %d dead links; %d of %d images listed in %s",
        fetched, len(present) - fetched, len(dead), len(present), len(table), out,
    )  # fmt: skip
    return out
