"""The HTTP API end to end: every container format, JSON and NPZ, stored results, the cache."""

from __future__ import annotations

import io
import json

import numpy as np
import pyloudnorm
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from app.cli import main as cli_main
from tests.conftest import ROOT, shared_file, tone, wav_bytes
from tests.encode import encode


@pytest.fixture(scope="module")
def speech() -> tuple[np.ndarray, int]:
    y, sr = sf.read(shared_file("speech/5703-47212-0000.ogg"), dtype="float32")
    return y, sr


def soundfile_bytes(y: np.ndarray, sr: int, fmt: str, subtype: str) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, y, sr, format=fmt, subtype=subtype)
    return buffer.getvalue()


CONTAINERS = {
    "wav-pcm16-44k-stereo": lambda y, sr: wav_bytes(np.stack([y, 0.5 * y], axis=1), sr, "PCM_16"),
    "wav-pcm8": lambda y, sr: soundfile_bytes(y, sr, "WAV", "PCM_U8"),
    "wav-pcm24": lambda y, sr: soundfile_bytes(y, sr, "WAV", "PCM_24"),
    "wav-pcm32": lambda y, sr: soundfile_bytes(y, sr, "WAV", "PCM_32"),
    "wav-float": lambda y, sr: soundfile_bytes(y, sr, "WAV", "FLOAT"),
    "flac": lambda y, sr: soundfile_bytes(y, sr, "FLAC", "PCM_16"),
    "ogg-vorbis": lambda y, sr: soundfile_bytes(y, sr, "OGG", "VORBIS"),
    "mp3": lambda y, sr: encode(y, sr, "mp3"),
    "m4a-aac": lambda y, sr: encode(y, sr, "m4a"),
    "webm-opus": lambda y, sr: encode(y, sr, "webm"),
    "ogg-opus": lambda y, sr: encode(y, sr, "opus"),
}
EXPECTED_FORMAT = {
    "wav-pcm16-44k-stereo": "wav",
    "wav-pcm8": "wav",
    "wav-pcm24": "wav",
    "wav-pcm32": "wav",
    "wav-float": "wav",
    "flac": "flac",
    "ogg-vorbis": "ogg",
    "mp3": "mp3",
    "m4a-aac": "m4a",
    "webm-opus": "webm",
    "ogg-opus": "opus",
}


@pytest.mark.parametrize("container", list(CONTAINERS))
def test_every_format_round_trips_to_16k_mono_at_target_loudness(
    client: TestClient, speech: tuple[np.ndarray, int], container: str
) -> None:
    y, sr = speech
    if container.startswith("wav-pcm16-44k"):
        import librosa

        y, sr = librosa.resample(y, orig_sr=sr, target_sr=44100), 44100
    response = client.post("/process", files={"file": ("upload.bin", CONTAINERS[container](y, sr))})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["input"]["format"] == EXPECTED_FORMAT[container]
    assert body["output"]["sample_rate"] == 16000 and body["output"]["channels"] == 1
    assert abs(body["output"]["duration_s"] - len(y) / sr) <= 0.010
    assert body["output"]["loudness_lufs"] == pytest.approx(-23.0, abs=0.01)
    audio = client.get(f"/features/{body['id']}/audio", params={"encoding": "float32"})
    samples, rate = sf.read(io.BytesIO(audio.content), dtype="float64")
    assert rate == 16000 and abs(len(samples) / rate - len(y) / sr) <= 0.010
    assert pyloudnorm.Meter(16000).integrated_loudness(samples) == pytest.approx(-23.0, abs=0.5)
    assert np.abs(samples).max() <= 10 ** (-1 / 20) + 1e-6


def test_json_result_follows_the_contract(client: TestClient) -> None:
    data = wav_bytes(tone(220, 2.0, 48000, 0.1), 48000)
    options = {
        "features": {
            "names": ["log_mel", "mfcc", "energy", "zcr", "spectrogram"],
            "deltas": 2,
            "aggregate": True,
            "normalize": "cmvn",
        }
    }
    body = client.post(
        "/process", files={"file": ("a.wav", data)}, data={"options": json.dumps(options)}
    ).json()
    assert set(body) >= {
        "id",
        "content_sha256",
        "cached",
        "input",
        "output",
        "quality",
        "features",
        "steps",
        "warnings",
    }
    assert [s["name"] for s in body["steps"]] == [
        "decode",
        "normalize",
        "clean",
        "segment",
        "features",
    ]
    mfcc = body["features"]["mfcc"]
    assert mfcc["shape"] == [39, 201] and len(mfcc["data"]) == 39 and len(mfcc["data"][0]) == 201
    assert mfcc["frame_rate_hz"] == 100.0
    assert set(mfcc["stats"]) == {"mean", "std", "min", "max"}
    assert np.allclose(mfcc["stats"]["mean"], 0, atol=1e-4)  # cmvn
    assert body["features"]["energy"]["rows"] == ["rms", "log_energy", "loudness_db"]
    assert body["features"]["spectrogram"]["shape"] == [257, 201]


def test_npz_result_and_stored_reads(client: TestClient) -> None:
    data = wav_bytes(tone(220, 1.0, 16000, 0.1), 16000)
    response = client.post("/process", params={"format": "npz"}, files={"file": ("a.wav", data)})
    assert response.headers["content-type"] == "application/x-npz"
    npz = np.load(io.BytesIO(response.content))
    meta = json.loads(npz["meta"].tobytes())
    assert set(npz.files) == {"log_mel", "mfcc", "pitch_hz", "voicing", "energy", "meta"}
    assert npz["log_mel"].shape == (80, 101) and npz["log_mel"].dtype == np.float32
    stored = client.get(f"/features/{meta['id']}", params={"names": "mfcc", "format": "npz"})
    again = np.load(io.BytesIO(stored.content))
    assert set(again.files) == {"mfcc", "meta"}
    np.testing.assert_array_equal(again["mfcc"], npz["mfcc"])
    missing = client.get(f"/features/{meta['id']}", params={"names": "formants"})
    assert missing.status_code == 400 and "formants" in missing.json()["detail"]


def test_repeat_is_cached_and_options_change_the_id(client: TestClient) -> None:
    data = wav_bytes(tone(330, 1.0, 16000, 0.1), 16000)
    first = client.post("/process", files={"file": ("a.wav", data)}).json()
    second = client.post("/process", files={"file": ("b.wav", data)}).json()
    assert (first["cached"], second["cached"]) == (False, True)
    assert first["id"] == second["id"] and first["features"] == second["features"]
    other = client.post(
        "/process",
        files={"file": ("a.wav", data)},
        data={"options": '{"features": {"n_mels": 40}}'},
    ).json()
    assert other["id"] != first["id"] and other["cached"] is False


def test_results_outlive_the_cache_in_storage(client: TestClient) -> None:
    data = wav_bytes(tone(440, 1.0, 16000, 0.1), 16000)
    result_id = client.post("/process", files={"file": ("a.wav", data)}).json()["id"]
    client.app.state.results.cache._entries.clear()  # type: ignore[attr-defined]
    assert client.get(f"/features/{result_id}").status_code == 200


def test_delete_erases_everywhere(client: TestClient) -> None:
    data = wav_bytes(tone(550, 1.0, 16000, 0.1), 16000)
    result_id = client.post("/process", files={"file": ("a.wav", data)}).json()["id"]
    assert client.delete(f"/features/{result_id}").status_code == 204
    for path in (f"/features/{result_id}", f"/features/{result_id}/audio"):
        response = client.get(path)
        assert response.status_code == 404
        assert response.headers["content-type"].startswith("application/problem+json")


def test_silent_input_is_reported_not_amplified(client: TestClient) -> None:
    body = client.post("/process", files={"file": ("s.wav", wav_bytes(np.zeros(16000), 16000))})
    result = body.json()
    assert result["quality"]["silent"] is True
    assert result["output"]["gain_db"] == 0.0
    assert any("silent" in w for w in result["warnings"])


def test_peak_ceiling_wins_over_the_loudness_target(client: TestClient) -> None:
    # A sparse click train: high peak, low loudness; the gain must stop at the ceiling.
    x = np.zeros(32000, dtype=np.float32)
    x[::4000] = 0.5
    x += 0.001 * np.random.default_rng(0).standard_normal(32000).astype(np.float32)
    result = client.post("/process", files={"file": ("c.wav", wav_bytes(x, 16000, "FLOAT"))}).json()
    assert result["output"]["peak_dbfs"] == pytest.approx(-1.0, abs=0.01)
    assert result["output"]["loudness_lufs"] < -23.0
    assert any("peak ceiling" in w for w in result["warnings"])


@pytest.mark.parametrize(
    ("mode", "check"),
    [
        ("peak", lambda out: out["peak_dbfs"] == pytest.approx(-1.0, abs=0.01)),
        ("off", lambda out: out["gain_db"] == 0.0),
    ],
)
def test_loudness_modes(client: TestClient, mode: str, check: object) -> None:
    data = wav_bytes(tone(440, 1.0, 16000, 0.1), 16000)
    result = client.post(
        "/process",
        files={"file": ("a.wav", data)},
        data={"options": json.dumps({"loudness": {"mode": mode}})},
    ).json()
    assert check(result["output"])  # type: ignore[operator]


def test_rms_mode_reaches_its_dbfs_target(client: TestClient) -> None:
    data = wav_bytes(tone(440, 1.0, 16000, 0.1), 16000)
    options = {"loudness": {"mode": "rms", "target": -20.0}}
    result = client.post(
        "/process", files={"file": ("a.wav", data)}, data={"options": json.dumps(options)}
    ).json()
    audio = client.get(f"/features/{result['id']}/audio", params={"encoding": "float32"})
    samples, _ = sf.read(io.BytesIO(audio.content))
    assert 20 * np.log10(np.sqrt(np.mean(samples**2))) == pytest.approx(-20.0, abs=0.05)


def test_channel_selection(client: TestClient) -> None:
    left, right = tone(300, 1.0, 16000, 0.3), tone(900, 1.0, 16000, 0.3)
    data = wav_bytes(np.stack([left, right], axis=1), 16000)
    kept = client.post(
        "/process",
        files={"file": ("s.wav", data)},
        data={"options": '{"channels": "keep", "features": {"names": ["zcr"]}}'},
    )
    assert kept.json()["output"]["channels"] == 2
    assert kept.json()["features"]["zcr"]["shape"] == [2, 1, 101]
    picked = client.post(
        "/process",
        files={"file": ("s.wav", data)},
        data={"options": '{"channels": 1, "features": {"names": ["zcr"]}}'},
    )
    zcr = np.array(picked.json()["features"]["zcr"]["data"])[0, 5:-5]
    assert np.allclose(zcr, 2 * 900 / 16000, atol=0.003)
    missing = client.post(
        "/process", files={"file": ("s.wav", data)}, data={"options": '{"channels": 5}'}
    )
    assert missing.status_code == 422 and "channel 5" in missing.json()["detail"]


def test_health_ready_metrics_docs(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ok" and ready["checks"]["cache"] == "memory: ok"
    client.post("/process", files={"file": ("a.wav", wav_bytes(tone(200, 0.5, 16000), 16000))})
    metrics = client.get("/metrics").text
    assert 'audioproc_pipeline_step_seconds_count{step="features"}' in metrics
    assert "http_request_duration_seconds" in metrics
    assert client.get("/docs").status_code == 200


def test_openapi_export_matches_the_served_spec(client: TestClient) -> None:
    committed = json.loads((ROOT / "openapi" / "openapi.json").read_text())
    assert committed == client.get("/openapi.json").json(), (
        "openapi/openapi.json is stale: run `audioproc openapi`"
    )


def test_swagger_shows_every_option_with_a_description_and_example(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    for name in ("ProcessingOptions", "LoudnessOptions", "FeatureOptions"):
        for field, spec in schemas[name]["properties"].items():
            if "$ref" in spec or "allOf" in spec:
                continue
            assert spec.get("description"), f"{name}.{field} has no description"
            assert spec.get("examples"), f"{name}.{field} has no example"


def test_cli_process_writes_outputs_next_to_inputs(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    for i in range(2):
        (tmp_path / f"clip{i}.wav").write_bytes(wav_bytes(tone(200 + 100 * i, 0.5, 16000), 16000))
    files = [str(tmp_path / f"clip{i}.wav") for i in range(2)]
    assert cli_main(["process", *files, "--format", "json", "-q"]) == 0
    assert json.loads((tmp_path / "clip1.json").read_text())["output"]["sample_rate"] == 16000
    out = tmp_path / "out"
    assert cli_main(["process", *files, "-o", str(out), "--audio", "-q"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "clip0.npz",
        "clip0.processed.wav",
        "clip1.npz",
        "clip1.processed.wav",
    ]


def test_oversized_streamed_body_is_refused_while_it_streams(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from app.config import Settings
    from app.main import create_app

    def chunked_body():  # type: ignore[no-untyped-def]
        yield (
            b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
            b"Content-Type: application/octet-stream\r\n\r\n"
        )
        for _ in range(30):  # 3 MB against a 1 MiB + 1 MiB overhead limit
            yield b"0" * 100_000
        yield b"\r\n--b--\r\n"

    settings = Settings(storage_dir=tmp_path, warmup=False, max_upload_mb=1)
    with TestClient(create_app(settings)) as small:
        response = small.post(
            "/process",
            content=chunked_body(),
            headers={"content-type": "multipart/form-data; boundary=b"},
        )
        assert response.status_code == 413
        assert response.json()["code"] == "upload_too_large"
        assert small.get("/healthz").status_code == 200


def test_batch_equals_one_by_one(client: TestClient) -> None:
    rng = np.random.default_rng(5)
    clips = [
        wav_bytes(
            tone(150 + 40 * i, 0.4 + 0.37 * i, rate, 0.2)
            + 0.01 * rng.standard_normal(int((0.4 + 0.37 * i) * rate)).astype(np.float32),
            rate,
        )
        for i, rate in enumerate([16000, 44100, 22050, 48000])
    ]
    options = json.dumps(
        {
            "features": {
                "names": ["log_mel", "mfcc", "energy", "zcr"],
                "deltas": 2,
                "normalize": "cmvn",
                "aggregate": True,
            }
        }
    )
    files = [("files", (f"clip{i}.wav", data)) for i, data in enumerate(clips)]
    files.append(("files", ("broken.wav", b"RIFF....WAVEjunk")))
    batch = client.post("/process/batch", files=files, data={"options": options})
    assert batch.status_code == 200, batch.text
    entries = batch.json()["results"]
    assert [e["filename"] for e in entries] == [f"clip{i}.wav" for i in range(4)] + ["broken.wav"]
    assert entries[-1]["status"] == 422 and entries[-1]["problem"]["code"] == "corrupt_audio"
    for entry, data in zip(entries, clips, strict=False):
        assert entry["status"] == 200 and entry["result"]["cached"] is False
        client.app.state.results.cache._entries.clear()  # type: ignore[attr-defined]
        for path in client.app.state.results.storage.root.rglob("*.npz"):  # type: ignore[attr-defined]
            path.unlink()
        single = client.post(
            "/process", files={"file": ("x.wav", data)}, data={"options": options}
        ).json()
        assert single["cached"] is False and single["id"] == entry["result"]["id"]
        assert single["output"]["loudness_lufs"] == pytest.approx(
            entry["result"]["output"]["loudness_lufs"], abs=1e-3
        )
        for name, feature in single["features"].items():
            np.testing.assert_allclose(
                np.array(entry["result"]["features"][name]["data"], dtype=float),
                np.array(feature["data"], dtype=float),
                atol=2e-3,
                err_msg=name,
            )


def test_batch_limits(client: TestClient) -> None:
    empty = client.post("/process/batch", files=[("files", ("a.wav", b""))])
    assert empty.json()["results"][0]["problem"]["code"] == "empty_input"
    too_many = [("files", (f"{i}.wav", b"x")) for i in range(65)]
    response = client.post("/process/batch", files=too_many)
    assert response.status_code == 400 and response.json()["code"] == "invalid_request"


@pytest.mark.parametrize(
    "features",
    [
        {"normalize": "sliding_cmn", "cmn_window_s": 0.5},
        {
            "normalize": "global",
            "names": ["mfcc"],
            "global_stats": {"mfcc": {"mean": [0.0] * 13, "std": [2.0] * 13}},
        },
        {"aggregate": True, "functionals": ["median", "p95", "skewness", "slope"]},
    ],
)
def test_normalization_options_through_the_api(client: TestClient, features: dict) -> None:
    data = wav_bytes(tone(250, 1.0, 16000, 0.2), 16000)
    response = client.post(
        "/process",
        files={"file": ("a.wav", data)},
        data={"options": json.dumps({"features": features})},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    if "functionals" in features:
        assert list(body["features"]["mfcc"]["stats"]) == features["functionals"]
    if features.get("normalize") == "global":
        plain = client.post(
            "/process",
            files={"file": ("a.wav", data)},
            data={"options": '{"features": {"names": ["mfcc"]}}'},
        ).json()
        np.testing.assert_allclose(
            np.array(body["features"]["mfcc"]["data"]),
            np.array(plain["features"]["mfcc"]["data"]) / 2.0,
            rtol=1e-5,
        )


def test_global_stats_must_fit_the_feature(client: TestClient) -> None:
    options = {
        "features": {
            "normalize": "global",
            "names": ["mfcc"],
            "global_stats": {"mfcc": {"mean": [0.0] * 3, "std": [1.0] * 3}},
        }
    }
    response = client.post(
        "/process",
        files={"file": ("a.wav", wav_bytes(tone(250, 1.0, 16000), 16000))},
        data={"options": json.dumps(options)},
    )
    assert response.status_code == 422 and "13 rows" in response.json()["detail"]
    missing = client.post(
        "/process",
        files={"file": ("a.wav", b"x")},
        data={"options": '{"features": {"normalize": "global"}}'},
    )
    assert missing.status_code == 422 and "audioproc stats" in missing.json()["detail"]


def test_cli_stats_feed_global_normalization(tmp_path, client: TestClient) -> None:  # type: ignore[no-untyped-def]
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(3):
        (corpus / f"c{i}.wav").write_bytes(wav_bytes(tone(150 + 90 * i, 0.6, 16000, 0.2), 16000))
    (corpus / "notes.txt").write_text("not audio")
    out = tmp_path / "stats.json"
    assert (
        cli_main(
            [
                "stats",
                str(corpus),
                "-o",
                str(out),
                "-q",
                "--options",
                '{"features": {"names": ["mfcc", "energy"]}}',
            ]
        )
        == 0
    )
    stats = json.loads(out.read_text())
    assert set(stats) == {"mfcc", "energy"} and len(stats["mfcc"]["mean"]) == 13
    frames = [
        np.array(
            client.post(
                "/process",
                files={"file": ("a.wav", p.read_bytes())},
                data={"options": '{"features": {"names": ["mfcc"]}}'},
            ).json()["features"]["mfcc"]["data"]
        )
        for p in sorted(corpus.glob("*.wav"))
    ]
    pooled = np.concatenate(frames, axis=1)
    np.testing.assert_allclose(stats["mfcc"]["mean"], pooled.mean(1), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(stats["mfcc"]["std"], pooled.std(1), rtol=1e-4, atol=1e-3)
    options = {"features": {"names": ["mfcc"], "normalize": "global", "global_stats": stats}}
    response = client.post(
        "/process",
        files={"file": ("a.wav", (corpus / "c0.wav").read_bytes())},
        data={"options": json.dumps(options)},
    )
    assert response.status_code == 200


def _processed(client: TestClient, data: bytes, features: dict) -> tuple[dict, np.ndarray]:
    response = client.post(
        "/process",
        files={"file": ("a.wav", data)},
        data={"options": json.dumps({"features": features})},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    audio = client.get(f"/features/{body['id']}/audio", params={"encoding": "float32"})
    samples, _ = sf.read(io.BytesIO(audio.content), dtype="float32")
    return body, samples


@pytest.mark.parametrize("n_mels", [80, 128])
@pytest.mark.parametrize("pad", [False, True])
def test_whisper_preset_equals_whisper(
    client: TestClient, speech: tuple[np.ndarray, int], n_mels: int, pad: bool
) -> None:
    import torch
    import whisper.audio

    y, sr = speech
    body, samples = _processed(
        client, wav_bytes(y, sr), {"preset": "whisper", "n_mels": n_mels, "whisper_pad_30s": pad}
    )
    audio = torch.from_numpy(samples)
    if pad:
        audio = whisper.audio.pad_or_trim(audio)
    reference = whisper.audio.log_mel_spectrogram(audio, n_mels=n_mels).numpy()
    ours = np.array(body["features"]["log_mel"]["data"], dtype=np.float32)
    assert ours.shape == reference.shape == ((n_mels, 3000) if pad else ours.shape)
    assert np.abs(ours - reference).max() <= 1e-3


def test_kaldi_preset_equals_kaldi_native_fbank(
    client: TestClient, speech: tuple[np.ndarray, int]
) -> None:
    import kaldi_native_fbank as knf

    y, sr = speech
    body, samples = _processed(client, wav_bytes(y, sr), {"preset": "kaldi"})
    options = knf.FbankOptions()
    options.frame_opts.dither = 0.0
    options.frame_opts.samp_freq = 16000
    options.mel_opts.num_bins = 80
    fbank = knf.OnlineFbank(options)
    fbank.accept_waveform(16000, (samples * 32768).tolist())
    fbank.input_finished()
    reference = np.stack([fbank.get_frame(i) for i in range(fbank.num_frames_ready)], axis=1)
    ours = np.array(body["features"]["log_mel"]["data"], dtype=np.float32)
    assert ours.shape == reference.shape
    assert body["features"]["log_mel"]["frame_offset_s"] == pytest.approx(0.0125)
    # kaldi-native-fbank computes in float32: bins ~90 dB below a frame's peak carry its noise.
    loud = reference >= reference.max(axis=0, keepdims=True) - np.log(10**8)
    assert np.abs(ours - reference)[loud].max() <= 2e-3
    assert np.abs(ours - reference).max() <= 1e-2
    assert body["features"]["mfcc"]["shape"] == [13, reference.shape[1]]


def test_wav2vec2_preset_is_the_normalized_waveform(client: TestClient) -> None:
    data = wav_bytes(tone(200, 0.5, 16000, 0.3) + 0.05, 16000, "FLOAT")
    body, samples = _processed(client, data, {"preset": "wav2vec2"})
    waveform = np.array(body["features"]["waveform"]["data"])[0]
    # What transformers' Wav2Vec2FeatureExtractor(do_normalize=True) computes:
    expected = (samples - samples.mean()) / np.sqrt(samples.var() + 1e-7)
    np.testing.assert_allclose(waveform, expected, atol=1e-4)
    assert body["features"]["waveform"]["frame_rate_hz"] == 16000


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"target_sample_rate": 22050, "features": {"preset": "whisper"}}, "16000"),
        ({"features": {"preset": "whisper", "names": ["mfcc"]}}, "not mfcc"),
        ({"features": {"preset": "whisper", "n_mels": 64}}, "80 or 128"),
        ({"features": {"preset": "nope"}}, "preset"),
    ],
)
def test_preset_validation(client: TestClient, options: dict, message: str) -> None:
    response = client.post(
        "/process", files={"file": ("a.wav", b"x")}, data={"options": json.dumps(options)}
    )
    assert response.status_code == 422 and message in response.json()["detail"]


def test_spectral_temporal_and_frame_loudness(
    client: TestClient, speech: tuple[np.ndarray, int]
) -> None:
    y, sr = speech
    options = {"features": {"names": ["spectral", "temporal", "energy"], "aggregate": True}}
    body = client.post(
        "/process",
        files={"file": ("a.wav", wav_bytes(y, sr))},
        data={"options": json.dumps(options)},
    ).json()
    spectral, temporal = body["features"]["spectral"], body["features"]["temporal"]
    frames = body["features"]["energy"]["shape"][1]
    assert spectral["rows"][:3] == ["centroid_hz", "bandwidth_hz", "rolloff_hz"]
    assert spectral["shape"] == [len(spectral["rows"]), frames]
    assert temporal["rows"] == ["autocorr_peak", "envelope", "onset_strength"]
    assert 2.0 <= temporal["summary"]["speaking_rate_syllables_per_s"] <= 6.0
    centroid = np.array(spectral["data"][0], dtype=float)
    assert 300 < np.nanmedian(centroid) < 3000
    # Frame loudness of speech normalized to −23 LUFS: loud frames sit around the target.
    loudness = np.array(body["features"]["energy"]["data"][2], dtype=float)
    assert -30 < np.percentile(loudness, 90) < -10


def test_pitch_voice_quality_and_formants_against_praat(
    client: TestClient, speech: tuple[np.ndarray, int]
) -> None:
    import parselmouth

    y, sr = speech
    options = {"features": {"names": ["pitch", "voice_quality", "formants"], "unvoiced": "nan"}}
    body, samples = _processed(client, wav_bytes(y, sr), options["features"])
    f0 = np.array(body["features"]["pitch_hz"]["data"][0], dtype=float)  # null → nan
    voiced = np.array(body["features"]["voicing"]["data"][1], dtype=float) > 0.5
    assert np.isnan(f0[~voiced]).all() and np.isfinite(f0[voiced]).all()
    sound = parselmouth.Sound(samples.astype(np.float64), 16000)
    praat = sound.to_pitch(time_step=0.01, pitch_floor=65, pitch_ceiling=400)
    times = np.arange(len(f0)) / 100.0
    reference = np.array([praat.get_value_at_time(t) for t in times])
    both = voiced & np.isfinite(reference)
    gross = np.abs(f0[both] - reference[both]) > 0.2 * reference[both]
    assert both.sum() > 300 and gross.mean() <= 0.02
    summary = body["features"]["voice_quality"]["summary"]
    points = parselmouth.praat.call(sound, "To PointProcess (periodic, cc)", 65, 400)
    jitter = parselmouth.praat.call(points, "Get jitter (local)", 0, 0, 0.0001, 0.02, 1.3)
    assert summary["jitter_local"] == pytest.approx(jitter, rel=0.2)
    assert 5 < summary["hnr_db"] < 25
    f1 = np.array(body["features"]["formants"]["data"][0], dtype=float)
    assert 300 < np.nanmedian(f1) < 900


def test_get_features_names_pitch_selects_both_outputs(client: TestClient) -> None:
    data = wav_bytes(tone(180, 1.0, 16000, 0.3), 16000)
    result_id = client.post("/process", files={"file": ("a.wav", data)}).json()["id"]
    body = client.get(f"/features/{result_id}", params={"names": "pitch"}).json()
    assert list(body["features"]) == ["pitch_hz", "voicing"]
    f0 = np.array(body["features"]["pitch_hz"]["data"][0])
    assert np.median(f0[10:-10]) == pytest.approx(180, rel=0.01)


@pytest.mark.parametrize(
    ("features", "message"),
    [
        ({"pitch_f_min": 300, "pitch_f_max": 200}, "pitch_f_min"),
        ({"n_mels": 10, "n_mfcc": 20}, "n_mfcc"),
        ({"f_min": 4000, "f_max": 3000}, "f_min"),
        ({"pitch_f_max": 2000}, "Nyquist"),
        ({"unvoiced": "drop"}, "unvoiced"),
        ({"functionals": ["mean", "mean"]}, "more than once"),
    ],
)
def test_feature_option_validation(client: TestClient, features: dict, message: str) -> None:
    response = client.post(
        "/process",
        files={"file": ("a.wav", b"x")},
        data={"options": json.dumps({"target_sample_rate": 4000, "features": features})},
    )
    assert response.status_code == 422 and message in response.json()["detail"]


def test_voice_quality_needs_one_channel(client: TestClient) -> None:
    data = wav_bytes(np.stack([tone(150, 0.5, 16000), tone(200, 0.5, 16000)], axis=1), 16000)
    response = client.post(
        "/process",
        files={"file": ("s.wav", data)},
        data={"options": '{"channels": "keep", "features": {"names": ["voice_quality"]}}'},
    )
    assert response.status_code == 422 and "one channel" in response.json()["detail"]


def test_egemaps_preset_against_opensmile(
    client: TestClient, speech: tuple[np.ndarray, int]
) -> None:
    import opensmile

    y, sr = speech
    body, samples = _processed(client, wav_bytes(y, sr), {"preset": "egemaps"})
    feature = body["features"]["egemaps"]
    ours = dict(zip(feature["rows"], (row[0] for row in feature["data"]), strict=True))
    smile = opensmile.Smile(
        feature_set=opensmile.FeatureSet.eGeMAPSv02,
        feature_level=opensmile.FeatureLevel.Functionals,
    )
    reference = smile.process_signal(samples, 16000).iloc[0]
    # Same definitions: F0 percentiles (semitones re 27.5 Hz) and the equivalent sound level.
    for name in ("percentile20.0", "percentile50.0", "percentile80.0"):
        key = f"F0semitoneFrom27.5Hz_sma3nz_{name}"
        assert ours[key] == pytest.approx(reference[key], abs=1.0), key
    assert ours["equivalentSoundLevel_dBFS"] == pytest.approx(
        reference["equivalentSoundLevel_dBp"], abs=0.2
    )
    assert feature["shape"] == [len(feature["rows"]), 1]


def test_segments_and_pause_statistics_in_json_and_npz(client: TestClient) -> None:
    data = shared_file("vad/count.wav").read_bytes()
    body = client.post("/process", files={"file": ("c.wav", data)}).json()
    assert body["segmentation"]["vad"] == "energy" and body["segmentation"]["time_map"] is None
    assert len(body["segments"]) >= 5 and 0.5 < body["quality"]["speech_ratio"] < 0.95
    assert all(
        0 <= s["start_s"] < s["end_s"] <= body["output"]["duration_s"] for s in body["segments"]
    )
    assert body["segmentation"]["pause_statistics"]["num_pauses"] >= 1
    npz = client.get(f"/features/{body['id']}", params={"format": "npz"})
    meta = json.loads(np.load(io.BytesIO(npz.content))["meta"].tobytes())
    assert meta["segments"] == body["segments"]


def test_trimming_and_pause_shortening_keep_times_consistent(client: TestClient) -> None:
    rate = 16000
    burst = tone(200, 0.5, rate, 0.3) * np.hanning(8000).astype(np.float32)
    silence = np.zeros(rate, dtype=np.float32)
    x = np.concatenate([silence, burst, silence, silence, burst, silence])  # 5 s
    x = x + 0.0005 * np.random.default_rng(1).standard_normal(len(x)).astype(np.float32)
    options = {
        "segment": {"trim": True, "max_pause_ms": 300, "trim_padding_ms": 100},
        "features": {"names": ["vad_prob", "energy"]},
    }
    response = client.post(
        "/process",
        files={"file": ("b.wav", wav_bytes(x, rate))},
        data={"options": json.dumps(options)},
    )
    body = response.json()
    duration = body["output"]["duration_s"]
    assert duration < 2.0  # 5 s → two 0.5 s bursts + padding + one shortened pause
    pieces = body["segmentation"]["time_map"]
    assert pieces[0][0] == 0.0 and abs(sum(p[2] for p in pieces) - duration) < 1e-3
    assert 0.9 < pieces[0][1] < 1.05  # the output starts near the first burst's onset
    assert all(s["end_s"] <= duration + 1e-6 for s in body["segments"])
    frames = body["features"]["energy"]["shape"][1]
    assert body["features"]["vad_prob"]["shape"] == [1, frames] == [1, 1 + round(duration * 100)]
    audio = client.get(f"/features/{body['id']}/audio")
    samples, _ = sf.read(io.BytesIO(audio.content))
    assert abs(len(samples) / rate - duration) < 1e-3


@pytest.mark.parametrize(
    ("segment", "message"),
    [
        ({"min_pause_ms": 900, "boundary_pause_ms": 500}, "min_pause_ms"),
        ({"min_speech_ms": -5}, "min_speech_ms"),
        ({"vad": "off", "trim": True}, "need a VAD"),
        ({"vad": "nope"}, "vad"),
    ],
)
def test_segment_option_validation(client: TestClient, segment: dict, message: str) -> None:
    response = client.post(
        "/process",
        files={"file": ("a.wav", b"x")},
        data={"options": json.dumps({"segment": segment})},
    )
    assert response.status_code == 422 and message in response.json()["detail"]


def test_cleaning_raises_the_snr_and_is_reported(
    client: TestClient, speech: tuple[np.ndarray, int]
) -> None:
    y, sr = speech
    noisy = y + 0.03 * np.random.default_rng(3).standard_normal(len(y)).astype(np.float32)
    body = client.post("/process", files={"file": ("n.wav", wav_bytes(noisy, sr))}).json()
    quality = body["quality"]
    assert quality["snr_after_db"] > quality["snr_db"] + 3
    assert quality["cleaning"]["noise"]["method"] == "mmse_lsa"
    assert [s["name"] for s in body["steps"]][:3] == ["decode", "normalize", "clean"]
    off = client.post(
        "/process",
        files={"file": ("n.wav", wav_bytes(noisy, sr))},
        data={"options": '{"denoise": {"method": "off", "wind": false, "declick": false}}'},
    ).json()
    assert "cleaning" not in off["quality"] and "clean" not in [s["name"] for s in off["steps"]]
    bad = client.post(
        "/process",
        files={"file": ("n.wav", b"x")},
        data={"options": '{"denoise": {"method": "magic"}}'},
    )
    assert bad.status_code == 422 and "denoise.method" in bad.json()["detail"]


def test_diarization_and_overlap_through_the_api(client: TestClient) -> None:
    data = shared_file("diarization/diarizationExample2.wav").read_bytes()
    options = {
        "segment": {"diarize": True, "overlap": True},
        "features": {"names": ["vad_prob", "overlap_prob"]},
    }
    body = client.post(
        "/process", files={"file": ("d.wav", data)}, data={"options": json.dumps(options)}
    ).json()
    assert body["segmentation"]["num_speakers"] == 6
    speakers = {s["speaker"] for s in body["segments"]}
    assert len(speakers) == 6 and None not in speakers
    assert all(isinstance(s["overlap"], bool) for s in body["segments"])
    frames = body["features"]["vad_prob"]["shape"]
    assert body["features"]["overlap_prob"]["shape"] == frames
    labels = [
        line.split("\t")
        for line in shared_file("diarization/diarizationExample2.segments").read_text().splitlines()
        if line.strip()
    ]
    # Each labelled turn is spoken, in our segments, by one speaker of its own.
    majority = []
    for start, end, _speaker in labels:
        time_by_speaker: dict[str, float] = {}
        for seg in body["segments"]:
            inside = min(seg["end_s"], float(end)) - max(seg["start_s"], float(start))
            if inside > 0:
                time_by_speaker[seg["speaker"]] = time_by_speaker.get(seg["speaker"], 0) + inside
        best = max(time_by_speaker, key=time_by_speaker.__getitem__)
        assert time_by_speaker[best] >= 0.8 * sum(time_by_speaker.values()), time_by_speaker
        majority.append(best)
    assert len(set(majority)) == len(labels) == 6


def test_speaker_count_validation(client: TestClient) -> None:
    response = client.post(
        "/process",
        files={"file": ("a.wav", b"x")},
        data={"options": '{"segment": {"diarize": true, "num_speakers": 9, "max_speakers": 4}}'},
    )
    assert response.status_code == 422 and "num_speakers" in response.json()["detail"]


def test_restoration_steps_through_the_api(
    client: TestClient, speech: tuple[np.ndarray, int]
) -> None:
    y, sr = speech
    clicked = y.copy()
    positions = np.arange(sr // 2, len(y) - sr // 2, sr // 3)
    clicked[positions] += 0.6
    body = client.post(
        "/process",
        files={"file": ("c.wav", wav_bytes(clicked, sr, "FLOAT"))},
        data={"options": '{"denoise": {"method": "off", "wind": false}}'},
    ).json()
    assert body["quality"]["cleaning"]["declick"]["clicks_repaired"] >= 0.9 * len(positions)
    options = {"denoise": {"dereverb": True, "declick": False}}
    body = client.post(
        "/process",
        files={"file": ("r.wav", wav_bytes(y, sr))},
        data={"options": json.dumps(options)},
    ).json()
    assert set(body["quality"]["cleaning"]["dereverb"]) == {"rt60_before_s", "rt60_after_s"}


def test_echo_cancellation_with_a_reference_channel(
    client: TestClient, speech: tuple[np.ndarray, int]
) -> None:
    import librosa

    y, sr = speech
    far = librosa.resample(y, orig_sr=sr, target_sr=16000)[: 16000 * 8]
    path = np.zeros(800, dtype=np.float32)
    path[[640, 700, 760]] = [0.6, -0.3, 0.15]  # 40 ms bulk delay and a short tail
    mic = np.convolve(far, path)[: len(far)].astype(np.float32)
    stereo = np.stack([mic, far], axis=1)
    options = {
        "channels": "mono",
        "denoise": {
            "echo": True,
            "echo_reference_channel": 1,
            "method": "off",
            "wind": False,
            "declick": False,
        },
    }
    body = client.post(
        "/process",
        files={"file": ("e.wav", wav_bytes(stereo, 16000, "FLOAT"))},
        data={"options": json.dumps(options)},
    ).json()
    echo = body["quality"]["cleaning"]["echo"]
    # ERLE over the whole 8 s, convergence included (≥ 20 dB after convergence is asserted in
    # tests/unit/test_restore.py).
    assert echo["erle_db"] >= 10 and echo["delay_ms"] == pytest.approx(40, abs=2)
    assert body["output"]["channels"] == 1
    missing = client.post(
        "/process",
        files={"file": ("m.wav", wav_bytes(mic, 16000))},
        data={"options": json.dumps(options)},
    )
    assert missing.status_code == 422 and "echo_reference_channel" in missing.json()["detail"]


def test_compression_levels_and_limits(client: TestClient) -> None:
    quiet = tone(200, 2.0, 16000, 0.02)
    loud = tone(300, 2.0, 16000, 0.5)
    data = wav_bytes(np.concatenate([quiet, loud]), 16000)
    options = {"compression": {"enabled": True, "preset": "leveling", "ceiling_dbtp": -2.0}}
    body = client.post(
        "/process", files={"file": ("l.wav", data)}, data={"options": json.dumps(options)}
    ).json()
    compression = body["output"]["compression"]
    assert compression["true_peak_dbtp"] <= -2.0 + 0.05
    assert compression["max_reduction_db"] > 3
    assert "compress" in [s["name"] for s in body["steps"]]
