"""Trainings close to a training."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from shared.api.dependencies import CurrentSnapshot, Settings, check_n
from shared.api.http import cached
from shared.api.routers.recommendations import query_filters
from shared.api.schemas import CACHED_GET, FilterQuery, SimilarTrainings
from shared.ids import ID_DESCRIPTION, ID_PATTERN, MAX_ID_LENGTH
from shared.serving import similar_trainings

router = APIRouter(tags=["trainings"])


@router.get(
    "/trainings/{training_id}/similar", response_model=SimilarTrainings, responses=CACHED_GET
)
def get_similar(
    request: Request,
    training_id: Annotated[
        str,
        Path(
            min_length=1,
            max_length=MAX_ID_LENGTH,
            pattern=ID_PATTERN,
            description=f"the training's id: {ID_DESCRIPTION}",
        ),
    ],
    config: Settings,
    snap: CurrentSnapshot,
    n: Annotated[int, Query(ge=1)] = 10,
    filter: FilterQuery = (),
) -> Response:
    """Trainings closest to a training in the model's space; a new one gets neighbours too."""
    check_n(n, config)
    answer = similar_trainings(snap, training_id, n, filters=query_filters(filter))
    return cached(request, answer.model_dump_json().encode(), config.serving.refresh_seconds)
