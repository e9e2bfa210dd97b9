"""Noise stage: known-answer signals, and speech from the shared recordings against noisereduce."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch
from pesq import pesq
from pystoi import stoi
from scipy.signal import butter, sosfilt
from scipy.special import exp1

from app.errors import InvalidOptions
from app.pipeline.denoise import (
    _half_exp1,
    denoise,
    detect_wind,
    mmse_lsa,
    spectral_subtraction,
    stft_spec,
    suppress_wind,
    track_noise_psd,
    wada_snr,
)
from scripts.evalkit import si_sdr
from tests.conftest import shared_file

SR = 16000


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """198-209-0000 at 16 kHz, float64."""
    y, sr = sf.read(shared_file("speech/198-209-0000.ogg"), dtype="float64")
    return librosa.resample(y, orig_sr=sr, target_sr=SR)


def mix(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    gain = np.sqrt(np.sum(clean**2) / np.sum(noise**2) / 10 ** (snr_db / 10))
    return clean + gain * noise


Method = Callable[..., tuple[torch.Tensor, Any]]


def run(fn: Method, y: np.ndarray, **options: object) -> np.ndarray:
    out, _ = fn(torch.from_numpy(y.astype(np.float32)), sample_rate=SR, **options)
    return out.double().numpy()


def tone_bursts(seconds: float = 4.0, freq: float = 1000.0) -> np.ndarray:
    """A 1 kHz tone switched on for 400 ms out of every 800 ms (10 ms raised-cosine ramps): a
    stationary tone would be indistinguishable from stationary noise to any noise tracker."""
    t = np.arange(int(seconds * SR)) / SR
    gate = ((t % 0.8) < 0.4).astype(float)
    ramp = np.hanning(int(0.02 * SR))
    gate = np.convolve(gate, ramp / ramp.sum(), mode="same")
    return 0.3 * np.sin(2 * np.pi * freq * t) * gate


def wind_noise(n: int, seed: int) -> np.ndarray:
    """Gusty wind: Gaussian noise low-passed at 100 Hz, modulated by a slow log-normal envelope."""
    rng = np.random.default_rng(seed)
    noise = sosfilt(butter(2, 100, "lowpass", fs=SR, output="sos"), rng.standard_normal(n))
    slow = sosfilt(butter(2, 0.7, "lowpass", fs=SR, output="sos"), rng.standard_normal(n))
    return noise * np.exp(1.2 * slow / np.std(slow))


def hum(n: int, mains_hz: float = 50.0) -> np.ndarray:
    t = np.arange(n) / SR
    k = np.arange(1, 12)[:, None]
    return (np.sin(2 * np.pi * k * mains_hz * t) / k).sum(axis=0)


# -- known answers ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "gain_db"), [(mmse_lsa, 12.0), (spectral_subtraction, 8.0), (denoise, 12.0)]
)
def test_tone_bursts_in_white_noise_gain_snr(method: Method, gain_db: float) -> None:
    clean = tone_bursts()
    noisy = mix(clean, np.random.default_rng(0).standard_normal(len(clean)), 0.0)
    before, after = (
        si_sdr(reference=clean, estimate=noisy),
        si_sdr(reference=clean, estimate=run(method, noisy)),
    )
    assert before == pytest.approx(0.0, abs=0.05)
    assert after - before > gain_db, f"{method.__name__}: {before:.1f} → {after:.1f} dB"


def test_silence_stays_silent() -> None:
    silence = torch.zeros(2, SR)
    for fn in (mmse_lsa, spectral_subtraction, suppress_wind, denoise):
        out, _ = fn(silence, sample_rate=SR)
        assert torch.equal(out, silence), fn.__name__
    _, report = denoise(silence, sample_rate=SR)
    assert report.noise is not None and report.wind is not None
    assert report.noise.noise_floor_dbfs == float("-inf")
    assert report.noise.gain_db == 0.0
    assert report.wind.detected_fraction == 0.0
    assert report.snr_before_db == report.snr_after_db == -20.0
    mask, score = detect_wind(silence, sample_rate=SR)
    assert not mask.any() and float(score.max()) < 0.01


def test_nothing_removed_reconstructs_exactly() -> None:
    """The STFT / overlap-add round trip is exact: at gain 1 the output is the input."""
    x = torch.randn(3, 12345, dtype=torch.float64) * 0.1
    out, report = mmse_lsa(x, sample_rate=SR, gain_floor_db=0.0)  # the gain is pinned to 1
    assert report.gain_db == pytest.approx(0.0, abs=1e-9)
    assert torch.allclose(out, x, atol=1e-12)
    for hop in (100, 160, 256):  # hops that do not divide the window, and 50 % overlap
        out, _ = mmse_lsa(x, sample_rate=SR, gain_floor_db=0.0, hop_length=hop)
        assert torch.allclose(out, x, atol=1e-12), hop
    for n in (1, 100, 300):  # shorter than the window
        short = x[:, :n]
        assert torch.allclose(mmse_lsa(short, sample_rate=SR, gain_floor_db=0.0)[0], short)


def test_shape_dtype_and_batch_consistency() -> None:
    rng = np.random.default_rng(1)
    a = torch.from_numpy(mix(tone_bursts(2.0), rng.standard_normal(2 * SR), 5.0)).float()
    b = torch.from_numpy(mix(tone_bursts(2.0, 500.0), rng.standard_normal(2 * SR), 15.0)).float()
    batch = torch.stack([a, b]).reshape(2, 1, -1)
    out, _ = denoise(batch, sample_rate=SR)
    assert out.shape == batch.shape and out.dtype == torch.float32
    alone = torch.stack([denoise(a, sample_rate=SR)[0], denoise(b, sample_rate=SR)[0]])
    assert torch.allclose(out.reshape(2, -1), alone, atol=1e-6)
    half, _ = mmse_lsa(a.half(), sample_rate=SR)
    assert half.dtype == torch.float16
    mask, score = detect_wind(batch, sample_rate=SR)
    assert mask.shape == score.shape == (2, 1, 1 + a.shape[-1] // stft_spec(SR).hop_length)


def test_noise_psd_tracks_white_noise_and_its_level() -> None:
    """White noise of variance σ² has the PSD σ²·Σw² per bin; the level doubles halfway."""
    spec = stft_spec(SR)
    n = 20 * SR
    sigma = np.where(np.arange(n) < n // 2, 0.01, 0.02)
    x = torch.from_numpy(np.random.default_rng(2).standard_normal(n) * sigma).float()
    window = torch.hann_window(spec.win_length, periodic=True)
    stft = torch.stft(x, spec.n_fft, spec.hop_length, window=window, return_complex=True)
    noise = track_noise_psd(stft.abs().square(), frame_rate_hz=spec.frame_rate_hz)
    expected = float(window.square().sum())
    first = noise[5:-5, 200:1000].mean() / (1e-4 * expected)
    second = noise[5:-5, -1000:-200].mean() / (4e-4 * expected)
    assert 10 * np.log10(float(first)) == pytest.approx(0.0, abs=1.0)
    assert 10 * np.log10(float(second)) == pytest.approx(0.0, abs=1.0)
    _, report = mmse_lsa(x[: n // 2], sample_rate=SR)
    assert report.noise_floor_dbfs == pytest.approx(-40.0, abs=0.5)  # σ = 0.01


def test_exponential_integral_against_scipy() -> None:
    x = torch.logspace(-8, 1.9, 2000, dtype=torch.float64)
    ours = _half_exp1(x, torch.exp(-x)).numpy()
    assert np.max(np.abs(ours - 0.5 * exp1(x.numpy()))) < 5e-4


# -- real speech --------------------------------------------------------------------------------
def test_clean_speech_is_barely_changed(speech: np.ndarray) -> None:
    out = run(denoise, speech)
    reference_pesq = pesq(SR, speech, speech, "wb")
    assert abs(pesq(SR, speech, out, "wb") - reference_pesq) < 0.1
    assert stoi(speech, out, SR) > 0.99
    _, report = denoise(torch.from_numpy(speech).float(), sample_rate=SR)
    assert report.noise is not None and report.noise.strength < 0.3
    assert report.wind is not None and report.wind.detected_fraction == 0.0


def test_beats_noisereduce_on_speech_in_white_noise(speech: np.ndarray) -> None:
    import noisereduce

    noisy = mix(speech, np.random.default_rng(3).standard_normal(len(speech)), 5.0)
    theirs = noisereduce.reduce_noise(y=noisy.astype(np.float32), sr=SR).astype(np.float64)
    ours = run(denoise, noisy)
    assert si_sdr(reference=speech, estimate=ours) > si_sdr(reference=speech, estimate=noisy) + 5.0
    assert si_sdr(reference=speech, estimate=ours) > si_sdr(reference=speech, estimate=theirs)
    assert stoi(speech, ours, SR) > stoi(speech, theirs, SR)
    assert pesq(SR, speech, ours, "wb") > pesq(SR, speech, noisy, "wb") + 0.2
    assert pesq(SR, speech, ours, "wb") > pesq(SR, speech, theirs, "wb")
    _, report = denoise(torch.from_numpy(noisy).float(), sample_rate=SR)
    assert report.noise is not None and report.noise.strength == 1.0
    assert report.noise.estimated_snr_db == pytest.approx(5.0, abs=2.0)
    assert report.snr_after_db > report.snr_before_db + 5.0


def test_wind_is_detected_in_wind_and_nowhere_else(speech: np.ndarray) -> None:
    windy = mix(speech, wind_noise(len(speech), seed=4), 5.0)
    mask, score = detect_wind(torch.from_numpy(windy).float(), sample_rate=SR)
    assert float(mask.float().mean()) > 0.1
    for name, y in {
        "clean": speech,
        "hum": mix(speech, hum(len(speech)), 5.0),
        "white": mix(speech, np.random.default_rng(5).standard_normal(len(speech)), 5.0),
    }.items():
        other, other_score = detect_wind(torch.from_numpy(y).float(), sample_rate=SR)
        assert not other.any(), name
        assert float(other_score.mean()) < float(score.mean()), name


def test_wind_suppression_helps_and_reports(speech: np.ndarray) -> None:
    windy = mix(speech, wind_noise(len(speech), seed=6), 5.0)
    out, report = suppress_wind(torch.from_numpy(windy).float(), sample_rate=SR)
    assert report.detected_fraction > 0.1 and report.gain_db < -0.3
    assert 60.0 <= report.cutoff_hz <= 300.0
    assert (
        si_sdr(reference=speech, estimate=out.double().numpy())
        > si_sdr(reference=speech, estimate=windy) + 2.0
    )
    assert stoi(speech, out.double().numpy(), SR) >= stoi(speech, windy, SR) - 0.005
    clean, clean_report = suppress_wind(torch.from_numpy(speech).float(), sample_rate=SR)
    assert clean_report.detected_fraction == 0.0
    assert torch.equal(clean, torch.from_numpy(speech).float())


def test_wada_snr_reads_the_snr_of_speech_in_white_noise(speech: np.ndarray) -> None:
    """The recording's own noise floor (≈ −21 dB) is removed first, so that the added noise sets
    the true SNR."""
    quiet, _ = mmse_lsa(torch.from_numpy(speech), sample_rate=SR, backoff=False, gain_floor_db=-40)
    clean = quiet.numpy()
    for snr in (5.0, 10.0, 20.0):
        noisy = mix(clean, np.random.default_rng(int(snr)).standard_normal(len(clean)), snr)
        assert wada_snr(torch.from_numpy(noisy)) == pytest.approx(snr, abs=2.5)
    assert wada_snr(torch.zeros(100)) == -20.0


def test_wada_snr_matches_the_reference_implementation(speech: np.ndarray) -> None:
    """The numpy WADA-SNR that circulates with the lookup table (Kim & Stern's, via D. Ellis's
    snreval), on the real recording with and without noise."""
    from app.pipeline.denoise import _WADA_G

    def reference(wav: np.ndarray) -> float:
        db_vals, g_vals = np.arange(-20, 101), np.array(_WADA_G)
        wav = wav / np.abs(wav).max()
        abs_wav = np.maximum(np.abs(wav), 1e-10)
        v3 = np.log(max(1e-10, abs_wav.mean())) - np.log(abs_wav).mean()
        if not np.any(g_vals < v3):
            return -20.0
        idx = np.where(g_vals < v3)[0].max()
        if idx == len(db_vals) - 1:
            return 100.0
        return float(
            db_vals[idx]
            + (v3 - g_vals[idx])
            / (g_vals[idx + 1] - g_vals[idx])
            * (db_vals[idx + 1] - db_vals[idx])
        )

    for snr in (None, 0.0, 10.0):
        y = (
            speech
            if snr is None
            else mix(speech, np.random.default_rng(7).standard_normal(len(speech)), snr)
        )
        assert wada_snr(torch.from_numpy(y)) == pytest.approx(reference(y), abs=1e-3)


# -- options ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda x: mmse_lsa(x, sample_rate=SR, gain_floor_db=3.0), "gain_floor_db=3.0"),
        (lambda x: mmse_lsa(x, sample_rate=SR, gain_floor_db=-50), "gain_floor_db=-50"),
        (
            lambda x: spectral_subtraction(x, sample_rate=SR, over_subtraction=0.5),
            "over_subtraction",
        ),
        (lambda x: spectral_subtraction(x, sample_rate=SR, spectral_floor=1.5), "spectral_floor"),
        (lambda x: detect_wind(x, sample_rate=SR, threshold=2.0), "threshold=2.0"),
        (
            lambda x: denoise(x, sample_rate=SR, method="wiener"),  # type: ignore[arg-type]
            "method='wiener'",
        ),
        (lambda x: denoise(x, sample_rate=SR, wind_threshold=-1), "wind_threshold=-1"),
        (lambda x: mmse_lsa(x, sample_rate=0), "sample_rate=0"),
        (lambda x: mmse_lsa(x, sample_rate=SR, hop_length=400), "hop_length=400"),
        (lambda x: mmse_lsa(x, sample_rate=SR, hop_length=8), "hop_length=8"),
        (lambda x: track_noise_psd(x, frame_rate_hz=125.0), r"\(\.\.\., freq, frame\)"),
        (lambda x: track_noise_psd(x[None, None], frame_rate_hz=0.0), "frame_rate_hz=0.0"),
        (lambda x: mmse_lsa(x, sample_rate=SR, win_length=512, n_fft=256), "n_fft=256"),
        (lambda x: mmse_lsa(x, sample_rate=SR, win_length=8), "win_length=8"),
        (lambda x: mmse_lsa((x * 100).long(), sample_rate=SR), "floating-point"),
        (
            lambda x: denoise(
                x.clone().index_fill_(0, torch.tensor([5]), torch.nan), sample_rate=SR
            ),
            "NaN",
        ),
        (lambda x: wada_snr(x[:0]), "at least one sample"),
    ],
)
def test_bad_parameters_raise(call: Callable[[torch.Tensor], object], match: str) -> None:
    with pytest.raises(InvalidOptions, match=match):
        call(torch.randn(SR) * 0.1)
