"""Files in and out: image lists, outputs written atomically (a crash never leaves half a
file), file digests. Every list reader and writer of clipdet goes through here."""

import hashlib
import io
import os
from pathlib import Path

import numpy as np
import pandas as pd

from clipdet import storage
from clipdet.constants import ERROR_COLUMN, FILENAME_COLUMN, SOURCE_COLUMN, SOURCE_ROW_COLUMN
from clipdet.storage import write_bytes_atomic

_CHUNK = 1 << 20


def read_list(in_csv: str | os.PathLike) -> tuple[pd.DataFrame, list[str]]:
    """An image list's table (every column as text) and the paths its ``filename`` column
    names (relative ones are relative to the CSV's folder; absolute paths and URLs are kept).
    The list itself may be a URL (s3://, gs://, http(s)://): its relative entries are then
    relative to the URL's folder."""
    in_csv = str(in_csv)
    try:
        source = io.BytesIO(storage.read_bytes(in_csv)) if storage.is_url(in_csv) else in_csv
        table = pd.read_csv(source, dtype=str, keep_default_na=False)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"input CSV not found: {in_csv}") from e
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read input CSV {in_csv}: {e}") from e
    if FILENAME_COLUMN not in table.columns:
        raise ValueError(
            f"input CSV {in_csv} has no {FILENAME_COLUMN!r} column (columns: "
            f"{', '.join(map(str, table.columns))})"
        )
    root = storage.parent(in_csv)
    return table, [storage.join(root, name) for name in table[FILENAME_COLUMN]]


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically, creating its folder."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_csv_atomic(path: str | os.PathLike, table: pd.DataFrame) -> Path:
    """Write ``table`` to ``path`` through a temporary file in the same folder."""
    return write_text_atomic(path, table.to_csv(index=False, lineterminator="\n"))


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes (``algorithm``: any hashlib name, e.g. sha256, md5)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_of(path: str | os.PathLike) -> str:
    return file_digest(path, "sha256")


# Result tables: the format follows the file's extension (anything else is CSV).
TABLE_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".parquet": "parquet"}


def table_format(location: str | os.PathLike) -> str:
    """``csv``, ``jsonl`` or ``parquet``, by the extension of ``location`` (default csv)."""
    suffix = os.path.splitext(str(location).split("?", 1)[0])[1].lower()
    return TABLE_FORMATS.get(suffix, "csv")


def table_bytes(table: pd.DataFrame, fmt: str) -> bytes:
    """``table`` as a file of format ``fmt``: CSV (no index, LF), JSON lines (NaN as null,
    UTF-8 kept) or Parquet (pyarrow)."""
    if fmt == "csv":
        return table.to_csv(index=False, lineterminator="\n").encode("utf-8")
    if fmt == "jsonl":
        import json

        records = table.astype(object).where(table.notna(), None).to_dict(orient="records")
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
    if fmt == "parquet":
        buffer = io.BytesIO()
        table.to_parquet(buffer, index=False, engine="pyarrow")
        return buffer.getvalue()
    raise ValueError(f"unknown table format {fmt!r}; valid choices: {', '.join(TABLE_FORMATS)}")


def write_table(table: pd.DataFrame, location: str | os.PathLike, fmt: str | None = None) -> None:
    """Write ``table`` to a local path (atomically) or a URL (one upload), in ``fmt`` (default:
    by extension)."""
    storage.write_bytes(location, table_bytes(table, fmt or table_format(location)))


def read_table(
    location: str | os.PathLike, text_columns=(), nrows: int | None = None
) -> pd.DataFrame:
    """A table written by ``write_table`` (or any CSV), local or at a URL, or the output
    folder of a streamed Ray run (its parts, each row once); ``text_columns`` that it has are
    read as text (a class named "1" stays "1")."""
    if is_folder_output(str(location)):
        table = read_scores_folder(str(location))
        return table if nrows is None else table.head(nrows)
    fmt = table_format(location)
    if fmt == "csv":
        return pd.read_csv(location, dtype=dict.fromkeys(text_columns, str), nrows=nrows)
    if fmt == "parquet":
        table = pd.read_parquet(location, engine="pyarrow")
    else:
        table = pd.read_json(location, lines=True, dtype=False)
    table = table if nrows is None else table.head(nrows)
    for column in text_columns:
        if column in table.columns:
            values = table[column]
            table[column] = [v if v is None or isinstance(v, str) else str(v) for v in values]
    return table


def is_folder_output(out: str | None) -> bool:
    """An output that is a folder: ending with '/' or an existing local directory."""
    return bool(out) and (str(out).endswith("/") or Path(str(out)).is_dir())


def read_scores_folder(folder: str) -> pd.DataFrame:
    """Every part under ``folder``, each row once (the first of a row written twice), in
    shard and row order."""
    names = _parts(folder)
    if not names:
        return pd.DataFrame(
            columns=[FILENAME_COLUMN, SOURCE_COLUMN, SOURCE_ROW_COLUMN, ERROR_COLUMN]
        )
    tables = [pd.read_parquet(io.BytesIO(storage.read_bytes(n)), engine="pyarrow") for n in names]
    table = pd.concat(tables, ignore_index=True)
    shard_of = {n: i for i, n in enumerate(sorted({*table[SOURCE_COLUMN]}))}
    table = table.drop_duplicates([SOURCE_COLUMN, SOURCE_ROW_COLUMN], keep="first")
    order = table[SOURCE_COLUMN].map(shard_of) * (1 << 32) + table[SOURCE_ROW_COLUMN]
    return table.iloc[np.argsort(order.to_numpy(), kind="stable")].reset_index(drop=True)


def _parts(folder: str) -> list[str]:
    return storage.glob(storage.join(folder, "shard-*/part-*.parquet"))
