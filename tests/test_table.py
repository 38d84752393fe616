"""The precomputed table: every employee's candidates, its bytes, the CSV export."""

from __future__ import annotations

import io

import numpy as np
import pytest
from world import csv_bytes, small_config, small_data

from shared.bundle import ModelBundle
from shared.errors import ModelLoadError
from shared.modeling import train_model
from shared.rules import Rules
from shared.schema import Extracts, parse_all
from shared.scoring import NO_ITEM, Recommender
from shared.table import RecommendationTable, answer_for_row, compute_recommendations

CONFIG = small_config(serving={"depth": 12})  # fewer candidates than the catalog (60)
DATA = small_data()


@pytest.fixture(scope="module")
def world() -> tuple[ModelBundle, Extracts]:
    extracts = parse_all(
        io.BytesIO(csv_bytes(DATA.users)),
        io.BytesIO(csv_bytes(DATA.trainings)),
        io.BytesIO(csv_bytes(DATA.taken)),
        CONFIG.contract,
    )
    trained = train_model(extracts, CONFIG, fingerprints={}, evaluate=False)
    return trained.bundle, extracts


def test_every_employee_gets_candidates_they_never_took(
    world: tuple[ModelBundle, Extracts],
) -> None:
    bundle, extracts = world
    table, csv_export = compute_recommendations(bundle, extracts, CONFIG)
    export = csv_export.frame()

    assert list(table.user_ids) == list(extracts.users["id"])
    assert table.items.shape == (
        len(table.user_ids),
        max(CONFIG.serving.depth, CONFIG.serving.top_k),
    )
    taken = {
        (str(u), str(t))
        for u, t in zip(DATA.taken["User-Id"], DATA.taken["Training-Id"], strict=True)
    }
    offered = {
        (str(table.user_ids[row]), str(bundle.item_ids[item]))
        for row, items in enumerate(table.items)
        for item in items
        if item != NO_ITEM
    }
    assert not offered & taken
    took_something = set(DATA.taken["User-Id"].astype(str))
    assert {str(u) for u in table.user_ids[table.from_history]} == took_something & set(
        table.user_ids
    )
    # The export: the top_k of each employee, ranks from 1.
    assert export.groupby("employee_id")["rank"].max().max() == CONFIG.serving.top_k
    assert set(export.columns) == {"employee_id", "rank", "training_id", "title", "score"}


def test_the_table_survives_its_bytes_and_refuses_damaged_ones(
    world: tuple[ModelBundle, Extracts],
) -> None:
    bundle, extracts = world
    table, _ = compute_recommendations(bundle, extracts, CONFIG)
    data = table.to_bytes()

    again = RecommendationTable.from_bytes(data, b"{}")

    for name in ("user_ids", "items", "scores", "from_history", "active"):
        np.testing.assert_array_equal(getattr(again, name), getattr(table, name))
    assert (again.taken != table.taken).nnz == 0
    with pytest.raises(ModelLoadError, match="recommendation table cannot be read"):
        RecommendationTable.from_bytes(data[: len(data) // 2], b"{}")


def test_an_answer_is_the_precomputed_head_unless_rules_or_filters_need_more(
    world: tuple[ModelBundle, Extracts],
) -> None:
    bundle, extracts = world
    table, _ = compute_recommendations(bundle, extracts, CONFIG)
    recommender = Recommender(bundle)
    rules = Rules.compile(bundle, table.active, CONFIG.rules)
    row = int(np.flatnonzero(table.from_history)[0])

    plain = answer_for_row(table, recommender, rules, row, 5)
    assert [item for item, _, _ in plain] == table.items[row, :5].tolist()

    # A filter that only the last trainings of the catalog pass: beyond the precomputed
    # candidates, so the whole catalog is ranked for this one employee.
    allowed = np.zeros(len(bundle.item_ids), dtype=bool)
    outside = np.setdiff1d(np.arange(len(allowed)), table.items[row])
    outside = np.setdiff1d(outside, table.taken[row].indices)
    assert len(outside) >= 3
    allowed[outside] = True
    filtered = answer_for_row(table, recommender, rules, row, 3, allowed)
    assert len(filtered) == 3
    assert {item for item, _, _ in filtered} <= set(outside.tolist())
