"""The model card: how good a model version is, for the people who own it.

:func:`card_json` summarises a version's metadata (its ``model.json``) and
:func:`card_html` renders that summary as one self-contained page: inline CSS,
plots embedded as PNG. matplotlib is imported only while a plot is drawn, so
importing this module costs the HTTP path nothing. Versions older than a field show
a dash where it would be.
"""

from __future__ import annotations

import base64
import io
from datetime import datetime
from html import escape
from typing import Any, TypeGuard

import numpy as np

from shared.evaluation import EvaluationReport
from shared.metadata import ModelMetadata, Spread

POPULATIONS = {  # key: (in a sentence, as a heading)
    "known": ("employees with a history", "Employees with a training history"),
    "cold-start": ("new employees", "New employees (no history: known by their attributes only)"),
}
SCORERS = {
    "served": "what these employees are served",
    "model": "this model alone",
    "hybrid model": "this model",
    "popularity": "baseline: the most-taken trainings",
    "department popularity": "baseline: most taken in the department",
    "oracle": "best achievable (demo data only)",
}
METRICS = {  # key: (column title, in plain words, number format)
    "precision": ("Precision@{k}", "of the {k} trainings suggested, the share taken", ".1%"),
    "recall": ("Recall@{k}", "of the trainings taken, the share among the {k} suggested", ".1%"),
    "ndcg": ("NDCG@{k}", "like recall, but worth more near the top of the list (1 = best)", ".3f"),
    "auc": ("AUC", "chance a training taken ranks above one not taken (0.5 = coin toss)", ".3f"),
    "coverage": ("Coverage", "share of the catalogue suggested to at least one employee", ".1%"),
}
SPREAD = {  # key: number format
    "k": "",
    "coverage": ".1%",
    "gini": ".2f",
    "top_decile_share": ".1%",
    "popular_decile_share_of_recommendations": ".1%",
    "popular_decile_share_of_takes": ".1%",
}
COUNTS = {
    "employees": "employees",
    "employees_with_history": "employees with a history",
    "trainings": "trainings",
    "interactions": "trainings taken (rows)",
    "successes": "of which successes (min_weight)",
    "user_features": "employee features (attributes, trainings taken)",
    "item_features": "training attributes (features)",
}
CSS = """
body{font:15px/1.45 system-ui,sans-serif;color:#222;max-width:980px;margin:16px auto;padding:0 20px}
h1{margin:0} h2{border-bottom:2px solid #ddd;margin:24px 0 6px} h3{margin:10px 0 0}
p,ul{margin:6px 0} .sub,.note,small{color:#666} img{max-width:100%}
table{border-collapse:collapse} tr.ours{background:#eef5ff}
td,th{padding:2px 10px;border-bottom:1px solid #e4e4e4;text-align:left;vertical-align:top}
td,th{white-space:nowrap} td:last-child{white-space:normal}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.verdict{padding:4px 16px;border-radius:6px;background:#f3f3f3;border-left:6px solid #999}
.accepted{background:#eaf7ea;border-color:#2e8b3a}
.rejected{background:#fdecea;border-color:#c62828}
"""
PAGE = """<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">
<title>Model card {version}</title><style>{css}</style></head><body>
<h1>Model card: training recommender</h1>
<p class="sub">Version <b>{version}</b> · created {created}</p>{verdict}
<h2>How good are the recommendations?</h2>{evaluation}{impact}
<h2>Training progress</h2>
<p>After each pass over the history (an epoch), precision@{k} was measured on a validation part
of it, and training keeps the best number of epochs: <b>{training[best_epoch]}</b>. The published
model was then refit on all the data for {training[final_epochs]} epochs
({training[final_seconds]} s).</p>{curve}
<h2>How recommendations spread over the catalogue</h2>
<ul><li>Every employee gets a list of {spread[k]} trainings; <b>{spread[coverage]}</b> of the
{trainings} trainings appear in at least one list.</li>
<li>Concentration (Gini): <b>{spread[gini]}</b> — 0 when every training is suggested equally
often, 1 when all suggestions go to one training.</li>
<li>The 10% most-suggested trainings fill <b>{spread[top_decile_share]}</b> of all suggestions.</li>
<li>The 10% most-taken trainings get <b>{spread[popular_decile_share_of_recommendations]}</b> of
the suggestions, against {spread[popular_decile_share_of_takes]} of what employees took{favour}.
</li></ul>{concentration}
<h2>Data</h2>{counts}
<p>Fingerprints of the extracts (the same file gives the same fingerprint):</p>{fingerprints}
<p>Validation of the extracts (problems found and repaired):</p>{validation}
<h2>Settings and software</h2>{hyperparameters}
<p class="note">Libraries: {libraries}</p>
</body></html>
"""


def _number(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _fmt(value: Any, spec: str = "") -> str:
    """Escaped display text of any value: numbers formatted, a missing one as a dash."""
    if value is None or isinstance(value, bool):
        return {None: "–", True: "yes", False: "no"}[value]
    if not _number(value):
        return escape(str(value))
    if spec:
        return format(value, spec)
    return f"{value:,}" if isinstance(value, int) or abs(value) >= 1000 else f"{value:.3g}"


def _ordered(keys: Any, first: Any) -> list[str]:
    """``keys`` with those of ``first`` first, in its order."""
    return sorted(keys, key=lambda key: [*first, key].index(key))


def _concentration(counts: list[Any], points: int = 51) -> list[float]:
    """Share of the total held by the largest counts, at ``points`` evenly spaced shares."""
    try:
        values = np.sort(np.asarray(counts, dtype=np.float64))[::-1]
    except (TypeError, ValueError):
        return []
    if len(values) == 0 or values.sum() <= 0:
        return []
    cumulative = np.concatenate([[0.0], np.cumsum(values) / values.sum()])
    at = np.interp(np.linspace(0, 1, points), np.linspace(0, 1, len(cumulative)), cumulative)
    return [round(float(v), 4) for v in at]


def _verdict(metadata: ModelMetadata) -> list[str]:
    """A sentence per population: who serves it, against the oracle and the baselines."""
    metrics = metadata.metrics
    if metrics is None:
        return []
    lines = []
    served = metadata.served_by()
    for population in _ordered(metrics.results, POPULATIONS):
        scorers = metrics.results[population]
        row = scorers.get("served") or scorers.get("hybrid model") or {}
        ours, parts = row.get("precision"), []
        for reference, text in [
            ("oracle", "{:.0%} of the best achievable (oracle)"),
            ("popularity", "{:.2f}× the popularity baseline"),
            ("department popularity", "{:.2f}× the department baseline"),
        ]:
            theirs = scorers.get(reference, {}).get("precision")
            if ours is not None and theirs:
                parts.append(text.format(ours / theirs))
        if ours is not None:
            name = POPULATIONS.get(population, (population,))[0]
            by = served.get(population, "model")  # type: ignore[call-overload]
            summary = ", ".join(parts) or f"{ours:.1%}"
            lines.append(
                f"{name[0].upper()}{name[1:]} are served by {by}: precision@{metrics.k} is "
                f"{summary}."
            )
    return lines


def _metric_rows(metrics: EvaluationReport | None) -> list[dict[str, Any]]:
    if metrics is None:
        return []
    return [
        {"population": population, "scorer": scorer, **metrics.results[population][scorer]}
        | {"ci95": metrics.intervals.get(population, {}).get(scorer)}
        for population in _ordered(metrics.results, POPULATIONS)
        for scorer in _ordered(metrics.results[population], SCORERS)
    ]


def _validation(metadata: ModelMetadata) -> list[dict[str, Any]]:
    return [
        {
            "kind": report.kind,
            "source": report.source,
            "rows_read": report.rows_read,
            "rows_kept": report.rows_kept,
            "problems": len(report.problems),
            "notes": report.notes,
            "dropped": report.dropped,  # rows_read = rows_kept + the sum of these
            # Every problem: each one already groups the lines it covers.
            "examples": [problem.text for problem in report.problems],
        }
        for report in metadata.validation
    ]


def _spread(spread: Spread | None) -> dict[str, Any]:
    if spread is None:
        return dict.fromkeys(SPREAD) | {"concentration": {"recommendations": [], "takes": []}}
    return {key: getattr(spread, key) for key in SPREAD} | {
        "concentration": {
            "recommendations": _concentration(spread.recommended_counts),
            "takes": _concentration(spread.taken_counts),
        }
    }


def card_json(metadata: ModelMetadata) -> dict[str, Any]:
    """The content of a model card, JSON-ready and compact.

    Returns
    -------
    dict
        ``version``, ``created_at``, ``verdict`` (sentences), ``gate`` (None when the
        version was not gated), ``served`` (per population: the scorer's name and why
        it was chosen), ``metrics`` (``k``, ``repeats``, a row per population and
        scorer with its ``ci95``, ``counts``, ``evaluation`` settings), ``training``
        (validation ``curve``, ``best_epoch``, ``final_epochs``, ``final_seconds``),
        ``recommendations`` (spread statistics and 51-point ``concentration`` curves of
        recommendations and takes), ``data`` (``counts``, ``fingerprints``, a
        ``validation`` summary per extract), ``hyperparameters`` and ``libraries``.
    """
    metrics, training, gate = metadata.metrics, metadata.training, metadata.gate
    counts = metadata.counts.model_dump(exclude_none=True)
    served = metadata.served_by()
    return {
        "version": metadata.version,
        "created_at": metadata.created_at,
        "verdict": _verdict(metadata),
        "gate": gate.model_dump(exclude={"enabled"}) if gate else None,
        "served": {
            population: {
                "scorer": name,
                "note": metrics.served[population].note
                if metrics and population in metrics.served
                else None,
            }
            for population, name in served.items()
        },
        "metrics": {
            "k": metrics.k if metrics else None,
            "repeats": metrics.repeats if metrics else None,
            "rows": _metric_rows(metrics),
            "counts": metrics.counts if metrics else {},
            "evaluation": metadata.config.evaluation.model_dump(mode="json"),
        },
        "training": {
            "curve": [
                {"epoch": r.epoch, "validation_precision": r.validation_precision}
                for r in training.validation_curve
            ],
            "best_epoch": training.best_epoch,
            "final_epochs": training.final_epochs,
            "final_seconds": training.final_seconds,
        },
        "recommendations": _spread(metadata.recommendations),
        "data": {
            "counts": {key: counts[key] for key in _ordered(counts, COUNTS)},
            "fingerprints": metadata.fingerprints,
            "validation": _validation(metadata),
        },
        "hyperparameters": metadata.config.model.model_dump(mode="json"),
        "libraries": metadata.libraries,
        "impact": metadata.impact.model_dump(mode="json") if metadata.impact else None,
    }


BLUE, ORANGE = "#1f5fbf", "#e07b00"
Line = tuple[str, list[float], list[float], str, str]  # label, x, y, matplotlib format, colour


def _plot(lines: list[Line], labels: tuple[str, str], alt: str, mark: tuple[Any, str]) -> str:
    """An ``<img>`` of a line plot marked at ``x = mark[0]`` (Agg, no pyplot); "" if no line."""
    if not lines:
        return ""
    from matplotlib.figure import Figure  # only here: the HTTP path never imports matplotlib
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(8.6, 2.6), dpi=110, layout="constrained")
    axes = figure.subplots()
    for label, x, y, style, colour in lines:
        axes.plot(x, y, style, color=colour, label=label)
    if _number(mark[0]):
        axes.axvline(mark[0], color="#2e8b3a", ls="--", lw=1, label=mark[1])
    axes.spines[["top", "right"]].set_visible(False)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))
    axes.grid(alpha=0.3)
    axes.margins(x=0.01)
    axes.legend(loc="lower right")
    axes.set(xlabel=labels[0], ylabel=labels[1])
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{escape(alt)}">'


def _table(header: list[str], rows: list[list[str]], ours: int | None = None) -> str:
    """A table of escaped cells: numbers right-aligned, row ``ours`` highlighted."""

    def cell(text: str) -> str:
        return f'<td class="n">{text}</td>' if text[:1].isdigit() else f"<td>{text}</td>"

    head = f"<tr>{''.join(f'<th>{h}</th>' for h in header)}</tr>" if header else ""
    body = "".join(
        f"<tr{' class=ours' if i == ours else ''}>{''.join(map(cell, row))}</tr>"
        for i, row in enumerate(rows)
    )
    return f"<table>{head}{body}</table>" if rows else "<p>–</p>"


def _grid(values: dict[str, Any], labels: dict[str, str], per_row: int = 3) -> str:
    """Name-value pairs, ``per_row`` pairs a row."""
    cells = [[escape(labels.get(key, key)), _fmt(value)] for key, value in values.items()]
    rows = [cells[i : i + per_row] for i in range(0, len(cells), per_row)]
    return _table([], [[text for pair in row for text in pair] for row in rows])


def _date(value: Any) -> str:
    try:
        return datetime.fromisoformat(str(value)).strftime("%d %B %Y, %H:%M %Z").strip()
    except ValueError:
        return str(value or "an unknown date")


def _verdict_html(gate: dict[str, Any] | None, verdict: list[str], served: dict[str, Any]) -> str:
    html = "".join(f"<p>{escape(v)}</p>" for v in verdict) or "<p>No evaluation recorded.</p>"
    why = [
        f"{POPULATIONS.get(p, (p,))[0]}: {escape(str(v['note']))}"
        for p, v in served.items()
        if v.get("note")
    ]
    if why:
        html += f"<small>Why:<ul>{''.join(f'<li>{w}</li>' for w in why)}</ul></small>"
    if gate is None:
        return f'<div class="verdict">{html}</div>'
    decision, compared, tolerance = (
        gate[key] for key in ("decision", "compared_with", "tolerance")
    )
    if decision == "not checked":
        return (
            '<div class="verdict"><p><b>Quality gate: off (not checked)</b> — this version '
            f"was published without comparing it with the serving one.</p>{html}</div>"
        )
    meaning = {"accepted": " (fit to serve)", "rejected": " (not put in service)"}
    against = f"the serving model {compared}" if compared else "nothing (no model was serving yet)"
    if compared and _number(tolerance):
        against += (
            f"; refused only if worse for every population, by more than {tolerance:.0%} "
            "and more than the figures' noise"
        )
    reasons = "".join(f"<li>{escape(str(r))}</li>" for r in gate["reasons"])
    checks = "".join(f"<li>{escape(str(c))}</li>" for c in gate["checks"])
    return (
        f'<div class="verdict {escape(str(decision))}"><p><b>Quality gate: '
        f"{escape(str(decision))}{meaning.get(str(decision), '')}</b> — compared with "
        f"{escape(against)}.</p>{f'<ul>{reasons}</ul>' if reasons else ''}{html}"
        f"{f'<small>Checks made:<ul>{checks}</ul></small>' if checks else ''}</div>"
    )


def _evaluation_html(metrics: dict[str, Any], served: dict[str, Any], k: Any) -> str:
    if not metrics["rows"]:
        return "<p>No evaluation was recorded for this version.</p>"
    counts, share = metrics["counts"], _fmt(metrics["evaluation"].get("test_share"), ".0%")
    known, cold = (
        _fmt(counts.get(f"{key}_employees_evaluated")) for key in ("known", "cold_start")
    )
    html = (
        f"<p>The model was tested on trainings hidden from it while it learned: {share} of the "
        f"history of {known} employees it knows, and the whole history of {cold} employees it "
        "never saw. Only hidden trainings count as hits, so even a perfect model stays far below "
        "100%: compare the rows, not the absolute values. Everything the employee took is left "
        "out of every list, the baselines' too.</p>"
    )
    if _number(metrics.get("repeats")):
        html += (
            f"<p>Figures are means over {metrics['repeats']} splits; ± is a 95% interval. "
            "Each population is served by whichever did best on separate validation data: the "
            "model, the model with a popularity prior, or a popularity baseline.</p>"
        )
    header = ["Method", "", *(title.format(k=k) for title, _, _ in METRICS.values())]
    for population in dict.fromkeys(row["population"] for row in metrics["rows"]):
        rows = [row for row in metrics["rows"] if row["population"] == population]
        cells = []
        for row in rows:
            name = row["scorer"]
            if name == "served":
                name = f"served: {served.get(population, {}).get('scorer', 'model')}"
            figures = [_fmt(row.get(key), spec) for key, (_, _, spec) in METRICS.items()]
            if _number(row.get("ci95")):
                figures[0] += f" ± {row['ci95']:.1%}"
            description = f"<small>{escape(SCORERS.get(row['scorer'], ''))}</small>"
            cells.append([escape(name), description, *figures])
        ours = next(
            (i for i, row in enumerate(rows) if row["scorer"] in ("served", "hybrid model")), None
        )
        heading = POPULATIONS.get(population, ("", population))[1]
        html += f"<h3>{escape(heading)}</h3>{_table(header, cells, ours)}"
    explained = [f"<b>{t.format(k=k)}</b>: {escape(e.format(k=k))}" for t, e, _ in METRICS.values()]
    return html + f"<ul class='note'><li>{'.</li><li>'.join(explained)}.</li></ul>"


def _impact_html(impact: dict[str, Any] | None) -> str:
    """What people did with the recommendations of the versions before this one."""
    if not impact or not impact["events"]:
        return ""
    rate = "{0[rate]:.1%} <small>({0[low]:.1%}–{0[high]:.1%})</small>".format
    scorers = [
        [escape(r["model_version"]), escape(r["scorer"]), _fmt(r["counts"]["shown"])]
        + [rate(r["rates"][kind]) for kind in ("clicked", "enrolled", "completed")]
        for r in impact["by_scorer"]
    ]
    ages = [
        [escape(f"{a['trainings']} trainings"), _fmt(a["counts"]["shown"])]
        + [rate(a["rates"][kind]) for kind in ("clicked", "enrolled", "completed")]
        for a in impact.get("by_training_age", [])
    ]
    positions = [
        [_fmt(p["position"]), _fmt(p["shown"]), rate(p["clicked"])] for p in impact["by_position"]
    ]
    since = f" since {escape(_date(impact['since']))}" if impact["since"] else ""
    warning = (
        f'<p class="verdict rejected">{escape(impact["warning"])}</p>' if impact["warning"] else ""
    )
    return (
        f"<h3>What people did with the recommendations (feedback events{since})</h3>"
        f"<p>{_fmt(impact['events'])} events. Of the recommendations shown, the share "
        "clicked, enrolled in and completed (95 % intervals):</p>"
        + _table(["model version", "scorer", "shown", "clicked", "enrolled", "completed"], scorers)
        + (
            "<p>New trainings (first seen in the last days, given a share of each list) "
            "against the others:</p>"
            + _table(["", "shown", "clicked", "enrolled", "completed"], ages)
            if ages
            else ""
        )
        + "<p>Clicks by position in the list:</p>"
        + _table(["position", "shown", "clicked"], positions)
        + warning
    )


def card_html(metadata: ModelMetadata) -> str:
    """A model card as one self-contained HTML page, for readers who do not read code.

    Parameters
    ----------
    metadata
        A model version's metadata.

    Returns
    -------
    str
        The page: verdict, metrics against the baselines, training curve, spread of
        the recommendations, data, settings and library versions. It loads nothing:
        the CSS is inline, the plots are embedded PNGs, and every text is escaped.
    """
    card = card_json(metadata)
    training, spread, data = card["training"], card["recommendations"], card["data"]
    k, best = card["metrics"]["k"] or "k", training["best_epoch"]
    points = [r for r in training["curve"] if _number(r["epoch"])]
    points = [r for r in points if _number(r["validation_precision"])]
    x, y = [r["epoch"] for r in points], [100 * r["validation_precision"] for r in points]
    curve = _plot(
        [("validation precision", x, y, "o-", BLUE)] if points else [],
        ("epoch (one pass over the history)", f"precision@{k} (%)"),
        f"Validation precision@{k} after each epoch; best after {best} epochs",
        (best, f"kept: {best} epochs"),
    )
    shares = spread["concentration"]
    lines: list[Line] = [
        (key, list(np.linspace(0, 100, len(shares[key]))), [100 * v for v in shares[key]], "-", c)
        for key, c in (("recommendations", BLUE), ("takes", ORANGE))
        if shares[key]
    ]
    concentration = _plot(
        [*lines, ("perfectly even", [0, 100], [0, 100], ":", "grey")] if lines else [],
        ("trainings, most frequent first (% of the catalogue)", "cumulative share (%)"),
        "Share of recommendations and of takes held by the most frequent trainings",
        (10, "top 10%"),
    )
    popular, takes = (spread[key] for key in list(SPREAD)[-2:])
    favour = ""
    if _number(popular) and _number(takes):
        favour = (
            f": the model favours them {'more' if popular > takes else 'less'} than employees do"
        )
    checks = [
        [_fmt(r[key]) for key in ("kind", "rows_read", "rows_kept")]
        + ["<br>".join(f"{escape(reason)}: {n:,}" for reason, n in r["dropped"].items())]
        + [_fmt(r["problems"]), "<br>".join(escape(text) for text in r["examples"])]
        for r in data["validation"]
    ]
    return PAGE.format(
        css=CSS,
        version=_fmt(card["version"]),
        created=escape(_date(card["created_at"])),
        verdict=_verdict_html(card["gate"], card["verdict"], card["served"]),
        evaluation=_evaluation_html(card["metrics"], card["served"], k),
        k=_fmt(k),
        training={key: _fmt(value) for key, value in training.items() if key != "curve"},
        curve=curve,
        spread={key: _fmt(spread[key], spec) for key, spec in SPREAD.items()},
        trainings=_fmt(data["counts"].get("trainings")),
        favour=favour,
        concentration=concentration,
        counts=_grid(data["counts"], COUNTS),
        fingerprints=_grid(data["fingerprints"], {}),
        validation=_table(
            ["extract", "rows read", "rows kept", "rows dropped", "problems", "listed"], checks
        ),
        impact=_impact_html(card["impact"]),
        hyperparameters=_grid(card["hyperparameters"], {}),
        libraries=" · ".join(f"{escape(n)} {_fmt(v)}" for n, v in card["libraries"].items()) or "–",
    )
