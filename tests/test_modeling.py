"""The evaluation procedure's parts: fold-out rows, the blend's scale, repeated splits."""

from __future__ import annotations

import io

import numpy as np
import pytest
import scipy.sparse as sp
from world import csv_bytes, small_config

from shared.features import IdMap, build_dataset, signal_matrix
from shared.modeling import FOLDS, evaluate_candidate, model_scale, with_signals
from shared.schema import parse_all
from shared.scoring import Factors
from shared.synthetic import generate
from shared.training import fold_out


def test_fold_out_learns_every_success_once_never_from_a_description_that_holds_it() -> None:
    rng = np.random.default_rng(0)
    taken = sp.csr_matrix((rng.random((30, 12)) < 0.4).astype(np.float32))
    successes = sp.csr_matrix(taken.multiply(rng.random((30, 12)) < 0.7), dtype=np.float32)
    attributes = sp.csr_matrix(np.eye(30, 4, dtype=np.float32))
    rows, features, _ = fold_out(taken, successes, attributes, FOLDS, seed=3)

    assert rows.shape == (FOLDS * 30, 12) and features.shape == (FOLDS * 30, 4 + 12)
    # Stacked, the folds' targets are every success exactly once.
    learnt = sum(rows[fold * 30 : (fold + 1) * 30] for fold in range(FOLDS))
    assert (learnt != successes).nnz == 0
    for fold in range(FOLDS):
        part = slice(fold * 30, (fold + 1) * 30)
        history = features[part][:, 4:]
        assert history.multiply(rows[part]).nnz == 0  # never described by its own target
        assert (features[part][:, :4] != attributes).nnz == 0  # attributes unchanged
        described = (history > 0).astype(np.float32) + rows[part]
        assert (described > 1).nnz == 0
    # Between them, a fold's description and its targets come from what was taken.
    history_rows = features[:, 4:].tocsr()
    for fold in range(FOLDS):
        part = slice(fold * 30, (fold + 1) * 30)
        assert ((history_rows[part] > 0).astype(np.float32) - taken).max() <= 0


def test_the_blend_scale_ignores_the_employees_biases() -> None:
    rng = np.random.default_rng(1)
    vectors, items = rng.normal(size=(50, 4)), rng.normal(size=(20, 4))
    calm = Factors(vectors, np.zeros(50), items, np.zeros(20))
    drifted = Factors(vectors, rng.normal(-150, 30, 50), items, np.zeros(20))
    assert model_scale(drifted, seed=0) == pytest.approx(model_scale(calm, seed=0), rel=1e-3)
    assert model_scale(calm, seed=0) > 0


def test_evaluation_repeats_the_split_and_reports_each_population_as_served() -> None:
    config = small_config(evaluation={"repeats": 2})
    data = generate(400, 60, 4_000, seed=3, regime="history")
    extracts = parse_all(
        io.BytesIO(csv_bytes(data.users)),
        io.BytesIO(csv_bytes(data.trainings)),
        io.BytesIO(csv_bytes(data.taken)),
        config.contract,
    )
    dataset = build_dataset(
        extracts.users, extracts.trainings, extracts.taken, config.contract, config.features
    )
    evaluation = evaluate_candidate(dataset, config, oracle=data.oracle.scores)
    report = evaluation.report
    assert report.repeats == 2 and len(evaluation.fits) == 2
    for population in ("known", "cold-start"):
        rows = report.results[population]
        assert {"served", "model", "popularity", "department popularity", "oracle"} <= set(rows)
        served = report.served[population]
        assert served.choice in served.validation  # chosen among the candidates
        if served.choice in rows:  # the model alone, or a baseline: the same figures
            assert rows["served"] == rows[served.choice]
        assert len(evaluation.served[population]) == 2  # per repeat, per employee
        assert report.intervals[population]["served"] > 0
        for baseline, difference in report.comparisons[population].items():
            expected = rows["served"]["precision"] - rows[baseline]["precision"]
            assert difference.difference == pytest.approx(expected, abs=1e-12)


def test_signals_are_learnt_as_extra_rows_described_as_serving_describes_the_employee() -> None:
    taken = sp.csr_matrix(np.array([[1, 0, 0], [0, 1, 0], [0, 0, 0]], dtype=np.float32))
    users, items = IdMap.of(["e1", "e2", "e3"]), IdMap.of(["t1", "t2", "t3"])
    pairs = {("e1", "t1"): 1.0, ("e1", "t3"): 0.25, ("e3", "t2"): 1.0, ("nobody", "t1"): 1.0}
    signals = signal_matrix(pairs, users, items, taken)
    assert signals is not None  # taken pairs and unknown employees left out
    assert signals.toarray().tolist() == [[0, 0, 0.25], [0, 0, 0], [0, 1, 0]]
    described = sp.csr_matrix(np.arange(6, dtype=np.float32).reshape(3, 2))
    rows = (taken, sp.csr_matrix(np.ones((3, 2), np.float32)), taken * 5)
    targets, features, weights = with_signals(rows, signals, described)
    assert targets.shape == (5, 3) and (targets[:3] != taken).nnz == 0
    assert targets[3:].toarray().tolist() == [[0, 0, 1], [0, 1, 0]]  # e1 and e3, binary
    assert features[3:].toarray().tolist() == [[0, 1], [4, 5]]  # their serving rows
    assert weights is not None and weights[3:].toarray().tolist() == [[0, 0, 0.25], [0, 1, 0]]
    assert with_signals(rows, None, described) is rows
    assert signal_matrix({("e1", "t1"): 1.0}, users, items, taken) is None  # all taken
