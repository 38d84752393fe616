"""The catalog as the current trainings extract describes it, between two retrains.

A model knows the trainings it was trained with, as they were then. Titles and
attributes change, and trainings are added: a precompute reads the current extract,
and serves each training with its current title and attributes; a training added
since the model was trained is scored from its attributes (the model's item features:
no identity of its own, no popularity yet) and can be recommended at once, flagged
``new`` in answers. Retired ones disappear through the business rules, as before.

When each training first appeared is kept in a small ledger (``recommendations/first-seen.json``,
id -> ISO date): a training is *new* for ``rules.new_days`` days after that date, across
retrains. The ledger starts with the trainings of the first precompute that writes it
dated "before records" (never new), except those the model lacks (added since the
retrain), dated that day.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date

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
    # When each training first appeared (datetime64[D]; NaT: before records began);
    # None for a table written before the ledger existed.
    first_seen: np.ndarray | None = None

    @property
    def n_new(self) -> int:
        return int(self.new_features.shape[0])

    def ledger(self) -> dict[str, str | None]:
        """The first-seen ledger this catalog was dated with, its trainings included."""
        if self.first_seen is None:
            return {}
        days = np.datetime_as_string(self.first_seen, unit="D")
        return {
            str(i): (None if np.isnat(d) else str(text))
            for i, d, text in zip(self.ids, self.first_seen, days, strict=True)
        }


Ledger = Mapping[str, str | None]  # training id -> ISO date first seen (None: before records)


def first_seen(ids: np.ndarray, n_trained: int, ledger: Ledger | None, today: date) -> np.ndarray:
    """Per training of a catalog (the model's first), the day it first appeared.

    A training the ledger has keeps its date; one it lacks appeared ``today``, except,
    when there is no ledger yet, the model's own trainings (there before records began).
    """
    known = ledger or {}
    dates = np.full(len(ids), np.datetime64("NaT"), dtype="datetime64[D]")
    for row, training in enumerate(ids.tolist()):
        if training in known:
            day = known[training]
            dates[row] = np.datetime64(day) if day else np.datetime64("NaT")
        elif ledger is not None or row >= n_trained:
            dates[row] = np.datetime64(today)
    return dates


def current_catalog(
    bundle: ModelBundle,
    trainings: pd.DataFrame,
    contract: DataContract,
    ledger: Ledger | None = None,
    today: date | None = None,
) -> Catalog:
    """The model's trainings with their current title and attributes (as trained, for
    one the extract no longer has), then the extract's trainings the model lacks,
    dated by the first-seen ``ledger`` (see :func:`first_seen`)."""
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
    ids = np.concatenate([trained, new[ID].to_numpy(dtype=str)])
    return Catalog(
        ids,
        np.concatenate([titles, new["title"].to_numpy(dtype=object)]).astype(str),
        np.concatenate([attributes, new_attributes]).astype(str),
        features.astype(np.float32),
        first_seen(ids, len(trained), ledger, today or date.today()),
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
        item_first_seen=catalog.first_seen,
    )
