"""The local engine: the prepare stage in DataLoader worker processes, the infer stage in this
process, a progress bar, results batch by batch in input order."""

import time
from collections.abc import Callable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from clipdet.pipeline.prepare import PreparedItem, Preparer


class _Rows(Dataset):
    """Item k prepares row ``rows[k]`` of the caller's list (its index is kept as is)."""

    def __init__(self, preparer: Preparer, paths: Sequence[str], rows: Sequence[int]):
        self.preparer = preparer
        self.paths = paths
        self.rows = list(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, k: int) -> PreparedItem:
        row = self.rows[k]
        return self.preparer(row, self.paths[row])


def run_local(
    preparer: Preparer,
    infer: Callable[[list[PreparedItem]], object],
    paths: Sequence[str],
    rows: Sequence[int] | None = None,
    *,
    device: str = "cpu",
    batch_size: int = 4,
    num_workers: int = 0,
    progress: bool = False,
    failures: Callable[[object], int] = lambda output: 0,
    profile=None,
) -> Iterator:
    """``infer``'s output for each batch of ``rows`` (default: every row of ``paths``);
    ``failures`` counts the failed images of an output, for the progress bar; a ``profile``
    gets the time spent waiting for prepared batches."""
    rows = range(len(paths)) if rows is None else rows
    loader = DataLoader(
        _Rows(preparer, paths, rows),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=list,
        pin_memory=torch.device(device).type == "cuda",
    )
    bar = ProgressBar(len(rows), progress)
    batches = iter(loader)
    while True:
        waited = time.perf_counter()
        batch = next(batches, None)
        if profile is not None:
            profile.add("waiting for images", time.perf_counter() - waited)
        if batch is None:
            break
        output = infer(batch)
        bar.advance(len(batch), failures(output))
        yield output
    bar.close()


class ProgressBar:
    """Rows done / total, images/s and the failures so far (off unless ``show``)."""

    def __init__(self, total: int, show: bool):
        self._bar = tqdm(total=total, unit="img", disable=not show, dynamic_ncols=True)
        self.failed = 0

    def advance(self, rows: int, failed: int) -> None:
        self.failed += failed
        self._bar.update(rows)
        self._bar.set_postfix(failed=self.failed, refresh=False)

    def close(self) -> None:
        self._bar.close()


def with_progress(results: Iterator, total: int, show: bool) -> Iterator:
    """Image results (any engine's) passed through, counted on a progress bar."""
    bar = ProgressBar(total, show)
    try:
        for result in results:
            bar.advance(1, bool(result.error))
            yield result
    finally:
        bar.close()
