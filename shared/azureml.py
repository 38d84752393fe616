"""Registration of published model versions in Azure Machine Learning.

Uses the Azure ML Python SDK v2, ``azure-ai-ml`` (``MLClient``, ``Model``), only:
``azureml-core`` (SDK v1) is past its end of support (30 June 2026) and must not come
back. Registration is optional and never on the serving path: blob storage holds
what serving reads, and the model registry is a catalogue for people (Studio) and
for later deployment tooling.

Each version folder ``models/<version>/`` (``model.npz``, ``model.json``, ``card.json``,
``card.html``) is uploaded as one ``custom_model`` asset. A registered version gets a
marker blob ``models/<version>/registration.json``; a version without it is
registered on the next run, so a failed run (Azure down, missing role) heals itself.

Azure ML model versions must be positive integers (bundle versions such as
``20261129T101500Z-3fa2c1`` are refused), so the Azure ML version is derived from the
bundle version's timestamp (:func:`azureml_version`) and the bundle version is kept in
the ``bundle_version`` tag.

``azure.ai.ml`` takes over a second to import and ``azure.identity`` is not free
either: both are imported inside the functions that need them, never at module import
(the Functions host imports the app on every cold start).
"""

from __future__ import annotations

import json
import logging
import math
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from shared.bundle import metadata_from_json
from shared.errors import ConfigurationError, ModelLoadError, TrainingRecommenderError
from shared.evaluation import EvaluationReport
from shared.metadata import ModelMetadata
from shared.storage import BlobStore

_LOG = logging.getLogger(__name__)

# Same name as shared.registry.REGISTRATION (asserted in the tests); not imported from
# there because registry pulls numpy and scipy in through shared.bundle.
REGISTRATION_BLOB = "registration.json"
METADATA_BLOB = "model.json"
DEFAULT_MODEL_NAME = "training-recommender"

_SETTINGS = {
    "subscription_id": "AZURE_ML_SUBSCRIPTION_ID",
    "resource_group": "AZURE_ML_RESOURCE_GROUP",
    "workspace": "AZURE_ML_WORKSPACE",
}
_OPTIONAL_SETTINGS = {"model_name": "AZURE_ML_MODEL_NAME", "client_id": "AZURE_ML_CLIENT_ID"}

# The ARM pattern of a model container name (Microsoft.MachineLearningServices
# workspaces/models): checked here so a typo fails at start-up, not at 2 a.m.
_MODEL_NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9\-_]{0,254}")
_BUNDLE_VERSION_RE = re.compile(r"(?P<stamp>\d{8}T\d{6}Z)-[0-9A-Za-z-]+")
# Azure ML version = seconds since this instant. Seconds keep two bundles made a
# minute apart distinct; the 2020 origin keeps the number within a signed 32-bit
# integer until 2088 (the service's exact integer range is not documented).
_VERSION_ORIGIN = datetime(2020, 1, 1, tzinfo=UTC)
_MAX_VERSION = 2**31 - 1

# Azure ML documents no tag limits for models; these are the strictest it documents
# for its other tagged entities (runs: 50 tags, keys of 100, values of 1,000 characters).
MAX_TAGS = 50
MAX_TAG_KEY = 100
MAX_TAG_VALUE = 1000
# Tag keys stay within letters, digits and . _ - @ (spaces in scorer names become _).
_TAG_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9._@-]+")
_SERVED = ("served", "hybrid model")  # the row of what is served ("hybrid model": older)
_MAX_DETAIL = 1000


@dataclass(frozen=True)
class AzureMLSettings:
    """Where to register models: an Azure ML workspace and the model's name in it.

    Attributes
    ----------
    subscription_id, resource_group, workspace : str
        The workspace (app settings ``AZURE_ML_SUBSCRIPTION_ID``,
        ``AZURE_ML_RESOURCE_GROUP``, ``AZURE_ML_WORKSPACE``).
    model_name : str
        The registered model's name (``AZURE_ML_MODEL_NAME``); each bundle is a version.
    client_id : str or None
        Client id of a user-assigned managed identity (``AZURE_ML_CLIENT_ID``); None
        uses ``DefaultAzureCredential``'s own choice (system-assigned identity,
        ``AZURE_CLIENT_ID``, a developer's ``az login``...).
    """

    subscription_id: str
    resource_group: str
    workspace: str
    model_name: str = DEFAULT_MODEL_NAME
    client_id: str | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> AzureMLSettings | None:
        """Read the ``AZURE_ML_*`` app settings.

        Parameters
        ----------
        environ : Mapping[str, str]
            The app settings (read once by :class:`shared.appsettings.AppSettings`).
            Blank values count as unset.

        Returns
        -------
        AzureMLSettings or None
            None when no ``AZURE_ML_*`` setting is set: registration is off.

        Raises
        ------
        ConfigurationError
            Some settings are set but not all three of subscription, resource group and
            workspace (the message names the missing ones), or the model name is invalid.
        """
        env = environ
        names = {**_SETTINGS, **_OPTIONAL_SETTINGS}
        values = {field: env.get(name, "").strip() for field, name in names.items()}
        if not any(values.values()):
            return None
        missing = [name for field, name in _SETTINGS.items() if not values[field]]
        if missing:
            given = ", ".join(name for field, name in names.items() if values[field])
            raise ConfigurationError(
                f"Azure ML registration is half configured: {given} set but"
                f" {', '.join(missing)} missing; set all of {', '.join(_SETTINGS.values())}"
                " (or none, to turn registration off)"
            )
        model_name = values["model_name"] or DEFAULT_MODEL_NAME
        if not _MODEL_NAME_RE.fullmatch(model_name):
            raise ConfigurationError(
                f"setting AZURE_ML_MODEL_NAME={model_name!r} is not a valid Azure ML model"
                " name: 1-255 letters, digits, '-' or '_', starting with a letter or digit"
            )
        return cls(
            subscription_id=values["subscription_id"],
            resource_group=values["resource_group"],
            workspace=values["workspace"],
            model_name=model_name,
            client_id=values["client_id"] or None,
        )


def make_client(settings: AzureMLSettings) -> Any:
    """Build an ``azure.ai.ml.MLClient`` for the workspace, authenticated by Entra ID.

    Parameters
    ----------
    settings : AzureMLSettings
        The workspace; ``client_id`` picks a user-assigned managed identity.

    Returns
    -------
    azure.ai.ml.MLClient
        No request is made yet: credentials are tried on the first call.
    """
    from azure.ai.ml import MLClient
    from azure.identity import DefaultAzureCredential

    # Not passing managed_identity_client_id=None: that would override
    # DefaultAzureCredential's own AZURE_CLIENT_ID fallback.
    credential = (
        DefaultAzureCredential(managed_identity_client_id=settings.client_id)
        if settings.client_id
        else DefaultAzureCredential()
    )
    return MLClient(
        credential,
        subscription_id=settings.subscription_id,
        resource_group_name=settings.resource_group,
        workspace_name=settings.workspace,
        # Progress bars are for terminals; in the Functions log they are noise.
        show_progress=False,
    )


def azureml_version(bundle_version: str) -> str:
    """The Azure ML model version of a bundle version: seconds since 2020-01-01 UTC.

    ``20261129T101500Z-3fa2c1`` becomes ``"218110500"``. Deterministic, so a retry
    after a lost marker targets the same Azure ML version instead of adding one, and
    increasing with time, so Azure ML's "latest" is the newest bundle.

    Parameters
    ----------
    bundle_version : str
        A version made by ``shared.bundle.new_version``.

    Returns
    -------
    str
        A positive integer, as Azure ML requires of model versions.

    Raises
    ------
    ValueError
        The version does not start with a ``YYYYMMDDTHHMMSSZ`` timestamp after 2020.
    """
    match = _BUNDLE_VERSION_RE.fullmatch(bundle_version)
    if match is None:
        raise ValueError(
            f"bundle version {bundle_version!r} cannot be mapped to an Azure ML model"
            " version: expected 'YYYYMMDDTHHMMSSZ-<suffix>'"
        )
    stamp = datetime.strptime(match["stamp"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    seconds = int((stamp - _VERSION_ORIGIN).total_seconds())
    if not 1 <= seconds <= _MAX_VERSION:
        raise ValueError(
            f"bundle version {bundle_version!r} is outside the Azure ML version range"
            f" ({_VERSION_ORIGIN:%Y-%m-%d} to 2088)"
        )
    return str(seconds)


def _text(value: Any) -> str:
    # Tag values must be strings; JSON spelling keeps them unambiguous (true, null).
    if isinstance(value, str):
        return value
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return "; ".join(value) if value else "none"
    return json.dumps(value, sort_keys=True, default=str)


def _metric(value: Any) -> str:
    # Four decimals are what the model card and `models list` show.
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "nan" if math.isnan(value) else f"{value:.4f}"
    return _text(value)


def _key(*parts: str) -> str:
    return ".".join(_TAG_KEY_UNSAFE.sub("_", part.strip()) for part in parts)[:MAX_TAG_KEY]


def _clip(value: str) -> str:
    return value if len(value) <= MAX_TAG_VALUE else value[: MAX_TAG_VALUE - 1] + "…"


def _metric_label(name: str, k: int | None) -> str:
    # precision, recall and ndcg are "at k"; auc and coverage are over the whole list.
    return f"{name}@{k}" if k is not None and name in {"precision", "recall", "ndcg"} else name


def tags_for(metadata: ModelMetadata) -> dict[str, str]:
    """Azure ML tags of a bundle, from its ``model.json`` metadata.

    Keys, in order of importance (the least important are dropped past ``MAX_TAGS``):
    ``bundle_version``, ``created_at``; ``gate.decision``, ``gate.compared_with``,
    ``gate.tolerance``, ``gate.reasons``; ``served.<population>``, the scorer serving
    it; ``metric.<population>.<metric>[@k]`` for what is served and
    ``metric.<population>.<scorer>.precision@k`` for every other scorer (the model
    alone, the baselines); ``data.<extract>`` fingerprints; ``count.<name>``;
    ``hp.<hyperparameter>``.

    Parameters
    ----------
    metadata : ModelMetadata
        A bundle's metadata; a version without a gate or metrics gets no such tags.

    Returns
    -------
    dict[str, str]
        At most ``MAX_TAGS`` tags, keys of at most ``MAX_TAG_KEY`` characters and
        string values of at most ``MAX_TAG_VALUE`` (longer ones end with "…").
    """
    tags: dict[str, str] = {}

    def put(key: str, value: str) -> None:
        tags.setdefault(key, _clip(value))

    put("bundle_version", metadata.version)
    put("created_at", metadata.created_at)
    if metadata.gate is not None:
        gate = metadata.gate
        put(_key("gate", "decision"), gate.decision)
        if gate.compared_with is not None:
            put(_key("gate", "compared_with"), gate.compared_with)
        if gate.tolerance is not None:
            put(_key("gate", "tolerance"), _text(gate.tolerance))
        put(_key("gate", "reasons"), _text(gate.reasons))
    for population, served in metadata.serving.items():
        put(_key("served", population), served.scorer.name)
    if metadata.metrics is not None:
        _metric_tags(metadata.metrics, put)
    for extract, fingerprint in metadata.fingerprints.items():
        put(_key("data", extract), fingerprint)
    for name, count in metadata.counts.model_dump(exclude_none=True).items():
        put(_key("count", name), _text(count))
    for name, value in metadata.config.model.model_dump(mode="json").items():
        put(_key("hp", name), _text(value))

    if len(tags) > MAX_TAGS:
        dropped = list(tags)[MAX_TAGS:]
        _LOG.warning(
            "Azure ML tags of %s: %d over the limit of %d, dropped: %s",
            metadata.version,
            len(dropped),
            MAX_TAGS,
            ", ".join(dropped),
        )
        tags = dict(list(tags.items())[:MAX_TAGS])
    return tags


@dataclass(frozen=True)
class RegistrationOutcome:
    """What happened to one version.

    Attributes
    ----------
    version : str
        The bundle version.
    status : str
        ``"registered"``, ``"already-registered"`` (its marker exists) or ``"failed"``.
    detail : str
        The Azure ML asset id, or the error message.
    """

    version: str
    status: str
    detail: str


class _NoClientError(Exception):
    """The client could not be built; raised again for every version that needs it."""


def _metric_tags(metrics: EvaluationReport, put: Callable[[str, str], None]) -> None:
    """What is served, every metric; every other scorer, its precision."""
    for population, scorers in metrics.results.items():
        main = next((scorers[row] for row in _SERVED if row in scorers), {})
        for name, value in main.items():
            put(_key("metric", population, _metric_label(name, metrics.k)), _metric(value))
        for scorer, values in scorers.items():
            if scorer not in _SERVED and "precision" in values:
                label = _metric_label("precision", metrics.k)
                put(_key("metric", population, scorer, label), _metric(values["precision"]))


def _one_line(exc: BaseException) -> str:
    # SDK messages span lines (HTTP body, every credential tried); outcomes travel in
    # JSON results and log lines, so squeeze and bound them.
    text = " ".join(str(exc).split()) or "(no message)"
    text = f"{type(exc).__name__}: {text}"
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 1] + "…"


def _stage(store: BlobStore, prefix: str, folder: Path) -> ModelMetadata:
    """Copy a version's blobs (not its marker) into ``folder``; return its metadata."""
    marker = prefix + REGISTRATION_BLOB
    names = [info.path for info in store.list(prefix) if info.path != marker]
    if prefix + METADATA_BLOB not in names:
        raise ModelLoadError(f"{prefix}{METADATA_BLOB}: missing, so there is nothing to register")
    metadata: ModelMetadata | None = None
    for path in names:
        relative = PurePosixPath(path[len(prefix) :])
        if any(part in ("", ".", "..") for part in relative.parts):
            raise ModelLoadError(f"{path}: blob name would leave the staging folder")
        data = store.read(path)
        target = folder.joinpath(*relative.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        if path == prefix + METADATA_BLOB:
            metadata = metadata_from_json(data)
    assert metadata is not None  # model.json is among the names, checked above
    return metadata


def _register(store: BlobStore, client: Any, settings: AzureMLSettings, version: str) -> str:
    """Upload one version as a model asset, then write its marker; returns the asset id."""
    from azure.ai.ml.constants import AssetTypes
    from azure.ai.ml.entities import Model

    prefix = f"models/{version}/"
    target_version = azureml_version(version)
    with tempfile.TemporaryDirectory(prefix="azureml-") as tmp:
        # The SDK uploads to LocalUpload/<content hash>/<folder name>: naming the folder
        # after the version (not the random temp name) makes a retry produce the same
        # asset path, so re-registering an already created version is an idempotent PUT.
        folder = Path(tmp) / version
        folder.mkdir()
        metadata = _stage(store, prefix, folder)
        gate = metadata.gate.decision if metadata.gate else "no gate"
        model = Model(
            path=folder,
            type=AssetTypes.CUSTOM_MODEL,
            name=settings.model_name,
            version=target_version,
            description=(
                f"Hybrid LightFM training recommender, bundle {version}"
                f" (created {metadata.created_at}, gate: {gate})."
                f" Blob storage: {prefix}"
            ),
            tags=tags_for(metadata.model_copy(update={"version": version})),
        )
        registered = client.models.create_or_update(model)
    asset_id = str(getattr(registered, "id", None) or f"azureml:{model.name}:{model.version}")
    record = {
        "asset_id": asset_id,
        "name": settings.model_name,
        "version": target_version,
        "bundle_version": version,
        "registered_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "workspace": settings.workspace,
    }
    store.write(
        prefix + REGISTRATION_BLOB,
        json.dumps(record, indent=2, sort_keys=True).encode(),
        content_type="application/json",
    )
    return asset_id


def register_pending(
    store: BlobStore,
    versions: Sequence[str],
    settings: AzureMLSettings | None,
    client_factory: Callable[[AzureMLSettings], Any] = make_client,
) -> list[RegistrationOutcome]:
    """Register in Azure ML each version that has no registration marker yet.

    Never raises for a version: an error (authentication, network, HTTP, a broken
    bundle) is logged with the version, reported as ``"failed"``, and the next version
    is tried. A failed version gets no marker, so the next call registers it.

    Parameters
    ----------
    store : BlobStore
        Where ``models/<version>/`` folders are.
    versions : Sequence[str]
        Bundle versions to register, in this order.
    settings : AzureMLSettings or None
        The workspace; None (registration not configured) logs one info line and
        returns ``[]``, without touching the store or Azure.
    client_factory : callable
        Builds the client from the settings, at most once per call and only when
        some version is not registered yet. Defaults to :func:`make_client`.

    Returns
    -------
    list[RegistrationOutcome]
        One per version, in order.
    """
    if settings is None:
        _LOG.info(
            "Azure ML registration skipped: no workspace configured (AZURE_ML_WORKSPACE,"
            " AZURE_ML_SUBSCRIPTION_ID and AZURE_ML_RESOURCE_GROUP are not set)"
        )
        return []
    client: Any = None
    client_error: str | None = None
    outcomes: list[RegistrationOutcome] = []
    for version in versions:
        try:
            if store.exists(f"models/{version}/{REGISTRATION_BLOB}"):
                outcomes.append(RegistrationOutcome(version, "already-registered", ""))
                continue
            azureml_version(version)  # a version Azure cannot take needs no client
            if client is None:
                if client_error is None:
                    try:
                        client = client_factory(settings)
                    except Exception as exc:
                        # A broken client (SDK missing, bad credential setup) would fail
                        # every version the same way: build it once, report it for each.
                        client_error = f"no Azure ML client: {_one_line(exc)}"
                if client_error is not None:
                    raise _NoClientError(client_error)
            asset_id = _register(store, client, settings, version)
        except Exception as exc:
            # Broad on purpose: registration is a side catalogue and must never fail
            # the retrain that published the model; the missing marker retries it.
            detail = str(exc) if isinstance(exc, _NoClientError) else _one_line(exc)
            _LOG.error("Azure ML registration of model %s failed: %s", version, detail)
            _LOG.debug("Azure ML registration of model %s failed", version, exc_info=exc)
            outcomes.append(RegistrationOutcome(version, "failed", detail))
            continue
        _LOG.info("model %s registered in Azure ML as %s", version, asset_id)
        outcomes.append(RegistrationOutcome(version, "registered", asset_id))
    return outcomes


def registrar(
    environ: Mapping[str, str], client_factory: Callable[[AzureMLSettings], Any] = make_client
) -> Callable[[BlobStore], list[dict[str, str]]]:
    """What ``retrain`` calls after publishing: register in Azure ML every published
    version not registered yet. Never raises: settings that are incomplete are reported
    as one failed registration, and the version still publishes."""
    try:
        settings = AzureMLSettings.from_environ(environ)
    except TrainingRecommenderError as exc:
        error = str(exc)

        def not_attempted(store: BlobStore) -> list[dict[str, str]]:
            _LOG.error("Azure ML registration not attempted: %s", error)
            return [{"version": "*", "status": "failed", "detail": error}]

        return not_attempted

    def register(store: BlobStore) -> list[dict[str, str]]:
        from shared.registry import list_versions

        pending = [
            v.version for v in list_versions(store) if v.status != "rejected" and not v.registered
        ]
        outcomes = register_pending(store, pending, settings, client_factory)
        return [dict(outcome.__dict__) for outcome in outcomes]

    return register
