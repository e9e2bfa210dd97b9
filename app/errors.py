"""Domain errors and their RFC 9457 problem+json form.

Every error the service can answer is a subclass of :class:`AudioprocError` that carries its HTTP
status, a stable machine-readable ``code`` and a human ``detail`` saying what was wrong and what to
do. The module has no web imports, so the pure pipeline can raise these errors too; one exception
handler in :mod:`app.main` turns them into responses.
"""

from __future__ import annotations

from typing import Any

PROBLEM_TYPE_BASE = "https://audioproc.dev/problems/"


class AudioprocError(Exception):
    """Base class: an error with an HTTP status and a stable code."""

    status: int = 400
    code: str = "bad_request"
    title: str = "Bad request"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra
        #: HTTP headers the response carries (``WWW-Authenticate``, ``Retry-After``).
        self.headers = headers or {}

    def problem(self, instance: str | None = None) -> dict[str, Any]:
        """The problem+json body (type, title, status, detail, code, plus any extra members)."""
        return problem_body(
            status=self.status,
            code=self.code,
            title=self.title,
            detail=self.detail,
            instance=instance,
            **self.extra,
        )


def problem_body(
    *, status: int, code: str, title: str, detail: str, instance: str | None = None, **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + code,
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if instance:
        body["instance"] = instance
    body.update(extra)
    return body


class EmptyInput(AudioprocError):
    status, code, title = 400, "empty_input", "Empty input"


class UnsupportedFormat(AudioprocError):
    status, code, title = 415, "unsupported_format", "Not a supported audio format"


class CorruptAudio(AudioprocError):
    status, code, title = 422, "corrupt_audio", "Corrupted or truncated audio"


class InvalidAudioHeader(AudioprocError):
    status, code, title = 422, "invalid_audio_header", "Impossible audio parameters"


class NoAudio(AudioprocError):
    status, code, title = 422, "no_audio", "The file holds no audio samples"


class DecodeTimeout(AudioprocError):
    status, code, title = 422, "decode_timeout", "Decoding took too long"


class UploadTooLarge(AudioprocError):
    status, code, title = 413, "upload_too_large", "Upload too large"


class AudioTooLong(AudioprocError):
    status, code, title = 413, "audio_too_long", "Recording too long"


class InvalidOptions(AudioprocError):
    status, code, title = 422, "invalid_options", "Invalid processing options"


class InvalidRequest(AudioprocError):
    status, code, title = 400, "invalid_request", "Invalid request"


class NotFound(AudioprocError):
    status, code, title = 404, "not_found", "Not found"


class Unauthenticated(AudioprocError):
    status, code, title = 401, "unauthenticated", "An API key is needed"


class Forbidden(AudioprocError):
    status, code, title = 403, "forbidden", "The API key lacks the scope this needs"


class RateLimited(AudioprocError):
    status, code, title = 429, "rate_limited", "Too many requests"


class TooManyParts(AudioprocError):
    status, code, title = 413, "too_many_parts", "Too many parts in the form"


class DependencyUnavailable(AudioprocError):
    status, code, title = 503, "dependency_unavailable", "A backing service is unavailable"


class InvalidUri(AudioprocError):
    status, code, title = 400, "invalid_uri", "Not a valid s3:// object URI"


class BucketNotAllowed(AudioprocError):
    status, code, title = 403, "bucket_not_allowed", "The service may not read this bucket"


class ObjectAccessDenied(AudioprocError):
    status, code, title = 403, "object_access_denied", "S3 refused access to the object"


class ObjectNotFound(NotFound):
    status, code, title = 404, "object_not_found", "No such S3 object"


class ObjectTooLarge(UploadTooLarge):
    status, code, title = 413, "object_too_large", "S3 object too large"


class S3BadGateway(AudioprocError):
    status, code, title = 502, "s3_bad_gateway", "S3 answered unexpectedly"


class S3Unavailable(DependencyUnavailable):
    status, code, title = 503, "s3_unavailable", "S3 is unavailable"


class StorageUnavailable(DependencyUnavailable):
    status, code, title = 503, "storage_unavailable", "Result storage is unavailable"


class QueueUnavailable(DependencyUnavailable):
    status, code, title = 503, "queue_unavailable", "The job queue is unavailable"


class JobStoreUnavailable(DependencyUnavailable):
    status, code, title = 503, "job_store_unavailable", "The job state store is unavailable"


class StoredDataCorrupt(AudioprocError):
    """A stored object (result, cache entry, job input) does not open under ENCRYPTION_KEY: it
    was altered, truncated, moved from another id, sealed with a key not configured, or never
    sealed. ``detail`` names the object (its place, never a filesystem path) and the reason."""

    status, code, title = 500, "stored_data_corrupt", "Stored data cannot be opened"


class JobInputGone(AudioprocError):
    """A queued job's staged upload disappeared before a worker could read it."""

    status, code, title = 410, "job_input_gone", "The job's input is gone"


class Overloaded(AudioprocError):
    """More pipeline runs are waiting than PIPELINE_MAX_WAITING allows."""

    status, code, title = 503, "overloaded", "The service is busy"
