"""The Azure Functions app: HTTP API, nightly retrain, extract drops.

Thin on purpose: it declares the functions and turns bindings into calls to
``shared``. Nothing is read at import time; settings are read on first use.
"""

import azure.functions as func
import azurefunctions.extensions.bindings.blob as blob_sdk

from shared.api import create_app
from shared.settings import Config
from shared.storage import BlobStore


def _store() -> BlobStore:
    from shared.runtime import app_store

    return app_store()


def _config() -> Config:
    from shared.runtime import app_config

    return app_config()


# The store and configuration are resolved on the first request, not at import.
app = func.AsgiFunctionApp(app=create_app(_store, _config), http_auth_level=func.AuthLevel.FUNCTION)


@app.timer_trigger(
    arg_name="timer", schedule="%RETRAIN_SCHEDULE%", run_on_startup=False, use_monitor=True
)
def retrain_model(timer: func.TimerRequest) -> None:
    """Retrain, evaluate, publish and precompute from the current extracts."""
    from shared.runtime import on_timer

    on_timer()


@app.blob_trigger(
    arg_name="blob",
    path="hr-extracts/{name}",
    connection="DataStorage",
    source=func.BlobSource.EVENT_GRID,
)
def extract_dropped(blob: blob_sdk.BlobClient) -> None:
    """Validate a dropped HR extract; precompute everyone's recommendations if accepted.

    Bound as a ``BlobClient`` (an SDK type binding): the host hands over where the blob
    is, not its bytes, so a drop of hundreds of MB is read here a chunk at a time,
    and one over the size limit is refused without being downloaded.
    """
    from shared.runtime import on_extract_dropped

    on_extract_dropped(blob)
