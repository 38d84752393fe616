"""Scoring with numpy only: no LightFM import on the serving path.

LightFM scores ``U·V + b_user + b_item`` where ``U = F_user @ E_user`` and
``V = F_item @ E_item`` (feature rows times feature embeddings, biases alike), so
the exported factors reproduce ``LightFM.predict`` exactly (tested).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from shared.bundle import ModelBundle

NO_ITEM = -1  # fills a top-k row when fewer candidates than k remain


def top_k(
    scores: np.ndarray, k: int, exclude: sp.csr_matrix | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` columns of each row, best first, excluded columns never returned.

    Parameters
    ----------
    scores
        Float matrix, one row per employee; modified in place when ``exclude`` is given.
    k
        How many per row (at most the number of columns).
    exclude
        Sparse matrix of the same shape whose stored entries must not be returned.

    Returns
    -------
    (indices, scores)
        ``int32`` and ``float32`` arrays of shape ``(rows, min(k, columns))``;
        positions without a candidate hold ``NO_ITEM`` and ``-inf``.
    """
    n_rows, n_cols = scores.shape
    k = min(k, n_cols)
    if k <= 0:
        return np.empty((n_rows, 0), np.int32), np.empty((n_rows, 0), np.float32)
    if exclude is not None and exclude.nnz:
        owners = np.repeat(np.arange(n_rows), np.diff(exclude.indptr))
        scores[owners, exclude.indices] = -np.inf
    if k < n_cols:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(n_cols), (n_rows, n_cols))
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    best = np.take_along_axis(part, order, axis=1).astype(np.int32)
    best_scores = np.take_along_axis(part_scores, order, axis=1).astype(np.float32)
    best[~np.isfinite(best_scores)] = NO_ITEM
    return best, best_scores


@dataclass(frozen=True)
class Factors:
    """Per-row representations and biases (employees and trainings)."""

    user_vectors: np.ndarray  # n_users x k
    user_biases: np.ndarray
    item_vectors: np.ndarray  # n_items x k
    item_biases: np.ndarray

    @classmethod
    def from_features(
        cls,
        user_features: sp.csr_matrix,
        user_embeddings: np.ndarray,
        user_biases: np.ndarray,
        item_features: sp.csr_matrix,
        item_embeddings: np.ndarray,
        item_biases: np.ndarray,
    ) -> Factors:
        return cls(
            np.ascontiguousarray(user_features @ user_embeddings, dtype=np.float32),
            np.asarray(user_features @ user_biases, dtype=np.float32),
            np.ascontiguousarray(item_features @ item_embeddings, dtype=np.float32),
            np.asarray(item_features @ item_biases, dtype=np.float32),
        )

    def scores(self, vectors: np.ndarray, biases: np.ndarray) -> np.ndarray:
        """Scores of the given user representations against every training."""
        out: np.ndarray = vectors @ self.item_vectors.T
        out += biases[:, None]
        out += self.item_biases[None, :]
        return out

    def user_scores(self, rows: np.ndarray | slice) -> np.ndarray:
        return self.scores(self.user_vectors[rows], self.user_biases[rows])


class Recommender:
    """Top-k, new-employee and similar-training answers from one model bundle."""

    def __init__(self, bundle: ModelBundle) -> None:
        self.bundle = bundle
        self.factors = Factors.from_features(
            bundle.user_features,
            bundle.user_feature_embeddings,
            bundle.user_feature_biases,
            bundle.item_features,
            bundle.item_feature_embeddings,
            bundle.item_feature_biases,
        )
        norms = np.linalg.norm(self.factors.item_vectors, axis=1, keepdims=True)
        self._unit_items = self.factors.item_vectors / np.maximum(norms, 1e-12)

    def for_known(self, user_rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k of known employees (by row), trainings they took excluded."""
        scores = self.factors.user_scores(user_rows)
        return top_k(scores, k, self.bundle.taken[user_rows])

    def for_feature_rows(
        self, feature_rows: sp.csr_matrix, k: int, exclude: sp.csr_matrix | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k of employees described by feature rows (new employees: attributes only)."""
        vectors = np.asarray(feature_rows @ self.bundle.user_feature_embeddings, dtype=np.float32)
        biases = np.asarray(feature_rows @ self.bundle.user_feature_biases, dtype=np.float32)
        return top_k(self.factors.scores(vectors, biases), k, exclude)

    def for_all(self, k: int, chunk_size: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Top-k of every known employee, ``chunk_size`` at a time.

        Peak memory is one ``chunk_size x n_items`` score block, whatever the number
        of employees. Yields ``(first row, indices, scores)``.
        """
        n_users = len(self.bundle.user_ids)
        for start in range(0, n_users, chunk_size):
            rows = np.arange(start, min(start + chunk_size, n_users))
            indices, scores = self.for_known(rows, k)
            yield start, indices, scores

    def similar(self, item_row: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` trainings closest to one training (cosine of their representations)."""
        sims = (self._unit_items @ self._unit_items[item_row])[None, :]
        sims[0, item_row] = -np.inf
        indices, scores = top_k(sims, k)
        return indices[0], scores[0]
