"""Synthetic HR extracts with planted preferences and a known oracle.

The generator writes the three extracts the recommender consumes (users, trainings and
trainings taken) in the column style of the real HR exports, plus the hidden parameters
of the preference that produced the interactions. Because the "true" preference is
known, a trained model can be scored against the best achievable ranking (the oracle)
and against naive baselines such as global popularity.

Three regimes (:data:`REGIMES`), so that the data does not simply share the model's
assumptions:

``attributes``
    Preferences are a function of the attributes (skills, interests, department,
    language, grade) plus a training's popularity: what an attributes-only model assumes.
``history``
    Each employee also has hidden favourite skills, visible in nothing but what they
    take, and trainings follow level progressions (having taken the beginner training
    of a skill makes its intermediate ones likelier, and so on); the attributes only
    partly inform.
``weak``
    Attributes barely predict anything; popularity is long-tailed (Zipf); hidden
    favourites and progressions are what a history reveals. Closest to the public
    data sets where demographics predict little and past choices a lot.

Everything is deterministic for a seed: the same seed gives the same frames, and the
same bytes once written with :func:`write_csvs`.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import scipy.sparse as sp
from faker import Faker

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

# Dates are relative to a fixed day, not to today, so a seed gives the same bytes on
# every run.
AS_OF = date(2026, 10, 31)
HISTORY_YEARS = 3

# Each skill belongs to one or two career-interest categories; trainings draw their
# category from their main skill's categories, which is what correlates the two.
SKILL_CATEGORIES: dict[str, tuple[str, ...]] = {
    "python": ("data", "software engineering"),
    "sql": ("data",),
    "machine learning": ("data",),
    "statistics": ("data", "finance"),
    "power bi": ("data",),
    "excel": ("finance", "data"),
    "azure": ("cloud",),
    "aws": ("cloud",),
    "kubernetes": ("cloud", "software engineering"),
    "docker": ("software engineering", "cloud"),
    "terraform": ("cloud",),
    "java": ("software engineering",),
    "javascript": ("software engineering", "design"),
    "git": ("software engineering",),
    "agile": ("project management", "software engineering"),
    "scrum": ("project management",),
    "budgeting": ("finance", "project management"),
    "accounting": ("finance",),
    "negotiation": ("sales", "leadership"),
    "public speaking": ("leadership", "sales"),
    "crm": ("sales",),
    "coaching": ("leadership",),
    "people management": ("leadership",),
    "figma": ("design",),
    "ux research": ("design",),
    "cybersecurity": ("security",),
    "network security": ("security", "cloud"),
    "gdpr": ("compliance", "security"),
    "risk management": ("compliance", "finance"),
    "contract law": ("compliance",),
}
SKILLS: tuple[str, ...] = tuple(SKILL_CATEGORIES)
CATEGORIES: tuple[str, ...] = (
    "data",
    "cloud",
    "software engineering",
    "project management",
    "finance",
    "sales",
    "leadership",
    "design",
    "security",
    "compliance",
)
DEPARTMENTS: tuple[str, ...] = (
    "development",
    "sales",
    "operations",
    "support",
    "finance",
    "marketing",
    "hr",
    "legal",
)
DEPARTMENT_SHARES = (0.22, 0.16, 0.15, 0.13, 0.10, 0.10, 0.07, 0.07)
LANGUAGES: tuple[str, ...] = ("english", "french", "german", "spanish", "dutch")
USER_LANGUAGE_SHARES = (0.50, 0.18, 0.14, 0.10, 0.08)
TRAINING_LANGUAGE_SHARES = (0.80, 0.07, 0.06, 0.04, 0.03)
# Names follow the employee's language so that the extracts carry realistic non-ASCII text.
NAME_LOCALES: dict[str, str] = {
    "english": "en_GB",
    "french": "fr_FR",
    "german": "de_DE",
    "spanish": "es_ES",
    "dutch": "nl_NL",
}
GENDERS: tuple[str, ...] = ("female", "male", "undisclosed")
GENDER_SHARES = (0.49, 0.48, 0.03)
GRADES: tuple[str, ...] = ("G1", "G2", "G3", "G4", "G5", "G6")
LEVELS: tuple[str, ...] = ("beginner", "intermediate", "advanced")
LEVEL_SHARES = (0.40, 0.40, 0.20)
# Rows are grades, columns levels: juniors want beginner courses, seniors advanced ones.
LEVEL_FIT: tuple[tuple[float, ...], ...] = (
    (1.0, 0.4, 0.0),
    (1.0, 0.4, 0.0),
    (0.4, 1.0, 0.4),
    (0.4, 1.0, 0.4),
    (0.0, 0.4, 1.0),
    (0.0, 0.4, 1.0),
)
PROVIDERS: tuple[str, ...] = ("internal", "LinkedIn Learning", "Udemy", "Pluralsight", "Coursera")
PROVIDER_SHARES = (0.35, 0.20, 0.18, 0.15, 0.12)
NO_INTERACTION_SHARE = 0.03

USER_COLUMNS: tuple[str, ...] = (
    "User-Id",
    "name",
    "Age",
    "gender",
    "ou",
    "skills",
    "language",
    "grade",
    "career interests",
    "los",
)
TRAINING_COLUMNS: tuple[str, ...] = (
    "Training-Id",
    "Training Title",
    "main skill",
    "category",
    "provider",
    "language",
    "level",
)
TAKEN_COLUMNS: tuple[str, ...] = ("User-Id", "Training-Id", "rating", "date")
LIST_SEPARATOR = ";"

_SKILL_TITLES: dict[str, str] = {
    "sql": "SQL",
    "aws": "AWS",
    "crm": "CRM",
    "gdpr": "GDPR",
    "power bi": "Power BI",
    "ux research": "UX Research",
    "javascript": "JavaScript",
}
_TITLE_TEMPLATES: dict[str, tuple[str, ...]] = {
    "beginner": (
        "Introduction to {skill}",
        "{skill} Fundamentals",
        "{skill} for Beginners",
        "Getting Started with {skill}",
        "{skill} Basics for {category}",
    ),
    "intermediate": (
        "{skill} in Practice",
        "Applied {skill} for {category}",
        "Intermediate {skill}",
        "{skill} Essentials for {category} Teams",
        "Practical {skill} Workshop",
    ),
    "advanced": (
        "Advanced {skill} for {category}",
        "Mastering {skill}",
        "{skill} Masterclass",
        "Expert {skill} for {category}",
        "Advanced {skill} Patterns",
    ),
}


@dataclass(frozen=True)
class PreferenceWeights:
    """Weights of the terms of the planted preference."""

    skill: float = 2.0
    interest: float = 1.5
    dept: float = 1.0
    language: float = 1.0
    level: float = 0.6
    popularity: float = 1.0
    taste: float = 0.0  # the training's main skill is one of the employee's hidden favourites
    progression: float = 0.0  # the employee took the previous level of the training's skill


DEFAULT_WEIGHTS = PreferenceWeights()


@dataclass(frozen=True)
class Regime:
    """How a synthetic world is made: the preference's weights and popularity's shape."""

    name: str
    weights: PreferenceWeights
    favourites: int = 0  # hidden favourite skills per employee (the taste term)
    # Popularity of a training: "normal" draws N(0, 1); "zipf" gives the training of
    # rank r the value -zipf_exponent * TEMPERATURE * log(r), so that a training's odds
    # of being picked fall as r ** -zipf_exponent: a long tail.
    popularity: str = "normal"
    zipf_exponent: float = 1.0


REGIMES: dict[str, Regime] = {
    "attributes": Regime("attributes", DEFAULT_WEIGHTS),
    "history": Regime(
        "history",
        PreferenceWeights(
            skill=0.8,
            interest=0.6,
            dept=0.5,
            language=0.6,
            level=0.3,
            popularity=1.0,
            taste=2.0,
            progression=2.0,
        ),
        favourites=2,
    ),
    "weak": Regime(
        "weak",
        PreferenceWeights(
            skill=0.25,
            interest=0.2,
            dept=0.15,
            language=0.2,
            level=0.1,
            popularity=1.0,
            taste=1.6,
            progression=1.2,
        ),
        favourites=2,
        popularity="zipf",
        zipf_exponent=1.0,
    ),
}
# Sampling is proportional to exp(pref / TEMPERATURE). At 0.7 a matching skill makes a
# training ~17x likelier, yet about a third of the picks match none of the user's skills,
# so the data is learnable but noisy (oracle precision@10 ~0.12, popularity ~0.035).
TEMPERATURE = 0.7
_OUT_OF_VOCABULARY = -1


@dataclass(frozen=True)
class OracleParams:
    """The hidden parameters of the planted preference (everything but the frames)."""

    weights: PreferenceWeights
    temperature: float
    skills: tuple[str, ...]
    skill_categories: Mapping[str, tuple[str, ...]]
    categories: tuple[str, ...]
    departments: tuple[str, ...]
    affinity: tuple[tuple[float, ...], ...]
    languages: tuple[str, ...]
    grades: tuple[str, ...]
    levels: tuple[str, ...]
    level_fit: tuple[tuple[float, ...], ...]
    popularity: Mapping[str, float]
    regime: str = "attributes"
    # Hidden favourite skills of each employee (the taste term), drawn without
    # replacement among the skills they do not list, with these weights.
    favourites: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    favourite_weights: Mapping[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return the parameters as plain JSON-ready values."""
        out = asdict(self)
        out["skill_categories"] = {k: list(v) for k, v in self.skill_categories.items()}
        out["popularity"] = dict(self.popularity)
        out["favourites"] = {k: list(v) for k, v in self.favourites.items()}
        out["favourite_weights"] = dict(self.favourite_weights)
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> OracleParams:
        """Rebuild parameters written by :meth:`to_dict`; ``ValueError`` if malformed."""
        try:
            params = cls(
                weights=PreferenceWeights(**{k: float(v) for k, v in raw["weights"].items()}),
                temperature=float(raw["temperature"]),
                skills=tuple(str(s) for s in raw["skills"]),
                skill_categories={
                    str(k): tuple(str(c) for c in v) for k, v in raw["skill_categories"].items()
                },
                categories=tuple(str(c) for c in raw["categories"]),
                departments=tuple(str(d) for d in raw["departments"]),
                affinity=tuple(tuple(float(x) for x in row) for row in raw["affinity"]),
                languages=tuple(str(lang) for lang in raw["languages"]),
                grades=tuple(str(g) for g in raw["grades"]),
                levels=tuple(str(lv) for lv in raw["levels"]),
                level_fit=tuple(tuple(float(x) for x in row) for row in raw["level_fit"]),
                popularity={str(k): float(v) for k, v in raw["popularity"].items()},
                regime=str(raw.get("regime", "attributes")),
                favourites={
                    str(k): tuple(str(s) for s in v) for k, v in raw.get("favourites", {}).items()
                },
                favourite_weights={
                    str(k): float(v) for k, v in raw.get("favourite_weights", {}).items()
                },
            )
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ValueError(f"malformed oracle parameters: {exc!r}") from exc
        if np.shape(params.affinity) != (len(params.departments), len(params.categories)):
            raise ValueError(
                "malformed oracle parameters: affinity is not departments x categories"
            )
        if np.shape(params.level_fit) != (len(params.grades), len(params.levels)):
            raise ValueError("malformed oracle parameters: level_fit is not grades x levels")
        return params


# HR exports are inconsistent in case and spacing; the oracle compares cleaned values.
def _normalized(values: pd.Series) -> npt.NDArray[np.object_]:
    return values.astype(str).str.strip().str.lower().to_numpy(dtype=object)


# Code -1 (unknown value) selects the zero row/column that _padded appends.
def _codes(values: npt.NDArray[np.object_], vocabulary: Sequence[str]) -> IntArray:
    index = pd.Index([v.strip().lower() for v in vocabulary])
    return np.asarray(index.get_indexer(pd.Index(values)), dtype=np.int64)


# The extra zero row and column make an unknown value (code -1) score 0 without a branch.
def _padded(matrix: tuple[tuple[float, ...], ...], n_rows: int, n_cols: int) -> FloatArray:
    out = np.zeros((n_rows + 1, n_cols + 1), dtype=np.float64)
    out[:n_rows, :n_cols] = np.asarray(matrix, dtype=np.float64).reshape(n_rows, n_cols)
    return out


# Lists (";"-joined) and single values share one vocabulary, so that
# ``matrix[rows][:, codes]`` is the membership test; the trailing all-False column is
# where code -1 (an empty single value) lands.
def _multi_hot(lists: pd.Series, singles: npt.NDArray[np.object_]) -> tuple[BoolArray, IntArray]:
    exploded = pd.Series(lists.to_numpy(dtype=object)).astype(str).str.split(LIST_SEPARATOR)
    items = exploded.explode()
    cleaned = items.astype(str).str.strip().str.lower()
    keep = (cleaned != "").to_numpy()
    rows = np.asarray(items.index.to_numpy()[keep], dtype=np.int64)
    words = cleaned.to_numpy(dtype=object)[keep]
    vocabulary = sorted({*words.tolist(), *singles.tolist()} - {""})
    index = pd.Index(vocabulary)
    matrix = np.zeros((len(lists), len(vocabulary) + 1), dtype=np.bool_)
    matrix[rows, index.get_indexer(pd.Index(words))] = True
    codes = np.asarray(index.get_indexer(pd.Index(singles)), dtype=np.int64)
    return matrix, codes


def _id_index(ids: pd.Series, kind: str) -> pd.Index:
    stripped: pd.Index = pd.Index(ids.astype(str).str.strip().to_numpy(dtype=object))
    if stripped.has_duplicates:
        dup = stripped[stripped.duplicated()][0]
        raise ValueError(f"duplicate {kind} id {dup!r}")
    return stripped


def _require_columns(frame: pd.DataFrame, columns: Sequence[str], kind: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{kind} frame lacks column(s) {missing}")


class Oracle:
    """The planted preference of every user for every training, without noise.

    ``pref(u, t) = w_skill*[t.main skill in u.skills] + w_interest*[t.category in
    u.career interests] + w_dept*affinity[u.ou, t.category] + w_lang*[t.language ==
    u.language] + w_level*level_fit[u.grade, t.level] + w_pop*popularity[t]
    + w_taste*[t.main skill in u.favourites] + w_progression*[u took a training of
    t's main skill at the level before t's]``.

    The last two terms depend on what is known of the employee, since the oracle is
    the best ranking anyone could make from what a recommender observes. The
    favourites are hidden: the oracle weighs every possible set of favourites by its
    posterior probability given the observed history (the generator's own prior and
    likelihood), and ranks by the resulting chance of each training being picked next.
    The progression term follows the observed history. A new employee has no history:
    the posterior is the prior, and there is no progression.

    Values are stripped and lowercased before comparison. Skills, interests and languages
    are compared as strings; a department, category, grade or level outside the
    parameters' vocabularies contributes 0 to its term, as does the popularity of a
    training id the parameters do not list.
    """

    def __init__(self, users: pd.DataFrame, trainings: pd.DataFrame, params: OracleParams) -> None:
        _require_columns(
            users, ("User-Id", "skills", "career interests", "ou", "language", "grade"), "users"
        )
        _require_columns(
            trainings, ("Training-Id", "main skill", "category", "language", "level"), "trainings"
        )
        self.params = params
        self._user_index = _id_index(users["User-Id"], "user")
        self._training_index = _id_index(trainings["Training-Id"], "training")

        self._u_skills, self._t_skill = _multi_hot(
            users["skills"], _normalized(trainings["main skill"])
        )
        t_category = _normalized(trainings["category"])
        self._u_interests, self._t_interest = _multi_hot(users["career interests"], t_category)
        languages = sorted(
            {*_normalized(users["language"]).tolist(), *_normalized(trainings["language"]).tolist()}
            - {""}
        )
        self._u_language = _codes(_normalized(users["language"]), languages)
        self._t_language = _codes(_normalized(trainings["language"]), languages)

        self._affinity = _padded(params.affinity, len(params.departments), len(params.categories))
        self._u_dept = _codes(_normalized(users["ou"]), params.departments)
        self._t_category = _codes(t_category, params.categories)
        self._level_fit = _padded(params.level_fit, len(params.grades), len(params.levels))
        self._u_grade = _codes(_normalized(users["grade"]), params.grades)
        self._t_level = _codes(_normalized(trainings["level"]), params.levels)
        popularity = pd.Series(params.popularity, dtype=np.float64)
        self._t_popularity = (
            popularity.reindex(self._training_index).fillna(0.0).to_numpy(dtype=np.float64)
        )
        main_skill = _normalized(trainings["main skill"])
        # Taste: favourite sets are combinations of the skills with a prior weight.
        taste_skills = tuple(params.favourite_weights)
        self._t_taste_skill = _codes(main_skill, taste_skills)
        listed, columns = _multi_hot(users["skills"], np.asarray(taste_skills, dtype=object))
        self._u_may_favour = ~listed[:, columns]
        self._favourite_weights = np.asarray(list(params.favourite_weights.values()))
        n_favourites = max((len(v) for v in params.favourites.values()), default=0)
        combinations = itertools.combinations(range(len(taste_skills)), n_favourites)
        self._favourite_sets = (
            np.asarray(list(combinations), dtype=np.int64).reshape(-1, n_favourites)
            if n_favourites
            else np.empty((0, 0), dtype=np.int64)
        )
        true_sets = np.zeros((len(self._user_index), len(taste_skills) + 1), dtype=bool)
        position = {name: i for i, name in enumerate(taste_skills)}
        for row, user in enumerate(self._user_index):
            true_sets[row, [position[f] for f in params.favourites.get(user, ())]] = True
        self._u_favourites = true_sets
        # Progression: a training's (skill, level) group, and the group of the level before.
        level = _codes(_normalized(trainings["level"]), params.levels)
        skill_codes, _ = pd.factorize(pd.Series(main_skill))
        n_levels = len(params.levels)
        known = (level >= 0) & (skill_codes >= 0)
        self._t_group = np.where(known, skill_codes * n_levels + level, -1)
        self._t_previous = np.where(known & (level > 0), self._t_group - 1, -1)

    @property
    def user_ids(self) -> list[str]:
        """The user ids the oracle knows, in frame order."""
        return [str(u) for u in self._user_index]

    @property
    def training_ids(self) -> list[str]:
        """The training ids the oracle knows, in frame order."""
        return [str(t) for t in self._training_index]

    def scores(
        self,
        user_ids: Sequence[str],
        training_ids: Sequence[str],
        history: sp.spmatrix | npt.NDArray[Any] | None = None,
    ) -> FloatArray:
        """Planted preference of each user for each training.

        Parameters
        ----------
        user_ids, training_ids
            Ids as in the frames (surrounding whitespace ignored).
        history
            What each user is known to have taken: a ``len(user_ids) x
            len(training_ids)`` matrix, non-zero where taken (pass every training as
            ``training_ids``, since a progression's previous level may be any of them).
            None: nothing is known but the attributes (a new employee).

        Returns
        -------
        numpy.ndarray
            float64 matrix of shape ``(len(user_ids), len(training_ids))``.

        Raises
        ------
        KeyError
            If an id is unknown; the message names the first unknown id.
        """
        users = self._positions(self._user_index, user_ids, "user")
        trainings = self._positions(self._training_index, training_ids, "training")
        return self.scores_at(users, trainings, history)

    def scores_at(
        self,
        user_rows: npt.ArrayLike,
        training_rows: npt.ArrayLike,
        history: sp.spmatrix | npt.NDArray[Any] | None = None,
        *,
        true_taste: bool = False,
    ) -> FloatArray:
        """Planted preference by row positions in the frames (no id look-up).

        Parameters
        ----------
        user_rows, training_rows
            Integer positions of the users and trainings in the frames given to the oracle.
        history
            As for :meth:`scores`, aligned with these rows and columns.
        true_taste
            Use each user's actual favourites (what the generator draws from) instead of
            their posterior given ``history``.

        Returns
        -------
        numpy.ndarray
            float64 matrix of shape ``(len(user_rows), len(training_rows))``.
        """
        u = np.asarray(user_rows, dtype=np.int64)
        t = np.asarray(training_rows, dtype=np.int64)
        w = self.params.weights
        out = np.full((len(u), len(t)), w.popularity, dtype=np.float64)
        out *= self._t_popularity[t][None, :]
        # Accumulate in place: at default size the matrices are 10,000 x 500.
        out += w.skill * self._u_skills[u][:, self._t_skill[t]]
        out += w.interest * self._u_interests[u][:, self._t_interest[t]]
        out += w.dept * self._affinity[self._u_dept[u]][:, self._t_category[t]]
        out += w.level * self._level_fit[self._u_grade[u]][:, self._t_level[t]]
        same_language = self._u_language[u][:, None] == self._t_language[t][None, :]
        same_language &= self._u_language[u][:, None] != _OUT_OF_VOCABULARY
        out += w.language * same_language
        if w.progression and history is not None:
            out += w.progression * self._progressed(history, t)
        if w.taste and len(self._favourite_sets):
            if true_taste:
                out += w.taste * self._u_favourites[u][:, self._t_taste_skill[t]]
            else:
                out += self._expected_taste(u, t, out, history)
        return out

    def _expected_taste(
        self,
        u: IntArray,
        t: IntArray,
        base: FloatArray,
        history: sp.spmatrix | npt.NDArray[Any] | None,
    ) -> FloatArray:
        """The taste term as a posterior over favourite sets, on the preference's scale.

        A pick is drawn with odds ``exp(pref / T)``, and a favourite multiplies a
        training's odds by ``e = exp(w_taste / T)``. With ``S[u, s]`` the summed odds of
        skill ``s``'s trainings without taste, a favourite set ``F`` gives the total
        ``Z_F = Z_0 + (e - 1) * sum(S[u, F])``; the observed history (``n`` picks,
        ``c[u, s]`` of skill ``s``) has likelihood about ``e ** sum(c[u, F]) / Z_F ** n``.
        The chance of training ``t`` next is then proportional to
        ``sum_F post(F) * (1 + (e - 1) [skill(t) in F]) / Z_F``, returned as
        ``T * log`` of it, so that the oracle ranks by that chance.
        """
        w, temperature = self.params.weights.taste, self.params.temperature
        boost = np.exp(w / temperature) - 1.0
        sets = self._favourite_sets  # combinations x favourites, codes of taste skills
        n_skills = len(self._favourite_weights)
        skill = self._t_taste_skill[t]
        onehot = sp.csr_matrix(
            (np.ones(int((skill >= 0).sum())), (np.flatnonzero(skill >= 0), skill[skill >= 0])),
            shape=(len(t), n_skills),
        )
        odds = np.exp((base - base.max(axis=1, keepdims=True)) / temperature)
        per_skill = np.asarray(onehot.T @ odds.T).T  # users x skills
        totals = odds.sum(axis=1)[:, None] + boost * per_skill[:, sets].sum(axis=2)  # users x sets
        if history is None:
            counts, n_picks = np.zeros((len(u), n_skills)), np.zeros(len(u))
        else:
            taken = sp.csr_matrix(history, dtype=np.float64)
            counts = np.asarray((taken @ onehot).todense())
            n_picks = np.asarray(taken.sum(axis=1)).ravel()
        log_post = self._log_prior(u) + (w / temperature) * counts[:, sets].sum(axis=2)
        log_post -= n_picks[:, None] * np.log(totals)
        log_post -= log_post.max(axis=1, keepdims=True)
        weight = np.exp(log_post) / totals
        weight /= weight.sum(axis=1, keepdims=True)
        in_set = np.zeros((len(sets), n_skills))
        in_set[np.repeat(np.arange(len(sets)), sets.shape[1]), sets.ravel()] = 1.0
        chance = np.concatenate([weight @ in_set, np.zeros((len(u), 1))], axis=1)
        return np.asarray(temperature * np.log1p(boost * chance[:, skill]), dtype=np.float64)

    def _log_prior(self, u: IntArray) -> FloatArray:
        """Log-probability of each favourite set: drawn in turn, without replacement,
        among the skills each user does not list (any order)."""
        sets = self._favourite_sets
        allowed = self._u_may_favour[u]
        weights = np.where(allowed, self._favourite_weights[None, :], 0.0)
        total = weights.sum(axis=1, keepdims=True)
        probability = np.zeros((len(u), len(sets)))
        for order in itertools.permutations(range(sets.shape[1])):
            remaining, chance = total.copy(), np.ones((len(u), len(sets)))
            for position in order:
                picked = weights[:, sets[:, position]]
                chance *= picked / np.maximum(remaining, 1e-300)
                remaining = remaining - picked
            probability += chance
        with np.errstate(divide="ignore"):
            return np.log(probability)

    def _progressed(self, history: sp.spmatrix | npt.NDArray[Any], t: IntArray) -> FloatArray:
        """1 where the user took a training of the same skill at the level before."""
        taken = sp.csr_matrix(history, dtype=np.float64)
        if taken.shape[1] != len(t):
            raise ValueError(f"history has {taken.shape[1]} columns for {len(t)} trainings")
        groups = self._t_group[t]
        n_groups = int(max(self._t_group.max(), 0)) + 1
        known = groups >= 0
        membership = sp.csr_matrix(
            (np.ones(int(known.sum())), (np.flatnonzero(known), groups[known])),
            shape=(len(t), n_groups),
        )
        reached = np.asarray((taken @ membership).todense()) > 0  # users x groups
        reached = np.concatenate([reached, np.zeros((len(reached), 1), dtype=bool)], axis=1)
        return reached[:, self._t_previous[t]].astype(np.float64)  # -1: the zero column

    def to_json(self) -> str:
        """Serialize the hidden parameters (not the frames) as JSON."""
        return json.dumps(self.params.to_dict(), indent=2, sort_keys=True, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str, users: pd.DataFrame, trainings: pd.DataFrame) -> Oracle:
        """Rebuild an oracle from :meth:`to_json` output and the users/trainings frames.

        Parameters
        ----------
        text
            JSON written by :meth:`to_json`.
        users, trainings
            The frames, for example re-read with
            ``pd.read_csv(path, dtype=str, keep_default_na=False)``.

        Returns
        -------
        Oracle
            An oracle that scores exactly as the one that was serialized.
        """
        return cls(users, trainings, OracleParams.from_dict(json.loads(text)))

    @staticmethod
    def _positions(index: pd.Index, ids: Sequence[str], kind: str) -> IntArray:
        wanted = pd.Index([str(i).strip() for i in ids], dtype=object)
        positions = np.asarray(index.get_indexer(wanted), dtype=np.int64)
        if (positions < 0).any():
            unknown = wanted[int(np.flatnonzero(positions < 0)[0])]
            raise KeyError(f"unknown {kind} id {unknown!r}")
        return positions


@dataclass(frozen=True)
class SyntheticData:
    """Synthetic extracts (string columns, as read from CSV) and the oracle behind them."""

    users: pd.DataFrame
    trainings: pd.DataFrame
    taken: pd.DataFrame
    oracle: Oracle


# Column indices of the k[i] largest keys of each row, flattened row after row. The
# partition is sorted because argpartition leaves its first k_max unordered, and the first
# k[i] of them must be the row's best.
def _top_k_per_row(keys: FloatArray, k: IntArray) -> IntArray:
    k_max = int(k.max())
    if k_max == 0:
        return np.empty(0, dtype=np.int64)
    part = np.argpartition(-keys, k_max - 1, axis=1)[:, :k_max]
    order = np.argsort(-np.take_along_axis(keys, part, axis=1), axis=1, kind="stable")
    top = np.take_along_axis(part, order, axis=1)
    return np.asarray(top[np.arange(k_max)[None, :] < k[:, None]], dtype=np.int64)


def _join_ragged(words: Sequence[str], flat: IntArray, counts: IntArray) -> list[str]:
    names = np.asarray(words, dtype=object)[flat]
    ends = np.cumsum(counts)
    return [LIST_SEPARATOR.join(names[end - n : end]) for end, n in zip(ends, counts, strict=True)]


def _sample_lists(rng: np.random.Generator, log_weights: FloatArray, k: IntArray) -> IntArray:
    # Gumbel-top-k draws k distinct items per row with probabilities ~ exp(log_weights).
    keys = log_weights + rng.gumbel(size=log_weights.shape)
    return _top_k_per_row(keys, k)


def _names(
    rng: np.random.Generator, seed: int, languages: IntArray, genders: IntArray
) -> list[str]:
    # Faker is slow per call, so draw a pool per locale and combine first and last names
    # with numpy instead of calling Faker once per employee.
    pool = 200
    firsts: list[list[str]] = []
    lasts: list[list[str]] = []
    for language in LANGUAGES:
        fake = Faker(NAME_LOCALES[language])
        fake.seed_instance(seed)
        female = [fake.first_name_female() for _ in range(pool)]
        male = [fake.first_name_male() for _ in range(pool)]
        firsts.append(female + male)
        lasts.append([fake.last_name() for _ in range(2 * pool)])
    first_pool = np.asarray(firsts, dtype=object)
    last_pool = np.asarray(lasts, dtype=object)
    n = len(languages)
    # female -> first half of the pool, male -> second half, undisclosed -> either.
    offset = np.where(genders == 1, pool, np.where(genders == 0, 0, rng.integers(0, 2, n) * pool))
    first = first_pool[languages, offset + rng.integers(0, pool, n)]
    last = last_pool[languages, rng.integers(0, 2 * pool, n)]
    return [f"{a} {b}" for a, b in zip(first, last, strict=True)]


def _affinity(rng: np.random.Generator) -> FloatArray:
    # Each department likes 2-3 categories, with a strength in [0.6, 1.0].
    out = np.zeros((len(DEPARTMENTS), len(CATEGORIES)), dtype=np.float64)
    for d in range(len(DEPARTMENTS)):
        liked = rng.choice(len(CATEGORIES), size=int(rng.integers(2, 4)), replace=False)
        out[d, liked] = np.round(rng.uniform(0.6, 1.0, len(liked)), 3)
    return out


def _category_of_skill() -> BoolArray:
    out = np.zeros((len(SKILLS), len(CATEGORIES)), dtype=np.bool_)
    for s, skill in enumerate(SKILLS):
        out[s, [CATEGORIES.index(c) for c in SKILL_CATEGORIES[skill]]] = True
    return out


def _make_users(
    rng: np.random.Generator,
    *,
    seed: int,
    n_users: int,
    affinity: FloatArray,
    skill_prevalence: FloatArray,
    new_employee: BoolArray,
) -> pd.DataFrame:
    dept = rng.choice(len(DEPARTMENTS), size=n_users, p=DEPARTMENT_SHARES)
    language = rng.choice(len(LANGUAGES), size=n_users, p=USER_LANGUAGE_SHARES)
    gender = rng.choice(len(GENDERS), size=n_users, p=GENDER_SHARES)
    age = rng.integers(21, 65, size=n_users)
    los = np.minimum(np.floor(rng.exponential(7.0, n_users)), np.minimum(age - 20, 35))
    # Employees without any training are the new joiners.
    los = np.where(new_employee, 0, los).astype(np.int64)
    grade = np.clip(np.round(0.8 + los / 5 + rng.normal(0.0, 1.0, n_users)), 0, len(GRADES) - 1)

    # Interests lean towards what the department likes, and skills towards the interests,
    # so the features are correlated as in a real workforce.
    n_interests = rng.integers(1, 3, size=n_users)
    interests = _sample_lists(rng, 1.5 * affinity[dept], n_interests)
    interest_hot = np.zeros((n_users, len(CATEGORIES)), dtype=np.bool_)
    interest_hot[np.repeat(np.arange(n_users), n_interests), interests] = True
    skill_in_interest = interest_hot.astype(np.float64) @ _category_of_skill().T.astype(np.float64)
    skill_logits = np.log(skill_prevalence)[None, :] + 1.2 * (skill_in_interest > 0)
    n_skills = rng.integers(2, 6, size=n_users)
    skills = _sample_lists(rng, skill_logits, n_skills)

    width = max(6, len(str(n_users)))
    return pd.DataFrame(
        {
            "User-Id": [str(i).zfill(width) for i in range(1, n_users + 1)],
            "name": _names(rng, seed, language, gender),
            "Age": age.astype(str),
            "gender": np.asarray(GENDERS, dtype=object)[gender],
            "ou": np.asarray(DEPARTMENTS, dtype=object)[dept],
            "skills": _join_ragged(SKILLS, skills, n_skills),
            "language": np.asarray(LANGUAGES, dtype=object)[language],
            "grade": np.asarray(GRADES, dtype=object)[grade.astype(np.int64)],
            "career interests": _join_ragged(CATEGORIES, interests, n_interests),
            "los": los.astype(str),
        },
        columns=list(USER_COLUMNS),
    ).astype(str)


def _skill_title(skill: str) -> str:
    return _SKILL_TITLES.get(skill, skill.title())


def _make_trainings(
    rng: np.random.Generator, seed: int, n_trainings: int, skill_prevalence: FloatArray
) -> pd.DataFrame:
    skill = rng.choice(len(SKILLS), size=n_trainings, p=skill_prevalence)
    # Category: one of the main skill's categories, uniformly.
    pick = rng.random(n_trainings)
    category = [
        SKILL_CATEGORIES[SKILLS[s]][int(p * len(SKILL_CATEGORIES[SKILLS[s]]))]
        for s, p in zip(skill, pick, strict=True)
    ]
    level = rng.choice(len(LEVELS), size=n_trainings, p=LEVEL_SHARES)
    template = rng.integers(0, len(_TITLE_TEMPLATES["beginner"]), size=n_trainings)
    fake = Faker("en_US")
    fake.seed_instance(seed)
    titles: list[str] = []
    seen: set[str] = set()
    for s, c, lv, tp in zip(skill, category, level, template, strict=True):
        title = _TITLE_TEMPLATES[LEVELS[lv]][tp].format(
            skill=_skill_title(SKILLS[s]), category=c.title()
        )
        # Catalogues repeat generic titles; a faker subtitle keeps each one distinct.
        while title in seen:
            title = f"{title.split(':')[0]}: {fake.catch_phrase().title()}"
        seen.add(title)
        titles.append(title)
    return pd.DataFrame(
        {
            "Training-Id": [f"T{i:05d}" for i in range(1, n_trainings + 1)],
            "Training Title": titles,
            "main skill": np.asarray(SKILLS, dtype=object)[skill],
            "category": category,
            "provider": rng.choice(
                np.asarray(PROVIDERS, dtype=object), n_trainings, p=PROVIDER_SHARES
            ),
            "language": rng.choice(
                np.asarray(LANGUAGES, dtype=object), n_trainings, p=TRAINING_LANGUAGE_SHARES
            ),
            "level": np.asarray(LEVELS, dtype=object)[level],
        },
        columns=list(TRAINING_COLUMNS),
    ).astype(str)


def _interaction_counts(
    rng: np.random.Generator, n_users: int, n_trainings: int, n_interactions: int
) -> IntArray:
    # ~3% of users take nothing; the others take 1 + a long-tailed share, and the counts
    # sum exactly to n_interactions (capped by what the active users can take).
    counts = np.zeros(n_users, dtype=np.int64)
    order = rng.permutation(n_users)
    n_none = round(NO_INTERACTION_SHARE * n_users)
    n_active = min(n_users - n_none, n_interactions)
    if n_active == 0:
        return counts
    active = order[n_none : n_none + n_active]
    total = min(n_interactions, n_active * n_trainings)
    counts[active] = 1
    # Gamma weights make the multinomial a negative-binomial-like, long-tailed count.
    weights = rng.gamma(1.2, size=n_active)
    extra = total - n_active
    while extra > 0:
        room = counts[active] < n_trainings
        w = np.where(room, weights, 0.0)
        counts[active] += rng.multinomial(extra, w / w.sum())
        # Users over capacity give their surplus back to those with room.
        extra = int(np.maximum(counts[active] - n_trainings, 0).sum())
        counts[active] = np.minimum(counts[active], n_trainings)
    return counts


def _make_taken(
    rng: np.random.Generator,
    *,
    oracle: Oracle,
    users: pd.DataFrame,
    trainings: pd.DataFrame,
    counts: IntArray,
    temperature: float,
) -> pd.DataFrame:
    n_trainings = len(trainings)
    chunk = 1024
    # With progressions, a history is drawn in stages, each knowing what the previous
    # ones took (and dated after them); otherwise in one draw.
    stages = 3 if oracle.params.weights.progression else 1
    user_parts: list[IntArray] = []
    item_parts: list[IntArray] = []
    pref_parts: list[FloatArray] = []
    stage_parts: list[IntArray] = []
    all_trainings = np.arange(n_trainings)
    for start in range(0, len(users), chunk):
        rows = np.arange(start, min(start + chunk, len(users)))
        k = counts[rows]
        if k.sum() == 0:
            continue
        taken = np.zeros((len(rows), n_trainings), dtype=bool)
        for stage in range(stages):
            k_stage = (stage + 1) * k // stages - stage * k // stages
            if k_stage.sum() == 0:
                continue
            pref = oracle.scores_at(rows, all_trainings, taken, true_taste=True)
            # Gumbel-top-k: the k largest pref + T*Gumbel are a draw without replacement
            # proportional to exp(pref / T).
            keys = pref + temperature * rng.gumbel(size=pref.shape)
            keys[taken] = -np.inf
            items = _top_k_per_row(keys, k_stage)
            user_rows = np.repeat(rows, k_stage)
            taken[user_rows - start, items] = True
            user_parts.append(user_rows)
            item_parts.append(items)
            pref_parts.append(pref[user_rows - start, items])
            stage_parts.append(np.full(len(items), stage, dtype=np.int64))
    if not user_parts:
        return pd.DataFrame({c: pd.Series([], dtype=str) for c in TAKEN_COLUMNS})
    u = np.concatenate(user_parts)
    t = np.concatenate(item_parts)
    pref = np.concatenate(pref_parts)
    stage_of = np.concatenate(stage_parts)

    # Ratings rise with the preference; a per-user leniency and noise keep them imperfect.
    z = (pref - pref.mean()) / (pref.std() or 1.0)
    leniency = rng.normal(0.0, 0.4, len(users))[u]
    rating = np.clip(np.round(3.6 + 0.9 * z + leniency + rng.normal(0.0, 0.7, len(u))), 1, 5)

    # A training is taken after the hire date and within the last HISTORY_YEARS years.
    as_of = np.datetime64(AS_OF.isoformat(), "D")
    window = HISTORY_YEARS * 365
    los = users["los"].to_numpy(dtype=np.float64)
    service_days = np.floor((los + rng.random(len(users))) * 365.25)
    days_back_max = np.minimum(service_days, window)[u]
    days_back = np.floor(rng.random(len(u)) * (days_back_max + 1)).astype(np.int64)
    if stages > 1:  # each employee's earliest dates go to their first stage's picks
        by_stage = np.lexsort((stage_of, u))
        by_date = np.lexsort((-days_back, u))
        dated = np.empty_like(days_back)
        dated[by_stage] = days_back[by_date]
        days_back = dated
    day = (as_of - days_back.astype("timedelta64[D]")).astype(str)

    order = np.lexsort((t, u, day))
    return pd.DataFrame(
        {
            "User-Id": users["User-Id"].to_numpy(dtype=object)[u[order]],
            "Training-Id": trainings["Training-Id"].to_numpy(dtype=object)[t[order]],
            "rating": rating.astype(np.int64).astype(str)[order],
            "date": day[order],
        },
        columns=list(TAKEN_COLUMNS),
    ).astype(str)


def _favourites(
    rng: np.random.Generator, users: pd.DataFrame, prevalence: FloatArray, n: int
) -> dict[str, tuple[str, ...]]:
    """``n`` hidden favourite skills per employee, among the skills they do not list."""
    if n == 0:
        return {}
    listed, columns = _multi_hot(users["skills"], np.asarray(SKILLS, dtype=object))
    logits = np.where(listed[:, columns], -np.inf, np.log(prevalence)[None, :])
    picks = _sample_lists(rng, logits, np.full(len(users), n, dtype=np.int64))
    names = np.asarray(SKILLS, dtype=object)[picks].reshape(len(users), n)
    return {
        str(user): tuple(str(skill) for skill in row)
        for user, row in zip(users["User-Id"], names, strict=True)
    }


def _popularity(rng: np.random.Generator, n_trainings: int, regime: Regime) -> FloatArray:
    if regime.popularity == "zipf":
        rank = rng.permutation(n_trainings) + 1.0
        values = -regime.zipf_exponent * TEMPERATURE * np.log(rank)
        return np.asarray(values - values.mean(), dtype=np.float64)
    return rng.normal(0.0, 1.0, n_trainings)


def _oracle_params(
    regime: str,
    affinity: FloatArray,
    skill_prevalence: FloatArray,
    training_ids: pd.Series,
    popularity: FloatArray,
    favourites: dict[str, tuple[str, ...]],
) -> OracleParams:
    """The oracle's parameters as plain values (written to ``oracle.json``)."""
    spec = REGIMES[regime]
    return OracleParams(
        weights=spec.weights,
        temperature=TEMPERATURE,
        skills=SKILLS,
        skill_categories=dict(SKILL_CATEGORIES),
        categories=CATEGORIES,
        departments=DEPARTMENTS,
        affinity=tuple(tuple(float(x) for x in row) for row in affinity),
        languages=LANGUAGES,
        grades=GRADES,
        levels=LEVELS,
        level_fit=LEVEL_FIT,
        popularity={
            tid: round(float(p), 6) for tid, p in zip(training_ids, popularity, strict=True)
        },
        regime=regime,
        favourites=favourites,
        favourite_weights=(
            {skill: round(float(p), 6) for skill, p in zip(SKILLS, skill_prevalence, strict=True)}
            if spec.favourites
            else {}
        ),
    )


def generate(
    n_users: int = 10_000,
    n_trainings: int = 500,
    n_interactions: int = 100_000,
    seed: int = 0,
    regime: str = "attributes",
) -> SyntheticData:
    """Generate synthetic users, trainings and trainings taken with a planted preference.

    Parameters
    ----------
    n_users, n_trainings
        Numbers of employees and trainings (at least 1 each).
    n_interactions
        Number of (user, training) rows in ``taken``; it is exact unless the active users
        cannot take that many distinct trainings, in which case all of them take all.
    seed
        Seed of every random draw (numpy and Faker).
    regime
        One of :data:`REGIMES`: how much attributes, hidden tastes, level progressions
        and popularity each shape what employees take.

    Returns
    -------
    SyntheticData
        String-only frames in the HR export column style, and the oracle that produced
        the interactions. About 3% of users (the new joiners, ``los`` 0) take nothing.
    """
    if n_users < 1 or n_trainings < 1 or n_interactions < 0:
        raise ValueError(
            f"need n_users >= 1, n_trainings >= 1 and n_interactions >= 0, "
            f"got {n_users}, {n_trainings}, {n_interactions}"
        )
    if regime not in REGIMES:
        raise ValueError(f"unknown regime {regime!r}; expected one of {', '.join(REGIMES)}")
    spec = REGIMES[regime]
    # Independent streams, so that changing one part does not reshuffle the others.
    streams = np.random.default_rng(seed).spawn(6)
    params_rng, users_rng, trainings_rng, counts_rng, taken_rng, taste_rng = streams
    affinity = _affinity(params_rng)
    skill_prevalence = params_rng.dirichlet(np.full(len(SKILLS), 4.0))
    counts = _interaction_counts(counts_rng, n_users, n_trainings, n_interactions)
    users = _make_users(
        users_rng,
        seed=seed,
        n_users=n_users,
        affinity=affinity,
        skill_prevalence=skill_prevalence,
        new_employee=counts == 0,
    )
    trainings = _make_trainings(trainings_rng, seed, n_trainings, skill_prevalence)
    popularity = _popularity(params_rng, n_trainings, spec)
    favourites = _favourites(taste_rng, users, skill_prevalence, spec.favourites)
    params = _oracle_params(
        regime, affinity, skill_prevalence, trainings["Training-Id"], popularity, favourites
    )
    oracle = Oracle(users, trainings, params)
    taken = _make_taken(
        taken_rng,
        oracle=oracle,
        users=users,
        trainings=trainings,
        counts=counts,
        temperature=TEMPERATURE,
    )
    return SyntheticData(users=users, trainings=trainings, taken=taken, oracle=oracle)


def write_csvs(data: SyntheticData, folder: Path) -> dict[str, Path]:
    """Write the extracts and the oracle parameters to ``folder`` (created if missing).

    Parameters
    ----------
    data
        Output of :func:`generate`.
    folder
        Destination folder.

    Returns
    -------
    dict[str, pathlib.Path]
        Paths by kind: ``users``, ``trainings``, ``trainings-taken`` (UTF-8 CSV, comma,
        no index, ``\\n`` line ends) and ``oracle`` (JSON).
    """
    folder.mkdir(parents=True, exist_ok=True)
    frames = {"users": data.users, "trainings": data.trainings, "trainings-taken": data.taken}
    paths: dict[str, Path] = {}
    for kind, frame in frames.items():
        path = folder / f"{kind}.csv"
        # Fixed line ends: the default (os.linesep) would change the bytes across platforms.
        frame.to_csv(path, index=False, encoding="utf-8", lineterminator="\n")
        paths[kind] = path
    oracle_path = folder / "oracle.json"
    oracle_path.write_text(data.oracle.to_json() + "\n", encoding="utf-8")
    paths["oracle"] = oracle_path
    return paths
