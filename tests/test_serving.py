"""The read side on its own: the answers ``shared.serving`` builds from a published
version (the HTTP API and the CLI answer them as they are)."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient
from world import published, small_config, small_data

from shared.answers import (
    EmployeeRecommendations,
    NewEmployeeRecommendations,
    RankResponse,
    SimilarTrainings,
)
from shared.api import create_app
from shared.errors import NotFoundError
from shared.serving import (
    ServingCache,
    Snapshot,
    contract_of,
    rank_trainings,
    recommend_known,
    recommend_new,
    similar_trainings,
)
from shared.storage import LocalFolderStore

CONFIG = small_config()
DATA = small_data()
EMPLOYEE = str(DATA.taken["User-Id"].iloc[0])
TAKEN = set(DATA.taken.loc[DATA.taken["User-Id"] == EMPLOYEE, "Training-Id"])
NEW = {"ou": "development", "skills": ["python", "sql"], "career interests": "data"}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> LocalFolderStore:
    return published(LocalFolderStore(tmp_path_factory.mktemp("serving") / "store"), DATA, CONFIG)


@pytest.fixture(scope="module")
def snap(store: LocalFolderStore) -> Snapshot:
    return ServingCache(store, 3600, CONFIG.rules).current()


def test_a_known_employee_gets_the_versions_the_scorer_and_nothing_taken(snap: Snapshot) -> None:
    answer = recommend_known(snap, EMPLOYEE, 7)

    assert isinstance(answer, EmployeeRecommendations)
    assert answer.employee_id == EMPLOYEE
    assert answer.model_version == snap.bundle.version
    assert answer.scorer == snap.scorer(True)
    assert [t.rank for t in answer.trainings] == list(range(1, 8))
    assert not {t.training_id for t in answer.trainings} & TAKEN
    assert all(t.explanation is None for t in answer.trainings)


def test_the_answer_is_exactly_what_the_http_api_returns(store: LocalFolderStore) -> None:
    snap = ServingCache(store, 3600, CONFIG.rules).current()
    client = TestClient(create_app(store, CONFIG))

    body = client.get(f"/recommendations/{EMPLOYEE}", params={"n": 5, "explain": True}).json()

    assert body == recommend_known(snap, EMPLOYEE, 5, explain=True).model_dump(mode="json")


def test_an_unknown_employee_is_not_found_with_what_to_do_instead(snap: Snapshot) -> None:
    with pytest.raises(NotFoundError, match=r"not in the current employees.*POST their attributes"):
        recommend_known(snap, "nobody-1", 5)


def test_a_new_employee_is_scored_from_attributes_and_history(snap: Snapshot) -> None:
    took = sorted(TAKEN)[:2]
    answer = recommend_new(
        snap,
        {**NEW, "language": "klingon"},
        6,
        contract_of(snap),
        taken_training_ids=[*took, "T-NOT-IN-CATALOG"],
        explain=True,
    )

    assert isinstance(answer, NewEmployeeRecommendations)
    assert answer.ignored_values == ["language:klingon"]
    assert answer.unknown_training_ids == ["T-NOT-IN-CATALOG"]
    assert answer.scorer == snap.scorer(True)  # a history: scored as a known employee
    assert len(answer.trainings) == 6
    assert not {t.training_id for t in answer.trainings} & set(took)
    assert all(t.explanation is not None and t.explanation.text for t in answer.trainings)


def test_rank_keeps_every_known_training_and_flags_what_the_rules_would_drop(
    snap: Snapshot,
) -> None:
    taken = sorted(TAKEN)[0]
    other = next(str(t) for t in snap.bundle.item_ids if str(t) not in TAKEN)
    answer = rank_trainings(
        snap, [other, taken, "nope", other], contract_of(snap), employee_id=EMPLOYEE
    )

    assert isinstance(answer, RankResponse)
    assert answer.unknown_training_ids == ["nope"]
    flags = {t.training_id: (t.taken, t.recommendable) for t in answer.trainings}
    assert flags == {taken: (True, False), other: (False, True)}
    scores = [t.score for t in answer.trainings]
    assert scores == sorted(scores, reverse=True)


def test_similar_trainings_never_include_the_training_itself(snap: Snapshot) -> None:
    training = str(snap.bundle.item_ids[0])
    answer = similar_trainings(snap, training, 5)

    assert isinstance(answer, SimilarTrainings)
    assert answer.training_id == training and answer.scorer == "similarity"
    assert len(answer.trainings) == 5
    assert training not in {t.training_id for t in answer.trainings}
    with pytest.raises(NotFoundError, match="not in the serving model's catalog"):
        similar_trainings(snap, "T-NOPE", 5)


def test_filters_keep_only_trainings_with_an_accepted_value(snap: Snapshot) -> None:
    column = CONFIG.contract.trainings.features[0]
    values = snap.bundle.item_attributes[:, 0]
    wanted = str(values[np.flatnonzero(values != "")[0]])

    answer = recommend_known(snap, EMPLOYEE, 5, filters={column: [wanted]})

    assert answer.trainings
    assert {t.attributes[column] for t in answer.trainings} == {wanted}
