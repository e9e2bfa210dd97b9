"""POST /jobs and GET /jobs/{id}: against the real RabbitMQ and Redis (CI runs these and fails
without them), with a closed port for "RabbitMQ unreachable", and in-process without AMQP_URL.

Workers here run in a thread of the test process (:class:`ThreadWorker`) so that failures can be
injected into their pipeline; tests/integration/test_worker_faults.py kills real worker processes.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from app.config import Settings
from app.main import create_app
from app.models.options import ProcessingOptions
from app.security.audit import AuditLog
from app.services.jobs import JobState, LocalUploads, MemoryJobStore, job_id_for
from app.services.queue import JobMessage, RetryPolicy
from app.services.results import result_id
from app.services.storage import StorageError
from app.worker import JobRunner
from tests.conftest import amqp_url_or_skip, redis_url_or_skip, tone, wav_bytes
from tests.integration.jobs_support import (
    ThreadWorker,
    clean_up,
    free_port,
    get_dead_letter,
    job_settings,
    queue_counts,
    wait_for,
    wait_for_job,
)

PROBLEM = "application/problem+json"

pytestmark = pytest.mark.timeout(60)


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def recording(seed: int, seconds: float = 0.5) -> bytes:
    """A distinct short WAV per seed (a tone plus a little seeded noise)."""
    rng = np.random.default_rng(seed)
    samples = tone(220 + seed % 500, seconds, 16000, 0.3)
    samples += (0.01 * rng.standard_normal(samples.shape)).astype(np.float32)
    return wav_bytes(samples, 16000)


def submit(client: TestClient, data: bytes, options: dict[str, Any] | None = None) -> Any:
    form = {"options": orjson.dumps(options).decode()} if options else None
    return client.post("/jobs", files={"file": ("a.wav", data)}, data=form)


def expected_result_id(data: bytes, options: dict[str, Any] | None = None) -> str:
    parsed = ProcessingOptions.model_validate(options or {})
    return result_id(hashlib.sha256(data).hexdigest(), parsed)


class Flaky:
    """Wraps a pipeline's ``run_batch``: raises for the first ``failures`` calls (``None``:
    always), recording when each call started."""

    def __init__(self, failures: int | None) -> None:
        self.failures = failures
        self.calls: list[float] = []
        self._lock = threading.Lock()

    def __call__(self, run_batch: Callable[..., Any]) -> Callable[..., Any]:
        def flaky(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.calls.append(time.monotonic())
                failing = self.failures is None or len(self.calls) <= self.failures
            if failing:
                raise RuntimeError(f"injected transient failure #{len(self.calls)}")
            return run_batch(*args, **kwargs)

        return flaky


@pytest.fixture
def amqp_settings(tmp_path: Path) -> Iterator[Settings]:
    settings = job_settings(tmp_path, amqp_url=amqp_url_or_skip(), redis_url=redis_url_or_skip())
    yield settings
    clean_up(settings)


@pytest.fixture
def api(amqp_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(amqp_settings)) as client:
        yield client


# -- through RabbitMQ ---------------------------------------------------------------------------


@pytest.mark.rabbitmq
@pytest.mark.redis
def test_submit_poll_done_and_the_result_is_readable(
    amqp_settings: Settings, api: TestClient
) -> None:
    data = recording(1)
    options = {"features": {"names": ["mfcc", "energy"]}}
    response = submit(api, data, options)
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["status"] == "queued"
    assert accepted["status_url"] == f"/jobs/{accepted['job_id']}"
    assert response.headers["location"] == accepted["status_url"]
    # The message carries a reference; the bytes wait in the upload store.
    uploads = amqp_settings.storage_dir / "uploads"
    assert (uploads / accepted["job_id"]).read_bytes() == data
    with ThreadWorker(amqp_settings):
        job = wait_for_job(api, accepted["job_id"])
    assert job["status"] == "done", job
    assert job["attempts"] == 1 and job["error"] is None
    assert job["result_id"] == expected_result_id(data, options)
    assert job["result_url"] == f"/features/{job['result_id']}"
    assert job["created_at"] <= job["started_at"] <= job["finished_at"]
    features = api.get(job["result_url"]).json()
    assert features["id"] == job["result_id"] and set(features["features"]) == {"mfcc", "energy"}
    assert not list(uploads.iterdir()), "the staged upload outlived its job"
    ready = api.get("/readyz").json()
    assert ready["checks"]["queue"] == "rabbitmq: ok (0 ready, 0 delayed, 0 dead)"
    assert ready["checks"]["jobs"] == "redis: ok"
    assert 'audioproc_queue_depth{queue="ready"} 0.0' in api.get("/metrics").text


@pytest.mark.rabbitmq
@pytest.mark.redis
def test_resubmission_returns_the_same_job(amqp_settings: Settings, api: TestClient) -> None:
    data = recording(2)
    first = submit(api, data).json()
    again = submit(api, data).json()
    assert again == first
    assert queue_counts(amqp_settings) == (1, 0), "the repeat published a second message"
    other = submit(api, data, {"features": {"names": ["mfcc"]}}).json()
    assert other["job_id"] != first["job_id"]
    with ThreadWorker(amqp_settings):
        done = wait_for_job(api, first["job_id"])
        wait_for_job(api, other["job_id"])
    repeat = submit(api, data)
    assert repeat.status_code == 202
    assert repeat.json() == {**first, "status": "done"}
    assert wait_for_job(api, first["job_id"]) == done, "the repeat changed the finished job"
    assert queue_counts(amqp_settings) == (0, 0)


@pytest.mark.rabbitmq
@pytest.mark.redis
def test_a_stored_result_makes_the_job_done_at_once(api: TestClient) -> None:
    data = recording(3)
    processed = api.post("/process", files={"file": ("a.wav", data)}).json()
    response = submit(api, data)
    assert response.status_code == 202
    assert response.json()["status"] == "done"
    job = api.get(response.json()["status_url"]).json()
    assert (job["status"], job["attempts"], job["result_id"]) == ("done", 0, processed["id"])
    assert response.json()["job_id"] == job_id_for(processed["id"])


@pytest.mark.rabbitmq
@pytest.mark.redis
def test_bad_audio_fails_the_job_at_once_without_retry(
    amqp_settings: Settings, api: TestClient
) -> None:
    retries = metric("audioproc_job_retries_total")
    response = submit(api, b"RIFF but not really a wave file" * 8)
    assert response.status_code == 202
    with ThreadWorker(amqp_settings):
        job = wait_for_job(api, response.json()["job_id"])
    assert job["status"] == "failed", job
    assert job["attempts"] == 1
    assert job["error"]["code"] in {"unsupported_format", "corrupt_audio"}
    assert job["error"]["status"] in {415, 422}
    assert job["dead_lettered"] is False and job["result_url"] is None
    assert metric("audioproc_job_retries_total") == retries
    assert queue_counts(amqp_settings, f"{amqp_settings.amqp_queue}.dead") == (0, 0)


@pytest.mark.rabbitmq
@pytest.mark.redis
def test_transient_failures_are_retried_with_backoff(
    amqp_settings: Settings, api: TestClient
) -> None:
    flaky = Flaky(failures=2)
    retries = metric("audioproc_job_retries_total")
    data = recording(4)
    job_id = submit(api, data).json()["job_id"]
    seen: list[dict[str, Any]] = []

    def finished() -> dict[str, Any] | None:
        seen.append(api.get(f"/jobs/{job_id}").json())
        return seen[-1] if seen[-1]["status"] in ("done", "failed") else None

    with ThreadWorker(amqp_settings, flaky):
        job = wait_for(finished, what="the job")
    # Between attempts the job is queued again, with the error and the next attempt's time.
    waiting = [s for s in seen if s["status"] == "queued" and s["error"] is not None]
    assert waiting, [s["status"] for s in seen]
    assert waiting[0]["error"]["code"] == "job_error"
    assert "injected transient failure" in waiting[0]["error"]["detail"]
    assert waiting[0]["next_attempt_at"] is not None
    assert job["status"] == "done", job
    assert job["attempts"] == 3 and job["error"] is None
    assert job["result_id"] == expected_result_id(data)
    assert metric("audioproc_job_retries_total") - retries == 2
    # Exponential backoff: 0.2 s after the 1st failure, 0.4 s after the 2nd (JOB_RETRY_BASE_S).
    gaps = np.diff(flaky.calls)
    assert len(gaps) == 2 and gaps[0] >= 0.2 and gaps[1] >= 0.4, gaps
    assert gaps[1] > gaps[0]


@pytest.mark.rabbitmq
@pytest.mark.redis
def test_a_job_that_always_fails_is_dead_lettered_with_its_error(
    amqp_settings: Settings, api: TestClient
) -> None:
    dead_before = metric("audioproc_jobs_dead_lettered_total")
    data = recording(5)
    job_id = submit(api, data).json()["job_id"]
    with ThreadWorker(amqp_settings, Flaky(failures=None)):
        job = wait_for_job(api, job_id)
    assert job["status"] == "failed", job
    assert job["attempts"] == amqp_settings.job_max_attempts == 3
    assert job["dead_lettered"] is True
    assert job["error"]["code"] == "job_error"
    assert "RuntimeError: injected transient failure #3" in job["error"]["detail"]
    assert metric("audioproc_jobs_dead_lettered_total") - dead_before == 1
    assert "1 dead" in api.get("/readyz").json()["checks"]["queue"]
    dead = get_dead_letter(amqp_settings)
    assert dead is not None and orjson.loads(dead.body)["job_id"] == job_id
    assert dead.headers["x-error-code"] == "job_error"
    assert "injected transient failure" in str(dead.headers["x-error-detail"])
    # Submitting a dead-lettered job again starts it afresh; a healthy worker finishes it.
    again = submit(api, data).json()
    assert again["job_id"] == job_id and again["status"] == "queued"
    with ThreadWorker(amqp_settings):
        job = wait_for_job(api, job_id)
    assert (job["status"], job["attempts"], job["dead_lettered"]) == ("done", 1, False)


def test_rabbitmq_unreachable_refuses_jobs_but_process_works(tmp_path: Path) -> None:
    settings = Settings(
        amqp_url=f"amqp://guest:guest@127.0.0.1:{free_port()}/",  # nothing listens there
        amqp_timeout_s=2.0,
        redis_url=None,
        storage_dir=tmp_path / "storage",
        warmup=False,
    )
    data = recording(6)
    with TestClient(create_app(settings)) as client:
        started = time.monotonic()
        response = submit(client, data)
        assert time.monotonic() - started < 5
        assert response.status_code == 503
        assert response.headers["content-type"] == PROBLEM
        problem = response.json()
        assert problem["code"] == "queue_unavailable" and "RabbitMQ" in problem["detail"]
        assert "Traceback" not in response.text
        assert not list((tmp_path / "storage" / "uploads").glob("*")), "a refused job left bytes"
        assert client.post("/process", files={"file": ("a.wav", data)}).status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "degraded"
        assert "queue" in ready.json()["down"]
        checks = ready.json()["checks"]
        assert checks["queue"].startswith("rabbitmq: down")
        assert checks["cache"] == "memory: ok" and checks["storage"] == "local: ok"
        assert "audioproc_queue_errors_total" in client.get("/metrics").text


@pytest.mark.rabbitmq
def test_redis_unreachable_refuses_jobs_with_503(tmp_path: Path) -> None:
    settings = job_settings(
        tmp_path, amqp_url=amqp_url_or_skip(), redis_url=f"redis://127.0.0.1:{free_port()}/0"
    )
    try:
        with TestClient(create_app(settings)) as client:
            response = submit(client, recording(7))
            assert response.status_code == 503
            assert response.json()["code"] == "job_store_unavailable"
            assert client.get(f"/jobs/{'0' * 32}").json()["code"] == "job_store_unavailable"
            checks = client.get("/readyz").json()["checks"]
            assert checks["jobs"].startswith("redis: down")
            assert (
                client.post("/process", files={"file": ("a.wav", recording(7))}).status_code == 200
            )
    finally:
        settings = settings.model_copy(update={"redis_url": None})
        clean_up(settings)


# -- in-process (no AMQP_URL) -------------------------------------------------------------------


@pytest.fixture
def local_client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(
        storage_dir=tmp_path / "storage", warmup=False, redis_url=None, job_retry_base_s=0.05
    )
    assert settings.amqp_url is None
    with TestClient(create_app(settings)) as client:
        yield client


def test_in_process_jobs_without_rabbitmq(local_client: TestClient) -> None:
    data = recording(8)
    accepted = submit(local_client, data)
    assert accepted.status_code == 202
    job = wait_for_job(local_client, accepted.json()["job_id"])
    assert (job["status"], job["attempts"]) == ("done", 1)
    assert job["result_id"] == expected_result_id(data)
    assert local_client.get(job["result_url"]).status_code == 200
    assert submit(local_client, data).json()["status"] == "done"
    bad = submit(local_client, b"\x00" * 1000).json()
    failed = wait_for_job(local_client, bad["job_id"])
    assert failed["status"] == "failed" and failed["error"]["status"] >= 400
    checks = local_client.get("/readyz").json()["checks"]
    assert checks["queue"] == "memory: ok (0 ready, 0 delayed, 0 dead)"
    assert checks["jobs"] == "memory: ok"
    assert 'audioproc_jobs_total{state="done"}' in local_client.get("/metrics").text


def test_in_process_retries_and_dead_letters(local_client: TestClient) -> None:
    pipeline: Any = local_client.app.state.results.pipeline  # type: ignore[attr-defined]
    flaky = Flaky(failures=1)
    pipeline.run_batch = flaky(pipeline.run_batch)
    job = wait_for_job(local_client, submit(local_client, recording(9)).json()["job_id"])
    assert (job["status"], job["attempts"]) == ("done", 2)

    flaky.failures = None
    job = wait_for_job(local_client, submit(local_client, recording(10)).json()["job_id"])
    assert (job["status"], job["attempts"], job["dead_lettered"]) == ("failed", 5, True)
    assert job["error"]["code"] == "job_error"
    assert wait_for(
        lambda: "1 dead" in local_client.get("/readyz").json()["checks"]["queue"],
        what="the dead-letter count",
    )


def test_a_result_that_storage_refused_is_retried_not_done(local_client: TestClient) -> None:
    storage: Any = local_client.app.state.results.storage  # type: ignore[attr-defined]
    put, calls = storage.put, []

    async def put_failing_once(result_id: str, objects: Any) -> None:
        calls.append(result_id)
        if len(calls) == 1:
            raise StorageError("injected: the disk is full")
        await put(result_id, objects)

    storage.put = put_failing_once
    job = wait_for_job(local_client, submit(local_client, recording(12)).json()["job_id"])
    assert (job["status"], job["attempts"]) == ("done", 2)
    assert calls == [job["result_id"]] * 2
    assert list((storage.root / "results").rglob("manifest.json"))


def test_unknown_job_is_404(local_client: TestClient) -> None:
    response = local_client.get(f"/jobs/{'ab' * 16}")
    assert response.status_code == 404 and response.headers["content-type"] == PROBLEM
    assert local_client.get("/jobs/not-an-id").status_code == 404


def test_submission_needs_exactly_one_input(local_client: TestClient) -> None:
    neither = local_client.post("/jobs", data={"options": "{}"})
    assert neither.status_code == 400 and neither.json()["code"] == "invalid_request"
    bad_options = local_client.post(
        "/jobs", files={"file": ("a.wav", recording(11))}, data={"options": "{"}
    )
    assert bad_options.status_code == 422 and bad_options.json()["code"] == "invalid_options"


class _Delivery:
    """A delivery settled in memory (for driving a JobRunner directly)."""

    def __init__(self, message: JobMessage) -> None:
        self.message, self.attempt, self.redelivered = message, 1, True
        self.outcome: str | None = None
        self.error: dict[str, Any] | None = None

    @property
    def settled(self) -> bool:
        return self.outcome is not None

    async def ack(self) -> None:
        self.outcome = self.outcome or "ack"

    async def requeue(self) -> None:
        self.outcome = self.outcome or "requeue"

    async def retry(self, attempt: int, delay_s: float) -> None:
        self.outcome = self.outcome or "retry"

    async def dead_letter(self, error: dict[str, Any]) -> None:
        self.outcome, self.error = self.outcome or "dead", error


def test_a_job_that_keeps_stopping_its_workers_is_dead_lettered(tmp_path: Path) -> None:
    """A job whose workers died JOB_MAX_ATTEMPTS times (SIGKILL, out of memory) is not started
    again: its next delivery dead-letters it."""

    async def scenario() -> tuple[_Delivery, JobState | None]:
        store = MemoryJobStore(ttl_s=60)
        message = JobMessage("a" * 32, "b" * 32, "c" * 64, "{}", "a" * 32, time.time())
        runner = JobRunner(
            results=cast(Any, None),  # never reached
            store=store,
            uploads=LocalUploads(tmp_path),
            policy=RetryPolicy(max_attempts=3, base_s=0.01, max_s=0.1),
            audit=AuditLog(),
        )
        for _ in range(3):  # three workers started the job and died
            await store.start(message, time.time())
        delivery = _Delivery(message)
        await runner.handle(delivery)
        return delivery, await store.get(message.job_id)

    delivery, state = asyncio.run(scenario())
    assert delivery.outcome == "dead" and delivery.error is not None
    assert delivery.error["code"] == "job_crashed"
    assert state is not None and (state.status, state.attempts) == ("failed", 4)
    assert state.dead_lettered and state.error is not None
    assert "started 4 times" in state.error["detail"]
