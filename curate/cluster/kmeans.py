"""Spherical k-means with FAISS: unit-length embeddings, unit-length centroids, nearest by cosine.

Sentence embeddings are compared by angle, so rows are L2-normalised and ``faiss.Kmeans(spherical=True)``
re-normalises the centroids after each step. FAISS trains on at most 256 rows per centroid (a seeded sample), so
fitting a million-row source costs what fitting ``256 * k`` rows does; every row is then assigned exactly.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from curate.errors import DependencyError

NITER = 25
"""Lloyd iterations (FAISS's default); recorded in a grouping's settings."""


def require_faiss() -> Any:
    """The ``faiss`` module, or a one-line error with the install line (checked before any embedding)."""
    try:
        import faiss
    except ImportError:
        raise DependencyError("curate cluster needs faiss: pip install 'curate[cluster]'") from None
    return faiss


def normalise(x: np.ndarray) -> np.ndarray:
    """``x`` as C-contiguous float32 rows of unit length, in place when it already is one (no second copy)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    require_faiss().normalize_L2(x)
    return x


def fit_centroids(x: np.ndarray, k: int, seed: int, niter: int = NITER) -> np.ndarray:
    """``k`` unit centroids of the unit rows ``x`` (``(n, d)`` float32, ``n >= k``), deterministic for a seed."""
    faiss = require_faiss()
    # min_points_per_centroid=1: a small source is fine to cluster, and FAISS would warn on stderr below 39 per k
    km = faiss.Kmeans(x.shape[1], k, niter=niter, seed=seed, spherical=True, min_points_per_centroid=1)
    km.train(x)
    return np.asarray(km.centroids, dtype=np.float32)


def nearest(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each unit row of ``x``: the index of its nearest centroid (by cosine) and that cosine."""
    faiss = require_faiss()
    index = faiss.IndexFlatIP(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    sims, ids = index.search(x, 1)
    return ids[:, 0].astype(np.int32), sims[:, 0]
