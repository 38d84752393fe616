"""Business rules and filters over a model's catalog (pure numpy).

Which trainings may be recommended at all (retired, absent from the latest
extract, excluded), which are pinned first, how many results may share a
provider or a skill, and the attribute filters an intranet page asks for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from shared.bundle import ModelBundle
from shared.errors import TrainingRecommenderError
from shared.features import IdMap
from shared.schema import ID
from shared.settings import RulesOptions


class UnknownFilterError(TrainingRecommenderError):
    """A filter names an attribute the trainings do not have, or is not well formed."""


def parse_filters(items: Sequence[str], separator: str, shown_as: str) -> dict[str, list[str]]:
    """``attribute<separator>value[,value…]`` items → attribute -> accepted values.

    ``shown_as`` names the option in the error (``filter`` in the API, ``--filter`` in
    the CLI); the same attribute given twice accepts the values of both.
    """
    filters: dict[str, list[str]] = {}
    for item in items:
        name, sep, values = item.partition(separator)
        accepted = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not name.strip() or not accepted or len(item) > 600:
            # Not echoed back: the item came from the client.
            raise UnknownFilterError(
                f"a {shown_as} is not attribute{separator}value[,value…], "
                f"e.g. provider{separator}internal"
            )
        filters.setdefault(name.strip(), []).extend(accepted)
    return filters


def active_trainings(
    bundle: ModelBundle, trainings: pd.DataFrame | None, options: RulesOptions
) -> np.ndarray:
    """Mask of the model's trainings that may be recommended today.

    A training is out when it is absent from the latest trainings extract, marked
    retired there, or excluded by configuration.
    """
    active = np.ones(len(bundle.item_ids), dtype=bool)
    if trainings is not None:
        current = trainings
        if options.retired_column and options.retired_column in trainings:
            retired = trainings[options.retired_column].str.strip().str.lower()
            current = trainings[~retired.isin([v.lower() for v in options.retired_values])]
        active &= np.isin(bundle.item_ids, current[ID].to_numpy(dtype=str))
    if options.excluded:
        active &= ~np.isin(bundle.item_ids, np.asarray(options.excluded, dtype=str))
    return active


def filter_mask(bundle: ModelBundle, filters: Mapping[str, Sequence[str]]) -> np.ndarray:
    """Trainings whose attributes match every filter (a value among those given).

    Comparison is case-insensitive and ignores surrounding spaces; a multi-valued
    attribute cell matches when any of its values does.
    """
    columns = bundle.metadata.item_attribute_columns
    mask = np.ones(len(bundle.item_ids), dtype=bool)
    for name, wanted in filters.items():
        if name not in columns:
            raise UnknownFilterError(
                "a filter names an attribute the trainings do not have; they have "
                + ", ".join(columns)
            )
        values = pd.Series(bundle.item_attributes[:, columns.index(name)])
        cells = values.str.lower().str.split(";").explode().str.strip()
        hits = cells.isin([w.strip().lower() for w in wanted])
        mask &= hits.groupby(level=0).any().to_numpy()
    return mask


@dataclass(frozen=True)
class Rules:
    """Rules compiled against one model's catalog."""

    active: np.ndarray  # bool per training
    pinned: np.ndarray  # training rows, in configured order
    caps: list[tuple[np.ndarray, int]]  # (value code per training, most results per value)

    @classmethod
    def compile(cls, bundle: ModelBundle, active: np.ndarray, options: RulesOptions) -> Rules:
        rows = IdMap(bundle.item_ids).rows(list(options.pinned)) if options.pinned else np.empty(0)
        columns = bundle.metadata.item_attribute_columns
        caps = []
        for name, limit in options.max_per_value.items():
            if name in columns:
                codes, _ = pd.factorize(pd.Series(bundle.item_attributes[:, columns.index(name)]))
                caps.append((np.asarray(codes), limit))
        if options.excluded:  # the serving configuration may exclude more than precompute did
            active = active & ~np.isin(bundle.item_ids, np.asarray(options.excluded, dtype=str))
        return cls(active, rows[rows >= 0].astype(np.int64), caps)

    def allowed(self, filtered: np.ndarray | None) -> np.ndarray:
        """Trainings that may be answered: active ones, within the filters if any."""
        return self.active if filtered is None else self.active & filtered

    @property
    def reorders(self) -> bool:
        """Whether the rules change a plain top-k (pinned trainings or diversity caps)."""
        return bool(len(self.pinned) or self.caps)
