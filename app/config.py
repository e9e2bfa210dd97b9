"""Service settings: every knob is an environment variable (names in ARCHITECTURE.md)."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Runtime configuration, read from the environment (case-insensitive names).

    With nothing set the service runs on embedded defaults: an in-process LRU cache and a local
    results directory, so that ``audioproc serve`` works on a bare laptop.
    """

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

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
    storage: Literal["local"] = Field(
        default="local", description="Where results are kept beyond the cache TTL."
    )
    storage_dir: Path = Field(
        default=Path("var/results"), description="Directory of the local result storage."
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
    warmup: bool = Field(
        default=True, description="Run the default pipeline once at start-up to build kernels."
    )

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (a cached dependency; tests override it)."""
    return Settings()
