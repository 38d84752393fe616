"""Audiences: the employees most likely to take a training ("whom do we invite?").

Every employee of the current extracts is scored against the training by the model:
their representation against the training's. Employee biases are left out: WARP
learns them for ranking trainings for one employee, where they cancel, and they are
not comparable across employees (with them, precision@50 of a new training's
audience fell below random on the synthetic data; without, 0.88 of the oracle's). A
training added since the last retrain is scored from its attributes like any other.
Employees who took it or dismissed it are left out; filters on employee attributes
(``ou:finance``) narrow the audience. Each person comes with a reason: what in their
attributes and history the score owes most to. Ids only: an audience is personal
data, for the L&D team that invites.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import numpy as np
from pydantic import BaseModel, Field

from shared.answers import Answer
from shared.errors import NotFoundError
from shared.rules import UnknownFilterError
from shared.serving import Snapshot, contract_of, who_phrase

REASON_TERMS = 3  # employee features named per reason


class AudienceMember(BaseModel):
    rank: int
    employee_id: str
    score: float
    reason: str = Field(
        description="what in the employee's attributes and history the score owes most to"
    )


class TrainingAudience(Answer):
    training_id: str
    scorer: str = Field("model", description="the model's score (representations only)")
    employees: list[AudienceMember]


def audience(
    snapshot: Snapshot,
    training_id: str,
    n: int,
    *,
    filters: Mapping[str, Sequence[str]] | None = None,
    dismissed_by: Collection[str] = (),
) -> TrainingAudience:
    """The ``n`` employees most likely to take a training, with a reason each."""
    item = snapshot.trainings.row(training_id)
    if item is None:
        raise NotFoundError("the training is not in the serving model's catalog")
    table = snapshot.table
    vectors, _ = snapshot.recommender.feature_vectors(table.user_features)
    scores = vectors @ snapshot.recommender.factors.item_vectors[item]
    eligible = _matching(snapshot, filters or {})
    eligible[table.taken[:, [item]].nonzero()[0]] = False
    if dismissed_by:
        rows = snapshot.employees.rows(sorted(dismissed_by))
        eligible[rows[rows >= 0]] = False
    candidates = np.flatnonzero(eligible)
    chosen = candidates[np.argsort(-scores[candidates], kind="stable")[:n]]
    members = []
    for rank, row in enumerate(chosen, start=1):
        features = table.user_features[row]
        terms = snapshot.recommender.explain(features, np.array([item]), REASON_TERMS, 0)[0][0]
        members.append(
            AudienceMember(
                rank=rank,
                employee_id=str(snapshot.employees.ids[row]),
                score=round(float(scores[row]), 6),
                reason=_reason(snapshot, terms),
            )
        )
    asker = f"audience {training_id}"
    return TrainingAudience(
        training_id=training_id,
        **snapshot.identify("model", asker, []),
        employees=members,
    )


def _matching(snapshot: Snapshot, filters: Mapping[str, Sequence[str]]) -> np.ndarray:
    """Employees whose attributes hold one of the values of every filter."""
    features = snapshot.table.user_features
    eligible = np.ones(features.shape[0], dtype=bool)
    columns = contract_of(snapshot).users.features
    names = {str(name): col for col, name in enumerate(snapshot.bundle.user_feature_names)}
    for attribute, values in filters.items():
        if attribute not in columns:
            raise UnknownFilterError(
                f"cannot filter on {attribute!r}: the employees' attributes are "
                f"{', '.join(columns)}"
            )
        wanted = [names[k] for v in values if (k := f"{attribute}:{v.strip().lower()}") in names]
        eligible &= features[:, wanted].getnnz(axis=1) > 0 if wanted else False
    return eligible


def _reason(snapshot: Snapshot, terms: list[tuple[int, float]]) -> str:
    """ "took “Intro to SQL”; in sales with the skill python" from the largest terms."""
    bundle = snapshot.bundle
    n_attributes = bundle.n_attributes
    took = [str(bundle.item_titles[col - n_attributes]) for col, _ in terms if col >= n_attributes]
    attributes = [
        str(bundle.user_feature_names[col]).partition(":") for col, _ in terms if col < n_attributes
    ]
    parts = []
    if took:
        parts.append("took " + " and ".join(f"“{title}”" for title in took[:2]))
    who = who_phrase([(column, value) for column, _, value in attributes])
    if who:
        parts.append(who)
    return "; ".join(parts) or "close to the training in the model's space"
