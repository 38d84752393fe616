"""LightFM fit: deterministic for a seed, early stopping keeps the best epoch, progress."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from shared.evaluation import holdout, measure, split
from shared.features import build_dataset
from shared.modeling import training_rows
from shared.progress import Recording
from shared.schema import parse_all
from shared.settings import Config, Hyperparameters
from shared.synthetic import generate
from shared.training import FitResult, Validation, factors_of, fit

N_USERS, N_ITEMS = 60, 30
Data = tuple[sp.csr_matrix, sp.csr_matrix, sp.csr_matrix, sp.csr_matrix]


def ranking_metrics(*args: Any, **kwargs: Any) -> dict[str, float]:
    """Every metric, AUC included."""
    return measure(*args, **kwargs).metrics


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


def validation_precision(result: FitResult, data: Data, k: int = 5) -> float:
    train, validation, user_features, item_features = data
    factors = factors_of(result.model, user_features, item_features)
    rows = np.arange(N_USERS)
    return ranking_metrics(factors.user_scores, rows, train, validation, k)["precision"]


def checked(data: Data) -> Validation:
    train, validation, user_features, _ = data
    return Validation(user_features, train, validation)


def test_fit_is_deterministic_for_a_seed_with_one_thread(data: Data) -> None:
    train, _, user_features, item_features = data
    first = fit(train, user_features, item_features, params(), validation=checked(data), k=5)
    again = fit(train, user_features, item_features, params(), validation=checked(data), k=5)
    other = fit(
        train,
        user_features,
        item_features,
        params(random_state=14),
        validation=checked(data),
        k=5,
    )
    for a, b in zip(state(first), state(again), strict=True):
        assert np.array_equal(a, b)
    assert [r.validation_precision for r in first.history] == [
        r.validation_precision for r in again.history
    ]
    assert first.best_epoch == again.best_epoch
    assert not np.array_equal(state(first)[0], state(other)[0])


def test_without_validation_every_epoch_runs_and_the_last_is_kept(data: Data) -> None:
    train, _, user_features, item_features = data
    result = fit(train, user_features, item_features, params(epochs=4))
    assert [r.epoch for r in result.history] == [1, 2, 3, 4]
    assert all(r.validation_precision is None for r in result.history)
    assert result.best_epoch == 4
    assert result.model.user_embeddings.shape == (user_features.shape[1], 8)
    shorter = fit(train, user_features, item_features, params(epochs=4), epochs=2)
    assert len(shorter.history) == 2  # the epochs argument overrides the parameters


def assert_stopped_by_the_rule(result: FitResult, min_epochs: int, patience: int) -> None:
    """The smoothed curve, where it stopped and what it kept, as the rule says."""
    raw = [r.validation_precision or 0.0 for r in result.history]
    smoothed = [r.smoothed or 0.0 for r in result.history]
    for epoch in range(1, len(raw) + 1):  # the mean of the last three epochs
        window = raw[max(0, epoch - 3) : epoch]
        assert smoothed[epoch - 1] == pytest.approx(sum(window) / len(window), abs=1e-12)

    def best_until(epoch: int) -> int:
        return int(np.argmax(smoothed[:epoch])) + 1  # the first of equal ones

    def stops_at(epoch: int) -> bool:
        wait = max(patience, epoch // 4)
        return epoch >= min_epochs and epoch - best_until(epoch) >= wait

    stopped = len(raw)
    assert stops_at(stopped)
    assert not any(stops_at(epoch) for epoch in range(1, stopped))
    best = best_until(stopped)
    # Kept: never after the best, never a worse plateau epoch than one within noise.
    assert 1 <= result.best_epoch <= best
    assert smoothed[result.best_epoch - 1] <= smoothed[best - 1]


@pytest.mark.parametrize(("min_epochs", "patience"), [(1, 1), (5, 3), (2, 6)])
def test_early_stopping_follows_the_smoothed_curve(
    data: Data, min_epochs: int, patience: int
) -> None:
    train, _, user_features, item_features = data
    hp = params(epochs=60, patience=patience, min_epochs=min_epochs, learning_rate=0.3)
    result = fit(train, user_features, item_features, hp, validation=checked(data), k=5)
    assert len(result.history) < 60  # stopped early
    assert len(result.history) >= min_epochs
    assert_stopped_by_the_rule(result, min_epochs, patience)
    # The model holds the kept epoch's parameters, not the last epoch's.
    kept = result.history[result.best_epoch - 1].validation_precision
    assert validation_precision(result, data) == pytest.approx(kept, abs=1e-12)


def test_without_early_stopping_every_epoch_runs(data: Data) -> None:
    train, _, user_features, item_features = data
    hp = params(epochs=8, patience=1, learning_rate=0.3, early_stopping=False)
    result = fit(train, user_features, item_features, hp, validation=checked(data), k=5)
    assert len(result.history) == 8


@pytest.mark.parametrize("with_validation", [False, True])
def test_progress_is_told_of_each_epoch_and_reaches_its_total(
    data: Data, with_validation: bool
) -> None:
    train, _, user_features, item_features = data
    recording = Recording()
    result = fit(
        train,
        user_features,
        item_features,
        params(epochs=5, patience=1, learning_rate=0.3),
        validation=checked(data) if with_validation else None,
        k=5,
        progress=recording,
    )
    events, run = recording.events, len(result.history)
    stopped_early = run < 5  # then the total is set to the epochs run
    assert [e.kind for e in events] == ["start", *["advance"] * (run + stopped_early), "end"]
    assert {e.path for e in events} == {("fit",)}
    assert [e.done for e in events[1 : run + 1]] == list(range(1, run + 1))
    assert events[0].total == 5 and events[-1].done == events[-1].total == run
    notes = [e.note for e in events[1 : run + 1]]
    if with_validation:
        scores = [r.validation_precision for r in result.history]
        assert notes == [f"validation precision@5 {s:.4f}" for s in scores]
    else:
        assert notes == [None] * run


def test_the_best_epoch_varies_little_between_runs_on_the_same_data() -> None:
    # A history-regime world, the evaluation's split and fold-out rows, the default
    # hyperparameters; only LightFM's random state changes from run to run.
    config = Config.from_dict({"model": {"num_threads": 1}})
    data = generate(1500, 150, 15_000, seed=0, regime="history")
    frames = {
        name: frame.to_csv(index=False).encode()
        for name, frame in (("u", data.users), ("t", data.trainings), ("k", data.taken))
    }
    extracts = parse_all(
        io.BytesIO(frames["u"]), io.BytesIO(frames["t"]), io.BytesIO(frames["k"]), config.contract
    )
    dataset = build_dataset(
        extracts.users, extracts.trainings, extracts.taken, config.contract, config.features
    )
    parts = split(dataset.taken, 0.2, 0.15, 0.1, seed=7)
    successes = dataset.interactions.multiply(parts.fit).tocsr()
    rows, features, _ = training_rows(dataset, parts.fit, successes, seed=7)
    validation = Validation(
        dataset.user_features(parts.fit),
        parts.fit,
        dataset.interactions.multiply(parts.validation).tocsr(),
    )
    kept = [
        fit(
            rows,
            features,
            dataset.item_features,
            config.model.model_copy(update={"random_state": state}),
            validation=validation,
        ).best_epoch
        for state in range(4)
    ]
    assert max(kept) - min(kept) <= 3, kept
    assert min(kept) >= config.model.min_epochs - 2  # not stopped on the first bump


def test_sample_weights_may_cover_more_than_the_interactions(data: Data) -> None:
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
