"""Faults: storage lost mid-run, lost ETag races, duplicate triggers, a held lease, corrupt files.

Where storage is involved the faults are real: a dedicated Azurite process is stopped in
the middle of a retrain or a precompute and restarted on the same port and folder, or the
SDK's HTTP transport fails one chosen request. After each fault: the operation failed
loudly, the pointers did not move (or moved to a complete version), the API still answers
from the previous version, and the next run succeeds without any cleanup.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import pytest
from azure.core.exceptions import AzureError, ServiceRequestError
from azure.core.pipeline.transport import RequestsTransport
from fastapi.testclient import TestClient
from world import bound_blob, csv_bytes, drop, drop_all, small_config, small_data

import function_app
from shared import cli, runtime
from shared.api import create_app
from shared.bundle import NPZ_NAME, ModelBundle, new_version
from shared.errors import ModelLoadError, PreconditionFailedError, TrainingRecommenderError
from shared.layout import (
    EXTRACTS_POINTER,
    MODELS_POINTER,
    RECOMMENDATIONS_POINTER,
    RETRAIN_LOCK,
    move_pointer,
    read_pointer,
)
from shared.pipeline import PrecomputeResult, precompute, promote, retrain
from shared.registry import (
    current_version,
    load_bundle,
    load_recommendations,
    publish,
    write_version,
)
from shared.serving import load_snapshot
from shared.storage import AzureBlobStore, BlobStore, LocalFolderStore

CONFIG = small_config()
DATA = small_data()
POINTERS = (EXTRACTS_POINTER, MODELS_POINTER, RECOMMENDATIONS_POINTER)
KNOWN_EMPLOYEE = str(DATA.taken["User-Id"].iloc[0])
TRAINING = str(DATA.trainings["Training-Id"].iloc[0])
NEW_EMPLOYEE = {"ou": "development", "skills": ["python", "sql"], "language": "english"}
WAIT = 30.0  # seconds a thread waits for the other before the test fails instead of hanging

Pointers = dict[str, tuple[dict[str, Any], str | None]]


@pytest.fixture(autouse=True)
def plain_cards(monkeypatch: pytest.MonkeyPatch) -> None:
    # Rendering the model card (matplotlib) is most of a small retrain and no fault is in it.
    monkeypatch.setattr("shared.pipeline.render_card", lambda _: (b"{}", b"<html></html>"))


# --- a store that already serves --------------------------------------------------------


@pytest.fixture(scope="module")
def served_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local store with a published model and recommendations, trained once."""
    root = tmp_path_factory.mktemp("served") / "store"
    store = LocalFolderStore(root)
    drop_all(store, DATA, CONFIG)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("shared.pipeline.render_card", lambda _: (b"{}", b"<html></html>"))
        assert retrain(store, CONFIG).status == "published"
    return root


def clone(root: Path, target: BlobStore) -> BlobStore:
    """Copy the served state blob by blob (pointers hold paths and versions, not etags)."""
    source = LocalFolderStore(root)
    for container in ("extracts", "models", "recommendations"):
        for info in source.list(f"{container}/"):
            target.write(info.path, source.read(info.path))
    return target


@pytest.fixture
def served_azure(served_root: Path, azure_store: AzureBlobStore) -> AzureBlobStore:
    clone(served_root, azure_store)
    return azure_store


@pytest.fixture(scope="module")
def shared_azure(azurite: str, served_root: Path) -> Iterator[tuple[AzureBlobStore, str]]:
    """One served store for the tests whose failed runs must leave it as it was.

    Each of them compares with what it found, so the versions the successful reruns
    publish do not matter; sharing it saves a copy of the served state per test.
    """
    from azure.storage.blob import BlobServiceClient

    prefix = f"f{uuid.uuid4().hex[:8]}-"
    store = AzureBlobStore.from_connection_string(azurite, container_prefix=prefix)
    clone(served_root, store)
    yield store, prefix
    service = BlobServiceClient.from_connection_string(azurite, retry_total=0)
    for container in service.list_containers(name_starts_with=prefix):
        service.delete_container(container.name)


@pytest.fixture
def served_store(request: pytest.FixtureRequest, served_root: Path, tmp_path: Path) -> BlobStore:
    """A private served store, "local" or "azurite" (indirect parameter).

    Corrupted content is not a storage fault: most cases run on the (faster) local
    store, one per file on Azurite.
    """
    if request.param == "local":
        return LocalFolderStore(Path(shutil.copytree(served_root, tmp_path / "store")))
    return clone(served_root, request.getfixturevalue("azure_store"))


def pointers(store: BlobStore) -> Pointers:
    return {path: read_pointer(store, path) for path in POINTERS}


def client(store: BlobStore) -> TestClient:
    # A 500 must show up as a status, not as an exception raised into the test.
    return TestClient(create_app(store, CONFIG), raise_server_exceptions=False)


ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", f"/recommendations/{KNOWN_EMPLOYEE}", None),
    ("POST", "/recommendations", {"attributes": NEW_EMPLOYEE, "n": 5}),
    ("GET", f"/trainings/{TRAINING}/similar?n=5", None),
    ("GET", "/model", None),
]


def answers(api: TestClient) -> list[Any]:
    """What the intranet apps see: a known employee, a new one, similar trainings, the model."""
    found = []
    for method, path, body in ROUTES:
        response = api.request(method, path, json=body)
        assert response.status_code == 200, (path, response.status_code, response.text)
        found.append(response.json())
    return found


def served_version(api: TestClient) -> str:
    return str(answers(api)[0]["recommendations_version"])


def is_storage_error(exc: BaseException) -> bool:
    """An Azure SDK error, raised as is or as the cause of the project's own error."""
    chain: BaseException | None = exc
    while chain is not None:
        if isinstance(chain, AzureError):
            return True
        chain = chain.__cause__ or chain.__context__
    return False


class HookedStore:
    """Delegates to a real store; runs ``before_write(path)`` first, records what was written."""

    def __init__(self, inner: BlobStore, before_write: Callable[[str], None]) -> None:
        self.inner = inner
        self.before_write = before_write
        self.written: list[str] = []  # successful writes only

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def write(self, path: str, data: bytes, **kwargs: Any) -> str:
        self.before_write(path)
        etag = self.inner.write(path, data, **kwargs)
        self.written.append(path)
        return etag

    def copy(self, source: str, target: str, **kwargs: Any) -> str:
        self.before_write(target)
        etag = self.inner.copy(source, target, **kwargs)
        self.written.append(target)
        return etag


def meet_at(barrier: threading.Barrier, matches: Callable[[str], bool]) -> Callable[[str], None]:
    """A ``before_write`` hook: each thread waits at the barrier before its matching write."""

    def before_write(path: str) -> None:
        if matches(path):
            barrier.wait()

    return before_write


def with_newcomer(employee_id: str) -> bytes:
    """The users extract plus one employee: new data, hence a new recommendations version."""
    newcomer = DATA.users.iloc[[3]].assign(**{"User-Id": employee_id})
    return csv_bytes(pd.concat([DATA.users, newcomer]))


# --- storage stopped mid-run: a dedicated Azurite ----------------------------------------

AZURITE_ACCOUNT = "devstoreaccount1"
# Azurite's well-known development key: public and documented, not a secret.
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


class Emulator:
    """An Azurite process of this test's own, persisting to a folder so it can be restarted."""

    def __init__(self, folder: Path) -> None:
        self.binary = Path(__file__).resolve().parents[1] / "node_modules" / ".bin" / "azurite-blob"
        if os.environ.get("AZURITE_BIN"):
            self.binary = Path(os.environ["AZURITE_BIN"])
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port: int = sock.getsockname()[1]
        self.location = folder / "data"
        self.location.mkdir()
        self.log = folder / "azurite.log"
        self.process: subprocess.Popen[bytes] | None = None
        if not self.binary.is_file():
            pytest.fail(f"Azurite not found at {self.binary}: run `npm ci`", pytrace=False)

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
            f"AccountKey={AZURITE_KEY};BlobEndpoint=http://127.0.0.1:{self.port}/{AZURITE_ACCOUNT};"
        )

    def start(self) -> None:
        assert self.process is None, "already running"
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    str(self.binary),
                    "--skipApiVersionCheck",
                    "--loose",
                    "--disableTelemetry",
                    "--silent",
                    "--blobHost",
                    "127.0.0.1",
                    "--blobPort",
                    str(self.port),
                    # No --inMemoryPersistence: the blobs must survive a restart.
                    "--location",
                    str(self.location),
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 20
        while self.process.poll() is None and time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        pytest.fail(f"Azurite did not start on port {self.port}:\n{self.log.read_text()}")

    def stop(self) -> None:
        # SIGTERM, not SIGKILL: Azurite saves its blob metadata when it shuts down.
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    def store(self) -> AzureBlobStore:
        # Quick retries without waiting: the outage is meant to outlast them.
        return AzureBlobStore.from_connection_string(
            self.connection_string,
            retry_total=2,
            initial_backoff=0,
            increment_base=0,
            random_jitter_range=0,
        )


@pytest.fixture
def own_azurite(tmp_path: Path) -> Iterator[Emulator]:
    emulator = Emulator(tmp_path)
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()


def stop_on_first(emulator: Emulator, matches: Callable[[str], bool]) -> Callable[[str], None]:
    """A ``before_write`` hook that stops Azurite just before the first matching write."""

    def before_write(path: str) -> None:
        if matches(path) and emulator.process is not None:
            emulator.stop()

    return before_write


@pytest.mark.azurite
@pytest.mark.parametrize(
    ("operation", "stop_before"),
    [
        ("retrain", f"/{NPZ_NAME}"),  # the first write of the new model
        ("precompute", "/top.npz"),  # the first write of the new recommendations
    ],
)
def test_storage_stopped_mid_run_fails_loudly_and_the_next_run_needs_no_cleanup(
    own_azurite: Emulator, served_root: Path, operation: str, stop_before: str
) -> None:
    store = own_azurite.store()
    clone(served_root, store)
    before, served = pointers(store), answers(client(store))
    stopping = HookedStore(store, stop_on_first(own_azurite, lambda p: p.endswith(stop_before)))

    with pytest.raises((AzureError, TrainingRecommenderError)) as failure:
        if operation == "retrain":
            retrain(stopping, CONFIG)
        else:
            precompute(stopping, CONFIG, force=True)
    assert own_azurite.process is None, f"storage was never stopped before {stop_before}"
    assert is_storage_error(failure.value), repr(failure.value)

    own_azurite.start()  # same port, same folder
    assert pointers(store) == before  # etags included: nothing moved
    assert answers(client(store)) == served  # nothing partial is served

    rerun = (
        retrain(store, CONFIG).status
        if operation == "retrain"
        else precompute(store, CONFIG, force=True).status
    )
    assert rerun == ("published" if operation == "retrain" else "computed")
    assert served_version(client(store)) != served[0]["recommendations_version"]


@pytest.mark.azurite
def test_while_storage_is_down_a_serving_instance_keeps_answering_and_a_new_one_gets_503(
    own_azurite: Emulator, served_root: Path
) -> None:
    store = own_azurite.store()
    clone(served_root, store)
    serving = client(store)  # refresh_seconds=0: every request re-reads the pointer
    served = answers(serving)

    own_azurite.stop()
    assert answers(serving) == served  # from memory: the pointer cannot be read
    health = serving.get("/health")
    assert health.status_code == 200
    assert health.json()["status"] == "degraded"
    assert health.json()["last_error"]
    fresh = client(store)
    for method, path, body in ROUTES:
        response = fresh.request(method, path, json=body)
        assert response.status_code == 503, (path, response.status_code, response.text)
        assert response.json()["detail"]

    own_azurite.start()
    assert answers(serving) == served
    assert serving.get("/health").json()["status"] == "ok"
    assert answers(client(store)) == served


# --- the SDK fails one chosen request, on the regular Azurite -----------------------------


class FailingTransport(RequestsTransport):  # type: ignore[misc]
    """The SDK's HTTP transport, failing the requests ``fails`` picks like a dropped connection."""

    def __init__(self, fails: Callable[[int, Any], bool]) -> None:
        super().__init__()
        self.fails = fails
        self.sent = 0
        self.failed: list[str] = []

    def send(self, request: Any, **kwargs: Any) -> Any:
        self.sent += 1
        if self.fails(self.sent, request):
            call = f"{request.method} {urlsplit(request.url).path}"
            self.failed.append(call)
            raise ServiceRequestError(f"injected: request {self.sent} ({call}) failed")
        return super().send(request, **kwargs)


def failing_store(
    azurite: str, container_prefix: str, fails: Callable[[int, Any], bool]
) -> tuple[AzureBlobStore, FailingTransport]:
    transport = FailingTransport(fails)
    store = AzureBlobStore.from_connection_string(
        azurite, container_prefix=container_prefix, retry_total=0, transport=transport
    )
    return store, transport


# precompute: 6 reads (pointers, extracts), the properties of the 3 extracts (read as
# streams), 2 of the model, the first-seen ledger (written only when a training
# appeared), 3 version files, the pointer.
PRECOMPUTE_REQUESTS = 16


def test_precompute_makes_the_requests_the_nth_call_tests_cover(
    shared_azure: tuple[AzureBlobStore, str], azurite: str
) -> None:
    # If precompute's requests change, widen PRECOMPUTE_REQUESTS so every one is failed once.
    _, prefix = shared_azure
    counting, transport = failing_store(azurite, prefix, lambda _n, _r: False)
    assert precompute(counting, CONFIG, force=True).status == "computed"
    assert transport.sent == PRECOMPUTE_REQUESTS


@pytest.mark.parametrize("n", range(1, PRECOMPUTE_REQUESTS + 1))
def test_precompute_failing_on_the_nth_storage_call_leaves_the_previous_version_serving(
    shared_azure: tuple[AzureBlobStore, str], azurite: str, n: int
) -> None:
    served_azure, prefix = shared_azure
    before, served = pointers(served_azure), answers(client(served_azure))
    flaky, transport = failing_store(azurite, prefix, lambda sent, _: sent == n)

    with pytest.raises(AzureError, match="injected"):
        precompute(flaky, CONFIG, force=True)
    assert len(transport.failed) == 1

    assert pointers(served_azure) == before
    assert answers(client(served_azure)) == served
    result = precompute(served_azure, CONFIG, force=True)  # no cleanup needed
    assert result.status == "computed"
    assert read_pointer(served_azure, RECOMMENDATIONS_POINTER)[0]["version"] == result.version


def request_to(method: str, ending: str, lease_action: str | None = None) -> Callable[[Any], bool]:
    def matches(request: Any) -> bool:
        return (
            request.method == method
            and urlsplit(request.url).path.endswith(ending)
            and (lease_action is None or request.headers.get("x-ms-lease-action") == lease_action)
        )

    return matches


RETRAIN_CALLS = {
    "acquire-lease": request_to("PUT", RETRAIN_LOCK.split("/", 1)[1], "acquire"),
    "write-model": request_to("PUT", NPZ_NAME),
    "move-models-pointer": request_to("PUT", MODELS_POINTER.split("/", 1)[1]),
    "write-top": request_to("PUT", "top.npz"),
    "move-recommendations-pointer": request_to("PUT", RECOMMENDATIONS_POINTER.split("/", 1)[1]),
}


@pytest.mark.parametrize("call", RETRAIN_CALLS)
def test_retrain_failing_on_one_storage_call_leaves_a_complete_version_serving(
    shared_azure: tuple[AzureBlobStore, str], azurite: str, call: str
) -> None:
    served_azure, prefix = shared_azure
    before, served = pointers(served_azure), answers(client(served_azure))
    picks = RETRAIN_CALLS[call]
    flaky, transport = failing_store(
        azurite, prefix, lambda _, request: not transport.failed and picks(request)
    )

    with pytest.raises(AzureError, match="injected"):
        retrain(flaky, CONFIG)
    assert len(transport.failed) == 1

    after = pointers(served_azure)
    assert after[RECOMMENDATIONS_POINTER] == before[RECOMMENDATIONS_POINTER]
    if call in ("write-top", "move-recommendations-pointer"):
        load_bundle(served_azure, after[MODELS_POINTER][0]["version"])  # moved, complete
    else:
        assert after == before
    assert answers(client(served_azure)) == served
    # The lease was released (or will expire): the next retrain runs, no cleanup needed.
    assert retrain(served_azure, CONFIG).status == "published"


def test_a_lease_release_that_fails_does_not_fail_a_published_retrain(
    served_azure: AzureBlobStore, azurite: str, container_prefix: str
) -> None:
    # The lease expires by itself; failing finished, published work over it would make the
    # timer report a failure for a retrain that served a new version. (Own containers: the
    # lease it leaves behind would make the shared store's next retrain "busy".)
    releasing = request_to("PUT", RETRAIN_LOCK.split("/", 1)[1], "release")
    flaky, transport = failing_store(
        azurite, container_prefix, lambda _, request: not transport.failed and releasing(request)
    )
    result = retrain(flaky, CONFIG)
    assert transport.failed, "the release was never attempted"
    assert result.status == "published"
    assert read_pointer(served_azure, MODELS_POINTER)[0]["version"] == result.version


# --- races --------------------------------------------------------------------------------


def run_together(*calls: Callable[[], Any]) -> list[Any]:
    """Run the calls in threads at once; each outcome is its result or the exception it raised."""
    with ThreadPoolExecutor(len(calls)) as pool:
        futures = [pool.submit(call) for call in calls]
        return [future.exception(timeout=120) or future.result() for future in futures]


@pytest.mark.parametrize("pointer", [MODELS_POINTER, RECOMMENDATIONS_POINTER])
def test_two_writers_moving_a_pointer_from_the_same_etag_exactly_one_wins(
    store: BlobStore, pointer: str
) -> None:
    move_pointer(store, pointer, {"version": "v0"}, None)
    read_both = threading.Barrier(2, timeout=WAIT)
    etags: list[str | None] = []

    def writer(version: str) -> str:
        content, etag = read_pointer(store, pointer)
        etags.append(etag)
        read_both.wait()  # neither writes before both have read: the same etag
        move_pointer(store, pointer, {**content, "version": version}, etag)
        return version

    outcomes = run_together(lambda: writer("a"), lambda: writer("b"))
    assert etags[0] is not None and etags[0] == etags[1]
    winners = [o for o in outcomes if isinstance(o, str)]
    losers = [o for o in outcomes if isinstance(o, PreconditionFailedError)]
    assert len(winners) == 1 and len(losers) == 1, outcomes
    assert read_pointer(store, pointer)[0] == {"version": winners[0]}


def test_two_precomputes_racing_one_moves_the_pointer_the_other_fails_cleanly(
    served_azure: AzureBlobStore,
) -> None:
    # Both read the pointer before either writes (the barrier), so both hold its etag.
    start = threading.Barrier(2, timeout=WAIT)
    racing = HookedStore(served_azure, meet_at(start, lambda path: path.endswith("/top.npz")))
    outcomes = run_together(
        lambda: precompute(racing, CONFIG, force=True),
        lambda: precompute(racing, CONFIG, force=True),
    )
    winners = [o for o in outcomes if isinstance(o, PrecomputeResult)]
    losers = [o for o in outcomes if isinstance(o, PreconditionFailedError)]
    assert len(winners) == 1 and len(losers) == 1, outcomes
    assert racing.written.count(RECOMMENDATIONS_POINTER) == 1

    pointer, etag = read_pointer(served_azure, RECOMMENDATIONS_POINTER)
    assert pointer["version"] == winners[0].version
    assert etag is not None
    snapshot = load_snapshot(served_azure, pointer, etag)  # one complete version
    assert len(snapshot.table.user_ids) == pointer["employees"] == len(DATA.users)
    assert served_version(client(served_azure)) == winners[0].version


def test_the_same_blob_delivered_twice_at_once_moves_the_recommendations_pointer_once(
    served_azure: AzureBlobStore, azurite: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Event Grid delivers at least once: two workers may run the same drop concurrently.
    # The barrier holds each until both have read the extracts pointer.
    start = threading.Barrier(2, timeout=WAIT)

    def is_users_copy(path: str) -> bool:  # the accepted copy, written before the pointer
        return path.startswith("extracts/users/") and path.endswith(".csv")

    hooked = HookedStore(served_azure, meet_at(start, is_users_copy))
    monkeypatch.setattr(runtime, "app_store", lambda: hooked)
    monkeypatch.setattr(runtime, "app_config", lambda: CONFIG)
    monkeypatch.setenv("DataStorage", azurite)
    before = read_pointer(served_azure, RECOMMENDATIONS_POINTER)[0]
    data = with_newcomer("900001")
    served_azure.write("hr-extracts/users/december.csv", data)
    container = f"{served_azure.container_prefix}hr-extracts"

    def deliver() -> None:
        function_app.extract_dropped(bound_blob(container, "users/december.csv"))

    assert run_together(deliver, deliver) == [None, None]  # neither raised
    assert hooked.written.count(EXTRACTS_POINTER) == 1
    assert hooked.written.count(RECOMMENDATIONS_POINTER) == 1
    after = read_pointer(served_azure, RECOMMENDATIONS_POINTER)[0]
    assert after["data_version"] != before["data_version"]
    assert client(served_azure).get("/recommendations/900001").status_code == 200


def test_a_retrain_while_another_holds_the_lease_exits_busy_at_once(
    served_azure: AzureBlobStore,
) -> None:
    holding, resume = threading.Event(), threading.Event()

    def pause_when_publishing(path: str) -> None:
        if path.endswith(f"/{NPZ_NAME}"):  # inside the lease, mid-publish
            holding.set()
            assert resume.wait(WAIT)

    first = HookedStore(served_azure, pause_when_publishing)
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(retrain, first, CONFIG)
        try:
            assert holding.wait(WAIT), "the first retrain never reached its publish step"
            before = pointers(served_azure)
            started = time.monotonic()
            second = retrain(served_azure, CONFIG)
            elapsed = time.monotonic() - started
            during = pointers(served_azure)
        finally:
            resume.set()
        result = running.result(timeout=120)

    assert second.status == "busy"
    assert second.version is None
    assert elapsed < 5, f"the busy retrain took {elapsed:.1f} s: it must not train"
    assert during == before
    assert result.status == "published"
    assert read_pointer(served_azure, MODELS_POINTER)[0]["version"] == result.version


# --- corrupted files in storage ----------------------------------------------------------


def flip_middle(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 64]) + data[middle + 64 :]


DAMAGES: dict[str, Callable[[bytes], bytes]] = {
    "garbage": lambda data: np.random.default_rng(0).bytes(len(data)),
    "truncated": lambda data: data[: len(data) // 2],
    "bit-flipped": flip_middle,
}


def copy_of_serving_model(store: BlobStore) -> tuple[ModelBundle, str]:
    """The serving bundle under a new version name: a second version without training."""
    bundle = load_bundle(store, current_version(store))
    bundle.metadata = bundle.metadata.model_copy(update={"version": new_version("c0ffee")})
    return bundle, bundle.version


def corrupt(store: BlobStore, path: str, damage: str) -> None:
    store.write(path, DAMAGES[damage](store.read(path)))


def publish_then_corrupt(store: BlobStore, file: str, damage: str) -> str:
    """Publish a new version, then damage one of its files; return the version's name."""
    if file == NPZ_NAME:
        bundle, version = copy_of_serving_model(store)
        publish(store, bundle)
        assert precompute(store, CONFIG).model_version == version
        corrupt(store, f"models/{version}/{NPZ_NAME}", damage)
        return version
    assert drop(store, "users/newcomer.csv", with_newcomer("900002"), CONFIG).status == "accepted"
    version = precompute(store, CONFIG).version
    corrupt(store, f"recommendations/{version}/top.npz", damage)
    return version


@pytest.mark.parametrize("damage", DAMAGES)
@pytest.mark.parametrize("file", [NPZ_NAME, "top.npz"])
def test_loading_a_corrupted_file_raises_model_load_error_naming_its_version(
    served_root: Path, tmp_path: Path, file: str, damage: str
) -> None:
    # The boundary every reader goes through (serving, promote, the CLI): a damaged file
    # is a ModelLoadError (never a zipfile or zlib error) that names the version.
    store = LocalFolderStore(Path(shutil.copytree(served_root, tmp_path / "store")))
    pointer, _ = read_pointer(store, RECOMMENDATIONS_POINTER)
    if file == NPZ_NAME:
        version = pointer["model_version"]
        corrupt(store, f"models/{version}/{NPZ_NAME}", damage)
        with pytest.raises(ModelLoadError) as failure:
            load_bundle(store, version)
    else:
        version = pointer["version"]
        corrupt(store, f"recommendations/{version}/top.npz", damage)
        with pytest.raises(ModelLoadError) as failure:
            load_recommendations(store, version)
    assert version in str(failure.value)


def on_stores(*cases: tuple[Any, ...]) -> list[Any]:
    """Each case on the local store, and the "truncated" ones on Azurite too."""
    params = [pytest.param("local", *case) for case in cases]
    azurite = pytest.mark.azurite
    return params + [
        pytest.param("azurite", *case, marks=azurite) for case in cases if "truncated" in case
    ]


@pytest.mark.parametrize(
    ("served_store", "file", "damage"),
    on_stores(*[(file, damage) for file in (NPZ_NAME, "top.npz") for damage in DAMAGES]),
    indirect=["served_store"],
)
def test_a_corrupted_new_version_never_replaces_the_served_one_and_never_gives_a_500(
    served_store: BlobStore, file: str, damage: str
) -> None:
    serving = client(served_store)
    served = answers(serving)
    broken = publish_then_corrupt(served_store, file, damage)

    # An instance that already serves keeps its version and says so on /health.
    assert answers(serving) == served
    health = serving.get("/health")
    assert health.status_code == 200
    assert health.json()["status"] == "degraded"
    # A fresh instance has nothing good to serve: 503 with the reason, never a 500.
    fresh = client(served_store)
    reasons = {}
    for method, path, body in [*ROUTES, ("GET", "/health", None)]:
        response = fresh.request(method, path, json=body)
        assert response.status_code == 503, (path, response.status_code, response.text)
        reasons[path] = response.json().get("detail") or response.json().get("last_error")

    # Both name the version that failed, so the operator knows what to fix or roll back.
    assert broken in health.json()["last_error"]
    for path, reason in reasons.items():
        assert broken in reason, (path, reason)


@pytest.mark.parametrize(
    ("served_store", "damage"), on_stores(*[(d,) for d in DAMAGES]), indirect=["served_store"]
)
def test_promoting_a_corrupted_model_raises_model_load_error_and_moves_nothing(
    served_store: BlobStore, damage: str
) -> None:
    bundle, version = copy_of_serving_model(served_store)
    write_version(served_store, bundle)  # published, not serving
    corrupt(served_store, f"models/{version}/{NPZ_NAME}", damage)
    before = pointers(served_store)

    with pytest.raises(ModelLoadError) as failure:
        promote(served_store, version, CONFIG)
    assert pointers(served_store) == before
    with served_store.lease(RETRAIN_LOCK, seconds=15):
        pass  # promote released the retrain lock on its way out
    assert version in str(failure.value)  # names what cannot be promoted


def test_models_promote_command_on_a_corrupted_model_exits_2_with_one_error_line(
    served_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = Path(shutil.copytree(served_root, tmp_path / "store"))
    store = LocalFolderStore(root)
    bundle, version = copy_of_serving_model(store)
    write_version(store, bundle)
    corrupt(store, f"models/{version}/{NPZ_NAME}", "truncated")
    before = pointers(store)

    status = cli.main(["--store", str(root), "models", "promote", version])
    error = capsys.readouterr().err
    assert status == 2
    assert error.startswith("error: ") and error.count("\n") == 1, error
    assert pointers(store) == before
    assert load_recommendations(store, before[RECOMMENDATIONS_POINTER][0]["version"])
    assert version in error
