"""The precomputed table: every employee's ranked candidates, and the answers read off it.

Pure: no storage. :func:`compute_recommendations` ranks everyone with a model and the
current extracts; :func:`answer_for_row` applies the business rules (and filters) to
one employee's candidates, ranking the whole catalog for that employee only when they
run out; :class:`CsvExport` is the long CSV export for reporting tools.
"""

from __future__ import annotations

import io
import json
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any, BinaryIO

import numpy as np
import pandas as pd
import scipy.sparse as sp

from shared.bundle import ModelBundle, npz_bytes, sparse_arrays, sparse_from
from shared.catalog import Catalog, Ledger, current_catalog, extend
from shared.errors import ModelLoadError
from shared.features import IdMap, employee_rows, interaction_matrices
from shared.lanes import LaneData, lane_data
from shared.progress import NO_PROGRESS, Progress
from shared.rules import Rules, active_trainings
from shared.schema import FORMULA_STARTS, ID, Extracts
from shared.scoring import NO_ITEM, Recommender, select
from shared.settings import Config


@dataclass(frozen=True)
class RecommendationTable:
    """Every employee's ranked candidates, and what it takes to rank them again.

    ``items`` keeps ``serving.depth`` candidates per employee (best first) so that
    filtered answers rarely need more; the feature rows and taken trainings let an
    answer be re-ranked on the fly when they do.
    """

    user_ids: np.ndarray
    items: np.ndarray  # employees x depth, rows of the model's catalog (NO_ITEM = none)
    scores: np.ndarray
    # bool: the employee took a training of the model's catalog, so is served as a
    # known employee (else as a new one)
    from_history: np.ndarray
    user_features: sp.csr_matrix  # employees x the model's user features (with history)
    taken: sp.csr_matrix  # employees x the model's trainings
    active: np.ndarray  # bool per training of the model: may be recommended today
    metadata: dict[str, Any]
    # The trainings served, as the current extract describes them (the model's, then
    # the new ones); None for a table written before: the model's catalog as trained.
    catalog: Catalog | None = None
    lanes: LaneData | None = None  # None for a table written before lanes

    def to_bytes(self) -> bytes:
        return npz_bytes(
            {
                "user_ids": self.user_ids,
                "items": self.items,
                "scores": self.scores,
                "from_history": self.from_history,
                "active": self.active,
                **sparse_arrays("user_features", self.user_features),
                **sparse_arrays("taken", self.taken),
                **(_catalog_arrays(self.catalog) if self.catalog is not None else {}),
                **(self.lanes.to_arrays() if self.lanes is not None else {}),
            }
        )

    @classmethod
    def from_bytes(cls, npz: bytes, meta: bytes) -> RecommendationTable:
        try:
            metadata = json.loads(meta)
            with np.load(io.BytesIO(npz), allow_pickle=False) as archive:
                table = cls(
                    archive["user_ids"],
                    archive["items"],
                    archive["scores"],
                    archive["from_history"],
                    sparse_from("user_features", archive),
                    sparse_from("taken", archive),
                    archive["active"],
                    metadata,
                    _catalog_from(archive) if "catalog_ids" in archive.files else None,
                    LaneData.from_arrays(archive),
                )
        except (
            ValueError,
            KeyError,
            OSError,
            EOFError,
            TypeError,
            zlib.error,
            zipfile.BadZipFile,
        ) as exc:
            raise ModelLoadError(f"recommendation table cannot be read: {exc}") from None
        n = len(table.user_ids)
        if not (
            len(table.items) == len(table.scores) == len(table.from_history) == n
            and table.user_features.shape[0] == table.taken.shape[0] == n
            and (table.lanes is None or len(table.lanes.peer_groups) == n)
        ):
            raise ModelLoadError("recommendation table: arrays of different lengths")
        return table


def _catalog_arrays(catalog: Catalog) -> dict[str, np.ndarray]:
    return {
        "catalog_ids": catalog.ids.astype(str),
        "catalog_titles": catalog.titles.astype(str),
        "catalog_attributes": catalog.attributes.astype(str),
        **sparse_arrays("catalog_new_features", catalog.new_features),
        **(
            {"catalog_first_seen": catalog.first_seen.astype("datetime64[D]").astype(np.int64)}
            if catalog.first_seen is not None
            else {}
        ),
    }


def _catalog_from(archive: Any) -> Catalog:
    return Catalog(
        archive["catalog_ids"],
        archive["catalog_titles"],
        archive["catalog_attributes"],
        sparse_from("catalog_new_features", archive),
        (
            archive["catalog_first_seen"].astype("datetime64[D]")
            if "catalog_first_seen" in archive.files
            else None
        ),
    )


def compute_recommendations(
    bundle: ModelBundle,
    extracts: Extracts,
    config: Config,
    ledger: Ledger | None = None,
    today: date | None = None,
    progress: Progress = NO_PROGRESS,
) -> tuple[RecommendationTable, CsvExport]:
    """Ranked candidates of every employee of the current extracts with the given model.

    Everyone is described by their current attributes and the trainings they took
    in the current extract (so a completion since the last retrain moves their list
    now), exactly as a posted employee would be. Trainings taken (any weight),
    retired or excluded trainings are never candidates. New trainings are dated by the
    first-seen ``ledger`` (the table's catalog carries the ledger to write back).
    """
    serving = config.serving
    today = today or date.today()
    catalog = current_catalog(bundle, extracts.trainings, config.contract, ledger, today)
    bundle = extend(bundle, catalog)
    recommender = Recommender(bundle)
    users = extracts.users
    user_map = IdMap.of(users[ID].to_numpy(dtype=str))
    taken, _, _ = interaction_matrices(extracts.taken, user_map, IdMap(bundle.item_ids))
    feature_rows, _ = employee_rows(bundle, users, config.contract, taken)
    has_history = np.diff(taken.indptr) > 0
    active = active_trainings(bundle, extracts.trainings, config.rules)
    depth = max(serving.depth, serving.top_k)
    # Scored a 16 MiB block at a time on every core: memory is bounded by
    # serving.chunk_size rows of scores, never employees x trainings.
    blocks, block = [], serving.chunk_size * 8  # blocks for progress, chunks inside
    with progress.step("score", len(has_history), "employees") as step:
        for start in range(0, max(len(has_history), 1), block):
            rows = slice(start, start + block)
            blocks.append(
                recommender.for_feature_rows(
                    feature_rows[rows],
                    has_history[rows],
                    depth,
                    taken[rows],
                    active,
                    chunk_size=serving.chunk_size,
                )
            )
            step.advance(len(has_history[rows]))
    items = np.concatenate([items for items, _ in blocks])
    scores = np.concatenate([scores for _, scores in blocks])
    columns = bundle.metadata.item_attribute_columns
    skills_column = config.lanes.training_skills
    lanes = lane_data(
        users,
        extracts.taken,
        taken,
        IdMap(bundle.item_ids),
        pd.Series(bundle.item_attributes[:, columns.index(skills_column)])
        if skills_column in columns
        else None,
        extracts.roles,
        config.contract,
        config.lanes,
    )
    table = RecommendationTable(
        user_map.ids, items, scores, has_history, feature_rows, taken, active, {}, catalog, lanes
    )
    rules = Rules.compile(bundle, active, config.rules, today)
    return table, CsvExport(table, recommender, rules, serving.top_k)


def answer_for_row(
    table: RecommendationTable,
    recommender: Recommender,
    rules: Rules,
    row: int,
    n: int,
    allowed: np.ndarray | None = None,
    dismissed: np.ndarray | None = None,
) -> list[tuple[int, float, bool]]:
    """One employee's final list: rules applied, ``allowed`` (filters) honoured, the
    ``dismissed`` rows left out like trainings taken.

    Starts from the precomputed candidates; ranks the whole catalog for this one
    employee only when they run out while more trainings could qualify.
    """
    mask = rules.allowed(allowed)
    known = bool(table.from_history[row])
    pinned: list[tuple[int, float]] = []
    if len(rules.pinned):  # the feature row is sliced only when it is needed
        scores = recommender.feature_scores(table.user_features[row], known)
        pinned_scores = scores[0, rules.pinned]
        pinned = list(zip(rules.pinned.tolist(), pinned_scores.tolist(), strict=True))
    taken = table.taken.indices[table.taken.indptr[row] : table.taken.indptr[row + 1]]
    if dismissed is not None and len(dismissed):
        taken = np.union1d(taken, dismissed)
    chosen, short = select(
        table.items[row],
        table.scores[row],
        n,
        allowed=mask,
        pinned=pinned,
        taken=taken,
        caps=rules.caps,
    )
    complete = (table.items[row] == NO_ITEM).any()  # every candidate was already kept
    if short and not complete:
        features = table.user_features[row]
        ranked, scores = recommender.for_feature_rows(
            features, np.array([known]), len(mask), table.taken[row], mask
        )
        chosen, _ = select(
            ranked[0], scores[0], n, allowed=mask, pinned=pinned, taken=taken, caps=rules.caps
        )
    return rules.with_new(
        chosen,
        n,
        lambda: recommender.feature_scores(table.user_features[row], known)[0],
        mask,
        taken,
    )


EXPORT_CHUNK = 10_000  # employees per piece of the CSV export


@dataclass(frozen=True)
class CsvExport:
    """The long CSV export for reporting tools: employee id, rank, training id, title,
    score; the top ``k`` of every employee, rules applied.

    Written a piece at a time (:meth:`write`): at 100,000 employees the whole export as
    one frame of Python strings took 1.4 GB for a 160 MB file. Text that a spreadsheet
    would run as a formula (``=``, ``+``, ``-``, ``@``…) is prefixed with an
    apostrophe, as OWASP recommends against CSV injection.
    """

    table: RecommendationTable
    recommender: Recommender
    rules: Rules
    k: int

    def pieces(self, employees: int = EXPORT_CHUNK) -> Iterator[pd.DataFrame]:
        """The export's rows, ``employees`` at a time."""
        bundle = self.recommender.bundle
        ids, titles = _neutralized(bundle.item_ids), _neutralized(bundle.item_titles)
        for start in range(0, len(self.table.user_ids), employees):
            rows = np.arange(start, min(start + employees, len(self.table.user_ids)))
            items, scores = self._top(rows)
            n, k = items.shape
            valid = items != NO_ITEM
            flat = items[valid]
            owners = np.broadcast_to(rows[:, None], (n, k))[valid]
            yield pd.DataFrame(
                {
                    "employee_id": _neutralized(self.table.user_ids[owners]),
                    "rank": np.broadcast_to(np.arange(1, k + 1), (n, k))[valid],
                    "training_id": ids[flat],
                    "title": titles[flat],
                    "score": np.round(scores[valid], 6),
                }
            )

    def _top(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not self.rules.reorders:
            return self.table.items[rows, : self.k], self.table.scores[rows, : self.k]
        # Pinned trainings, diversity caps or places for new ones: employee by employee.
        items = np.full((len(rows), self.k), NO_ITEM, dtype=np.int32)
        scores = np.zeros(items.shape, dtype=np.float32)
        for i, row in enumerate(rows.tolist()):
            chosen = answer_for_row(self.table, self.recommender, self.rules, row, self.k)
            for rank, (item, score, _) in enumerate(chosen):
                items[i, rank], scores[i, rank] = item, score
        return items, scores

    def write(self, out: BinaryIO, progress: Progress = NO_PROGRESS) -> None:
        """The CSV (UTF-8, a header line) into ``out``, a piece at a time."""
        employees = len(self.table.user_ids)
        with progress.step("export", employees, "employees") as step:
            for number, piece in enumerate(self.pieces()):
                out.write(piece.to_csv(index=False, header=number == 0).encode("utf-8"))
                step.advance(min(EXPORT_CHUNK, employees - number * EXPORT_CHUNK))

    def frame(self) -> pd.DataFrame:
        """The whole export as one frame (small tables: tests, the demo)."""
        return pd.concat(list(self.pieces()), ignore_index=True)


def _neutralized(values: np.ndarray) -> np.ndarray:
    text = values.astype(str)
    risky = np.char.startswith(text, FORMULA_STARTS[0])
    for start in FORMULA_STARTS[1:]:
        risky |= np.char.startswith(text, start)
    return np.where(risky, np.char.add("'", text), text)
