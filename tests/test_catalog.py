"""Fresh catalog data without a retrain: current titles and attributes, new trainings
scored from their attributes and recommendable at once, flagged new."""

from __future__ import annotations

import io
import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from world import csv_bytes, drop, published, small_config, small_data

from shared.api import create_app
from shared.catalog import current_catalog, extend
from shared.layout import FIRST_SEEN, MODELS_POINTER, RECOMMENDATIONS_POINTER, read_pointer
from shared.pipeline import precompute, retrain
from shared.registry import load_bundle
from shared.rules import fresh_trainings
from shared.schema import parse_extract
from shared.serving import load_snapshot
from shared.storage import BlobStore, LocalFolderStore

CONFIG = small_config()
DATA = small_data()
NEW_ID = "T-NEW-1"
OTHER_NEW = [f"T-NEW-{i}" for i in range(2, 7)]  # like existing ones, under new ids
NEW_IDS = {NEW_ID, *OTHER_NEW}


def with_changes(trainings: pd.DataFrame) -> pd.DataFrame:
    """The next trainings extract: one title changed, six trainings added."""
    changed = trainings.copy()
    changed.loc[0, "Training Title"] = "Renamed: " + changed.loc[0, "Training Title"]
    added = changed.iloc[[1]].assign(
        **{"Training-Id": NEW_ID, "Training Title": "Brand new course", "provider": "NewCo"}
    )
    others = changed.iloc[2 : 2 + len(OTHER_NEW)].assign(
        **{"Training-Id": OTHER_NEW, "Training Title": "Another new course"}
    )
    return pd.concat([changed, added, others], ignore_index=True)


@pytest.fixture(scope="module")
def refreshed(tmp_path_factory: pytest.TempPathFactory) -> LocalFolderStore:
    store = published(LocalFolderStore(tmp_path_factory.mktemp("catalog") / "store"), DATA, CONFIG)
    trainings = csv_bytes(with_changes(DATA.trainings))
    assert drop(store, "trainings/next.csv", trainings, CONFIG).status == "accepted"
    assert precompute(store, CONFIG).status == "computed"  # no retrain
    return store


def test_the_catalog_keeps_the_model_s_trainings_first_and_adds_the_new_ones(
    refreshed: BlobStore,
) -> None:
    bundle = load_bundle(refreshed, read_pointer(refreshed, MODELS_POINTER)[0]["version"])
    trainings, _ = parse_extract(
        "trainings", io.BytesIO(csv_bytes(with_changes(DATA.trainings))), CONFIG.contract, "t.csv"
    )
    catalog = current_catalog(bundle, trainings, CONFIG.contract)
    served = extend(bundle, catalog)

    assert catalog.n_new == len(NEW_IDS) and set(catalog.ids[-len(NEW_IDS) :]) == NEW_IDS
    assert list(catalog.ids[: -len(NEW_IDS)]) == list(bundle.item_ids)
    assert catalog.titles[0].startswith("Renamed: ")
    served.check()  # every array agrees with the wider catalog
    assert served.n_trained_items == len(bundle.item_ids)
    assert served.popularity[-1] == 0
    assert served.taken.shape[1] == len(bundle.item_ids) + len(NEW_IDS)
    assert served.item_features[-1].nnz > 0  # described by its attributes
    with pytest.raises(ValueError, match="not written"):
        served.to_bytes()


def test_a_new_title_is_served_after_a_drop_and_a_precompute_without_a_retrain(
    refreshed: BlobStore,
) -> None:
    client = TestClient(create_app(refreshed, CONFIG))
    renamed = str(DATA.trainings["Training-Id"].iloc[0])

    similar = client.get(f"/trainings/{DATA.trainings['Training-Id'].iloc[1]}/similar?n=59")
    titles = {t["training_id"]: t["title"] for t in similar.json()["trainings"]}
    assert titles[renamed].startswith("Renamed: ")
    ranked = client.post("/rank", json={"attributes": {"ou": "sales"}, "training_ids": [renamed]})
    assert ranked.json()["trainings"][0]["title"].startswith("Renamed: ")
    # The CSV export of the precompute too.
    pointer = read_pointer(refreshed, "recommendations/current.json")[0]
    export = pd.read_csv(
        io.BytesIO(refreshed.read(f"recommendations/{pointer['version']}/recommendations.csv")),
        dtype=str,
    )
    rows = export[export["training_id"] == renamed]
    assert len(rows) and rows["title"].str.startswith("Renamed: ").all()


def test_a_new_training_can_be_recommended_before_the_next_retrain(refreshed: BlobStore) -> None:
    client = TestClient(create_app(refreshed, CONFIG))
    employee = str(DATA.taken["User-Id"].iloc[0])

    # Only the new training has provider NewCo: the filter leaves it alone in the running.
    got = client.get(f"/recommendations/{employee}", params={"filter": "provider:newco"})
    assert got.status_code == 200, got.text
    [training] = got.json()["trainings"]
    assert (training["training_id"], training["new"]) == (NEW_ID, True)
    assert training["title"] == "Brand new course"

    ranked = client.post("/rank", json={"employee_id": employee, "training_ids": [NEW_ID]})
    assert ranked.json()["unknown_training_ids"] == []
    assert ranked.json()["trainings"][0]["recommendable"] is True
    similar = client.get(f"/trainings/{NEW_ID}/similar", params={"n": 3})
    assert similar.status_code == 200 and len(similar.json()["trainings"]) == 3
    # The model's own trainings are not new.
    plain = client.get(f"/recommendations/{employee}").json()["trainings"]
    assert all(t["new"] == (t["training_id"] in NEW_IDS) for t in plain)


def new_of(answer: dict[str, Any]) -> list[str]:
    return [t["training_id"] for t in answer["trainings"] if t["new"]]


def test_new_trainings_take_at_most_their_share_of_each_list_flagged_new(
    refreshed: BlobStore,
) -> None:
    client = TestClient(create_app(refreshed, CONFIG))  # rules.new_share 0.2
    without = TestClient(create_app(refreshed, small_config(rules={"new_share": 0})))
    employees = DATA.users["User-Id"].astype(str).iloc[::9].tolist()
    assert len(employees) >= 20
    for employee in employees:
        got = client.get(f"/recommendations/{employee}", params={"n": 10}).json()
        plain = without.get(f"/recommendations/{employee}", params={"n": 10}).json()
        natural, new = new_of(plain), new_of(got)
        assert len(new) == max(2, len(natural)) and set(natural) <= set(new)  # 2 of 10
        assert all(t["new"] == (t["training_id"] in NEW_IDS) for t in got["trainings"])
        others = [t["training_id"] for t in got["trainings"] if not t["new"]]
        assert (
            others == [t["training_id"] for t in plain["trainings"] if not t["new"]][: len(others)]
        )  # the rest keep their order; the lowest ranked gave up their places
        ranked = client.post("/rank", json={"employee_id": employee, "training_ids": [*NEW_IDS]})
        best = [t["training_id"] for t in ranked.json()["trainings"]]
        assert set(new) == set(best[: len(new)])  # the best new ones for this employee
        if not natural:
            assert [t["rank"] for t in got["trainings"] if t["new"]] == [5, 10]
        # Three places: a fifth of three rounds down to none.
        short = client.get(f"/recommendations/{employee}", params={"n": 3}).json()
        assert (
            short["trainings"]
            == without.get(f"/recommendations/{employee}", params={"n": 3}).json()["trainings"]
        )
    # The CSV export of the precompute follows the same rule.
    pointer = read_pointer(refreshed, RECOMMENDATIONS_POINTER)[0]
    export = pd.read_csv(
        io.BytesIO(refreshed.read(f"recommendations/{pointer['version']}/recommendations.csv")),
        dtype=str,
    )
    per_employee = export.assign(new=export["training_id"].isin(NEW_IDS)).groupby("employee_id")
    assert (per_employee["new"].sum() >= 2).all()


def test_the_first_seen_ledger_keeps_trainings_new_for_new_days_across_a_retrain(
    tmp_path: Path,
) -> None:
    store = published(LocalFolderStore(tmp_path), DATA, CONFIG)
    trained = set(DATA.trainings["Training-Id"].astype(str))
    first = json.loads(store.read(FIRST_SEEN))
    assert set(first) == trained and set(first.values()) == {None}  # there before records
    drop(store, "trainings/next.csv", csv_bytes(with_changes(DATA.trainings)), CONFIG)
    precompute(store, CONFIG)
    today = date.today()
    ledger = json.loads(store.read(FIRST_SEEN))
    assert {t: d for t, d in ledger.items() if d} == dict.fromkeys(NEW_IDS, today.isoformat())

    assert retrain(store, CONFIG).status == "published"  # the new ones are now trained
    pointer, etag = read_pointer(store, RECOMMENDATIONS_POINTER)
    snapshot = load_snapshot(store, pointer, etag, CONFIG.rules)
    assert snapshot.bundle.new_items == 0  # in the model itself...
    fresh = {str(i) for i in snapshot.bundle.item_ids[snapshot.rules.fresh]}
    assert fresh == NEW_IDS  # ... and still new
    assert json.loads(store.read(FIRST_SEEN)) == ledger  # their dates kept

    def new_on(day: date) -> set[str]:
        mask = fresh_trainings(snapshot.bundle, CONFIG.rules.new_days, day)
        return {str(i) for i in snapshot.bundle.item_ids[mask]}

    assert new_on(today + timedelta(days=CONFIG.rules.new_days - 1)) == NEW_IDS
    assert new_on(today + timedelta(days=CONFIG.rules.new_days)) == set()
