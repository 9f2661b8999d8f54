"""A whole scoring run, as main.py drives it on either engine: resume what a partial file (or
the blocks folder) holds, score the remaining rows, record results as they come, and on Ctrl-C
keep what is done. Whatever happens, the result table of every row comes back."""

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import pandas as pd

from clipdet import storage
from clipdet.options import RunOptions
from clipdet.pipeline.blocks import BLOCK_ROWS, open_blocks
from clipdet.pipeline.extensions import run_extensions
from clipdet.pipeline.record import ImageResult, ResultTable, TableLayout
from clipdet.pipeline.resume import (
    PartialWriter,
    ResumeError,
    load_partial,
    partial_path,
    run_signature,
)
from clipdet.pipeline.scoring import iter_scores

logger = logging.getLogger(__name__)

NOT_SCORED = "not scored: run interrupted"


@dataclass
class RunOutcome:
    table: pd.DataFrame  # every row, input order
    results: ResultTable
    interrupted: bool  # Ctrl-C
    failure: Exception | None = None  # an unexpected error that stopped the run

    @property
    def scored(self) -> int:
        return len(self.results.errors) - self.results.errors.count(NOT_SCORED)


def open_partial(
    out_path,
    paths,
    models,
    options: RunOptions,
    resume: bool,
    block_rows: int | None = None,
    columns: list | None = None,
):
    """(rows already scored, writer) for a run to ``out_path`` (None: no partial file). The
    local engine appends to a partial JSON-lines file; the Ray engine (``block_rows`` given,
    0 for the default) and outputs at a URL write fixed blocks of rows (see blocks.py). Both
    record the run's declared ``columns`` (``TableLayout.header``) in their header."""
    if out_path is None:
        return {}, None
    signature = run_signature(paths, models) | options_signature(options)
    if block_rows is not None or storage.is_url(out_path):
        rows = block_rows or BLOCK_ROWS
        return open_blocks(str(out_path), signature, models, len(paths), resume, rows, columns)
    partial = partial_path(out_path)
    if resume and partial.exists():
        writer = PartialWriter(partial, signature, True)
        return load_partial(partial, signature, models), writer
    if partial.exists():
        raise ResumeError(
            f"an interrupted run left {partial}: add --resume to continue it, or delete it"
        )
    return {}, PartialWriter(partial, signature, append=False, columns=columns)


def options_signature(options: RunOptions) -> dict:
    """The options that change what a row holds, as a resumed run must repeat them: the
    perturbation, a decoding other than exact and what each row extension records."""
    signature = {"perturb": [options.perturb, options.perturb_seed], "decode": options.decode}
    for ext in run_extensions(options):
        signature |= ext.signature()
    return signature


def run_scoring(
    models,
    filenames: Sequence[str],
    paths: Sequence[str],
    options: RunOptions,
    fusion: str | None,
    done: dict | None = None,
    writer: PartialWriter | None = None,
    score_rows: Callable[[list[int]], Iterator[ImageResult]] | None = None,
    profile=None,
    layout: TableLayout | None = None,
) -> RunOutcome:
    """Score every row of ``paths`` not in ``done`` (options resolved) with ``score_rows`` (rows
    -> results in any order; default: the local engine); each result goes to ``writer``
    (flushed every batch). Ctrl-C stops the run, not the program: the table comes back with
    unscored rows marked ``NOT_SCORED``; so does an unexpected error (``failure``). Either way
    the partial file is kept for a resume. ``layout``: the run's columns (default: as its
    models, options and paths make them)."""
    done = done or {}
    layout = layout or TableLayout.of(models, options, paths)
    results = ResultTable(layout, len(paths), error=NOT_SCORED)
    for index, result in done.items():
        results.set(index, result)
    todo = [i for i in range(len(paths)) if i not in done]
    if done:
        logger.info("resuming: %d of %d images already scored", len(done), len(paths))
    interrupted, failure = False, None
    score_rows = score_rows or (lambda rows: iter_scores(models, paths, options, rows))
    try:
        for count, result in enumerate(score_rows(todo), start=1):
            results.set(result.index, result)
            if writer:
                started = time.perf_counter()
                writer.write(filenames[result.index], result)
                if count % options.batch_size == 0:
                    writer.flush()
                if profile is not None:
                    profile.add("writing", time.perf_counter() - started)
    except KeyboardInterrupt:
        interrupted = True
    except Exception as e:  # noqa: BLE001 -- what is done must still be written
        logger.debug("run stopped", exc_info=True)
        failure = e
    finally:  # whatever happens, what is done is kept
        if writer:
            writer.flush()
            writer.close()
    if writer and not interrupted and failure is None:
        writer.discard()
    return RunOutcome(results.to_frame(filenames, fusion), results, interrupted, failure)
