"""Verified, resumable downloads and safe unpacking (datasets; see data/download.py).

A file is fetched into ``<dest>.part`` with an HTTP Range request that continues a partial
file left by an interrupted run, retried with exponential back-off on connection errors and
5xx/429 answers (urllib3's Retry through requests), shown with a tqdm progress bar, checked
against its md5 or sha256, and only then moved to ``dest``. A checksum mismatch removes the
partial file (its bytes cannot be trusted); a broken connection keeps it for the next run.
"""

import logging
import os
import zipfile
from pathlib import Path

import requests
from requests.adapters import HTTPAdapter
from tqdm import tqdm
from urllib3.util.retry import Retry

from clipdet.files import file_digest

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
_NET_CHUNK = 1 << 14  # small reads: a broken connection loses at most this much
USER_AGENT = "clipdet-downloader (+https://github.com/grip-unina/ClipBased-SyntheticImageDetection)"


class DownloadError(OSError):
    """A URL that could not be fetched; the message names it and where the file should go."""


class ChecksumMismatch(DownloadError):
    """Downloaded bytes whose md5/sha256 is not the expected one (the file was removed)."""


class UnsafeArchiveError(ValueError):
    """A zip entry that would be written outside the destination folder."""


def make_session(retries: int = 3, backoff: float | None = None) -> requests.Session:
    """A session that retries failed connections and 429/5xx answers with back-off
    (``backoff`` seconds, doubled each time; default ``$CLIPDET_RETRY_BACKOFF`` or 1)."""
    if backoff is None:
        backoff = float(os.environ.get("CLIPDET_RETRY_BACKOFF", 1.0))
    retry = Retry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        backoff_factor=backoff,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=("GET", "HEAD"),
        raise_on_status=False,
    )
    session = requests.Session()
    session.headers["User-Agent"] = USER_AGENT
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def parse_checksum(checksum: str) -> tuple[str, str]:
    """``"md5:abc…"`` or ``"sha256:abc…"`` (a bare 64-hex value is sha256)."""
    algorithm, _, value = checksum.rpartition(":")
    algorithm = algorithm or ("sha256" if len(value) == 64 else "md5")
    if algorithm not in ("md5", "sha256"):
        raise ValueError(f"unsupported checksum {checksum!r}; use md5:HEX or sha256:HEX")
    return algorithm, value.lower()


def fetch(
    url: str,
    dest: str | os.PathLike,
    checksum: str | None = None,
    *,
    session: requests.Session | None = None,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest`` (resuming ``dest.part``), verify ``checksum`` if given and
    move it into place. An existing ``dest`` is trusted only if its checksum matches."""
    dest = Path(dest).resolve()
    algorithm, expected = parse_checksum(checksum) if checksum else (None, None)
    if dest.is_file() and (algorithm is None or file_digest(dest, algorithm) == expected):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    session = session or make_session()
    start = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={start}-"} if start else {}
    where = f"put it at {dest}" + (f" ({checksum})" if checksum else "")
    try:
        with session.get(url, headers=headers, stream=True, timeout=timeout) as response:
            if response.status_code >= 400 and response.status_code != 416:  # 416: complete
                raise DownloadError(f"{url}: HTTP {response.status_code}; download it and {where}")
            if response.status_code != 416:
                _write_body(response, part, start, url, where, progress)
    except requests.RequestException as e:
        raise DownloadError(
            f"could not download {url} ({e}); run again to resume, or download it and {where}"
        ) from e
    if algorithm is not None:
        got = file_digest(part, algorithm)
        if got != expected:
            part.unlink()
            raise ChecksumMismatch(
                f"checksum mismatch for {url}: expected {algorithm} {expected}, got {got} "
                "(the partial file was removed)"
            )
    os.replace(part, dest)
    return dest


def _write_body(response, part: Path, start: int, url: str, where: str, progress: bool):
    """Append a 206 answer to ``part`` (or write a 200 one from the start), with a progress bar;
    a body shorter than announced is a DownloadError that keeps ``part`` for a resume."""
    resumed = response.status_code == 206
    if start and not resumed:
        logger.info("%s does not resume; starting over", url)
        start = 0
    length = response.headers.get("Content-Length")
    total = start + int(length) if length and length.isdigit() else None
    bar = tqdm(total=total, initial=start, unit="B", unit_scale=True, desc=part.stem,
               disable=not progress)  # fmt: skip
    with bar, open(part, "ab" if resumed else "wb") as out:
        for chunk in response.iter_content(_NET_CHUNK):
            out.write(chunk)
            bar.update(len(chunk))
    if total is not None and part.stat().st_size < total:
        raise DownloadError(
            f"{url}: connection closed after {part.stat().st_size} of {total} bytes "
            f"(run again to resume); or download it and {where}"
        )


def safe_extract(archive: str | os.PathLike, dest: str | os.PathLike) -> int:
    """Unpack a zip into ``dest``, refusing any entry that would land outside it (``../``,
    absolute paths); files already there are kept. Returns the number of files written."""
    dest = Path(dest).resolve()
    written = 0
    with zipfile.ZipFile(archive) as z:
        members = z.infolist()
        for member in members:  # check all before writing anything
            target = (dest / member.filename).resolve()
            if not target.is_relative_to(dest):
                raise UnsafeArchiveError(
                    f"{archive}: entry {member.filename!r} would be written outside {dest}"
                )
        for member in members:
            target = dest / member.filename
            if member.is_dir() or target.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with z.open(member) as src, open(target, "wb") as out:
                while chunk := src.read(_CHUNK):
                    out.write(chunk)
            written += 1
    return written
