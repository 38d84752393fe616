"""Retrain as an Azure ML command job.

Azure itself cannot be reached here: the submission is tested at the SDK boundary, with
a fake ``MLClient`` that records the real ``azure.ai.ml`` job object it is given (its
command, environment, compute, identity, variables) and plays the job's states. The
job's own command is then run here as the job runs it, against Azurite, end to end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from world import drop_all, small_data

from shared import runtime
from shared.api import create_app
from shared.errors import ConfigurationError
from shared.jobs import (
    JOB_COMMAND,
    JOB_RECORD,
    PROJECT,
    JobSettings,
    describe_record,
    read_record,
    submit_retrain,
)
from shared.layout import EXTRACTS_POINTER, RETRAIN_LOCK, json_bytes
from shared.registry import current_version
from shared.settings import Config
from shared.storage import AzureBlobStore, BlobStore

REPO = Path(__file__).resolve().parents[1]
ENV = {
    "RETRAIN_RUNNER": "azureml",
    "AZURE_ML_SUBSCRIPTION_ID": "00000000-0000-0000-0000-000000000000",
    "AZURE_ML_RESOURCE_GROUP": "rg-learning",
    "AZURE_ML_WORKSPACE": "mlw-learning",
    "AZURE_ML_COMPUTE": "cpu-cluster",
    "AZURE_ML_JOB_IDENTITY_CLIENT_ID": "11111111-2222-3333-4444-555555555555",
    "DataStorage__blobServiceUri": "https://stlearning.blob.core.windows.net",
    "DataStorage": "DefaultEndpointsProtocol=https;AccountName=st;AccountKey=c2VjcmV0;",
    "TR_CONFIG": "/home/site/wwwroot/config.toml",
}


class FakeJobs:
    """``MLClient.jobs``: records what is submitted; ``states`` plays a job's states."""

    def __init__(self) -> None:
        self.submitted: list[Any] = []
        self.states: dict[str, list[str]] = {}
        self.asked: list[str] = []

    def create_or_update(self, job: Any) -> Any:
        self.submitted.append(job)
        name = f"retrain-{len(self.submitted)}"
        return SimpleNamespace(
            name=name, status="Queued", studio_url=f"https://ml.azure.com/{name}"
        )

    def get(self, name: str) -> Any:
        self.asked.append(name)
        return SimpleNamespace(name=name, status=self.states[name].pop(0))


@pytest.fixture
def fake() -> FakeJobs:
    return FakeJobs()


def submit(store: BlobStore, fake: FakeJobs, env: dict[str, str] = ENV) -> dict[str, Any]:
    factories: list[Any] = []

    def factory(workspace: Any) -> Any:
        factories.append(workspace)
        return SimpleNamespace(jobs=fake)

    record = submit_retrain(store, JobSettings.from_environ(env), env, factory)
    assert all(w.workspace == "mlw-learning" for w in factories)
    return record


def test_the_job_runs_the_project_s_train_command_as_the_cluster_s_identity(
    local_store: BlobStore, fake: FakeJobs
) -> None:
    record = submit(local_store, fake)
    assert record["submitted"] and record["name"] == "retrain-1" and record["status"] == "Queued"
    [job] = fake.submitted
    assert (
        job.command == JOB_COMMAND == "python -m shared --azure --connection-name DataStorage train"
    )
    assert Path(job.code) == PROJECT == REPO  # the project's own code
    assert job.compute == "cpu-cluster"
    assert job.identity.client_id == ENV["AZURE_ML_JOB_IDENTITY_CLIENT_ID"]
    conda = job.environment.conda_file
    pins = conda["dependencies"][-1]["pip"]
    required = [
        line.split("#")[0].strip()
        for line in (REPO / "requirements.txt").read_text().splitlines()
        if line.split("#")[0].strip()
    ]
    assert pins == required and "python=3.11" in conda["dependencies"]
    variables = job.environment_variables
    assert variables["DataStorage__blobServiceUri"] == ENV["DataStorage__blobServiceUri"]
    assert variables["AZURE_CLIENT_ID"] == ENV["AZURE_ML_JOB_IDENTITY_CLIENT_ID"]
    assert variables["AZURE_ML_WORKSPACE"] == "mlw-learning"
    # No secret in the job's definition: the connection string (with its key) stays home.
    assert "AccountKey" not in json.dumps(job._to_dict(), default=str)
    assert "DataStorage" not in variables
    stored = read_record(local_store)
    assert stored is not None and stored["name"] == "retrain-1"
    assert stored["studio_url"] == "https://ml.azure.com/retrain-1"


def test_a_job_still_running_is_not_submitted_twice_and_its_end_is_recorded(
    local_store: BlobStore, fake: FakeJobs
) -> None:
    submit(local_store, fake)
    fake.states["retrain-1"] = ["Running", "Failed"]
    again = submit(local_store, fake)  # the next timer, while it runs
    assert not again["submitted"] and again["status"] == "Running"
    assert len(fake.submitted) == 1 and fake.asked == ["retrain-1"]
    after = submit(local_store, fake)  # it failed meanwhile: report it, submit anew
    assert after["submitted"] and after["name"] == "retrain-2"
    assert after["previous"]["status"] == "Failed"
    # While a job retrains it holds the retrain lease: nothing is submitted, nothing asked.
    with local_store.lease(RETRAIN_LOCK, seconds=60):
        busy = submit(local_store, fake)
    assert not busy["submitted"] and len(fake.submitted) == 2


@pytest.mark.parametrize(
    ("removed", "named"),
    [
        ("AZURE_ML_COMPUTE", "AZURE_ML_COMPUTE"),
        ("AZURE_ML_JOB_IDENTITY_CLIENT_ID", "AZURE_ML_JOB_IDENTITY_CLIENT_ID"),
        ("DataStorage__blobServiceUri", "DataStorage__blobServiceUri"),
        ("AZURE_ML_WORKSPACE", "AZURE_ML_WORKSPACE"),
    ],
)
def test_a_runner_missing_a_setting_says_which(removed: str, named: str) -> None:
    env = {k: v for k, v in ENV.items() if k != removed}
    with pytest.raises(ConfigurationError, match=named):
        JobSettings.from_environ(env)


def test_the_runner_is_the_function_by_default_and_auto_decides_by_size(
    local_store: BlobStore,
) -> None:
    assert JobSettings.from_environ({}).runner_for(local_store) == "function"
    with pytest.raises(ConfigurationError, match="RETRAIN_RUNNER"):
        JobSettings.from_environ({"RETRAIN_RUNNER": "kubernetes"})
    auto = JobSettings.from_environ({**ENV, "RETRAIN_RUNNER": "auto"})
    assert auto.above_rows == 2_000_000
    local_store.write(EXTRACTS_POINTER, json_bytes({"trainings-taken": {"rows": 150_000}}))
    assert auto.runner_for(local_store) == "function"
    local_store.write(EXTRACTS_POINTER, json_bytes({"trainings-taken": {"rows": 9_000_000}}))
    assert auto.runner_for(local_store) == "azureml"


def test_the_timer_submits_when_the_runner_is_azureml(
    local_store: BlobStore, fake: FakeJobs, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(runtime, "app_store", lambda: local_store)
    monkeypatch.setattr("shared.jobs.make_client", lambda _w: SimpleNamespace(jobs=fake))
    runtime.app_settings.cache_clear()
    try:
        record = runtime.on_timer()
    finally:
        runtime.app_settings.cache_clear()
    assert isinstance(record, dict) and record["submitted"] and len(fake.submitted) == 1


@pytest.fixture
def app_containers(azurite: str) -> Iterator[AzureBlobStore]:
    """The app's own container names on Azurite (the job's command takes no prefix)."""
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient.from_connection_string(azurite, retry_total=0)
    names = ("hr-extracts", "hr-extracts-rejected", "extracts", "models", "recommendations")
    mine = (*names, "locks", "events")

    def clean() -> None:
        for container in service.list_containers():
            if container.name in mine:
                service.delete_container(container.name)

    clean()
    yield AzureBlobStore.from_connection_string(azurite)
    clean()


def run_job(azurite: str, tmp_path: Path, job: str) -> subprocess.CompletedProcess[str]:
    """The job's command, with the environment the job gets (the storage here through
    Azurite's connection string: the emulator has no managed identity)."""
    config = tmp_path / "config.toml"
    config.write_text("[model]\nepochs = 6\nnum_threads = 1\nno_components = 16\n")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AZURE_ML", "TR_"))},
        "DataStorage": azurite,
        "TR_CONFIG": str(config),
        "AZUREML_RUN_ID": job,
    }
    return subprocess.run(
        [sys.executable, "-m", *JOB_COMMAND.split()[2:]],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.mark.azurite
def test_the_job_command_end_to_end_on_azurite(
    azurite: str, app_containers: AzureBlobStore, tmp_path: Path
) -> None:
    store = app_containers
    store.write(JOB_RECORD, json_bytes({"name": "retrain-7", "status": "Queued"}))
    failed = run_job(azurite, tmp_path, "retrain-7")  # no extract yet: it fails, reported
    assert failed.returncode != 0, failed.stdout
    record = read_record(store)
    assert record is not None and record["status"] == "Failed"
    assert "no accepted extract" in record["error"]
    client = TestClient(create_app(store, Config.from_dict({"serving": {"refresh_seconds": 0}})))
    assert client.get("/health").status_code == 503  # nothing serves yet, still

    drop_all(store, small_data(), Config())
    store.write(JOB_RECORD, json_bytes({"name": "retrain-8", "status": "Queued"}))
    done = run_job(azurite, tmp_path, "retrain-8")
    assert done.returncode == 0, done.stderr[-2000:]
    record = read_record(store)
    assert record is not None and record["status"] == "Completed"
    assert record["result"] == "published" and record["version"] == current_version(store)
    health = client.get("/health").json()
    assert health["status"] == "ok"
    assert health["retrain_job"]["name"] == "retrain-8"
    assert health["retrain_job"]["version"] == health["versions"]["model_version"]
    assert "retrain-8: Completed (published" in describe_record(record)

    # A job that fails once something serves: the previous version keeps serving, and
    # /health says the last job failed.
    pointer = json.loads(store.read(EXTRACTS_POINTER))
    pointer["trainings"]["path"] = "extracts/trainings/gone.csv"
    store.write(EXTRACTS_POINTER, json_bytes(pointer))
    store.write(JOB_RECORD, json_bytes({"name": "retrain-9", "status": "Queued"}))
    assert run_job(azurite, tmp_path, "retrain-9").returncode != 0
    after = client.get("/health").json()
    assert after["status"] == "degraded" and after["retrain_job"]["status"] == "Failed"
    assert after["versions"] == health["versions"]
    assert (
        client.get(f"/recommendations/{small_data().users['User-Id'].iloc[0]}").status_code == 200
    )
