"""Resumable runs: results are appended to a JSON-lines file beside the output as batches
finish (flushed and fsynced, so a kill loses at most the batch in flight), and a resumed run
skips the rows it already holds.

The first line records the run's signature (input list, models and the fingerprints of their
weights); a resume with another signature is refused. A torn last line (killed mid-write) is
ignored and its image scored again.
"""

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from clipdet.pipeline.record import ImageResult, result_shape

logger = logging.getLogger(__name__)


class ResumeError(ValueError):
    """A partial file that cannot be resumed (or must not be overwritten)."""


def partial_path(out_path: str | os.PathLike) -> Path:
    out = Path(out_path)
    return out.with_name(out.name + ".partial.jsonl")


def run_signature(paths: Sequence[str], models) -> dict:
    """What must match for old results to be reused: the images and each model's weights."""
    listing = hashlib.sha256("\n".join(paths).encode()).hexdigest()
    return {"images": len(paths), "list_sha256": listing, "models": models_signature(models)}


def models_signature(models) -> dict:
    """Each model's architecture, weights file (path, size, time) and backbone."""
    fingerprints = {}
    for m in models:
        weights = Path(m.weights_path)
        stat = weights.stat()
        fingerprints[m.name] = {
            "config": m.config.arch,
            "weights": f"{weights.resolve()}:{stat.st_size}:{stat.st_mtime_ns}",
            "backbone": m.detector.backbone_key,
        }
    return fingerprints


def signature_mismatch(recorded, signature: dict) -> str:
    """Why a recorded run is not this one, naming what differs."""
    recorded = recorded if isinstance(recorded, dict) else {}
    differs = sorted(
        k for k in set(recorded) | set(signature) if recorded.get(k) != signature.get(k)
    )
    return (
        "comes from a run with other images, models or weights (it differs in: "
        f"{', '.join(differs)}); delete it to start over"
    )


def load_partial(path: Path, signature: dict, models) -> dict[int, ImageResult]:
    """Rows already scored in ``path`` for a run of ``models`` with ``signature``."""
    n_detectors, widths = result_shape(models)
    lines = path.read_text(encoding="utf-8").splitlines()
    try:
        header = json.loads(lines[0])["signature"] if lines else None
    except (ValueError, KeyError, TypeError) as e:
        raise ResumeError(f"{path} is not a clipdet partial file") from e
    if header != signature:
        raise ResumeError(f"{path} {signature_mismatch(header, signature)}")
    done = {}
    for number, line in enumerate(lines[1:], start=2):
        try:
            result = ImageResult.from_json(line, n_detectors, widths)
        except (ValueError, KeyError, TypeError):
            logger.warning("%s line %d is incomplete (run killed mid-write): ignored", path, number)
            continue
        done[result.index] = result
    return done


class PartialWriter:
    """Appends results; each batch is flushed and fsynced."""

    def __init__(self, path: Path, signature: dict, append: bool, columns: list | None = None):
        """``columns``: the run's declared columns ([[name, kind], ...]), recorded in the
        header beside the signature."""
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if append:
            self._repair_tail()
        self._file = open(path, "a" if append else "w", encoding="utf-8")
        if not append:
            header = {"signature": signature}
            if columns is not None:
                header["columns"] = columns
            self._file.write(json.dumps(header) + "\n")
            self.flush()

    def _repair_tail(self) -> None:
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):  # cut a torn last line
            with open(self.path, "r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)

    def write(self, filename: str, result: ImageResult) -> None:
        self._file.write(result.to_json(filename))

    def flush(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def discard(self) -> None:
        """The run is complete: the partial file is no longer needed."""
        self.path.unlink(missing_ok=True)
