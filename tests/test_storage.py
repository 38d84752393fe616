"""The blob store contract, run on LocalFolderStore and on AzureBlobStore over Azurite."""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
import requests
from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError
from azure.core.pipeline.transport import HttpRequest, RequestsTransport, RequestsTransportResponse
from azure.storage.blob import BlobLeaseClient, ExponentialRetry
from conftest import REPO

from shared.errors import (
    ConfigurationError,
    LeaseUnavailableError,
    NotFoundError,
    PreconditionFailedError,
)
from shared.storage import AzureBlobStore, BlobStore, LocalFolderStore, store_from_settings

PATH = "models/20261129T101010Z-ab12cd/model.npz"


# --- the contract, on both stores -------------------------------------------------------


def test_write_then_read_round_trips_bytes(store: BlobStore) -> None:
    data = bytes(range(256)) * 10
    etag = store.write(PATH, data, content_type="application/octet-stream")
    assert store.read(PATH) == data
    assert store.read_with_etag(PATH) == (data, etag)
    assert store.etag(PATH) == etag
    assert store.exists(PATH)


def test_a_file_is_written_from_its_position_in_pieces_never_whole(store: BlobStore) -> None:
    """A large export goes from a temporary file to storage; the container is created
    on the way (the upload then starts again from where the file was)."""
    import tempfile

    content = bytes(range(256)) * (9 * 1024 * 1024 // 256 + 7)  # over two 4 MiB pieces
    with tempfile.TemporaryFile() as file:
        file.write(b"skipped" + content)
        file.seek(len(b"skipped"))
        path = f"fresh-{uuid.uuid4().hex[:6]}/export.csv"
        etag = store.write(path, file)
    data, again = store.read_with_etag(path)
    assert data == content and again == etag


def test_a_blob_is_read_as_a_seekable_stream_of_the_version_found(store: BlobStore) -> None:
    data = bytes(range(256)) * 4_000  # 1 MB
    etag = store.write("box/big.bin", data)
    blob = store.blob("box/big.bin")
    assert (blob.path, blob.size, blob.etag) == ("box/big.bin", len(data), etag)
    with blob.open() as stream:
        assert stream.read(10) == data[:10]
        stream.seek(700_000)
        assert stream.read(5) == data[700_000:700_005]
        stream.seek(3)
        assert stream.read() == data[3:]
        assert stream.seek(0, io.SEEK_END) == len(data)
    store.write("box/big.bin", b"newer")
    with pytest.raises(PreconditionFailedError), blob.open() as stream:
        stream.read()  # the version found is gone: never a mix of two
    with pytest.raises(NotFoundError, match=re.escape("box/missing.bin")):
        store.blob("box/missing.bin")


def test_an_azure_blob_is_downloaded_a_range_at_a_time(
    azure_store: AzureBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.storage import azure

    monkeypatch.setattr(azure, "READ_PIECE", 1024)  # every read and seek crosses ranges
    data = os.urandom(10_000)
    azure_store.write("box/chunked.bin", data)
    blob = azure_store.blob("box/chunked.bin")
    ranges: list[tuple[int, int]] = []
    download = blob.client.download_blob
    monkeypatch.setattr(
        blob.client,
        "download_blob",
        lambda **kw: ranges.append((kw["offset"], kw["length"])) or download(**kw),
    )
    with blob.open() as stream:
        assert stream.read(3_000) == data[:3_000]
        stream.seek(9_500)
        assert stream.read(1_000) == data[9_500:]
        stream.seek(1)
        assert stream.read() == data[1:]
    assert max(length for _, length in ranges) <= 1024  # never more than a range held


def test_copy_copies_within_the_store_only_the_version_asked(store: BlobStore) -> None:
    etag = store.write("src/source.csv", b"one,two\n")
    store.copy("src/source.csv", "dst/target.csv", source_etag=etag)  # a container created
    assert store.read("dst/target.csv") == b"one,two\n"
    assert store.read("src/source.csv") == b"one,two\n"
    store.write("src/source.csv", b"changed\n")
    with pytest.raises(PreconditionFailedError):
        store.copy("src/source.csv", "dst/other.csv", source_etag=etag)
    assert not store.exists("dst/other.csv")
    with pytest.raises(NotFoundError):
        store.copy("src/missing.csv", "dst/target.csv")
    assert store.read("dst/target.csv") == b"one,two\n"


def test_read_missing_raises_not_found_naming_the_path(store: BlobStore) -> None:
    with pytest.raises(NotFoundError, match=re.escape("hr-extracts/users/2026-11.csv")):
        store.read("hr-extracts/users/2026-11.csv")
    with pytest.raises(NotFoundError, match=re.escape("hr-extracts/users/2026-11.csv")):
        store.read_with_etag("hr-extracts/users/2026-11.csv")
    assert store.etag("hr-extracts/users/2026-11.csv") is None
    assert not store.exists("hr-extracts/users/2026-11.csv")


def test_etag_changes_when_content_changes(store: BlobStore) -> None:
    first = store.write(PATH, b"one")
    second = store.write(PATH, b"two")
    assert first != second
    assert store.etag(PATH) == second


def test_write_if_match_with_stale_etag_fails_and_keeps_content(store: BlobStore) -> None:
    stale = store.write(PATH, b"v1")
    current = store.write(PATH, b"v2")
    with pytest.raises(PreconditionFailedError, match=re.escape(PATH)):
        store.write(PATH, b"v3", if_match=stale)
    assert store.read(PATH) == b"v2"
    newer = store.write(PATH, b"v3", if_match=current)
    assert store.read_with_etag(PATH) == (b"v3", newer)


def test_write_if_match_on_missing_blob_fails(store: BlobStore) -> None:
    with pytest.raises(PreconditionFailedError, match=re.escape(PATH)):
        store.write(PATH, b"v1", if_match='"0x8DC0000000000000"')  # container missing too
    store.write("models/other", b"x")
    with pytest.raises(PreconditionFailedError, match=re.escape(PATH)):
        store.write(PATH, b"v1", if_match='"0x8DC0000000000000"')
    assert not store.exists(PATH)


def test_write_if_none_match_only_creates(store: BlobStore) -> None:
    etag = store.write("locks/marker", b"first", if_none_match=True)
    with pytest.raises(PreconditionFailedError, match="locks/marker"):
        store.write("locks/marker", b"second", if_none_match=True)
    assert store.read_with_etag("locks/marker") == (b"first", etag)


def test_write_rejects_both_conditions(store: BlobStore) -> None:
    with pytest.raises(ValueError, match="not both"):
        store.write(PATH, b"x", if_match='"x"', if_none_match=True)


def test_concurrent_conditional_writers_exactly_one_wins(store: BlobStore) -> None:
    for _ in range(5):
        etag = store.write(PATH, b"base")
        barrier = threading.Barrier(2)

        def writer(data: bytes, etag: str = etag, barrier: threading.Barrier = barrier) -> bool:
            barrier.wait()
            try:
                store.write(PATH, data, if_match=etag)
            except PreconditionFailedError:
                return False
            return True

        with ThreadPoolExecutor(2) as pool:
            won = list(pool.map(writer, [b"left", b"right"]))
        assert won.count(True) == 1
        assert store.read(PATH) == (b"left" if won[0] else b"right")


def test_list_by_prefix_is_sorted_with_sizes(store: BlobStore) -> None:
    blobs = {
        "models/b/model.npz": b"12",
        "models/a/model.npz": b"1",
        "models/a10.json": b"123",
        "models/current.json": b"1234",
        "recommendations/a/x.json": b"12345",
    }
    for path, data in blobs.items():
        store.write(path, data)

    listed = store.list("models/")
    assert [(i.path, i.size) for i in listed] == [
        ("models/a/model.npz", 1),
        ("models/a10.json", 3),
        ("models/b/model.npz", 2),
        ("models/current.json", 4),
    ]
    for info in listed:
        assert info.etag == store.etag(info.path)
        assert info.last_modified.utcoffset() == UTC.utcoffset(None)
    assert [i.path for i in store.list("models/a")] == ["models/a/model.npz", "models/a10.json"]
    assert [i.path for i in store.list("models/a/")] == ["models/a/model.npz"]
    assert [i.path for i in store.list("models")] == [i.path for i in listed]
    assert store.list("models/zzz") == []
    assert store.list("extracts/") == []  # container never created


def test_delete_removes_and_tolerates_missing(store: BlobStore) -> None:
    store.write(PATH, b"x")
    store.delete(PATH)
    assert not store.exists(PATH)
    store.delete(PATH)
    store.delete("extracts/never-written.csv")


def test_lease_is_exclusive_and_can_be_taken_again_after_release(store: BlobStore) -> None:
    with store.lease("locks/retrain") as lease:
        assert lease.path == "locks/retrain"
        assert store.exists("locks/retrain")  # the lock blob is created on first use
        with (
            pytest.raises(LeaseUnavailableError, match="locks/retrain"),
            store.lease("locks/retrain"),
        ):
            pytest.fail("a second holder got the lease")
        lease.renew()
    with store.lease("locks/retrain", seconds=15):
        pass
    with pytest.raises(LeaseUnavailableError, match="released"):
        lease.renew()


def test_lease_is_released_when_the_body_raises(store: BlobStore) -> None:
    with pytest.raises(RuntimeError, match="boom"), store.lease("locks/retrain"):
        raise RuntimeError("boom")
    with store.lease("locks/retrain"):
        pass


@pytest.mark.parametrize("seconds", [10, 61, -1])
def test_lease_duration_must_be_15_to_60_seconds(store: BlobStore, seconds: int) -> None:
    with pytest.raises(ValueError, match="15-60"), store.lease("locks/retrain", seconds=seconds):
        pass


BAD_PATHS = [
    "../outside.txt",
    "/etc/passwd",
    "models/../../outside.txt",
    "models/./x",
    "models//x",
    "models/",
    "models",
    "Models/x",
    "ab/x",
    "models\\..\\x",
    "-models/x",
]


@pytest.mark.parametrize("bad", BAD_PATHS)
def test_invalid_paths_are_rejected(store: BlobStore, bad: str) -> None:
    for call in (store.read, store.exists, store.delete, lambda p: store.write(p, b"x")):
        with pytest.raises(ValueError, match=re.escape(repr(bad))):
            call(bad)
    with pytest.raises(ValueError, match=re.escape(repr(bad))), store.lease(bad):
        pass


def test_local_store_never_writes_outside_its_root(tmp_path: Path) -> None:
    store = LocalFolderStore(tmp_path / "root")
    for bad in BAD_PATHS:
        with pytest.raises(ValueError, match="invalid blob path"):
            store.write(bad, b"x")
    with pytest.raises(ValueError, match="invalid list prefix"):
        store.list("models/../../")
    assert [p.name for p in tmp_path.iterdir()] == []


def test_local_reader_never_sees_half_a_file(local_store: LocalFolderStore) -> None:
    versions = [bytes([i]) * 1_000_000 for i in range(2)]
    local_store.write(PATH, versions[0])
    stop = threading.Event()

    def keep_writing() -> None:
        for i in range(1000):
            if stop.is_set():
                return
            local_store.write(PATH, versions[i % 2])

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        for _ in range(100):
            assert local_store.read(PATH) in versions
    finally:
        stop.set()
        writer.join()
    # No temporary file left behind, and none would be listed.
    assert [p.name for p in (local_store.root / PATH).parent.iterdir()] == ["model.npz"]


def test_local_describe_names_the_folder(tmp_path: Path) -> None:
    assert LocalFolderStore(tmp_path).describe == f"local folder {tmp_path}"


# --- Azure specifics ----------------------------------------------------------------------


def test_azure_lease_lost_to_another_holder(
    azure_store: AzureBlobStore, container_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING), azure_store.lease("locks/retrain") as lease:
        blob = azure_store.service.get_blob_client(f"{container_prefix}locks", "retrain")
        BlobLeaseClient(blob).break_lease(lease_break_period=0)
        blob.acquire_lease(lease_duration=15)
        with pytest.raises(LeaseUnavailableError, match="lease was lost"):
            lease.renew()
    assert "could not release the lease on locks/retrain" in caplog.text


def test_azure_describe_names_account_and_endpoint_only(azure_store: AzureBlobStore) -> None:
    assert re.fullmatch(
        r"Azure Blob Storage account devstoreaccount1 \(http://127\.0\.0\.1:\d+\)",
        azure_store.describe,
    )


def _fake_response(request: HttpRequest, status: int, error_code: str) -> Any:
    raw = requests.Response()
    raw.status_code = status
    raw.reason = "Injected"
    raw.headers["x-ms-error-code"] = error_code
    raw._content = b""
    return RequestsTransportResponse(request, raw)


class FlakyTransport(RequestsTransport):
    """Answers the next ``failures`` PUTs with 503 Server Busy, then lets requests through."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 0
        self.injected = 0

    def send(self, request: HttpRequest, **kwargs: Any) -> Any:
        if request.method == "PUT" and self.failures > 0:
            self.failures -= 1
            self.injected += 1
            return _fake_response(request, 503, "ServerBusy")
        return super().send(request, **kwargs)


def test_transient_errors_are_retried_with_backoff(
    azurite: str, container_prefix: str, azure_store: AzureBlobStore
) -> None:
    transport = FlakyTransport()
    store = AzureBlobStore.from_connection_string(
        azurite,
        container_prefix=container_prefix,
        initial_backoff=0,
        increment_base=1,
        random_jitter_range=0,
        transport=transport,
    )
    store.write(PATH, b"v1")
    transport.failures = 2
    started = time.monotonic()
    etag = store.write(PATH, b"v2")
    assert time.monotonic() - started >= 2.0  # waits of 0 + 1**1 and 0 + 1**2 seconds
    assert transport.injected == 2
    assert azure_store.read_with_etag(PATH) == (b"v2", etag)


def test_without_enough_retries_the_transient_error_surfaces(
    azurite: str, container_prefix: str, azure_store: AzureBlobStore
) -> None:
    transport = FlakyTransport()
    store = AzureBlobStore.from_connection_string(
        azurite,
        container_prefix=container_prefix,
        initial_backoff=0,
        increment_base=0,
        random_jitter_range=0,
        retry_total=1,
        transport=transport,
    )
    store.write(PATH, b"v1")
    transport.failures = 2
    with pytest.raises(HttpResponseError) as info:
        store.write(PATH, b"v2")
    assert info.value.status_code == 503
    assert azure_store.read(PATH) == b"v1"


def test_default_retry_policy_is_explicit_and_small() -> None:
    store = AzureBlobStore.from_connection_string("UseDevelopmentStorage=true")
    policy = store.service._config.retry_policy  # the SDK boundary: what the pipeline uses
    assert isinstance(policy, ExponentialRetry)
    assert (policy.initial_backoff, policy.increment_base, policy.total_retries) == (1, 2, 3)


# --- store_from_settings ------------------------------------------------------------------


class FakeCredential:
    """Stands in for DefaultAzureCredential; records how it was built and what it was asked."""

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.scopes: list[str] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.extend(scopes)
        return AccessToken("fake-token", int(time.time()) + 3600)


class RecordingTransport(RequestsTransport):
    """Records requests and answers each with 404, without any network."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[HttpRequest] = []

    def send(self, request: HttpRequest, **kwargs: Any) -> Any:
        self.requests.append(request)
        return _fake_response(request, 404, "BlobNotFound")


def test_settings_connection_string_gives_a_working_azure_store(azurite: str) -> None:
    store = store_from_settings(environ={"AzureWebJobsStorage": azurite}, local_root=Path("x"))
    assert isinstance(store, AzureBlobStore)
    path = f"extracts/settings-{uuid.uuid4().hex}.csv"
    store.write(path, b"a,b\n")
    assert store.read(path) == b"a,b\n"
    store.delete(path)


def test_settings_use_development_storage_means_azurite_on_port_10000() -> None:
    store = store_from_settings(
        environ={"AzureWebJobsStorage": "UseDevelopmentStorage=true"},
    )
    assert isinstance(store, AzureBlobStore)
    assert store.service.url == "http://127.0.0.1:10000/devstoreaccount1/"
    assert store.service.credential.account_name == "devstoreaccount1"
    assert store.describe == "Azure Blob Storage account devstoreaccount1 (http://127.0.0.1:10000)"


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("AzureWebJobsStorage__serviceUri", "https://acct.blob.core.windows.net"),
        ("AzureWebJobsStorage__blobServiceUri", "https://acct.blob.core.windows.net/"),
        ("AzureWebJobsStorage__accountName", "acct"),
    ],
)
def test_settings_identity_based_access_uses_the_credential_and_no_key(
    monkeypatch: pytest.MonkeyPatch, setting: str, value: str
) -> None:
    import azure.identity

    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", FakeCredential)
    environ = {
        setting: value,
        "AzureWebJobsStorage__credential": "managedidentity",
        "AzureWebJobsStorage__clientId": "client-123",
    }
    store = store_from_settings(environ=environ)
    assert isinstance(store, AzureBlobStore)
    assert store.service.url == "https://acct.blob.core.windows.net/"
    credential = store.service.credential
    assert isinstance(credential, FakeCredential)
    assert credential.kwargs == {"managed_identity_client_id": "client-123"}
    assert store.describe == "Azure Blob Storage account acct (https://acct.blob.core.windows.net)"


def test_settings_without_client_id_leaves_the_credential_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import azure.identity

    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", FakeCredential)
    store = store_from_settings(
        environ={"Conn__serviceUri": "https://acct.blob.core.windows.net"}, connection_name="Conn"
    )
    assert isinstance(store, AzureBlobStore)
    assert isinstance(store.service.credential, FakeCredential)
    assert store.service.credential.kwargs == {}


def test_service_uri_requests_carry_a_bearer_token_not_a_key() -> None:
    credential = FakeCredential()
    transport = RecordingTransport()
    store = AzureBlobStore.from_service_uri(
        "https://acct.blob.core.windows.net", credential, transport=transport
    )
    assert store.exists("models/current.json") is False
    (request,) = transport.requests
    assert request.url.startswith("https://acct.blob.core.windows.net/models/current.json")
    assert request.headers["Authorization"] == "Bearer fake-token"
    assert credential.scopes == ["https://storage.azure.com/.default"]


def test_settings_reject_an_unknown_credential_kind() -> None:
    environ = {
        "AzureWebJobsStorage__serviceUri": "https://acct.blob.core.windows.net",
        "AzureWebJobsStorage__credential": "clientsecret",
    }
    with pytest.raises(ConfigurationError, match="AzureWebJobsStorage__credential"):
        store_from_settings(environ=environ)


@pytest.mark.parametrize("conn", ["AccountKey=s3cr3t", "s3cr3t"])
def test_settings_malformed_connection_string_names_the_setting_not_the_value(conn: str) -> None:
    with pytest.raises(ConfigurationError, match="AzureWebJobsStorage") as info:
        store_from_settings(environ={"AzureWebJobsStorage": conn})
    assert "s3cr3t" not in str(info.value)


def test_settings_precedence_connection_string_then_identity_then_local(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import azure.identity

    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", FakeCredential)
    uri = {"AzureWebJobsStorage__serviceUri": "https://acct.blob.core.windows.net"}
    dev = {"AzureWebJobsStorage": "UseDevelopmentStorage=true"}
    first = store_from_settings(environ={**uri, **dev}, local_root=tmp_path)
    assert isinstance(first, AzureBlobStore)
    assert first.service.account_name == "devstoreaccount1"
    second = store_from_settings(environ=uri, local_root=tmp_path)
    assert isinstance(second, AzureBlobStore)
    assert second.service.account_name == "acct"
    third = store_from_settings(environ={"AzureWebJobsStorage": "  "}, local_root=tmp_path)
    assert isinstance(third, LocalFolderStore)
    assert third.root == tmp_path


def test_settings_nothing_configured_names_the_settings_looked_for() -> None:
    with pytest.raises(ConfigurationError) as info:
        store_from_settings(connection_name="Storage", environ={})
    for name in (
        "Storage",
        "Storage__serviceUri",
        "Storage__blobServiceUri",
        "Storage__accountName",
    ):
        assert name in str(info.value)


def test_importing_storage_loads_no_azure_sdk() -> None:
    code = (
        "import sys, shared.storage; print(sorted(m for m in sys.modules if m.startswith('azure')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
