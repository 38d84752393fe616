"""Online impact: what people did with what each model version and scorer showed them.

From the feedback events (:mod:`shared.events`), per model version and scorer (read
off each event's ``recommendation_id``): how many recommendations were shown, and the
share of them clicked, enrolled in and completed, with 95 % Wilson intervals; and the
click rate by list position; and the same funnel for new trainings (within
``rules.new_days`` of first appearing, see :mod:`shared.catalog`) against the others.
A recommendation is one training in one answer for one employee; sending an event
twice counts once.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, time
from typing import Any, Literal

from pydantic import BaseModel, Field

from shared.events import FUNNEL, Event, EventLog
from shared.layout import FIRST_SEEN, read_pointer
from shared.storage import BlobStore

Z95 = 1.959963984540054
Recommendation = tuple[str | None, str, str]  # answer, employee, training
UNATTRIBUTED = "(no recommendation_id)"


class Rate(BaseModel):
    rate: float
    low: float = Field(description="95 % Wilson interval")
    high: float


class ScorerImpact(BaseModel):
    model_version: str
    scorer: str
    counts: dict[str, int] = Field(description="recommendations with each event type")
    rates: dict[str, Rate] = Field(
        description="of the recommendations shown, the share clicked, enrolled in, completed"
    )


class TrainingAgeImpact(BaseModel):
    trainings: Literal["new", "established"] = Field(
        description="new: within rules.new_days of first appearing in a trainings extract"
    )
    counts: dict[str, int]
    rates: dict[str, Rate]


class PositionImpact(BaseModel):
    position: int
    shown: int
    clicked: Rate


class ImpactReport(BaseModel):
    since: datetime | None
    events: int
    by_scorer: list[ScorerImpact]
    by_position: list[PositionImpact]
    by_training_age: list[TrainingAgeImpact] = Field(
        default_factory=list, description="how new trainings do against the others"
    )
    warning: str | None = Field(
        None, description="the newest version clicked clearly less than the one before it"
    )


def wilson(hits: int, total: int) -> Rate:
    if not 0 <= hits <= total:
        raise ValueError(f"{hits} hits out of {total}")
    if total == 0:
        return Rate(rate=0.0, low=0.0, high=1.0)
    p = hits / total
    centre = (p + Z95**2 / (2 * total)) / (1 + Z95**2 / total)
    half = Z95 * math.sqrt(p * (1 - p) / total + Z95**2 / (4 * total**2)) / (1 + Z95**2 / total)
    return Rate(
        rate=round(p, 4),
        low=round(max(0.0, centre - half), 4),
        high=round(min(1.0, centre + half), 4),
    )


def origin(recommendation_id: str | None) -> tuple[str, str]:
    """(model version, scorer) of an answer, from its id."""
    if not recommendation_id:
        return UNATTRIBUTED, UNATTRIBUTED
    version, slug, _ = recommendation_id.split(".")
    return version, slug.replace("+", " + ").replace("-", " ")


Groups = dict[str, set[Recommendation]]  # event type -> recommendations


def _funnel(group: Groups) -> dict[str, Any]:
    """``counts`` per event type, and ``rates`` over the recommendations shown: a click
    on one never reported shown is counted, not rated."""
    return {
        "counts": {kind: len(group[kind]) for kind in FUNNEL},
        "rates": {
            kind: wilson(len(group[kind] & group["shown"]), len(group["shown"]))
            for kind in FUNNEL[1:]
        },
    }


def impact(
    events: Iterable[Event],
    since: datetime | None = None,
    is_new: Callable[[Event], bool] | None = None,
) -> ImpactReport:
    """The funnel per model version and scorer, clicks by position, and (with
    ``is_new``, whether an event's training was new then) new trainings against others."""
    seen: Groups = defaultdict(set)
    groups: dict[tuple[str, str], Groups] = {}
    ages: dict[Literal["new", "established"], Groups] = {}
    shown_at: dict[Recommendation, int] = {}
    count = 0
    for event in events:
        if since is not None and event.timestamp < since:
            continue
        count += 1
        one = (event.recommendation_id, event.employee_id, event.training_id)
        seen[event.type].add(one)
        groups.setdefault(origin(event.recommendation_id), defaultdict(set))[event.type].add(one)
        if is_new is not None:
            age: Literal["new", "established"] = "new" if is_new(event) else "established"
            ages.setdefault(age, defaultdict(set))[event.type].add(one)
        if event.type == "shown" and event.position is not None:
            shown_at[one] = event.position
    by_scorer = [
        ScorerImpact(
            model_version=version,
            scorer=scorer,
            **_funnel(group),
        )
        for (version, scorer), group in sorted(groups.items())
    ]
    positions: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for one, position in shown_at.items():
        positions[position][0] += 1
        positions[position][1] += one in seen["clicked"]
    by_position = [
        PositionImpact(position=p, shown=shown, clicked=wilson(clicked, shown))
        for p, (shown, clicked) in sorted(positions.items())
    ]
    by_age = [
        TrainingAgeImpact(trainings=age, **_funnel(ages[age]))
        for age in ("new", "established")
        if age in ages
    ]
    return ImpactReport(
        since=since,
        events=count,
        by_scorer=by_scorer,
        by_position=by_position,
        by_training_age=by_age,
        warning=_warning(groups),
    )


def _warning(groups: dict[tuple[str, str], dict[str, set[Recommendation]]]) -> str | None:
    """The newest model version against the one before it, all scorers together: a
    warning when its click rate's interval lies wholly below the other's."""
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for (version, _), group in groups.items():
        if version != UNATTRIBUTED:
            totals[version][0] += len(group["clicked"] & group["shown"])
            totals[version][1] += len(group["shown"])
    versions = sorted(totals)
    if len(versions) < 2:
        return None
    newest, before = (wilson(*totals[v]) for v in versions[-2:][::-1])
    if newest.high < before.low:
        return (
            f"model {versions[-1]} is clicked less than {versions[-2]}: "
            f"{newest.rate:.1%} (95 % up to {newest.high:.1%}) against {before.rate:.1%}"
        )
    return None


def impact_since(store: BlobStore, since: date | None, new_days: int = 30) -> ImpactReport:
    """The report over the events received from ``since`` on (None: all); a training
    counts as new in an event within ``new_days`` of its first-seen date."""
    log = EventLog()
    log.update(store, since or date.min)
    start = datetime.combine(since, time.min, UTC) if since else None
    ledger, _ = read_pointer(store, FIRST_SEEN)
    first = {t: date.fromisoformat(d) for t, d in ledger.items() if isinstance(d, str)}

    def is_new(event: Event) -> bool:
        day = first.get(event.training_id)
        return day is not None and 0 <= (event.timestamp.date() - day).days < new_days

    return impact(log.events.values(), start, is_new)


def impact_table(report: ImpactReport) -> str:
    """The report as aligned text: the funnel per version and scorer, then positions."""
    if not report.events:
        return "no feedback events yet (POST /events)"
    lines = [
        f"{report.events} events" + (f" since {report.since:%Y-%m-%d}" if report.since else "")
    ]
    head = " ".join(f"{k:>9}" for k in FUNNEL[1:])
    lines.append(f"{'model version':30} {'scorer':30} {'shown':>7} {head}")
    for row in report.by_scorer:
        rates = " ".join(f"{row.rates[k].rate:>9.1%}" for k in FUNNEL[1:])
        lines.append(f"{row.model_version:30} {row.scorer:30} {row.counts['shown']:>7} {rates}")
    for age in report.by_training_age:
        rates = " ".join(f"{age.rates[k].rate:>9.1%}" for k in FUNNEL[1:])
        lines.append(f"{age.trainings + ' trainings':61} {age.counts['shown']:>7} {rates}")
    lines.append("position  shown  clicked (95 %)")
    for p in report.by_position:
        c = p.clicked
        lines.append(f"{p.position:>8}  {p.shown:>5}  {c.rate:.1%} ({c.low:.1%}-{c.high:.1%})")
    if report.warning:
        lines.append(f"warning: {report.warning}")
    return "\n".join(lines)
