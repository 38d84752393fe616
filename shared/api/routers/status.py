"""What is serving: versions, their age, who is served by what, the model card."""

from __future__ import annotations

import re
import time
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, Response
from pydantic import BeforeValidator

from shared.api.dependencies import Cache, CurrentSnapshot, Settings, State
from shared.api.http import cached, problem_response, retry_after
from shared.api.schemas import CACHED_GET, AttributesSchema, Health, RetrainJob, attributes_schema
from shared.errors import NoModelError
from shared.impact import ImpactReport, impact_since
from shared.serving import contract_of

router = APIRouter(tags=["status"])
IMPACT_DAYS = 30  # the impact report's default window


def _day_text(value: object) -> object:
    # A day as YYYY-MM-DD, nothing else (pydantic alone would read "0" as 1970-01-01).
    if not (isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value)):
        raise ValueError("expected a day as YYYY-MM-DD")
    return value


Day = Annotated[date, BeforeValidator(_day_text)]


def _age(timestamp: Any) -> float | None:
    try:
        return round(time.time() - datetime.fromisoformat(str(timestamp)).timestamp(), 1)
    except ValueError:
        return None


@router.get("/health", response_model=Health)
def health(request: Request, cache: Cache, response: Response) -> Any:
    """Serving versions and their age; 503 (with Retry-After) while there is nothing to
    serve. Never cached."""
    response.headers["Cache-Control"] = "no-store"
    try:
        snap = cache.current()
    except NoModelError as exc:
        headers = {**retry_after(request), "Cache-Control": "no-store"}
        return problem_response(503, f"unavailable: {exc}", headers=headers)
    warning = cache.impact.warning if cache.impact else None
    job = cache.retrain_job
    job_failed = bool(job and job.get("status") in ("Failed", "Canceled"))
    return {
        "status": "degraded" if cache.last_error or warning or job_failed else "ok",
        "versions": snap.versions,
        "scorers": {"known": snap.scorers["known"], "new": snap.scorers["cold-start"]},
        "model_age_seconds": _age(snap.bundle.metadata.created_at),
        "recommendations_age_seconds": _age(snap.pointer.get("created_at")),
        "last_error": cache.last_error,
        "impact_warning": warning,
        "retrain_job": {k: job[k] for k in RetrainJob.model_fields if k in job} if job else None,
    }


@router.get("/model", responses=CACHED_GET)
def model(request: Request, config: Settings, snap: CurrentSnapshot) -> Response:
    """The serving model's card: gate, metrics against the baselines, training curve,
    spread over the catalog, data counts and fingerprints, hyperparameters; plus the
    raw evaluation report and configuration."""
    from shared.card import card_json

    metadata = snap.bundle.metadata
    payload = {
        **card_json(metadata),
        "evaluation": metadata.metrics.to_dict() if metadata.metrics else None,
        "config": metadata.config.to_dict(),
        **snap.versions,
    }
    body = JSONResponse(jsonable_encoder(payload)).body
    return cached(request, bytes(body), config.serving.refresh_seconds)


@router.get("/model/schema", response_model=AttributesSchema, responses=CACHED_GET)
def model_schema(request: Request, config: Settings, snap: CurrentSnapshot) -> Response:
    """The employee attributes the serving model reads (POST /recommendations and
    POST /rank by attributes): their names and value types, as a JSON Schema. Any other
    name is refused with a 422."""
    answer = AttributesSchema.model_validate(
        {**snap.versions, "attributes": attributes_schema(contract_of(snap).users)}
    )
    return cached(request, answer.model_dump_json().encode(), config.serving.refresh_seconds)


@router.get("/model/impact", response_model=ImpactReport, responses=CACHED_GET)
async def model_impact(
    request: Request,
    state: State,
    since: Annotated[
        Day | None, Query(description=f"from that day on (default: the last {IMPACT_DAYS} days)")
    ] = None,
) -> Response:
    """What people did with the recommendations, from the feedback events (POST /events):
    per model version and scorer, the share of recommendations shown that were clicked,
    enrolled in and completed (95 % intervals), clicks by list position, and new
    trainings (within rules.new_days of first appearing) against the others. Read from
    storage on each request (a report, not a hot path); /health shows the warning of
    the last one."""
    start = since or datetime.now(UTC).date() - timedelta(days=IMPACT_DAYS)
    config = state.settings()
    report = await run_in_threadpool(impact_since, state.blob_store(), start, config.rules.new_days)
    state.cache().impact = report
    refresh = config.serving.refresh_seconds
    return cached(request, report.model_dump_json().encode(), refresh)
