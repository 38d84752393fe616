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
from collections.abc import Iterable, Sequence
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

    key: Id = Field(description="idempotency key: the same event sent twice counts once")
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
    """Write a batch durably (raises when storage fails: the client retries); its path."""
    path, data = batch_blob(events, (now or datetime.now(UTC)).date())
    store.write(path, data, content_type="application/x-ndjson")
    return path


@dataclass
class EventLog:
    """The events of the stored batches, each blob read once, each key kept once (the
    earliest)."""

    events: dict[str, Event] = field(default_factory=dict)
    read: set[str] = field(default_factory=set)

    def update(self, store: BlobStore, since: date) -> int:
        """Read the batches received on ``since`` or later not read yet; how many.

        A window of a few days lists those days only; a longer one, every batch.
        """
        today = datetime.now(UTC).date()
        if (today - since).days <= 2:
            days = [since + timedelta(days=d) for d in range((today - since).days + 1)]
            listed = [b for day in days for b in store.list(f"{EVENTS}{day.isoformat()}/")]
        else:
            listed = store.list(EVENTS)
        fresh = [b.path for b in listed if b.path not in self.read and _day(b.path) >= since]
        for path in fresh:
            self.add(Event.model_validate_json(line) for line in store.read(path).splitlines())
            self.read.add(path)
        return len(fresh)

    def add(self, events: Iterable[Event]) -> None:
        for event in events:
            known = self.events.get(event.key)
            if known is None or event.timestamp < known.timestamp:
                self.events[event.key] = event


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
