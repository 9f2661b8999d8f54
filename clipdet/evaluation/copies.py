"""Near-duplicate groups: which rows of a run are copies of one picture (--group auto).

Two rows are copies when their perceptual hashes (``copy_hash``: pHash of the border-trimmed
image and of its central 90 % and 80 %) come within ``MAX_HAMMING`` bits whole against whole
(and their 256-bit hashes within ``MAX_FINE_HAMMING``: finer, so more of an edit shows
there), or within ``MAX_CROP_HAMMING`` one's central crop against the other whole, **and**
their feature sketches (``copy_sketch``) have a cosine of at least ``MIN_COSINE`` (where both
have one), **unless** the two frame the same picture (whole against whole) and their colour
thumbnails differ in one place by more than ``MAX_LOCAL_CHANGE`` (an object added or removed:
an edit, not a copy). Copies of copies join one group (connected components).

No pair is compared blindly: candidates come from an index. Each 64-bit hash is cut into four
16-bit bands; rows are sorted by each band's value, and rows that share a value and lie within
``WINDOW`` places of each other are candidates (every pair within 3 bits shares a band); and,
when the rows have sketches, each row's ``NEIGHBOURS`` nearest sketches (faiss: exact up to
``EXACT_LIMIT`` rows, HNSW beyond; numpy blocks without faiss) are candidates too. Candidates
are verified in arrays, and the groups are the connected components of the verified pairs.
The rule and its measured precision, recall, time and memory: docs/thresholds.md."""

import base64
import logging
from dataclasses import dataclass, field

import numpy as np

from clipdet.pipeline.extensions.copy_keys import CENTRES, FINE_HASH_SIZE, SKETCH_DIM, THUMB_SIDE

logger = logging.getLogger(__name__)

MAX_HAMMING = 8  # bits, of 64, whole against whole
MAX_CROP_HAMMING = 6  # bits, of 64, a central crop against a whole
MIN_COSINE = 0.9
BANDS = 4  # 16-bit bands of each hash
WINDOW = 8  # rows sharing a band value: each is a candidate of the next WINDOW in its run
CHUNK = 1_000_000  # candidate pairs verified at a time
NEIGHBOURS = 8  # nearest sketches per row that become candidates
EXACT_LIMIT = 50_000  # rows up to which sketches' neighbours are exact (faiss flat index)
HASHES = len(CENTRES)  # per row: the trimmed image, its central 90 % and 80 %
FINE_WORDS = FINE_HASH_SIZE**2 // 64  # the 256-bit hash of the trimmed image, in 64-bit words
MAX_FINE_HAMMING = 18  # bits, of 256: copies measured <= 14 (an object moved 6 px: 4-24)
# the largest cell of two same-framed thumbnails' difference (each thumbnail centred per
# channel and scaled by its spread): laundered copies measured <= 0.42, objects added 0.4-3.4
MAX_LOCAL_CHANGE = 0.5
THUMB_BYTES = THUMB_SIDE * THUMB_SIDE * 3  # one thumbnail; a row holds one per part (CENTRES)
THUMB_TEXT = HASHES * THUMB_BYTES * 4 // 3  # a row's thumbnails in base64 (no padding)
MAX_CROP_CHANGE = 0.9  # the same, one's central part against the other whole (less aligned)


def parse_hashes(values) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``copy_hash`` cells -> ([rows, 3] uint64 hashes, [rows, 4] uint64 words of the fine
    hash, [rows] whether the row has hashes at all, [rows, 192] uint8 thumbnails: all zero
    where a cell holds none, as files written before them)."""
    out = np.zeros((len(values), HASHES), dtype=np.uint64)
    fine = np.zeros((len(values), FINE_WORDS), dtype=np.uint64)
    present = np.zeros(len(values), dtype=bool)
    thumbs = np.zeros((len(values), HASHES, THUMB_BYTES), dtype=np.uint8)
    thumb_rows, thumb_texts = [], []  # decoded together below: one base64 pass, not a row's
    for row, value in enumerate(values):
        if isinstance(value, str) and value:
            present[row] = True
            parts = value.split(",")
            out[row] = [int(p, 16) for p in parts[:HASHES]]
            if len(parts) > HASHES:
                text = parts[HASHES].rjust(16 * FINE_WORDS, "0")
                fine[row] = [int(text[16 * w : 16 * (w + 1)], 16) for w in range(FINE_WORDS)]
            if len(parts) > HASHES + 1 and len(parts[HASHES + 1]) == THUMB_TEXT:
                thumb_rows.append(row)
                thumb_texts.append(parts[HASHES + 1])
    if thumb_rows:  # unpadded base64 (576 bytes a row): the rows' texts decode as one
        decoded = np.frombuffer(base64.b64decode("".join(thumb_texts)), dtype=np.uint8)
        thumbs[thumb_rows] = decoded.reshape(len(thumb_rows), HASHES, THUMB_BYTES)
    return out, fine, present, thumbs


def parse_sketches(values, rows: int) -> np.ndarray:
    """``copy_sketch`` cells -> [rows, 64] float32, NaN rows where there is none."""
    out = np.full((rows, SKETCH_DIM), np.nan, dtype=np.float32)
    for row, value in enumerate(values if values is not None else []):
        if isinstance(value, str) and value:
            out[row] = np.frombuffer(base64.b64decode(value), dtype=np.float16)
    return out


def popcount(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.uint64)
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x).astype(np.int64)
    return np.unpackbits(x.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1).reshape(x.shape)


def find_copies(hashes, sketches=None) -> np.ndarray:
    """A group label per row (``g<first row of the group>``); rows without a hash are
    groups of their own."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    rows = _Keys(*parse_hashes(hashes), vectors=parse_sketches(sketches, len(hashes)))
    n = len(rows.codes)
    candidates = [_hash_candidates(rows.codes, rows.present, n), _neighbours(rows.vectors, n)]
    keys = np.unique(np.concatenate(candidates))
    pairs = np.column_stack([keys // max(n, 1), keys % max(n, 1)])
    verified = [pairs[start : start + CHUNK][_verified(pairs[start : start + CHUNK], rows)]
                for start in range(0, len(pairs), CHUNK)]  # fmt: skip
    pairs = np.concatenate(verified) if verified else np.zeros((0, 2), dtype=np.int64)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    first = np.full(component.max() + 1 if n else 0, n, dtype=np.int64)
    np.minimum.at(first, component, np.arange(n))
    return np.array([f"g{first[c]}" for c in component], dtype=object)


def route_distances(a, b, fine_a=None, fine_b=None) -> tuple[np.ndarray, np.ndarray]:
    """Bits apart per pair of rows ([pairs, 3] each), by each way copies can match: (whole
    against whole, MAX_HAMMING + 1 where the fine hashes disagree; the fewest one's central
    crop against the other whole: a mild crop of a copy). Never crop against crop (two shots
    that differ only at their edges)."""
    whole = popcount(a[:, 0] ^ b[:, 0])
    if fine_a is not None:
        close = popcount(fine_a ^ fine_b).sum(axis=1) <= MAX_FINE_HAMMING
        whole = np.where(close, whole, MAX_HAMMING + 1)
    return whole, _crop_bits(a, b).min(axis=0)


def _crop_bits(a, b) -> np.ndarray:
    """[routes, pairs] bits apart: a's central parts against b whole, then b's against a."""
    crops = [a[:, k] ^ b[:, 0] for k in range(1, HASHES)]
    crops += [a[:, 0] ^ b[:, k] for k in range(1, HASHES)]
    return np.array([popcount(c) for c in crops])


def local_change(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The largest cell of the difference of two thumbnails ([pairs, 192] uint8 each), each
    centred per channel and scaled by its own spread (so a global change of brightness or
    contrast, as recompression makes, counts for nothing): an object added to one shows as
    a cell far above MAX_LOCAL_CHANGE."""

    def normalised(t):
        t = t.reshape(len(t), THUMB_SIDE * THUMB_SIDE, 3).astype(np.float32)
        t -= t.mean(axis=1, keepdims=True)
        return t / (t.std(axis=(1, 2), keepdims=True) + 1e-6)

    return np.abs(normalised(a) - normalised(b)).mean(axis=2).max(axis=1)


@dataclass
class _Keys:
    """Every row's parsed keys (``parse_hashes``, ``parse_sketches``) and, once, which rows
    have thumbnails and sketches at all."""

    codes: np.ndarray
    fine: np.ndarray
    present: np.ndarray
    thumbs: np.ndarray
    vectors: np.ndarray
    has_thumb: np.ndarray = field(init=False)
    has_sketch: np.ndarray = field(init=False)

    def __post_init__(self):
        self.has_thumb = self.thumbs.any(axis=(1, 2))
        self.has_sketch = ~np.isnan(self.vectors).any(axis=1)


def _verified(pairs, rows: _Keys) -> np.ndarray:
    i, j = pairs[:, 0], pairs[:, 1]
    ok = rows.present[i] & rows.present[j]
    whole, crop = route_distances(rows.codes[i], rows.codes[j], rows.fine[i], rows.fine[j])
    same_frame = whole <= MAX_HAMMING
    ok &= same_frame | (crop <= MAX_CROP_HAMMING)
    both = np.flatnonzero(ok & rows.has_thumb[i] & rows.has_thumb[j])
    ok[both] = ~_edited(i[both], j[both], same_frame[both], rows.codes, rows.thumbs)
    check = np.flatnonzero(ok & rows.has_sketch[i] & rows.has_sketch[j])
    cosine = np.einsum("ij,ij->i", rows.vectors[i[check]], rows.vectors[j[check]])
    ok[check] = cosine >= MIN_COSINE
    return ok


def _edited(i, j, same_frame, codes, thumbs) -> np.ndarray:
    """Whether each joining pair is an edit: one place of their thumbnails changed, the
    thumbnails of the parts that frame the same view (whole against whole; else the central
    part whose hash matched against the other whole)."""
    route = _crop_bits(codes[i], codes[j]).argmin(axis=0)  # a's part k + 1, or b's
    half = HASHES - 1
    part_i = np.where(same_frame, 0, np.where(route < half, route + 1, 0))
    part_j = np.where(same_frame, 0, np.where(route < half, 0, route - half + 1))
    change = local_change(thumbs[i, part_i], thumbs[j, part_j])
    return change > np.where(same_frame, MAX_LOCAL_CHANGE, MAX_CROP_CHANGE)


def _pair_keys(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    """Unordered pairs as one int64 each (smaller * n + larger)."""
    low, high = np.minimum(a, b).astype(np.int64), np.maximum(a, b).astype(np.int64)
    return low * n + high


def _hash_candidates(codes: np.ndarray, present: np.ndarray, n: int) -> np.ndarray:
    """Rows sharing a 16-bit band of any of their hashes, within WINDOW places in the order
    of that band's values (as pair keys)."""
    rows = np.repeat(np.flatnonzero(present), HASHES)  # every hash of every row, together
    found = []
    for band in range(BANDS):
        values = (codes[present] >> np.uint64(16 * band)) & np.uint64(0xFFFF)
        values = values.astype(np.int64).ravel()
        order = np.argsort(values, kind="stable")
        keys, members = values[order], rows[order]
        band_pairs = []
        for step in range(1, WINDOW + 1):
            same = (keys[step:] == keys[:-step]) & (members[step:] != members[:-step])
            band_pairs.append(_pair_keys(members[:-step][same], members[step:][same], n))
        found.append(np.unique(np.concatenate(band_pairs)))
    return np.concatenate(found) if found else np.zeros(0, dtype=np.int64)


def _neighbours(vectors: np.ndarray, n: int) -> np.ndarray:
    """Each row's nearest sketches (cosine at least MIN_COSINE) as candidate pair keys."""
    rows = np.flatnonzero(~np.isnan(vectors).any(axis=1))
    if len(rows) < 2:
        return np.zeros(0, dtype=np.int64)
    found = np.ascontiguousarray(vectors[rows], dtype=np.float32)
    k = min(NEIGHBOURS + 1, len(rows))
    try:
        import faiss

        if len(rows) <= EXACT_LIMIT:
            index = faiss.IndexFlatIP(found.shape[1])
        else:  # approximate beyond: graph search, no all-pairs product
            index = faiss.IndexHNSWFlat(found.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
        index.add(found)
        similarity, neighbour = index.search(found, k)
    except ImportError:  # numpy blocks: fine up to ~10^5 rows
        similarity = np.empty((len(found), k), np.float32)
        neighbour = np.empty((len(found), k), np.int64)
        for start in range(0, len(found), 2048):
            block = found[start : start + 2048] @ found.T
            top = np.argpartition(-block, k - 1, axis=1)[:, :k]
            neighbour[start : start + 2048] = top
            similarity[start : start + 2048] = np.take_along_axis(block, top, axis=1)
    source = np.repeat(np.arange(len(rows)), k)
    target, similarity = neighbour.ravel(), similarity.ravel()
    keep = (target >= 0) & (target != source) & (similarity >= MIN_COSINE)
    return _pair_keys(rows[source[keep]], rows[target[keep]], n)


def group_folder(folder: str) -> tuple[int, int]:
    """A streamed run's groups (--group auto), from a pass over its parts: written beside them
    as ``_groups.parquet`` (each part row's source columns, filename, group and group_size).
    Returns (rows, groups)."""
    from clipdet import storage
    from clipdet.constants import (
        ERROR_COLUMN,
        FILENAME_COLUMN,
        GROUP_COLUMN,
        SOURCE_COLUMN,
        SOURCE_ROW_COLUMN,
    )
    from clipdet.evaluation.groups import add_group_columns
    from clipdet.files import read_scores_folder, table_bytes
    from clipdet.pipeline.extensions.copy_keys import KEY_COLUMNS

    table = read_scores_folder(folder)
    missing = [c for c in KEY_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{folder} has no {', '.join(missing)}: score it with --group auto")
    labels = find_copies(*(table[c].tolist() for c in KEY_COLUMNS))
    keep = [
        c for c in (SOURCE_COLUMN, SOURCE_ROW_COLUMN, FILENAME_COLUMN, ERROR_COLUMN) if c in table
    ]
    out = add_group_columns(table[keep], labels, failed_alone=True)
    out = out.drop(columns=[ERROR_COLUMN], errors="ignore")
    storage.write_bytes(storage.join(folder, "_groups.parquet"), table_bytes(out, "parquet"))
    return len(out), int(out[GROUP_COLUMN].nunique())
