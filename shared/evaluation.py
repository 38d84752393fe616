"""Splits, ranking metrics, baselines and the evaluation table.

Two questions are asked separately, because the product answers both: how well
does the model rank the held-out trainings of employees it knows (a share of each
one's history hidden), and how well does it serve employees it has never seen
(employees held out entirely, scored from their attributes)?
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from shared.scoring import NO_ITEM, row_counts, top_k

ScoreFn = Callable[[np.ndarray], np.ndarray]  # employee rows -> rows x trainings scores
METRICS = ("precision", "recall", "ndcg", "auc", "coverage")


@dataclass(frozen=True)
class Split:
    """Train part, held-out part of known employees, and cold-start employees."""

    train: sp.csr_matrix
    test: sp.csr_matrix  # held-out interactions of known employees (rows of everyone)
    cold_users: np.ndarray  # rows held out entirely; their history is in cold_test
    cold_test: sp.csr_matrix


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


def split(interactions: sp.csr_matrix, test_share: float, cold_share: float, seed: int) -> Split:
    """Cold-start employees first (a share of those with history), then a per-row holdout."""
    rng = np.random.default_rng(seed)
    matrix = interactions.tocsr()
    active = np.flatnonzero(np.diff(matrix.indptr) > 0)
    n_cold = round(cold_share * len(active))
    cold = np.sort(rng.choice(active, size=n_cold, replace=False)) if n_cold else active[:0]
    is_cold = np.zeros(matrix.shape[0], dtype=bool)
    is_cold[cold] = True
    warm = _mask(matrix, ~np.repeat(is_cold, np.diff(matrix.indptr)))
    train, test = holdout(warm, test_share, rng)
    return Split(train, test, cold, matrix[cold])


def ranking_metrics(
    score_fn: ScoreFn,
    rows: np.ndarray,
    exclude: sp.csr_matrix,
    truth: sp.csr_matrix,
    k: int,
    chunk_size: int = 2048,
) -> dict[str, float]:
    """precision@k, recall@k, NDCG@k, AUC and catalog coverage over ``rows``.

    ``exclude`` and ``truth`` are aligned with ``rows`` (row i describes employee
    ``rows[i]``): excluded trainings are neither recommended nor counted as
    negatives; ``truth`` holds the relevant ones. Rows without truth are skipped.
    """
    has_truth = np.diff(truth.indptr) > 0
    rows, exclude, truth = rows[has_truth], exclude[has_truth], truth[has_truth]
    n_items = truth.shape[1]
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    sums = dict.fromkeys(("precision", "recall", "ndcg", "auc"), 0.0)
    recommended = np.zeros(n_items, dtype=bool)
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
        sums["precision"] += float((hits.sum(axis=1) / k).sum())
        sums["recall"] += float((hits.sum(axis=1) / n_rel).sum())
        ideal = np.cumsum(discounts)[np.minimum(n_rel, k) - 1]
        sums["ndcg"] += float(((hits * discounts[: hits.shape[1]]).sum(axis=1) / ideal).sum())
        # AUC by ranks: excluded trainings sit at -inf, below every candidate.
        rank_sum = _rank_sums(scores, tr) - np.diff(ex.indptr) * n_rel
        n_neg = n_items - np.diff(ex.indptr) - n_rel
        auc = (rank_sum - n_rel * (n_rel - 1) / 2) / np.maximum(n_rel * n_neg, 1)
        sums["auc"] += float(auc.sum())
    n = max(len(rows), 1)
    metrics = {name: value / n for name, value in sums.items()}
    metrics["coverage"] = float(recommended.mean()) if n_items else 0.0
    return metrics


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


def popularity_scorer(train: sp.csr_matrix) -> ScoreFn:
    """Global popularity: how many employees took each training."""
    counts = np.asarray(train.sum(axis=0), dtype=np.float64).ravel()

    def score(rows: np.ndarray) -> np.ndarray:
        return np.broadcast_to(counts, (len(rows), len(counts))).copy()

    return score


def group_popularity_scorer(train: sp.csr_matrix, groups: np.ndarray) -> ScoreFn:
    """Popularity within the employee's group (department); global popularity breaks ties.

    ``groups`` holds one integer code per employee row; -1 means unknown.
    """
    n_groups = int(groups.max()) + 1 if len(groups) else 0
    valid = groups >= 0
    membership = sp.csr_matrix(
        (np.ones(int(valid.sum())), (groups[valid], np.flatnonzero(valid))),
        shape=(max(n_groups, 1), train.shape[0]),  # one row even if every group is unknown
    )
    by_group = np.asarray((membership @ train).todense(), dtype=np.float64)
    overall = np.asarray(train.sum(axis=0), dtype=np.float64).ravel()
    tie_break = overall / (overall.max() + 1.0)  # < 1: never outranks one more group take

    def score(rows: np.ndarray) -> np.ndarray:
        codes = groups[rows]
        out: np.ndarray = np.where(codes[:, None] >= 0, by_group[np.maximum(codes, 0)], 0.0)
        out += tie_break[None, :]
        return out

    return score


@dataclass
class EvaluationReport:
    """Metrics per population ("known", "cold-start") and per scorer."""

    k: int
    results: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, population: str, scorer: str, metrics: dict[str, float]) -> None:
        self.results.setdefault(population, {})[scorer] = metrics

    def ratio(
        self, population: str, scorer: str, reference: str, metric: str = "precision"
    ) -> float:
        """``scorer``'s metric as a share of ``reference``'s (e.g. model vs oracle)."""
        ref = self.results[population][reference][metric]
        return self.results[population][scorer][metric] / ref if ref else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {"k": self.k, "results": self.results, "counts": self.counts}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvaluationReport:
        return cls(int(data["k"]), data.get("results", {}), data.get("counts", {}))

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
            reference = scorers.get("oracle")
            for scorer, metrics in scorers.items():
                cells = [f"{metrics[m]:.4f}" for m in METRICS]
                if reference and scorer != "oracle" and reference["precision"]:
                    cells[0] += f" ({metrics['precision'] / reference['precision']:.0%})"
                lines.append([population, scorer, *cells])
        widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
        rendered = [
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in lines
        ]
        rendered.insert(1, "  ".join("-" * w for w in widths))
        if any("oracle" in s for s in self.results.values()):
            rendered.append("(percentages: precision as a share of the oracle's)")
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


@dataclass(frozen=True)
class GateDecision:
    """Whether a candidate may replace the serving model, and why."""

    accepted: bool
    checks: list[str]  # every comparison made, passed or not
    reasons: list[str]  # the failed ones
    compared_with: str | None
    tolerance: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "decision": "accepted" if self.accepted else "rejected",
            "checks": self.checks,
            "reasons": self.reasons,
            "compared_with": self.compared_with,
            "tolerance": self.tolerance,
        }


def quality_gate(
    candidate: EvaluationReport,
    serving: EvaluationReport | None,
    *,
    serving_version: str | None,
    tolerance: float,
    baselines: tuple[str, ...],
    model: str = "hybrid model",
) -> GateDecision:
    """Held-out precision@k must beat the baselines and stay near the serving model.

    Checked for known and for cold-start employees separately. The serving model's
    figures are those recorded when it was evaluated: re-scoring it on today's split
    would flatter it, since it was refit on data that split now holds out.
    """
    checks: list[str] = []
    reasons: list[str] = []

    def check(passed: bool, text: str) -> None:
        checks.append(("pass: " if passed else "FAIL: ") + text)
        if not passed:
            reasons.append(text)

    for population, scorers in candidate.results.items():
        if model not in scorers:
            continue
        ours = scorers[model]["precision"]
        for baseline in baselines:
            if baseline in scorers:
                theirs = scorers[baseline]["precision"]
                check(
                    ours > theirs,
                    f"{population}: precision@{candidate.k} {ours:.4f} vs {baseline} {theirs:.4f}",
                )
        if serving is not None and model in serving.results.get(population, {}):
            before = serving.results[population][model]["precision"]
            floor = before * (1 - tolerance)
            check(
                ours >= floor,
                f"{population}: precision@{candidate.k} {ours:.4f} vs serving {serving_version} "
                f"{before:.4f} (at least {floor:.4f} allowed)",
            )
    return GateDecision(not reasons, checks, reasons, serving_version, tolerance)
