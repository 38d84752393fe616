"""Trainings close to a training."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from shared.api.dependencies import CurrentSnapshot, Settings, check_n
from shared.api.routers.recommendations import query_filters
from shared.api.schemas import FilterQuery, SimilarTrainings
from shared.ids import ID_DESCRIPTION, ID_PATTERN, MAX_ID_LENGTH
from shared.serving import similar_trainings

router = APIRouter(tags=["trainings"])


@router.get("/trainings/{training_id}/similar", response_model=SimilarTrainings)
def get_similar(
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
) -> SimilarTrainings:
    """Trainings closest to a training in the model's space; a new one gets neighbours too."""
    check_n(n, config)
    return similar_trainings(snap, training_id, n, filters=query_filters(filter))
