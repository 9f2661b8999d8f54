"""Runs of any size on Ray Data, streamed: the cluster reads the input shard by shard and writes
the scores as it goes; the driver holds counters, not rows.

    input shards (list files: .csv/.parquet, a folder or glob of them; or WebDataset .tar)
      --map_batches(read rows, CPU tasks)--> (row id, file name, path or image bytes)
      --map_batches(prepare, CPU tasks)--> prepared items          (the same stages as ever)
      --map_batches(infer, actor pool)--> results
      --map_batches(write, CPU tasks)--> <out>/shard-NNNNNN/part-*.parquet, and to the driver
                                          only (shard, row ids, failures)

A row's id is its shard and its row in that shard (columns ``source`` and ``source_row``). When
every row of a shard is written, the driver writes ``shard-NNNNNN/_SUCCESS.json``; ``--resume``
skips the shards that have one and redoes the others from scratch. A part written twice (a task
retried after a failure) holds the same rows: ``files.read_scores_folder`` keeps each row once.
``_run.json`` records the run's signature when it starts and its counts when it ends.
"""

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from clipdet import storage
from clipdet.constants import SOURCE_COLUMN, SOURCE_ROW_COLUMN
from clipdet.pipeline.columns import SOURCE
from clipdet.pipeline.resume import ResumeError, signature_mismatch
from clipdet.pipeline.shards import END_OF_SHARD, ROW_BITS, Shard, read_shards

logger = logging.getLogger(__name__)

RUN_RECORD = "_run.json"
DONE = "_SUCCESS.json"
WRITE_ROWS = 4096  # at most, rows a write task gathers into its parts (64 batches' worth)


def _prepare_rows(batch: dict, preparer) -> dict:
    """The prepare stage on read rows; the row's columns travel on beside the item."""
    import pickle

    from clipdet.pipeline.prepare import PreparedItem

    items = []
    for row_id, path, data, error in zip(batch["id"], batch["path"], batch["data"], batch["error"],
                                         strict=True):  # fmt: skip
        if error:
            item = PreparedItem(int(row_id), {}, {}, None, str(error))
        else:
            data = bytes(data) if isinstance(data, bytes | bytearray | memoryview) else None
            item = preparer(int(row_id), str(path), data)  # (a null comes back as None or NaN)
        items.append(pickle.dumps(item, protocol=5))
    out = {k: v for k, v in batch.items() if k not in ("data", "path", "error")}
    out["item"] = np.array(items, dtype=object)
    return out


def _write_parts(batch: dict, out: str, layout, fusion: str | None) -> dict:
    """Write the batch's results as one Parquet part per shard (a ``record.TableLayout``'s
    table); return what the driver counts."""
    import pickle

    from clipdet.files import table_bytes
    from clipdet.pipeline.record import ResultTable

    results = [pickle.loads(blob) for blob in batch["result"]]
    keep = [i for i, r in enumerate(results) if r.error != END_OF_SHARD]
    shards = np.asarray(batch["id"], dtype=np.int64) >> ROW_BITS
    rows = np.asarray(batch["id"], dtype=np.int64) & ((1 << ROW_BITS) - 1)
    report = {"shard": [], "rows": [], "failed": [], "total": []}
    for shard in sorted(set(shards.tolist())):
        members = [i for i in keep if shards[i] == shard]
        if members:
            found = ResultTable(layout, len(members))
            for position, i in enumerate(members):
                found.set(position, results[i])
            table = found.to_frame([str(batch["filename"][i]) for i in members], fusion)
            table.insert(1, SOURCE_COLUMN, [str(batch["source"][i]) for i in members])
            table.insert(2, SOURCE_ROW_COLUMN, rows[members].astype(np.int64))
            first, last = int(rows[members].min()), int(rows[members].max())
            name = f"part-{first:09d}-{last:09d}-{len(members):06d}.parquet"
            storage.write_bytes(_in_shard(out, shard, name), table_bytes(table, "parquet"))
        totals = [int(batch["total"][i]) for i in range(len(results)) if shards[i] == shard]
        report["shard"].append(shard)
        report["rows"].append(np.asarray(rows[members], dtype=np.int64))
        report["failed"].append(
            np.asarray([rows[i] for i in members if results[i].error], np.int64)
        )
        report["total"].append(max(totals))
    out = {"shard": np.array(report["shard"]), "total": np.array(report["total"])}
    for key in ("rows", "failed"):  # one array of row numbers per shard
        out[key] = np.empty(len(report[key]), dtype=object)
        out[key][:] = report[key]
    return out


def _in_shard(out: str, shard: int, name: str = "") -> str:
    """``name`` in the folder of shard ``shard`` under ``out`` (the folder itself if no name)."""
    return storage.join(out, f"shard-{shard:06d}/{name}".rstrip("/"))


# ---- the driver -----------------------------------------------------------------------------


@dataclass
class StreamOutcome:
    rows: int = 0
    failed: int = 0
    shards: int = 0
    skipped_shards: int = 0  # complete before this run (--resume)


class _ShardCounter:
    """Which rows of each unfinished shard are written; a shard is done when all its rows are
    (a retried task may report a row twice: it counts once)."""

    def __init__(self):
        self.seen: dict[int, set] = {}
        self.failed: dict[int, set] = {}
        self.total: dict[int, int] = {}

    def add(self, shard: int, rows, failed, total: int) -> bool:
        self.seen.setdefault(shard, set()).update(int(r) for r in rows)
        self.failed.setdefault(shard, set()).update(int(r) for r in failed)
        if total >= 0:
            self.total[shard] = total
        return shard in self.total and len(self.seen[shard]) >= self.total[shard]

    def pop(self, shard: int) -> tuple[int, int]:
        self.seen.pop(shard, None)
        return self.total.pop(shard), len(self.failed.pop(shard, ()))


def stream_scores(
    engine,
    preparer,
    models,
    weights_dir: str,
    shards: Sequence[Shard],
    out: str,
    options,
    fusion: str | None,
    resume: bool = False,
    signature: dict | None = None,
) -> StreamOutcome:
    """Score every shard into the folder ``out`` (``engine``: a ``RayEngine``)."""
    import ray

    from clipdet.pipeline.ray_engine import PREPARE_CPUS
    from clipdet.pipeline.record import TableLayout

    signature = {**(signature or {}), "shards": [s.location for s in shards]}
    layout = TableLayout.of(models, options)
    header = layout.header(fusion)  # the parts' columns: filename, where it came from, the rest
    columns = [header[0], [SOURCE_COLUMN, SOURCE], [SOURCE_ROW_COLUMN, SOURCE], *header[1:]]
    done = _open_run(out, signature, resume, columns)
    todo = [s for s in shards if s.index not in done]
    for shard in todo:  # parts of an unfinished shard are redone from scratch
        storage.remove_tree(_in_shard(out, shard.index))
    outcome = StreamOutcome(skipped_shards=len(done))
    for rows, failed in done.values():
        outcome.rows, outcome.failed = outcome.rows + rows, outcome.failed + failed
    if todo:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        shard_items = [{"shard": s.index, "location": s.location, "kind": s.kind} for s in todo]
        dataset = (
            ray.data.from_items(shard_items, override_num_blocks=len(todo))
            .map_batches(read_shards, batch_size=1, num_cpus=PREPARE_CPUS)
            .map_batches(_prepare_rows, fn_kwargs={"preparer": preparer},
                         batch_size=options.batch_size, num_cpus=PREPARE_CPUS)
        )  # fmt: skip
        dataset = engine.infer_stage(dataset, models, weights_dir, options).map_batches(
            _write_parts, fn_kwargs={"out": out, "layout": layout, "fusion": fusion},
            batch_size=min(WRITE_ROWS, 64 * options.batch_size), num_cpus=PREPARE_CPUS,
        )  # fmt: skip
        _drive(dataset, out, outcome, options.progress)
    record = {"signature": signature, "columns": columns, "status": "complete",
              "rows": outcome.rows, "failed": outcome.failed, "shards": len(shards)}  # fmt: skip
    storage.write_bytes(storage.join(out, RUN_RECORD), json.dumps(record, indent=1).encode())
    outcome.shards = len(shards)
    return outcome


def _drive(dataset, out: str, outcome: StreamOutcome, progress: bool) -> None:
    """Count what the write stage reports; mark each shard done once all its rows are."""
    from tqdm import tqdm

    counter = _ShardCounter()
    bar = tqdm(unit="img", disable=not progress, desc="scoring")
    for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        for shard, rows, failed, total in zip(batch["shard"], batch["rows"], batch["failed"],
                                              batch["total"], strict=True):  # fmt: skip
            bar.update(len(rows))
            if counter.add(int(shard), rows, failed, int(total)):
                total, n_failed = counter.pop(int(shard))
                marker = json.dumps({"rows": total, "failed": n_failed}).encode()
                storage.write_bytes(_in_shard(out, int(shard), DONE), marker)
                outcome.rows, outcome.failed = outcome.rows + total, outcome.failed + n_failed
    bar.close()
    if counter.seen:  # the pipeline ended, yet some shard's rows did not all come back
        missing = ", ".join(str(s) for s in sorted(counter.seen))
        raise RuntimeError(f"shards {missing} were not scored completely: run again with --resume")


def _open_run(out: str, signature: dict, resume: bool, columns: list) -> dict[int, tuple[int, int]]:
    """{shard index: (rows, failed)} of the shards a resumed run finished; checks and writes
    the run record (with the parts' declared ``columns``)."""
    record_path = storage.join(out, RUN_RECORD)
    if storage.exists(record_path):
        try:
            recorded = json.loads(storage.read_bytes(record_path))["signature"]
        except (ValueError, KeyError, TypeError) as e:
            raise ResumeError(f"{record_path} is not a clipdet run record") from e
        if not resume:
            raise ResumeError(f"{out} holds a run already: add --resume to continue it, or "
                              "delete it")  # fmt: skip
        if recorded != signature:
            raise ResumeError(f"{out} {signature_mismatch(recorded, signature)}")
    record = {"signature": signature, "columns": columns, "status": "running"}
    storage.write_bytes(record_path, json.dumps(record, indent=1).encode())
    done = {}
    for index in range(len(signature["shards"])):
        marker = _in_shard(out, index, DONE)
        if resume and storage.exists(marker):
            try:
                counts = json.loads(storage.read_bytes(marker))
                done[index] = (int(counts["rows"]), int(counts["failed"]))
            except (ValueError, KeyError, TypeError):
                logger.warning("damaged %s: that shard is scored again", marker)
    return done
