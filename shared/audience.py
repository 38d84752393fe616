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
import pandas as pd
from pydantic import BaseModel, Field

from shared.answers import Answer
from shared.rules import UnknownFilterError
from shared.schema import band_labels
from shared.serving import (
    Snapshot,
    contract_of,
    employee_terms,
    feature_parts,
    training_row,
    who_phrase,
)

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
    ignored_values: list[str] = Field(
        default_factory=list, description="filter values no employee has: they matched nobody"
    )


def audience(
    snapshot: Snapshot,
    training_id: str,
    n: int,
    *,
    filters: Mapping[str, Sequence[str]] | None = None,
    dismissed_by: Collection[str] = (),
) -> TrainingAudience:
    """The ``n`` employees most likely to take a training, with a reason each."""
    item = training_row(snapshot, training_id)
    table = snapshot.table
    vectors, _ = snapshot.recommender.feature_vectors(table.user_features)
    scores = vectors @ snapshot.recommender.factors.item_vectors[item]
    eligible, ignored = _matching(snapshot, filters or {})
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
    asker = " ".join(["audience", training_id, *(m.employee_id for m in members)])
    return TrainingAudience(
        training_id=training_id,
        **snapshot.identify("model", asker, []),
        employees=members,
        ignored_values=ignored,
    )


def _matching(
    snapshot: Snapshot, filters: Mapping[str, Sequence[str]]
) -> tuple[np.ndarray, list[str]]:
    """Employees whose attributes hold one of the values of every filter, and the
    filter values no employee of the model's vocabulary has (reported, not fatal)."""
    features = snapshot.table.user_features
    eligible = np.ones(features.shape[0], dtype=bool)
    users = contract_of(snapshot).users
    names = {str(name): col for col, name in enumerate(snapshot.bundle.user_feature_names)}
    unknown: list[str] = []
    for attribute, values in filters.items():
        if attribute not in users.features:
            raise UnknownFilterError(
                "a filter names an attribute the employees do not have; they have "
                + ", ".join(users.features)
            )
        wanted = []
        for value in values:
            key = f"{attribute}:{_as_read(value, users.bands.get(attribute))}"
            if key in names:
                wanted.append(names[key])
            else:
                unknown.append(f"{attribute}:{value}")
        eligible &= features[:, wanted].getnnz(axis=1) > 0 if wanted else False
    return eligible, unknown


def _as_read(value: str, edges: tuple[float, ...] | None) -> str:
    """A filter value as the extracts' cells are read: lower case, and a number of a
    banded column as its band ("3" as "2-4")."""
    if edges is None:
        return value.strip().lower()
    labels, _ = band_labels(pd.Series([value.strip()]), edges)
    return str(labels.iloc[0])


def _reason(snapshot: Snapshot, terms: list[tuple[int, float]]) -> str:
    """ "took “Intro to SQL”; in sales with the skill python" from the largest terms."""
    bundle = snapshot.bundle
    took, attributes = employee_terms(bundle, terms)
    parts = []
    if took:
        parts.append("took " + " and ".join(f"“{bundle.item_titles[row]}”" for row, _ in took[:2]))
    who = who_phrase([feature_parts(str(bundle.user_feature_names[col])) for col, _ in attributes])
    if who:
        parts.append(who)
    return "; ".join(parts) or "close to the training in the model's space"
