"""LightFM fit with early stopping on a validation split and per-epoch progress.

LightFM comes from the ``rectools-lightfm`` distribution (imports as ``lightfm``):
the PyPI ``lightfm`` source release no longer builds (lyst/lightfm#687). It is
imported here only, inside the functions, so serving never loads it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from shared.features import describe_employees
from shared.progress import NO_PROGRESS, Progress
from shared.scoring import NO_ITEM, Factors
from shared.settings import Hyperparameters

if TYPE_CHECKING:
    from lightfm import LightFM


@dataclass(frozen=True)
class EpochRecord:
    """One epoch: its number (1-based), wall time and validation precision@k
    (with its standard error over the validation employees, and smoothed over the
    last three epochs)."""

    epoch: int
    seconds: float
    validation_precision: float | None
    standard_error: float | None = None
    smoothed: float | None = None


@dataclass
class FitResult:
    model: LightFM
    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0


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
SMOOTHING = 3  # epochs averaged: one lucky epoch is not a trend


@dataclass(frozen=True)
class Validation:
    """What early stopping measures after each epoch: employees described by
    ``features`` (their history up to the validation part), ranked with ``exclude``
    left out, against the held-out ``truth``."""

    features: sp.csr_matrix
    exclude: sp.csr_matrix
    truth: sp.csr_matrix


def validation_rows(
    validation: sp.csr_matrix, seed: int, most: int = VALIDATION_USERS
) -> np.ndarray:
    """The employees early stopping scores: those with validation interactions, at most ``most``."""
    rows = np.flatnonzero(np.diff(validation.tocsr().indptr) > 0)
    if len(rows) > most:
        rows = np.sort(np.random.default_rng(seed).choice(rows, size=most, replace=False))
    return rows


def precision_per_row(
    factors: Factors,
    exclude: sp.csr_matrix,
    truth: sp.csr_matrix,
    k: int,
    rows: np.ndarray | None = None,
) -> np.ndarray:
    """precision@k of each of ``rows`` (default: every employee with some truth).

    The figure :func:`shared.evaluation.ranking_metrics` reports as ``precision``,
    without its other metrics: early stopping needs only this one, after every epoch,
    and the AUC's full ranking of every training would cost more than the epoch.
    """
    truth = truth.tocsr()
    if rows is None:
        rows = np.flatnonzero(np.diff(truth.indptr) > 0)
    if len(rows) == 0:
        return np.empty(0)
    best, _ = factors.top_k(
        factors.user_vectors[rows], factors.user_biases[rows], k, exclude.tocsr()[rows]
    )
    wanted = truth[rows]
    n_items = wanted.shape[1]
    owners = np.repeat(np.arange(len(rows), dtype=np.int64), np.diff(wanted.indptr))
    relevant = owners * n_items + wanted.indices
    found = np.arange(len(rows), dtype=np.int64)[:, None] * n_items + best
    hits = np.isin(found, relevant) & (best != NO_ITEM)
    return np.asarray(hits.sum(axis=1) / k, dtype=np.float64)


def fold_out(
    taken: sp.csr_matrix,
    successes: sp.csr_matrix,
    attributes: sp.csr_matrix,
    folds: int,
    seed: int,
    weights: sp.csr_matrix | None = None,
) -> tuple[sp.csr_matrix, sp.csr_matrix, sp.csr_matrix | None]:
    """Training rows that ask the model what serving asks: the next trainings from a history.

    Each employee's trainings taken are dealt into ``folds`` parts; the employee
    appears ``folds`` times, each time described by their attributes and the
    trainings of the other parts, and learning the successes of that part. Every
    success is learnt once, as with the plain rows, but never from a description
    that holds it already: with the target in the features, measured, the model
    learns "you took it" and fits degrade after a few epochs on short histories.

    Returns the interactions, the user features and the sample weights (when
    ``weights`` is given) of the ``folds * n_employees`` rows.
    """
    taken, successes = taken.tocsr(), successes.tocsr()
    coo = taken.tocoo()
    part = np.random.default_rng(seed).integers(0, folds, coo.nnz)
    # A success is learnt in the part its training taken was dealt into.
    part_of = sp.csr_matrix((part + 1.0, (coo.row, coo.col)), shape=taken.shape)
    targets, features, weight_parts = [], [], []
    success_part = np.asarray(part_of[successes.nonzero()]).ravel() - 1
    s_rows, s_cols = successes.nonzero()
    for fold in range(folds):
        mine = success_part == fold
        targets.append(
            sp.csr_matrix(
                (np.ones(int(mine.sum()), np.float32), (s_rows[mine], s_cols[mine])),
                shape=taken.shape,
            )
        )
        others = part != fold
        history = sp.csr_matrix(
            (np.ones(int(others.sum()), np.float32), (coo.row[others], coo.col[others])),
            shape=taken.shape,
        )
        features.append(describe_employees(attributes, history))
        if weights is not None:
            weight_parts.append(targets[-1].multiply(weights.tocsr()).tocsr())
    sample_weights = sp.vstack(weight_parts, format="csr") if weights is not None else None
    return sp.vstack(targets, format="csr"), sp.vstack(features, format="csr"), sample_weights


_STATE = (
    "user_embeddings",
    "item_embeddings",
    "user_biases",
    "item_biases",
)


@dataclass
class _Stopper:
    """Early stopping's bookkeeping: the smoothed curve, its best, and the epoch to keep.

    Each epoch's per-employee validation precision is averaged with the previous
    epochs' (:data:`SMOOTHING`). The kept epoch is the earliest whose smoothed figure
    is within one standard error of the best one, the error being that of their
    difference over the same employees (the "one standard error" rule): on a
    plateau every epoch is as good as the best within noise, and picking the noisy
    maximum made the best epoch jump between runs on the same data.
    """

    min_epochs: int
    patience: int
    smoothed: list[np.ndarray] = field(default_factory=list)  # per employee, per epoch
    recent: list[np.ndarray] = field(default_factory=list)
    best: int = 0  # 1-based epoch of the best smoothed figure
    kept: int = 0

    def add(self, per_row: np.ndarray) -> float:
        self.recent = [*self.recent[-(SMOOTHING - 1) :], per_row]
        self.smoothed.append(np.mean(self.recent, axis=0))
        means = [float(v.mean()) if len(v) else 0.0 for v in self.smoothed]
        if not self.best or means[-1] > means[self.best - 1]:
            self.best = len(means)
        top = self.smoothed[self.best - 1]
        for epoch in range(max(self.kept, 1), len(means) + 1):
            gap = top - self.smoothed[epoch - 1]
            error = float(gap.std() / np.sqrt(len(gap))) if len(gap) > 1 else 0.0
            if means[epoch - 1] >= means[self.best - 1] - error:
                self.kept = epoch
                break
        return means[-1]

    def should_stop(self) -> bool:
        epoch = len(self.smoothed)
        wait = max(self.patience, epoch // 4)  # patience in proportion to the run
        return epoch >= self.min_epochs and epoch - self.best >= wait


def _new_model(params: Hyperparameters) -> LightFM:
    from lightfm import LightFM

    return LightFM(
        no_components=params.no_components,
        loss=params.loss,
        learning_rate=params.learning_rate,
        learning_schedule=params.learning_schedule,
        item_alpha=params.item_alpha,
        user_alpha=params.user_alpha,
        max_sampled=params.max_sampled,
        random_state=np.random.RandomState(params.random_state),
    )


def _sample_weight(coo: sp.coo_matrix, weights: sp.csr_matrix | None) -> sp.coo_matrix | None:
    """The weights of the interactions, in their own order, as LightFM wants them:
    ``weights`` may cover more than them (the whole history while fitting on a split)."""
    if weights is None:
        return None
    picked = np.asarray(weights.tocsr()[coo.row, coo.col], dtype=np.float32).ravel()
    return sp.coo_matrix((picked, (coo.row, coo.col)), shape=coo.shape)


def fit(
    interactions: sp.csr_matrix,
    user_features: sp.csr_matrix,
    item_features: sp.csr_matrix,
    params: Hyperparameters,
    *,
    weights: sp.csr_matrix | None = None,
    validation: Validation | None = None,
    k: int = 10,
    epochs: int | None = None,
    progress: Progress = NO_PROGRESS,
) -> FitResult:
    """Fit LightFM one epoch at a time.

    With ``validation``, precision@k is measured after each epoch (over at most
    ``VALIDATION_USERS`` employees); training never stops before
    ``params.min_epochs``, stops once the smoothed figure has not improved for
    ``params.patience`` epochs (or a quarter of the epochs run, if more), and the
    model of the epoch kept (see :class:`_Stopper`) is restored.

    Parameters
    ----------
    interactions
        Binary rows x trainings matrix to learn from (rows: employees, or the
        pseudo-employees of :func:`fold_out`).
    user_features
        Feature rows of the same rows.
    weights
        Sample weights of the same entries (used when ``params.use_weights``).
    epochs
        Overrides ``params.epochs`` (the final refit uses the epochs found best).
    progress
        Told of each epoch (step ``fit``, in epochs, with the validation figure); an
        early stop ends the step at the epochs run.
    """
    model = _new_model(params)
    coo = interactions.tocoo()
    sample_weight = _sample_weight(coo, weights) if params.use_weights else None
    total = epochs or params.epochs
    result = FitResult(model)
    stopper = _Stopper(params.min_epochs, params.patience)
    states: dict[int, dict[str, np.ndarray]] = {}  # from the kept epoch on
    scored = None if validation is None else validation_rows(validation.truth, params.random_state)
    with progress.step("fit", total, "epochs") as step:
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
            if validation is None:
                result.history.append(EpochRecord(epoch, time.perf_counter() - started, None))
                result.best_epoch = epoch
                step.advance()
                continue
            factors = factors_of(model, validation.features, item_features)
            per_row = precision_per_row(factors, validation.exclude, validation.truth, k, scored)
            score = float(per_row.mean()) if len(per_row) else 0.0
            error = float(per_row.std() / np.sqrt(len(per_row))) if len(per_row) > 1 else 0.0
            states[epoch] = {name: getattr(model, name).copy() for name in _STATE}
            smoothed = stopper.add(per_row)
            for old in [e for e in states if e < stopper.kept]:
                del states[old]  # the kept epoch only moves forward
            record = EpochRecord(epoch, time.perf_counter() - started, score, error, smoothed)
            result.history.append(record)
            step.advance(note=f"validation precision@{k} {score:.4f}")
            if params.early_stopping and stopper.should_stop():
                if epoch < total:
                    step.set_total(epoch)  # stopped early: the epochs run are all there is
                break
    if validation is not None:
        result.best_epoch = stopper.kept
        for name, value in states[result.best_epoch].items():
            getattr(model, name)[...] = value
    return result
