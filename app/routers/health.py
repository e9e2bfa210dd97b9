"""Liveness and readiness probes."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.models.result import HealthResponse, ReadyResponse
from app.services.cache import CacheUnavailable
from app.services.storage import StorageError

router = APIRouter(tags=["health"])
log = logging.getLogger("audioproc.health")

OPEN_WARNING = (
    "API_KEYS is unset: the service is open to anyone who can reach it (no authentication, "
    "no tenants, no rate limits)."
)


@router.get("/healthz", operation_id="healthz", response_model=HealthResponse, summary="Liveness")
async def healthz() -> dict[str, str]:
    """The process is up and serving."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    operation_id="readyz",
    response_model=ReadyResponse,
    summary="Readiness",
)
async def readyz(request: Request) -> JSONResponse:
    """Checks each dependency by name: `cache`, `storage`, `queue` (jobs) and `jobs` (the job
    state store), and lists in `down` those that do not answer (`status: degraded`).

    The answer stays 200 when degraded: this pod still serves POST /process (bypassing the
    cache, storing nothing), so a readiness probe must not take every pod out of service when a
    shared dependency fails; POST /jobs answers 503 itself while the queue or the job store is
    down. Watch `down` (and the error metrics) to alert."""
    results = request.app.state.results
    checks: dict[str, str] = {}
    down: list[str] = []
    try:
        await results.cache.ping()
        checks["cache"] = f"{results.cache.backend}: ok"
    except CacheUnavailable as exc:
        log.warning("readiness: cache down: %s", exc)
        checks["cache"] = f"{results.cache.backend}: down"
        down.append("cache")
    try:
        await results.storage.ping()
        checks["storage"] = f"{results.storage.backend}: ok"
    except StorageError as exc:  # its message names paths and endpoints: logged, not shown
        log.warning("readiness: storage down: %s", exc)
        checks["storage"] = f"{results.storage.backend}: down"
        down.append("storage")
    for name, (text, healthy) in (await request.app.state.jobs.checks()).items():
        checks[name] = text  # "queue" (RabbitMQ | memory) and "jobs" (the job state store)
        if not healthy:
            down.append(name)
    status = "degraded" if down else "ok"
    settings = request.app.state.settings
    auth = "open" if settings.api_keys is None else "api_keys"
    warnings = [] if settings.api_keys is not None else [OPEN_WARNING]
    body = {"status": status, "checks": checks, "down": down,
            "device": str(results.pipeline.device), "auth": auth,
            "warnings": warnings}  # fmt: skip
    return JSONResponse(body)
