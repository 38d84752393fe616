"""Feedback events: what people did with the trainings they were recommended.

An intranet app posts them in batches (``POST /events``): shown, clicked, enrolled,
completed, dismissed, each with the ``recommendation_id`` of the answer it came from,
the list position and an idempotency key. A batch is stored as one blob,
``events/<received date>/<digest>.jsonl``, named by the digest of its content: a
batch sent again (a client retrying after a timeout or a 503) lands on the same blob
instead of a second one. An event sent in two different batches is read once (its
key). Nothing is acknowledged before the blob is written.

Readers (the dismissal rule of the serving cache, the impact report) read the blobs
of the days they need, once each (:class:`EventLog`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field

from shared.ids import Id, whole_number
from shared.storage import BlobStore

EVENTS = "events/"
EventType = Literal["shown", "clicked", "enrolled", "completed", "dismissed"]
FUNNEL: tuple[EventType, ...] = ("shown", "clicked", "enrolled", "completed")
MAX_BATCH = 200  # events per POST: typical ones fit serving.max_body_bytes (64 KiB)


log = logging.getLogger(__name__)
CLOCK_SKEW = timedelta(minutes=5)  # how far ahead of ours a client's clock may be


def _text_only(value: Any) -> Any:
    # Lax parsing of the timestamp alone (the model is strict), but from text only: a
    # number is no RFC 3339 date-time, whatever pydantic would make of it.
    if not isinstance(value, str):
        raise ValueError("expected an RFC 3339 date-time, e.g. 2026-12-03T09:15:00Z")
    return value


Timestamp = Annotated[AwareDatetime, BeforeValidator(_text_only), Field(strict=False)]


# Constraints before the conversion: after it, pydantic leaves them out of the schema.
Position = Annotated[int, Field(ge=1, le=1000), BeforeValidator(whole_number)]


class Event(BaseModel):
    """One thing one employee did with one recommended training."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {
                    "key": "c0ffee-1",
                    "recommendation_id": "20261203T072826Z-357bd5-33a8.model.1f2e3d4c5b6a",
                    "employee_id": "000123",
                    "training_id": "T00042",
                    "type": "clicked",
                    "position": 2,
                    "timestamp": "2026-12-03T09:15:00Z",
                }
            ]
        },
    )

    key: Id = Field(
        description="idempotency key, unique per employee (a UUID is safest): the same "
        "event sent twice counts once"
    )
    recommendation_id: str | None = Field(
        None,
        max_length=200,
        pattern=r"^[A-Za-z0-9_+\-]+\.[A-Za-z0-9_+\-]+\.[0-9a-f]+$",
        description="the answer the training was in (every answer carries one)",
    )
    employee_id: Id
    training_id: Id
    type: EventType
    position: Position | None = Field(None, description="1 for the list's first")
    timestamp: Timestamp


class EventBatch(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    events: list[Event] = Field(min_length=1, max_length=MAX_BATCH)


def batch_blob(events: Sequence[Event], received: date) -> tuple[str, bytes]:
    """Where a batch is stored and what is written: one JSON line per event, in key
    order, named by the digest of those lines (the same batch, the same blob)."""
    lines = sorted(event.model_dump_json() for event in events)
    data = ("\n".join(lines) + "\n").encode()
    digest = hashlib.blake2b(data, digest_size=16).hexdigest()
    return f"{EVENTS}{received.isoformat()}/{digest}.jsonl", data


def store_batch(store: BlobStore, events: Sequence[Event], now: datetime | None = None) -> str:
    """Write a batch durably (raises when storage fails: the client retries); its path.

    A timestamp ahead of ours (beyond a clock's skew) is stored as the time received:
    a date in the future would keep a dismissal in force for ever.
    """
    now = now or datetime.now(UTC)
    latest = now + CLOCK_SKEW
    events = [
        e if e.timestamp <= latest else e.model_copy(update={"timestamp": now}) for e in events
    ]
    path, data = batch_blob(events, now.date())
    store.write(path, data, content_type="application/x-ndjson")
    return path


@dataclass
class EventLog:
    """The events of the stored batches (of the ``kinds`` kept), each blob read once,
    each event once: by the employee and the key (two apps may both count keys from
    1), the earliest kept."""

    kinds: frozenset[str] | None = None  # None: every kind
    events: dict[tuple[str, str], Event] = field(default_factory=dict)
    read: set[str] = field(default_factory=set)
    read_through: date | None = None  # every batch up to this day was read

    def update(self, store: BlobStore, since: date) -> int:
        """Read the batches received on ``since`` or later not read yet; how many.

        Once a read went through, only the days since then are listed (a window of a
        few days lists those days, a longer one every batch); a blob that cannot be
        read as events is logged and skipped, never read again.
        """
        today = datetime.now(UTC).date()
        start = (
            max(since, min(self.read_through, today - timedelta(days=1)))
            if self.read_through
            else since
        )
        if (today - start).days <= 2:
            days = [start + timedelta(days=d) for d in range((today - start).days + 1)]
            listed = [b for day in days for b in store.list(f"{EVENTS}{day.isoformat()}/")]
        else:
            listed = store.list(EVENTS)
        fresh = [b.path for b in listed if b.path not in self.read and _day(b.path) >= start]
        for path in fresh:
            try:
                events = [Event.model_validate_json(line) for line in store.read(path).splitlines()]
            except ValueError as exc:
                log.error("%s: not a batch of events, skipped: %s", path, exc)
                events = []
            self.add(events)
            self.read.add(path)
        self.read_through = today
        return len(fresh)

    def add(self, events: Iterable[Event]) -> None:
        for event in events:
            if self.kinds is not None and event.type not in self.kinds:
                continue
            key = (event.employee_id, event.key)
            known = self.events.get(key)
            if known is None or event.timestamp < known.timestamp:
                self.events[key] = event

    def forget_before(self, moment: datetime) -> None:
        """Drop the events older than ``moment`` (a window that moved on)."""
        self.events = {k: e for k, e in self.events.items() if e.timestamp >= moment}


def _day(path: str) -> date:
    try:
        return date.fromisoformat(path.removeprefix(EVENTS).split("/", 1)[0])
    except ValueError:  # not a batch of ours: never read
        return date.min


def dismissals(events: Iterable[Event], now: datetime, days: int) -> dict[str, set[str]]:
    """Employee -> trainings they dismissed within the last ``days`` days."""
    since = now - timedelta(days=days)
    out: dict[str, set[str]] = {}
    for event in events:
        if event.type == "dismissed" and event.timestamp >= since:
            out.setdefault(event.employee_id, set()).add(event.training_id)
    return out


def signals(events: Iterable[Event], weights: Mapping[str, float]) -> dict[tuple[str, str], float]:
    """(employee, training) -> the highest weight among its events of a weighted type
    (the retrain's extra successes, see ``signals`` in the settings)."""
    out: dict[tuple[str, str], float] = {}
    for event in events:
        weight = weights.get(event.type)
        if weight:
            pair = (event.employee_id, event.training_id)
            out[pair] = max(out.get(pair, 0.0), weight)
    return out


def recent_signals(
    store: BlobStore, weights: Mapping[str, float], days: int
) -> dict[tuple[str, str], float]:
    """The signals of the events received within ``days`` days (none without weights)."""
    if not weights:
        return {}
    kept = EventLog(kinds=frozenset(weights))
    kept.update(store, datetime.now(UTC).date() - timedelta(days=days))
    return signals(kept.events.values(), weights)
