"""Service settings: every knob is an environment variable (names in ARCHITECTURE.md)."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.security.keys import ApiKeyEntry


class Settings(BaseSettings):
    """Runtime configuration, read from the environment (case-insensitive names).

    With nothing set the service runs on embedded defaults: an in-process LRU cache and a local
    results directory, so that ``audioproc serve`` works on a bare laptop.
    """

    # hide_input_in_errors: a settings error must never echo ENCRYPTION_KEY into a log.
    model_config = SettingsConfigDict(extra="ignore", frozen=True, hide_input_in_errors=True)

    redis_url: str | None = Field(
        default=None,
        description="Redis URL for the result cache (e.g. redis://127.0.0.1:6379/0). "
        "Unset: an in-process LRU cache bounded by CACHE_MAX_MB.",
    )
    cache_ttl_s: int = Field(default=86_400, ge=1, description="Cached result lifetime, s.")
    cache_prefix: str = Field(default="audioproc:", description="Key prefix in Redis.")
    cache_max_mb: float = Field(
        default=512.0, gt=0, description="Byte budget of the in-process cache, MiB."
    )
    storage: Literal["local", "s3"] = Field(
        default="local",
        description="Where results are kept beyond the cache TTL: `local` (STORAGE_DIR) or `s3` "
        "(S3_BUCKET, under S3_PREFIX).",
    )
    storage_dir: Path = Field(
        default=Path("var/results"), description="Directory of the local result storage."
    )
    # -- S3 (input with uri=s3://…, STORAGE=s3) ----------------------------------------------------
    s3_endpoint_url: str | None = Field(
        default=None,
        description="S3 endpoint for MinIO, Ceph and the like (e.g. http://minio:9000). Unset: "
        "AWS. Credentials come from the standard AWS_* variables (or an instance role).",
    )
    s3_region: str | None = Field(
        default=None,
        description="S3 region. Unset: AWS_REGION, else AWS_DEFAULT_REGION, else us-east-1.",
    )
    s3_bucket: str | None = Field(
        default=None, description="Bucket of the result storage (required with STORAGE=s3)."
    )
    s3_prefix: str = Field(
        default="",
        max_length=512,
        description="Key prefix of stored results in S3_BUCKET, e.g. `audioproc/`; results go "
        "under `<prefix>results/<id[:2]>/<id>/`.",
    )
    s3_allowed_buckets: str = Field(
        default="",
        description="Comma-separated buckets that `uri=s3://bucket/key` may read from. Empty: "
        "S3 input is refused (403).",
    )
    s3_addressing_style: Literal["auto", "path", "virtual"] = Field(
        default="auto",
        description="S3 URL style; `auto` is path-style with S3_ENDPOINT_URL, virtual-hosted on "
        "AWS.",
    )
    s3_connect_timeout_s: float = Field(
        default=2.0, gt=0, description="Deadline to connect to S3, s."
    )
    s3_read_timeout_s: float = Field(
        default=10.0, gt=0, description="Deadline for S3 to send the next bytes, s."
    )
    s3_max_attempts: int = Field(
        default=4,
        ge=1,
        description="Attempts of an S3 request that fails transiently (connection errors, "
        "timeouts, throttling, 5xx) before it is given up.",
    )
    s3_retry_base_s: float = Field(
        default=0.2,
        ge=0,
        description="Backoff before the first S3 retry, s; doubles per retry (with jitter).",
    )
    s3_sse: Literal["", "AES256", "aws:kms"] = Field(
        default="",
        description="S3 server-side encryption requested on every PUT (results, staged uploads): "
        "`AES256` (S3-managed keys), `aws:kms` (S3_SSE_KMS_KEY_ID, else the account's default "
        "KMS key) or empty (the bucket's default). Independent of ENCRYPTION_KEY.",
    )
    s3_sse_kms_key_id: str | None = Field(
        default=None, description="KMS key id or ARN for S3_SSE=aws:kms (unset: the default)."
    )
    # -- encryption at rest (app/services/crypto.py) ----------------------------------------------
    encryption_key: SecretStr | None = Field(
        default=None,
        description="Base64 of 32 random bytes: seals (AES-256-GCM) every stored result object, "
        "staged job upload and, with CACHE_ENCRYPT, cache entry. Unset: stored in the clear. "
        "Every API pod and worker needs the same key.",
    )
    encryption_keys_old: SecretStr = Field(
        default=SecretStr(""),
        description="Comma-separated base64 keys that only open data (never seal): the previous "
        "ENCRYPTION_KEY during a rotation.",
    )
    cache_encrypt: bool = Field(
        default=True,
        description="With ENCRYPTION_KEY, seal the cache entries (Redis or in-process) too.",
    )
    max_upload_mb: float = Field(default=100.0, gt=0, description="Largest accepted upload, MiB.")
    max_duration_s: float = Field(
        default=600.0, gt=0, description="Longest accepted recording, seconds."
    )
    decode_timeout_s: float = Field(
        default=30.0, gt=0, description="Wall-clock limit for decoding one upload, seconds."
    )
    audio_device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="Where tensors live: auto picks CUDA when it is available."
    )
    torch_threads: int = Field(
        default=1, ge=1, description="Intra-op threads torch may use for one pipeline run."
    )
    pipeline_concurrency: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        ge=1,
        description="Pipeline runs allowed at once per process (worker threads).",
    )
    keep_freed_buffers: bool = Field(
        default=True,
        description="Let glibc's malloc keep freed pipeline buffers (up to 32 MiB each, 512 MiB "
        "of free heap) for the next run instead of returning them to the system: saves the "
        "page faults of every run (app/runtime.py) for that much resident memory held.",
    )
    warmup: bool = Field(
        default=True, description="Run the default pipeline once at start-up to build kernels."
    )
    # -- jobs (POST /jobs, `audioproc worker`) ---------------------------------------------------
    amqp_url: str | None = Field(
        default=None,
        description="RabbitMQ URL for jobs (e.g. amqp://guest:guest@127.0.0.1:5672/). Unset: an "
        "in-process queue and worker in the API process (jobs die with it).",
    )
    amqp_queue: str = Field(
        default="audioproc.jobs",
        min_length=1,
        description="Name of the durable job queue; `<name>.retry.<ms>ms` and `<name>.dead` "
        "are its delay and dead-letter queues.",
    )
    amqp_timeout_s: float = Field(
        default=5.0, gt=0, description="Deadline to connect to RabbitMQ or publish a job, s."
    )
    job_max_attempts: int = Field(
        default=5, ge=1, description="Attempts of a failing job before it is dead-lettered."
    )
    job_retry_base_s: float = Field(
        default=2.0, gt=0, description="Delay before the 2nd attempt, s; doubles per attempt."
    )
    job_retry_max_s: float = Field(default=300.0, gt=0, description="Longest retry delay, s.")
    job_ttl_s: int = Field(
        default=7 * 86_400, ge=1, description="Lifetime of a job's state after its last change, s."
    )
    worker_prefetch: int = Field(
        default=2, ge=1, description="Unacknowledged jobs a worker holds (RabbitMQ prefetch)."
    )
    worker_concurrency: int = Field(
        default=1, ge=1, description="Jobs a worker (or the in-process worker) runs at once."
    )
    worker_shutdown_timeout_s: float = Field(
        default=30.0,
        ge=0,
        description="On SIGTERM, how long in-flight jobs may finish before they are requeued, s.",
    )
    worker_metrics_port: int = Field(
        default=9101, ge=0, le=65535, description="Prometheus port of `audioproc worker` (0: off)."
    )
    worker_metrics_addr: str = Field(
        default="127.0.0.1",
        description="Address the worker's metrics server binds (0.0.0.0 in a container).",
    )
    # -- retention (`audioproc sweep`, and periodically `audioproc worker`) -----------------------
    retention_s: int | None = Field(
        default=None,
        ge=1,
        description="Longest any result, processed audio, staged upload or job record is kept, "
        "s: cache and job-state TTLs are capped at it and the storage sweep deletes older "
        "objects. Unset: kept until deleted (cache and job states still expire by their TTLs).",
    )
    sweep_interval_s: float = Field(
        default=3600.0,
        ge=0,
        description="How often `audioproc worker` (and the API's in-process worker) sweeps "
        "expired objects from storage when RETENTION_S is set, s; 0: never (run `audioproc "
        "sweep` from a scheduler instead).",
    )

    # -- security (app/security) --------------------------------------------------------------
    api_keys: list[ApiKeyEntry] | None = Field(
        default=None,
        description='JSON list of `{"key_sha256", "tenant", "scopes"}` (scopes: process, read, '
        "delete, admin). Keys are stored only as SHA-256 hashes. Unset: the service runs OPEN "
        "(no authentication, no tenants), for a laptop; `[]`: every key is refused.",
    )
    rate_limit_per_min: float = Field(
        default=600.0,
        ge=0,
        description="Requests per minute each API key may make (a token bucket, in Redis when "
        "REDIS_URL is set); 0: no limit. Applies only with API_KEYS.",
    )
    rate_limit_burst: int = Field(
        default=60, ge=1, description="Requests a key may make at once before the rate applies."
    )
    audit_log: Path | None = Field(
        default=None,
        description="File that audit JSON lines are appended to, besides stdout.",
    )
    cors_origins: str = Field(
        default="",
        description="Comma-separated origins browsers may call the API from (e.g. "
        "https://app.example.com). Empty: no cross-origin access.",
    )
    metrics_token: str | None = Field(
        default=None,
        min_length=16,
        description="Bearer token GET /metrics requires. Unset: /metrics is open (keep it off "
        "the public network).",
    )
    max_form_parts: int = Field(
        default=72,
        ge=2,
        description="Most parts a multipart request may have (files and fields); counted while "
        "the body streams in.",
    )
    pipeline_max_waiting: int = Field(
        default=16,
        ge=0,
        description="Requests that may wait for a pipeline slot (PIPELINE_CONCURRENCY) in one "
        "process; beyond it POST /process answers 503 with Retry-After instead of holding more "
        "uploads in memory.",
    )

    @field_validator("s3_allowed_buckets")
    @classmethod
    def _bucket_list(cls, value: str) -> str:
        from app.services.s3 import bucket_name_problem

        names = sorted({name.strip() for name in value.split(",") if name.strip()})
        for name in names:
            problem = bucket_name_problem(name)
            if problem:
                raise ValueError(f"S3_ALLOWED_BUCKETS: {name!r} is not a bucket name ({problem})")
        return ",".join(names)

    @model_validator(mode="after")
    def _encryption_keys(self) -> Settings:
        from app.services.crypto import decode_key

        if self.encryption_key is not None:
            decode_key(self.encryption_key.get_secret_value(), name="ENCRYPTION_KEY")
        elif self.encryption_keys_old.get_secret_value().strip():
            raise ValueError("ENCRYPTION_KEYS_OLD needs ENCRYPTION_KEY (the key that seals)")
        for key in self.encryption_keys_old.get_secret_value().split(","):
            if key.strip():
                decode_key(key, name="ENCRYPTION_KEYS_OLD")
        if self.s3_sse_kms_key_id and self.s3_sse != "aws:kms":
            raise ValueError("S3_SSE_KMS_KEY_ID needs S3_SSE=aws:kms")
        return self

    @model_validator(mode="after")
    def _storage_bucket(self) -> Settings:
        from app.services.s3 import bucket_name_problem

        if self.storage == "s3":
            if not self.s3_bucket:
                raise ValueError("STORAGE=s3 needs S3_BUCKET")
            problem = bucket_name_problem(self.s3_bucket)
            if problem:
                raise ValueError(f"S3_BUCKET {self.s3_bucket!r}: {problem}")
        return self

    @property
    def allowed_buckets(self) -> frozenset[str]:
        """S3_ALLOWED_BUCKETS as a set (empty: no S3 input)."""
        return frozenset(filter(None, self.s3_allowed_buckets.split(",")))

    @property
    def cors_origin_list(self) -> list[str]:
        """CORS_ORIGINS as a list."""
        return [origin.strip() for origin in self.cors_origins.split(",") if origin.strip()]

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def effective_cache_ttl_s(self) -> int:
        """Lifetime of a cached result, s: CACHE_TTL_S, capped at RETENTION_S."""
        return min(self.cache_ttl_s, self.retention_s or self.cache_ttl_s)

    @property
    def effective_job_ttl_s(self) -> int:
        """Lifetime of a job's state after its last change, s: JOB_TTL_S, capped at
        RETENTION_S."""
        return min(self.job_ttl_s, self.retention_s or self.job_ttl_s)


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (a cached dependency; tests override it)."""
    return Settings()
