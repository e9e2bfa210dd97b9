"""The security gate: an ASGI middleware that every request passes before any route runs.

For each request it

1. takes the client's ``X-Request-ID`` (when it is 1–128 characters of ``[A-Za-z0-9._:-]``) or
   makes one, returns it on the response and makes it visible to logs (:data:`REQUEST_ID`);
2. finds the route and the scope it declares (:class:`Authorize`), authenticates the key and
   checks the scope — *before the body is read*, so an unauthenticated upload costs nothing;
3. applies the caller's rate limit;
4. adds security headers to the response;
5. writes one audit line (:mod:`app.security.audit`).

Routes are protected by default: a route that declares no scope and is not one of
:data:`PUBLIC_PATHS` needs ``admin``; paths no route serves need a valid key before they are
answered 404, so the route table is not visible to anonymous callers.
"""

from __future__ import annotations

import hmac
import logging
import math
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Annotated, Any

from fastapi import Request, Security
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from fastapi.security import APIKeyHeader, HTTPBearer
from fastapi.security.http import HTTPAuthorizationCredentials
from starlette.routing import BaseRoute, Match

from app import metrics
from app.errors import Forbidden, RateLimited, Unauthenticated
from app.routers.responses import problem_response
from app.security.audit import REQUEST_ID, AuditLog
from app.security.keys import OPEN, KeyRing, Principal, Scope, presented_key
from app.security.ratelimit import RateLimiter

log = logging.getLogger("audioproc.security")

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: Reachable without a key: probes, metrics (see ``METRICS_TOKEN``) and the API documentation.
PUBLIC_PATHS = frozenset(
    {"/healthz", "/readyz", "/metrics", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
)
#: Probes and scrapes are not audited (one line every few seconds per pod says nothing).
UNAUDITED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
#: Documentation pages load Swagger UI / ReDoc from a CDN, so they get no restrictive CSP.
DOC_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc"})

_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_WWW_AUTHENTICATE = 'Bearer realm="audioproc"'
_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
_API_HEADERS = [
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"cache-control", b"no-store"),
]

BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="`Authorization: Bearer <API key>`. Keys come from the operator (API_KEYS).",
)
API_KEY_HEADER = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    scheme_name="apiKey",
    description="The API key in the `X-API-Key` header (instead of the bearer token).",
)


class Authorize:
    """Route dependency declaring the scope a route needs; returns the caller.

    The gate enforces the scope before the route runs (and before the body is read); this
    dependency hands the authenticated :class:`Principal` to the handler and puts the two ways of
    sending a key into the OpenAPI document (Swagger UI's *Authorize* button)."""

    def __init__(self, scope: Scope) -> None:
        self.scope: Scope = scope

    async def __call__(
        self,
        request: Request,
        _bearer: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)],
        _api_key: Annotated[str | None, Security(API_KEY_HEADER)],
    ) -> Principal:
        principal = request.scope.get("state", {}).get("principal")
        if not isinstance(principal, Principal):
            raise RuntimeError("the SecurityGate middleware is not installed")
        return principal


def flat_routes(routes: list[BaseRoute]) -> list[RouteContext]:
    """Every route of an application, with included routers expanded (FastAPI keeps them
    nested); ``context.original_route`` is the route as declared."""
    return list(iter_route_contexts(routes))


def declared_scope(route: BaseRoute) -> Scope | None:
    """The scope a route declares with an :class:`Authorize` dependency (``None``: none)."""
    if not isinstance(route, APIRoute):
        return None
    pending = list(route.dependant.dependencies)
    while pending:
        dependency = pending.pop()
        if isinstance(dependency.call, Authorize):
            return dependency.call.scope
        pending.extend(dependency.dependencies)
    return None


class SecurityGate:
    """See the module docstring.

    Args:
        app: the inner ASGI application.
        keyring: the configured keys; ``None`` runs the service open (every caller is
            :data:`~app.security.keys.OPEN`).
        audit: where audit lines go.
        metrics_token: a bearer token ``/metrics`` requires (``None``: open to scrapers).
    """

    def __init__(
        self,
        app: Any,
        *,
        keyring: KeyRing | None,
        audit: AuditLog,
        metrics_token: str | None = None,
    ) -> None:
        self.app = app
        self.keyring = keyring
        self.audit = audit
        self.metrics_token = metrics_token
        self._routes: list[tuple[RouteContext, Scope | None]] | None = None

    def _route_table(self, scope: Message) -> list[tuple[RouteContext, Scope | None]]:
        if self._routes is None:
            self._routes = [
                (context, declared_scope(context.original_route))
                for context in flat_routes(scope["app"].router.routes)
            ]
        return self._routes

    def _route(self, scope: Message) -> tuple[RouteContext | None, Scope | None, dict[str, Any]]:
        """The route serving ``scope`` (``None`` when none matches fully), its scope and the
        path parameters."""
        for context, required in self._route_table(scope):
            match, child = context.matches(scope)
            if match is Match.FULL:
                return context, required, child.get("path_params", {})
        return None, None, {}

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        headers = dict(scope["headers"])
        offered = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = offered if _REQUEST_ID_RE.fullmatch(offered) else uuid.uuid4().hex
        token = REQUEST_ID.set(request_id)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        path = scope["path"]
        extra_headers = [*_SECURITY_HEADERS, (b"x-request-id", request_id.encode())]
        if path not in DOC_PATHS:
            extra_headers += _API_HEADERS
        counts = {"in": 0, "out": 0, "status": 500}

        async def counting_receive() -> Message:
            message = await receive()
            counts["in"] += len(message.get("body", b""))
            return message

        async def decorated_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                counts["status"] = message["status"]
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [
                    *message.get("headers", []),
                    *((k, v) for k, v in extra_headers if k not in present),
                ]
            elif message["type"] == "http.response.body":
                counts["out"] += len(message.get("body", b""))
            await send(message)

        route, required, path_params = self._route(scope)
        principal: Principal | None = None
        try:
            limiter: RateLimiter | None = getattr(scope["app"].state, "rate_limiter", None)
            principal, refusal = await self._admit(path, route, required, headers, limiter)
            if refusal is None:
                state["principal"] = principal
                await self.app(scope, counting_receive, decorated_send)
            else:
                await problem_response(refusal.problem(instance=path), refusal.headers)(
                    scope, counting_receive, decorated_send
                )
        finally:
            REQUEST_ID.reset(token)
            if path not in UNAUDITED_PATHS:
                self._audit(scope, route, principal, path_params, counts, began)

    async def _admit(
        self,
        path: str,
        route: RouteContext | None,
        required: Scope | None,
        headers: dict[bytes, bytes],
        limiter: RateLimiter | None,
    ) -> tuple[Principal | None, Unauthenticated | Forbidden | RateLimited | None]:
        """The caller, or why the request is refused. The rate ``limiter`` is the one the
        application's lifespan built (``app.state.rate_limiter``; ``None``: no limit)."""
        if path in PUBLIC_PATHS:
            if path == "/metrics" and self.metrics_token is not None:
                token, _ = presented_key(headers)
                if token is None or not hmac.compare_digest(
                    token.encode(), self.metrics_token.encode()
                ):
                    metrics.AUTH_FAILURES.labels("metrics_token").inc()
                    return None, Unauthenticated(
                        "GET /metrics needs the metrics token (METRICS_TOKEN) as "
                        "`Authorization: Bearer <token>`.",
                        headers={"WWW-Authenticate": _WWW_AUTHENTICATE},
                    )
            return OPEN if self.keyring is None else None, None
        if self.keyring is None:
            return OPEN, None
        key, problem = presented_key(headers)
        principal = self.keyring.authenticate(key) if key is not None else None
        if principal is None:
            reason = problem or "unknown"
            metrics.AUTH_FAILURES.labels(reason).inc()
            detail = {
                "missing": "This endpoint needs an API key: send `Authorization: Bearer <key>` "
                "or `X-API-Key: <key>`.",
                "malformed": "The credentials are malformed: send one API key, either as "
                "`Authorization: Bearer <key>` or as `X-API-Key: <key>` (printable ASCII).",
                "unknown": "The API key is not valid (unknown or revoked). Ask the operator "
                "for a key.",
            }[reason]
            challenge = _WWW_AUTHENTICATE
            if reason != "missing":
                challenge += ', error="invalid_token"'
            return None, Unauthenticated(detail, headers={"WWW-Authenticate": challenge})
        needed: Scope = required or "admin"
        if route is not None and not principal.allows(needed):
            metrics.AUTH_FAILURES.labels("scope").inc()
            return principal, Forbidden(
                f"This key (id {principal.key_id}) lacks the `{needed}` scope this endpoint "
                f"needs; it has {', '.join(sorted(principal.scopes))}. Use a key with "
                f"`{needed}` (or `admin`).",
                required_scope=needed,
                headers={
                    "WWW-Authenticate": f'{_WWW_AUTHENTICATE}, error="insufficient_scope", '
                    f'scope="{needed}"'
                },
            )
        if limiter is not None:
            wait_s = await limiter.take(f"key:{principal.key_id}")
            if wait_s > 0:
                metrics.RATE_LIMITED.inc()
                retry_after = max(1, math.ceil(wait_s))
                return principal, RateLimited(
                    f"Too many requests for this key (RATE_LIMIT_PER_MIN). Retry after "
                    f"{retry_after} s.",
                    retry_after_s=retry_after,
                    headers={"Retry-After": str(retry_after)},
                )
        return principal, None

    def _audit(
        self,
        scope: Message,
        route: RouteContext | None,
        principal: Principal | None,
        path_params: dict[str, Any],
        counts: dict[str, int],
        began: float,
    ) -> None:
        state = scope.get("state", {})
        client = scope.get("client")
        declared = route.original_route if route is not None else None
        action = getattr(declared, "operation_id", None) or getattr(declared, "name", None)
        self.audit.write(
            {
                "type": "request",
                "request_id": state.get("request_id"),
                "tenant": principal.tenant if principal else None,
                "key_id": principal.key_id if principal else None,
                "action": action or "unrouted",
                "resource_id": _resource_id(
                    state.get("resource_id") or path_params.get("id") or path_params.get("job_id")
                ),
                "method": scope.get("method"),
                "route": getattr(route, "path", None),
                "status": counts["status"],
                "bytes_in": counts["in"],
                "bytes_out": counts["out"],
                "duration_ms": round((time.perf_counter() - began) * 1000.0, 3),
                "client": client[0] if client else None,
            }
        )


def _resource_id(value: Any) -> str | None:
    """An id for the audit line: ids are alphanumeric; anything else a client put in the path
    is not copied into the log (it could be anything, of any length)."""
    if value is None:
        return None
    text = str(value)
    return text if text.isascii() and text.isalnum() and len(text) <= 64 else "(invalid)"
