"""Prometheus metrics of the service (exposed on /metrics next to the HTTP metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

PIPELINE_STEP_SECONDS = Histogram(
    "audioproc_pipeline_step_seconds",
    "Duration of each pipeline step, seconds.",
    ["step"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
AUDIO_SECONDS = Counter(
    "audioproc_audio_processed_seconds_total", "Seconds of input audio processed."
)
CACHE_LOOKUPS = Counter("audioproc_cache_lookups_total", "Result lookups by outcome.", ["result"])
CACHE_ERRORS = Counter(
    "audioproc_cache_errors_total", "Cache backend failures (the cache was bypassed).", ["op"]
)
REJECTED_INPUTS = Counter(
    "audioproc_rejected_requests_total", "Requests answered with a problem, by code.", ["code"]
)
