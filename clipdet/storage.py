"""Local paths and URLs alike: ``s3://``, ``gs://``, ``http(s)://`` and any other fsspec
protocol are read and written through fsspec (``s3fs`` / ``gcsfs`` installed for those
stores); plain paths stay on the local file system, with atomic writes.

Object-store credentials and endpoints come from the usual places (for S3: the AWS
environment variables or config files, ``AWS_ENDPOINT_URL_S3`` for an S3-compatible server).
``CLIPDET_READ_TIMEOUT`` (seconds, default 60) bounds one HTTP read.
"""

import os
import posixpath
import re
import tempfile
from pathlib import Path

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
DEFAULT_READ_TIMEOUT = 60.0


def is_url(location: str | os.PathLike) -> bool:
    return bool(_URL.match(str(location)))


def read_timeout() -> float:
    return float(os.environ.get("CLIPDET_READ_TIMEOUT", DEFAULT_READ_TIMEOUT))


def _filesystem(url: str):
    """(fsspec file system, path inside it) for ``url``."""
    import fsspec

    protocol = url.split("://", 1)[0].lower()
    options = {}
    if protocol in ("http", "https"):
        import aiohttp

        # One bound on the whole request: a stalled server is that row's error, not a hang.
        options["client_kwargs"] = {"timeout": aiohttp.ClientTimeout(total=read_timeout())}
    return fsspec.core.url_to_fs(url, **options)


def join(root: str, name: str) -> str:
    """``name`` relative to the folder ``root`` (a path or URL); absolute paths and URLs are
    kept as they are."""
    if is_url(name) or os.path.isabs(name):
        return name
    if is_url(root):
        return posixpath.join(root if root.endswith("/") else root + "/", name)
    return str(Path(root) / name)


def parent(location: str) -> str:
    """The folder holding ``location``: a resolved local path, or a URL ending in '/'."""
    if is_url(location):
        return location.rsplit("/", 1)[0] + "/"
    return str(Path(location).resolve().parent)


def read_bytes(location: str | os.PathLike) -> bytes:
    """The whole content; FileNotFoundError when there is no such file or object (HTTP 404)."""
    location = str(location)
    if not is_url(location):
        return Path(location).read_bytes()
    fs, path = _filesystem(location)
    return fs.cat_file(path)


def write_bytes(location: str | os.PathLike, data: bytes) -> None:
    """Replace ``location``'s content at once: a local file through a temporary file and a
    rename, an object with one upload (object stores never show half an object)."""
    location = str(location)
    if not is_url(location):
        write_bytes_atomic(location, data)
        return
    fs, path = _filesystem(location)
    fs.pipe_file(path, data)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace the local file ``path`` through a temporary file in its folder and a rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically, creating its folder."""
    path = Path(path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data)
    return path


def exists(location: str | os.PathLike) -> bool:
    location = str(location)
    if not is_url(location):
        return os.path.exists(location)
    fs, path = _filesystem(location)
    return fs.exists(path)


def list_names(folder: str) -> list[str]:
    """Names of the files directly in ``folder`` (empty when it does not exist)."""
    if not is_url(folder):
        return sorted(p.name for p in Path(folder).glob("*") if p.is_file())
    fs, path = _filesystem(folder)
    try:
        entries = fs.ls(path, detail=False, refresh=True)
    except FileNotFoundError:
        return []
    return sorted(posixpath.basename(e.rstrip("/")) for e in entries)


def glob(pattern: str) -> list[str]:
    """The files matching a glob pattern (``*``, ``?``, ``[...]``; ``**`` not needed), local
    or at a URL (returned as URLs), sorted."""
    if not is_url(pattern):
        import glob as local

        return sorted(local.glob(pattern))
    fs, path = _filesystem(pattern)
    protocol = pattern.split("://", 1)[0]
    return sorted(f"{protocol}://{p}" for p in fs.glob(path))


def remove_tree(folder: str) -> None:
    """Delete ``folder`` and what it holds (nothing happens when it is missing)."""
    if not is_url(folder):
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
        return
    fs, path = _filesystem(folder)
    try:
        fs.rm(path, recursive=True)
    except FileNotFoundError:
        pass
