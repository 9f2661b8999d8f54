"""Near-duplicate groups: which rows of a run are copies of one picture (--group auto).

Two rows are copies when their perceptual hashes (``copy_hash``: pHash of the border-trimmed
image and of its central 90 % and 80 %) come within ``MAX_HAMMING`` bits, whole against whole
or one's central crop against the other whole, **and** their feature sketches
(``copy_sketch``) have a cosine of at least ``MIN_COSINE`` (where both have one). Copies of
copies join one group (connected components).

No pair is compared blindly: candidates come from an index. Each 64-bit hash is cut into four
16-bit bands, and rows sharing a band value of any of their hashes are candidates (every pair
within 3 bits is found; most within ``MAX_HAMMING``); and, when the rows have sketches, each
row's nearest sketches (faiss, when installed; numpy blocks otherwise) are candidates too.
The rule and its measured precision and recall: docs/thresholds.md."""

import base64
import logging
from collections import defaultdict

import numpy as np

logger = logging.getLogger(__name__)

MAX_HAMMING = 8  # bits, of 64
MIN_COSINE = 0.9
BANDS = 4  # 16-bit bands of each hash
NEIGHBOURS = 8  # nearest sketches per row that become candidates
MAX_BUCKET = 256  # a band shared by more rows: its rows are chained, not paired all with all


def parse_hashes(values) -> list[np.ndarray | None]:
    """``copy_hash`` cells -> arrays of uint64 (None for a row without)."""
    found = []
    for value in values:
        text = "" if value is None or (isinstance(value, float) and np.isnan(value)) else value
        parts = [p for p in str(text).split(",") if p]
        found.append(np.array([int(p, 16) for p in parts], dtype=np.uint64) if parts else None)
    return found


def parse_sketches(values) -> np.ndarray:
    """``copy_sketch`` cells -> [rows, 64] float32, NaN rows where there is none."""
    from clipdet.pipeline.extensions.copy_keys import SKETCH_DIM

    out = np.full((len(values), SKETCH_DIM), np.nan, dtype=np.float32)
    for row, value in enumerate(values):
        if isinstance(value, str) and value:
            out[row] = np.frombuffer(base64.b64decode(value), dtype=np.float16)
    return out


def find_copies(hashes, sketches=None) -> np.ndarray:
    """A group label per row (``g<first row>``); rows without a hash are groups of their
    own."""
    hashes = parse_hashes(hashes)
    n = len(hashes)
    vectors = parse_sketches(sketches) if sketches is not None else np.full((n, 1), np.nan)
    parent = np.arange(n)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in sorted(_candidates(hashes, vectors)):
        if _copies(hashes[i], hashes[j], vectors[i], vectors[j]):
            a, b = root(i), root(j)
            if a != b:
                parent[max(a, b)] = min(a, b)
    return np.array([f"g{root(i)}" for i in range(n)], dtype=object)


def _copies(h1, h2, v1, v2) -> bool:
    if h1 is None or h2 is None or hash_distance(h1, h2) > MAX_HAMMING:
        return False
    if np.isnan(v1).any() or np.isnan(v2).any():
        return True
    return float(v1 @ v2) >= MIN_COSINE


def hash_distance(h1: np.ndarray, h2: np.ndarray) -> int:
    """Bits apart: whole against whole, or one's central crop against the other whole (a
    mild crop of a copy); never crop against crop (two shots that differ at their edges)."""
    pairs = [(h1[0], h2[0]), *((c, h2[0]) for c in h1[1:]), *((h1[0], c) for c in h2[1:])]
    return min(int(a ^ b).bit_count() for a, b in pairs)


def _candidates(hashes, vectors) -> set[tuple[int, int]]:
    pairs: set[tuple[int, int]] = set()
    buckets: dict[tuple[int, int], list[int]] = defaultdict(list)
    for row, found in enumerate(hashes):
        if found is None:
            continue
        for value in {int(v) for v in found}:
            for band in range(BANDS):
                buckets[(band, (value >> (16 * band)) & 0xFFFF)].append(row)
    for rows in buckets.values():
        members = sorted(set(rows))
        if len(members) <= MAX_BUCKET:
            pairs.update((a, b) for k, a in enumerate(members) for b in members[k + 1 :])
        else:  # many rows share it (many copies, or flat images): each with the next
            pairs.update(zip(members, members[1:], strict=False))
    pairs.update(_neighbours(vectors))
    return pairs


def _neighbours(vectors: np.ndarray) -> set[tuple[int, int]]:
    """Each row's nearest sketches (by cosine, above MIN_COSINE) as candidate pairs."""
    rows = np.flatnonzero(~np.isnan(vectors).any(axis=1))
    if len(rows) < 2:
        return set()
    found = vectors[rows].astype(np.float32)
    k = min(NEIGHBOURS + 1, len(rows))
    try:
        import faiss

        index = faiss.IndexFlatIP(found.shape[1])
        index.add(found)
        similarity, neighbour = index.search(found, k)
    except ImportError:  # numpy blocks: fine up to ~10^5 rows
        similarity = np.empty((len(found), k), np.float32)
        neighbour = np.empty((len(found), k), np.int64)
        for start in range(0, len(found), 2048):
            block = found[start : start + 2048] @ found.T
            top = np.argsort(-block, axis=1)[:, :k]
            neighbour[start : start + 2048] = top
            similarity[start : start + 2048] = np.take_along_axis(block, top, axis=1)
    pairs = set()
    for i, (sims, others) in enumerate(zip(similarity, neighbour, strict=True)):
        for s, j in zip(sims, others, strict=True):
            if j >= 0 and j != i and s >= MIN_COSINE:
                a, b = sorted((int(rows[i]), int(rows[j])))
                pairs.add((a, b))
    return pairs


def group_folder(folder: str) -> tuple[int, int]:
    """A streamed run's groups (--group auto), from a pass over its parts: written beside them
    as ``_groups.parquet`` (each part row's source columns, filename, group and group_size).
    Returns (rows, groups)."""
    from clipdet import storage
    from clipdet.constants import (
        FILENAME_COLUMN,
        GROUP_COLUMN,
        GROUP_SIZE_COLUMN,
        SOURCE_COLUMN,
        SOURCE_ROW_COLUMN,
    )
    from clipdet.files import read_scores_folder, table_bytes
    from clipdet.pipeline.extensions.copy_keys import KEY_COLUMNS

    table = read_scores_folder(folder)
    missing = [c for c in KEY_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{folder} has no {', '.join(missing)}: score it with --group auto")
    labels = find_copies(*(table[c].tolist() for c in KEY_COLUMNS))
    failed = table["error"].fillna("").astype(str).to_numpy() != ""
    labels = np.where(failed, [f"#{row}" for row in range(len(labels))], labels)
    keep = [c for c in (SOURCE_COLUMN, SOURCE_ROW_COLUMN, FILENAME_COLUMN) if c in table]
    out = table[keep].copy()
    out[GROUP_COLUMN] = labels
    out[GROUP_SIZE_COLUMN] = out[GROUP_COLUMN].map(out[GROUP_COLUMN].value_counts())
    storage.write_bytes(storage.join(folder, "_groups.parquet"), table_bytes(out, "parquet"))
    return len(out), int(out[GROUP_COLUMN].nunique())
