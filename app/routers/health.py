"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.models.result import HealthResponse, ReadyResponse
from app.services.cache import CacheUnavailable

router = APIRouter(tags=["health"])


@router.get("/healthz", operation_id="healthz", response_model=HealthResponse, summary="Liveness")
async def healthz() -> dict[str, str]:
    """The process is up and serving."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    operation_id="readyz",
    response_model=ReadyResponse,
    summary="Readiness",
    responses={503: {"model": ReadyResponse, "description": "A dependency is down."}},
)
async def readyz(request: Request) -> JSONResponse:
    """Checks each dependency. `degraded` (503) when the cache backend does not answer: requests
    are still served, bypassing the cache."""
    results = request.app.state.results
    checks: dict[str, str] = {}
    status = "ok"
    try:
        await results.cache.ping()
        checks["cache"] = f"{results.cache.backend}: ok"
    except CacheUnavailable as exc:
        checks["cache"] = f"{results.cache.backend}: down ({exc})"
        status = "degraded"
    checks["storage"] = f"{results.storage.backend}: ok"
    body = {"status": status, "checks": checks, "device": str(results.pipeline.device)}
    return JSONResponse(body, status_code=200 if status == "ok" else 503)
