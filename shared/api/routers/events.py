"""Feedback events from intranet apps: what people did with their recommendations."""

from __future__ import annotations

import logging

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from shared.api.dependencies import State
from shared.errors import StorageUnavailableError
from shared.events import EventBatch, store_batch

router = APIRouter(tags=["feedback"])
log = logging.getLogger(__name__)


class Accepted(BaseModel):
    accepted: int = Field(description="events stored (an event sent again counts once)")


@router.post("/events", status_code=202, response_model=Accepted)
async def post_events(body: EventBatch, state: State) -> Accepted:
    """Store a batch of feedback events (shown, clicked, enrolled, completed,
    dismissed), durably, before answering. Sending the same batch again (after a
    timeout or a 503) is safe: it is stored once, and an event is counted once by its
    key. A dismissed training is left out of that employee's answers for
    `rules.dismissed_days` days. A 503 means nothing was kept: send the batch again."""
    try:
        await run_in_threadpool(store_batch, state.blob_store(), body.events)
    except Exception as exc:
        log.error("feedback events not stored: %s: %s", type(exc).__name__, exc)
        raise StorageUnavailableError(
            "the events could not be stored, none was kept: send the batch again"
        ) from exc
    return Accepted(accepted=len({event.key for event in body.events}))
