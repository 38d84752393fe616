"""The Functions app's side: settings read once per worker, the timer body on a local
folder (the blob trigger's body binds a BlobClient: it runs on Azurite in
test_function_app.py)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from world import KIND_FRAMES, csv_bytes, drop, small_config, small_data

from shared import runtime
from shared.layout import MODELS_POINTER, read_pointer
from shared.storage import LocalFolderStore

DATA = small_data()


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[LocalFolderStore]:
    """App settings naming a local folder and a small configuration."""
    config = tmp_path / "config.toml"
    config.write_text(
        "[model]\nepochs = 6\nnum_threads = 1\nno_components = 16\n"
        "[serving]\ntop_k = 10\nrefresh_seconds = 0\n"
    )
    monkeypatch.setenv("TR_LOCAL_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("TR_CONFIG", str(config))
    for cached in (runtime.app_settings, runtime.app_store, runtime.app_config):
        cached.cache_clear()
    yield LocalFolderStore(tmp_path / "store")
    for cached in (runtime.app_settings, runtime.app_store, runtime.app_config):
        cached.cache_clear()


def test_the_settings_are_read_once_per_worker(
    app: LocalFolderStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = runtime.app_settings()
    monkeypatch.setenv("TR_LOCAL_STORE", "/somewhere/else")
    assert runtime.app_settings() is first
    assert runtime.app_store().root == app.root  # type: ignore[attr-defined]
    assert runtime.app_config().model.epochs == 6


def test_the_timer_publishes_from_the_accepted_drops(
    app: LocalFolderStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="shared.progress")
    for kind, attr in KIND_FRAMES.items():
        assert (
            drop(app, f"{kind}/{kind}.csv", csv_bytes(getattr(DATA, attr)), small_config()).status
            == "accepted"
        )
    result = runtime.on_timer()
    assert result.status == "published"
    # Where the retrain is, in the Functions log stream: a line per step
    lines = [r.getMessage() for r in caplog.records if r.name == "shared.progress"]
    assert any(line.startswith("read the extracts: started (") for line in lines)
    assert any(line.startswith("evaluate › fit: done, ") for line in lines)
    assert any(line.startswith("upload: done in ") for line in lines)
    assert read_pointer(app, MODELS_POINTER)[0]["version"] == result.version
