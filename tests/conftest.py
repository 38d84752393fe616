"""Shared fixtures: Azurite (the Azure Storage emulator) and the two blob stores."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.storage import AzureBlobStore, BlobStore, LocalFolderStore

REPO = Path(__file__).resolve().parents[1]  # on sys.path: pyproject's pytest pythonpath

# Azurite's well-known development account: public, documented, not a secret.
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
AZURITE_START_TIMEOUT = 20.0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Mark every test that needs Azurite, so `-m "not azurite"` runs without Node.
    for item in items:
        if "azurite" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.azurite)


def azurite_connection_string(port: int) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"BlobEndpoint=http://127.0.0.1:{port}/{AZURITE_ACCOUNT};"
    )


def _azurite_bin() -> Path:
    candidates = [REPO / "node_modules" / ".bin" / "azurite-blob"]
    if os.environ.get("AZURITE_BIN"):
        candidates.append(Path(os.environ["AZURITE_BIN"]))
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    pytest.fail(
        f"Azurite not found at {' or '.join(map(str, candidates))}: run `npm ci` in {REPO}"
        " (or set AZURITE_BIN, or AZURITE_CONNECTION_STRING to use a running Azurite)",
        pytrace=False,
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_until_listening(
    proc: subprocess.Popen[bytes], binary: Path, port: int, log: Path
) -> None:
    deadline = time.monotonic() + AZURITE_START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    exited = proc.poll() is not None
    proc.kill()
    proc.wait()
    problem = (
        f"exited with code {proc.returncode}"
        if exited
        else f"did not answer within {AZURITE_START_TIMEOUT:.0f} s"
    )
    pytest.fail(
        f"Azurite ({binary}, port {port}) {problem}; its output:\n"
        f"{log.read_text(errors='replace')}",
        pytrace=False,
    )


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Connection string of an Azurite blob service, started for the session if needed."""
    if os.environ.get("AZURITE_CONNECTION_STRING"):
        yield os.environ["AZURITE_CONNECTION_STRING"]
        return
    binary = _azurite_bin()
    port = _free_port()
    workdir = tmp_path_factory.mktemp("azurite")
    log = workdir / "azurite.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                str(binary),
                "--skipApiVersionCheck",  # the SDK speaks a newer API version than Azurite 3.35
                "--loose",
                "--inMemoryPersistence",
                "--disableTelemetry",
                "--silent",
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                str(port),
            ],
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_until_listening(proc, binary, port, log)
        yield azurite_connection_string(port)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _delete_containers(conn: str, prefix: str) -> None:
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient.from_connection_string(conn, retry_total=0)
    for container in service.list_containers(name_starts_with=prefix):
        service.delete_container(container.name)


@pytest.fixture
def container_prefix() -> str:
    """A prefix that gives one test its own Azure containers."""
    return f"t{uuid.uuid4().hex[:8]}-"


@pytest.fixture
def azure_store(azurite: str, container_prefix: str) -> Iterator[AzureBlobStore]:
    """An AzureBlobStore on Azurite, with containers of its own (deleted afterwards)."""
    yield AzureBlobStore.from_connection_string(azurite, container_prefix=container_prefix)
    _delete_containers(azurite, container_prefix)


@pytest.fixture
def local_store(tmp_path: Path) -> LocalFolderStore:
    """A LocalFolderStore in a fresh folder."""
    return LocalFolderStore(tmp_path / "store")


@pytest.fixture(params=["local", pytest.param("azurite", marks=pytest.mark.azurite)])
def store(request: pytest.FixtureRequest) -> BlobStore:
    """Each store implementation in turn, for contract tests."""
    fixture = "local_store" if request.param == "local" else "azure_store"
    result: BlobStore = request.getfixturevalue(fixture)
    return result


@pytest.fixture(scope="session")
def app_functions() -> dict[str, Any]:
    """Each function of function_app.py, as the Functions worker indexes them.

    azure-functions 1.26's AsgiFunctionApp.get_functions() may be called once per app
    (a second call reports the HTTP function as a duplicate), as the host does: so once
    per test session.
    """
    import function_app

    return {f.get_function_name(): f for f in function_app.app.get_functions()}


@pytest.fixture(scope="session")
def function_bindings(app_functions: dict[str, Any]) -> dict[str, list[dict[str, object]]]:
    """Each function of function_app.py and its bindings, as the Functions host reads them."""
    import json

    return {
        name: [json.loads(b) for b in f.get_raw_bindings()] for name, f in app_functions.items()
    }
