"""ModelBundle: everything serving needs, to and from bytes (``.npz`` + JSON, no pickle).

A bundle carries the factors with the id and feature maps that give them meaning
(lightfm#698 shows the cost of shipping one without the other), the employees'
feature rows and taken trainings (to score and exclude), the trainings' titles and
attributes (to answer with them), and metadata: configuration, data fingerprints,
counts, metrics, training history and library versions.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import scipy.sparse as sp

from shared.errors import ModelLoadError

FORMAT_VERSION = 1
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
)
_SPARSE = ("user_features", "item_features", "taken")


def new_version(fingerprint: str, now: datetime | None = None) -> str:
    """A version name that sorts by time and names the data: ``20261129T101500Z-3fa2c1``."""
    moment = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"{moment}-{fingerprint[:6]}"


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
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def version(self) -> str:
        return str(self.metadata.get("version", "unversioned"))

    def check(self) -> None:
        """Raise :class:`ModelLoadError` unless every array agrees with the others."""
        n_users, n_items = len(self.user_ids), len(self.item_ids)
        expected = {
            "user_features": (n_users, len(self.user_feature_names)),
            "item_features": (n_items, len(self.item_feature_names)),
            "taken": (n_users, n_items),
            "user_feature_embeddings": (len(self.user_feature_names),),
            "item_feature_embeddings": (len(self.item_feature_names),),
            "user_feature_biases": (len(self.user_feature_names),),
            "item_feature_biases": (len(self.item_feature_names),),
            "item_titles": (n_items,),
            "item_attributes": (n_items,),
        }
        for name, shape in expected.items():
            actual = getattr(self, name).shape
            if actual[: len(shape)] != shape:
                raise ModelLoadError(
                    f"bundle {self.version}: {name} has shape {actual}, expected {shape}"
                )
        if self.user_feature_embeddings.shape[1] != self.item_feature_embeddings.shape[1]:
            raise ModelLoadError(f"bundle {self.version}: user and item factors differ in size")
        for name in ("user_feature_embeddings", "item_feature_embeddings"):
            if not np.isfinite(getattr(self, name)).all():
                raise ModelLoadError(f"bundle {self.version}: {name} holds NaN or infinity")

    def to_bytes(self) -> tuple[bytes, bytes]:
        """Serialize as (``model.npz`` bytes, ``model.json`` bytes)."""
        self.check()
        arrays: dict[str, np.ndarray] = {name: np.asarray(getattr(self, name)) for name in _DENSE}
        for name in _SPARSE:
            matrix: sp.csr_matrix = getattr(self, name)
            arrays[f"{name}_data"] = matrix.data
            arrays[f"{name}_indices"] = matrix.indices
            arrays[f"{name}_indptr"] = matrix.indptr
            arrays[f"{name}_shape"] = np.asarray(matrix.shape, dtype=np.int64)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]
        meta = {**self.metadata, "format_version": FORMAT_VERSION}
        return buffer.getvalue(), json.dumps(meta, indent=2, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, npz: bytes, meta: bytes) -> ModelBundle:
        """Load a bundle; anything unreadable or inconsistent raises :class:`ModelLoadError`."""
        try:
            metadata = json.loads(meta)
            if metadata.get("format_version") != FORMAT_VERSION:
                raise ModelLoadError(
                    f"bundle format {metadata.get('format_version')!r} is not {FORMAT_VERSION}"
                )
            with np.load(io.BytesIO(npz), allow_pickle=False) as archive:
                dense = {name: archive[name] for name in _DENSE}
                sparse = {
                    name: sp.csr_matrix(
                        (
                            archive[f"{name}_data"],
                            archive[f"{name}_indices"],
                            archive[f"{name}_indptr"],
                        ),
                        shape=tuple(int(x) for x in archive[f"{name}_shape"]),
                    )
                    for name in _SPARSE
                }
        except ModelLoadError:
            raise
        except (ValueError, KeyError, OSError, zipfile.BadZipFile, EOFError, AttributeError) as exc:
            raise ModelLoadError(f"model bundle cannot be read: {exc}") from None
        bundle = cls(**dense, **sparse, metadata=metadata)
        bundle.check()
        return bundle
