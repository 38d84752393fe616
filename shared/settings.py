"""Configuration: the data contract, feature options and hyperparameters.

Everything a deployment may want to change without a code edit lives here, with
defaults that match the HR exports of today. A TOML file overrides any part of it
(``TR_CONFIG`` or ``--config``, which the adapters read); unknown keys are errors, so
a typo never silently falls back to a default. Nothing is read at import time.
"""

from __future__ import annotations

import logging
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shared.errors import ConfigurationError

log = logging.getLogger(__name__)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class EntityColumns(_Frozen):
    """Columns of the employees or the trainings extract."""

    id: str
    title: str | None = None
    features: tuple[str, ...]
    multi_valued: tuple[str, ...] = ()
    # A multi-valued column whose cells use another delimiter than
    # contract.value_delimiter, e.g. {"career interests" = ","}.
    delimiters: dict[str, str] = Field(default_factory=dict)
    # Numeric columns cut into bands: upper-exclusive edges, e.g. (2, 5, 10) gives
    # "0-1", "2-4", "5-9", "10+" for whole years.
    bands: dict[str, tuple[float, ...]] = Field(default_factory=dict)
    # Columns kept for business rules (e.g. a training's "status"), not model features;
    # optional in the file.
    extra: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _check(self) -> EntityColumns:
        for name in (*self.multi_valued, *self.bands):
            if name not in self.features:
                raise ValueError(f"column {name!r} is configured but is not in features")
        for name, delimiter in self.delimiters.items():
            if name not in self.multi_valued:
                raise ValueError(f"delimiters: {name!r} is not a multi_valued column")
            if not delimiter:
                raise ValueError(f"delimiters: the delimiter of {name!r} is empty")
        for name, edges in self.bands.items():
            if list(edges) != sorted(set(edges)) or not edges:
                raise ValueError(f"bands of {name!r} must be increasing numbers, got {edges}")
        return self

    def delimiter_of(self, column: str, default: str) -> str:
        """The delimiter of a multi-valued column's cells."""
        return self.delimiters.get(column, default)


class TakenColumns(_Frozen):
    """Columns of the trainings-taken extract."""

    user_id: str = "User-Id"
    training_id: str = "Training-Id"
    weight: str | None = "rating"  # optional in the file: absent means weight 1
    date: str | None = "date"  # optional in the file
    # What counts as a success to learn and to measure: a training taken with a
    # weight of at least this (e.g. 4 for ratings of 4 or 5); None: every training
    # taken. Whatever its weight, a training taken is part of the employee's history
    # and is never recommended to them again.
    min_weight: float | None = None


class Limits(_Frozen):
    """Sizes beyond which an extract is refused rather than half-processed."""

    # 256 MiB, about 10 M rows of a trainings-taken extract. A drop is read as a stream,
    # never whole: accepting one peaks at 2.6x its size at 10 M rows, 3.5x at 1 M
    # (benchmarks/drop.py): under 700 MB at this limit, on a 2 GB Flex Consumption
    # instance. Over it, a drop is refused from its size alone, without a byte read.
    max_bytes: int = Field(256 * 1024 * 1024, ge=1)
    max_rows: int = Field(10_000_000, ge=1)
    # An attribute with more distinct values than this is most likely free text
    # (a comment column configured as a feature by mistake).
    max_distinct_values: int = Field(5_000, ge=1)


class CrossChecks(_Frozen):
    """How well a dropped extract must fit the current ones (0 turns a check off)."""

    # Trainings-taken rows whose employee and training are in the users and trainings
    # extracts: under this share, the drop is refused (a spreadsheet that turned
    # "00042" into 42 leaves almost none).
    min_matched_rows: float = Field(0.9, ge=0, le=1)
    # Ids of the current users or trainings extract that the new one still has: under
    # this share, the drop is refused (a re-organisation keeps most people; a file
    # whose ids changed shape keeps none).
    min_kept_ids: float = Field(0.5, ge=0, le=1)


class DataContract(_Frozen):
    """Column names and parsing rules of the three HR extracts."""

    users: EntityColumns = EntityColumns(
        id="User-Id",
        features=("ou", "skills", "language", "grade", "career interests"),
        multi_valued=("skills", "career interests"),
        extra=("target role",),  # the role an employee aims for (skill-gap lane)
    )
    trainings: EntityColumns = EntityColumns(
        id="Training-Id",
        title="Training Title",
        features=("main skill", "category", "provider", "language", "level"),
    )
    taken: TakenColumns = TakenColumns()
    # The optional fourth extract: roles and the skills each requires (skill-gap lane).
    roles: EntityColumns = EntityColumns(
        id="Role-Id", title="Role Title", features=("skills",), multi_valued=("skills",)
    )
    value_delimiter: str = ";"
    department: str = "ou"  # the employees' column the department baseline groups by
    limits: Limits = Limits()
    checks: CrossChecks = CrossChecks()


class FeatureOptions(_Frozen):
    """How employees and trainings are described to the model."""

    # An employee is their attributes plus the trainings they took (one feature per
    # training, the history's weights summing to 1): a known employee's own history
    # shapes their list, a new hire with a few completions is served from them, and a
    # completion moves the list at the next precompute, without a retrain.
    history: bool = True
    item_identity: bool = True  # lets each training learn its own popularity
    normalize: bool = True  # attribute weights sum to 1 per row, as lightfm.data.Dataset does
    user_features: bool = True  # the employees' attributes
    item_features: bool = True
    # No longer used: a per-employee embedding, replaced by the history features
    # (measured better, and it cannot serve a new employee). Accepted so that older
    # configuration files (every file `tune` wrote names it) still load.
    user_identity: bool | None = None

    @model_validator(mode="after")
    def _check(self) -> FeatureOptions:
        if not (self.history or self.user_features):
            raise ValueError("employees need attributes (user_features) or history, or both")
        if self.user_identity:
            log.warning(
                "features.user_identity is no longer used: employees are described by their "
                "attributes and the trainings they took (features.history)"
            )
        return self


class Hyperparameters(_Frozen):
    """LightFM hyperparameters and the training loop."""

    no_components: int = Field(64, ge=1, le=1024)
    loss: Literal["warp", "bpr", "warp-kos", "logistic"] = "warp"
    # 0.2: as good as 0.1 on every synthetic regime, in a third of the epochs, and the
    # validation curve then peaks instead of creeping up a plateau (a stable best epoch).
    learning_rate: float = Field(0.2, gt=0)
    learning_schedule: Literal["adagrad", "adadelta"] = "adagrad"
    item_alpha: float = Field(0.0, ge=0)
    user_alpha: float = Field(0.0, ge=0)
    max_sampled: int = Field(10, ge=1)
    epochs: int = Field(60, ge=1, le=1000)
    random_state: int = 42
    num_threads: int = Field(2, ge=1)
    use_weights: bool = False  # pass the weights column to LightFM as sample weights
    # Early stopping on a validation split (precision@k after each epoch, smoothed
    # over 3 epochs): never before `min_epochs`; stop after `patience` epochs (or a
    # quarter of the epochs run, if more) without a better figure; keep the earliest
    # epoch within one standard error of the best, so that a plateau's noise does not
    # pick its epoch.
    early_stopping: bool = True
    min_epochs: int = Field(5, ge=1)
    patience: int = Field(5, ge=1)
    validation_share: float = Field(0.15, gt=0, lt=0.5)


class EvaluationOptions(_Frozen):
    """Held-out splits and metrics."""

    k: int = Field(10, ge=1)
    test_share: float = Field(0.2, gt=0, lt=1)  # of each known employee's history
    # Employees held out entirely, scored as new employees: this share to measure,
    # as much again to choose how new employees are served.
    cold_start_share: float = Field(0.1, gt=0, lt=0.4)
    # The split is repeated this many times (seeds seed, seed + 1, ...): figures are
    # means with a spread, and the gate and `tune` compare them with that in mind.
    repeats: int = Field(3, ge=1, le=20)
    seed: int = 7


class GateOptions(_Frozen):
    """How each population is served, and when a candidate is refused."""

    enabled: bool = True
    # A candidate is refused only when, for known and for new employees alike, what
    # it would serve is more than this much (relative) below what the serving version
    # serves, and by more than the figures' spread (0.05: 5 % worse).
    tolerance: float = Field(0.05, ge=0, lt=1)
    # The fallbacks: a population where the model (alone or blended with one of
    # these as a prior) does not beat them is served by the best of them.
    baselines: tuple[Literal["popularity", "department popularity"], ...] = (
        "popularity",
        "department popularity",
    )


class ServingOptions(_Frozen):
    """Precomputed lists and the HTTP API."""

    top_k: int = Field(20, ge=1, le=1000)  # per employee in the CSV export
    # Candidates kept per employee, so that a filtered answer still has n items; when
    # filters leave fewer, the answer is scored on the fly.
    depth: int = Field(50, ge=1, le=1000)
    max_n: int = Field(100, ge=1, le=1000)  # largest n an API caller may ask for
    chunk_size: int = Field(2048, ge=1)  # employees scored at once: bounds memory
    refresh_seconds: float = Field(5.0, ge=0)  # how often an instance re-checks the pointer
    max_body_bytes: int = Field(65_536, ge=1024)  # larger request bodies get a 413
    # Browser origins allowed to call the API directly; empty: CORS off (intranet
    # apps usually call it server-side with a function key).
    cors_origins: tuple[str, ...] = ()


class RulesOptions(_Frozen):
    """Business rules applied to every answer: API, CLI and precomputed lists."""

    # A training whose `retired_column` holds one of `retired_values` (case-insensitive)
    # is never recommended; so is one absent from the latest trainings extract.
    retired_column: str | None = None
    retired_values: tuple[str, ...] = ("retired", "inactive", "archived")
    pinned: tuple[str, ...] = ()  # training ids put first when allowed (e.g. compliance)
    excluded: tuple[str, ...] = ()  # training ids never recommended
    # Diversity: at most this many results sharing a value of a training attribute,
    # e.g. {"provider" = 4}.
    max_per_value: dict[str, int] = Field(default_factory=dict)
    explanations: int = Field(3, ge=0, le=10)  # employee attributes named per explanation
    # A training an employee dismissed (feedback event) is left out of their answers
    # for this many days.
    dismissed_days: int = Field(180, ge=0)
    # New trainings get seen: for `new_days` days after a training first appears in a
    # trainings extract, up to `new_share` of each list (rounded down) may go to the
    # best new trainings for that employee, flagged `new`, in evenly spread places
    # (with 0.2, the 5th and 10th of ten). 0 turns it off.
    new_days: int = Field(30, ge=0)
    new_share: float = Field(0.2, ge=0, le=0.5)


class SignalOptions(_Frozen):
    """Feedback events (POST /events) as extra things to learn at retrain.

    A pair (employee, training) the trainings-taken extract does not have yet, with an
    event of a type weighted here, becomes one more success to learn, weighted by the
    highest weight among its events (as a sample weight with model.use_weights). The
    employee is described as serving describes them (attributes and the trainings
    taken), so a click teaches "people like this go on to open this one". The
    evaluation measures against the extract alone, and the held-out new employees'
    events are left out of their repeat. Empty (the default): events are not learnt.
    """

    weights: dict[str, float] = Field(default_factory=dict)  # {clicked = 0.25, enrolled = 1}
    days: int = Field(180, ge=1)  # events received within this many days

    @model_validator(mode="after")
    def _check(self) -> SignalOptions:
        for kind, weight in self.weights.items():
            if kind not in ("clicked", "enrolled", "completed"):
                raise ValueError(
                    f"signals.weights: {kind!r} is not an event type to learn from "
                    "(clicked, enrolled, completed)"
                )
            if not 0 < weight <= 100:
                raise ValueError(f"signals.weights.{kind} must be above 0 and at most 100")
        return self


class LaneOptions(_Frozen):
    """Lanes beside an employee's main list, for an intranet page to show side by side."""

    # skill-gap: trainings teaching a skill the employee's target role requires (roles
    # extract) and they lack. Their target role is in this employees' column (one of
    # contract.users.extra) or given in the request.
    target_role: str = "target role"
    employee_skills: str = "skills"  # the employees' attribute listing their skills
    training_skills: str = "main skill"  # the trainings' attribute naming what each teaches
    # peers: most taken by employees with the same values of these attributes
    peers: tuple[str, ...] = ("ou", "grade")
    # trending: most taken within this many days of the newest date of the extract
    trending_days: int = Field(90, ge=1)


class Config(_Frozen):
    """The whole configuration."""

    contract: DataContract = DataContract()
    features: FeatureOptions = FeatureOptions()
    model: Hyperparameters = Hyperparameters()
    evaluation: EvaluationOptions = EvaluationOptions()
    gate: GateOptions = GateOptions()
    serving: ServingOptions = ServingOptions()
    rules: RulesOptions = RulesOptions()
    lanes: LaneOptions = LaneOptions()
    signals: SignalOptions = SignalOptions()

    @model_validator(mode="after")
    def _check_rules(self) -> Config:
        trainings = self.contract.trainings
        known = (*trainings.features, *trainings.extra)
        if self.rules.retired_column and self.rules.retired_column not in known:
            raise ValueError(
                f"rules.retired_column {self.rules.retired_column!r} must be a trainings column "
                "(add it to contract.trainings.extra)"
            )
        for column in self.rules.max_per_value:
            if column not in trainings.features:
                raise ValueError(f"rules.max_per_value: {column!r} is not a training attribute")
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dump (stored in every model bundle)."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "configuration") -> Config:
        """Validate a nested mapping over the defaults, merged key by key in every
        section (a section that names one key keeps the defaults of the others);
        errors name the offending key."""
        try:
            return cls.model_validate(_merged(cls().model_dump(), data))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
            )
            raise ConfigurationError(f"{source}: {problems}") from None


def _merged(defaults: dict[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """``given`` over ``defaults``, key by key at every level. A description of the
    employees or trainings that lists its own ``features`` keeps only the default
    multi-valued and banded columns it still has."""
    out = dict(defaults)
    for key, value in given.items():
        default = out.get(key)
        if isinstance(value, Mapping) and isinstance(default, dict):
            out[key] = _merged(default, value)
        else:
            out[key] = value
    if "features" in given and "id" in defaults:  # an EntityColumns section
        features = set(given["features"]) if isinstance(given["features"], list | tuple) else set()
        if "multi_valued" not in given:
            out["multi_valued"] = [c for c in defaults["multi_valued"] if c in features]
        if "bands" not in given:
            out["bands"] = {c: e for c, e in defaults["bands"].items() if c in features}
    return out


def load_config(path: Path | str | None = None) -> Config:
    """Read the configuration: defaults, overridden by a TOML file if one is given.

    Parameters
    ----------
    path
        A TOML file (the adapters pass ``TR_CONFIG`` or ``--config``); None: the defaults.
    """
    if path is None:
        return Config()
    file = Path(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigurationError(f"configuration file {file} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"configuration file {file}: {exc}") from None
    return Config.from_dict(data, source=str(file))
