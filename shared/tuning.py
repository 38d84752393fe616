"""Hyperparameter tuning: a small, deterministic coordinate search.

Search
    The base configuration is always trial 0, so the best found is never worse than
    it. Then, one setting at a time, the search tries the neighbours of the best so
    far (the next smaller and larger number of components and learning rate; every
    other loss, minimum weight and feature switch; twice the epoch cap, only when the
    best fit ran to its cap, since early stopping otherwise picks the epoch count),
    and moves to a candidate as soon as it wins. The seed only orders the settings;
    the search stops after ``budget`` trials or when every neighbour of the best has
    been tried. The default budget of 12 is about one pass over every setting. The
    sequence is exactly reproducible when ``model.num_threads`` is 1 (LightFM's
    parallel SGD is asynchronous).

Objective
    Held-out precision@k of known employees and of cold-start employees (scored from
    their attributes) both matter, so the objective is their mean; and a candidate
    that loses more than ``tolerance`` (relative, 2 %) of the base's precision on
    either population cannot be chosen, however good its mean.

Same split for every candidate
    The split (evaluation seed) and the relevant trainings are those of the base
    configuration. A candidate with another ``contract.taken.min_weight`` is parsed
    again from the raw bytes and learns from its own interactions, minus every pair
    held out for testing or validation and minus the cold-start employees' history;
    otherwise raising the minimum weight would also shrink what counts as a hit and
    its precision would not be comparable. For the base itself this is exactly
    :func:`shared.modeling.evaluate_candidate`'s procedure. Minimum weights (the lower
    quartile and the median of the weights) are searched only when the weights vary.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import scipy.sparse as sp
import tomli_w

from shared.errors import ConfigurationError, ExtractError, NotFoundError, Problem
from shared.evaluation import holdout, ranking_metrics, split
from shared.features import Dataset, build_dataset, rows_for_new
from shared.modeling import OracleFn
from shared.schema import KINDS, Extracts, parse_all
from shared.scoring import Factors
from shared.settings import Config
from shared.storage import BlobStore
from shared.training import factors_of, fit

TOLERANCE = 0.02
MIN_WEIGHT, EPOCHS = "contract.taken.min_weight", "model.epochs"
ORDERED = {"model.no_components": (16, 32, 64, 128), "model.learning_rate": (0.025, 0.05, 0.1, 0.2)}
CHOICES: dict[str, tuple[Any, ...]] = {
    "model.loss": ("warp", "bpr", "warp-kos"),
    **{
        f"features.{name}": (True, False)
        for name in ("item_identity", "user_identity", "normalize", "item_features")
    },
}


class RawExtracts(NamedTuple):
    """The three extracts as bytes, so that a candidate can parse them its own way."""

    users: bytes
    trainings: bytes
    taken: bytes


@dataclass(frozen=True)
class Trial:
    """One evaluated configuration: its changes from the base and its held-out figures."""

    number: int
    overrides: dict[str, Any]  # dotted setting -> value, e.g. {"model.loss": "bpr"}
    known_precision: float
    cold_precision: float
    objective: float
    best_epoch: int
    seconds: float


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
        rows = [["", "#", f"known p@{k}", f"cold p@{k}", "objective", "epoch", "s", "changes"]]
        for t in self.trials:
            mark = "*" if t is self.best else ("" if self.admissible(t) else "x")
            changes = ", ".join(f"{n.rsplit('.', 1)[-1]}={v}" for n, v in t.overrides.items())
            figures = (t.known_precision, t.cold_precision, t.objective)
            rows.append([mark, str(t.number), *(f"{x:.4f}" for x in figures), str(t.best_epoch)])
            rows[-1] += [f"{t.seconds:.0f}", changes or "base"]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = [
            "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines.append(
            f"objective: mean of the two precisions; x: loses more than {self.tolerance:.0%} "
            "of the base's precision on one population, so it cannot be chosen"
        )
        if self.oracle:
            lines.append(
                f"oracle: known {self.oracle['known']:.4f}, cold {self.oracle['cold']:.4f}"
            )
        return "\n".join(lines)

    def summary(self) -> str:
        """A few lines saying when and how the best was found (the TOML header)."""
        base, best = self.trials[0], self.best
        changes = ", ".join(f"{n} = {v!r}" for n, v in best.overrides.items()) or "none"

        def figures(t: Trial) -> str:
            return f"known {t.known_precision:.4f}, cold-start {t.cold_precision:.4f}"

        return "\n".join(
            [
                f"Tuned by shared.tuning on {datetime.now(UTC).isoformat(timespec='seconds')}:"
                f" {len(self.trials)} trials (budget {self.budget}, seed {self.seed}).",
                f"Objective: mean held-out precision@{self.k} of known and cold-start employees"
                f" (evaluation seed {self.best_config.evaluation.seed}),",
                f"neither more than {self.tolerance:.0%} below the base.",
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
            "objective": "mean of known and cold-start held-out precision@k",
            "trials": [asdict(t) | {"admissible": self.admissible(t)} for t in self.trials],
            "best": self.best.number,
            "best_config": self.best_config.to_dict(),
            "oracle": self.oracle,
            "space": {name: list(values) for name, values in self.space.items()},
        }


def read_raw_extracts(store: BlobStore) -> RawExtracts:
    """The bytes of the current extract of each kind (what retrain would read)."""
    from shared.pipeline import EXTRACTS_POINTER
    from shared.registry import read_pointer

    pointer, _ = read_pointer(store, EXTRACTS_POINTER)
    missing = [kind for kind in KINDS if kind not in pointer]
    if missing:
        raise NotFoundError(f"no accepted extract yet for: {', '.join(missing)}")
    users, trainings, taken = (store.read(pointer[kind]["path"]) for kind in KINDS)
    return RawExtracts(users, trainings, taken)


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


class _Evaluator:
    """Fits candidates on the base's split and scores them against the base's truth."""

    def __init__(self, raw: tuple[bytes, bytes, bytes], base: Config) -> None:
        self.raw, self.k = raw, base.evaluation.k
        self.parsed: dict[float | None, Extracts] = {}
        truth = self.dataset(base)
        if truth.interactions.nnz == 0:
            source = "trainings-taken"
            raise ExtractError(source, [Problem(source, "no usable interaction to tune on")])
        self.truth, opts = truth, base.evaluation
        self.parts = split(truth.interactions, opts.test_share, opts.cold_start_share, opts.seed)
        fit_train, self.validation = holdout(
            self.parts.train, base.model.validation_share, np.random.default_rng(opts.seed + 1)
        )
        self.held = truth.interactions - fit_train  # test, validation and cold-start pairs
        self.warm = np.ones(truth.interactions.shape[0])
        self.warm[self.parts.cold_users] = 0
        self.empty = sp.csr_matrix(self.parts.cold_test.shape, dtype=np.float32)

    def extracts(self, config: Config) -> Extracts:
        contract = config.contract
        if contract.taken.min_weight not in self.parsed:
            self.parsed[contract.taken.min_weight] = parse_all(*self.raw, contract)
        return self.parsed[contract.taken.min_weight]

    def dataset(self, config: Config) -> Dataset:
        ex = self.extracts(config)
        return build_dataset(ex.users, ex.trainings, ex.taken, config.contract, config.features)

    def weights(self, base: Config) -> np.ndarray:
        taken = self.extracts(_with(base, {MIN_WEIGHT: None})).taken
        return np.asarray(taken["weight"].dropna(), dtype=np.float64)

    def __call__(self, config: Config) -> tuple[float, float, int]:
        data, hp, parts = self.dataset(config), config.model, self.parts
        # Its own interactions, minus every held-out pair and the cold-start employees.
        own = data.interactions - data.interactions.multiply(self.held)
        train = (sp.diags(self.warm, format="csr") @ own).astype(np.float32)
        train.eliminate_zeros()
        train.sort_indices()  # the order LightFM visits pairs in: the base's, exactly
        validation = self.validation if hp.early_stopping else None
        result = fit(
            train,
            data.user_features,
            data.item_features,
            hp,
            weights=data.weights,
            validation=validation,
            k=self.k,
        )
        model = result.model
        factors = factors_of(model, data.user_features, data.item_features)
        exclude = ((parts.train + train) > 0).astype(np.float32)
        known = ranking_metrics(
            factors.user_scores, np.arange(train.shape[0]), exclude, parts.test, self.k
        )
        users = self.extracts(config).users.iloc[parts.cold_users]
        contract = config.contract
        rows, _ = rows_for_new(
            users,
            contract.users,
            contract.value_delimiter,
            data.user_feature_names,
            config.features.normalize,
        )
        cold_factors = Factors(
            np.asarray(rows @ model.user_embeddings, dtype=np.float32),
            np.asarray(rows @ model.user_biases, dtype=np.float32),
            factors.item_vectors,
            factors.item_biases,
        )
        positions = np.arange(len(parts.cold_users))
        cold = ranking_metrics(
            cold_factors.user_scores, positions, self.empty, parts.cold_test, self.k
        )
        return known["precision"], cold["precision"], result.best_epoch

    def oracle(self, oracle: OracleFn) -> dict[str, float]:
        users, items, parts = self.truth.users.ids, list(self.truth.items.ids), self.parts

        def known(rows: np.ndarray) -> np.ndarray:
            return oracle(list(users[rows]), items)

        def cold(positions: np.ndarray) -> np.ndarray:
            return known(parts.cold_users[positions])

        rows, positions = (
            np.arange(self.truth.interactions.shape[0]),
            np.arange(len(parts.cold_users)),
        )
        known_metrics = ranking_metrics(known, rows, parts.train, parts.test, self.k)
        cold_metrics = ranking_metrics(cold, positions, self.empty, parts.cold_test, self.k)
        return {"known": known_metrics["precision"], "cold": cold_metrics["precision"]}


def _space(base: Config, weights: np.ndarray) -> dict[str, tuple[Any, ...]]:
    space: dict[str, tuple[Any, ...]] = {
        name: tuple(sorted({*values, _get(base, name)})) for name, values in ORDERED.items()
    }
    space |= {n: tuple(dict.fromkeys((*v, _get(base, n)))) for n, v in CHOICES.items()}
    if len(np.unique(weights)) > 1:
        cuts = [float(q) for q in np.quantile(weights, [0.25, 0.5], method="lower")]
        values = [None, *(c for c in cuts if c > weights.min()), _get(base, MIN_WEIGHT)]
        space[MIN_WEIGHT] = tuple(dict.fromkeys(values))
    return space


def tune(
    raw: RawExtracts | tuple[bytes, bytes, bytes],
    base: Config,
    *,
    budget: int = 12,
    seed: int = 0,
    tolerance: float = TOLERANCE,
    oracle: OracleFn | None = None,
    progress: Callable[[Trial], None] | None = None,
) -> TuningResult:
    """Search for a better configuration than ``base`` on held-out precision@k.

    Parameters
    ----------
    raw
        The users, trainings and trainings-taken extracts as bytes (any files that
        satisfy ``base.contract``); see :func:`read_raw_extracts`.
    base
        The configuration to start from: trial 0, and every setting not searched.
    budget
        Number of trials, the base included (at least 1); fewer only when every
        neighbour of the best has been tried.
    seed
        Orders the settings the search visits.
    tolerance
        Largest relative loss of precision against the base, on known or on
        cold-start employees, that the chosen configuration may have.
    oracle
        Scores of the true preferences (synthetic data only), shown for reference.
    progress
        Called with each trial as soon as it is evaluated.

    Returns
    -------
    TuningResult
        The trials in order, the best admissible one (the base unless beaten) and
        its configuration.
    """
    if budget < 1:
        raise ValueError(f"budget must be at least 1, got {budget}")
    evaluate = _Evaluator((raw[0], raw[1], raw[2]), base)
    space = _space(base, evaluate.weights(base))
    trials: list[Trial] = []

    def run(overrides: dict[str, Any]) -> Trial:
        started = time.perf_counter()
        known, cold, best_epoch = evaluate(_with(base, overrides))
        seconds = time.perf_counter() - started
        trial = Trial(len(trials), overrides, known, cold, (known + cold) / 2, best_epoch, seconds)
        trials.append(trial)
        if progress is not None:
            progress(trial)
        return trial

    first = run({})
    result = TuningResult(trials, first, base, base.evaluation.k, tolerance, seed, budget)
    result.space = space
    settings = [*space, EPOCHS]
    settings = [settings[i] for i in np.random.default_rng(seed).permutation(len(settings))]
    seen: set[tuple[tuple[str, Any], ...]] = {()}
    improved = True
    while improved and len(trials) < budget:
        improved = False
        for name in settings:
            centre = _with(base, result.best.overrides)
            current, hp = _get(centre, name), centre.model
            if name == EPOCHS:  # raise the cap only if early stopping did not end the fit
                ran_out = result.best.best_epoch > hp.epochs - hp.patience and hp.epochs < 1000
                moves = [min(2 * hp.epochs, 1000)] if ran_out else []
            elif name in ORDERED:
                i = space[name].index(current)
                moves = [space[name][j] for j in (i - 1, i + 1) if 0 <= j < len(space[name])]
            else:
                moves = [value for value in space[name] if value != current]
            for value in moves:
                changed = result.best.overrides | {name: value}
                overrides = {n: v for n, v in changed.items() if v != _get(base, n)}
                if tuple(sorted(overrides.items())) in seen or len(trials) >= budget:
                    continue
                seen.add(tuple(sorted(overrides.items())))
                trial = run(overrides)
                if result.admissible(trial) and trial.objective > result.best.objective:
                    result.best, improved = trial, True
    result.best_config = _with(base, result.best.overrides)
    if oracle is not None:
        result.oracle = evaluate.oracle(oracle)
    return result


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
