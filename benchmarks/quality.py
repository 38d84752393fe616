"""Quality of the recommendations as served, in every synthetic regime.

``python -m benchmarks quality [--small] [--users N --trainings N --interactions N]
[--regimes history,weak]``

For each regime of :mod:`shared.synthetic` (attributes, history, weak), one world is
generated and evaluated exactly as ``retrain`` evaluates a candidate
(:func:`shared.modeling.evaluate_candidate`: the split repeated over three seeds,
each population served by whichever of the model, its blends with a popularity prior
and the baselines did best on validation data). Printed per regime and population:
precision@10 and recall@10 (mean ± standard deviation over the splits) of what is
served, of the popularity baselines and of the oracle, the served scorer, and the
fit time. Two references are fitted on the same splits:

* ``attributes only (before)``: the model as it was, employees described by their
  attributes alone, its raw ranking served to everyone;
* ``identity + attributes (reference)``: a per-employee embedding beside the
  attributes, as a stock LightFM hybrid would be set up.

With ``--variants``, two ways of using the history that were measured and not chosen
are evaluated too (their model rows): the history features fit on the plain rows,
each employee described by the very trainings it learns (``history, targets in the
features``), and history weights of ``1/sqrt(n)`` instead of ``1/n``.

Targets (issue 11): the served lists are never below the best popularity baseline
beyond the noise (the paired 95 % interval), reach 90 % of the oracle wherever the
oracle beats the baselines beyond the noise, and in the history regime known
employees get at least 1.3 times the precision of the attributes-only model.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from benchmarks.common import header, log

if TYPE_CHECKING:
    from shared.evaluation import Comparison

FULL = {"users": 10_000, "trainings": 500, "interactions": 100_000}
SMALL = {"users": 2_000, "trainings": 200, "interactions": 20_000}
REGIMES = ("attributes", "history", "weak")
POPULATIONS = {"known": "known", "cold-start": "new"}
BASELINES = ("popularity", "department popularity")
BEFORE, REFERENCE = "attributes only (before)", "identity + attributes (reference)"
PLAIN, SQRT = "history, targets in the features", "history weights 1/sqrt(n)"


@dataclass
class Regime:
    """One regime's figures: per population, scorer -> (metric -> (mean, sd))."""

    name: str
    rows: dict[str, dict[str, dict[str, tuple[float, float]]]] = field(default_factory=dict)
    served: dict[str, str] = field(default_factory=dict)
    comparisons: dict[str, dict[str, Comparison]] = field(default_factory=dict)
    intervals: dict[str, dict[str, float]] = field(default_factory=dict)
    fit_seconds: dict[str, float] = field(default_factory=dict)  # per fit, by configuration
    epochs: dict[str, float] = field(default_factory=dict)


def _figures(report: Any, population: str, row: str) -> dict[str, tuple[float, float]]:
    means = report.results[population][row]
    spreads = report.spread.get(population, {}).get(row, {})
    return {m: (means[m], spreads.get(m, 0.0)) for m in ("precision", "recall")}


def _fit_time(evaluation: Any) -> tuple[float, float]:
    fits = evaluation.fits
    seconds = float(np.mean([sum(r.seconds for r in f.history) for f in fits]))
    return seconds, float(np.mean([len(f.history) for f in fits]))


def with_identity(dataset: Any) -> Any:
    """The dataset with a per-employee identity feature beside the attributes (each half
    of the row's weight), employees' history not used: the reference hybrid."""
    from shared.features import IdMap

    n = dataset.user_attributes.shape[0]
    rows = sp.hstack([sp.identity(n, format="csr", dtype=np.float32), dataset.user_attributes])
    rows = sp.diags(1.0 / np.maximum(np.asarray(rows.sum(axis=1)).ravel(), 1e-12)) @ rows
    names = np.concatenate([np.char.add("id:", dataset.users.ids), dataset.attribute_names.ids])
    return replace(
        dataset,
        user_attributes=sp.csr_matrix(rows, dtype=np.float32),
        attribute_names=IdMap.of(names),
        history=False,
    )


@contextlib.contextmanager
def variant(name: str) -> Iterator[None]:
    """Patch the model to one of the variants that were measured and not chosen."""
    from shared import features, modeling

    if name == PLAIN:
        original = modeling.training_rows

        def plain(dataset: Any, taken: Any, successes: Any, seed: int) -> Any:
            return successes, dataset.user_features(taken), None

        modeling.training_rows = plain  # type: ignore[assignment]
        try:
            yield
        finally:
            modeling.training_rows = original
    else:
        rows = features.history_rows

        def sqrt_weights(taken: Any) -> Any:
            matrix = rows(taken)
            counts = np.diff(matrix.indptr)
            matrix.data = np.repeat(1.0 / np.sqrt(np.maximum(counts, 1)), counts).astype(np.float32)
            return matrix

        features.history_rows = sqrt_weights  # type: ignore[assignment]
        try:
            yield
        finally:
            features.history_rows = rows


def evaluate_regime(
    name: str, sizes: dict[str, int], seed: int = 0, *, variants: bool = False
) -> Regime:
    from shared.features import build_dataset
    from shared.modeling import evaluate_candidate
    from shared.schema import parse_all
    from shared.settings import Config
    from shared.synthetic import generate

    log(f"{name}: generating {sizes['users']:,} employees")
    data = generate(sizes["users"], sizes["trainings"], sizes["interactions"], seed, name)
    config = Config()
    csv = [frame.to_csv(index=False).encode() for frame in (data.users, data.trainings, data.taken)]
    extracts = parse_all(*(io.BytesIO(body) for body in csv), config.contract)
    regime = Regime(name)

    def dataset_of(cfg: Any) -> Any:
        return build_dataset(
            extracts.users, extracts.trainings, extracts.taken, cfg.contract, cfg.features
        )

    log(f"{name}: evaluating the default configuration (3 splits)")
    served = evaluate_candidate(dataset_of(config), config, oracle=data.oracle.scores)
    report = served.report
    regime.fit_seconds["served"], regime.epochs["served"] = _fit_time(served)
    for population in POPULATIONS:
        regime.served[population] = report.served_name(population)
        rows = {"served": "served", "model": "model", **{b: b for b in BASELINES}}
        rows["oracle"] = "oracle"
        regime.rows[population] = {
            label: _figures(report, population, row)
            for label, row in rows.items()
            if row in report.results[population]
        }
        regime.comparisons[population] = report.comparisons.get(population, {})
        regime.intervals[population] = report.intervals.get(population, {})

    before = Config.from_dict({"features": {"history": False}})
    log(f"{name}: evaluating {BEFORE}")
    evaluated = evaluate_candidate(dataset_of(before), before)
    regime.fit_seconds[BEFORE], regime.epochs[BEFORE] = _fit_time(evaluated)
    for population in POPULATIONS:
        regime.rows[population][BEFORE] = _figures(evaluated.report, population, "model")

    log(f"{name}: evaluating {REFERENCE}")
    evaluated = evaluate_candidate(with_identity(dataset_of(before)), before)
    regime.fit_seconds[REFERENCE], regime.epochs[REFERENCE] = _fit_time(evaluated)
    for population in POPULATIONS:
        regime.rows[population][REFERENCE] = _figures(evaluated.report, population, "model")
    for label in (PLAIN, SQRT) if variants else ():
        log(f"{name}: evaluating {label}")
        with variant(label):
            evaluated = evaluate_candidate(dataset_of(config), config)
        regime.fit_seconds[label], regime.epochs[label] = _fit_time(evaluated)
        for population in POPULATIONS:
            regime.rows[population][label] = _figures(evaluated.report, population, "model")
    return regime


def checks(regime: Regime) -> list[tuple[str, bool, str]]:
    """The targets of issue 11 for one regime: (target, met, detail)."""
    out = []
    for population, label in POPULATIONS.items():
        rows = regime.rows[population]
        served = rows["served"]["precision"][0]
        differences = regime.comparisons[population]
        worst = min(differences, key=lambda b: differences[b].difference)
        diff = differences[worst]
        out.append(
            (
                f"{regime.name}, {label}: served >= the best baseline within the noise",
                diff.difference + diff.ci95 >= 0,
                f"minus {worst}: {diff.difference:+.4f} ± {diff.ci95:.4f}",
            )
        )
        if "oracle" in rows:
            oracle = rows["oracle"]["precision"][0]
            best = max(rows[b]["precision"][0] for b in BASELINES if b in rows)
            noise = regime.intervals[population].get("oracle", 0.0)
            if oracle - best > noise:
                out.append(
                    (
                        f"{regime.name}, {label}: >= 90% of the oracle",
                        served >= 0.9 * oracle,
                        f"{served / oracle:.0%} ({served:.4f} vs {oracle:.4f})",
                    )
                )
            else:
                out.append(
                    (
                        f"{regime.name}, {label}: 90% of the oracle (not applicable)",
                        True,
                        f"the oracle {oracle:.4f} is within the noise ({noise:.4f}) of the best "
                        f"baseline {best:.4f}",
                    )
                )
    if regime.name == "history":
        known = regime.rows["known"]
        ratio = known["served"]["precision"][0] / known[BEFORE]["precision"][0]
        out.append(
            ("history, known: >= 1.3x the attributes-only model", ratio >= 1.3, f"{ratio:.2f}x")
        )
    return out


def render(regimes: list[Regime], sizes: dict[str, int]) -> str:
    k = 10
    header_row = ["regime", "population", "scorer", f"precision@{k}", f"recall@{k}", "of oracle"]
    lines = [header_row]
    for regime in regimes:
        for population, label in POPULATIONS.items():
            rows = regime.rows[population]
            oracle = rows.get("oracle", {}).get("precision", (0.0, 0.0))[0]
            for name, figures in rows.items():
                shown = f"served: {regime.served[population]}" if name == "served" else name
                share = (
                    f"{figures['precision'][0] / oracle:.0%}" if oracle and name != "oracle" else ""
                )
                lines.append(
                    [
                        regime.name,
                        label,
                        shown,
                        "{:.4f} ± {:.4f}".format(*figures["precision"]),
                        "{:.4f} ± {:.4f}".format(*figures["recall"]),
                        share,
                    ]
                )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header_row))]
    title = (
        f"quality as served: {sizes['users']:,} employees x {sizes['trainings']:,} trainings, "
        f"{sizes['interactions']:,} taken, per regime"
    )
    out = [title, "=" * len(title)]
    for n, line in enumerate(lines):
        out.append("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    out.append("±: standard deviation over the 3 splits; the targets use paired 95 % intervals")
    out.append("")
    for regime in regimes:
        times = ", ".join(
            f"{name} {seconds:.1f} s ({regime.epochs[name]:.0f} epochs)"
            for name, seconds in regime.fit_seconds.items()
        )
        out.append(f"fit time per split, {regime.name}: {times}")
    out.append("")
    for regime in regimes:
        for text, met, detail in checks(regime):
            out.append(f"target {text}: {'MET' if met else 'NOT MET'} ({detail})")
    return "\n".join(out)


def run(
    sizes: dict[str, int], regimes: Sequence[str] = REGIMES, *, variants: bool = False
) -> tuple[list[Regime], str]:
    started = time.perf_counter()
    results = [evaluate_regime(name, sizes, variants=variants) for name in regimes]
    text = render(results, sizes)
    log(f"quality benchmark done in {time.perf_counter() - started:.0f} s")
    return results, text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks quality")
    parser.add_argument("--small", action="store_true", help="quick run at small sizes")
    for name, value in FULL.items():
        parser.add_argument(f"--{name}", type=int, default=None, help=f"default {value:,}")
    parser.add_argument("--regimes", default=",".join(REGIMES), help="comma-separated")
    parser.add_argument(
        "--variants", action="store_true", help="also the history variants not chosen"
    )
    args = parser.parse_args(argv)
    sizes = dict(SMALL if args.small else FULL)
    sizes |= {name: getattr(args, name) for name in FULL if getattr(args, name) is not None}
    regimes = [r.strip() for r in args.regimes.split(",") if r.strip()]
    unknown = sorted(set(regimes) - set(REGIMES))
    if unknown:
        parser.error(f"unknown regime(s) {unknown}; choose among {', '.join(REGIMES)}")
    header("quality", ", ".join(f"{k} {v:,}" for k, v in sizes.items()))
    results, text = run(sizes, regimes, variants=args.variants)
    print(text, flush=True)
    return 0 if all(met for r in results for _, met, _ in checks(r)) else 1
