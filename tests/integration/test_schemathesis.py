"""Property-based fuzzing of the committed OpenAPI spec with schemathesis, against a real
uvicorn server with API keys: no input may produce a 5xx or a response that breaks the spec.

CI runs a bounded number of examples per operation; ``scripts/fuzz_api`` runs many more
(``SCHEMATHESIS_MAX_EXAMPLES``)."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from app.config import Settings
from app.main import create_app
from app.security.keys import ApiKeyEntry, key_sha256
from tests.conftest import ROOT

SCHEMA = schemathesis.openapi.from_path(ROOT / "openapi" / "openapi.json")
MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "12"))
KEY = f"fuzz-{uuid.uuid4().hex}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real server (uvicorn in a thread) with one admin key and small limits."""
    root: Path = tmp_path_factory.mktemp("fuzz")
    app = create_app(
        Settings(
            storage_dir=root / "results",
            warmup=False,
            redis_url=None,
            amqp_url=None,
            api_keys=[ApiKeyEntry(key_sha256=key_sha256(KEY), tenant="fuzz", scopes=["admin"])],
            rate_limit_per_min=0,
            max_upload_mb=2,
            max_duration_s=30,
        )
    )
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=30)


@SCHEMA.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_the_api_keeps_its_contract(case: schemathesis.Case, base_url: str) -> None:
    case.call_and_validate(
        base_url=base_url,
        headers={"Authorization": f"Bearer {KEY}"},
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
        timeout=60,
    )
