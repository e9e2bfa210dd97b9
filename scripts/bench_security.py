"""What the security gate costs a request: a cached ``GET /features/{id}`` with and without
``API_KEYS``, and with no gate at all.

Three server configurations, each a real uvicorn process on 127.0.0.1 with the Redis result
cache (``--redis-url``), one pipeline thread and its own Redis prefix and storage directory:

no gate
    The application with the security gate taken out of its middleware stack: the floor.
open
    ``API_KEYS`` unset (the laptop default): the gate still gives request ids, security headers
    and an audit line per request.
keys
    ``API_KEYS`` with ``--keys`` keys (the caller's is the last, the worst case for the
    constant-time scan), the Redis token-bucket rate limit (high enough never to refuse),
    the tenant check, and the audit line appended to ``AUDIT_LOG`` as well as stdout.

One client (httpx, keep-alive) makes ``--requests`` sequential requests per configuration after
``--warmup`` unmeasured ones; configurations are interleaved over ``--rounds`` rounds and the
table shows per-configuration latency percentiles over all rounds. The result is a 3 s
recording's ``energy`` feature (a small body, so the gate's cost is not drowned by
serialization).

Over HTTP the differences sit inside the run-to-run noise of a ~3 ms request, so the script
also times the gate alone, in this process (:func:`gate_cost`): the same gate in front of an
application that answers at once, with the real route table, per configuration.

    python scripts/bench_security.py --markdown /tmp/bench_security.md
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import redis
import soundfile as sf
from evalkit import cpu_description  # scripts/evalkit.py, beside this script

ROOT = Path(__file__).resolve().parents[1]
SPEECH = ROOT.parent / "shared" / "data" / "speech"
CONFIGS = ("no gate", "open", "keys")


def recording() -> bytes:
    """The first 3 s of the first shared speech clip, as WAV."""
    path = sorted(SPEECH.glob("*.ogg"))[0]
    samples, rate = sf.read(path, dtype="float32")
    buffer = io.BytesIO()
    sf.write(buffer, samples[: 3 * rate], rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def serve(config: str, port: int) -> None:
    """Run the server of one configuration (the child process)."""
    import uvicorn
    from fastapi.routing import APIRoute

    from app.config import Settings
    from app.main import create_app
    from app.security.gate import Authorize, SecurityGate, flat_routes
    from app.security.keys import OPEN

    app = create_app(Settings())
    if config == "no gate":  # the gate out, and the routes' callers answered without it
        app.user_middleware = [m for m in app.user_middleware if m.cls is not SecurityGate]
        for context in flat_routes(app.routes):
            route = context.original_route
            if isinstance(route, APIRoute):
                for dependency in route.dependant.dependencies:
                    if isinstance(dependency.call, Authorize):
                        app.dependency_overrides[dependency.call] = lambda: OPEN
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start(config: str, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve", config, "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,  # the audit lines
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"the {config} server did not start")


def measure(
    url: str, headers: dict[str, str], data: bytes, requests: int, warmup: int
) -> list[float]:
    """Latencies of cached GET /features/{id}?names=energy, ms."""
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        made = client.post("/process", files={"file": ("a.wav", data)})
        made.raise_for_status()
        path = f"/features/{made.json()['id']}"
        for _ in range(warmup):
            client.get(path, params={"names": "energy"}).raise_for_status()
        latencies = []
        for _ in range(requests):
            began = time.perf_counter()
            answer = client.get(path, params={"names": "energy"})
            latencies.append((time.perf_counter() - began) * 1000.0)
            assert answer.status_code == 200, answer.text
    return latencies


def gate_cost(redis_url: str, keys: int, requests: int) -> list[str]:
    """The gate alone, in this process: µs per request through :class:`SecurityGate` in front
    of an application that answers at once (the real route table; audit lines to a file and to
    /dev/null instead of stdout), per configuration, median of 20 batches."""
    import asyncio
    import hashlib

    from fastapi import FastAPI

    from app.config import Settings
    from app.main import create_app
    from app.security.audit import AuditLog
    from app.security.gate import SecurityGate
    from app.security.keys import ApiKeyEntry, KeyRing
    from app.security.ratelimit import MemoryRateLimiter, RedisRateLimiter

    key = f"bench-{uuid.uuid4().hex}"
    entries = [ApiKeyEntry(key_sha256=uuid.uuid4().hex * 2, tenant=f"t{i}", scopes=["read"])
               for i in range(keys - 1)]  # fmt: skip
    entries.append(ApiKeyEntry(key_sha256=hashlib.sha256(key.encode()).hexdigest(),
                               tenant="bench", scopes=["read"]))  # fmt: skip
    app: FastAPI = create_app(Settings(warmup=False))
    prefix = f"bench-security-{uuid.uuid4().hex}:"

    async def answer(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
        await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b"{}"})  # type: ignore[operator]

    async def run(keyring: KeyRing | None, limiter: object) -> float:
        app.state.rate_limiter = limiter
        with tempfile.TemporaryDirectory() as scratch, open(os.devnull, "w") as sink:
            gate = SecurityGate(
                answer, keyring=keyring, audit=AuditLog(Path(scratch) / "a.jsonl", sink)
            )
            headers = [(b"authorization", f"Bearer {key}".encode())] if keyring else []
            scope = {"type": "http", "method": "GET", "path": "/features/" + "a" * 32,
                     "query_string": b"", "headers": headers, "client": ("127.0.0.1", 1),
                     "app": app, "root_path": ""}  # fmt: skip

            async def receive() -> dict:  # type: ignore[type-arg]
                return {"type": "http.request", "body": b""}

            async def send(message: dict) -> None:  # type: ignore[type-arg]
                return None

            batches = []
            for _ in range(20):
                began = time.perf_counter()
                for _ in range(requests // 20):
                    await gate(dict(scope), receive, send)
                batches.append((time.perf_counter() - began) / (requests // 20) * 1e6)
        return float(np.median(batches))

    async def all_configs() -> list[tuple[str, float]]:
        redis_limiter = RedisRateLimiter(redis_url, per_min=1e7, burst=10**6, prefix=prefix)
        try:
            return [
                ("open (no API_KEYS)", await run(None, None)),
                (f"{keys} keys, in-process rate limit", await run(KeyRing(entries),
                                                                   MemoryRateLimiter(1e7, 10**6))),
                (f"{keys} keys, Redis rate limit", await run(KeyRing(entries), redis_limiter)),
            ]  # fmt: skip
        finally:
            await redis_limiter.close()

    rows = asyncio.run(all_configs())
    return [
        "",
        f"The gate alone (in process, {requests} requests per configuration, median of 20 "
        "batches; request id, route and scope, authentication, rate limit, security headers, "
        "audit line):",
        "",
        "| configuration | µs per request |",
        "|---|---:|",
        *[f"| {name} | {us:.1f} |" for name, us in rows],
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keys", type=int, default=50, help="configured API keys")
    parser.add_argument(
        "--gate-requests", type=int, default=20000, help="requests of the in-process gate timing"
    )
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    parser.add_argument("--serve", choices=CONFIGS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port)
        return 0

    data = recording()
    prefix = f"bench-security-{uuid.uuid4().hex}:"
    key = f"bench-{uuid.uuid4().hex}"
    entries = [
        {"key_sha256": uuid.uuid4().hex * 2, "tenant": f"t{i}", "scopes": ["read"]}
        for i in range(args.keys - 1)
    ]
    import hashlib

    entries.append(
        {"key_sha256": hashlib.sha256(key.encode()).hexdigest(), "tenant": "bench",
         "scopes": ["process", "read"]}
    )  # fmt: skip
    samples: dict[str, list[float]] = {c: [] for c in CONFIGS}
    with tempfile.TemporaryDirectory() as scratch:
        base = {
            **os.environ,
            "REDIS_URL": args.redis_url,
            "CACHE_PREFIX": prefix,
            "STORAGE_DIR": f"{scratch}/results",
            "TORCH_THREADS": "1",
            "PIPELINE_CONCURRENCY": "1",
            "WARMUP": "false",
            "PYTHONPATH": str(ROOT),
        }
        base.pop("API_KEYS", None)
        envs = {
            "no gate": base,
            "open": base,
            "keys": {
                **base,
                "API_KEYS": json.dumps(entries),
                "RATE_LIMIT_PER_MIN": "10000000",
                "RATE_LIMIT_BURST": "1000000",
                "AUDIT_LOG": f"{scratch}/audit.jsonl",
            },
        }
        for round_ in range(args.rounds):
            for config in CONFIGS:
                process, url = start(config, envs[config])
                try:
                    headers = {"Authorization": f"Bearer {key}"} if config == "keys" else {}
                    samples[config] += measure(url, headers, data, args.requests, args.warmup)
                finally:
                    process.terminate()
                    process.wait(timeout=30)
                print(f"round {round_ + 1}: {config} done", file=sys.stderr)
    connection = redis.Redis.from_url(args.redis_url)
    for stale in connection.scan_iter(f"{prefix}*"):
        connection.delete(stale)

    floor = float(np.median(samples["no gate"]))
    lines = [
        f"Cached `GET /features/{{id}}?names=energy` (3 s recording), {args.rounds} × "
        f"{args.requests} sequential requests per configuration, keep-alive, Redis cache; "
        f"{args.keys} API keys; {cpu_description()}.",
        "",
        "| configuration | p50 ms | p90 ms | p99 ms | p50 − no gate, ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for config in CONFIGS:
        p50, p90, p99 = np.percentile(samples[config], [50, 90, 99])
        lines.append(f"| {config} | {p50:.3f} | {p90:.3f} | {p99:.3f} | {p50 - floor:+.3f} |")
    keys_minus_open = np.median(samples["keys"]) - np.median(samples["open"])
    lines += ["", f"API keys (authentication, tenant check, rate limit) vs open: "
              f"{keys_minus_open:+.3f} ms at the median."]  # fmt: skip
    lines += gate_cost(args.redis_url, args.keys, args.gate_requests)
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
