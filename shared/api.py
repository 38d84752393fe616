"""The HTTP API (FastAPI): precomputed and on-the-fly recommendations, model status.

Runs under ``func.AsgiFunctionApp`` in Azure and under uvicorn locally. The store
is resolved on the first request, not at import, so that a missing setting shows
up as a clear 503 rather than as "0 functions loaded".
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.errors import NoModelError, NotFoundError, TrainingRecommenderError
from shared.rules import UnknownFilterError, parse_filters
from shared.serving import (
    ServingCache,
    Snapshot,
    contract_of,
    has_history,
    rank_trainings,
    recommend_known,
    recommend_new,
    similar_trainings,
)
from shared.settings import Config, DataContract
from shared.storage import BlobStore

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$"
MAX_ATTRIBUTES = 50
MAX_VALUES = 100


class Contribution(BaseModel):
    attribute: str
    value: str
    contribution: float


class TrainingTaken(BaseModel):
    training_id: str
    title: str
    contribution: float


class Explanation(BaseModel):
    text: str = Field(description="the reason in plain words")
    employee_attributes: list[Contribution]
    training_attributes: list[Contribution]
    trainings_taken: list[TrainingTaken] = Field(
        default_factory=list, description="trainings the employee took that led to this one"
    )


class Training(BaseModel):
    rank: int
    training_id: str
    title: str
    attributes: dict[str, str]
    score: float
    pinned: bool = Field(False, description="put first by a business rule")
    explanation: Explanation | None = None


class RankedTraining(Training):
    taken: bool = Field(description="the employee already took it")
    recommendable: bool = Field(description="neither taken, retired nor excluded")


FilterValues = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=200)]], Field(min_length=1, max_length=50)
]
Filters = Annotated[
    dict[Annotated[str, Field(min_length=1, max_length=64)], FilterValues],
    Field(
        max_length=20,
        description="training attribute -> accepted values, e.g. "
        '{"provider": ["internal"], "level": ["beginner", "intermediate"]}',
    ),
]
AttributeValues = dict[
    Annotated[str, Field(min_length=1, max_length=64)],
    Annotated[str, Field(max_length=1000)]
    | Annotated[list[Annotated[str, Field(max_length=200)]], Field(max_length=MAX_VALUES)],
]


class Versions(BaseModel):
    model_version: str
    data_version: str
    recommendations_version: str


SCORER_DESCRIPTION = (
    "what ranked this answer: 'model', the model with a popularity prior ('model + "
    "popularity', 'model + department popularity'), or a baseline alone ('popularity', "
    "'department popularity'), as chosen on held-out data for employees with a history "
    "and for new employees"
)


class EmployeeRecommendations(Versions):
    employee_id: str
    scorer: str = Field(description=SCORER_DESCRIPTION)
    trainings: list[Training]


class NewEmployee(BaseModel):
    """A new employee's attributes, keyed by the employees extract's column names."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {
                    "attributes": {
                        "ou": "development",
                        "skills": ["python", "sql"],
                        "language": "english",
                        "grade": "G3",
                        "career interests": "data",
                    },
                    "n": 10,
                }
            ]
        },
    )

    attributes: AttributeValues = Field(max_length=MAX_ATTRIBUTES)
    n: int = Field(10, ge=1)
    taken_training_ids: list[Annotated[str, Field(max_length=64)]] = Field(
        default_factory=list,
        max_length=1000,
        description="trainings the employee already took: they shape the list and are never "
        "recommended (an employee of the extracts posted with their attributes and these "
        "gets their precomputed list)",
    )
    exclude_training_ids: list[Annotated[str, Field(max_length=64)]] = Field(
        default_factory=list,
        max_length=1000,
        description="trainings never to recommend (e.g. already assigned); they do not shape "
        "the list (use taken_training_ids for what the employee took)",
    )
    filters: Filters = Field(default_factory=dict)
    explain: bool = Field(False, description="add the reasons of each recommendation")


class RankRequest(BaseModel):
    """An employee (by id, or by attributes for a new one) and the trainings to order."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [{"employee_id": "000123", "training_ids": ["T00001", "T00042"]}]
        },
    )

    employee_id: Annotated[str, Field(pattern=ID_PATTERN)] | None = None
    attributes: AttributeValues | None = Field(None, max_length=MAX_ATTRIBUTES)
    training_ids: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        min_length=1, max_length=1000
    )
    explain: bool = False


class RankResponse(Versions):
    scorer: str = Field(description=SCORER_DESCRIPTION)
    trainings: list[RankedTraining]
    unknown_training_ids: list[str] = Field(description="ids not in the model's catalog")
    ignored_values: list[str]


class NewEmployeeRecommendations(Versions):
    scorer: str = Field(description=SCORER_DESCRIPTION)
    trainings: list[Training]
    ignored_values: list[str] = Field(description="attribute values the model has never seen")
    unknown_training_ids: list[str] = Field(
        default_factory=list, description="taken trainings not in the model's catalog (ignored)"
    )


class SimilarTrainings(Versions):
    training_id: str
    scorer: str = Field("similarity", description="cosine of the trainings' representations")
    trainings: list[Training]


class Scorers(BaseModel):
    known: str = Field(description="the scorer of employees with a history")
    new: str = Field(description="the scorer of new employees (no training taken yet)")


class Health(BaseModel):
    status: str
    versions: Versions | None = None
    scorers: Scorers | None = None
    model_age_seconds: float | None = None
    recommendations_age_seconds: float | None = None
    last_error: str | None = None


FilterQuery = Annotated[
    tuple[str, ...],
    Query(
        max_length=20,
        description="attribute:value[,value…], repeatable, e.g. provider:internal",
        json_schema_extra={"items": {"type": "string", "pattern": r"^[^:]{1,64}:.{1,500}$"}},
    ),
]


def query_filters(raw: tuple[str, ...]) -> dict[str, list[str]]:
    """``filter=provider:internal&filter=level:beginner,intermediate`` → attribute -> values."""
    return parse_filters(raw, ":", "filter")


def _age(timestamp: Any) -> float | None:
    try:
        return round(time.time() - datetime.fromisoformat(str(timestamp)).timestamp(), 1)
    except ValueError:
        return None


class BodyLimit:
    """ASGI middleware: bodies are JSON and at most ``limit`` bytes, declared or streamed.

    The body is read here, up to the limit, and replayed to the app: FastAPI turns
    any exception raised while it reads into a 400, so refusing (413) must happen
    before. Bodies are small (64 KiB by default), so buffering costs nothing.
    """

    def __init__(self, app: ASGIApp, limit: Callable[[], int]) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        kind = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if kind != b"application/json":
            shown = kind.decode("latin-1")[:100]
            await _refuse(send, 415, f"Content-Type must be application/json, got {shown!r}")
            return
        limit = self.limit()
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _refuse(send, 413, f"request body over {limit} bytes")
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > limit:
                await _refuse(send, 413, f"request body over {limit} bytes")
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)


async def _refuse(send: Send, status: int, detail: str) -> None:
    response = JSONResponse({"detail": detail}, status_code=status)
    await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


class ErrorResponse(BaseModel):
    """Every error: one sentence, or (422 from validation) the list of what is wrong."""

    detail: str | list[dict[str, Any]]


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in (
        (400, "body cannot be parsed"),
        (404, "unknown employee or training"),
        (413, "request body too large"),
        (415, "not JSON"),
        (422, "invalid parameter or body"),
        (503, "nothing published yet, or storage unavailable"),
    )
}


def create_app(
    store: BlobStore | Callable[[], BlobStore] | None = None, config: Config | None = None
) -> FastAPI:
    """The FastAPI app over a store (or a factory of one; default: the app settings)."""
    app = FastAPI(
        title="Training Recommender",
        version="1.0",
        description="Recommendations of internal and external trainings for employees.",
        responses=ERRORS,
    )
    state: dict[str, Any] = {}
    app.add_middleware(BodyLimit, limit=lambda: settings().serving.max_body_bytes)
    if config is not None and config.serving.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(config.serving.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["content-type", "x-functions-key"],
        )

    def settings() -> Config:
        if "config" not in state:
            from shared.settings import load_config

            state["config"] = config or load_config()
        result: Config = state["config"]
        return result

    def cache() -> ServingCache:
        if "cache" not in state:
            if store is None:
                from shared.runtime import app_store

                resolved = app_store()
            else:
                resolved = store() if callable(store) else store
            state["cache"] = ServingCache(
                resolved, settings().serving.refresh_seconds, settings().rules
            )
        result: ServingCache = state["cache"]
        return result

    def snapshot() -> Snapshot:
        return cache().current()

    def check_n(n: int) -> int:
        limit = settings().serving.max_n
        if n > limit:
            raise HTTPException(422, f"n={n} is above the maximum of {limit}")
        return n

    def check_attributes(snap: Snapshot, attributes: dict[str, Any]) -> DataContract:
        contract = contract_of(snap, settings())
        known = set(contract.users.features)
        unknown = sorted(set(attributes) - known)
        if unknown:
            raise HTTPException(
                422, f"unknown attribute(s) {unknown}; the model uses {sorted(known)}"
            )
        return contract

    @app.exception_handler(UnknownFilterError)
    async def bad_filter(_: Request, exc: UnknownFilterError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        # Only where and what: echoing the input could hold NaN (not JSON) or 64 KiB.
        errors = [
            {
                "type": str(e.get("type")),
                "loc": [str(p) for p in e.get("loc", ())],
                "msg": e.get("msg"),
            }
            for e in exc.errors()
        ]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(NoModelError)
    async def no_model(_: Request, exc: NoModelError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503)

    @app.exception_handler(NotFoundError)
    async def not_found(_: Request, exc: NotFoundError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(TrainingRecommenderError)
    async def unavailable(_: Request, exc: TrainingRecommenderError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503)

    @app.get("/recommendations/{employee_id}", response_model=EmployeeRecommendations)
    async def get_recommendations(
        employee_id: Annotated[str, Path(pattern=ID_PATTERN, description="the employee's id")],
        n: Annotated[int, Query(ge=1, description="how many trainings")] = 10,
        filter: FilterQuery = (),
        explain: Annotated[bool, Query(description="add the reasons")] = False,
    ) -> Response:
        """An employee's recommendations: trainings taken, retired or excluded never appear.

        Filters keep trainings whose attribute has one of the given values:
        `filter=provider:internal&filter=level:beginner,intermediate`.
        """
        # The hot path. A precomputed answer costs a fraction of a millisecond, less
        # than the hop to a worker thread, so it is computed on the event loop; only
        # storage I/O (a due pointer check, the first load) goes to a thread. The dict
        # is built to the response model already: returned as JSON without re-validation.
        check_n(n)
        snap = cache().ready()
        if snap is None:
            snap = await run_in_threadpool(snapshot)
        trainings = recommend_known(
            snap, employee_id, n, filters=query_filters(filter), explain=explain
        )
        scorer = snap.scorer(has_history(snap, employee_id))
        return JSONResponse(
            {"employee_id": employee_id, **snap.versions, "scorer": scorer, "trainings": trainings}
        )

    @app.post("/recommendations", response_model=NewEmployeeRecommendations)
    def post_recommendations(body: NewEmployee) -> dict[str, Any]:
        """Recommendations for an employee described by their attributes and the trainings
        they took: a new hire, or anyone the precomputed lists do not hold yet."""
        check_n(body.n)
        snap = snapshot()
        contract = check_attributes(snap, body.attributes)
        answer = recommend_new(
            snap,
            body.attributes,
            body.n,
            contract,
            body.exclude_training_ids,
            taken_training_ids=body.taken_training_ids,
            filters=body.filters,
            explain=body.explain,
        )
        return {
            **snap.versions,
            "scorer": answer.scorer,
            "trainings": answer.trainings,
            "ignored_values": answer.ignored_values,
            "unknown_training_ids": answer.unknown_training_ids,
        }

    @app.post("/rank", response_model=RankResponse)
    def post_rank(body: RankRequest) -> dict[str, Any]:
        """A given list of trainings ordered for one employee (by id, or by attributes)."""
        if (body.employee_id is None) == (body.attributes is None):
            raise HTTPException(422, "give exactly one of employee_id and attributes")
        snap = snapshot()
        contract = check_attributes(snap, body.attributes or {})
        answer = rank_trainings(
            snap,
            body.training_ids,
            contract,
            employee_id=body.employee_id,
            attributes=body.attributes,
            explain=body.explain,
        )
        return {
            **snap.versions,
            "scorer": answer.scorer,
            "trainings": answer.trainings,
            "unknown_training_ids": answer.unknown_training_ids,
            "ignored_values": answer.ignored_values,
        }

    @app.get("/trainings/{training_id}/similar", response_model=SimilarTrainings)
    def get_similar(
        training_id: Annotated[str, Path(pattern=ID_PATTERN)],
        n: Annotated[int, Query(ge=1)] = 10,
        filter: FilterQuery = (),
    ) -> dict[str, Any]:
        """Trainings closest to a training in the model's space; a new one gets neighbours too."""
        check_n(n)
        snap = snapshot()
        trainings = similar_trainings(snap, training_id, n, filters=query_filters(filter))
        return {"training_id": training_id, **snap.versions, "trainings": trainings}

    @app.get("/health", response_model=Health)
    def health() -> Any:
        """Serving versions and their age; 503 while there is nothing to serve."""
        serving = cache()
        try:
            snap = serving.current()
        except NoModelError as exc:
            return JSONResponse({"status": "unavailable", "last_error": str(exc)}, status_code=503)
        return {
            "status": "degraded" if serving.last_error else "ok",
            "versions": snap.versions,
            "scorers": {"known": snap.scorers["known"], "new": snap.scorers["cold-start"]},
            "model_age_seconds": _age(snap.bundle.metadata.get("created_at")),
            "recommendations_age_seconds": _age(snap.pointer.get("created_at")),
            "last_error": serving.last_error,
        }

    @app.get("/model")
    def model() -> dict[str, Any]:
        """The serving model's card: gate, metrics against the baselines, training curve,
        spread over the catalog, data counts and fingerprints, hyperparameters; plus the
        raw evaluation report and configuration."""
        from shared.card import card_json

        snap = snapshot()
        metadata = snap.bundle.metadata
        return {
            **card_json(metadata),
            "evaluation": metadata.get("metrics"),
            "config": metadata.get("config"),
            **snap.versions,
        }

    return app
