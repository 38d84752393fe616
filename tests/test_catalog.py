"""Fresh catalog data without a retrain: current titles and attributes, new trainings
scored from their attributes and recommendable at once, flagged new."""

from __future__ import annotations

import io

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from world import csv_bytes, drop, published, small_config, small_data

from shared.api import create_app
from shared.catalog import current_catalog, extend
from shared.layout import MODELS_POINTER, read_pointer
from shared.pipeline import precompute
from shared.registry import load_bundle
from shared.schema import parse_extract
from shared.storage import BlobStore, LocalFolderStore

CONFIG = small_config()
DATA = small_data()
NEW_ID = "T-NEW-1"


def with_changes(trainings: pd.DataFrame) -> pd.DataFrame:
    """The next trainings extract: one title changed, one training added."""
    changed = trainings.copy()
    changed.loc[0, "Training Title"] = "Renamed: " + changed.loc[0, "Training Title"]
    added = changed.iloc[[1]].assign(
        **{"Training-Id": NEW_ID, "Training Title": "Brand new course", "provider": "NewCo"}
    )
    return pd.concat([changed, added], ignore_index=True)


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
        "trainings", csv_bytes(with_changes(DATA.trainings)), CONFIG.contract, "t.csv"
    )
    catalog = current_catalog(bundle, trainings, CONFIG.contract)
    served = extend(bundle, catalog)

    assert catalog.n_new == 1 and catalog.ids[-1] == NEW_ID
    assert list(catalog.ids[:-1]) == list(bundle.item_ids)
    assert catalog.titles[0].startswith("Renamed: ")
    served.check()  # every array agrees with the wider catalog
    assert served.n_trained_items == len(bundle.item_ids)
    assert served.popularity[-1] == 0 and served.taken.shape[1] == len(bundle.item_ids) + 1
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
    assert not any(t["new"] for t in plain if t["training_id"] != NEW_ID)
