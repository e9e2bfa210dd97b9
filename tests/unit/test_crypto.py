"""Encryption at rest (app/services/crypto.py): envelopes, rotation, settings and the adapters."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import anyio
import pytest
from prometheus_client import REGISTRY
from pydantic import ValidationError

from app.config import Settings
from app.errors import StoredDataCorrupt
from app.services.cache import MemoryCache
from app.services.crypto import (
    HEADER_BYTES,
    MAGIC,
    TAG_BYTES,
    SealedCache,
    SealedStorage,
    SealedUploads,
    Sealer,
    key_id,
)
from app.services.jobs import LocalUploads
from app.services.storage import AUDIO, FEATURES, MANIFEST, LocalStorage

KEY = bytes(range(32))
OLD_KEY = bytes(range(100, 132))
CONTEXT = "result/0123456789abcdef0123456789abcdef/audio.wav"
#: Envelope regions (start, stop) in bytes, for a 64-byte plaintext.
REGIONS = {
    "magic": (0, 4),
    "version": (4, 5),
    "key id": (5, 13),
    "nonce": (13, 25),
    "ciphertext": (25, 25 + 64),
    "tag": (25 + 64, 25 + 64 + 16),
}


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def settings(tmp_path: Path, **values: object) -> Settings:
    return Settings(storage_dir=tmp_path, warmup=False, redis_url=None, **values)  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 4096, 1_000_003])
def test_round_trip_is_bit_exact(size: int) -> None:
    data = os.urandom(size)
    sealer = Sealer(KEY)
    envelope = sealer.seal(data, context=CONTEXT)
    assert len(envelope) == HEADER_BYTES + size + TAG_BYTES
    assert envelope.startswith(MAGIC) and envelope[4] == 1
    assert envelope[5:13] == key_id(KEY)
    assert sealer.open(envelope, context=CONTEXT) == data
    if size >= 16:
        assert data not in envelope


def test_nonces_are_fresh() -> None:
    sealer = Sealer(KEY)
    a, b = (sealer.seal(b"same bytes", context=CONTEXT) for _ in range(2))
    assert a[13:25] != b[13:25] and a[25:] != b[25:]


@pytest.mark.parametrize("region", list(REGIONS))
def test_a_flipped_byte_in_any_region_is_refused(region: str) -> None:
    sealer = Sealer(KEY)
    envelope = bytearray(sealer.seal(os.urandom(64), context=CONTEXT))
    assert len(envelope) == REGIONS["tag"][1]
    start, stop = REGIONS[region]
    for index in (start, stop - 1):
        tampered = bytearray(envelope)
        tampered[index] ^= 0x01
        with pytest.raises(StoredDataCorrupt, match=f"stored object {CONTEXT} cannot be opened"):
            sealer.open(bytes(tampered), context=CONTEXT)


@pytest.mark.parametrize("cut", [1, TAG_BYTES, TAG_BYTES + 1])
def test_truncated_or_extended_envelopes_are_refused(cut: int) -> None:
    sealer = Sealer(KEY)
    envelope = sealer.seal(os.urandom(64), context=CONTEXT)
    for damaged in (envelope[:-cut], envelope + b"\0" * cut):
        with pytest.raises(StoredDataCorrupt, match="authentication failed"):
            sealer.open(damaged, context=CONTEXT)


def test_wrong_context_is_refused() -> None:
    sealer = Sealer(KEY)
    envelope = sealer.seal(b"x" * 100, context=CONTEXT)
    other = CONTEXT.replace("audio.wav", "features.npz")
    with pytest.raises(StoredDataCorrupt, match=f"{other} cannot be opened: authentication"):
        sealer.open(envelope, context=other)


@pytest.mark.parametrize(
    "data",
    [b"", b"RIFF\x24\0\0\0WAVEfmt ", b"\x93NUMPY" + b"\0" * 64, MAGIC + b"\x02" + b"\0" * 60],
)
def test_data_that_is_not_a_sealed_envelope_is_refused(data: bytes) -> None:
    reason = "envelope version 2" if data.startswith(MAGIC) else "not an encrypted envelope"
    with pytest.raises(StoredDataCorrupt, match=reason) as caught:
        Sealer(KEY).open(data, context=CONTEXT)
    problem = caught.value.problem()
    assert problem["status"] == 500 and problem["code"] == "stored_data_corrupt"
    assert problem["object"] == CONTEXT


def test_rotation_old_keys_open_and_new_writes_use_the_new_key() -> None:
    sealed_before = Sealer(OLD_KEY).seal(b"recorded before the rotation", context=CONTEXT)
    rotated = Sealer(KEY, [OLD_KEY])
    assert rotated.open(sealed_before, context=CONTEXT) == b"recorded before the rotation"
    assert rotated.seal(b"after", context=CONTEXT)[5:13] == key_id(KEY) != key_id(OLD_KEY)
    with pytest.raises(StoredDataCorrupt, match=f"key id {key_id(OLD_KEY).hex()}") as caught:
        Sealer(KEY).open(sealed_before, context=CONTEXT)
    for secret in (KEY, OLD_KEY):
        assert b64(secret) not in caught.value.detail and secret.hex() not in caught.value.detail


def test_settings_build_the_sealer_and_url_safe_base64_is_accepted(tmp_path: Path) -> None:
    assert Sealer.from_settings(settings(tmp_path)) is None
    old_url_safe = base64.urlsafe_b64encode(OLD_KEY).decode()
    sealer = Sealer.from_settings(
        settings(tmp_path, encryption_key=b64(KEY), encryption_keys_old=f" {old_url_safe} ,")
    )
    assert sealer is not None and sealer.key_id == key_id(KEY)
    before = Sealer(OLD_KEY).seal(b"abc", context=CONTEXT)
    assert sealer.open(before, context=CONTEXT) == b"abc"
    assert b64(KEY) not in repr(settings(tmp_path, encryption_key=b64(KEY)))


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"encryption_key": "not base64 at all!"}, "ENCRYPTION_KEY is not base64"),
        ({"encryption_key": b64(os.urandom(16))}, "ENCRYPTION_KEY must encode 32 bytes.*got 16"),
        (
            {"encryption_key": b64(KEY), "encryption_keys_old": b64(KEY) + ",abc"},
            "ENCRYPTION_KEYS_OLD is not base64",
        ),
        ({"encryption_keys_old": b64(OLD_KEY)}, "ENCRYPTION_KEYS_OLD needs ENCRYPTION_KEY"),
        ({"s3_sse": "aws:kms-dsse"}, "s3_sse"),
        ({"s3_sse_kms_key_id": "alias/x"}, "S3_SSE_KMS_KEY_ID needs S3_SSE=aws:kms"),
    ],
)
def test_bad_settings_are_rejected_without_echoing_keys(
    tmp_path: Path, values: dict[str, str], message: str
) -> None:
    with pytest.raises(ValidationError, match=message) as caught:
        settings(tmp_path, **values)
    for value in values.values():
        if len(value) > 8:
            assert value not in str(caught.value)


# --- Adapters ------------------------------------------------------------------------------------

RID = "ab" + "0" * 30
OTHER = "cd" + "1" * 30


def objects(seed: int) -> dict[str, bytes]:
    return {
        AUDIO: b"RIFF" + os.urandom(1000 + seed),
        FEATURES: b"PK\x03\x04" + os.urandom(2000 + seed),
        MANIFEST: b'{"id": "%d"}' % seed,
    }


def test_sealed_storage_round_trip_and_swapped_objects(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    inner = LocalStorage(tmp_path)
    storage = SealedStorage(inner, Sealer(KEY))
    assert storage.backend == "local" and str(storage) == f"local:{tmp_path}"
    first, second = objects(1), objects(2)

    async def scenario() -> None:
        await storage.put(RID, first)
        await storage.put(OTHER, second)
        assert await storage.get(RID) == first
        assert await storage.get("ef" + "2" * 30) is None
        raw = await inner.get(RID)
        assert raw is not None
        for name, data in raw.items():
            assert data.startswith(MAGIC) and first[name] not in data
        # The same name under another id: a valid envelope in the wrong place.
        other_dir = tmp_path / "results" / OTHER[:2] / OTHER
        (tmp_path / "results" / RID[:2] / RID / AUDIO).write_bytes((other_dir / AUDIO).read_bytes())
        with pytest.raises(StoredDataCorrupt, match=f"result/{RID}/audio.wav") as caught:
            await storage.get(RID)
        assert str(tmp_path) not in caught.value.detail
        assert [r.levelname for r in caplog.records if r.name == "audioproc.crypto"] == ["ERROR"]
        await storage.delete(RID)
        assert await storage.get(RID) is None
        assert [e.id for e in [e async for e in storage.entries()]] == [OTHER]

    anyio.run(scenario)


def cache_unreadable() -> float:
    return REGISTRY.get_sample_value("audioproc_cache_unreadable_total") or 0.0


def test_sealed_cache_round_trip_and_tampered_entries_are_dropped_misses() -> None:
    inner = MemoryCache(1 << 20, 60)
    cache = SealedCache(inner, Sealer(KEY))
    assert cache.backend == "memory"

    async def scenario() -> None:
        await cache.set("k1", b"bundle one")
        await cache.set("k2", b"bundle two")
        assert await cache.get("k1") == b"bundle one"
        sealed = await inner.get("k1")
        assert sealed is not None and b"bundle one" not in sealed
        await inner.set("k1", (await inner.get("k2")) or b"")  # another key's valid envelope
        before = cache_unreadable()
        assert await cache.get("k1") is None
        assert cache_unreadable() - before == 1
        assert await inner.get("k1") is None  # deleted
        assert await cache.get("k2") == b"bundle two"

    anyio.run(scenario)


def test_sealed_uploads_round_trip_and_tampering(tmp_path: Path) -> None:
    inner = LocalUploads(tmp_path / "uploads")
    uploads = SealedUploads(inner, Sealer(KEY))
    data = b"OggS" + os.urandom(5000)

    async def scenario() -> None:
        await uploads.put("job1", data)
        stored = (tmp_path / "uploads" / "job1").read_bytes()
        assert stored.startswith(MAGIC) and data[:64] not in stored
        assert await uploads.get("job1") == data
        assert await uploads.get("job2") is None
        (tmp_path / "uploads" / "job1").write_bytes(stored[:-1] + bytes([stored[-1] ^ 1]))
        with pytest.raises(StoredDataCorrupt, match="upload/job1"):
            await uploads.get("job1")
        await uploads.delete("job1")
        assert await uploads.get("job1") is None

    anyio.run(scenario)
