"""Model-ready presets against their reference implementations.

Whisper's log-mel against ``whisper.audio.log_mel_spectrogram``; Kaldi fbank and MFCC against
``kaldi_native_fbank`` (``OnlineFbank`` / ``OnlineMfcc``), on the shared speech recordings
resampled to 16 kHz and on a generated signal.
"""

from __future__ import annotations

from typing import Any

import kaldi_native_fbank as knf
import librosa
import numpy as np
import pytest
import soundfile as sf
import torch
import whisper.audio as wa

from app.errors import InvalidOptions
from app.pipeline.features.frames import FrameSpec
from app.pipeline.features.kaldi import kaldi_fbank, kaldi_frame_count, kaldi_mfcc
from app.pipeline.features.whisper import (
    WHISPER_FRAME_RATE_HZ,
    whisper_log_mel,
    whisper_mel_filters,
    whisper_num_frames,
)
from tests.conftest import shared_file, tone

SPEECH = ["speech/198-209-0000.ogg", "speech/5703-47212-0000.ogg", "vad/count.wav"]
CPU = torch.device("cpu")
#: 80 dB in natural-log power units: Kaldi bins further below their frame's peak are dominated
#: by float32 rounding in the reference itself (see assert_log_fbank_close).
NATS_80_DB = 8 * np.log(10.0)


def load_16k(relative: str) -> np.ndarray:
    y, sr = sf.read(shared_file(relative), dtype="float32", always_2d=True)
    y = y.mean(axis=1)
    if sr != 16000:
        y = librosa.resample(y, orig_sr=sr, target_sr=16000)
    return np.ascontiguousarray(y, dtype=np.float32)


def generated(sample_rate: int = 16000, seconds: float = 3.3) -> np.ndarray:
    """A chirp (100 Hz → 0.45·fs), a 440 Hz tone and white noise, about −12 dBFS peak-ish."""
    rng = np.random.default_rng(1234)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    f1 = 0.45 * sample_rate
    chirp = np.sin(2 * np.pi * (100 * t + (f1 - 100) * t**2 / (2 * seconds)))
    y = 0.2 * chirp + 0.1 * np.sin(2 * np.pi * 440 * t) + 0.01 * rng.standard_normal(t.size)
    return y.astype(np.float32)


@pytest.fixture(scope="module", params=SPEECH)
def speech(request: pytest.FixtureRequest) -> np.ndarray:
    return load_16k(request.param)


# ---------------------------------------------------------------------------------------------
# Whisper


@pytest.mark.parametrize("n_mels", [80, 128])
def test_whisper_mel_filters_equal_whisper_assets(n_mels: int) -> None:
    ours = whisper_mel_filters(n_mels, CPU)
    theirs = wa.mel_filters(CPU, n_mels)
    assert ours.dtype == theirs.dtype == torch.float32
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("n_mels", [80, 128])
def test_whisper_log_mel_matches_whisper_on_speech(speech: np.ndarray, n_mels: int) -> None:
    x = torch.from_numpy(speech)
    ours = whisper_log_mel(x, sample_rate=16000, n_mels=n_mels)
    theirs = wa.log_mel_spectrogram(x, n_mels=n_mels)
    assert ours.shape == theirs.shape == (n_mels, whisper_num_frames(len(speech)))
    assert (ours - theirs).abs().max() <= 1e-3


@pytest.mark.parametrize("n_mels", [80, 128])
def test_whisper_log_mel_matches_whisper_on_generated_signal(n_mels: int) -> None:
    x = torch.from_numpy(generated())
    ours = whisper_log_mel(x, sample_rate=16000, n_mels=n_mels)
    theirs = wa.log_mel_spectrogram(x, n_mels=n_mels)
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().max() <= 1e-3


@pytest.mark.parametrize("n_mels", [80, 128])
def test_whisper_pad_to_30s_matches_pad_or_trim_and_padding(
    speech: np.ndarray, n_mels: int
) -> None:
    x = torch.from_numpy(speech)
    ours = whisper_log_mel(x, sample_rate=16000, n_mels=n_mels, pad_to_30s=True)
    assert ours.shape == (n_mels, 3000)
    # whisper's README: pad_or_trim, then log_mel_spectrogram
    trimmed = wa.log_mel_spectrogram(wa.pad_or_trim(x), n_mels=n_mels)
    assert (ours - trimmed).abs().max() <= 1e-3
    # whisper.transcribe: padding=N_SAMPLES, then the first 3000-frame segment
    padded = wa.log_mel_spectrogram(x, n_mels=n_mels, padding=wa.N_SAMPLES)[:, : wa.N_FRAMES]
    assert (ours - padded).abs().max() <= 1e-3


def test_whisper_pad_to_30s_trims_longer_audio() -> None:
    x = torch.from_numpy(np.tile(generated(), 11))  # 36.3 s
    ours = whisper_log_mel(x, sample_rate=16000, pad_to_30s=True)
    theirs = wa.log_mel_spectrogram(wa.pad_or_trim(x))
    assert ours.shape == theirs.shape == (80, 3000)
    assert (ours - theirs).abs().max() <= 1e-3
    first_30s = whisper_log_mel(x[: 30 * 16000], sample_rate=16000)
    assert torch.allclose(ours, first_30s)


def test_whisper_batch_matches_each_clip() -> None:
    a = torch.from_numpy(generated())
    b = torch.from_numpy(tone(1000, 3.3, 16000, amplitude=0.05))
    batch = whisper_log_mel(torch.stack([a, b])[None], sample_rate=16000)
    assert batch.shape == (1, 2, 80, 330)
    for i, clip in enumerate((a, b)):
        assert (batch[0, i] - wa.log_mel_spectrogram(clip)).abs().max() <= 1e-3


def test_whisper_known_answer_tone() -> None:
    x = torch.from_numpy(tone(1000, 1.0, 16000))
    mel = whisper_log_mel(x, sample_rate=16000)
    bank = whisper_mel_filters(80, CPU)
    assert int(mel[:, 50].argmax()) == int(bank[:, 1000 * 400 // 16000].argmax())
    # the (max − 8) clamp in log10 units is 2.0 after (x + 4) / 4
    assert float(mel.max() - mel.min()) == pytest.approx(2.0, abs=1e-6)


def test_whisper_frame_counts() -> None:
    assert WHISPER_FRAME_RATE_HZ == 100.0
    assert whisper_num_frames(16000) == 100
    assert whisper_num_frames(159) == 0
    assert whisper_num_frames(123, pad_to_30s=True) == 3000
    for n in (160, 201, 16000, 16159, 16160):
        x = torch.from_numpy(generated(seconds=1.1)[:n])
        out = whisper_log_mel(x, sample_rate=16000)
        assert out.shape[-1] == whisper_num_frames(n) == n // 160
        if n > 200:  # whisper's reflect padding needs more than 200 samples
            assert out.shape == wa.log_mel_spectrogram(x).shape


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sample_rate": 22050}, "sample_rate=22050"),
        ({"sample_rate": 8000}, "16000"),
        ({"sample_rate": 16000, "n_mels": 64}, "n_mels must be 80 or 128, got 64"),
    ],
)
def test_whisper_rejects_bad_options(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidOptions, match=match):
        whisper_log_mel(torch.zeros(16000), **kwargs)


def test_whisper_rejects_integer_samples() -> None:
    with pytest.raises(InvalidOptions, match="float"):
        whisper_log_mel(torch.zeros(16000, dtype=torch.int16), sample_rate=16000)


# ---------------------------------------------------------------------------------------------
# Kaldi

_FRAME_OPTS = {
    "frame_length_ms": "frame_length_ms",
    "frame_shift_ms": "frame_shift_ms",
    "dither": "dither",
    "preemphasis": "preemph_coeff",
    "remove_dc_offset": "remove_dc_offset",
    "window": "window_type",
    "snip_edges": "snip_edges",
}
_MEL_OPTS = {"num_mel_bins": "num_bins", "low_freq": "low_freq", "high_freq": "high_freq"}


def knf_features(y: np.ndarray, sample_rate: int, kind: str, **options: Any) -> np.ndarray:
    """kaldi_native_fbank's output, shape ``(feature, frame)``; our option names."""
    opts = knf.FbankOptions() if kind == "fbank" else knf.MfccOptions()
    opts.frame_opts.samp_freq = sample_rate
    opts.frame_opts.dither = 0.0
    if kind == "fbank":
        opts.mel_opts.num_bins = 80  # our default (Kaldi's is 23)
    for name, value in options.items():
        if name in _FRAME_OPTS:
            setattr(opts.frame_opts, _FRAME_OPTS[name], value)
        elif name in _MEL_OPTS:
            setattr(opts.mel_opts, _MEL_OPTS[name], value)
        else:
            setattr(opts, name, value)
    computer = knf.OnlineFbank(opts) if kind == "fbank" else knf.OnlineMfcc(opts)
    computer.accept_waveform(sample_rate, (y * 32768.0).tolist())
    computer.input_finished()
    frames = [computer.get_frame(i) for i in range(computer.num_frames_ready)]
    return np.array(frames, dtype=np.float32).reshape(len(frames), computer.dim).T


FBANK_VARIANTS: list[dict[str, Any]] = [
    {},
    {"snip_edges": False, "use_energy": True, "window": "hamming"},
    {
        "num_mel_bins": 40,
        "low_freq": 60.0,
        "high_freq": -400.0,
        "preemphasis": 0.0,
        "remove_dc_offset": False,
        "window": "hanning",
    },
    {"use_power": False, "window": "blackman", "frame_length_ms": 20.0, "frame_shift_ms": 12.5},
    {"window": "rectangular", "use_energy": True, "energy_floor": 1.08e10},  # floors ~half
    {"window": "sine", "num_mel_bins": 23, "high_freq": 3000.0},
]


def assert_log_fbank_close(
    ours: np.ndarray, theirs: np.ndarray, range_nats: float, min_covered: float = 0.99
) -> None:
    """≤ 2e-3 within ``range_nats`` of each frame's peak (≥ ``min_covered`` of all values),
    ≤ 1e-2 everywhere.

    Bins more than 80 dB under their frame's peak hold float32 rounding noise of both
    computations: there kaldi_native_fbank itself differs from a float64 computation by up to
    6e-3 on the speech clips (ours by up to 1.3e-3).
    """
    assert ours.shape == theirs.shape
    diff = np.abs(ours - theirs)
    near_peak = theirs >= theirs.max(axis=0, keepdims=True) - range_nats
    assert near_peak.mean() >= min_covered
    assert diff[near_peak].max() <= 2e-3
    assert diff.max() <= 1e-2


def test_kaldi_fbank_matches_knf_on_speech(speech: np.ndarray) -> None:
    ours = kaldi_fbank(torch.from_numpy(speech), sample_rate=16000).numpy()
    theirs = knf_features(speech, 16000, "fbank")
    assert ours.shape == (80, kaldi_frame_count(len(speech), sample_rate=16000))
    assert_log_fbank_close(ours, theirs, NATS_80_DB)


@pytest.mark.parametrize("sample_rate", [16000, 8000])
@pytest.mark.parametrize("options", FBANK_VARIANTS)
def test_kaldi_fbank_matches_knf_on_generated_signal(
    options: dict[str, Any], sample_rate: int
) -> None:
    y = generated(sample_rate)
    ours = kaldi_fbank(torch.from_numpy(y), sample_rate=sample_rate, **options).numpy()
    theirs = knf_features(y, sample_rate, "fbank", **options)
    magnitude = options.get("use_power") is False  # log of magnitude: half the range in nats
    # the chirp sweeps far from the low bins, which then sit > 80 dB under the frame's peak
    assert_log_fbank_close(ours, theirs, NATS_80_DB / 2 if magnitude else NATS_80_DB, 0.9)


def test_kaldi_linear_fbank_matches_knf() -> None:
    y = generated()
    ours = kaldi_fbank(torch.from_numpy(y), sample_rate=16000, use_log_fbank=False).numpy()
    theirs = knf_features(y, 16000, "fbank", use_log_fbank=False)
    np.testing.assert_allclose(ours, theirs, rtol=2e-3, atol=1e-3 * theirs.max())


def test_kaldi_mfcc_matches_knf_on_speech(speech: np.ndarray) -> None:
    ours = kaldi_mfcc(torch.from_numpy(speech), sample_rate=16000).numpy()
    theirs = knf_features(speech, 16000, "mfcc")
    assert ours.shape == theirs.shape == (13, kaldi_frame_count(len(speech), sample_rate=16000))
    assert np.abs(ours - theirs).max() <= 5e-3


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"use_energy": False, "cepstral_lifter": 0.0, "num_ceps": 20, "num_mel_bins": 40},
        {"snip_edges": False, "window": "hamming", "energy_floor": 1.08e10},
    ],
)
def test_kaldi_mfcc_matches_knf_on_generated_signal(options: dict[str, Any]) -> None:
    y = generated()
    ours = kaldi_mfcc(torch.from_numpy(y), sample_rate=16000, **options).numpy()
    theirs = knf_features(y, 16000, "mfcc", **options)
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() <= 1e-3


@pytest.mark.parametrize("snip_edges", [True, False])
def test_kaldi_frame_counts_match_knf(snip_edges: bool) -> None:
    y = generated(seconds=0.2)
    for n in (0, 1, 100, 250, 399, 400, 401, 559, 560, 1234, 3200):
        count = kaldi_frame_count(n, sample_rate=16000, snip_edges=snip_edges)
        out = kaldi_fbank(torch.from_numpy(y[:n]), sample_rate=16000, snip_edges=snip_edges)
        assert out.shape == (80, count)
        if n:
            assert knf_features(y[:n], 16000, "fbank", snip_edges=snip_edges).shape[-1] == count
    assert kaldi_frame_count(16000, sample_rate=16000) == 98
    assert kaldi_frame_count(16000, sample_rate=16000, snip_edges=False) == 100
    # ours are centred, 1 + T // hop: Kaldi's layout is a different one
    assert FrameSpec(16000, 512, 400, 160).num_frames(16000) == 101


def test_kaldi_batch_matches_each_clip() -> None:
    a = generated()
    b = tone(1000, 3.3, 16000, amplitude=0.05)
    batch = torch.from_numpy(np.stack([a, b]))[None]
    fbank = kaldi_fbank(batch, sample_rate=16000, use_energy=True)
    mfcc = kaldi_mfcc(batch, sample_rate=16000)
    assert fbank.shape == (1, 2, 81, 328) and mfcc.shape == (1, 2, 13, 328)
    for i, clip in enumerate((a, b)):
        single = torch.from_numpy(clip)
        assert torch.allclose(fbank[0, i], kaldi_fbank(single, sample_rate=16000, use_energy=True))
        assert torch.allclose(mfcc[0, i], kaldi_mfcc(single, sample_rate=16000), atol=1e-5)


def test_kaldi_known_answer_tone_and_energy() -> None:
    y = tone(1000, 1.0, 16000, amplitude=0.25)
    out = kaldi_fbank(torch.from_numpy(y), sample_rate=16000, use_energy=True)
    # row 0: raw log energy of the DC-removed frame in int16 units
    frame = y[160 * 10 : 160 * 10 + 400].astype(np.float64) * 32768
    energy = np.log(np.sum((frame - frame.mean()) ** 2))
    assert float(out[0, 10]) == pytest.approx(energy, abs=1e-4)
    # the loudest mel filter is the one centred nearest 1 kHz on Kaldi's mel scale
    mel = 1127 * np.log(1 + np.array([20.0, 8000.0, 1000.0]) / 700)
    centres = mel[0] + (np.arange(80) + 1) * (mel[1] - mel[0]) / 81
    assert int(out[1:, 10].argmax()) == int(np.abs(centres - mel[2]).argmin())
    x = torch.from_numpy(y)
    floored = kaldi_fbank(x, sample_rate=16000, use_energy=True, energy_floor=1e30)
    assert torch.allclose(floored[0], torch.full_like(floored[0], np.log(1e30)))
    assert torch.equal(floored[1:], out[1:])


def test_kaldi_float64_follows_input_dtype() -> None:
    y = torch.from_numpy(generated()).double()
    out = kaldi_fbank(y, sample_rate=16000)
    assert out.dtype == torch.float64
    assert torch.allclose(out.float(), kaldi_fbank(y.float(), sample_rate=16000), atol=2e-3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"window": "kaiser"}, "window must be one of .*'kaiser'"),
        ({"num_mel_bins": 2}, "num_mel_bins must be ≥ 3, got 2"),
        ({"num_mel_bins": 200}, "num_mel_bins=200"),
        ({"high_freq": 9000.0}, "high_freq=9000.0"),
        ({"low_freq": 8000.0}, "low_freq=8000.0"),
        ({"frame_length_ms": 0.05}, "frame_length_ms=0.05"),
        ({"frame_shift_ms": 0.0}, "frame_shift_ms=0.0"),
        ({"preemphasis": 1.5}, "preemphasis must be in \\[0, 1\\], got 1.5"),
        ({"dither": -1.0}, "dither must be ≥ 0"),
        ({"sample_rate": 0}, "sample_rate must be > 0 Hz, got 0"),
    ],
)
def test_kaldi_fbank_rejects_bad_options(kwargs: dict[str, Any], match: str) -> None:
    options: dict[str, Any] = {"sample_rate": 16000, **kwargs}
    with pytest.raises(InvalidOptions, match=match):
        kaldi_fbank(torch.zeros(16000), **options)


def test_kaldi_mfcc_rejects_bad_options() -> None:
    x = torch.zeros(16000)
    with pytest.raises(InvalidOptions, match=r"num_ceps must be in \[1, num_mel_bins=23\], got 24"):
        kaldi_mfcc(x, sample_rate=16000, num_ceps=24)
    with pytest.raises(InvalidOptions, match="cepstral_lifter must be ≥ 0"):
        kaldi_mfcc(x, sample_rate=16000, cepstral_lifter=-1.0)
    with pytest.raises(InvalidOptions, match="float samples"):
        kaldi_mfcc(x.to(torch.int16), sample_rate=16000)
