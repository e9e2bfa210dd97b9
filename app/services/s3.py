"""S3: strict ``s3://`` URIs, a retrying async client over boto3, and the object source that
reads recordings for ``POST /process`` (``uri=s3://bucket/key``) and the job workers.

boto3 blocks, so every S3 call runs in a worker thread (``anyio.to_thread``) with connect and read
timeouts; the waits between attempts are ``anyio.sleep`` and hold no thread. botocore's own
retries are off: :class:`S3Client` retries transient failures itself (connection errors, timeouts,
throttling, HTTP 5xx) with exponential backoff and jitter, counts them, and raises one
:class:`S3Error` whose ``kind`` says what happened.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import re
import unicodedata
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

import anyio
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from app import metrics
from app.errors import (
    BucketNotAllowed,
    EmptyInput,
    InvalidUri,
    ObjectAccessDenied,
    ObjectNotFound,
    ObjectTooLarge,
    S3BadGateway,
    S3Unavailable,
)

if TYPE_CHECKING:
    from app.config import Settings

log = logging.getLogger("audioproc.s3")

T = TypeVar("T")

#: Longest accepted URI, characters (``s3://`` + 63-character bucket + ``/`` + 1024-byte key fits).
MAX_URI_CHARS = 1100
#: S3's limit on a key, bytes of UTF-8.
MAX_KEY_BYTES = 1024
#: Bytes read from an object's body per chunk while streaming it in.
CHUNK_BYTES = 1024 * 1024

_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IPV4_RE = re.compile(r"\d{1,3}(\.\d{1,3}){3}")
_RESERVED_BUCKET_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_RESERVED_BUCKET_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")
#: Characters AWS says to avoid in keys, plus ``?`` (a query) and ``#`` (a fragment); ``%`` is
#: refused so that no percent-encoding can smuggle in ``..``.
_FORBIDDEN_KEY_CHARS = frozenset('\\{}^%`[]"<>~#|?')

#: Throttling and server-side timeouts: worth a retry, then "unavailable" (503).
_UNAVAILABLE_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "ServiceUnavailable",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "NotFound", "404"})
_DENIED_CODES = frozenset({"AccessDenied", "Forbidden", "403", "AllAccessDisabled"})
_CREDENTIAL_ERRORS = (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError)


# -- URIs -----------------------------------------------------------------------------------


def bucket_name_problem(name: str) -> str | None:
    """Why ``name`` is not a valid S3 bucket name (the general-purpose bucket rules), or
    ``None`` when it is."""
    if not 3 <= len(name) <= 63:
        return "a bucket name has 3–63 characters"
    if not _BUCKET_RE.fullmatch(name):
        return (
            "a bucket name has only lowercase letters, digits, dots and hyphens, and starts and "
            "ends with a letter or digit"
        )
    if ".." in name or ".-" in name or "-." in name:
        return "a bucket name has no '..', '.-' or '-.'"
    if _IPV4_RE.fullmatch(name):
        return "a bucket name is not an IP address"
    if name.startswith(_RESERVED_BUCKET_PREFIXES) or name.endswith(_RESERVED_BUCKET_SUFFIXES):
        return "the bucket name uses a prefix or suffix S3 reserves"
    return None


@dataclass(frozen=True)
class S3Uri:
    """An object's address: ``s3://<bucket>/<key>``."""

    bucket: str
    key: str

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def parse_s3_uri(uri: str) -> S3Uri:
    """Parse ``s3://bucket/key`` strictly.

    Accepted: the lowercase ``s3`` scheme, a valid bucket name (no port, no credentials), and a
    non-empty key of at most 1024 UTF-8 bytes whose ``/``-separated segments are neither empty,
    ``.`` nor ``..``; no query, fragment, percent-encoding, control characters or surrounding
    whitespace; at most :data:`MAX_URI_CHARS` characters in all.

    Raises:
        InvalidUri: (400) naming what is wrong.
    """

    def bad(reason: str) -> InvalidUri:
        shown = uri if len(uri) <= 200 else uri[:200] + "…"
        return InvalidUri(
            f"uri {shown!r} is not a valid S3 object URI: {reason}. Use s3://bucket/path/to/key.",
            uri=shown,
        )

    if len(uri) > MAX_URI_CHARS:
        raise bad(f"it is longer than {MAX_URI_CHARS} characters")
    if uri != uri.strip():
        raise bad("it has leading or trailing whitespace")
    if any(unicodedata.category(c).startswith("C") for c in uri):
        raise bad("it contains control or unassigned characters")
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme != "s3":
        raise bad("only the s3:// scheme is accepted")
    bucket, slash, key = rest.partition("/")
    if "@" in bucket:
        raise bad("credentials in the URI are not accepted; the service uses its own")
    if ":" in bucket:
        raise bad("a port is not accepted; the endpoint is the service's S3_ENDPOINT_URL")
    problem = bucket_name_problem(bucket)
    if problem:
        raise bad(problem)
    if not slash or not key:
        raise bad("the key (after the bucket) is empty")
    bad_chars = sorted(set(key) & _FORBIDDEN_KEY_CHARS)
    if bad_chars:
        raise bad(f"the key contains {' '.join(bad_chars)} (no query, fragment or %-encoding)")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise bad(f"the key is longer than {MAX_KEY_BYTES} bytes")
    segments = key.split("/")
    if any(s in ("", ".", "..") for s in segments):
        raise bad("the key has an empty, '.' or '..' path segment")
    return S3Uri(bucket, key)


# -- the retrying client ----------------------------------------------------------------------

S3ErrorKind = Literal["not_found", "denied", "unavailable", "bad_response", "too_large"]


class S3Error(Exception):
    """One S3 operation failed for good (after any retries).

    Attributes:
        kind: ``not_found`` (404), ``denied`` (403), ``unavailable`` (connection failures,
            timeouts, throttling, missing credentials), ``bad_response`` (an answer S3 should not
            give: other 4xx, 5xx after retries) or ``too_large`` (the body outgrew ``max_bytes``).
        op: the operation (``head``, ``get``, ``put``, ``delete``, ``head_bucket``).
        uri: the object (or bucket) it was about.
        reason: a short reason safe to show a client (no endpoint, no credentials).
        attempts: how many attempts were made.
    """

    def __init__(
        self, kind: S3ErrorKind, *, op: str, uri: str, reason: str, attempts: int = 1
    ) -> None:
        super().__init__(f"S3 {op} {uri}: {kind} ({reason}) after {attempts} attempt(s)")
        self.kind: S3ErrorKind = kind
        self.op = op
        self.uri = uri
        self.reason = reason
        self.attempts = attempts


@dataclass(frozen=True)
class _Failure:
    kind: S3ErrorKind
    reason: str
    transient: bool


def _classify(exc: Exception) -> _Failure | None:
    """What a boto3 exception means; ``None`` for exceptions that are not S3's (bugs)."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        # A HEAD answer has no body, so its "code" is just the status.
        if not status:
            label = code or "error"
        elif code in ("", str(status)):
            label = f"HTTP {status}"
        else:
            label = f"{code}, HTTP {status}"
        if status == 404 or code in _NOT_FOUND_CODES:
            return _Failure("not_found", label, False)
        if status == 403 or code in _DENIED_CODES:
            return _Failure("denied", label, False)
        if status in (429, 503) or code in _UNAVAILABLE_CODES:
            return _Failure("unavailable", label, True)
        if status >= 500:
            return _Failure("bad_response", label, True)
        return _Failure("bad_response", label, False)
    if isinstance(exc, _CREDENTIAL_ERRORS):
        return _Failure("unavailable", "the service has no usable S3 credentials", False)
    if isinstance(exc, BotoConnectionError | HTTPClientError | IncompleteReadError):
        reason = "timed out" if "timeout" in type(exc).__name__.lower() else "connection failed"
        return _Failure("unavailable", reason, True)
    if isinstance(exc, BotoCoreError):
        return _Failure("bad_response", type(exc).__name__, False)
    return None


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts and exponential backoff with jitter: before retry *n* (0-based) the wait is
    uniformly drawn from ``[d/2, d]`` with ``d = min(max_delay_s, base_delay_s * 2**n)``, s."""

    max_attempts: int = 4
    base_delay_s: float = 0.2
    max_delay_s: float = 5.0

    def delay(self, retry: int) -> float:
        d = min(self.max_delay_s, self.base_delay_s * 2**retry)
        return d / 2 + random.uniform(0.0, d / 2)


@dataclass(frozen=True)
class S3Object:
    """One listed object: its key, size (bytes) and last modification (Unix time, s)."""

    key: str
    size: int
    last_modified: float


class S3Client:
    """A boto3 S3 client behind async methods: worker threads, timeouts, retries, metrics.

    boto3 clients are thread-safe, so one instance serves the whole process. Every failure
    becomes an :class:`S3Error`; ``not_found`` is not counted as an error, everything else is
    (``audioproc_s3_errors_total{op}``), and each retry is counted too
    (``audioproc_s3_retries_total{op}``).
    """

    def __init__(
        self,
        client: Any,
        retry: RetryPolicy | None = None,
        *,
        put_encryption: Mapping[str, str] | None = None,
    ) -> None:
        self.client = client
        self.retry = retry or RetryPolicy()
        #: Server-side encryption arguments of every PUT (``ServerSideEncryption``, …).
        self.put_encryption = dict(put_encryption or {})

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Client:
        """A client for ``S3_ENDPOINT_URL`` (unset: AWS) with the standard AWS_* credentials
        chain, ``S3_REGION``, and the timeouts and retry policy of the settings."""
        import boto3
        from botocore.config import Config

        style = settings.s3_addressing_style
        if style == "auto":
            # MinIO, Ceph and moto answer path-style requests without DNS set-up.
            style = "path" if settings.s3_endpoint_url else "virtual"
        config = Config(
            region_name=settings.s3_region or os.environ.get("AWS_REGION") or None,
            connect_timeout=settings.s3_connect_timeout_s,
            read_timeout=settings.s3_read_timeout_s,
            retries={"total_max_attempts": 1},  # retried here, with backoff and metrics
            max_pool_connections=32,
            s3={"addressing_style": style},
            # S3-compatible stores differ in the checksums they accept; send only required ones.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        client = boto3.session.Session().client(
            "s3", endpoint_url=settings.s3_endpoint_url or None, config=config
        )
        encryption: dict[str, str] = {}
        if settings.s3_sse:
            encryption["ServerSideEncryption"] = settings.s3_sse
        if settings.s3_sse_kms_key_id:
            encryption["SSEKMSKeyId"] = settings.s3_sse_kms_key_id
        return cls(
            client,
            RetryPolicy(
                max_attempts=settings.s3_max_attempts, base_delay_s=settings.s3_retry_base_s
            ),
            put_encryption=encryption,
        )

    def close(self) -> None:
        """Close the connection pool."""
        self.client.close()

    async def _call(
        self, op: str, uri: str, fn: Callable[[], T], *, max_attempts: int | None = None
    ) -> T:
        attempts = max_attempts or self.retry.max_attempts
        for attempt in range(1, attempts + 1):
            try:
                return await anyio.to_thread.run_sync(fn)
            except S3Error:
                raise  # raised by ``fn`` itself (a body too large): not S3's failure
            except Exception as exc:
                failure = _classify(exc)
                if failure is None:
                    raise
                if failure.transient and attempt < attempts:
                    metrics.S3_RETRIES.labels(op).inc()
                    delay = self.retry.delay(attempt - 1)
                    log.info(
                        "S3 %s %s failed (%s: %s); retry %d/%d in %.2f s",
                        op,
                        uri,
                        type(exc).__name__,
                        exc,
                        attempt,
                        attempts - 1,
                        delay,
                    )
                    await anyio.sleep(delay)
                    continue
                if failure.kind != "not_found":
                    metrics.S3_ERRORS.labels(op).inc()
                    log.warning(
                        "S3 %s %s failed after %d attempt(s): %s: %s",
                        op,
                        uri,
                        attempt,
                        type(exc).__name__,
                        exc,
                    )
                raise S3Error(
                    failure.kind, op=op, uri=uri, reason=failure.reason, attempts=attempt
                ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def head(self, bucket: str, key: str) -> int:
        """The object's size, bytes (a HEAD request)."""
        response = await self._call(
            "head",
            f"s3://{bucket}/{key}",
            lambda: self.client.head_object(Bucket=bucket, Key=key),
        )
        return int(response["ContentLength"])

    async def get(self, bucket: str, key: str, *, max_bytes: int | None = None) -> bytes:
        """The object's bytes, streamed in chunks; at most ``max_bytes + 1`` bytes are read
        (``S3Error(kind="too_large")`` when the body is longer). A failure mid-stream retries
        the whole GET."""
        uri = f"s3://{bucket}/{key}"

        limit = max_bytes + 1 if max_bytes is not None else None  # one byte tells "too long"

        def read() -> bytes:
            body = self.client.get_object(Bucket=bucket, Key=key)["Body"]
            chunks: list[bytes] = []
            size = 0
            try:
                while True:
                    want = CHUNK_BYTES if limit is None else min(CHUNK_BYTES, limit - size)
                    chunk = body.read(want)
                    if not chunk:
                        break
                    size += len(chunk)
                    if max_bytes is not None and size > max_bytes:
                        raise S3Error(
                            "too_large",
                            op="get",
                            uri=uri,
                            reason=f"the body is longer than {max_bytes} bytes",
                        )
                    chunks.append(chunk)
            finally:
                body.close()
            return b"".join(chunks)

        return await self._call("get", uri, read)

    async def put(self, bucket: str, key: str, data: bytes, *, content_type: str) -> None:
        """Write one object (a single PUT: readers see the old object or the new one)."""
        await self._call(
            "put",
            f"s3://{bucket}/{key}",
            lambda: self.client.put_object(
                Bucket=bucket, Key=key, Body=data, ContentType=content_type, **self.put_encryption
            ),
        )

    async def delete(self, bucket: str, key: str) -> None:
        """Delete one object; deleting a missing object succeeds."""
        await self._call(
            "delete",
            f"s3://{bucket}/{key}",
            lambda: self.client.delete_object(Bucket=bucket, Key=key),
        )

    async def list_objects(
        self, bucket: str, prefix: str, *, page_size: int = 1000
    ) -> AsyncIterator[S3Object]:
        """Every object whose key starts with ``prefix``, in key order, fetched a page of up to
        ``page_size`` keys (ListObjectsV2; S3 caps it at 1000) at a time; each page request is
        retried like any other."""
        uri = f"s3://{bucket}/{prefix}"
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": page_size}
            if token is not None:
                kwargs["ContinuationToken"] = token
            page = await self._call(
                "list", uri, functools.partial(self.client.list_objects_v2, **kwargs)
            )
            for item in page.get("Contents", ()):
                yield S3Object(
                    key=item["Key"],
                    size=int(item["Size"]),
                    last_modified=item["LastModified"].timestamp(),
                )
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return

    async def head_bucket(self, bucket: str) -> None:
        """Check that the bucket answers (one attempt, for readiness probes)."""
        await self._call(
            "head_bucket",
            f"s3://{bucket}",
            lambda: self.client.head_bucket(Bucket=bucket),
            max_attempts=1,
        )


# -- the object source --------------------------------------------------------------------------


class ObjectSource(Protocol):
    """Recordings named by URI instead of uploaded (see :class:`S3ObjectSource`)."""

    def check(self, uri: str) -> S3Uri:
        """Parse and authorize ``uri`` without any network I/O."""
        ...

    async def fetch_object(self, uri: str) -> bytes:
        """The recording's bytes."""
        ...


class S3ObjectSource:
    """Reads recordings from S3 for ``POST /process`` and the job workers.

    Built once in the application's lifespan and kept on ``app.state.objects``. Interface:

    ``check(uri) -> S3Uri``
        Parses ``uri`` strictly (:func:`parse_s3_uri`) and checks its bucket against
        ``S3_ALLOWED_BUCKETS``; no network I/O. Call it when a job is submitted so that a bad URI
        is refused at once, not in the worker.
    ``await fetch_object(uri) -> bytes``
        ``check``, then HEAD the object and refuse it when it is empty or larger than
        ``max_bytes`` (``MAX_UPLOAD_MB``), then GET it streamed, reading at most ``max_bytes``.
        Transient failures are retried (``S3_MAX_ATTEMPTS``, backoff from ``S3_RETRY_BASE_S``).

    Every failure is an :class:`~app.errors.AudioprocError`, ready to be a problem+json answer:
    ``InvalidUri`` 400, ``EmptyInput`` 400 (0-byte object), ``BucketNotAllowed`` 403 (also for
    every bucket when S3_ALLOWED_BUCKETS is empty), ``ObjectAccessDenied`` 403 (S3 refused the
    service's credentials), ``ObjectNotFound`` 404 (no such key or bucket), ``ObjectTooLarge`` 413,
    ``S3BadGateway`` 502 (an unexpected S3 answer), ``S3Unavailable`` 503 (unreachable, timing
    out or throttling after the retries). A worker can tell permanent failures from ones worth
    retrying later by ``error.status`` (502/503 are worth a retry).
    """

    def __init__(
        self, client: S3Client | None, *, allowed_buckets: frozenset[str], max_bytes: int
    ) -> None:
        self.client = client
        self.allowed_buckets = allowed_buckets
        self.max_bytes = max_bytes

    def check(self, uri: str) -> S3Uri:
        parsed = parse_s3_uri(uri)
        if parsed.bucket not in self.allowed_buckets or self.client is None:
            allowed = ", ".join(sorted(self.allowed_buckets))
            raise BucketNotAllowed(
                f"The service may not read bucket {parsed.bucket!r}: "
                + (
                    f"S3 input is limited to the bucket(s) {allowed} (S3_ALLOWED_BUCKETS)."
                    if allowed
                    else "S3 input is disabled (S3_ALLOWED_BUCKETS is empty). Upload the file."
                ),
                bucket=parsed.bucket,
            )
        return parsed

    async def fetch_object(self, uri: str) -> bytes:
        parsed = self.check(uri)
        assert self.client is not None  # check() refuses every bucket without a client
        try:
            size = await self.client.head(parsed.bucket, parsed.key)
            if size > self.max_bytes:
                raise ObjectTooLarge(
                    f"{parsed} has {size} bytes, more than MAX_UPLOAD_MB "
                    f"({self.max_bytes / 2**20:g} MiB); it was not downloaded.",
                    size_bytes=size,
                    max_upload_mb=self.max_bytes / 2**20,
                )
            if size == 0:
                raise EmptyInput(f"{parsed} is empty (0 bytes).")
            return await self.client.get(parsed.bucket, parsed.key, max_bytes=self.max_bytes)
        except S3Error as error:
            raise self._problem(parsed, error) from error

    def _problem(
        self, uri: S3Uri, error: S3Error
    ) -> ObjectNotFound | ObjectAccessDenied | ObjectTooLarge | S3Unavailable | S3BadGateway:
        if error.kind == "not_found":
            return ObjectNotFound(
                f"{uri} does not exist (no such key, or no such bucket). Check the URI.",
                uri=str(uri),
            )
        if error.kind == "denied":
            return ObjectAccessDenied(
                f"S3 refused the service access to {uri} ({error.reason}). Grant the service's "
                "credentials s3:GetObject on it, or put the recording where it can read.",
                uri=str(uri),
            )
        if error.kind == "too_large":
            return ObjectTooLarge(
                f"{uri} grew beyond MAX_UPLOAD_MB ({self.max_bytes / 2**20:g} MiB) while it was "
                "read; the download was stopped.",
                max_upload_mb=self.max_bytes / 2**20,
            )
        if error.kind == "unavailable":
            return S3Unavailable(
                f"S3 could not serve {uri} ({error.reason}, {error.attempts} attempt(s)). "
                "Retry later."
            )
        return S3BadGateway(
            f"S3 answered unexpectedly for {uri} ({error.reason}, {error.attempts} attempt(s))."
        )
