"""What a serving instance holds: the current version, and the answers it gives.

An instance caches one :class:`Snapshot` (a recommendation table and the model it
came from, always as a pair, so an answer never mixes two versions). The pointer
is re-checked at most every ``refresh_seconds``; a new version is loaded beside
the current one and swapped in only once it loaded completely. A version that
fails to load never replaces a good one: the failure is logged and kept for
``/health``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from shared.bundle import ModelBundle
from shared.errors import ModelLoadError, NoModelError, NotFoundError, TrainingRecommenderError
from shared.features import IdMap, entity_frame, rows_for_new
from shared.pipeline import RECOMMENDATIONS_POINTER, RecommendationTable, load_recommendations
from shared.registry import load_bundle, read_pointer
from shared.scoring import NO_ITEM, Recommender
from shared.settings import Config, DataContract
from shared.storage import BlobStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Snapshot:
    """A recommendation table and the model that computed it."""

    bundle: ModelBundle
    recommender: Recommender
    table: RecommendationTable
    employees: IdMap
    trainings: IdMap
    pointer: dict[str, Any]
    etag: str
    loaded_at: float

    @property
    def versions(self) -> dict[str, str]:
        return {
            "model_version": str(self.pointer.get("model_version")),
            "data_version": str(self.pointer.get("data_version")),
            "recommendations_version": str(self.pointer.get("version")),
        }

    def training(self, row: int, score: float, rank: int) -> dict[str, Any]:
        bundle = self.bundle
        columns = bundle.metadata.get("item_attribute_columns", [])
        return {
            "rank": rank,
            "training_id": str(bundle.item_ids[row]),
            "title": str(bundle.item_titles[row]),
            "attributes": dict(zip(columns, map(str, bundle.item_attributes[row]), strict=True)),
            "score": round(float(score), 6),
        }

    def trainings_of(self, rows: np.ndarray, scores: np.ndarray, n: int) -> list[dict[str, Any]]:
        valid = [(int(r), float(s)) for r, s in zip(rows, scores, strict=True) if r != NO_ITEM]
        return [self.training(r, s, rank) for rank, (r, s) in enumerate(valid[:n], start=1)]


def load_snapshot(store: BlobStore, pointer: dict[str, Any], etag: str) -> Snapshot:
    """Load the table a pointer names and its model; raises ModelLoadError if anything is off."""
    table = load_recommendations(store, str(pointer["version"]))
    bundle = load_bundle(store, str(pointer["model_version"]))
    if table.items.size and int(table.items.max()) >= len(bundle.item_ids):
        raise ModelLoadError(
            f"recommendations {pointer['version']} do not match model {bundle.version}"
        )
    return Snapshot(
        bundle,
        Recommender(bundle),
        table,
        IdMap(table.user_ids),
        IdMap(bundle.item_ids),
        pointer,
        etag,
        time.time(),
    )


@dataclass
class ServingCache:
    """The per-instance cache of the current version."""

    store: BlobStore
    refresh_seconds: float = 5.0
    _snapshot: Snapshot | None = None
    _checked_at: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    last_error: str | None = None

    def current(self) -> Snapshot:
        """The snapshot to answer from; raises NoModelError before anything was published."""
        now = time.monotonic()
        if self._snapshot is None or now - self._checked_at >= self.refresh_seconds:
            with self._lock:  # one refresh at a time; the others keep answering
                if self._snapshot is None or now - self._checked_at >= self.refresh_seconds:
                    self._refresh()
                    self._checked_at = time.monotonic()
        if self._snapshot is None:
            raise NoModelError(self.last_error or "no recommendations have been computed yet")
        return self._snapshot

    def _refresh(self) -> None:
        try:
            pointer, etag = read_pointer(self.store, RECOMMENDATIONS_POINTER)
            if etag is None or (self._snapshot is not None and etag == self._snapshot.etag):
                return
            self._snapshot = load_snapshot(self.store, pointer, etag)
            self.last_error = None
            log.info("serving recommendations %s", pointer.get("version"))
        except (TrainingRecommenderError, ValueError, KeyError) as exc:
            # Keep serving what we have; report the failure on /health.
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.error("could not load the current version, keeping the previous one: %s", exc)


def recommend_known(snapshot: Snapshot, employee_id: str, n: int) -> list[dict[str, Any]]:
    """The precomputed list of an employee of the current extracts."""
    row = snapshot.employees.row(employee_id)
    if row is None:
        raise NotFoundError(
            f"employee {employee_id!r} is not in the current employees extract; "
            "for a new employee, POST their attributes to /recommendations"
        )
    return snapshot.trainings_of(snapshot.table.items[row], snapshot.table.scores[row], n)


@dataclass(frozen=True)
class NewEmployeeAnswer:
    trainings: list[dict[str, Any]]
    ignored_values: list[str]  # attribute values the model has never seen


def recommend_new(
    snapshot: Snapshot,
    attributes: Mapping[str, str | Sequence[str]],
    n: int,
    contract: DataContract,
    exclude_training_ids: Sequence[str] = (),
) -> NewEmployeeAnswer:
    """Score an employee the model has never seen from their attributes alone."""
    frame = entity_frame([attributes], contract.users, contract.value_delimiter)
    normalize = bool(
        snapshot.bundle.metadata.get("config", {}).get("features", {}).get("normalize", True)
    )
    rows, ignored = rows_for_new(
        frame,
        contract.users,
        contract.value_delimiter,
        IdMap(snapshot.bundle.user_feature_names),
        normalize,
    )
    exclude = None
    if exclude_training_ids:
        cols = snapshot.trainings.rows(list(exclude_training_ids))
        cols = cols[cols >= 0]
        exclude = sp.csr_matrix(
            (np.ones(len(cols)), (np.zeros(len(cols), dtype=np.int64), cols)),
            shape=(1, len(snapshot.trainings)),
        )
    items, scores = snapshot.recommender.for_feature_rows(rows, n, exclude)
    return NewEmployeeAnswer(snapshot.trainings_of(items[0], scores[0], n), ignored)


def similar_trainings(snapshot: Snapshot, training_id: str, n: int) -> list[dict[str, Any]]:
    row = snapshot.trainings.row(training_id)
    if row is None:
        raise NotFoundError(f"training {training_id!r} is not in the serving model's catalog")
    items, scores = snapshot.recommender.similar(row, n)
    return snapshot.trainings_of(items, scores, n)


def contract_of(snapshot: Snapshot, fallback: Config) -> DataContract:
    """The data contract the model was trained with (new employees are read the same way)."""
    stored = snapshot.bundle.metadata.get("config", {}).get("contract")
    return DataContract.model_validate(stored) if stored else fallback.contract
