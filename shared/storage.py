"""Blob storage behind one small interface: a local folder or Azure Blob Storage.

A path is ``"container/blob/name"``: the first segment names the container
(``hr-extracts/users/2026-11.csv``, ``models/current.json``). Both stores keep the
same contract, so the rest of the app and its tests do not care which one they get.

The Azure SDK is imported only when an Azure store is built or used: the Functions
host imports this module on every cold start.
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import functools
import hashlib
import logging
import os
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote, urlsplit

from shared.errors import (
    ConfigurationError,
    LeaseUnavailableError,
    NotFoundError,
    PreconditionFailedError,
)

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.storage.blob import BlobClient, BlobLeaseClient, BlobServiceClient, ExponentialRetry

_LOG = logging.getLogger(__name__)

# Azure's rule for container names: 3-63 of a-z, 0-9 and single hyphens inside.
_CONTAINER_RE = re.compile(r"[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]")
# Temporary files of LocalFolderStore start with this; paths may not, so they never collide.
_TMP_PREFIX = ".tmp-"
# Azure accepts leases of 15 to 60 seconds (or infinite, which a crash would leave held).
MIN_LEASE_SECONDS = 15
MAX_LEASE_SECONDS = 60


@dataclass(frozen=True)
class BlobInfo:
    """One listed blob.

    Attributes
    ----------
    path : str
        ``"container/blob/name"``.
    size : int
        Size in bytes.
    etag : str
        The quoted etag, as ``BlobStore.etag`` returns it.
    last_modified : datetime
        Time of the last write, timezone-aware UTC.
    """

    path: str
    size: int
    etag: str
    last_modified: datetime


class Lease(Protocol):
    """An exclusive lease held for the duration of a ``BlobStore.lease`` block."""

    @property
    def path(self) -> str:
        """The leased path."""
        ...

    def renew(self) -> None:
        """Extend the lease; call it between steps of long work.

        Raises
        ------
        LeaseUnavailableError
            The lease was released or lost to another holder.
        """
        ...


class BlobStore(Protocol):
    """Where extracts, models and recommendations are kept."""

    @property
    def describe(self) -> str:
        """Human-readable location for logs, without secrets."""
        ...

    def read(self, path: str) -> bytes:
        """Return the content; ``NotFoundError`` naming the path if it is missing."""
        ...

    def read_with_etag(self, path: str) -> tuple[bytes, str]:
        """Return the content and the etag of that same version."""
        ...

    def etag(self, path: str) -> str | None:
        """Return the current etag, or None if the blob is missing."""
        ...

    def write(
        self,
        path: str,
        data: bytes,
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
        content_type: str | None = None,
    ) -> str:
        """Replace the content and return the new etag.

        ``if_match`` writes only if the current etag equals it and ``if_none_match``
        only if the blob does not exist; otherwise ``PreconditionFailedError``.
        """
        ...

    def delete(self, path: str) -> None:
        """Delete the blob; a missing blob is fine."""
        ...

    def exists(self, path: str) -> bool:
        """Tell whether the blob exists."""
        ...

    def list(self, prefix: str) -> builtins.list[BlobInfo]:
        """Return the blobs whose path starts with ``prefix``, sorted by path.

        The first segment of ``prefix`` is a whole container name
        (``"models/"``, ``"models/2026"``); a missing container lists nothing.
        """
        ...

    def lease(self, path: str, *, seconds: int = 60) -> AbstractContextManager[Lease]:
        """Hold an exclusive lease on ``path`` (created empty if missing) for a block.

        Raises ``LeaseUnavailableError`` at once if another holder has it. The lease is
        released when the block ends, also on an exception. Use a dedicated lock blob
        (``locks/retrain``) and do not write to it.
        """
        ...


# Both stores validate the same way, so a path that works locally works on Azure.
def _split(path: str) -> tuple[str, str]:
    container, _, name = path.partition("/")
    segments = name.split("/")
    if (
        not _CONTAINER_RE.fullmatch(container)
        or "\\" in path
        or "\0" in path
        or any(s in ("", ".", "..") or s.startswith(_TMP_PREFIX) for s in segments)
    ):
        raise ValueError(
            f"invalid blob path {path!r}: expected 'container/blob/name' with a container of"
            " 3-63 lowercase letters, digits or hyphens, and no empty, '.' or '..' segments"
        )
    return container, name


def _split_prefix(prefix: str) -> tuple[str, str]:
    container, _, name_prefix = prefix.partition("/")
    segments = name_prefix.split("/")
    if not _CONTAINER_RE.fullmatch(container) or any(s in (".", "..") for s in segments):
        raise ValueError(
            f"invalid list prefix {prefix!r}: expected 'container/' or 'container/name-prefix'"
            " with no '.' or '..' segments"
        )
    return container, name_prefix


def _check_conditions(if_match: str | None, if_none_match: bool) -> None:
    if if_match is not None and if_none_match:
        raise ValueError("write: give if_match or if_none_match, not both")


def _check_lease_seconds(seconds: int) -> None:
    if not MIN_LEASE_SECONDS <= seconds <= MAX_LEASE_SECONDS:
        raise ValueError(
            f"lease of {seconds} s: must be {MIN_LEASE_SECONDS}-{MAX_LEASE_SECONDS} s"
            " (Azure's limits); call renew() to hold it longer"
        )


def _precondition_failed(path: str, if_match: str | None) -> PreconditionFailedError:
    if if_match is not None:
        return PreconditionFailedError(
            f"{path}: not written: it is no longer at etag {if_match} (changed by another writer)"
        )
    return PreconditionFailedError(f"{path}: not written: it already exists")


# `renew` is a callback so both stores share the released check.
class _Lease:
    def __init__(self, path: str, renew: Callable[[], None]) -> None:
        self.path = path
        self._renew = renew
        self.released = False

    def renew(self) -> None:
        if self.released:
            raise LeaseUnavailableError(f"{self.path}: the lease was already released")
        self._renew()


def _local_etag(data: bytes, mtime_ns: int) -> str:
    # The content hash catches rewrites within one mtime tick (Linux's clock is coarse).
    digest = hashlib.blake2b(data, digest_size=16)
    digest.update(mtime_ns.to_bytes(8, "big"))
    return f'"{digest.hexdigest()}"'


class LocalFolderStore:
    """Blobs as files under ``root/container/...``, for development and the CLI.

    Writes are atomic (a temporary file renamed over the target) and conditional writes
    and leases are safe across processes (``fcntl.flock`` on files in ``root/.locks``).
    A blob cannot be both a file and a "folder" of other blobs (``a`` and ``a/b``).

    Parameters
    ----------
    root : Path
        The folder; created on first write.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def describe(self) -> str:
        """Human-readable location for logs."""
        return f"local folder {self.root}"

    def _file(self, path: str) -> Path:
        container, name = _split(path)
        return self.root / container / name

    @contextmanager
    def _write_lock(self) -> Iterator[None]:
        # One lock for all writes: each holds it only to check a condition and rename.
        locks = self.root / ".locks"
        locks.mkdir(parents=True, exist_ok=True)
        with (locks / "writes.lock").open("ab") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def read(self, path: str) -> bytes:
        """Return the content of ``path``; ``NotFoundError`` if it is missing."""
        return self.read_with_etag(path)[0]

    def read_with_etag(self, path: str) -> tuple[bytes, str]:
        """Return the content of ``path`` and its etag; ``NotFoundError`` if it is missing."""
        data, mtime_ns = self._read(path)
        return data, _local_etag(data, mtime_ns)

    def _read(self, path: str) -> tuple[bytes, int]:
        try:
            with self._file(path).open("rb") as f:
                # fstat of the open file: the same version as the data even if replaced since.
                return f.read(), os.fstat(f.fileno()).st_mtime_ns
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFoundError(f"{path}: no such blob in {self.describe}") from None

    def etag(self, path: str) -> str | None:
        """Return the etag of ``path`` (reads the file to hash it), or None if missing."""
        try:
            return self.read_with_etag(path)[1]
        except NotFoundError:
            return None

    def write(
        self,
        path: str,
        data: bytes,
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
        content_type: str | None = None,
    ) -> str:
        """Atomically replace ``path`` and return the new etag (``content_type`` is ignored).

        Raises ``PreconditionFailedError`` if ``if_match`` differs from the current etag or
        ``if_none_match`` is set and the blob exists.
        """
        _check_conditions(if_match, if_none_match)
        target = self._file(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f"{_TMP_PREFIX}{uuid.uuid4().hex}"
        try:
            with tmp.open("xb") as f:
                f.write(data)
                f.flush()
                # Without fsync a crash can leave the renamed file empty on ext4.
                os.fsync(f.fileno())
                etag = _local_etag(data, os.fstat(f.fileno()).st_mtime_ns)
            with self._write_lock():
                if if_none_match and target.exists():
                    raise _precondition_failed(path, None)
                if if_match is not None and self.etag(path) != if_match:
                    raise _precondition_failed(path, if_match)
                os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return etag

    def delete(self, path: str) -> None:
        """Delete ``path``; a missing blob is fine."""
        file = self._file(path)
        with self._write_lock(), contextlib.suppress(FileNotFoundError, IsADirectoryError):
            file.unlink()

    def exists(self, path: str) -> bool:
        """Tell whether ``path`` exists."""
        return self._file(path).is_file()

    def list(self, prefix: str) -> builtins.list[BlobInfo]:
        """Return the blobs under ``prefix`` sorted by path (hashes each file for its etag)."""
        container, name_prefix = _split_prefix(prefix)
        container_dir = self.root / container
        infos = []
        for folder, _dirs, files in os.walk(container_dir / name_prefix.rpartition("/")[0]):
            for file_name in files:
                name = (Path(folder) / file_name).relative_to(container_dir).as_posix()
                if file_name.startswith(_TMP_PREFIX) or not name.startswith(name_prefix):
                    continue
                try:
                    data, mtime_ns = self._read(f"{container}/{name}")
                except NotFoundError:
                    continue  # deleted while listing
                modified = datetime.fromtimestamp(mtime_ns / 1e9, tz=UTC)
                etag = _local_etag(data, mtime_ns)
                infos.append(BlobInfo(f"{container}/{name}", len(data), etag, modified))
        return sorted(infos, key=lambda info: info.path)

    @contextmanager
    def lease(self, path: str, *, seconds: int = 60) -> Iterator[Lease]:
        """Hold an exclusive lock on ``path`` for the block; ``LeaseUnavailableError`` if taken.

        The lock is held until the block ends (or the process dies), so ``seconds`` is
        only validated, to keep the Azure contract.
        """
        _check_lease_seconds(seconds)
        _split(path)
        lock_file = self.root / ".locks" / "leases" / quote(path, safe="")
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        with lock_file.open("ab") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LeaseUnavailableError(
                    f"{path}: leased by another holder ({self.describe})"
                ) from None
            with contextlib.suppress(PreconditionFailedError):
                self.write(path, b"", if_none_match=True)
            lease = _Lease(path, renew=lambda: None)
            try:
                yield lease
            finally:
                lease.released = True


def _error_code(exc: Exception) -> str | None:
    # The storage SDK sets error_code on azure-core's exceptions, which do not declare it.
    # It is a StorageErrorCode (a str enum whose str() is its name) or a plain str.
    code = getattr(exc, "error_code", None)
    if isinstance(code, Enum):
        return str(code.value)
    return None if code is None else str(code)


def _retry_policy(
    initial_backoff: int, increment_base: int, retry_total: int, random_jitter_range: int
) -> ExponentialRetry:
    from azure.storage.blob import ExponentialRetry

    # Explicit because the SDK's default waits 15 s before the first retry.
    return ExponentialRetry(
        initial_backoff=initial_backoff,
        increment_base=increment_base,
        retry_total=retry_total,
        random_jitter_range=random_jitter_range,
    )


class AzureBlobStore:
    """Blobs in an Azure Storage account (or Azurite).

    Parameters
    ----------
    service : BlobServiceClient
        A client for the account; prefer ``from_connection_string`` or ``from_service_uri``,
        which set up retries.
    container_prefix : str
        Prepended to every container name, to give tests their own containers.
    """

    def __init__(self, service: BlobServiceClient, *, container_prefix: str = "") -> None:
        self.service = service
        self.container_prefix = container_prefix

    @classmethod
    def from_connection_string(
        cls,
        conn: str,
        *,
        container_prefix: str = "",
        initial_backoff: int = 1,
        increment_base: int = 2,
        retry_total: int = 3,
        random_jitter_range: int = 1,
        **client_kwargs: Any,
    ) -> AzureBlobStore:
        """Build a store from a connection string (``UseDevelopmentStorage=true`` works).

        Parameters
        ----------
        conn : str
            The connection string.
        container_prefix : str
            See the class.
        initial_backoff, increment_base, retry_total, random_jitter_range : int
            ``ExponentialRetry`` settings, in seconds: retry ``n`` waits
            ``initial_backoff + increment_base ** n`` +- jitter, so about 3, 5 and 9 s.
        **client_kwargs
            Passed to ``BlobServiceClient`` (``transport``, ``connection_timeout``...).
        """
        from azure.storage.blob import BlobServiceClient

        retry = _retry_policy(initial_backoff, increment_base, retry_total, random_jitter_range)
        service = BlobServiceClient.from_connection_string(
            conn, retry_policy=retry, **client_kwargs
        )
        return cls(service, container_prefix=container_prefix)

    @classmethod
    def from_service_uri(
        cls,
        uri: str,
        credential: TokenCredential | None = None,
        *,
        container_prefix: str = "",
        initial_backoff: int = 1,
        increment_base: int = 2,
        retry_total: int = 3,
        random_jitter_range: int = 1,
        **client_kwargs: Any,
    ) -> AzureBlobStore:
        """Build a store with identity-based access (no account key).

        Parameters
        ----------
        uri : str
            The blob service URI, ``https://<account>.blob.core.windows.net``.
        credential : TokenCredential or None
            Defaults to ``DefaultAzureCredential()``, which covers managed identities.
        container_prefix, initial_backoff, increment_base, retry_total, random_jitter_range
            As for ``from_connection_string``.
        **client_kwargs
            As for ``from_connection_string``.
        """
        from azure.storage.blob import BlobServiceClient

        if credential is None:
            from azure.identity import DefaultAzureCredential

            credential = DefaultAzureCredential()
        retry = _retry_policy(initial_backoff, increment_base, retry_total, random_jitter_range)
        service = BlobServiceClient(uri, credential=credential, retry_policy=retry, **client_kwargs)
        return cls(service, container_prefix=container_prefix)

    @property
    def describe(self) -> str:
        """Human-readable location for logs (account and endpoint, never a key or SAS)."""
        endpoint = urlsplit(self.service.url)
        return (
            f"Azure Blob Storage account {self.service.account_name}"
            f" ({endpoint.scheme}://{endpoint.netloc})"
        )

    def _blob(self, path: str) -> BlobClient:
        container, name = _split(path)
        return self.service.get_blob_client(self.container_prefix + container, name)

    def read(self, path: str) -> bytes:
        """Return the content of ``path``; ``NotFoundError`` if it is missing."""
        return self.read_with_etag(path)[0]

    def read_with_etag(self, path: str) -> tuple[bytes, str]:
        """Return the content of ``path`` and its etag; ``NotFoundError`` if it is missing."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            # The downloader pins later chunks of a big blob to the first chunk's etag.
            downloader = self._blob(path).download_blob()
            return downloader.readall(), downloader.properties.etag
        except ResourceNotFoundError as exc:
            raise NotFoundError(f"{path}: no such blob in {self.describe}") from exc

    def etag(self, path: str) -> str | None:
        """Return the etag of ``path`` (a properties call), or None if missing."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return self._blob(path).get_blob_properties().etag
        except ResourceNotFoundError:
            return None

    def write(
        self,
        path: str,
        data: bytes,
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
        content_type: str | None = None,
    ) -> str:
        """Replace ``path`` (creating its container if needed) and return the new etag.

        Raises ``PreconditionFailedError`` if ``if_match`` differs from the current etag or
        ``if_none_match`` is set and the blob exists.
        """
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceNotFoundError
        from azure.storage.blob import ContentSettings

        _check_conditions(if_match, if_none_match)
        options: dict[str, Any] = {"overwrite": True}
        if if_match is not None:
            options.update(etag=if_match, match_condition=MatchConditions.IfNotModified)
        elif if_none_match:
            options.update(match_condition=MatchConditions.IfMissing)
        if content_type is not None:
            options.update(content_settings=ContentSettings(content_type=content_type))
        blob = self._blob(path)
        try:
            return self._upload(path, blob, data, if_match, options)
        except ResourceNotFoundError as exc:
            if if_match is not None:
                # No container means no blob, so not the expected version either.
                raise _precondition_failed(path, if_match) from exc
            if _error_code(exc) != "ContainerNotFound":
                raise
        self._create_container(blob.container_name)
        return self._upload(path, blob, data, if_match, options)

    @staticmethod
    def _upload(
        path: str, blob: BlobClient, data: bytes, if_match: str | None, options: dict[str, Any]
    ) -> str:
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError

        try:
            return str(blob.upload_blob(data, **options)["etag"])
        except (ResourceModifiedError, ResourceExistsError) as exc:
            # 412 ConditionNotMet for if_match, 409 BlobAlreadyExists for if_none_match.
            raise _precondition_failed(path, if_match) from exc

    def _create_container(self, container_name: str) -> None:
        from azure.core.exceptions import ResourceExistsError

        # Another writer may create it at the same moment; either way it exists.
        with contextlib.suppress(ResourceExistsError):
            self.service.create_container(container_name)

    def delete(self, path: str) -> None:
        """Delete ``path``; a missing blob is fine."""
        from azure.core.exceptions import ResourceNotFoundError

        with contextlib.suppress(ResourceNotFoundError):
            self._blob(path).delete_blob()

    def exists(self, path: str) -> bool:
        """Tell whether ``path`` exists."""
        return self._blob(path).exists()

    def list(self, prefix: str) -> builtins.list[BlobInfo]:
        """Return the blobs under ``prefix`` sorted by path; a missing container lists nothing."""
        from azure.core.exceptions import ResourceNotFoundError

        container, name_prefix = _split_prefix(prefix)
        client = self.service.get_container_client(self.container_prefix + container)
        try:
            blobs = builtins.list(client.list_blobs(name_starts_with=name_prefix or None))
        except ResourceNotFoundError:
            return []
        return sorted(
            (
                # Listings give etags unquoted; quote them like every other call does.
                BlobInfo(
                    path=f"{container}/{blob.name}",
                    size=blob.size,
                    etag=blob.etag if blob.etag.startswith('"') else f'"{blob.etag}"',
                    last_modified=blob.last_modified,
                )
                for blob in blobs
            ),
            key=lambda info: info.path,
        )

    @contextmanager
    def lease(self, path: str, *, seconds: int = 60) -> Iterator[Lease]:
        """Hold a blob lease of ``seconds`` (15-60) on ``path`` for the block.

        Raises ``LeaseUnavailableError`` if another holder has it. Call ``renew()`` more
        often than every ``seconds`` during long work; a crashed holder's lease expires.
        """
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        _check_lease_seconds(seconds)
        try:
            client = self._acquire(path, seconds)
        except ResourceNotFoundError:
            # First use of this lock: create the empty lock blob; losing that race is fine.
            with contextlib.suppress(PreconditionFailedError):
                self.write(path, b"", if_none_match=True)
            client = self._acquire(path, seconds)
        lease = _Lease(path, renew=functools.partial(self._renew, path, client))
        try:
            yield lease
        finally:
            lease.released = True
            try:
                client.release()
            except AzureError as exc:  # HTTP errors and lost connections alike
                # It expires by itself within `seconds`; failing finished work over it is worse.
                _LOG.warning("could not release the lease on %s: %s", path, exc)

    def _acquire(self, path: str, seconds: int) -> BlobLeaseClient:
        from azure.core.exceptions import ResourceExistsError

        try:
            return self._blob(path).acquire_lease(lease_duration=seconds)
        except ResourceExistsError as exc:
            if _error_code(exc) == "LeaseAlreadyPresent":
                raise LeaseUnavailableError(
                    f"{path}: leased by another holder ({self.describe})"
                ) from exc
            raise

    @staticmethod
    def _renew(path: str, client: BlobLeaseClient) -> None:
        from azure.core.exceptions import HttpResponseError

        try:
            client.renew()
        except HttpResponseError as exc:
            if exc.status_code == 409:  # another holder took it after it expired
                raise LeaseUnavailableError(
                    f"{path}: the lease was lost ({_error_code(exc)})"
                ) from exc
            raise


def _identity_credential(environ: Mapping[str, str], name: str) -> TokenCredential:
    kind = environ.get(f"{name}__credential", "").strip()
    if kind and kind.lower() != "managedidentity":
        raise ConfigurationError(
            f"setting {name}__credential={kind!r} is not supported: use 'managedidentity' or unset"
        )
    from azure.identity import DefaultAzureCredential

    client_id = environ.get(f"{name}__clientId", "").strip()
    if client_id:
        return DefaultAzureCredential(managed_identity_client_id=client_id)
    # Not passing None: that would override DefaultAzureCredential's AZURE_CLIENT_ID fallback.
    return DefaultAzureCredential()


def store_from_settings(
    *,
    connection_name: str = "AzureWebJobsStorage",
    local_root: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> BlobStore:
    """Build the store from app settings, following the Azure Functions conventions.

    In order: ``<connection_name>`` as a connection string (``UseDevelopmentStorage=true``
    means Azurite on 127.0.0.1:10000); ``<connection_name>__serviceUri``,
    ``__blobServiceUri`` or ``__accountName`` for identity-based access, honouring
    ``__credential=managedidentity`` and ``__clientId``; then ``local_root``.

    Parameters
    ----------
    connection_name : str
        The setting's name.
    local_root : Path or None
        Folder for a ``LocalFolderStore`` when no Azure setting is present.
    environ : Mapping[str, str] or None
        The settings; ``os.environ`` (read now) by default.

    Raises
    ------
    ConfigurationError
        Nothing is configured, or a setting is invalid; the message names the settings.
    """
    env = os.environ if environ is None else environ
    name = connection_name
    conn = env.get(name, "").strip()
    if conn:
        try:
            return AzureBlobStore.from_connection_string(conn)
        except ValueError as exc:  # the SDK's message does not repeat the string (or its key)
            raise ConfigurationError(
                f"setting {name} is not a valid storage connection string: {exc}"
            ) from exc
    uri = (
        env.get(f"{name}__serviceUri", "").strip() or env.get(f"{name}__blobServiceUri", "").strip()
    )
    account = env.get(f"{name}__accountName", "").strip()
    if not uri and account:
        uri = f"https://{account}.blob.core.windows.net"
    if uri:
        return AzureBlobStore.from_service_uri(uri, _identity_credential(env, name))
    if local_root is not None:
        return LocalFolderStore(local_root)
    raise ConfigurationError(
        f"no blob storage configured: set {name} (a connection string, or"
        f" UseDevelopmentStorage=true for Azurite), or {name}__serviceUri,"
        f" {name}__blobServiceUri or {name}__accountName for identity-based access"
    )
