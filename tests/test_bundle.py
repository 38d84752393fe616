"""ModelBundle to and from bytes: recommends the same, refuses anything damaged or pickled."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from shared.bundle import FORMAT_VERSION, ModelBundle
from shared.card import card_html
from shared.errors import ModelLoadError
from shared.modeling import TrainedModel, train_model
from shared.schema import parse_all
from shared.scoring import Recommender
from shared.settings import Config
from shared.synthetic import generate

CONFIG = Config.from_dict({"model": {"epochs": 5, "num_threads": 1}})
FINGERPRINTS = {"users": "a1b2c3d4", "trainings": "e5f6a7b8", "trainings-taken": "c9d0e1f2"}


@pytest.fixture(scope="module")
def trained() -> TrainedModel:
    data = generate(n_users=300, n_trainings=60, n_interactions=3000, seed=1)
    extracts = parse_all(
        io.BytesIO(data.users.to_csv(index=False).encode()),
        io.BytesIO(data.trainings.to_csv(index=False).encode()),
        io.BytesIO(data.taken.to_csv(index=False).encode()),
        CONFIG.contract,
    )
    return train_model(extracts, CONFIG, fingerprints=FINGERPRINTS)


@pytest.fixture(scope="module")
def serialized(trained: TrainedModel) -> tuple[bytes, bytes]:
    return trained.bundle.to_bytes()


def all_recommendations(bundle: ModelBundle, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    chunks = list(Recommender(bundle).for_all(k, chunk_size=64))
    return np.vstack([c[1] for c in chunks]), np.vstack([c[2] for c in chunks])


def test_round_trip_recommends_exactly_the_same(
    trained: TrainedModel, serialized: tuple[bytes, bytes]
) -> None:
    original = trained.bundle
    loaded = ModelBundle.from_bytes(*serialized)
    indices, scores = all_recommendations(original)
    loaded_indices, loaded_scores = all_recommendations(loaded)
    assert indices.shape == (300, 10)
    assert np.array_equal(indices, loaded_indices)
    assert np.array_equal(scores, loaded_scores)
    before, after = Recommender(original), Recommender(loaded)
    for item in (0, 17, 59):
        assert np.array_equal(before.similar(item, 5)[0], after.similar(item, 5)[0])
    new_rows = original.user_features[:3]
    for history in (np.ones(3, bool), np.zeros(3, bool)):
        assert np.array_equal(
            before.for_feature_rows(new_rows, history, 5)[0],
            after.for_feature_rows(new_rows, history, 5)[0],
        )
    assert before.specs == after.specs


def test_a_bundle_for_serving_leaves_out_the_employees_rows_and_scores_the_same(
    trained: TrainedModel, serialized: tuple[bytes, bytes]
) -> None:
    full = ModelBundle.from_bytes(*serialized)
    serving = ModelBundle.from_bytes(*serialized, employees=False)
    serving.check()
    assert len(serving.user_ids) == 0
    assert serving.user_features.shape == (0, len(full.user_feature_names))
    assert serving.taken.shape == (0, len(full.item_ids))
    rows = full.user_features[:20]
    for history in (np.ones(20, bool), np.zeros(20, bool)):
        got = Recommender(serving).for_feature_rows(rows, history, 5)
        want = Recommender(full).for_feature_rows(rows, history, 5)
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])


def test_round_trip_keeps_every_array(
    trained: TrainedModel, serialized: tuple[bytes, bytes]
) -> None:
    original, loaded = trained.bundle, ModelBundle.from_bytes(*serialized)
    for name in (
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
    ):
        before, after = getattr(original, name), getattr(loaded, name)
        assert after.dtype == before.dtype, name
        assert np.array_equal(before, after), name
    for name in ("user_features", "item_features", "taken", "department_popularity"):
        before, after = getattr(original, name), getattr(loaded, name)
        assert after.shape == before.shape
        assert (before != after).nnz == 0, name
    assert loaded.user_ids.dtype.kind == "U"  # ids stay strings, never objects


def test_metadata_keeps_version_config_fingerprints_counts_and_libraries(
    trained: TrainedModel, serialized: tuple[bytes, bytes]
) -> None:
    meta = json.loads(serialized[1])
    loaded = ModelBundle.from_bytes(*serialized)
    assert meta["format_version"] == FORMAT_VERSION
    assert loaded.version == trained.bundle.version == meta["version"]
    assert loaded.metadata.fingerprints == FINGERPRINTS
    assert loaded.metadata.config == CONFIG
    assert loaded.metadata.counts.employees == 300
    assert loaded.metadata.counts.trainings == 60
    assert loaded.metadata.counts.interactions == trained.dataset.taken.nnz
    assert loaded.metadata.counts.successes == trained.dataset.interactions.nnz
    assert set(loaded.metadata.serving) == {"known", "cold-start"}
    libraries = loaded.metadata.libraries
    assert {"python", "numpy", "scipy", "pandas", "rectools-lightfm"} <= set(libraries)
    assert libraries["numpy"] == np.__version__
    assert loaded.metadata.format_version == FORMAT_VERSION
    assert loaded.metadata.model_copy(update={"format_version": None}) == trained.bundle.metadata


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda m: m.pop("counts"), "counts: Field required"),
        (lambda m: m["counts"].update(employees="many"), "counts.employees"),
        (lambda m: m.update(surprise=1), "surprise: Extra inputs are not permitted"),
        (lambda m: m["serving"].update(everyone=m["serving"]["known"]), "serving.everyone"),
    ],
)
def test_metadata_that_does_not_fit_names_the_field(
    serialized: tuple[bytes, bytes], change: Callable[[dict[str, Any]], Any], named: str
) -> None:
    metadata = json.loads(serialized[1])
    change(metadata)
    with pytest.raises(ModelLoadError, match=re.escape(named)):
        ModelBundle.from_bytes(serialized[0], json.dumps(metadata).encode())


# --- damaged bundles -------------------------------------------------------------------

UNPICKLED: list[str] = []


def _tripped() -> str:
    UNPICKLED.append("unpickled")
    return "tripped"


class Tripwire:
    """Records it if anything ever unpickles it."""

    def __reduce__(self) -> tuple[Callable[[], str], tuple[()]]:
        return _tripped, ()


def arrays_of(npz: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(npz), allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def saved(arrays: dict[str, Any], allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=allow_pickle, **arrays)
    return buffer.getvalue()


def test_pickled_object_array_is_refused_without_unpickling(
    serialized: tuple[bytes, bytes],
) -> None:
    npz, meta = serialized
    arrays = arrays_of(npz)
    trap = np.empty(len(arrays["user_ids"]), dtype=object)
    trap[:] = [Tripwire() for _ in range(len(trap))]
    arrays["user_ids"] = trap
    with pytest.raises(ModelLoadError, match=r"(?i)pickle"):
        ModelBundle.from_bytes(saved(arrays, allow_pickle=True), meta)
    assert UNPICKLED == []


def _replace(name: str, change: Callable[[np.ndarray], np.ndarray]) -> Callable[[bytes], bytes]:
    def damage(npz: bytes) -> bytes:
        arrays = arrays_of(npz)
        arrays[name] = change(arrays[name])
        return saved(arrays)

    return damage


def _drop(name: str) -> Callable[[bytes], bytes]:
    def damage(npz: bytes) -> bytes:
        arrays = arrays_of(npz)
        del arrays[name]
        return saved(arrays)

    return damage


def _scribble(npz: bytes) -> bytes:
    # Garbage inside the first compressed member: the zip directory still reads.
    damaged = bytearray(npz)
    damaged[200:216] = b"\xff" * 16
    return bytes(damaged)


def _npy(npz: bytes) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.arange(3))
    return buffer.getvalue()


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda npz: npz[: len(npz) // 2], id="truncated"),
        pytest.param(lambda npz: npz[:100], id="truncated-header"),
        pytest.param(lambda npz: b"", id="empty"),
        pytest.param(_scribble, id="corrupted-member"),
        pytest.param(_npy, id="npy-not-npz"),
        pytest.param(lambda npz: b"not a zip at all", id="text"),
        pytest.param(_drop("item_feature_biases"), id="missing-array"),
        pytest.param(_drop("taken_indptr"), id="missing-sparse-part"),
        pytest.param(_replace("item_ids", lambda a: a[:-1]), id="item-ids-short"),
        pytest.param(_replace("user_feature_biases", lambda a: a[:-1]), id="biases-short"),
        pytest.param(_replace("user_feature_embeddings", lambda a: a[:, 0]), id="embeddings-1d"),
        pytest.param(
            _replace("item_feature_embeddings", lambda a: a[:, :-1]), id="factor-sizes-differ"
        ),
        pytest.param(
            _replace("item_feature_embeddings", lambda a: np.where(a > 0, np.nan, a)),
            id="nan-embeddings",
        ),
        pytest.param(_replace("item_feature_biases", lambda a: a.astype(str)), id="text-biases"),
        pytest.param(_replace("taken_shape", lambda a: a + 1), id="taken-shape"),
        pytest.param(_replace("taken_shape", lambda a: np.append(a, 2)), id="taken-3d"),
        pytest.param(_replace("taken_indices", lambda a: a + 1000), id="taken-index-range"),
        pytest.param(_replace("item_titles", lambda a: a[:, None]), id="titles-2d"),
        pytest.param(_replace("popularity", lambda a: a[:-1]), id="popularity-short"),
        pytest.param(_replace("department_columns", lambda a: a + 10**6), id="department-range"),
        pytest.param(_drop("popularity"), id="missing-prior"),
    ],
)
def test_damaged_npz_raises_model_load_error(
    serialized: tuple[bytes, bytes], damage: Callable[[bytes], bytes]
) -> None:
    npz, meta = serialized
    with pytest.raises(ModelLoadError):
        ModelBundle.from_bytes(damage(npz), meta)


@pytest.mark.parametrize(
    "meta",
    [
        b"",
        b"{not json",
        b"\xff\xfe\x00",
        b"[]",
        b"null",
        b'{"version": "v1"}',
        json.dumps({"format_version": FORMAT_VERSION + 1}).encode(),
    ],
    ids=["empty", "syntax", "not-utf8", "list", "null", "no-format", "newer-format"],
)
def test_wrong_json_raises_model_load_error(serialized: tuple[bytes, bytes], meta: bytes) -> None:
    with pytest.raises(ModelLoadError):
        ModelBundle.from_bytes(serialized[0], meta)


FORMAT_1 = Path(__file__).parent / "data" / "format1"  # written by the previous release


def test_a_bundle_written_by_the_previous_release_loads_and_its_model_serves_everyone() -> None:
    # Before priors, history features and per-population scorers: after an upgrade, the
    # version serving keeps serving until the next retrain replaces it.
    old = ModelBundle.from_bytes(
        (FORMAT_1 / "model.npz").read_bytes(), (FORMAT_1 / "model.json").read_bytes()
    )
    assert old.metadata.format_version == 1
    assert not old.history and old.n_attributes == len(old.user_feature_names)
    assert old.department_popularity.shape == (0, len(old.item_ids))
    assert old.metadata.served_by() == {"known": "model", "cold-start": "model"}
    assert old.metadata.metrics is not None
    assert (
        old.metadata.served_precision("known")
        == (old.metadata.metrics.results["known"]["hybrid model"]["precision"])
    )
    indices, _ = all_recommendations(old)
    untaken = len(old.item_ids) - np.diff(old.taken.indptr)
    assert ((indices != -1).sum(axis=1) == np.minimum(10, untaken)).all()
    assert card_html(old.metadata).startswith("<!DOCTYPE html>")


def test_inconsistent_bundle_is_not_written(trained: TrainedModel) -> None:
    original = trained.bundle
    broken = ModelBundle(
        **{
            **{name: getattr(original, name) for name in original.__dataclass_fields__},
            "taken": sp.csr_matrix((len(original.user_ids), len(original.item_ids) + 1)),
        }
    )
    with pytest.raises(ModelLoadError, match="taken has shape"):
        broken.to_bytes()
