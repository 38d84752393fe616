"""Feedback events: stored once per batch, counted once per key, never lost when storage
fails (the client retries), and a dismissed training left out of the next answers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from test_faults import failing_store
from world import drop_all, small_config, small_data

from shared.api import create_app
from shared.events import EVENTS, Event, EventLog, batch_blob, dismissals, store_batch
from shared.pipeline import retrain
from shared.registry import current_version, metadata_of
from shared.storage import BlobStore

CONFIG = small_config()
DATA = small_data()
NOW = datetime(2026, 12, 1, 9, 15, tzinfo=UTC)  # in the past: a future one is refused


def employee() -> str:
    return str(DATA.taken["User-Id"].iloc[0])


def event(key: str, type_: str = "clicked", **fields: Any) -> Event:
    values = {
        "key": key,
        "employee_id": employee(),
        "training_id": "T00001",
        "type": type_,
        "timestamp": NOW.isoformat(),
        **fields,
    }
    return Event.model_validate(values)


def test_a_batch_is_named_by_its_content_whatever_the_order() -> None:
    batch = [event("a"), event("b", "shown", position=1)]
    path, data = batch_blob(batch, NOW.date())
    assert path.startswith(f"{EVENTS}2026-12-01/") and path.endswith(".jsonl")
    assert batch_blob(list(reversed(batch)), NOW.date()) == (path, data)
    assert batch_blob([event("a")], NOW.date())[0] != path
    assert len(data.splitlines()) == 2


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("timestamp", "2026-12-03T09:15:00"),  # no time zone: ambiguous
        ("timestamp", 1764753300),  # a number is no RFC 3339 date-time
        ("type", "liked"),
        ("position", 0),
        ("position", "2"),
        ("employee_id", "a/b"),
        ("recommendation_id", "no dots"),
    ],
)
def test_an_invalid_event_is_refused(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        event("k", **{field: value})


def test_dismissals_expire() -> None:
    old = event(
        "old", "dismissed", training_id="T1", timestamp=(NOW - timedelta(days=200)).isoformat()
    )
    recent = event("new", "dismissed", training_id="T2")
    clicked = event("c", "clicked", training_id="T3")
    assert dismissals([old, recent, clicked], NOW, days=180) == {employee(): {"T2"}}
    assert dismissals([old, recent], NOW, days=365) == {employee(): {"T1", "T2"}}


def published_client(store: BlobStore) -> TestClient:
    drop_all(store, DATA, CONFIG)
    assert retrain(store, CONFIG).status == "published"
    return TestClient(create_app(store, CONFIG))


def events_of(answer: dict[str, Any], *, dismiss: int) -> list[dict[str, Any]]:
    """What an intranet page sends: every training shown, the first clicked, one dismissed."""
    rid, who = answer["recommendation_id"], answer["employee_id"]
    stamp = datetime.now(UTC).isoformat()
    sent = [
        {
            "key": f"{rid}-{t['rank']}-shown",
            "type": "shown",
            "position": t["rank"],
            "training_id": t["training_id"],
        }
        for t in answer["trainings"]
    ]
    first, dismissed = answer["trainings"][0], answer["trainings"][dismiss]
    sent.append(
        {
            "key": f"{rid}-1-clicked",
            "type": "clicked",
            "position": 1,
            "training_id": first["training_id"],
        }
    )
    sent.append(
        {
            "key": f"{rid}-d",
            "type": "dismissed",
            "position": dismiss + 1,
            "training_id": dismissed["training_id"],
        }
    )
    return [{**e, "recommendation_id": rid, "employee_id": who, "timestamp": stamp} for e in sent]


def test_events_end_to_end_nothing_lost_nothing_doubled_dismissed_left_out(
    store: BlobStore,
) -> None:
    client = published_client(store)
    path = f"/recommendations/{employee()}"
    answer = client.get(path).json()
    assert answer["recommendation_id"].startswith(answer["model_version"] + ".")
    assert (
        client.get(path).json()["recommendation_id"] == answer["recommendation_id"]
    )  # same answer
    sent = events_of(answer, dismiss=2)
    dismissed = sent[-1]["training_id"]

    first = client.post("/events", json={"events": sent})
    assert first.status_code == 202 and first.json() == {"accepted": len(sent)}
    assert client.post("/events", json={"events": sent}).status_code == 202  # a retry: same blob
    overlap = client.post("/events", json={"events": sent[:3]})  # the same events, another batch
    assert overlap.status_code == 202

    assert len(store.list(EVENTS)) == 2  # the retried batch was not stored twice
    log = EventLog()
    log.update(store, NOW.date() - timedelta(days=1))
    assert sorted(log.events) == sorted((e["employee_id"], e["key"]) for e in sent)  # once each

    after = client.get(path).json()
    assert dismissed not in [t["training_id"] for t in after["trainings"]]
    assert len(after["trainings"]) == len(answer["trainings"])  # the list is still full
    assert after["recommendation_id"] != answer["recommendation_id"]


def test_a_storage_outage_during_a_post_is_a_503_and_the_retry_is_counted_once(
    azurite: str, container_prefix: str
) -> None:
    healthy, _ = failing_store(azurite, container_prefix, lambda _n, _r: False)
    answer = published_client(healthy).get(f"/recommendations/{employee()}").json()
    # The same containers through a transport that drops the events' PUT once.
    dropped: list[str] = []

    def once(_n: int, request: Any) -> bool:
        blob = urlsplit(request.url).path
        hit = request.method == "PUT" and f"/{container_prefix}events/" in blob and not dropped
        if hit:
            dropped.append(request.url)
        return hit

    flaky, _ = failing_store(azurite, container_prefix, once)
    client = TestClient(create_app(flaky, CONFIG))
    batch = {"events": events_of(answer, dismiss=1)}
    outage = client.post("/events", json=batch)
    assert outage.status_code == 503 and outage.headers["retry-after"]
    assert outage.headers["content-type"] == "application/problem+json"
    assert dropped, "the write was not even attempted"
    assert client.post("/events", json=batch).status_code == 202  # the client's retry
    log = EventLog()
    log.update(healthy, NOW.date() - timedelta(days=1))
    assert len(log.events) == len(batch["events"])


def dismissal(key: str, training: str) -> Event:
    return event(key, "dismissed", training_id=training)


def test_a_bad_blob_or_an_idle_gap_loses_no_dismissal(local_store: BlobStore) -> None:
    today = datetime.now(UTC).date()
    for days_ago, training in ((10, "T10"), (8, "T8")):
        path, data = batch_blob([dismissal(training, training)], today - timedelta(days=days_ago))
        local_store.write(path, data)
    local_store.write(f"{EVENTS}{today - timedelta(days=9)}/broken.jsonl", b"not json\n")
    log = EventLog(kinds=frozenset({"dismissed"}))
    assert log.update(local_store, today - timedelta(days=180)) == 3  # the bad one skipped
    assert {e.training_id for e in log.events.values()} == {"T10", "T8"}
    # An instance idle for days: the next read covers the gap, not just yesterday.
    log.read_through = today - timedelta(days=5)
    path, data = batch_blob([dismissal("T3", "T3")], today - timedelta(days=3))
    local_store.write(path, data)
    assert log.update(local_store, today - timedelta(days=180)) == 1
    assert "T3" in {e.training_id for e in log.events.values()}


def test_a_log_of_dismissals_keeps_nothing_else() -> None:
    log = EventLog(kinds=frozenset({"dismissed"}))
    log.add([event("a", "shown", position=1), event("b", "clicked"), dismissal("c", "T1")])
    assert [e.type for e in log.events.values()] == ["dismissed"]


def test_a_timestamp_in_the_future_is_stored_as_the_time_received(local_store: BlobStore) -> None:
    future = event("f", "dismissed", timestamp="2999-01-01T00:00:00Z")
    path = store_batch(local_store, [future], NOW)
    stored = Event.model_validate_json(local_store.read(path))
    assert stored.timestamp == NOW  # else the dismissal would never expire


def test_weighted_events_are_learnt_at_retrain_and_never_measured(local_store: BlobStore) -> None:
    """With signals.weights, clicks and enrolments become extra successes of the fit;
    the evaluation counts (its truth) are those of the extract alone."""
    client = published_client(local_store)
    before, _ = metadata_of(local_store, current_version(local_store))
    batch = []
    for employee_id in DATA.users["User-Id"].astype(str)[:30]:
        answer = client.get(f"/recommendations/{employee_id}", params={"n": 3}).json()
        for t in answer["trainings"]:
            for kind in ("shown", "clicked"):
                batch.append(
                    {
                        "key": f"{employee_id}-{t['rank']}-{kind}",
                        "recommendation_id": answer["recommendation_id"],
                        "employee_id": employee_id,
                        "training_id": t["training_id"],
                        "type": kind,
                        "position": t["rank"],
                        "timestamp": datetime.now(UTC).isoformat(),
                    }
                )
    assert client.post("/events", json={"events": batch}).status_code == 202

    learning = small_config(signals={"weights": {"clicked": 0.5}})
    assert retrain(local_store, learning).status == "published"
    after, _ = metadata_of(local_store, current_version(local_store))
    assert after.counts.signals == 90  # 30 employees x 3 clicked, none taken yet
    assert before.counts.signals == 0
    assert after.counts.model_copy(update={"signals": 0}) == before.counts
    assert after.metrics and before.metrics
    assert after.metrics.counts == before.metrics.counts  # the same truth measured
    # Without weights (the default), the same events are not learnt.
    result = retrain(local_store, CONFIG)
    plain, _ = metadata_of(local_store, result.version or "")
    assert plain.counts.signals == 0
