"""The job worker: ``audioproc worker`` consumes RabbitMQ; the API runs the same code in-process
when ``AMQP_URL`` is unset.

One job: mark it ``running`` (counting the attempt) → reuse a stored result, or read the staged
upload and run the pipeline (in a worker thread) → store the result → mark it ``done`` →
acknowledge the message. Only then is the message gone, so a worker killed at any point leaves it
to another worker, and because results are content-addressed the re-run stores the same result
once. Bad input (a 4xx :class:`AudioprocError`) fails the job at once; anything else is retried
with exponential backoff and, after ``JOB_MAX_ATTEMPTS``, dead-lettered with its error.

On SIGTERM the worker stops taking jobs, lets running ones finish for
``WORKER_SHUTDOWN_TIMEOUT_S`` seconds, requeues what is left and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

from prometheus_client import start_http_server
from pydantic import ValidationError

from app import metrics
from app.config import Settings
from app.errors import (
    AudioprocError,
    InvalidOptions,
    JobInputGone,
    JobStoreUnavailable,
    QueueUnavailable,
)
from app.errors import problem_body as _problem_body
from app.models.options import ProcessingOptions
from app.security.audit import LOG_FORMAT, REQUEST_ID, AuditLog, RequestIdFilter
from app.services.jobs import (
    JobService,
    JobStore,
    UploadStore,
    build_job_store,
    build_uploads,
    result_in_storage,
    store_result,
)
from app.services.queue import (
    Delivery,
    JobMessage,
    JobQueue,
    MemoryQueue,
    RabbitQueue,
    RetryPolicy,
    watch_depth,
)
from app.services.results import ResultService
from app.services.retention import start_sweeper
from app.services.s3 import S3Client

log = logging.getLogger("audioproc.worker")

#: Pause before a job is given back when the job store cannot be reached, seconds.
STORE_DOWN_PAUSE_S = 1.0

#: Pause between attempts to reach RabbitMQ at start-up, seconds (doubling up to 30 s).
CONNECT_RETRY_S = 1.0


class _TooManyStarts(Exception):
    """The job was started more than JOB_MAX_ATTEMPTS times (workers died running it)."""


def _error_of(exc: BaseException) -> dict[str, Any]:
    """A problem body for a failed attempt (no stack trace: type and message only)."""
    if isinstance(exc, AudioprocError):
        return exc.problem()
    if isinstance(exc, _TooManyStarts):
        return _problem_body(
            status=500,
            code="job_crashed",
            title="The job kept stopping its worker",
            detail=str(exc),
        )
    return _problem_body(
        status=500,
        code="job_error",
        title="The job failed",
        detail=f"{type(exc).__name__}: {str(exc)[:500]}",
    )


class JobRunner:
    """Runs one delivered job and settles its message (see the module docstring)."""

    def __init__(
        self,
        *,
        results: ResultService,
        store: JobStore,
        uploads: UploadStore,
        policy: RetryPolicy,
        audit: AuditLog,
    ) -> None:
        self.results = results
        self.store = store
        self.uploads = uploads
        self.policy = policy
        self.audit = audit

    async def handle(self, delivery: Delivery) -> None:
        message = delivery.message
        began = time.perf_counter()
        token = REQUEST_ID.set(message.request_id or f"job:{message.job_id}")
        try:
            await self._handle(delivery, began)
        finally:
            REQUEST_ID.reset(token)

    async def _handle(self, delivery: Delivery, began: float) -> None:
        message = delivery.message
        try:
            current = await self.store.get(message.job_id)
            if current is not None and current.status == "done":
                # Stored and marked done, but the worker stopped before acknowledging.
                metrics.JOB_REDELIVERIES.inc()
                await delivery.ack()
                return
            state = await self.store.start(message, time.time())
        except JobStoreUnavailable as exc:
            log.warning("job %s given back: %s", message.job_id, exc.detail)
            await asyncio.sleep(STORE_DOWN_PAUSE_S)
            await delivery.requeue()
            return
        attempt = max(state.attempts, delivery.attempt)
        metrics.JOBS.labels("running").inc()
        metrics.JOBS_IN_PROGRESS.inc()
        outcome = "retry"
        result_id: str | None = None
        sizes = {"in": 0, "out": 0}
        try:
            if state.attempts > self.policy.max_attempts:
                raise _TooManyStarts(
                    f"The job was started {state.attempts} times without finishing; the "
                    "workers running it stopped (killed, out of memory?)."
                )
            result_id = await self._run(delivery, sizes)
            if delivery.settled:  # given back at the shutdown deadline
                return
            now = time.time()
            await self.store.update(
                message.job_id,
                {
                    "status": "done",
                    "result_id": result_id,
                    "finished_at": now,
                    "updated_at": now,
                    "error": None,
                    "next_attempt_at": None,
                },
            )
            await delivery.ack()
            outcome = "done"
            metrics.JOBS.labels("done").inc()
            metrics.JOB_LATENCY_SECONDS.observe(max(now - message.submitted_at, 0.0))
            await self._discard_uploads(message)
        except asyncio.CancelledError:
            outcome = "cancelled"
            await self._give_back(delivery)
            raise
        except JobStoreUnavailable as exc:
            log.warning("job %s given back: %s", message.job_id, exc.detail)
            await self._give_back(delivery)
        except Exception as exc:
            outcome = await self._failed(delivery, attempt, exc)
        finally:
            metrics.JOBS_IN_PROGRESS.dec()
            metrics.JOB_DURATION_SECONDS.labels(outcome).observe(time.perf_counter() - began)
            self.audit.write(
                {
                    "type": "job",
                    "request_id": message.request_id,
                    "tenant": message.tenant,
                    "key_id": message.key_id,
                    "action": "run_job",
                    "resource_id": message.job_id,
                    "result_id": result_id,
                    "status": outcome,
                    "attempt": attempt,
                    "bytes_in": sizes["in"],
                    "bytes_out": sizes["out"],
                    "duration_ms": round((time.perf_counter() - began) * 1000.0, 3),
                    "client": None,
                }
            )

    async def _run(self, delivery: Delivery, sizes: dict[str, int]) -> str:
        """Make (or find) the job's result; returns its id. Counts the input bytes read and the
        result bytes stored into ``sizes["in"]`` and ``sizes["out"]``."""
        message = delivery.message
        if await result_in_storage(self.results, message.result_id):
            return message.result_id  # a re-run: a worker stopped after storing it
        data = await self.uploads.get(message.upload_key)
        if data is None:
            raise JobInputGone(
                f"The staged input of job {message.job_id} is gone (storage was cleaned?). "
                "Submit the recording again."
            )
        try:
            options = ProcessingOptions.model_validate_json(message.options)
        except ValidationError as exc:
            raise InvalidOptions(f"The job's options are not valid here: {exc}") from exc
        reference = None
        if message.reference_key is not None:
            reference = await self.uploads.get(message.reference_key)
            if reference is None:
                raise JobInputGone(
                    f"The staged echo reference of job {message.job_id} is gone (storage was "
                    "cleaned?). Submit the recording again."
                )
        sizes["in"] = len(data) + len(reference or b"")
        result, _cached, persist = await self.results.process(
            data, options, message.tenant, reference
        )
        sizes["out"] = result.audio.nbytes + sum(a.nbytes for a in result.arrays.values())
        if delivery.settled:  # given back at the shutdown deadline: leave it to the next worker
            return result.id
        if persist is not None:
            await persist(strict=True)  # StorageError: retried like any transient failure
        else:  # found in the cache, which expires: the job's result must be in storage too
            await store_result(self.results, result)
        return result.id

    async def _failed(self, delivery: Delivery, attempt: int, exc: Exception) -> str:
        """Record a failed attempt and settle the message; returns the duration outcome."""
        message = delivery.message
        error = _error_of(exc)
        now = time.time()
        permanent = isinstance(exc, AudioprocError) and exc.status < 500
        if permanent or attempt >= self.policy.max_attempts or isinstance(exc, _TooManyStarts):
            dead = not permanent
            log.warning(
                "job %s failed%s after attempt %d: %s",
                message.job_id,
                " and was dead-lettered" if dead else "",
                attempt,
                error["detail"],
            )
            await self.store.update(
                message.job_id,
                {
                    "status": "failed",
                    "error": error,
                    "finished_at": now,
                    "updated_at": now,
                    "dead_lettered": dead,
                    "next_attempt_at": None,
                },
            )
            if dead:
                await delivery.dead_letter(error)
                metrics.JOBS_DEAD_LETTERED.inc()
            else:
                await delivery.ack()
                await self._discard_uploads(message)
            metrics.JOBS.labels("failed").inc()
            return "failed"
        delay = self.policy.delay_after(attempt)
        log.warning(
            "job %s attempt %d failed, retrying in %.1f s: %s",
            message.job_id,
            attempt,
            delay,
            error["detail"],
        )
        await self.store.update(
            message.job_id,
            {"status": "queued", "error": error, "updated_at": now, "next_attempt_at": now + delay},
        )
        try:
            await delivery.retry(attempt + 1, delay)
        except QueueUnavailable:
            await self._give_back(delivery)
            return "retry"
        metrics.JOB_RETRIES.inc()
        metrics.JOBS.labels("queued").inc()
        return "retry"

    async def _give_back(self, delivery: Delivery) -> None:
        """Requeue an unsettled delivery (best effort: a lost channel requeues it anyway)."""
        if delivery.settled:
            return
        with contextlib.suppress(Exception):
            await delivery.requeue()
        with contextlib.suppress(Exception):
            await self.store.update(
                delivery.message.job_id, {"status": "queued", "updated_at": time.time()}
            )

    async def _discard_uploads(self, message: JobMessage) -> None:
        """Delete the job's staged input (and echo reference)."""
        for key in (message.upload_key, message.reference_key):
            if key is None:
                continue
            try:
                await self.uploads.delete(key)
            except Exception as exc:  # the job is done; a leftover upload only costs space
                log.warning("could not delete staged upload %s: %s", key, exc)


class Worker:
    """Feeds deliveries from a :class:`JobQueue` to a :class:`JobRunner`, ``concurrency`` at a
    time, with at most ``prefetch`` unacknowledged; shuts down gracefully (see :meth:`run`)."""

    def __init__(
        self,
        runner: JobRunner,
        queue: JobQueue,
        *,
        concurrency: int,
        prefetch: int,
        shutdown_timeout_s: float,
    ) -> None:
        self.runner = runner
        self.queue = queue
        self.concurrency = concurrency
        self.prefetch = max(prefetch, concurrency)
        self.shutdown_timeout_s = shutdown_timeout_s
        self._inbox: asyncio.Queue[Delivery | None] = asyncio.Queue()
        self._running: dict[int, Delivery] = {}
        self._stopping = False

    async def _receive(self, delivery: Delivery) -> None:
        if self._stopping:
            await delivery.requeue()
        else:
            self._inbox.put_nowait(delivery)

    async def _slot(self, index: int) -> None:
        while (delivery := await self._inbox.get()) is not None:
            self._running[index] = delivery
            try:
                await self.runner.handle(delivery)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("job %s: unexpected worker error", delivery.message.job_id)
                await self.runner._give_back(delivery)
            finally:
                self._running.pop(index, None)

    async def _start_consuming(self, stop: asyncio.Event) -> bool:
        pause = CONNECT_RETRY_S
        while not stop.is_set():
            try:
                await self.queue.consume(self._receive, prefetch=self.prefetch)
                return True
            except QueueUnavailable as exc:
                log.warning("%s; retrying in %.0f s", exc.detail, pause)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), pause)
                pause = min(pause * 2, 30.0)
        return False

    async def run(self, stop: asyncio.Event) -> int:
        """Consume until ``stop`` is set; then stop consuming, give back jobs not yet started,
        wait up to ``shutdown_timeout_s`` for running ones and give back what is still running.

        Returns:
            How many jobs were given back at the deadline (their pipeline threads, which cannot
            be interrupted, may still be running).
        """
        slots = [asyncio.create_task(self._slot(i)) for i in range(self.concurrency)]
        try:
            if await self._start_consuming(stop):
                log.info(
                    "worker consuming (%s, prefetch %d, concurrency %d)",
                    self.queue.backend,
                    self.prefetch,
                    self.concurrency,
                )
                await stop.wait()
        except asyncio.CancelledError:
            await self._drain(slots)
            raise
        return await self._drain(slots)

    async def _drain(self, slots: list[asyncio.Task[None]]) -> int:
        self._stopping = True
        await self.queue.stop_consuming()
        while not self._inbox.empty():
            waiting = self._inbox.get_nowait()
            if waiting is not None:
                await waiting.requeue()
        for _ in slots:
            self._inbox.put_nowait(None)
        _, late = await asyncio.wait(slots, timeout=self.shutdown_timeout_s)
        if late:
            log.warning("requeueing %d job(s) still running at the deadline", len(late))
            for delivery in list(self._running.values()):
                await self.runner._give_back(delivery)
            for task in late:
                task.cancel()
            # A pipeline thread cannot be interrupted; do not wait for it.
            await asyncio.wait(late, timeout=1.0)
        return len(late)


# -- `audioproc worker` -------------------------------------------------------------------------


def build_worker(
    settings: Settings, results: ResultService, queue: JobQueue, s3: S3Client | None = None
) -> Worker:
    """A worker over ``queue`` with the job store and uploads the settings name."""
    runner = JobRunner(
        results=results,
        store=build_job_store(settings),
        uploads=build_uploads(settings, s3),
        policy=retry_policy(settings),
        audit=AuditLog(settings.audit_log),
    )
    return Worker(
        runner,
        queue,
        concurrency=settings.worker_concurrency,
        prefetch=settings.worker_prefetch,
        shutdown_timeout_s=settings.worker_shutdown_timeout_s,
    )


def retry_policy(settings: Settings) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=settings.job_max_attempts,
        base_s=settings.job_retry_base_s,
        max_s=settings.job_retry_max_s,
    )


@contextlib.asynccontextmanager
async def job_service(
    settings: Settings, results: ResultService, s3: S3Client | None = None
) -> AsyncIterator[JobService]:
    """The API's jobs, for its lifespan: RabbitMQ (``AMQP_URL``) for separate workers, or an
    in-process queue and worker that use the API's own :class:`ResultService`."""
    policy = retry_policy(settings)
    queue: JobQueue
    if settings.amqp_url:
        queue = RabbitQueue(
            settings.amqp_url,
            name=settings.amqp_queue,
            policy=policy,
            timeout_s=settings.amqp_timeout_s,
            connection_name="audioproc-api",
        )
    else:
        queue = MemoryQueue()
    store = build_job_store(settings)
    uploads = build_uploads(settings, s3)
    jobs = JobService(
        results=results,
        store=store,
        queue=queue,
        uploads=uploads,
        max_attempts=settings.job_max_attempts,
    )
    background: list[asyncio.Task[Any]] = [asyncio.create_task(watch_depth(queue))]
    stop = asyncio.Event()
    if not settings.amqp_url:
        runner = JobRunner(
            results=results,
            store=store,
            uploads=uploads,
            policy=policy,
            audit=AuditLog(settings.audit_log),
        )
        worker = Worker(
            runner,
            queue,
            concurrency=settings.worker_concurrency,
            prefetch=settings.worker_prefetch,
            shutdown_timeout_s=settings.worker_shutdown_timeout_s,
        )
        background.append(asyncio.create_task(worker.run(stop)))
    # The in-process worker sweeps too; with RabbitMQ, `audioproc worker` does.
    sweeper = None if settings.amqp_url else start_sweeper(settings, results.storage, uploads)
    try:
        yield jobs
    finally:
        stop.set()
        background[0].cancel()
        if sweeper is not None:
            sweeper.cancel()
            background.append(sweeper)
        await asyncio.gather(*background, return_exceptions=True)
        await queue.close()
        await store.close()


async def serve_worker(settings: Settings) -> int:
    """Run a RabbitMQ worker until SIGTERM or SIGINT; returns the exit status."""
    from app.main import build_results, build_s3  # app.main imports this module

    if not settings.amqp_url:
        log.error(
            "AMQP_URL is not set: without RabbitMQ the API runs jobs itself (in-process); "
            "a separate worker has nothing to consume."
        )
        return 2
    s3 = build_s3(settings)
    results = build_results(settings, s3, api=False)
    if settings.warmup:
        await asyncio.to_thread(results.pipeline.warmup)
    queue = RabbitQueue(
        settings.amqp_url,
        name=settings.amqp_queue,
        policy=retry_policy(settings),
        timeout_s=settings.amqp_timeout_s,
        connection_name="audioproc-worker",
    )
    worker = build_worker(settings, results, queue, s3)
    if settings.worker_metrics_port:
        start_http_server(settings.worker_metrics_port, addr=settings.worker_metrics_addr)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    depth = asyncio.create_task(watch_depth(queue))
    sweeper = start_sweeper(settings, results.storage, worker.runner.uploads)
    abandoned = 0
    try:
        abandoned = await worker.run(stop)
    finally:
        depth.cancel()
        if sweeper is not None:
            sweeper.cancel()
        await queue.close()
        await worker.runner.store.close()
        await results.cache.close()
        if s3 is not None:
            s3.close()
    log.info("worker stopped")
    if abandoned:
        # The requeued jobs' pipeline threads would hold the interpreter until they finish.
        logging.shutdown()
        os._exit(0)
    return 0


def main(settings: Settings, log_level: str = "info") -> int:
    logging.basicConfig(level=log_level.upper(), format=LOG_FORMAT)
    for handler in logging.getLogger().handlers:
        handler.addFilter(RequestIdFilter())
    return asyncio.run(serve_worker(settings))
