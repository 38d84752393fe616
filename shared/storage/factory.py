"""The store the app settings describe, by the Azure Functions conventions."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from shared.errors import (
    ConfigurationError,
)
from shared.storage.azure import AzureBlobStore, identity_credential
from shared.storage.base import BlobStore
from shared.storage.local import LocalFolderStore


def store_from_settings(
    *,
    connection_name: str = "AzureWebJobsStorage",
    local_root: Path | None = None,
    environ: Mapping[str, str],
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
    environ : Mapping[str, str]
        The app settings (:class:`shared.appsettings.AppSettings` reads them once).

    Raises
    ------
    ConfigurationError
        Nothing is configured, or a setting is invalid; the message names the settings.
    """
    env = environ
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
        return AzureBlobStore.from_service_uri(uri, identity_credential(env, name))
    if local_root is not None:
        return LocalFolderStore(local_root)
    raise ConfigurationError(
        f"no blob storage configured: set {name} (a connection string, or"
        f" UseDevelopmentStorage=true for Azurite), or {name}__serviceUri,"
        f" {name}__blobServiceUri or {name}__accountName for identity-based access"
    )
