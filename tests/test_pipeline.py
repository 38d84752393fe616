"""The use cases on both stores: accept_extract, retrain, precompute."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
from world import csv_bytes, drop, drop_all, small_config, small_data

from shared.errors import NotFoundError, TrainingRecommenderError
from shared.layout import (
    EXTRACTS_POINTER,
    MODELS_POINTER,
    RECOMMENDATIONS_POINTER,
    RETRAIN_LOCK,
    read_pointer,
)
from shared.pipeline import detect_kind, extract_kind, precompute, retrain
from shared.progress import Recording
from shared.registry import load_bundle, load_recommendations
from shared.scoring import NO_ITEM, Recommender
from shared.storage import BlobStore, LocalFolderStore
from shared.synthetic import generate

CONFIG = small_config()
NO_GATE = small_config(gate={"enabled": False})  # half the data would not pass the gate
DATA = small_data()


@pytest.fixture
def trained(store: BlobStore) -> BlobStore:
    drop_all(store, DATA, CONFIG)
    result = retrain(store, CONFIG)
    assert result.status == "published"
    return store


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("users/2026-11.csv", "users"),
        ("trainings/x.csv", "trainings"),
        ("trainings-taken/x.csv", "trainings-taken"),
        ("trainings-taken-2026.csv", "trainings-taken"),
        ("trainings_2026.csv", "trainings"),
        ("Users.csv", "users"),
        ("trainings_taken.csv", "trainings-taken"),
        ("Trainings Taken 2026-11.csv", "trainings-taken"),
        ("TRAININGS-TAKEN.csv", "trainings-taken"),
        ("Trainings_Taken/x.csv", "trainings-taken"),
        ("payroll/x.csv", None),
    ],
)
def test_extract_kind_from_the_blob_name(name: str, kind: str | None) -> None:
    assert extract_kind(name) == kind


@pytest.mark.parametrize(
    ("frame", "kind"),
    [("users", "users"), ("trainings", "trainings"), ("taken", "trainings-taken")],
)
def test_extract_kind_from_the_columns_when_the_name_says_nothing(frame: str, kind: str) -> None:
    data = csv_bytes(getattr(DATA, frame).head(3))
    assert detect_kind("export-0042.csv", io.BytesIO(data), CONFIG.contract) == (
        kind,
        f"its columns ({', '.join(getattr(DATA, frame).columns)})",
    )
    assert detect_kind("export-0042.csv", io.BytesIO(b"a,b\n1,2\n"), CONFIG.contract)[0] is None


def test_a_guessed_kind_is_said_with_how_to_override_and_the_file_lands_under_it(
    store: BlobStore,
) -> None:
    # A trainings-taken file named so that it reads as a trainings extract.
    result = drop(store, "trainings 2026.csv", csv_bytes(DATA.taken), CONFIG)

    assert result.status == "rejected"
    first = result.report["problems"][0]["message"]
    assert first.startswith("read as a trainings extract from its file name 'trainings 2026.csv'")
    assert "--kind KIND" in first
    assert result.path == "hr-extracts-rejected/trainings/trainings 2026.csv"
    assert store.exists("hr-extracts-rejected/trainings/trainings 2026.error.json")


def test_a_file_of_no_known_kind_says_where_to_put_it(store: BlobStore) -> None:
    result = drop(store, "payroll.csv", b"a,b\n1,2\n", CONFIG)
    assert result.status == "rejected"
    message = result.report["problems"][0]["message"]
    assert "neither its folder, its file name nor its columns say" in message
    assert "users/, trainings/, trainings-taken/" in message
    assert result.path == "hr-extracts-rejected/payroll.csv"


def test_a_good_extract_becomes_current_and_the_same_bytes_twice_change_nothing(
    store: BlobStore,
) -> None:
    data = csv_bytes(DATA.users)
    first = drop(store, "users/u.csv", data, CONFIG)
    assert first.status == "accepted"
    pointer, etag = read_pointer(store, EXTRACTS_POINTER)
    assert pointer["users"]["path"] == first.path
    assert store.read(first.path) == data
    assert first.report["rows_kept"] == len(DATA.users)

    again = drop(store, "users/u-again.csv", data, CONFIG)
    assert again.status == "unchanged"
    assert read_pointer(store, EXTRACTS_POINTER)[1] == etag


def test_a_bad_extract_is_quarantined_with_its_report_and_nothing_current_changes(
    store: BlobStore,
) -> None:
    drop(store, "users/good.csv", csv_bytes(DATA.users), CONFIG)
    before = read_pointer(store, EXTRACTS_POINTER)
    bad = b"User-Id;ou;skills;language;grade;career interests\n001;sales;;;;\n001;legal;;;;\n"
    result = drop(store, "users/bad.csv", bad, CONFIG)

    assert result.status == "rejected"
    assert read_pointer(store, EXTRACTS_POINTER) == before
    assert not store.exists("hr-extracts/users/bad.csv")  # moved, not copied
    assert store.read("hr-extracts-rejected/users/bad.csv") == bad
    report = json.loads(store.read("hr-extracts-rejected/users/bad.error.json"))
    texts = [p["text"] for p in report["problems"]]
    assert texts == [
        "hr-extracts/users/bad.csv, line 2, column 'User-Id': "
        "identifier '001' appears on rows that disagree (lines 2, 3)"
    ]


def test_an_unknown_kind_is_rejected_not_raised(store: BlobStore) -> None:
    result = drop(store, "payroll.csv", b"a,b\n1,2\n", CONFIG)
    assert result.status == "rejected"
    assert "cannot tell the extract kind" in result.report["message"]


def test_retrain_without_extracts_names_what_is_missing(store: BlobStore) -> None:
    drop(store, "users/u.csv", csv_bytes(DATA.users), CONFIG)
    with pytest.raises(NotFoundError, match="trainings, trainings-taken"):
        retrain(store, CONFIG)
    assert not store.exists(MODELS_POINTER)


def test_retrain_publishes_a_model_and_everyone_s_recommendations(trained: BlobStore) -> None:
    model_pointer, _ = read_pointer(trained, MODELS_POINTER)
    bundle = load_bundle(trained, model_pointer["version"])
    assert bundle.metadata.counts.employees == len(DATA.users)
    assert set(bundle.metadata.fingerprints) == {"users", "trainings", "trainings-taken"}
    assert (bundle.metadata.served_precision("known") or 0) > 0
    assert set(bundle.metadata.serving) == {"known", "cold-start"}

    recs_pointer, _ = read_pointer(trained, RECOMMENDATIONS_POINTER)
    assert recs_pointer["model_version"] == model_pointer["version"]
    table = load_recommendations(trained, recs_pointer["version"])
    assert list(table.user_ids) == list(DATA.users["User-Id"])
    taken = DATA.taken.groupby("User-Id")["Training-Id"].apply(set)
    for row in np.random.default_rng(0).choice(len(table.user_ids), 50, replace=False):
        employee = str(table.user_ids[row])
        recommended = {str(bundle.item_ids[i]) for i in table.items[row] if i != NO_ITEM}
        available = len(bundle.item_ids) - len(taken.get(employee, set()))
        assert len(recommended) == min(CONFIG.serving.depth, available)
        assert not recommended & taken.get(employee, set())  # already taken: excluded

    export = pd.read_csv(
        io.BytesIO(trained.read(f"recommendations/{recs_pointer['version']}/recommendations.csv")),
        dtype=str,
    )
    assert list(export.columns) == ["employee_id", "rank", "training_id", "title", "score"]
    top = table.items[:, : CONFIG.serving.top_k]
    assert len(export) == int((top != NO_ITEM).sum())
    assert export.groupby("employee_id")["rank"].count().max() == CONFIG.serving.top_k
    assert export["employee_id"].iloc[0] == DATA.users["User-Id"].iloc[0]  # leading zeros kept


def test_precompute_is_idempotent_and_follows_new_extracts(trained: BlobStore) -> None:
    first, _ = read_pointer(trained, RECOMMENDATIONS_POINTER)
    assert precompute(trained, CONFIG).status == "unchanged"

    newcomer = DATA.users.iloc[[0]].assign(**{"User-Id": "999999", "skills": "python;sql"})
    drop(trained, "users/with-newcomer.csv", csv_bytes(pd.concat([DATA.users, newcomer])), CONFIG)
    result = precompute(trained, CONFIG)
    assert result.status == "computed"
    assert result.model_version == first["model_version"]
    assert result.data_version != first["data_version"]
    table = load_recommendations(trained, result.version)
    row = list(table.user_ids).index("999999")
    assert (table.items[row] != NO_ITEM).all()
    assert not table.from_history[row]


def test_nothing_taken_is_ever_recommended_whatever_its_weight(store: BlobStore) -> None:
    # Only ratings of 4 and 5 are successes; the lower ones were still taken.
    config = small_config(contract={"taken": {"min_weight": 4}})
    drop_all(store, DATA, config)
    assert retrain(store, config).status == "published"
    pointer, _ = read_pointer(store, RECOMMENDATIONS_POINTER)
    table = load_recommendations(store, pointer["version"])
    bundle = load_bundle(store, pointer["model_version"])
    low = DATA.taken[DATA.taken["rating"].astype(int) < 4]
    assert len(low) > 500  # a fifth of the rows, as in rated exports
    taken = DATA.taken.groupby("User-Id")["Training-Id"].apply(set)
    rows = {employee: row for row, employee in enumerate(table.user_ids.tolist())}
    for employee, trainings in taken.items():
        row = rows[str(employee)]
        recommended = {str(bundle.item_ids[i]) for i in table.items[row] if i != NO_ITEM}
        assert not recommended & trainings, employee
    assert bundle.metadata.counts.interactions == len(DATA.taken)
    assert bundle.metadata.counts.successes == len(DATA.taken) - len(low)


def test_a_completion_moves_the_list_at_the_next_precompute_without_a_retrain(
    trained: BlobStore,
) -> None:
    first, _ = read_pointer(trained, RECOMMENDATIONS_POINTER)
    before = load_recommendations(trained, first["version"])
    bundle = load_bundle(trained, first["model_version"])
    employee, row = "000002", 1
    assert str(before.user_ids[row]) == employee
    completed = str(bundle.item_ids[before.items[row, 0]])  # took their first recommendation
    more = pd.DataFrame(
        [{"User-Id": employee, "Training-Id": completed, "rating": "5", "date": "2026-11-30"}]
    )
    drop(trained, "trainings-taken/plus-one.csv", csv_bytes(pd.concat([DATA.taken, more])), CONFIG)

    result = precompute(trained, CONFIG)

    assert result.status == "computed" and result.model_version == first["model_version"]
    after = load_recommendations(trained, result.version)
    assert completed not in {str(bundle.item_ids[i]) for i in after.items[row]}
    # Not only removed: their description now holds it, so every score moved.
    history = after.user_features[row, bundle.n_attributes :].toarray().ravel()
    assert history[before.items[row, 0]] > 0
    common = np.intersect1d(before.items[row], after.items[row])
    old_scores = dict(zip(before.items[row].tolist(), before.scores[row].tolist(), strict=True))
    new_scores = dict(zip(after.items[row].tolist(), after.scores[row].tolist(), strict=True))
    assert any(abs(old_scores[i] - new_scores[i]) > 1e-4 for i in common.tolist())
    # Everyone else keeps exactly their list.
    others = np.arange(len(after.user_ids)) != row
    assert np.array_equal(after.items[others], before.items[others])


def test_each_population_is_served_by_what_beats_the_baselines_and_it_is_recorded(
    store: BlobStore,
) -> None:
    # Attributes shuffled between employees: they say nothing, so new employees (known
    # by attributes alone) fall back to a baseline, while known employees' histories
    # still serve them well through the model.
    config = small_config(model={"epochs": 30})
    data = generate(1000, 200, 12_000, seed=0, regime="history")
    users = data.users.copy()
    columns = ["ou", "skills", "language", "grade", "career interests"]
    users[columns] = users[columns].to_numpy()[np.random.default_rng(0).permutation(len(users))]
    drop(store, "users/u.csv", csv_bytes(users), config)
    drop(store, "trainings/t.csv", csv_bytes(data.trainings), config)
    drop(store, "trainings-taken/k.csv", csv_bytes(data.taken), config)

    result = retrain(store, config)

    assert result.status == "published"
    assert result.served_by["known"] == "model"
    assert result.served_by["cold-start"] in ("popularity", "department popularity")
    evaluation = result.evaluation
    assert evaluation is not None
    served = evaluation.served
    assert "does not beat" in served["cold-start"].note
    margin = served["known"].margin
    assert margin is not None and margin.mean > margin.ci95  # beyond the noise
    results = evaluation.results
    assert results["known"]["served"]["precision"] > results["known"]["popularity"]["precision"]
    cold = results["cold-start"]
    assert cold["served"] == cold[result.served_by["cold-start"]]
    bundle = load_bundle(store, str(result.version))
    assert bundle.metadata.serving["cold-start"].scorer.model == 0.0
    # And the precomputed lists follow it: employees who took nothing get the baseline's
    # order (overall popularity, or within their department).
    table = load_recommendations(store, read_pointer(store, RECOMMENDATIONS_POINTER)[0]["version"])
    new = np.flatnonzero(~table.from_history)
    assert len(new) > 10
    if result.served_by["cold-start"] == "popularity":
        order = np.argsort(-bundle.popularity, kind="stable")[:10]
        assert all(table.items[row, :10].tolist() == order.tolist() for row in new)
    else:
        groups = Recommender(bundle).priors.groups(table.user_features[new])
        for row, group in zip(new.tolist(), groups.tolist(), strict=True):
            department = bundle.department_popularity[max(group, 0)].toarray().ravel()
            prior = department if group >= 0 else bundle.popularity
            assert prior[int(table.items[row, 0])] == prior.max()


def test_a_second_retrain_while_one_holds_the_lock_exits_busy(trained: BlobStore) -> None:
    before = read_pointer(trained, MODELS_POINTER)
    with trained.lease(RETRAIN_LOCK, seconds=60):
        assert retrain(trained, CONFIG).status == "busy"
    assert read_pointer(trained, MODELS_POINTER) == before


class FailingStore:
    """Delegates to a real store, failing writes whose path matches a predicate."""

    def __init__(self, inner: BlobStore, fails: Callable[[str], bool]) -> None:
        self.inner = inner
        self.fails = fails

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def write(self, path: str, data: bytes, **kwargs: Any) -> str:
        if self.fails(path):
            raise TrainingRecommenderError(f"injected failure writing {path}")
        return self.inner.write(path, data, **kwargs)


@pytest.mark.parametrize(
    "failing_path",
    ["model.npz", "models/current.json", "top.npz", "recommendations.csv", RECOMMENDATIONS_POINTER],
)
def test_a_failure_anywhere_in_retrain_leaves_the_previous_version_serving(
    trained: BlobStore, failing_path: str
) -> None:
    models_before = read_pointer(trained, MODELS_POINTER)
    recs_before = read_pointer(trained, RECOMMENDATIONS_POINTER)
    changed = DATA.taken.iloc[: len(DATA.taken) // 2]
    drop(trained, "trainings-taken/half.csv", csv_bytes(changed), CONFIG)
    broken = FailingStore(trained, lambda path: path.endswith(failing_path))

    with pytest.raises(TrainingRecommenderError, match="injected"):
        retrain(broken, NO_GATE)  # type: ignore[arg-type]

    recs_after = read_pointer(trained, RECOMMENDATIONS_POINTER)
    assert recs_after == recs_before  # readers still get the old, complete version
    if failing_path in ("model.npz", "models/current.json"):
        assert read_pointer(trained, MODELS_POINTER) == models_before
    # The next run succeeds without any cleanup.
    assert retrain(trained, NO_GATE).status == "published"
    assert read_pointer(trained, RECOMMENDATIONS_POINTER)[0]["version"] != recs_before[0]["version"]


def test_a_retrain_reports_its_steps_in_order_with_counts_reaching_their_totals(
    local_store: LocalFolderStore,
) -> None:
    drop_all(local_store, DATA, CONFIG)
    recording = Recording()
    result = retrain(local_store, CONFIG, progress=recording)
    assert result.status == "published"
    events = recording.events
    top = [e.path[0] for e in events if e.kind == "start" and len(e.path) == 1]
    assert top == [
        "read the extracts",
        "build the matrices",
        "evaluate",
        "refit on all the data",
        "publish",
        "score",
        "export",
        "upload",
    ]
    fits = [e for e in events if e.kind == "start" and e.path[-1] == "fit"]
    assert [e.path for e in fits] == [("evaluate", "fit")] * CONFIG.evaluation.repeats + [
        ("refit on all the data", "fit")
    ]
    ends = [e for e in events if e.kind == "end"]
    assert all(e.done == e.total for e in ends if e.total is not None)
    assert not [e for e in events if e.kind == "fail"]
    employees = len(DATA.users)
    assert {(e.path, e.done) for e in ends if e.path in {("score",), ("export",)}} == {
        (("score",), employees),
        (("export",), employees),
    }
    read = next(e for e in ends if e.path == ("read the extracts",))
    sizes = [info.size for info in local_store.list("extracts/") if info.path.endswith(".csv")]
    assert read.unit == "bytes" and read.done == read.total == sum(sizes)
