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
from fastapi.middleware.cors import CORSMiddleware
from fastapi.routing import APIRoute
from prometheus_fastapi_instrumentator import Instrumentator
from starlette.exceptions import HTTPException as StarletteHTTPException

from app import __version__
from app.config import Settings, get_settings
from app.errors import (
    AudioprocError,
    InvalidRequest,
    TooManyParts,
    UploadTooLarge,
    problem_body,
)
from app.pipeline.decode import DecodeLimits
from app.pipeline.runner import Pipeline, choose_device
from app.routers import features, health, jobs, process
from app.routers.responses import PROBLEM_MEDIA_TYPE, ProblemResponse, problem_response
from app.runtime import keep_freed_buffers
from app.security.audit import AuditLog
from app.security.gate import SecurityGate, declared_scope, flat_routes
from app.security.keys import KeyRing
from app.security.ratelimit import MemoryRateLimiter, RateLimiter, RedisRateLimiter
from app.services.cache import MemoryCache, RedisCache, ResultCache
from app.services.crypto import SealedCache, SealedStorage, Sealer
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
    cache: ResultCache
    if settings.redis_url:
        cache = RedisCache(
            settings.redis_url, ttl_s=settings.effective_cache_ttl_s, prefix=settings.cache_prefix
        )
    else:
        cache = MemoryCache(
            int(settings.cache_max_mb * 1024 * 1024), settings.effective_cache_ttl_s
        )
    sealer = Sealer.from_settings(settings)
    return SealedCache(cache, sealer) if sealer and settings.cache_encrypt else cache


def build_s3(settings: Settings) -> S3Client | None:
    """One S3 client for the process, when S3 input or S3 storage is configured."""
    if settings.allowed_buckets or settings.storage == "s3":
        return S3Client.from_settings(settings)
    return None


def build_storage(settings: Settings, s3: S3Client | None = None) -> ResultStorage:
    storage: ResultStorage
    if settings.storage == "s3":
        assert settings.s3_bucket is not None  # Settings validates it
        storage = S3Storage(
            s3 or S3Client.from_settings(settings),
            bucket=settings.s3_bucket,
            prefix=settings.s3_prefix,
        )
    else:
        storage = LocalStorage(settings.storage_dir)
    sealer = Sealer.from_settings(settings)
    return SealedStorage(storage, sealer) if sealer else storage


def build_rate_limiter(settings: Settings) -> RateLimiter | None:
    """The per-key rate limiter: none without API_KEYS or with RATE_LIMIT_PER_MIN=0; in Redis
    when REDIS_URL is set (shared by every API pod), else in this process."""
    if settings.api_keys is None or settings.rate_limit_per_min == 0:
        return None
    if settings.redis_url:
        return RedisRateLimiter(
            settings.redis_url,
            per_min=settings.rate_limit_per_min,
            burst=settings.rate_limit_burst,
            prefix=settings.cache_prefix,
        )
    return MemoryRateLimiter(settings.rate_limit_per_min, settings.rate_limit_burst)


def build_objects(settings: Settings, s3: S3Client | None) -> S3ObjectSource:
    """The reader of ``uri=s3://…`` inputs (refuses every bucket without S3_ALLOWED_BUCKETS)."""
    return S3ObjectSource(
        s3 if settings.allowed_buckets else None,
        allowed_buckets=settings.allowed_buckets,
        max_bytes=settings.max_upload_bytes,
    )


def build_results(
    settings: Settings, s3: S3Client | None = None, *, api: bool = True
) -> ResultService:
    """The result service; ``api``: for the API (PIPELINE_MAX_WAITING bounds the runs waiting
    for a slot), else for a job worker (prefetch bounds them)."""
    torch.set_num_threads(settings.torch_threads)
    if settings.keep_freed_buffers:
        keep_freed_buffers()
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
        max_waiting=settings.pipeline_max_waiting if api else None,
    )


def install_error_handlers(app: FastAPI) -> None:
    """Every error becomes an application/problem+json response; nothing leaks a stack trace."""

    @app.exception_handler(AudioprocError)
    async def _domain(request: Request, exc: AudioprocError) -> ProblemResponse:
        return problem_response(exc.problem(instance=request.url.path), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> ProblemResponse:
        errors = [
            {"loc": ".".join(str(p) for p in e.get("loc", ())), "msg": e.get("msg", "")}
            for e in exc.errors()
        ]
        summary = "; ".join(f"{e['loc']}: {e['msg']}" for e in errors)
        return problem_response(
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
            cause = exc.__cause__
            return problem_response(cause.problem(instance=request.url.path), cause.headers)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return problem_response(
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
        return problem_response(
            problem_body(
                status=500,
                code="internal_error",
                title="Internal error",
                detail="The service failed unexpectedly; the error was logged. Retry, and "
                "report it if it persists.",
                instance=request.url.path,
            )
        )


def multipart_delimiter(content_type: bytes) -> bytes | None:
    """``--<boundary>`` of a ``multipart/form-data`` content type, or ``None``."""
    kind, _, parameters = content_type.partition(b";")
    if kind.strip().lower() != b"multipart/form-data":
        return None
    for parameter in parameters.split(b";"):
        name, _, value = parameter.strip().partition(b"=")
        if name.lower() == b"boundary" and value.strip(b'"'):
            return b"--" + value.strip(b'"')
    return None


def document_api(app: FastAPI) -> None:
    """Make the OpenAPI document say what the service does: every 4xx/5xx response is
    ``application/problem+json`` with the ``Problem`` schema (FastAPI documents its own
    validation errors as ``application/json`` ``HTTPValidationError``; the handlers here answer
    them as problems), and each protected operation names the scope it needs."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = generate()
        problem = {"schema": {"$ref": "#/components/schemas/Problem"}}
        scopes = {
            (method.lower(), route.path): declared_scope(route)
            for route in (context.original_route for context in flat_routes(app.routes))
            if isinstance(route, APIRoute)
            for method in route.methods or ()
        }
        for path, path_item in schema["paths"].items():
            for method, operation in path_item.items():
                scope = scopes.get((method, path))
                if scope is not None:
                    operation["description"] = (
                        operation.get("description", "")
                        + f"\n\n**Needs scope `{scope}`** (or `admin`) when the service has "
                        "API keys."
                    )
                for status, response in operation.get("responses", {}).items():
                    if status[0] in "45":
                        response["content"] = {PROBLEM_MEDIA_TYPE: problem}
        for unused in ("HTTPValidationError", "ValidationError"):
            schema["components"]["schemas"].pop(unused, None)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


class BodyLimitMiddleware:
    """Refuses request bodies over a byte limit, and multipart forms with more than
    ``max_form_parts`` parts, while they stream in (413 problem+json), so an oversized upload is
    never read whole and a form of a million tiny parts is never parsed."""

    def __init__(self, app: Any, max_upload_mb: float, max_form_parts: int) -> None:
        self.app = app
        self.max_upload_mb = max_upload_mb
        self.max_bytes = int(max_upload_mb * 1024 * 1024) + MULTIPART_OVERHEAD
        self.max_form_parts = max_form_parts

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
        headers = dict(scope["headers"])
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            response = problem_response(error.problem(instance=scope.get("path")))
            await response(scope, receive, send)
            return
        delimiter = multipart_delimiter(headers.get(b"content-type", b""))
        received = 0
        delimiters = 0  # one per part, plus the closing one
        tail = b""

        async def limited_receive() -> MutableMapping[str, Any]:
            nonlocal received, delimiters, tail
            message = await receive()
            if message["type"] == "http.request":
                body = message.get("body", b"")
                received += len(body)
                if received > self.max_bytes:
                    raise error
                if delimiter is not None:
                    window = tail + body
                    delimiters += window.count(delimiter)
                    tail = window[-(len(delimiter) - 1) :]
                    if delimiters > self.max_form_parts + 1:
                        raise TooManyParts(
                            f"The form has more than {self.max_form_parts} parts "
                            "(MAX_FORM_PARTS). Send one `file` (or up to 64 `files`) and the "
                            "`options` field."
                        )
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
            await problem_response(error.problem(instance=scope.get("path")))(scope, receive, send)
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

    keyring = KeyRing(settings.api_keys) if settings.api_keys is not None else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if keyring is None:
            log.warning(
                "API_KEYS is unset: the service is OPEN — anyone who can reach it may process, "
                "read and delete results, with no tenants and no rate limit. Set API_KEYS before "
                "exposing it beyond this machine."
            )
        s3 = build_s3(settings)
        results = build_results(settings, s3)
        app.state.settings = settings
        app.state.results = results
        app.state.objects = build_objects(settings, s3)
        app.state.rate_limiter = build_rate_limiter(settings)
        if settings.warmup:
            await anyio.to_thread.run_sync(results.pipeline.warmup)
        log.info(
            "audioproc ready: device=%s cache=%s storage=%s auth=%s",
            results.pipeline.device,
            results.cache.backend,
            results.storage,
            f"{len(keyring)} API key(s)" if keyring is not None else "OPEN",
        )
        try:
            async with job_service(settings, results, s3) as job_queue:
                app.state.jobs = job_queue
                yield
        finally:
            await results.cache.close()
            if app.state.rate_limiter is not None:
                await app.state.rate_limiter.close()
            if s3 is not None:
                s3.close()

    app = FastAPI(
        title="audioproc",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        # Swagger UI keeps the key entered with "Authorize" across page reloads.
        swagger_ui_parameters={"persistAuthorization": True},
    )
    install_error_handlers(app)
    document_api(app)
    # Outermost last: CORS answers preflights, then the security gate, then the body limits.
    app.add_middleware(JsonInputMiddleware)
    app.add_middleware(
        BodyLimitMiddleware,
        max_upload_mb=settings.max_upload_mb,
        max_form_parts=settings.max_form_parts,
    )
    app.add_middleware(
        SecurityGate,
        keyring=keyring,
        audit=AuditLog(settings.audit_log),
        metrics_token=settings.metrics_token,
    )
    if settings.cors_origin_list:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "X-API-Key", "X-Request-ID", "Content-Type"],
            expose_headers=["X-Request-ID", "Retry-After", "Location"],
            max_age=600,
        )
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
