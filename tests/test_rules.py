"""Filters, business rules, explanations and ranking a given list, through the real API."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from world import csv_bytes, drop, drop_all, small_config, small_data

from shared import serving
from shared.api import create_app
from shared.layout import RECOMMENDATIONS_POINTER, read_pointer
from shared.pipeline import precompute, retrain
from shared.rules import Rules
from shared.scoring import select
from shared.settings import Config
from shared.storage import LocalFolderStore

DATA = small_data()
TRAININGS = DATA.trainings.assign(status="active")
RETIRED = list(TRAININGS["Training-Id"].iloc[[3, 7]])
TRAININGS.loc[TRAININGS["Training-Id"].isin(RETIRED), "status"] = "Retired"
UNTAKEN = "T99999"  # a training nobody has taken: it must still be reachable
TRAININGS = pd.concat(
    [TRAININGS, TRAININGS.iloc[[0]].assign(**{"Training-Id": UNTAKEN, "Training Title": "New"})]
)


def with_status(**sections: dict[str, Any]) -> Config:
    """The test configuration: trainings carry a "status" column that retires them."""
    rules = {"retired_column": "status", **sections.pop("rules", {})}
    trainings = {**Config().contract.trainings.model_dump(), "extra": ["status"]}
    return small_config(contract={"trainings": trainings}, rules=rules, **sections)


CONFIG = with_status()
EMPLOYEE = str(DATA.taken["User-Id"].iloc[0])
TAKEN = set(DATA.taken.loc[DATA.taken["User-Id"] == EMPLOYEE, "Training-Id"])
NEW = {"ou": "development", "skills": ["python", "sql"], "career interests": "data"}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> LocalFolderStore:
    store = LocalFolderStore(tmp_path_factory.mktemp("rules") / "store")
    drop_all(store, DATA, CONFIG)
    drop(store, "trainings/with-status.csv", csv_bytes(TRAININGS), CONFIG)
    assert retrain(store, CONFIG).status == "published"
    return store


def client_with(store: LocalFolderStore, **rules: Any) -> TestClient:
    return TestClient(create_app(store, with_status(rules=rules)))


@pytest.fixture(scope="module")
def client(store: LocalFolderStore) -> TestClient:
    return client_with(store)


def trainings(response: Any) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    result: list[dict[str, Any]] = response.json()["trainings"]
    return result


def ids(items: list[dict[str, Any]]) -> list[str]:
    return [t["training_id"] for t in items]


@pytest.mark.parametrize(
    ("params", "attribute", "accepted"),
    [
        ({"filter": "provider:internal"}, "provider", {"internal"}),
        ({"filter": "language:English"}, "language", {"english"}),
        ({"filter": "level:beginner,intermediate"}, "level", {"beginner", "intermediate"}),
        ({"filter": ["level:beginner", "level:advanced"]}, "level", {"beginner", "advanced"}),
    ],
)
def test_get_filters_keep_only_matching_trainings_and_still_fill_n(
    client: TestClient, params: dict[str, Any], attribute: str, accepted: set[str]
) -> None:
    items = trainings(client.get(f"/recommendations/{EMPLOYEE}", params={"n": 8, **params}))
    assert {t["attributes"][attribute].lower() for t in items} <= accepted
    catalog = TRAININGS[TRAININGS[attribute].str.lower().isin(accepted)]
    available = set(catalog["Training-Id"]) - TAKEN - set(RETIRED)
    assert len(items) == min(8, len(available))
    scores = [t["score"] for t in items]
    assert scores == sorted(scores, reverse=True)


def test_a_filter_deeper_than_the_precomputed_candidates_is_scored_on_the_fly(
    store: LocalFolderStore, tmp_path: Path
) -> None:
    """Depth 3: a rare provider is rarely among the 3 candidates kept per employee."""
    shallow = with_status(serving={"depth": 3, "top_k": 3})
    precompute(store, shallow, force=True)
    client = TestClient(create_app(store, shallow))
    items = trainings(client.get(f"/recommendations/{EMPLOYEE}?n=6&filter=provider:Coursera"))
    available = set(TRAININGS.loc[TRAININGS["provider"] == "Coursera", "Training-Id"])
    assert len(items) == min(6, len(available - TAKEN - set(RETIRED)))
    assert all(t["attributes"]["provider"] == "Coursera" for t in items)
    precompute(store, CONFIG, force=True)  # back to the module's normal depth


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("filter=colour:red", "names an attribute the trainings do not have"),
        ("filter=provider", "is not attribute:value"),
        ("filter=provider:", "is not attribute:value"),
    ],
)
def test_bad_filters_get_a_422_naming_the_problem(
    client: TestClient, query: str, message: str
) -> None:
    response = client.get(f"/recommendations/{EMPLOYEE}?{query}")
    assert response.status_code == 422
    assert message in response.json()["detail"]


def test_post_and_similar_honour_filters(client: TestClient) -> None:
    body = {"attributes": NEW, "n": 5, "filters": {"level": ["advanced"]}}
    items = trainings(client.post("/recommendations", json=body))
    assert items and {t["attributes"]["level"] for t in items} == {"advanced"}
    similar = trainings(client.get("/trainings/T00001/similar?n=5&filter=provider:internal"))
    assert similar and {t["attributes"]["provider"] for t in similar} == {"internal"}


@pytest.mark.parametrize("depth", [(4, 64), (1, 1)])  # (1, 1): the whole-catalog fallback
@pytest.mark.parametrize("caps", [{}, {"provider": 1}, {"main skill": 1}])
def test_a_new_employee_s_answer_is_the_head_of_the_whole_catalog_ranking(
    store: LocalFolderStore,
    monkeypatch: pytest.MonkeyPatch,
    depth: tuple[int, int],
    caps: dict[str, int],
) -> None:
    # The answer starts from the best few candidates, not a sort of the catalog: it
    # must be exactly what the rules would choose from the whole ranking.
    monkeypatch.setattr(serving, "NEW_EMPLOYEE_DEPTH", depth[0])
    monkeypatch.setattr(serving, "MIN_NEW_EMPLOYEE_DEPTH", depth[1])
    config = with_status(rules={"max_per_value": caps, "pinned": ["T00002"]})
    snap = serving.ServingCache(store, 3600, config.rules).current()
    contract = serving.contract_of(snap)
    excluded = sorted(TAKEN)[:3]
    answer = serving.recommend_new(snap, NEW, 8, contract, excluded)

    features, _ = serving.new_employee_features(snap, NEW, contract)
    scores = snap.recommender.feature_scores(features, False)[0]
    ranked = np.argsort(-scores, kind="stable")
    expected, _ = select(
        ranked,
        scores[ranked],
        8,
        allowed=snap.rules.allowed(None),
        pinned=[(int(r), float(scores[r])) for r in snap.rules.pinned],
        taken=snap.trainings.rows(excluded),
        caps=snap.rules.caps,
    )
    assert [t.training_id for t in answer.trainings] == [
        str(snap.bundle.item_ids[r]) for r, _, _ in expected
    ]
    assert answer.trainings[0].training_id == "T00002" and answer.trainings[0].pinned
    assert len(answer.trainings) == (5 if caps == {"provider": 1} else 8)  # 5 providers


def test_a_training_nobody_took_still_gets_neighbours_and_can_be_recommended(
    client: TestClient,
) -> None:
    assert trainings(client.get(f"/trainings/{UNTAKEN}/similar?n=3"))
    ranked = client.post("/rank", json={"attributes": NEW, "training_ids": [UNTAKEN]}).json()
    assert ranked["trainings"][0]["recommendable"] is True


def test_retired_trainings_are_never_recommended(
    client: TestClient, store: LocalFolderStore
) -> None:
    seen: set[str] = set()
    for employee in DATA.users["User-Id"].iloc[:40]:
        seen |= set(ids(trainings(client.get(f"/recommendations/{employee}?n=30"))))
    seen |= set(ids(trainings(client.post("/recommendations", json={"attributes": NEW, "n": 60}))))
    seen |= set(ids(trainings(client.get("/trainings/T00001/similar?n=60"))))
    assert seen and not seen & set(RETIRED)
    version = read_pointer(store, RECOMMENDATIONS_POINTER)[0]["version"]
    export = pd.read_csv(
        io.BytesIO(store.read(f"recommendations/{version}/recommendations.csv")), dtype=str
    )
    assert not set(export["training_id"]) & set(RETIRED)


def test_a_training_absent_from_the_latest_extract_is_never_recommended(tmp_path: Path) -> None:
    store = LocalFolderStore(tmp_path / "store")
    drop_all(store, DATA, CONFIG)
    assert retrain(store, CONFIG).status == "published"
    client = TestClient(create_app(store, CONFIG))
    favourite = ids(trainings(client.get(f"/recommendations/{EMPLOYEE}?n=1")))[0]
    remaining = DATA.trainings[DATA.trainings["Training-Id"] != favourite]
    drop(store, "trainings/without.csv", csv_bytes(remaining), CONFIG)
    precompute(store, CONFIG)
    assert favourite not in ids(trainings(client.get(f"/recommendations/{EMPLOYEE}?n=30")))


def test_pinned_first_excluded_never(store: LocalFolderStore) -> None:
    """Rules in the serving configuration apply at once, without a new precompute."""
    not_taken = [t for t in TRAININGS["Training-Id"] if t not in TAKEN and t not in RETIRED]
    pinned, excluded = not_taken[-1], not_taken[0]
    client = client_with(store, pinned=[pinned, next(iter(TAKEN))], excluded=[excluded])
    items = trainings(client.get(f"/recommendations/{EMPLOYEE}?n=10"))
    assert items[0]["training_id"] == pinned and items[0]["pinned"] is True
    assert not any(t["pinned"] for t in items[1:])  # the taken one is not pinned back
    assert excluded not in ids(items)
    new_items = trainings(client.post("/recommendations", json={"attributes": NEW, "n": 5}))
    assert new_items[0]["training_id"] == pinned


def test_diversity_cap_per_provider(store: LocalFolderStore) -> None:
    client = client_with(store, max_per_value={"provider": 2})
    items = trainings(client.get(f"/recommendations/{EMPLOYEE}?n=10"))
    providers = pd.Series([t["attributes"]["provider"] for t in items]).value_counts()
    assert providers.max() <= 2
    assert len(items) == min(10, 2 * TRAININGS["provider"].nunique())


def test_explanations_name_the_employee_s_own_attributes_and_trainings(
    client: TestClient,
) -> None:
    row = DATA.users.set_index("User-Id").loc[EMPLOYEE]
    own = {("ou", row["ou"]), ("language", row["language"]), ("grade", row["grade"].lower())}
    own |= {("skills", s) for s in row["skills"].split(";")}
    own |= {("career interests", c) for c in row["career interests"].split(";")}
    took = set(DATA.taken.loc[DATA.taken["User-Id"] == EMPLOYEE, "Training-Id"])
    titles = TRAININGS.set_index("Training-Id")["Training Title"]
    response = client.get(f"/recommendations/{EMPLOYEE}?n=5&explain=true").json()
    assert response["scorer"].startswith("model")  # the small world's history is informative
    assert any(item["explanation"]["trainings_taken"] for item in response["trainings"])
    for item in response["trainings"]:
        explanation = item["explanation"]
        if response["scorer"] in ("popularity", "department popularity"):
            assert explanation["text"].startswith("Among the most taken trainings")
            continue
        assert explanation["text"].startswith(("Because you took", "People", "Popular"))
        for number, part in enumerate(explanation["trainings_taken"]):
            assert part["training_id"] in took
            assert part["title"] == titles[part["training_id"]]
            assert part["contribution"] > 0
            if number < 2:  # the text names the two that count most
                assert f"“{part['title']}”" in explanation["text"]
        for part in explanation["employee_attributes"]:
            assert (part["attribute"], part["value"]) in own
            assert part["contribution"] > 0
        training = TRAININGS.set_index("Training-Id").loc[item["training_id"]]
        values = {value for _, value in own}
        for part in explanation["training_attributes"]:
            assert training[part["attribute"]].lower() == part["value"]
            assert part["value"] in values  # named only when the employee shares it
        if "; its " in explanation["text"]:
            assert explanation["text"].rsplit(" is ", 1)[1].rstrip(".") in values
        # The same reasons as codes, in the same order: trainings taken, then attributes.
        codes = [(r["code"], r["value"]) for r in explanation["reasons"]]
        expected = [("history", part["training_id"]) for part in explanation["trainings_taken"]]
        expected += [
            (CODES[part["attribute"]], part["value"]) for part in explanation["employee_attributes"]
        ]
        assert codes[: len(expected)] == expected
    assert trainings(client.get(f"/recommendations/{EMPLOYEE}?n=1"))[0]["explanation"] is None


CODES = {"skills": "skill", "career interests": "interest", "ou": "department"}
CODES |= {"grade": "grade", "language": "language"}


def test_rank_orders_a_given_list_and_reports_unknown_ids(client: TestClient) -> None:
    given = [*list(TRAININGS["Training-Id"].iloc[:8]), "NOPE-1", next(iter(TAKEN))]
    response = client.post("/rank", json={"employee_id": EMPLOYEE, "training_ids": given})
    body = response.json()
    assert response.status_code == 200
    assert body["unknown_training_ids"] == ["NOPE-1"]
    ranked = body["trainings"]
    assert sorted(ids(ranked)) == sorted(set(given) - {"NOPE-1"})
    scores = [t["score"] for t in ranked]
    assert scores == sorted(scores, reverse=True)
    flags = {t["training_id"]: (t["taken"], t["recommendable"]) for t in ranked}
    assert flags[next(iter(TAKEN))] == (True, False)
    assert all(flags[r] == (r in TAKEN, False) for r in RETIRED if r in flags)

    by_attributes = client.post(
        "/rank", json={"attributes": NEW, "training_ids": given[:5], "explain": True}
    ).json()
    assert len(by_attributes["trainings"]) == 5
    assert by_attributes["trainings"][0]["explanation"]["text"]


@pytest.mark.parametrize(
    "body",
    [
        {"training_ids": ["T00001"]},
        {"employee_id": EMPLOYEE, "attributes": NEW, "training_ids": ["T00001"]},
        {"employee_id": EMPLOYEE, "training_ids": []},
        {"employee_id": EMPLOYEE, "training_ids": ["x"] * 1001},
    ],
)
def test_rank_rejects_ambiguous_or_oversized_requests(
    client: TestClient, body: dict[str, Any]
) -> None:
    assert client.post("/rank", json=body).status_code == 422


def test_the_openapi_schema_documents_filters_rules_and_ranking(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    get = schema["paths"]["/recommendations/{employee_id}"]["get"]
    names = {p["name"] for p in get["parameters"]}
    assert {"n", "filter", "explain"} <= names
    assert "/rank" in schema["paths"]
    assert "filters" in schema["components"]["schemas"]["NewEmployee"]["properties"]
    assert "explanation" in schema["components"]["schemas"]["Training"]["properties"]


@pytest.mark.slow
def test_the_planted_reason_is_the_top_explanation_on_the_default_synthetic_data(
    tmp_path: Path,
) -> None:
    """The generator plants skills and career interests as the main reasons to take a training."""
    from shared.synthetic import generate

    data = generate()  # the default: 10,000 employees, 500 trainings, 100,000 taken
    store = LocalFolderStore(tmp_path / "store")
    config = Config.from_dict({"gate": {"enabled": False}})
    drop_all(store, data, config)
    retrain(store, config)
    client = TestClient(create_app(store, config))
    users = data.users.set_index("User-Id")
    catalog = data.trainings.set_index("Training-Id")
    matched = coded = total = 0
    for employee in np.random.default_rng(0).choice(users.index, 200, replace=False):
        skills = set(users.loc[employee, "skills"].split(";"))
        interests = set(users.loc[employee, "career interests"].split(";"))
        for item in trainings(client.get(f"/recommendations/{employee}?n=10&explain=true")):
            planted = set()
            if catalog.loc[item["training_id"], "main skill"] in skills:
                planted.add(("skills", catalog.loc[item["training_id"], "main skill"]))
            if catalog.loc[item["training_id"], "category"] in interests:
                planted.add(("career interests", catalog.loc[item["training_id"], "category"]))
            top = item["explanation"]["employee_attributes"][:1]
            total += 1
            matched += bool(top) and (top[0]["attribute"], top[0]["value"]) in planted
            # The codes say it too: the first attribute reason is that skill or interest.
            first = next(
                (r for r in item["explanation"]["reasons"] if r["code"] != "history"), None
            )
            named = {(CODES[a], v) for a, v in planted}
            coded += first is not None and (first["code"], first["value"]) in named
    share = matched / total
    print(f"planted reason is the top explanation for {share:.1%} of {total} recommendations")
    print(f"and the first attribute reason code for {coded / total:.1%}")
    assert share >= 0.8
    assert coded / total >= 0.8


def test_an_explained_list_reads_as_a_match_from_100_down(client: TestClient) -> None:
    items = trainings(client.get(f"/recommendations/{EMPLOYEE}?n=5&explain=true"))
    matches = [item["explanation"]["match"] for item in items]
    scores = [item["score"] for item in items if not item["pinned"]]
    assert max(matches) == 100 and all(0 <= m <= 100 for m in matches)
    if scores == sorted(scores, reverse=True):  # the same order as the raw scores
        unpinned = [m for m, item in zip(matches, items, strict=True) if not item["pinned"]]
        assert unpinned == sorted(unpinned, reverse=True)
    for item, match in zip(items, matches, strict=True):
        expected = "strong" if match >= 80 else "good" if match >= 50 else "fair"
        assert item["explanation"]["strength"] == expected
    assert trainings(client.get(f"/recommendations/{EMPLOYEE}?n=5"))[0]["explanation"] is None


def places_rules(fresh_rows: list[int], share: float = 0.2, n_items: int = 30) -> Rules:
    fresh = np.zeros(n_items, dtype=bool)
    fresh[fresh_rows] = True
    return Rules(np.ones(n_items, bool), np.empty(0, np.int64), [], fresh, share)


def test_new_trainings_take_evenly_spread_places_never_a_pinned_one() -> None:
    rules = places_rules([20, 21, 22, 23])
    scores = np.zeros(30, np.float32)
    scores[[20, 21, 22, 23]] = [0.1, 0.4, 0.3, -1.0]  # 21 then 22 are the best new ones
    chosen = [(0, 9.0, True), *((row, 9.0 - row, False) for row in range(1, 10))]
    calls: list[int] = []

    def all_scores() -> np.ndarray:
        calls.append(1)
        return scores

    got = rules.with_new(chosen, 10, all_scores, np.ones(30, bool), np.array([], np.int64))
    assert [row for row, _, _ in got] == [0, 1, 2, 3, 21, 4, 5, 6, 7, 22]  # 5th and 10th
    assert got[4] == (21, pytest.approx(0.4), False) and got[0][2] is True
    # Already enough new ones: unchanged, and the scores are not even computed.
    calls.clear()
    assert rules.with_new(got, 10, all_scores, np.ones(30, bool), np.array([])) == got
    assert not calls
    # Taken or dismissed ones (excluded) and filtered ones (not allowed) are skipped.
    allowed = np.ones(30, bool)
    allowed[22] = False
    picked = rules.with_new(chosen, 10, all_scores, allowed, np.array([21]))
    assert [r for r, _, _ in picked if r >= 20] == [20, 23]


def test_the_share_is_rounded_down_and_a_short_list_is_only_extended() -> None:
    rules = places_rules([20, 21])
    chosen = [(row, 1.0, False) for row in range(4)]
    scores = np.arange(30, dtype=np.float32)
    nothing = np.array([], np.int64)
    assert rules.with_new(chosen, 4, lambda: scores, np.ones(30, bool), nothing) == chosen
    short = rules.with_new(chosen[:3], 5, lambda: scores, np.ones(30, bool), nothing)
    assert [r for r, _, _ in short] == [0, 1, 2, 21]  # one place of 5, nothing dropped
    assert places_rules([]).with_new(chosen, 10, lambda: scores, np.ones(30, bool), nothing) == (
        chosen
    )
