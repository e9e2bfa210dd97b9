"""Compressor and true-peak limiter on known-answer signals, and the leveling preset on speech.

True peaks are checked with an independent polyphase upsampler (scipy's ``upfirdn`` with the
ITU-R BS.1770-4 annex 2 coefficients), static curves against the textbook formula, the
recursions against scipy's ``lfilter`` and a plain loop.
"""

from __future__ import annotations

import math

import librosa
import numpy as np
import pytest
import scipy.signal as ss
import soundfile as sf
import torch

from app.errors import InvalidOptions
from app.pipeline.dynamics import (
    PRESETS,
    TRUE_PEAK_PHASES,
    CompressorSettings,
    DynamicsSettings,
    LimiterSettings,
    apply_dynamics,
    compress,
    level_db,
    limit,
    one_pole,
    preset,
    release_hold,
    static_curve,
    true_peak_dbtp,
    true_peak_envelope,
)
from tests.conftest import shared_file

SR = 16000


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    y, sr = sf.read(shared_file("speech/198-209-0000.ogg"), dtype="float32")
    return librosa.resample(y, orig_sr=sr, target_sr=SR).astype(np.float32)


def reference_true_peak_db(x: np.ndarray) -> float:
    """BS.1770-4 annex 2, independently: 4× zero-stuffing and the 48-tap prototype (phases
    interleaved), plus the samples themselves."""
    prototype = np.array(TRUE_PEAK_PHASES).T.reshape(-1)
    upsampled = ss.upfirdn(prototype, x.astype(np.float64), up=4)
    return 20 * math.log10(max(np.abs(upsampled).max(), np.abs(x).max()))


def sine(freq: float, seconds: float, level_db: float, phase: float = 0.0) -> torch.Tensor:
    t = torch.arange(int(seconds * SR), dtype=torch.float64) / SR
    return (10 ** (level_db / 20) * torch.sin(2 * math.pi * freq * t + phase)).float()


# --------------------------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------------------------


def test_static_curve_formula() -> None:
    levels = torch.tensor([-60.0, -33.0, -30.0, -27.0, -24.0, -10.0, 0.0])
    hard = static_curve(levels, threshold_db=-30.0, ratio=4.0, knee_db=0.0)
    expected = [0.0, 0.0, 0.0, -2.25, -4.5, -15.0, -22.5]  # (1/R − 1)(x − T) above T
    np.testing.assert_allclose(hard.numpy(), expected, atol=1e-6)
    soft = static_curve(levels, threshold_db=-30.0, ratio=4.0, knee_db=6.0)
    # inside the knee: (1/R − 1)(x − T + W/2)² / (2W); continuous at both knee edges
    assert float(soft[1]) == pytest.approx(0.0, abs=1e-6)  # x = T − W/2
    assert float(soft[2]) == pytest.approx(-0.75 * 9 / 12)  # x = T
    assert float(soft[3]) == pytest.approx(-2.25)  # x = T + W/2 meets the hard curve
    np.testing.assert_allclose(soft[4:].numpy(), expected[4:], atol=1e-6)
    assert torch.equal(static_curve(levels, threshold_db=-30, ratio=1.0, knee_db=6), 0 * levels)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.99, 0.99999])
def test_one_pole_equals_lfilter(alpha: float) -> None:
    x = torch.randn(3, 10_007, dtype=torch.float64)
    reference = ss.lfilter([1 - alpha], [1, -alpha], x.numpy(), axis=-1)
    np.testing.assert_allclose(one_pole(x, alpha=alpha).numpy(), reference, atol=1e-12)


def test_release_hold_equals_the_loop() -> None:
    rng = np.random.default_rng(0)
    reduction = np.maximum(rng.standard_normal(5000) * 6, 0.0)
    alpha = math.exp(-1000.0 / (20.0 * SR))
    expected = np.empty_like(reduction)
    state = 0.0
    for i, r in enumerate(reduction):
        state = max(r, alpha * state)
        expected[i] = state
    ours = release_hold(torch.tensor(reduction), sample_rate=SR, release_ms=20.0).numpy()
    np.testing.assert_allclose(ours, expected, rtol=1e-9, atol=1e-12)


def test_rms_detector_reads_a_sine_at_minus_3_db() -> None:
    level = level_db(sine(1000, 0.5, -10.0), sample_rate=SR, detector="rms", rms_ms=10.0)
    np.testing.assert_allclose(level[1000:-1000].numpy(), -13.01, atol=0.01)


# --------------------------------------------------------------------------------------------
# compressor
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("detector", ["peak", "rms"])
@pytest.mark.parametrize("level", [-40.0, -23.0, -20.0, -17.0, -10.0, 0.0])
def test_steady_tones_follow_the_static_curve(detector: str, level: float) -> None:
    settings = CompressorSettings(
        threshold_db=-20.0,
        ratio=4.0,
        knee_db=6.0,
        attack_ms=5.0,
        release_ms=200.0,
        makeup_db=3.0,
        detector=detector,  # type: ignore[arg-type]
    )
    x = sine(1000.0, 1.0, level)
    out, gain = compress(x, sample_rate=SR, settings=settings)
    detected = level if detector == "peak" else level - 10 * math.log10(2)
    expected = float(static_curve(torch.tensor(detected), threshold_db=-20, ratio=4, knee_db=6))
    steady = slice(SR // 2, -SR // 10)
    assert float(gain[steady].mean()) == pytest.approx(expected + 3.0, abs=0.05)
    out_level = 20 * math.log10(float(out[steady].abs().max()))
    assert out_level == pytest.approx(level + expected + 3.0, abs=0.1)


def test_attack_and_release_times() -> None:
    settings = CompressorSettings(
        threshold_db=-30.0, ratio=10.0, knee_db=0.0, attack_ms=5.0, release_ms=100.0
    )
    t = torch.arange(int(1.5 * SR)) / SR
    envelope = torch.where((t >= 0.5) & (t < 1.0), 10 ** (-10 / 20), 10 ** (-40 / 20))
    x = envelope * torch.sin(2 * math.pi * 1000 * t)
    _, gain = compress(x, sample_rate=SR, settings=settings)
    g = gain.numpy()
    full = float(g[int(0.95 * SR)])  # −18 dB: 20 dB over the threshold at 10:1
    assert full == pytest.approx(-18.0, abs=0.1)
    attack = np.argmax(g[SR // 2 :] <= (1 - math.exp(-1)) * full) / SR * 1000
    release = np.argmax(g[SR:] >= math.exp(-1) * full) / SR * 1000
    assert attack == pytest.approx(5.0, rel=0.2)
    assert release == pytest.approx(100.0, rel=0.1)


# --------------------------------------------------------------------------------------------
# true peak and limiter
# --------------------------------------------------------------------------------------------


def test_true_peak_of_a_quarter_rate_sine_between_samples() -> None:
    # fs/4 at 45°: every sample sits at ±0.707 of the true peak (−3 dB sample peak)
    x = sine(SR / 4, 0.2, -6.0, phase=math.pi / 4)
    assert 20 * math.log10(float(x.abs().max())) == pytest.approx(-9.01, abs=0.01)
    assert true_peak_dbtp(x) == pytest.approx(-6.0, abs=0.3)
    assert true_peak_dbtp(x) == pytest.approx(reference_true_peak_db(x.numpy()), abs=1e-5)


def test_true_peak_envelope_covers_every_interpolated_point(speech: np.ndarray) -> None:
    x = speech[:SR]
    envelope = true_peak_envelope(torch.tensor(x, dtype=torch.float64)).numpy()
    prototype = np.array(TRUE_PEAK_PHASES).T.reshape(-1)
    up = ss.upfirdn(prototype, x.astype(np.float64), up=4)
    # output 4j + φ lies between x[j − 6] and x[j − 5]; it must not exceed either envelope
    j = np.arange(6, len(x) + 5)
    for phase in range(4):
        values = np.abs(up[4 * j + phase])
        assert np.all(values <= envelope[j - 6] + 1e-12)
        assert np.all(values <= envelope[j - 5] + 1e-12)
    assert np.all(envelope >= np.abs(x) - 1e-12)


@pytest.mark.parametrize("ceiling", [-1.0, -6.0])
def test_limiter_never_exceeds_the_ceiling(speech: np.ndarray, ceiling: float) -> None:
    loud = torch.tensor(speech * 8.0)  # peaks ~ +10 dBFS
    hot_sine = sine(SR / 4, 0.5, 3.0, phase=math.pi / 4)  # inter-sample peaks, +3 dBTP
    for x in (loud, hot_sine):
        out, gain = limit(x, sample_rate=SR, settings=LimiterSettings(ceiling_dbtp=ceiling))
        assert true_peak_dbtp(out) <= ceiling + 1e-6
        assert reference_true_peak_db(out.numpy()) <= ceiling + 1e-4
        assert float(gain.max()) <= 1.0
    # and it leaves alone what it need not touch: the pauses and the quiet stretches
    out, gain = limit(loud, sample_rate=SR, settings=LimiterSettings(ceiling_dbtp=ceiling))
    assert float((gain > 0.99).double().mean()) > 0.15


def test_limiter_leaves_quiet_signals_alone(speech: np.ndarray) -> None:
    x = torch.tensor(speech * 0.5)
    out, gain = limit(x, sample_rate=SR)
    assert torch.equal(out, x) and bool((gain == 1).all())


def test_limiter_looks_ahead() -> None:
    x = torch.zeros(SR // 2)
    x[4000] = 1.0  # a lone full-scale impulse
    settings = LimiterSettings(ceiling_dbtp=-6.0, lookahead_ms=5.0, release_ms=50.0)
    _, gain = limit(x, sample_rate=SR, settings=settings)
    g = gain.numpy()
    assert g[4000] <= 10 ** (-6 / 20) / 1.0 + 1e-6
    assert g[4000 - 40] < 0.99  # already falling 2.5 ms before the peak
    assert g[4000 - 200] == 1.0  # untouched well before it
    assert g[4000 + 800] > g[4000 + 200] > g[4000]  # recovering with the release


# --------------------------------------------------------------------------------------------
# chain, presets, silence, bad parameters
# --------------------------------------------------------------------------------------------


def test_leveling_narrows_the_gap_between_a_quiet_and_a_loud_talker(speech: np.ndarray) -> None:
    quiet = speech * 10 ** (-12 / 20) / np.abs(speech).max()
    loud = speech * 10 ** (-1 / 20) / np.abs(speech).max()
    x = torch.tensor(np.concatenate([quiet, loud]).astype(np.float32))
    out, report = apply_dynamics(x, sample_rate=SR, settings="leveling")
    half = len(quiet)

    def rms_db(v: np.ndarray) -> float:
        return 10 * math.log10(float((v.astype(np.float64) ** 2).mean()))

    o = out.numpy()
    gap_in = rms_db(loud) - rms_db(quiet)
    gap_out = rms_db(o[half:]) - rms_db(o[:half])
    assert gap_in == pytest.approx(11.0, abs=0.01)
    assert gap_out < 6.0
    assert rms_db(o[:half]) > rms_db(quiet) + 3.0  # the quiet talker comes up
    assert report.true_peak_dbtp <= -1.0 + 1e-6
    assert reference_true_peak_db(o) <= -1.0 + 1e-4


def test_silence_stays_silent() -> None:
    zero = torch.zeros(2, SR)
    for name in PRESETS:
        out, report = apply_dynamics(zero, sample_rate=SR, settings=name)
        assert not bool(out.any()) and report.true_peak_dbtp == float("-inf")
    out, _ = compress(zero, sample_rate=SR, settings=CompressorSettings(makeup_db=20.0))
    assert not bool(out.any())


def test_compressor_only_chain() -> None:
    x = sine(1000.0, 0.5, -6.0)
    settings = DynamicsSettings(compressor=CompressorSettings(threshold_db=-40.0), limiter=None)
    out, report = apply_dynamics(x, sample_rate=SR, settings=settings)
    assert report.limited_fraction == 0.0 and report.max_reduction_db > 20.0
    assert float(out.abs().max()) < float(x.abs().max())


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (CompressorSettings(ratio=0.5), "ratio"),
        (CompressorSettings(threshold_db=3.0), "threshold_db"),
        (CompressorSettings(attack_ms=0.0), "attack_ms"),
        (CompressorSettings(release_ms=float("nan")), "release_ms"),
        (CompressorSettings(knee_db=-1.0), "knee_db"),
        (CompressorSettings(detector="loud"), "detector"),  # type: ignore[arg-type]
    ],
)
def test_bad_compressor_settings_raise(settings: CompressorSettings, message: str) -> None:
    with pytest.raises(InvalidOptions, match=message):
        compress(torch.zeros(100), sample_rate=SR, settings=settings)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (LimiterSettings(ceiling_dbtp=1.0), "ceiling_dbtp"),
        (LimiterSettings(lookahead_ms=0.0), "lookahead_ms"),
        (LimiterSettings(release_ms=0.0), "release_ms"),
    ],
)
def test_bad_limiter_settings_raise(settings: LimiterSettings, message: str) -> None:
    with pytest.raises(InvalidOptions, match=message):
        limit(torch.zeros(100), sample_rate=SR, settings=settings)


def test_unknown_preset_and_bad_input_raise() -> None:
    with pytest.raises(InvalidOptions, match="preset 'loudest' is unknown"):
        preset("loudest")
    with pytest.raises(InvalidOptions, match="sample_rate"):
        compress(torch.zeros(100), sample_rate=0)
    with pytest.raises(InvalidOptions, match="floating-point"):
        limit(torch.zeros(100, dtype=torch.int16), sample_rate=SR)
