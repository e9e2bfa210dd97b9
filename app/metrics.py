"""Prometheus metrics of the service (exposed on /metrics next to the HTTP metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

PIPELINE_STEP_SECONDS = Histogram(
    "audioproc_pipeline_step_seconds",
    "Duration of each pipeline step, seconds.",
    ["step"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
AUDIO_SECONDS = Counter(
    "audioproc_audio_processed_seconds_total", "Seconds of input audio processed."
)
CACHE_LOOKUPS = Counter(
    "audioproc_cache_lookups_total",
    "Result lookups of POST /process by outcome: hit (the cache had it), storage (the cache "
    "missed, storage had it), miss (computed), error (the cache was unavailable; computed). "
    "Cache hit ratio = hit / all; served without computing = (hit + storage) / all.",
    ["result"],
)
CACHE_ERRORS = Counter(
    "audioproc_cache_errors_total", "Cache backend failures (the cache was bypassed).", ["op"]
)
CACHE_UNREADABLE = Counter(
    "audioproc_cache_unreadable_total",
    "Encrypted cache entries that did not open (altered, another key, not sealed): deleted and "
    "treated as a miss.",
)
S3_ERRORS = Counter(
    "audioproc_s3_errors_total",
    "S3 requests that failed for good (after retries; a missing object is not counted), by "
    "operation: head, get, put, delete, list, head_bucket.",
    ["op"],
)
S3_RETRIES = Counter(
    "audioproc_s3_retries_total", "S3 requests retried after a transient failure.", ["op"]
)
STORAGE_ERRORS = Counter(
    "audioproc_storage_errors_total",
    "Result storage failures by backend (local, s3) and operation (get, put, delete).",
    ["backend", "op"],
)
REJECTED_INPUTS = Counter(
    "audioproc_rejected_requests_total", "Requests answered with a problem, by code.", ["code"]
)

# -- security (app/security) -------------------------------------------------------------------
AUTH_FAILURES = Counter(
    "audioproc_auth_failures_total",
    "Requests refused by the security gate, by reason: missing, malformed or unknown key (401), "
    "scope (403), metrics_token (401 on /metrics).",
    ["reason"],
)
RATE_LIMITED = Counter(
    "audioproc_rate_limited_total", "Requests refused with 429 by the per-key rate limit."
)
RATE_LIMIT_ERRORS = Counter(
    "audioproc_rate_limit_errors_total",
    "Requests let through unlimited because the rate limiter's Redis did not answer.",
)
OVERLOADED = Counter(
    "audioproc_overloaded_total",
    "Requests answered 503 because PIPELINE_MAX_WAITING runs already waited for a slot.",
)

# -- jobs (API: submissions and queue depth; worker: everything) --------------------------------
QUEUE_DEPTH = Gauge(
    "audioproc_queue_depth",
    "Jobs in the queue: ready (waiting for a worker), delayed (retry backoff), dead "
    "(dead-lettered). Refreshed every 5 s.",
    ["queue"],
)
JOBS = Counter(
    "audioproc_jobs_total",
    "Jobs entering each state (queued, running, done, failed) in this process.",
    ["state"],
)
JOBS_IN_PROGRESS = Gauge("audioproc_jobs_in_progress", "Jobs this process is running now.")
JOB_DURATION_SECONDS = Histogram(
    "audioproc_job_duration_seconds",
    "Wall time of one job attempt in a worker, seconds, by outcome (done, failed, retry).",
    ["outcome"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
JOB_LATENCY_SECONDS = Histogram(
    "audioproc_job_latency_seconds",
    "From submission to done, seconds (queue wait and retries included).",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)
JOB_RETRIES = Counter(
    "audioproc_job_retries_total", "Failed job attempts scheduled to run again after a delay."
)
JOBS_DEAD_LETTERED = Counter(
    "audioproc_jobs_dead_lettered_total", "Jobs moved to the dead-letter queue."
)
JOB_REDELIVERIES = Counter(
    "audioproc_job_redeliveries_total",
    "Deliveries of jobs already done (a worker stopped between storing and acknowledging).",
)
QUEUE_ERRORS = Counter(
    "audioproc_queue_errors_total", "Job queue or job store failures, by operation.", ["op"]
)

# -- retention (`audioproc sweep`, the worker's periodic sweep) --------------------------------
RETENTION_SWEEPS = Counter(
    "audioproc_retention_sweeps_total",
    "Retention sweeps by outcome: ok, or failed (listing failed or some deletions did).",
    ["outcome"],
)
RETENTION_DELETED = Counter(
    "audioproc_retention_deleted_total",
    "Objects the retention sweep deleted, by kind: result (a stored result), debris (a result "
    "whose write died before its manifest), upload (a staged job input).",
    ["kind"],
)
