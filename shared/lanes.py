"""Lanes beside an employee's main list: the skill gap to a target role, what peers
took, what is trending.

Computed at precompute from the current extracts (pure): per employee their target
role, their skills and their peer group; per peer group how many of its employees took
each training; per training how often it was taken lately; the roles and the skills
each requires. The table carries them, so serving reads them with no I/O. A lane
whose data is missing (no roles extract, no dates, a column the contract lacks) is
unavailable, and says why.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from shared.bundle import sparse_arrays, sparse_from
from shared.errors import NotFoundError, TrainingRecommenderError
from shared.features import IdMap, rows_of_column
from shared.schema import ID
from shared.settings import DataContract, LaneOptions

Lane = Literal["skill-gap", "peers", "trending"]
LANES: tuple[Lane, ...] = ("skill-gap", "peers", "trending")
SEPARATOR = "\n"  # joins the skills of one employee or role (never inside a value)
KEY = "\x1f"  # joins an employee's values of the peers columns


@dataclass(frozen=True)
class Asker:
    """Whom a lane answers: their skills (lower case), target role and peer group."""

    skills: frozenset[str]
    target_role: str
    peer_group: int  # -1: none (a blank value, or a combination nobody else has)


class LaneUnavailableError(TrainingRecommenderError):
    """A lane needs data the current extracts or the contract do not have."""


@dataclass(frozen=True)
class LaneData:
    target_roles: np.ndarray  # str per employee ("" when none)
    skills: np.ndarray  # str per employee: their skills, lower case, SEPARATOR-joined
    peer_groups: np.ndarray  # int32 per employee (-1: no peer group)
    peer_keys: np.ndarray  # str per peer group: its values of lanes.peers, KEY-joined
    peer_columns: np.ndarray  # the employees' columns of lanes.peers
    skills_column: np.ndarray  # [lanes.employee_skills]
    peer_counts: sp.csr_matrix  # peer groups x trainings: employees of the group who took it
    trending: np.ndarray  # float32 per training: times taken within trending_days
    training_skills: np.ndarray  # str per training: what it teaches, SEPARATOR-joined
    role_ids: np.ndarray
    role_titles: np.ndarray
    role_skills: np.ndarray  # str per role, lower case, SEPARATOR-joined
    unavailable: np.ndarray  # "lane: why" for each lane that cannot answer

    def why_unavailable(self, lane: Lane) -> str | None:
        for entry in self.unavailable.tolist():
            name, _, why = str(entry).partition(": ")
            if name == lane:
                return why
        return None

    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays = {f"lane_{name}": np.asarray(getattr(self, name)) for name in _DENSE}
        return {**arrays, **sparse_arrays("lane_peer_counts", self.peer_counts)}

    @classmethod
    def from_arrays(cls, archive: Any) -> LaneData | None:
        if "lane_unavailable" not in archive.files:
            return None  # a table written before lanes
        dense = {name: archive[f"lane_{name}"] for name in _DENSE}
        return cls(peer_counts=sparse_from("lane_peer_counts", archive), **dense)


_DENSE = (
    "target_roles",
    "skills",
    "peer_groups",
    "peer_keys",
    "peer_columns",
    "skills_column",
    "trending",
    "training_skills",
    "role_ids",
    "role_titles",
    "role_skills",
    "unavailable",
)


def values_of(cells: pd.Series, delimiter: str) -> pd.Series:
    """Multi-valued cells as lower-case values joined by SEPARATOR."""
    return cells.astype(str).map(
        lambda cell: SEPARATOR.join(
            sorted({v.strip().lower() for v in cell.split(delimiter) if v.strip()})
        )
    )


def lane_data(
    users: pd.DataFrame,
    taken: pd.DataFrame,
    taken_matrix: sp.csr_matrix,
    items: IdMap,
    training_skills: pd.Series | None,
    roles: pd.DataFrame | None,
    contract: DataContract,
    options: LaneOptions,
) -> LaneData:
    """The lanes' data for the employees of ``users`` (rows of ``taken_matrix``: every
    training each took, over the served catalog ``items``, whose ``training_skills``
    attribute is given when the model has it)."""
    unavailable = []
    n = len(users)
    skills = np.full(n, "", dtype=object)
    if options.employee_skills in users:
        column = options.employee_skills
        delimiter = contract.users.delimiter_of(column, contract.value_delimiter)
        skills = values_of(users[column], delimiter).to_numpy(dtype=object)
    targets = (
        users[options.target_role].astype(str).str.strip().to_numpy(dtype=object)
        if options.target_role in users
        else np.full(n, "", dtype=object)
    )
    if roles is None:
        unavailable.append("skill-gap: no roles extract has been dropped (under roles/)")
    elif options.employee_skills not in users:
        unavailable.append(f"skill-gap: the employees have no {options.employee_skills!r} column")
    elif training_skills is None:
        unavailable.append(f"skill-gap: the trainings have no {options.training_skills!r} column")
    teaches = (
        values_of(
            training_skills,
            contract.trainings.delimiter_of(options.training_skills, contract.value_delimiter),
        ).to_numpy(dtype=str)
        if training_skills is not None
        else np.full(len(items), "", dtype=str)
    )
    empty = pd.DataFrame({ID: [], "title": [], "skills": []})
    roles = roles if roles is not None else empty
    role_delimiter = contract.roles.delimiter_of("skills", contract.value_delimiter)
    groups, keys, counts, why = _peers(users, taken_matrix, options.peers)
    if why:
        unavailable.append(f"peers: {why}")
    trending, why = _trending(taken, items, options.trending_days)
    if why:
        unavailable.append(f"trending: {why}")
    return LaneData(
        targets.astype(str),
        skills.astype(str),
        groups,
        keys,
        np.asarray(options.peers, dtype=str),
        np.asarray([options.employee_skills], dtype=str),
        counts,
        trending,
        teaches,
        roles[ID].to_numpy(dtype=str),
        roles["title"].astype(str).to_numpy(dtype=str)
        if "title" in roles
        else roles[ID].to_numpy(dtype=str),
        values_of(roles["skills"], role_delimiter).to_numpy(dtype=str)
        if len(roles)
        else np.empty(0, dtype=str),
        np.asarray(unavailable, dtype=str),
    )


def _peers(
    users: pd.DataFrame, taken: sp.csr_matrix, columns: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, sp.csr_matrix, str | None]:
    """Each employee's peer group, the groups' keys, and how many of each took each training."""
    missing = [c for c in columns if c not in users]
    if missing or not columns:
        why = (
            f"the employees have no {', '.join(map(repr, missing))} column"
            if missing
            else "lanes.peers names no column"
        )
        none = np.full(len(users), -1, dtype=np.int32)
        return none, np.empty(0, str), sp.csr_matrix((0, taken.shape[1]), dtype=np.float32), why
    cells = users[list(columns)].astype(str).apply(lambda c: c.str.strip().str.lower())
    blank = (cells == "").any(axis=1).to_numpy()
    joined = cells[columns[0]]
    for column in columns[1:]:
        joined = joined + KEY + cells[column]
    codes, keys = pd.factorize(joined)
    groups = np.where(blank, -1, codes).astype(np.int32)
    member = groups >= 0
    onehot = sp.csr_matrix(
        (np.ones(int(member.sum()), np.float32), (groups[member], np.flatnonzero(member))),
        shape=(len(keys), len(users)),
    )
    took = taken.astype(bool).astype(np.float32)
    return groups, np.asarray(keys, dtype=str), sp.csr_matrix(onehot @ took), None


def _trending(taken: pd.DataFrame, items: IdMap, days: int) -> tuple[np.ndarray, str | None]:
    counts = np.zeros(len(items), dtype=np.float32)
    dates = _dates(taken["date"])
    if np.isnat(dates).all():
        return counts, "the trainings-taken extract has no dates"
    recent = dates >= dates[~np.isnat(dates)].max() - np.timedelta64(days, "D")
    rows = rows_of_column(items, taken["training_id"])[recent]
    np.add.at(counts, rows[rows >= 0], 1.0)
    return counts, None


def _dates(column: pd.Series) -> np.ndarray:
    """datetime64[D] of each row (NaT when blank or not a date), each distinct value
    parsed once: a million rows repeat a few hundred dates."""
    values = pd.Categorical(column)
    parsed = pd.to_datetime(
        pd.Series(values.categories.astype(str)), errors="coerce", format="mixed"
    ).to_numpy(dtype="datetime64[D]")
    codes = values.codes
    return np.where(codes >= 0, parsed[np.maximum(codes, 0)], np.datetime64("NaT"))


def asker_of_row(data: LaneData, row: int) -> Asker:
    """An employee of the current extracts, as the precompute read them."""
    skills = frozenset(s for s in str(data.skills[row]).split(SEPARATOR) if s)
    return Asker(skills, str(data.target_roles[row]), int(data.peer_groups[row]))


def asker_of_attributes(
    data: LaneData, attributes: Mapping[str, str | Sequence[str]], delimiter: str
) -> Asker:
    """An employee described in a request: their attributes as the extract would hold them."""

    def values(name: str) -> list[str]:
        given = attributes.get(name, "")
        cells = [given] if isinstance(given, str) else list(given)
        return [v.strip().lower() for c in cells for v in c.split(delimiter) if v.strip()]

    skills = frozenset(values(str(data.skills_column[0])))
    parts = [values(str(c)) for c in data.peer_columns]
    key = KEY.join(p[0] for p in parts) if parts and all(len(p) == 1 for p in parts) else None
    where = np.flatnonzero(data.peer_keys == key) if key is not None else np.empty(0, np.int64)
    return Asker(skills, "", int(where[0]) if len(where) else -1)


def skill_gap(data: LaneData, asker: Asker, role: str | None) -> tuple[str, str, list[str]]:
    """(role id, role title, the skills it requires that the employee lacks)."""
    why = data.why_unavailable("skill-gap")
    if why:
        raise LaneUnavailableError(f"the skill-gap lane is unavailable: {why}")
    wanted = (role or asker.target_role).strip()
    if not wanted:
        raise LaneUnavailableError(
            "the employee has no target role in the employees extract: pass target_role"
        )
    where = np.flatnonzero(data.role_ids == wanted)
    if not len(where):
        raise NotFoundError("the target role is not in the current roles extract")
    i = int(where[0])
    required = [s for s in str(data.role_skills[i]).split(SEPARATOR) if s]
    return wanted, str(data.role_titles[i]), [s for s in required if s not in asker.skills]


def teaching(data: LaneData, skills: Sequence[str]) -> list[list[str]]:
    """Per training, which of ``skills`` it teaches."""
    wanted = set(skills)
    return [[v for v in str(cell).split(SEPARATOR) if v in wanted] for cell in data.training_skills]


def popular_in(data: LaneData, lane: Lane, asker: Asker) -> np.ndarray:
    """How many took each training: the employee's peers, or everyone lately."""
    why = data.why_unavailable(lane)
    if why:
        raise LaneUnavailableError(f"the {lane} lane is unavailable: {why}")
    if lane == "trending":
        return data.trending
    if asker.peer_group < 0:
        raise LaneUnavailableError(
            "no peer group: a value of lanes.peers is blank, or nobody else has these values"
        )
    return np.asarray(data.peer_counts[asker.peer_group].toarray()).ravel()
