"""LightFM fit: deterministic for a seed, early stopping keeps the best epoch, progress."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from shared.evaluation import holdout, ranking_metrics
from shared.settings import Hyperparameters
from shared.training import EpochRecord, FitResult, factors_of, fit

N_USERS, N_ITEMS = 60, 30


def features(n: int, n_attributes: int, rng: np.random.Generator) -> sp.csr_matrix:
    """Identity plus one attribute per row, rows normalized."""
    attributes = np.zeros((n, n_attributes), dtype=np.float32)
    attributes[np.arange(n), rng.integers(0, n_attributes, n)] = 1
    dense = np.hstack([np.eye(n, dtype=np.float32), attributes]) / 2
    return sp.csr_matrix(dense)


@pytest.fixture(scope="module")
def data() -> tuple[sp.csr_matrix, sp.csr_matrix, sp.csr_matrix, sp.csr_matrix]:
    """Interactions split into train and validation, and the two feature matrices.

    Half of each employee's history follows their group (the attribute), half is noise,
    so validation precision rises for a few epochs and then wobbles.
    """
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 3, N_USERS)
    liked = (groups[:, None] == np.arange(N_ITEMS)[None, :] % 3) & (
        rng.random((N_USERS, N_ITEMS)) < 0.3
    )
    noise = rng.random((N_USERS, N_ITEMS)) < 0.1
    interactions = sp.csr_matrix((liked | noise).astype(np.float32))
    train, validation = holdout(interactions, 0.3, np.random.default_rng(1))
    user_features = sp.csr_matrix(
        np.hstack([np.eye(N_USERS), np.eye(3)[groups]]).astype(np.float32) / 2
    )
    item_features = features(N_ITEMS, 4, rng)
    return train, validation, user_features, item_features


def params(**overrides: object) -> Hyperparameters:
    base: dict[str, object] = {
        "no_components": 8,
        "epochs": 6,
        "num_threads": 1,
        "random_state": 13,
        "learning_rate": 0.05,
    }
    return Hyperparameters.model_validate({**base, **overrides})


def state(result: FitResult) -> list[np.ndarray]:
    model = result.model
    return [
        model.user_embeddings,
        model.item_embeddings,
        model.user_biases,
        model.item_biases,
    ]


def validation_precision(
    result: FitResult,
    data: tuple[sp.csr_matrix, sp.csr_matrix, sp.csr_matrix, sp.csr_matrix],
    k: int = 5,
) -> float:
    train, validation, user_features, item_features = data
    factors = factors_of(result.model, user_features, item_features)
    rows = np.arange(N_USERS)
    return ranking_metrics(factors.user_scores, rows, train, validation, k)["precision"]


def test_fit_is_deterministic_for_a_seed_with_one_thread(
    data: tuple[sp.csr_matrix, sp.csr_matrix, sp.csr_matrix, sp.csr_matrix],
) -> None:
    train, validation, user_features, item_features = data
    first = fit(train, user_features, item_features, params(), validation=validation, k=5)
    again = fit(train, user_features, item_features, params(), validation=validation, k=5)
    other = fit(
        train, user_features, item_features, params(random_state=14), validation=validation, k=5
    )
    for a, b in zip(state(first), state(again), strict=True):
        assert np.array_equal(a, b)
    assert [r.validation_precision for r in first.history] == [
        r.validation_precision for r in again.history
    ]
    assert first.best_epoch == again.best_epoch
    assert not np.array_equal(state(first)[0], state(other)[0])


def test_without_validation_every_epoch_runs_and_the_last_is_kept(
    data: tuple[sp.csr_matrix, sp.csr_matrix, sp.csr_matrix, sp.csr_matrix],
) -> None:
    train, _, user_features, item_features = data
    result = fit(train, user_features, item_features, params(epochs=4))
    assert [r.epoch for r in result.history] == [1, 2, 3, 4]
    assert all(r.validation_precision is None for r in result.history)
    assert result.best_epoch == 4
    assert result.model.user_embeddings.shape == (user_features.shape[1], 8)
    shorter = fit(train, user_features, item_features, params(epochs=4), epochs=2)
    assert len(shorter.history) == 2  # the epochs argument overrides the parameters


def test_early_stopping_stops_and_keeps_the_best_epoch(
    data: tuple[sp.csr_matrix, sp.csr_matrix, sp.csr_matrix, sp.csr_matrix],
) -> None:
    train, validation, user_features, item_features = data
    hp = params(epochs=40, patience=1, learning_rate=0.3)
    result = fit(train, user_features, item_features, hp, validation=validation, k=5)
    scores = [r.validation_precision for r in result.history]
    assert all(s is not None for s in scores)
    assert len(result.history) < 40  # stopped early
    # It stopped `patience` epochs after the best one, which is the best seen.
    assert len(result.history) == result.best_epoch + 1
    best = scores[result.best_epoch - 1]
    assert best == max(s for s in scores if s is not None)
    assert scores[-1] is not None and best is not None and scores[-1] < best
    # The model holds the best epoch's parameters, not the last epoch's.
    assert validation_precision(result, data) == pytest.approx(best, abs=1e-12)


@pytest.mark.parametrize("patience", [1, 3])
def test_patience_counts_epochs_without_improvement(
    data: tuple[sp.csr_matrix, sp.csr_matrix, sp.csr_matrix, sp.csr_matrix], patience: int
) -> None:
    train, validation, user_features, item_features = data
    hp = params(epochs=40, patience=patience, learning_rate=0.3)
    result = fit(train, user_features, item_features, hp, validation=validation, k=5)
    scores = [r.validation_precision or 0.0 for r in result.history]
    best_epoch = result.best_epoch
    # No epoch after the best one improved on it, and there were exactly `patience` of them.
    assert len(scores) == best_epoch + patience
    assert all(s <= scores[best_epoch - 1] for s in scores[best_epoch:])
    # Before the best epoch, each record was beaten within `patience` epochs.
    running_best, since = -1.0, 0
    for score in scores[:best_epoch]:
        since = 0 if score > running_best else since + 1
        running_best = max(running_best, score)
        assert since < patience


def test_without_early_stopping_every_epoch_runs(
    data: tuple[sp.csr_matrix, sp.csr_matrix, sp.csr_matrix, sp.csr_matrix],
) -> None:
    train, validation, user_features, item_features = data
    hp = params(epochs=8, patience=1, learning_rate=0.3, early_stopping=False)
    result = fit(train, user_features, item_features, hp, validation=validation, k=5)
    assert len(result.history) == 8


@pytest.mark.parametrize("with_validation", [False, True])
def test_progress_is_called_once_per_epoch(
    data: tuple[sp.csr_matrix, sp.csr_matrix, sp.csr_matrix, sp.csr_matrix],
    with_validation: bool,
) -> None:
    train, validation, user_features, item_features = data
    calls: list[tuple[EpochRecord, int]] = []
    result = fit(
        train,
        user_features,
        item_features,
        params(epochs=5),
        validation=validation if with_validation else None,
        k=5,
        progress=lambda record, total: calls.append((record, total)),
    )
    assert [record for record, _ in calls] == result.history
    assert [record.epoch for record, _ in calls] == list(range(1, len(result.history) + 1))
    assert {total for _, total in calls} == {5}
    assert all(record.seconds >= 0 for record, _ in calls)
    assert all((r.validation_precision is not None) == with_validation for r, _ in calls)


def test_sample_weights_may_cover_more_than_the_interactions(
    data: tuple[sp.csr_matrix, sp.csr_matrix, sp.csr_matrix, sp.csr_matrix],
) -> None:
    # The whole history's weights, while fitting on a split of it (as evaluation does).
    train, validation, user_features, item_features = data
    everything = (train + validation).tocsr()
    weights = everything.copy()
    weights.data = np.random.default_rng(3).integers(1, 6, weights.nnz).astype(np.float32)
    hp = params(epochs=2, use_weights=True)
    covering = fit(train, user_features, item_features, hp, weights=weights)
    exact = fit(train, user_features, item_features, hp, weights=weights.multiply(train).tocsr())
    unweighted = fit(train, user_features, item_features, params(epochs=2), weights=weights)
    for a, b in zip(state(covering), state(exact), strict=True):
        assert np.array_equal(a, b)  # weights outside the interactions play no part
    assert not np.array_equal(state(covering)[0], state(unweighted)[0])
