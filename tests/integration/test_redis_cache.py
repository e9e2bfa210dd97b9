"""The result cache against the real Redis server (CI runs these; they fail there without it)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from tests.conftest import redis_url_or_skip, tone, wav_bytes


@pytest.fixture
def redis_settings(tmp_path: Path) -> Settings:
    return Settings(
        redis_url=redis_url_or_skip(),
        cache_prefix=f"test-{uuid.uuid4().hex}:",
        cache_ttl_s=120,
        storage_dir=tmp_path / "results",
        warmup=False,
    )


@pytest.fixture
def redis_client(redis_settings: Settings) -> Iterator[redis.Redis]:
    assert redis_settings.redis_url is not None
    connection = redis.Redis.from_url(redis_settings.redis_url)
    yield connection
    for key in connection.scan_iter(f"{redis_settings.cache_prefix}*"):
        connection.delete(key)


def test_repeat_is_served_from_redis(redis_settings: Settings, redis_client: redis.Redis) -> None:
    data = wav_bytes(tone(440, 1.0, 16000, 0.1), 16000)
    with TestClient(create_app(redis_settings)) as client:
        first = client.post("/process", files={"file": ("a.wav", data)}).json()
        key = f"{redis_settings.cache_prefix}{first['id']}"
        assert redis_client.exists(key)
        assert 0 < redis_client.ttl(key) <= 120
        # Served by Redis, not by storage: remove the stored copy first.
        for path in redis_settings.storage_dir.rglob("*.npz"):
            path.unlink()
        second = client.post("/process", files={"file": ("a.wav", data)}).json()
        assert (first["cached"], second["cached"]) == (False, True)
        assert second["features"] == first["features"]
        assert client.get("/readyz").json()["checks"]["cache"] == "redis: ok"
        assert client.delete(f"/features/{first['id']}").status_code == 204
        assert not redis_client.exists(key)


def test_a_new_process_sees_the_results_of_another(
    redis_settings: Settings, redis_client: redis.Redis
) -> None:
    data = wav_bytes(tone(660, 1.0, 16000, 0.1), 16000)
    with TestClient(create_app(redis_settings)) as client:
        result_id = client.post("/process", files={"file": ("a.wav", data)}).json()["id"]
    other = redis_settings.model_copy(update={"storage_dir": redis_settings.storage_dir / "x"})
    with TestClient(create_app(other)) as client:
        assert client.get(f"/features/{result_id}").status_code == 200


def test_redis_down_mid_life_degrades_but_serves(
    redis_settings: Settings, redis_client: redis.Redis
) -> None:
    data = wav_bytes(tone(550, 1.0, 16000, 0.1), 16000)
    with TestClient(create_app(redis_settings)) as client:
        assert client.get("/readyz").status_code == 200
        # Point the live cache at a port where nothing listens: Redis "went away".
        cache = client.app.state.results.cache  # type: ignore[attr-defined]
        cache._client = redis.asyncio.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
        response = client.post("/process", files={"file": ("a.wav", data)})
        assert response.status_code == 200
        assert any("cache is unavailable" in w for w in response.json()["warnings"])
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "degraded"
        assert "cache" in ready.json()["down"]
        assert "redis: down" in ready.json()["checks"]["cache"]
        metrics = client.get("/metrics").text
        assert 'audioproc_cache_errors_total{op="get"}' in metrics
