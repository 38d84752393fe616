"""Clean extracts → evaluated model bundle (pure: no storage, no Azure).

One evaluation procedure, used by ``retrain``, ``evaluate`` and ``tune``
(:func:`evaluate_candidate`): the split is repeated over several seeds; each time
the model is fit on known employees' histories with early stopping, then every
candidate scorer (the model, the model blended with a popularity prior, the
popularity baselines) is measured on validation data, for known and for new
employees separately. Each population is served by the candidate best on
validation; the figures reported are on test data the choice never saw, as
served: everything the employee took excluded, baselines excluded the same way.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata

import numpy as np
import scipy.sparse as sp

from shared.bundle import ModelBundle, new_version
from shared.errors import ExtractError, Problem
from shared.evaluation import (
    BASELINES,
    MODEL_ROW,
    ORACLE,
    SERVED,
    Comparison,
    Estimate,
    EvaluationReport,
    Measured,
    ServedChoice,
    Split,
    baseline_spec,
    candidate_specs,
    distribution,
    measure,
    split,
)
from shared.features import Dataset, build_dataset, signal_matrix
from shared.metadata import Counts, Epoch, ExtractReport, ModelMetadata, Served, Spread, Training
from shared.progress import NO_PROGRESS, Progress, tracked
from shared.schema import Extracts
from shared.scoring import (
    MODEL,
    NO_ITEM,
    POPULATIONS,
    Factors,
    Population,
    Priors,
    Recommender,
    Scorer,
    ScorerSpec,
)
from shared.settings import Config
from shared.training import FitResult, Validation, fit, fold_out

# (user ids, training ids, what each user is known to have taken or None for new
# employees) -> scores; the synthetic data's oracle.
OracleFn = Callable[[Sequence[str], Sequence[str], sp.csr_matrix | None], np.ndarray]

# Pseudo-employees per employee in a fit with history features (training.fold_out).
# Measured on the synthetic regimes: 3 parts learn as well as 5 and better than 2.
FOLDS = 3
# Employees measured per population and repeat (a fixed random sample when there are
# more): the figures' intervals are already narrow at this size. Choosing a scorer
# compares some fifteen candidates on the same employees (paired), so fewer suffice:
# at 10,000 the interval of a difference is about 0.002.
EVALUATED_USERS = 25_000
CHOOSING_USERS = 10_000
SCALE_SAMPLE = 1_000  # employees whose scores set the model's scale in a blend


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


def department_columns(dataset: Dataset, config: Config) -> np.ndarray:
    """The attribute features that name a department (``ou:sales``), if it is a feature."""
    contract = config.contract
    if contract.department not in contract.users.features or not len(dataset.attribute_names):
        return np.empty(0, np.int64)
    names = dataset.attribute_names.ids.astype(str)
    return np.flatnonzero(np.char.startswith(names, f"{contract.department}:")).astype(np.int64)


def training_rows(
    dataset: Dataset, taken: sp.csr_matrix, successes: sp.csr_matrix, seed: int
) -> tuple[sp.csr_matrix, sp.csr_matrix, sp.csr_matrix | None]:
    """Interactions, user features and weights to fit on, given what was taken."""
    weights = dataset.weights.multiply(successes).tocsr()
    if dataset.history:
        return fold_out(taken, successes, dataset.user_attributes, FOLDS, seed, weights)
    return successes, dataset.user_attributes, weights


Rows = tuple[sp.csr_matrix, sp.csr_matrix, sp.csr_matrix | None]  # targets, features, weights


def with_signals(rows: Rows, signals: sp.csr_matrix | None, described: sp.csr_matrix) -> Rows:
    """Training rows plus one per employee with signals (feedback events): described
    as serving describes them (``described``: every employee's feature row), learning
    the signals' trainings, each weighted by its signal."""
    if signals is None or not signals.nnz:
        return rows
    interactions, features, weights = rows
    who = np.flatnonzero(np.diff(signals.indptr))
    learnt = sp.csr_matrix(signals[who], dtype=np.float32)
    targets = learnt.copy()
    targets.data[:] = 1.0
    return (
        sp.vstack([interactions, targets], format="csr"),
        sp.vstack([features, described[who]], format="csr"),
        sp.vstack([weights if weights is not None else interactions, learnt], format="csr"),
    )


def _without_rows(matrix: sp.csr_matrix | None, rows: np.ndarray) -> sp.csr_matrix | None:
    if matrix is None:
        return None
    keep = np.ones(matrix.shape[0], dtype=np.float32)
    keep[rows] = 0.0
    return sp.csr_matrix(sp.diags(keep) @ matrix)


def model_scale(factors: Factors, seed: int) -> float:
    """The spread of the model's scores within an employee's row (over a sample of
    employees): a blend adds popularity on this scale. Within the row, because the
    employee's bias shifts a whole row and LightFM lets it drift far."""
    n = len(factors.user_vectors)
    if not n:
        return 1.0
    rows = np.random.default_rng(seed).choice(n, size=min(n, SCALE_SAMPLE), replace=False)
    scores = factors.user_scores(np.sort(rows))
    return float((scores - scores.mean(axis=1, keepdims=True)).std())


@dataclass(frozen=True)
class _Population:
    """One population's employees in one repeat: how the model sees them, what is
    excluded and what is to be found."""

    rows: np.ndarray  # dataset rows
    factors: Factors  # one row per employee of ``rows``
    groups: np.ndarray  # departments
    exclude: sp.csr_matrix
    truth: sp.csr_matrix
    history: sp.csr_matrix | None  # what the oracle may know they took (None: new)

    def measure(self, scorer: Scorer, k: int, *, auc: bool) -> Measured:
        factors = self.factors

        def scores(positions: np.ndarray) -> np.ndarray:
            return scorer.scores(
                factors.user_vectors[positions],
                factors.user_biases[positions],
                self.groups[positions],
            )

        return measure(scores, np.arange(len(self.rows)), self.exclude, self.truth, k, auc=auc)

    def measure_oracle(self, oracle: OracleFn, dataset: Dataset, k: int) -> Measured:
        user_ids, item_ids = dataset.users.ids, list(dataset.items.ids)

        def scores(positions: np.ndarray) -> np.ndarray:
            history = None if self.history is None else self.history[positions]
            return oracle(list(user_ids[self.rows[positions]]), item_ids, history)

        return measure(scores, np.arange(len(self.rows)), self.exclude, self.truth, k)


@dataclass(frozen=True)
class _Repeat:
    """One repeat of the split: the fitted model's populations and candidates."""

    fitted: FitResult
    candidates: dict[str, ScorerSpec]
    priors: Priors
    validation: dict[str, _Population]
    test: dict[str, _Population]


def _sample(
    rows: np.ndarray, truth: sp.csr_matrix, seed: int, most: int = EVALUATED_USERS
) -> np.ndarray:
    """Rows with some truth, at most ``most`` of them (a random sample)."""
    rows = rows[np.diff(truth.tocsr()[rows].indptr) > 0]
    if len(rows) > most:
        rows = np.sort(np.random.default_rng(seed).choice(rows, most, replace=False))
    return rows


def _population(
    fitted: FitResult,
    dataset: Dataset,
    priors: Priors,
    rows: np.ndarray,
    history: sp.csr_matrix,
    truth: sp.csr_matrix,
    *,
    new: bool,
) -> _Population:
    """Employees ``rows`` described with ``history`` (all of it excluded), against ``truth``."""
    features = dataset.user_features(history)[rows]
    model = fitted.model
    factors = Factors.from_features(
        features,
        model.user_embeddings,
        model.user_biases,
        dataset.item_features,
        model.item_embeddings,
        model.item_biases,
    )
    return _Population(
        rows,
        factors,
        priors.groups(features),
        history[rows],
        truth[rows],
        None if new else history[rows],
    )


def _repeat(dataset: Dataset, config: Config, number: int, progress: Progress) -> _Repeat:
    """Split with seed ``evaluation.seed + number``, fit, and gather the populations."""
    opts, hp = config.evaluation, config.model
    seed = opts.seed + number
    parts: Split = split(
        dataset.taken, opts.test_share, hp.validation_share, opts.cold_start_share, seed
    )
    successes = dataset.interactions
    fit_successes = successes.multiply(parts.fit).tocsr()
    # The held-out new employees must stay new: their events are not learnt either.
    signals = _without_rows(
        dataset.signals, np.concatenate([parts.cold_validation, parts.cold_test])
    )
    interactions, features, weights = with_signals(
        training_rows(dataset, parts.fit, fit_successes, seed),
        signals,
        dataset.user_features(parts.fit),
    )
    validation = Validation(
        dataset.user_features(parts.fit), parts.fit, successes.multiply(parts.validation).tocsr()
    )
    params = hp.model_copy(update={"random_state": hp.random_state + number})
    fitted = fit(
        interactions,
        features,
        dataset.item_features,
        params,
        weights=weights,
        validation=validation,
        k=opts.k,
        progress=progress,
    )
    priors = Priors.count(
        fit_successes, dataset.user_attributes, department_columns(dataset, config)
    )
    nobody = sp.csr_matrix(dataset.taken.shape, dtype=np.float32)
    everyone = np.arange(dataset.taken.shape[0])
    known_validation = _sample(everyone, validation.truth, seed, CHOOSING_USERS)
    test_truth = successes.multiply(parts.test).tocsr()
    known_test = _sample(everyone, test_truth, seed)
    val = {
        "known": _population(
            fitted, dataset, priors, known_validation, parts.fit, validation.truth, new=False
        ),
        "cold-start": _population(
            fitted,
            dataset,
            priors,
            _sample(parts.cold_validation, successes, seed, CHOOSING_USERS),
            nobody,
            successes,
            new=True,
        ),
    }
    test = {
        "known": _population(
            fitted, dataset, priors, known_test, parts.train, test_truth, new=False
        ),
        "cold-start": _population(
            fitted,
            dataset,
            priors,
            _sample(parts.cold_test, successes, seed),
            nobody,
            successes,
            new=True,
        ),
    }
    scale = model_scale(val["known"].factors, seed)
    candidates = candidate_specs(scale, priors, config.gate.baselines)
    return _Repeat(fitted, candidates, priors, val, test)


@dataclass(frozen=True)
class _Choice:
    """How a population is served, and the validation figures that decided it."""

    key: str  # a label of candidate_specs
    figures: dict[str, float]  # candidate label -> mean validation precision
    margin: Estimate | None  # best model-based candidate minus best baseline, paired

    @property
    def note(self) -> str:
        """Why, in one sentence."""
        baselines = {k: v for k, v in self.figures.items() if k in BASELINES}
        model_based = {k: v for k, v in self.figures.items() if k not in BASELINES}
        margin = self.margin
        if not baselines or not model_based or margin is None:
            return f"{self.key} did best on validation data ({self.figures.get(self.key, 0):.4f})"
        best_baseline = max(baselines, key=baselines.__getitem__)
        best_model = max(model_based, key=model_based.__getitem__)
        versus = (
            f"{best_model} {model_based[best_model]:.4f} vs {best_baseline} "
            f"{baselines[best_baseline]:.4f}: {margin.mean:+.4f} ± {margin.ci95:.4f}"
        )
        if self.key in BASELINES:
            return (
                f"the model, alone or blended, does not beat {best_baseline} beyond the noise "
                f"on validation data ({versus}); served by {self.key}"
            )
        return f"{self.key} beats the baselines on validation data ({versus})"


def _choose(repeats: list[_Repeat], population: str, k: int) -> _Choice:
    """The scorer of a population, on validation data.

    The best model-based candidate (the model, or a blend) serves only if it beats the
    best baseline by more than the 95 % interval of their difference, measured on the
    same employees; otherwise the best baseline serves: a population is never served
    worse than the obvious on the strength of noise.
    """
    per_row: dict[str, list[np.ndarray]] = {}
    for r in repeats:
        validation = r.validation[population]
        if not len(validation.rows):
            continue
        for key, spec in r.candidates.items():
            scorer = Scorer(validation.factors, spec, r.priors)
            per_row.setdefault(key, []).append(validation.measure(scorer, k, auc=False).precision)
    complete = {key: v for key, v in per_row.items() if len(v) == len(per_row[MODEL.name])}
    if not complete:
        return _Choice(MODEL.name, {}, None)
    figures = {key: float(np.mean([v.mean() for v in values])) for key, values in complete.items()}
    baselines = [key for key in figures if key in BASELINES]
    model_based = [key for key in figures if key not in BASELINES]
    best_model = max(model_based, key=figures.__getitem__)  # the first of equal ones
    if not baselines:
        return _Choice(best_model, figures, None)
    best_baseline = max(baselines, key=figures.__getitem__)
    margin = Estimate.of(
        [a - b for a, b in zip(complete[best_model], complete[best_baseline], strict=True)]
    )
    chosen = best_model if margin.mean > margin.ci95 else best_baseline
    return _Choice(chosen, figures, margin)


def _measure_test(
    repeats: list[_Repeat],
    population: str,
    choice: str,
    k: int,
    oracle: OracleFn | None,
    dataset: Dataset,
) -> dict[str, list[Measured]]:
    """Test figures of the served scorer, the model alone, the baselines and the oracle,
    one per repeat."""
    rows: dict[str, list[Measured]] = {}
    for r in repeats:
        test = r.test[population]
        if not len(test.rows):
            continue
        specs = {SERVED: r.candidates.get(choice, MODEL), MODEL_ROW: MODEL}
        specs |= {b: baseline_spec(b, r.priors) for b in r.candidates if b in BASELINES}
        for name, spec in specs.items():
            rows.setdefault(name, []).append(
                test.measure(Scorer(test.factors, spec, r.priors), k, auc=True)
            )
        if oracle is not None:
            rows.setdefault(ORACLE, []).append(test.measure_oracle(oracle, dataset, k))
    return rows


def _summarize(report: EvaluationReport, population: str, rows: dict[str, list[Measured]]) -> None:
    """Means, spreads and intervals over the repeats; the served scorer against each
    baseline, paired on the same employees."""
    for name, per_repeat in rows.items():
        names = list(per_repeat[0].metrics)
        values = {m: [x.metrics[m] for x in per_repeat] for m in names}
        report.add(
            population,
            name,
            {m: float(np.mean(v)) for m, v in values.items()},
            {m: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for m, v in values.items()},
            Estimate.of([x.precision for x in per_repeat]).ci95,
        )
    for baseline in (b for b in BASELINES if b in rows):
        paired = [
            served.precision - other.precision
            for served, other in zip(rows[SERVED], rows[baseline], strict=True)
        ]
        estimate = Estimate.of(paired)
        report.comparisons.setdefault(population, {})[baseline] = Comparison(
            difference=estimate.mean, ci95=estimate.ci95
        )


@dataclass(frozen=True)
class Evaluation:
    """What :func:`evaluate_candidate` measured.

    ``report``: each population's served scorer (chosen on validation data) and the
    test figures of it, of the model alone, of the baselines and of the oracle.
    ``fits``: each repeat's fit (its best epoch and validation curve). ``served``:
    per population, each repeat's per-employee precision of the served scorer, so
    that two configurations evaluated with the same splits compare paired.
    """

    report: EvaluationReport
    fits: list[FitResult]
    served: dict[str, list[np.ndarray]]

    def objective(self) -> tuple[float, dict[Population, float]]:
        """Mean served precision over the populations, and each population's."""
        each = {p: self.report.served_precision(p) for p in POPULATIONS}
        figures = {p: v[0] for p, v in each.items() if v is not None}
        return float(np.mean(list(figures.values()))) if figures else 0.0, figures

    def gain_over(self, other: Evaluation) -> Estimate:
        """The objective of this evaluation minus ``other``'s, paired on the same employees
        (both must come from the same splits: same data and evaluation settings)."""
        gains = [
            Estimate.of([a - b for a, b in zip(self.served[p], other.served[p], strict=True)])
            for p in POPULATIONS
            if p in self.served and p in other.served
        ]
        if not gains:
            return Estimate(0.0, 0.0, 0.0)
        n = len(gains)
        return Estimate(
            float(np.mean([g.mean for g in gains])),
            float(np.hypot.reduce([g.spread for g in gains]) / n),
            float(np.hypot.reduce([g.ci95 for g in gains]) / n),
        )


def evaluate_candidate(
    dataset: Dataset,
    config: Config,
    *,
    oracle: OracleFn | None = None,
    progress: Progress = NO_PROGRESS,
) -> Evaluation:
    """Measure a configuration over ``evaluation.repeats`` splits, known and new employees apart."""
    opts, k = config.evaluation, config.evaluation.k
    splits = tracked(progress, "evaluate", range(opts.repeats), unit="splits")
    repeats = [_repeat(dataset, config, number, progress) for number in splits]
    report = EvaluationReport(k=k, repeats=opts.repeats)
    served: dict[str, list[np.ndarray]] = {}
    for population in POPULATIONS:
        choice = _choose(repeats, population, k)
        report.served[population] = ServedChoice(
            choice=choice.key,
            scorer=repeats[0].candidates.get(choice.key, MODEL),
            validation=choice.figures,
            margin=choice.margin,
            note=choice.note,
        )
        measured = _measure_test(repeats, population, choice.key, k, oracle, dataset)
        _summarize(report, population, measured)
        if SERVED in measured:
            served[population] = [m.precision for m in measured[SERVED]]
    last = repeats[-1]
    report.counts = {
        "known_employees_evaluated": len(last.test["known"].rows),
        "cold_start_employees_evaluated": len(last.test["cold-start"].rows),
        "cold_start_employees_to_choose": len(last.validation["cold-start"].rows),
        "interactions": int(dataset.taken.nnz),
        "successes": int(dataset.interactions.nnz),
    }
    return Evaluation(report, [r.fitted for r in repeats], served)


def bundle_from_fit(
    result: FitResult,
    dataset: Dataset,
    extracts: Extracts,
    config: Config,
    *,
    fingerprints: dict[str, str],
    evaluation: EvaluationReport | None,
    priors: Priors | None = None,
    serving: dict[Population, Served] | None = None,
) -> ModelBundle:
    """Export a fitted model with its maps, catalog, priors and metadata.

    ``serving`` names each population's scorer (default: the model for everyone).
    """
    model = result.model
    trainings = extracts.trainings
    columns = list(config.contract.trainings.features)
    priors = priors or Priors.none(len(dataset.items))
    combined = "-".join(fingerprints[k] for k in sorted(fingerprints)) or "nodata"
    metadata = ModelMetadata(
        version=new_version(combined.replace("-", "")),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        config=config,
        fingerprints=fingerprints,
        counts=Counts(
            employees=len(dataset.users),
            trainings=len(dataset.items),
            interactions=int(dataset.taken.nnz),
            successes=int(dataset.interactions.nnz),
            signals=int(dataset.signals.nnz) if dataset.signals is not None else 0,
            employees_with_history=int((np.diff(dataset.taken.indptr) > 0).sum()),
            user_features=len(dataset.user_feature_names),
            item_features=len(dataset.item_feature_names),
        ),
        metrics=evaluation,
        serving=serving or {p: Served(choice=MODEL.name, scorer=MODEL) for p in POPULATIONS},
        training=Training(
            final_epochs=len(result.history),
            final_seconds=round(sum(r.seconds for r in result.history), 3),
        ),
        item_attribute_columns=columns,
        validation=[ExtractReport.model_validate(r.to_dict()) for r in extracts.reports],
        libraries=_library_versions(),
    )
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
        user_features=dataset.user_features().tocsr(),
        item_features=dataset.item_features.tocsr(),
        taken=dataset.taken.tocsr(),
        popularity=priors.popularity,
        department_columns=priors.department_columns,
        department_popularity=priors.department,
        metadata=metadata,
    )
    spread = _distribution_of(bundle, config)
    bundle.metadata = bundle.metadata.model_copy(update={"recommendations": spread})
    return bundle


def _distribution_of(bundle: ModelBundle, config: Config) -> Spread:
    counts = np.zeros(len(bundle.item_ids), dtype=np.int64)
    recommender = Recommender(bundle)
    for _, items, _ in recommender.for_all(config.serving.top_k, config.serving.chunk_size):
        counts += np.bincount(items[items != NO_ITEM], minlength=len(counts))
    taken = np.asarray(bundle.taken.sum(axis=0)).ravel()
    return Spread(k=config.serving.top_k, **distribution(counts, taken))


def _refit_scorers(
    report: EvaluationReport, final: FitResult, dataset: Dataset, priors: Priors, config: Config
) -> dict[Population, Served]:
    """Each population's chosen scorer, its weights rescaled to the refit model's scores
    and its priors counted on all the data (the report's choices are updated to match)."""
    factors = Factors.from_features(
        dataset.user_features(),
        final.model.user_embeddings,
        final.model.user_biases,
        dataset.item_features,
        final.model.item_embeddings,
        final.model.item_biases,
    )
    scale = model_scale(factors, config.evaluation.seed)
    candidates = candidate_specs(scale, priors, config.gate.baselines)
    serving: dict[Population, Served] = {}
    for population in POPULATIONS:
        chosen = report.served[population]
        chosen.scorer = candidates.get(chosen.choice, MODEL)
        serving[population] = Served(choice=chosen.choice, scorer=chosen.scorer)
    return serving


def _dataset(
    extracts: Extracts, config: Config, signals: Mapping[tuple[str, str], float] | None
) -> Dataset:
    """The dataset to learn from, with the signals; refused when nothing can be learnt."""
    dataset = build_dataset(
        extracts.users, extracts.trainings, extracts.taken, config.contract, config.features
    )
    if signals:
        dataset = replace(
            dataset, signals=signal_matrix(signals, dataset.users, dataset.items, dataset.taken)
        )
    if dataset.interactions.nnz == 0:
        source = extracts.reports[-1].source if extracts.reports else "trainings-taken"
        raise ExtractError(
            source, [Problem(source, "no usable interaction: nothing to learn from")]
        )
    return dataset


def train_model(
    extracts: Extracts,
    config: Config,
    *,
    fingerprints: dict[str, str],
    evaluate: bool = True,
    oracle: OracleFn | None = None,
    progress: Progress = NO_PROGRESS,
    signals: Mapping[tuple[str, str], float] | None = None,
) -> TrainedModel:
    """Evaluate over repeated splits, then refit on all the data for the epochs found best.

    The published model is refit on everything: the evaluation splits hide part of
    the history and of the employees, which serving should not lose. The refit runs
    the median of the repeats' best epoch counts, so it does not overfit more than
    the evaluated fits did, and each population keeps the scorer chosen for it (its
    weights rescaled to the refit model's scores and the priors counted on all data).
    ``signals`` ((employee, training) -> weight, from feedback events) are learnt by
    every fit and measured by none.
    """
    with progress.step("build the matrices"):
        dataset = _dataset(extracts, config, signals)
    report = None
    epochs = config.model.epochs
    curves: list[list[Epoch]] = []
    best_epochs: list[int] = []
    if evaluate:
        evaluated = evaluate_candidate(dataset, config, oracle=oracle, progress=progress)
        report, fits = evaluated.report, evaluated.fits
        best_epochs = [max(f.best_epoch, 1) for f in fits]
        epochs = int(np.median(best_epochs))
        curves = [[Epoch(**record.__dict__) for record in f.history] for f in fits]
    seed = config.evaluation.seed
    interactions, features, weights = with_signals(
        training_rows(dataset, dataset.taken, dataset.interactions, seed),
        dataset.signals,
        dataset.user_features(),
    )
    with progress.step("refit on all the data"):
        final = fit(
            interactions,
            features,
            dataset.item_features,
            config.model,
            weights=weights,
            epochs=epochs,
            progress=progress,
        )
    priors = Priors.count(
        dataset.interactions, dataset.user_attributes, department_columns(dataset, config)
    )
    serving = None if report is None else _refit_scorers(report, final, dataset, priors, config)
    bundle = bundle_from_fit(
        final,
        dataset,
        extracts,
        config,
        fingerprints=fingerprints,
        evaluation=report,
        priors=priors,
        serving=serving,
    )
    training = bundle.metadata.training.model_copy(
        update={
            "validation_curve": curves[0] if curves else [],
            "validation_curves": curves,
            "best_epochs": best_epochs,
            "best_epoch": epochs,
        }
    )
    bundle.metadata = bundle.metadata.model_copy(update={"training": training})
    return TrainedModel(bundle, report, dataset)
