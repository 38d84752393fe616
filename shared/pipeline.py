"""The use cases: accept an extract, retrain, promote, precompute — whatever calls them.

Where each of them reads and writes is :mod:`shared.layout`; the precomputed table is
:mod:`shared.table`; model and recommendation versions are :mod:`shared.registry`.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import PurePosixPath
from typing import Any, BinaryIO, Literal

import pandas as pd

from shared import crosscheck
from shared.bundle import ModelBundle
from shared.catalog import Catalog
from shared.crosscheck import Match
from shared.errors import (
    ExtractError,
    LeaseUnavailableError,
    NoModelError,
    NotFoundError,
    PreconditionFailedError,
    Problem,
    TrainingRecommenderError,
)
from shared.evaluation import EvaluationReport, Gate, quality_gate
from shared.events import recent_signals
from shared.impact import ImpactReport, impact_since
from shared.layout import (
    DROP_CONTAINER,
    EXTRACTS_POINTER,
    FIRST_SEEN,
    MODELS_POINTER,
    RECOMMENDATIONS_POINTER,
    REJECTED_CONTAINER,
    RETRAIN_LOCK,
    json_bytes,
    move_pointer,
    read_pointer,
    utc_now,
)
from shared.metadata import ModelMetadata
from shared.modeling import OracleFn, TrainedModel, train_model
from shared.progress import NO_PROGRESS, Progress, counted
from shared.reading import too_big
from shared.registry import current_version, load_bundle, metadata_of, publish, write_version
from shared.schema import (
    ALL_KINDS,
    ID,
    KINDS,
    Extracts,
    ValidationReport,
    header_of,
    kinds_with_columns,
    parse_all,
    parse_extract,
)
from shared.settings import Config, DataContract
from shared.storage import BlobStore, Lease, Readable
from shared.table import compute_recommendations

log = logging.getLogger(__name__)

POINTER_RETRIES = 5
# After a publish: register every published version not registered yet (Azure ML);
# returns one {"version", "status", "detail"} per version, never raises.
Registrar = Callable[[BlobStore], list[dict[str, str]]]


# ---------------------------------------------------------------- accept_extract


@dataclass(frozen=True)
class AcceptResult:
    """What happened to a dropped extract."""

    status: Literal["accepted", "rejected", "unchanged"]  # unchanged: the same bytes are current
    kind: str | None
    path: str  # where the bytes now are
    report: dict[str, Any]


def _normalized(name: str) -> str:
    return "-".join(name.lower().replace("_", " ").replace("-", " ").split())


def extract_kind(
    blob_name: str, stream: BinaryIO | None = None, contract: DataContract | None = None
) -> str | None:
    """The extract kind of a dropped blob (see :func:`detect_kind`)."""
    return detect_kind(blob_name, stream, contract)[0]


def detect_kind(
    blob_name: str, stream: BinaryIO | None = None, contract: DataContract | None = None
) -> tuple[str | None, str]:
    """The extract kind from the blob's folder, else from the start of its file name
    (``-``, ``_``, spaces and case alike), else from the columns at the start of
    ``stream``; and why."""
    path = PurePosixPath(blob_name)
    if len(path.parts) > 1 and _normalized(path.parts[0]) in ALL_KINDS:
        return _normalized(path.parts[0]), f"its folder {path.parts[0]}/"
    stem = _normalized(path.name)
    for kind in sorted(ALL_KINDS, key=len, reverse=True):  # "trainings-taken" first
        if stem.startswith(kind):
            return kind, f"its file name {path.name!r}"
    if stream is not None:
        names = header_of(stream)
        kinds = kinds_with_columns(names, contract or DataContract())
        if len(kinds) == 1:
            return kinds[0], f"its columns ({', '.join(names)})"
    return None, "neither its folder, its file name nor its columns say"


def accept_extract(
    store: BlobStore, blob_name: str, config: Config, *, blob: Readable | None = None
) -> AcceptResult:
    """Validate a dropped extract and make it the current one of its kind, or quarantine it.

    The drop is read as a stream, a piece at a time, and copied where it goes without
    being read again (server-side on Azure): one over ``contract.limits.max_bytes`` is
    quarantined without a byte of it read.

    Validation failures are deterministic, so they are reported, not raised: raising
    would make the Functions runtime retry five times and poison the blob. Storage
    errors do raise, so that the runtime retries them.

    Parameters
    ----------
    blob_name
        The name inside the ``hr-extracts`` container, e.g. ``users/2026-11.csv``.
    blob
        The drop as the blob trigger bound it; by default, read from ``store``.
    """
    source = f"{DROP_CONTAINER}/{blob_name}"
    blob = blob or store.blob(source)
    kind, why = detect_kind(blob_name)
    matches: list[Match] = []
    with blob.open() as stream:
        try:
            limit = config.contract.limits.max_bytes
            if blob.size > limit:
                raise ExtractError(source, [too_big(source, blob.size, limit)])
            if kind is None:
                kind, why = detect_kind(blob_name, stream, config.contract)
            if kind is None:
                folders = ", ".join(f"{k}/" for k in ALL_KINDS)
                message = f"cannot tell the extract kind ({why}): put it under one of {folders}"
                raise ExtractError(source, [Problem(source, message)])
            frame, report = parse_extract(kind, stream, config.contract, source)
            matches = _fit_with_current(store, kind, frame, config.contract)
            fatal = crosscheck.problems(matches, source) + _usable(kind, frame, config, source)
            if fatal:
                raise ExtractError(source, fatal)
        except ExtractError as exc:
            if kind is not None and not why.startswith("its folder"):
                assumed = Problem(
                    source,
                    f"read as a {kind} extract from {why}; if it is another kind, drop it under "
                    "that kind's folder (or: python -m shared drop --kind KIND FILE)",
                )
                exc = ExtractError(source, [assumed, *exc.problems])
            return _reject(store, blob_name, blob.etag, kind, exc, matches)

    digest = report.sha256
    assert digest is not None  # a parse that returns has read every byte
    for _ in range(POINTER_RETRIES):
        pointer, etag = read_pointer(store, EXTRACTS_POINTER)
        current = pointer.get(kind, {})
        if current.get("sha256") == digest:
            log.info("%s: same content as the current %s extract, nothing to do", source, kind)
            return AcceptResult("unchanged", kind, current["path"], _with(report, matches))
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        path = f"extracts/{kind}/{stamp}-{digest[:12]}.csv"
        store.copy(source, path, source_etag=blob.etag)
        store.write(path.removesuffix(".csv") + ".report.json", json_bytes(_with(report, matches)))
        entry = {
            "path": path,
            "sha256": digest,
            "source": source,
            "accepted_at": utc_now(),
            "rows": report.rows_kept,
        }
        try:
            move_pointer(store, EXTRACTS_POINTER, {**pointer, kind: entry}, etag)
        except PreconditionFailedError:
            continue  # another kind was accepted meanwhile: merge with its pointer
        log.info("%s accepted as the current %s extract (%d rows)", source, kind, report.rows_kept)
        return AcceptResult("accepted", kind, path, _with(report, matches))
    raise PreconditionFailedError(
        f"{EXTRACTS_POINTER}: kept changing during {POINTER_RETRIES} tries"
    )


def drop_extract(
    store: BlobStore, blob_name: str, data: bytes | BinaryIO, config: Config
) -> AcceptResult:
    """Drop an extract into ``hr-extracts/`` (a file is uploaded a piece at a time), then
    accept it as the blob trigger does: the CLI's ``drop`` and the demo's."""
    store.write(f"{DROP_CONTAINER}/{blob_name}", data)
    return accept_extract(store, blob_name, config)


def _with(report: ValidationReport, matches: list[Match]) -> dict[str, Any]:
    return {**report.to_dict(), "matches": [m.to_dict() for m in matches]}


def _fit_with_current(
    store: BlobStore, kind: str, frame: pd.DataFrame, contract: DataContract
) -> list[Match]:
    """How a dropped extract fits the current extracts of the other kinds (and the
    current one of its own kind, for employees and trainings)."""
    pointer, _ = read_pointer(store, EXTRACTS_POINTER)

    def current(other: str) -> pd.DataFrame | None:
        if other not in pointer:
            return None
        path = str(pointer[other]["path"])
        with store.blob(path).open() as stream:
            return parse_extract(other, stream, contract, path)[0]

    checks = contract.checks
    if kind == "roles":
        return []  # nothing else names a role by its id but an employee's target role
    if kind == "trainings-taken":
        users, trainings = current("users"), current("trainings")
        return crosscheck.taken_matches(
            frame,
            None if users is None else pd.Index(users[ID]),
            None if trainings is None else pd.Index(trainings[ID]),
            checks,
        )
    name, column = ("employee", "user_id") if kind == "users" else ("training", "training_id")
    matches = []
    taken, previous = current("trainings-taken"), current(kind)
    if taken is not None:
        what = f"current trainings-taken rows whose {name} is in this extract"
        match, _ = crosscheck.rows_matching(
            taken[column], pd.Index(frame[ID]), what, checks.min_matched_rows
        )
        matches.append(match)
    if previous is not None:
        matches.append(
            crosscheck.ids_kept(pd.Index(frame[ID]), pd.Index(previous[ID]), f"{name}s", checks)
        )
    return matches


def _usable(kind: str, frame: pd.DataFrame, config: Config, source: str) -> list[Problem]:
    """A trainings-taken drop must leave something to learn from."""
    if kind != "trainings-taken" or frame["positive"].any():
        return []
    minimum = config.contract.taken.min_weight
    return [
        Problem(
            source,
            f"no row reaches contract.taken.min_weight {minimum}: nothing to learn from",
            column=config.contract.taken.weight,
        )
    ]


def _reject(
    store: BlobStore,
    blob_name: str,
    etag: str,
    kind: str | None,
    exc: ExtractError,
    matches: list[Match] | None = None,
) -> AcceptResult:
    # Under its kind's folder whenever the kind is known, as the drop zone is laid out.
    inside = (
        blob_name
        if kind is None or blob_name.startswith(f"{kind}/")
        else (f"{kind}/{PurePosixPath(blob_name).name}")
    )
    target = f"{REJECTED_CONTAINER}/{inside}"
    report = {
        "status": "rejected",
        "source": f"{DROP_CONTAINER}/{blob_name}",
        "kind": kind,
        "rejected_at": utc_now(),
        "problems": [p.to_dict() for p in exc.problems],
        "matches": [m.to_dict() for m in matches or []],
        "message": str(exc),
    }
    store.copy(f"{DROP_CONTAINER}/{blob_name}", target, source_etag=etag)
    store.write(str(PurePosixPath(target).with_suffix("")) + ".error.json", json_bytes(report))
    store.delete(
        f"{DROP_CONTAINER}/{blob_name}"
    )  # moved, not copied: the drop zone holds only news
    log.warning("rejected %s: %s", blob_name, exc)
    return AcceptResult("rejected", kind, target, report)


# ---------------------------------------------------------------- loading


@dataclass(frozen=True)
class CurrentData:
    """The current extracts, read and cross-checked, with their fingerprints."""

    extracts: Extracts
    fingerprints: dict[str, str]

    @property
    def version(self) -> str:
        joined = "".join(self.fingerprints[kind] for kind in ALL_KINDS if kind in self.fingerprints)
        return hashlib.sha256(joined.encode()).hexdigest()[:12]


def load_current_data(
    store: BlobStore, config: Config, progress: Progress = NO_PROGRESS
) -> CurrentData:
    """Read the current extract of each kind (raises NotFoundError naming what is missing)."""
    pointer, _ = read_pointer(store, EXTRACTS_POINTER)
    missing = [kind for kind in KINDS if kind not in pointer]
    if missing:
        where = f"drop them under {DROP_CONTAINER}/<kind>/"
        raise NotFoundError(f"no accepted extract yet for: {', '.join(missing)} ({where})")
    kinds = [kind for kind in ALL_KINDS if kind in pointer]
    sources: dict[str, str] = {kind: str(pointer[kind]["path"]) for kind in kinds}
    blobs = {kind: store.blob(sources[kind]) for kind in kinds}
    size = sum(blob.size for blob in blobs.values())
    with ExitStack() as opened, progress.step("read the extracts", size, "bytes") as step:
        streams = {
            kind: opened.enter_context(counted(blob.open(), step)) for kind, blob in blobs.items()
        }
        extracts = parse_all(
            streams["users"],
            streams["trainings"],
            streams["trainings-taken"],
            config.contract,
            sources,
        )
        if "roles" in streams:
            roles, report = parse_extract(
                "roles", streams["roles"], config.contract, sources["roles"]
            )
            extracts = replace(extracts, roles=roles, reports=(*extracts.reports, report))
    return CurrentData(extracts, {kind: pointer[kind]["sha256"][:12] for kind in kinds})


# ---------------------------------------------------------------- retrain


@dataclass(frozen=True)
class RetrainResult:
    # rejected: by the quality gate; busy: another retrain holds the lock
    status: Literal["published", "rejected", "busy"]
    version: str | None = None
    evaluation: EvaluationReport | None = None
    precompute: PrecomputeResult | None = None
    reports: list[dict[str, Any]] = field(default_factory=list)
    gate: Gate | None = None
    registrations: list[dict[str, str]] = field(default_factory=list)
    served_by: dict[str, str] = field(default_factory=dict)  # population -> scorer name


LEASE_SECONDS = 60


@contextmanager
def _kept_alive(lease: Lease, every: float = LEASE_SECONDS / 3) -> Iterator[None]:
    """Renew a lease in the background while a long step runs (a fit can outlast it)."""
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(every):
            try:
                lease.renew()
            except TrainingRecommenderError as exc:
                log.error("could not renew %s: %s", lease.path, exc)
                return

    thread = threading.Thread(target=renew, name="lease-renewal", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def render_card(metadata: ModelMetadata) -> tuple[bytes, bytes]:
    """``card.json`` and ``card.html`` bytes of a version (matplotlib loads only here)."""
    from shared.card import card_html, card_json

    return json_bytes(card_json(metadata)), card_html(metadata).encode("utf-8")


def gate_candidate(store: BlobStore, candidate: TrainedModel, config: Config) -> Gate:
    """The quality gate against the serving version's recorded figures."""
    options = config.gate
    if not options.enabled or candidate.evaluation is None:
        return Gate.off(options.tolerance)
    serving: EvaluationReport | None = None
    serving_version: str | None = None
    try:
        serving_version = current_version(store)
        serving = metadata_of(store, serving_version)[0].metrics
    except (NoModelError, NotFoundError):
        serving_version = None
    return quality_gate(
        candidate.evaluation,
        serving,
        serving_version=serving_version,
        tolerance=options.tolerance,
    )


IMPACT_DAYS = 30  # the feedback events a model card reports


def _recent_impact(store: BlobStore, new_days: int) -> ImpactReport | None:
    """What people did with the recommendations lately, for the card; None without
    events. Unreadable events never stop a retrain."""
    try:
        since = datetime.now(UTC).date() - timedelta(days=IMPACT_DAYS)
        report = impact_since(store, since, new_days)
    except Exception as exc:
        log.warning("feedback events not read for the model card: %s: %s", type(exc).__name__, exc)
        return None
    return report if report.events else None


def retrain(
    store: BlobStore,
    config: Config,
    *,
    registrar: Registrar | None = None,
    oracle: OracleFn | None = None,
    progress: Progress = NO_PROGRESS,
) -> RetrainResult:
    """Train on the current extracts, evaluate, gate, publish, precompute, register.

    ``registrar`` (the adapters build it from the app settings: registration in Azure
    ML) is called after a publish with the store, and reports what it registered.

    One run at a time: a second retrain while one runs returns ``status="busy"`` at
    once (the timer comes back; two fits on two cores would only slow both down).
    A candidate the quality gate refuses (worse than the serving version for known
    and new employees alike) is kept under ``models/rejected/`` and the serving
    version stays.
    ``progress`` is told of each step, from reading the extracts to the precompute's.
    """
    try:
        with store.lease(RETRAIN_LOCK, seconds=LEASE_SECONDS) as lease, _kept_alive(lease):
            data = load_current_data(store, config, progress)
            learnt = config.signals
            trained = train_model(
                data.extracts,
                config,
                fingerprints=data.fingerprints,
                oracle=oracle,
                progress=progress,
                signals=recent_signals(store, learnt.weights, learnt.days),
            )
            bundle = trained.bundle
            decision = gate_candidate(store, trained, config)
            impact = _recent_impact(store, config.rules.new_days)
            bundle.metadata = bundle.metadata.model_copy(
                update={"gate": decision, "impact": impact}
            )
            evaluation = trained.evaluation
            reports = [r.to_dict() for r in data.extracts.reports]
            served = trained.evaluation.served_by() if trained.evaluation else {}
            if not decision.accepted:
                write_version(store, bundle, rejected=True, card=render_card)
                log.error(
                    "candidate %s rejected by the quality gate: %s",
                    bundle.version,
                    "; ".join(decision.reasons),
                )
                return RetrainResult(
                    "rejected",
                    bundle.version,
                    evaluation,
                    None,
                    reports,
                    decision,
                    served_by=served,
                )
            with progress.step("publish"):
                publish(store, bundle, card=render_card)
            log.info(
                "published model %s (%s)",
                bundle.version,
                ", ".join(f"{p}: {name}" for p, name in served.items()) or "not evaluated",
            )
            result = precompute(store, config, bundle=bundle, data=data, progress=progress)
    except LeaseUnavailableError:
        log.warning("another retrain holds %s: this one exits without training", RETRAIN_LOCK)
        return RetrainResult("busy")
    registrations = registrar(store) if registrar is not None else []
    return RetrainResult(
        "published",
        bundle.version,
        evaluation,
        result,
        reports,
        decision,
        registrations,
        served,
    )


def promote(store: BlobStore, version: str, config: Config) -> PrecomputeResult:
    """Serve an earlier (or any published) version: move the pointer, then precompute.

    Takes the retrain lock, so that a retrain finishing meanwhile cannot undo it.
    """
    metadata, status = metadata_of(store, version)
    if status == "rejected":
        reasons = "; ".join(metadata.gate.reasons if metadata.gate else []) or "see its card"
        raise TrainingRecommenderError(
            f"version {version} was rejected by the quality gate ({reasons}): only published "
            "versions can be promoted"
        )
    with store.lease(RETRAIN_LOCK, seconds=LEASE_SECONDS):
        bundle = load_bundle(store, version)  # proves it loads before anything moves
        pointer, etag = read_pointer(store, MODELS_POINTER)
        content = {
            "version": version,
            "previous": pointer.get("version"),
            "promoted": True,
            "moved_at": utc_now(),
        }
        move_pointer(store, MODELS_POINTER, content, etag)
        log.info("promoted model %s (was %s)", version, pointer.get("version"))
        return precompute(store, config, bundle=bundle)


# ---------------------------------------------------------------- precompute


def _record_first_seen(
    store: BlobStore, catalog: Catalog | None, ledger: dict[str, Any], etag: str | None
) -> None:
    """Add the trainings seen for the first time to the ledger (kept for trainings
    that left the extract: one that comes back is not new). A precompute running at
    the same moment may have written it first: its dates are as good, so ours are
    dropped and its own trainings get theirs on the next precompute."""
    updated = {**ledger, **(catalog.ledger() if catalog is not None else {})}
    if updated == ledger and etag is not None:
        return
    try:
        move_pointer(store, FIRST_SEEN, updated, etag)
    except PreconditionFailedError:
        log.warning("the first-seen ledger changed meanwhile; kept the other writer's")


@dataclass(frozen=True)
class PrecomputeResult:
    status: Literal["computed", "unchanged"]
    version: str
    model_version: str
    data_version: str
    employees: int = 0


def precompute(
    store: BlobStore,
    config: Config,
    *,
    bundle: ModelBundle | None = None,
    data: CurrentData | None = None,
    force: bool = False,
    progress: Progress = NO_PROGRESS,
) -> PrecomputeResult:
    """Every employee's top-k with the serving model and the current extracts.

    Idempotent: when the serving recommendations already come from the same model
    and data versions, nothing is computed (a trigger delivered twice costs a read).
    ``progress`` is told of the scoring and the export, in employees, and the upload.
    """
    model_version = bundle.version if bundle is not None else current_version(store)
    data = data or load_current_data(store, config, progress)
    pointer, etag = read_pointer(store, RECOMMENDATIONS_POINTER)
    if (
        not force
        and pointer.get("model_version") == model_version
        and pointer.get("data_version") == data.version
    ):
        return PrecomputeResult("unchanged", pointer["version"], model_version, data.version)
    bundle = bundle or load_bundle(store, model_version)
    ledger, ledger_etag = read_pointer(store, FIRST_SEEN)
    table, export = compute_recommendations(
        bundle, data.extracts, config, ledger if ledger_etag else None, progress=progress
    )
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    # Unique even for two runs in one second: a served version is never overwritten.
    version = f"{stamp}-{data.version[:6]}-{secrets.token_hex(3)}"
    meta = {
        "version": version,
        "model_version": model_version,
        "data_version": data.version,
        "fingerprints": data.fingerprints,
        "created_at": utc_now(),
        "employees": len(table.user_ids),
        "k": int(table.items.shape[1]),
    }
    prefix = f"recommendations/{version}"
    with tempfile.TemporaryFile() as csv_file:  # on disk: 160 MB at 100,000 employees
        export.write(csv_file, progress)
        with progress.step("upload"):
            store.write(f"{prefix}/top.npz", table.to_bytes(), if_none_match=True)
            store.write(f"{prefix}/meta.json", json_bytes(meta), content_type="application/json")
            csv_file.seek(0)
            store.write(f"{prefix}/recommendations.csv", csv_file, content_type="text/csv")
    _record_first_seen(store, table.catalog, ledger, ledger_etag)
    move_pointer(store, RECOMMENDATIONS_POINTER, meta, etag)
    log.info("precomputed %s for %d employees", version, len(table.user_ids))
    return PrecomputeResult("computed", version, model_version, data.version, len(table.user_ids))
