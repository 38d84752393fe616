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

from shared.api.dependencies import ServingState
from shared.api.middleware import BodyLimit
from shared.api.routers import recommendations, status, trainings
from shared.api.schemas import ERRORS
from shared.errors import NoModelError, NotFoundError, TrainingRecommenderError
from shared.rules import UnknownFilterError
from shared.settings import Config
from shared.storage import BlobStore


def create_app(
    store: BlobStore | Callable[[], BlobStore], config: Config | Callable[[], Config]
) -> FastAPI:
    """The FastAPI app over a store and a configuration, or factories of them (called on
    the first request). CORS follows ``serving.cors_origins`` when the configuration is
    given as a value (in Azure, the Function App's CORS setting does it)."""
    app = FastAPI(
        title="Training Recommender",
        version="1.0",
        description="Recommendations of internal and external trainings for employees.",
        responses=ERRORS,
    )
    state = ServingState(store, config)
    app.state.serving = state
    app.add_middleware(BodyLimit, limit=lambda: state.settings().serving.max_body_bytes)
    if isinstance(config, Config) and config.serving.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(config.serving.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["content-type", "x-functions-key"],
        )
    _handle_errors(app)
    for router in (recommendations.router, trainings.router, status.router):
        app.include_router(router)
    return app


def _handle_errors(app: FastAPI) -> None:
    """Every error as ``{"detail": …}`` with its status; never the input echoed back."""

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


__all__ = ["create_app"]
