"""Id maps and sparse matrices built from clean frames, checked against hand-made answers."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.features import (
    IdMap,
    build_dataset,
    describe_employees,
    entity_frame,
    feature_matrix,
    interaction_matrices,
    rows_for_new,
)
from shared.schema import parse_entities
from shared.settings import DataContract, EntityColumns, FeatureOptions

CONTRACT = DataContract()
USER_COLUMNS = CONTRACT.users  # ou, skills*, language, grade, career interests*


def users_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": ["u1", "00123", "123"],
            "ou": ["Sales", "", "HR"],
            "skills": ["Python; SQL", "sql;SQL ;", ""],
            "language": ["English", "english", "German"],
            "grade": ["G1", "G2", "G2"],
            "career interests": ["", "data;Cloud", "data"],
        }
    )


def trainings_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": ["t1", "t2", "t3", "t4"],
            "title": ["A", "B", "C", "Never taken"],
            "main skill": ["python", "sql", "excel", "kubernetes"],
            "category": ["data", "data", "finance", "cloud"],
            "provider": ["Udemy", "internal", "internal", "Coursera"],
            "language": ["english", "english", "german", "english"],
            "level": ["beginner", "advanced", "beginner", "advanced"],
        }
    )


def taken_frame() -> pd.DataFrame:
    """As parsed with a minimum weight of 3: the rating of 1 is taken, but no success."""
    return pd.DataFrame(
        {
            "user_id": ["u1", "u1", "00123", "123", "ghost", "123"],
            "training_id": ["t1", "t2", "t2", "t3", "t1", "t9"],
            "weight": [5.0, 3.0, 4.0, 1.0, 5.0, 2.0],
            "date": [""] * 6,
            "positive": [True, True, True, False, True, False],
        }
    )


def names_of_row(matrix: sp.csr_matrix, names: IdMap, row: int) -> set[str]:
    return set(names.ids[matrix[row].indices].tolist())


# --- id maps and interactions ----------------------------------------------------------


def test_id_map_keeps_strings_and_reports_unknown_ids() -> None:
    ids = IdMap.of(["00123", "123", "u1"])
    assert ids.rows(["123", "00123", "nobody", "u1"]).tolist() == [1, 0, -1, 2]
    assert ids.row("00123") == 0
    assert ids.row("0123") is None
    assert len(ids) == 3


def test_interaction_and_weight_matrices_match_the_frame() -> None:
    users = IdMap.of(["u1", "00123", "123"])
    items = IdMap.of(["t1", "t2", "t3", "t4"])
    taken, successes, weights = interaction_matrices(taken_frame(), users, items)
    # The unknown employee "ghost" and training "t9" are ignored.
    assert weights.toarray().tolist() == [
        [5.0, 3.0, 0.0, 0.0],
        [0.0, 4.0, 0.0, 0.0],
        [0.0, 0.0, 1.0, 0.0],
    ]
    assert taken.toarray().tolist() == (weights.toarray() > 0).astype(float).tolist()
    assert taken.shape == weights.shape == successes.shape == (3, 4)
    assert np.array_equal(taken.indices, weights.indices)  # same pattern
    # The low rating is taken (never recommended again) but is no success to learn from.
    assert successes.toarray().tolist() == [[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]]


# --- feature matrices ------------------------------------------------------------------


def test_feature_names_are_lower_cased_column_value_pairs_split_on_the_delimiter() -> None:
    matrix, names = feature_matrix(
        users_frame(), USER_COLUMNS, ";", identity=False, attributes=True, normalize=False
    )
    assert names.ids.tolist() == sorted(names.ids.tolist())
    assert names_of_row(matrix, names, 0) == {
        "ou:sales",
        "skills:python",
        "skills:sql",
        "language:english",
        "grade:g1",
    }
    # "sql;SQL ;" is one value; blank cells and empty pieces give nothing.
    assert names_of_row(matrix, names, 1) == {
        "skills:sql",
        "language:english",
        "grade:g2",
        "career interests:data",
        "career interests:cloud",
    }
    assert names_of_row(matrix, names, 2) == {
        "ou:hr",
        "language:german",
        "grade:g2",
        "career interests:data",
    }
    assert set(matrix.data.tolist()) == {1.0}


def test_identity_features_come_first_in_row_order() -> None:
    frame = users_frame()
    matrix, names = feature_matrix(
        frame, USER_COLUMNS, ";", identity=True, attributes=True, normalize=False
    )
    n = len(frame)
    assert names.ids[:n].tolist() == ["id:u1", "id:00123", "id:123"]
    assert not any(name.startswith("id:") for name in names.ids[n:])
    assert np.array_equal(matrix[:, :n].toarray(), np.eye(n))
    for row, user in enumerate(frame["id"]):
        assert names.row(f"id:{user}") == row


@pytest.mark.parametrize("identity", [False, True])
@pytest.mark.parametrize("normalize", [False, True])
def test_normalization_makes_rows_sum_to_one(identity: bool, normalize: bool) -> None:
    matrix, _ = feature_matrix(
        users_frame(), USER_COLUMNS, ";", identity=identity, attributes=True, normalize=normalize
    )
    assert matrix.dtype == np.float32
    counts = np.diff(matrix.indptr)
    assert counts.tolist() == [5 + identity, 5 + identity, 4 + identity]
    sums = np.asarray(matrix.sum(axis=1)).ravel()
    if normalize:
        np.testing.assert_allclose(sums, 1.0, rtol=1e-6)
        for row, count in enumerate(counts):
            np.testing.assert_allclose(matrix[row].data, 1.0 / count, rtol=1e-6)
    else:
        assert set(matrix.data.tolist()) == {1.0}
        assert sums.tolist() == counts.tolist()


def test_without_identity_and_attributes_identity_is_used() -> None:
    matrix, names = feature_matrix(
        users_frame(), USER_COLUMNS, ";", identity=False, attributes=False, normalize=True
    )
    assert names.ids.tolist() == ["id:u1", "id:00123", "id:123"]
    assert np.array_equal(matrix.toarray(), np.eye(3))


@st.composite
def entity_frames(draw: st.DrawFn) -> pd.DataFrame:
    values = st.sampled_from(["", " ", "a", "A", "b ", "c", "a;b", "b;;A", " c ;"])
    n = draw(st.integers(0, 6))
    return pd.DataFrame(
        {
            "id": [f"e{i}" for i in range(n)],
            **{
                column: draw(st.lists(values, min_size=n, max_size=n))
                for column in USER_COLUMNS.features
            },
        },
        dtype=str,
    )


def distinct_values(frame: pd.DataFrame, row: int) -> set[str]:
    found = set()
    for column in USER_COLUMNS.features:
        cell = frame.iloc[row][column]
        pieces = cell.split(";") if column in USER_COLUMNS.multi_valued else [cell]
        found |= {f"{column}:{p.strip().lower()}" for p in pieces if p.strip()}
    return found


@settings(max_examples=60, deadline=None)
@given(entity_frames(), st.booleans())
def test_each_row_has_one_feature_per_distinct_value(frame: pd.DataFrame, identity: bool) -> None:
    matrix, names = feature_matrix(
        frame, USER_COLUMNS, ";", identity=identity, attributes=True, normalize=True
    )
    assert matrix.shape == (len(frame), len(names))
    for row in range(len(frame)):
        expected = distinct_values(frame, row) | ({f"id:e{row}"} if identity else set())
        assert names_of_row(matrix, names, row) == expected
        if expected:
            assert matrix[row].sum() == pytest.approx(1.0, rel=1e-6)


def as_categorical(frame: pd.DataFrame, columns: list[str], reverse: bool = False) -> pd.DataFrame:
    """The frame with these columns categorical over all their values (as parsing gives them)."""
    out = frame.copy()
    for column in columns:
        categories = sorted(set(frame[column]), reverse=reverse)
        out[column] = pd.Categorical(frame[column], categories=categories)
    return out


@settings(max_examples=60, deadline=None)
@given(entity_frames(), st.data())
def test_categorical_attributes_and_row_subsets_build_the_same_matrices(
    frame: pd.DataFrame, data: st.DataObject
) -> None:
    # Parsed extracts hold attributes as categoricals; a subset of their rows (the
    # cold-start employees) keeps categories no remaining row has, which must not
    # become feature names.
    rows = data.draw(st.lists(st.integers(0, max(len(frame) - 1, 0)), unique=True))
    rows = [r for r in rows if r < len(frame)]
    categorical = as_categorical(frame, list(USER_COLUMNS.features)).iloc[rows]
    plain = frame.iloc[rows]
    for identity in (False, True):
        expected, expected_names = feature_matrix(
            plain, USER_COLUMNS, ";", identity=identity, attributes=True, normalize=True
        )
        got, names = feature_matrix(
            categorical, USER_COLUMNS, ";", identity=identity, attributes=True, normalize=True
        )
        assert names.ids.tolist() == expected_names.ids.tolist()
        assert (got != expected).nnz == 0


@pytest.mark.parametrize("reverse", [False, True])
def test_categorical_ids_build_the_same_interactions(reverse: bool) -> None:
    # Ids encoded against the extract's own ids take a shortcut; encoded in another
    # order (a bundle's ids) they are looked up: both give the plain frame's matrices.
    users = IdMap.of(["u1", "00123", "123"])
    items = IdMap.of(["t1", "t2", "t3", "t4"])
    expected = interaction_matrices(taken_frame(), users, items)
    frame = taken_frame()
    frame = frame[frame["user_id"].isin(users.ids) & frame["training_id"].isin(items.ids)]
    encoded = frame.assign(
        user_id=pd.Categorical(frame["user_id"], categories=sorted(users.ids, reverse=reverse)),
        training_id=pd.Categorical(frame["training_id"], categories=list(items.ids)),
    )
    for want, got in zip(expected, interaction_matrices(encoded, users, items), strict=True):
        assert (want != got).nnz == 0
        assert got.has_canonical_format
    # Grouped by employee as parsing leaves them: read off the frame, same matrices.
    grouped = encoded.assign(
        row=users.rows(frame["user_id"]), col=items.rows(frame["training_id"])
    ).sort_values(["row", "col"])
    for want, got in zip(expected, interaction_matrices(grouped, users, items), strict=True):
        assert (want != got).nnz == 0
        assert got.has_canonical_format


# --- new entities ----------------------------------------------------------------------


def test_rows_for_new_ignores_and_returns_unknown_values() -> None:
    _, names = feature_matrix(
        users_frame(), USER_COLUMNS, ";", identity=False, attributes=True, normalize=True
    )
    new = pd.DataFrame(
        {
            "id": ["n1", "u1"],
            "ou": ["Marketing", "sales"],
            "skills": ["python;COBOL", ""],
            "language": ["Klingon", "english"],
            "grade": ["", "G1"],
            "career interests": ["data", ""],
        }
    )
    rows, unknown = rows_for_new(new, USER_COLUMNS, ";", names, normalize=False)
    assert unknown == ["language:klingon", "ou:marketing", "skills:cobol"]
    assert rows.shape == (2, len(names))
    assert names_of_row(rows, names, 0) == {"skills:python", "career interests:data"}
    assert names_of_row(rows, names, 1) == {"ou:sales", "language:english", "grade:g1"}


def test_an_employee_is_their_attributes_then_their_history() -> None:
    attributes = sp.csr_matrix(np.array([[0.5, 0.5, 0], [0, 0, 1], [0, 0, 0]], np.float32))
    taken = sp.csr_matrix(np.array([[1, 1, 0, 1], [0, 0, 0, 0], [0, 1, 0, 0]], np.float32))
    rows = describe_employees(attributes, taken).toarray()
    # Attribute columns first, unchanged; then one column per training, the history's
    # weights summing to 1 whatever its length; no history, no history weight.
    third = 1 / 3
    expected = [[0.5, 0.5, 0, third, third, 0, third], [0, 0, 1, 0, 0, 0, 0], [0, 0, 0, 0, 1, 0, 0]]
    assert np.allclose(rows, expected)
    assert describe_employees(attributes, None).toarray().tolist() == attributes.toarray().tolist()


def test_dataset_history_features_follow_the_trainings_taken() -> None:
    dataset = build_dataset(
        users_frame(), trainings_frame(), taken_frame(), CONTRACT, FeatureOptions()
    )
    names = dataset.user_feature_names.ids.tolist()
    assert names[-4:] == ["taken:t1", "taken:t2", "taken:t3", "taken:t4"]
    assert names[: len(dataset.attribute_names)] == dataset.attribute_names.ids.tolist()
    features = dataset.user_features()
    history = features[:, len(dataset.attribute_names) :].toarray()
    # Every training taken describes the employee, the low-rated one of "123" included.
    assert np.allclose(history, [[0.5, 0.5, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]])
    # Described with part of the history only (an evaluation split): that part.
    part = sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], np.float32))
    assert np.allclose(
        dataset.user_features(part)[:, len(dataset.attribute_names) :].toarray()[0], [1, 0, 0, 0]
    )


@settings(max_examples=60, deadline=None)
@given(entity_frames())
def test_rows_for_new_never_errors(frame: pd.DataFrame) -> None:
    _, names = feature_matrix(
        users_frame(), USER_COLUMNS, ";", identity=False, attributes=True, normalize=True
    )
    rows, unknown = rows_for_new(frame, USER_COLUMNS, ";", names, normalize=True)
    assert rows.shape == (len(frame), len(names))
    every = set().union(*(distinct_values(frame, r) for r in range(len(frame))))
    assert unknown == sorted(v for v in every if names.row(v) is None)
    sums = np.asarray(rows.sum(axis=1)).ravel()
    assert np.all((np.abs(sums - 1.0) < 1e-6) | (sums == 0))


@pytest.mark.parametrize("item_identity", [True, False])
def test_a_training_nobody_took_still_has_features(item_identity: bool) -> None:
    options = FeatureOptions(item_identity=item_identity)
    dataset = build_dataset(users_frame(), trainings_frame(), taken_frame(), CONTRACT, options)
    never = dataset.items.row("t4")
    assert never is not None
    assert dataset.interactions[:, never].nnz == 0
    row_names = names_of_row(dataset.item_features, dataset.item_feature_names, never)
    assert {"main skill:kubernetes", "category:cloud", "provider:coursera"} <= row_names
    assert ("id:t4" in row_names) == item_identity
    assert dataset.item_features[never].sum() == pytest.approx(1.0)


def test_build_dataset_follows_the_options() -> None:
    options = FeatureOptions(history=False, normalize=False, item_features=False)
    dataset = build_dataset(users_frame(), trainings_frame(), taken_frame(), CONTRACT, options)
    assert dataset.users.ids.tolist() == ["u1", "00123", "123"]
    assert dataset.items.ids.tolist() == ["t1", "t2", "t3", "t4"]
    assert dataset.interactions.shape == dataset.taken.shape == (3, 4)
    assert (dataset.taken.nnz, dataset.interactions.nnz) == (4, 3)  # one taken, no success
    assert not any(name.startswith("taken:") for name in dataset.user_feature_names.ids)
    assert dataset.item_feature_names.ids.tolist() == ["id:t1", "id:t2", "id:t3", "id:t4"]
    assert dataset.user_features().shape == (3, len(dataset.user_feature_names))
    assert set(dataset.user_features().data.tolist()) == {1.0}


def test_history_or_attributes_are_required() -> None:
    with pytest.raises(ValueError, match=r"attributes .* or history"):
        FeatureOptions(history=False, user_features=False)


BANDED = EntityColumns(
    id="User-Id",
    features=("ou", "skills", "los"),
    multi_valued=("skills",),
    bands={"los": (2, 5, 10)},
)


def test_entity_frame_matches_parse_entities_on_the_same_csv() -> None:
    records: list[dict[str, str | list[str]]] = [
        {"id": "00042", "ou": "Sales", "skills": ["python", "SQL"], "los": "3"},
        {"id": "n2", "ou": "hr", "skills": [], "los": "12"},
        {"id": "n3", "skills": "excel;crm", "los": "0.5"},
        {"id": "n4", "ou": "legal", "skills": ["gdpr"], "los": "ten"},
    ]
    csv = (
        b"User-Id,ou,skills,los\n"
        b'00042,Sales,"python;SQL",3\n'
        b"n2,hr,,12\n"
        b"n3,,excel;crm,0.5\n"
        b"n4,legal,gdpr,ten\n"
    )
    parsed, _ = parse_entities(io.BytesIO(csv), BANDED, "new.csv", "users")
    built = entity_frame(records, BANDED, ";")
    # The parsed attributes are categorical (encoded once, at parse time); same values.
    pd.testing.assert_frame_equal(built, parsed.astype(str), check_dtype=False)
    assert built["los"].tolist() == ["2-4", "10+", "<2", ""]
    # And so they give the same feature rows against a trained map.
    _, names = feature_matrix(parsed, BANDED, ";", identity=False, attributes=True, normalize=True)
    from_dicts, unknown_dicts = rows_for_new(built, BANDED, ";", names, normalize=True)
    from_csv, unknown_csv = rows_for_new(parsed, BANDED, ";", names, normalize=True)
    assert (from_dicts != from_csv).nnz == 0
    assert unknown_dicts == unknown_csv == []
