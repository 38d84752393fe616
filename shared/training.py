"""LightFM fit with early stopping on a validation split and per-epoch progress.

LightFM comes from the ``rectools-lightfm`` distribution (imports as ``lightfm``):
the PyPI ``lightfm`` source release no longer builds (lyst/lightfm#687). It is
imported here only, inside the functions, so serving never loads it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from shared.scoring import NO_ITEM, Factors
from shared.settings import Hyperparameters

if TYPE_CHECKING:
    from lightfm import LightFM


@dataclass(frozen=True)
class EpochRecord:
    """One epoch: its number (1-based), wall time and validation precision@k."""

    epoch: int
    seconds: float
    validation_precision: float | None


@dataclass
class FitResult:
    model: LightFM
    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0


ProgressFn = Callable[[EpochRecord, int], None]  # (record, total epochs)


def factors_of(
    model: LightFM, user_features: sp.csr_matrix, item_features: sp.csr_matrix
) -> Factors:
    """The model's per-row representations, as serving computes them."""
    return Factors.from_features(
        user_features,
        model.user_embeddings,
        model.user_biases,
        item_features,
        model.item_embeddings,
        model.item_biases,
    )


# Early stopping compares epochs with each other: precision@k over this many employees
# (a fixed random sample when there are more) tells them apart as well as over all of
# them, and scoring 300,000 employees after every epoch would cost a good part of it.
VALIDATION_USERS = 25_000


def validation_rows(
    validation: sp.csr_matrix, seed: int, most: int = VALIDATION_USERS
) -> np.ndarray:
    """The employees early stopping scores: those with validation interactions, at most ``most``."""
    rows = np.flatnonzero(np.diff(validation.tocsr().indptr) > 0)
    if len(rows) > most:
        rows = np.sort(np.random.default_rng(seed).choice(rows, size=most, replace=False))
    return rows


def validation_precision(
    factors: Factors,
    exclude: sp.csr_matrix,
    validation: sp.csr_matrix,
    k: int,
    rows: np.ndarray | None = None,
) -> float:
    """precision@k over ``rows`` (default: every employee with validation interactions).

    The figure :func:`shared.evaluation.ranking_metrics` reports as ``precision``,
    without its other metrics: early stopping needs only this one, after every epoch,
    and the AUC's full ranking of every training would cost more than the epoch.
    """
    validation = validation.tocsr()
    if rows is None:
        rows = np.flatnonzero(np.diff(validation.indptr) > 0)
    if len(rows) == 0:
        return 0.0
    best, _ = factors.top_k(
        factors.user_vectors[rows], factors.user_biases[rows], k, exclude.tocsr()[rows]
    )
    truth = validation[rows]
    n_items = truth.shape[1]
    owners = np.repeat(np.arange(len(rows), dtype=np.int64), np.diff(truth.indptr))
    relevant = owners * n_items + truth.indices
    found = np.arange(len(rows), dtype=np.int64)[:, None] * n_items + best
    hits = np.isin(found, relevant) & (best != NO_ITEM)
    return float((hits.sum(axis=1) / k).sum()) / len(rows)


_STATE = (
    "user_embeddings",
    "item_embeddings",
    "user_biases",
    "item_biases",
)


def fit(
    interactions: sp.csr_matrix,
    user_features: sp.csr_matrix,
    item_features: sp.csr_matrix,
    params: Hyperparameters,
    *,
    weights: sp.csr_matrix | None = None,
    validation: sp.csr_matrix | None = None,
    k: int = 10,
    epochs: int | None = None,
    progress: ProgressFn | None = None,
) -> FitResult:
    """Fit LightFM one epoch at a time.

    With ``validation`` (held-out interactions of the same employees), precision@k
    is measured after each epoch (over at most ``VALIDATION_USERS`` of them);
    training stops after ``params.patience`` epochs without improvement and the
    best epoch's parameters are kept.

    Parameters
    ----------
    interactions
        Binary employees x trainings matrix to learn from.
    epochs
        Overrides ``params.epochs`` (the final refit uses the best epoch found).
    """
    from lightfm import LightFM

    model = LightFM(
        no_components=params.no_components,
        loss=params.loss,
        learning_rate=params.learning_rate,
        learning_schedule=params.learning_schedule,
        item_alpha=params.item_alpha,
        user_alpha=params.user_alpha,
        max_sampled=params.max_sampled,
        random_state=np.random.RandomState(params.random_state),
    )
    coo = interactions.tocoo()
    sample_weight = None
    if params.use_weights and weights is not None:
        # LightFM wants the weights in the interactions' own order, and ``weights`` may
        # cover more than them (the whole history while fitting on a split).
        picked = np.asarray(weights.tocsr()[coo.row, coo.col], dtype=np.float32).ravel()
        sample_weight = sp.coo_matrix((picked, (coo.row, coo.col)), shape=coo.shape)
    total = epochs or params.epochs
    result = FitResult(model)
    best_score = -1.0
    best_state: dict[str, np.ndarray] = {}
    scored = None if validation is None else validation_rows(validation, params.random_state)
    for epoch in range(1, total + 1):
        started = time.perf_counter()
        model.fit_partial(
            coo,
            user_features=user_features,
            item_features=item_features,
            sample_weight=sample_weight,
            epochs=1,
            num_threads=params.num_threads,
        )
        score = None
        if validation is not None:
            factors = factors_of(model, user_features, item_features)
            score = validation_precision(factors, interactions, validation, k, scored)
        record = EpochRecord(epoch, time.perf_counter() - started, score)
        result.history.append(record)
        if progress is not None:
            progress(record, total)
        if score is None:
            result.best_epoch = epoch
            continue
        if score > best_score:
            best_score, result.best_epoch = score, epoch
            best_state = {name: getattr(model, name).copy() for name in _STATE}
        elif epoch - result.best_epoch >= params.patience and params.early_stopping:
            break
    for name, value in best_state.items():
        getattr(model, name)[...] = value
    return result
