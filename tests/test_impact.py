"""The online impact report: the funnel per model version and scorer, clicks by position,
intervals, and the warning when a new version is clicked clearly less."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient
from world import drop_all, small_config, small_data

from shared import cli
from shared.api import create_app
from shared.events import Event, store_batch
from shared.impact import impact, impact_since, impact_table, origin, wilson
from shared.layout import FIRST_SEEN
from shared.pipeline import retrain
from shared.storage import LocalFolderStore

CONFIG = small_config()
DATA = small_data()
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def test_wilson_intervals() -> None:
    assert wilson(0, 0).model_dump() == {"rate": 0.0, "low": 0.0, "high": 1.0}
    rate = wilson(8, 10)  # the textbook example: 0.80 in [0.490, 0.943]
    assert (rate.rate, rate.low, rate.high) == (0.8, 0.4902, 0.9433)
    assert wilson(0, 50).low == 0.0 and 0 < wilson(0, 50).high < 0.08


def test_the_origin_of_an_answer_is_read_off_its_id() -> None:
    rid = "20261203T072826Z-357bd5-33a8.model+department-popularity.0a1b2c"
    assert origin(rid) == ("20261203T072826Z-357bd5-33a8", "model + department popularity")


def events(version: str, scorer: str, shown: int, clicked: int, *, prefix: str = "") -> list[Event]:
    """``shown`` recommendations at positions 1…, the first ``clicked`` of them clicked."""
    rid = f"{version}.{scorer}.{len(prefix)}ab"
    out = []
    for i in range(shown):
        base = {"recommendation_id": rid, "employee_id": f"{prefix}e{i}", "training_id": "T1"}
        stamp = NOW.isoformat()
        out.append(
            Event.model_validate(
                {
                    **base,
                    "key": f"{rid}{i}s",
                    "type": "shown",
                    "position": i % 5 + 1,
                    "timestamp": stamp,
                }
            )
        )
        if i < clicked:
            out.append(
                Event.model_validate(
                    {**base, "key": f"{rid}{i}c", "type": "clicked", "timestamp": stamp}
                )
            )
    return out


def test_the_funnel_per_version_and_scorer_counts_each_recommendation_once() -> None:
    sent = events("v1", "model", 100, 30) + events("v1", "popularity", 50, 5, prefix="p")
    report = impact(sent + sent[:10])  # a batch sent twice
    rows = {(r.model_version, r.scorer): r for r in report.by_scorer}
    model = rows[("v1", "model")]
    assert model.counts == {"shown": 100, "clicked": 30, "enrolled": 0, "completed": 0}
    assert model.rates["clicked"].rate == 0.3
    assert model.rates["clicked"].low < 0.3 < model.rates["clicked"].high
    assert rows[("v1", "popularity")].rates["clicked"].rate == 0.1
    assert [p.position for p in report.by_position] == [1, 2, 3, 4, 5]
    assert sum(p.shown for p in report.by_position) == 150
    assert report.warning is None
    # A click on a recommendation never reported shown is counted, not rated.
    unseen = Event.model_validate(
        {**sent[1].model_dump(mode="json"), "key": "x", "training_id": "T9"}
    )
    again = {(r.model_version, r.scorer): r for r in impact([*sent, unseen]).by_scorer}
    assert again[("v1", "model")].counts["clicked"] == 31
    assert again[("v1", "model")].rates["clicked"].rate == 0.3


def test_a_new_version_clicked_clearly_less_is_a_warning() -> None:
    worse = impact(events("v1", "model", 400, 120) + events("v2", "model", 400, 40, prefix="n"))
    assert worse.warning and worse.warning.startswith("model v2 is clicked less than v1")
    noise = impact(events("v1", "model", 40, 12) + events("v2", "model", 40, 10, prefix="n"))
    assert noise.warning is None  # 25 % against 30 % on 40 each: within the noise


def test_impact_of_a_simulated_run_over_http_and_in_the_command_line(
    tmp_path: Path, capsys: Any
) -> None:
    """Answers for 60 employees, all shown; people click the top of their lists more
    (the probability falls with the position): the report finds that shape."""
    store = LocalFolderStore(tmp_path / "store")
    drop_all(store, DATA, CONFIG)
    assert retrain(store, CONFIG).status == "published"
    client = TestClient(create_app(store, CONFIG))
    rng = np.random.default_rng(7)
    batch: list[dict[str, Any]] = []
    stamp = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    for employee in DATA.users["User-Id"].astype(str)[:60]:
        answer = client.get(f"/recommendations/{employee}", params={"n": 5}).json()
        for t in answer["trainings"]:
            one = {"recommendation_id": answer["recommendation_id"], "employee_id": employee}
            one |= {"training_id": t["training_id"], "timestamp": stamp}
            batch.append(
                {**one, "key": f"{employee}-{t['rank']}-s", "type": "shown", "position": t["rank"]}
            )
            if rng.random() < 0.6 / t["rank"]:
                batch.append(
                    {
                        **one,
                        "key": f"{employee}-{t['rank']}-c",
                        "type": "clicked",
                        "position": t["rank"],
                    }
                )
    for start in range(0, len(batch), 100):  # as a page would: a batch at a time
        chunk = batch[start : start + 100]
        assert client.post("/events", json={"events": chunk}).status_code == 202

    report = client.get("/model/impact").json()
    shown = sum(row["counts"]["shown"] for row in report["by_scorer"])
    clicked = sum(row["counts"]["clicked"] for row in report["by_scorer"])
    assert shown == 300 and clicked == sum(1 for e in batch if e["type"] == "clicked")
    assert {row["model_version"] for row in report["by_scorer"]} == {answer["model_version"]}
    first, last = report["by_position"][0], report["by_position"][-1]
    assert first["clicked"]["rate"] > last["clicked"]["rate"]
    assert client.get("/health").json()["impact_warning"] is None

    assert cli.main(["--store", str(store.root), "impact"]) == 0
    table = capsys.readouterr().out
    assert f"{len(batch)} events" in table and "position" in table
    assert cli.main(["--store", str(store.root), "impact", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["events"] == len(batch)


def test_more_clicks_than_shown_is_counted_not_a_crash() -> None:
    """A client that loses its shown events: clicks are counted, rates use the shown."""
    lost = events("v2", "model", 1, 1, prefix="x")
    lost += [
        Event.model_validate(
            {**lost[1].model_dump(mode="json"), "key": f"more{i}", "training_id": f"T{i + 2}"}
        )
        for i in range(3)
    ]
    report = impact(events("v1", "model", 10, 3) + lost)
    v2 = next(r for r in report.by_scorer if r.model_version == "v2")
    assert v2.counts["clicked"] == 4 and v2.counts["shown"] == 1
    assert v2.rates["clicked"].rate == 1.0
    assert report.warning is None


def test_the_next_model_card_reports_the_impact_of_the_versions_before(tmp_path: Path) -> None:
    store = LocalFolderStore(tmp_path / "store")
    drop_all(store, DATA, CONFIG)
    assert retrain(store, CONFIG).status == "published"
    first = json.loads(store.read(card_of(store, "card.json")))
    assert first["impact"] is None  # no events yet: no section
    assert "What people did" not in store.read(card_of(store, "card.html")).decode()

    client = TestClient(create_app(store, CONFIG))
    answer = client.get(f"/recommendations/{DATA.users['User-Id'].iloc[0]}").json()
    stamp = datetime.now(UTC).isoformat()
    batch = [
        {
            "key": f"s{t['rank']}",
            "recommendation_id": answer["recommendation_id"],
            "employee_id": answer["employee_id"],
            "training_id": t["training_id"],
            "type": "shown",
            "position": t["rank"],
            "timestamp": stamp,
        }
        for t in answer["trainings"]
    ]
    batch.append({**batch[0], "key": "c1", "type": "clicked"})
    assert client.post("/events", json={"events": batch}).status_code == 202

    assert retrain(store, CONFIG).status == "published"
    card = json.loads(store.read(card_of(store, "card.json")))
    row = card["impact"]["by_scorer"][0]
    assert row["model_version"] == answer["model_version"]
    assert row["counts"]["shown"] == len(answer["trainings"]) and row["counts"]["clicked"] == 1
    html = store.read(card_of(store, "card.html")).decode()
    assert "What people did with the recommendations" in html
    assert answer["model_version"] in html


def card_of(store: LocalFolderStore, name: str) -> str:
    """A file of the serving version's card."""
    from shared.registry import current_version

    return f"models/{current_version(store)}/{name}"


def test_new_trainings_are_reported_against_the_others(tmp_path: Path) -> None:
    """New: within new_days of the date the first-seen ledger gives the training."""
    store = LocalFolderStore(tmp_path / "store")
    now = datetime.now(UTC) - timedelta(minutes=1)
    old, fresh = events("v1", "model", 40, 4), events("v1", "model", 20, 10, prefix="n")
    fresh = [e.model_copy(update={"training_id": "T-NEW"}) for e in fresh]
    store_batch(store, [e.model_copy(update={"timestamp": now}) for e in old + fresh])
    first_seen = {"T1": None, "T-NEW": (now - timedelta(days=5)).date().isoformat()}
    store.write(FIRST_SEEN, json.dumps(first_seen).encode())

    report = impact_since(store, None, new_days=30)
    ages = {a.trainings: a for a in report.by_training_age}
    assert ages["new"].counts["shown"] == 20 and ages["new"].rates["clicked"].rate == 0.5
    assert ages["established"].counts["shown"] == 40
    assert ages["established"].rates["clicked"].rate == 0.1
    assert "new trainings" in impact_table(report)
    # Five days after it appeared, a training is no longer new with new_days = 5.
    later = impact_since(store, None, new_days=5)
    assert [a.trainings for a in later.by_training_age] == ["established"]
    assert later.by_training_age[0].counts["shown"] == 60
