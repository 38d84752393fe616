"""Tuning: bounded, deterministic, never worse than the base, and its TOML reads back."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from shared.appsettings import AppSettings
from shared.errors import ConfigurationError
from shared.features import build_dataset
from shared.modeling import evaluate_candidate
from shared.progress import Recording
from shared.schema import Extracts, parse_all
from shared.settings import Config, load_config
from shared.synthetic import SyntheticData, generate
from shared.tuning import TuningResult, tune, write_config

FAST: dict[str, Any] = {
    "model": {"epochs": 5, "num_threads": 1, "no_components": 8, "patience": 2},
}


def _csv(frame: Any) -> bytes:
    return bytes(frame.to_csv(index=False).encode("utf-8"))


@pytest.fixture(scope="module")
def data() -> SyntheticData:
    return generate(n_users=300, n_trainings=40, n_interactions=3000, seed=1)


@pytest.fixture(scope="module")
def raw(data: SyntheticData) -> Extracts:
    return parse_all(
        io.BytesIO(_csv(data.users)),
        io.BytesIO(_csv(data.trainings)),
        io.BytesIO(_csv(data.taken)),
        Config().contract,
    )


@pytest.fixture(scope="module")
def base() -> Config:
    return Config.from_dict(FAST)


@pytest.fixture(scope="module")
def tuned(raw: Extracts, base: Config) -> TuningResult:
    return tune(raw, base, budget=5, seed=3)


def _figures(result: TuningResult) -> list[tuple[Any, ...]]:
    return [(t.overrides, t.known_precision, t.cold_precision, t.best_epoch) for t in result.trials]


def test_base_first_budget_bounded_and_best_not_worse(tuned: TuningResult, base: Config) -> None:
    first = tuned.trials[0]
    assert first.number == 0 and first.overrides == {}
    assert len(tuned.trials) == 5
    assert [t.number for t in tuned.trials] == list(range(5))
    assert tuned.best.objective >= first.objective
    assert tuned.admissible(tuned.best)
    assert tuned.best_config.model.num_threads == base.model.num_threads  # not searched
    assert all(t.overrides for t in tuned.trials[1:])  # never the base twice
    table = tuned.table()
    assert len([line for line in table.splitlines() if line.startswith("*")]) == 1
    assert tuned.to_dict()["best"] == tuned.best.number


def test_a_change_is_taken_only_when_it_wins_beyond_the_noise(tuned: TuningResult) -> None:
    for trial in tuned.trials[1:]:
        assert trial.gain_ci95 >= 0  # every gain is measured with its interval
        if trial.gain_ci95 == 0:  # only when both serve the same baselines: the same lists
            assert trial.gain == 0
            assert set(trial.served_by.values()) <= {"popularity", "department popularity"}
        assert trial.taken == (trial.gain > trial.gain_ci95 and tuned.admissible(trial)), trial
    assert tuned.best is tuned.trials[0] or tuned.best.taken


def test_budget_one_is_the_base(raw: Extracts, base: Config) -> None:
    recording = Recording()
    result = tune(raw, base, budget=1, progress=recording)
    assert len(result.trials) == 1
    assert result.best is result.trials[0] and result.best_config == base
    tuning = [e for e in recording.events if e.path == ("tune",)]
    assert [e.kind for e in tuning] == ["start", "advance", "end"]
    objective = result.trials[0].objective
    assert tuning[1].note == f"trial 0: {objective:.4f}, best so far {objective:.4f}"
    assert tuning[-1].done == tuning[-1].total == 1
    # each trial's evaluation and fits are told inside it
    assert ("tune", "evaluate", "fit") in {e.path for e in recording.events}
    with pytest.raises(ValueError, match="budget"):
        tune(raw, base, budget=0)


def test_deterministic_for_a_seed(raw: Extracts, base: Config, tuned: TuningResult) -> None:
    again = tune(raw, base, budget=5, seed=3)
    assert _figures(again) == _figures(tuned)
    assert again.best_config == tuned.best_config


def test_base_trial_is_what_evaluate_reports(data: SyntheticData) -> None:
    config = Config.from_dict({**FAST, "contract": {"taken": {"min_weight": 3}}})
    extracts = parse_all(
        io.BytesIO(_csv(data.users)),
        io.BytesIO(_csv(data.trainings)),
        io.BytesIO(_csv(data.taken)),
        config.contract,
    )
    dataset = build_dataset(
        extracts.users, extracts.trainings, extracts.taken, config.contract, config.features
    )
    evaluation = evaluate_candidate(dataset, config)
    first = tune(extracts, config, budget=1).trials[0]
    results = evaluation.report.results
    assert first.known_precision == pytest.approx(results["known"]["served"]["precision"])
    assert first.cold_precision == pytest.approx(results["cold-start"]["served"]["precision"])
    assert first.best_epoch == sorted(f.best_epoch for f in evaluation.fits)[1]  # the median
    assert first.served_by == {p: evaluation.report.served_name(p) for p in results}


def test_what_counts_as_a_success_is_not_searched(tuned: TuningResult) -> None:
    assert "contract.taken.min_weight" not in tuned.space
    assert all(not name.startswith("evaluation.") for name in tuned.space)


def test_written_config_is_what_retrain_reads(tuned: TuningResult, tmp_path: Path) -> None:
    path = tmp_path / "tuned" / "config.toml"
    write_config(tuned.best_config, path, header=tuned.summary())
    assert load_config(path) == tuned.best_config
    assert AppSettings.from_environ({"TR_CONFIG": str(path)}).config() == tuned.best_config
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# Tuned by shared.tuning on ")
    assert f"objective {tuned.best.objective:.4f}" in text


@pytest.mark.parametrize(
    "sections",
    [
        {},
        {
            "contract": {
                "users": {
                    "id": "emp",
                    "features": ["ou", "skills", "los"],
                    "multi_valued": ["skills"],
                    "bands": {"los": [2, 5.5, 10]},
                },
                "taken": {"min_weight": 3.5, "date": "when"},
            },
            "model": {"loss": "warp-kos", "learning_rate": 0.025, "epochs": 120},
            "features": {"user_identity": True, "normalize": False},
        },
    ],
)
def test_write_config_round_trip(sections: dict[str, Any], tmp_path: Path) -> None:
    config = Config.from_dict(sections)
    path = tmp_path / "config.toml"
    write_config(config, path, header="first line\n\nthird line")
    assert load_config(path) == config
    assert path.read_text(encoding="utf-8").startswith("# first line\n#\n# third line\n\n")


def test_write_config_refuses_what_toml_cannot_say(tmp_path: Path) -> None:
    config = Config.from_dict({"contract": {"taken": {"weight": None}}})
    with pytest.raises(ConfigurationError, match=r"contract\.taken\.weight"):
        write_config(config, tmp_path / "config.toml")


def test_custom_columns_without_weight(data: SyntheticData) -> None:
    users = data.users.rename(
        columns={"User-Id": "Personnel No", "ou": "Department", "skills": "Skill Set"}
    )
    trainings = data.trainings.rename(columns={"Training-Id": "Course", "category": "Area"})
    taken = data.taken.drop(columns=["rating"]).rename(
        columns={"User-Id": "Personnel No", "Training-Id": "Course", "date": "Completed"}
    )
    config = Config.from_dict(
        {
            **FAST,
            "contract": {
                "users": {
                    "id": "Personnel No",
                    "features": ["Department", "Skill Set", "language", "grade"],
                    "multi_valued": ["Skill Set"],
                },
                "trainings": {
                    "id": "Course",
                    "title": "Training Title",
                    "features": ["main skill", "Area", "level"],
                },
                "taken": {"user_id": "Personnel No", "training_id": "Course", "date": "Completed"},
                "department": "Department",
            },
        }
    )
    extracts = parse_all(
        io.BytesIO(_csv(users)),
        io.BytesIO(_csv(trainings)),
        io.BytesIO(_csv(taken)),
        config.contract,
    )
    result = tune(extracts, config, budget=3, seed=1)
    assert len(result.trials) == 3
    assert result.trials[0].known_precision > 0 and result.trials[0].cold_precision > 0
    assert result.best_config.contract == config.contract
