"""A model version's metadata (its ``model.json``), typed and validated when it is read.

What a bundle carries besides its arrays: the configuration it was trained with, the
data's fingerprints and counts, the evaluation, the scorer serving each population,
the quality gate's decision, the training curve, how its recommendations spread over
the catalog, and the library versions. Versions written before the per-population
scorers (bundle format 1) still validate: the fields they lack have defaults that
say what those versions did (the model served everyone).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from shared.evaluation import EvaluationReport, Gate
from shared.impact import ImpactReport
from shared.scoring import MODEL, POPULATIONS, Population, ScorerSpec
from shared.settings import Config


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Counts(_Record):
    employees: int
    trainings: int
    interactions: int  # trainings taken (rows kept, whatever their weight)
    successes: int | None = None  # of which successes (min_weight); format 1 did not count
    signals: int = 0  # extra successes learnt from feedback events (settings: signals)
    employees_with_history: int
    user_features: int
    item_features: int


class Epoch(_Record):
    epoch: int
    seconds: float
    validation_precision: float | None = None
    standard_error: float | None = None
    smoothed: float | None = None


class Training(_Record):
    final_epochs: int
    final_seconds: float
    validation_curve: list[Epoch] = []  # the first split's
    validation_curves: list[list[Epoch]] = []  # every split's
    best_epochs: list[int] = []
    best_epoch: int | None = None  # the refit's epochs


class Spread(_Record):
    """How the recommendations spread over the catalog (see :func:`evaluation.distribution`)."""

    k: int
    coverage: float
    gini: float
    top_decile_share: float
    popular_decile_share_of_recommendations: float
    popular_decile_share_of_takes: float
    recommended_counts: list[int]
    taken_counts: list[int]


class ProblemRecord(_Record):
    source: str
    message: str
    line: int | None = None
    column: str | None = None
    count: int = 1
    text: str


class ExtractReport(_Record):
    """What validation found and repaired in one extract."""

    source: str
    kind: str
    rows_read: int
    rows_kept: int
    problems: list[ProblemRecord] = []
    notes: dict[str, int] = {}
    dropped: dict[str, int] = {}  # rows not kept, by reason (empty before they were counted)


class Served(_Record):
    """The scorer serving a population (the label of the candidate chosen, and its weights)."""

    choice: str
    scorer: ScorerSpec


class ModelMetadata(BaseModel):
    """Everything a model version records besides its arrays."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str
    created_at: str
    format_version: int | None = None  # written with the bundle
    config: Config
    fingerprints: dict[str, str]
    counts: Counts
    metrics: EvaluationReport | None = None  # None: published without evaluation
    serving: dict[Population, Served] = {}  # empty before format 2: the model served everyone
    training: Training
    item_attribute_columns: list[str]
    validation: list[ExtractReport] = []
    libraries: dict[str, str] = {}
    recommendations: Spread | None = None
    gate: Gate | None = None  # None: not gated yet (a candidate), or older than the gate
    # What people did with the earlier versions' recommendations (feedback events of
    # the last days) when this one was trained; None: no events, or older than them.
    impact: ImpactReport | None = None

    def scorers(self) -> dict[Population, ScorerSpec]:
        """The scorer of each population (the model, for a version older than the choice)."""
        return {p: self.serving[p].scorer if p in self.serving else MODEL for p in POPULATIONS}

    def served_by(self) -> dict[Population, str]:
        """Population -> the name of its scorer."""
        return {p: spec.name for p, spec in self.scorers().items()}

    def served_precision(self, population: Population) -> float | None:
        """What a population is served, on held-out data (None if not evaluated)."""
        if self.metrics is None:
            return None
        figure = self.metrics.served_precision(population)
        return None if figure is None else figure[0]


def unevaluated(
    version: str, item_attribute_columns: list[str], config: Config | None = None
) -> ModelMetadata:
    """The metadata of a bundle assembled outside ``retrain`` (benchmarks, tests): no
    evaluation, no gate, zero counts, employees described by their features alone (no
    history block, unless ``config`` says so); the model serves everyone."""
    return ModelMetadata(
        version=version,
        created_at="1970-01-01T00:00:00+00:00",
        config=config or Config.from_dict({"features": {"history": False}}),
        fingerprints={},
        counts=Counts(
            employees=0,
            trainings=0,
            interactions=0,
            employees_with_history=0,
            user_features=0,
            item_features=0,
        ),
        training=Training(final_epochs=0, final_seconds=0.0),
        item_attribute_columns=item_attribute_columns,
    )
