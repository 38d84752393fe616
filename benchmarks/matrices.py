"""Build the interaction and feature matrices from the three clean frames.

Measured side by side in one run, on the same synthetic extracts:

* baseline: ``lightfm.data.Dataset`` — ``fit`` + ``build_interactions`` +
  ``build_user_features`` + ``build_item_features`` — configured as ours (identity
  features for trainings only, rows normalized to sum 1). Only those four calls are
  timed: turning the frames into the per-row feature lists they take is left out,
  to the baseline's advantage;
* ours: :func:`shared.features.build_dataset`, from the frames to the matrices.

The frames are what :func:`shared.schema.parse_all` returns, for both: validation
already hashes every id (to drop interactions naming unknown employees) and every
attribute cell (to strip it once per distinct value), so it keeps those encodings —
trainings-taken ids and attributes are categorical — and the matrices reuse them.

Both results are then compared after mapping rows by id and columns by feature
name: they must be identical (same entries, equal values).

    python -m benchmarks matrices            # 100,000 employees, 1,000,000 trainings taken
    python -m benchmarks matrices --small    # 10,000 employees, 100,000 trainings taken
"""

from __future__ import annotations

import io
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from benchmarks.common import Table, header, log, measure, parse_sizes, synthetic_csvs

FULL = {"users": 100_000, "trainings": 5_000, "interactions": 1_000_000}
SMALL = {"users": 10_000, "trainings": 2_000, "interactions": 100_000}


def load_frames(n_users: int, n_trainings: int, n_interactions: int) -> Any:
    """The clean frames of :func:`shared.schema.parse_all` over cached synthetic extracts."""
    from shared.schema import parse_all
    from shared.settings import Config

    paths = synthetic_csvs(n_users, n_trainings, n_interactions)
    return parse_all(
        io.BytesIO(paths["users"].read_bytes()),
        io.BytesIO(paths["trainings"].read_bytes()),
        io.BytesIO(paths["trainings-taken"].read_bytes()),
        Config().contract,
    )


def feature_lists(frame: pd.DataFrame, columns: Any, delimiter: str) -> list[list[str]]:
    """Per row, its ``column:value`` names, written the plain way (independent of ours).

    A value listed twice in a cell is named once, as ours counts it once.
    """
    cells = {c: frame[c].astype(str).tolist() for c in columns.features}
    out: list[list[str]] = []
    for i in range(len(frame)):
        names: dict[str, None] = {}
        for column in columns.features:
            cell = cells[column][i]
            pieces = cell.split(delimiter) if column in columns.multi_valued else [cell]
            for piece in pieces:
                value = piece.strip().lower()
                if value:
                    names[f"{column}:{value}"] = None
        out.append(list(names))
    return out


def lightfm_inputs(extracts: Any, config: Any) -> dict[str, Any]:
    contract = config.contract
    delimiter = contract.value_delimiter
    user_lists = feature_lists(extracts.users, contract.users, delimiter)
    item_lists = feature_lists(extracts.trainings, contract.trainings, delimiter)
    taken = extracts.taken
    return {
        "user_ids": extracts.users["id"].tolist(),
        "item_ids": extracts.trainings["id"].tolist(),
        "user_lists": user_lists,
        "item_lists": item_lists,
        "user_names": sorted({n for names in user_lists for n in names}),
        "item_names": sorted({n for names in item_lists for n in names}),
        "interactions": list(
            zip(
                taken["user_id"].tolist(),
                taken["training_id"].tolist(),
                taken["weight"].astype(np.float32).tolist(),
                strict=True,
            )
        ),
    }


def as_in_a_file(interactions: list[tuple[str, str, float]]) -> list[tuple[str, str, float]]:
    """The interactions in a random order, each id its own string object (as read_csv
    makes them): what the four calls get without parse_all's encoding and grouping."""
    order = np.random.default_rng(0).permutation(len(interactions))
    return [((u + " ")[:-1], (t + " ")[:-1], w) for u, t, w in (interactions[i] for i in order)]


def with_lightfm(inputs: dict[str, Any], options: Any) -> tuple[Any, ...]:
    """The baseline: the four ``lightfm.data.Dataset`` calls."""
    from lightfm.data import Dataset

    dataset = Dataset(
        user_identity_features=False,  # employees: attributes (and history, LightFM has no such)
        item_identity_features=options.item_identity,
    )
    dataset.fit(
        inputs["user_ids"],
        inputs["item_ids"],
        user_features=inputs["user_names"],
        item_features=inputs["item_names"],
    )
    interactions, weights = dataset.build_interactions(inputs["interactions"])
    user_features = dataset.build_user_features(
        zip(inputs["user_ids"], inputs["user_lists"], strict=True), normalize=options.normalize
    )
    item_features = dataset.build_item_features(
        zip(inputs["item_ids"], inputs["item_lists"], strict=True), normalize=options.normalize
    )
    return dataset, interactions, weights, user_features, item_features


def _aligned(
    theirs: sp.spmatrix,
    their_rows: dict[str, int],
    their_cols: dict[str, int],
    our_rows: np.ndarray,
    our_cols: np.ndarray,
) -> sp.csr_matrix:
    """Their matrix with rows and columns reordered as ours (by id and by name)."""
    rows = np.asarray([their_rows[str(r)] for r in our_rows], dtype=np.int64)
    cols = np.asarray([their_cols[str(c)] for c in our_cols], dtype=np.int64)
    return sp.csr_matrix(theirs.tocsr()[rows][:, cols], dtype=np.float32)


def identical(a: sp.spmatrix, b: sp.spmatrix) -> bool:
    a, b = sp.csr_matrix(a, dtype=np.float32), sp.csr_matrix(b, dtype=np.float32)
    a.eliminate_zeros()
    b.eliminate_zeros()
    return bool(a.shape == b.shape and a.nnz == b.nnz and (a != b).nnz == 0)


def compare(ours: Any, baseline: tuple[Any, ...]) -> dict[str, bool]:
    """Whether each of our matrices equals LightFM's, rows mapped by id, columns by name.

    Employees are compared on their attribute columns: the history columns that follow
    them are the trainings taken, which ``lightfm.data.Dataset`` has no notion of.
    """
    dataset, interactions, weights, user_features, item_features = baseline
    user_map, user_feature_map, item_map, item_feature_map = dataset.mapping()

    def their_names(mapping: dict[str, int], ids: dict[str, int]) -> dict[str, int]:
        # LightFM names an identity feature by the bare id; ours is "id:<id>".
        return {(f"id:{n}" if n in ids else n): i for n, i in mapping.items()}

    user_names = their_names(user_feature_map, user_map if dataset._user_identity_features else {})
    item_names = their_names(item_feature_map, item_map if dataset._item_identity_features else {})
    users, items = ours.users.ids, ours.items.ids
    return {
        "interactions": identical(
            ours.taken,
            _aligned(interactions, user_map, item_map, users, items),
        ),
        "weights": identical(ours.weights, _aligned(weights, user_map, item_map, users, items)),
        "user features": identical(
            ours.user_attributes,
            _aligned(user_features, user_map, user_names, users, ours.attribute_names.ids),
        ),
        "item features": identical(
            ours.item_features,
            _aligned(item_features, item_map, item_names, items, ours.item_feature_names.ids),
        ),
    }


def run(sizes: dict[str, int], *, extracts: Any = None) -> Table:
    from shared.features import build_dataset
    from shared.settings import Config

    config = Config()
    header(
        "matrices",
        f"{sizes['users']:,} employees, {sizes['trainings']:,} trainings, "
        f"{sizes['interactions']:,} trainings taken",
    )
    if extracts is None:
        log("reading the synthetic extracts")
        extracts = load_frames(sizes["users"], sizes["trainings"], sizes["interactions"])
    table = Table(
        f"interaction and feature matrices from the three frames: {len(extracts.users):,} "
        f"employees, {len(extracts.trainings):,} trainings, {len(extracts.taken):,} taken"
    )
    import lightfm.data  # imported before timing: its import is not the baseline's work

    del lightfm
    log("baseline: frames -> LightFM's inputs -> lightfm.data.Dataset")
    inputs, prepare = measure(lambda: lightfm_inputs(extracts, config), memory="none", repeat=2)
    baseline, base = measure(
        lambda: with_lightfm(inputs, config.features), memory="separate", repeat=3
    )
    table.add(
        "baseline: lightfm Dataset fit + build_interactions + build_user/item_features",
        base,
        "the four calls only; their inputs prepared beforehand",
        baseline=True,
    )
    table.add(
        "  the same from the frames: per-row feature lists first",
        prepare.seconds + base.seconds,
        f"+ {prepare.seconds:.3f} s turning the frames into LightFM's inputs (plain Python)",
    )
    log("baseline again, on the interactions as a file lists them")
    as_read = {**inputs, "interactions": as_in_a_file(inputs["interactions"])}
    _, unordered = measure(lambda: with_lightfm(as_read, config.features), memory="none", repeat=3)
    table.add(
        "  the same four calls, interactions as a file lists them",
        unordered,
        "shuffled, one str per cell (read_csv's): parse_all's grouping by employee and "
        "shared id strings favour the baseline above",
    )
    log("ours: build_dataset")

    def build() -> Any:
        return build_dataset(
            extracts.users, extracts.trainings, extracts.taken, config.contract, config.features
        )

    dataset, mine = measure(build, memory="separate", repeat=5)
    table.add("ours: shared.features.build_dataset (from the frames)", mine)
    checks = compare(dataset, baseline)
    speedup = base.seconds / mine.seconds
    from_frames = (prepare.seconds + base.seconds) / mine.seconds
    table.target(
        ">= 10x faster than the four lightfm.data.Dataset calls",
        speedup >= 10,
        f"{speedup:,.1f}x",
    )
    table.target(
        ">= 10x faster than lightfm.data.Dataset from the frames",
        from_frames >= 10,
        f"{from_frames:,.1f}x",
    )
    table.target(
        "identical matrices",
        all(checks.values()),
        ", ".join(f"{name} {'identical' if ok else 'DIFFERENT'}" for name, ok in checks.items()),
    )
    table.notes.append(
        f"shapes: interactions {dataset.interactions.shape} "
        f"({dataset.interactions.nnz:,} entries), "
        f"user attributes {dataset.user_attributes.shape}, "
        f"item features {dataset.item_features.shape}"
    )
    table.notes.append("peak MiB: tracemalloc peak of new allocations during a separate traced run")
    table.notes.append(
        "the frames come from parse_all: ids and attributes already encoded (categorical) "
        "by validation, which hashes them anyway; interactions grouped by employee"
    )
    table.notes.append(
        f"ours vs the four calls on interactions as a file lists them: "
        f"{unordered.seconds / mine.seconds:,.1f}x faster"
    )
    table.result = {"checks": checks, "ours": dataset}
    return table


def main(argv: Sequence[str] | None = None) -> int:
    table = run(parse_sizes(argv, SMALL, FULL))
    table.print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
