"""Blob storage behind one small interface: a local folder or Azure Blob Storage.

A path is ``"container/blob/name"``: the first segment names the container
(``hr-extracts/users/2026-11.csv``, ``models/current.json``). Both stores keep the
same contract, so the rest of the app and its tests do not care which one they get.

The Azure SDK is imported only when an Azure store is built or used: the Functions
host imports this module on every cold start.
"""

from shared.storage.azure import AzureBlobStore
from shared.storage.base import (
    MAX_LEASE_SECONDS,
    MIN_LEASE_SECONDS,
    BlobInfo,
    BlobStore,
    Lease,
    Readable,
)
from shared.storage.factory import store_from_settings
from shared.storage.local import LocalFolderStore

__all__ = [
    "MAX_LEASE_SECONDS",
    "MIN_LEASE_SECONDS",
    "AzureBlobStore",
    "BlobInfo",
    "BlobStore",
    "Lease",
    "LocalFolderStore",
    "Readable",
    "store_from_settings",
]
