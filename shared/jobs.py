"""Retrain as an Azure Machine Learning command job, once it outgrows the function.

A Functions instance has 2 GB (or 4 GB) and LightFM scales up, not out: past some
size the timer function *submits* the retrain instead of running it. The job runs the
project's own code (this folder, uploaded by ``command(code=...)``, ``.amlignore``
leaving out what the job does not need) in an environment built from the pinned
``requirements.txt``, on a compute cluster that scales to zero, as the cluster's
user-assigned managed identity; it runs the same entry point as a person would
(``python -m shared --azure --connection-name DataStorage train``), so it takes the
same lease and publishes the same way. The job reads and writes the same storage by
its blob service URI (``DataStorage__blobServiceUri``) with that identity: never with a
key, so no secret is ever part of a job's definition.

What is known of the last job is kept in ``locks/retrain-job.json``: the submitter
writes it (name, state, Studio link), the job itself writes how it ended (published,
rejected, failed), and a timer that finds a job still queued or running asks Azure ML
for its state and does not submit another. ``/health`` and ``models list`` show it.

App settings: ``RETRAIN_RUNNER`` (``function``, the default; ``azureml``; ``auto``:
Azure ML above ``RETRAIN_AZUREML_ABOVE_ROWS`` trainings-taken rows, 2,000,000 by
default), ``AZURE_ML_COMPUTE`` (the cluster), ``AZURE_ML_JOB_IDENTITY_CLIENT_ID`` (its
identity), ``AZURE_ML_ENVIRONMENT`` (optional: a registered environment to use
instead of building one), and the workspace settings of :mod:`shared.azureml`.
The Azure ML SDK is imported only when a job is submitted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from shared.azureml import AzureMLSettings, make_client
from shared.errors import ConfigurationError, LeaseUnavailableError
from shared.layout import (
    EXTRACTS_POINTER,
    RETRAIN_JOB,
    RETRAIN_LOCK,
    json_bytes,
    read_pointer,
    utc_now,
)
from shared.storage import BlobStore

log = logging.getLogger(__name__)

JOB_RECORD = RETRAIN_JOB
JOB_COMMAND = "python -m shared --azure --connection-name DataStorage train"
PROJECT = Path(__file__).resolve().parents[1]  # the code the job runs
BASE_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:latest"
DEFAULT_ABOVE_ROWS = 2_000_000
# Azure ML job states (azure.ai.ml.constants.JobStatus) in which a job may still run.
UNFINISHED = frozenset(
    {
        "NotStarted",
        "Queued",
        "Preparing",
        "Provisioning",
        "Starting",
        "Running",
        "Finalizing",
        "CancelRequested",
    }
)
# What the job passes on of the app settings: the storage by URI, the configuration,
# the workspace for registration. Never a connection string.
PASSED_ON = (
    "DataStorage__blobServiceUri",
    "TR_CONFIG",
    "AZURE_ML_SUBSCRIPTION_ID",
    "AZURE_ML_RESOURCE_GROUP",
    "AZURE_ML_WORKSPACE",
    "AZURE_ML_MODEL_NAME",
)

Runner = Literal["function", "azureml"]


@dataclass(frozen=True)
class JobSettings:
    """Where and how a retrain job runs (the ``RETRAIN_*`` and ``AZURE_ML_*`` settings)."""

    runner: Literal["function", "azureml", "auto"]
    above_rows: int
    workspace: AzureMLSettings | None
    compute: str | None
    identity_client_id: str | None
    environment: str | None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> JobSettings:
        runner = (environ.get("RETRAIN_RUNNER") or "function").strip().lower()
        if runner not in ("function", "azureml", "auto"):
            raise ConfigurationError(
                f"RETRAIN_RUNNER must be function, azureml or auto, not {runner!r}"
            )
        above = (environ.get("RETRAIN_AZUREML_ABOVE_ROWS") or str(DEFAULT_ABOVE_ROWS)).strip()
        if not above.isdigit():
            raise ConfigurationError(
                f"RETRAIN_AZUREML_ABOVE_ROWS must be a whole number: {above!r}"
            )
        settings = cls(
            runner,  # type: ignore[arg-type]
            int(above),
            AzureMLSettings.from_environ(environ),
            (environ.get("AZURE_ML_COMPUTE") or "").strip() or None,
            (environ.get("AZURE_ML_JOB_IDENTITY_CLIENT_ID") or "").strip() or None,
            (environ.get("AZURE_ML_ENVIRONMENT") or "").strip() or None,
        )
        if runner != "function":
            settings.check(environ)
        return settings

    def check(self, environ: Mapping[str, str]) -> None:
        """What submitting needs, named when missing (at start-up, not at 2 a.m.)."""
        missing = [
            name
            for name, value in (
                ("AZURE_ML_WORKSPACE (and its subscription and resource group)", self.workspace),
                ("AZURE_ML_COMPUTE", self.compute),
                ("AZURE_ML_JOB_IDENTITY_CLIENT_ID", self.identity_client_id),
                ("DataStorage__blobServiceUri", environ.get("DataStorage__blobServiceUri")),
            )
            if not value
        ]
        if missing:
            raise ConfigurationError(
                f"RETRAIN_RUNNER={self.runner} needs {', '.join(missing)}: the job reads the "
                "storage by its URI with the cluster's managed identity"
            )

    def runner_for(self, store: BlobStore) -> Runner:
        """``function`` or ``azureml``; ``auto`` decides by the trainings-taken rows."""
        if self.runner != "auto":
            return self.runner
        rows = int(
            read_pointer(store, EXTRACTS_POINTER)[0].get("trainings-taken", {}).get("rows", 0)
        )
        return "azureml" if rows > self.above_rows else "function"


def conda_environment(requirements: str) -> dict[str, Any]:
    """The job's conda specification: Python 3.11 and the pinned requirements."""
    pins = [
        line.split("#", 1)[0].strip()
        for line in requirements.splitlines()
        if line.split("#", 1)[0].strip()
    ]
    return {
        "name": "training-recommender",
        "channels": ["conda-forge"],
        "dependencies": ["python=3.11", "pip", {"pip": pins}],
    }


def job_specification(settings: JobSettings, environ: Mapping[str, str], stamp: str) -> Any:
    """The ``azure.ai.ml`` command job that retrains (built, not submitted)."""
    from azure.ai.ml import command
    from azure.ai.ml.entities import Environment, ManagedIdentityConfiguration

    environment: Any = settings.environment or Environment(
        name="training-recommender",
        image=BASE_IMAGE,
        conda_file=conda_environment((PROJECT / "requirements.txt").read_text()),
    )
    variables = {name: environ[name] for name in PASSED_ON if environ.get(name)}
    # DefaultAzureCredential in the job picks the cluster's identity by this client id;
    # so does the registration (AZURE_ML_CLIENT_ID).
    variables["AZURE_CLIENT_ID"] = str(settings.identity_client_id)
    variables["AZURE_ML_CLIENT_ID"] = str(settings.identity_client_id)
    return command(
        code=str(PROJECT),
        command=JOB_COMMAND,
        environment=environment,
        compute=settings.compute,
        identity=ManagedIdentityConfiguration(client_id=settings.identity_client_id),
        environment_variables=variables,
        experiment_name="training-recommender",
        display_name=f"retrain {stamp}",
        description="Retrain, evaluate, publish and precompute (python -m shared train)",
    )


def read_record(store: BlobStore) -> dict[str, Any] | None:
    """What is known of the last retrain job, if any."""
    return read_pointer(store, JOB_RECORD)[0] or None


def write_record(store: BlobStore, record: Mapping[str, Any]) -> None:
    store.write(JOB_RECORD, json_bytes(dict(record)), content_type="application/json")


def submit_retrain(
    store: BlobStore,
    settings: JobSettings,
    environ: Mapping[str, str],
    client_factory: Callable[[AzureMLSettings], Any] | None = None,
) -> dict[str, Any]:
    """Submit the retrain as an Azure ML job, unless one is still queued or running.

    Returns the job record written (``submitted`` True when a job was submitted now).
    Under the retrain lease, so that two timers never submit twice; a job holding the
    lease (it is retraining) means there is nothing to submit.
    """
    if settings.workspace is None:
        settings.check(environ)
    assert settings.workspace is not None
    try:
        with store.lease(RETRAIN_LOCK, seconds=60):
            client = (client_factory or make_client)(settings.workspace)
            record = read_record(store)
            if record and record.get("status") in UNFINISHED:
                status = str(client.jobs.get(record["name"]).status)
                record = {**record, "status": status, "checked_at": utc_now()}
                if status in UNFINISHED:
                    log.info(
                        "retrain job %s is still %s: not submitting another", record["name"], status
                    )
                    write_record(store, record)
                    return {**record, "submitted": False}
                log.warning("retrain job %s ended %s", record["name"], status)
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
            job = client.jobs.create_or_update(job_specification(settings, environ, stamp))
            submitted = {
                "name": job.name,
                "status": str(job.status),
                "studio_url": getattr(job, "studio_url", None),
                "submitted_at": utc_now(),
                "compute": settings.compute,
                "previous": record,
            }
            write_record(store, submitted)
            log.info("retrain submitted to Azure ML as job %s", job.name)
            return {**submitted, "submitted": True}
    except LeaseUnavailableError:
        log.info("a retrain holds the lease (a job is retraining): nothing to submit")
        return {**(read_record(store) or {}), "submitted": False}


def record_outcome(store: BlobStore, job_name: str, outcome: Mapping[str, Any]) -> None:
    """The job's own last word, written by ``train`` when it runs as a job: ``status``
    Completed (``result`` published or rejected, ``version``) or Failed (``error``)."""
    record = read_record(store) or {"name": job_name}
    if record.get("name") != job_name:  # a job submitted by hand: keep the other's record
        record = {"name": job_name, "previous": record}
    write_record(store, {**record, **outcome, "ended_at": utc_now()})


def describe_record(record: Mapping[str, Any]) -> str:
    """One line for people: ``last retrain job NAME: Completed (published V) …``."""
    ended = record.get("result") or record.get("error")
    detail = (
        f" ({ended}{' ' + record['version'] if record.get('version') else ''})" if ended else ""
    )
    when = record.get("ended_at") or record.get("submitted_at") or ""
    link = f" {record['studio_url']}" if record.get("studio_url") else ""
    head = f"last retrain job {record.get('name')}: {record.get('status')}"
    return f"{head}{detail} {when}{link}".rstrip()
