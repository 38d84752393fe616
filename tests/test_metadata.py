"""A version's metadata as a typed record: what it defaults to, what it refuses."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from shared.bundle import FORMAT_VERSION, metadata_from_json
from shared.errors import ModelLoadError
from shared.evaluation import EvaluationReport, ServedChoice
from shared.metadata import ModelMetadata, Served, unevaluated
from shared.scoring import MODEL, ScorerSpec

POPULARITY = ScorerSpec("popularity", 0.0, 1.0, 0.0)


def written(metadata: ModelMetadata) -> bytes:
    """``model.json`` as a bundle writes it."""
    return metadata.model_copy(update={"format_version": FORMAT_VERSION}).model_dump_json().encode()


def test_a_version_without_a_choice_is_served_by_the_model_everywhere() -> None:
    metadata = unevaluated("v1", ["level"])

    assert metadata.scorers() == {"known": MODEL, "cold-start": MODEL}
    assert metadata.served_by() == {"known": "model", "cold-start": "model"}
    assert metadata.served_precision("known") is None
    assert metadata.config.features.history is False  # described by attributes alone


def test_the_scorer_chosen_for_a_population_serves_it() -> None:
    metadata = unevaluated("v1", ["level"]).model_copy(
        update={"serving": {"cold-start": Served(choice="popularity", scorer=POPULARITY)}}
    )

    assert metadata.scorers() == {"known": MODEL, "cold-start": POPULARITY}
    assert metadata.served_by()["cold-start"] == "popularity"


def test_the_served_precision_is_read_from_the_evaluation() -> None:
    report = EvaluationReport(
        k=10,
        results={"known": {"served": {"precision": 0.25}, "popularity": {"precision": 0.1}}},
        served={"known": ServedChoice(choice="model", scorer=MODEL)},
    )
    metadata = unevaluated("v1", []).model_copy(update={"metrics": report})

    assert metadata.served_precision("known") == 0.25
    assert metadata.served_precision("cold-start") is None


def test_metadata_is_frozen_and_refuses_unknown_fields() -> None:
    metadata = unevaluated("v1", [])
    with pytest.raises(ValidationError):
        metadata.version = "v2"  # type: ignore[misc]
    with pytest.raises(ValidationError, match="surprise"):
        ModelMetadata.model_validate({**metadata.model_dump(), "surprise": 1})


def test_model_json_round_trips_and_a_wrong_field_is_named() -> None:
    metadata = unevaluated("v1", ["level", "provider"]).model_copy(
        update={"serving": {"known": Served(choice="model", scorer=MODEL)}}
    )
    again = metadata_from_json(written(metadata))
    assert again == metadata.model_copy(update={"format_version": FORMAT_VERSION})

    raw = json.loads(written(metadata))
    raw["counts"]["employees"] = "many"
    with pytest.raises(ModelLoadError, match=r"counts\.employees"):
        metadata_from_json(json.dumps(raw).encode())
    raw = json.loads(written(metadata))
    raw["format_version"] = 99
    with pytest.raises(ModelLoadError, match="bundle format 99"):
        metadata_from_json(json.dumps(raw).encode())
