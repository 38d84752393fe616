"""Configuration: the data contract, feature options and hyperparameters.

Everything a deployment may want to change without a code edit lives here, with
defaults that match the HR exports of today. A TOML file overrides any part of it
(``TR_CONFIG`` or ``--config``); unknown keys are errors, so a typo never silently
falls back to a default. Nothing is read at import time.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shared.errors import ConfigurationError


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class EntityColumns(_Frozen):
    """Columns of the employees or the trainings extract."""

    id: str
    title: str | None = None
    features: tuple[str, ...]
    multi_valued: tuple[str, ...] = ()
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
        for name, edges in self.bands.items():
            if list(edges) != sorted(set(edges)) or not edges:
                raise ValueError(f"bands of {name!r} must be increasing numbers, got {edges}")
        return self


class TakenColumns(_Frozen):
    """Columns of the trainings-taken extract."""

    user_id: str = "User-Id"
    training_id: str = "Training-Id"
    weight: str | None = "rating"  # optional in the file: absent means weight 1
    date: str | None = "date"  # optional in the file
    # An interaction counts only if its weight is at least this (e.g. 4 for ratings
    # of 4 or 5); None counts every training taken.
    min_weight: float | None = None


class Limits(_Frozen):
    """Sizes beyond which an extract is refused rather than half-processed."""

    max_bytes: int = Field(512 * 1024 * 1024, ge=1)
    max_rows: int = Field(10_000_000, ge=1)
    # An attribute with more distinct values than this is most likely free text
    # (a comment column configured as a feature by mistake).
    max_distinct_values: int = Field(5_000, ge=1)


class DataContract(_Frozen):
    """Column names and parsing rules of the three HR extracts."""

    users: EntityColumns = EntityColumns(
        id="User-Id",
        features=("ou", "skills", "language", "grade", "career interests"),
        multi_valued=("skills", "career interests"),
    )
    trainings: EntityColumns = EntityColumns(
        id="Training-Id",
        title="Training Title",
        features=("main skill", "category", "provider", "language", "level"),
    )
    taken: TakenColumns = TakenColumns()
    value_delimiter: str = ";"
    department: str = "ou"  # the employees' column the department baseline groups by
    limits: Limits = Limits()


class FeatureOptions(_Frozen):
    """How the feature matrices are built."""

    user_identity: bool = False  # cold-start employees have no identity, so off by default
    item_identity: bool = True  # lets each training learn its own popularity
    normalize: bool = True  # rows sum to 1, as lightfm.data.Dataset does
    user_features: bool = True
    item_features: bool = True


class Hyperparameters(_Frozen):
    """LightFM hyperparameters and the training loop."""

    no_components: int = Field(64, ge=1, le=1024)
    loss: Literal["warp", "bpr", "warp-kos", "logistic"] = "warp"
    learning_rate: float = Field(0.1, gt=0)
    learning_schedule: Literal["adagrad", "adadelta"] = "adagrad"
    item_alpha: float = Field(0.0, ge=0)
    user_alpha: float = Field(0.0, ge=0)
    max_sampled: int = Field(10, ge=1)
    epochs: int = Field(60, ge=1, le=1000)
    random_state: int = 42
    num_threads: int = Field(2, ge=1)
    use_weights: bool = False  # pass the weights column to LightFM as sample weights
    # Early stopping on a validation split: stop after `patience` epochs without a
    # better validation precision@k and keep the best epoch.
    early_stopping: bool = True
    patience: int = Field(3, ge=1)
    validation_share: float = Field(0.1, gt=0, lt=0.5)


class EvaluationOptions(_Frozen):
    """Held-out splits and metrics."""

    k: int = Field(10, ge=1)
    test_share: float = Field(0.2, gt=0, lt=1)  # of each known employee's interactions
    cold_start_share: float = Field(0.1, gt=0, lt=1)  # employees held out entirely
    seed: int = 7


class GateOptions(_Frozen):
    """The quality gate a retrained candidate must pass to be published."""

    enabled: bool = True
    # Largest relative drop of held-out precision@k allowed against the serving model,
    # for known and for cold-start employees separately (0.05: at most 5 % worse).
    tolerance: float = Field(0.05, ge=0, lt=1)
    baselines: tuple[str, ...] = ("popularity", "department popularity")  # must be beaten


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


class Config(_Frozen):
    """The whole configuration."""

    contract: DataContract = DataContract()
    features: FeatureOptions = FeatureOptions()
    model: Hyperparameters = Hyperparameters()
    evaluation: EvaluationOptions = EvaluationOptions()
    gate: GateOptions = GateOptions()
    serving: ServingOptions = ServingOptions()
    rules: RulesOptions = RulesOptions()

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
        """Validate a nested mapping; errors name the offending key."""
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
            )
            raise ConfigurationError(f"{source}: {problems}") from None


def load_config(path: Path | str | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read the configuration: defaults, overridden by a TOML file if one is given.

    Parameters
    ----------
    path
        A TOML file; when None, the ``TR_CONFIG`` environment variable is used if set.
    environ
        The environment to read (``os.environ`` by default).
    """
    env = os.environ if environ is None else environ
    chosen = path if path is not None else env.get("TR_CONFIG") or None
    if chosen is None:
        return Config()
    file = Path(chosen)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigurationError(f"configuration file {file} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"configuration file {file}: {exc}") from None
    return Config.from_dict(data, source=str(file))
