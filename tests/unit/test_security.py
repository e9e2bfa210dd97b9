"""API keys, credentials, rate-limit buckets, request ids in logs, multipart delimiters."""

from __future__ import annotations

import json
import logging

import anyio
import pytest
from pydantic import ValidationError

from app.config import Settings
from app.main import multipart_delimiter
from app.security.audit import REQUEST_ID, RequestIdFilter
from app.security.keys import ApiKeyEntry, KeyRing, key_sha256, presented_key
from app.security.ratelimit import MemoryRateLimiter


def ring() -> KeyRing:
    return KeyRing(
        [
            ApiKeyEntry(key_sha256=key_sha256("k-read"), tenant="acme", scopes=["read"]),
            ApiKeyEntry(key_sha256=key_sha256("k-admin"), tenant="globex", scopes=["admin"]),
        ]
    )


def test_keys_authenticate_by_hash_with_their_tenant_and_scopes() -> None:
    keys = ring()
    reader = keys.authenticate("k-read")
    assert reader is not None and reader.tenant == "acme"
    assert reader.key_id == key_sha256("k-read")[:12] and "k-read" not in reader.key_id
    assert reader.allows("read") and not reader.allows("process") and not reader.allows("delete")
    admin = keys.authenticate("k-admin")
    assert admin is not None and admin.tenant == "globex"
    assert all(admin.allows(s) for s in ("process", "read", "delete", "admin"))
    for wrong in ("k-rea", "K-READ", "", "k-read ", "x" * 10_000, key_sha256("k-read")):
        assert keys.authenticate(wrong) is None


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, (None, "missing")),
        ({b"authorization": b"Bearer abc"}, ("abc", None)),
        ({b"authorization": b"bearer   abc  "}, ("abc", None)),
        ({b"x-api-key": b"abc"}, ("abc", None)),
        ({b"x-api-key": b"abc", b"authorization": b"Bearer abc"}, ("abc", None)),
        ({b"x-api-key": b"abc", b"authorization": b"Bearer xyz"}, (None, "malformed")),
        ({b"authorization": b"Basic dXNlcjpwYXNz"}, (None, "malformed")),
        ({b"authorization": b"Bearer "}, (None, "malformed")),
        ({b"x-api-key": "ключ".encode()}, (None, "malformed")),
        ({b"x-api-key": b"a\x00b"}, (None, "malformed")),
    ],
)
def test_presented_key(
    headers: dict[bytes, bytes], expected: tuple[str | None, str | None]
) -> None:
    assert presented_key(headers) == expected


def test_api_keys_setting_is_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    good = [{"key_sha256": key_sha256("k"), "tenant": "acme", "scopes": ["process", "read"]}]
    monkeypatch.setenv("API_KEYS", json.dumps(good))
    settings = Settings()
    assert settings.api_keys is not None and settings.api_keys[0].tenant == "acme"
    for bad in (
        [{"key_sha256": "k", "tenant": "acme", "scopes": ["read"]}],  # a key, not its hash
        [{"key_sha256": key_sha256("k"), "tenant": "a b", "scopes": ["read"]}],
        [{"key_sha256": key_sha256("k"), "tenant": "acme", "scopes": []}],
        [{"key_sha256": key_sha256("k"), "tenant": "acme", "scopes": ["root"]}],
    ):
        monkeypatch.setenv("API_KEYS", json.dumps(bad))
        with pytest.raises(ValidationError):
            Settings()
    monkeypatch.delenv("API_KEYS")
    assert Settings().api_keys is None


def test_token_bucket_allows_a_burst_then_the_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr("app.security.ratelimit.time.monotonic", lambda: now[0])
    limiter = MemoryRateLimiter(per_min=60, burst=3)

    def take(bucket: str) -> float:
        return anyio.run(limiter.take, bucket)

    assert [take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert take("a") == pytest.approx(1.0)  # one token per second
    assert take("b") == 0.0  # another key has its own bucket
    now[0] += 0.5
    assert take("a") == pytest.approx(0.5)
    now[0] += 0.5
    assert take("a") == 0.0
    now[0] += 3600
    assert [take("a") for _ in range(4)][-1] > 0  # refills only up to the burst


def test_log_records_carry_the_request_id() -> None:
    record = logging.LogRecord("audioproc", logging.INFO, __file__, 1, "hello", None, None)
    token = REQUEST_ID.set("req-42")
    try:
        assert RequestIdFilter().filter(record)
    finally:
        REQUEST_ID.reset(token)
    assert record.request_id == "req-42"
    RequestIdFilter().filter(record)
    assert record.request_id == "-"


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        (b"multipart/form-data; boundary=abc", b"--abc"),
        (b'Multipart/Form-Data; charset=utf-8; boundary="a b"', b"--a b"),
        (b"application/json", None),
        (b"multipart/form-data", None),
    ],
)
def test_multipart_delimiter(content_type: bytes, expected: bytes | None) -> None:
    assert multipart_delimiter(content_type) == expected
