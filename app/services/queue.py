"""Job queue: RabbitMQ (aio-pika) when ``AMQP_URL`` is set, else an in-process queue.

Delivery is *at least once*: a message is removed only when a worker acknowledges it after the
job's result and state are stored; a worker that dies first (even by SIGKILL) leaves it unacked and
the broker hands it to another worker. Handlers are therefore idempotent (results are
content-addressed; a finished job is recognized and acknowledged again).

RabbitMQ topology for ``AMQP_QUEUE = q`` (all on the default exchange, all durable):

``q``
    The jobs. Persistent messages, published with publisher confirms. A rejected message
    dead-letters to ``q.dead``.
``q.retry.<ms>ms``
    One delay queue per backoff step (message TTL ``<ms>``); expired messages dead-letter back to
    ``q``. A failed attempt is republished here, then acknowledged.
``q.dead``
    Jobs that failed ``JOB_MAX_ATTEMPTS`` times, with the last error in their headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import aio_pika
import aiormq
import orjson
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
)

from app import metrics
from app.errors import QueueUnavailable

log = logging.getLogger("audioproc.queue")

#: Seconds between refreshes of the queue depth gauge.
DEPTH_REFRESH_S = 5.0


@dataclass(frozen=True)
class JobMessage:
    """What a queued job carries: references, never the audio itself.

    Attributes:
        job_id: the job (derived from ``result_id``).
        result_id: the result the API expects (content hash + canonical options + pipeline
            version).
        content_sha256: SHA-256 of the input bytes, hex.
        options: canonical JSON of the ProcessingOptions.
        upload_key: key of the staged input bytes in the upload store.
        submitted_at: when the job was accepted, Unix time in seconds.
        tenant: who submitted it (``None`` when the service runs open); owns the result.
        key_id: id of the submitting API key (for the audit line; never the key).
        request_id: ``X-Request-ID`` of the submission (for logs and the audit line).
        reference_key: key of the staged far-end echo reference, when one was uploaded.
    """

    job_id: str
    result_id: str
    content_sha256: str
    options: str
    upload_key: str
    submitted_at: float
    tenant: str | None = None
    key_id: str | None = None
    request_id: str | None = None
    reference_key: str | None = None

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, data: bytes) -> JobMessage:
        """Raises ``ValueError`` when ``data`` is not a job message."""
        try:
            fields = orjson.loads(data)
            return cls(
                job_id=str(fields["job_id"]),
                result_id=str(fields["result_id"]),
                content_sha256=str(fields["content_sha256"]),
                options=str(fields["options"]),
                upload_key=str(fields["upload_key"]),
                submitted_at=float(fields["submitted_at"]),
                tenant=_optional_text(fields.get("tenant")),
                key_id=_optional_text(fields.get("key_id")),
                request_id=_optional_text(fields.get("request_id")),
                reference_key=_optional_text(fields.get("reference_key")),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a job message: {exc}") from exc


def _optional_text(value: Any) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: after failed attempt ``n`` the job waits
    ``min(base_s * 2**(n-1), max_s)`` seconds; after ``max_attempts`` it is dead-lettered."""

    max_attempts: int
    base_s: float
    max_s: float

    def delay_after(self, attempt: int) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based)."""
        return float(min(self.base_s * 2 ** (attempt - 1), self.max_s))

    def delays_ms(self) -> list[int]:
        """The distinct delays of attempts 1 … max_attempts-1, milliseconds."""
        return sorted({round(self.delay_after(n) * 1000) for n in range(1, self.max_attempts)})


@dataclass(frozen=True)
class QueueDepth:
    """Messages per part of the queue: ready to run, waiting out a retry delay, dead-lettered."""

    ready: int
    delayed: int
    dead: int


class Delivery(Protocol):
    """One received job. Settle it exactly once: :meth:`ack`, :meth:`requeue`, :meth:`retry` or
    :meth:`dead_letter` (later calls are ignored)."""

    message: JobMessage
    #: This attempt's number as the queue counts it (1 for the first delivery).
    attempt: int
    #: The broker delivered this message before, to a consumer that did not settle it.
    redelivered: bool

    @property
    def settled(self) -> bool: ...

    async def ack(self) -> None:
        """Done: remove the message."""

    async def requeue(self) -> None:
        """Give the message back now, unchanged (shutdown, or a dependency is down)."""

    async def retry(self, attempt: int, delay_s: float) -> None:
        """Run attempt ``attempt`` after ``delay_s`` seconds; removes this delivery."""

    async def dead_letter(self, error: dict[str, Any]) -> None:
        """Move the message to the dead-letter queue with ``error`` (a problem body)."""


OnDelivery = Callable[[Delivery], Awaitable[None]]


class JobQueue(Protocol):
    """Where accepted jobs wait for a worker."""

    backend: str

    async def publish(self, message: JobMessage) -> None:
        """Enqueue durably (confirmed by the broker); raises :class:`QueueUnavailable`."""

    async def depth(self) -> QueueDepth:
        """Messages waiting; raises :class:`QueueUnavailable`."""

    async def consume(self, on_delivery: OnDelivery, *, prefetch: int) -> None:
        """Start calling ``on_delivery`` for each job, at most ``prefetch`` unsettled at once."""

    async def stop_consuming(self) -> None:
        """Receive no more jobs (unsettled deliveries stay valid)."""

    async def close(self) -> None: ...


async def watch_depth(queue: JobQueue, interval_s: float = DEPTH_REFRESH_S) -> None:
    """Keep the ``audioproc_queue_depth`` gauge current (runs until cancelled)."""
    while True:
        with contextlib.suppress(QueueUnavailable):
            record_depth(await queue.depth())
        await asyncio.sleep(interval_s)


def record_depth(depth: QueueDepth) -> None:
    metrics.QUEUE_DEPTH.labels("ready").set(depth.ready)
    metrics.QUEUE_DEPTH.labels("delayed").set(depth.delayed)
    metrics.QUEUE_DEPTH.labels("dead").set(depth.dead)


# -- in-process ---------------------------------------------------------------------------------


class _MemoryDelivery:
    def __init__(
        self, queue: MemoryQueue, message: JobMessage, attempt: int, redelivered: bool
    ) -> None:
        self._queue = queue
        self.message = message
        self.attempt = attempt
        self.redelivered = redelivered
        self._settled = False

    @property
    def settled(self) -> bool:
        return self._settled

    def _settle(self) -> bool:
        if self._settled:
            return False
        self._settled = True
        self._queue._release()
        return True

    async def ack(self) -> None:
        self._settle()

    async def requeue(self) -> None:
        if self._settle():
            self._queue._put(self.message, self.attempt, redelivered=True)

    async def retry(self, attempt: int, delay_s: float) -> None:
        if self._settle():
            self._queue._put_later(self.message, attempt, delay_s)

    async def dead_letter(self, error: dict[str, Any]) -> None:
        if self._settle():
            self._queue.dead.append((self.message, error))


class MemoryQueue:
    """An asyncio queue in the API process, for ``audioproc serve`` without RabbitMQ.

    Same semantics as the RabbitMQ queue (prefetch, delayed retries, a dead-letter list), but
    nothing survives the process.
    """

    backend = "memory"

    def __init__(self, max_dead: int = 1000) -> None:
        self._ready: deque[tuple[JobMessage, int, bool]] = deque()
        self._wakeup = asyncio.Event()
        self._timers: set[asyncio.TimerHandle] = set()
        self._credit: asyncio.Semaphore | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        #: Dead-lettered jobs with their error, newest last.
        self.dead: deque[tuple[JobMessage, dict[str, Any]]] = deque(maxlen=max_dead)

    def _put(self, message: JobMessage, attempt: int, *, redelivered: bool = False) -> None:
        self._ready.append((message, attempt, redelivered))
        self._wakeup.set()

    def _put_later(self, message: JobMessage, attempt: int, delay_s: float) -> None:
        def fire() -> None:
            self._timers.discard(handle)
            self._put(message, attempt)

        handle = asyncio.get_running_loop().call_later(delay_s, fire)
        self._timers.add(handle)

    def _release(self) -> None:
        if self._credit is not None:
            self._credit.release()

    async def publish(self, message: JobMessage) -> None:
        self._put(message, 1)

    async def depth(self) -> QueueDepth:
        return QueueDepth(ready=len(self._ready), delayed=len(self._timers), dead=len(self.dead))

    async def consume(self, on_delivery: OnDelivery, *, prefetch: int) -> None:
        self._credit = asyncio.Semaphore(prefetch)
        self._dispatcher = asyncio.create_task(self._dispatch(on_delivery, self._credit))

    async def _dispatch(self, on_delivery: OnDelivery, credit: asyncio.Semaphore) -> None:
        while True:
            await credit.acquire()
            while not self._ready:
                self._wakeup.clear()
                await self._wakeup.wait()
            message, attempt, redelivered = self._ready.popleft()
            await on_delivery(_MemoryDelivery(self, message, attempt, redelivered))

    async def stop_consuming(self) -> None:
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._dispatcher
            self._dispatcher = None

    async def close(self) -> None:
        await self.stop_consuming()
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()


# -- RabbitMQ -----------------------------------------------------------------------------------

#: What a lost or refused broker connection raises.
_AMQP_ERRORS = (aiormq.exceptions.AMQPError, OSError, asyncio.TimeoutError)


class _RabbitDelivery:
    def __init__(self, queue: RabbitQueue, incoming: AbstractIncomingMessage, message: JobMessage):
        self._queue = queue
        self._incoming = incoming
        self.message = message
        headers = incoming.headers or {}
        raw_attempt = headers.get("x-attempt", 1)
        self.attempt = int(raw_attempt) if isinstance(raw_attempt, int | str) else 1
        self.redelivered = bool(incoming.redelivered)
        self._settled = False

    @property
    def settled(self) -> bool:
        return self._settled

    def _settle(self) -> bool:
        if self._settled:
            return False
        self._settled = True
        return True

    async def ack(self) -> None:
        if self._settle():
            await self._incoming.ack()

    async def requeue(self) -> None:
        if self._settle():
            await self._incoming.nack(requeue=True)

    async def retry(self, attempt: int, delay_s: float) -> None:
        if self._settled:
            return
        target = self._queue.retry_queue_for(delay_s)
        await self._queue._publish(target, self.message, {"x-attempt": attempt})
        self._settled = True
        await self._incoming.ack()

    async def dead_letter(self, error: dict[str, Any]) -> None:
        if self._settled:
            return
        headers = {
            "x-attempt": self.attempt,
            "x-error-code": str(error.get("code", "")),
            "x-error-detail": str(error.get("detail", ""))[:1000],
        }
        await self._queue._publish(self._queue.dead_name, self.message, headers)
        self._settled = True
        await self._incoming.ack()


class RabbitQueue:
    """Jobs in RabbitMQ: durable queues, persistent messages, publisher confirms, a bounded
    prefetch, per-step delay queues for backoff and a dead-letter queue.

    The connection is made lazily and is *robust* (aio-pika reconnects it and restores channels
    and consumers). Every broker call has the deadline ``timeout_s`` (seconds); a broker that
    cannot be reached raises :class:`QueueUnavailable`.
    """

    backend = "rabbitmq"

    def __init__(
        self,
        url: str,
        *,
        name: str,
        policy: RetryPolicy,
        timeout_s: float,
        connection_name: str = "audioproc",
    ) -> None:
        self.url = url
        self.name = name
        self.policy = policy
        self.timeout_s = timeout_s
        self.connection_name = connection_name
        self.dead_name = f"{name}.dead"
        self.retry_names = {ms: f"{name}.retry.{ms}ms" for ms in policy.delays_ms()}
        self._connection: AbstractRobustConnection | None = None
        self._publisher: AbstractChannel | None = None
        self._consumer_channel: AbstractChannel | None = None
        self._probe: AbstractRobustChannel | None = None
        self._consumer: tuple[AbstractQueue, str] | None = None
        self._lock = asyncio.Lock()

    @property
    def queue_names(self) -> list[str]:
        """Every queue this topology declares."""
        return [self.name, self.dead_name, *self.retry_names.values()]

    def retry_queue_for(self, delay_s: float) -> str:
        """The delay queue whose TTL is closest to ``delay_s`` seconds."""
        wanted = round(delay_s * 1000)
        ms = min(self.retry_names, key=lambda candidate: abs(candidate - wanted))
        return self.retry_names[ms]

    async def _connect(self) -> AbstractRobustConnection:
        async with self._lock:
            if self._connection is not None and not self._connection.is_closed:
                return self._connection
            connection = None
            try:
                connection = await asyncio.wait_for(
                    aio_pika.connect_robust(
                        self.url,
                        timeout=self.timeout_s,
                        client_properties={"connection_name": self.connection_name},
                    ),
                    self.timeout_s,
                )
                channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
                await self._declare(channel)
            except _AMQP_ERRORS as exc:
                if connection is not None:
                    with contextlib.suppress(*_AMQP_ERRORS):
                        await connection.close()
                metrics.QUEUE_ERRORS.labels("connect").inc()
                log.warning("RabbitMQ connection failed: %s: %s", type(exc).__name__, exc)
                raise QueueUnavailable(  # the broker's message may name hosts: logged only
                    f"RabbitMQ cannot be reached ({type(exc).__name__}). The job was not "
                    "accepted; retry later, or use POST /process."
                ) from exc
            self._connection, self._publisher = connection, channel
            return connection

    async def _declare(self, channel: AbstractChannel) -> None:
        await channel.declare_queue(self.dead_name, durable=True)
        await channel.declare_queue(
            self.name,
            durable=True,
            arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": self.dead_name},
        )
        for ms, retry_name in self.retry_names.items():
            await channel.declare_queue(
                retry_name,
                durable=True,
                arguments={
                    "x-message-ttl": ms,
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": self.name,
                },
            )

    async def _publish(
        self, routing_key: str, message: JobMessage, headers: dict[str, Any]
    ) -> None:
        await self._connect()
        assert self._publisher is not None
        amqp_message = aio_pika.Message(
            message.to_json(),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=message.job_id,
            timestamp=time.time(),
            headers=headers,
        )
        try:
            await asyncio.wait_for(
                self._publisher.default_exchange.publish(amqp_message, routing_key=routing_key),
                self.timeout_s,
            )
        except _AMQP_ERRORS as exc:
            metrics.QUEUE_ERRORS.labels("publish").inc()
            log.warning("RabbitMQ publish failed: %s: %s", type(exc).__name__, exc)
            raise QueueUnavailable(
                f"RabbitMQ did not confirm the job ({type(exc).__name__}). Retry later, "
                "or use POST /process."
            ) from exc

    async def publish(self, message: JobMessage) -> None:
        await self._publish(self.name, message, {"x-attempt": 1})

    async def depth(self) -> QueueDepth:
        connection = await self._connect()
        try:
            async with asyncio.timeout(self.timeout_s):
                if self._probe is None or self._probe.is_closed:
                    # A channel of its own: a failed passive declare closes its channel.
                    self._probe = await connection.channel()
                counts = {}
                for queue_name in self.queue_names:
                    # Not robust: a robust channel answers a repeated passive declare from its
                    # cache, with the counts of the first.
                    declared = await self._probe.declare_queue(
                        queue_name, passive=True, robust=False
                    )
                    counts[queue_name] = int(declared.declaration_result.message_count or 0)
        except _AMQP_ERRORS as exc:
            metrics.QUEUE_ERRORS.labels("depth").inc()
            log.warning("RabbitMQ depth check failed: %s: %s", type(exc).__name__, exc)
            raise QueueUnavailable(f"RabbitMQ does not answer ({type(exc).__name__})") from exc
        return QueueDepth(
            ready=counts[self.name],
            delayed=sum(counts[n] for n in self.retry_names.values()),
            dead=counts[self.dead_name],
        )

    async def consume(self, on_delivery: OnDelivery, *, prefetch: int) -> None:
        connection = await self._connect()

        async def receive(incoming: AbstractIncomingMessage) -> None:
            try:
                message = JobMessage.from_json(incoming.body)
            except ValueError as exc:
                log.error("dead-lettering a malformed message %s: %s", incoming.message_id, exc)
                metrics.JOBS_DEAD_LETTERED.inc()
                await incoming.reject(requeue=False)
                return
            await on_delivery(_RabbitDelivery(self, incoming, message))

        try:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=prefetch)
            queue = await channel.get_queue(self.name, ensure=True)
            tag = await queue.consume(receive, no_ack=False)
        except _AMQP_ERRORS as exc:
            metrics.QUEUE_ERRORS.labels("consume").inc()
            raise QueueUnavailable(f"Cannot consume from RabbitMQ: {exc}") from exc
        self._consumer_channel, self._consumer = channel, (queue, tag)

    async def stop_consuming(self) -> None:
        if self._consumer is not None:
            queue, tag = self._consumer
            self._consumer = None
            with contextlib.suppress(*_AMQP_ERRORS):
                await asyncio.wait_for(queue.cancel(tag), self.timeout_s)

    async def close(self) -> None:
        """Close the connection; the broker requeues whatever is still unacknowledged."""
        await self.stop_consuming()
        if self._connection is not None:
            with contextlib.suppress(*_AMQP_ERRORS):
                await asyncio.wait_for(self._connection.close(), self.timeout_s)
            await asyncio.sleep(0)  # let aio-pika's close callbacks run before the loop ends
        self._connection = self._publisher = self._consumer_channel = self._probe = None
