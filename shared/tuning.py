"""Hyperparameter tuning: a small, deterministic coordinate search.

Search
    The base configuration is always trial 0, so the best found is never worse than
    it. Then, one setting at a time, the search tries the neighbours of the best so
    far (the next smaller and larger number of components and learning rate; every
    other loss and feature switch; twice the epoch cap, only when the best fit ran to
    its cap, since early stopping otherwise picks the epoch count), and moves to a
    candidate only when it wins beyond the noise. The seed only orders the settings;
    the search stops after ``budget`` trials or when every neighbour of the best has
    been tried. The default budget of 12 is about one pass over every setting.

Objective
    Each trial is evaluated exactly as ``retrain`` evaluates a candidate
    (:func:`shared.modeling.evaluate_candidate`: repeated splits, each population
    served by the best of the model, its blends and the baselines). The objective
    is the mean of what known and new employees are served (held-out precision@k).
    A candidate replaces the best only when its gain is larger than the 95 %
    interval of that gain, measured on the same employees (every trial uses the
    same splits); and one that loses more than ``tolerance`` (relative, 2 %) of the
    base's precision on either population cannot be chosen, however good its mean.

What is not searched
    ``contract.taken.min_weight`` defines what counts as a success, hence what the
    precision measures: two values are two different questions, not two answers to
    compare. ``evaluation`` settings define the splits.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import tomli_w

from shared.errors import ConfigurationError, ExtractError, Problem
from shared.features import build_dataset
from shared.modeling import Evaluation, OracleFn, evaluate_candidate
from shared.progress import NO_PROGRESS, Progress
from shared.schema import Extracts
from shared.settings import Config

TOLERANCE = 0.02
EPOCHS = "model.epochs"
ORDERED = {"model.no_components": (16, 32, 64, 128), "model.learning_rate": (0.05, 0.1, 0.2, 0.4)}
CHOICES: dict[str, tuple[Any, ...]] = {
    "model.loss": ("warp", "bpr", "warp-kos"),
    **{
        f"features.{name}": (True, False)
        for name in ("history", "item_identity", "normalize", "item_features")
    },
}


@dataclass(frozen=True)
class Trial:
    """One evaluated configuration: its changes from the base and its held-out figures."""

    number: int
    overrides: dict[str, Any]  # dotted setting -> value, e.g. {"model.loss": "bpr"}
    known_precision: float  # what known employees are served
    cold_precision: float  # what new employees are served
    objective: float
    gain: float  # objective minus the best's when it was tried (0 for the base)
    gain_ci95: float  # 95 % half-width of that gain, paired on the same employees
    best_epoch: int
    seconds: float
    served_by: dict[str, str] = field(default_factory=dict)
    taken: bool = False  # the search moved to it (it won beyond the noise)


@dataclass
class TuningResult:
    """Every trial, the best admissible one and its full configuration."""

    trials: list[Trial]
    best: Trial
    best_config: Config
    k: int
    tolerance: float = TOLERANCE
    seed: int = 0
    budget: int = 0
    oracle: dict[str, float] | None = None  # oracle precision@k, when an oracle was given
    space: dict[str, tuple[Any, ...]] = field(default_factory=dict)  # the values searched

    def admissible(self, trial: Trial) -> bool:
        """Whether ``trial`` loses at most ``tolerance`` of the base on both populations."""
        base, keep = self.trials[0], 1 - self.tolerance
        return (
            trial.known_precision >= base.known_precision * keep
            and trial.cold_precision >= base.cold_precision * keep
        )

    def table(self) -> str:
        """One plain-text table, a row per trial; ``*`` marks the best."""
        k = self.k
        header = ["", "#", f"known p@{k}", f"new p@{k}", "objective", "gain", "epoch", "s"]
        rows = [[*header, "changes"]]
        for t in self.trials:
            mark = (
                "*" if t is self.best else ("+" if t.taken else ("" if self.admissible(t) else "x"))
            )
            changes = ", ".join(f"{n.rsplit('.', 1)[-1]}={v}" for n, v in t.overrides.items())
            figures = (t.known_precision, t.cold_precision, t.objective)
            gain = f"{t.gain:+.4f} ± {t.gain_ci95:.4f}" if t.number else "-"
            rows.append([mark, str(t.number), *(f"{x:.4f}" for x in figures), gain])
            rows[-1] += [str(t.best_epoch), f"{t.seconds:.0f}", changes or "base"]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = [
            "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines.append(
            "objective: mean of what known and new employees are served; gain: over the best "
            "when tried, with its 95 % interval (a change is taken only beyond it: +); x: loses "
            f"more than {self.tolerance:.0%} of the base's precision on one population"
        )
        if self.oracle:
            lines.append(
                f"oracle: known {self.oracle['known']:.4f}, new {self.oracle['cold-start']:.4f}"
            )
        return "\n".join(lines)

    def summary(self) -> str:
        """A few lines saying when and how the best was found (the TOML header)."""
        base, best = self.trials[0], self.best
        changes = ", ".join(f"{n} = {v!r}" for n, v in best.overrides.items()) or "none"

        def figures(t: Trial) -> str:
            return f"known {t.known_precision:.4f}, new {t.cold_precision:.4f}"

        return "\n".join(
            [
                f"Tuned by shared.tuning on {datetime.now(UTC).isoformat(timespec='seconds')}:"
                f" {len(self.trials)} trials (budget {self.budget}, seed {self.seed}).",
                f"Objective: mean held-out precision@{self.k} served to known and new employees"
                f" ({self.best_config.evaluation.repeats} splits from seed"
                f" {self.best_config.evaluation.seed}),",
                f"neither more than {self.tolerance:.0%} below the base; changes taken only"
                " beyond their 95 % interval.",
                f"Base:            {figures(base)}, objective {base.objective:.4f}",
                f"Best (trial {best.number}): {figures(best)}, objective {best.objective:.4f}",
                f"Changes from the base: {changes}",
            ]
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dump."""
        return {
            "k": self.k,
            "tolerance": self.tolerance,
            "seed": self.seed,
            "budget": self.budget,
            "objective": "mean of known and new employees' served held-out precision@k",
            "trials": [asdict(t) | {"admissible": self.admissible(t)} for t in self.trials],
            "best": self.best.number,
            "best_config": self.best_config.to_dict(),
            "oracle": self.oracle,
            "space": {name: list(values) for name, values in self.space.items()},
        }


def _get(config: Config, name: str) -> Any:
    value: Any = config
    for part in name.split("."):
        value = getattr(value, part)
    return value


def _with(base: Config, overrides: dict[str, Any]) -> Config:
    data = base.to_dict()
    for name, value in overrides.items():
        *parents, last = name.split(".")
        section = data
        for part in parents:
            section = section[part]
        section[last] = value
    return Config.from_dict(data, source="tuning candidate")


def _space(base: Config) -> dict[str, tuple[Any, ...]]:
    space: dict[str, tuple[Any, ...]] = {
        name: tuple(sorted({*values, _get(base, name)})) for name, values in ORDERED.items()
    }
    space |= {n: tuple(dict.fromkeys((*v, _get(base, n)))) for n, v in CHOICES.items()}
    return space


def _evaluate(
    extracts: Extracts, config: Config, oracle: OracleFn | None, progress: Progress
) -> Evaluation:
    dataset = build_dataset(
        extracts.users, extracts.trainings, extracts.taken, config.contract, config.features
    )
    if dataset.interactions.nnz == 0:
        source = "trainings-taken"
        raise ExtractError(source, [Problem(source, "no usable interaction to tune on")])
    return evaluate_candidate(dataset, config, oracle=oracle, progress=progress)


def tune(
    extracts: Extracts,
    base: Config,
    *,
    budget: int = 12,
    seed: int = 0,
    tolerance: float = TOLERANCE,
    oracle: OracleFn | None = None,
    progress: Progress = NO_PROGRESS,
) -> TuningResult:
    """Search for a better configuration than ``base`` on held-out precision@k.

    Parameters
    ----------
    extracts
        The parsed extracts (as ``retrain`` reads them, with ``base.contract``).
    base
        The configuration to start from: trial 0, and every setting not searched.
    budget
        Number of trials, the base included (at least 1); fewer only when every
        neighbour of the best has been tried.
    seed
        Orders the settings the search visits.
    tolerance
        Largest relative loss of precision against the base, on known or on
        new employees, that the chosen configuration may have.
    oracle
        Scores of the true preferences (synthetic data only), shown for reference.
    progress
        Told of each trial (step ``tune``, in trials, with the objective and the best so
        far) and of each trial's evaluation.

    Returns
    -------
    TuningResult
        The trials in order, the best admissible one (the base unless beaten beyond
        the noise) and its configuration.
    """
    if budget < 1:
        raise ValueError(f"budget must be at least 1, got {budget}")
    space = _space(base)
    trials: list[Trial] = []
    evaluations: dict[int, Evaluation] = {}

    def run(overrides: dict[str, Any], against: int | None) -> Trial:
        trial, evaluation = _trial(
            extracts, base, overrides, evaluations, against, None if trials else oracle, progress
        )
        evaluations[trial.number] = evaluation
        trials.append(trial)
        best = max(t.objective for t in trials)
        step.advance(note=f"trial {trial.number}: {trial.objective:.4f}, best so far {best:.4f}")
        return trial

    with progress.step("tune", budget, "trials") as step:
        return _search(run, base, space, seed, budget, tolerance, oracle, evaluations, trials)


def _search(
    run: Callable[[dict[str, Any], int | None], Trial],
    base: Config,
    space: dict[str, tuple[Any, ...]],
    seed: int,
    budget: int,
    tolerance: float,
    oracle: OracleFn | None,
    evaluations: dict[int, Evaluation],
    trials: list[Trial],
) -> TuningResult:
    """Trial 0 (``base``), then a greedy walk from the best trial, one setting at a time."""
    first = run({}, None)
    result = TuningResult(trials, first, base, base.evaluation.k, tolerance, seed, budget)
    result.space = space
    if oracle is not None:
        rows = evaluations[0].report.results
        result.oracle = {p: rows[p]["oracle"]["precision"] for p in rows if "oracle" in rows[p]}
    settings = [*space, EPOCHS]
    settings = [settings[i] for i in np.random.default_rng(seed).permutation(len(settings))]
    seen: set[tuple[tuple[str, Any], ...]] = {()}
    improved = True
    while improved and len(trials) < budget:
        improved = False
        for name in settings:
            for value in _moves(name, _with(base, result.best.overrides), space, result.best):
                changed = result.best.overrides | {name: value}
                overrides = {n: v for n, v in changed.items() if v != _get(base, n)}
                if tuple(sorted(overrides.items())) in seen or len(trials) >= budget:
                    continue
                seen.add(tuple(sorted(overrides.items())))
                trial = run(overrides, result.best.number)
                if result.admissible(trial) and trial.gain > max(trial.gain_ci95, 0.0):
                    trial = trials[-1] = replace(trial, taken=True)
                    result.best, improved = trial, True
    result.best_config = _with(base, result.best.overrides)
    return result


def _trial(
    extracts: Extracts,
    base: Config,
    overrides: dict[str, Any],
    evaluations: dict[int, Evaluation],
    against: int | None,
    oracle: OracleFn | None,
    progress: Progress,
) -> tuple[Trial, Evaluation]:
    """The next trial: ``base`` with ``overrides``, its gain measured against trial
    ``against`` (the oracle is given to the first trial only: its figures do not change)."""
    started = time.perf_counter()
    evaluation = _evaluate(extracts, _with(base, overrides), oracle, progress)
    objective, each = evaluation.objective()
    gain = evaluation.gain_over(evaluations[against]) if against is not None else None
    epochs = [f.best_epoch for f in evaluation.fits]
    trial = Trial(
        len(evaluations),
        overrides,
        each.get("known", 0.0),
        each.get("cold-start", 0.0),
        objective,
        gain.mean if gain else 0.0,
        gain.ci95 if gain else 0.0,
        int(np.median(epochs)) if epochs else 0,
        time.perf_counter() - started,
        evaluation.report.served_by(),
    )
    return trial, evaluation


def _moves(name: str, centre: Config, space: dict[str, tuple[Any, ...]], best: Trial) -> list[Any]:
    """The values of one setting to try next to the best configuration (``centre``)."""
    current, hp = _get(centre, name), centre.model
    if name == EPOCHS:  # raise the cap only if early stopping did not end the fit
        ran_out = best.best_epoch > hp.epochs - hp.patience and hp.epochs < 1000
        return [min(2 * hp.epochs, 1000)] if ran_out else []
    if name in ORDERED:
        i = space[name].index(current)
        return [space[name][j] for j in (i - 1, i + 1) if 0 <= j < len(space[name])]
    return [value for value in space[name] if value != current]


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def _without_none(data: dict[str, Any]) -> dict[str, Any]:
    return {
        k: _without_none(v) if isinstance(v, dict) else v for k, v in data.items() if v is not None
    }


def write_config(config: Config, path: Path, *, header: str = "") -> None:
    """Write ``config`` as a TOML file that :func:`shared.settings.load_config` reads back equal.

    Parameters
    ----------
    config
        The configuration to write; every setting is written, not only the tuned ones,
        so that a later change of a default does not change what this file means.
    path
        The file (its folder is created if missing).
    header
        Text written first as ``#`` comments (e.g. :meth:`TuningResult.summary`).

    Raises
    ------
    ConfigurationError
        If a setting is None where its default is not: TOML has no null.
    """
    data = _without_none(config.to_dict())
    read_back = _flat(Config.from_dict(data).to_dict())
    lost = sorted(k for k, v in _flat(config.to_dict()).items() if read_back.get(k) != v)
    if lost:
        raise ConfigurationError(f"{path}: TOML cannot say None for {', '.join(lost)}")
    comments = "".join(f"# {line}".rstrip() + "\n" for line in header.splitlines())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(comments + ("\n" if comments else "") + tomli_w.dumps(data), encoding="utf-8")
