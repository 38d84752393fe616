"""What is serving: versions, their age, who is served by what, the model card."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from shared.api.dependencies import Cache, CurrentSnapshot
from shared.api.schemas import Health
from shared.errors import NoModelError

router = APIRouter(tags=["status"])


def _age(timestamp: Any) -> float | None:
    try:
        return round(time.time() - datetime.fromisoformat(str(timestamp)).timestamp(), 1)
    except ValueError:
        return None


@router.get("/health", response_model=Health)
def health(cache: Cache) -> Any:
    """Serving versions and their age; 503 while there is nothing to serve."""
    try:
        snap = cache.current()
    except NoModelError as exc:
        return JSONResponse({"status": "unavailable", "last_error": str(exc)}, status_code=503)
    return {
        "status": "degraded" if cache.last_error else "ok",
        "versions": snap.versions,
        "scorers": {"known": snap.scorers["known"], "new": snap.scorers["cold-start"]},
        "model_age_seconds": _age(snap.bundle.metadata.created_at),
        "recommendations_age_seconds": _age(snap.pointer.get("created_at")),
        "last_error": cache.last_error,
    }


@router.get("/model")
def model(snap: CurrentSnapshot) -> dict[str, Any]:
    """The serving model's card: gate, metrics against the baselines, training curve,
    spread over the catalog, data counts and fingerprints, hyperparameters; plus the
    raw evaluation report and configuration."""
    from shared.card import card_json

    metadata = snap.bundle.metadata
    return {
        **card_json(metadata),
        "evaluation": metadata.metrics.to_dict() if metadata.metrics else None,
        "config": metadata.config.to_dict(),
        **snap.versions,
    }
