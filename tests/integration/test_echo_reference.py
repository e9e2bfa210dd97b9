"""POST /process with a second uploaded file, ``reference``: the far-end signal whose echo the
recording holds, cancelled against a known echo path."""

from __future__ import annotations

import io
import json

import librosa
import numpy as np
import pytest
import scipy.signal as ss
import soundfile as sf
from fastapi.testclient import TestClient

from scripts.evalkit import si_sdr
from tests.conftest import shared_file, wav_bytes
from tests.integration.jobs_support import wait_for_job

RATE = 16_000
ECHO_ONLY = json.dumps(
    {"denoise": {"method": "off", "wind": False, "declick": False, "echo": True},
     "loudness": {"mode": "off"}}
)  # fmt: skip


def clip(name: str, seconds: float) -> np.ndarray:
    y, sr = sf.read(shared_file(f"speech/{name}.ogg"), dtype="float32")
    return librosa.resample(y, orig_sr=sr, target_sr=RATE)[: int(seconds * RATE)]


@pytest.fixture(scope="module")
def scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(near-end speech, far-end speech, microphone = near + far through a known echo path:
    40 ms delay, four taps, a short decaying tail); 12 s at 16 kHz."""
    far = clip("198-209-0000", 12.0)
    near = np.zeros_like(far)
    talk = clip("5703-47212-0000", 4.0) * 0.5
    near[7 * RATE : 7 * RATE + len(talk)] = talk  # the near end talks after the filter converged
    path = np.zeros(int(0.2 * RATE))
    delay = int(0.040 * RATE)
    path[[delay, delay + 7, delay + 23, delay + 51]] = 0.6, -0.3, 0.2, -0.1
    tail = np.arange(len(path) - delay) / RATE
    path[delay:] += (
        0.05 * np.random.default_rng(0).standard_normal(len(tail)) * np.exp(-tail / 0.03)
    )
    mic = near + ss.fftconvolve(far, path)[: len(far)]
    return near, far, mic.astype(np.float32)


def flac_44k(y: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, librosa.resample(y, orig_sr=RATE, target_sr=44_100), 44_100, format="FLAC")
    return buffer.getvalue()


def test_the_uploaded_reference_cancels_the_echo(
    client: TestClient, scene: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> None:
    near, far, mic = scene
    files = {"file": ("mic.wav", wav_bytes(mic, RATE, "FLOAT")),
             "reference": ("far.flac", flac_44k(far))}  # fmt: skip
    answer = client.post("/process", files=files, data={"options": ECHO_ONLY})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    echo = body["quality"]["cleaning"]["echo"]
    assert echo["erle_db"] > 0 and abs(echo["delay_ms"] - 40) < 5  # the known path's delay
    audio = client.get(f"/features/{body['id']}/audio", params={"encoding": "float32"})
    cleaned, _ = sf.read(io.BytesIO(audio.content), dtype="float32")
    talk = slice(7 * RATE, 11 * RATE)
    before = si_sdr(reference=near[talk], estimate=mic[talk])
    after = si_sdr(reference=near[talk], estimate=cleaned[talk])
    assert after - before > 10, (before, after)
    echo_alone = slice(3 * RATE, 7 * RATE)  # no near-end speech: what is left is echo
    residual = 10 * np.log10(np.mean(cleaned[echo_alone] ** 2) / np.mean(mic[echo_alone] ** 2))
    assert residual < -20

    assert (
        body["reference_sha256"]
        and body["id"]
        != client.post(
            "/process", files={"file": files["file"]}, data={"options": ECHO_ONLY}
        ).json()["id"]
    )  # without the reference: another result (late reflections only)
    again = client.post("/process", files=files, data={"options": ECHO_ONLY}).json()
    assert again["cached"] and again["id"] == body["id"]


def test_a_reference_needs_echo_on_and_must_be_audio(
    client: TestClient, scene: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> None:
    _, far, mic = scene
    mic_file = ("mic.wav", wav_bytes(mic[: 2 * RATE], RATE))
    far_file = ("far.wav", wav_bytes(far[: 2 * RATE], RATE))
    off = client.post("/process", files={"file": mic_file, "reference": far_file})
    assert off.status_code == 422 and off.json()["code"] == "invalid_options"
    both = json.dumps({"denoise": {"echo": True, "echo_reference_channel": 1}})
    twice = client.post("/process", files={"file": mic_file, "reference": far_file},
                        data={"options": both})  # fmt: skip
    assert twice.status_code == 422 and twice.json()["code"] == "invalid_options"
    garbage = client.post(
        "/process",
        files={"file": mic_file, "reference": ("far.bin", b"not audio at all" * 10)},
        data={"options": ECHO_ONLY},
    )
    assert garbage.status_code == 415
    assert garbage.json()["detail"].startswith("The `reference` file:")
    empty = client.post("/process", files={"file": mic_file, "reference": ("far.wav", b"")},
                        data={"options": ECHO_ONLY})  # fmt: skip
    assert empty.status_code == 400 and empty.json()["code"] == "empty_input"


def test_a_job_with_a_reference_gives_the_same_result(
    client: TestClient, scene: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> None:
    """POST /jobs stages the reference beside the input; the worker's result is the one
    POST /process makes from the same two files, and both staged uploads are gone after."""
    _, far, mic = scene
    files = {"file": ("mic.wav", wav_bytes(mic[: 4 * RATE], RATE)),
             "reference": ("far.wav", wav_bytes(far[: 4 * RATE], RATE))}  # fmt: skip
    job = client.post("/jobs", files=files, data={"options": ECHO_ONLY})
    assert job.status_code == 202, job.text
    state = wait_for_job(client, job.json()["job_id"])
    assert state["status"] == "done", state
    direct = client.post("/process", files=files, data={"options": ECHO_ONLY}).json()
    assert direct["id"] == state["result_id"] and direct["cached"]
    assert (
        "echo" in direct["quality"]["cleaning"]
        and "erle_db" in direct["quality"]["cleaning"]["echo"]
    )
    uploads = client.app.state.settings.storage_dir / "uploads"  # type: ignore[attr-defined]
    assert not [p for p in uploads.glob("*") if not p.name.startswith(".")]
