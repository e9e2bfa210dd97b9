"""Real `audioproc worker` processes against the real RabbitMQ and Redis: killed with SIGKILL
mid-job, stopped with SIGTERM, and two of them sharing 200 jobs. Nothing may be lost or done
twice. (CI runs these; they fail there when RabbitMQ or Redis is missing.)

A job is made slow by ``tests/integration/fault_worker.py`` (the real worker with a stall patched
in), never by a hook in the production code.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from tests.conftest import amqp_url_or_skip, redis_url_or_skip
from tests.integration.jobs_support import (
    WorkerProcess,
    clean_up,
    job_settings,
    queue_counts,
    sample,
    wait_for,
    wait_for_job,
    worker_processes,
)
from tests.integration.test_jobs import expected_result_id, recording, submit

FAULT_WORKER = "tests.integration.fault_worker"

pytestmark = [pytest.mark.timeout(120), pytest.mark.rabbitmq, pytest.mark.redis]


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[Settings]:
    settings = job_settings(tmp_path, amqp_url=amqp_url_or_skip(), redis_url=redis_url_or_skip())
    yield settings
    clean_up(settings)


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def stored_results(settings: Settings) -> list[Path]:
    """The result directories in storage (one per result id)."""
    return sorted(p.parent for p in (settings.storage_dir / "results").rglob("manifest.json"))


def pipeline_runs(worker: WorkerProcess) -> float:
    return sample(worker.metrics(), "audioproc_pipeline_step_seconds_count", 'step="decode"')


def running_job(api: TestClient, job_id: str) -> dict[str, Any]:
    return wait_for_job(api, job_id, ("running",))


@pytest.mark.parametrize("fault_at", ["pipeline", "before_done"])
def test_sigkill_mid_job_then_another_worker_completes_it_once(
    settings: Settings, api: TestClient, tmp_path: Path, fault_at: str
) -> None:
    data = recording(100)
    job_id = submit(api, data).json()["job_id"]
    expected = expected_result_id(data)
    slow = WorkerProcess(
        settings,
        tmp_path / "slow.log",
        module=FAULT_WORKER,
        extra_env={"FAULT_AT": fault_at, "FAULT_SLEEP_S": "60"},
    )
    try:
        assert running_job(api, job_id)["attempts"] == 1
        if fault_at == "before_done":  # the result is stored; the job is not yet marked done
            wait_for(lambda: stored_results(settings), what="the stored result")
        slow.kill()
    finally:
        slow.close()
    assert slow.process.returncode == -signal.SIGKILL
    assert api.get(f"/jobs/{job_id}").json()["status"] == "running"
    # The killed worker's connection is gone, so RabbitMQ has put the unacked message back.
    assert wait_for(lambda: queue_counts(settings)[0] == 1, what="the message to be requeued")

    with worker_processes(settings, tmp_path) as (worker,):
        job = wait_for_job(api, job_id)
        worker.wait_metrics()
        metrics = worker.metrics()
        runs = pipeline_runs(worker)
        assert worker.terminate() == 0
    assert job["status"] == "done", job
    assert job["attempts"] == 2  # the killed attempt counts
    assert job["result_id"] == expected
    assert [p.name for p in stored_results(settings)] == [expected]
    assert sample(metrics, "audioproc_jobs_total", 'state="done"') == 1
    # Killed before the result existed: the pipeline ran again. Killed after it was stored: the
    # second worker found it and did not run the pipeline.
    assert runs == (1 if fault_at == "pipeline" else 0)
    assert api.get(job["result_url"]).json()["id"] == expected
    assert queue_counts(settings) == (0, 0)


def test_sigterm_lets_the_running_job_finish(
    settings: Settings, api: TestClient, tmp_path: Path
) -> None:
    data = recording(101)
    job_id = submit(api, data).json()["job_id"]
    with worker_processes(
        settings, tmp_path, module=FAULT_WORKER, extra_env={"FAULT_SLEEP_S": "1.5"}
    ) as (worker,):
        running_job(api, job_id)
        assert worker.terminate(timeout_s=20) == 0
    job = api.get(f"/jobs/{job_id}").json()
    assert (job["status"], job["attempts"]) == ("done", 1)
    assert job["result_id"] == expected_result_id(data)
    assert queue_counts(settings) == (0, 0)
    assert "worker stopped" in worker.log()


def test_sigterm_past_the_deadline_requeues_the_job(
    settings: Settings, api: TestClient, tmp_path: Path
) -> None:
    data = recording(102)
    job_id = submit(api, data).json()["job_id"]
    impatient = settings.model_copy(update={"worker_shutdown_timeout_s": 0.5})
    with worker_processes(
        impatient, tmp_path, module=FAULT_WORKER, extra_env={"FAULT_SLEEP_S": "60"}
    ) as (worker,):
        running_job(api, job_id)
        assert worker.terminate(timeout_s=15) == 0  # well before the 60 s stall ends
    assert "requeueing 1 job(s) still running at the deadline" in worker.log()
    assert api.get(f"/jobs/{job_id}").json()["status"] == "queued"
    assert queue_counts(settings)[0] == 1
    with worker_processes(settings, tmp_path) as (healthy,):
        job = wait_for_job(api, job_id)
        healthy.terminate()
    assert (job["status"], job["attempts"]) == ("done", 2)
    assert job["result_id"] == expected_result_id(data)


def test_two_workers_finish_200_jobs_with_none_lost_or_duplicated(
    settings: Settings, api: TestClient, tmp_path: Path
) -> None:
    count = 200
    with worker_processes(settings, tmp_path, count=2) as workers:
        for worker in workers:
            worker.wait_metrics()
        wait_for(lambda: queue_counts(settings)[1] == 2, what="both workers to consume")
        recordings = [recording(1000 + i, seconds=0.25) for i in range(count)]
        job_ids = [submit(api, data).json()["job_id"] for data in recordings]
        assert len(set(job_ids)) == count

        def all_done() -> bool:
            return all(
                api.get(f"/jobs/{job_id}").json()["status"] in ("done", "failed")
                for job_id in job_ids
            )

        wait_for(all_done, timeout_s=90, what=f"{count} jobs")
        done = [sample(w.metrics(), "audioproc_jobs_total", 'state="done"') for w in workers]
        runs = [pipeline_runs(w) for w in workers]
        for worker in workers:
            assert worker.terminate() == 0
    jobs = [api.get(f"/jobs/{job_id}").json() for job_id in job_ids]
    assert [j["status"] for j in jobs] == ["done"] * count
    assert all(j["attempts"] == 1 for j in jobs)
    assert [j["result_id"] for j in jobs] == [expected_result_id(d) for d in recordings]
    assert len(stored_results(settings)) == count
    # Every job done exactly once, and both workers took part.
    assert sum(done) == count and min(done) > 0, done
    assert sum(runs) == count, runs
    assert queue_counts(settings) == (0, 0)
    assert not list((settings.storage_dir / "uploads").glob("*"))
