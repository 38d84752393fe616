"""The app settings: the environment read once by each adapter, then passed down."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.appsettings import AppSettings
from shared.storage import AzureBlobStore, LocalFolderStore


def test_the_settings_are_a_snapshot_of_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for suffix in ("", "__serviceUri", "__blobServiceUri", "__accountName"):
        monkeypatch.delenv(f"AzureWebJobsStorage{suffix}", raising=False)
    before = AppSettings.from_environ()
    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    after = AppSettings.from_environ()
    # A snapshot: what was read stays what it was.
    assert isinstance(before.store("AzureWebJobsStorage", tmp_path), LocalFolderStore)
    assert isinstance(after.store("AzureWebJobsStorage", tmp_path), AzureBlobStore)


def test_the_named_settings_and_blank_ones() -> None:
    settings = AppSettings.from_environ(
        {"TR_CONFIG": "tuned.toml", "TR_LOCAL_STORE": "", "TR_CONNECTION_STRING": "x=y"}
    )
    assert settings.config_file == "tuned.toml"
    assert settings.local_store is None  # blank is unset
    assert settings.connection_string == "x=y"


def test_the_configuration_file_comes_from_the_settings_unless_given(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[model]\nno_components = 8\n")
    settings = AppSettings.from_environ({"TR_CONFIG": str(path)})
    assert settings.config().model.no_components == 8
    assert AppSettings.from_environ({}).config().model.no_components != 8
    other = tmp_path / "other.toml"
    other.write_text("[model]\nno_components = 12\n")
    assert settings.config(other).model.no_components == 12


def test_without_azure_ml_settings_the_registrar_registers_nothing(tmp_path: Path) -> None:
    store = LocalFolderStore(tmp_path)
    assert AppSettings.from_environ({}).registrar()(store) == []


def test_incomplete_azure_ml_settings_are_one_failed_registration(tmp_path: Path) -> None:
    settings = AppSettings.from_environ({"AZURE_ML_WORKSPACE": "mlw"})
    [outcome] = settings.registrar()(LocalFolderStore(tmp_path))
    assert outcome["status"] == "failed"
    assert "AZURE_ML_SUBSCRIPTION_ID" in outcome["detail"]
