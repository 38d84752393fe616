"""Id maps and sparse matrices: interactions, weights, user and item features.

No per-row Python loop: cells are factorized (one hash lookup each; parsed
extracts come categorical, encoded by validation already) and only the distinct
values are split, cleaned and named, ids are looked up once per distinct id, and
the matrices are built from sorted integer keys — 100,000 employees and a million
trainings taken build in about 0.12 s, the same matrices as ``lightfm.data.Dataset``
(``python -m benchmarks matrices``). Feature columns are named ``column:value``
(``skills:python``); identity features ``id:<id>`` come first when enabled, so row
``i``'s identity is column ``i`` as in ``lightfm.data.Dataset``.

An employee is described by their attributes and, after them, by the trainings they
took: one feature ``taken:<training id>`` per training of the catalog, in catalog
order, the history's weights summing to 1 (:func:`describe_employees`). The same
description serves the fit, the precomputed lists and a new employee posted to the
API, so that the same attributes and history always get the same list.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from shared.bundle import ModelBundle
from shared.schema import ID, band_labels, distinct_codes, positions
from shared.settings import DataContract, EntityColumns, FeatureOptions

IDENTITY_PREFIX = "id:"
HISTORY_PREFIX = "taken:"
_FEW_IDS = 16  # looked up one by one below this; through an index above
_SCAN_IDS = 4096  # a map this short is scanned rather than indexed for a single lookup


@dataclass(frozen=True)
class IdMap:
    """The one place that maps external string ids to matrix rows and back."""

    ids: np.ndarray  # unicode array, position = row

    @classmethod
    def of(cls, ids: Iterable[str]) -> IdMap:
        return cls(np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids, dtype=str))

    @property
    def index(self) -> pd.Index:
        # Built once per map and cached on the instance (frozen dataclass).
        cached: pd.Index | None = self.__dict__.get("_index")
        if cached is None:
            cached = pd.Index(self.ids)
            object.__setattr__(self, "_index", cached)
        return cached

    def rows(self, ids: Sequence[str] | np.ndarray | pd.Series) -> np.ndarray:
        """Rows of ``ids``; -1 for an id the map does not know."""
        if len(ids) <= _FEW_IDS:  # one API request's few values: no index to build
            found = [self.row(id_) for id_ in np.asarray(ids, dtype=str).tolist()]
            return np.asarray([-1 if r is None else r for r in found], dtype=np.int64)
        wanted = pd.Index(np.asarray(ids, dtype=str))
        return np.asarray(self.index.get_indexer(wanted), dtype=np.int64)

    def row(self, id_: str) -> int | None:
        # One id per HTTP request: a hash lookup, without building an index of one.
        if "_index" not in self.__dict__ and len(self.ids) <= _SCAN_IDS:
            hits = np.flatnonzero(self.ids == str(id_))  # a short map: a scan beats an index
            return int(hits[0]) if len(hits) else None
        try:
            found = self.index.get_loc(str(id_))
        except KeyError:
            return None
        if isinstance(found, int | np.integer):
            return int(found)
        if isinstance(found, slice):  # an id listed twice: its first row
            return int(found.start or 0)
        return int(np.flatnonzero(found)[0])

    def __len__(self) -> int:
        return len(self.ids)


def attribute_pairs(
    frame: pd.DataFrame, columns: EntityColumns, delimiter: str
) -> tuple[np.ndarray, np.ndarray]:
    """Every (row position, ``column:value`` name) pair of a clean entity frame.

    Values are stripped and lower-cased; multi-valued cells are split on the
    delimiter; blank values produce no pair.
    """
    rows, codes, vocabulary = attribute_codes(frame, columns, delimiter)
    return rows, vocabulary[codes]


def _split_cells(
    cell_codes: np.ndarray, distinct: np.ndarray, delimiter: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(owner row, piece code) of every piece of multi-valued cells, in row order, and the
    distinct pieces the codes point into.

    Employees share combinations of values, so each distinct cell is split once, and
    all of them in one ``str.split`` of their concatenation (a Python loop splitting
    cell by cell costs several times more).
    """
    lengths = np.fromiter(
        (cell.count(delimiter) + 1 for cell in distinct), dtype=np.int64, count=len(distinct)
    )
    pieces = np.asarray(delimiter.join(distinct).split(delimiter), dtype=object)
    piece_codes, values = pd.factorize(pieces)
    starts = np.cumsum(lengths) - lengths
    row_lengths = lengths[cell_codes]
    owner = np.repeat(np.arange(len(cell_codes), dtype=np.int64), row_lengths)
    # Piece j of a row is piece j of its distinct cell: start of that cell + j.
    first_of_row = np.cumsum(row_lengths) - row_lengths
    within = np.arange(len(owner), dtype=np.int64) - np.repeat(first_of_row, row_lengths)
    return owner, piece_codes[np.repeat(starts[cell_codes], row_lengths) + within], values


def attribute_codes(
    frame: pd.DataFrame, columns: EntityColumns, delimiter: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pairs of :func:`attribute_pairs` as codes into their sorted vocabulary of names.

    Returns ``(row positions, codes, vocabulary)``: pair ``i`` is row ``rows[i]`` with
    the name ``vocabulary[codes[i]]``. An attribute has few distinct values, so cells
    are factorized first and only the distinct values are cleaned and named: the work
    per row is one hash lookup, not string building.
    """
    n = len(frame)
    if n <= _FEW_ROWS:
        return _attribute_codes_of_few(frame, columns, delimiter)
    row_parts: list[np.ndarray] = []
    code_parts: list[np.ndarray] = []
    local_names: list[np.ndarray] = []
    offset = 0
    for column in columns.features:
        cell_codes, cells = distinct_codes(frame[column])
        if column in columns.multi_valued:
            separator = columns.delimiter_of(column, delimiter)
            owner, codes, uniques = _split_cells(cell_codes, cells, separator)
        else:
            owner, codes, uniques = np.arange(n, dtype=np.int64), cell_codes, cells
        cleaned = np.asarray(
            [f"{column}:{v.strip().lower()}" if v.strip() else "" for v in uniques],
            dtype=object,
        )
        present = (cleaned != "")[codes] if len(cleaned) else np.zeros(len(codes), dtype=bool)
        row_parts.append(owner[present])
        code_parts.append(codes[present].astype(np.int64) + offset)
        local_names.append(cleaned)
        offset += len(cleaned)
    if not row_parts:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, dtype=str)
    names = np.concatenate(local_names)
    blank = names == ""
    vocabulary, inverse = np.unique(names[~blank], return_inverse=True)
    global_code = np.full(len(names), -1, dtype=np.int64)
    global_code[~blank] = inverse
    rows = np.concatenate(row_parts)
    codes = global_code[np.concatenate(code_parts)]
    return rows, codes, vocabulary.astype(str) if len(vocabulary) else np.empty(0, dtype=str)


_FEW_ROWS = 32  # below this (one employee posted to the API), plain Python is quicker


def _attribute_codes_of_few(
    frame: pd.DataFrame, columns: EntityColumns, delimiter: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`attribute_codes` of a handful of rows, without pandas' per-call overhead."""
    rows: list[int] = []
    names: list[str] = []
    for column in columns.features:
        multi = column in columns.multi_valued
        separator = columns.delimiter_of(column, delimiter)
        for row, raw in enumerate(frame[column].tolist()):
            cell = raw if isinstance(raw, str) else str(raw)
            for piece in cell.split(separator) if multi else (cell,):
                value = piece.strip()
                if value:
                    rows.append(row)
                    names.append(f"{column}:{value.lower()}")
    vocabulary = sorted(set(names))
    code_of = {name: code for code, name in enumerate(vocabulary)}
    return (
        np.asarray(rows, dtype=np.int64),
        np.asarray([code_of[name] for name in names], dtype=np.int64),
        np.asarray(vocabulary, dtype=str) if vocabulary else np.empty(0, dtype=str),
    )


def _binary_rows(
    rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int], normalize: bool
) -> sp.csr_matrix:
    """CSR matrix with a 1 at each ``(row, col)`` (a pair listed twice still counts once),
    rows normalized to sum 1 if asked (each entry 1 / entries in its row).

    Built straight from the sorted unique pairs (scipy's COO conversion costs more,
    and ten times more for the one row of an API request).
    """
    n_rows, n_cols = shape
    keys = rows.astype(np.int64) * n_cols
    keys += cols
    keys.sort()
    if len(keys):  # np.unique, by hand: numpy 2.4's is many times slower on integers
        first = np.empty(len(keys), dtype=bool)
        first[0] = True
        np.not_equal(keys[1:], keys[:-1], out=first[1:])
        keys = keys[first]
    owner, columns = np.divmod(keys, max(n_cols, 1))
    counts = np.bincount(owner, minlength=n_rows)
    index = np.int32 if max(n_cols, len(keys)) < np.iinfo(np.int32).max else np.int64
    indptr = np.zeros(n_rows + 1, dtype=index)
    np.cumsum(counts, out=indptr[1:])
    if normalize:
        data = np.repeat((1.0 / np.maximum(counts, 1)).astype(np.float32), counts)
    else:
        data = np.ones(len(keys), dtype=np.float32)
    return sp.csr_matrix((data, columns.astype(index), indptr), shape=shape)


def feature_matrix(
    frame: pd.DataFrame,
    columns: EntityColumns,
    delimiter: str,
    *,
    identity: bool,
    attributes: bool,
    normalize: bool,
) -> tuple[sp.csr_matrix, IdMap]:
    """Feature matrix of an entity frame and the map of its feature names."""
    n = len(frame)
    if not identity and not attributes:
        identity = True  # LightFM needs at least one feature per row
    names_parts: list[np.ndarray] = []
    row_parts: list[np.ndarray] = []
    col_parts: list[np.ndarray] = []
    offset = 0
    if identity:
        names_parts.append(np.char.add(IDENTITY_PREFIX, frame[ID].to_numpy(dtype=str)))
        row_parts.append(np.arange(n))
        col_parts.append(np.arange(n))
        offset = n
    if attributes:
        rows, codes, vocabulary = attribute_codes(frame, columns, delimiter)
        names_parts.append(vocabulary)
        row_parts.append(rows)
        col_parts.append(codes + offset)
    feature_names = np.concatenate(names_parts) if names_parts else np.empty(0, dtype=str)
    matrix = _binary_rows(
        np.concatenate(row_parts), np.concatenate(col_parts), (n, len(feature_names)), normalize
    )
    return matrix, IdMap.of(feature_names)


def rows_for_new(
    frame: pd.DataFrame,
    columns: EntityColumns,
    delimiter: str,
    feature_names: IdMap,
    normalize: bool,
) -> tuple[sp.csr_matrix, list[str]]:
    """Attribute rows of entities, against a trained map of attribute feature names.

    Attribute values the model does not know are ignored and returned, so that the
    caller can report them; they are not an error.
    """
    rows, codes, vocabulary = attribute_codes(frame, columns, delimiter)
    found = feature_names.rows(vocabulary)  # one lookup per distinct value, not per pair
    unknown = vocabulary[found < 0].tolist()  # sorted: the vocabulary is
    cols = found[codes]
    known = cols >= 0
    shape = (len(frame), len(feature_names))
    return _binary_rows(rows[known], cols[known], shape, normalize), unknown


def history_rows(taken: sp.csr_matrix) -> sp.csr_matrix:
    """Each row's trainings taken as feature weights summing to 1 (none: an empty row).

    Weights sum to 1 whatever the history's length, so that a long history does not
    drown the attributes (with 1/sqrt(n), measured, fits overfit within a few epochs
    on histories of a hundred trainings).
    """
    matrix = sp.csr_matrix(taken, dtype=np.float32, copy=True)
    matrix.sum_duplicates()
    matrix.eliminate_zeros()
    counts = np.diff(matrix.indptr)
    matrix.data = np.repeat((1.0 / np.maximum(counts, 1)).astype(np.float32), counts)
    return matrix


def describe_employees(attributes: sp.csr_matrix, taken: sp.csr_matrix | None) -> sp.csr_matrix:
    """Employees' feature rows: attribute columns, then (with ``taken``) history columns.

    ``taken`` holds each employee's trainings (any weight), columns in catalog order;
    None when the model has no history features.
    """
    if taken is None:
        return attributes.tocsr()
    return sp.hstack([attributes, history_rows(taken)], format="csr", dtype=np.float32)


def contract_of(bundle: ModelBundle) -> DataContract:
    """The data contract a model was trained with (employees are read the same way)."""
    return bundle.metadata.config.contract


def employee_rows(
    bundle: ModelBundle,
    frame: pd.DataFrame,
    contract: DataContract,
    taken: sp.csr_matrix,
) -> tuple[sp.csr_matrix, list[str]]:
    """Feature rows of employees against a trained model: their attributes (``frame``)
    and, when the model uses history, what they took (``taken``: rows x the model's
    trainings). The one description used for precomputed lists and posted employees.

    Returns the rows and the attribute values the model does not know (ignored).
    """
    names = IdMap(bundle.user_feature_names[: bundle.n_attributes])
    attributes, unknown = rows_for_new(
        frame, contract.users, contract.value_delimiter, names, bundle.normalize
    )
    # History columns are the trainings the model was trained with (new ones come last).
    history = taken[:, : bundle.n_trained_items] if bundle.history else None
    return describe_employees(attributes, history), unknown


@dataclass(frozen=True)
class Dataset:
    """Everything LightFM needs, with the id maps that make sense of it."""

    users: IdMap
    items: IdMap
    attribute_names: IdMap  # the employees' attribute features
    item_feature_names: IdMap
    interactions: sp.csr_matrix  # 1 where a training taken counts as a success (min_weight)
    taken: sp.csr_matrix  # 1 for every training taken, whatever its weight
    weights: sp.csr_matrix  # the weight (rating) of every training taken
    user_attributes: sp.csr_matrix  # employees x attribute features
    item_features: sp.csr_matrix
    history: bool  # whether employees are also described by the trainings they took
    # Extra successes from feedback events (weights), on pairs the extract lacks; None:
    # none. Learnt, never measured against (see SignalOptions).
    signals: sp.csr_matrix | None = None

    @property
    def user_feature_names(self) -> IdMap:
        """Attribute features, then one history feature per training (with history)."""
        if not self.history:
            return self.attribute_names
        history = np.char.add(HISTORY_PREFIX, self.items.ids.astype(str))
        return IdMap.of(np.concatenate([self.attribute_names.ids, history]))

    def user_features(self, taken: sp.csr_matrix | None = None) -> sp.csr_matrix:
        """Every employee's feature rows, with ``taken`` (default: all of it) as history."""
        if not self.history:
            return self.user_attributes
        return describe_employees(self.user_attributes, self.taken if taken is None else taken)


def signal_matrix(
    pairs: Mapping[tuple[str, str], float], users: IdMap, items: IdMap, taken: sp.csr_matrix
) -> sp.csr_matrix | None:
    """Employees x trainings: the signals' weights, on known employees and trainings,
    except pairs already taken (the extract has the truth about those); None if empty."""
    if not pairs:
        return None
    employees, trainings = zip(*pairs, strict=True)
    rows, cols = users.rows(list(employees)), items.rows(list(trainings))
    keep = (rows >= 0) & (cols >= 0)
    weights = np.fromiter(pairs.values(), np.float32, len(pairs))[keep]
    matrix = sp.csr_matrix((weights, (rows[keep], cols[keep])), shape=taken.shape)
    matrix = matrix - matrix.multiply(taken.astype(bool))
    matrix.eliminate_zeros()
    return sp.csr_matrix(matrix) if matrix.nnz else None


def rows_of_column(ids: IdMap, column: pd.Series) -> np.ndarray:
    """Rows of a column of ids (-1 for an id the map does not know).

    A parsed extract's id columns are categorical, encoded against its known ids:
    only the distinct ids are looked up. Otherwise each cell costs one hash lookup.
    """
    if isinstance(column.dtype, pd.CategoricalDtype):
        codes = column.cat.codes.to_numpy().astype(np.int64)
        categories = column.cat.categories
        if len(categories) == len(ids) and (categories.to_numpy(dtype=object) == ids.ids).all():
            return codes  # encoded against these very ids (a retrain's own extracts)
        rows_of_code = positions(ids.ids, categories)
        return np.where(codes >= 0, rows_of_code[codes], -1)
    return positions(ids.ids, column)


def interaction_matrices(
    taken: pd.DataFrame, users: IdMap, items: IdMap
) -> tuple[sp.csr_matrix, sp.csr_matrix, sp.csr_matrix]:
    """Every training taken (binary), the successes among them (binary: ``positive``
    rows), and the weights, from clean trainings-taken rows."""
    user_rows = rows_of_column(users, taken["user_id"])
    item_rows = rows_of_column(items, taken["training_id"])
    known = (user_rows >= 0) & (item_rows >= 0)
    shape = (len(users), len(items))
    user_rows, item_rows = user_rows[known], item_rows[known]
    values = taken["weight"].to_numpy(np.float32)[known]
    pairs = user_rows * len(items) + item_rows
    if (pairs[1:] > pairs[:-1]).all():  # distinct pairs in row order (a parsed extract)
        indptr = np.zeros(len(users) + 1, dtype=np.int64)
        np.cumsum(np.bincount(user_rows, minlength=len(users)), out=indptr[1:])
        weights = sp.csr_matrix((values, item_rows, indptr), shape=shape)
    else:
        weights = sp.csr_matrix((values, (user_rows, item_rows)), shape=shape)
        weights.sum_duplicates()
    every = weights.copy()
    every.data[:] = 1.0
    successes = every.copy()
    if "positive" in taken and not (positive := taken["positive"].to_numpy(bool)).all():
        flags = sp.csr_matrix(
            (positive[known].astype(np.float32), (user_rows, item_rows)), shape=shape
        )
        successes = every.multiply(flags > 0).tocsr()
        successes.eliminate_zeros()
    return every, successes, weights


def build_dataset(
    users: pd.DataFrame,
    trainings: pd.DataFrame,
    taken: pd.DataFrame,
    contract: DataContract,
    options: FeatureOptions,
) -> Dataset:
    """Id maps and matrices from the clean frames of :mod:`shared.schema`."""
    user_map = IdMap.of(users[ID].to_numpy(dtype=str))
    item_map = IdMap.of(trainings[ID].to_numpy(dtype=str))
    every, successes, weights = interaction_matrices(taken, user_map, item_map)
    delimiter = contract.value_delimiter
    if options.user_features:
        attributes, attribute_names = feature_matrix(
            users,
            contract.users,
            delimiter,
            identity=False,
            attributes=True,
            normalize=options.normalize,
        )
    else:  # known by their history alone (the settings require one or the other)
        attributes, attribute_names = sp.csr_matrix((len(users), 0), dtype=np.float32), IdMap.of([])
    item_features, item_names = feature_matrix(
        trainings,
        contract.trainings,
        delimiter,
        identity=options.item_identity,
        attributes=options.item_features,
        normalize=options.normalize,
    )
    return Dataset(
        user_map,
        item_map,
        attribute_names,
        item_names,
        successes,
        every,
        weights,
        attributes,
        item_features,
        options.history,
    )


def entity_frame(
    records: Sequence[Mapping[str, str | Sequence[str]]], columns: EntityColumns, delimiter: str
) -> pd.DataFrame:
    """A clean entity frame from attribute mappings (a new employee posted to the API).

    List values are joined with the delimiter; banded columns get their band label,
    as :func:`shared.schema.parse_entities` would give them.
    """
    data: dict[str, list[str]] = {ID: [str(r.get(ID, "")) for r in records]}
    for column in columns.features:
        separator = columns.delimiter_of(column, delimiter)
        values = []
        for record in records:
            value = record.get(column, "")
            values.append(separator.join(value) if not isinstance(value, str) else value)
        data[column] = values
    frame = pd.DataFrame(data, dtype=str)
    for column, edges in columns.bands.items():
        frame[column] = band_labels(frame[column], edges)[0]
    return frame
