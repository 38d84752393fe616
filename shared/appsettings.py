"""What the adapters take from the environment, read in one place.

The Functions app (:mod:`shared.runtime`) and the command line each build one
:class:`AppSettings` from the environment and pass what the use cases need: the
configuration, the store, the Azure ML registrar. Nothing else in ``shared`` reads
the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from shared.settings import Config, load_config

if TYPE_CHECKING:
    from shared.jobs import JobSettings
    from shared.pipeline import Registrar
    from shared.storage import BlobStore


class AppSettings(BaseModel):
    """A snapshot of the app settings (the environment) when the adapter started."""

    model_config = ConfigDict(frozen=True)

    config_file: str | None = None  # TR_CONFIG: the TOML configuration
    local_store: str | None = None  # TR_LOCAL_STORE: a local folder instead of blob storage
    connection_string: str | None = None  # TR_CONNECTION_STRING (the CLI's default)
    # Everything, for the settings named by convention: <connection>, <connection>__serviceUri,
    # AZURE_ML_* (the storage factory and Azure ML read them from here).
    environ: dict[str, str] = {}

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> AppSettings:
        """Read the environment (``os.environ`` unless given) once."""
        env = dict(os.environ if environ is None else environ)
        return cls(
            config_file=env.get("TR_CONFIG") or None,
            local_store=env.get("TR_LOCAL_STORE") or None,
            connection_string=env.get("TR_CONNECTION_STRING") or None,
            environ=env,
        )

    def config(self, path: Path | str | None = None) -> Config:
        """The configuration: ``path``, else ``TR_CONFIG``, else the defaults."""
        return load_config(path if path is not None else self.config_file)

    def store(self, connection_name: str, local_root: Path | None = None) -> BlobStore:
        """The store the settings name (see :func:`shared.storage.store_from_settings`)."""
        from shared.storage import store_from_settings

        return store_from_settings(
            connection_name=connection_name, local_root=local_root, environ=self.environ
        )

    def jobs(self) -> JobSettings:
        """Where the retrain runs (``RETRAIN_RUNNER``) and how an Azure ML job is built."""
        from shared.jobs import JobSettings

        return JobSettings.from_environ(self.environ)

    @property
    def job_name(self) -> str | None:
        """The Azure ML job this process runs in (``AZUREML_RUN_ID``), if any."""
        return self.environ.get("AZUREML_RUN_ID") or None

    def registrar(self) -> Registrar:
        """Registration in Azure ML after a publish (a no-op when not configured)."""
        from shared.azureml import registrar

        return registrar(self.environ)


def pass_to_child_processes(settings: Mapping[str, str]) -> None:
    """Set app settings for the processes started from now on (``serve --workers``)."""
    os.environ.update(settings)
