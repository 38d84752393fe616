"""The command line over the same use cases as the Functions app.

``python -m shared demo`` runs the whole job on synthetic data in a local folder.
Global options (``--store``, ``--json``…) go before or after the command.
Bad input ends with one clear line on stderr and exit status 2, never a traceback;
a reader that stops early (``| head``) ends it quietly with status 141.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.appsettings import AppSettings, pass_to_child_processes
from shared.errors import TrainingRecommenderError
from shared.ids import clean_id
from shared.progress import Progress, for_cli
from shared.settings import Config
from shared.storage import BlobStore

if TYPE_CHECKING:
    Subcommands = argparse._SubParsersAction[argparse.ArgumentParser]  # add_subparsers()
    from shared.answers import Training
    from shared.scoring import Population

DEFAULT_STORE = Path("var/store")
REGIME_NAMES = ("attributes", "history", "weak")  # shared.synthetic.REGIMES (Faker: dev only)
EXIT_FINDINGS = 1  # config check found silent mistakes (the configuration still loads)
EXIT_BAD_INPUT = 2
EXIT_REJECTED = 3  # the quality gate refused the candidate: nothing published
EXIT_BUSY = 4  # another retrain holds the lock: nothing published
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for `yes | head`
POPULATION_NAMES = {"known": "employees with a history", "cold-start": "new employees"}
EXAMPLE_NEW_EMPLOYEE = {
    "ou": "development",
    "skills": "python;sql",
    "language": "english",
    "grade": "G3",
    "career interests": "data",
}


def _store(args: argparse.Namespace) -> BlobStore:
    from shared.storage import AzureBlobStore, LocalFolderStore

    if args.connection_string:
        return AzureBlobStore.from_connection_string(args.connection_string)
    if args.azure:
        settings: AppSettings = args.settings
        return settings.store(args.connection_name)
    return LocalFolderStore(Path(args.store))


def _print(args: argparse.Namespace, data: Any, human: str) -> None:
    print(json.dumps(data, indent=2, default=str) if args.json else human)


def _progress(args: argparse.Namespace) -> Progress:
    """Bars on a terminal; log lines otherwise (``shared.progress``, on stderr); nothing
    but the result with ``--quiet`` or ``--json``."""
    return for_cli(quiet=args.quiet, json=args.json)


def _served(served_by: Mapping[Population, str] | Mapping[str, str]) -> str:
    """``employees with a history: model; new employees: department popularity``."""
    return "; ".join(f"{POPULATION_NAMES.get(p, p)}: {name}" for p, name in served_by.items())


def _trainings_table(items: Sequence[Training]) -> str:
    """Rank, id, title and score, aligned; a long title (and its explanation, under it)
    wraps between words instead of being cut."""
    if not items:
        return "  (no recommendation)"
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    table.add_column("#", justify="right")
    table.add_column("training", no_wrap=True)
    table.add_column("title", ratio=1)
    table.add_column("score", justify="right", no_wrap=True)
    for t in items:
        title = Text(t.title)
        flags = [flag for flag, on in (("pinned", t.pinned), ("new", t.new)) if on]
        if flags:
            title.append(f" ({', '.join(flags)})", style="bold")
        if t.explanation:
            title.append(f"\n{t.explanation.text}", style="dim")
        table.add_row(str(t.rank), t.training_id, title, f"{t.score:.3f}")
    return rendered(table)


def rendered(renderable: Any, stream: Any = None) -> str:
    """Text of a ``rich`` table for ``stream`` (stdout): coloured and as wide as the
    terminal on one (``NO_COLOR`` honoured), plain and 100 columns wide otherwise."""
    import io
    import shutil

    from rich.console import Console

    terminal = (stream or sys.stdout).isatty()
    width = shutil.get_terminal_size((100, 24)).columns if terminal else 100
    text = io.StringIO()
    console = Console(
        file=text,
        force_terminal=terminal,
        width=width,
        color_system="auto" if terminal else None,
    )
    console.print(renderable)
    return "\n".join(line.rstrip() for line in text.getvalue().rstrip("\n").splitlines())


def _id(text: str) -> str:
    """An employee or training id trimmed the way the extracts are (``clean_id``): so
    ``" 00005 "``, pasted from a spreadsheet, finds employee 00005."""
    cleaned = clean_id(text)
    if not cleaned:
        raise argparse.ArgumentTypeError(f"empty identifier: {text!r}")
    return cleaned


def _attributes(pairs: Sequence[str]) -> dict[str, str]:
    attributes: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise TrainingRecommenderError(
                f"--attr {pair!r}: expected column=value, e.g. skills=python;sql"
            )
        attributes[name.strip()] = value
    return attributes


# ---------------------------------------------------------------- commands


def cmd_generate(args: argparse.Namespace, config: Config) -> None:
    from shared.synthetic import generate, write_csvs

    data = generate(args.users, args.trainings, args.interactions, args.seed, args.regime)
    paths = write_csvs(data, Path(args.out))
    _print(
        args,
        {k: str(v) for k, v in paths.items()},
        "\n".join(f"{k:<16} {v}" for k, v in paths.items()),
    )


def cmd_drop(args: argparse.Namespace, config: Config) -> None:
    from shared.pipeline import drop_extract

    store = _store(args)
    file = Path(args.file)
    kind = args.kind or ""
    name = f"{kind}/{file.name}" if kind else file.name
    with file.open("rb") as f:
        result = drop_extract(store, name, f, config)
    human = f"{result.status}: {file} → {result.path}"
    if result.status == "rejected":
        human += "\n" + str(result.report["message"])
    _print(args, result.__dict__, human)
    if result.status == "rejected":
        raise SystemExit(EXIT_BAD_INPUT)


def cmd_config(args: argparse.Namespace, config: Config) -> None:
    """The effective configuration, or its findings against actual extracts."""
    if args.action == "show":
        print(json.dumps(config.to_dict(), indent=2))
        return
    from shared.configcheck import check

    frames = _raw_extracts(args, config)
    findings = check(config, frames)
    human = f"checked {', '.join(sorted(frames))}: " + (
        f"{len(findings)} finding(s)\n" + "\n".join(str(f) for f in findings)
        if findings
        else "no finding"
    )
    _print(args, {"checked": sorted(frames), "findings": [f.__dict__ for f in findings]}, human)
    if findings:
        raise SystemExit(EXIT_FINDINGS)


def _raw_extracts(args: argparse.Namespace, config: Config) -> dict[str, Any]:
    """Kind -> the raw cells of each extract: the files of ``--extracts``, else the
    store's current extracts."""
    from shared.layout import EXTRACTS_POINTER, read_pointer
    from shared.pipeline import detect_kind
    from shared.schema import read_table

    limits = config.contract.limits
    frames: dict[str, Any] = {}
    if args.extracts:
        for path in sorted(Path(args.extracts).glob("*.csv")):
            with path.open("rb") as stream:
                kind = detect_kind(path.name, stream, config.contract)[0]
                if kind is not None:
                    frames[kind] = read_table(stream, str(path), limits).frame
    else:
        store = _store(args)
        pointer, _ = read_pointer(store, EXTRACTS_POINTER)
        for kind, entry in pointer.items():
            blob = str(entry["path"])
            with store.blob(blob).open() as stream:
                frames[kind] = read_table(stream, blob, limits).frame
    if not frames:
        where = args.extracts or "the store"
        raise TrainingRecommenderError(f"no extract to check in {where} (users, trainings…)")
    return frames


def _oracle_from(path: str | None, store: BlobStore, config: Config) -> Any:
    if not path:
        return None
    from shared.synthetic import Oracle

    return Oracle.from_json(Path(path).read_text(encoding="utf-8"), *_raw_frames(store)).scores


def _raw_frames(store: BlobStore) -> tuple[Any, Any]:
    import io

    import pandas as pd

    from shared.layout import EXTRACTS_POINTER, read_pointer

    pointer, _ = read_pointer(store, EXTRACTS_POINTER)
    return tuple(  # type: ignore[return-value]
        pd.read_csv(io.BytesIO(store.read(pointer[kind]["path"])), dtype=str, keep_default_na=False)
        for kind in ("users", "trainings")
    )


def cmd_train(args: argparse.Namespace, config: Config) -> None:
    from shared.jobs import record_outcome
    from shared.pipeline import retrain

    store = _store(args)
    job = args.settings.job_name  # running as an Azure ML job (shared.jobs)
    try:
        with _progress(args) as progress:
            result = retrain(
                store,
                config,
                registrar=args.settings.registrar(),
                oracle=_oracle_from(args.oracle, store, config),
                progress=progress,
            )
    except Exception as exc:
        if job:
            record_outcome(
                store, job, {"status": "Failed", "error": f"{type(exc).__name__}: {exc}"}
            )
        raise
    if job:
        outcome = {"status": "Completed", "result": result.status, "version": result.version}
        record_outcome(store, job, outcome)
    if result.status == "busy":
        _print(args, {"status": "busy"}, "another retrain is running: nothing published")
        raise SystemExit(EXIT_BUSY)
    table = result.evaluation.to_table() if result.evaluation else ""
    served = f" ({_served(result.served_by)})" if result.served_by else ""
    human = f"{result.status} model {result.version}{served}\n{table}"
    if result.precompute:
        done = result.precompute
        human += f"\nrecommendations {done.version} for {done.employees} employees"
    failed = [r for r in result.registrations if r["status"] == "failed"]
    if failed:
        human += "\nAzure ML registration failed (retried next run): " + "; ".join(
            f"{r['version']}: {r['detail']}" for r in failed
        )
    _print(
        args,
        {
            "status": result.status,
            "version": result.version,
            "evaluation": result.evaluation.to_dict() if result.evaluation else None,
            "gate": result.gate.model_dump() if result.gate else None,
            "registrations": result.registrations,
            "served_by": result.served_by,
        },
        human,
    )
    if result.status == "rejected":
        reasons = "; ".join(result.gate.reasons if result.gate else []) or "see the model card"
        print(f"rejected: {reasons}", file=sys.stderr)
        raise SystemExit(EXIT_REJECTED)


def cmd_evaluate(args: argparse.Namespace, config: Config) -> None:
    from shared.features import build_dataset
    from shared.modeling import evaluate_candidate
    from shared.pipeline import load_current_data

    store = _store(args)
    with _progress(args) as progress:
        extracts = load_current_data(store, config, progress).extracts
        with progress.step("build the matrices"):
            dataset = build_dataset(
                extracts.users, extracts.trainings, extracts.taken, config.contract, config.features
            )
        oracle = _oracle_from(args.oracle, store, config)
        report = evaluate_candidate(dataset, config, oracle=oracle, progress=progress).report
    served = {p: report.served_name(p) for p in report.served}
    _print(args, report.to_dict(), f"{report.to_table()}\nserved by: {_served(served)}")


def cmd_tune(args: argparse.Namespace, config: Config) -> None:
    from shared.pipeline import load_current_data
    from shared.tuning import tune, write_config

    store = _store(args)
    with _progress(args) as progress:
        result = tune(
            load_current_data(store, config, progress).extracts,
            config,
            budget=args.budget,
            seed=args.seed,
            oracle=_oracle_from(args.oracle, store, config),
            progress=progress,
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_config(result.best_config, out, header=result.summary())
    _print(
        args,
        {**result.to_dict(), "written": str(out)},
        f"{result.table()}\n\nwrote {out}: retrain with --config {out} (or TR_CONFIG={out})",
    )


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def cmd_precompute(args: argparse.Namespace, config: Config) -> None:
    from shared.pipeline import precompute

    with _progress(args) as progress:
        result = precompute(_store(args), config, force=args.force, progress=progress)
    _print(args, result.__dict__, f"{result.status}: recommendations {result.version}")


def _serving(args: argparse.Namespace, config: Config) -> Any:
    """The serving cache over the store: the current version and recent dismissals."""
    from shared.serving import ServingCache

    return ServingCache(_store(args), refresh_seconds=0, rules=config.rules)


def _snapshot(args: argparse.Namespace, config: Config) -> Any:
    return _serving(args, config).current()


def _filters(pairs: Sequence[str]) -> dict[str, list[str]]:
    from shared.rules import parse_filters

    return parse_filters(pairs, "=", "--filter")


def cmd_recommend(args: argparse.Namespace, config: Config) -> None:
    from shared.serving import contract_of, recommend_known, recommend_lane, recommend_new

    attributes = _attributes(args.attr) if args.attr else dict(EXAMPLE_NEW_EMPLOYEE)
    filters = _filters(args.filter)
    if args.lane and not args.employee_id:
        raise TrainingRecommenderError(
            "--lane needs an employee id: recommend EMPLOYEE_ID --lane …"
        )
    cache = _serving(args, config)
    snapshot = cache.current()
    if args.lane:
        lane = recommend_lane(
            snapshot,
            args.employee_id,
            args.lane,
            args.n,
            filters=filters,
            dismissed=cache.dismissed(args.employee_id),
            target_role=args.target_role,
        )
        gap = f", lacking {', '.join(lane.gap)} for {lane.target_role_title}" if lane.gap else ""
        _print(
            args,
            lane.model_dump(mode="json"),
            f"employee {args.employee_id}, lane {lane.lane}{gap}:\n"
            f"{_trainings_table(lane.trainings)}",
        )
        return
    if args.employee_id:
        known = recommend_known(
            snapshot,
            args.employee_id,
            args.n,
            filters=filters,
            explain=args.explain,
            dismissed=cache.dismissed(args.employee_id),
        )
        _print(
            args,
            known.model_dump(mode="json"),
            f"employee {args.employee_id} (ranked by {known.scorer}):\n"
            f"{_trainings_table(known.trainings)}",
        )
        return
    taken = [t for t in map(clean_id, ",".join(args.taken).split(",")) if t]
    answer = recommend_new(
        snapshot,
        attributes,
        args.n,
        contract_of(snapshot),
        taken_training_ids=taken,
        filters=filters,
        explain=args.explain,
    )
    who = f"employee {attributes}" + (f", took {', '.join(taken)}" if taken else "")
    human = f"{who} (ranked by {answer.scorer}):\n{_trainings_table(answer.trainings)}"
    if answer.ignored_values:
        human += (
            f"\n  (values the model has never seen, ignored: {', '.join(answer.ignored_values)})"
        )
    _print(
        args,
        {"attributes": attributes, "taken_training_ids": taken, **answer.model_dump(mode="json")},
        human,
    )


def cmd_similar(args: argparse.Namespace, config: Config) -> None:
    from shared.serving import similar_trainings

    snapshot = _snapshot(args, config)
    answer = similar_trainings(snapshot, args.training_id, args.n, filters=_filters(args.filter))
    _print(
        args,
        {
            "training_id": args.training_id,
            "similar": [t.model_dump(mode="json") for t in answer.trainings],
        },
        f"trainings similar to {args.training_id}:\n{_trainings_table(answer.trainings)}",
    )


def cmd_audience(args: argparse.Namespace, config: Config) -> None:
    import csv

    from shared.audience import audience

    cache = _serving(args, config)
    answer = audience(
        cache.current(),
        args.training_id,
        args.n,
        filters=_filters(args.filter),
        dismissed_by=cache.dismissed_by(args.training_id),
    )
    if args.csv:
        with Path(args.csv).open("w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(["rank", "employee_id", "score", "reason"])
            writer.writerows([m.rank, m.employee_id, m.score, m.reason] for m in answer.employees)
    lines = [
        f"{m.rank:>4}. {m.employee_id:<14} {m.score:>9.3f}  {m.reason}" for m in answer.employees
    ]
    where = f"\n(written to {args.csv})" if args.csv else ""
    human = f"employees most likely to take {args.training_id}:\n" + "\n".join(lines) + where
    _print(args, answer.model_dump(mode="json"), human)


def cmd_models(args: argparse.Namespace, config: Config) -> None:
    from shared import registry

    store = _store(args)
    if args.action == "list":
        from shared.jobs import describe_record, read_record

        infos = registry.list_versions(store)
        job = read_record(store)
        table = registry.versions_table(infos) + (f"\n{describe_record(job)}" if job else "")
        _print(args, [i.to_dict() for i in infos], table)
        return
    version = args.version or registry.current_version(store)
    if args.action == "show":
        metadata, status = registry.metadata_of(store, version)
        gate = metadata.gate
        lines = [
            f"version      {version} ({status})",
            f"created      {metadata.created_at}",
            f"data         {metadata.fingerprints}",
            f"counts       {metadata.counts.model_dump(exclude_none=True)}",
            f"served by    {_served(metadata.served_by())}",
            f"gate         {gate.decision if gate else '-'}",
            *[f"  {check}" for check in (gate.checks if gate else [])],
            f"model        {metadata.config.model.model_dump(mode='json')}",
            metadata.metrics.to_table() if metadata.metrics else "(not evaluated)",
        ]
        shown = {"status": status, **metadata.model_dump(mode="json")}
        _print(args, shown, "\n".join(lines))
    elif args.action == "promote":
        from shared.pipeline import promote

        if not args.version:
            raise TrainingRecommenderError("models promote needs a VERSION (see `models list`)")
        result = promote(store, version, config)
        _print(args, result.__dict__, f"serving {version}; recommendations {result.version}")
    elif args.action == "card":
        from shared.pipeline import render_card

        metadata, status = registry.metadata_of(store, version)
        out = Path(args.out or f"card-{version}.html")
        out.write_bytes(render_card(metadata)[1])
        _print(args, {"version": version, "card": str(out)}, f"model card of {version}: {out}")


def cmd_impact(args: argparse.Namespace, config: Config) -> None:
    from shared.impact import impact_since, impact_table

    report = impact_since(_store(args), args.since, config.rules.new_days)
    _print(args, report.model_dump(mode="json"), impact_table(report))


WORKER_STORE = "DataStorage"  # the setting a worker process reads its storage from


def cmd_serve(args: argparse.Namespace, config: Config) -> None:
    import uvicorn

    from shared.api import create_app

    if args.workers == 1:
        uvicorn.run(create_app(_store(args), config), host=args.host, port=args.port)
        return
    # Worker processes build their own app (worker_app), from settings passed in the
    # environment: the same store and configuration, each instance its own cache, as
    # Functions instances scaled out.
    pass_to_child_processes(_worker_settings(args))
    uvicorn.run(
        "shared.cli:worker_app",
        factory=True,
        workers=args.workers,
        host=args.host,
        port=args.port,
    )


def _worker_settings(args: argparse.Namespace) -> dict[str, str]:
    settings: dict[str, str] = {"TR_CONFIG": args.config or args.settings.config_file or ""}
    if args.connection_string:
        settings[WORKER_STORE] = args.connection_string
    elif args.azure:
        for suffix in (
            "",
            "__serviceUri",
            "__blobServiceUri",
            "__accountName",
            "__credential",
            "__clientId",
        ):
            value = args.settings.environ.get(f"{args.connection_name}{suffix}")
            if value:
                settings[f"{WORKER_STORE}{suffix}"] = value
    else:
        settings["TR_LOCAL_STORE"] = str(Path(args.store).resolve())
    return settings


def worker_app() -> Any:
    """The API of one ``serve --workers N`` worker process (see :func:`cmd_serve`)."""
    from shared.api import create_app

    settings = AppSettings.from_environ()
    local = Path(settings.local_store) if settings.local_store else None
    return create_app(settings.store(WORKER_STORE, local_root=local), settings.config())


def cmd_demo(args: argparse.Namespace, config: Config) -> None:
    """generate → drop → train → evaluate → publish → precompute → show two employees."""
    import numpy as np

    from shared.pipeline import drop_extract, retrain
    from shared.serving import contract_of, recommend_known, recommend_new
    from shared.synthetic import generate, write_csvs

    store = _store(args)
    say = (lambda *a: None) if args.json else print
    say(
        f"1/4 generating {args.users} employees, {args.trainings} trainings, "
        f"{args.interactions} trainings taken (seed {args.seed}, regime {args.regime})"
    )
    with _progress(args) as progress:
        with progress.step("generate"):
            data = generate(args.users, args.trainings, args.interactions, args.seed, args.regime)
            paths = write_csvs(data, Path(args.out))
        say(f"2/4 dropping the extracts into {store.describe}")
        with progress.step("drop", 3, "extracts") as step:
            for kind in ("users", "trainings", "trainings-taken"):
                with paths[kind].open("rb") as f:
                    accepted = drop_extract(store, f"{kind}/{paths[kind].name}", f, config)
                step.advance(note=f"{kind} {accepted.status}")
                say(f"    {kind:<16} {accepted.status}")
        say("3/4 training, evaluating, publishing and precomputing")
        result = retrain(
            store,
            config,
            registrar=args.settings.registrar(),
            oracle=data.oracle.scores,
            progress=progress,
        )
    if result.evaluation is not None:
        say(result.evaluation.to_table())
    say(
        f"    model {result.version} ({_served(result.served_by)}); recommendations for "
        f"{result.precompute.employees if result.precompute else 0} employees"
    )
    snapshot = _snapshot(args, config)
    taken_counts = np.diff(snapshot.table.taken.indptr)
    known_id = str(snapshot.table.user_ids[int(np.argmax(taken_counts > 3))])
    known = recommend_known(snapshot, known_id, args.n, explain=True)
    new = recommend_new(snapshot, EXAMPLE_NEW_EMPLOYEE, args.n, contract_of(snapshot), explain=True)
    say("4/4 recommendations")
    row = data.users[data.users["User-Id"] == known_id].iloc[0]
    took = snapshot.bundle.item_titles[
        snapshot.table.taken[int(np.argmax(taken_counts > 3))].indices
    ]
    say(
        f"known employee {known_id} ({row['ou']}; skills {row['skills']}; "
        f"interests {row['career interests']}; took {len(took)} trainings, e.g. "
        f"{'; '.join(map(str, took[:3]))}):\n{_trainings_table(known.trainings)}"
    )
    say(f"new employee {EXAMPLE_NEW_EMPLOYEE}:\n{_trainings_table(new.trainings)}")
    if args.json:
        print(
            json.dumps(
                {
                    "model_version": result.version,
                    "evaluation": result.evaluation.to_dict() if result.evaluation else None,
                    "known": {
                        "employee_id": known_id,
                        "trainings": known.model_dump(mode="json")["trainings"],
                    },
                    "new": {
                        "attributes": EXAMPLE_NEW_EMPLOYEE,
                        "trainings": new.model_dump(mode="json")["trainings"],
                    },
                },
                indent=2,
                default=str,
            )
        )


# ---------------------------------------------------------------- parser


def _sizes(p: argparse.ArgumentParser) -> None:
    """Options of the synthetic extracts (generate, demo)."""
    p.add_argument("--users", type=int, default=10_000)
    p.add_argument("--trainings", type=int, default=500)
    p.add_argument("--interactions", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="var/synthetic", help="folder for the CSV files")
    p.add_argument(
        "--regime",
        choices=tuple(REGIME_NAMES),
        default="history",
        help="what shapes the synthetic choices: attributes only; attributes, hidden "
        "tastes and level progressions (history); or weak attributes and long-tailed "
        "popularity (weak). Default: %(default)s",
    )


def _data_commands(sub: Subcommands) -> None:
    """Commands that read extracts: generate, drop, train, evaluate, tune, precompute."""
    p = sub.add_parser("generate", help="write synthetic HR extracts (and oracle.json)")
    _sizes(p)
    p.set_defaults(func=cmd_generate)
    p = sub.add_parser("drop", help="upload an extract the way HR does, and validate it")
    p.add_argument("file")
    p.add_argument("--kind", choices=("users", "trainings", "trainings-taken"))
    p.set_defaults(func=cmd_drop)
    p = sub.add_parser("train", help="retrain: evaluate, publish and precompute")
    p.add_argument("--oracle", help="oracle.json of synthetic extracts, to compare against")
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("evaluate", help="evaluate on the current extracts without publishing")
    p.add_argument("--oracle", help="oracle.json of synthetic extracts, to compare against")
    p.set_defaults(func=cmd_evaluate)
    p = sub.add_parser(
        "tune", help="search hyperparameters on the current extracts; write the best as TOML"
    )
    p.add_argument("--budget", type=_positive, default=12, help="trials, the current one included")
    p.add_argument("--seed", type=int, default=0, help="order in which settings are searched")
    p.add_argument("--out", default="var/tuned.toml", help="where to write the best configuration")
    p.add_argument("--oracle", help="oracle.json of synthetic extracts, shown for reference")
    p.set_defaults(func=cmd_tune)
    p = sub.add_parser(
        "config", help="show the effective configuration, or check it against extracts"
    )
    p.add_argument("action", choices=("show", "check"))
    p.add_argument("--extracts", help="check: a folder of CSV extracts (default: the store's)")
    p.set_defaults(func=cmd_config)
    p = sub.add_parser("precompute", help="every employee's top-k with the serving model")
    p.add_argument("--force", action="store_true", help="even if already computed")
    p.set_defaults(func=cmd_precompute)


def _serving_commands(sub: Subcommands) -> None:
    """Commands that answer from the serving version: recommend, similar, models, serve, demo."""
    p = sub.add_parser(
        "recommend", help="an employee's recommendations (or a new one's, with --attr)"
    )
    p.add_argument("employee_id", nargs="?", type=_id)
    p.add_argument(
        "--attr",
        action="append",
        default=[],
        metavar="COLUMN=VALUE",
        help="a new employee's attribute, repeatable: --attr skills=python;sql",
    )
    p.add_argument(
        "--taken",
        action="append",
        default=[],
        metavar="TRAINING_ID[,TRAINING_ID]",
        help="with --attr: trainings the employee already took (shape the list, never shown)",
    )
    p.add_argument("-n", type=int, default=10)
    p.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="ATTRIBUTE=VALUE[,VALUE]",
        help="keep trainings with one of these values, repeatable: --filter provider=internal",
    )
    p.add_argument("--explain", action="store_true", help="say why each training is recommended")
    p.add_argument(
        "--lane",
        choices=["skill-gap", "peers", "trending"],
        help="a lane beside the main list: the skill gap to the employee's target role, "
        "what peers took, what is trending",
    )
    p.add_argument("--target-role", metavar="ROLE_ID", help="with --lane skill-gap: the role")
    p.set_defaults(func=cmd_recommend)
    p = sub.add_parser("similar", help="trainings similar to a training")
    p.add_argument("training_id", type=_id)
    p.add_argument("-n", type=int, default=10)
    p.add_argument("--filter", action="append", default=[], metavar="ATTRIBUTE=VALUE[,VALUE]")
    p.set_defaults(func=cmd_similar)
    p = sub.add_parser("audience", help="the employees most likely to take a training (ids)")
    p.add_argument("training_id", type=_id)
    p.add_argument("-n", type=int, default=50)
    p.add_argument("--filter", action="append", default=[], metavar="ATTRIBUTE=VALUE[,VALUE]")
    p.add_argument("--csv", metavar="FILE", help="also write rank, employee id, score, reason")
    p.set_defaults(func=cmd_audience)
    p = sub.add_parser("models", help="model versions: list, show, promote (rollback), card")
    p.add_argument("action", choices=("list", "show", "promote", "card"))
    p.add_argument("version", nargs="?", help="default: the serving version (show, card)")
    p.add_argument("--out", help="card: the HTML file to write (default card-<version>.html)")
    p.set_defaults(func=cmd_models)
    p = sub.add_parser("impact", help="what people did with the recommendations (events)")
    p.add_argument("--since", type=date.fromisoformat, metavar="YYYY-MM-DD")
    p.set_defaults(func=cmd_impact)
    p = sub.add_parser("serve", help="serve the HTTP API with uvicorn")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--workers",
        type=_positive,
        default=1,
        help="worker processes, each with its own cache (as instances scaled out)",
    )
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("demo", help="generate, train, evaluate, publish, precompute, show")
    _sizes(p)
    p.add_argument("-n", type=int, default=10)
    p.set_defaults(func=cmd_demo)


def _global_options(parser: argparse.ArgumentParser, *, suppress: bool = False) -> None:
    """The options of every command, accepted before or after it.

    The main parser holds them with their defaults; each command's parser holds them
    again with ``suppress``: absent after the command, an option then leaves the value
    given before it alone instead of overwriting it with a default of its own."""
    group = parser.add_argument_group(
        "global options (before or after the command)",
        argument_default=argparse.SUPPRESS if suppress else None,
    )
    group.add_argument(
        "--config", metavar="FILE", help="TOML configuration (default: $TR_CONFIG, else built-in)"
    )
    group.add_argument(
        "--store",
        metavar="DIR",
        help=f"local folder used as blob storage (default: $TR_LOCAL_STORE, else {DEFAULT_STORE})",
    )
    group.add_argument(
        "--connection-string",
        metavar="CS",
        help="Azure Storage / Azurite connection string instead of the local folder",
    )
    group.add_argument(
        "--azure",
        action="store_true",
        help="use the app settings (AzureWebJobsStorage or __serviceUri) like the app",
    )
    group.add_argument("--connection-name", metavar="NAME", help="default: AzureWebJobsStorage")
    group.add_argument("--json", action="store_true", help="machine-readable output")
    group.add_argument(
        "-q", "--quiet", action="store_true", help="print the result only (no progress)"
    )
    group.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")


def build_parser(settings: AppSettings | None = None) -> argparse.ArgumentParser:
    """The command line; ``settings`` give the defaults taken from the environment."""
    settings = settings or AppSettings()
    parser = argparse.ArgumentParser(prog="training-recommender", description=__doc__)
    _global_options(parser)
    parser.set_defaults(  # on the main parser only: the commands' copies keep SUPPRESS
        store=settings.local_store or str(DEFAULT_STORE),
        connection_string=settings.connection_string,
        connection_name="AzureWebJobsStorage",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _data_commands(sub)
    _serving_commands(sub)
    for command in sub.choices.values():
        _global_options(command, suppress=True)
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run one command; the environment (``os.environ`` unless given) is read here, once.

    When stdout is a pipe its reader closed (``| head -c 10``), the command ends quietly
    with ``EXIT_BROKEN_PIPE`` (141, as if killed by SIGPIPE), without a traceback."""
    try:
        try:
            return _run(argv, environ)
        finally:
            # Flush here, where the error can be caught: output still buffered would
            # otherwise fail at interpreter exit ("Exception ignored ... BrokenPipeError").
            sys.stdout.flush()
    except BrokenPipeError:
        # Send what is left, and the interpreter's final flush, to /dev/null.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def _run(argv: Sequence[str] | None, environ: Mapping[str, str] | None) -> int:
    settings = AppSettings.from_environ(environ)
    args = build_parser(settings).parse_args(argv)
    args.settings = settings
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not (args.quiet or args.json):  # where a long run is, without a terminal too
        logging.getLogger(Progress.__module__).setLevel(logging.INFO)
    try:
        config = settings.config(args.config)
        args.func(args, config)
    except TrainingRecommenderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        print(f"error: {exc.strerror}: {exc.filename}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0
