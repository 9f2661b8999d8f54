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

import numpy as np

from clipdet.pipeline.infer import ImageResult, VideoResult, split_models

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
            "config": m.config.get("arch"),
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
            result = parse_result(line, n_detectors, widths)
        except (ValueError, KeyError, TypeError):
            logger.warning("%s line %d is incomplete (run killed mid-write): ignored", path, number)
            continue
        done[result.index] = result
    return done


def result_shape(models) -> tuple[int, dict[str, int]]:
    """What a stored result of ``models`` must hold: the number of detector scores and, per
    attribution model, its number of logits."""
    detectors, attributors = split_models(models)
    return len(detectors), {m.name: m.detector.num_outputs for m in attributors}


def parse_result(line: str, n_detectors: int, widths: dict[str, int]) -> ImageResult:
    """One line written by ``result_line``; ValueError (or KeyError, TypeError) when it is
    torn or holds the wrong number of scores."""
    row = json.loads(line)
    scores = _array(row["scores"])
    logits = {name: _array(values) for name, values in row.get("logits", {}).items()}
    if scores.shape != (n_detectors,) or {n: v.size for n, v in logits.items()} != widths:
        raise ValueError("wrong number of scores")
    index = int(row["index"])
    provenance = row.get("provenance")
    provenance = (str(provenance[0]), str(provenance[1])) if provenance else None
    facts = tuple(_array(row["facts"])) if row.get("facts") else None
    if facts is not None and len(facts) != 3:
        raise ValueError("wrong image facts")
    video = _video(row["video"], n_detectors) if row.get("video") else None
    return ImageResult(index, scores, str(row["error"]), logits, provenance=provenance,
                       facts=facts, video=video)  # fmt: skip


def _video(stored: dict, n_detectors: int) -> VideoResult:
    times = _array(stored["times"])
    frame_scores = np.array([_array(row) for row in stored["frame_scores"]], dtype=float)
    if frame_scores.shape != (len(times), n_detectors):
        raise ValueError("wrong number of frame scores")
    temporal = stored["temporal"]
    return VideoResult(times, frame_scores, float(stored["duration_s"]),
                       float("nan") if temporal is None else float(temporal))  # fmt: skip


def result_line(filename: str, result: ImageResult) -> str:
    """One result as a JSON line (NaN as null)."""
    row = {"index": result.index, "filename": filename, "scores": _json_list(result.scores)}
    if result.logits:
        row["logits"] = {name: _json_list(v) for name, v in result.logits.items()}
    if result.provenance:
        row["provenance"] = list(result.provenance)
    if result.facts:
        row["facts"] = _json_list(np.asarray(result.facts, dtype=float))
    if result.video is not None:
        video = result.video
        row["video"] = {
            "times": _json_list(video.times),
            "frame_scores": [_json_list(frame) for frame in video.frame_scores],
            "duration_s": float(video.duration_s),
            "temporal": _json_list(np.array([video.temporal]))[0],
        }
    row["error"] = result.error
    return json.dumps(row, ensure_ascii=False) + "\n"


def _array(values) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def _json_list(values: np.ndarray) -> list:
    return [None if not np.isfinite(v) else float(v) for v in values]


class PartialWriter:
    """Appends results; each batch is flushed and fsynced."""

    def __init__(self, path: Path, signature: dict, append: bool):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if append:
            self._repair_tail()
        self._file = open(path, "a" if append else "w", encoding="utf-8")
        if not append:
            self._file.write(json.dumps({"signature": signature}) + "\n")
            self.flush()

    def _repair_tail(self) -> None:
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):  # cut a torn last line
            with open(self.path, "r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)

    def write(self, filename: str, result: ImageResult) -> None:
        self._file.write(result_line(filename, result))

    def flush(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def discard(self) -> None:
        """The run is complete: the partial file is no longer needed."""
        self.path.unlink(missing_ok=True)
