"""ModelBundle: everything serving needs, to and from bytes (``.npz`` + JSON, no pickle).

A bundle carries the factors with the id and feature maps that give them meaning
(lightfm#698 shows the cost of shipping one without the other), the employees'
feature rows and taken trainings (to score and exclude), the trainings' titles and
attributes (to answer with them), the popularity priors of the fallback scorers,
and metadata: configuration, data fingerprints, counts, metrics, the scorer serving
each population, training history and library versions.
"""

from __future__ import annotations

import io
import json
import secrets
import zipfile
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import scipy.sparse as sp
from pydantic import ValidationError

from shared.errors import ModelLoadError
from shared.metadata import ModelMetadata

FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)  # format 1: no priors, no history features; the model serves all
NPZ_NAME = "model.npz"
JSON_NAME = "model.json"

_DENSE = (
    "user_ids",
    "item_ids",
    "item_titles",
    "item_attributes",
    "user_feature_names",
    "item_feature_names",
    "user_feature_embeddings",
    "user_feature_biases",
    "item_feature_embeddings",
    "item_feature_biases",
    "popularity",
    "department_columns",
)
_SPARSE = ("user_features", "item_features", "taken", "department_popularity")
_ROWS = ("user_features", "taken")  # one row per trained employee
_PARTS = ("data", "indices", "indptr", "shape")


def sparse_arrays(name: str, matrix: sp.csr_matrix) -> dict[str, np.ndarray]:
    """A CSR matrix as plain arrays for an ``.npz`` archive (no pickle needed)."""
    return {
        f"{name}_data": matrix.data,
        f"{name}_indices": matrix.indices,
        f"{name}_indptr": matrix.indptr,
        f"{name}_shape": np.asarray(matrix.shape, dtype=np.int64),
    }


def sparse_from(name: str, archive: Any) -> sp.csr_matrix:
    """The CSR matrix :func:`sparse_arrays` stored; indices are checked against the shape."""
    shape = tuple(int(x) for x in archive[f"{name}_shape"])
    parts = (archive[f"{name}_data"], archive[f"{name}_indices"], archive[f"{name}_indptr"])
    matrix = sp.csr_matrix(parts, shape=shape)
    matrix.check_format(full_check=True)
    return matrix


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def new_version(fingerprint: str, now: datetime | None = None) -> str:
    """A unique version name that sorts by time: ``20261129T101500Z-3fa2c1-9b04``.

    The time, then the data's fingerprint, then a random part: two runs in the same
    second on the same data still get two names (published files are never replaced).
    """
    moment = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"{moment}-{fingerprint[:6]}-{secrets.token_hex(2)}"


@dataclass
class ModelBundle:
    """A trained model, ready to score without LightFM."""

    user_ids: np.ndarray
    item_ids: np.ndarray
    item_titles: np.ndarray
    item_attributes: np.ndarray  # n_items x len(metadata["item_attribute_columns"]), strings
    user_feature_names: np.ndarray
    item_feature_names: np.ndarray
    user_feature_embeddings: np.ndarray  # n_user_features x k
    user_feature_biases: np.ndarray
    item_feature_embeddings: np.ndarray
    item_feature_biases: np.ndarray
    user_features: sp.csr_matrix  # n_users x n_user_features
    item_features: sp.csr_matrix  # n_items x n_item_features
    taken: sp.csr_matrix  # n_users x n_items, trainings each employee already took
    metadata: ModelMetadata
    # Priors of the popularity scorers: log(1 + successes) of each training, overall
    # and per department (rows: the attribute feature columns naming a department).
    popularity: np.ndarray = field(default_factory=lambda: np.empty(0, np.float32))
    department_columns: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    department_popularity: sp.csr_matrix = field(default_factory=lambda: sp.csr_matrix((0, 0)))
    # Trainings added to the catalog after training, scored from their attributes; they
    # come last in item_ids (see shared.catalog). Serving only: never written.
    new_items: int = 0
    # When each training first appeared (datetime64[D], NaT: before records), from the
    # catalog's ledger; None: unknown (then only the trainings added since are new).
    item_first_seen: np.ndarray | None = None

    def __post_init__(self) -> None:
        n_items = len(self.item_ids)
        if not len(self.popularity):
            self.popularity = np.zeros(n_items, np.float32)
        if self.department_popularity.shape == (0, 0):
            self.department_popularity = sp.csr_matrix((0, n_items), dtype=np.float32)

    @property
    def version(self) -> str:
        return self.metadata.version

    @property
    def history(self) -> bool:
        """Whether employees are described by their history too (features after attributes)."""
        return self.metadata.config.features.history

    @property
    def normalize(self) -> bool:
        """Whether attribute weights sum to 1 per employee (as when it was trained)."""
        return self.metadata.config.features.normalize

    @property
    def n_trained_items(self) -> int:
        """The trainings the model was trained with: the first ones of item_ids."""
        return len(self.item_ids) - self.new_items

    @property
    def n_attributes(self) -> int:
        """How many of the employee feature columns are attributes (the history follows)."""
        return len(self.user_feature_names) - (self.n_trained_items if self.history else 0)

    def check(self) -> None:
        """Raise :class:`ModelLoadError` unless every array agrees with the others."""
        sizes: dict[str, int] = {}
        for name in ("user_ids", "item_ids", "user_feature_names", "item_feature_names"):
            array = getattr(self, name)
            if array.ndim != 1:
                raise ModelLoadError(
                    f"bundle {self.version}: {name} has shape {array.shape}, expected a list"
                )
            sizes[name] = len(array)
        n_users, n_items = sizes["user_ids"], sizes["item_ids"]
        n_user_features, n_item_features = sizes["user_feature_names"], sizes["item_feature_names"]
        # None: any size (the number of factors, of attribute columns).
        expected: dict[str, tuple[int | None, ...]] = {
            "user_features": (n_users, n_user_features),
            "item_features": (n_items, n_item_features),
            "taken": (n_users, n_items),
            "user_feature_embeddings": (n_user_features, None),
            "item_feature_embeddings": (n_item_features, None),
            "user_feature_biases": (n_user_features,),
            "item_feature_biases": (n_item_features,),
            "item_titles": (n_items,),
            "item_attributes": (n_items, None),
            "popularity": (n_items,),
            "department_columns": (len(self.department_columns),),
            "department_popularity": (len(self.department_columns), n_items),
        }
        for name, shape in expected.items():
            actual = getattr(self, name).shape
            if len(actual) != len(shape) or any(
                want is not None and got != want for got, want in zip(actual, shape, strict=True)
            ):
                wanted = tuple("any" if want is None else want for want in shape)
                raise ModelLoadError(
                    f"bundle {self.version}: {name} has shape {actual}, expected {wanted}"
                )
        if self.user_feature_embeddings.shape[1] != self.item_feature_embeddings.shape[1]:
            raise ModelLoadError(f"bundle {self.version}: user and item factors differ in size")
        if self.n_attributes < 0 or (
            len(self.department_columns)
            and not 0
            <= int(self.department_columns.min())
            <= int(self.department_columns.max())
            < self.n_attributes
        ):
            raise ModelLoadError(f"bundle {self.version}: feature columns do not match its maps")
        for name in (
            "user_feature_embeddings",
            "item_feature_embeddings",
            "user_feature_biases",
            "item_feature_biases",
            "popularity",
        ):
            array = getattr(self, name)
            if not np.issubdtype(array.dtype, np.number) or not np.isfinite(array).all():
                raise ModelLoadError(
                    f"bundle {self.version}: {name} holds NaN, infinity or non-numbers"
                )

    def to_bytes(self) -> tuple[bytes, bytes]:
        """Serialize as (``model.npz`` bytes, ``model.json`` bytes)."""
        if self.new_items:
            raise ValueError("a bundle extended with new trainings is not written")
        self.check()
        arrays: dict[str, np.ndarray] = {name: np.asarray(getattr(self, name)) for name in _DENSE}
        for name in _SPARSE:
            arrays.update(sparse_arrays(name, getattr(self, name)))
        meta = self.metadata.model_copy(update={"format_version": FORMAT_VERSION})
        text = json.dumps(meta.model_dump(mode="json"), indent=2, sort_keys=True)
        return npz_bytes(arrays), text.encode()

    @classmethod
    def from_bytes(cls, npz: bytes, meta: bytes, *, employees: bool = True) -> ModelBundle:
        """Load a bundle; anything unreadable or inconsistent raises :class:`ModelLoadError`.

        ``employees=False`` leaves out the trained employees' rows (ids, features,
        trainings taken): serving describes everyone from the recommendation table, and
        at 300,000 employees these rows are a quarter of the load time and memory.
        """
        try:
            metadata = metadata_from_json(meta)
            with np.load(io.BytesIO(npz), allow_pickle=False) as archive:
                present = set(archive.files)
                if not employees:
                    present -= {"user_ids", *(f"{n}_{p}" for n in _ROWS for p in _PARTS)}
                dense = {name: archive[name] for name in _DENSE if name in present}
                sparse = {
                    name: sparse_from(name, archive)
                    for name in _SPARSE
                    if f"{name}_shape" in present
                }
            if not employees:
                dense["user_ids"] = np.empty(0, dtype=str)
                widths = {"user_features": "user_feature_names", "taken": "item_ids"}
                for name, width in widths.items():
                    sparse[name] = sp.csr_matrix((0, len(dense[width])), dtype=np.float32)
            if metadata.format_version == FORMAT_VERSION and len(dense) + len(sparse) < len(
                _DENSE + _SPARSE
            ):
                missing = [n for n in (*_DENSE, *_SPARSE) if n not in dense and n not in sparse]
                raise ModelLoadError(f"bundle lacks {', '.join(missing)}")
        except ModelLoadError:
            raise
        except (
            ValueError,
            KeyError,
            OSError,
            zipfile.BadZipFile,
            zlib.error,  # a corrupted member
            EOFError,
            AttributeError,
            TypeError,  # e.g. a bare .npy array where the .npz archive should be
        ) as exc:
            raise ModelLoadError(f"model bundle cannot be read: {exc}") from None
        bundle = cls(**dense, **sparse, metadata=metadata)
        bundle.check()
        return bundle


def metadata_from_json(data: bytes) -> ModelMetadata:
    """A ``model.json`` as :class:`ModelMetadata`; :class:`ModelLoadError` names the field.

    A format-1 file (before history features and per-population scorers) is read as
    what it was: employees described by their attributes alone.
    """
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"model.json is not JSON: {exc}") from None
    if not isinstance(raw, dict) or raw.get("format_version") not in READABLE_FORMATS:
        found = raw.get("format_version") if isinstance(raw, dict) else type(raw).__name__
        raise ModelLoadError(f"bundle format {found!r} is not one of {READABLE_FORMATS}")
    if raw["format_version"] == 1:
        features = raw.get("config", {}).get("features", {})
        if isinstance(features, dict):
            features.setdefault("history", False)
    try:
        return ModelMetadata.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise ModelLoadError(f"model.json: {problems}") from None
