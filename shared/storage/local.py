"""A local folder as blob storage: development, the CLI and the demo."""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import hashlib
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

from shared.errors import (
    LeaseUnavailableError,
    NotFoundError,
    PreconditionFailedError,
)
from shared.storage.base import (
    TMP_PREFIX,
    BlobInfo,
    HeldLease,
    Lease,
    check_conditions,
    check_lease_seconds,
    precondition_failed,
    split_path,
    split_prefix,
)


def _local_etag(data: bytes, mtime_ns: int) -> str:
    return _etag_of(hashlib.blake2b(data, digest_size=16), mtime_ns)


def _etag_of(digest: Any, mtime_ns: int) -> str:
    # The content hash catches rewrites within one mtime tick (Linux's clock is coarse).
    digest.update(mtime_ns.to_bytes(8, "big"))
    return f'"{digest.hexdigest()}"'


PIECE = 4 * 1024 * 1024


def _pieces(data: bytes | BinaryIO) -> Iterator[bytes]:
    """``data`` itself, or a file's content from its position, 4 MiB at a time."""
    if isinstance(data, bytes | bytearray | memoryview):
        yield bytes(data)
        return
    while piece := data.read(PIECE):
        yield piece


class LocalReadable:
    """One version of a file of the store: its size and modification time when found."""

    def __init__(self, path: str, file: Path) -> None:
        self.path, self.file = path, file
        stat = file.stat()
        self.size, self.mtime_ns = stat.st_size, stat.st_mtime_ns

    @cached_property
    def etag(self) -> str:
        digest = hashlib.blake2b(digest_size=16)
        with self.open() as f:
            for piece in _pieces(f):
                digest.update(piece)
        return _etag_of(digest, self.mtime_ns)

    def open(self) -> BinaryIO:
        f = self.file.open("rb")
        if os.fstat(f.fileno()).st_mtime_ns != self.mtime_ns:  # replaced since found
            f.close()
            raise PreconditionFailedError(f"{self.path}: changed since it was found")
        return f


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
        container, name = split_path(path)
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
        data: bytes | BinaryIO,
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
        content_type: str | None = None,
    ) -> str:
        """Atomically replace ``path`` and return the new etag (``content_type`` is ignored).

        Raises ``PreconditionFailedError`` if ``if_match`` differs from the current etag or
        ``if_none_match`` is set and the blob exists.
        """
        check_conditions(if_match, if_none_match)
        target = self._file(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f"{TMP_PREFIX}{uuid.uuid4().hex}"
        try:
            with tmp.open("xb") as f:
                digest = hashlib.blake2b(digest_size=16)
                for piece in _pieces(data):
                    f.write(piece)
                    digest.update(piece)
                f.flush()
                # Without fsync a crash can leave the renamed file empty on ext4.
                os.fsync(f.fileno())
                etag = _etag_of(digest, os.fstat(f.fileno()).st_mtime_ns)
            with self._write_lock():
                if if_none_match and target.exists():
                    raise precondition_failed(path, None)
                if if_match is not None and self.etag(path) != if_match:
                    raise precondition_failed(path, if_match)
                os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return etag

    def blob(self, path: str) -> LocalReadable:
        """The current version of ``path``, to read as a stream."""
        file = self._file(path)
        if not file.is_file():
            raise NotFoundError(f"{path}: no such blob in {self.describe}")
        return LocalReadable(path, file)

    def copy(self, source: str, target: str, *, source_etag: str | None = None) -> str:
        """Copy ``source`` over ``target`` a piece at a time."""
        blob = self.blob(source)
        if source_etag is not None and blob.etag != source_etag:
            raise PreconditionFailedError(
                f"{source}: not copied: it is no longer at etag {source_etag}"
            )
        with blob.open() as f:
            return self.write(target, f)

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
        container, name_prefix = split_prefix(prefix)
        container_dir = self.root / container
        infos = []
        for folder, _dirs, files in os.walk(container_dir / name_prefix.rpartition("/")[0]):
            for file_name in files:
                name = (Path(folder) / file_name).relative_to(container_dir).as_posix()
                if file_name.startswith(TMP_PREFIX) or not name.startswith(name_prefix):
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
        check_lease_seconds(seconds)
        split_path(path)
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
            lease = HeldLease(path, renew=lambda: None)
            try:
                yield lease
            finally:
                lease.released = True
