"""Numpy scoring: top-k against a brute-force reference, and equal to LightFM.predict."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from shared.bundle import ModelBundle
from shared.metadata import Served, unevaluated
from shared.scoring import (
    MODEL,
    NO_ITEM,
    Factors,
    Priors,
    Recommender,
    Scorer,
    ScorerSpec,
    top_k,
)

# --- top_k -----------------------------------------------------------------------------


def reference_top_k(
    scores: np.ndarray, k: int, excluded: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Brute force: sort every row's allowed columns, best first, pad with NO_ITEM/-inf."""
    n_rows, n_cols = scores.shape
    width = min(k, n_cols)
    indices = np.full((n_rows, width), NO_ITEM, dtype=np.int64)
    values = np.full((n_rows, width), -np.inf, dtype=np.float64)
    for row in range(n_rows):
        allowed = np.flatnonzero(~excluded[row])
        best = allowed[np.argsort(-scores[row, allowed], kind="stable")][:width]
        indices[row, : len(best)] = best
        values[row, : len(best)] = scores[row, best]
    return indices, values


@st.composite
def score_problems(draw: st.DrawFn, distinct: bool) -> tuple[np.ndarray, np.ndarray, int]:
    n_rows = draw(st.integers(0, 6))
    n_cols = draw(st.integers(0, 9))
    if distinct:  # no ties: the order is fully determined
        order = draw(st.permutations(range(n_rows * n_cols)))
        scale = draw(st.sampled_from([1e-3, 1.0, 250.0]))
        scores = np.asarray(order, dtype=np.float32).reshape(n_rows, n_cols) * scale - 7
    else:
        scores = draw(arrays(np.float32, (n_rows, n_cols), elements=st.integers(-2, 2)))
    excluded = draw(arrays(np.bool_, (n_rows, n_cols)))
    k = draw(st.integers(0, 12))
    return scores.astype(np.float32), excluded, k


@settings(max_examples=200, deadline=None)
@given(score_problems(distinct=True))
def test_top_k_equals_a_brute_force_argsort(problem: tuple[np.ndarray, np.ndarray, int]) -> None:
    scores, excluded, k = problem
    expected_indices, expected_scores = reference_top_k(scores, k, excluded)
    indices, best = top_k(scores.copy(), k, sp.csr_matrix(excluded))
    assert indices.dtype == np.int32
    assert best.dtype == np.float32
    assert indices.shape == best.shape == (scores.shape[0], min(k, scores.shape[1]))
    assert np.array_equal(indices, expected_indices)
    assert np.array_equal(best, expected_scores.astype(np.float32))


@settings(max_examples=200, deadline=None)
@given(score_problems(distinct=False))
def test_top_k_with_ties_returns_unique_allowed_items_best_first(
    problem: tuple[np.ndarray, np.ndarray, int],
) -> None:
    scores, excluded, k = problem
    _, expected_scores = reference_top_k(scores, k, excluded)
    indices, best = top_k(scores.copy(), k, sp.csr_matrix(excluded))
    assert np.array_equal(best, expected_scores.astype(np.float32))  # ties may swap items
    for row in range(scores.shape[0]):
        found = indices[row][indices[row] != NO_ITEM]
        n_allowed = int((~excluded[row]).sum())
        assert len(found) == min(k, n_allowed)  # k unique items whenever there are k
        assert len(set(found.tolist())) == len(found)
        assert not excluded[row, found].any()
        assert np.array_equal(best[row, : len(found)], scores[row, found])
        assert np.all(np.diff(best[row, : len(found)]) <= 0)
        assert np.all(indices[row, len(found) :] == NO_ITEM)
        assert np.all(np.isneginf(best[row, len(found) :]))


@pytest.mark.parametrize(
    ("k", "expected"),
    [
        (1, [[2], [0]]),
        (3, [[2, 0, NO_ITEM], [0, 3, NO_ITEM]]),
        (10, [[2, 0, NO_ITEM, NO_ITEM], [0, 3, NO_ITEM, NO_ITEM]]),
    ],
)
def test_top_k_pads_with_no_item_when_candidates_run_out(k: int, expected: list[list[int]]) -> None:
    scores = np.array([[0.5, 0.9, 0.7, 0.1], [0.3, 0.2, 0.1, 0.25]], dtype=np.float32)
    exclude = sp.csr_matrix(np.array([[0, 1, 0, 1], [0, 1, 1, 0]]))
    indices, best = top_k(scores, k, exclude)
    assert indices.tolist() == expected
    assert np.all(np.isneginf(best[indices == NO_ITEM]))
    assert np.all(np.isfinite(best[indices != NO_ITEM]))


def test_top_k_without_exclusions_keeps_every_column_available() -> None:
    scores = np.array([[1.0, 3.0, 2.0]], dtype=np.float32)
    indices, best = top_k(scores.copy(), 3)
    assert indices.tolist() == [[1, 2, 0]]
    assert best.tolist() == [[3.0, 2.0, 1.0]]


# --- numpy scores equal LightFM.predict ------------------------------------------------


def identity_plus_attributes(n: int, n_attributes: int, rng: np.random.Generator) -> sp.csr_matrix:
    """Identity features first, then 1-3 random attributes per row, rows normalized to 1."""
    attributes = np.zeros((n, n_attributes), dtype=np.float32)
    for row in range(n):
        attributes[row, rng.choice(n_attributes, size=rng.integers(1, 4), replace=False)] = 1
    matrix = np.hstack([np.eye(n, dtype=np.float32), attributes])
    return sp.csr_matrix(matrix / matrix.sum(axis=1, keepdims=True))


@pytest.fixture(scope="module")
def fitted() -> tuple[object, sp.csr_matrix, sp.csr_matrix, sp.csr_matrix]:
    from lightfm import LightFM

    rng = np.random.default_rng(3)
    n_users, n_items = 40, 25
    user_features = identity_plus_attributes(n_users, 6, rng)
    item_features = identity_plus_attributes(n_items, 5, rng)
    interactions = sp.coo_matrix((rng.random((n_users, n_items)) < 0.2).astype(np.float32))
    model = LightFM(no_components=8, loss="warp", random_state=np.random.RandomState(5))
    model.fit(
        interactions,
        user_features=user_features,
        item_features=item_features,
        epochs=5,
        num_threads=1,
    )
    return model, user_features, item_features, interactions.tocsr()


@pytest.mark.parametrize("rows", [[0], [3, 17, 39], list(range(0, 40, 4))])
def test_numpy_scores_equal_lightfm_predict(
    fitted: tuple[object, sp.csr_matrix, sp.csr_matrix, sp.csr_matrix], rows: list[int]
) -> None:
    model, user_features, item_features, _ = fitted
    factors = Factors.from_features(
        user_features,
        model.user_embeddings,  # type: ignore[attr-defined]
        model.user_biases,  # type: ignore[attr-defined]
        item_features,
        model.item_embeddings,  # type: ignore[attr-defined]
        model.item_biases,  # type: ignore[attr-defined]
    )
    n_items = item_features.shape[0]
    ours = factors.user_scores(np.asarray(rows))
    user_ids = np.repeat(np.asarray(rows, dtype=np.int32), n_items)
    item_ids = np.tile(np.arange(n_items, dtype=np.int32), len(rows))
    theirs = model.predict(  # type: ignore[attr-defined]
        user_ids,
        item_ids,
        user_features=user_features,
        item_features=item_features,
        num_threads=1,
    ).reshape(len(rows), n_items)
    assert ours.shape == theirs.shape
    assert np.ptp(theirs) > 1e-2  # the model learned something to rank by
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)
    assert np.array_equal(
        np.argsort(-ours, axis=1, kind="stable"), np.argsort(-theirs, axis=1, kind="stable")
    )


# --- Recommender -----------------------------------------------------------------------


def random_bundle(n_users: int = 23, n_items: int = 11, seed: int = 0) -> ModelBundle:
    rng = np.random.default_rng(seed)
    n_user_features, n_item_features, k = n_users + 4, n_items + 3, 5
    user_features = sp.csr_matrix(
        np.hstack([np.eye(n_users), rng.random((n_users, 4)) < 0.5]).astype(np.float32)
    )
    item_features = sp.csr_matrix(
        np.hstack([np.eye(n_items), rng.random((n_items, 3)) < 0.5]).astype(np.float32)
    )
    return ModelBundle(
        user_ids=np.asarray([f"u{i}" for i in range(n_users)]),
        item_ids=np.asarray([f"t{i}" for i in range(n_items)]),
        item_titles=np.asarray([f"Training {i}" for i in range(n_items)]),
        item_attributes=np.full((n_items, 1), "x"),
        user_feature_names=np.asarray([f"uf{i}" for i in range(n_user_features)]),
        item_feature_names=np.asarray([f"if{i}" for i in range(n_item_features)]),
        user_feature_embeddings=rng.normal(size=(n_user_features, k)).astype(np.float32),
        user_feature_biases=rng.normal(size=n_user_features).astype(np.float32),
        item_feature_embeddings=rng.normal(size=(n_item_features, k)).astype(np.float32),
        item_feature_biases=rng.normal(size=n_item_features).astype(np.float32),
        user_features=user_features,
        item_features=item_features,
        taken=sp.csr_matrix((rng.random((n_users, n_items)) < 0.3).astype(np.float32)),
        metadata=unevaluated(f"random-{seed}", ["x"]),
    )


@pytest.mark.parametrize("chunk_size", [1, 7, 1000])
def test_for_all_equals_for_known_over_all_rows(chunk_size: int) -> None:
    bundle = random_bundle()
    recommender = Recommender(bundle)
    n_users = len(bundle.user_ids)
    chunks = list(recommender.for_all(5, chunk_size))
    assert [start for start, _, _ in chunks] == list(range(0, n_users, chunk_size))
    indices = np.vstack([chunk for _, chunk, _ in chunks])
    scores = np.vstack([chunk for _, _, chunk in chunks])
    expected_indices, expected_scores = recommender.for_known(np.arange(n_users), 5)
    assert np.array_equal(indices, expected_indices)
    # Same scores up to float32 rounding (BLAS sums a lone row in another order).
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5, atol=1e-5)
    taken = bundle.taken.toarray() > 0
    for row in range(n_users):
        found = indices[row][indices[row] != NO_ITEM]
        assert not taken[row, found].any()  # already-taken trainings are excluded
        assert len(found) == min(5, int((~taken[row]).sum()))


def test_for_feature_rows_of_known_rows_equals_for_known() -> None:
    bundle = random_bundle(seed=4)
    recommender = Recommender(bundle)
    rows = np.array([0, 5, 22])
    expected = recommender.for_known(rows, 4)
    taken = bundle.taken[rows]
    got = recommender.for_feature_rows(
        bundle.user_features[rows], np.diff(taken.indptr) > 0, 4, taken
    )
    assert np.array_equal(got[0], expected[0])
    np.testing.assert_allclose(got[1], expected[1], rtol=1e-6)


# --- scorers: the model, popularity priors and baselines -------------------------------


def test_priors_count_successes_overall_and_per_department() -> None:
    successes = sp.csr_matrix(np.array([[1, 1, 0], [1, 0, 0], [0, 0, 1], [1, 0, 1]], np.float32))
    attributes = sp.csr_matrix(np.array([[1, 0], [1, 0], [0, 1], [0, 0]], np.float32))
    priors = Priors.count(successes, attributes, np.array([0, 1]))
    np.testing.assert_allclose(priors.popularity, np.log1p([3, 1, 2]), rtol=1e-6)
    np.testing.assert_allclose(
        priors.department.toarray(), np.log1p([[2, 1, 0], [0, 0, 1]]), rtol=1e-6
    )
    # An employee's department is the department column in their row; none: -1.
    assert priors.groups(attributes).tolist() == [0, 0, 1, -1]


@pytest.mark.parametrize(
    ("spec", "use_model", "popularity", "department"),
    [
        (MODEL, 1.0, 0.0, 0.0),
        (ScorerSpec("model + popularity", 0.5, 2.0, 0.0), 0.5, 2.0, 0.0),
        (ScorerSpec("model + department popularity", 2.0, 0.0, 3.0), 2.0, 0.0, 3.0),
        (ScorerSpec("popularity", 0.0, 1.0, 0.0), 0.0, 1.0, 0.0),
    ],
)
def test_a_scorer_adds_its_weighted_priors_to_the_model(
    spec: ScorerSpec, use_model: float, popularity: float, department: float
) -> None:
    bundle = random_bundle(seed=5)
    priors = Priors.count(bundle.taken, bundle.user_features, np.array([23, 24]))
    factors = Recommender(bundle).factors
    rows = np.arange(10)
    groups = priors.groups(bundle.user_features[rows])
    scorer = Scorer(factors, spec, priors)
    got = scorer.scores(factors.user_vectors[rows], factors.user_biases[rows], groups)
    dense = np.vstack([priors.department.toarray(), np.zeros((1, len(bundle.item_ids)))])
    expected = (
        use_model * factors.user_scores(rows)
        + popularity * priors.popularity[None, :]
        + department * dense[groups]  # group -1: the zero row
    )
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    # Its top-k is the top of those scores, trainings taken left out.
    best, _ = scorer.top_k(
        factors.user_vectors[rows], factors.user_biases[rows], groups, 3, bundle.taken[rows]
    )
    reference, _ = top_k(expected.astype(np.float32), 3, bundle.taken[rows])
    assert np.array_equal(best, reference)


def test_each_population_is_ranked_by_its_own_scorer() -> None:
    bundle = random_bundle(seed=6)
    bundle.popularity = np.log1p(np.arange(len(bundle.item_ids), dtype=np.float32))
    popularity = ScorerSpec("popularity", 0.0, 1.0, 0.0)
    serving = {
        "known": Served(choice="model", scorer=MODEL),
        "cold-start": Served(choice="popularity", scorer=popularity),
    }
    bundle.metadata = bundle.metadata.model_copy(update={"serving": serving})
    recommender = Recommender(bundle)
    rows = np.arange(6)
    history = np.array([True, False, True, False, False, True])
    nothing = sp.csr_matrix((len(rows), len(bundle.item_ids)), dtype=np.float32)
    best, _ = recommender.for_feature_rows(bundle.user_features[rows], history, 4, nothing)
    model_best, _ = Recommender(random_bundle(seed=6)).for_feature_rows(
        bundle.user_features[rows], np.ones(len(rows), bool), 4, nothing
    )
    # Without a history: the most popular first (here the last trainings); with one: the model.
    n_items = len(bundle.item_ids)
    assert all(best[r].tolist() == list(range(n_items - 1, n_items - 5, -1)) for r in (1, 3, 4))
    assert np.array_equal(best[history], model_best[history])
    assert recommender.specs["cold-start"].name == "popularity"


@pytest.mark.parametrize("k", [1, 3, 10, 50])
def test_similar_never_returns_the_training_itself(k: int) -> None:
    bundle = random_bundle(seed=2)
    # Make training 1 an exact copy of training 0: it must be 0's nearest neighbour.
    bundle.item_features = sp.csr_matrix(bundle.item_features.toarray()[[0, 0, *range(2, 11)]])
    recommender = Recommender(bundle)
    n_items = len(bundle.item_ids)
    for item in range(n_items):
        indices, sims = recommender.similar(item, k)
        assert item not in indices.tolist()
        found = indices[indices != NO_ITEM]
        assert len(found) == min(k, n_items - 1) == len(set(found.tolist()))
        assert np.all(np.diff(sims[: len(found)]) <= 0)
        assert np.all(sims[: len(found)] <= 1.0 + 1e-5)
    assert recommender.similar(0, 1)[0].tolist() == [1]
    assert recommender.similar(1, 1)[1][0] == pytest.approx(1.0, abs=1e-5)
