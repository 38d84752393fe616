"""Model versions: the quality gate, rejected candidates, list/show, promote (rollback)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from world import csv_bytes, drop, drop_all, small_config, small_data

from shared.api import create_app
from shared.errors import TrainingRecommenderError
from shared.evaluation import Comparison, EvaluationReport, ServedChoice, quality_gate
from shared.layout import MODELS_POINTER, RECOMMENDATIONS_POINTER, read_pointer
from shared.pipeline import promote, retrain
from shared.registry import list_versions, load_recommendations, metadata_of
from shared.scoring import MODEL
from shared.storage import BlobStore

CONFIG = small_config()
NO_GATE = small_config(gate={"enabled": False})
DATA = small_data()


def report(known: float, cold: float, ci95: float = 0.002) -> EvaluationReport:
    """A candidate serving known employees at ``known`` and new ones at ``cold``."""

    def metrics(precision: float) -> dict[str, float]:
        return {"precision": precision, "recall": 0, "ndcg": 0, "auc": 0, "coverage": 0}

    result = EvaluationReport(k=10, repeats=3)
    for population, precision in (("known", known), ("cold-start", cold)):
        result.add(population, "served", metrics(precision), None, ci95)
        result.add(population, "popularity", metrics(precision / 2), None, ci95)
        result.served[population] = ServedChoice(
            choice="model", scorer=MODEL, note="model did best on validation data"
        )
        result.comparisons[population] = {
            "popularity": Comparison(difference=precision / 2, ci95=ci95)
        }
    return result


GOOD = report(0.12, 0.38)


@pytest.mark.parametrize(
    ("candidate", "serving", "refused"),
    [
        (GOOD, None, []),
        (GOOD, GOOD, []),
        (report(0.115, 0.38), GOOD, []),  # 4 % worse on known employees: within the 5 %
        (report(0.10, 0.38), GOOD, []),  # worse for known employees only: still serves better
        (report(0.12, 0.30), GOOD, []),  # worse for new employees only
        (report(0.10, 0.30), GOOD, ["known", "cold-start"]),  # worse everywhere: refused
        (report(0.10, 0.30, ci95=0.06), GOOD, []),  # as much worse, within the noise
    ],
)
def test_quality_gate_refuses_only_a_candidate_worse_everywhere(
    candidate: EvaluationReport, serving: EvaluationReport | None, refused: list[str]
) -> None:
    decision = quality_gate(
        candidate, serving, serving_version="v1" if serving else None, tolerance=0.05
    )
    assert decision.accepted == (not refused)
    assert [reason.split(":")[0] for reason in decision.reasons] == refused
    assert all("vs serving v1" in reason for reason in decision.reasons)
    # Every decision records what serves whom, and by how much it beats each baseline.
    assert "known: served by model, precision@10" in decision.checks[0]
    assert any("model minus popularity" in check for check in decision.checks)
    assert decision.decision == ("rejected" if refused else "accepted")


def test_a_gate_turned_off_says_so() -> None:
    decision = quality_gate(
        report(0.01, 0.01), GOOD, serving_version="v1", tolerance=0.05, enabled=False
    )
    assert decision.accepted
    assert decision.decision == "not checked" and not decision.enabled
    assert decision.checks == ["gate off: not checked"]


@pytest.fixture
def published(store: BlobStore) -> BlobStore:
    drop_all(store, DATA, CONFIG)
    assert retrain(store, CONFIG).status == "published"
    return store


def test_a_degraded_candidate_is_rejected_and_nothing_serving_changes(published: BlobStore) -> None:
    store = published
    models_before = read_pointer(store, MODELS_POINTER)
    recs_before = read_pointer(store, RECOMMENDATIONS_POINTER)
    table_before = load_recommendations(store, recs_before[0]["version"])

    shuffled = DATA.taken.copy()
    shuffled["Training-Id"] = np.random.default_rng(0).permutation(
        shuffled["Training-Id"].to_numpy()
    )
    shuffled = shuffled.drop_duplicates(["User-Id", "Training-Id"])
    drop(store, "trainings-taken/shuffled.csv", csv_bytes(shuffled), CONFIG)
    result = retrain(store, CONFIG)

    assert result.status == "rejected"
    assert result.gate is not None and result.gate.decision == "rejected"
    assert any("vs serving" in reason for reason in result.gate.reasons)
    assert read_pointer(store, MODELS_POINTER) == models_before
    assert read_pointer(store, RECOMMENDATIONS_POINTER) == recs_before
    table_after = load_recommendations(store, recs_before[0]["version"])
    assert np.array_equal(table_after.items, table_before.items)

    metadata, status = metadata_of(store, str(result.version))
    assert status == "rejected"
    assert metadata.gate is not None and metadata.gate.reasons == result.gate.reasons
    assert store.exists(f"models/rejected/{result.version}/card.html")
    statuses = {info.version: info.status for info in list_versions(store)}
    assert statuses == {models_before[0]["version"]: "serving", result.version: "rejected"}

    with pytest.raises(TrainingRecommenderError, match="rejected by the quality gate"):
        promote(store, str(result.version), CONFIG)


def test_promote_an_earlier_version_moves_the_pointer_and_recomputes(published: BlobStore) -> None:
    store = published
    first = read_pointer(store, MODELS_POINTER)[0]["version"]
    drop(store, "trainings-taken/less.csv", csv_bytes(DATA.taken.iloc[::2]), CONFIG)
    second = retrain(store, NO_GATE)
    assert second.status == "published" and second.version != first
    client = TestClient(create_app(store, CONFIG))
    assert client.get("/model").json()["version"] == second.version

    result = promote(store, first, CONFIG)

    assert read_pointer(store, MODELS_POINTER)[0]["version"] == first
    recs = read_pointer(store, RECOMMENDATIONS_POINTER)[0]
    assert recs["model_version"] == first and result.status == "computed"
    assert client.get("/model").json()["version"] == first
    infos = list_versions(store)
    assert [i.version for i in infos] == sorted([first, str(second.version)])  # sorted by time
    assert {i.version: i.status for i in infos}[first] == "serving"
    assert all(set(i.fingerprints) == {"users", "trainings", "trainings-taken"} for i in infos)


def test_every_published_version_has_its_card(published: BlobStore) -> None:
    version = read_pointer(published, MODELS_POINTER)[0]["version"]
    card = json.loads(published.read(f"models/{version}/card.json"))
    assert card
    assert published.read(f"models/{version}/card.html").startswith(b"<!DOCTYPE html>")
