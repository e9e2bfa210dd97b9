"""Retention and erasure: RETENTION_S caps the Redis TTLs, `sweep` deletes expired results,
debris and staged uploads from the local directory and from S3 (moto), `audioproc sweep` and the
workers run it, and ``JobService.erase_result`` forgets a result's job. Everything is checked by
looking at Redis, the directory or the bucket directly."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import redis
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from app.config import Settings
from app.main import build_s3, build_storage, create_app
from app.services.jobs import (
    JobState,
    LocalUploads,
    MemoryJobStore,
    build_job_store,
    build_uploads,
    job_id_for,
)
from app.services.retention import sweep, sweep_periodically
from app.services.s3 import S3Client
from app.services.storage import MANIFEST, RESULT_OBJECTS, LocalStorage, StorageError
from tests.conftest import ROOT, amqp_url_or_skip, redis_url_or_skip
from tests.integration.jobs_support import WorkerProcess, clean_up, job_settings, wait_for
from tests.integration.test_jobs import expected_result_id, recording, submit
from tests.integration.test_s3 import aws_env, moto_url  # noqa: F401  (fixtures)

pytestmark = pytest.mark.timeout(90)

HOUR_S = 3600


def process(client: TestClient, data: bytes) -> str:
    """POST /process the recording; its result id (stored once the response is sent)."""
    response = client.post("/process", files={"file": ("a.wav", data)})
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def result_dir(root: Path, rid: str) -> Path:
    return root / "results" / rid[:2] / rid


def backdate(path: Path, seconds: float) -> None:
    """Set the mtime of ``path`` (and of everything under it) ``seconds`` into the past."""
    when = time.time() - seconds
    for item in [path, *path.rglob("*")] if path.is_dir() else [path]:
        os.utime(item, (when, when))


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# -- settings and Redis TTLs --------------------------------------------------------------------


def test_retention_caps_the_cache_and_job_ttls() -> None:
    capped = Settings(retention_s=60, cache_ttl_s=300, job_ttl_s=30)
    assert (capped.effective_cache_ttl_s, capped.effective_job_ttl_s) == (60, 30)
    unset = Settings(cache_ttl_s=300, job_ttl_s=30)
    assert (unset.effective_cache_ttl_s, unset.effective_job_ttl_s) == (300, 30)
    assert Settings().sweep_interval_s == 3600
    with pytest.raises(ValueError, match="retention_s"):
        Settings(retention_s=0)


@pytest.mark.redis
def test_redis_ttls_of_cached_results_and_job_states_are_at_most_retention(
    tmp_path: Path,
) -> None:
    url = redis_url_or_skip()
    prefix = f"test-retention-{uuid.uuid4().hex[:12]}:"
    settings = Settings(
        redis_url=url,
        cache_prefix=prefix,
        retention_s=7,
        cache_ttl_s=HOUR_S,
        job_ttl_s=HOUR_S,
        storage_dir=tmp_path / "storage",
        warmup=False,
    )
    client = redis.Redis.from_url(url)
    try:
        with TestClient(create_app(settings)) as api:
            rid = process(api, recording(1))
        assert 0 < client.ttl(f"{prefix}{rid}") <= 7

        async def create_job() -> None:
            # The Redis job store (the one used with RabbitMQ), built as the app builds it.
            store = build_job_store(settings.model_copy(update={"amqp_url": "amqp://unused/"}))
            now = time.time()
            await store.create(JobState("a" * 32, "queued", now, now))
            await store.update("a" * 32, {"status": "running"})
            await store.close()

        asyncio.run(create_job())
        assert 0 < client.ttl(f"{prefix}job:{'a' * 32}") <= 7
    finally:
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)
        client.close()


# -- the sweep over local storage ---------------------------------------------------------------


def test_sweep_deletes_expired_results_debris_and_uploads_from_the_directory(
    tmp_path: Path,
) -> None:
    root = tmp_path / "storage"
    settings = Settings(storage_dir=root, warmup=False, redis_url=None, retention_s=2)
    with TestClient(create_app(settings)) as api:
        old = process(api, recording(11))
        assert result_dir(root, old).joinpath(MANIFEST).is_file()
        time.sleep(2.5)  # the old result and its cache entry (TTL capped at 2 s) expire
        young = process(api, recording(12))

        uploads = LocalUploads(root / "uploads")
        asyncio.run(uploads.put("oldupload", b"x" * 100))
        asyncio.run(uploads.put("youngupload", b"y" * 10))
        backdate(root / "uploads" / "oldupload", 60)
        (root / "uploads" / ".tmp-dead_1").write_bytes(b"z" * 7)  # an upload write that died
        backdate(root / "uploads" / ".tmp-dead_1", 60)
        old_debris = result_dir(root, "ab" + "0" * 30)
        old_debris.mkdir(parents=True)
        (old_debris / "audio.wav").write_bytes(b"a" * 5)
        (old_debris / ".tmp-abc").write_bytes(b"b" * 3)
        backdate(old_debris, 60)
        young_debris = result_dir(root, "ab" + "1" * 30)
        young_debris.mkdir(parents=True)
        (young_debris / "features.npz").write_bytes(b"c")
        old_bytes = sum(p.stat().st_size for p in result_dir(root, old).iterdir())
        ok_before = counter("audioproc_retention_sweeps_total", outcome="ok")
        results_before = counter("audioproc_retention_deleted_total", kind="result")

        report = asyncio.run(
            sweep(LocalStorage(root), uploads, retention_s=settings.retention_s or 0)
        )

        assert (report.results, report.debris, report.uploads) == (1, 1, 2)
        assert (report.kept_results, report.kept_uploads, report.errors) == (2, 1, 0)
        assert report.bytes == old_bytes + 5 + 3 + 100 + 7
        assert not result_dir(root, old).exists()
        assert not old_debris.exists()
        assert sorted(p.name for p in result_dir(root, young).iterdir()) == sorted(RESULT_OBJECTS)
        assert young_debris.joinpath("features.npz").is_file()
        assert sorted(p.name for p in (root / "uploads").iterdir()) == ["youngupload"]
        assert api.get(f"/features/{old}").status_code == 404
        assert api.get(f"/features/{young}").status_code == 200
        assert counter("audioproc_retention_sweeps_total", outcome="ok") == ok_before + 1
        assert counter("audioproc_retention_deleted_total", kind="result") == results_before + 1


def test_a_dry_run_lists_and_deletes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "storage"
    uploads = LocalUploads(root / "uploads")
    asyncio.run(uploads.put("staged", b"x" * 4))
    backdate(root / "uploads" / "staged", 100)
    report = asyncio.run(sweep(LocalStorage(root), uploads, retention_s=10, dry_run=True))
    assert [(kind, key, size) for kind, key, _, size in report.expired] == [("upload", "staged", 4)]
    assert 99 < report.expired[0][2] < 110
    assert report.uploads == 1 and report.summary().startswith("would delete 0 result(s)")
    assert (root / "uploads" / "staged").read_bytes() == b"x" * 4


def test_a_failing_sweep_is_counted_and_the_next_one_runs(tmp_path: Path) -> None:
    root = tmp_path / "storage"

    class BrokenOnce(LocalStorage):
        calls = 0

        def entries(self) -> Any:
            BrokenOnce.calls += 1
            if BrokenOnce.calls == 1:
                raise StorageError("injected listing failure")
            return super().entries()

    uploads = LocalUploads(root / "uploads")
    asyncio.run(uploads.put("staged", b"x"))
    backdate(root / "uploads" / "staged", 100)
    failed_before = counter("audioproc_retention_sweeps_total", outcome="failed")

    async def run() -> None:
        task = asyncio.create_task(
            sweep_periodically(BrokenOnce(root), uploads, retention_s=10, interval_s=0.05)
        )
        while (root / "uploads" / "staged").exists():
            assert not task.done(), "the periodic sweep stopped"
            await asyncio.sleep(0.02)
        task.cancel()

    asyncio.run(asyncio.wait_for(run(), 10))
    assert BrokenOnce.calls >= 2
    assert counter("audioproc_retention_sweeps_total", outcome="failed") == failed_before + 1


def test_the_in_process_worker_sweeps_periodically(tmp_path: Path) -> None:
    root = tmp_path / "storage"
    settings = Settings(
        storage_dir=root, warmup=False, redis_url=None, retention_s=30, sweep_interval_s=0.2
    )
    with TestClient(create_app(settings)) as api:
        rid = process(api, recording(21))
        debris = result_dir(root, "cd" + "2" * 30)
        debris.mkdir(parents=True)
        (debris / "audio.wav").write_bytes(b"a")
        backdate(debris, 60)
        wait_for(lambda: not debris.exists(), timeout_s=10, what="the sweep to remove debris")
        backdate(result_dir(root, rid), 60)
        wait_for(
            lambda: not result_dir(root, rid).exists(), timeout_s=10, what="the result to expire"
        )


# -- the sweep over S3 (moto) -------------------------------------------------------------------


@pytest.fixture
def bucket(moto_url: str) -> str:  # noqa: F811
    name = f"retention-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_url).create_bucket(Bucket=name)
    return name


def bucket_keys(endpoint: str, bucket: str) -> list[str]:
    listing = boto3.client("s3", endpoint_url=endpoint).list_objects_v2(Bucket=bucket)
    return sorted(item["Key"] for item in listing.get("Contents", ()))


def test_sweep_deletes_expired_results_debris_and_uploads_from_s3(
    tmp_path: Path,
    moto_url: str,  # noqa: F811
    bucket: str,
) -> None:
    settings = Settings(
        storage="s3",
        s3_bucket=bucket,
        s3_prefix="svc/",
        s3_endpoint_url=moto_url,
        storage_dir=tmp_path / "unused",
        warmup=False,
        redis_url=None,
    )
    raw = boto3.client("s3", endpoint_url=moto_url)
    debris = "svc/results/ef/ef" + "3" * 30 + "/audio.wav"
    with TestClient(create_app(settings)) as api:
        old = process(api, recording(31))
        raw.put_object(Bucket=bucket, Key="svc/uploads/oldupload", Body=b"x" * 100)
        raw.put_object(Bucket=bucket, Key=debris, Body=b"d" * 9)
        time.sleep(1.5)  # LastModified has whole seconds
        middle = time.time()
        young = process(api, recording(32))
        raw.put_object(Bucket=bucket, Key="svc/uploads/youngupload", Body=b"y")
        raw.put_object(Bucket=bucket, Key="unrelated/object", Body=b"u")

    async def run() -> Any:
        s3 = build_s3(settings)
        assert s3 is not None
        try:
            return await sweep(
                build_storage(settings, s3),
                build_uploads(settings, s3),
                retention_s=HOUR_S,
                now=middle - 1.25 + HOUR_S,  # the cutoff: between the old and the young writes
            )
        finally:
            s3.close()

    report = asyncio.run(run())
    assert (report.results, report.debris, report.uploads, report.errors) == (1, 1, 1, 0)
    assert (report.kept_results, report.kept_uploads) == (1, 1)
    young_keys = [f"svc/results/{young[:2]}/{young}/{name}" for name in RESULT_OBJECTS]
    assert bucket_keys(moto_url, bucket) == sorted(
        [*young_keys, "svc/uploads/youngupload", "unrelated/object"]
    )
    assert old not in "".join(bucket_keys(moto_url, bucket))


def test_s3_listing_follows_pages(moto_url: str, bucket: str) -> None:  # noqa: F811
    raw = boto3.client("s3", endpoint_url=moto_url)
    for i in range(5):
        raw.put_object(Bucket=bucket, Key=f"p/{i}", Body=b"x" * i)
    raw.put_object(Bucket=bucket, Key="q/0", Body=b"")

    async def listing() -> list[tuple[str, int]]:
        client = S3Client(boto3.client("s3", endpoint_url=moto_url))
        found = [(o.key, o.size) async for o in client.list_objects(bucket, "p/", page_size=2)]
        client.close()
        return found

    assert asyncio.run(listing()) == [(f"p/{i}", i) for i in range(5)]


# -- `audioproc sweep` --------------------------------------------------------------------------


def test_the_sweep_command(tmp_path: Path) -> None:
    root = tmp_path / "storage"
    rid = "0f" + "4" * 30
    directory = result_dir(root, rid)
    directory.mkdir(parents=True)
    for name in RESULT_OBJECTS:
        (directory / name).write_bytes(b"r" * 10)
    (root / "uploads").mkdir()
    (root / "uploads" / "staged").write_bytes(b"u" * 20)
    backdate(root, 120)
    (root / "uploads" / "fresh").write_bytes(b"f")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("REDIS_URL", "AMQP_URL", "STORAGE", "RETENTION_S")
    }
    env.update({"STORAGE_DIR": str(root), "PYTHONPATH": str(ROOT)})

    def run(*args: str, retention: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "app.cli", "sweep", *args],
            env={**env, "RETENTION_S": "60"} if retention else env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )

    dry = run("--dry-run")
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert sorted(line.split(" age ")[0] for line in lines[:-1]) == [
        f"result {rid}",
        "upload staged",
    ]
    assert lines[-1].startswith("would delete 1 result(s), 0 incomplete result(s) and 1 upload")
    assert directory.joinpath(MANIFEST).is_file() and (root / "uploads" / "staged").is_file()

    done = run()
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("deleted 1 result(s), 0 incomplete result(s) and 1 upload(s)")
    assert "kept 0 result(s) and 1 upload(s)" in done.stdout
    assert not directory.exists()
    assert sorted(p.name for p in (root / "uploads").iterdir()) == ["fresh"]

    unset = run(retention=False)
    assert unset.returncode == 2 and "RETENTION_S is not set" in unset.stderr


# -- `audioproc worker` and erasure of job records (RabbitMQ + Redis) ---------------------------


@pytest.fixture
def amqp_settings(tmp_path: Path) -> Iterator[Settings]:
    settings = job_settings(tmp_path, amqp_url=amqp_url_or_skip(), redis_url=redis_url_or_skip())
    yield settings
    clean_up(settings)


@pytest.mark.rabbitmq
@pytest.mark.redis
def test_the_worker_sweeps_periodically(amqp_settings: Settings, tmp_path: Path) -> None:
    settings = amqp_settings.model_copy(update={"retention_s": 30, "sweep_interval_s": 0.3})
    uploads = settings.storage_dir / "uploads"
    uploads.mkdir(parents=True)
    (uploads / "expired").write_bytes(b"x")
    backdate(uploads / "expired", 60)
    (uploads / "young").write_bytes(b"y")
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    try:
        wait_for(
            lambda: not (uploads / "expired").exists(),
            timeout_s=60,
            what="`audioproc worker` to sweep the expired upload",
        )
        assert (uploads / "young").exists()
        assert worker.process.poll() is None
    finally:
        worker.process.terminate()
        worker.process.wait(30)
    assert (
        "retention sweep: deleted 0 result(s), 0 incomplete result(s) and 1 upload(s)"
        in (tmp_path / "worker.log").read_text()
    )


@pytest.mark.rabbitmq
@pytest.mark.redis
def test_erase_result_removes_the_job_state_and_the_staged_upload(
    amqp_settings: Settings,
) -> None:
    # No worker runs: the job stays queued with its upload staged.
    with TestClient(create_app(amqp_settings)) as api:
        data = recording(41)
        accepted = submit(api, data)
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["job_id"]
        assert api.get(f"/jobs/{job_id}").json()["status"] == "queued"
        rid = expected_result_id(data)
        assert job_id == job_id_for(rid)
        staged = amqp_settings.storage_dir / "uploads" / job_id
        client = redis.Redis.from_url(amqp_settings.redis_url or "")
        key = f"{amqp_settings.cache_prefix}job:{job_id}"
        assert staged.is_file() and client.exists(key) == 1

        jobs = api.app.state.jobs  # type: ignore[attr-defined]
        assert api.portal.call(jobs.erase_result, rid) is True  # type: ignore[union-attr]

        assert not staged.exists()
        assert client.exists(key) == 0
        assert api.get(f"/jobs/{job_id}").status_code == 404
        assert api.portal.call(jobs.erase_result, rid) is False  # type: ignore[union-attr]
        client.close()


def test_the_memory_job_store_forgets_a_job() -> None:
    store = MemoryJobStore(ttl_s=60)
    now = time.time()
    asyncio.run(store.create(JobState("b" * 32, "done", now, now)))
    assert asyncio.run(store.delete("b" * 32)) is True
    assert asyncio.run(store.get("b" * 32)) is None
    assert asyncio.run(store.delete("b" * 32)) is False
