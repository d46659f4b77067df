"""Assemble the emulator: GIP API, Cognito, Langfuse API and control API on one FastAPI app."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from gip_airflow_emulator import cognito, control, gip, langfuse, objects
from gip_airflow_emulator.faults import FaultMiddleware
from gip_airflow_emulator.http import ApiError
from gip_airflow_emulator.scheduler import scheduler_loop
from gip_airflow_emulator.seed import SeedData, load_seed
from gip_airflow_emulator.settings import EmulatorSettings
from gip_airflow_emulator.state import Emulator, now_ms

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


def create_app(settings: EmulatorSettings | None = None, seed: SeedData | None = None) -> FastAPI:
    """A ready emulator app; serve it with uvicorn. ``seed`` defaults to ``settings.seed_path``."""
    settings = settings or EmulatorSettings()
    if seed is None:
        seed = load_seed(settings.seed_path, now_ms())
    emu = Emulator(settings, seed)
    objects.load_gip_seed(emu)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        emu.spawn(scheduler_loop(emu))
        try:
            yield
        finally:
            await emu.close()

    app = FastAPI(
        title="GIP emulator",
        description="Local emulator of the GIP evaluation API, its Cognito login and "
        "the Langfuse API subset.",
        lifespan=lifespan,
    )
    app.state.emulator = emu
    app.include_router(gip.router)
    app.include_router(cognito.router)
    app.include_router(langfuse.router)
    app.include_router(control.router)
    app.add_middleware(FaultMiddleware, emulator=emu)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
            parts.append(f"{loc or '(request)'}: {err.get('msg')}")
        status = 400 if request.url.path.startswith("/api/public/") else 422
        return JSONResponse({"message": "Invalid request: " + "; ".join(parts)}, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message: Any = exc.detail
        if exc.status_code == 404 and message == "Not Found":
            message = f"Not Found: no endpoint {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"Method Not Allowed: {request.method} {request.url.path}"
        return JSONResponse({"message": message}, status_code=exc.status_code, headers=exc.headers)

    return app
