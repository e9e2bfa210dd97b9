"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.models.result import HealthResponse, ReadyResponse
from app.services.cache import CacheUnavailable
from app.services.storage import StorageError

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
    """Checks each dependency by name: `cache`, `storage`, `queue` (jobs) and `jobs` (the job
    state store). `degraded` (503) when one does not answer: POST /process is still served
    (bypassing the cache); POST /jobs needs the queue and the job store."""
    results = request.app.state.results
    checks: dict[str, str] = {}
    status = "ok"
    try:
        await results.cache.ping()
        checks["cache"] = f"{results.cache.backend}: ok"
    except CacheUnavailable as exc:
        checks["cache"] = f"{results.cache.backend}: down ({exc})"
        status = "degraded"
    try:
        await results.storage.ping()
        checks["storage"] = f"{results.storage.backend}: ok"
    except StorageError as exc:
        checks["storage"] = f"{results.storage.backend}: down ({exc})"
        status = "degraded"
    for name, (text, healthy) in (await request.app.state.jobs.checks()).items():
        checks[name] = text  # "queue" (RabbitMQ | memory) and "jobs" (the job state store)
        if not healthy:
            status = "degraded"
    body = {"status": status, "checks": checks, "device": str(results.pipeline.device)}
    return JSONResponse(body, status_code=200 if status == "ok" else 503)
