"""Smoke runs of every benchmark at tiny sizes, so that they cannot rot.

Timings are never asserted (they are what the benchmarks print, on whatever machine);
what is asserted is that each table prints, with its baseline and its targets, and
that what was computed is right: top-k equal to a brute-force sort, matrices
identical to ``lightfm.data.Dataset``'s, every HTTP answer a 200, nothing heavy
imported by ``function_app``.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from benchmarks import (
    enterprise,
    http,
    impact,
    matrices,
    parse,
    precompute,
    quality,
    retrain,
    startup,
)
from benchmarks.__main__ import NAMES
from benchmarks.__main__ import main as dispatch
from benchmarks.common import Table
from shared.schema import parse_all
from shared.scoring import NO_ITEM
from shared.settings import Config
from shared.synthetic import generate, write_csvs


def printed(table: Table, capsys: pytest.CaptureFixture[str]) -> str:
    table.print()
    out = capsys.readouterr().out
    assert table.title in out
    assert "vs baseline" in out and "peak MiB" in out
    assert out.count("target ") == len(table.targets) >= 1
    return out


def test_precompute_top_k_equals_a_brute_force_sort(capsys: pytest.CaptureFixture[str]) -> None:
    sizes = {
        "users": 700,
        "trainings": 600,  # above the size a row is simply sorted at: blocks are used
        "factors": 8,
        "interactions": 4_000,
        "k": 7,
        "sample": 40,
        "chunk": 128,
    }
    table = precompute.run(sizes)
    out = printed(table, capsys)
    assert "LightFM.predict" in out and "bare U @ V.T" in out and "x faster" in out
    result = table.result
    factors = result["recommender"].factors
    taken = result["recommender"].bundle.taken.toarray() > 0
    scores = (factors.user_vectors @ factors.item_vectors.T).astype(np.float64)
    scores += factors.user_biases[:, None] + factors.item_biases[None, :]
    scores[taken] = -np.inf
    expected = np.argsort(-scores, axis=1, kind="stable")[:, : sizes["k"]]
    expected[np.isneginf(np.take_along_axis(scores, expected, axis=1))] = NO_ITEM
    # float32 products vs this float64 sum: allow the rare swap of two near-equal scores.
    assert np.mean(result["indices"] == expected) > 0.99
    for row in range(sizes["users"]):
        assert not taken[row, result["indices"][row]].any()
    # LightFM sums in its own order: near-equal scores may swap between the two.
    assert np.mean(result["indices"][result["sample"]] == result["baseline_indices"]) > 0.99


@pytest.fixture(scope="module")
def tiny_extracts(tmp_path_factory: pytest.TempPathFactory) -> object:
    folder = tmp_path_factory.mktemp("extracts")
    paths = write_csvs(generate(400, 60, 3_000, seed=3), folder)
    return parse_all(
        io.BytesIO(paths["users"].read_bytes()),
        io.BytesIO(paths["trainings"].read_bytes()),
        io.BytesIO(paths["trainings-taken"].read_bytes()),
        Config().contract,
    )


def test_matrices_are_identical_to_lightfm_dataset(
    tiny_extracts: object, capsys: pytest.CaptureFixture[str]
) -> None:
    table = matrices.run(
        {"users": 400, "trainings": 60, "interactions": 3_000}, extracts=tiny_extracts
    )
    out = printed(table, capsys)
    assert "lightfm Dataset" in out
    assert table.result["checks"] == {
        "interactions": True,
        "weights": True,
        "user features": True,
        "item features": True,
    }


def test_matrices_comparison_notices_a_difference(tiny_extracts: object) -> None:
    from shared.features import build_dataset

    config = Config()
    ours = build_dataset(
        tiny_extracts.users,  # type: ignore[attr-defined]
        tiny_extracts.trainings,  # type: ignore[attr-defined]
        tiny_extracts.taken,  # type: ignore[attr-defined]
        config.contract,
        config.features,
    )
    baseline = matrices.with_lightfm(
        matrices.lightfm_inputs(tiny_extracts, config), config.features
    )
    ours.user_attributes.data[0] *= 2  # one value off
    checks = matrices.compare(ours, baseline)
    assert checks["user features"] is False and checks["interactions"] is True


def test_retrain_accounts_for_the_time_besides_the_fits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = retrain.run(
        {"users": 300, "trainings": 40, "interactions": 2_500}, epochs=2, gate=False, root=tmp_path
    )
    out = printed(table, capsys)
    assert table.result["result"].status == "published"
    assert retrain.BARE_FIT in out and "retrain total" in out and "not attributed" in out
    phases = table.result["phases"].seconds
    assert phases[retrain.BARE_FIT] > 0
    for step in ("read + validate", "build the matrices", "precompute: every employee"):
        assert any(label.startswith(step) for label in phases), step
    # The wrapped functions are restored afterwards.
    from lightfm import LightFM

    assert not hasattr(LightFM.fit_partial, "__wrapped__")


@pytest.fixture(scope="module")
def served_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bench-http")


def test_http_answers_every_request_and_prints_percentiles(
    served_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sizes = {
        **http.SMALL,
        "get_users": 300,
        "get_trainings": 40,
        "get_interactions": 2_500,
        "post_users": 200,
        "post_trainings": 300,
        "post_interactions": 1_500,
        "requests": 150,
        "post_requests": 40,
        "concurrency": 8,
        "rate": 300,
    }
    table = http.run_http(sizes, root=served_root)  # raises if any answer is not a 200
    out = printed(table, capsys)
    assert "p50" in out and "p90" in out and "p99" in out and "req/s" in out
    assert len(table.result["closed"].results) == 150
    assert {r.status for r in table.result["post"].results} == {200}


def test_startup_imports_nothing_heavy_and_answers(
    served_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = startup.run(
        {"users": 300, "trainings": 40, "interactions": 2_500, "runs": 1}, root=served_root
    )
    out = printed(table, capsys)
    assert "import function_app" in out and "importtime" in out
    assert table.result["heavy"] == set()


def test_the_entry_point_lists_every_benchmark(capsys: pytest.CaptureFixture[str]) -> None:
    assert dispatch([]) == 2
    assert dispatch(["nope"]) == 2
    out = capsys.readouterr().out
    for name in NAMES:
        assert name in out


def test_quality_reports_every_regime_population_and_target() -> None:
    sizes = {"users": 500, "trainings": 60, "interactions": 5_000}
    results, text = quality.run(sizes, ("history", "weak"), variants=True)
    assert [r.name for r in results] == ["history", "weak"]
    for regime in results:
        for population in ("known", "cold-start"):
            rows = regime.rows[population]
            expected = {"served", "model", "popularity", "department popularity", "oracle"}
            assert expected | {
                quality.BEFORE,
                quality.REFERENCE,
                quality.PLAIN,
                quality.SQRT,
            } == set(rows)
            for figures in rows.values():
                assert 0 <= figures["precision"][0] <= 1 and figures["precision"][1] >= 0
            assert regime.served[population]
        assert set(regime.fit_seconds) == {
            "served",
            quality.BEFORE,
            quality.REFERENCE,
            quality.PLAIN,
            quality.SQRT,
        }
    assert "history, known: >= 1.3x the attributes-only model" in text
    lines = [line for line in text.splitlines() if line.startswith("target ")]
    assert len(lines) == sum(len(quality.checks(r)) for r in results) >= 9
    assert all(line.endswith(")") and (" MET " in line or " NOT MET " in line) for line in lines)


def test_parse_measures_the_peak_against_the_file_size(capsys: pytest.CaptureFixture[str]) -> None:
    table = parse.run((20_000,))
    out = printed(table, capsys)
    [ratio] = table.result
    assert 0 < ratio < 100
    assert "20,000 rows" in out and "x the file" in out
    assert "target peak <= 4x the file" in out


def test_impact_simulates_two_arms_and_reports_new_trainings_apart() -> None:
    report = impact.simulate({"users": 300, "trainings": 40, "interactions": 3_000})
    scorers = {row["scorer"] for row in report["by_scorer"]}
    assert impact.ARM_BASELINE in scorers and scorers - {impact.ARM_BASELINE}
    shown = sum(row["counts"]["shown"] for row in report["by_scorer"])
    # Each employee shown up to ten (fewer when they took most of the catalog), once each.
    assert 0.9 * 300 * impact.SHOWN <= shown <= 300 * impact.SHOWN
    assert sum(p["shown"] for p in report["by_position"]) == shown
    ages = {a["trainings"]: a["counts"]["shown"] for a in report["by_training_age"]}
    assert ages["new"] > 0 and ages["new"] + ages["established"] == shown
    first, last = report["by_position"][0], report["by_position"][-1]
    assert first["clicked"]["rate"] > last["clicked"]["rate"]  # the position bias is seen
    assert "intervals apart" in impact.verdict(report)[1]


def test_enterprise_measures_every_step_and_states_each_target(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status = enterprise.main(["--users", "3000", "--trainings", "400", "--taken", "40000"])
    out = capsys.readouterr().out
    for figure in ("precompute", "first answer", "GET /recommendations", "POST", "one epoch"):
        assert figure in out
    assert out.count("target ") == 4 and status == (0 if "NOT MET" not in out else 1)
