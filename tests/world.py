"""A small synthetic world shared by the integration tests: data, config, drops."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pandas as pd
import uvicorn

from shared.pipeline import AcceptResult, drop_extract, retrain
from shared.settings import Config
from shared.storage import BlobStore
from shared.synthetic import SyntheticData, generate

if TYPE_CHECKING:
    from azure.storage.blob import BlobClient

SMALL = {"n_users": 400, "n_trainings": 60, "n_interactions": 4_000, "seed": 3}
KIND_FRAMES = {"users": "users", "trainings": "trainings", "trainings-taken": "taken"}


def small_config(**sections: dict[str, Any]) -> Config:
    """Fast settings: a few epochs, one thread (deterministic), short lists."""
    base: dict[str, Any] = {
        "model": {"epochs": 6, "num_threads": 1, "no_components": 16},
        "serving": {"top_k": 10, "refresh_seconds": 0},
    }
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    return Config.from_dict(base)


def csv_bytes(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode("utf-8")


def small_data(**overrides: int) -> SyntheticData:
    return generate(**{**SMALL, **overrides})


def drop(store: BlobStore, name: str, data: bytes, config: Config) -> AcceptResult:
    """Drop an extract the way HR does, then run what the blob trigger runs."""
    return drop_extract(store, name, data, config)


def bound_blob(container: str, name: str, connection: str = "DataStorage") -> BlobClient:
    """The ``BlobClient`` a blob trigger binds, made as the Python worker makes it: the host
    sends model binding data (which blob, which connection, not its bytes) and the
    extension's converter builds the client from the app setting the connection names."""
    import azurefunctions.extensions.bindings.blob as blob_sdk
    from azurefunctions.extensions.base import Datum

    content = {"Connection": connection, "ContainerName": container, "BlobName": name}
    binding_data = SimpleNamespace(
        version="1.0",
        source="AzureStorageBlobs",
        content_type="application/json",
        content=json.dumps(content),
    )
    client: BlobClient = blob_sdk.BlobClientConverter.decode(
        Datum(binding_data, "model_binding_data"), trigger_metadata=None, pytype=blob_sdk.BlobClient
    )
    return client


def drop_all(store: BlobStore, data: SyntheticData, config: Config) -> list[AcceptResult]:
    return [
        drop(store, f"{kind}/{kind}.csv", csv_bytes(getattr(data, attr)), config)
        for kind, attr in KIND_FRAMES.items()
    ]


def published(store: BlobStore, data: SyntheticData, config: Config) -> BlobStore:
    """A store serving a model of ``data``: the three extracts dropped, then retrained."""
    drop_all(store, data, config)
    assert retrain(store, config).status == "published"
    return store


@contextmanager
def served_over_http(app: Any) -> Iterator[str]:
    """``app`` served by uvicorn on a free loopback port, in a thread: its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
