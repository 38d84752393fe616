"""Versions in blob storage: models (publish, reject, load, list, show) and precomputed
recommendations (load).

::

    models/<version>/model.npz, model.json, card.json, card.html   published versions
    models/rejected/<version>/...                                  candidates the gate refused
    models/current.json                                            the serving version

Version names start with their UTC creation time, so they sort by time. Each
version's ``model.json`` carries the fingerprints of the extracts it was trained
on. Registration in Azure Machine Learning is :mod:`shared.azureml`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from shared.bundle import JSON_NAME, NPZ_NAME, ModelBundle, metadata_from_json
from shared.errors import ModelLoadError, NoModelError, NotFoundError
from shared.layout import (
    MODELS_POINTER,
    describe_damage,
    move_pointer,
    read_pointer,
    utc_now,
)
from shared.metadata import ModelMetadata
from shared.scoring import Population
from shared.storage import BlobStore
from shared.table import RecommendationTable

REJECTED = "rejected"
CARD_JSON = "card.json"
CARD_HTML = "card.html"
REGISTRATION = "registration.json"

CardRenderer = Callable[[ModelMetadata], tuple[bytes, bytes]]  # -> (card.json, card.html)
Status = Literal["published", "rejected"]


def folder(version: str, *, rejected: bool = False) -> str:
    return f"models/{REJECTED}/{version}" if rejected else f"models/{version}"


def write_version(
    store: BlobStore,
    bundle: ModelBundle,
    *,
    rejected: bool = False,
    card: CardRenderer | None = None,
) -> str:
    """Write a bundle (and its card) under its version folder; returns the folder."""
    where = folder(bundle.version, rejected=rejected)
    npz, meta = bundle.to_bytes()
    store.write(f"{where}/{NPZ_NAME}", npz)
    store.write(f"{where}/{JSON_NAME}", meta, content_type="application/json")
    if card is not None:
        card_json, card_html = card(bundle.metadata)
        store.write(f"{where}/{CARD_JSON}", card_json, content_type="application/json")
        store.write(f"{where}/{CARD_HTML}", card_html, content_type="text/html; charset=utf-8")
    return where


def publish(store: BlobStore, bundle: ModelBundle, card: CardRenderer | None = None) -> None:
    """Write a bundle under its version, then move ``models/current.json`` to it."""
    pointer, etag = read_pointer(store, MODELS_POINTER)
    write_version(store, bundle, card=card)
    content = {"version": bundle.version, "previous": pointer.get("version"), "moved_at": utc_now()}
    move_pointer(store, MODELS_POINTER, content, etag)


def current_version(store: BlobStore) -> str:
    pointer, _ = read_pointer(store, MODELS_POINTER)
    if "version" not in pointer:
        raise NoModelError("no model has been published yet: run retrain first")
    return str(pointer["version"])


def load_bundle(store: BlobStore, version: str, *, employees: bool = True) -> ModelBundle:
    """Read a published bundle; a missing or corrupted one raises :class:`ModelLoadError`.
    ``employees=False``: without the trained employees' rows (what serving needs)."""
    try:
        npz = store.read(f"models/{version}/{NPZ_NAME}")
        meta = store.read(f"models/{version}/{JSON_NAME}")
    except NotFoundError as exc:
        raise ModelLoadError(f"model {version} is incomplete: {exc}") from None
    try:
        return ModelBundle.from_bytes(npz, meta, employees=employees)
    except ModelLoadError as exc:
        raise ModelLoadError(f"models/{version}/{NPZ_NAME}: {describe_damage(npz, exc)}") from None


def metadata_of(store: BlobStore, version: str) -> tuple[ModelMetadata, Status]:
    """A version's metadata and its status (:class:`ModelLoadError` if it cannot be read)."""
    places: tuple[tuple[bool, Status], ...] = ((False, "published"), (True, "rejected"))
    for rejected, status in places:
        path = f"{folder(version, rejected=rejected)}/{JSON_NAME}"
        try:
            data = store.read(path)
        except NotFoundError:
            continue
        return _metadata(path, data), status
    raise NotFoundError(f"model version {version!r} does not exist (see `models list`)")


def _metadata(path: str, data: bytes) -> ModelMetadata:
    try:
        return metadata_from_json(data)
    except ModelLoadError as exc:
        raise ModelLoadError(f"{path}: {exc}") from None


@dataclass(frozen=True)
class VersionInfo:
    """One line of ``models list``."""

    version: str
    status: Literal["serving", "published", "rejected"]
    created_at: str
    known_precision: float | None  # what employees with a history are served
    cold_start_precision: float | None  # what new employees are served
    gate: str | None
    fingerprints: dict[str, str]
    registered: bool
    served_by: dict[Population, str] = field(default_factory=dict)  # -> the scorer's name

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def list_versions(store: BlobStore) -> list[VersionInfo]:
    """Every published and rejected version, oldest first."""
    serving = read_pointer(store, MODELS_POINTER)[0].get("version")
    blobs = {info.path for info in store.list("models/")}
    found: list[VersionInfo] = []
    for path in sorted(blobs):
        parts = path.split("/")
        if parts[-1] != JSON_NAME:
            continue
        rejected = len(parts) == 4 and parts[1] == REJECTED
        version = parts[-2]
        meta = _metadata(path, store.read(path))
        status: Literal["serving", "published", "rejected"] = (
            "rejected" if rejected else ("serving" if version == serving else "published")
        )
        found.append(
            VersionInfo(
                version,
                status,
                meta.created_at,
                meta.served_precision("known"),
                meta.served_precision("cold-start"),
                meta.gate.decision if meta.gate else None,
                dict(meta.fingerprints),
                f"{folder(version, rejected=rejected)}/{REGISTRATION}" in blobs,
                meta.served_by(),
            )
        )
    return sorted(found, key=lambda info: info.version)


def versions_table(infos: list[VersionInfo]) -> str:
    """``models list`` as text."""
    if not infos:
        return "no model version yet"

    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    rows = [
        [
            "version",
            "status",
            "p@k known",
            "p@k new",
            "serves known / new",
            "gate",
            "azure ml",
            "data (users/trainings/taken)",
        ]
    ]
    for i in infos:
        data = "/".join(
            i.fingerprints.get(k, "-")[:8] for k in ("users", "trainings", "trainings-taken")
        )
        rows.append(
            [
                i.version,
                i.status,
                fmt(i.known_precision),
                fmt(i.cold_start_precision),
                " / ".join(i.served_by.get(p, "-") for p in ("known", "cold-start")),
                i.gate or "-",
                "yes" if i.registered else "no",
                data,
            ]
        )
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in rows
    )


def load_recommendations(store: BlobStore, version: str) -> RecommendationTable:
    try:
        npz = store.read(f"recommendations/{version}/top.npz")
        meta = store.read(f"recommendations/{version}/meta.json")
    except NotFoundError as exc:
        raise ModelLoadError(f"recommendations {version} are incomplete: {exc}") from None
    try:
        return RecommendationTable.from_bytes(npz, meta)
    except ModelLoadError as exc:
        where = f"recommendations/{version}/top.npz"
        raise ModelLoadError(f"{where}: {describe_damage(npz, exc)}") from None
