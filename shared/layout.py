"""Where everything lives in blob storage, and the small pointers that say what is current.

Blob layout (the first path segment is the container)::

    hr-extracts/<kind>/<file>.csv                 dropped by HR (the blob trigger)
    hr-extracts-rejected/<kind>/<file>.csv        a bad drop, moved here ...
    hr-extracts-rejected/<kind>/<file>.error.json ... with what is wrong and where
    extracts/<kind>/<stamp>-<sha>.csv             accepted copies (+ .report.json)
    extracts/current.json                         the current extract of each kind
    models/<version>/model.npz, model.json        published bundles (+ card.json, card.html)
    models/rejected/<version>/...                 candidates the gate refused
    models/current.json                           the serving model
    recommendations/<version>/top.npz, recommendations.csv, meta.json
    recommendations/current.json                  the serving recommendations
    recommendations/first-seen.json               when each training first appeared
    locks/retrain                                 leased while a retrain runs
    locks/retrain-job.json                        the last Azure ML retrain job (shared.jobs)

Every output is written under a new name first; only then does the small
``current.json`` pointer move, with a conditional write on the ETag it was read
with. A failure anywhere leaves the previous pointer, hence the previous version,
serving.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from shared.errors import NotFoundError
from shared.storage import BlobStore

DROP_CONTAINER = "hr-extracts"
REJECTED_CONTAINER = "hr-extracts-rejected"
EXTRACTS_POINTER = "extracts/current.json"
MODELS_POINTER = "models/current.json"
RECOMMENDATIONS_POINTER = "recommendations/current.json"
RETRAIN_LOCK = "locks/retrain"
RETRAIN_JOB = "locks/retrain-job.json"
FIRST_SEEN = "recommendations/first-seen.json"


def utc_now() -> str:
    """The time stamps of pointers and reports: UTC, to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def json_bytes(data: Any) -> bytes:
    """The JSON of pointers, metadata and reports: indented, keys sorted."""
    return json.dumps(data, indent=2, sort_keys=True, default=str).encode()


def read_pointer(store: BlobStore, path: str) -> tuple[dict[str, Any], str | None]:
    """A pointer's content and ETag; ``({}, None)`` when it does not exist yet."""
    try:
        data, etag = store.read_with_etag(path)
    except NotFoundError:
        return {}, None
    content: dict[str, Any] = json.loads(data)
    return content, etag


def move_pointer(store: BlobStore, path: str, content: dict[str, Any], etag: str | None) -> None:
    """Move a pointer only if nobody moved it since it was read (raises otherwise)."""
    data = json_bytes(content)
    if etag is None:
        store.write(path, data, if_none_match=True, content_type="application/json")
    else:
        store.write(path, data, if_match=etag, content_type="application/json")


def describe_damage(npz: bytes, exc: Exception) -> str:
    """Say plainly when a file is not an .npz archive at all (numpy's own message
    suggests loading it with pickle enabled, which is exactly what must not be done)."""
    if not npz.startswith(b"PK\x03\x04"):
        return "not an .npz archive (damaged or overwritten)"
    return str(exc)
