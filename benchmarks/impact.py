"""The impact report of a simulated run: what synthetic employees click, enrol in and
complete, drawn from the oracle (their planted preferences), fed back as events.

``python -m benchmarks impact [--small] [--users N --trainings N --interactions N]``

A world is generated; a tenth of its trainings are held out of the first trainings
extract, the model is trained and published, then the full extract is dropped and
precomputed, so those trainings are new (scored from their attributes, given
``rules.new_share`` of each list). Employees are split at random between two arms:
the served list (``GET /recommendations``) and the most popular trainings they have
not taken (the baseline, with a recommendation id of its own). Each is shown ten
trainings; a training is clicked with a chance that falls with its position and
rises with how much the employee's planted preferences favour it (the oracle's chance
of it being taken next, against the average training); enrolments and completions
follow clicks. The events go through ``POST /events`` and the report is
``GET /model/impact``: per arm the funnel with 95 % intervals, new trainings against
the others, clicks by position.

Printed: the report's table, and the served arm's click rate (its scorers together)
against the baseline's, with whether their intervals are apart. A report, not a target:
the exit status is 0 whenever the run completes.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.common import header, log, parse_sizes

FULL = {"users": 3_000, "trainings": 200, "interactions": 30_000}
SMALL = {"users": 800, "trainings": 80, "interactions": 8_000}
SHOWN = 10
ARM_BASELINE = "popularity"


def click_chance(attraction: np.ndarray, position: np.ndarray) -> np.ndarray:
    """Clicked: a position bias (1st 0.35, 10th 0.11) times attraction / (1 + attraction),
    where attraction 1 is the average training for this employee."""
    return 0.35 / np.sqrt(position) * attraction / (1.0 + attraction)


def simulate(sizes: dict[str, int], seed: int = 0) -> dict[str, Any]:
    """Run the simulation; returns the impact report (JSON) and the arms' sizes."""
    from fastapi.testclient import TestClient

    from shared.api import create_app
    from shared.pipeline import drop_extract, precompute, retrain
    from shared.settings import Config
    from shared.storage import LocalFolderStore
    from shared.synthetic import TEMPERATURE, generate

    data = generate(sizes["users"], sizes["trainings"], sizes["interactions"], seed=seed)
    rng = np.random.default_rng(seed)
    trainings = data.trainings["Training-Id"].astype(str)
    held = set(rng.choice(trainings, size=max(1, len(trainings) // 10), replace=False))
    config = Config.from_dict({"serving": {"refresh_seconds": 0}})
    with tempfile.TemporaryDirectory() as folder:
        store = LocalFolderStore(Path(folder))

        def drop(kind: str, frame: pd.DataFrame) -> None:
            body = frame.to_csv(index=False).encode()
            name = f"{kind}/{kind}.csv"
            assert drop_extract(store, name, body, config).status == "accepted"

        drop("users", data.users)
        drop("trainings", data.trainings[~trainings.isin(held)])
        drop("trainings-taken", data.taken[~data.taken["Training-Id"].isin(held)])
        log("training the model (the held-out tenth of the trainings is not in it)")
        assert retrain(store, config).status == "published"
        drop("trainings", data.trainings)  # the held-out trainings appear: new
        precompute(store, config)
        client = TestClient(create_app(store, config))
        events = _events(client, data, held, rng, TEMPERATURE)
        log(f"posting {len(events):,} events")
        for start in range(0, len(events), 200):
            posted = client.post("/events", json={"events": events[start : start + 200]})
            assert posted.status_code == 202, posted.text
        report: dict[str, Any] = client.get("/model/impact").json()
    return report


def _events(
    client: Any, data: Any, held: set[str], rng: np.random.Generator, temperature: float
) -> list[dict[str, Any]]:
    users = data.users["User-Id"].astype(str).tolist()
    catalog = data.trainings["Training-Id"].astype(str).tolist()
    taken = data.taken.groupby("User-Id")["Training-Id"].agg(set).to_dict()
    popular = data.taken[~data.taken["Training-Id"].isin(held)]["Training-Id"].value_counts()
    stamp = datetime.now(UTC).isoformat()
    out: list[dict[str, Any]] = []
    for employee in users:
        mine = taken.get(employee, set())
        history = np.array([[t in mine for t in catalog]], dtype=np.float64)
        scores = data.oracle.scores([employee], catalog, history)[0] / temperature
        chance = np.exp(scores - scores.max())
        chance[history[0] > 0] = 0.0
        average = chance.mean() or 1.0  # 0 when they took everything
        attraction = dict(zip(catalog, chance / average, strict=True))
        if rng.random() < 0.5:
            answer = client.get(f"/recommendations/{employee}", params={"n": SHOWN}).json()
            rid, shown = (
                answer["recommendation_id"],
                [t["training_id"] for t in answer["trainings"]],
            )
        else:
            shown = [t for t in popular.index if t not in mine][:SHOWN]
            digest = hashlib.blake2b(f"{employee}{shown}".encode(), digest_size=8).hexdigest()
            version = client.get("/model").json()["version"]
            rid = f"{version}.{ARM_BASELINE}.{digest}"
        positions = np.arange(1, len(shown) + 1)
        pull = np.array([attraction[t] for t in shown])
        clicked = rng.random(len(shown)) < click_chance(pull, positions)
        enrolled = clicked & (rng.random(len(shown)) < 0.5 * pull / (1 + pull))
        completed = enrolled & (rng.random(len(shown)) < 0.7)
        for i, training in enumerate(shown):
            for kind, happened in (
                ("shown", True),
                ("clicked", clicked[i]),
                ("enrolled", enrolled[i]),
                ("completed", completed[i]),
            ):
                if happened:
                    out.append(
                        {
                            "key": f"{rid}-{i}-{kind}",
                            "recommendation_id": rid,
                            "employee_id": employee,
                            "training_id": training,
                            "type": kind,
                            "position": i + 1,
                            "timestamp": stamp,
                        }
                    )
    return out


def verdict(report: dict[str, Any]) -> tuple[bool, str]:
    """The served arm (its scorers together) against the baseline: clicked, and whether
    the 95 % intervals are apart."""
    from shared.impact import wilson

    totals = {"served": [0, 0], ARM_BASELINE: [0, 0]}
    for row in report["by_scorer"]:
        arm = totals[ARM_BASELINE if row["scorer"] == ARM_BASELINE else "served"]
        arm[0] += round(row["rates"]["clicked"]["rate"] * row["counts"]["shown"])
        arm[1] += row["counts"]["shown"]
    served, baseline = (wilson(*totals[arm]) for arm in ("served", ARM_BASELINE))
    apart = served.low > baseline.high or served.high < baseline.low
    ratio = served.rate / baseline.rate if baseline.rate else float("inf")
    line = (
        f"served clicked {served.rate:.1%} ({served.low:.1%}-{served.high:.1%}) vs popularity "
        f"{baseline.rate:.1%} ({baseline.low:.1%}-{baseline.high:.1%}): {ratio:.2f}x; "
        f"intervals apart: {'yes' if apart else 'no'}"
    )
    return apart, line


def main(argv: Sequence[str] | None = None) -> int:
    from shared.impact import ImpactReport, impact_table

    sizes = parse_sizes(argv, SMALL, FULL)
    header("impact", ", ".join(f"{k} {v:,}" for k, v in sizes.items()))
    report = simulate(sizes)
    print(impact_table(ImpactReport.model_validate(report)))
    print(verdict(report)[1])
    return 0
