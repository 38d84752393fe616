"""The HTTP API (FastAPI): precomputed and on-the-fly recommendations, model status.

Runs under ``func.AsgiFunctionApp`` in Azure and under uvicorn locally. Routes by
resource (:mod:`shared.api.routers`), the HTTP contract in :mod:`shared.api.schemas`,
what the routes depend on in :mod:`shared.api.dependencies`.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.api import openapi
from shared.api.dependencies import ServingState
from shared.api.http import HeadAsGet, field_errors, problem_response, retry_after
from shared.api.middleware import BodyLimit
from shared.api.routers import events, recommendations, status, trainings
from shared.api.schemas import ERRORS, NewEmployee, RankForAttributes, RankForEmployee
from shared.errors import NotFoundError, TrainingRecommenderError
from shared.events import Event, EventBatch
from shared.lanes import LaneUnavailableError
from shared.rules import UnknownFilterError
from shared.settings import Config
from shared.storage import BlobStore

DESCRIPTION = """Recommendations of internal and external trainings for employees.

Errors are `application/problem+json` (RFC 9457). GET answers carry an `ETag` and
`Cache-Control: private, max-age=<refresh seconds>`: send `If-None-Match` to get a
304 without a body while the answer is unchanged. Every GET also answers HEAD. A 503
carries `Retry-After`. A trailing slash is a 404, not a redirect.
"""


def create_app(
    store: BlobStore | Callable[[], BlobStore], config: Config | Callable[[], Config]
) -> FastAPI:
    """The FastAPI app over a store and a configuration, or factories of them (called on
    the first request). CORS follows ``serving.cors_origins`` when the configuration is
    given as a value (in Azure, the Function App's CORS setting does it)."""
    # Swagger UI and ReDoc from the pinned fastapi-offline package, served by the app
    # itself: an intranet without internet access still gets its docs (not a CDN's).
    app = FastAPIOffline(
        title="Training Recommender",
        version="1.0",
        description=DESCRIPTION,
        responses=ERRORS,
        redirect_slashes=False,  # /recommendations/ is a 404, never a redirect
        swagger_ui_parameters={"validatorUrl": None},  # no call to validator.swagger.io
        generate_unique_id_function=lambda route: route.name,  # operationId: the function
    )
    state = ServingState(store, config)
    app.state.serving = state
    app.add_middleware(
        BodyLimit,
        limit=lambda: state.settings().serving.max_body_bytes,
        routes=lambda: app.routes,
    )
    if isinstance(config, Config) and config.serving.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(config.serving.cors_origins),
            allow_methods=["GET", "HEAD", "POST"],
            allow_headers=["content-type", "x-functions-key", "if-none-match"],
            expose_headers=["ETag", "Retry-After"],  # revalidation and retries from JS
        )
    app.add_middleware(HeadAsGet)
    _handle_errors(app)
    for router in (recommendations.router, trainings.router, events.router, status.router):
        app.include_router(router)
    openapi.install(app, state)
    return app


# Where a validation error may point: the fields and parameters of the API. Anything
# else in a location (a dict key, an unknown field) came from the client: not echoed.
FIELD_NAMES = frozenset(
    name
    for model in (NewEmployee, RankForEmployee, RankForAttributes, EventBatch, Event)
    for name in (model.__name__, *model.model_fields)
) | {"body", "query", "path", "n", "filter", "explain", "since", "employee_id", "training_id"}
# pydantic's names of the branches of a union (an attribute is text or a list of text)
FIELD_NAMES |= {"str", "list[str]", "list[constrained-str]", "constrained-str"}


def _attribute_names(request: Request) -> frozenset[str]:
    """The configured attribute names: in the schema, so safe to name in an error."""
    try:
        contract = request.app.state.serving.settings().contract
    except Exception:  # the settings themselves failing: name none
        return frozenset()
    return frozenset((*contract.users.features, *contract.trainings.features))


def _handle_errors(app: FastAPI) -> None:
    """Every error as problem details (:mod:`shared.api.http`); never the input echoed."""

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 405 and "GET" in headers.get("Allow", ""):
            headers["Allow"] += ", HEAD"  # every GET also answers HEAD (HeadAsGet)
        return problem_response(exc.status_code, str(exc.detail), headers=headers)

    @app.exception_handler(Exception)
    async def internal(_: Request, exc: Exception) -> JSONResponse:
        # A bug: logged by the server; the client gets the one error shape, no details.
        return problem_response(500, "internal error")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = field_errors(list(exc.errors()), FIELD_NAMES | _attribute_names(request))
        listed = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors[:3])
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        return problem_response(422, f"invalid request: {listed}{more}", errors)

    @app.exception_handler(UnknownFilterError)
    async def bad_filter(_: Request, exc: UnknownFilterError) -> JSONResponse:
        return problem_response(422, str(exc))

    @app.exception_handler(LaneUnavailableError)
    async def no_lane(_: Request, exc: LaneUnavailableError) -> JSONResponse:
        return problem_response(409, str(exc))

    @app.exception_handler(NotFoundError)
    async def not_found(_: Request, exc: NotFoundError) -> JSONResponse:
        return problem_response(404, str(exc))

    @app.exception_handler(TrainingRecommenderError)  # NoModelError, storage unavailable
    async def unavailable(request: Request, exc: TrainingRecommenderError) -> JSONResponse:
        return problem_response(503, str(exc), headers=retry_after(request))


__all__ = ["create_app"]
