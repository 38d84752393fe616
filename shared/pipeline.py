"""The use cases: accept an extract, retrain, precompute — whatever calls them.

Blob layout (the first path segment is the container)::

    hr-extracts/<kind>/<file>.csv                 dropped by HR (the blob trigger)
    hr-extracts-rejected/<kind>/<file>.csv        a bad drop, moved here ...
    hr-extracts-rejected/<kind>/<file>.error.json ... with what is wrong and where
    extracts/<kind>/<stamp>-<sha>.csv             accepted copies (+ .report.json)
    extracts/current.json                         the current extract of each kind
    models/<version>/model.npz, model.json        published bundles
    models/current.json                           the serving model
    recommendations/<version>/top.npz, recommendations.csv, meta.json
    recommendations/current.json                  the serving recommendations
    locks/retrain                                 leased while a retrain runs

Every output is written under a new name first; only then does the small
``current.json`` pointer move, with a conditional write on the ETag it was read
with. A failure anywhere leaves the previous pointer, hence the previous version,
serving.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import secrets
import threading
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from shared.bundle import ModelBundle, npz_bytes, sparse_arrays, sparse_from
from shared.errors import (
    ExtractError,
    LeaseUnavailableError,
    ModelLoadError,
    NoModelError,
    NotFoundError,
    PreconditionFailedError,
    Problem,
    TrainingRecommenderError,
)
from shared.evaluation import EvaluationReport, GateDecision, quality_gate
from shared.features import IdMap, employee_rows, interaction_matrices
from shared.modeling import OracleFn, TrainedModel, train_model
from shared.registry import (
    MODELS_POINTER,
    current_version,
    describe_damage,
    json_bytes,
    load_bundle,
    metadata_of,
    move_pointer,
    publish,
    read_pointer,
    utc_now,
    write_version,
)
from shared.rules import Rules, active_trainings
from shared.schema import (
    FORMULA_STARTS,
    ID,
    KINDS,
    Extracts,
    parse_all,
    parse_extract,
)
from shared.scoring import NO_ITEM, Recommender, select
from shared.settings import Config
from shared.storage import BlobStore, Lease
from shared.training import EpochRecord

log = logging.getLogger(__name__)

DROP_CONTAINER = "hr-extracts"
REJECTED_CONTAINER = "hr-extracts-rejected"
EXTRACTS_POINTER = "extracts/current.json"
RECOMMENDATIONS_POINTER = "recommendations/current.json"
RETRAIN_LOCK = "locks/retrain"
POINTER_RETRIES = 5


# ---------------------------------------------------------------- accept_extract


@dataclass(frozen=True)
class AcceptResult:
    """What happened to a dropped extract."""

    status: str  # "accepted", "rejected" or "unchanged" (the same bytes are already current)
    kind: str | None
    path: str  # where the bytes now are
    report: dict[str, Any]


def extract_kind(blob_name: str) -> str | None:
    """The extract kind from a dropped blob's name: its folder, or the start of its file name."""
    parts = PurePosixPath(blob_name).parts
    if len(parts) > 1 and parts[0] in KINDS:
        return parts[0]
    stem = PurePosixPath(blob_name).name.lower()
    for kind in sorted(KINDS, key=len, reverse=True):  # "trainings-taken" before "trainings"
        if stem.startswith(kind):
            return kind
    return None


def accept_extract(store: BlobStore, blob_name: str, data: bytes, config: Config) -> AcceptResult:
    """Validate a dropped extract and make it the current one of its kind, or quarantine it.

    Validation failures are deterministic, so they are reported, not raised: raising
    would make the Functions runtime retry five times and poison the blob. Storage
    errors do raise, so that the runtime retries them.

    Parameters
    ----------
    blob_name
        The name inside the ``hr-extracts`` container, e.g. ``users/2026-11.csv``.
    """
    source = f"{DROP_CONTAINER}/{blob_name}"
    kind = extract_kind(blob_name)
    try:
        if kind is None:
            message = f"cannot tell the extract kind: put it under one of {', '.join(KINDS)}/"
            raise ExtractError(source, [Problem(source, message)])
        _, report = parse_extract(kind, data, config.contract, source)
    except ExtractError as exc:
        return _reject(store, blob_name, data, kind, exc)

    digest = hashlib.sha256(data).hexdigest()
    for _ in range(POINTER_RETRIES):
        pointer, etag = read_pointer(store, EXTRACTS_POINTER)
        current = pointer.get(kind, {})
        if current.get("sha256") == digest:
            log.info("%s: same content as the current %s extract, nothing to do", source, kind)
            return AcceptResult("unchanged", kind, current["path"], report.to_dict())
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        path = f"extracts/{kind}/{stamp}-{digest[:12]}.csv"
        store.write(path, data, content_type="text/csv")
        store.write(path.removesuffix(".csv") + ".report.json", json_bytes(report.to_dict()))
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
        return AcceptResult("accepted", kind, path, report.to_dict())
    raise PreconditionFailedError(
        f"{EXTRACTS_POINTER}: kept changing during {POINTER_RETRIES} tries"
    )


def _reject(
    store: BlobStore, blob_name: str, data: bytes, kind: str | None, exc: ExtractError
) -> AcceptResult:
    target = f"{REJECTED_CONTAINER}/{blob_name}"
    report = {
        "status": "rejected",
        "source": f"{DROP_CONTAINER}/{blob_name}",
        "kind": kind,
        "rejected_at": utc_now(),
        "problems": [p.to_dict() for p in exc.problems],
        "message": str(exc),
    }
    store.write(target, data)
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
        joined = "".join(self.fingerprints[kind] for kind in KINDS)
        return hashlib.sha256(joined.encode()).hexdigest()[:12]


def load_current_data(store: BlobStore, config: Config) -> CurrentData:
    """Read the current extract of each kind (raises NotFoundError naming what is missing)."""
    pointer, _ = read_pointer(store, EXTRACTS_POINTER)
    missing = [kind for kind in KINDS if kind not in pointer]
    if missing:
        where = f"drop them under {DROP_CONTAINER}/<kind>/"
        raise NotFoundError(f"no accepted extract yet for: {', '.join(missing)} ({where})")
    blobs = {kind: store.read(pointer[kind]["path"]) for kind in KINDS}
    sources: dict[str, str] = {kind: str(pointer[kind]["path"]) for kind in KINDS}
    extracts = parse_all(
        blobs["users"], blobs["trainings"], blobs["trainings-taken"], config.contract, sources
    )
    return CurrentData(extracts, {kind: pointer[kind]["sha256"][:12] for kind in KINDS})


# ---------------------------------------------------------------- retrain


@dataclass(frozen=True)
class RetrainResult:
    status: str  # "published", "rejected" (by the quality gate) or "busy" (another retrain runs)
    version: str | None = None
    evaluation: dict[str, Any] | None = None
    precompute: PrecomputeResult | None = None
    reports: list[dict[str, Any]] = field(default_factory=list)
    gate: dict[str, Any] | None = None
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


def render_card(metadata: dict[str, Any]) -> tuple[bytes, bytes]:
    """``card.json`` and ``card.html`` bytes of a version (matplotlib loads only here)."""
    from shared.card import card_html, card_json

    return json_bytes(card_json(metadata)), card_html(metadata).encode("utf-8")


def gate_candidate(store: BlobStore, candidate: TrainedModel, config: Config) -> GateDecision:
    """The quality gate against the serving version's recorded figures."""
    options = config.gate
    if not options.enabled or candidate.evaluation is None:
        return GateDecision(
            True, ["gate off: not checked"], [], None, options.tolerance, enabled=False
        )
    serving: EvaluationReport | None = None
    serving_version: str | None = None
    try:
        serving_version = current_version(store)
        metrics = metadata_of(store, serving_version)[0].get("metrics")
        serving = EvaluationReport.from_dict(metrics) if metrics else None
    except (NoModelError, NotFoundError):
        serving_version = None
    return quality_gate(
        candidate.evaluation,
        serving,
        serving_version=serving_version,
        tolerance=options.tolerance,
    )


def register_published(store: BlobStore) -> list[dict[str, str]]:
    """Register in Azure ML every published version not registered yet; never raises."""
    from shared.azureml import AzureMLSettings, register_pending
    from shared.registry import list_versions

    try:
        settings = AzureMLSettings.from_environ()
    except TrainingRecommenderError as exc:
        log.error("Azure ML registration not attempted: %s", exc)
        return [{"version": "*", "status": "failed", "detail": str(exc)}]
    pending = [
        v.version for v in list_versions(store) if v.status != "rejected" and not v.registered
    ]
    return [dict(outcome.__dict__) for outcome in register_pending(store, pending, settings)]


def retrain(
    store: BlobStore,
    config: Config,
    *,
    oracle: OracleFn | None = None,
    progress: Callable[[EpochRecord, int], None] | None = None,
) -> RetrainResult:
    """Train on the current extracts, evaluate, gate, publish, precompute, register.

    One run at a time: a second retrain while one runs returns ``status="busy"`` at
    once (the timer comes back; two fits on two cores would only slow both down).
    A candidate the quality gate refuses (worse than the serving version for known
    and new employees alike) is kept under ``models/rejected/`` and the serving
    version stays.
    """
    try:
        with store.lease(RETRAIN_LOCK, seconds=LEASE_SECONDS) as lease, _kept_alive(lease):
            data = load_current_data(store, config)
            trained = train_model(
                data.extracts,
                config,
                fingerprints=data.fingerprints,
                oracle=oracle,
                progress=progress,
            )
            bundle = trained.bundle
            decision = gate_candidate(store, trained, config)
            bundle.metadata["gate"] = decision.to_dict()
            evaluation = trained.evaluation.to_dict() if trained.evaluation else None
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
                    decision.to_dict(),
                    served_by=served,
                )
            publish(store, bundle, card=render_card)
            log.info(
                "published model %s (%s)",
                bundle.version,
                ", ".join(f"{p}: {name}" for p, name in served.items()) or "not evaluated",
            )
            result = precompute(store, config, bundle=bundle, data=data)
    except LeaseUnavailableError:
        log.warning("another retrain holds %s: this one exits without training", RETRAIN_LOCK)
        return RetrainResult("busy")
    registrations = register_published(store)
    return RetrainResult(
        "published",
        bundle.version,
        evaluation,
        result,
        reports,
        decision.to_dict(),
        registrations,
        served,
    )


def promote(store: BlobStore, version: str, config: Config) -> PrecomputeResult:
    """Serve an earlier (or any published) version: move the pointer, then precompute.

    Takes the retrain lock, so that a retrain finishing meanwhile cannot undo it.
    """
    metadata, status = metadata_of(store, version)
    if status == "rejected":
        reasons = "; ".join((metadata.get("gate") or {}).get("reasons", [])) or "see its card"
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


@dataclass(frozen=True)
class PrecomputeResult:
    status: str  # "computed" or "unchanged"
    version: str
    model_version: str
    data_version: str
    employees: int = 0


@dataclass(frozen=True)
class RecommendationTable:
    """Every employee's ranked candidates, and what it takes to rank them again.

    ``items`` keeps ``serving.depth`` candidates per employee (best first) so that
    filtered answers rarely need more; the feature rows and taken trainings let an
    answer be re-ranked on the fly when they do.
    """

    user_ids: np.ndarray
    items: np.ndarray  # employees x depth, rows of the model's catalog (NO_ITEM = none)
    scores: np.ndarray
    # bool: the employee took a training of the model's catalog, so is served as a
    # known employee (else as a new one)
    from_history: np.ndarray
    user_features: sp.csr_matrix  # employees x the model's user features (with history)
    taken: sp.csr_matrix  # employees x the model's trainings
    active: np.ndarray  # bool per training of the model: may be recommended today
    metadata: dict[str, Any]

    def to_bytes(self) -> bytes:
        return npz_bytes(
            {
                "user_ids": self.user_ids,
                "items": self.items,
                "scores": self.scores,
                "from_history": self.from_history,
                "active": self.active,
                **sparse_arrays("user_features", self.user_features),
                **sparse_arrays("taken", self.taken),
            }
        )

    @classmethod
    def from_bytes(cls, npz: bytes, meta: bytes) -> RecommendationTable:
        try:
            metadata = json.loads(meta)
            with np.load(io.BytesIO(npz), allow_pickle=False) as archive:
                table = cls(
                    archive["user_ids"],
                    archive["items"],
                    archive["scores"],
                    archive["from_history"],
                    sparse_from("user_features", archive),
                    sparse_from("taken", archive),
                    archive["active"],
                    metadata,
                )
        except (
            ValueError,
            KeyError,
            OSError,
            EOFError,
            TypeError,
            zlib.error,
            zipfile.BadZipFile,
        ) as exc:
            raise ModelLoadError(f"recommendation table cannot be read: {exc}") from None
        n = len(table.user_ids)
        if not (
            len(table.items) == len(table.scores) == len(table.from_history) == n
            and table.user_features.shape[0] == table.taken.shape[0] == n
        ):
            raise ModelLoadError("recommendation table: arrays of different lengths")
        return table


def compute_recommendations(
    bundle: ModelBundle, extracts: Extracts, config: Config
) -> tuple[RecommendationTable, pd.DataFrame]:
    """Ranked candidates of every employee of the current extracts with the given model.

    Everyone is described by their current attributes and the trainings they took
    in the current extract (so a completion since the last retrain moves their list
    now), exactly as a posted employee would be. Trainings taken (any weight),
    retired or excluded trainings are never candidates.
    """
    serving = config.serving
    recommender = Recommender(bundle)
    users = extracts.users
    user_map = IdMap.of(users[ID].to_numpy(dtype=str))
    taken, _, _ = interaction_matrices(extracts.taken, user_map, IdMap(bundle.item_ids))
    feature_rows, _ = employee_rows(bundle, users, config.contract, taken)
    has_history = np.diff(taken.indptr) > 0
    active = active_trainings(bundle, extracts.trainings, config.rules)
    depth = max(serving.depth, serving.top_k)
    # Scored a 16 MiB block at a time on every core: memory is bounded by
    # serving.chunk_size rows of scores, never employees x trainings.
    items, scores = recommender.for_feature_rows(
        feature_rows, has_history, depth, taken, active, chunk_size=serving.chunk_size
    )
    table = RecommendationTable(
        user_map.ids, items, scores, has_history, feature_rows, taken, active, {}
    )
    rules = Rules.compile(bundle, active, config.rules)
    return table, export_frame(table, recommender, rules, serving.top_k)


def answer_for_row(
    table: RecommendationTable,
    recommender: Recommender,
    rules: Rules,
    row: int,
    n: int,
    allowed: np.ndarray | None = None,
) -> list[tuple[int, float, bool]]:
    """One employee's final list: rules applied, ``allowed`` (filters) honoured.

    Starts from the precomputed candidates; ranks the whole catalog for this one
    employee only when they run out while more trainings could qualify.
    """
    mask = rules.allowed(allowed)
    known = bool(table.from_history[row])
    pinned: list[tuple[int, float]] = []
    if len(rules.pinned):  # the feature row is sliced only when it is needed
        scores = recommender.feature_scores(table.user_features[row], known)
        pinned_scores = scores[0, rules.pinned]
        pinned = list(zip(rules.pinned.tolist(), pinned_scores.tolist(), strict=True))
    taken = table.taken.indices[table.taken.indptr[row] : table.taken.indptr[row + 1]]
    chosen, short = select(
        table.items[row],
        table.scores[row],
        n,
        allowed=mask,
        pinned=pinned,
        taken=taken,
        caps=rules.caps,
    )
    complete = (table.items[row] == NO_ITEM).any()  # every candidate was already kept
    if short and not complete:
        features = table.user_features[row]
        ranked, scores = recommender.for_feature_rows(
            features, np.array([known]), len(mask), table.taken[row], mask
        )
        chosen, _ = select(
            ranked[0], scores[0], n, allowed=mask, pinned=pinned, taken=taken, caps=rules.caps
        )
    return chosen


def export_frame(
    table: RecommendationTable, recommender: Recommender, rules: Rules, k: int
) -> pd.DataFrame:
    """The long CSV export for reporting tools: employee id, rank, training id, title, score.

    Text that a spreadsheet would run as a formula (``=``, ``+``, ``-``, ``@``…) is
    prefixed with an apostrophe, as OWASP recommends against CSV injection.
    """
    if rules.reorders:  # pinned trainings or diversity caps: employee by employee
        lists = [
            answer_for_row(table, recommender, rules, row, k) for row in range(len(table.user_ids))
        ]
        items = np.full((len(lists), k), NO_ITEM, dtype=np.int32)
        scores = np.zeros(items.shape, dtype=np.float32)
        for row, chosen in enumerate(lists):
            for rank, (item, score, _) in enumerate(chosen):
                items[row, rank], scores[row, rank] = item, score
    else:
        items, scores = table.items[:, :k], table.scores[:, :k]
    bundle = recommender.bundle
    n, k = items.shape
    valid = items != NO_ITEM
    flat = items[valid]
    owners = np.broadcast_to(np.arange(n)[:, None], (n, k))[valid]
    # Neutralize each distinct id and title once, then index: not once per output row.
    return pd.DataFrame(
        {
            "employee_id": _neutralized(table.user_ids)[owners],
            "rank": np.broadcast_to(np.arange(1, k + 1), (n, k))[valid],
            "training_id": _neutralized(bundle.item_ids)[flat],
            "title": _neutralized(bundle.item_titles)[flat],
            "score": np.round(scores[valid], 6),
        }
    )


def _neutralized(values: np.ndarray) -> np.ndarray:
    text = values.astype(str)
    risky = np.char.startswith(text, FORMULA_STARTS[0])
    for start in FORMULA_STARTS[1:]:
        risky |= np.char.startswith(text, start)
    return np.where(risky, np.char.add("'", text), text)


def precompute(
    store: BlobStore,
    config: Config,
    *,
    bundle: ModelBundle | None = None,
    data: CurrentData | None = None,
    force: bool = False,
) -> PrecomputeResult:
    """Every employee's top-k with the serving model and the current extracts.

    Idempotent: when the serving recommendations already come from the same model
    and data versions, nothing is computed (a trigger delivered twice costs a read).
    """
    model_version = bundle.version if bundle is not None else current_version(store)
    data = data or load_current_data(store, config)
    pointer, etag = read_pointer(store, RECOMMENDATIONS_POINTER)
    if (
        not force
        and pointer.get("model_version") == model_version
        and pointer.get("data_version") == data.version
    ):
        return PrecomputeResult("unchanged", pointer["version"], model_version, data.version)
    bundle = bundle or load_bundle(store, model_version)
    table, export = compute_recommendations(bundle, data.extracts, config)
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
    store.write(f"{prefix}/top.npz", table.to_bytes(), if_none_match=True)
    store.write(f"{prefix}/meta.json", json_bytes(meta), content_type="application/json")
    csv_bytes = export.to_csv(index=False).encode("utf-8")
    store.write(f"{prefix}/recommendations.csv", csv_bytes, content_type="text/csv")
    move_pointer(store, RECOMMENDATIONS_POINTER, meta, etag)
    log.info("precomputed %s for %d employees", version, len(table.user_ids))
    return PrecomputeResult("computed", version, model_version, data.version, len(table.user_ids))


def load_recommendations(store: BlobStore, version: str) -> RecommendationTable:
    try:
        npz = store.read(f"recommendations/{version}/top.npz")
        meta = store.read(f"recommendations/{version}/meta.json")
    except NotFoundError as exc:
        raise ModelLoadError(f"recommendations {version} are incomplete: {exc}") from None
    try:
        return RecommendationTable.from_bytes(npz, meta)
    except ModelLoadError as exc:
        where = f"recommendations/{version}/top.npz"
        raise ModelLoadError(f"{where}: {describe_damage(npz, exc)}") from None
