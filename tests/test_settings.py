"""Configuration: defaults, TOML overrides, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.appsettings import AppSettings
from shared.errors import ConfigurationError
from shared.settings import Config, load_config

REPO = Path(__file__).resolve().parents[1]


def test_defaults_match_the_hr_exports_of_today() -> None:
    config = load_config()
    assert config.contract.users.id == "User-Id"
    assert config.contract.trainings.title == "Training Title"
    assert config.model.loss == "warp"
    assert "gender" not in config.contract.users.features  # sensitive: never by default


def test_the_example_file_in_the_repository_loads() -> None:
    config = load_config(REPO / "config.example.toml")
    assert config.contract.users.bands == {"los": (2.0, 5.0, 10.0)}
    assert config.contract.taken.min_weight == 4
    assert config.rules.max_per_value == {"provider": 4}


def test_tr_config_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[model]\nno_components = 8\n")
    assert AppSettings.from_environ({"TR_CONFIG": str(path)}).config().model.no_components == 8
    # The adapters read the environment; the configuration module never does.
    assert load_config().model.no_components == Config().model.no_components


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[model]\nno_components = 0\n", "model.no_components"),
        ("[model]\nnum_treads = 2\n", "model.num_treads: Extra inputs are not permitted"),
        ("[model\n", "c.toml"),
        (
            '[contract.users]\nid = "Id"\nfeatures = ["ou"]\nmulti_valued = ["skills"]\n',
            "'skills' is configured but is not in features",
        ),
        (
            '[contract.users]\nid = "Id"\nfeatures = ["los"]\nbands = { los = [5, 2] }\n',
            "must be increasing",
        ),
    ],
)
def test_a_bad_file_is_an_error_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigurationError, match=message):
        load_config(path)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


def test_an_older_file_naming_user_identity_still_loads_and_says_it_is_unused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Every file `tune` wrote names it; the history features replaced it.
    path = tmp_path / "c.toml"
    path.write_text("[features]\nuser_identity = true\n")
    config = load_config(path)
    assert config.features.history
    assert "features.user_identity is no longer used" in caplog.text


def test_config_round_trips_through_json() -> None:
    config = Config()
    assert Config.from_dict(config.to_dict()) == config


def test_the_readme_shows_the_example_file() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = readme.split("```toml\n", 1)[1].split("```", 1)[0]
    example = (REPO / "config.example.toml").read_text(encoding="utf-8")
    assert block == example[example.index("[contract]") :]


# One key changed per section: (path to the section, key, value).
PARTIAL_SECTIONS = [
    (("contract", "users"), "id", "Employee-Id"),
    (("contract", "trainings"), "features", ["main skill", "level"]),
    (("contract", "taken"), "min_weight", 4),
    (("contract", "limits"), "max_rows", 1000),
    (("contract", "checks"), "min_matched_rows", 0.5),
    (("contract",), "value_delimiter", ","),
    (("features",), "item_identity", False),
    (("model",), "epochs", 7),
    (("evaluation",), "k", 5),
    (("gate",), "tolerance", 0.1),
    (("serving",), "top_k", 5),
    (("rules",), "pinned", ["T1"]),
]


@pytest.mark.parametrize(("path", "key", "value"), PARTIAL_SECTIONS)
def test_a_section_that_names_one_key_keeps_the_defaults_of_the_others(
    tmp_path: Path, path: tuple[str, ...], key: str, value: object
) -> None:
    toml = f"[{'.'.join(path)}]\n{key} = {json_as_toml(value)}\n"
    (tmp_path / "partial.toml").write_text(toml)

    loaded = load_config(tmp_path / "partial.toml").model_dump(mode="json")
    expected = Config().model_dump(mode="json")
    section_loaded, section_expected = loaded, expected
    for name in path:
        section_loaded, section_expected = section_loaded[name], section_expected[name]
    section_expected[key] = value

    assert section_loaded == section_expected
    assert loaded == expected  # and nothing else moved


def json_as_toml(value: object) -> str:
    return json.dumps(value)  # numbers, booleans, strings and string lists read alike


def test_an_employees_section_with_its_own_features_keeps_the_defaults_it_still_names() -> None:
    config = Config.from_dict(
        {"contract": {"users": {"id": "emp", "features": ["ou", "skills", "site"]}}}
    )
    users = config.contract.users
    assert users.multi_valued == ("skills",)  # still split on ";", not one value per cell
    assert users.features == ("ou", "skills", "site")
    assert config.contract.trainings.title == "Training Title"  # other sections untouched
