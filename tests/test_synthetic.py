from __future__ import annotations

import re
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shared.synthetic import (
    AS_OF,
    CATEGORIES,
    DEFAULT_WEIGHTS,
    DEPARTMENTS,
    GRADES,
    LANGUAGES,
    LEVELS,
    PROVIDERS,
    SKILL_CATEGORIES,
    SKILLS,
    TAKEN_COLUMNS,
    TRAINING_COLUMNS,
    USER_COLUMNS,
    Oracle,
    SyntheticData,
    generate,
    write_csvs,
)

N_USERS, N_TRAININGS, N_INTERACTIONS = 300, 60, 3_000


@pytest.fixture(scope="module")
def data() -> SyntheticData:
    return generate(N_USERS, N_TRAININGS, N_INTERACTIONS, seed=7)


def read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def positions(data: SyntheticData) -> tuple[np.ndarray, np.ndarray]:
    users = pd.Index(data.users["User-Id"]).get_indexer(data.taken["User-Id"])
    trainings = pd.Index(data.trainings["Training-Id"]).get_indexer(data.taken["Training-Id"])
    return users, trainings


def test_same_seed_same_bytes_and_other_seed_differs(tmp_path: Path) -> None:
    small = (120, 30, 800)
    first = write_csvs(generate(*small, seed=3), tmp_path / "a")
    again = write_csvs(generate(*small, seed=3), tmp_path / "b")
    other = write_csvs(generate(*small, seed=4), tmp_path / "c")
    assert set(first) == {"users", "trainings", "trainings-taken", "oracle"}
    for kind, path in first.items():
        assert path.read_bytes() == again[kind].read_bytes(), kind
        assert path.read_bytes() != other[kind].read_bytes(), kind
    assert first["trainings-taken"].name == "trainings-taken.csv"
    assert first["oracle"].name == "oracle.json"


def test_columns_are_strings_without_missing_values(data: SyntheticData) -> None:
    for frame, columns in (
        (data.users, USER_COLUMNS),
        (data.trainings, TRAINING_COLUMNS),
        (data.taken, TAKEN_COLUMNS),
    ):
        assert list(frame.columns) == list(columns)
        for column in frame.columns:
            assert pd.api.types.is_string_dtype(frame[column]), column
            assert frame[column].notna().all(), column
            assert all(isinstance(v, str) and v != "" for v in frame[column]), column


def test_ids_have_leading_zeros_and_are_unique(data: SyntheticData) -> None:
    user_ids = data.users["User-Id"]
    assert user_ids.str.fullmatch(r"\d{6}").all()
    assert user_ids.iloc[0] == "000001"
    assert user_ids.is_unique
    training_ids = data.trainings["Training-Id"]
    assert training_ids.str.fullmatch(r"T\d{5}").all()
    assert training_ids.iloc[0] == "T00001"
    assert training_ids.is_unique


def test_user_values_follow_the_vocabularies(data: SyntheticData) -> None:
    users = data.users
    assert set(users["ou"]) <= set(DEPARTMENTS)
    assert set(users["language"]) <= set(LANGUAGES)
    assert users["language"].value_counts().index[0] == "english"
    assert set(users["grade"]) <= set(GRADES)
    skills = users["skills"].str.split(";")
    assert skills.map(len).between(2, 5).all()
    assert all(set(s) <= set(SKILLS) and len(set(s)) == len(s) for s in skills)
    interests = users["career interests"].str.split(";")
    assert interests.map(len).between(1, 2).all()
    assert all(set(i) <= set(CATEGORIES) for i in interests)
    assert users["los"].astype(int).between(0, 35).all()
    assert users["Age"].astype(int).between(18, 70).all()


def test_training_values_follow_the_vocabularies(data: SyntheticData) -> None:
    trainings = data.trainings
    assert set(trainings["main skill"]) <= set(SKILLS)
    pairs = zip(trainings["main skill"], trainings["category"], strict=True)
    assert all(category in SKILL_CATEGORIES[skill] for skill, category in pairs)
    assert set(trainings["provider"]) <= set(PROVIDERS)
    assert set(trainings["language"]) <= set(LANGUAGES)
    assert set(trainings["level"]) <= set(LEVELS)
    assert trainings["Training Title"].is_unique


def test_taken_rows(data: SyntheticData) -> None:
    taken = data.taken
    assert len(taken) == N_INTERACTIONS
    assert not taken.duplicated(["User-Id", "Training-Id"]).any()
    assert taken["User-Id"].isin(data.users["User-Id"]).all()
    assert taken["Training-Id"].isin(data.trainings["Training-Id"]).all()
    assert set(taken["rating"]) <= {"1", "2", "3", "4", "5"}
    assert taken["date"].map(lambda d: re.fullmatch(r"\d{4}-\d{2}-\d{2}", d) is not None).all()
    days = taken["date"].map(date.fromisoformat)
    assert days.min() >= AS_OF - timedelta(days=3 * 365)
    assert days.max() <= AS_OF


def test_some_users_take_nothing_and_the_rest_vary(data: SyntheticData) -> None:
    per_user = data.taken["User-Id"].value_counts().reindex(data.users["User-Id"], fill_value=0)
    none = per_user == 0
    assert 0.01 <= none.mean() <= 0.06
    # The users without trainings are the new joiners.
    assert (data.users.loc[none.to_numpy(), "los"] == "0").all()
    assert per_user[~none].std() > 3


def test_oracle_json_round_trip_through_the_csvs(data: SyntheticData, tmp_path: Path) -> None:
    paths = write_csvs(data, tmp_path)
    oracle = Oracle.from_json(
        paths["oracle"].read_text(encoding="utf-8"),
        read(paths["users"]),
        read(paths["trainings"]),
    )
    users = list(data.users["User-Id"])
    trainings = list(data.trainings["Training-Id"])
    expected = data.oracle.scores(users, trainings)
    actual = oracle.scores(users, trainings)
    assert actual.dtype == np.float64
    assert actual.shape == (N_USERS, N_TRAININGS)
    np.testing.assert_array_equal(actual, expected)
    assert oracle.to_json() == data.oracle.to_json()


def test_oracle_matches_the_formula(data: SyntheticData) -> None:
    params = data.oracle.params
    w = params.weights
    users = data.users.iloc[:15]
    trainings = data.trainings.iloc[:15]
    got = data.oracle.scores(list(users["User-Id"]), list(trainings["Training-Id"]))
    for i, user in enumerate(users.itertuples(index=False)):
        u = dict(zip(USER_COLUMNS, user, strict=True))
        for j, training in enumerate(trainings.itertuples(index=False)):
            t = dict(zip(TRAINING_COLUMNS, training, strict=True))
            category = params.categories.index(t["category"])
            expected = (
                w.skill * (t["main skill"] in u["skills"].split(";"))
                + w.interest * (t["category"] in u["career interests"].split(";"))
                + w.dept * params.affinity[params.departments.index(u["ou"])][category]
                + w.language * (t["language"] == u["language"])
                + w.level
                * params.level_fit[params.grades.index(u["grade"])][params.levels.index(t["level"])]
                + w.popularity * params.popularity[t["Training-Id"]]
            )
            assert got[i, j] == pytest.approx(expected)


def test_oracle_normalizes_case_and_whitespace(data: SyntheticData) -> None:
    messy_users = data.users.copy()
    messy_users["skills"] = messy_users["skills"].str.upper().str.replace(";", " ; ")
    messy_users["ou"] = " " + messy_users["ou"].str.title()
    messy_trainings = data.trainings.copy()
    messy_trainings["level"] = messy_trainings["level"].str.upper() + " "
    oracle = Oracle(messy_users, messy_trainings, data.oracle.params)
    users = list(data.users["User-Id"][:50])
    trainings = list(data.trainings["Training-Id"])
    np.testing.assert_array_equal(
        oracle.scores(users, trainings), data.oracle.scores(users, trainings)
    )


def test_planted_preference_shows_in_the_interactions(data: SyntheticData) -> None:
    users, trainings = positions(data)
    scores = data.oracle.scores_at(np.arange(N_USERS), np.arange(N_TRAININGS))
    rng = np.random.default_rng(0)
    random_users = rng.integers(0, N_USERS, 20_000)
    random_trainings = rng.integers(0, N_TRAININGS, 20_000)
    assert scores[users, trainings].mean() > scores[random_users, random_trainings].mean() + 1.0

    skills = data.users["skills"].str.split(";").map(set).to_numpy()
    main_skill = data.trainings["main skill"].to_numpy()

    def share_with_skill(u: np.ndarray, t: np.ndarray) -> float:
        return float(np.mean([main_skill[j] in skills[i] for i, j in zip(u, t, strict=True)]))

    taken_share = share_with_skill(users, trainings)
    random_share = share_with_skill(random_users, random_trainings)
    assert taken_share > 2.5 * random_share


def test_oracle_beats_popularity_on_held_out_interactions(data: SyntheticData) -> None:
    users, trainings = positions(data)
    rng = np.random.default_rng(1)
    # Hold out 20% of each user's trainings (at least one, for users with two or more).
    order = np.lexsort((rng.random(len(users)), users))
    users, trainings = users[order], trainings[order]
    per_user = np.bincount(users, minlength=N_USERS)
    rank = np.arange(len(users)) - (np.cumsum(per_user) - per_user)[users]
    n_test = np.where(per_user >= 2, np.maximum(1, np.round(0.2 * per_user)), 0)
    test = rank < n_test[users]

    seen = np.zeros((N_USERS, N_TRAININGS), dtype=bool)
    seen[users[~test], trainings[~test]] = True
    truth = np.zeros((N_USERS, N_TRAININGS), dtype=bool)
    truth[users[test], trainings[test]] = True
    evaluated = truth.any(axis=1)

    def precision_at_10(scores: np.ndarray) -> float:
        masked = np.where(seen, -np.inf, scores)[evaluated]
        top = np.argsort(-masked, axis=1, kind="stable")[:, :10]
        return float(np.take_along_axis(truth[evaluated], top, axis=1).mean())

    oracle = precision_at_10(data.oracle.scores_at(np.arange(N_USERS), np.arange(N_TRAININGS)))
    counts = np.bincount(trainings[~test], minlength=N_TRAININGS).astype(float)
    popularity = precision_at_10(np.broadcast_to(counts, (N_USERS, N_TRAININGS)))
    assert oracle > 1.2 * popularity


@pytest.mark.parametrize(
    ("user_ids", "training_ids", "unknown"),
    [(["000001", "424242"], ["T00001"], "424242"), (["000001"], ["T00001", "T99999"], "T99999")],
)
def test_unknown_id_raises_key_error_naming_it(
    data: SyntheticData, user_ids: list[str], training_ids: list[str], unknown: str
) -> None:
    with pytest.raises(KeyError, match=unknown):
        data.oracle.scores(user_ids, training_ids)


def test_rejects_invalid_sizes() -> None:
    with pytest.raises(ValueError, match="n_users"):
        generate(n_users=0)


# --- regimes ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def history() -> SyntheticData:
    return generate(1500, 150, 15_000, seed=5, regime="history")


def test_the_attributes_regime_is_the_default_and_the_others_differ() -> None:
    small = (200, 40, 1500)
    default = generate(*small, seed=1)
    assert default.taken.equals(generate(*small, seed=1, regime="attributes").taken)
    for regime in ("history", "weak"):
        other = generate(*small, seed=1, regime=regime)
        assert other.users.equals(default.users)  # the same employees and catalog
        assert not other.taken.equals(default.taken)
        assert other.taken.equals(generate(*small, seed=1, regime=regime).taken)  # seeded
    with pytest.raises(ValueError, match="unknown regime 'strong'"):
        generate(*small, regime="strong")


def test_hidden_favourites_are_not_in_the_attributes_and_show_in_the_history(
    history: SyntheticData,
) -> None:
    favourites = history.oracle.params.favourites
    skills = history.users.set_index("User-Id")["skills"].str.split(";")
    assert all(len(f) == 2 and not set(f) & set(skills[u]) for u, f in favourites.items())
    main_skill = history.trainings.set_index("Training-Id")["main skill"]
    took = main_skill[history.taken["Training-Id"]].to_numpy()
    liked = np.asarray(
        [s in favourites[u] for u, s in zip(history.taken["User-Id"], took, strict=True)]
    )
    # Two favourites among ~28 unlisted skills: a favourite's trainings are picked far
    # more often than their share of the catalog.
    share = np.mean([main_skill.isin(f).mean() for f in favourites.values()])
    assert liked.mean() > 3 * share


def followed_share(data: SyntheticData) -> float:
    """Of the intermediate trainings taken, the share whose skill the employee also took
    at beginner level."""
    trainings = data.trainings.set_index("Training-Id")
    taken = data.taken.assign(
        skill=trainings.loc[data.taken["Training-Id"], "main skill"].to_numpy(),
        level=trainings.loc[data.taken["Training-Id"], "level"].to_numpy(),
    )
    beginners = taken[taken["level"] == "beginner"].groupby("User-Id")["skill"].apply(set)
    intermediate = taken[taken["level"] == "intermediate"]
    pairs = zip(intermediate["User-Id"], intermediate["skill"], strict=True)
    return float(np.mean([skill in beginners.get(user, set()) for user, skill in pairs]))


def test_levels_progress_from_one_to_the_next(history: SyntheticData) -> None:
    oracle = history.oracle
    trainings = history.trainings.reset_index(drop=True)
    skill = trainings["main skill"].iloc[0]
    same = trainings["main skill"] == skill
    beginner = int(np.flatnonzero(same & (trainings["level"] == "beginner"))[0])
    took = np.zeros((1, len(trainings)))
    took[0, beginner] = 1
    user, ids = [str(history.users["User-Id"].iloc[0])], list(trainings["Training-Id"])
    lift = oracle.scores(user, ids, took)[0] - oracle.scores(user, ids, 0 * took)[0]
    intermediate = (same & (trainings["level"] == "intermediate")).to_numpy()
    # Exactly the progression weight on the next level, plus what the taste learnt.
    others = ~intermediate & (trainings["main skill"] != skill).to_numpy()
    assert np.allclose(lift[intermediate] - lift[same.to_numpy() & ~intermediate][0], 2.0, atol=0.2)
    assert lift[intermediate].min() > lift[others].max()
    # And it shows in what employees took: more intermediate trainings follow their beginner.
    control = generate(1500, 150, 15_000, seed=5, regime="attributes")
    assert followed_share(history) > followed_share(control) + 0.05


def test_the_oracle_knows_what_a_recommender_observes(history: SyntheticData) -> None:
    oracle = history.oracle
    users = list(history.users["User-Id"][:200])
    trainings = list(history.trainings["Training-Id"])
    user_rows = pd.Index(history.users["User-Id"]).get_indexer(history.taken["User-Id"])
    item_rows = pd.Index(trainings).get_indexer(history.taken["Training-Id"])
    seen = np.zeros((len(history.users), len(trainings)))
    seen[user_rows, item_rows] = 1
    observed = oracle.scores(users, trainings, seen[:200])
    nothing = oracle.scores(users, trainings, np.zeros((200, len(trainings))))
    new = oracle.scores(users, trainings, None)
    # Without a history the posterior is the prior: the same as knowing nothing.
    np.testing.assert_allclose(
        nothing - nothing.mean(axis=1, keepdims=True),
        new - new.mean(axis=1, keepdims=True),
        atol=1e-9,
    )
    # A history moves the taste towards the favourites: their trainings rise.
    favourites = oracle.params.favourites
    main_skill = history.trainings["main skill"].to_numpy()
    lift = [
        (observed[i] - new[i])[np.isin(main_skill, favourites[u])].mean()
        - (observed[i] - new[i])[~np.isin(main_skill, favourites[u])].mean()
        for i, u in enumerate(users)
        if seen[i].sum() >= 5
    ]
    assert np.mean(lift) > 0.5
    # Knowing the true favourites is an upper bound the posterior approaches.
    truth = oracle.scores_at(np.arange(200), np.arange(len(trainings)), seen[:200], true_taste=True)
    assert truth.shape == observed.shape


def test_weak_attributes_predict_little_and_popularity_is_long_tailed() -> None:
    weak = generate(2000, 200, 20_000, seed=2, regime="weak")
    attributes = generate(2000, 200, 20_000, seed=2, regime="attributes")

    def top_decile_share(data: SyntheticData) -> float:
        counts = data.taken["Training-Id"].value_counts().to_numpy()
        return float(counts[:20].sum() / counts.sum())

    assert top_decile_share(weak) > top_decile_share(attributes) + 0.05
    weights = weak.oracle.params.weights
    assert weights.skill < DEFAULT_WEIGHTS.skill / 4 and weights.taste > weights.skill
