"""Files in and out: image lists, outputs written atomically (a crash never leaves half a
file), file digests. Every list reader and writer of clipdet goes through here."""

import hashlib
import os
import tempfile
from pathlib import Path

import pandas as pd

from clipdet.constants import FILENAME_COLUMN

_CHUNK = 1 << 20


def read_list(in_csv: str | os.PathLike) -> tuple[pd.DataFrame, list[str]]:
    """An image list's table (every column as text) and the paths its ``filename`` column
    names (relative ones are relative to the CSV's folder; absolute ones are kept)."""
    in_csv = Path(in_csv)
    try:
        table = pd.read_csv(in_csv, dtype=str, keep_default_na=False)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"input CSV not found: {in_csv}") from e
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read input CSV {in_csv}: {e}") from e
    if FILENAME_COLUMN not in table.columns:
        raise ValueError(
            f"input CSV {in_csv} has no {FILENAME_COLUMN!r} column (columns: "
            f"{', '.join(map(str, table.columns))})"
        )
    root = in_csv.resolve().parent
    return table, [str(root / name) for name in table[FILENAME_COLUMN]]


def read_image_list(in_csv: str | os.PathLike) -> tuple[list[str], list[str]]:
    """Filenames as written in the CSV's ``filename`` column and the paths they name."""
    table, paths = read_list(in_csv)
    return table[FILENAME_COLUMN].tolist(), paths


def write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text_atomic(text: str, path: str | os.PathLike) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically, creating its folder."""
    path = Path(path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text.encode("utf-8"))
    return path


def write_csv_atomic(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write ``table`` to ``path`` through a temporary file in the same folder."""
    return write_text_atomic(table.to_csv(index=False, lineterminator="\n"), path)


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes (``algorithm``: any hashlib name, e.g. sha256, md5)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_of(path: str | os.PathLike) -> str:
    return file_digest(path, "sha256")
