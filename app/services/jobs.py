"""Jobs: their state (Redis | in-process), staged uploads, and the submission service.

A job's id derives from its result id (content hash + canonical options + pipeline version), so
the same recording with the same options is always the same job: submitting it again returns the
existing job, or one that is already ``done`` when the result exists.

State lives in Redis when jobs go through RabbitMQ (``AMQP_URL`` and ``REDIS_URL`` set), so that
every API pod and worker sees it. With the in-process queue it stays in the process too: a state
that outlived its queue would say ``queued`` for a job nobody will ever run.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, Protocol, cast

import anyio
import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from app import metrics
from app.config import Settings
from app.errors import JobStoreUnavailable, NotFound, S3Unavailable, StorageUnavailable
from app.models.options import ProcessingOptions
from app.services.crypto import SealedUploads, Sealer
from app.services.queue import JobMessage, JobQueue, QueueDepth, record_depth
from app.services.results import ResultService, StoredResult, result_id, sha256_hex
from app.services.s3 import S3Client, S3Error
from app.services.storage import TEMP_PREFIX, StorageError, StoredEntry

JobStatusName = Literal["queued", "running", "done", "failed"]

#: Longest a readiness check waits for the queue, s (probes have short timeouts).
READY_TIMEOUT_S = 2.0


def reference_key_for(job_id: str) -> str:
    """Key of a job's staged echo reference in the upload store (beside its input, the job
    id)."""
    return f"{job_id}ref"


def job_id_for(result_id: str) -> str:
    """The job id of a result id: 32 hex digits of SHA-256 over ``job`` and the result id."""
    return hashlib.sha256(f"job\n{result_id}".encode()).hexdigest()[:32]


@dataclass
class JobState:
    """Where one job stands. Times are Unix time in seconds.

    Attributes:
        status: ``queued`` (waiting, perhaps for a retry), ``running``, ``done`` or ``failed``.
        attempts: times a worker started the job (a worker killed mid-job counts too).
        error: the last failure as a problem body (``code``, ``detail``, …); kept while a retry
            is pending, cleared when the job is done.
        dead_lettered: the job failed ``JOB_MAX_ATTEMPTS`` times and sits in the dead-letter
            queue; submitting it again starts it afresh.
        tenant: who submitted it (``None`` when the service runs open); only they can see it.
        request_id: the ``X-Request-ID`` of the submission, carried into the worker's logs.
    """

    job_id: str
    status: JobStatusName
    created_at: float
    updated_at: float
    result_id: str | None = None
    content_sha256: str | None = None
    attempts: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    next_attempt_at: float | None = None
    error: dict[str, Any] | None = None
    dead_lettered: bool = False
    tenant: str | None = None
    request_id: str | None = None

    @property
    def resubmittable(self) -> bool:
        """A new submission starts the job again (it ran out of attempts on transient errors)."""
        return self.status == "failed" and self.dead_lettered

    def to_fields(self) -> dict[str, str]:
        """The Redis hash form (absent values are left out)."""
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = _encode(f.name, value)
        return out

    @classmethod
    def from_fields(cls, raw: dict[Any, Any]) -> JobState:
        data = {_text(k): _text(v) for k, v in raw.items()}
        return cls(
            job_id=data["job_id"],
            status=cast(JobStatusName, data.get("status", "queued")),
            created_at=float(data.get("created_at", 0.0)),
            updated_at=float(data.get("updated_at", 0.0)),
            result_id=data.get("result_id"),
            content_sha256=data.get("content_sha256"),
            attempts=int(data.get("attempts", 0)),
            started_at=_float(data.get("started_at")),
            finished_at=_float(data.get("finished_at")),
            next_attempt_at=_float(data.get("next_attempt_at")),
            error=orjson.loads(data["error"]) if data.get("error") else None,
            dead_lettered=data.get("dead_lettered") == "1",
            tenant=data.get("tenant"),
            request_id=data.get("request_id"),
        )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _float(value: str | None) -> float | None:
    return float(value) if value else None


def _encode(name: str, value: Any) -> str:
    if name == "error":
        return orjson.dumps(value).decode()
    if isinstance(value, bool):
        return "1" if value else "0"
    return repr(value) if isinstance(value, float) else str(value)


#: Changes to a job: field name → new value (``None`` clears the field).
Changes = dict[str, Any]


class JobStore(Protocol):
    """Job states by id, each expiring ``ttl_s`` seconds after its last change."""

    backend: str

    async def get(self, job_id: str) -> JobState | None: ...

    async def create(self, state: JobState, *, overwrite: bool = False) -> tuple[JobState, bool]:
        """Store ``state`` unless the job exists, is not :attr:`JobState.resubmittable` and
        ``overwrite`` is false.

        Returns the stored state and whether ``state`` was written.
        """

    async def start(self, message: JobMessage, now: float) -> JobState:
        """Mark the job ``running`` and count the attempt (creating it from ``message`` when its
        state is missing); returns the new state."""

    async def update(self, job_id: str, changes: Changes) -> None: ...

    async def delete(self, job_id: str) -> bool:
        """Forget the job; whether it was there."""

    async def ping(self) -> None:
        """Raise :class:`JobStoreUnavailable` when the backend does not answer."""

    async def close(self) -> None: ...


class MemoryJobStore:
    """Job states in a dict, expired lazily, with at most ``max_jobs`` kept (oldest dropped)."""

    backend = "memory"

    def __init__(self, ttl_s: float, max_jobs: int = 100_000) -> None:
        self.ttl_s = ttl_s
        self.max_jobs = max_jobs
        self._jobs: dict[str, tuple[float, JobState]] = {}

    def _live(self, job_id: str) -> JobState | None:
        entry = self._jobs.get(job_id)
        if entry is None:
            return None
        if time.monotonic() >= entry[0]:
            del self._jobs[job_id]
            return None
        return entry[1]

    def _put(self, state: JobState) -> None:
        self._jobs.pop(state.job_id, None)
        self._jobs[state.job_id] = (time.monotonic() + self.ttl_s, state)
        while len(self._jobs) > self.max_jobs:
            del self._jobs[next(iter(self._jobs))]

    async def get(self, job_id: str) -> JobState | None:
        state = self._live(job_id)
        return replace(state) if state is not None else None

    async def create(self, state: JobState, *, overwrite: bool = False) -> tuple[JobState, bool]:
        existing = self._live(state.job_id)
        if existing is not None and not existing.resubmittable and not overwrite:
            return replace(existing), False
        self._put(replace(state))
        return replace(state), True

    async def start(self, message: JobMessage, now: float) -> JobState:
        state = self._live(message.job_id) or _state_from(message)
        state = replace(
            state, status="running", attempts=state.attempts + 1, started_at=now, updated_at=now
        )
        self._put(state)
        return replace(state)

    async def update(self, job_id: str, changes: Changes) -> None:
        state = self._live(job_id)
        if state is not None:
            self._put(replace(state, **changes))

    async def delete(self, job_id: str) -> bool:
        return self._jobs.pop(job_id, None) is not None

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._jobs.clear()


def _state_from(message: JobMessage) -> JobState:
    return JobState(
        job_id=message.job_id,
        status="queued",
        created_at=message.submitted_at,
        updated_at=message.submitted_at,
        result_id=message.result_id,
        content_sha256=message.content_sha256,
        tenant=message.tenant,
        request_id=message.request_id,
    )


#: KEYS[1] job key; ARGV[1] ttl (s); ARGV[2] overwrite ('1' or '0'); ARGV[3:] field, value, …
#: Writes unless the job exists, is not failed-and-dead-lettered and overwrite is '0'; returns 1
#: when written, else the existing hash.
_CREATE = """
if ARGV[2] == '0' and redis.call('EXISTS', KEYS[1]) == 1 then
  local status = redis.call('HGET', KEYS[1], 'status')
  local dead = redis.call('HGET', KEYS[1], 'dead_lettered')
  if not (status == 'failed' and dead == '1') then
    return redis.call('HGETALL', KEYS[1])
  end
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
"""


class RedisJobStore:
    """Job states as Redis hashes ``<prefix>job:<id>`` with a TTL refreshed on every change.

    Creation is one Lua script and a start one MULTI transaction, so concurrent API pods and
    workers never interleave half-written states.
    """

    backend = "redis"

    def __init__(self, url: str, *, ttl_s: int, prefix: str) -> None:
        self.ttl_s = ttl_s
        self.prefix = prefix
        self._client = aioredis.Redis.from_url(
            url, socket_connect_timeout=1.0, socket_timeout=2.0, retry_on_timeout=False
        )
        self._create = self._client.register_script(_CREATE)

    def _key(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    def _unavailable(self, op: str, exc: Exception) -> JobStoreUnavailable:
        metrics.QUEUE_ERRORS.labels(f"store_{op}").inc()
        return JobStoreUnavailable(
            f"The job state store (Redis) cannot be reached ({exc}). Retry later, or use "
            "POST /process."
        )

    async def get(self, job_id: str) -> JobState | None:
        try:
            raw = await self._client.hgetall(self._key(job_id))  # type: ignore[misc]
        except (RedisError, OSError) as exc:
            raise self._unavailable("get", exc) from exc
        return JobState.from_fields(raw) if raw else None

    async def create(self, state: JobState, *, overwrite: bool = False) -> tuple[JobState, bool]:
        args: list[str | int] = [self.ttl_s, "1" if overwrite else "0"]
        for name, value in state.to_fields().items():
            args += [name, value]
        try:
            answer = await self._create(keys=[self._key(state.job_id)], args=args)
        except (RedisError, OSError) as exc:
            raise self._unavailable("create", exc) from exc
        if answer == 1:
            return state, True
        pairs = cast(list[bytes], answer)
        return JobState.from_fields(dict(zip(pairs[::2], pairs[1::2], strict=True))), False

    async def start(self, message: JobMessage, now: float) -> JobState:
        key = self._key(message.job_id)
        defaults = _state_from(message).to_fields()
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                for name in ("job_id", "created_at", "result_id", "content_sha256", "tenant",
                             "request_id"):  # fmt: skip
                    if name in defaults:
                        pipe.hsetnx(key, name, defaults[name])
                pipe.hset(
                    key,
                    mapping={"status": "running", "started_at": repr(now), "updated_at": repr(now)},
                )
                pipe.hdel(key, "next_attempt_at")
                pipe.hincrby(key, "attempts", 1)
                pipe.expire(key, self.ttl_s)
                pipe.hgetall(key)
                replies = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise self._unavailable("start", exc) from exc
        return JobState.from_fields(replies[-1])

    async def update(self, job_id: str, changes: Changes) -> None:
        key = self._key(job_id)
        values: dict[Any, Any] = {"job_id": job_id}  # redis-py types its keys narrowly
        values.update({k: _encode(k, v) for k, v in changes.items() if v is not None})
        cleared = [k for k, v in changes.items() if v is None]
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping=values)
                if cleared:
                    pipe.hdel(key, *cleared)
                pipe.expire(key, self.ttl_s)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise self._unavailable("update", exc) from exc

    async def delete(self, job_id: str) -> bool:
        try:
            removed = await self._client.delete(self._key(job_id))
        except (RedisError, OSError) as exc:
            raise self._unavailable("delete", exc) from exc
        return bool(removed)

    async def ping(self) -> None:
        try:
            await self._client.ping()  # type: ignore[misc]
        except (RedisError, OSError) as exc:
            raise self._unavailable("ping", exc) from exc

    async def close(self) -> None:
        await self._client.aclose()


# -- staged uploads -----------------------------------------------------------------------------


class UploadStore(Protocol):
    """The input bytes of queued jobs, by key, until a worker has processed them."""

    backend: str

    async def put(self, key: str, data: bytes) -> None: ...

    async def get(self, key: str) -> bytes | None: ...

    async def delete(self, key: str) -> None: ...

    def entries(self) -> AsyncIterator[StoredEntry]:
        """Every staged upload (``id`` is its key) with its age and size, for the retention
        sweep; ``complete=False`` marks the temporary file of a write that died."""
        ...


def _temp_name(key: str) -> bool:
    """Whether ``key`` names a temporary file of an upload write (``.tmp-`` + [a-z0-9_]+)."""
    rest = key.removeprefix(TEMP_PREFIX)
    return rest != key and rest.replace("_", "").isalnum() and rest.isascii()


class LocalUploads:
    """Uploads as files ``root/<key>`` (``root`` is ``STORAGE_DIR/uploads``), written atomically
    through a temporary file and a rename. API and workers must share the directory. Keys are
    alphanumeric; :meth:`delete` also takes the name of a temporary file that
    :meth:`entries` listed."""

    backend = "local"

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        if not key.isalnum():
            raise ValueError(f"upload keys are alphanumeric, got {key!r}")
        return self.root / key

    def _put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TEMP_PREFIX)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _get(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    async def put(self, key: str, data: bytes) -> None:
        await anyio.to_thread.run_sync(self._put, key, data)

    async def get(self, key: str) -> bytes | None:
        return await anyio.to_thread.run_sync(self._get, key)

    async def delete(self, key: str) -> None:
        path = self.root / key if _temp_name(key) else self._path(key)
        await anyio.to_thread.run_sync(lambda: path.unlink(missing_ok=True))

    def _entries(self) -> list[StoredEntry]:
        out: list[StoredEntry] = []
        try:
            items = list(os.scandir(self.root))
        except FileNotFoundError:
            return out
        for item in items:
            if not (item.name.isalnum() or _temp_name(item.name)):
                continue
            try:
                st = item.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # processed meanwhile
            out.append(StoredEntry(item.name, st.st_mtime, st.st_size, item.name.isalnum()))
        return out

    async def entries(self) -> AsyncIterator[StoredEntry]:
        for entry in await anyio.to_thread.run_sync(self._entries):
            yield entry


# -- submission ---------------------------------------------------------------------------------


async def result_in_storage(results: ResultService, rid: str) -> bool:
    """Whether result ``rid`` is in storage. The cache alone does not count for a job: it
    expires, and a job's result must outlive it.

    Raises:
        StorageUnavailable: storage cannot be read.
    """
    try:
        return await results.storage.get(rid) is not None
    except StorageError as exc:
        raise StorageUnavailable(
            f"Result storage ({results.storage.backend}) cannot be read ({exc}). Retry later."
        ) from exc


async def store_result(results: ResultService, result: StoredResult) -> None:
    """Write ``result`` to storage (atomic per object; rewriting the same result is harmless).

    Raises:
        StorageUnavailable: storage refused the write.
    """
    objects = await anyio.to_thread.run_sync(result.to_objects)
    try:
        await results.storage.put(result.id, objects)
    except StorageError as exc:
        raise StorageUnavailable(
            f"Result storage ({results.storage.backend}) refused result {result.id} ({exc})."
        ) from exc


@dataclass
class JobService:
    """Accepts jobs (stage the input, publish a reference, record the state) and reports them."""

    results: ResultService
    store: JobStore
    queue: JobQueue
    uploads: UploadStore
    max_attempts: int
    clock: Any = field(default=time.time)

    async def submit(
        self,
        data: bytes,
        options: ProcessingOptions,
        *,
        tenant: str | None = None,
        key_id: str | None = None,
        request_id: str | None = None,
        reference: bytes | None = None,
    ) -> JobState:
        """The job for ``data`` processed with ``options`` for ``tenant``: the existing one, a
        ``done`` one when the result is already stored, or a new ``queued`` one. ``key_id`` and
        ``request_id`` travel with the job into the worker's logs and audit line; ``reference``
        (the far-end echo file) is staged beside the input.

        Raises:
            QueueUnavailable: the queue did not confirm the job (nothing was recorded).
            JobStoreUnavailable: the state store cannot be reached.
        """
        content_sha256 = await sha256_hex(data)
        reference_sha256 = await sha256_hex(reference) if reference is not None else None
        rid = result_id(content_sha256, options, tenant, reference_sha256)
        job_id = job_id_for(rid)
        existing = await self.store.get(job_id)
        if existing is not None and existing.status != "done" and not existing.resubmittable:
            return existing
        result_exists = await self._result_exists(existing.result_id if existing else rid)
        if existing is not None and existing.status == "done" and result_exists:
            return existing
        # Start afresh: the job is new, dead-lettered, or done with its result since erased.
        overwrite = existing is not None
        now = self.clock()
        if result_exists:
            done = JobState(job_id, "done", now, now, rid, content_sha256, finished_at=now,
                            tenant=tenant, request_id=request_id)  # fmt: skip
            state, created = await self.store.create(done, overwrite=overwrite)
            if created:
                metrics.JOBS.labels("done").inc()
            return state
        message = JobMessage(
            job_id, rid, content_sha256, options.canonical_json(), job_id, now,
            tenant=tenant, key_id=key_id, request_id=request_id,
            reference_key=reference_key_for(job_id) if reference is not None else None,
        )  # fmt: skip
        fresh = JobState(
            job_id, "queued", now, now, rid, content_sha256, tenant=tenant, request_id=request_id
        )
        await self.uploads.put(message.upload_key, data)
        if message.reference_key is not None and reference is not None:
            await self.uploads.put(message.reference_key, reference)
        if existing is not None:
            # A restart: reset the state (attempts 0) before a worker can see the message.
            await self.store.create(fresh, overwrite=True)
        try:
            # A new job is published before its state is written: a crash in between leaves a
            # message whose worker creates the state, never a state no message will complete.
            await self.queue.publish(message)
        except Exception:
            await self.uploads.delete(message.upload_key)
            if message.reference_key is not None:
                await self.uploads.delete(message.reference_key)
            if existing is not None:
                await self.store.create(existing, overwrite=True)
            raise
        state, created = await self.store.create(fresh) if existing is None else (fresh, True)
        if created:
            metrics.JOBS.labels("queued").inc()
        return state

    async def erase_result(self, result_id: str) -> bool:
        """Erase the job records of result ``result_id``: the state of its job
        (:func:`job_id_for`) and the job's staged upload, if still there. A job still queued then
        fails with ``job_input_gone`` instead of storing the result again; one already running
        may still store it.

        Returns:
            Whether a job state was there.

        Raises:
            JobStoreUnavailable: the state store cannot be reached.
            S3Unavailable: the staged upload (in S3) could not be deleted.
        """
        job_id = job_id_for(result_id)
        await self.uploads.delete(job_id)  # JobMessage.upload_key is the job id
        await self.uploads.delete(reference_key_for(job_id))
        return await self.store.delete(job_id)

    async def _result_exists(self, rid: str | None) -> bool:
        return rid is not None and await result_in_storage(self.results, rid)

    async def get(self, job_id: str, tenant: str | None = None) -> JobState:
        """The job ``job_id`` of ``tenant``; :class:`NotFound` when unknown, expired or another
        tenant's (indistinguishable)."""
        state = await self.store.get(job_id) if job_id.isalnum() and len(job_id) == 32 else None
        if state is None or state.tenant != tenant:
            raise NotFound(
                f"No job has the id {job_id!r}. Job ids are 32 hexadecimal digits; a job's state "
                "expires JOB_TTL_S after its last change. Submit the recording again."
            )
        return state

    async def checks(self) -> dict[str, tuple[str, bool]]:
        """Readiness of the queue and the job store: name → (description, healthy)."""
        out: dict[str, tuple[str, bool]] = {}
        try:
            depth: QueueDepth = await asyncio.wait_for(self.queue.depth(), READY_TIMEOUT_S)
            record_depth(depth)
            out["queue"] = (
                f"{self.queue.backend}: ok ({depth.ready} ready, {depth.delayed} delayed, "
                f"{depth.dead} dead)",
                True,
            )
        except Exception as exc:  # QueueUnavailable, or anything a broken broker raises
            out["queue"] = (f"{self.queue.backend}: down ({_short(exc)})", False)
        try:
            await self.store.ping()
            out["jobs"] = (f"{self.store.backend}: ok", True)
        except JobStoreUnavailable as exc:
            out["jobs"] = (f"{self.store.backend}: down ({_short(exc)})", False)
        return out


def _short(exc: Exception) -> str:
    text = getattr(exc, "detail", None) or str(exc) or type(exc).__name__
    return str(text).split(". ")[0][:200]


def build_job_store(settings: Settings) -> JobStore:
    """Redis when jobs go through RabbitMQ and ``REDIS_URL`` is set, else in-process (see the
    module docstring)."""
    if settings.redis_url and settings.amqp_url:
        return RedisJobStore(
            settings.redis_url, ttl_s=settings.effective_job_ttl_s, prefix=settings.cache_prefix
        )
    return MemoryJobStore(settings.effective_job_ttl_s)


class S3Uploads:
    """Uploads as objects ``<S3_PREFIX>uploads/<key>`` in ``S3_BUCKET`` (with ``STORAGE=s3``), so
    API pods and workers on different machines share them. A single PUT is atomic."""

    backend = "s3"

    def __init__(self, s3: S3Client, *, bucket: str, prefix: str) -> None:
        self.s3 = s3
        self.bucket = bucket
        self.prefix = f"{prefix}uploads/"

    def _key(self, key: str) -> str:
        if not key.isalnum():
            raise ValueError(f"upload keys are alphanumeric, got {key!r}")
        return self.prefix + key

    @staticmethod
    def _unavailable(exc: S3Error) -> S3Unavailable:
        return S3Unavailable(
            f"The job input could not be staged in S3 ({exc.kind}: {exc.reason}). Retry later, "
            "or use POST /process."
        )

    async def put(self, key: str, data: bytes) -> None:
        try:
            await self.s3.put(
                self.bucket, self._key(key), data, content_type="application/octet-stream"
            )
        except S3Error as exc:
            raise self._unavailable(exc) from exc

    async def get(self, key: str) -> bytes | None:
        try:
            return await self.s3.get(self.bucket, self._key(key))
        except S3Error as exc:
            if exc.kind == "not_found":
                return None
            raise self._unavailable(exc) from exc

    async def delete(self, key: str) -> None:
        try:
            await self.s3.delete(self.bucket, self._key(key))
        except S3Error as exc:
            raise self._unavailable(exc) from exc

    async def entries(self) -> AsyncIterator[StoredEntry]:
        try:
            async for item in self.s3.list_objects(self.bucket, self.prefix):
                key = item.key[len(self.prefix) :]
                if key.isalnum():
                    yield StoredEntry(key, item.last_modified, item.size)
        except S3Error as exc:
            raise self._unavailable(exc) from exc


def build_uploads(settings: Settings, s3: S3Client | None = None) -> UploadStore:
    """Where submitted recordings wait for a worker: beside the results, under ``uploads/``
    (``STORAGE_DIR/uploads/`` locally; ``<S3_PREFIX>uploads/`` in ``S3_BUCKET`` with
    ``STORAGE=s3``)."""
    uploads: UploadStore
    if settings.storage == "s3":
        assert settings.s3_bucket is not None  # Settings validates it
        uploads = S3Uploads(
            s3 or S3Client.from_settings(settings),
            bucket=settings.s3_bucket,
            prefix=settings.s3_prefix,
        )
    else:
        uploads = LocalUploads(settings.storage_dir / "uploads")
    sealer = Sealer.from_settings(settings)
    return SealedUploads(uploads, sealer) if sealer else uploads
