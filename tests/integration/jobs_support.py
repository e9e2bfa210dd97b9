"""Helpers of the job tests: settings on unique queues, clean-up, polling, workers in a thread or
in a subprocess, and reading Prometheus text."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aio_pika
import redis
from fastapi.testclient import TestClient

from app.config import Settings
from app.services.queue import RabbitQueue
from app.worker import build_worker, retry_policy
from tests.conftest import ROOT

#: Longest wait for one job in these tests, seconds.
JOB_TIMEOUT_S = 30.0


def job_settings(tmp_path: Path, *, amqp_url: str, redis_url: str, **overrides: Any) -> Settings:
    """Settings on a queue and a Redis prefix of their own, with short retry delays."""
    name = f"test-jobs-{uuid.uuid4().hex[:12]}"
    values: dict[str, Any] = {
        "amqp_url": amqp_url,
        "amqp_queue": name,
        "amqp_timeout_s": 3.0,
        "redis_url": redis_url,
        "cache_prefix": f"{name}:",
        "cache_ttl_s": 300,
        "job_ttl_s": 300,
        "job_max_attempts": 3,
        "job_retry_base_s": 0.2,
        "storage_dir": tmp_path / "storage",
        "warmup": False,
        "worker_metrics_port": 0,
        "worker_shutdown_timeout_s": 10.0,
    }
    values.update(overrides)
    return Settings(**values)


def queue_of(settings: Settings) -> RabbitQueue:
    assert settings.amqp_url is not None
    return RabbitQueue(
        settings.amqp_url,
        name=settings.amqp_queue,
        policy=retry_policy(settings),
        timeout_s=settings.amqp_timeout_s,
    )


def clean_up(settings: Settings) -> None:
    """Delete the test's queues and Redis keys."""

    async def delete_queues() -> None:
        assert settings.amqp_url is not None
        connection = await aio_pika.connect(settings.amqp_url, timeout=3)
        async with connection:
            channel = await connection.channel()
            for name in queue_of(settings).queue_names:
                await channel.queue_delete(name)

    asyncio.run(asyncio.wait_for(delete_queues(), 10))
    if settings.redis_url:
        client = redis.Redis.from_url(settings.redis_url)
        for key in client.scan_iter(f"{settings.cache_prefix}*"):
            client.delete(key)
        client.close()


def queue_counts(settings: Settings, name: str | None = None) -> tuple[int, int]:
    """``(messages ready, consumers)`` of a queue (default: the job queue)."""

    async def declare() -> tuple[int, int]:
        assert settings.amqp_url is not None
        connection = await aio_pika.connect(settings.amqp_url, timeout=3)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(name or settings.amqp_queue, passive=True)
            result = queue.declaration_result
            return int(result.message_count or 0), int(result.consumer_count or 0)

    return asyncio.run(asyncio.wait_for(declare(), 10))


def get_dead_letter(settings: Settings) -> aio_pika.abc.AbstractIncomingMessage | None:
    """Take one message from the dead-letter queue (acknowledged)."""

    async def take() -> aio_pika.abc.AbstractIncomingMessage | None:
        assert settings.amqp_url is not None
        connection = await aio_pika.connect(settings.amqp_url, timeout=3)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(f"{settings.amqp_queue}.dead", passive=True)
            return await queue.get(no_ack=True, fail=False)

    return asyncio.run(asyncio.wait_for(take(), 10))


def wait_for(
    predicate: Callable[[], Any], *, timeout_s: float = JOB_TIMEOUT_S, what: str = "condition"
) -> Any:
    """Poll ``predicate`` every 20 ms until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.02)


def wait_for_job(
    client: TestClient,
    job_id: str,
    statuses: tuple[str, ...] = ("done", "failed"),
    timeout_s: float = JOB_TIMEOUT_S,
) -> dict[str, Any]:
    """Poll GET /jobs/{job_id} until its status is one of ``statuses``; the last body."""
    last: dict[str, Any] = {}

    def reached() -> dict[str, Any] | None:
        nonlocal last
        response = client.get(f"/jobs/{job_id}")
        assert response.status_code == 200, response.text
        last = response.json()
        return last if last["status"] in statuses else None

    try:
        return wait_for(reached, timeout_s=timeout_s, what=f"job {job_id} to be {statuses}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last state {last}") from None


class ThreadWorker:
    """A RabbitMQ :class:`~app.worker.Worker` on its own event loop in a thread of the test
    process, so that a test can wrap its pipeline (``wrap_run_batch``) to inject failures."""

    def __init__(
        self,
        settings: Settings,
        wrap_run_batch: Callable[[Callable[..., Any]], Callable[..., Any]] | None = None,
    ) -> None:
        self.settings = settings
        self.wrap_run_batch = wrap_run_batch
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="test-worker", daemon=True)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported by __exit__
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        from app.main import build_results

        results = build_results(self.settings)
        if self.wrap_run_batch is not None:
            pipeline: Any = results.pipeline
            pipeline.run_batch = self.wrap_run_batch(pipeline.run_batch)
        queue = queue_of(self.settings)
        worker = build_worker(self.settings, results, queue)
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        self._ready.set()
        try:
            await worker.run(self._stop)
        finally:
            await queue.close()
            await worker.runner.store.close()
            await results.cache.close()

    def __enter__(self) -> ThreadWorker:
        self._thread.start()
        assert self._ready.wait(30), "the worker thread did not start"
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        assert not self._thread.is_alive(), "the worker thread did not stop"
        if self._error is not None:
            raise self._error


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def settings_env(settings: Settings) -> dict[str, str]:
    """Environment variables that reproduce ``settings`` in a subprocess."""
    fields = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k.upper() not in fields}
    for name, value in settings.model_dump(exclude_defaults=True).items():
        if value is not None:
            env[name.upper()] = str(value)
    env.update({"PYTHONPATH": str(ROOT), "TORCH_THREADS": "1", "OMP_NUM_THREADS": "1"})
    return env


class WorkerProcess:
    """``python -m <module> worker`` in a subprocess with the settings in its environment.

    ``module`` is ``app.cli`` (the real worker) or ``tests.integration.fault_worker`` (the same
    worker with a delay injected; see that module). Its metrics answer on ``metrics_port``.
    """

    def __init__(
        self,
        settings: Settings,
        log_path: Path,
        *,
        module: str = "app.cli",
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.metrics_port = free_port()
        env = settings_env(settings)
        env.update({"WORKER_METRICS_PORT": str(self.metrics_port), **(extra_env or {})})
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, "worker", "--log-level", "info"],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def metrics(self) -> str:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2
        ) as r:
            return str(r.read().decode())

    def wait_metrics(self, timeout_s: float = 60.0) -> None:
        """Wait until the worker's metrics server answers (it starts just before consuming)."""

        def answers() -> bool:
            assert self.process.poll() is None, f"worker exited: {self.log()}"
            try:
                self.metrics()
            except OSError:
                return False
            return True

        wait_for(answers, timeout_s=timeout_s, what="the worker's metrics server")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def terminate(self, timeout_s: float = 30.0) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout_s)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._log.close()


@contextmanager
def worker_processes(
    settings: Settings, tmp_path: Path, count: int = 1, **kwargs: Any
) -> Iterator[list[WorkerProcess]]:
    workers = [
        WorkerProcess(settings, tmp_path / f"worker-{i}.log", **kwargs) for i in range(count)
    ]
    try:
        yield workers
    finally:
        for worker in workers:
            worker.close()


def sample(text: str, name: str, labels: str = "") -> float:
    """The value of metric ``name{labels}`` in Prometheus text (0 when absent)."""
    wanted = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.split()[-1])
    return 0.0
