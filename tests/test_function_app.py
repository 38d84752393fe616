"""The Functions app: binding metadata, and the function bodies end to end on Azurite.

Azure Functions Core Tools cannot be installed here, so the host is not run: the
bindings are read from ``app.get_functions()`` and each body is called with real
binding objects (``azure.functions.timer.TimerRequest``, and the ``BlobClient`` the blob
trigger's SDK type binding makes, built by the extension's own converter from the binding
data the host sends); HTTP goes through the same FastAPI app the host would wrap.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import azurefunctions.extensions.bindings.blob as blob_sdk
import pandas as pd
import pytest
from azure.functions.timer import TimerRequest
from fastapi.testclient import TestClient
from world import KIND_FRAMES, bound_blob, csv_bytes, small_config, small_data

import function_app
from shared import runtime
from shared.api import create_app
from shared.layout import EXTRACTS_POINTER, MODELS_POINTER, RECOMMENDATIONS_POINTER, read_pointer
from shared.storage import AzureBlobStore

DATA = small_data()
REPO = Path(__file__).resolve().parents[1]
APP_SETTINGS = (
    "DataStorage",
    "RETRAIN_SCHEDULE",
    "TR_CONFIG",
    "TR_LOCAL_STORE",
    "AZURE_ML_SUBSCRIPTION_ID",
    "AZURE_ML_RESOURCE_GROUP",
    "AZURE_ML_WORKSPACE",
    "AZURE_ML_MODEL_NAME",
    "AZURE_ML_CLIENT_ID",
    "RETRAIN_RUNNER",
    "RETRAIN_AZUREML_ABOVE_ROWS",
    "AZURE_ML_COMPUTE",
    "AZURE_ML_JOB_IDENTITY_CLIENT_ID",
    "AZURE_ML_ENVIRONMENT",
)


def test_three_functions_with_the_documented_bindings(
    function_bindings: dict[str, list[dict[str, object]]],
) -> None:
    found = function_bindings
    assert set(found) == {"http_app_func", "retrain_model", "extract_dropped"}
    (timer,) = found["retrain_model"]
    assert timer["type"] == "timerTrigger"
    assert timer["schedule"] == "%RETRAIN_SCHEDULE%"
    assert timer["runOnStartup"] is False
    (blob,) = found["extract_dropped"]
    assert blob["type"] == "blobTrigger"
    assert blob["path"] == "hr-extracts/{name}"
    assert blob["source"] == "EventGrid"
    assert blob["connection"] == runtime.CONNECTION == "DataStorage"
    http = found["http_app_func"][0]
    assert http["type"] == "httpTrigger"
    assert http["authLevel"] == "FUNCTION"


def test_the_blob_trigger_binds_a_blob_client_the_host_defers(
    app_functions: dict[str, Any],
) -> None:
    """The worker tells the host "SupportsDeferredBinding" for a parameter annotated with
    an SDK type of a registered converter: the host then sends where the blob is, not
    its bytes. Computed here as the worker computes it (the extension base's registry)."""
    from azurefunctions.extensions.base import meta

    function = app_functions["extract_dropped"]
    annotation = inspect.signature(function.get_user_function()).parameters["blob"].annotation
    assert annotation is blob_sdk.BlobClient
    assert meta.get_binding_registry().get("blobTrigger") is blob_sdk.BlobClientConverter
    input_types = {"blob": SimpleNamespace(pytype=annotation)}
    raw, logs = meta.get_binding_registry().get_raw_bindings(function, input_types)
    (binding,) = [json.loads(b) for b in raw]
    assert binding["type"] == "blobTrigger"
    assert binding["properties"] == {"SupportsDeferredBinding": True}
    assert binding["source"] == "EventGrid"
    assert binding["connection"] == "DataStorage"
    assert logs == {"blob": {annotation: "True"}}


def test_the_bound_client_uses_the_app_s_user_assigned_identity(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the identity settings infra/ writes (no key anywhere), the extension builds the
    client on the blob endpoint with that identity. Checked at the SDK boundary with a
    fake credential that records how it was made: no Azure here."""
    from azure.core.credentials import AccessToken
    from azurefunctions.extensions.bindings.blob import utils

    class RecordedIdentity:
        def __init__(self, **kwargs: str) -> None:
            self.kwargs = kwargs

        def get_token(self, *scopes: str, **_: object) -> AccessToken:
            return AccessToken("token", 2**31)

    monkeypatch.setattr(utils, "ManagedIdentityCredential", RecordedIdentity)
    monkeypatch.delenv("DataStorage", raising=False)
    monkeypatch.setenv("DataStorage__blobServiceUri", "https://hrdata.blob.core.windows.net")
    monkeypatch.setenv("DataStorage__credential", "managedidentity")
    monkeypatch.setenv("DataStorage__clientId", "00000000-0000-0000-0000-000000000042")
    client = bound_blob("hr-extracts", "users/2026-11.csv")
    assert client.url == "https://hrdata.blob.core.windows.net/hr-extracts/users/2026-11.csv"
    assert isinstance(client.credential, RecordedIdentity)
    assert client.credential.kwargs == {"client_id": "00000000-0000-0000-0000-000000000042"}


def test_importing_the_app_reads_no_setting() -> None:
    """An import-time error makes the host report "0 functions loaded": import it bare."""
    environment = {k: v for k, v in os.environ.items() if k not in APP_SETTINGS}
    code = "import function_app; print(len(function_app.app.get_functions()))"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "3"


def test_the_sample_settings_list_every_setting_the_app_reads() -> None:
    sample = json.loads((REPO / "local.settings.sample.json").read_text("utf-8"))["Values"]
    assert set(APP_SETTINGS) <= set(sample)


@pytest.fixture
def app_settings(
    azurite: str, container_prefix: str, monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> Iterator[AzureBlobStore]:
    """App settings pointing the app at Azurite, with containers of this test's own."""
    store = AzureBlobStore.from_connection_string(azurite, container_prefix=container_prefix)
    config_file = tmp_path / "config.toml"  # type: ignore[operator]
    config_file.write_text(
        "[model]\nepochs = 6\nnum_threads = 1\nno_components = 16\n"
        "[serving]\ntop_k = 10\nrefresh_seconds = 0\n"
    )
    monkeypatch.setenv("DataStorage", azurite)  # what the binding's client is made from
    monkeypatch.setenv("TR_CONFIG", str(config_file))
    monkeypatch.setattr(runtime, "app_store", lambda: store)  # the prefix isolates this test
    runtime.app_settings.cache_clear()
    runtime.app_config.cache_clear()
    yield store
    runtime.app_settings.cache_clear()
    runtime.app_config.cache_clear()


def drop_blob(store: AzureBlobStore, name: str, data: bytes) -> None:
    """What HR does, then what the host does: upload, then call the function body."""
    store.write(f"hr-extracts/{name}", data)
    function_app.extract_dropped(bound_blob(f"{store.container_prefix}hr-extracts", name))


def test_end_to_end_on_azurite(app_settings: AzureBlobStore) -> None:
    store = app_settings
    for kind, attr in KIND_FRAMES.items():
        drop_blob(store, f"{kind}/2026-11.csv", csv_bytes(getattr(DATA, attr)))
    assert set(read_pointer(store, EXTRACTS_POINTER)[0]) == set(KIND_FRAMES)
    assert not store.exists(MODELS_POINTER)  # no model yet: the drops only validated

    function_app.retrain_model(TimerRequest(past_due=False))
    model = read_pointer(store, MODELS_POINTER)[0]["version"]
    assert store.exists(f"models/{model}/model.npz")
    first = read_pointer(store, RECOMMENDATIONS_POINTER)[0]
    assert first["model_version"] == model

    # A new employee arrives in the next users extract: the blob trigger precomputes.
    newcomer = DATA.users.iloc[[5]].assign(**{"User-Id": "900001"})
    drop_blob(store, "users/2026-12.csv", csv_bytes(pd.concat([DATA.users, newcomer])))
    second = read_pointer(store, RECOMMENDATIONS_POINTER)[0]
    assert second["version"] != first["version"]
    assert second["model_version"] == model

    client = TestClient(create_app(store, small_config()))
    known = str(DATA.taken["User-Id"].iloc[0])
    answers = {
        "known": client.get(f"/recommendations/{known}").json(),
        "newcomer": client.get("/recommendations/900001").json(),
        "new": client.post(
            "/recommendations", json={"attributes": {"skills": "python;sql", "ou": "sales"}}
        ).json(),
    }
    assert answers["known"]["trainings"] and answers["newcomer"]["trainings"]
    assert answers["new"]["trainings"]

    # A malformed extract: quarantined with its report; every answer unchanged.
    drop_blob(store, "trainings/broken.csv", b"Training-Id,Training Title\nT1,One,extra\n")
    assert store.exists("hr-extracts-rejected/trainings/broken.csv")
    report = json.loads(store.read("hr-extracts-rejected/trainings/broken.error.json"))
    assert report["problems"][0]["line"] == 2
    assert not store.exists("hr-extracts/trainings/broken.csv")
    assert read_pointer(store, RECOMMENDATIONS_POINTER)[0] == second
    assert client.get(f"/recommendations/{known}").json() == answers["known"]
    assert client.get("/recommendations/900001").json() == answers["newcomer"]
    new_again = client.post(
        "/recommendations", json={"attributes": {"skills": "python;sql", "ou": "sales"}}
    ).json()
    assert new_again == answers["new"]


def test_the_same_blob_delivered_twice_precomputes_once(app_settings: AzureBlobStore) -> None:
    store = app_settings
    for kind, attr in KIND_FRAMES.items():
        drop_blob(store, f"{kind}/a.csv", csv_bytes(getattr(DATA, attr)))
    function_app.retrain_model(TimerRequest(past_due=False))
    before = read_pointer(store, RECOMMENDATIONS_POINTER)
    for _ in range(2):  # Event Grid delivers at least once
        function_app.extract_dropped(
            bound_blob(f"{store.container_prefix}hr-extracts", "users/a.csv")
        )
    assert read_pointer(store, RECOMMENDATIONS_POINTER) == before


def test_a_drop_over_the_size_limit_is_quarantined_without_being_downloaded(
    app_settings: AzureBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The host's own InputStream binding would have sent it whole before any check.
    store = app_settings
    limit = runtime.app_config().contract.limits.max_bytes
    config = Path(os.environ["TR_CONFIG"])
    config.write_text(config.read_text() + "[contract.limits]\nmax_bytes = 4000\n")
    runtime.app_config.cache_clear()
    data = csv_bytes(DATA.taken)
    assert 4_000 < len(data) < limit
    store.write("hr-extracts/trainings-taken/all.csv", data)
    blob = bound_blob(f"{store.container_prefix}hr-extracts", "trainings-taken/all.csv")
    downloads: list[object] = []
    real_download = blob.download_blob
    monkeypatch.setattr(
        blob, "download_blob", lambda *a, **k: downloads.append(a) or real_download(*a, **k)
    )

    function_app.extract_dropped(blob)

    assert downloads == []  # its properties said enough
    report = json.loads(store.read("hr-extracts-rejected/trainings-taken/all.error.json"))
    assert (
        report["problems"][0]["message"]
        == f"the file has {len(data)} bytes, over the limit of 4000"
    )
    assert store.read("hr-extracts-rejected/trainings-taken/all.csv") == data  # copied whole
    assert not store.exists("hr-extracts/trainings-taken/all.csv")
    assert not store.exists(EXTRACTS_POINTER)


def test_the_deployment_package_is_the_app_and_nothing_else() -> None:
    # `func azure functionapp publish` zips the folder minus .funcignore: tests,
    # benchmarks, the venv, node_modules, local data and local secrets stay home.
    app_files = {"function_app.py", "shared", "host.json", "requirements.txt", ".amlignore"}
    patterns = {
        line.strip().rstrip("/")
        for line in (REPO / ".funcignore").read_text("utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True, timeout=30
    ).stdout.split()
    top_level = {path.split("/")[0] for path in tracked}
    top_level |= {".venv", "node_modules", "var", "local.settings.json", "__pycache__"}
    assert app_files <= top_level
    assert not app_files & patterns
    assert top_level - app_files <= patterns, top_level - app_files - patterns
