"""Splits, ranking metrics, baselines and the evaluation table.

Two questions are asked separately, because the product answers both: how well
does the model rank the held-out trainings of employees it knows (a share of each
one's history hidden), and how well does it serve employees it has never seen
(employees held out entirely, scored from their attributes)?
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict

from shared.scoring import MODEL, NO_ITEM, Priors, ScorerSpec, row_counts, top_k

ScoreFn = Callable[[np.ndarray], np.ndarray]  # employee rows -> rows x trainings scores
METRICS = ("precision", "recall", "ndcg", "auc", "coverage")


@dataclass(frozen=True)
class Split:
    """One evaluation split of every training taken (any weight).

    Known employees' histories are cut in three: ``fit`` (learnt from), ``validation``
    (early stopping and the choice of scorers) and ``test`` (the figures reported).
    New employees are employees held out entirely: ``cold_validation`` to choose how
    new employees are served, ``cold_test`` to measure it.
    """

    fit: sp.csr_matrix
    validation: sp.csr_matrix
    test: sp.csr_matrix
    cold_validation: np.ndarray  # employee rows
    cold_test: np.ndarray

    @property
    def train(self) -> sp.csr_matrix:
        """What a known employee had taken when the test part was still to come."""
        return (self.fit + self.validation).tocsr()


def _mask(matrix: sp.csr_matrix, keep: np.ndarray) -> sp.csr_matrix:
    out = matrix.copy()
    out.data = np.where(keep, out.data, 0).astype(out.data.dtype)
    out.eliminate_zeros()
    return out


def holdout(
    interactions: sp.csr_matrix, share: float, rng: np.random.Generator
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Hide ``share`` of each row's entries (at least one, never a row's last one)."""
    matrix = interactions.tocsr()
    lengths = np.diff(matrix.indptr)
    owners = np.repeat(np.arange(matrix.shape[0]), lengths)
    order = np.lexsort((rng.random(matrix.nnz), owners))  # random order within each row
    position = np.empty(matrix.nnz, dtype=np.int64)
    position[order] = np.arange(matrix.nnz) - matrix.indptr[owners[order]]
    n_hidden = np.where(lengths >= 2, np.maximum(1, np.rint(share * lengths)), 0)
    n_hidden = np.minimum(n_hidden, lengths - 1).astype(np.int64)
    hidden = position < n_hidden[owners]
    return _mask(matrix, ~hidden), _mask(matrix, hidden)


def split(
    taken: sp.csr_matrix,
    test_share: float,
    validation_share: float,
    cold_share: float,
    seed: int,
) -> Split:
    """New employees first (twice ``cold_share`` of those with a history: half to choose,
    half to measure), then each known employee's history in fit, validation and test."""
    rng = np.random.default_rng(seed)
    matrix = taken.tocsr()
    active = np.flatnonzero(np.diff(matrix.indptr) > 0)
    n_cold = min(round(cold_share * len(active)), len(active) // 2)
    cold = rng.choice(active, size=2 * n_cold, replace=False) if n_cold else active[:0]
    is_cold = np.zeros(matrix.shape[0], dtype=bool)
    is_cold[cold] = True
    warm = _mask(matrix, ~np.repeat(is_cold, np.diff(matrix.indptr)))
    train, test = holdout(warm, test_share, rng)
    fit, validation = holdout(train, validation_share, rng)
    return Split(fit, validation, test, np.sort(cold[n_cold:]), np.sort(cold[:n_cold]))


@dataclass(frozen=True)
class Measured:
    """Ranking metrics over some employees, and each one's precision@k (for paired
    comparisons between scorers on the same employees)."""

    metrics: dict[str, float]
    precision: np.ndarray  # per employee with some truth, in row order


def measure(
    score_fn: ScoreFn,
    rows: np.ndarray,
    exclude: sp.csr_matrix,
    truth: sp.csr_matrix,
    k: int,
    chunk_size: int = 2048,
    *,
    auc: bool = True,
) -> Measured:
    """precision@k, recall@k, NDCG@k, catalog coverage and (with ``auc``) AUC over ``rows``.

    ``exclude`` and ``truth`` are aligned with ``rows`` (row i describes employee
    ``rows[i]``): excluded trainings are neither recommended nor counted as
    negatives; ``truth`` holds the relevant ones. Rows without truth are skipped.
    The AUC ranks every training of every row: most of the cost, so it is optional.
    """
    has_truth = np.diff(truth.indptr) > 0
    rows, exclude, truth = rows[has_truth], exclude[has_truth], truth[has_truth]
    n_items = truth.shape[1]
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    sums = dict.fromkeys(("precision", "recall", "ndcg", "auc"), 0.0)
    recommended = np.zeros(n_items, dtype=bool)
    per_row = np.zeros(len(rows))
    for start in range(0, len(rows), chunk_size):
        stop = min(start + chunk_size, len(rows))
        scores = np.asarray(score_fn(rows[start:stop]))
        if scores.dtype not in (np.float32, np.float64):
            scores = scores.astype(np.float64)
        ex, tr = exclude[start:stop], truth[start:stop].tocsr()
        tr.sum_duplicates()
        tr.eliminate_zeros()  # what counts as relevant: the stored non-zero entries
        best, _ = top_k(scores, k, ex)  # sets excluded scores to -inf in place
        recommended[best[best != NO_ITEM]] = True
        n_rel = np.diff(tr.indptr)
        owners = np.repeat(np.arange(stop - start, dtype=np.int64), n_rel)
        offsets = np.arange(stop - start, dtype=np.int64)[:, None] * n_items
        hits = np.isin(offsets + best, owners * n_items + tr.indices) & (best != NO_ITEM)
        per_row[start:stop] = hits.sum(axis=1) / k
        sums["recall"] += float((hits.sum(axis=1) / n_rel).sum())
        ideal = np.cumsum(discounts)[np.minimum(n_rel, k) - 1]
        sums["ndcg"] += float(((hits * discounts[: hits.shape[1]]).sum(axis=1) / ideal).sum())
        if auc:  # by ranks: excluded trainings sit at -inf, below every candidate
            rank_sum = _rank_sums(scores, tr) - np.diff(ex.indptr) * n_rel
            n_neg = n_items - np.diff(ex.indptr) - n_rel
            row_auc = (rank_sum - n_rel * (n_rel - 1) / 2) / np.maximum(n_rel * n_neg, 1)
            sums["auc"] += float(row_auc.sum())
    sums["precision"] = float(per_row.sum())
    n = max(len(rows), 1)
    metrics = {name: value / n for name, value in sums.items() if auc or name != "auc"}
    metrics["coverage"] = float(recommended.mean()) if n_items else 0.0
    return Measured(metrics, per_row)


_RANK_BLOCK = 1 << 20  # comparisons made at once while ranking (1 MiB of booleans)


def _rank_sums(scores: np.ndarray, truth: sp.csr_matrix) -> np.ndarray:
    """Per row, the sum of the relevant columns' ranks in a stable ascending sort of the row.

    A column's rank is the number of scores below its own plus the equal ones to its
    left — what ``scores.argsort(kind="stable").argsort(kind="stable")`` gives — but
    counted for the few relevant columns only, instead of sorting every row twice.
    Rows with the same number of relevant columns are compared as one block, each
    row against its own relevant scores; the equal scores to the left are counted
    only for the (rare, but for popularity baselines common) relevant scores that
    are not unique in their row.
    """
    n_rows, n_cols = scores.shape
    lengths = np.diff(truth.indptr)
    sums = np.zeros(n_rows, dtype=np.float64)
    for length in np.unique(lengths[lengths > 0]).tolist():
        rows = np.flatnonzero(lengths == length)
        step = max(1, _RANK_BLOCK // (length * n_cols))
        for start in range(0, len(rows), step):
            sub = rows[start : start + step]
            block = scores[sub]
            columns = truth.indices[truth.indptr[sub][:, None] + np.arange(length)]
            own = np.take_along_axis(block, columns, axis=1)[:, :, None]
            compared = block[:, None, :] < own
            ranks = row_counts(compared)
            np.less_equal(block[:, None, :], own, out=compared)
            tied = np.flatnonzero((row_counts(compared) - ranks).ravel() > 1)
            if len(tied):  # equal scores: the ones to the left rank below
                flat = ranks.reshape(-1)
                for pair in tied.tolist():
                    i, j = divmod(pair, length)
                    flat[pair] += np.count_nonzero(block[i, : columns[i, j]] == own[i, j, 0])
            sums[sub] = ranks.sum(axis=1)
    return sums


# The weight of a popularity prior against the model's score, both standardized,
# tried on validation data for each population (the model alone and the prior alone
# are candidates too).
BLEND_WEIGHTS = (0.25, 0.5, 1.0, 2.0, 4.0)
BASELINES = ("popularity", "department popularity")


def baseline_spec(name: str, priors: Priors) -> ScorerSpec:
    """A popularity baseline as a scorer: overall, or within the employee's department
    with overall popularity breaking ties (and ranking employees of no department)."""
    if name == "popularity":
        return ScorerSpec("popularity", model=0.0, popularity=1.0)
    if name != "department popularity":
        raise ValueError(f"unknown baseline {name!r}; expected one of {', '.join(BASELINES)}")
    most = float(np.expm1(priors.department.data.max())) if priors.department.nnz else 0.0
    # The smallest step of log(1 + n) among the counts seen; half of it is more than
    # the whole tie-breaking term, so one more take in the department always wins.
    step = float(np.log((most + 1) / most)) if most >= 1 else 1.0
    tie_break = 0.5 * step / (float(priors.popularity.max(initial=0.0)) + 1.0)
    return ScorerSpec("department popularity", model=0.0, popularity=tie_break, department=1.0)


def _spread(values: np.ndarray, size: int) -> float:
    """Standard deviation of ``values`` padded with zeros to ``size`` entries."""
    if size <= 0:
        return 0.0
    mean = values.sum() / size
    return float(np.sqrt(max((values**2).sum() / size - mean**2, 0.0)))


def candidate_specs(
    model_scale: float, priors: Priors, baselines: tuple[str, ...]
) -> dict[str, ScorerSpec]:
    """Every scorer a population may be served by, by label: the baselines first
    (they win ties), the model, then the model with each prior at each of
    :data:`BLEND_WEIGHTS` (``model + popularity ×0.5``).

    A blend adds the standardized prior to the standardized model score
    (``model_scale``: the spread of the model's scores); a department prior needs a
    department feature (``priors.department_columns``).
    """
    usable = [b for b in baselines if b == "popularity" or len(priors.department_columns)]
    specs = {name: baseline_spec(name, priors) for name in usable}
    specs[MODEL.name] = MODEL
    model = 1.0 / max(model_scale, 1e-12)
    for name in usable:
        if name == "popularity":
            scale = _spread(priors.popularity, len(priors.popularity))
        else:
            scale = _spread(priors.department.data, int(np.prod(priors.department.shape)))
        if scale <= 0:
            continue
        for weight in BLEND_WEIGHTS:
            prior = weight / scale
            specs[f"model + {name} ×{weight:g}"] = (
                ScorerSpec(f"model + {name}", model, prior, 0.0)
                if name == "popularity"
                else ScorerSpec(f"model + {name}", model, 0.0, prior)
            )
    return specs


@dataclass(frozen=True)
class Estimate:
    """A figure over repeated splits: its mean, the spread of the repeats' figures,
    and the half-width of a 95 % interval."""

    mean: float
    spread: float
    ci95: float

    @classmethod
    def of(cls, per_repeat: list[np.ndarray]) -> Estimate:
        """From each repeat's per-employee values (a precision, or a paired difference).

        The interval counts two sources of noise: which employees and trainings were
        held out (the per-employee standard error of one repeat; the repeats share
        employees, so it is not divided again by their number) and how the fit and
        the split fell (the spread of the repeats' means).
        """
        means = np.asarray([v.mean() if len(v) else 0.0 for v in per_repeat])
        within = np.mean(
            [v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else 0.0 for v in per_repeat]
        )
        between = means.std(ddof=1) / np.sqrt(len(means)) if len(means) > 1 else 0.0
        spread = float(means.std(ddof=1)) if len(means) > 1 else 0.0
        return cls(float(means.mean()), spread, float(1.96 * np.hypot(within, between)))

    def to_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "spread": self.spread, "ci95": self.ci95}


SERVED, MODEL_ROW, ORACLE = "served", "model", "oracle"


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServedChoice(_Record):
    """How a population is served and why: the candidate chosen on validation data, its
    scorer, every candidate's validation precision, and the chosen one's margin over the
    best baseline (paired)."""

    choice: str
    scorer: ScorerSpec
    validation: dict[str, float] = {}
    margin: Estimate | None = None
    note: str = ""


class Comparison(_Record):
    """The served scorer's precision minus a baseline's, on the same employees."""

    difference: float
    ci95: float


class EvaluationReport(_Record):
    """Metrics per population ("known", "cold-start") and per scorer, over repeated splits.

    ``results`` holds the means over the repeats, ``spread`` the standard deviation
    of the repeats' figures, ``intervals`` the 95 % half-width of each precision.
    Rows: ``served`` (what the population is served by, named in ``served``), the
    ``model`` alone, the popularity baselines and, on synthetic data, the ``oracle``.
    ``comparisons`` holds the served scorer's precision minus each baseline's,
    measured on the same employees (paired), with its 95 % half-width.
    """

    k: int
    repeats: int = 1
    results: dict[str, dict[str, dict[str, float]]] = {}
    spread: dict[str, dict[str, dict[str, float]]] = {}
    intervals: dict[str, dict[str, float]] = {}
    served: dict[str, ServedChoice] = {}
    comparisons: dict[str, dict[str, Comparison]] = {}
    counts: dict[str, int] = {}

    def add(
        self,
        population: str,
        scorer: str,
        metrics: dict[str, float],
        spread: dict[str, float] | None = None,
        ci95: float | None = None,
    ) -> None:
        self.results.setdefault(population, {})[scorer] = metrics
        if spread is not None:
            self.spread.setdefault(population, {})[scorer] = spread
        if ci95 is not None:
            self.intervals.setdefault(population, {})[scorer] = ci95

    def served_name(self, population: str) -> str:
        """The name of the scorer serving a population ("model" for older reports)."""
        chosen = self.served.get(population)
        return chosen.scorer.name if chosen is not None else MODEL_ROW

    def served_by(self) -> dict[str, str]:
        """Population -> the name of its scorer, for every population measured."""
        return {population: self.served_name(population) for population in self.results}

    def served_precision(self, population: str) -> tuple[float, float] | None:
        """(mean, 95 % half-width) of what a population is served, if measured.

        Reports written before scorers were chosen per population measured the
        model alone, under the name "hybrid model".
        """
        rows = self.results.get(population, {})
        for name in (SERVED, "hybrid model"):
            if name in rows:
                return rows[name]["precision"], self.intervals.get(population, {}).get(name, 0.0)
        return None

    def ratio(
        self, population: str, scorer: str, reference: str, metric: str = "precision"
    ) -> float:
        """``scorer``'s metric as a share of ``reference``'s (e.g. model vs oracle)."""
        ref = self.results[population][reference][metric]
        return self.results[population][scorer][metric] / ref if ref else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvaluationReport:
        return cls.model_validate(data)

    def label(self, population: str, scorer: str) -> str:
        return f"served: {self.served_name(population)}" if scorer == SERVED else scorer

    def to_table(self) -> str:
        """One plain-text table, a row per population and scorer."""
        k = self.k
        header = [
            "population",
            "scorer",
            *[f"{m}@{k}" if m not in {"auc", "coverage"} else m for m in METRICS],
        ]
        lines = [header]
        for population, scorers in self.results.items():
            reference = scorers.get(ORACLE)
            for scorer, metrics in scorers.items():
                cells = [f"{metrics[m]:.4f}" if m in metrics else "-" for m in METRICS]
                interval = self.intervals.get(population, {}).get(scorer)
                if interval is not None:
                    cells[0] += f" ± {interval:.4f}"
                if reference and scorer != ORACLE and reference["precision"]:
                    cells[0] += f" ({metrics['precision'] / reference['precision']:.0%})"
                lines.append([population, self.label(population, scorer), *cells])
        widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
        rendered = [
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in lines
        ]
        rendered.insert(1, "  ".join("-" * w for w in widths))
        notes = []
        if any(self.intervals.values()):
            notes.append(f"±: 95 % interval over {self.repeats} repeated split(s)")
        if any(ORACLE in s for s in self.results.values()):
            notes.append("percentages: precision as a share of the oracle's")
        rendered += [f"({note})" for note in notes]
        return "\n".join(rendered)


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of non-negative counts: 0 when even, towards 1 when concentrated."""
    values = np.sort(np.asarray(counts, dtype=np.float64))
    total = values.sum()
    if len(values) == 0 or total == 0:
        return 0.0
    cumulative = np.cumsum(values)
    return float((len(values) + 1 - 2 * (cumulative / total).sum()) / len(values))


def distribution(recommended_counts: np.ndarray, taken_counts: np.ndarray) -> dict[str, Any]:
    """How recommendations spread over the catalog, and how much they favour popular trainings.

    ``recommended_counts[i]``: how many employees have training i in their top-k;
    ``taken_counts[i]``: how many took it.
    """
    n = len(recommended_counts)
    slots = max(int(recommended_counts.sum()), 1)
    tenth = max(n // 10, 1)
    most_recommended = np.sort(recommended_counts)[::-1][:tenth]
    most_popular = np.argsort(-taken_counts, kind="stable")[:tenth]
    return {
        "coverage": float((recommended_counts > 0).mean()) if n else 0.0,
        "gini": gini(recommended_counts),
        "top_decile_share": float(most_recommended.sum() / slots),
        "popular_decile_share_of_recommendations": float(
            recommended_counts[most_popular].sum() / slots
        ),
        "popular_decile_share_of_takes": float(
            taken_counts[most_popular].sum() / max(taken_counts.sum(), 1)
        ),
        "recommended_counts": [int(c) for c in recommended_counts],
        "taken_counts": [int(c) for c in taken_counts],
    }


class Gate(_Record):
    """Whether a candidate may replace the serving version, and why (as recorded)."""

    decision: Literal["accepted", "rejected", "not checked"]
    checks: list[str] = []  # every comparison made, passed or not
    reasons: list[str] = []  # why it was refused (empty when accepted)
    compared_with: str | None = None
    tolerance: float | None = None
    enabled: bool = True

    @property
    def accepted(self) -> bool:
        return self.decision != "rejected"

    @classmethod
    def off(cls, tolerance: float) -> Gate:
        return cls(
            decision="not checked",
            checks=["gate off: not checked"],
            tolerance=tolerance,
            enabled=False,
        )


def quality_gate(
    candidate: EvaluationReport,
    serving: EvaluationReport | None,
    *,
    serving_version: str | None,
    tolerance: float,
    enabled: bool = True,
) -> Gate:
    """Refuse a candidate only when it would serve worse than the serving version everywhere.

    Each population is already served by the best of the model, its blends and the
    baselines (chosen on validation data); the checks record what serves whom and by
    how much it beats each baseline. Against the serving version, a population is
    worse when its served precision is more than ``tolerance`` (relative) below the
    serving version's and the gap exceeds the two figures' combined 95 % interval;
    the candidate is refused only when every population compared is worse. The
    serving version's figures are those recorded when it was evaluated: re-scoring it
    on today's split would flatter it, since it was refit on data that split holds out.
    """
    if not enabled:
        return Gate.off(tolerance)
    checks: list[str] = []
    k = candidate.k
    for population in candidate.results:
        figure = candidate.served_precision(population)
        if figure is None:
            continue
        name = candidate.served_name(population)
        checks.append(
            f"{population}: served by {name}, precision@{k} {figure[0]:.4f} ± {figure[1]:.4f}"
        )
        note = candidate.served[population].note if population in candidate.served else ""
        if note:
            checks.append(f"{population}: {note}")
        for baseline, diff in candidate.comparisons.get(population, {}).items():
            checks.append(
                f"{population}: {name} minus {baseline}: {diff.difference:+.4f} ± {diff.ci95:.4f}"
            )
    worse: list[str] = []
    compared = 0
    for population in candidate.results:
        ours = candidate.served_precision(population)
        theirs = serving.served_precision(population) if serving is not None else None
        if ours is None or theirs is None:
            continue
        compared += 1
        gap = theirs[0] - ours[0]
        noise = float(np.hypot(ours[1], theirs[1]))
        is_worse = gap > tolerance * theirs[0] and gap > noise
        text = (
            f"{population}: precision@{k} {ours[0]:.4f} vs serving {serving_version} "
            f"{theirs[0]:.4f} (worse only if below {theirs[0] * (1 - tolerance):.4f} "
            f"and by more than {noise:.4f})"
        )
        checks.append(("FAIL: " if is_worse else "pass: ") + text)
        if is_worse:
            worse.append(text)
    refused = compared > 0 and len(worse) == compared
    return Gate(
        decision="rejected" if refused else "accepted",
        checks=checks,
        reasons=worse if refused else [],
        compared_with=serving_version,
        tolerance=tolerance,
    )
