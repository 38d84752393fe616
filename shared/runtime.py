"""The Functions app's side of the settings: which store, which configuration.

Read on first use, never at import (an import-time error makes the host report
"0 functions loaded"), then kept for the life of the worker process.
"""

from __future__ import annotations

import logging
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.appsettings import AppSettings
from shared.errors import NoModelError, NotFoundError
from shared.pipeline import (
    AcceptResult,
    PrecomputeResult,
    RetrainResult,
    accept_extract,
    precompute,
    retrain,
)
from shared.progress import LogLines
from shared.settings import Config
from shared.storage import BlobStore

if TYPE_CHECKING:
    from azure.storage.blob import BlobClient

log = logging.getLogger(__name__)

# The app setting prefix of the data storage, shared with the blob trigger's
# `connection`: "DataStorage" (connection string) or "DataStorage__serviceUri" /
# "DataStorage__blobServiceUri" (managed identity).
CONNECTION = "DataStorage"


@cache
def app_settings() -> AppSettings:
    """The app settings, read from the environment once per worker process."""
    return AppSettings.from_environ()


@cache
def app_store() -> BlobStore:
    """The data storage from the app settings (``TR_LOCAL_STORE`` for a local folder)."""
    settings = app_settings()
    local = Path(settings.local_store) if settings.local_store else None
    return settings.store(CONNECTION, local_root=local)


@cache
def app_config() -> Config:
    return app_settings().config()


def on_extract_dropped(client: BlobClient) -> tuple[AcceptResult, PrecomputeResult | None]:
    """Blob trigger body: accept (or quarantine) the extract, then precompute if it changed.

    ``client`` is the dropped blob as the trigger binds it (a ``BlobClient``, the SDK
    type of ``azurefunctions-extensions-bindings-blob``): nothing of it was read yet.
    Its size is checked from its properties, then it is read a chunk at a time.
    """
    from shared.storage.azure import AzureReadable

    store, config = app_store(), app_config()
    accepted = accept_extract(store, client.blob_name, config, blob=AzureReadable(client))
    if accepted.status != "accepted":
        return accepted, None
    try:
        return accepted, precompute(store, config, progress=LogLines())
    except (NoModelError, NotFoundError) as exc:
        # No model yet, or an extract kind still missing: the next retrain precomputes.
        log.info("extract accepted; nothing to precompute yet: %s", exc)
        return accepted, None


def on_timer() -> RetrainResult | dict[str, Any]:
    """Timer trigger body: the nightly retrain, here or submitted as an Azure ML job
    (``RETRAIN_RUNNER``; see :mod:`shared.jobs`), whose record is returned then."""
    settings, store = app_settings(), app_store()
    jobs = settings.jobs()
    if jobs.runner_for(store) == "azureml":
        from shared.jobs import submit_retrain

        record = submit_retrain(store, jobs, settings.environ)
        log.info("retrain job %s: %s", record.get("name"), record.get("status"))
        return record
    # Log lines of each step (at most one every few seconds in a long one): the
    # Functions log stream and Application Insights show where a retrain is.
    result = retrain(store, app_config(), registrar=settings.registrar(), progress=LogLines())
    log.info("retrain: %s %s %s", result.status, result.version or "", result.served_by or "")
    return result
