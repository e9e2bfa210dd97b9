"""Who may call what: API keys and scopes over the whole route table, tenant isolation, rate
limits, the audit log, request ids, the pipeline's admission bound and the hostile-input edge."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
import redis
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from app import metrics
from app.config import Settings
from app.main import create_app
from app.security.gate import PUBLIC_PATHS, declared_scope, flat_routes
from app.security.keys import ApiKeyEntry, key_sha256
from tests.conftest import amqp_url_or_skip, redis_url_or_skip, tone, wav_bytes
from tests.integration import test_s3 as s3_support

#: name → (key, tenant, scopes); the keys are random per run.
KEYS: dict[str, tuple[str, str, list[str]]] = {
    name: (f"{name}-{uuid.uuid4().hex}", tenant, scopes)
    for name, tenant, scopes in [
        ("acme-process", "acme", ["process"]),
        ("acme-read", "acme", ["read"]),
        ("acme-delete", "acme", ["delete"]),
        ("acme-admin", "acme", ["admin"]),
        ("globex-admin", "globex", ["admin"]),
    ]
}
SCOPE_KEY = {"process": "acme-process", "read": "acme-read", "delete": "acme-delete"}
#: A key of the same tenant with another scope (never admin), per required scope.
WRONG_SCOPE_KEY = {"process": "acme-read", "read": "acme-delete", "delete": "acme-process"}
RECORDING = wav_bytes(tone(220.0, 1.0, 16000), 16000)


def api_keys() -> list[ApiKeyEntry]:
    return [
        ApiKeyEntry(key_sha256=key_sha256(key), tenant=tenant, scopes=scopes)  # type: ignore[arg-type]
        for key, tenant, scopes in KEYS.values()
    ]


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[name][0]}"}


def keyed_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "storage_dir": tmp_path / "results",
        "warmup": False,
        "redis_url": None,
        "api_keys": api_keys(),
        "rate_limit_per_min": 0,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def keyed(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(keyed_settings(tmp_path))) as client:
        yield client


def is_problem(response: httpx.Response, status: int, code: str) -> bool:
    return (
        response.status_code == status
        and response.headers["content-type"].startswith("application/problem+json")
        and response.json()["code"] == code
    )


def wait_for_job(client: TestClient, job_id: str, key: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = client.get(f"/jobs/{job_id}", headers=auth(key)).json()
        if state["status"] in ("done", "failed"):
            return state  # type: ignore[no-any-return]
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish")


# -- the authorization matrix -----------------------------------------------------------------

Call = Callable[[TestClient, dict[str, str], dict[str, str]], httpx.Response]

#: How to call each protected route: (client, path parameters, headers) → response. A route
#: missing here fails test_every_route_is_protected_and_in_the_matrix.
CALLS: dict[tuple[str, str], Call] = {
    ("POST", "/process"): lambda c, p, h: c.post(
        "/process", files={"file": ("a.wav", RECORDING)}, headers=h
    ),
    ("POST", "/process/batch"): lambda c, p, h: c.post(
        "/process/batch", files=[("files", ("a.wav", RECORDING))], headers=h
    ),
    ("POST", "/jobs"): lambda c, p, h: c.post(
        "/jobs", files={"file": ("a.wav", RECORDING)}, headers=h
    ),
    ("GET", "/jobs/{job_id}"): lambda c, p, h: c.get(f"/jobs/{p['job_id']}", headers=h),
    ("GET", "/features/{id}"): lambda c, p, h: c.get(f"/features/{p['id']}", headers=h),
    ("GET", "/features/{id}/audio"): lambda c, p, h: c.get(f"/features/{p['id']}/audio", headers=h),
    ("DELETE", "/features/{id}"): lambda c, p, h: c.delete(f"/features/{p['id']}", headers=h),
}
SUCCESS = {"POST": (200, 202), "GET": (200,), "DELETE": (204,)}


def protected_routes(client: TestClient) -> list[tuple[str, str, str | None]]:
    """(method, path, declared scope) of every route of the app that is not public."""
    routes = []
    for context in flat_routes(client.app.routes):  # type: ignore[attr-defined]
        route = context.original_route
        if isinstance(route, APIRoute) and route.path not in PUBLIC_PATHS:
            routes += [(m, route.path, declared_scope(route)) for m in sorted(route.methods)]
    return routes


def acme_resources(client: TestClient) -> dict[str, str]:
    """A result and a job of tenant acme (made again when a DELETE erased them)."""
    made = client.post(
        "/process", files={"file": ("a.wav", RECORDING)}, headers=auth("acme-process")
    )
    assert made.status_code == 200, made.text
    job = client.post("/jobs", files={"file": ("a.wav", RECORDING)}, headers=auth("acme-process"))
    assert job.status_code == 202, job.text
    wait_for_job(client, job.json()["job_id"], "acme-read")
    return {"id": made.json()["id"], "job_id": job.json()["job_id"]}


def test_every_route_is_protected_and_in_the_matrix(keyed: TestClient) -> None:
    routes = protected_routes(keyed)
    assert len(routes) >= 7
    for method, path, scope in routes:
        assert scope in ("process", "read", "delete"), f"{method} {path} declares no scope"
        assert (method, path) in CALLS, f"{method} {path} is missing from the matrix"
    assert set(CALLS) == {(m, p) for m, p, _ in routes}


def test_authorization_matrix(keyed: TestClient) -> None:
    """Every protected route × {no key, bad key, wrong scope, other tenant, right scope}."""
    routes = sorted(protected_routes(keyed), key=lambda r: r[0] == "DELETE")  # erasure last
    for method, path, scope in routes:
        assert scope is not None
        call = CALLS[(method, path)]
        params = acme_resources(keyed)
        label = f"{method} {path}"

        none = call(keyed, params, {})
        assert is_problem(none, 401, "unauthenticated"), (label, none.text)
        assert none.headers["www-authenticate"] == 'Bearer realm="audioproc"'

        bad = call(keyed, params, {"X-API-Key": "not-a-key"})
        assert is_problem(bad, 401, "unauthenticated"), (label, bad.text)
        assert 'error="invalid_token"' in bad.headers["www-authenticate"]

        wrong = call(keyed, params, auth(WRONG_SCOPE_KEY[scope]))
        assert is_problem(wrong, 403, "forbidden"), (label, wrong.text)
        assert wrong.json()["required_scope"] == scope
        assert f'scope="{scope}"' in wrong.headers["www-authenticate"]

        other = call(keyed, params, auth("globex-admin"))
        if "{" in path:  # another tenant's resource: exactly like one that does not exist
            assert is_problem(other, 404, "not_found"), (label, other.text)
            unknown = call(keyed, {"id": "f" * 32, "job_id": "f" * 32}, auth("globex-admin"))
            assert unknown.json()["title"] == other.json()["title"]
        else:  # the same bytes make globex its own resource, never acme's
            assert other.status_code in SUCCESS[method], (label, other.text)
            assert params["id"] not in other.text and params["job_id"] not in other.text

        right = call(keyed, params, auth(SCOPE_KEY[scope]))
        assert right.status_code in SUCCESS[method], (label, right.text)
        admin = call(keyed, acme_resources(keyed), auth("acme-admin"))
        assert admin.status_code in SUCCESS[method], (label, admin.text)


def test_public_paths_need_no_key_and_unknown_paths_hide_behind_auth(keyed: TestClient) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"):
        assert keyed.get(path).status_code == 200, path
    assert is_problem(keyed.get("/no/such/route"), 401, "unauthenticated")
    assert is_problem(keyed.get("/no/such/route", headers=auth("acme-read")), 404, "not_found")
    ready = keyed.get("/readyz").json()
    assert ready["auth"] == "api_keys" and ready["warnings"] == []
    spec = keyed.get("/openapi.json").json()
    assert set(spec["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    assert spec["paths"]["/process"]["post"]["security"] == [{"bearer": []}, {"apiKey": []}]
    assert "security" not in spec["paths"]["/healthz"]["get"]


def test_open_mode_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(storage_dir=tmp_path / "results", warmup=False, redis_url=None)
    with caplog.at_level("WARNING", logger="audioproc"), TestClient(create_app(settings)) as c:
        ready = c.get("/readyz").json()
        assert ready["auth"] == "open" and "API_KEYS is unset" in ready["warnings"][0]
        assert c.post("/process", files={"file": ("a.wav", RECORDING)}).status_code == 200
    assert any("service is OPEN" in r.getMessage() for r in caplog.records)


# -- tenant isolation ---------------------------------------------------------------------------


def test_identical_bytes_from_two_tenants_never_share_a_cached_result(tmp_path: Path) -> None:
    url = redis_url_or_skip()
    prefix = f"test-{uuid.uuid4().hex}:"
    settings = keyed_settings(tmp_path, redis_url=url, cache_prefix=prefix)
    connection = redis.Redis.from_url(url)
    try:
        with TestClient(create_app(settings)) as client:
            files = {"file": ("a.wav", RECORDING)}
            acme = client.post("/process", files=files, headers=auth("acme-admin")).json()
            again = client.post("/process", files=files, headers=auth("acme-admin")).json()
            globex = client.post("/process", files=files, headers=auth("globex-admin")).json()
            assert again["cached"] and again["id"] == acme["id"]
            assert not globex["cached"] and globex["id"] != acme["id"]
            assert acme["content_sha256"] == globex["content_sha256"]
            assert "tenant" not in acme
            keys = {k.decode() for k in connection.scan_iter(f"{prefix}*")}
            assert {f"{prefix}{acme['id']}", f"{prefix}{globex['id']}"} <= keys
            for path in (f"/features/{acme['id']}", f"/features/{acme['id']}/audio"):
                assert is_problem(client.get(path, headers=auth("globex-admin")), 404, "not_found")
            denied = client.delete(f"/features/{acme['id']}", headers=auth("globex-admin"))
            assert is_problem(denied, 404, "not_found")
            assert (
                client.get(f"/features/{acme['id']}", headers=auth("acme-read")).status_code == 200
            )
    finally:
        for key in connection.scan_iter(f"{prefix}*"):
            connection.delete(key)


# -- rate limits and admission ------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_rate_limit_per_key(tmp_path: Path, backend: str) -> None:
    overrides: dict[str, Any] = {"rate_limit_per_min": 30, "rate_limit_burst": 3}
    prefix = f"test-{uuid.uuid4().hex}:"
    if backend == "redis":
        overrides.update(redis_url=redis_url_or_skip(), cache_prefix=prefix)
    with TestClient(create_app(keyed_settings(tmp_path, **overrides))) as client:
        unknown = "/features/" + "0" * 32
        answers = [client.get(unknown, headers=auth("acme-read")) for _ in range(4)]
        assert [a.status_code for a in answers] == [404, 404, 404, 429]
        limited = answers[-1]
        assert is_problem(limited, 429, "rate_limited")
        assert int(limited.headers["retry-after"]) == 2  # one token per 2 s
        assert client.get(unknown, headers=auth("acme-admin")).status_code == 404  # own bucket
        assert client.get("/healthz").status_code == 200  # probes are not limited
    if backend == "redis":
        connection = redis.Redis.from_url(overrides["redis_url"])
        key_id = key_sha256(KEYS["acme-read"][0])[:12]
        assert 0 < connection.pttl(f"{prefix}rate:key:{key_id}") <= 7000
        for key in connection.scan_iter(f"{prefix}*"):
            connection.delete(key)


def test_rate_limit_lets_requests_through_when_redis_is_down(tmp_path: Path) -> None:
    settings = keyed_settings(tmp_path, redis_url="redis://127.0.0.1:1/0", rate_limit_per_min=1)
    before = metrics.RATE_LIMIT_ERRORS._value.get()
    with TestClient(create_app(settings)) as client:
        for _ in range(3):
            answer = client.get("/features/" + "0" * 32, headers=auth("acme-read"))
            assert answer.status_code == 404
    assert metrics.RATE_LIMIT_ERRORS._value.get() - before == 3


def test_a_flood_beyond_the_waiting_bound_gets_503(tmp_path: Path) -> None:
    settings = keyed_settings(tmp_path, pipeline_concurrency=1, pipeline_max_waiting=0)
    with TestClient(create_app(settings)) as client:
        limiter = client.app.state.results.limiter  # type: ignore[attr-defined]
        holder = object()
        client.portal.call(limiter.acquire_on_behalf_of, holder)  # type: ignore[union-attr]
        try:
            busy = client.post(
                "/process", files={"file": ("a.wav", RECORDING)}, headers=auth("acme-admin")
            )
            assert is_problem(busy, 503, "overloaded") and busy.headers["retry-after"] == "1"
        finally:
            client.portal.call(limiter.release_on_behalf_of, holder)  # type: ignore[union-attr]
        again = client.post(
            "/process", files={"file": ("a.wav", RECORDING)}, headers=auth("acme-admin")
        )
        assert again.status_code == 200


# -- audit log and request ids ------------------------------------------------------------------

AUDIT_FIELDS = {
    "time", "type", "request_id", "tenant", "key_id", "action", "resource_id", "status",
    "bytes_in", "bytes_out", "duration_ms", "client",
}  # fmt: skip


def test_audit_lines_and_request_ids(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    audit_path = tmp_path / "audit.jsonl"
    settings = keyed_settings(tmp_path, audit_log=audit_path)
    options = json.dumps({"features": {"names": ["mfcc"], "n_mfcc": 17}})
    with TestClient(create_app(settings)) as client:
        made = client.post(
            "/process",
            files={"file": ("secret-name.wav", RECORDING)},
            data={"options": options},
            headers={**auth("acme-admin"), "X-Request-ID": "req-process-1"},
        )
        assert made.status_code == 200 and made.headers["x-request-id"] == "req-process-1"
        rid = made.json()["id"]
        hostile = client.get(
            f"/features/{rid}", headers={**auth("acme-read"), "X-Request-ID": "x" * 200}
        )
        generated = hostile.headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", generated)
        refused = client.post(
            "/process", files={"file": ("a.wav", b"\0" * 1_000_000)}, headers={"X-API-Key": "nope"}
        )
        assert refused.status_code == 401
        job = client.post(
            "/jobs",
            files={"file": ("a.wav", RECORDING)},
            headers={**auth("acme-process"), "X-Request-ID": "req-job-7"},
        ).json()
        wait_for_job(client, job["job_id"], "acme-read")
        assert client.delete(f"/features/{rid}", headers=auth("acme-delete")).status_code == 204
        client.get("/healthz")
    text = audit_path.read_text()
    lines = [json.loads(line) for line in text.splitlines()]
    assert all(set(line) >= AUDIT_FIELDS for line in lines)
    by_request = {line["request_id"]: line for line in lines if line["type"] == "request"}
    process = by_request["req-process-1"]
    assert process["action"] == "process" and process["resource_id"] == rid
    assert process["tenant"] == "acme" and process["status"] == 200
    assert process["key_id"] == key_sha256(KEYS["acme-admin"][0])[:12]
    assert process["bytes_in"] > len(RECORDING) and process["bytes_out"] > 1000
    assert process["client"] == "testclient" and process["duration_ms"] > 0
    assert by_request[generated]["action"] == "get_features"
    rejected = [line for line in lines if line["status"] == 401]
    assert len(rejected) == 1 and rejected[0]["tenant"] is None
    assert rejected[0]["bytes_in"] == 0  # refused before the body was read
    runs = [line for line in lines if line["type"] == "job"]
    assert [(r["request_id"], r["status"], r["tenant"]) for r in runs] == [
        ("req-job-7", "done", "acme")
    ]
    assert runs[0]["resource_id"] == job["job_id"] and runs[0]["bytes_in"] == len(RECORDING)
    erasure = [line for line in lines if line["action"] == "delete_features"]
    assert [(e["resource_id"], e["status"], e["tenant"]) for e in erasure] == [(rid, 204, "acme")]
    assert not [line for line in lines if line.get("route") == "/healthz"]
    for secret in [key for key, _, _ in KEYS.values()] + ["secret-name", "n_mfcc", "RIFF"]:
        assert secret not in text
    assert capsys.readouterr().out.count('"type":"request"') == len(by_request)


# -- the edge ------------------------------------------------------------------------------------


def test_security_headers_and_cors(tmp_path: Path) -> None:
    settings = keyed_settings(tmp_path, cors_origins="https://app.example.com")
    with TestClient(create_app(settings)) as client:
        answer = client.get("/features/" + "0" * 32, headers=auth("acme-read"))
        for name, value in {
            "x-content-type-options": "nosniff",
            "x-frame-options": "DENY",
            "referrer-policy": "no-referrer",
            "cache-control": "no-store",
            "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
        }.items():
            assert answer.headers[name] == value, name
        docs = client.get("/docs")
        assert docs.status_code == 200 and "content-security-policy" not in docs.headers
        preflight = {"Access-Control-Request-Method": "POST",
                     "Access-Control-Request-Headers": "authorization"}  # fmt: skip
        allowed = client.options(
            "/process", headers={"Origin": "https://app.example.com", **preflight}
        )
        assert allowed.headers["access-control-allow-origin"] == "https://app.example.com"
        denied = client.options("/process", headers={"Origin": "https://evil.example", **preflight})
        assert "access-control-allow-origin" not in denied.headers


def test_metrics_token(tmp_path: Path) -> None:
    token = uuid.uuid4().hex
    with TestClient(create_app(keyed_settings(tmp_path, metrics_token=token))) as client:
        assert is_problem(client.get("/metrics"), 401, "unauthenticated")
        assert is_problem(
            client.get("/metrics", headers=auth("acme-admin")), 401, "unauthenticated"
        )
        scrape = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert scrape.status_code == 200 and "audioproc_auth_failures_total" in scrape.text


def test_a_form_with_too_many_parts_is_refused_while_streaming(keyed: TestClient) -> None:
    fields = {f"field{i}": "x" for i in range(200)}
    answer = keyed.post(
        "/process", data=fields, files={"file": ("a.wav", RECORDING)}, headers=auth("acme-admin")
    )
    assert is_problem(answer, 413, "too_many_parts")


def test_error_bodies_leak_no_paths_or_traces(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    settings = keyed_settings(tmp_path, storage_dir=blocker / "results")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        answers = [
            client.get("/readyz"),
            client.post(
                "/process", files={"file": ("a.wav", RECORDING)}, headers=auth("acme-admin")
            ),
            client.post(
                "/process", files={"file": ("a.wav", b"RIFF\0\0")}, headers=auth("acme-admin")
            ),
            client.post("/process", data={"options": "{"}, headers=auth("acme-admin")),
            client.get("/features/" + "0" * 32, headers=auth("acme-admin")),
        ]
    assert answers[0].json()["down"] == ["storage"]
    for answer in answers:
        for leak in (str(tmp_path), "Traceback", "site-packages", "/app/", ".py"):
            assert leak not in answer.text, (answer.request.url, answer.text)


# -- erasure --------------------------------------------------------------------------------------

# The moto S3 server of the S3 tests (session fixtures, registered here by name).
aws_env = s3_support.aws_env
moto_url = s3_support.moto_url


@pytest.mark.parametrize("storage", ["local", "s3"])
def test_delete_erases_the_result_everywhere(tmp_path: Path, storage: str, request: Any) -> None:
    """DELETE /features/{id} leaves nothing behind: Redis (cache entry and job state), the
    storage directory or bucket; every read is 404 afterwards, and the erasure is audited."""
    url = redis_url_or_skip()
    prefix = f"test-{uuid.uuid4().hex}:"
    s3_prefix = f"erase-{uuid.uuid4().hex}/"
    overrides: dict[str, Any] = {
        "redis_url": url,
        "cache_prefix": prefix,
        "amqp_url": amqp_url_or_skip(),
        "amqp_queue": f"test-{uuid.uuid4().hex}",
        "audit_log": tmp_path / "audit.jsonl",
    }
    bucket = None
    if storage == "s3":
        endpoint = request.getfixturevalue("moto_url")
        bucket = boto3.client("s3", endpoint_url=endpoint)
        overrides.update(
            storage="s3",
            s3_bucket=s3_support.RESULTS_BUCKET,
            s3_prefix=s3_prefix,
            s3_endpoint_url=endpoint,
        )
    connection = redis.Redis.from_url(url)

    def stored() -> list[str]:
        if bucket is not None:
            pages = bucket.get_paginator("list_objects_v2").paginate(
                Bucket=s3_support.RESULTS_BUCKET, Prefix=s3_prefix
            )
            return [o["Key"] for page in pages for o in page.get("Contents", [])]
        return [str(p) for p in (tmp_path / "results").rglob("*") if p.is_file()]

    try:
        with TestClient(create_app(keyed_settings(tmp_path, **overrides))) as client:
            files = {"file": ("a.wav", RECORDING)}
            rid = client.post("/process", files=files, headers=auth("acme-admin")).json()["id"]
            job = client.post("/jobs", files=files, headers=auth("acme-admin")).json()
            assert job["status"] == "done"  # the result existed: no work queued
            redis_keys = {k.decode() for k in connection.scan_iter(f"{prefix}*")}
            assert {f"{prefix}{rid}", f"{prefix}job:{job['job_id']}"} <= redis_keys
            assert any(rid in key for key in stored())

            erased = client.delete(f"/features/{rid}", headers=auth("acme-delete"))
            assert erased.status_code == 204

            assert not [k for k in connection.scan_iter(f"{prefix}*") if rid.encode() in k]
            assert not list(connection.scan_iter(f"{prefix}job:*"))
            assert not [key for key in stored() if rid in key]
            for path in (f"/features/{rid}", f"/features/{rid}/audio", f"/jobs/{job['job_id']}"):
                assert is_problem(client.get(path, headers=auth("acme-admin")), 404, "not_found")
            again = client.delete(f"/features/{rid}", headers=auth("acme-admin"))
            assert is_problem(again, 404, "not_found")
        audit = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
        erasures = [a for a in audit if a["action"] == "delete_features"]
        assert [(a["resource_id"], a["status"]) for a in erasures] == [(rid, 204), (rid, 404)]
    finally:
        for key in connection.scan_iter(f"{prefix}*"):
            connection.delete(key)
