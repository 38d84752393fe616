"""The configuration against real extracts: the silent mistakes, each with its fix.

Nothing here is an error: each of these mistakes trains a model, only a worse one.
A numeric column used as a feature without bands becomes dozens of unrelated
categories; a multi-valued column whose cells use another delimiter becomes one value
per combination; a configured column absent from a file is a required column or an
attribute lost; a department column that is not an attribute leaves the department
baseline without departments.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from shared.schema import did_you_mean
from shared.settings import Config, EntityColumns

DELIMITERS = (";", ",", "|", "/")
NUMERIC_SHARE = 0.9  # of the non-blank cells, for a column to look numeric
MANY_NUMBERS = 12  # distinct numbers beyond which a numeric column needs bands
OTHER_DELIMITER_SHARE = 0.2  # of the non-blank cells holding another delimiter
OWN_DELIMITER_SHARE = 0.05  # ... while this few hold the configured one


@dataclass(frozen=True)
class Finding:
    """One silent mistake: where, what, and the setting that fixes it."""

    kind: str
    column: str
    message: str
    fix: str

    def __str__(self) -> str:
        return f"{self.kind}, column {self.column!r}: {self.message}\n  fix: {self.fix}"


def check(config: Config, frames: dict[str, pd.DataFrame]) -> list[Finding]:
    """Findings for the extracts given (kind -> the file's raw string cells)."""
    contract = config.contract
    findings: list[Finding] = []
    for kind, columns in (("users", contract.users), ("trainings", contract.trainings)):
        if kind in frames:
            findings += _entity(kind, frames[kind], columns, contract.value_delimiter)
    if "trainings-taken" in frames:
        taken = contract.taken
        wanted = [taken.user_id, taken.training_id, *(c for c in (taken.weight, taken.date) if c)]
        findings += _absent("trainings-taken", frames["trainings-taken"], wanted, "contract.taken")
    return findings + _department(config, frames.get("users"))


def _entity(
    kind: str, frame: pd.DataFrame, columns: EntityColumns, delimiter: str
) -> list[Finding]:
    findings = _absent(kind, frame, _configured(columns), f"contract.{kind}")
    for column in columns.features:
        if column not in frame.columns:
            continue
        values = _non_blank(frame[column])
        if column in columns.multi_valued:
            findings += _other_delimiter(kind, column, values, columns, delimiter)
        elif column not in columns.bands:
            findings += _numeric_without_bands(kind, column, values)
    return findings


def _configured(columns: EntityColumns) -> list[str]:
    return [columns.id, *([columns.title] if columns.title else []), *columns.features]


def _non_blank(values: pd.Series) -> pd.Series:
    text = values.astype(str).str.strip()
    return text[text != ""]


def _absent(kind: str, frame: pd.DataFrame, wanted: list[str], section: str) -> list[Finding]:
    names = [str(c) for c in frame.columns]
    return [
        Finding(
            kind,
            column,
            f"configured but not in the file{did_you_mean(column, names)}",
            f"rename the column in the file, or set its name in [{section}]",
        )
        for column in dict.fromkeys(wanted)
        if column not in names
    ]


def _numeric_without_bands(kind: str, column: str, values: pd.Series) -> list[Finding]:
    numbers = pd.to_numeric(values.str.replace(",", ".", regex=False), errors="coerce")
    if not len(values) or numbers.notna().mean() < NUMERIC_SHARE:
        return []
    distinct = numbers.dropna().nunique()
    if distinct <= MANY_NUMBERS:
        return []
    quartiles = np.unique(np.round(numbers.dropna().quantile([0.25, 0.5, 0.75]).to_numpy(), 1))
    edges = ", ".join(f"{q:g}" for q in quartiles)
    return [
        Finding(
            kind,
            column,
            f"holds numbers ({distinct} distinct values) and is used without bands: each "
            "number becomes a category of its own, unrelated to its neighbours",
            f"[contract.{kind}.bands] {_toml_key(column)} = [{edges}]  (e.g. its quartiles)",
        )
    ]


def _other_delimiter(
    kind: str, column: str, values: pd.Series, columns: EntityColumns, default: str
) -> list[Finding]:
    own = columns.delimiter_of(column, default)
    if not len(values) or values.str.contains(own, regex=False).mean() >= OWN_DELIMITER_SHARE:
        return []
    for other in DELIMITERS:
        share = values.str.contains(other, regex=False).mean() if other != own else 0.0
        if share >= OTHER_DELIMITER_SHARE:
            return [
                Finding(
                    kind,
                    column,
                    f"{share:.0%} of its cells hold {other!r} and almost none {own!r}, its "
                    "configured delimiter: each combination of values becomes one value",
                    f"[contract.{kind}.delimiters] {_toml_key(column)} = {other!r}",
                )
            ]
    return []


def _department(config: Config, users: pd.DataFrame | None) -> list[Finding]:
    contract = config.contract
    column = contract.department
    if column in contract.users.features and (users is None or column in users.columns):
        return []
    features = ", ".join(repr(f) for f in contract.users.features)
    where = (
        "is not an employee attribute"
        if column not in contract.users.features
        else ("is not in the employees file")
    )
    return [
        Finding(
            "users",
            column,
            f"the department baseline groups employees by this column, which {where}",
            f"set contract.department to one of the employee attributes ({features})",
        )
    ]


def _toml_key(name: str) -> str:
    return name if name.replace("-", "").replace("_", "").isalnum() else f'"{name}"'
