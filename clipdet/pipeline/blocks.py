"""Resumable runs in fixed blocks of rows, for the Ray engine and for outputs at a URL (an
object cannot be appended to): rows ``[k * B, (k + 1) * B)`` form block k, and once every row
of a block is scored the block is written at once, as one file, in a folder beside the output
(``scores.parquet`` -> ``scores.parquet.blocks/``). A killed run loses only the blocks in
flight; ``--resume`` reads the blocks present and scores the rest. The folder's ``run.json``
holds the run's signature (images, models, weights, block size): a resume with another
signature is refused. The folder is deleted once the output is written.
"""

import json
import logging
import re

from clipdet import storage
from clipdet.pipeline.record import ImageResult, result_shape
from clipdet.pipeline.resume import ResumeError, signature_mismatch

logger = logging.getLogger(__name__)

BLOCK_ROWS = 1000
RUN_FILE = "run.json"
_BLOCK_NAME = re.compile(r"^block-(\d{8})\.jsonl$")


def blocks_folder(out_path: str) -> str:
    return f"{out_path}.blocks"


def _block_file(folder: str, block: int) -> str:
    return storage.join(folder, f"block-{block:08d}.jsonl")


class BlockWriter:
    """Collects results and writes each block once all its rows are in (any arrival order;
    a row seen twice is kept once)."""

    def __init__(self, folder: str, signature: dict, n_rows: int, block_rows: int, columns=None):
        self.path = folder
        self.columns = columns  # the run's declared columns, recorded in run.json
        self.signature = signature
        self.n_rows = n_rows
        self.block_rows = block_rows
        self._pending: dict[int, dict[int, str]] = {}  # block -> row -> line
        self.blocks_written = 0

    def start(self) -> None:
        """A new run: record its signature (a resumed run keeps the one it checked)."""
        record = {"signature": self.signature, "block_rows": self.block_rows}
        if self.columns is not None:
            record["columns"] = self.columns
        storage.write_bytes(storage.join(self.path, RUN_FILE), json.dumps(record).encode())

    def block_size(self, block: int) -> int:
        return min(self.block_rows, self.n_rows - block * self.block_rows)

    def write(self, filename: str, result: ImageResult) -> None:
        block = result.index // self.block_rows
        rows = self._pending.setdefault(block, {})
        rows[result.index] = result.to_json(filename)
        if len(rows) == self.block_size(block):
            text = "".join(rows[i] for i in sorted(rows))
            storage.write_bytes(_block_file(self.path, block), text.encode("utf-8"))
            del self._pending[block]
            self.blocks_written += 1

    def flush(self) -> None:
        """Blocks are written whole as they complete; nothing is buffered on disk."""

    def close(self) -> None:
        if self._pending:
            logger.info(
                "%d unfinished block(s) not written: their rows are scored again on --resume",
                len(self._pending),
            )

    def discard(self) -> None:
        storage.remove_tree(self.path)


def open_blocks(
    out_path: str,
    signature: dict,
    models,
    n_rows: int,
    resume: bool,
    block_rows: int = BLOCK_ROWS,
    columns: list | None = None,
) -> tuple[dict[int, ImageResult], BlockWriter]:
    """(rows already scored, writer) for a block-wise run to ``out_path``; ``columns``: the
    run's declared columns ([[name, kind], ...]) for its record."""
    if block_rows < 1:
        raise ValueError(f"block_rows must be >= 1, got {block_rows}")
    folder = blocks_folder(out_path)
    record_path = storage.join(folder, RUN_FILE)
    if not storage.exists(record_path):
        writer = BlockWriter(folder, signature, n_rows, block_rows, columns)
        writer.start()
        return {}, writer
    if not resume:
        raise ResumeError(
            f"an interrupted run left {folder}: add --resume to continue it, or delete it"
        )
    try:
        record = json.loads(storage.read_bytes(record_path))
        recorded, block_rows = record["signature"], int(record["block_rows"])
    except (ValueError, KeyError, TypeError) as e:
        raise ResumeError(f"{record_path} is not a clipdet run record") from e
    if recorded != signature:
        raise ResumeError(f"{folder} {signature_mismatch(recorded, signature)}")
    writer = BlockWriter(folder, signature, n_rows, block_rows, columns)
    return _read_blocks(folder, models, writer), writer


def _read_blocks(folder: str, models, writer: BlockWriter) -> dict[int, ImageResult]:
    n_detectors, widths = result_shape(models)
    done = {}
    for name in storage.list_names(folder):
        match = _BLOCK_NAME.match(name)
        if not match:
            continue
        block = int(match.group(1))
        try:
            lines = storage.read_bytes(_block_file(folder, block)).decode("utf-8").splitlines()
            results = [ImageResult.from_json(line, n_detectors, widths) for line in lines]
            first = block * writer.block_rows
            if [r.index for r in results] != list(range(first, first + writer.block_size(block))):
                raise ValueError("rows missing")
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            logger.warning("%s is damaged: its rows are scored again", name)
            continue
        done.update((r.index, r) for r in results)
    return done
