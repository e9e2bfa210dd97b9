"""Encryption at rest through the app: local storage, real Redis, S3 (moto) and job uploads.

Each test records the plaintext the service hands to its stores (what it would write without
ENCRYPTION_KEY), then inspects the bytes actually at rest — files, Redis values, S3 objects —
and opens them with the key.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
import soundfile as sf
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from app.services.cache import MemoryCache
from app.services.crypto import MAGIC, SealedCache, SealedStorage, SealedUploads, Sealer
from app.services.jobs import LocalUploads
from app.services.results import StoredResult
from app.services.storage import AUDIO, FEATURES, MANIFEST, RESULT_OBJECTS, LocalStorage
from tests.conftest import redis_url_or_skip
from tests.integration import test_s3 as s3_support
from tests.integration.jobs_support import wait_for_job

pytestmark = pytest.mark.timeout(120)

# The moto S3 server of the S3 tests (session fixtures, registered here by name).
aws_env = s3_support.aws_env
moto_url = s3_support.moto_url
RESULTS_BUCKET = s3_support.RESULTS_BUCKET

KEY = bytes(range(7, 39))
#: What no sealed object may contain: WAV, FLAC, Ogg, zip (NPZ) and .npy magic bytes.
PLAINTEXT_MAGIC = (b"RIFF", b"fLaC", b"OggS", b"PK\x03\x04", b"\x93NUMPY")


def encrypted(tmp_path: Path, **overrides: Any) -> Settings:
    import base64

    values: dict[str, Any] = {
        "storage_dir": tmp_path / "storage",
        "warmup": False,
        "redis_url": None,
        "encryption_key": base64.b64encode(KEY).decode(),
        "job_retry_base_s": 0.05,
    }
    values.update(overrides)
    return Settings(**values)


class Recorder:
    """Records the plaintext handed to the sealed stores of a running app (keys → bytes)."""

    def __init__(self, client: TestClient) -> None:
        self.objects: dict[str, dict[str, bytes]] = {}
        self.cached: dict[str, bytes] = {}
        results = client.app.state.results  # type: ignore[attr-defined]
        storage, cache = results.storage, results.cache
        put, set_ = storage.put, cache.set

        async def record_put(result_id: str, objects: Mapping[str, bytes]) -> None:
            self.objects[result_id] = dict(objects)
            await put(result_id, objects)

        async def record_set(key: str, value: bytes) -> None:
            self.cached[key] = value
            await set_(key, value)

        storage.put, cache.set = record_put, record_set


def assert_sealed(data: bytes, rid: str) -> None:
    assert data.startswith(MAGIC)
    for magic in PLAINTEXT_MAGIC:
        assert magic not in data, magic
    assert rid.encode() not in data


def result_files(storage_dir: Path, rid: str) -> dict[str, bytes]:
    directory = storage_dir / "results" / rid[:2] / rid
    return {name: (directory / name).read_bytes() for name in RESULT_OBJECTS}


def samples(wav: bytes) -> np.ndarray:
    data, _ = sf.read(io.BytesIO(wav), dtype="float32", always_2d=True)
    return data


def flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x40]) + data[index + 1 :]


def flush_sealed_cache(client: TestClient) -> None:
    client.app.state.results.cache.inner._entries.clear()  # type: ignore[attr-defined]


def check_reads(client: TestClient, first: dict[str, Any]) -> None:
    """GET /features/{id} (JSON, NPZ) and /audio give what POST /process answered."""
    rid = first["id"]
    again = client.get(f"/features/{rid}")
    assert again.status_code == 200, again.text[:300]
    assert again.json()["features"] == first["features"]
    npz = np.load(io.BytesIO(client.get(f"/features/{rid}", params={"format": "npz"}).content))
    assert npz["mfcc"].shape == tuple(first["features"]["mfcc"]["shape"])
    audio = client.get(f"/features/{rid}/audio", params={"encoding": "float32"})
    assert audio.status_code == 200
    assert samples(audio.content).shape[0] == round(
        first["output"]["duration_s"] * first["output"]["sample_rate"]
    )


@pytest.fixture
def redis_settings(tmp_path: Path) -> Iterator[Settings]:
    settings = encrypted(
        tmp_path, redis_url=redis_url_or_skip(), cache_prefix=f"test-enc-{uuid.uuid4().hex}:"
    )
    yield settings
    assert settings.redis_url is not None
    connection = redis.Redis.from_url(settings.redis_url)
    for key in connection.scan_iter(f"{settings.cache_prefix}*"):
        connection.delete(key)


def test_local_storage_and_redis_hold_only_sealed_bytes(redis_settings: Settings) -> None:
    assert redis_settings.redis_url is not None
    sealer = Sealer(KEY)
    data = s3_support.speech_like(21)
    connection = redis.Redis.from_url(redis_settings.redis_url)
    with TestClient(create_app(redis_settings)) as client:
        recorder = Recorder(client)
        first = client.post("/process", files={"file": ("a.wav", data)}).json()
        rid = first["id"]
        storage_dir = redis_settings.storage_dir

        # At rest: every file under the storage directory and every Redis value is an envelope.
        files = [p for p in storage_dir.rglob("*") if p.is_file()]
        assert sorted(p.name for p in files) == sorted(RESULT_OBJECTS)
        for path in files:
            assert_sealed(path.read_bytes(), rid)
        keys = list(connection.scan_iter(f"{redis_settings.cache_prefix}*"))
        assert keys == [f"{redis_settings.cache_prefix}{rid}".encode()]
        value = connection.get(keys[0])
        assert isinstance(value, bytes)
        assert_sealed(value, rid)

        # Opened with the key: bit-exactly what the unencrypted path would have stored.
        stored = result_files(storage_dir, rid)
        opened = {n: sealer.open(d, context=f"result/{rid}/{n}") for n, d in stored.items()}
        assert opened == recorder.objects[rid]
        assert sealer.open(value, context=f"cache/{rid}") == recorder.cached[rid]
        result = StoredResult.from_objects(opened)
        assert result.to_objects()[MANIFEST] == opened[MANIFEST]
        assert result.to_objects()[FEATURES] == opened[FEATURES]
        assert StoredResult.from_bundle(recorder.cached[rid]).meta == result.meta

        check_reads(client, first)  # from Redis
        connection.delete(keys[0])
        check_reads(client, first)  # from storage
        wav = client.get(f"/features/{rid}/audio", params={"encoding": "float32"}).content
        np.testing.assert_array_equal(samples(wav), samples(opened[AUDIO]))

        # A cache entry that does not open is a miss: dropped and read again from storage.
        results = client.app.state.results  # type: ignore[attr-defined]
        client.portal.call(results.cache.set, rid, recorder.cached[rid])  # type: ignore[union-attr]
        sealed = connection.get(keys[0])
        assert isinstance(sealed, bytes)
        connection.set(keys[0], flip(sealed, len(sealed) // 2))
        before = s3_support.metric("audioproc_cache_unreadable_total")
        assert client.get(f"/features/{rid}").json()["features"] == first["features"]
        assert s3_support.metric("audioproc_cache_unreadable_total") - before == 1
        assert not connection.exists(keys[0])

        # A flipped byte in a stored object is a clear 500, never garbage and never "retry".
        for name in (FEATURES, MANIFEST, AUDIO):
            path = storage_dir / "results" / rid[:2] / rid / name
            original = path.read_bytes()
            path.write_bytes(flip(original, len(original) - 3))
            body = s3_support.assert_problem(
                client.get(f"/features/{rid}"), 500, "stored_data_corrupt"
            )
            assert f"result/{rid}/{name}" in body["detail"] and "authentication" in body["detail"]
            assert str(storage_dir) not in body["detail"]
            path.write_bytes(original)
        check_reads(client, first)


def test_s3_objects_are_sealed_and_carry_server_side_encryption(
    tmp_path: Path, moto_url: str
) -> None:
    s3 = s3_support.s3.__wrapped__(moto_url)  # type: ignore[attr-defined]
    prefix = f"enc-{uuid.uuid4().hex[:8]}/"
    settings = s3_support.make_settings(
        tmp_path,
        moto_url,
        storage="s3",
        s3_bucket=RESULTS_BUCKET,
        s3_prefix=prefix,
        s3_sse="AES256",
        encryption_key=encrypted(tmp_path).encryption_key,
    )
    sealer = Sealer(KEY)
    data = s3_support.speech_like(22)
    with TestClient(create_app(settings)) as client:
        recorder = Recorder(client)
        first = client.post("/process", files={"file": ("a.wav", data)}).json()
        rid = first["id"]
        base = f"{prefix}results/{rid[:2]}/{rid}/"
        assert s3_support.list_keys(s3, prefix) == sorted(base + n for n in RESULT_OBJECTS)
        opened = {}
        for name in RESULT_OBJECTS:
            answer = s3.get_object(Bucket=RESULTS_BUCKET, Key=base + name)
            assert answer["ServerSideEncryption"] == "AES256"
            sealed = answer["Body"].read()
            assert_sealed(sealed, rid)
            opened[name] = sealer.open(sealed, context=f"result/{rid}/{name}")
        assert opened == recorder.objects[rid]

        flush_sealed_cache(client)
        check_reads(client, first)  # from S3

        # Job uploads are staged sealed (with SSE) and the in-process worker opens them.
        jobs = client.app.state.jobs  # type: ignore[attr-defined]
        assert isinstance(jobs.uploads, SealedUploads)
        client.portal.call(jobs.uploads.put, "probe1", data)  # type: ignore[union-attr]
        staged = s3.get_object(Bucket=RESULTS_BUCKET, Key=f"{prefix}uploads/probe1")
        assert staged["ServerSideEncryption"] == "AES256"
        staged_bytes = staged["Body"].read()
        assert_sealed(staged_bytes, rid)
        assert sealer.open(staged_bytes, context="upload/probe1") == data
        client.portal.call(jobs.uploads.delete, "probe1")  # type: ignore[union-attr]
        job_data = s3_support.speech_like(23)
        accepted = client.post("/jobs", files={"file": ("b.wav", job_data)})
        assert accepted.status_code == 202, accepted.text[:300]
        job = wait_for_job(client, accepted.json()["job_id"])
        assert job["status"] == "done", job
        assert client.get(f"/features/{job['result_id']}").status_code == 200

        # A flipped byte in an S3 object: the clear 500.
        key = base + FEATURES
        sealed = s3.get_object(Bucket=RESULTS_BUCKET, Key=key)["Body"].read()
        s3.put_object(Bucket=RESULTS_BUCKET, Key=key, Body=flip(sealed, 30))
        flush_sealed_cache(client)
        body = s3_support.assert_problem(client.get(f"/features/{rid}"), 500, "stored_data_corrupt")
        assert f"result/{rid}/features.npz" in body["detail"] and prefix not in body["detail"]
        assert client.delete(f"/features/{job['result_id']}").status_code == 204


def test_local_job_uploads_are_sealed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = encrypted(tmp_path, cache_encrypt=False)
    data = s3_support.speech_like(24)
    with TestClient(create_app(settings)) as client:
        results = client.app.state.results  # type: ignore[attr-defined]
        assert isinstance(results.cache, MemoryCache)  # CACHE_ENCRYPT=false
        uploads = client.app.state.jobs.uploads  # type: ignore[attr-defined]
        assert isinstance(uploads, SealedUploads) and isinstance(uploads.inner, LocalUploads)
        staged: list[bytes] = []
        inner_put = uploads.inner.put

        async def record(key: str, value: bytes) -> None:
            staged.append(value)
            await inner_put(key, value)

        monkeypatch.setattr(uploads.inner, "put", record)
        accepted = client.post("/jobs", files={"file": ("c.wav", data)}).json()
        job = wait_for_job(client, accepted["job_id"])
        assert job["status"] == "done", job
        assert len(staged) == 1 and staged[0].startswith(MAGIC) and b"RIFF" not in staged[0]
        for path in settings.storage_dir.rglob("*"):
            if path.is_file():
                assert path.read_bytes().startswith(MAGIC), path.name


def test_without_a_key_nothing_is_sealed(tmp_path: Path) -> None:
    settings = s3_support.make_settings(tmp_path, "http://127.0.0.1:9")
    assert settings.encryption_key is None
    data = s3_support.speech_like(25)
    with TestClient(create_app(settings)) as client:
        results = client.app.state.results  # type: ignore[attr-defined]
        assert isinstance(results.storage, LocalStorage)
        assert isinstance(results.cache, MemoryCache) and not isinstance(results.cache, SealedCache)
        assert not isinstance(results.storage, SealedStorage)
        assert isinstance(client.app.state.jobs.uploads, LocalUploads)  # type: ignore[attr-defined]
        recorder = Recorder(client)
        rid = client.post("/process", files={"file": ("a.wav", data)}).json()["id"]
        stored = result_files(settings.storage_dir, rid)
        assert stored == recorder.objects[rid]
        assert stored[AUDIO].startswith(b"RIFF") and stored[FEATURES].startswith(b"PK\x03\x04")
        assert results.cache._entries[rid][1] == recorder.cached[rid]
    from app.services.s3 import S3Client

    assert S3Client.from_settings(settings).put_encryption == {}
