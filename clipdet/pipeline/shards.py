"""Input shards of a streamed run (``ray_stream``): list files (.csv/.parquet; a file, a folder
or a glob, local or at a URL) or WebDataset tars (brace patterns, globs), and the read stage
that turns a shard into rows: (row id, file name, path or image bytes, error), the shard's row
count on its last row. A row's id is its shard and its row there: ``shard << ROW_BITS | row``.
"""

import posixpath
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from clipdet import storage
from clipdet.constants import FILENAME_COLUMN
from clipdet.pipeline.video_sampling import VIDEO_EXTENSIONS

ROW_BITS = 32  # a result's index: shard << ROW_BITS | row
LIST_SUFFIXES = (".csv", ".parquet")
IMAGE_SUFFIXES = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")
VIDEO_SUFFIXES = tuple(e.lstrip(".") for e in VIDEO_EXTENSIONS)  # a sample's video: one row
READ_ROWS = 256  # rows a read task hands on at a time
END_OF_SHARD = "end of shard"  # the error of a marker row carrying only a shard's total


@dataclass(frozen=True)
class Shard:
    index: int
    location: str
    kind: str  # "list" or "wds"


def expand_braces(pattern: str) -> list[str]:
    """``shards/{00000..00002}.tar`` -> three names (zero padding kept); ``{a,b}`` lists too."""
    match = re.search(r"\{([^{}]*)\}", pattern)
    if match is None:
        return [pattern]
    body, head, tail = match[1], pattern[: match.start()], pattern[match.end() :]
    numbers = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if numbers:
        first, last = numbers[1], numbers[2]
        width = len(first) if first.startswith("0") else 0
        values = [str(n).zfill(width) for n in range(int(first), int(last) + 1)]
    else:
        values = body.split(",")
    return [name for value in values for name in expand_braces(head + value + tail)]


def find_shards(in_list: str | None = None, in_wds: str | None = None) -> list[Shard]:
    """The input shards: list files (a file, a folder of .csv/.parquet files or a glob, local
    or at a URL) or WebDataset tars (a brace pattern or a glob)."""
    if bool(in_list) == bool(in_wds):
        raise ValueError("give either a list (--in_csv) or WebDataset shards (--in_wds)")
    if in_wds:
        names = [n for part in expand_braces(in_wds) for n in _glob(part)]
        kind = "wds"
    else:
        names = _list_files(in_list)
        kind = "list"
    if not names:
        raise ValueError(f"no input shard found at {in_list or in_wds}")
    return [Shard(i, name, kind) for i, name in enumerate(names)]


def _glob(pattern: str) -> list[str]:
    return storage.glob(pattern) if any(c in pattern for c in "*?[") else [pattern]


def _list_files(location: str) -> list[str]:
    if location.endswith(LIST_SUFFIXES) and not any(c in location for c in "*?["):
        return [location]
    if any(c in location for c in "*?["):
        return [n for n in _glob(location) if n.endswith(LIST_SUFFIXES)]
    folder = location if location.endswith("/") or storage.is_url(location) else location + "/"
    return [
        storage.join(folder, n) for n in storage.list_names(folder) if n.endswith(LIST_SUFFIXES)
    ]


def read_shards(batch: dict) -> Iterator[dict]:
    """Rows of each shard in ``batch``: id, file name, path (or the image's bytes for a tar
    member, or an error), and on the shard's last row its number of rows."""
    for index, location, kind in zip(batch["shard"], batch["location"], batch["kind"], strict=True):
        rows = _tar_rows(location) if kind == "wds" else _list_rows(location)
        pending, count = [], 0
        for row in rows:
            pending.append(row)
            count += 1
            if len(pending) == READ_ROWS:
                yield _rows_batch(int(index), location, pending, count - len(pending), None)
                pending = []
        yield _rows_batch(int(index), location, pending, count - len(pending), count)


def _rows_batch(shard: int, location: str, rows: list, first: int, total: int | None) -> dict:
    """Columns of ``rows`` (numbered from ``first``); the last carries the shard's ``total``
    when known. With no row left to carry it (an empty shard, or rows all handed on before),
    one marker row does, which the write stage counts but does not write."""
    if total is not None and not rows:
        rows, first = [("", "", None, END_OF_SHARD)], (1 << ROW_BITS) - 1
    totals = [-1] * len(rows)
    if total is not None:
        totals[-1] = total
    return {
        "id": np.array([(shard << ROW_BITS) | (first + i) for i in range(len(rows))], np.int64),
        "filename": np.array([r[0] for r in rows], dtype=object),
        "path": np.array([r[1] for r in rows], dtype=object),
        "data": np.array([r[2] for r in rows], dtype=object),
        "error": np.array([r[3] for r in rows], dtype=object),
        "source": np.array([location] * len(rows), dtype=object),
        "total": np.array(totals, dtype=np.int64),
    }


def _list_rows(location: str) -> Iterator[tuple]:
    """(file name, path, None, error) of each row of a list file; paths relative to its
    folder. An unreadable list is one row with the error."""
    from clipdet.files import read_table

    try:
        table = read_table(location, [FILENAME_COLUMN])
        if FILENAME_COLUMN not in table.columns:
            raise ValueError(f"no {FILENAME_COLUMN!r} column")
    except Exception as e:  # noqa: BLE001 -- reported as that shard's row, the run goes on
        yield "", location, None, f"unreadable list {location}: {type(e).__name__}: {e}"
        return
    root = storage.parent(location)
    for name in table[FILENAME_COLUMN].astype(str):
        yield name, storage.join(root, name), None, ""


def _tar_rows(location: str) -> Iterator[tuple]:
    """(key, member path, image bytes, error) of each sample of a WebDataset tar: members
    sharing a key (the name up to its first dot) are one sample; its image is the member with
    an image (or video) extension. A sample without one, or a tar that breaks off, is an error
    row."""
    import fsspec

    key, members = None, {}
    try:
        with fsspec.open(location, "rb") as f, tarfile.open(fileobj=f, mode="r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                name = member.name
                folder, base = posixpath.split(name)
                sample = posixpath.join(folder, base.split(".", 1)[0])
                if sample != key and key is not None:
                    yield _sample(location, key, members)
                    members = {}
                key = sample
                extension = base.split(".", 1)[1].lower() if "." in base else ""
                if extension in (*IMAGE_SUFFIXES, *VIDEO_SUFFIXES) and not members:
                    members[extension] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as e:
        if key is not None:
            yield _sample(location, key, members)
        yield "", location, None, f"unreadable tar {location} after {key!r}: {e}"
        return
    if key is not None:
        yield _sample(location, key, members)


def _sample(location: str, key: str, members: dict) -> tuple:
    if not members:
        return key, f"{location}#{key}", None, f"no image or video member in sample {key!r}"
    extension, data = next(iter(members.items()))
    return key, f"{location}#{key}.{extension}", data, ""
