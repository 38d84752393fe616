"""The catalog as the current trainings extract describes it, between two retrains.

A model knows the trainings it was trained with, as they were then. Titles and
attributes change, and trainings are added: a precompute reads the current extract,
and serves each training with its current title and attributes; a training added
since the model was trained is scored from its attributes (the model's item features:
no identity of its own, no popularity yet) and can be recommended at once, flagged
``new`` in answers. Retired ones disappear through the business rules, as before.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import scipy.sparse as sp

from shared.bundle import ModelBundle
from shared.features import IdMap, rows_for_new
from shared.schema import ID
from shared.settings import DataContract


@dataclass(frozen=True)
class Catalog:
    """Every training to serve: the model's, then the new ones (their feature rows)."""

    ids: np.ndarray
    titles: np.ndarray
    attributes: np.ndarray  # n x the model's item attribute columns, strings
    new_features: sp.csr_matrix  # the new trainings x the model's item features

    @property
    def n_new(self) -> int:
        return int(self.new_features.shape[0])


def current_catalog(
    bundle: ModelBundle, trainings: pd.DataFrame, contract: DataContract
) -> Catalog:
    """The model's trainings with their current title and attributes (as trained, for
    one the extract no longer has), then the extract's trainings the model lacks."""
    columns = bundle.metadata.item_attribute_columns
    trained = bundle.item_ids[: bundle.n_trained_items].astype(str)
    extract_ids = trainings[ID].to_numpy(dtype=str)
    where = IdMap.of(extract_ids).rows(trained.tolist())
    found = where >= 0

    def current(values: np.ndarray, column: str | None) -> np.ndarray:
        kept = np.asarray(values[: len(trained)], dtype=object).copy()
        if column is not None and column in trainings:
            kept[found] = trainings[column].to_numpy(dtype=object)[where[found]]
        return kept

    titles = current(bundle.item_titles, "title")
    attributes = (
        np.stack([current(bundle.item_attributes[:, i], c) for i, c in enumerate(columns)], axis=1)
        if columns
        else np.empty((len(trained), 0), dtype=object)
    )
    new = trainings[~np.isin(extract_ids, trained)]
    features, _ = rows_for_new(
        new,
        contract.trainings,
        contract.value_delimiter,
        IdMap(bundle.item_feature_names),
        bundle.normalize,
    )
    new_attributes = (
        new[columns].to_numpy(dtype=object) if columns else np.empty((len(new), 0), object)
    )
    return Catalog(
        np.concatenate([trained, new[ID].to_numpy(dtype=str)]),
        np.concatenate([titles, new["title"].to_numpy(dtype=object)]).astype(str),
        np.concatenate([attributes, new_attributes]).astype(str),
        features.astype(np.float32),
    )


def extend(bundle: ModelBundle, catalog: Catalog) -> ModelBundle:
    """The bundle serving ``catalog``: current titles and attributes, the new trainings
    after the model's with their feature rows, never taken, no popularity yet."""
    base = bundle.n_trained_items
    n_items = base + catalog.n_new

    def wider(matrix: sp.csr_matrix) -> sp.csr_matrix:
        rows = sp.csr_matrix(matrix[:, :base])
        return sp.csr_matrix((rows.data, rows.indices, rows.indptr), shape=(rows.shape[0], n_items))

    return replace(
        bundle,
        item_ids=catalog.ids,
        item_titles=catalog.titles,
        item_attributes=catalog.attributes,
        item_features=sp.vstack(
            [bundle.item_features[:base], catalog.new_features], format="csr", dtype=np.float32
        ),
        taken=wider(bundle.taken),
        popularity=np.concatenate(
            [bundle.popularity[:base], np.zeros(catalog.n_new, bundle.popularity.dtype)]
        ),
        department_popularity=wider(bundle.department_popularity),
        new_items=catalog.n_new,
    )
