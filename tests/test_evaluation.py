"""Splits, ranking metrics and baselines on hand-made data with a known answer."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from shared.evaluation import (
    BASELINES,
    BLEND_WEIGHTS,
    METRICS,
    Estimate,
    EvaluationReport,
    ScoreFn,
    ServedChoice,
    baseline_spec,
    candidate_specs,
    holdout,
    measure,
    split,
)
from shared.scoring import MODEL, Factors, Priors, Scorer, ScorerSpec

N_ITEMS = 8


def ranking_metrics(*args: Any, **kwargs: Any) -> dict[str, float]:
    """Every metric, AUC included."""
    return measure(*args, **kwargs).metrics


def fixed_scorer(scores: np.ndarray) -> ScoreFn:
    """A score function that answers from a fixed matrix (row r of the matrix = employee r)."""

    def score(rows: np.ndarray) -> np.ndarray:
        return scores[rows].copy()

    return score


def csr(dense: list[list[int]] | np.ndarray) -> sp.csr_matrix:
    return sp.csr_matrix(np.asarray(dense, dtype=np.float32))


# --- metrics with a known answer -------------------------------------------------------


@pytest.mark.parametrize("n_rel", [1, 2, 3])
def test_a_scorer_that_ranks_the_truth_first_gets_perfect_metrics(n_rel: int) -> None:
    k = 3
    truth = np.zeros((1, N_ITEMS))
    truth[0, [6, 2, 4][:n_rel]] = 1
    scores = truth * 10 + np.linspace(1, 0, N_ITEMS)  # relevant first, the rest in any order
    metrics = ranking_metrics(
        fixed_scorer(scores), np.array([0]), csr([[0] * N_ITEMS]), csr(truth), k
    )
    assert metrics["precision"] == pytest.approx(min(n_rel, k) / k)
    assert metrics["recall"] == pytest.approx(1.0)
    assert metrics["ndcg"] == pytest.approx(1.0)
    assert metrics["auc"] == pytest.approx(1.0)
    assert metrics["coverage"] == pytest.approx(k / N_ITEMS)
    assert set(metrics) == set(METRICS)


def test_more_relevant_items_than_k_caps_recall_but_not_precision_or_ndcg() -> None:
    truth = np.zeros((1, N_ITEMS))
    truth[0, :5] = 1
    scores = truth * 10 + np.arange(N_ITEMS)
    metrics = ranking_metrics(
        fixed_scorer(scores), np.array([0]), csr(np.zeros((1, N_ITEMS))), csr(truth), 3
    )
    assert metrics["precision"] == pytest.approx(1.0)
    assert metrics["recall"] == pytest.approx(3 / 5)
    assert metrics["ndcg"] == pytest.approx(1.0)
    assert metrics["auc"] == pytest.approx(1.0)


def test_a_reversed_scorer_gets_auc_zero() -> None:
    truth = csr([[0, 1, 0, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0, 1]])
    perfect = truth.toarray() * 10 + np.linspace(0, 1, N_ITEMS)
    no_exclusion = csr(np.zeros((2, N_ITEMS)))
    good = ranking_metrics(fixed_scorer(perfect), np.arange(2), no_exclusion, truth, 2)
    bad = ranking_metrics(fixed_scorer(-perfect), np.arange(2), no_exclusion, truth, 2)
    assert good["auc"] == pytest.approx(1.0)
    assert bad["auc"] == pytest.approx(0.0)
    assert bad["precision"] == bad["recall"] == bad["ndcg"] == 0.0


def test_metrics_of_a_hand_computed_ranking() -> None:
    # One employee, five trainings ranked 0 > 1 > 2 > 3 > 4; trainings 1 and 3 are relevant.
    scores = np.array([[5.0, 4.0, 3.0, 2.0, 1.0]])
    truth = csr([[0, 1, 0, 1, 0]])
    metrics = ranking_metrics(fixed_scorer(scores), np.array([0]), csr([[0] * 5]), truth, 2)
    assert metrics["precision"] == pytest.approx(1 / 2)
    assert metrics["recall"] == pytest.approx(1 / 2)
    assert metrics["ndcg"] == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    # (relevant, other) pairs in the right order: 1>2, 1>4, 3>4 out of 2 x 3.
    assert metrics["auc"] == pytest.approx(3 / 6)
    assert metrics["coverage"] == pytest.approx(2 / 5)


def test_excluded_trainings_are_neither_recommended_nor_negatives() -> None:
    # The scorer puts the already-taken trainings 0 and 1 on top; they do not count.
    scores = np.array([[9.0, 8.0, 1.0, 7.0, 0.5, 0.2]])
    exclude = csr([[1, 1, 0, 0, 0, 0]])
    truth = csr([[0, 0, 0, 1, 0, 0]])
    metrics = ranking_metrics(fixed_scorer(scores), np.array([0]), exclude, truth, 1)
    assert metrics["precision"] == metrics["recall"] == metrics["ndcg"] == 1.0
    assert metrics["auc"] == pytest.approx(1.0)


def test_rows_without_truth_are_skipped() -> None:
    scores = np.tile(np.arange(4.0)[::-1], (3, 1))  # everyone ranks 0 > 1 > 2 > 3
    truth = csr([[1, 0, 0, 0], [0, 0, 0, 0], [0, 1, 0, 0]])
    metrics = ranking_metrics(fixed_scorer(scores), np.arange(3), csr(np.zeros((3, 4))), truth, 1)
    assert metrics["precision"] == pytest.approx(1 / 2)  # averaged over two rows, not three


def reference_metrics(
    scores: np.ndarray, exclude: np.ndarray, truth: np.ndarray, k: int
) -> dict[str, float]:
    """Row by row, straight from the definitions."""
    totals = dict.fromkeys(("precision", "recall", "ndcg", "auc"), 0.0)
    rows = [r for r in range(len(truth)) if truth[r].any()]
    for r in rows:
        candidates = [i for i in np.argsort(-scores[r], kind="stable") if not exclude[r, i]]
        top = candidates[:k]
        hits = [bool(truth[r, i]) for i in top]
        n_rel = int(truth[r].sum())
        totals["precision"] += sum(hits) / k
        totals["recall"] += sum(hits) / n_rel
        dcg = sum(1 / math.log2(p + 2) for p, hit in enumerate(hits) if hit)
        totals["ndcg"] += dcg / sum(1 / math.log2(p + 2) for p in range(min(n_rel, k)))
        relevant = [i for i in candidates if truth[r, i]]
        negatives = [i for i in candidates if not truth[r, i]]
        pairs = [(a, b) for a in relevant for b in negatives]
        totals["auc"] += sum(scores[r, a] > scores[r, b] for a, b in pairs) / max(len(pairs), 1)
    return {name: value / max(len(rows), 1) for name, value in totals.items()}


@st.composite
def ranking_problems(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    n_rows, n_items = draw(st.integers(1, 5)), draw(st.integers(2, 9))
    order = draw(st.permutations(range(n_rows * n_items)))  # distinct scores: no ties
    scores = np.asarray(order, dtype=np.float64).reshape(n_rows, n_items)
    kind = draw(arrays(np.int8, (n_rows, n_items), elements=st.integers(0, 2)))
    return scores, kind == 1, kind == 2, draw(st.integers(1, n_items))


@settings(max_examples=100, deadline=None)
@given(ranking_problems())
def test_metrics_equal_their_definitions(
    problem: tuple[np.ndarray, np.ndarray, np.ndarray, int],
) -> None:
    scores, exclude, truth, k = problem
    expected = reference_metrics(scores, exclude, truth, k)
    got = ranking_metrics(
        fixed_scorer(scores), np.arange(len(scores)), csr(exclude), csr(truth), k, chunk_size=2
    )
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-9), name


# --- splits ----------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    arrays(np.bool_, st.tuples(st.integers(1, 12), st.integers(1, 15))),
    st.sampled_from([0.1, 0.2, 0.5, 0.8]),
    st.integers(0, 2**16),
)
def test_holdout_hides_a_share_of_each_row_and_never_its_last_item(
    dense: np.ndarray, share: float, seed: int
) -> None:
    matrix = csr(dense.astype(np.float32))
    train, test = holdout(matrix, share, np.random.default_rng(seed))
    assert (train + test != matrix).nnz == 0  # nothing lost, nothing invented
    assert train.multiply(test).nnz == 0  # disjoint
    lengths = np.diff(matrix.indptr)
    hidden = np.diff(test.indptr)
    for length, n_hidden, n_kept in zip(lengths, hidden, np.diff(train.indptr), strict=True):
        if length == 0:
            assert n_hidden == n_kept == 0
        elif length == 1:
            assert (n_hidden, n_kept) == (0, 1)
        else:
            assert n_kept >= 1
            assert n_hidden == min(max(1, round(share * length)), length - 1)


def test_holdout_is_reproducible_and_seed_dependent() -> None:
    matrix = csr(np.random.default_rng(0).random((30, 20)) < 0.4)
    first = holdout(matrix, 0.3, np.random.default_rng(1))[1]
    again = holdout(matrix, 0.3, np.random.default_rng(1))[1]
    other = holdout(matrix, 0.3, np.random.default_rng(2))[1]
    assert (first != again).nnz == 0
    assert (first != other).nnz > 0
    assert first.nnz / matrix.nnz == pytest.approx(0.3, abs=0.05)


@pytest.mark.parametrize("cold_share", [0.1, 0.25, 0.4])
def test_split_holds_new_employees_out_entirely_and_cuts_the_others_in_three(
    cold_share: float,
) -> None:
    rng = np.random.default_rng(5)
    dense = rng.random((40, 12)) < 0.3
    dense[:4] = False  # employees without history are never picked as new ones
    matrix = csr(dense)
    parts = split(matrix, test_share=0.2, validation_share=0.15, cold_share=cold_share, seed=11)
    active = np.flatnonzero(dense.any(axis=1))
    n_cold = round(cold_share * len(active))
    assert len(parts.cold_test) == len(parts.cold_validation) == n_cold
    cold = np.concatenate([parts.cold_test, parts.cold_validation])
    assert len(set(cold.tolist())) == 2 * n_cold  # two disjoint groups
    assert set(cold.tolist()) <= set(active.tolist())
    assert np.all(np.diff(parts.cold_test) > 0)
    for part in (parts.fit, parts.validation, parts.test):
        assert part[cold].nnz == 0  # nothing of theirs is learnt from or measured as known
    warm = np.setdiff1d(np.arange(40), cold)
    whole = parts.fit + parts.validation + parts.test
    assert (whole[warm] != matrix[warm]).nnz == 0  # nothing lost, nothing invented
    assert parts.fit.multiply(parts.validation).nnz == parts.fit.multiply(parts.test).nnz == 0
    assert (parts.train != parts.fit + parts.validation).nnz == 0
    again = split(matrix, test_share=0.2, validation_share=0.15, cold_share=cold_share, seed=11)
    assert np.array_equal(again.cold_test, parts.cold_test)
    assert (again.validation != parts.validation).nnz == 0


# --- baselines and candidates ----------------------------------------------------------

# Four employees x four trainings. Training 2 is the most taken overall; within
# department 0 (employees 0 and 1) training 0 is the favourite.
TRAIN = csr(
    [
        [1, 0, 0, 0],
        [1, 0, 1, 0],
        [0, 0, 1, 1],
        [0, 1, 1, 0],
    ]
)
DEPARTMENTS = csr([[1, 0], [1, 0], [0, 1], [0, 0]])  # employee 3: no department


def baseline_scores(name: str, rows: np.ndarray) -> np.ndarray:
    priors = Priors.count(TRAIN, DEPARTMENTS, np.array([0, 1]))
    factors = Factors(np.zeros((4, 2)), np.zeros(4), np.ones((4, 2)), np.zeros(4))
    scorer = Scorer(factors, baseline_spec(name, priors), priors)
    return scorer.scores(
        factors.user_vectors[rows], factors.user_biases[rows], priors.groups(DEPARTMENTS[rows])
    )


def test_popularity_ranks_by_number_of_employees() -> None:
    scores = baseline_scores("popularity", np.array([0, 3]))
    assert np.argsort(-scores, axis=1, kind="stable").tolist() == [[2, 0, 1, 3]] * 2
    np.testing.assert_allclose(scores[0], np.log1p([2, 1, 3, 1]), rtol=1e-6)


def test_department_popularity_ranks_the_department_favourite_first() -> None:
    scores = baseline_scores("department popularity", np.arange(4))
    rankings = np.argsort(-scores, axis=1, kind="stable")
    assert rankings[0].tolist()[:2] == [0, 2]  # department 0 took 0 twice and 2 once
    assert rankings[1].tolist()[:2] == [0, 2]
    assert rankings[2].tolist()[:2] == [2, 3]  # department 1 took 2 and 3 once: 2 wins the tie
    assert rankings[3].tolist() == [2, 0, 1, 3]  # no department: overall popularity
    assert scores[3].max() < np.log1p(1) / 2  # only the tie-break counts without a department


def test_candidates_are_the_baselines_the_model_and_its_blends() -> None:
    priors = Priors.count(TRAIN, DEPARTMENTS, np.array([0, 1]))
    specs = candidate_specs(2.0, priors, ("popularity", "department popularity"))
    names = list(specs)
    assert names[:3] == ["popularity", "department popularity", "model"]  # baselines win ties
    blends = [specs[n] for n in names[3:]]
    assert {b.name for b in blends} == {"model + popularity", "model + department popularity"}
    assert len(blends) == 2 * len(BLEND_WEIGHTS)
    assert all(b.model == pytest.approx(0.5) for b in blends)  # the model's scale: 2
    weights = [b.popularity for b in blends if b.name == "model + popularity"]
    assert weights == sorted(weights) and weights[0] > 0
    # Without a department feature, no department scorer.
    alone = Priors.count(TRAIN, DEPARTMENTS, np.empty(0, np.int64))
    assert "department popularity" not in candidate_specs(2.0, alone, BASELINES)


def test_an_estimate_counts_the_employees_and_the_repeats_noise() -> None:
    rng = np.random.default_rng(0)
    same = [rng.random(400) for _ in range(3)]
    estimate = Estimate.of(same)
    assert estimate.mean == pytest.approx(np.mean([v.mean() for v in same]))
    per_employee = np.mean([v.std(ddof=1) / np.sqrt(400) for v in same])
    assert estimate.ci95 >= 1.96 * per_employee  # never less than one repeat's own noise
    shifted = [v + shift for v, shift in zip(same, (0.0, 0.2, 0.4), strict=True)]
    assert Estimate.of(shifted).ci95 > 3 * estimate.ci95  # repeats that disagree widen it
    assert Estimate.of(shifted).spread == pytest.approx(np.std([v.mean() for v in shifted], ddof=1))


# --- the report ------------------------------------------------------------------------


def report() -> EvaluationReport:
    result = EvaluationReport(k=10, repeats=3, counts={"known_employees_evaluated": 12})
    model = {"precision": 0.12, "recall": 0.5, "ndcg": 0.3, "auc": 0.8, "coverage": 0.7}
    oracle = {"precision": 0.24, "recall": 0.9, "ndcg": 0.6, "auc": 0.95, "coverage": 0.5}
    result.add("known", "served", model, {m: 0.01 for m in model}, 0.004)
    result.add("known", "oracle", oracle)
    result.add("cold-start", "served", {**model, "precision": 0.06}, None, 0.01)
    department = ScorerSpec("department popularity", 0.0, 0.01, 1.0)
    result.served = {
        "known": ServedChoice(choice="model", scorer=MODEL),
        "cold-start": ServedChoice(choice="department popularity", scorer=department),
    }
    return result


def test_report_round_trips_through_json() -> None:
    original = report()
    loaded = EvaluationReport.from_dict(json.loads(json.dumps(original.to_dict())))
    assert loaded == original
    assert loaded.to_table() == original.to_table()
    assert loaded.ratio("known", "served", "oracle") == pytest.approx(0.5)
    assert loaded.served_precision("known") == (0.12, 0.004)
    assert loaded.served_name("cold-start") == "department popularity"


def test_report_table_has_a_row_per_population_and_scorer() -> None:
    lines = report().to_table().splitlines()
    assert lines[0].split() == [
        "population",
        "scorer",
        "precision@10",
        "recall@10",
        "ndcg@10",
        "auc",
        "coverage",
    ]
    assert set(lines[1]) == {"-", " "}
    rows = [line.split() for line in lines[2:5]]
    assert rows[0][:7] == ["known", "served:", "model", "0.1200", "±", "0.0040", "(50%)"]
    assert rows[1][:4] == ["known", "oracle", "0.2400", "0.9000"]
    assert rows[2][:7] == [
        "cold-start",
        "served:",
        "department",
        "popularity",
        "0.0600",
        "±",
        "0.0100",
    ]
    assert "3 repeated split" in lines[-2]
    assert "oracle" in lines[-1]


def test_a_report_of_an_older_version_reads_its_model_as_served() -> None:
    old = EvaluationReport.from_dict(
        {"k": 10, "results": {"known": {"hybrid model": {"precision": 0.2}}}}
    )
    assert old.served_precision("known") == (0.2, 0.0)
    assert old.served_name("known") == "model"
    assert old.served_precision("cold-start") is None
