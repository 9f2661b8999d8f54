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
    bar = tqdm(total=len(rows), unit="img", disable=not progress, dynamic_ncols=True)
    failed = 0
    batches = iter(loader)
    while True:
        waited = time.perf_counter()
        batch = next(batches, None)
        if profile is not None:
            profile.add("waiting for images", time.perf_counter() - waited)
        if batch is None:
            break
        output = infer(batch)
        failed += failures(output)
        bar.update(len(batch))
        bar.set_postfix(failed=failed, refresh=False)
        yield output
    bar.close()
