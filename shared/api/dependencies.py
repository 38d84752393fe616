"""What the routes depend on: the configuration, the serving cache, the current version.

Resolved on the first request, never at import, so that a missing setting shows up
as a clear 503 rather than as "0 functions loaded". Whoever creates the app passes
the store and the configuration, or factories of them (the Functions app, the CLI's
``serve``, the tests); this package imports no adapter.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool

from shared.serving import ServingCache, Snapshot, contract_of
from shared.settings import Config, DataContract
from shared.storage import BlobStore


@dataclass
class ServingState:
    """The app's store and configuration (or their factories), resolved once."""

    store: BlobStore | Callable[[], BlobStore]
    config: Config | Callable[[], Config]
    _config: Config | None = field(default=None, init=False)
    _cache: ServingCache | None = field(default=None, init=False)
    _store: BlobStore | None = field(default=None, init=False)

    def settings(self) -> Config:
        if self._config is None:
            self._config = self.config if isinstance(self.config, Config) else self.config()
        return self._config

    def blob_store(self) -> BlobStore:
        if self._store is None:
            self._store = self.store() if callable(self.store) else self.store
        return self._store

    def cache(self) -> ServingCache:
        if self._cache is None:
            serving = self.settings().serving
            self._cache = ServingCache(
                self.blob_store(), serving.refresh_seconds, self.settings().rules
            )
        return self._cache

    async def snapshot(self) -> Snapshot:
        """The version to answer from; storage I/O (a due pointer check, the first load)
        runs in a worker thread, the rest on the event loop."""
        cache = self.cache()
        snapshot = cache.ready()
        return snapshot if snapshot is not None else await run_in_threadpool(cache.current)


# Async and flat: an async dependency runs on the event loop where a sync one costs
# every request a hop to a worker thread, and each dependency costs FastAPI a solve
# (measured in-process: 480 µs per GET with sync nested dependencies, 170 µs with the
# one below). The hot path takes the state itself; the other routes what they use.
async def serving_state(request: Request) -> ServingState:
    state: ServingState = request.app.state.serving
    return state


async def settings(request: Request) -> Config:
    return (await serving_state(request)).settings()


async def serving_cache(request: Request) -> ServingCache:
    return (await serving_state(request)).cache()


async def current_snapshot(request: Request) -> Snapshot:
    return await (await serving_state(request)).snapshot()


State = Annotated[ServingState, Depends(serving_state)]
Settings = Annotated[Config, Depends(settings)]
Cache = Annotated[ServingCache, Depends(serving_cache)]
CurrentSnapshot = Annotated[Snapshot, Depends(current_snapshot)]


def check_n(n: int, config: Config) -> int:
    """``n`` within ``serving.max_n`` (the schema says at least 1)."""
    limit = config.serving.max_n
    if n > limit:
        raise HTTPException(422, f"n={n} is above the maximum of {limit}")
    return n


def check_attributes(snap: Snapshot, attributes: dict[str, Any], config: Config) -> DataContract:
    """The contract the model was trained with; 422 naming attributes it does not have."""
    contract = contract_of(snap)
    known = set(contract.users.features)
    unknown = set(attributes) - known
    if unknown:
        # The names sent are not echoed back; the ones the model reads are listed.
        raise HTTPException(
            422,
            f"{len(unknown)} attribute name(s) the model does not use; it uses {sorted(known)} "
            "(GET /model/schema)",
        )
    return contract
