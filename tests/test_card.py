"""The model card: its JSON summary, its self-contained page, and its cheap import."""

from __future__ import annotations

import base64
import copy
import io
import json
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from shared.bundle import metadata_from_json
from shared.card import card_html, card_json
from shared.metadata import ExtractReport, ModelMetadata, unevaluated
from shared.modeling import train_model
from shared.schema import parse_all
from shared.settings import Config
from shared.synthetic import generate

REPO = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FORMAT_1 = Path(__file__).parent / "data" / "format1"  # written by the previous release
SCORERS = ("served", "model", "popularity", "department popularity", "oracle")


def _csv(frame: Any) -> bytes:
    return bytes(frame.to_csv(index=False).encode("utf-8"))


@pytest.fixture(scope="module")
def metadata() -> dict[str, Any]:
    """The metadata of a small model trained on synthetic data (with the oracle)."""
    data = generate(n_users=300, n_trainings=50, n_interactions=3000, seed=1)
    config = Config.from_dict({"model": {"epochs": 4, "num_threads": 1, "no_components": 8}})
    extracts = parse_all(
        io.BytesIO(_csv(data.users)),
        io.BytesIO(_csv(data.trainings)),
        io.BytesIO(_csv(data.taken)),
        config.contract,
    )
    trained = train_model(
        extracts,
        config,
        fingerprints={"users": "a", "trainings": "b", "trainings-taken": "c"},
        oracle=data.oracle.scores,
    )
    # What is stored is JSON: compare with what a reader of model.json gets back.
    meta: dict[str, Any] = json.loads(trained.bundle.to_bytes()[1])
    return meta


class Page(HTMLParser):
    """Collects the tags' attributes and the text of a page."""

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(page)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def of(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for name, attrs in self.tags if name == tag]


def typed(metadata: dict[str, Any]) -> ModelMetadata:
    """A stored model.json, as the card reads it."""
    return ModelMetadata.model_validate(metadata)


def test_card_json_summarises_the_metadata(metadata: dict[str, Any]) -> None:
    card = card_json(typed(metadata))
    assert json.loads(json.dumps(card)) == card  # JSON-ready as it is
    assert card["version"] == metadata["version"]
    assert card["created_at"] == metadata["created_at"]

    metrics = metadata["metrics"]
    assert card["metrics"]["k"] == metrics["k"]
    assert card["metrics"]["counts"] == metrics["counts"]
    rows = {(row["population"], row["scorer"]): row for row in card["metrics"]["rows"]}
    assert len(rows) == sum(len(scorers) for scorers in metrics["results"].values())
    for population, scorers in metrics["results"].items():
        for scorer, values in scorers.items():
            assert {k: rows[population, scorer][k] for k in values} == values
    assert [row["scorer"] for row in card["metrics"]["rows"]][:5] == list(SCORERS)
    assert card["metrics"]["rows"][0]["population"] == "known"
    assert card["metrics"]["repeats"] == 3
    for row in card["metrics"]["rows"]:
        assert row["ci95"] == metrics["intervals"][row["population"]][row["scorer"]]
    # Who serves whom, and why.
    for population, served in card["served"].items():
        assert served["scorer"] == metadata["serving"][population]["scorer"]["name"]
        assert served["note"] == metrics["served"][population]["note"]

    training = metadata["training"]
    assert card["training"]["best_epoch"] == training["best_epoch"]
    assert card["training"]["final_epochs"] == training["final_epochs"]
    assert card["training"]["final_seconds"] == training["final_seconds"]
    assert [(r["epoch"], r["validation_precision"]) for r in card["training"]["curve"]] == [
        (r["epoch"], r["validation_precision"]) for r in training["validation_curve"]
    ]

    spread, stored = card["recommendations"], metadata["recommendations"]
    for key in ("k", "coverage", "gini", "top_decile_share", "popular_decile_share_of_takes"):
        assert spread[key] == stored[key]
    assert "recommended_counts" not in spread  # compact: curves of 51 points instead
    for curve in spread["concentration"].values():
        assert len(curve) == 51
        assert curve[0] == 0.0
        assert curve[-1] == pytest.approx(1.0)
        assert curve == sorted(curve)
    # The 10% most recommended trainings hold top_decile_share of the slots: the curve at 10%.
    assert spread["concentration"]["recommendations"][5] == pytest.approx(
        stored["top_decile_share"], abs=0.01
    )

    assert card["data"]["counts"] == {k: v for k, v in metadata["counts"].items() if v is not None}
    assert card["data"]["fingerprints"] == {"users": "a", "trainings": "b", "trainings-taken": "c"}
    assert [v["kind"] for v in card["data"]["validation"]] == [
        "users",
        "trainings",
        "trainings-taken",
    ]
    for summary, report in zip(card["data"]["validation"], metadata["validation"], strict=True):
        assert summary["rows_kept"] == report["rows_kept"]
        assert summary["problems"] == len(report["problems"])
    assert card["hyperparameters"] == metadata["config"]["model"]
    assert card["hyperparameters"]["no_components"] == 8
    assert card["libraries"] == metadata["libraries"]
    assert card["gate"] is None


def test_card_verdict_names_the_scorer_and_compares_with_the_oracle_and_baselines(
    metadata: dict[str, Any],
) -> None:
    results = metadata["metrics"]["results"]
    known = results["known"]
    share = known["served"]["precision"] / known["oracle"]["precision"]
    times = known["served"]["precision"] / known["popularity"]["precision"]
    verdict = card_json(typed(metadata))["verdict"]
    by = metadata["serving"]["known"]["scorer"]["name"]
    assert verdict[0].startswith(f"Employees with a history are served by {by}: precision@10 is")
    assert f"{share:.0%} of the best achievable (oracle)" in verdict[0]
    assert f"{times:.2f}× the popularity baseline" in verdict[0]  # two decimals: 0.95, not 1.0
    assert verdict[1].startswith("New employees are served by")

    no_oracle = copy.deepcopy(metadata)
    for scorers in no_oracle["metrics"]["results"].values():
        del scorers["oracle"]
    verdict = card_json(typed(no_oracle))["verdict"]
    assert "oracle" not in " ".join(verdict)
    assert f"is {times:.2f}× the popularity baseline" in verdict[0]


def test_a_card_of_an_older_version_reads_its_hybrid_model_as_served() -> None:
    old = metadata_from_json((FORMAT_1 / "model.json").read_bytes())
    assert old.metrics is not None
    known = old.metrics.results["known"]
    times = known["hybrid model"]["precision"] / known["popularity"]["precision"]
    verdict = card_json(old)["verdict"]
    assert verdict[0].startswith("Employees with a history are served by model: precision@10")
    assert f"{times:.2f}× the popularity baseline" in verdict[0]  # two decimals: 0.95, not 1.0
    page = Page(card_html(old))
    assert "Quality gate: rejected" in " ".join(page.text)


def test_card_html_is_a_self_contained_readable_page(metadata: dict[str, Any]) -> None:
    page_text = card_html(typed(metadata))
    page = Page(page_text)
    text = " ".join(page.text)
    assert metadata["version"] in " ".join(page.text[:5])  # in the title
    for population in ("known", "cold-start"):
        assert f"served: {metadata['serving'][population]['scorer']['name']}" in text
        for scorer in SCORERS:
            values = metadata["metrics"]["results"][population][scorer]
            interval = metadata["metrics"]["intervals"][population][scorer]
            assert f"{values['precision']:.1%} ± {interval:.1%}" in text, (population, scorer)
            assert f"{values['ndcg']:.3f}" in text, (population, scorer)
            assert f"{values['auc']:.3f}" in text, (population, scorer)
    for phrase in ("Precision@10", "coin toss", "Gini", "trainings-taken", "no_components"):
        assert phrase in text
    assert str(metadata["counts"]["interactions"]) in text.replace(",", "")

    images = page.of("img")
    assert len(images) == 2  # the validation curve and the spread of recommendations
    for attrs in images:
        src = attrs["src"] or ""
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG_SIGNATURE)
        assert attrs.get("alt")
    links = [attrs[key] or "" for _, attrs in page.tags for key in ("src", "href") if key in attrs]
    assert not [link for link in links if link.startswith(("http:", "https:", "//"))]
    assert "http://" not in page_text and "https://" not in page_text
    assert not page.of("script") and not page.of("link")


def test_card_html_escapes_text_from_the_hr_files(metadata: dict[str, Any]) -> None:
    hostile = "<script>alert(1)</script>"
    meta = copy.deepcopy(metadata)
    meta["version"] = f"v1{hostile}"
    meta["fingerprints"]["users"] = hostile
    meta["validation"][0]["problems"] = [
        {"source": "users.csv", "message": "?", "text": f"line 3: unknown department {hostile}"}
    ]
    meta["validation"][0]["kind"] = hostile
    meta["libraries"][hostile] = hostile
    meta["gate"] = {
        "decision": "rejected",
        "reasons": [f"cold-start: worse than {hostile}"],
        "checks": [f"FAIL: {hostile}"],
        "compared_with": hostile,
        "tolerance": 0.05,
    }
    page = card_html(typed(meta))
    assert "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert not Page(page).of("script")
    assert card_json(typed(meta))["data"]["validation"][0]["examples"] == [
        f"line 3: unknown department {hostile}"
    ]


@pytest.mark.parametrize("decision", ["accepted", "rejected"])
def test_card_html_shows_the_gate_decision(metadata: dict[str, Any], decision: str) -> None:
    meta = {
        **metadata,
        "gate": {
            "decision": decision,
            "reasons": [] if decision == "accepted" else ["known: precision@10 too low"],
            "checks": ["pass: known: precision@10 0.2 vs popularity 0.1"],
            "compared_with": "20261101T000000Z-abcdef",
            "tolerance": 0.05,
        },
    }
    card = card_json(typed(meta))
    assert card["gate"]["decision"] == decision
    page = Page(card_html(typed(meta)))
    assert any(decision in (attrs.get("class") or "") for attrs in page.of("div"))
    text = " ".join(page.text)
    assert f"Quality gate: {decision}" in text
    assert "20261101T000000Z-abcdef" in text and "more than 5%" in text
    if decision == "rejected":
        assert "known: precision@10 too low" in text


def test_card_says_when_the_gate_was_off(metadata: dict[str, Any]) -> None:
    meta = {**metadata, "gate": {"decision": "not checked", "checks": ["gate off: not checked"]}}
    page = Page(card_html(typed(meta)))
    text = " ".join(page.text)
    assert "Quality gate: off (not checked)" in text
    assert "fit to serve" not in text
    assert not any("accepted" in (attrs.get("class") or "") for attrs in page.of("div"))


def test_a_version_without_evaluation_curve_or_spread_still_renders() -> None:
    bare = unevaluated("v-bare", ["level"])  # as published with evaluation off
    card = card_json(bare)
    assert json.loads(json.dumps(card)) == card
    assert card["verdict"] == [] and card["metrics"]["rows"] == [] and card["gate"] is None
    page = card_html(bare)
    Page(page)
    assert page.startswith("<!DOCTYPE html>") and "v-bare" in page
    assert "No evaluation" in page
    assert "<img" not in page


def test_importing_the_card_does_not_import_matplotlib() -> None:
    code = "import sys, shared.card; assert 'matplotlib' not in sys.modules, 'matplotlib loaded'"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


def test_the_card_counts_every_dropped_row_and_lists_every_problem() -> None:
    problems = [
        {"source": "taken.csv", "message": m, "line": n, "text": f"taken.csv, line {n}: {m}"}
        for n, m in [
            (2, "blank identifier: row dropped"),
            (3, "unknown employee: row dropped"),
            (4, "unknown training: row dropped"),
            (5, "weight is not a number: row dropped"),
        ]
    ]
    report = ExtractReport(
        source="taken.csv",
        kind="trainings-taken",
        rows_read=10,
        rows_kept=6,
        problems=problems,
        dropped={
            "identifier blank or refused": 1,
            "unknown employee": 1,
            "unknown training": 1,
            "weight not a number": 1,
        },
    )
    metadata = unevaluated("v1", []).model_copy(update={"validation": [report]})

    [row] = card_json(metadata)["data"]["validation"]
    assert row["rows_read"] == row["rows_kept"] + sum(row["dropped"].values())
    assert len(row["examples"]) == row["problems"] == 4  # all of them, not the first three
    html = card_html(metadata)
    assert "weight is not a number" in html and "unknown training: 1" in html
