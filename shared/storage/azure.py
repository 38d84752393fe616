"""Azure Blob Storage (or Azurite). The Azure SDK is imported only when a store is built
or used: the Functions host imports the storage package on every cold start."""

from __future__ import annotations

import builtins
import contextlib
import functools
import io
import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from enum import Enum
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import urlsplit

from shared.errors import (
    ConfigurationError,
    LeaseUnavailableError,
    NotFoundError,
    PreconditionFailedError,
)

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.storage.blob import BlobClient, BlobLeaseClient, BlobServiceClient, ExponentialRetry

from shared.storage.base import (
    BlobInfo,
    HeldLease,
    Lease,
    check_conditions,
    check_lease_seconds,
    precondition_failed,
    split_path,
    split_prefix,
)

_LOG = logging.getLogger(__name__)


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
        container, name = split_path(path)
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
        data: bytes | BinaryIO,
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

        check_conditions(if_match, if_none_match)
        options: dict[str, Any] = {"overwrite": True}
        if if_match is not None:
            options.update(etag=if_match, match_condition=MatchConditions.IfNotModified)
        elif if_none_match:
            options.update(match_condition=MatchConditions.IfMissing)
        if content_type is not None:
            options.update(content_settings=ContentSettings(content_type=content_type))
        blob = self._blob(path)
        start = None
        if not isinstance(data, bytes | bytearray | memoryview):
            # The length is signed with the request: from the file's position to its end.
            start = data.tell()
            options["length"] = data.seek(0, io.SEEK_END) - start
            data.seek(start)
        try:
            return self._upload(path, blob, data, if_match, options)
        except ResourceNotFoundError as exc:
            if if_match is not None:
                # No container means no blob, so not the expected version either.
                raise precondition_failed(path, if_match) from exc
            if _error_code(exc) != "ContainerNotFound":
                raise
        self._create_container(blob.container_name)
        if start is not None and not isinstance(data, bytes | bytearray | memoryview):
            data.seek(start)  # a file: send it again from where it started
        return self._upload(path, blob, data, if_match, options)

    @staticmethod
    def _upload(
        path: str,
        blob: BlobClient,
        data: bytes | BinaryIO,
        if_match: str | None,
        options: dict[str, Any],
    ) -> str:
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError

        try:
            return str(blob.upload_blob(data, **options)["etag"])
        except (ResourceModifiedError, ResourceExistsError) as exc:
            # 412 ConditionNotMet for if_match, 409 BlobAlreadyExists for if_none_match.
            raise precondition_failed(path, if_match) from exc

    def _create_container(self, container_name: str) -> None:
        from azure.core.exceptions import ResourceExistsError

        # Another writer may create it at the same moment; either way it exists.
        with contextlib.suppress(ResourceExistsError):
            self.service.create_container(container_name)

    def blob(self, path: str) -> AzureReadable:
        """The current version of ``path``, to read as a stream (a properties call now)."""
        return AzureReadable(self._blob(path), path, self.describe)

    def copy(self, source: str, target: str, *, source_etag: str | None = None) -> str:
        """Copy ``source`` over ``target`` server-side (Copy Blob, authorized as this
        store's requests are: same account), waiting until the copy is complete."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        options: dict[str, Any] = {}
        if source_etag is not None:
            options.update(
                source_etag=source_etag, source_match_condition=MatchConditions.IfNotModified
            )
        destination = self._blob(target)
        for attempt in range(2):
            try:
                copied = destination.start_copy_from_url(self._blob(source).url, **options)
                break
            except ResourceModifiedError as exc:
                message = f"{source}: not copied: it is no longer at etag {source_etag}"
                raise PreconditionFailedError(message) from exc
            except ResourceNotFoundError as exc:
                if _error_code(exc) != "ContainerNotFound" or attempt:
                    raise NotFoundError(f"{source}: no such blob in {self.describe}") from exc
                self._create_container(destination.container_name)
        status, etag = str(copied["copy_status"]), str(copied["etag"])
        while status == "pending":  # within one account: seconds, even for large blobs
            time.sleep(COPY_POLL_SECONDS)
            properties = destination.get_blob_properties()
            status, etag = str(properties.copy.status), str(properties.etag)
        if status != "success":
            raise OSError(f"copying {source} to {target} ended {status}")
        return etag

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

        container, name_prefix = split_prefix(prefix)
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

        check_lease_seconds(seconds)
        try:
            client = self._acquire(path, seconds)
        except ResourceNotFoundError:
            # First use of this lock: create the empty lock blob; losing that race is fine.
            with contextlib.suppress(PreconditionFailedError):
                self.write(path, b"", if_none_match=True)
            client = self._acquire(path, seconds)
        lease = HeldLease(path, renew=functools.partial(self._renew, path, client))
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


class AzureReadable:
    """One version of a blob, read as a stream downloaded a chunk at a time.

    Built from the store, or from the ``BlobClient`` a blob trigger binds (the
    ``azurefunctions-extensions-bindings-blob`` SDK type): either way only the blob's
    properties are read until ``open()`` is read from.
    """

    def __init__(self, client: BlobClient, path: str | None = None, where: str = "") -> None:
        from azure.core.exceptions import ResourceNotFoundError

        self.client = client
        self.path = path or f"{client.container_name}/{client.blob_name}"
        try:
            properties = client.get_blob_properties()
        except ResourceNotFoundError as exc:
            raise NotFoundError(f"{self.path}: no such blob in {where or client.url}") from exc
        self.size: int = properties.size
        self.etag: str = properties.etag

    def open(self) -> BinaryIO:
        return io.BufferedReader(_Chunks(self), buffer_size=READ_PIECE)


READ_PIECE = 4 * 1024 * 1024  # the SDK's download chunk size
COPY_POLL_SECONDS = 0.5


class _Chunks(io.RawIOBase):
    """A blob's bytes downloaded a range of ``READ_PIECE`` at a time (one GET each, pinned
    to the version first found), seekable: only the range in hand is held.

    Ranges rather than ``download_blob().chunks()``: a bound client's first chunk is its
    ``max_single_get_size`` (32 MiB by default), a whole file of a million rows.
    """

    def __init__(self, blob: AzureReadable) -> None:
        self.blob = blob
        self.position = 0
        self.chunk, self.chunk_start = b"", 0  # the range in hand, and where it starts

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.blob.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if self.position >= self.blob.size:
            return 0
        if not self.chunk_start <= self.position < self.chunk_start + len(self.chunk):
            self.chunk_start, self.chunk = self.position, self._download(self.position)
        at = self.position - self.chunk_start
        piece = memoryview(self.chunk)[at : at + len(buffer)]
        buffer[: len(piece)] = piece
        self.position += len(piece)
        return len(piece)

    def _download(self, offset: int) -> bytes:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError

        blob = self.blob
        try:
            return blob.client.download_blob(
                offset=offset,
                length=min(READ_PIECE, blob.size - offset),
                etag=blob.etag,
                match_condition=MatchConditions.IfNotModified,
            ).readall()
        except ResourceModifiedError as exc:
            message = f"{blob.path}: changed while it was read (no longer at etag {blob.etag})"
            raise PreconditionFailedError(message) from exc


def identity_credential(environ: Mapping[str, str], name: str) -> TokenCredential:
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
