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
    scores: np.ndarray,
    k: int,
    exclude: sp.csr_matrix | None = None,
    allowed: np.ndarray | None = None,
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
    allowed
        Boolean mask over the columns; columns outside it are never returned.

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
    if allowed is not None:
        scores[:, ~allowed] = -np.inf
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

    def feature_scores(self, feature_rows: sp.csr_matrix) -> np.ndarray:
        """Scores of employees described by feature rows against every training."""
        vectors = np.asarray(feature_rows @ self.bundle.user_feature_embeddings, dtype=np.float32)
        biases = np.asarray(feature_rows @ self.bundle.user_feature_biases, dtype=np.float32)
        return self.factors.scores(vectors, biases)

    def for_feature_rows(
        self,
        feature_rows: sp.csr_matrix,
        k: int,
        exclude: sp.csr_matrix | None = None,
        allowed: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k of employees described by feature rows (new employees: attributes only)."""
        return top_k(self.feature_scores(feature_rows), k, exclude, allowed)

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

    def similar(
        self, item_row: int, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` trainings closest to one training (cosine of their representations).

        A training nobody took still has a representation from its attributes, so it
        gets neighbours too.
        """
        sims = (self._unit_items @ self._unit_items[item_row])[None, :]
        sims[0, item_row] = -np.inf
        indices, scores = top_k(sims, k, allowed=allowed)
        return indices[0], scores[0]

    def explain(
        self, feature_row: sp.csr_matrix, item_rows: np.ndarray, n_user: int, n_item: int
    ) -> list[tuple[list[tuple[int, float]], list[tuple[int, float]]]]:
        """Why each training scores high for one employee, from factor contributions.

        The score is bilinear in the feature rows, so it splits exactly into one term
        per employee feature (``w_f * e_f · V_item``) and one per training feature
        (``w_g * (e_g · U + b_g)``). Employee biases are the same for every training and
        identity features say "you are you": neither explains anything, so both are
        left out. Returns, per training, the ``n_user`` largest employee
        feature terms and the ``n_item`` largest training feature terms, as
        ``(feature column, contribution)`` pairs, positive ones only.
        """
        bundle = self.bundle
        user_cols, user_weights = feature_row.indices, feature_row.data
        user_named = ~np.char.startswith(bundle.user_feature_names[user_cols], IDENTITY)
        user_cols, user_weights = user_cols[user_named], user_weights[user_named]
        vector = np.asarray(feature_row @ bundle.user_feature_embeddings).ravel()
        # An employee feature's bias is the same for every training: it cannot explain
        # why this one ranks high, so only the interaction term counts.
        user_terms = (
            bundle.user_feature_embeddings[user_cols] @ self.factors.item_vectors[item_rows].T
        ) * user_weights[:, None]  # features x trainings
        answers = []
        for j, item in enumerate(item_rows):
            row = bundle.item_features[item]
            named = ~np.char.startswith(bundle.item_feature_names[row.indices], IDENTITY)
            cols, weights = row.indices[named], row.data[named]
            item_terms = weights * (
                bundle.item_feature_embeddings[cols] @ vector + bundle.item_feature_biases[cols]
            )
            answers.append(
                (
                    _largest(user_cols, user_terms[:, j], n_user),
                    _largest(cols, item_terms, n_item),
                )
            )
        return answers


IDENTITY = "id:"


def _largest(columns: np.ndarray, terms: np.ndarray, n: int) -> list[tuple[int, float]]:
    order = np.argsort(-terms, kind="stable")[:n]
    return [(int(columns[i]), float(terms[i])) for i in order if terms[i] > 0]


def select(
    ranked: np.ndarray,
    scores: np.ndarray,
    n: int,
    *,
    allowed: np.ndarray,
    pinned: list[tuple[int, float]],
    taken: np.ndarray,
    caps: list[tuple[np.ndarray, int]],
) -> tuple[list[tuple[int, float, bool]], bool]:
    """Apply the business rules to one employee's ranked candidates.

    Pinned trainings ``(row, score)`` that are allowed and not taken come first,
    then the ranked candidates that are allowed and within the diversity caps
    (``caps``: per capped attribute, the value code of every training and the most
    results allowed per value).

    Returns the chosen ``(training row, score, pinned)`` triples and whether the
    candidates ran out before ``n`` (the caller may then rank deeper).
    """
    chosen: list[tuple[int, float, bool]] = []
    per_value: list[dict[int, int]] = [{} for _ in caps]
    seen = set(taken.tolist())

    def take(row: int, score: float, is_pinned: bool) -> None:
        codes = [int(values[row]) for values, _ in caps]
        for count, code, (_, limit) in zip(per_value, codes, caps, strict=True):
            if count.get(code, 0) >= limit:
                return
        for count, code in zip(per_value, codes, strict=True):
            count[code] = count.get(code, 0) + 1
        chosen.append((row, score, is_pinned))
        seen.add(row)

    for row, score in pinned:
        if len(chosen) < n and allowed[row] and row not in seen:
            take(row, score, True)
    for row, score in zip(ranked.tolist(), scores.tolist(), strict=True):
        if len(chosen) >= n:
            return chosen, False
        if row != NO_ITEM and allowed[row] and row not in seen:
            take(row, score, False)
    return chosen, len(chosen) < n
