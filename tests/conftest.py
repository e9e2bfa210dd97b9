"""Shared fixtures: settings, the app over HTTP, signals and the shared recordings."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
SPEECH_FILES = sorted((SHARED_DATA / "speech").glob("*.ogg"))


def shared_file(relative: str) -> Path:
    """A file of ../shared/data; skips (with the reason) when ../shared is absent."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"{path} is absent: the shared recordings live in ../shared/data")
    return path


@pytest.fixture(autouse=True)
def _seeded() -> None:
    """Every test starts from the same random state (torch and numpy's global generators), so
    a test on random signals gives the same verdict on every run."""
    import torch

    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Embedded defaults (in-process cache, local storage in a temporary directory)."""
    return Settings(storage_dir=tmp_path / "results", warmup=False, redis_url=None)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def wav_bytes(samples: np.ndarray, sample_rate: int, subtype: str = "PCM_16") -> bytes:
    """Encode ``samples`` (``(time,)`` or ``(time, channel)``) as WAV."""
    buffer = io.BytesIO()
    sf.write(buffer, samples, sample_rate, format="WAV", subtype=subtype)
    return buffer.getvalue()


def tone(freq_hz: float, seconds: float, sample_rate: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def redis_url_or_skip() -> str:
    """The Redis at REDIS_URL (default 127.0.0.1:6379/15); fails under CI when it is missing."""
    import redis

    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but Redis at {url} does not answer: {exc}")
        pytest.skip(f"Redis at {url} does not answer: {exc}")
    return url


def amqp_url_or_skip() -> str:
    """The RabbitMQ at AMQP_URL (default guest@127.0.0.1:5672); fails under CI when it is
    missing."""
    import asyncio

    import aio_pika

    url = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")

    async def probe() -> None:
        connection = await aio_pika.connect(url, timeout=2)
        await connection.close()

    try:
        asyncio.run(asyncio.wait_for(probe(), 5))
    except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but RabbitMQ at {url} does not answer: {exc}")
        pytest.skip(f"RabbitMQ at {url} does not answer: {exc}")
    return url
