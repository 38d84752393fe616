"""What a serving instance holds: the current version, and the answers it gives.

An instance caches one :class:`Snapshot` (a recommendation table and the model it
came from, always as a pair, so an answer never mixes two versions). The pointer
is re-checked at most every ``refresh_seconds``; a new version is loaded beside
the current one and swapped in only once it loaded completely. A version that
fails to load never replaces a good one: the failure is logged and kept for
``/health``.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import scipy.sparse as sp

from shared.answers import (
    Contribution,
    EmployeeRecommendations,
    Explanation,
    LaneRecommendations,
    NewEmployeeLaneRecommendations,
    NewEmployeeRecommendations,
    RankedTraining,
    RankResponse,
    Reason,
    SimilarTrainings,
    Training,
    TrainingTaken,
)
from shared.bundle import ModelBundle
from shared.catalog import extend
from shared.errors import ModelLoadError, NoModelError, NotFoundError
from shared.events import EventLog, dismissals
from shared.features import IdMap, employee_rows, entity_frame
from shared.features import contract_of as bundle_contract
from shared.impact import ImpactReport
from shared.lanes import (
    Asker,
    Lane,
    LaneData,
    LaneUnavailableError,
    asker_of_attributes,
    asker_of_row,
    popular_in,
    skill_gap,
    teaching,
)
from shared.layout import RECOMMENDATIONS_POINTER, RETRAIN_JOB, read_pointer
from shared.registry import load_bundle, load_recommendations
from shared.rules import Rules, filter_mask
from shared.scoring import NO_ITEM, Recommender, population_of, select, top_k
from shared.settings import DataContract, RulesOptions
from shared.storage import BlobStore
from shared.table import RecommendationTable, answer_for_row

log = logging.getLogger(__name__)


Filters = Mapping[str, Sequence[str]]  # training attribute -> accepted values


@dataclass(frozen=True)
class Snapshot:
    """A recommendation table, the model that computed it, and the rules in force."""

    bundle: ModelBundle
    recommender: Recommender
    table: RecommendationTable
    employees: IdMap
    trainings: IdMap
    pointer: dict[str, Any]
    etag: str
    loaded_at: float
    rules: Rules
    options: RulesOptions
    # Per training row: id, title and attributes as answered (read-only, shared by
    # every answer). Built once per version, since this is most of an answer's work.
    catalog: list[tuple[str, str, dict[str, str]]]

    @property
    def versions(self) -> dict[str, str]:
        return {
            "model_version": str(self.pointer.get("model_version")),
            "data_version": str(self.pointer.get("data_version")),
            "recommendations_version": str(self.pointer.get("version")),
        }

    @property
    def scorers(self) -> dict[str, str]:
        """Population ("known", "cold-start") -> the name of the scorer serving it."""
        return {p: spec.name for p, spec in self.recommender.specs.items()}

    def identify(self, scorer: str, asker: str, trainings: Sequence[Training]) -> dict[str, str]:
        """An answer's versions, scorer and ``recommendation_id``: the model version, the
        scorer and a digest of the recommendations version, who asked and the trainings
        returned. The same answer (served again, or revalidated by its ETag) keeps its
        id; feedback events on it are attributed to that model and scorer."""
        versions = self.versions
        content = "\n".join(
            [versions["recommendations_version"], asker, *(t.training_id for t in trainings)]
        )
        digest = hashlib.blake2b(content.encode(), digest_size=8).hexdigest()
        slug = scorer.replace(" + ", "+").replace(" ", "-")
        return {
            **versions,
            "scorer": scorer,
            "recommendation_id": f"{versions['model_version']}.{slug}.{digest}",
        }

    def scorer(self, has_history: bool) -> str:
        """The name of the scorer that ranks an employee with or without a history."""
        return self.recommender.specs[population_of(has_history)].name

    def allowed(self, filters: Filters | None) -> np.ndarray | None:
        return filter_mask(self.bundle, filters) if filters else None

    def training(self, row: int, score: float, rank: int, pinned: bool = False) -> Training:
        training_id, title, attributes = self.catalog[row]
        # Validated: pydantic-core validates these few fields faster than
        # model_construct copies them (measured), and the JSON comes out of Rust.
        return Training(
            rank=rank,
            training_id=training_id,
            title=title,
            attributes=attributes,
            score=round(float(score), 6),
            pinned=pinned,
            new=bool(self.rules.fresh[row]),
            explanation=None,
        )

    def answer(
        self,
        chosen: list[tuple[int, float, bool]],
        features: sp.csr_matrix | None = None,
        has_history: bool = False,
    ) -> list[Training]:
        """Chosen ``(row, score, pinned)`` as answered trainings, explained if ``features``
        (those of an employee with or without a history: their scorer explains)."""
        answers = [
            self.training(row, score, rank, pinned)
            for rank, (row, score, pinned) in enumerate(chosen, start=1)
        ]
        if features is not None and chosen:
            spec = self.recommender.specs[population_of(has_history)]
            if not spec.model:  # a popularity baseline: nothing personal to explain
                text = "Among the most taken trainings" + (
                    " in your department." if spec.department else "."
                )
                for item in answers:
                    item.explanation = Explanation(
                        text=text,
                        employee_attributes=[],
                        training_attributes=[],
                        reasons=_flags(item, [Reason(code="popular", value=spec.name)]),
                    )
                return answers
            rows = np.asarray([row for row, _, _ in chosen], dtype=np.int64)
            n_user = max(self.options.explanations, 1)
            reasons = self.recommender.explain(features, rows, n_user, TRAINING_TERMS)
            own = employee_values(self.bundle, features)
            matches = self._matches(features, has_history, [score for _, score, _ in chosen])
            for item, (user_terms, item_terms), match in zip(
                answers, reasons, matches, strict=True
            ):
                item.explanation = explanation(self.bundle, user_terms, item_terms, own)
                item.explanation.reasons = _flags(item, item.explanation.reasons)
                item.explanation.match = match
                item.explanation.strength = strength(match)
        return answers

    def _matches(
        self, features: sp.csr_matrix, has_history: bool, scores: list[float]
    ) -> list[int]:
        """Scores on a scale people read: 100 for the best of the list, 0 for the
        catalog's median training for this employee (raw scores mean nothing to them)."""
        median = float(np.median(self.recommender.feature_scores(features, has_history)))
        best = max(scores)
        if best <= median:
            return [0 for _ in scores]
        share = np.clip((np.asarray(scores) - median) / (best - median), 0.0, 1.0)
        return [round(100 * float(value)) for value in share]


# How an employee attribute reads in a sentence ("people in development ..."); any
# other column reads "with <column> <value>".
PHRASES = {
    "ou": "in {}",
    "department": "in {}",
    "skills": "with the skill {}",
    "career interests": "interested in {}",
    "language": "speaking {}",
    "grade": "at grade {}",
    "los": "with {} years of service",
}


def feature_parts(name: str) -> tuple[str, str]:
    """A feature's column and value: ``"skills:python"`` -> ``("skills", "python")``."""
    column, _, value = name.partition(":")
    return column, value


def who_phrase(attributes: Sequence[tuple[str, str]]) -> str:
    """``(column, value)`` pairs as words: "in sales with the skill python and
    interested in data"."""
    phrases = [
        PHRASES.get(column, f"with {column} {{}}").format(value) for column, value in attributes
    ]
    where = [p for p in phrases if p.startswith("in ")]
    rest = [p for p in phrases if not p.startswith("in ")]
    return " ".join([*where, " and ".join(rest)]).strip()


def strength(match: int) -> str:
    """The match in a word: strong (80+), good (50+), fair."""
    return "strong" if match >= 80 else "good" if match >= 50 else "fair"


TRAINING_TERMS = 4  # training attribute terms looked at for one the employee shares
# Reason codes of the employee attributes; any other column is "attribute".
CODES = {
    "skills": "skill",
    "career interests": "interest",
    "ou": "department",
    "department": "department",
    "grade": "grade",
    "language": "language",
}


def employee_values(bundle: ModelBundle, features: sp.csr_matrix) -> set[str]:
    """The values of an employee's attributes (``python``, ``french``, ``sales``)."""
    names = bundle.user_feature_names[features.indices[features.indices < bundle.n_attributes]]
    return {feature_parts(str(name))[1] for name in names}


def _flags(item: Training, reasons: list[Reason]) -> list[Reason]:
    """The reasons, plus ``pinned`` and ``new`` when the answer is flagged so."""
    flags = [
        Reason(code=code, value=item.training_id)
        for code, on in (("pinned", item.pinned), ("new", item.new))
        if on
    ]
    return [*reasons, *flags]


Terms = list[tuple[int, float]]  # (feature column or training row, contribution)


def employee_terms(bundle: ModelBundle, user_terms: Terms) -> tuple[Terms, Terms]:
    """An employee's terms split into the trainings they took (as training rows, the
    history columns come after the attributes) and their attributes (as columns)."""
    n_attributes = bundle.n_attributes
    took = [(col - n_attributes, t) for col, t in user_terms if col >= n_attributes]
    return took, [(col, t) for col, t in user_terms if col < n_attributes]


def explanation(
    bundle: ModelBundle,
    user_terms: list[tuple[int, float]],
    item_terms: list[tuple[int, float]],
    own: set[str] | None = None,
) -> Explanation:
    """Factor contributions as plain words, as data and as codes.

    Employee features are attributes (``skills:python``) or trainings taken (the
    history columns, after the attributes): "Because you took “Intro to SQL”; people
    in sales with the skill python took this; its main skill is python." A training
    attribute is named only when the employee shares its value (``own``): a Spanish
    course is not explained to a French speaker by "its language is spanish".
    """
    took, attributes = employee_terms(bundle, user_terms)
    employee = [feature_parts(str(bundle.user_feature_names[col])) for col, _ in attributes]
    training = [feature_parts(str(bundle.item_feature_names[col])) for col, _ in item_terms]
    who = who_phrase(employee)
    parts = []
    if took:
        titles = " and ".join(f"“{bundle.item_titles[row]}”" for row, _ in took[:2])
        parts.append(f"Because you took {titles}")
    if who:
        parts.append(f"{'people' if parts else 'People'} {who} took this")
    text = "; ".join(parts) or "Popular with everyone"
    shared = [(c, v) for c, v in training if own is None or v in own]
    if shared:
        column, value = shared[0]
        text += f"; its {column} is {value}"
    return Explanation(
        text=text + ".",
        employee_attributes=[
            Contribution(attribute=c, value=v, contribution=round(t, 4))
            for (c, v), (_, t) in zip(employee, attributes, strict=True)
        ],
        training_attributes=[
            Contribution(attribute=c, value=v, contribution=round(t, 4))
            for (c, v), (_, t) in zip(training, item_terms, strict=True)
            if own is None or v in own
        ],
        trainings_taken=[
            TrainingTaken(
                training_id=str(bundle.item_ids[row]),
                title=str(bundle.item_titles[row]),
                contribution=round(t, 4),
            )
            for row, t in took
        ],
        reasons=[
            *(Reason(code="history", value=str(bundle.item_ids[row])) for row, _ in took),
            *(Reason(code=CODES.get(c, "attribute"), value=v) for c, v in employee),
        ],
    )


def load_snapshot(
    store: BlobStore, pointer: dict[str, Any], etag: str, options: RulesOptions | None = None
) -> Snapshot:
    """Load the table a pointer names and its model; raises ModelLoadError if anything is off."""
    options = options or RulesOptions()
    table = load_recommendations(store, str(pointer["version"]))
    # Everyone is described by the table: the model's own employee rows are not needed.
    bundle = load_bundle(store, str(pointer["model_version"]), employees=False)
    if table.catalog is not None:  # the catalog as the precompute read it
        if len(table.catalog.ids) - table.catalog.n_new != len(bundle.item_ids):
            raise ModelLoadError(
                f"recommendations {pointer['version']} do not match model {bundle.version}"
            )
        bundle = extend(bundle, table.catalog)
    if (table.items.size and int(table.items.max()) >= len(bundle.item_ids)) or len(
        table.active
    ) != len(bundle.item_ids):
        raise ModelLoadError(
            f"recommendations {pointer['version']} do not match model {bundle.version}"
        )
    return Snapshot(
        bundle,
        Recommender(bundle),
        table,
        IdMap(table.user_ids),
        IdMap(bundle.item_ids),
        pointer,
        etag,
        time.time(),
        Rules.compile(bundle, table.active, options),
        options,
        catalog(bundle),
    )


def catalog(bundle: ModelBundle) -> list[tuple[str, str, dict[str, str]]]:
    """Every training's id, title and attributes as an answer shows them."""
    columns = bundle.metadata.item_attribute_columns
    return [
        (str(training_id), str(title), dict(zip(columns, map(str, values), strict=True)))
        for training_id, title, values in zip(
            bundle.item_ids.tolist(),
            bundle.item_titles.tolist(),
            bundle.item_attributes.tolist(),
            strict=True,
        )
    ]


@dataclass
class ServingCache:
    """The per-instance cache of the current version."""

    store: BlobStore
    refresh_seconds: float = 5.0
    rules: RulesOptions = field(default_factory=RulesOptions)
    _snapshot: Snapshot | None = None
    _checked_at: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _failed_etag: str | None = None
    last_error: str | None = None
    # Trainings each employee dismissed lately (feedback events), refreshed with the
    # pointer check: the first time over rules.dismissed_days, then the days since the
    # last complete read. Only dismissals are kept: a few per employee, not every event.
    _events: EventLog = field(default_factory=lambda: EventLog(kinds=frozenset({"dismissed"})))
    _dismissed: dict[str, set[str]] = field(default_factory=dict)
    _dismissed_on: date | None = None
    impact: ImpactReport | None = None  # the last impact report computed here (its warning)
    retrain_job: dict[str, Any] | None = None  # the last Azure ML retrain job's record

    def dismissed(self, employee_id: str) -> frozenset[str]:
        """Trainings the employee dismissed within rules.dismissed_days (no I/O)."""
        return frozenset(self._dismissed.get(employee_id, ()))

    def dismissed_by(self, training_id: str) -> frozenset[str]:
        """Employees who dismissed the training within rules.dismissed_days (no I/O)."""
        return frozenset(e for e, trainings in self._dismissed.items() if training_id in trainings)

    def current(self) -> Snapshot:
        """The snapshot to answer from; raises NoModelError before anything was published.

        While one request loads a new version, the others keep answering from the
        current one (only the very first load makes requests wait).
        """
        if time.monotonic() - self._checked_at >= self.refresh_seconds or self._snapshot is None:
            waiting = self._snapshot is None
            if self._lock.acquire(blocking=waiting):
                try:
                    if time.monotonic() - self._checked_at >= self.refresh_seconds or (
                        self._snapshot is None
                    ):
                        self._refresh()
                        self._checked_at = time.monotonic()
                finally:
                    self._lock.release()
        if self._snapshot is None:
            raise NoModelError(self.last_error or "no recommendations have been computed yet")
        return self._snapshot

    def ready(self) -> Snapshot | None:
        """The current snapshot when no pointer check is due, else None; never blocks.

        Lets an async handler answer on the event loop and leave storage I/O (a due
        pointer check, the first load) to :meth:`current` in a worker thread.
        """
        snapshot = self._snapshot
        if snapshot is None or time.monotonic() - self._checked_at >= self.refresh_seconds:
            return None
        return snapshot

    def _refresh(self) -> None:
        self._refresh_version()
        self._refresh_dismissals()
        try:  # what /health says of the last Azure ML retrain job (shared.jobs)
            self.retrain_job = read_pointer(self.store, RETRAIN_JOB)[0] or None
        except Exception as exc:
            log.warning("could not read the retrain job record: %s: %s", type(exc).__name__, exc)

    def _refresh_dismissals(self) -> None:
        now = datetime.now(UTC)
        days = self.rules.dismissed_days
        try:
            fresh = self._events.update(self.store, now.date() - timedelta(days=days))
        except Exception as exc:  # the dismissals known so far keep applying
            log.error("could not read feedback events: %s: %s", type(exc).__name__, exc)
            return
        if fresh or self._dismissed_on != now.date():  # new events, or some expired
            self._events.forget_before(now - timedelta(days=days))
            self._dismissed = dismissals(self._events.events.values(), now, days)
            self._dismissed_on = now.date()

    def latest(self) -> Snapshot | None:
        """The snapshot loaded last, if any, without checking for a newer one (no I/O)."""
        return self._snapshot

    def _refresh_version(self) -> None:
        # Whatever goes wrong here, an instance keeps answering from the version it
        # has: a storage outage or a broken upload must not turn answers into 500s.
        try:
            pointer, etag = read_pointer(self.store, RECOMMENDATIONS_POINTER)
        except Exception as exc:
            self._failed("could not read the pointer", exc)
            return
        if etag is None or etag == self._failed_etag:
            return  # nothing published yet, or a version already found broken
        if self._snapshot is not None and etag == self._snapshot.etag:
            self.last_error = None  # storage answered again, and nothing changed
            return
        try:
            self._snapshot = load_snapshot(self.store, pointer, etag, self.rules)
        except ModelLoadError as exc:
            self._failed_etag = etag  # corrupted: do not reload it every few seconds
            self._failed(f"version {pointer.get('version')} is broken", exc)
        except Exception as exc:
            self._failed(f"could not load version {pointer.get('version')}", exc)
        else:
            self.last_error = None
            log.info("serving recommendations %s", pointer.get("version"))

    def _failed(self, what: str, exc: Exception) -> None:
        self.last_error = f"{what}: {type(exc).__name__}: {exc}"
        log.error("%s; keeping the previous version", self.last_error)


def _employee_row(snapshot: Snapshot, employee_id: str) -> int:
    row = snapshot.employees.row(employee_id)
    if row is None:
        raise NotFoundError(
            # The id is not echoed back (the API never returns its input).
            "the employee is not in the current employees extract; "
            "for a new employee, POST their attributes to /recommendations"
        )
    return row


def training_row(snapshot: Snapshot, training_id: str) -> int:
    row = snapshot.trainings.row(training_id)
    if row is None:
        raise NotFoundError("the training is not in the serving model's catalog")
    return row


def recommend_known(
    snapshot: Snapshot,
    employee_id: str,
    n: int,
    *,
    filters: Filters | None = None,
    explain: bool = False,
    dismissed: Collection[str] = (),
) -> EmployeeRecommendations:
    """An employee of the current extracts: precomputed candidates, rules and filters
    applied, and the trainings they ``dismissed`` left out."""
    row = _employee_row(snapshot, employee_id)
    left_out = snapshot.trainings.rows(sorted(dismissed)) if dismissed else None
    chosen = answer_for_row(
        snapshot.table,
        snapshot.recommender,
        snapshot.rules,
        row,
        n,
        snapshot.allowed(filters),
        left_out[left_out >= 0] if left_out is not None else None,
    )
    features = snapshot.table.user_features[row] if explain else None
    with_history = bool(snapshot.table.from_history[row])
    trainings = snapshot.answer(chosen, features, with_history)
    return EmployeeRecommendations(
        employee_id=employee_id,
        **snapshot.identify(snapshot.scorer(with_history), employee_id, trainings),
        trainings=trainings,
    )


LANE_WORDS = {"peers": "of your peers took it", "trending": "took it lately"}


def _lane_data(snapshot: Snapshot) -> LaneData:
    if snapshot.table.lanes is None:
        raise LaneUnavailableError(
            "the serving recommendations were computed before lanes existed: precompute again"
        )
    return snapshot.table.lanes


def recommend_lane(
    snapshot: Snapshot,
    employee_id: str,
    lane: Lane,
    n: int,
    *,
    filters: Filters | None = None,
    dismissed: Collection[str] = (),
    target_role: str | None = None,
) -> LaneRecommendations:
    """A lane beside an employee's main list (see :mod:`shared.lanes`), with what they
    took or dismissed left out and filters honoured."""
    row = _employee_row(snapshot, employee_id)
    table = snapshot.table
    asker = asker_of_row(_lane_data(snapshot), row)
    left_out = snapshot.trainings.rows(sorted(dismissed))
    excluded = np.union1d(table.taken[row].indices, left_out[left_out >= 0])
    known = bool(table.from_history[row])
    scores = snapshot.recommender.feature_scores(table.user_features[row], known)[0]
    trainings, extra = _lane(snapshot, lane, n, asker, scores, excluded, filters, target_role)
    return LaneRecommendations(
        employee_id=employee_id,
        lane=lane,
        **snapshot.identify(lane, employee_id, trainings),
        trainings=trainings,
        **extra,
    )


def _lane(
    snapshot: Snapshot,
    lane: Lane,
    n: int,
    asker: Asker,
    scores: np.ndarray,
    excluded: np.ndarray,
    filters: Filters | None,
    target_role: str | None,
) -> tuple[list[Training], dict[str, Any]]:
    """A lane's trainings for ``asker`` (``scores``: the model's for them).

    skill-gap: trainings teaching a skill their target role (``target_role``, else
    theirs) requires and they lack, ranked by the model, each naming the gap skills it
    teaches. peers and trending: the most taken, by their peers or by everyone lately
    (ties broken by the model), each saying how many took it.
    """
    data = _lane_data(snapshot)
    candidates = snapshot.rules.allowed(snapshot.allowed(filters)).copy()
    candidates[excluded] = False
    extra: dict[str, Any] = {}
    if lane == "skill-gap":
        role, title, gap = skill_gap(data, asker, target_role)
        teaches = teaching(data, gap)
        candidates &= np.fromiter((bool(t) for t in teaches), bool, len(teaches))
        primary = scores
        extra = {"target_role": role, "target_role_title": title, "gap": gap}

        def why(r: int) -> tuple[str, list[Reason]]:
            reasons = [Reason(code="gap", value=skill) for skill in teaches[r]]
            return f"teaches {', '.join(teaches[r])}, which {title} requires", reasons

    else:
        primary = popular_in(data, lane, asker)
        candidates &= primary > 0

        def why(r: int) -> tuple[str, list[Reason]]:
            took = f"{primary[r]:.0f}"
            return f"{took} {LANE_WORDS[lane]}", [Reason(code=lane, value=took)]

    rows = np.flatnonzero(candidates)
    order = np.lexsort((-scores[rows], -primary[rows]))[:n]
    chosen = [(int(r), float(primary[r]), False) for r in rows[order]]
    trainings = []
    for answer, (r, _, _) in zip(snapshot.answer(chosen), chosen, strict=True):
        text, reasons = why(r)
        explanation = Explanation(
            text=text, employee_attributes=[], training_attributes=[], reasons=reasons
        )
        trainings.append(answer.model_copy(update={"explanation": explanation}))
    return trainings, extra


def new_employee_features(
    snapshot: Snapshot,
    attributes: Mapping[str, str | Sequence[str]],
    contract: DataContract,
    taken_rows: np.ndarray | None = None,
) -> tuple[sp.csr_matrix, list[str]]:
    """Feature row of an employee described by attributes and the trainings they took
    (rows of the model's catalog), and the attribute values it ignored."""
    frame = entity_frame([attributes], contract.users, contract.value_delimiter)
    rows = np.unique(taken_rows) if taken_rows is not None else np.empty(0, np.int64)
    n_items = len(snapshot.bundle.item_ids)
    taken = sp.csr_matrix(
        (np.ones(len(rows), np.float32), rows, np.array([0, len(rows)])), shape=(1, n_items)
    )
    return employee_rows(snapshot.bundle, frame, contract, taken)


NEW_EMPLOYEE_DEPTH, MIN_NEW_EMPLOYEE_DEPTH = 4, 64  # candidates per answer, and at least


def recommend_new(
    snapshot: Snapshot,
    attributes: Mapping[str, str | Sequence[str]],
    n: int,
    contract: DataContract,
    exclude_training_ids: Sequence[str] = (),
    *,
    taken_training_ids: Sequence[str] = (),
    filters: Filters | None = None,
    explain: bool = False,
    lane: Lane | None = None,
    target_role: str | None = None,
) -> NewEmployeeRecommendations:
    """Score an employee from their attributes and the trainings they took.

    The same description and scorer as a precomputed list: an employee of the
    extracts posted with their attributes and history gets their precomputed list.
    ``taken_training_ids`` shape the list and are never recommended;
    ``exclude_training_ids`` are only never recommended (e.g. already assigned).
    With a ``lane``, that lane instead (see :func:`recommend_lane`).
    """
    history = snapshot.trainings.rows(list(taken_training_ids))
    unknown = [t for t, r in zip(taken_training_ids, history, strict=True) if r < 0]
    history = history[history >= 0]
    features, ignored = new_employee_features(snapshot, attributes, contract, history)
    rows = snapshot.trainings.rows(list(exclude_training_ids))
    taken = np.unique(np.concatenate([rows[rows >= 0], history]))
    known = len(history) > 0
    mask = snapshot.rules.allowed(snapshot.allowed(filters))
    scores = snapshot.recommender.feature_scores(features, known)[0]
    if lane is not None:
        asker = asker_of_attributes(_lane_data(snapshot), attributes, contract.value_delimiter)
        lane_trainings, extra = _lane(snapshot, lane, n, asker, scores, taken, filters, target_role)
        return NewEmployeeLaneRecommendations(
            **snapshot.identify(lane, "", lane_trainings),
            lane=lane,
            trainings=lane_trainings,
            ignored_values=ignored,
            unknown_training_ids=list(dict.fromkeys(unknown)),
            **extra,
        )
    pinned = [(int(r), float(scores[r])) for r in snapshot.rules.pinned]
    candidates = mask.copy()
    candidates[taken] = False

    def choose(depth: int) -> tuple[list[tuple[int, float, bool]], bool]:
        ranked, best = top_k(scores[None, :], depth, allowed=candidates)
        chosen, short = select(
            ranked[0],
            best[0],
            n,
            allowed=mask,
            pinned=pinned,
            taken=taken,
            caps=snapshot.rules.caps,
        )
        return chosen, short and not (ranked[0] == NO_ITEM).any()

    # The best few dozen, found without sorting the catalog, nearly always suffice;
    # diversity caps may skip enough of them to need the whole ranking.
    chosen, short = choose(max(NEW_EMPLOYEE_DEPTH * n, MIN_NEW_EMPLOYEE_DEPTH))
    if short:
        chosen, _ = choose(len(scores))
    chosen = snapshot.rules.with_new(chosen, n, lambda: scores, mask, taken)
    trainings = snapshot.answer(chosen, features if explain else None, known)
    return NewEmployeeRecommendations(
        **snapshot.identify(snapshot.scorer(known), "", trainings),
        trainings=trainings,
        ignored_values=ignored,
        unknown_training_ids=list(dict.fromkeys(unknown)),
    )


def similar_trainings(
    snapshot: Snapshot, training_id: str, n: int, *, filters: Filters | None = None
) -> SimilarTrainings:
    """Trainings closest to one training, among those that may be recommended."""
    row = training_row(snapshot, training_id)
    mask = snapshot.rules.allowed(snapshot.allowed(filters))
    items, scores = snapshot.recommender.similar(row, n, mask)
    valid = items != NO_ITEM
    chosen = [(int(r), float(s), False) for r, s in zip(items[valid], scores[valid], strict=True)]
    trainings = snapshot.answer(chosen)
    return SimilarTrainings(
        training_id=training_id,
        **snapshot.identify("similarity", training_id, trainings),
        trainings=trainings,
    )


def rank_trainings(
    snapshot: Snapshot,
    training_ids: Sequence[str],
    contract: DataContract,
    *,
    employee_id: str | None = None,
    attributes: Mapping[str, str | Sequence[str]] | None = None,
    explain: bool = False,
) -> RankResponse:
    """A given list of trainings, ordered for one employee (by id or by attributes).

    Unknown training ids are reported, not fatal. Business rules do not drop
    anything here: the caller chose the list; ``taken`` and ``recommendable`` say
    what the rules would have done.
    """
    ignored: list[str] = []
    taken: set[int] = set()
    with_history = False
    if employee_id is not None:
        row = _employee_row(snapshot, employee_id)
        features = snapshot.table.user_features[row]
        taken = set(snapshot.table.taken[row].indices.tolist())
        with_history = bool(snapshot.table.from_history[row])
    else:
        features, ignored = new_employee_features(snapshot, attributes or {}, contract)
    unique_ids = list(dict.fromkeys(training_ids))
    rows = snapshot.trainings.rows(unique_ids)
    unknown = [tid for tid, r in zip(unique_ids, rows, strict=True) if r < 0]
    known = rows[rows >= 0]
    scores = snapshot.recommender.feature_scores(features, with_history)[0, known]
    order = np.argsort(-scores, kind="stable")
    chosen = [(int(known[i]), float(scores[i]), False) for i in order]
    answers = snapshot.answer(chosen, features if explain else None, with_history)
    ranked = [
        RankedTraining(
            **dict(item),
            taken=row in taken,
            recommendable=bool(snapshot.rules.active[row]) and row not in taken,
        )
        for item, (row, _, _) in zip(answers, chosen, strict=True)
    ]
    return RankResponse(
        **snapshot.identify(snapshot.scorer(with_history), employee_id or "", ranked),
        trainings=ranked,
        unknown_training_ids=unknown,
        ignored_values=ignored,
    )


def contract_of(snapshot: Snapshot) -> DataContract:
    """The data contract the model was trained with (new employees are read the same way)."""
    return bundle_contract(snapshot.bundle)
