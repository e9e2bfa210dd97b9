"""The FastAPI application: ``create_app(settings)``; ``app`` for ``uvicorn app.main:app``."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlencode

import anyio
import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from prometheus_fastapi_instrumentator import Instrumentator
from starlette.exceptions import HTTPException as StarletteHTTPException

from app import __version__, metrics
from app.config import Settings, get_settings
from app.errors import AudioprocError, InvalidRequest, UploadTooLarge, problem_body
from app.pipeline.decode import DecodeLimits
from app.pipeline.runner import Pipeline, choose_device
from app.routers import features, health, jobs, process
from app.routers.responses import ProblemResponse
from app.services.cache import MemoryCache, RedisCache, ResultCache
from app.services.results import ResultService
from app.services.s3 import S3Client, S3ObjectSource
from app.services.storage import LocalStorage, ResultStorage, S3Storage
from app.worker import job_service

log = logging.getLogger("audioproc")

#: Room for multipart framing and the options field on top of MAX_UPLOAD_MB, bytes.
MULTIPART_OVERHEAD = 1024 * 1024

#: Bucket bounds of http_request_duration_seconds (per route), seconds.
HTTP_LATENCY_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

DESCRIPTION = """
Audio preprocessing for speech ML: decode any common format, normalize it (DC offset, channels,
anti-aliased resampling, ITU-R BS.1770 loudness) and compute features (spectrogram, log-mel, MFCC
with deltas, energy, zero-crossing rate) in the exact forms models expect.

Errors are RFC 9457 `application/problem+json` bodies with a stable `code`.
"""


def build_cache(settings: Settings) -> ResultCache:
    if settings.redis_url:
        return RedisCache(
            settings.redis_url, ttl_s=settings.cache_ttl_s, prefix=settings.cache_prefix
        )
    return MemoryCache(int(settings.cache_max_mb * 1024 * 1024), settings.cache_ttl_s)


def build_s3(settings: Settings) -> S3Client | None:
    """One S3 client for the process, when S3 input or S3 storage is configured."""
    if settings.allowed_buckets or settings.storage == "s3":
        return S3Client.from_settings(settings)
    return None


def build_storage(settings: Settings, s3: S3Client | None = None) -> ResultStorage:
    if settings.storage == "s3":
        assert settings.s3_bucket is not None  # Settings validates it
        return S3Storage(
            s3 or S3Client.from_settings(settings),
            bucket=settings.s3_bucket,
            prefix=settings.s3_prefix,
        )
    return LocalStorage(settings.storage_dir)


def build_objects(settings: Settings, s3: S3Client | None) -> S3ObjectSource:
    """The reader of ``uri=s3://…`` inputs (refuses every bucket without S3_ALLOWED_BUCKETS)."""
    return S3ObjectSource(
        s3 if settings.allowed_buckets else None,
        allowed_buckets=settings.allowed_buckets,
        max_bytes=settings.max_upload_bytes,
    )


def build_results(settings: Settings, s3: S3Client | None = None) -> ResultService:
    torch.set_num_threads(settings.torch_threads)
    device = choose_device(settings.audio_device)
    if settings.audio_device == "cuda" and device.type != "cuda":
        log.warning("AUDIO_DEVICE=cuda but no CUDA device is available: running on the CPU")
    limits = DecodeLimits(
        max_duration_s=settings.max_duration_s, timeout_s=settings.decode_timeout_s
    )
    return ResultService(
        pipeline=Pipeline(device, limits),
        cache=build_cache(settings),
        storage=build_storage(settings, s3),
        concurrency=settings.pipeline_concurrency,
    )


def _problem_response(
    body: dict[str, Any], headers: dict[str, str] | None = None
) -> ProblemResponse:
    metrics.REJECTED_INPUTS.labels(body["code"]).inc()
    return ProblemResponse(body, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Every error becomes an application/problem+json response; nothing leaks a stack trace."""

    @app.exception_handler(AudioprocError)
    async def _domain(request: Request, exc: AudioprocError) -> ProblemResponse:
        return _problem_response(exc.problem(instance=request.url.path))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> ProblemResponse:
        errors = [
            {"loc": ".".join(str(p) for p in e.get("loc", ())), "msg": e.get("msg", "")}
            for e in exc.errors()
        ]
        summary = "; ".join(f"{e['loc']}: {e['msg']}" for e in errors)
        return _problem_response(
            problem_body(
                status=422,
                code="invalid_request",
                title="Invalid request",
                detail=f"The request does not match the API: {summary}. See /docs.",
                instance=request.url.path,
                errors=errors,
            )
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> ProblemResponse:
        if isinstance(exc.__cause__, AudioprocError):  # raised while the body was parsed
            return _problem_response(exc.__cause__.problem(instance=request.url.path))
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _problem_response(
            problem_body(
                status=exc.status_code,
                code=code,
                title=str(exc.detail),
                detail=f"{exc.detail}: {request.method} {request.url.path}.",
                instance=request.url.path,
            ),
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> ProblemResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _problem_response(
            problem_body(
                status=500,
                code="internal_error",
                title="Internal error",
                detail="The service failed unexpectedly; the error was logged. Retry, and "
                "report it if it persists.",
                instance=request.url.path,
            )
        )


class BodyLimitMiddleware:
    """Refuses request bodies over a byte limit while they stream in (413 problem+json), so an
    oversized upload is never read whole."""

    def __init__(self, app: Any, max_upload_mb: float) -> None:
        self.app = app
        self.max_upload_mb = max_upload_mb
        self.max_bytes = int(max_upload_mb * 1024 * 1024) + MULTIPART_OVERHEAD

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
        send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        error = UploadTooLarge(
            f"The request body exceeds MAX_UPLOAD_MB ({self.max_upload_mb:g} MiB of audio plus "
            "1 MiB of form overhead). Send a smaller file, or split the recording."
        )
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            response = _problem_response(error.problem(instance=scope.get("path")))
            await response(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> MutableMapping[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise error
            return message

        await self.app(scope, limited_receive, send)


#: Routes that take ``{"uri": "s3://…", "options": {…}}`` as a JSON body too.
JSON_INPUT_PATHS = frozenset({"/process", "/jobs"})


class JsonInputMiddleware:
    """``POST /process`` and ``POST /jobs`` accept a JSON body ``{"uri", "options"}`` as well as
    the multipart form; the JSON is translated here into the same form fields, so the routes
    and their validation are one. The body is already bounded by :class:`BodyLimitMiddleware`."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
        send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ) -> None:
        headers = dict(scope.get("headers") or [])
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if (
            scope["type"] != "http"
            or scope.get("method") != "POST"
            or scope.get("path") not in JSON_INPUT_PATHS
            or content_type != b"application/json"
        ):
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        try:
            document = json.loads(b"".join(chunks) or b"null")
            if not isinstance(document, dict) or set(document) - {"uri", "options"}:
                raise ValueError("expected an object with `uri` and optional `options`")
            options = document.get("options")
            fields = {"uri": document.get("uri")}
            if options is not None:
                fields["options"] = options if isinstance(options, str) else json.dumps(options)
            if not isinstance(fields["uri"], str):
                raise ValueError("`uri` must be a string (s3://bucket/key)")
        except ValueError as exc:
            error = InvalidRequest(
                f'The JSON body is not {{"uri": "s3://bucket/key", "options": {{…}}}}: '
                f"{exc}. Upload a file with multipart/form-data instead."
            )
            await _problem_response(error.problem(instance=scope.get("path")))(scope, receive, send)
            return
        body = urlencode({k: v for k, v in fields.items() if v is not None}).encode()
        form_headers = [(k, v) for k, v in scope["headers"]
                        if k not in (b"content-type", b"content-length")]  # fmt: skip
        form_headers += [(b"content-type", b"application/x-www-form-urlencoded"),
                         (b"content-length", str(len(body)).encode())]  # fmt: skip
        sent = False

        async def replay() -> MutableMapping[str, Any]:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app({**scope, "headers": form_headers}, replay, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the application; services are created in the lifespan, once per process."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        s3 = build_s3(settings)
        results = build_results(settings, s3)
        app.state.settings = settings
        app.state.results = results
        app.state.objects = build_objects(settings, s3)
        if settings.warmup:
            await anyio.to_thread.run_sync(results.pipeline.warmup)
        log.info(
            "audioproc ready: device=%s cache=%s storage=%s",
            results.pipeline.device,
            results.cache.backend,
            results.storage,
        )
        try:
            async with job_service(settings, results, s3) as job_queue:
                app.state.jobs = job_queue
                yield
        finally:
            await results.cache.close()
            if s3 is not None:
                s3.close()

    app = FastAPI(
        title="audioproc",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.add_middleware(JsonInputMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_upload_mb=settings.max_upload_mb)
    for router in (process.router, jobs.router, features.router, health.router):
        app.include_router(router)
    # Per-route latency buckets from 10 ms to 60 s (the library's default is 0.1, 0.5, 1 s: too
    # coarse for requests that run the pipeline); seconds.
    Instrumentator(excluded_handlers=["/metrics"]).instrument(
        app, latency_lowr_buckets=HTTP_LATENCY_BUCKETS_S
    ).expose(app, include_in_schema=False)
    return app


def __getattr__(name: str) -> Any:
    # ``uvicorn app.main:app`` builds the app on first access, not at import time.
    if name == "app":
        return create_app()
    raise AttributeError(name)
