"""The Functions app's side: settings read once per worker, the trigger bodies on a
local folder (the same bodies run on Azurite in test_function_app.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from world import KIND_FRAMES, csv_bytes, small_data

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


def dropped(kind: str, data: bytes) -> tuple[str, bytes]:
    return f"hr-extracts/{kind}/{kind}.csv", data


def test_the_settings_are_read_once_per_worker(
    app: LocalFolderStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = runtime.app_settings()
    monkeypatch.setenv("TR_LOCAL_STORE", "/somewhere/else")
    assert runtime.app_settings() is first
    assert runtime.app_store().root == app.root  # type: ignore[attr-defined]
    assert runtime.app_config().model.epochs == 6


def test_drops_are_accepted_then_the_timer_publishes_and_the_next_drop_precomputes(
    app: LocalFolderStore,
) -> None:
    for kind, attr in KIND_FRAMES.items():
        accepted, computed = runtime.on_extract_dropped(
            *dropped(kind, csv_bytes(getattr(DATA, attr)))
        )
        assert accepted.status == "accepted" and accepted.kind == kind
        assert computed is None  # no model yet: the retrain precomputes

    result = runtime.on_timer()
    assert result.status == "published"
    assert read_pointer(app, MODELS_POINTER)[0]["version"] == result.version

    users = DATA.users.iloc[:-1]  # someone left
    accepted, computed = runtime.on_extract_dropped(*dropped("users", csv_bytes(users)))
    assert accepted.status == "accepted"
    assert computed is not None and computed.status == "computed"
    assert computed.employees == len(users)


def test_a_bad_drop_is_rejected_without_precomputing(app: LocalFolderStore) -> None:
    accepted, computed = runtime.on_extract_dropped(*dropped("users", b"not;a;users;extract\n"))
    assert accepted.status == "rejected"
    assert computed is None
    assert app.exists(accepted.path)
