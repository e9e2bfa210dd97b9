"""S3 input (``uri=s3://…``) and result storage against a real S3 protocol endpoint.

moto's server mode (``ThreadedMotoServer``) listens on a free loopback port for the session; the
app talks to it through boto3 exactly as it would to MinIO or AWS. A small HTTP proxy on loopback
(:class:`FaultProxy`) sits in front of it where a test needs to see the requests on the wire or to
inject failures (throttling, 5xx, dropped connections).
"""

from __future__ import annotations

import http.client
import io
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient
from moto.server import ThreadedMotoServer
from prometheus_client import REGISTRY

from app.config import Settings
from app.main import create_app
from app.services.storage import RESULT_OBJECTS
from tests.conftest import tone, wav_bytes

pytestmark = pytest.mark.timeout(60)

INPUT_BUCKET = "audio-in"
OTHER_BUCKET = "audio-other"
RESULTS_BUCKET = "results-store"
RATE = 16_000


# --- The S3 endpoint ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def aws_env() -> Iterator[None]:
    """Dummy credentials and a region; no shared config files, no instance metadata lookups."""
    with pytest.MonkeyPatch.context() as patch:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            patch.delenv(name, raising=False)
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        patch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
        patch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        yield


@pytest.fixture(scope="session")
def moto_url(aws_env: None) -> Iterator[str]:
    """A moto S3 server on a free 127.0.0.1 port, with the test buckets created."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    s3 = boto3.client("s3", endpoint_url=url)
    for bucket in (INPUT_BUCKET, OTHER_BUCKET, RESULTS_BUCKET):
        s3.create_bucket(Bucket=bucket)
    try:
        yield url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3(moto_url: str) -> Any:
    """A boto3 client on the moto server, for setting up and inspecting buckets."""
    return boto3.client("s3", endpoint_url=moto_url)


class FaultProxy:
    """An HTTP proxy on 127.0.0.1 in front of the S3 endpoint: logs every request as
    ``(method, path)`` and answers the next ones with injected faults instead of forwarding.

    A fault is an HTTP status (answered with an S3 XML error: 503 SlowDown, else
    InternalError) or ``"drop"`` (the connection is closed without an answer).
    """

    def __init__(self, upstream: str) -> None:
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.requests: list[tuple[str, str]] = []
        self.faults: list[int | str] = []
        self.always: dict[str, int | str] = {}  # method -> fault on every such request
        self.head_length: int | None = None  # when set, HEAD answers claim this size
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def methods(self) -> list[str]:
        return [method for method, _ in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _fault_for(self, method: str, path: str) -> int | str | None:
        with self._lock:
            self.requests.append((method, path))
            if method in self.always:
                return self.always[method]
            return self.faults.pop(0) if self.faults else None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                fault = proxy._fault_for(self.command, self.path)
                if fault == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if isinstance(fault, int):
                    code = "SlowDown" if fault == 503 else "InternalError"
                    payload = (
                        f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>"
                        f"<Message>injected</Message></Error>"
                    ).encode()
                    self.send_response(fault)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                    return
                upstream = http.client.HTTPConnection(*proxy.upstream, timeout=10)
                skip = {"connection", "keep-alive", "transfer-encoding", "content-length"}
                headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
                upstream.request(self.command, self.path, body=body or None, headers=headers)
                response = upstream.getresponse()
                data = response.read()
                upstream.close()
                self.send_response_only(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in skip:
                        self.send_header(key, value)
                length_header = response.getheader("Content-Length")
                if self.command == "HEAD" and proxy.head_length is not None:
                    length_header = str(proxy.head_length)
                if self.command == "HEAD" and length_header is not None:
                    self.send_header("Content-Length", length_header)
                else:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _handle

        return Handler


@pytest.fixture
def proxy(moto_url: str) -> Iterator[FaultProxy]:
    fault_proxy = FaultProxy(moto_url)
    yield fault_proxy
    fault_proxy.close()


@pytest.fixture(scope="module")
def guarded(
    moto_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TestClient, FaultProxy]]:
    """One app reading S3 through a proxy, shared by the tests that expect no S3 request."""
    fault_proxy = FaultProxy(moto_url)
    settings = make_settings(tmp_path_factory.mktemp("guarded"), fault_proxy.url)
    with TestClient(create_app(settings)) as client:
        yield client, fault_proxy
    fault_proxy.close()


# --- Helpers ----------------------------------------------------------------------------------


def make_settings(tmp_path: Path, endpoint: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "storage_dir": tmp_path / "results",
        "warmup": False,
        "redis_url": None,
        "s3_endpoint_url": endpoint,
        "s3_allowed_buckets": INPUT_BUCKET,
        "s3_max_attempts": 3,
        "s3_retry_base_s": 0.01,
        "s3_connect_timeout_s": 1.0,
        "s3_read_timeout_s": 5.0,
    }
    values.update(overrides)
    return Settings(**values)


def speech_like(seed: int, seconds: float = 1.0) -> bytes:
    rng = np.random.default_rng(seed)
    samples = tone(180 + 20 * seed, seconds, RATE, 0.2)
    samples += 0.01 * rng.standard_normal(samples.shape[0]).astype(np.float32)
    return wav_bytes(samples, RATE)


def put_input(s3: Any, data: bytes, bucket: str = INPUT_BUCKET) -> str:
    key = f"recordings/{uuid.uuid4().hex}/take 1.wav"
    s3.put_object(Bucket=bucket, Key=key, Body=data)
    return f"s3://{bucket}/{key}"


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def assert_problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["code"] == code, body
    assert "Traceback" not in body["detail"]
    return body


def process_uri(client: TestClient, uri: str, **form: str) -> Any:
    return client.post("/process", data={"uri": uri, **form})


# --- S3 input ----------------------------------------------------------------------------------


def test_process_by_uri_equals_process_by_upload(tmp_path: Path, moto_url: str, s3: Any) -> None:
    data = speech_like(1)
    uri = put_input(s3, data)
    options = '{"features": {"names": ["log_mel", "mfcc", "energy"]}}'
    with TestClient(create_app(make_settings(tmp_path / "a", moto_url))) as client:
        by_uri = process_uri(client, uri, options=options)
    with TestClient(create_app(make_settings(tmp_path / "b", moto_url))) as client:
        by_upload = client.post(
            "/process", files={"file": ("take.wav", data)}, data={"options": options}
        )
    assert by_uri.status_code == 200, by_uri.text[:500]
    assert by_upload.status_code == 200
    a, b = by_uri.json(), by_upload.json()
    assert (a["cached"], b["cached"]) == (False, False)
    assert a["id"] == b["id"] and a["content_sha256"] == b["content_sha256"]
    assert a["features"] == b["features"]
    assert a["output"] == b["output"]


def test_uri_as_a_json_body_on_process_and_jobs(tmp_path: Path, moto_url: str, s3: Any) -> None:
    data = speech_like(7)
    uri = put_input(s3, data)
    options = {"features": {"names": ["mfcc"]}}
    with TestClient(create_app(make_settings(tmp_path, moto_url))) as client:
        by_form = process_uri(client, uri, options=json.dumps(options))
        by_json = client.post("/process", json={"uri": uri, "options": options})
        assert by_json.status_code == 200, by_json.text[:500]
        assert by_json.json()["id"] == by_form.json()["id"]
        assert by_json.json()["features"] == by_form.json()["features"]
        job = client.post("/jobs", json={"uri": uri, "options": options})
        assert job.status_code == 202, job.text[:500]
        deadline = time.monotonic() + 60
        state = client.get(job.json()["status_url"]).json()
        while state["status"] not in ("done", "failed") and time.monotonic() < deadline:
            time.sleep(0.05)
            state = client.get(job.json()["status_url"]).json()
        assert state["status"] == "done" and state["result_id"] == by_form.json()["id"]
        for bad in ({"uri": 5}, {"uri": uri, "file": "x"}, ["s3://a/b"]):
            assert_problem(client.post("/process", json=bad), 400, "invalid_request")
        assert_problem(client.post("/jobs", json={"uri": "http://x/y"}), 400, "invalid_uri")
        broken = client.post(
            "/process", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert_problem(broken, 400, "invalid_request")


def test_bucket_not_in_the_allow_list_is_403(
    tmp_path: Path, moto_url: str, s3: Any, proxy: FaultProxy
) -> None:
    uri = put_input(s3, speech_like(2), bucket=OTHER_BUCKET)
    with TestClient(create_app(make_settings(tmp_path, proxy.url))) as client:
        body = assert_problem(process_uri(client, uri), 403, "bucket_not_allowed")
        assert INPUT_BUCKET in body["detail"]
    no_s3_input = make_settings(tmp_path, proxy.url, s3_allowed_buckets="")
    with TestClient(create_app(no_s3_input)) as client:
        allowed_elsewhere = put_input(s3, speech_like(2))
        body = assert_problem(process_uri(client, allowed_elsewhere), 403, "bucket_not_allowed")
        assert "S3_ALLOWED_BUCKETS is empty" in body["detail"]
    assert proxy.requests == []  # refused before any S3 request


@pytest.mark.parametrize(
    "uri",
    [
        pytest.param(f"s3://{INPUT_BUCKET}/../{OTHER_BUCKET}/a.wav", id="dotdot-first"),
        pytest.param(f"s3://{INPUT_BUCKET}/a/../../b.wav", id="dotdot-inner"),
        pytest.param(f"s3://{INPUT_BUCKET}/a/..", id="dotdot-last"),
        pytest.param(f"s3://{INPUT_BUCKET}/./a.wav", id="dot"),
        pytest.param(f"s3://{INPUT_BUCKET}/%2e%2e/a.wav", id="percent-encoded-dotdot"),
        pytest.param(f"s3://{INPUT_BUCKET}/a\\..\\b.wav", id="backslashes"),
        pytest.param(f"s3://{INPUT_BUCKET}//a.wav", id="empty-segment"),
        pytest.param(f"s3://{INPUT_BUCKET}/a/", id="trailing-slash"),
        pytest.param(f"s3://{INPUT_BUCKET}/", id="empty-key"),
        pytest.param(f"s3://{INPUT_BUCKET}", id="no-key"),
        pytest.param(f"http://{INPUT_BUCKET}/a.wav", id="http-scheme"),
        pytest.param(f"https://{INPUT_BUCKET}.s3.amazonaws.com/a.wav", id="https-scheme"),
        pytest.param("file:///etc/passwd", id="file-scheme"),
        pytest.param(f"S3://{INPUT_BUCKET}/a.wav", id="uppercase-scheme"),
        pytest.param(f"s3:/{INPUT_BUCKET}/a.wav", id="one-slash"),
        pytest.param(f"/{INPUT_BUCKET}/a.wav", id="no-scheme"),
        pytest.param("s3://Audio_In/a.wav", id="bucket-uppercase-underscore"),
        pytest.param("s3://ab/a.wav", id="bucket-too-short"),
        pytest.param(f"s3://{'b' * 64}/a.wav", id="bucket-too-long"),
        pytest.param("s3://-audio/a.wav", id="bucket-leading-hyphen"),
        pytest.param("s3://audio..in/a.wav", id="bucket-double-dot"),
        pytest.param("s3://127.0.0.1/a.wav", id="bucket-ip-address"),
        pytest.param(f"s3://key:secret@{INPUT_BUCKET}/a.wav", id="credentials"),
        pytest.param(f"s3://{INPUT_BUCKET}:9000/a.wav", id="port"),
        pytest.param(f"s3://{INPUT_BUCKET}/a.wav?versionId=1", id="query"),
        pytest.param(f"s3://{INPUT_BUCKET}/a.wav#part", id="fragment"),
        pytest.param(f"s3://{INPUT_BUCKET}/a\nb.wav", id="control-character"),
        pytest.param(f" s3://{INPUT_BUCKET}/a.wav", id="leading-space"),
        pytest.param(f"s3://{INPUT_BUCKET}/{'k' * 1100}", id="too-long"),
    ],
)
def test_malformed_uris_are_400(uri: str, guarded: tuple[TestClient, FaultProxy]) -> None:
    client, proxy = guarded
    proxy.requests.clear()
    body = assert_problem(process_uri(client, uri), 400, "invalid_uri")
    assert "s3://bucket/path/to/key" in body["detail"]
    assert proxy.requests == []  # nothing was asked of S3


def test_file_and_uri_together_or_neither_is_400(tmp_path: Path, moto_url: str, s3: Any) -> None:
    uri = put_input(s3, speech_like(3))
    with TestClient(create_app(make_settings(tmp_path, moto_url))) as client:
        both = client.post("/process", files={"file": ("a.wav", speech_like(3))}, data={"uri": uri})
        assert "both" in assert_problem(both, 400, "invalid_request")["detail"]
        neither = client.post("/process", data={"options": "{}"})
        assert "neither" in assert_problem(neither, 400, "invalid_request")["detail"]


def test_missing_object_or_bucket_is_404(tmp_path: Path, moto_url: str) -> None:
    settings = make_settings(tmp_path, moto_url, s3_allowed_buckets=f"{INPUT_BUCKET},never-made")
    with TestClient(create_app(settings)) as client:
        missing_key = f"s3://{INPUT_BUCKET}/no/such/{uuid.uuid4().hex}.wav"
        body = assert_problem(process_uri(client, missing_key), 404, "object_not_found")
        assert missing_key in body["detail"]
        assert_problem(process_uri(client, "s3://never-made/a.wav"), 404, "object_not_found")


def test_empty_object_is_400(tmp_path: Path, moto_url: str, s3: Any) -> None:
    uri = put_input(s3, b"")
    with TestClient(create_app(make_settings(tmp_path, moto_url))) as client:
        assert_problem(process_uri(client, uri), 400, "empty_input")


def test_object_over_the_limit_is_refused_before_download(
    tmp_path: Path, s3: Any, proxy: FaultProxy
) -> None:
    limit_mb = 0.05  # 52 428 bytes
    uri = put_input(s3, speech_like(4, seconds=2.0))  # 64 044 bytes
    settings = make_settings(tmp_path, proxy.url, max_upload_mb=limit_mb)
    with TestClient(create_app(settings)) as client:
        body = assert_problem(process_uri(client, uri), 413, "object_too_large")
    assert body["size_bytes"] == 64_044 and "not downloaded" in body["detail"]
    # On the wire: one HEAD, no GET.
    assert proxy.methods() == ["HEAD"]


def test_object_that_grows_after_the_head_is_not_read_past_the_limit(
    tmp_path: Path, s3: Any, proxy: FaultProxy
) -> None:
    uri = put_input(s3, speech_like(4, seconds=2.0))  # 64 044 bytes
    proxy.head_length = 1000  # as if the object were replaced between HEAD and GET
    settings = make_settings(tmp_path, proxy.url, max_upload_mb=0.05)
    with TestClient(create_app(settings)) as client:
        body = assert_problem(process_uri(client, uri), 413, "object_too_large")
    assert "download was stopped" in body["detail"]
    assert proxy.methods() == ["HEAD", "GET"]  # not retried


def test_transient_failures_are_retried_with_backoff(
    tmp_path: Path, s3: Any, proxy: FaultProxy
) -> None:
    data = speech_like(5)
    uri = put_input(s3, data)
    proxy.faults = [503, "drop"]  # the HEAD is throttled, then its connection dropped
    retries_before = metric("audioproc_s3_retries_total", op="head")
    with TestClient(create_app(make_settings(tmp_path, proxy.url))) as client:
        response = process_uri(client, uri)
        assert response.status_code == 200, response.text[:500]
        upload = client.post("/process", files={"file": ("a.wav", data)}).json()
    assert proxy.methods() == ["HEAD", "HEAD", "HEAD", "GET"]
    assert metric("audioproc_s3_retries_total", op="head") - retries_before == 2
    assert response.json()["id"] == upload["id"] and upload["cached"] is True


def test_persistent_5xx_becomes_502_after_the_configured_attempts(
    tmp_path: Path, s3: Any, proxy: FaultProxy
) -> None:
    uri = put_input(s3, speech_like(6))
    proxy.always["HEAD"] = 500
    errors_before = metric("audioproc_s3_errors_total", op="head")
    settings = make_settings(tmp_path, proxy.url, s3_max_attempts=4)
    with TestClient(create_app(settings)) as client:
        body = assert_problem(process_uri(client, uri), 502, "s3_bad_gateway")
    assert proxy.methods() == ["HEAD"] * 4
    assert "HTTP 500" in body["detail"] and "4 attempt(s)" in body["detail"]
    assert metric("audioproc_s3_errors_total", op="head") - errors_before == 1


def test_throttling_that_persists_becomes_503(tmp_path: Path, s3: Any, proxy: FaultProxy) -> None:
    uri = put_input(s3, speech_like(7))
    proxy.always["GET"] = 503
    with TestClient(create_app(make_settings(tmp_path, proxy.url))) as client:
        body = assert_problem(process_uri(client, uri), 503, "s3_unavailable")
    assert proxy.methods() == ["HEAD", "GET", "GET", "GET"]
    assert "SlowDown" in body["detail"]


def test_unreachable_endpoint_becomes_503_quickly(tmp_path: Path, aws_env: None) -> None:
    # A bound socket that never listens: every connection is refused at once.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{closed.getsockname()[1]}"
        retries_before = metric("audioproc_s3_retries_total", op="head")
        settings = make_settings(tmp_path, endpoint, s3_max_attempts=3, s3_retry_base_s=0.05)
        with TestClient(create_app(settings)) as client:
            started = time.perf_counter()
            response = process_uri(client, f"s3://{INPUT_BUCKET}/a.wav")
            elapsed = time.perf_counter() - started
    body = assert_problem(response, 503, "s3_unavailable")
    assert "connection failed" in body["detail"] and "3 attempt(s)" in body["detail"]
    assert endpoint not in body["detail"]  # the internal endpoint is not disclosed
    assert metric("audioproc_s3_retries_total", op="head") - retries_before == 2
    # Two backoffs of at most 0.05 and 0.1 s, and refused connections.
    assert elapsed < 1.5, elapsed


# --- Result storage ----------------------------------------------------------------------------


def list_keys(s3: Any, prefix: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=RESULTS_BUCKET, Prefix=prefix)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


def samples(wav: bytes) -> np.ndarray:
    """Decoded samples (float WAV bytes differ by the PEAK chunk's write time)."""
    data, _ = sf.read(io.BytesIO(wav), dtype="float32", always_2d=True)
    return data


def flush_cache(client: TestClient) -> None:
    client.app.state.results.cache._entries.clear()  # type: ignore[attr-defined]


def test_s3_storage_layout_fallback_and_delete(tmp_path: Path, moto_url: str, s3: Any) -> None:
    prefix = f"t-{uuid.uuid4().hex[:8]}/"
    settings = make_settings(
        tmp_path, moto_url, storage="s3", s3_bucket=RESULTS_BUCKET, s3_prefix=prefix
    )
    data = speech_like(8)
    with TestClient(create_app(settings)) as client:
        first = client.post("/process", files={"file": ("a.wav", data)}).json()
        rid = first["id"]
        base = f"{prefix}results/{rid[:2]}/{rid}/"
        assert list_keys(s3, prefix) == sorted(base + name for name in RESULT_OBJECTS)
        manifest = json.loads(
            s3.get_object(Bucket=RESULTS_BUCKET, Key=base + "manifest.json")["Body"].read()
        )
        assert manifest["id"] == rid and manifest["features"].keys() == first["features"].keys()
        stored_wav = s3.get_object(Bucket=RESULTS_BUCKET, Key=base + "audio.wav")["Body"].read()
        assert sf.info(io.BytesIO(stored_wav)).subtype == "FLOAT"
        audio_before = client.get(f"/features/{rid}/audio", params={"encoding": "float32"})
        np.testing.assert_array_equal(samples(audio_before.content), samples(stored_wav))

        flush_cache(client)  # from here on only S3 has the result
        again = client.get(f"/features/{rid}")
        assert again.status_code == 200
        assert again.json()["features"] == first["features"]
        npz = np.load(io.BytesIO(client.get(f"/features/{rid}", params={"format": "npz"}).content))
        assert npz["mfcc"].shape == tuple(first["features"]["mfcc"]["shape"])
        flush_cache(client)
        audio_after = client.get(f"/features/{rid}/audio", params={"encoding": "float32"})
        assert audio_after.status_code == 200
        np.testing.assert_array_equal(samples(audio_after.content), samples(audio_before.content))

        flush_cache(client)
        storage_hits = metric("audioproc_cache_lookups_total", result="storage")
        repeat = client.post("/process", files={"file": ("a.wav", data)}).json()
        assert repeat["cached"] is True and repeat["features"] == first["features"]
        assert metric("audioproc_cache_lookups_total", result="storage") - storage_hits == 1
        assert client.get("/readyz").json()["checks"]["storage"] == "s3: ok"

        assert client.delete(f"/features/{rid}").status_code == 204
        assert list_keys(s3, prefix) == []
        for path in (f"/features/{rid}", f"/features/{rid}/audio"):
            assert_problem(client.get(path), 404, "not_found")


def test_s3_storage_write_failure_is_counted_and_the_response_succeeds(
    tmp_path: Path, s3: Any, proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    prefix = f"t-{uuid.uuid4().hex[:8]}/"
    proxy.always["PUT"] = 500
    settings = make_settings(
        tmp_path, proxy.url, storage="s3", s3_bucket=RESULTS_BUCKET, s3_prefix=prefix
    )
    errors_before = metric("audioproc_storage_errors_total", backend="s3", op="put")
    with (
        caplog.at_level(logging.ERROR, logger="audioproc.results"),
        TestClient(create_app(settings)) as client,
    ):
        response = client.post("/process", files={"file": ("a.wav", speech_like(9))})
        assert response.status_code == 200
        rid = response.json()["id"]
        assert client.get(f"/features/{rid}").status_code == 200  # the cache has it
    assert metric("audioproc_storage_errors_total", backend="s3", op="put") - errors_before == 1
    assert any(rid in r.getMessage() and "not stored" in r.getMessage() for r in caplog.records)
    # Audio and features were attempted (3 times each), the manifest never: nothing is stored.
    assert proxy.methods().count("PUT") == 6
    assert list_keys(s3, prefix) == []


def test_s3_storage_down_degrades_readiness(tmp_path: Path, aws_env: None) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{closed.getsockname()[1]}"
        settings = make_settings(tmp_path, endpoint, storage="s3", s3_bucket=RESULTS_BUCKET)
        with TestClient(create_app(settings)) as client:
            ready = client.get("/readyz")
            assert ready.status_code == 200 and ready.json()["status"] == "degraded"
            assert "storage" in ready.json()["down"]
            assert ready.json()["checks"]["storage"].startswith("s3: down")
            assert (
                client.post("/process", files={"file": ("a.wav", speech_like(10))}).status_code
                == 200
            )


def test_local_storage_writes_the_same_layout_atomically(tmp_path: Path) -> None:
    settings = Settings(storage_dir=tmp_path / "store", warmup=False, redis_url=None)
    with TestClient(create_app(settings)) as client:
        first = client.post("/process", files={"file": ("a.wav", speech_like(11))}).json()
        rid = first["id"]
        directory = tmp_path / "store" / "results" / rid[:2] / rid
        files = sorted(p.relative_to(tmp_path / "store").as_posix() for p in directory.rglob("*"))
        assert files == sorted(f"results/{rid[:2]}/{rid}/{name}" for name in RESULT_OBJECTS)
        assert not list((tmp_path / "store").rglob(".tmp-*"))
        manifest = json.loads((directory / "manifest.json").read_bytes())
        assert manifest["id"] == rid
        audio_before = client.get(f"/features/{rid}/audio", params={"encoding": "float32"})
        flush_cache(client)
        assert client.get(f"/features/{rid}").json()["features"] == first["features"]
        flush_cache(client)
        audio_after = client.get(f"/features/{rid}/audio", params={"encoding": "float32"})
        np.testing.assert_array_equal(samples(audio_after.content), samples(audio_before.content))
        assert client.delete(f"/features/{rid}").status_code == 204
        assert not directory.exists()


def test_local_write_failing_at_the_manifest_leaves_no_result_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import app.services.storage as storage

    real_replace = storage.os.replace

    def failing_replace(src: str, dst: Any) -> None:
        if str(dst).endswith("manifest.json"):
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(storage.os, "replace", failing_replace)
    settings = Settings(storage_dir=tmp_path / "store", warmup=False, redis_url=None)
    errors_before = metric("audioproc_storage_errors_total", backend="local", op="put")
    with TestClient(create_app(settings)) as client:
        response = client.post("/process", files={"file": ("a.wav", speech_like(12))})
        assert response.status_code == 200
        rid = response.json()["id"]
        flush_cache(client)
        assert_problem(client.get(f"/features/{rid}"), 404, "not_found")
    assert metric("audioproc_storage_errors_total", backend="local", op="put") - errors_before == 1
    assert not list((tmp_path / "store").rglob(".tmp-*"))
    assert not list((tmp_path / "store").rglob("manifest.json"))
