"""A whole scoring run on the local engine, as main.py drives it: resume what a partial file
holds, score the remaining rows, append each batch to the partial file, and on Ctrl-C keep what
is done. Whatever happens, the result table of every row comes back."""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from clipdet.options import RunOptions
from clipdet.pipeline.resume import (
    PartialWriter,
    ResumeError,
    load_partial,
    partial_path,
    run_signature,
)
from clipdet.pipeline.scoring import ResultTable, iter_scores

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


def open_partial(out_path, paths, models, options: RunOptions, resume: bool):
    """(rows already scored, writer) for a run to ``out_path`` (None: no partial file)."""
    if out_path is None:
        return {}, None
    partial = partial_path(out_path)
    signature = run_signature(paths, models) | {"perturb": [options.perturb, options.perturb_seed]}
    if resume and partial.exists():
        return load_partial(partial, signature, models), PartialWriter(partial, signature, True)
    if partial.exists():
        raise ResumeError(
            f"an interrupted run left {partial}: add --resume to continue it, or delete it"
        )
    return {}, PartialWriter(partial, signature, append=False)


def run_scoring(
    models,
    filenames: Sequence[str],
    paths: Sequence[str],
    options: RunOptions,
    fusion: str | None,
    done: dict | None = None,
    writer: PartialWriter | None = None,
) -> RunOutcome:
    """Score every row of ``paths`` not in ``done`` (options resolved); each result is
    appended to ``writer`` (flushed every batch). Ctrl-C stops the run, not the program: the
    table comes back with unscored rows marked ``NOT_SCORED``; so does an unexpected error
    (``failure``). Either way the partial file is kept for a resume."""
    done = done or {}
    results = ResultTable(models, len(paths), error=NOT_SCORED)
    for index, result in done.items():
        results.set(index, result)
    todo = [i for i in range(len(paths)) if i not in done]
    if done:
        logger.info("resuming: %d of %d images already scored", len(done), len(paths))
    interrupted, failure = False, None
    try:
        for count, result in enumerate(iter_scores(models, paths, options, todo), start=1):
            results.set(result.index, result)
            if writer:
                writer.write(filenames[result.index], result)
                if count % options.batch_size == 0:
                    writer.flush()
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
        Path(writer.path).unlink(missing_ok=True)
    return RunOutcome(results.to_frame(filenames, fusion), results, interrupted, failure)
