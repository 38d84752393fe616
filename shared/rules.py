"""Business rules and filters over a model's catalog (pure numpy).

Which trainings may be recommended at all (retired, absent from the latest
extract, excluded), which are pinned first, how many results may share a
provider or a skill, and the attribute filters an intranet page asks for.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

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


def fresh_trainings(bundle: ModelBundle, new_days: int, today: date) -> np.ndarray:
    """Mask of the trainings that are new on ``today``: first seen within ``new_days``
    (without a first-seen date, those added since the model was trained)."""
    if bundle.item_first_seen is None:
        return np.arange(len(bundle.item_ids)) >= bundle.n_trained_items
    since = np.datetime64(today - timedelta(days=new_days))
    seen = bundle.item_first_seen
    fresh: np.ndarray = ~np.isnat(seen) & (seen > since)
    return fresh


@dataclass(frozen=True)
class Rules:
    """Rules compiled against one model's catalog."""

    active: np.ndarray  # bool per training
    pinned: np.ndarray  # training rows, in configured order
    caps: list[tuple[np.ndarray, int]]  # (value code per training, most results per value)
    fresh: np.ndarray  # bool per training: new (flagged so, and may take reserved places)
    new_share: float = 0.0  # of each list, at most this share reserved for new trainings

    @classmethod
    def compile(
        cls,
        bundle: ModelBundle,
        active: np.ndarray,
        options: RulesOptions,
        today: date | None = None,
    ) -> Rules:
        rows = IdMap(bundle.item_ids).rows(list(options.pinned)) if options.pinned else np.empty(0)
        columns = bundle.metadata.item_attribute_columns
        caps = []
        for name, limit in options.max_per_value.items():
            if name in columns:
                codes, _ = pd.factorize(pd.Series(bundle.item_attributes[:, columns.index(name)]))
                caps.append((np.asarray(codes), limit))
        if options.excluded:  # the serving configuration may exclude more than precompute did
            active = active & ~np.isin(bundle.item_ids, np.asarray(options.excluded, dtype=str))
        fresh = fresh_trainings(bundle, options.new_days, today or date.today())
        return cls(active, rows[rows >= 0].astype(np.int64), caps, fresh, options.new_share)

    def allowed(self, filtered: np.ndarray | None) -> np.ndarray:
        """Trainings that may be answered: active ones, within the filters if any."""
        return self.active if filtered is None else self.active & filtered

    @property
    def reorders(self) -> bool:
        """Whether the rules change a plain top-k (pinned trainings, diversity caps or
        places for new trainings)."""
        return bool(len(self.pinned) or self.caps or (self.new_share and self.fresh.any()))

    def new_places(self, n: int) -> int:
        """How many of a list of ``n`` may go to new trainings (rounded down)."""
        return int(n * self.new_share + 1e-9) if self.fresh.any() else 0

    def with_new(
        self,
        chosen: list[tuple[int, float, bool]],
        n: int,
        scores: Callable[[], np.ndarray],
        allowed: np.ndarray,
        excluded: np.ndarray,
    ) -> list[tuple[int, float, bool]]:
        """``chosen`` with its reserved places given to the best new trainings.

        When fewer than :meth:`new_places` of the list are new, the best allowed new
        trainings (by ``scores()``, the employee's score of every training, computed
        only then) not ``excluded`` (taken, dismissed) take the places of the lowest
        ranked others (never a pinned one), at evenly spread ranks: with a share of
        0.2, the 5th and the 10th. Diversity caps do not apply to these places.
        """
        places = self.new_places(n)
        have = sum(bool(self.fresh[row]) for row, _, _ in chosen)
        if have >= places:
            return chosen
        candidates = self.fresh & allowed
        candidates[excluded] = False
        candidates[[row for row, _, _ in chosen]] = False
        rows = np.flatnonzero(candidates)
        if not len(rows):
            return chosen
        values = scores()[rows]
        order = np.argsort(-values, kind="stable")[: places - have]
        best = list(zip(rows[order].tolist(), values[order].tolist(), strict=True))
        kept = list(chosen)
        for _ in range(max(0, len(kept) + len(best) - n)):  # make room from the bottom
            drop = next(
                (
                    i
                    for i in range(len(kept) - 1, -1, -1)
                    if not (kept[i][2] or self.fresh[kept[i][0]])
                ),
                None,
            )
            if drop is None:
                break
            kept.pop(drop)
        for k, (row, score) in enumerate(best[: n - len(kept)], start=have + 1):
            place = min(len(kept), math.ceil(k / self.new_share) - 1)
            kept.insert(place, (row, score, False))
        return kept
