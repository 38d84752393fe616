"""Scoring with numpy only: no LightFM import on the serving path.

LightFM scores ``U·V + b_user + b_item`` where ``U = F_user @ E_user`` and
``V = F_item @ E_item`` (feature rows times feature embeddings, biases alike), so
the exported factors reproduce ``LightFM.predict`` exactly (tested).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import scipy.sparse as sp

if TYPE_CHECKING:
    from shared.bundle import ModelBundle  # only a type: the bundle's metadata imports this module

NO_ITEM = -1  # fills a top-k row when fewer candidates than k remain

# Below this many columns a row is simply sorted; above it, rows are cut into blocks.
_DIRECT_COLUMNS = 256
# Rows scored at once inside a chunk. Each block costs a fixed few dozen numpy calls
# and its threads contend for the GIL between them: 16 MiB (two in flight, plus
# their selection's temporaries: about 45 MiB) measured best on the 2-core test
# machine, against 1 to 64 MiB (python -m benchmarks precompute).
_BLOCK_BYTES = 16 * 1024 * 1024
_WORKERS = 2  # the deployment's cores; BLAS runs one thread per worker meanwhile


def top_k(
    scores: np.ndarray,
    k: int,
    exclude: sp.csr_matrix | None = None,
    allowed: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` columns of each row, best first, excluded columns never returned.

    Equal scores are ordered by column, so the answer is exactly the first ``k`` of a
    stable sort of each row, best first; it is found without sorting the row.

    Parameters
    ----------
    scores
        Float matrix, one row per employee; modified in place when ``exclude`` or
        ``allowed`` is given.
    k
        How many per row (at most the number of columns).
    exclude
        Sparse matrix of the same shape whose stored entries must not be returned.
    allowed
        Boolean mask over the columns; columns outside it are never returned.

    Returns
    -------
    (indices, scores)
        ``int32`` and ``float32`` arrays of shape ``(rows, min(k, columns))``;
        positions without a candidate hold ``NO_ITEM`` and ``-inf``.
    """
    n_rows, n_cols = scores.shape
    k = min(k, n_cols)
    if k <= 0:
        return np.empty((n_rows, 0), np.int32), np.empty((n_rows, 0), np.float32)
    _mask_out(scores, exclude, allowed)
    return _best(scores, k)


def _mask_out(
    scores: np.ndarray, exclude: sp.csr_matrix | None, allowed: np.ndarray | None
) -> None:
    """Set excluded entries and columns outside ``allowed`` to ``-inf``, in place."""
    if exclude is not None and exclude.nnz:
        owners = np.repeat(np.arange(scores.shape[0]), np.diff(exclude.indptr))
        scores[owners, exclude.indices] = -np.inf
    if allowed is not None and not allowed.all():
        scores[:, np.flatnonzero(~allowed)] = -np.inf


def _best(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of every row (``0 < k <= columns``): indices ``int32`` and scores ``float32``.

    Without sorting or partitioning whole rows: a row of thousands of trainings is cut
    into ``nb`` interleaved blocks (block ``j`` holds columns ``j, j + nb, j + 2 nb …``)
    and the k-th best block maximum is a threshold that at least ``k`` entries reach
    (the maxima of the k best blocks), so the row's k best are among the entries
    reaching it — typically a handful more than ``k``. Those few are sorted, equal
    scores by column: the answer is exactly the first ``k`` of a stable sort. A row
    holding NaN, or whose threshold lets too many entries through (most of it
    excluded), is solved on its whole row instead.
    """
    n_rows, n_cols = scores.shape
    if n_cols <= _DIRECT_COLUMNS or 8 * k >= n_cols or n_rows == 0:
        cols, values = _exact(scores, k)
    else:
        scores = np.ascontiguousarray(scores)
        # More blocks make a tighter threshold but a longer partition: 4k blocks let
        # through about k + 3 entries per row (measured), for a small partition.
        n_blocks = max(2 * k, min(4 * k, n_cols // 2))
        width = n_cols // n_blocks  # full rows of blocks; the rest is a ragged tail
        tail = n_cols - width * n_blocks
        maxima = scores[:, : width * n_blocks].reshape(n_rows, width, n_blocks).max(axis=1)
        if tail:
            np.maximum(maxima[:, :tail], scores[:, width * n_blocks :], out=maxima[:, :tail])
        threshold = np.partition(maxima, n_blocks - k, axis=1)[:, n_blocks - k, None]
        flat = np.flatnonzero(scores >= threshold)  # row by row, columns ascending
        rows = flat // n_cols
        counts = np.bincount(rows, minlength=n_rows)
        most = 8 * k
        # max() propagates NaN: a row holding one is redone (NaN counts as -inf there).
        redo = (counts < k) | (counts > most) | np.isnan(maxima).any(axis=1)
        place = np.arange(len(flat)) - (np.cumsum(counts) - counts)[rows]
        kept = ~redo[rows]
        flat, rows, place = flat[kept], rows[kept], place[kept]
        width_kept = int(counts[~redo].max()) if (~redo).any() else k
        candidates = np.full((n_rows, width_kept), -np.inf, dtype=scores.dtype)
        candidate_cols = np.zeros((n_rows, width_kept), dtype=np.int64)
        candidates[rows, place] = scores.ravel()[flat]
        candidate_cols[rows, place] = flat - rows * n_cols
        # Padding (-inf) sits after a row's own entries: the stable sort keeps it last.
        order = np.argsort(-candidates, axis=1, kind="stable")[:, :k]
        cols = np.take_along_axis(candidate_cols, order, axis=1)
        values = np.take_along_axis(candidates, order, axis=1)
        again = np.flatnonzero(redo)
        if len(again):
            cols[again], values[again] = _exact(scores[again], k)
    best = cols.astype(np.int32)
    best_scores = values.astype(np.float32)
    best[~np.isfinite(best_scores)] = NO_ITEM
    return best, best_scores


def _exact(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of every row on the whole row: equal scores ordered by column (stable sort)."""
    values = np.where(np.isnan(scores), -np.inf, scores) if np.isnan(scores).any() else scores
    n_rows, n_cols = values.shape
    if k >= n_cols:
        cols = np.argsort(-values, axis=1, kind="stable")
        return cols, np.take_along_axis(values, cols, axis=1)
    kth = np.partition(values, n_cols - k, axis=1)[:, n_cols - k, None]
    keep = values >= kth
    at_least = row_counts(keep)
    tied_rows = np.flatnonzero(at_least != k)
    if len(tied_rows):  # the k-th score is shared across the cut: keep the first columns
        equal = values[tied_rows] == kth[tied_rows]
        n_equal = row_counts(equal)
        need = k - (at_least[tied_rows] - n_equal)  # how many of the equal ones to keep
        flat = np.flatnonzero(equal)  # row by row, columns ascending
        owner = flat // n_cols
        place = np.arange(len(flat)) - (np.cumsum(n_equal) - n_equal)[owner]
        dropped = place >= need[owner]
        keep[tied_rows[owner[dropped]], flat[dropped] - owner[dropped] * n_cols] = False
    cols = (np.flatnonzero(keep) % n_cols).reshape(n_rows, k)  # ascending columns
    picked = np.take_along_axis(values, cols, axis=1)
    order = np.argsort(-picked, axis=1, kind="stable")
    return np.take_along_axis(cols, order, axis=1), np.take_along_axis(picked, order, axis=1)


def row_counts(mask: np.ndarray) -> np.ndarray:
    """``np.count_nonzero(mask, axis=-1)``, several times faster (a sum of bytes)."""
    dtype = np.uint16 if mask.shape[-1] < np.iinfo(np.uint16).max else np.int64
    counts: np.ndarray = np.add.reduce(mask.view(np.uint8), axis=-1, dtype=dtype)
    return counts.astype(np.int64)


@dataclass(frozen=True)
class ScorerSpec:
    """How one population is ranked: the model's score plus popularity priors, weighted.

    ``score = model * (U·V + b_user + b_item) + popularity * P[item]
    + department * D[department, item]``, where ``P`` and ``D`` are the logs of one plus
    the successes of each training, overall and within each department (:class:`Priors`).
    ``model = 0`` is a popularity baseline alone.
    """

    name: str  # "model", "model + popularity", "popularity", "department popularity"...
    model: float = 1.0
    popularity: float = 0.0
    department: float = 0.0


MODEL = ScorerSpec("model")


@dataclass(frozen=True)
class Priors:
    """Popularity of each training, overall and within each department, as ``log(1 + n)``.

    ``department_columns`` are the attribute feature columns that name a department
    (``ou:sales``): an employee's department is the first of them in their feature row.
    """

    popularity: np.ndarray  # trainings, float32
    department_columns: np.ndarray  # int64 attribute feature columns, one per department
    department: sp.csr_matrix  # departments x trainings, float32

    @classmethod
    def none(cls, n_items: int) -> Priors:
        return cls(
            np.zeros(n_items, np.float32),
            np.empty(0, np.int64),
            sp.csr_matrix((0, n_items), dtype=np.float32),
        )

    @classmethod
    def count(
        cls, successes: sp.csr_matrix, attributes: sp.csr_matrix, department_columns: np.ndarray
    ) -> Priors:
        """Priors from the successes (employees x trainings) and the employees' attributes."""
        successes = sp.csr_matrix(successes, dtype=np.float32)
        popularity = np.log1p(np.asarray(successes.sum(axis=0)).ravel()).astype(np.float32)
        member = (attributes.tocsc()[:, department_columns] > 0).astype(np.float32).T.tocsr()
        department = (member @ successes).tocsr()
        department.data = np.log1p(department.data).astype(np.float32)
        return cls(popularity, np.asarray(department_columns, np.int64), department)

    def groups(self, attribute_rows: sp.csr_matrix) -> np.ndarray:
        """Each row's department (a row of :attr:`department`), -1 when it names none."""
        rows = attribute_rows.tocsr()
        group = np.full(rows.shape[0], -1, dtype=np.int64)
        if not len(self.department_columns):
            return group
        lookup = np.full(max(rows.shape[1], int(self.department_columns.max()) + 1), -1, np.int64)
        lookup[self.department_columns] = np.arange(len(self.department_columns))
        found = lookup[rows.indices[rows.indices < len(lookup)]]
        owners = np.repeat(np.arange(rows.shape[0]), np.diff(rows.indptr))
        owners = owners[rows.indices < len(lookup)]
        hit = found >= 0
        group[owners[hit][::-1]] = found[hit][::-1]  # the first department column wins
        return group


@dataclass(frozen=True)
class Factors:
    """Per-row representations and biases (employees and trainings)."""

    user_vectors: np.ndarray  # n_users x k
    user_biases: np.ndarray
    item_vectors: np.ndarray  # n_items x k
    item_biases: np.ndarray

    @classmethod
    def from_features(
        cls,
        user_features: sp.csr_matrix,
        user_embeddings: np.ndarray,
        user_biases: np.ndarray,
        item_features: sp.csr_matrix,
        item_embeddings: np.ndarray,
        item_biases: np.ndarray,
    ) -> Factors:
        return cls(
            np.ascontiguousarray(user_features @ user_embeddings, dtype=np.float32),
            np.asarray(user_features @ user_biases, dtype=np.float32),
            np.ascontiguousarray(item_features @ item_embeddings, dtype=np.float32),
            np.asarray(item_features @ item_biases, dtype=np.float32),
        )

    @property
    def model(self) -> Scorer:
        """The model's own score (no prior), built once per instance."""
        cached: Scorer | None = self.__dict__.get("_model")
        if cached is None:
            cached = Scorer(self, MODEL, Priors.none(len(self.item_vectors)))
            object.__setattr__(self, "_model", cached)
        return cached

    def scores(self, vectors: np.ndarray, biases: np.ndarray) -> np.ndarray:
        """The model's scores of the given user representations against every training."""
        return self.model.scores(vectors, biases)

    def user_scores(self, rows: np.ndarray | slice) -> np.ndarray:
        return self.scores(self.user_vectors[rows], self.user_biases[rows])

    def top_k(
        self,
        vectors: np.ndarray,
        biases: np.ndarray,
        k: int,
        exclude: sp.csr_matrix | None = None,
        allowed: np.ndarray | None = None,
        chunk_size: int = 2048,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The model's top-k (see :meth:`Scorer.top_k`)."""
        return self.model.top_k(vectors, biases, None, k, exclude, allowed, chunk_size)


@dataclass(frozen=True)
class Scorer:
    """A :class:`ScorerSpec` over a model's factors and the popularity priors.

    Without ``user_bias``, scores leave out the employee's bias: it is the same for
    every training (ranks do not change), and LightFM lets it drift to large values
    (-150 seen) that would only cost the float32 scores their precision.
    """

    factors: Factors
    spec: ScorerSpec
    priors: Priors
    user_bias: bool = True

    @property
    def items_augmented(self) -> np.ndarray:
        """``[m V, m, m b_item + p P]`` per training, so that one product with
        :func:`augmented` users gives ``m (U·V + b_u + b_i) + p P``.

        Built once per instance. With the biases and the global prior in the matrix
        product, they cost no pass over the score blocks.
        """
        cached: np.ndarray | None = self.__dict__.get("_items_augmented")
        if cached is None:
            factors, spec = self.factors, self.spec
            n_items, n_factors = factors.item_vectors.shape
            cached = np.empty((n_items, n_factors + 2), dtype=np.float32)
            cached[:, :n_factors] = spec.model * factors.item_vectors
            cached[:, n_factors] = spec.model
            cached[:, n_factors + 1] = (
                spec.model * factors.item_biases + spec.popularity * self.priors.popularity
            )
            object.__setattr__(self, "_items_augmented", cached)
        return cached

    def _add_department(self, scores: np.ndarray, groups: np.ndarray | None) -> None:
        """Add ``department * D[group]`` to each row of a score block, in place.

        Department by department: one dense prior row added to its employees' rows
        (gathering a sparse row per employee cost six times the whole scoring).
        """
        if not self.spec.department or groups is None or not self.priors.department.nnz:
            return
        order = np.argsort(groups, kind="stable")  # the rows of each department together
        ranked = groups[order]
        departments = np.unique(ranked[ranked >= 0])
        starts = np.searchsorted(ranked, departments)
        ends = np.searchsorted(ranked, departments, side="right")
        row = np.empty(scores.shape[1], dtype=scores.dtype)
        for group, start, end in zip(departments, starts, ends, strict=True):
            prior = self.priors.department[int(group)]
            row[:] = 0
            row[prior.indices] = self.spec.department * prior.data
            scores[order[start:end]] += row

    def _users(self, vectors: np.ndarray, biases: np.ndarray) -> np.ndarray:
        return augmented(vectors, biases if self.user_bias else np.zeros_like(biases))

    def scores(
        self, vectors: np.ndarray, biases: np.ndarray, groups: np.ndarray | None = None
    ) -> np.ndarray:
        """Scores of the given user representations (and departments) against every training."""
        out = _product(self._users(vectors, biases), self.items_augmented)
        self._add_department(out, groups)
        return out

    def top_k(
        self,
        vectors: np.ndarray,
        biases: np.ndarray,
        groups: np.ndarray | None,
        k: int,
        exclude: sp.csr_matrix | None = None,
        allowed: np.ndarray | None = None,
        chunk_size: int = 2048,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k trainings of the given user representations (scores never all held).

        Rows are scored a 16 MiB block at a time into a reused buffer, the best
        ``k`` of each block selected before the next; big inputs are split between
        the cores. Peak memory is a few ``block x n_items`` buffers, whatever the
        number of rows. Same answer as :func:`top_k` over :meth:`scores`.
        """
        n_rows = len(vectors)
        n_items = len(self.factors.item_vectors)
        k = min(k, n_items)
        indices = np.full((n_rows, max(k, 0)), NO_ITEM, dtype=np.int32)
        best = np.full(indices.shape, -np.inf, dtype=np.float32)
        if k <= 0 or n_rows == 0:
            return indices, best
        block = max(1, min(chunk_size, _BLOCK_BYTES // (4 * n_items)))
        taken = None if exclude is None or not exclude.nnz else exclude.tocsr()
        starts = range(0, n_rows, block)
        buffers = threading.local()
        items = self.items_augmented

        def run(start: int) -> None:
            stop = min(start + block, n_rows)
            buffer: np.ndarray | None = getattr(buffers, "scores", None)
            if buffer is None:
                buffer = buffers.scores = np.empty((block, n_items), dtype=np.float32)
            scores = buffer[: stop - start]
            _product(self._users(vectors[start:stop], biases[start:stop]), items, out=scores)
            self._add_department(scores, None if groups is None else groups[start:stop])
            if taken is not None:  # the block's rows of the CSR, without scipy's slicing
                first, last = taken.indptr[start], taken.indptr[stop]
                owners = np.repeat(np.arange(stop - start), np.diff(taken.indptr[start : stop + 1]))
                scores[owners, taken.indices[first:last]] = -np.inf
            _mask_out(scores, None, allowed)
            indices[start:stop], best[start:stop] = _best(scores, k)

        if len(starts) < 2 * _WORKERS:
            for start in starts:
                run(start)
        else:
            _in_parallel(run, starts)
        return indices, best


_FEW_ROWS = 16  # a product this small is computed without BLAS (see _product)


def _product(left: np.ndarray, right: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``left @ right.T``; without BLAS for a few rows (an API request's one employee).

    A multi-threaded BLAS called from many request threads at once makes its threads
    spin against each other: 32 concurrent ``POST /recommendations`` served 17/s
    instead of 260/s on 2 cores. A one-row product is as quick single-threaded, and
    ``np.einsum`` (without ``optimize``) never calls BLAS.
    """
    if len(left) <= _FEW_ROWS:
        return np.einsum("ij,kj->ik", left, right, out=out)
    return np.matmul(left, right.T, out=out)


def augmented(vectors: np.ndarray, biases: np.ndarray) -> np.ndarray:
    """``[U, b_user, 1]`` per employee: the left side of :attr:`Factors.items_augmented`."""
    n_rows, n_factors = vectors.shape
    out = np.empty((n_rows, n_factors + 2), dtype=np.float32)
    out[:, :n_factors] = vectors
    out[:, n_factors] = biases
    out[:, n_factors + 1] = 1.0
    return out


def _in_parallel(run: Callable[[int], None], starts: Iterable[int]) -> None:
    """``run(start)`` for every start on the cores, BLAS one thread per worker meanwhile.

    numpy releases the GIL in the matrix product and in the selection, so two worker
    threads keep both cores busy; a multi-threaded BLAS inside each would only fight
    them (and a small product split over threads costs more than it gains).
    """
    with _one_blas_thread, ThreadPoolExecutor(_WORKERS, thread_name_prefix="top-k") as pool:
        for done in [pool.submit(run, start) for start in starts]:
            done.result()


class _OneBlasThread:
    """BLAS limited to one thread while any parallel scoring runs (a process-wide setting).

    Counted, so that two overlapping calls (a precompute beside a retrain) restore the
    original setting once, after the last one.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._limits: Any = None

    def __enter__(self) -> None:
        with self._lock:
            if self._users == 0:
                from threadpoolctl import threadpool_limits

                self._limits = threadpool_limits(limits=1, user_api="blas")
            self._users += 1

    def __exit__(self, *_: object) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0 and self._limits is not None:
                self._limits.restore_original_limits()
                self._limits = None


_one_blas_thread = _OneBlasThread()


Population = Literal["known", "cold-start"]  # employees with a history; new employees
POPULATIONS: tuple[Population, ...] = ("known", "cold-start")


def population_of(has_history: bool) -> Population:
    """The population an employee is served as: ``known`` once they took a training
    of the catalog, ``cold-start`` (a new employee) before."""
    return "known" if has_history else "cold-start"


class Recommender:
    """Top-k, new-employee and similar-training answers from one model bundle.

    Each population (employees with a history, new employees) is ranked by the
    scorer the evaluation chose for it (:class:`ScorerSpec`: the model, the model with
    a popularity prior, or a popularity baseline); which one is decided by whether
    the employee took any training of the catalog, for precomputed lists and posted
    employees alike.
    """

    def __init__(self, bundle: ModelBundle) -> None:
        self.bundle = bundle
        self.factors = Factors.from_features(
            bundle.user_features,
            bundle.user_feature_embeddings,
            bundle.user_feature_biases,
            bundle.item_features,
            bundle.item_feature_embeddings,
            bundle.item_feature_biases,
        )
        self.priors = Priors(
            bundle.popularity, bundle.department_columns, bundle.department_popularity
        )
        self.specs = bundle.metadata.scorers()
        self.scorers = {
            population: Scorer(self.factors, spec, self.priors, user_bias=False)
            for population, spec in self.specs.items()
        }
        norms = np.linalg.norm(self.factors.item_vectors, axis=1, keepdims=True)
        self._unit_items = self.factors.item_vectors / np.maximum(norms, 1e-12)

    def for_known(self, user_rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k of the bundle's own employees (by row), trainings they took excluded."""
        taken = self.bundle.taken[user_rows]
        return self.for_feature_rows(
            self.bundle.user_features[user_rows], np.diff(taken.indptr) > 0, k, taken
        )

    def feature_vectors(self, feature_rows: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        """Representations and biases of employees described by feature rows."""
        vectors = np.asarray(feature_rows @ self.bundle.user_feature_embeddings, dtype=np.float32)
        biases = np.asarray(feature_rows @ self.bundle.user_feature_biases, dtype=np.float32)
        return vectors, biases

    def feature_scores(self, feature_rows: sp.csr_matrix, has_history: bool) -> np.ndarray:
        """Scores of employees of one population, described by feature rows."""
        scorer = self.scorers[population_of(has_history)]
        return scorer.scores(*self.feature_vectors(feature_rows), self.priors.groups(feature_rows))

    def for_feature_rows(
        self,
        feature_rows: sp.csr_matrix,
        has_history: np.ndarray,
        k: int,
        exclude: sp.csr_matrix | None = None,
        allowed: np.ndarray | None = None,
        chunk_size: int = 2048,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k of employees described by feature rows, each by their population's scorer.

        Any number of rows: they are scored a block at a time (see :meth:`Scorer.top_k`).
        """
        vectors, biases = self.feature_vectors(feature_rows)
        groups = self.priors.groups(feature_rows)
        return self._rank(vectors, biases, groups, has_history, k, exclude, allowed, chunk_size)

    def _rank(
        self,
        vectors: np.ndarray,
        biases: np.ndarray,
        groups: np.ndarray,
        has_history: np.ndarray,
        k: int,
        exclude: sp.csr_matrix | None,
        allowed: np.ndarray | None,
        chunk_size: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        n_rows = len(vectors)
        k = min(k, len(self.bundle.item_ids))
        indices = np.full((n_rows, max(k, 0)), NO_ITEM, dtype=np.int32)
        scores = np.full(indices.shape, -np.inf, dtype=np.float32)
        history = np.asarray(has_history, dtype=bool)
        populations: tuple[tuple[Population, np.ndarray], ...] = (
            ("known", history),
            ("cold-start", ~history),
        )
        for population, members in populations:
            rows = np.flatnonzero(members)
            if not len(rows):
                continue
            whole = len(rows) == n_rows  # the usual case: no copies
            pick: np.ndarray | slice = slice(None) if whole else rows
            indices[pick], scores[pick] = self.scorers[population].top_k(
                vectors[pick],
                biases[pick],
                groups[pick],
                k,
                None if exclude is None else (exclude if whole else exclude.tocsr()[rows]),
                allowed,
                chunk_size,
            )
        return indices, scores

    def for_all(self, k: int, chunk_size: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Top-k of every employee of the bundle, yielded ``chunk_size`` rows at a time.

        Scores are never all held: peak memory is a few 16 MiB score blocks
        (at most ``chunk_size`` rows each) plus the ``n_users x k`` answer, whatever
        the number of employees. Yields ``(first row, indices, scores)``.
        """
        n_users = len(self.bundle.user_ids)
        taken, factors = self.bundle.taken, self.factors  # representations computed once
        indices, scores = self._rank(
            factors.user_vectors,
            factors.user_biases,
            self.priors.groups(self.bundle.user_features),
            np.diff(taken.indptr) > 0,
            k,
            taken,
            None,
            chunk_size,
        )
        for start in range(0, n_users, chunk_size):
            yield start, indices[start : start + chunk_size], scores[start : start + chunk_size]

    def similar(
        self, item_row: int, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` trainings closest to one training (cosine of their representations).

        A training nobody took still has a representation from its attributes, so it
        gets neighbours too.
        """
        sims = _product(self._unit_items[item_row : item_row + 1], self._unit_items)
        sims[0, item_row] = -np.inf
        indices, scores = top_k(sims, k, allowed=allowed)
        return indices[0], scores[0]

    def explain(
        self, feature_row: sp.csr_matrix, item_rows: np.ndarray, n_user: int, n_item: int
    ) -> list[tuple[list[tuple[int, float]], list[tuple[int, float]]]]:
        """Why each training scores high for one employee, from factor contributions.

        The score is bilinear in the feature rows, so it splits exactly into one term
        per employee feature (``w_f * e_f · V_item``) and one per training feature
        (``w_g * (e_g · U + b_g)``). Employee biases are the same for every training and
        identity features say "you are you": neither explains anything, so both are
        left out. Returns, per training, the ``n_user`` largest employee
        feature terms and the ``n_item`` largest training feature terms, as
        ``(feature column, contribution)`` pairs, positive ones only.
        """
        bundle = self.bundle
        user_cols, user_weights = feature_row.indices, feature_row.data
        user_named = ~np.char.startswith(bundle.user_feature_names[user_cols], IDENTITY)
        user_cols, user_weights = user_cols[user_named], user_weights[user_named]
        vector = np.asarray(feature_row @ bundle.user_feature_embeddings).ravel()
        # An employee feature's bias is the same for every training: it cannot explain
        # why this one ranks high, so only the interaction term counts.
        user_terms = (
            bundle.user_feature_embeddings[user_cols] @ self.factors.item_vectors[item_rows].T
        ) * user_weights[:, None]  # features x trainings
        answers = []
        for j, item in enumerate(item_rows):
            row = bundle.item_features[item]
            named = ~np.char.startswith(bundle.item_feature_names[row.indices], IDENTITY)
            cols, weights = row.indices[named], row.data[named]
            item_terms = weights * (
                bundle.item_feature_embeddings[cols] @ vector + bundle.item_feature_biases[cols]
            )
            answers.append(
                (
                    _largest(user_cols, user_terms[:, j], n_user),
                    _largest(cols, item_terms, n_item),
                )
            )
        return answers


IDENTITY = "id:"


def _largest(columns: np.ndarray, terms: np.ndarray, n: int) -> list[tuple[int, float]]:
    order = np.argsort(-terms, kind="stable")[:n]
    return [(int(columns[i]), float(terms[i])) for i in order if terms[i] > 0]


def select(
    ranked: np.ndarray,
    scores: np.ndarray,
    n: int,
    *,
    allowed: np.ndarray,
    pinned: list[tuple[int, float]],
    taken: np.ndarray,
    caps: list[tuple[np.ndarray, int]],
) -> tuple[list[tuple[int, float, bool]], bool]:
    """Apply the business rules to one employee's ranked candidates.

    Pinned trainings ``(row, score)`` that are allowed and not taken come first,
    then the ranked candidates that are allowed and within the diversity caps
    (``caps``: per capped attribute, the value code of every training and the most
    results allowed per value).

    Returns the chosen ``(training row, score, pinned)`` triples and whether the
    candidates ran out before ``n`` (the caller may then rank deeper).
    """
    chosen: list[tuple[int, float, bool]] = []
    per_value: list[dict[int, int]] = [{} for _ in caps]
    seen = set(taken.tolist())

    def take(row: int, score: float, is_pinned: bool) -> None:
        codes = [int(values[row]) for values, _ in caps]
        for count, code, (_, limit) in zip(per_value, codes, caps, strict=True):
            if count.get(code, 0) >= limit:
                return
        for count, code in zip(per_value, codes, strict=True):
            count[code] = count.get(code, 0) + 1
        chosen.append((row, score, is_pinned))
        seen.add(row)

    for row, score in pinned:
        if len(chosen) < n and allowed[row] and row not in seen:
            take(row, score, True)
    if len(ranked) != len(scores):
        raise ValueError(f"{len(ranked)} ranked trainings but {len(scores)} scores")
    # A new employee's ranking covers the whole catalog: convert it to Python a slice
    # at a time, since the first few dozen candidates usually suffice.
    start, step = 0, max(4 * n, 64)
    while start < len(ranked):
        stop = start + step
        rows, values = ranked[start:stop].tolist(), scores[start:stop].tolist()
        for row, score in zip(rows, values, strict=True):
            if len(chosen) >= n:
                return chosen, False
            if row != NO_ITEM and allowed[row] and row not in seen:
                take(row, score, False)
        start, step = stop, step * 4
    return chosen, len(chosen) < n
