"""The project's exceptions: every message names what is wrong and where."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


class TrainingRecommenderError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigurationError(TrainingRecommenderError):
    """A setting or configuration file is missing or invalid."""


@dataclass(frozen=True)
class Problem:
    """One problem found in an extract, located as precisely as the input allows."""

    source: str
    message: str
    line: int | None = None  # 1-based line of the file, the header being line 1
    column: str | None = None
    count: int = 1  # how many rows share this problem (only the first line is named)

    def __str__(self) -> str:
        where = self.source
        if self.line is not None:
            where += f", line {self.line}"
        if self.column is not None:
            where += f", column '{self.column}'"
        return f"{where}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "text": str(self)}


class ExtractError(TrainingRecommenderError):
    """An HR extract cannot be used; ``problems`` lists every fatal problem found."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        listing = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} fatal problem(s):\n{listing}")


class NotFoundError(TrainingRecommenderError):
    """A blob, an employee, a training or a model version does not exist."""


class PreconditionFailedError(TrainingRecommenderError):
    """A conditional write lost a race: the blob changed since it was read."""


class LeaseUnavailableError(TrainingRecommenderError):
    """Another process holds the lease (for example another retrain is running)."""


class ModelLoadError(TrainingRecommenderError):
    """A model bundle or a recommendation table is missing, corrupted or inconsistent."""


class StorageUnavailableError(TrainingRecommenderError):
    """Storage failed a write that must not be half done: nothing was kept, retry."""


class NoModelError(TrainingRecommenderError):
    """No model has been published yet."""
