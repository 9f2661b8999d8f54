"""On-disk cache of image features, keyed by file content and backbone identity.

Layout: ``<root>/<namespace>/<sha[:2]>/<sha>.npy`` where ``namespace`` hashes the backbone
identity (model, weights, feature layer, preprocessing) and ``sha`` is the sha256 of the image
file's bytes: a renamed file is a hit, a changed file a miss. An entry that cannot be read, has
the wrong shape or holds non-finite values is deleted and recomputed, never trusted.
"""

import hashlib
import io
import json
import logging
import os
from pathlib import Path

import numpy as np

from clipdet.storage import write_atomic

logger = logging.getLogger(__name__)


def namespace_for(identity: str) -> str:
    return hashlib.sha256(identity.encode()).hexdigest()[:20]


class FeatureCache:
    """Feature vectors (float32, 1-D) by (namespace, content digest)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.hits = 0
        self.misses = 0
        self.writes = 0

    def register(self, identity: str, dim: int) -> str:
        """Declare a backbone identity; returns its namespace (records identity and dim)."""
        namespace = namespace_for(identity)
        folder = self.root / namespace
        folder.mkdir(parents=True, exist_ok=True)
        meta = folder / "identity.json"
        if not meta.exists():
            meta.write_text(json.dumps({"identity": identity, "dim": dim}, indent=1))
        return namespace

    def _path(self, namespace: str, digest: str) -> Path:
        return self.root / namespace / digest[:2] / f"{digest}.npy"

    def get(self, namespace: str, digest: str, dim: int) -> np.ndarray | None:
        path = self._path(namespace, digest)
        if not path.exists():
            self.misses += 1
            return None
        try:
            features = np.load(path, allow_pickle=False)
            if features.dtype != np.float32 or features.shape != (dim,):
                raise ValueError(f"shape {features.shape}, dtype {features.dtype}")
            if not np.all(np.isfinite(features)):
                raise ValueError("non-finite values")
        except (OSError, ValueError, EOFError) as e:
            logger.warning("corrupt feature cache entry %s (%s): recomputing", path, e)
            path.unlink(missing_ok=True)
            self.misses += 1
            return None
        self.hits += 1
        return features

    def put(self, namespace: str, digest: str, features: np.ndarray) -> None:
        path = self._path(namespace, digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(features, dtype=np.float32))
        write_atomic(path, buffer.getvalue())
        self.writes += 1
