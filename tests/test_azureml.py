"""Azure ML registration, tested at the SDK boundary.

Azure itself is unreachable here (no network but the package registries), so a fake
``MLClient`` stands in for the workspace: it records the real
``azure.ai.ml.entities.Model`` that ``ml_client.models.create_or_update`` would send,
and a copy of the folder its ``path`` names, taken during the call (the staging folder
is deleted afterwards). Everything on our side of that call is real: the blob store
(``LocalFolderStore``), the ``Model`` entity, the settings and the markers.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from azure import identity as azure_identity
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from conftest import REPO
from marshmallow.warnings import Marshmallow4Warning

with warnings.catch_warnings():
    # azure-ai-ml's schemas use marshmallow 3 APIs that marshmallow deprecates for 4 (the
    # SDK pins marshmallow<4); hundreds of such warnings at import are not ours to fix.
    warnings.simplefilter("ignore", Marshmallow4Warning)
    from azure.ai import ml as azure_ml
    from azure.ai.ml.constants import AssetTypes
    from azure.ai.ml.entities import Model

from shared import azureml
from shared.azureml import (
    MAX_TAG_KEY,
    MAX_TAG_VALUE,
    MAX_TAGS,
    AzureMLSettings,
    RegistrationOutcome,
    azureml_version,
    make_client,
    register_pending,
    registrar,
    tags_for,
)
from shared.bundle import FORMAT_VERSION
from shared.errors import ConfigurationError
from shared.evaluation import EvaluationReport, Gate
from shared.metadata import Counts, ModelMetadata, Served, unevaluated
from shared.scoring import MODEL, ScorerSpec
from shared.settings import Config
from shared.storage import BlobStore, LocalFolderStore

V1 = "20261128T101500Z-3fa2c1"
V2 = "20261129T101500Z-9b0e44"
SETTINGS = AzureMLSettings(subscription_id="sub-id", resource_group="rg-reco", workspace="mlw-reco")
ARM = (
    "/subscriptions/sub-id/resourceGroups/rg-reco/providers/"
    "Microsoft.MachineLearningServices/workspaces/mlw-reco/models"
)


def metadata(version: str, *, gate: bool = True) -> ModelMetadata:
    """A bundle's model.json as shared.modeling writes it (small figures, no arrays)."""

    def scores(precision: float, recall: float, ndcg: float, auc: float, coverage: float) -> Any:
        return dict(precision=precision, recall=recall, ndcg=ndcg, auc=auc, coverage=coverage)

    config = Config.from_dict(
        {"model": {"learning_rate": 0.05, "item_alpha": 1e-06}, "evaluation": {"k": 10}}
    )
    base = unevaluated(version, ["level"], config)
    metrics = EvaluationReport(
        k=10,
        results={
            "known": {
                "served": scores(0.123456, 0.2, 0.31, 0.912345, 0.45),
                "popularity": scores(0.04, 0.06, 0.07, 0.8, 0.03),
                "department popularity": scores(0.05, 0.07, 0.08, 0.82, 0.1),
                "oracle": scores(0.3, 0.5, 0.6, 0.99, 0.5),
            },
            "cold-start": {
                "served": scores(0.38, 0.41, 0.5, 0.87, 0.2),
                "popularity": scores(0.14, 0.2, 0.25, 0.7, 0.03),
            },
        },
        counts={"known_employees_evaluated": 900},
    )
    popularity = ScorerSpec("popularity", 0.0, 1.0, 0.0)
    return base.model_copy(
        update={
            "created_at": "2026-11-29T10:15:00+00:00",
            "fingerprints": {
                "users": "ab12cd34ef",
                "trainings": "5678aa",
                "trainings-taken": "99ff00",
            },
            "counts": Counts(
                employees=1200,
                trainings=340,
                interactions=15230,
                employees_with_history=1100,
                user_features=40,
                item_features=350,
            ),
            "metrics": metrics,
            "serving": {
                "known": Served(choice="model", scorer=MODEL),
                "cold-start": Served(choice="popularity", scorer=popularity),
            },
            "gate": Gate(
                decision="accepted",
                checks=["pass: known: precision@10 0.1235 vs popularity 0.0400"],
                compared_with="20261127T101500Z-000000",
                tolerance=0.05,
            )
            if gate
            else None,
        }
    )


def write_version(store: BlobStore, version: str, **options: Any) -> dict[str, bytes]:
    """Write a fake published version; return its blobs by name."""
    blobs = {
        "model.npz": b"PK\x03\x04 not really a zip " + version.encode() + bytes(range(256)),
        "model.json": metadata(version, **options)
        .model_copy(update={"format_version": FORMAT_VERSION})
        .model_dump_json()
        .encode(),
        "card.json": json.dumps({"version": version, "headline": "p@10 0.12"}).encode(),
    }
    for name, data in blobs.items():
        store.write(f"models/{version}/{name}", data)
    return blobs


@dataclass
class Sent:
    """One create_or_update call: the asset and its folder's files at that moment."""

    model: Model
    files: dict[str, bytes]

    @property
    def bundle_version(self) -> str:
        return str((self.model.tags or {})["bundle_version"])


@dataclass
class FakeModels:
    """``MLClient.models``: records what would be sent, fails on request."""

    fail: dict[str, Exception] = field(default_factory=dict)  # bundle version -> error
    sent: list[Sent] = field(default_factory=list)

    def create_or_update(self, model: Model) -> Model:
        assert model.path is not None
        root = Path(model.path)
        files = {
            p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()
        }
        sent = Sent(model, files)
        self.sent.append(sent)
        error = self.fail.get(sent.bundle_version)
        if error is not None:
            raise error
        # What the service answers: the same asset, now with its ARM id.
        return Model(
            name=model.name,
            version=model.version,
            tags=model.tags,
            id=f"{ARM}/{model.name}/versions/{model.version}",
        )


@dataclass
class FakeFactory:
    """A ``client_factory`` that counts the clients it builds."""

    models: FakeModels = field(default_factory=FakeModels)
    built: list[AzureMLSettings] = field(default_factory=list)

    def __call__(self, settings: AzureMLSettings) -> Any:
        self.built.append(settings)
        return type("FakeMLClient", (), {"models": self.models})()


@pytest.fixture
def store(tmp_path: Path) -> LocalFolderStore:
    return LocalFolderStore(tmp_path / "blobs")


def marker(store: BlobStore, version: str) -> dict[str, Any] | None:
    path = f"models/{version}/registration.json"
    return json.loads(store.read(path)) if store.exists(path) else None


# --- registration --------------------------------------------------------------------


def test_registers_a_real_model_asset_with_the_bundle_files_and_tags(
    store: LocalFolderStore,
) -> None:
    blobs = write_version(store, V2)
    factory = FakeFactory()

    outcomes = register_pending(store, [V2], SETTINGS, factory)

    assert len(factory.models.sent) == 1
    sent = factory.models.sent[0]
    model = sent.model
    assert isinstance(model, Model)
    assert model.name == "training-recommender"
    assert model.version == azureml_version(V2) == "218110500"
    assert model.type == AssetTypes.CUSTOM_MODEL == "custom_model"
    assert sent.files == blobs  # the whole version folder, byte for byte
    assert Path(str(model.path)).name == V2  # a stable folder name: stable upload path
    assert not Path(str(model.path)).exists()  # staging is cleaned up
    assert V2 in str(model.description)
    assert model.tags == {
        "bundle_version": V2,
        "created_at": "2026-11-29T10:15:00+00:00",
        "gate.decision": "accepted",
        "gate.compared_with": "20261127T101500Z-000000",
        "gate.tolerance": "0.05",
        "gate.reasons": "none",
        "served.known": "model",
        "served.cold-start": "popularity",
        "metric.known.precision@10": "0.1235",
        "metric.known.recall@10": "0.2000",
        "metric.known.ndcg@10": "0.3100",
        "metric.known.auc": "0.9123",
        "metric.known.coverage": "0.4500",
        "metric.known.popularity.precision@10": "0.0400",
        "metric.known.department_popularity.precision@10": "0.0500",
        "metric.known.oracle.precision@10": "0.3000",
        "metric.cold-start.precision@10": "0.3800",
        "metric.cold-start.recall@10": "0.4100",
        "metric.cold-start.ndcg@10": "0.5000",
        "metric.cold-start.auc": "0.8700",
        "metric.cold-start.coverage": "0.2000",
        "metric.cold-start.popularity.precision@10": "0.1400",
        "data.users": "ab12cd34ef",
        "data.trainings": "5678aa",
        "data.trainings-taken": "99ff00",
        "count.employees": "1200",
        "count.trainings": "340",
        "count.interactions": "15230",
        "count.signals": "0",
        "count.employees_with_history": "1100",
        "count.user_features": "40",
        "count.item_features": "350",
        # every hyperparameter the version was trained with
        "hp.no_components": "64",
        "hp.loss": "warp",
        "hp.learning_rate": "0.05",
        "hp.learning_schedule": "adagrad",
        "hp.item_alpha": "1e-06",
        "hp.user_alpha": "0.0",
        "hp.max_sampled": "10",
        "hp.epochs": "60",
        "hp.random_state": "42",
        "hp.num_threads": "2",
        "hp.use_weights": "false",
        "hp.early_stopping": "true",
        "hp.min_epochs": "5",
        "hp.patience": "5",
        "hp.validation_share": "0.15",
    }
    # The body the SDK would PUT to .../models/training-recommender/versions/218110500.
    body = model._to_rest_object().as_dict()["properties"]
    assert body["modelType"] == "custom_model"
    assert body["tags"] == model.tags
    asset_id = f"{ARM}/training-recommender/versions/218110500"
    assert outcomes == [RegistrationOutcome(V2, "registered", asset_id)]
    record = marker(store, V2)
    assert record is not None
    assert record.pop("registered_at")
    assert record == {
        "asset_id": asset_id,
        "name": "training-recommender",
        "version": "218110500",
        "bundle_version": V2,
        "workspace": "mlw-reco",
    }


def test_a_second_call_finds_the_markers_and_builds_no_client(store: LocalFolderStore) -> None:
    write_version(store, V1)
    write_version(store, V2)
    first = FakeFactory()
    assert [o.status for o in register_pending(store, [V1, V2], SETTINGS, first)] == [
        "registered",
        "registered",
    ]
    assert len(first.built) == 1  # one client for the whole call

    second = FakeFactory()
    outcomes = register_pending(store, [V1, V2], SETTINGS, second)

    assert [(o.version, o.status) for o in outcomes] == [
        (V1, "already-registered"),
        (V2, "already-registered"),
    ]
    assert second.built == []
    assert second.models.sent == []


def test_without_settings_nothing_is_built_and_one_line_is_logged(
    store: LocalFolderStore, caplog: pytest.LogCaptureFixture
) -> None:
    write_version(store, V1)
    factory = FakeFactory()
    caplog.set_level(logging.DEBUG, logger="shared.azureml")

    assert register_pending(store, [V1], None, factory) == []

    assert factory.built == []
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (
            logging.INFO,
            "Azure ML registration skipped: no workspace configured (AZURE_ML_WORKSPACE,"
            " AZURE_ML_SUBSCRIPTION_ID and AZURE_ML_RESOURCE_GROUP are not set)",
        )
    ]
    assert marker(store, V1) is None


@pytest.mark.parametrize(
    "error",
    [
        HttpResponseError(message="(UserError) Model version must be a positive integer.\nCode: X"),
        ClientAuthenticationError(message="DefaultAzureCredential failed to retrieve a token"),
        ConnectionResetError("connection reset by peer"),
    ],
    ids=["http", "auth", "network"],
)
def test_a_failed_version_is_reported_and_retried_on_the_next_call(
    store: LocalFolderStore, caplog: pytest.LogCaptureFixture, error: Exception
) -> None:
    write_version(store, V1)
    write_version(store, V2)
    factory = FakeFactory(FakeModels(fail={V1: error}))

    outcomes = register_pending(store, [V1, V2], SETTINGS, factory)  # raises nothing

    assert [(o.version, o.status) for o in outcomes] == [(V1, "failed"), (V2, "registered")]
    first_line = str(error).splitlines()[0]
    assert first_line in outcomes[0].detail
    assert type(error).__name__ in outcomes[0].detail
    assert "\n" not in outcomes[0].detail
    assert marker(store, V1) is None
    assert marker(store, V2) is not None
    failures = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(failures) == 1
    assert V1 in failures[0].getMessage()
    assert first_line in failures[0].getMessage()

    retry = FakeFactory()
    outcomes = register_pending(store, [V1, V2], SETTINGS, retry)

    assert [(o.version, o.status) for o in outcomes] == [
        (V1, "registered"),
        (V2, "already-registered"),
    ]
    assert [s.bundle_version for s in retry.models.sent] == [V1]
    assert marker(store, V1) is not None


def test_a_client_that_cannot_be_built_fails_each_pending_version_once(
    store: LocalFolderStore,
) -> None:
    write_version(store, V1)
    write_version(store, V2)
    calls: list[AzureMLSettings] = []

    def broken(settings: AzureMLSettings) -> Any:
        calls.append(settings)
        raise ImportError("No module named 'azure.ai.ml'")

    outcomes = register_pending(store, [V1, V2], SETTINGS, broken)

    assert [o.status for o in outcomes] == ["failed", "failed"]
    assert all("No module named 'azure.ai.ml'" in o.detail for o in outcomes)
    assert len(calls) == 1
    assert marker(store, V1) is None
    assert marker(store, V2) is None


@pytest.mark.parametrize(
    ("prepare", "message"),
    [
        (lambda s: s.delete(f"models/{V1}/model.json"), "model.json: missing"),
        (lambda s: None, "cannot be mapped"),
    ],
    ids=["no-metadata", "bad-version"],
)
def test_a_broken_version_fails_alone(
    store: LocalFolderStore, prepare: Callable[[BlobStore], None], message: str
) -> None:
    version = V1 if message != "cannot be mapped" else "handmade"
    write_version(store, version)
    write_version(store, V2)
    prepare(store)
    factory = FakeFactory()

    outcomes = register_pending(store, [version, V2], SETTINGS, factory)

    assert [o.status for o in outcomes] == ["failed", "registered"]
    assert message in outcomes[0].detail
    assert [s.bundle_version for s in factory.models.sent] == [V2]


def test_the_marker_name_is_the_one_the_registry_lists() -> None:
    from shared.registry import REGISTRATION

    assert azureml.REGISTRATION_BLOB == REGISTRATION


# --- versions and tags ---------------------------------------------------------------


def test_azure_ml_versions_are_positive_integers_that_grow_with_time() -> None:
    versions = [
        "20200101T000001Z-aaaaaa",
        "20261129T101500Z-3fa2c1",
        "20261129T101501Z-000000",
        "20880119T031407Z-ffffff",
    ]
    mapped = [azureml_version(v) for v in versions]
    assert mapped == ["1", "218110500", "218110501", str(2**31 - 1)]
    assert azureml_version("20261129T101500Z-other1") == "218110500"  # deterministic


@pytest.mark.parametrize(
    "version",
    [
        "",
        "latest",
        "20261129T101500Z",
        "2026-11-29T10:15:00Z-3fa2c1",
        "20200101T000000Z-a",
        "20880119T031408Z-a",
    ],
)
def test_versions_azure_ml_cannot_take_are_refused(version: str) -> None:
    with pytest.raises(ValueError, match="Azure ML"):
        azureml_version(version)


def test_tags_are_strings_within_the_limits(caplog: pytest.LogCaptureFixture) -> None:
    meta = metadata(V1)
    assert meta.gate is not None and meta.metrics is not None
    meta.gate.reasons = ["known: precision@10 too low " * 20] * 10
    crowded = {f"scorer {i} " + "x" * 120: {"precision": 0.01 * i} for i in range(40)}
    meta.metrics.results["known"].update(crowded)

    tags = tags_for(meta)

    assert len(tags) == MAX_TAGS
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items())
    assert max(len(k) for k in tags) <= MAX_TAG_KEY
    assert max(len(v) for v in tags.values()) <= MAX_TAG_VALUE
    assert tags["gate.reasons"].endswith("…")
    # The most useful tags come first and survive; the overflow is hyperparameters.
    assert tags["metric.known.precision@10"] == "0.1235"
    assert tags["served.cold-start"] == "popularity"
    assert not any(k.startswith("hp.") for k in tags)
    assert "dropped" in caplog.text
    assert "hp.no_components" in caplog.text


def test_tags_of_a_bundle_without_gate_or_metrics() -> None:
    meta = metadata(V1, gate=False).model_copy(update={"metrics": None})

    tags = tags_for(meta)

    assert not any(k.startswith(("gate.", "metric.")) for k in tags)
    assert tags["bundle_version"] == V1
    assert tags["hp.no_components"] == "64"


# --- settings and client -------------------------------------------------------------

FULL = {
    "AZURE_ML_SUBSCRIPTION_ID": "00000000-1111-2222-3333-444444444444",
    "AZURE_ML_RESOURCE_GROUP": "rg-reco",
    "AZURE_ML_WORKSPACE": "mlw-reco",
}


def test_no_setting_turns_registration_off() -> None:
    assert AzureMLSettings.from_environ({}) is None
    assert AzureMLSettings.from_environ({"AZURE_ML_WORKSPACE": "  ", "OTHER": "x"}) is None


@pytest.mark.parametrize(
    ("environ", "missing"),
    [
        (
            {"AZURE_ML_WORKSPACE": "mlw-reco"},
            ["AZURE_ML_SUBSCRIPTION_ID", "AZURE_ML_RESOURCE_GROUP"],
        ),
        ({**FULL, "AZURE_ML_RESOURCE_GROUP": ""}, ["AZURE_ML_RESOURCE_GROUP"]),
        ({"AZURE_ML_CLIENT_ID": "cid"}, list(FULL)),
    ],
)
def test_partial_settings_name_the_missing_ones(
    environ: Mapping[str, str], missing: list[str]
) -> None:
    with pytest.raises(ConfigurationError) as info:
        AzureMLSettings.from_environ(environ)
    assert f"but {', '.join(missing)} missing" in str(info.value)


def test_full_settings_are_read() -> None:
    assert AzureMLSettings.from_environ(FULL) == AzureMLSettings(
        "00000000-1111-2222-3333-444444444444", "rg-reco", "mlw-reco"
    )
    options = {**FULL, "AZURE_ML_MODEL_NAME": "reco_v2", "AZURE_ML_CLIENT_ID": " cid "}
    settings = AzureMLSettings.from_environ(options)
    assert settings is not None
    assert (settings.model_name, settings.client_id) == ("reco_v2", "cid")


def test_an_invalid_model_name_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="AZURE_ML_MODEL_NAME"):
        AzureMLSettings.from_environ({**FULL, "AZURE_ML_MODEL_NAME": "training recommender"})


@pytest.mark.parametrize("client_id", [None, "11111111-2222-3333-4444-555555555555"])
def test_make_client_builds_an_ml_client_with_default_azure_credential(
    monkeypatch: pytest.MonkeyPatch, client_id: str | None
) -> None:
    credentials: list[dict[str, Any]] = []
    clients: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    class Credential:
        def __init__(self, **kwargs: Any) -> None:
            credentials.append(kwargs)

    class Client:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            clients.append((args, kwargs))

    monkeypatch.setattr(azure_identity, "DefaultAzureCredential", Credential)
    monkeypatch.setattr(azure_ml, "MLClient", Client)
    environ = {**FULL, **({"AZURE_ML_CLIENT_ID": client_id} if client_id else {})}
    settings = AzureMLSettings.from_environ(environ)
    assert settings is not None

    client = make_client(settings)

    assert isinstance(client, Client)
    # No managed_identity_client_id=None: it would shadow AZURE_CLIENT_ID.
    assert credentials == [{"managed_identity_client_id": client_id} if client_id else {}]
    [(args, kwargs)] = clients
    assert len(args) == 1
    assert isinstance(args[0], Credential)
    assert kwargs == {
        "subscription_id": FULL["AZURE_ML_SUBSCRIPTION_ID"],
        "resource_group_name": "rg-reco",
        "workspace_name": "mlw-reco",
        "show_progress": False,
    }


def test_make_client_builds_a_real_ml_client_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    class NoToken:
        def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
            raise AssertionError("building the client must not ask for a token")

    monkeypatch.setattr(azure_identity, "DefaultAzureCredential", lambda **_: NoToken())

    client = make_client(SETTINGS)

    assert isinstance(client, azure_ml.MLClient)
    assert (client.subscription_id, client.resource_group_name, client.workspace_name) == (
        "sub-id",
        "rg-reco",
        "mlw-reco",
    )


def test_importing_the_module_does_not_import_the_azure_ml_sdk() -> None:
    code = (
        "import shared.azureml, sys;"
        "assert 'azure.ai.ml' not in sys.modules, 'azure.ai.ml imported';"
        "assert 'azure.identity' not in sys.modules, 'azure.identity imported'"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)


# --- through retrain ---------------------------------------------------------------------


def test_retrain_registers_what_it_publishes_through_the_app_settings(tmp_path: Path) -> None:
    from world import drop_all, small_config, small_data

    from shared.pipeline import retrain

    store, config = LocalFolderStore(tmp_path / "blobs"), small_config()
    drop_all(store, small_data(), config)
    factory = FakeFactory()
    result = retrain(store, config, registrar=registrar(FULL, factory))
    assert result.status == "published"
    assert [r["version"] for r in result.registrations] == [result.version]
    assert result.registrations[0]["status"] == "registered"
    assert marker(store, str(result.version)) is not None
    # Incomplete settings: reported, and the version still published.
    again = retrain(store, config, registrar=registrar({"AZURE_ML_WORKSPACE": "w"}, factory))
    assert again.status == "published"
    assert again.registrations[0]["status"] == "failed"
    assert "AZURE_ML_SUBSCRIPTION_ID" in again.registrations[0]["detail"]
    # None configured: nothing attempted, nothing built.
    built = len(factory.built)
    assert retrain(store, config, registrar=registrar({}, factory)).registrations == []
    assert len(factory.built) == built
