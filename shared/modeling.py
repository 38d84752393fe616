"""Clean extracts → evaluated model bundle (pure: no storage, no Azure)."""

from __future__ import annotations

import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from typing import Any

import numpy as np
import pandas as pd

from shared.bundle import ModelBundle, new_version
from shared.errors import ExtractError, Problem
from shared.evaluation import (
    EvaluationReport,
    distribution,
    group_popularity_scorer,
    holdout,
    popularity_scorer,
    ranking_metrics,
    split,
)
from shared.features import Dataset, build_dataset, rows_for_new
from shared.schema import Extracts
from shared.scoring import NO_ITEM, Factors, Recommender
from shared.settings import Config
from shared.training import FitResult, ProgressFn, factors_of, fit

OracleFn = Callable[
    [Sequence[str], Sequence[str]], np.ndarray
]  # (user ids, training ids) -> scores


@dataclass
class TrainedModel:
    bundle: ModelBundle
    evaluation: EvaluationReport | None
    dataset: Dataset


def _library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in ("rectools-lightfm", "numpy", "scipy", "pandas"):
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = "unknown"
    return versions


def evaluate_candidate(
    dataset: Dataset,
    extracts: Extracts,
    config: Config,
    *,
    oracle: OracleFn | None = None,
    progress: ProgressFn | None = None,
) -> tuple[EvaluationReport, FitResult]:
    """Fit on a split and measure known and cold-start employees against the baselines."""
    opts, hp = config.evaluation, config.model
    parts = split(dataset.interactions, opts.test_share, opts.cold_start_share, opts.seed)
    fit_train, validation = holdout(
        parts.train, hp.validation_share, np.random.default_rng(opts.seed + 1)
    )
    result = fit(
        fit_train,
        dataset.user_features,
        dataset.item_features,
        hp,
        weights=dataset.weights,
        validation=validation if hp.early_stopping else None,
        k=opts.k,
        progress=progress,
    )
    factors = factors_of(result.model, dataset.user_features, dataset.item_features)
    contract = config.contract
    cold_rows, _ = rows_for_new(
        extracts.users.iloc[parts.cold_users],
        contract.users,
        contract.value_delimiter,
        dataset.user_feature_names,
        config.features.normalize,
    )
    cold_factors = Factors(
        np.asarray(cold_rows @ result.model.user_embeddings, dtype=np.float32),
        np.asarray(cold_rows @ result.model.user_biases, dtype=np.float32),
        factors.item_vectors,
        factors.item_biases,
    )
    position_of_cold = {int(row): i for i, row in enumerate(parts.cold_users)}

    def cold_model(rows: np.ndarray) -> np.ndarray:
        return cold_factors.user_scores(
            np.asarray([position_of_cold[int(r)] for r in rows], dtype=np.int64)
        )

    scorers: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "popularity": popularity_scorer(parts.train),
    }
    if contract.department in extracts.users.columns:
        codes, _ = pd.factorize(extracts.users[contract.department].replace("", np.nan))
        scorers["department popularity"] = group_popularity_scorer(parts.train, np.asarray(codes))
    if oracle is not None:
        user_ids, item_ids = dataset.users.ids, dataset.items.ids

        def oracle_scores(rows: np.ndarray) -> np.ndarray:
            return oracle(list(user_ids[rows]), list(item_ids))

        scorers["oracle"] = oracle_scores

    report = EvaluationReport(opts.k)
    known_rows = np.arange(dataset.interactions.shape[0])
    empty = parts.cold_test.copy()
    empty.data[:] = 0
    empty.eliminate_zeros()
    populations = {
        "known": (factors.user_scores, known_rows, parts.train, parts.test),
        "cold-start": (cold_model, parts.cold_users, empty, parts.cold_test),
    }
    for population, (model_fn, rows, exclude, truth) in populations.items():
        report.add(
            population, "hybrid model", ranking_metrics(model_fn, rows, exclude, truth, opts.k)
        )
        for name, scorer in scorers.items():
            report.add(population, name, ranking_metrics(scorer, rows, exclude, truth, opts.k))
    report.counts = {
        "known_employees_evaluated": int((np.diff(parts.test.indptr) > 0).sum()),
        "cold_start_employees_evaluated": len(parts.cold_users),
        "train_interactions": int(parts.train.nnz),
        "test_interactions": int(parts.test.nnz),
        "cold_start_interactions": int(parts.cold_test.nnz),
    }
    return report, result


def bundle_from_fit(
    result: FitResult,
    dataset: Dataset,
    extracts: Extracts,
    config: Config,
    *,
    fingerprints: dict[str, str],
    evaluation: EvaluationReport | None,
    extra: dict[str, Any] | None = None,
) -> ModelBundle:
    """Export a fitted model with its maps, catalog and metadata."""
    model = result.model
    trainings = extracts.trainings
    columns = list(config.contract.trainings.features)
    combined = "-".join(fingerprints[k] for k in sorted(fingerprints)) or "nodata"
    metadata: dict[str, Any] = {
        "version": new_version(combined.replace("-", "")),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": config.to_dict(),
        "fingerprints": fingerprints,
        "counts": {
            "employees": len(dataset.users),
            "trainings": len(dataset.items),
            "interactions": int(dataset.interactions.nnz),
            "employees_with_history": int((np.diff(dataset.interactions.indptr) > 0).sum()),
            "user_features": len(dataset.user_feature_names),
            "item_features": len(dataset.item_feature_names),
        },
        "metrics": evaluation.to_dict() if evaluation else None,
        "training": {
            "final_epochs": len(result.history),
            "final_seconds": round(sum(r.seconds for r in result.history), 3),
        },
        "item_attribute_columns": columns,
        "validation": [report.to_dict() for report in extracts.reports],
        "libraries": _library_versions(),
        **(extra or {}),
    }
    bundle = ModelBundle(
        user_ids=dataset.users.ids,
        item_ids=dataset.items.ids,
        item_titles=trainings["title"].to_numpy(dtype=str),
        item_attributes=trainings[columns]
        .to_numpy(dtype=str)
        .reshape(len(trainings), len(columns)),
        user_feature_names=dataset.user_feature_names.ids,
        item_feature_names=dataset.item_feature_names.ids,
        user_feature_embeddings=model.user_embeddings.astype(np.float32),
        user_feature_biases=model.user_biases.astype(np.float32),
        item_feature_embeddings=model.item_embeddings.astype(np.float32),
        item_feature_biases=model.item_biases.astype(np.float32),
        user_features=dataset.user_features.tocsr(),
        item_features=dataset.item_features.tocsr(),
        taken=dataset.interactions.tocsr(),
        metadata=metadata,
    )
    bundle.metadata["recommendations"] = _distribution_of(bundle, config)
    return bundle


def _distribution_of(bundle: ModelBundle, config: Config) -> dict[str, Any]:
    counts = np.zeros(len(bundle.item_ids), dtype=np.int64)
    recommender = Recommender(bundle)
    for _, items, _ in recommender.for_all(config.serving.top_k, config.serving.chunk_size):
        counts += np.bincount(items[items != NO_ITEM], minlength=len(counts))
    taken = np.asarray(bundle.taken.sum(axis=0)).ravel()
    return {"k": config.serving.top_k, **distribution(counts, taken)}


def train_model(
    extracts: Extracts,
    config: Config,
    *,
    fingerprints: dict[str, str],
    evaluate: bool = True,
    oracle: OracleFn | None = None,
    progress: ProgressFn | None = None,
) -> TrainedModel:
    """Evaluate on held-out data, then refit on all the data for the epochs found best.

    The published model is refit on everything: the evaluation split hides a fifth
    of the history and a tenth of the employees, which serving should not lose;
    the held-out metrics describe the procedure, and the refit reuses its best
    epoch count, so it does not overfit more than the evaluated fit did.
    """
    dataset = build_dataset(
        extracts.users, extracts.trainings, extracts.taken, config.contract, config.features
    )
    if dataset.interactions.nnz == 0:
        source = extracts.reports[-1].source if extracts.reports else "trainings-taken"
        raise ExtractError(
            source, [Problem(source, "no usable interaction: nothing to learn from")]
        )
    report = None
    epochs = config.model.epochs
    curve: list[dict[str, Any]] = []
    if evaluate:
        report, evaluated = evaluate_candidate(
            dataset, extracts, config, oracle=oracle, progress=progress
        )
        epochs = max(evaluated.best_epoch, 1)
        curve = [record.__dict__ for record in evaluated.history]
    final = fit(
        dataset.interactions,
        dataset.user_features,
        dataset.item_features,
        config.model,
        weights=dataset.weights,
        epochs=epochs,
        progress=progress,
    )
    bundle = bundle_from_fit(
        final, dataset, extracts, config, fingerprints=fingerprints, evaluation=report
    )
    bundle.metadata["training"].update(validation_curve=curve, best_epoch=epochs)
    return TrainedModel(bundle, report, dataset)
