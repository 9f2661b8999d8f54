"""Model folders (`<weights_dir>/<name>/config.yaml` + weights file): reading, downloading with
checksum verification, and safe loading of state dicts."""

import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
import yaml

from clipdet.constants import CONFIG_FILENAME
from clipdet.models.model_config import ModelConfig
from clipdet.models.registry import KnownDetector, known_detectors
from clipdet.storage import write_atomic

logger = logging.getLogger(__name__)

BASE_URL_ENV = "CLIPDET_WEIGHTS_BASE_URL"
# Every family needs these; a family needs more (e.g. `patch_size`) and declares them.
REQUIRED_CONFIG_KEYS = ("arch", "weights_file")


class UnknownModelError(ValueError):
    """A model name that is neither a folder in the weights dir nor a known detector."""


class WeightsUnavailableError(RuntimeError):
    """Weights that could not be found or downloaded; the message says where to put them."""


class ChecksumError(RuntimeError):
    """A downloaded file whose sha256 is not the expected one."""


def available_models(weights_dir: str | os.PathLike) -> list[str]:
    """Names usable with --models: folders with a config in ``weights_dir`` plus known detectors."""
    weights_dir = Path(weights_dir)
    local = (
        {p.parent.name for p in weights_dir.glob(f"*/{CONFIG_FILENAME}")}
        if weights_dir.is_dir()
        else set()
    )
    return sorted(local | set(known_detectors()))


def load_model_config(
    name: str,
    weights_dir: str | os.PathLike,
    keys_of_arch: Callable[[str], Iterable[str]] | None = None,
) -> ModelConfig:
    """Read ``<weights_dir>/<name>/config.yaml``, written first for a known detector if missing;
    it must hold ``REQUIRED_CONFIG_KEYS`` and the keys ``keys_of_arch(arch)`` names (those its
    architecture family reads)."""
    folder = Path(weights_dir) / name
    config_path = folder / CONFIG_FILENAME
    if not config_path.is_file():
        known = known_detectors().get(name)
        if known is None:
            raise UnknownModelError(
                f"unknown model {name!r}: no {config_path}; valid choices: "
                + ", ".join(available_models(weights_dir))
            )
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(config_path, yaml.safe_dump(known.config, sort_keys=False).encode())
        logger.info("wrote %s", config_path)
    with open(config_path, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    if not isinstance(config, dict):
        raise ValueError(f"{config_path} is not a YAML mapping")
    required = set(REQUIRED_CONFIG_KEYS)
    if "arch" in config and keys_of_arch is not None:
        required |= set(keys_of_arch(config["arch"]))
    missing = sorted(key for key in required if key not in config)
    if missing:
        raise ValueError(f"{config_path} lacks the keys {', '.join(missing)}")
    return ModelConfig.from_mapping(config, name)


def resolve_weights_file(name: str, config: ModelConfig, weights_dir: str | os.PathLike) -> Path:
    """Path of the model's weights, downloading a known detector's official file if missing."""
    path = Path(weights_dir) / name / config.weights_file
    known = known_detectors().get(name)
    if known is not None:
        _fetch_model_files(known, path.parent)
    if path.is_file():
        return path
    if known is None:
        raise WeightsUnavailableError(f"weights file not found for model {name!r}: {path}")
    if known.archive:
        _download_archive(known, path)
    else:
        download_file(_weights_url(known, config.weights_file), path, known.checksum)
    if known.licence:
        logger.warning("%s is not Apache-2.0: %s", name, known.licence)
    return path


def _weights_url(known: KnownDetector, filename: str, url: str | None = None) -> str:
    base = os.environ.get(BASE_URL_ENV)
    return f"{base.rstrip('/')}/{known.name}/{filename}" if base else (url or known.url)


def _fetch_model_files(known: KnownDetector, folder: Path) -> None:
    """The other files a known model's folder needs (its ``files``), each downloaded once and
    verified by its sha256."""
    for filename, entry in known.files.items():
        path = folder / filename
        if not path.is_file():
            url = _weights_url(known, filename, entry["url"])
            download_file(url, path, f"sha256:{entry['sha256']}")


def _download_archive(known: KnownDetector, weights_path: Path) -> None:
    """Fetch a known detector's zip (verified), unpack it beside ``weights_path`` and move the
    folder holding the weights file into ``weights_path.parent``: the weights file, and the
    archive's own ``config.yaml`` when it has one. The weights file is moved last, so that its
    presence means a complete download."""
    import tempfile

    from clipdet.download import UnsafeArchiveError, safe_extract

    folder = weights_path.parent
    folder.mkdir(parents=True, exist_ok=True)
    archive_name = known.url.rsplit("/", 1)[-1]
    archive = download_file(_weights_url(known, archive_name), folder / archive_name,
                            known.checksum)  # fmt: skip
    with tempfile.TemporaryDirectory(dir=folder, prefix=".unpack-") as unpacked:
        try:
            safe_extract(archive, unpacked)
        except (UnsafeArchiveError, OSError, ValueError) as e:
            raise WeightsUnavailableError(f"cannot unpack {archive}: {e}") from e
        found = sorted(Path(unpacked).rglob(weights_path.name))
        if not found:
            raise WeightsUnavailableError(
                f"{archive} holds no {weights_path.name} (the config's weights_file)"
            )
        source = found[0].parent
        config = source / CONFIG_FILENAME
        if config.is_file() and "arch" in (yaml.safe_load(config.read_text()) or {}):
            os.replace(config, folder / CONFIG_FILENAME)
        os.replace(found[0], weights_path)
    archive.unlink()


def download_file(url: str, dest: str | os.PathLike, checksum: str, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` with clipdet.download.fetch (requests and urllib3's
    retries with back-off, a progress bar, an HTTP Range resume of ``dest.part`` after a
    broken transfer), verify its ``checksum`` (``sha256:<hex>`` or ``md5:<hex>``), and move it
    into place atomically."""
    from clipdet.download import ChecksumMismatch, DownloadError, fetch, make_session

    dest = Path(dest).resolve()
    logger.info("downloading %s -> %s", url, dest)
    try:
        return fetch(url, dest, checksum, session=make_session(), timeout=timeout)
    except ChecksumMismatch as e:
        raise ChecksumError(str(e)) from e
    except (DownloadError, OSError) as e:
        algorithm, _, digest = checksum.partition(":")
        raise WeightsUnavailableError(
            f"could not download {url} ({_short_reason(e)}). Without network, download it "
            f"elsewhere and put it at {dest} ({algorithm} {digest}); a partial download resumes "
            "on the next run"
        ) from e


def _short_reason(error: BaseException) -> str:
    """The network's own words, not the fetcher's advice again; for a connection that could
    not be made, just that (requests repeats the whole URL and the retry policy)."""
    from urllib.parse import urlparse

    import requests

    reason = error.__cause__ or error
    if isinstance(reason, requests.ConnectionError) and "Max retries" in str(reason):
        url = getattr(getattr(reason, "request", None), "url", None)
        return "no connection" + (f" to {urlparse(url).netloc}" if url else "")
    return str(reason)


def load_state_dict(path: str | os.PathLike, mmap: bool = False) -> dict[str, torch.Tensor]:
    """Load a state dict without executing pickled code: safetensors, or ``torch.load`` with
    ``weights_only=True``. Unwraps ``{'model': ...}``, ``{'state_dict': ...}`` and ``{'net': ...}``
    and strips a ``module.`` prefix (DataParallel)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        checkpoint = load_file(path)
    else:
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError as e:
            if mmap and "mmap" in str(e):  # legacy (non-zip) serialisation cannot be mapped
                checkpoint = torch.load(path, map_location="cpu", weights_only=True)
            else:
                raise ValueError(f"cannot load weights from {path}: {e}") from e
        except Exception as e:  # weights_only refusals are pickle.UnpicklingError
            raise ValueError(f"cannot load weights safely from {path}: {e}") from e
    for wrapper in ("model", "state_dict", "net"):
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(wrapper), dict):
            checkpoint = checkpoint[wrapper]
            break
    if not isinstance(checkpoint, dict) or not all(
        isinstance(v, torch.Tensor) for v in checkpoint.values()
    ):
        raise ValueError(f"{path} does not hold a state dict of tensors")
    if checkpoint and all(key.startswith("module.") for key in checkpoint):
        checkpoint = {key.removeprefix("module."): value for key, value in checkpoint.items()}
    return checkpoint
