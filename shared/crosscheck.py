"""Do the extracts fit together? Match rates between a dropped extract and the current
ones, checked before the drop can serve, with a diagnosis where one applies.

Each extract can be valid alone and still not fit the others: a trainings-taken file
re-saved by a spreadsheet (``00042`` became ``42``) names employees that no longer
exist, and every training they took would come back in their lists. The checks
measure what matches and refuse a drop below ``contract.checks``; the figures are in
every drop's report, accepted or not.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from shared.errors import Problem
from shared.ids import DECIMAL_ID
from shared.schema import positions
from shared.settings import CrossChecks

EXAMPLES = 3  # pairs quoted in a diagnosis


@dataclass(frozen=True)
class Match:
    """How many of ``total`` things matched; ``ok`` unless the share is under ``minimum``."""

    what: str
    matched: int
    total: int
    minimum: float
    diagnosis: str | None = None

    @property
    def share(self) -> float:
        return self.matched / self.total if self.total else 1.0

    @property
    def ok(self) -> bool:
        return self.share >= self.minimum

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "share": round(self.share, 4), "ok": self.ok}

    def __str__(self) -> str:
        text = (
            f"{self.matched:,} of {self.total:,} {self.what} ({self.share:.1%}; "
            f"at least {self.minimum:.0%} expected)"
        )
        return text + (f": {self.diagnosis}" if self.diagnosis else "")


def diagnose(unmatched: np.ndarray, known: pd.Index) -> str | None:
    """Why ids do not match, when the usual spreadsheet damage explains most of them:
    leading zeros lost, whole numbers written as decimals, or case and spacing."""
    if not len(unmatched) or not len(known):
        return None
    known_text = known.astype(str)
    for label, key in (
        ("without their leading zeros", lambda s: s.lstrip("0") or "0"),
        ("as whole numbers (e.g. '42.0' for '42')", _whole_number),
        ("ignoring case and spaces", lambda s: "".join(s.split()).casefold()),
    ):
        keyed = {key(k): k for k in known_text}
        pairs = [(u, keyed[key(u)]) for u in unmatched if key(u) in keyed]
        if len(pairs) * 2 >= len(unmatched):  # the explanation of most of them
            examples = ", ".join(f"'{u}' for '{k}'" for u, k in pairs[:EXAMPLES])
            text = f"{len(pairs):,} of the {len(unmatched):,} unmatched ids match only {label}"
            if label.startswith("without"):
                text += " — the file looks re-saved by a spreadsheet that read ids as numbers"
            return f"{text} ({examples}); export the ids as text"
    return None


def _whole_number(text: str) -> str:
    found = DECIMAL_ID.match(text)
    return (found.group(1) if found else text).lstrip("0") or "0"


def rows_matching(
    ids: pd.Series, known: pd.Index, what: str, minimum: float
) -> tuple[Match, np.ndarray]:
    """Rows whose id is among the ``known`` ones; and the mask of those rows."""
    found = positions(known, ids) >= 0  # each distinct id looked up once
    unmatched = np.unique(np.asarray(ids[~found], dtype=str))
    match = Match(what, int(found.sum()), len(found), minimum, diagnose(unmatched, known))
    return match, found


def taken_matches(
    taken: pd.DataFrame, users: pd.Index | None, trainings: pd.Index | None, checks: CrossChecks
) -> list[Match]:
    """The trainings-taken rows whose employee, whose training, and both, are known."""
    matches: list[Match] = []
    both = np.ones(len(taken), dtype=bool)
    for column, known, name in (
        ("user_id", users, "employee"),
        ("training_id", trainings, "training"),
    ):
        if known is None:
            continue
        what = f"trainings-taken rows whose {name} is in the current {name}s extract"
        match, found = rows_matching(taken[column], known, what, checks.min_matched_rows)
        matches.append(match)
        both &= found
    if users is not None and trainings is not None:
        what = "trainings-taken rows whose employee and training are both known"
        matches.append(Match(what, int(both.sum()), len(both), checks.min_matched_rows))
    return matches


def ids_kept(new: pd.Index, previous: pd.Index, what: str, checks: CrossChecks) -> Match:
    """How many ids of the previous extract of a kind the new one still has."""
    kept = positions(new, previous) >= 0
    # Diagnosed from the new side: it is the new file whose ids changed shape.
    new_unmatched = np.asarray(new[positions(previous, new) < 0], dtype=str)
    diagnosis = diagnose(new_unmatched, previous) if not kept.all() else None
    return Match(
        f"{what} of the current extract still in this one",
        int(kept.sum()),
        len(kept),
        checks.min_kept_ids,
        diagnosis,
    )


def problems(matches: list[Match], source: str) -> list[Problem]:
    """The matches under their minimum, as the problems that refuse a drop."""
    return [Problem(source, f"the extracts do not fit together: {m}") for m in matches if not m.ok]
