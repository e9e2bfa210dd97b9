"""Malformed uploads to ``POST /process`` are refused with a precise 4xx problem+json.

Every input is generated here, in memory (numpy + soundfile + PyAV): empty and non-audio bytes,
damaged or truncated WAV/FLAC/OGG/MP3/M4A/WebM, WAV headers with impossible values, NaN samples,
a decompression bomb, an oversized upload, invalid ``options`` JSON and malformed requests. For each
the test asserts the exact status and ``code`` of app/errors.py, the RFC 9457 members, and that no
stack trace leaks; a last test checks the service still works after all of them.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from tests.conftest import tone, wav_bytes

RATE = 16_000


# --- Builders: each returns the bytes of one upload ---------------------------------------------


def _wav(seconds: float = 1.0, subtype: str = "PCM_16") -> bytes:
    return wav_bytes(tone(440.0, seconds, RATE), RATE, subtype=subtype)


def _soundfile(fmt: str, seconds: float = 2.0, silent: bool = False) -> bytes:
    samples = np.zeros(int(seconds * RATE), np.float32) if silent else tone(440.0, seconds, RATE)
    buffer = io.BytesIO()
    sf.write(buffer, samples, RATE, format=fmt)
    return buffer.getvalue()


def _pyav(container: str, codec: str, rate: int, seconds: float = 2.0) -> bytes:
    """Encode a mono tone with FFmpeg (PyAV converts and splits the frame for the encoder)."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(
            tone(440.0, seconds, rate)[None, :], format="fltp", layout="mono"
        )
        frame.sample_rate, frame.pts = rate, 0
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    return buffer.getvalue()


def _patch(data: bytes, offset: int, fmt: str, *values: int) -> bytes:
    patched = bytearray(data)
    struct.pack_into(fmt, patched, offset, *values)
    return bytes(patched)


def _garble(data: bytes, start: float, length: int) -> bytes:
    """Overwrite ``length`` bytes from the fraction ``start`` of the file with seeded noise."""
    at = int(len(data) * start)
    noise = np.random.default_rng(7).bytes(length)
    return data[:at] + noise + data[at + length :]


def _flip(data: bytes, start: float, length: int) -> bytes:
    """Invert every bit of ``length`` bytes from the fraction ``start`` of the file."""
    at = int(len(data) * start)
    return data[:at] + bytes(b ^ 0xFF for b in data[at : at + length]) + data[at + length :]


def _ogg_first_page(data: bytes) -> bytes:
    return data[: data.index(b"OggS", 4)]


def _wav_nan() -> bytes:
    samples = tone(440.0, 0.5, RATE)
    samples[100:200] = np.nan
    return wav_bytes(samples, RATE, subtype="FLOAT")


def _flac() -> bytes:
    return _soundfile("FLAC")


# The canonical 44-byte PCM header: channels at 22, rate at 24, block align at 32, bits at 34.
BAD_FILES = [
    pytest.param(lambda: b"", 400, "empty_input", id="empty-body"),
    pytest.param(
        lambda: np.random.default_rng(1234).bytes(4096), 415, "unsupported_format", id="random"
    ),
    pytest.param(
        lambda: b"Hello, this is plain text and not a recording.\n" * 20,
        415,
        "unsupported_format",
        id="plain-text",
    ),
    pytest.param(
        lambda: json.dumps({"audio": [0.1, 0.2], "rate": 16000}).encode(),
        415,
        "unsupported_format",
        id="json-document",
    ),
    pytest.param(
        lambda: b"\x89PNG\r\n\x1a\n" + bytes(200), 415, "unsupported_format", id="png-header"
    ),
    pytest.param(lambda: _wav()[:10_000], 422, "corrupt_audio", id="wav-truncated-data"),
    pytest.param(lambda: _wav()[:36], 422, "no_audio", id="wav-no-data-chunk"),
    pytest.param(lambda: _wav()[:44], 422, "corrupt_audio", id="wav-header-only"),
    pytest.param(
        lambda: wav_bytes(np.zeros(0, np.float32), RATE), 422, "no_audio", id="wav-zero-frames"
    ),
    pytest.param(lambda: _patch(_wav(), 24, "<I", 0), 422, "invalid_audio_header", id="wav-0hz"),
    pytest.param(
        lambda: _patch(_wav(), 22, "<H", 65535),
        422,
        "invalid_audio_header",
        id="wav-65535-channels",
    ),
    pytest.param(
        lambda: _patch(_wav(), 22, "<HIIH", 65535, RATE, RATE * 2 * 65535, 0xFFFE),
        422,
        "invalid_audio_header",
        id="wav-65535-channels-consistent",
    ),
    pytest.param(lambda: _patch(_wav(), 34, "<H", 0), 422, "invalid_audio_header", id="wav-0-bits"),
    pytest.param(_wav_nan, 422, "corrupt_audio", id="wav-float-nan"),
    pytest.param(
        lambda: (d := _flac())[: len(d) // 2], 422, "corrupt_audio", id="flac-truncated-half"
    ),
    pytest.param(lambda: _flip(_flac(), 0.5, 64), 422, "corrupt_audio", id="flac-flipped-bytes"),
    pytest.param(
        lambda: _ogg_first_page(_soundfile("OGG")), 422, "corrupt_audio", id="ogg-first-page"
    ),
    pytest.param(
        lambda: _pyav("mp3", "libmp3lame", 44_100)[:200], 422, "corrupt_audio", id="mp3-200-bytes"
    ),
    pytest.param(
        lambda: (d := _pyav("mp4", "aac", 44_100))[: int(len(d) * 0.3)],
        422,
        "corrupt_audio",
        id="m4a-moov-cut",
    ),
    pytest.param(
        lambda: _garble(_pyav("webm", "libopus", 48_000), 0.5, 512),
        422,
        "corrupt_audio",
        id="webm-opus-garbled",
    ),
]

# (options JSON text, the field the detail must name)
BAD_OPTIONS = [
    pytest.param("{not json", "Invalid JSON", id="not-json"),
    pytest.param('{"sample_rate": 16000}', "sample_rate", id="unknown-key"),
    pytest.param('{"features": {"n_mels": 40, "n_mfcc": 60}}', "n_mfcc", id="n-mfcc-over-n-mels"),
    pytest.param('{"features": {"win_ms": 20, "hop_ms": 30}}', "hop_ms", id="hop-over-win"),
    pytest.param(
        '{"target_sample_rate": 16000, "features": {"f_max": 12000}}',
        "f_max",
        id="f-max-over-nyquist",
    ),
    pytest.param('{"features": {"preset": "no-such-preset"}}', "preset", id="unknown-preset"),
    pytest.param('{"target_sample_rate": -16000}', "target_sample_rate", id="negative-rate"),
]


def assert_problem(response: Any, status: int, code: str) -> dict[str, Any]:
    """The response is the problem+json ``status``/``code``, with no Python internals in it."""
    if response.status_code == 200:  # accepted: show what was decoded, not the features
        pytest.fail(f"expected {status} {code}, got 200 with input {response.json()['input']}")
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert {"type", "title", "status", "detail", "code"} <= body.keys(), body
    assert body["status"] == response.status_code
    assert body["code"] == code, body
    assert isinstance(body["detail"], str) and body["detail"].strip()
    assert isinstance(body["type"], str) and body["type"]
    assert isinstance(body["title"], str) and body["title"]
    for leak in ("Traceback", 'File "/', "object at 0x"):  # no stack trace, no Python repr
        assert leak not in response.text, body["detail"]
    return body


def post(client: TestClient, data: bytes, options: str | None = None) -> Any:
    form = {"options": options} if options is not None else None
    return client.post("/process", files={"file": ("upload.bin", data)}, data=form)


@pytest.mark.parametrize(("build", "status", "code"), BAD_FILES)
def test_malformed_file_is_refused(
    client: TestClient, build: Callable[[], bytes], status: int, code: str
) -> None:
    assert_problem(post(client, build()), status, code)


@pytest.mark.parametrize(("options", "field"), BAD_OPTIONS)
def test_invalid_options_are_refused(client: TestClient, options: str, field: str) -> None:
    body = assert_problem(post(client, _wav(0.5), options), 422, "invalid_options")
    assert field in body["detail"], body["detail"]


def test_unknown_format_query_is_refused(client: TestClient) -> None:
    response = client.post(
        "/process", params={"format": "xml"}, files={"file": ("a.wav", _wav(0.5))}
    )
    body = assert_problem(response, 422, "invalid_request")
    assert "format" in body["detail"]


def test_missing_file_field_is_refused(client: TestClient) -> None:
    body = assert_problem(client.post("/process", data={"options": "{}"}), 400, "invalid_request")
    assert "file" in body["detail"]


def _client(tmp_path: Path, **limits: float) -> Iterator[TestClient]:
    settings = Settings(storage_dir=tmp_path / "results", warmup=False, redis_url=None, **limits)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def short_client(tmp_path: Path) -> Iterator[TestClient]:
    """An app that accepts at most 5 s of audio."""
    yield from _client(tmp_path, max_duration_s=5)


@pytest.fixture
def small_client(tmp_path: Path) -> Iterator[TestClient]:
    """An app that accepts at most 0.01 MiB (10 485 bytes) per upload."""
    yield from _client(tmp_path, max_upload_mb=0.01)


def test_decompression_bomb_is_refused_from_the_header(short_client: TestClient) -> None:
    bomb = _soundfile("FLAC", seconds=60.0, silent=True)  # a few kB that claim 60 s
    assert len(bomb) < 50_000
    body = assert_problem(post(short_client, bomb), 413, "audio_too_long")
    assert "60.0 s" in body["detail"]


def test_upload_over_the_limit_is_refused(small_client: TestClient) -> None:
    upload = _wav(1.6)  # 16 bit × 16 kHz × 1.6 s ≈ 50 kB
    assert len(upload) > 50_000
    assert_problem(post(small_client, upload), 413, "upload_too_large")


def test_service_survives_every_bad_input(client: TestClient) -> None:
    """All the bad inputs above, in one app, then a health check and a valid recording."""
    for case in BAD_FILES:
        assert post(client, case.values[0]()).status_code < 500, case.id
    for case in BAD_OPTIONS:
        assert post(client, _wav(0.5), case.values[0]).status_code == 422, case.id
    assert client.post("/process", params={"format": "xml"}).status_code == 422
    assert client.post("/process", data={"options": "{}"}).status_code == 400
    assert client.get("/healthz").status_code == 200
    response = post(client, _wav(0.5))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
