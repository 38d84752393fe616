"""The contract both stores keep: paths, the ``BlobStore`` and ``Lease`` protocols, and the
checks they share (so a path that works locally works on Azure)."""

from __future__ import annotations

import builtins
import re
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO, Protocol

from shared.errors import (
    LeaseUnavailableError,
    PreconditionFailedError,
)

# Azure's rule for container names: 3-63 of a-z, 0-9 and single hyphens inside.
_CONTAINER_RE = re.compile(r"[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]")
# Temporary files of LocalFolderStore start with this; paths may not, so they never collide.
TMP_PREFIX = ".tmp-"
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


class Readable(Protocol):
    """One version of a blob, to read as a stream (see ``BlobStore.blob``)."""

    @property
    def path(self) -> str:
        """``"container/blob/name"``."""
        ...

    @property
    def size(self) -> int:
        """Size in bytes, known before anything is read."""
        ...

    @property
    def etag(self) -> str:
        """The version read, as ``BlobStore.etag`` returns it."""
        ...

    def open(self) -> BinaryIO:
        """A seekable binary stream of this version, read a piece at a time.

        Reading a newer version raises ``PreconditionFailedError``.
        """
        ...


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
        data: bytes | BinaryIO,
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
        content_type: str | None = None,
    ) -> str:
        """Replace the content and return the new etag.

        ``data`` is bytes, or a binary file read from its position to its end in pieces
        (a large export is never held whole).

        ``if_match`` writes only if the current etag equals it and ``if_none_match``
        only if the blob does not exist; otherwise ``PreconditionFailedError``.
        """
        ...

    def blob(self, path: str) -> Readable:
        """The current version of ``path``, to read as a stream; ``NotFoundError`` if it
        is missing. Only its properties are read now."""
        ...

    def copy(self, source: str, target: str, *, source_etag: str | None = None) -> str:
        """Copy ``source`` over ``target`` within the store, without reading it here (a
        server-side copy on Azure); return the new etag.

        ``source_etag`` copies only that version of ``source``, else
        ``PreconditionFailedError``; a missing ``source`` is ``NotFoundError``.
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
def split_path(path: str) -> tuple[str, str]:
    container, _, name = path.partition("/")
    segments = name.split("/")
    if (
        not _CONTAINER_RE.fullmatch(container)
        or "\\" in path
        or "\0" in path
        or any(s in ("", ".", "..") or s.startswith(TMP_PREFIX) for s in segments)
    ):
        raise ValueError(
            f"invalid blob path {path!r}: expected 'container/blob/name' with a container of"
            " 3-63 lowercase letters, digits or hyphens, and no empty, '.' or '..' segments"
        )
    return container, name


def split_prefix(prefix: str) -> tuple[str, str]:
    container, _, name_prefix = prefix.partition("/")
    segments = name_prefix.split("/")
    if not _CONTAINER_RE.fullmatch(container) or any(s in (".", "..") for s in segments):
        raise ValueError(
            f"invalid list prefix {prefix!r}: expected 'container/' or 'container/name-prefix'"
            " with no '.' or '..' segments"
        )
    return container, name_prefix


def check_conditions(if_match: str | None, if_none_match: bool) -> None:
    if if_match is not None and if_none_match:
        raise ValueError("write: give if_match or if_none_match, not both")


def check_lease_seconds(seconds: int) -> None:
    if not MIN_LEASE_SECONDS <= seconds <= MAX_LEASE_SECONDS:
        raise ValueError(
            f"lease of {seconds} s: must be {MIN_LEASE_SECONDS}-{MAX_LEASE_SECONDS} s"
            " (Azure's limits); call renew() to hold it longer"
        )


def precondition_failed(path: str, if_match: str | None) -> PreconditionFailedError:
    if if_match is not None:
        return PreconditionFailedError(
            f"{path}: not written: it is no longer at etag {if_match} (changed by another writer)"
        )
    return PreconditionFailedError(f"{path}: not written: it already exists")


# `renew` is a callback so both stores share the released check.
class HeldLease:
    def __init__(self, path: str, renew: Callable[[], None]) -> None:
        self.path = path
        self._renew = renew
        self.released = False

    def renew(self) -> None:
        if self.released:
            raise LeaseUnavailableError(f"{self.path}: the lease was already released")
        self._renew()
