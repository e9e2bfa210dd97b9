"""Formants, jitter, shimmer and HNR on known-answer signals, and parity with Praat on speech."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.signal import lfilter

from app.errors import InvalidOptions
from app.pipeline.features.voice_quality import formants, voice_quality
from tests.conftest import shared_file

SR = 16000
HOP = 160


def resonators(excitation: np.ndarray, peaks: list[tuple[float, float]], sr: int) -> np.ndarray:
    """``excitation`` through cascaded two-pole resonators ``(frequency Hz, bandwidth Hz)``."""
    y = excitation.astype(np.float64)
    for freq, bw in peaks:
        r = math.exp(-math.pi * bw / sr)
        a = [1.0, -2.0 * r * math.cos(2.0 * math.pi * freq / sr), r * r]
        y = lfilter([sum(a)], a, y)
    return y


def damped_pulses(
    times_s: np.ndarray, amplitudes: np.ndarray, seconds: float, sr: int = SR
) -> np.ndarray:
    """A sum of identical decaying resonances (600 and 1500 Hz) starting at ``times_s``.

    Evaluated analytically at the sample times, so pulse times need not fall on samples.
    """
    t = np.arange(int(seconds * sr)) / sr
    y = np.zeros_like(t)
    for onset, amp in zip(times_s, amplitudes, strict=True):
        d = t - onset
        on = (d >= 0) & (d < 0.02)
        dd = d[on]
        y[on] += amp * (
            np.exp(-math.pi * 250 * dd) * np.sin(2 * math.pi * 600 * dd)
            + 0.5 * np.exp(-math.pi * 300 * dd) * np.sin(2 * math.pi * 1500 * dd)
        )
    return 0.5 * y / np.abs(y).max()


def constant_track(samples: np.ndarray, f0: float) -> tuple[torch.Tensor, torch.Tensor]:
    frames = 1 + len(samples) // HOP
    return torch.full((frames,), f0), torch.ones(frames, dtype=torch.bool)


def analyse(samples: np.ndarray, f0: float):
    f0_hz, voiced = constant_track(samples, f0)
    return voice_quality(
        torch.tensor(samples, dtype=torch.float32),
        sample_rate=SR,
        f0_hz=f0_hz,
        voiced=voiced,
        hop_length=HOP,
    )


# ---------------------------------------------------------------------------------------------
# Known answers


def vowel(peaks: list[tuple[float, float]], glottal: bool = True) -> torch.Tensor:
    """One second of a 120 Hz impulse train (optionally with a −12 dB/octave glottal roll-off)
    through cascaded resonators."""
    excitation = np.zeros(SR)
    excitation[:: round(SR / 120)] = 1.0
    if glottal:
        excitation = lfilter([1.0], [1.0, -1.9, 0.9025], excitation)
    y = resonators(excitation, peaks, SR)
    return torch.tensor(0.5 * y / np.abs(y).max(), dtype=torch.float32)


def test_formants_of_a_synthetic_vowel() -> None:
    # Five formants below 5500 Hz, as the default order-10 model (Praat's 5 formants) expects.
    x = vowel([(700, 80), (1200, 90), (2600, 120), (3500, 200), (4500, 250)])
    f = formants(x, sample_rate=SR, hop_length=HOP)
    assert f.shape == (3, 1 + SR // HOP)
    median = f[:, 10:-10].nanmedian(dim=1).values
    assert torch.allclose(median, torch.tensor([700.0, 1200.0, 2600.0]), rtol=0.05), median
    # the same in float64, and only on the frames asked for
    voiced = torch.zeros(f.shape[1], dtype=torch.bool)
    voiced[50] = True
    f64 = formants(x.double(), sample_rate=SR, hop_length=HOP, voiced=voiced)
    assert f64.dtype == torch.float64
    assert torch.isnan(f64[:, ~voiced]).all()
    assert torch.allclose(f64[:, 50].float(), f[:, 50], rtol=1e-3)


def test_max_bandwidth_drops_broad_spurious_poles() -> None:
    # Only three resonances: the order-10 model spends its spare poles on a broad bump near
    # 1.9 kHz (Praat's Burg analysis finds one too); a bandwidth limit removes it.
    x = vowel([(700, 80), (1200, 90), (2600, 120)], glottal=False)
    plain = formants(x, sample_rate=SR, hop_length=HOP)[:, 10:-10].nanmedian(dim=1).values
    assert plain[2] < 2200
    limited = formants(x, sample_rate=SR, hop_length=HOP, max_bandwidth_hz=500.0)
    median = limited[:, 10:-10].nanmedian(dim=1).values
    assert torch.allclose(median, torch.tensor([700.0, 1200.0, 2600.0]), rtol=0.05), median


def test_periodic_pulse_train_has_no_jitter_or_shimmer() -> None:
    period = 1 / 125  # 128 samples exactly
    times = np.arange(0.001, 1.0, period)
    x = damped_pulses(times, np.ones_like(times), 1.0)
    q = analyse(x, 125.0)
    assert q.pulses.shape[0] >= 120
    assert float(q.jitter_local) < 1e-4
    assert float(q.shimmer_local) < 1e-3
    assert float(q.hnr_db) > 40.0
    assert q.hnr_frames_db.shape == (1 + len(x) // HOP,)


def test_known_period_perturbation_gives_the_known_jitter() -> None:
    # Periods alternate 8 ms ± 0.1 ms: mean |T_i − T_i+1| / mean T = 0.2 / 8 = 2.5 %.
    periods = 0.008 + 0.0001 * np.where(np.arange(125) % 2 == 0, 1.0, -1.0)
    times = 0.001 + np.concatenate([[0.0], np.cumsum(periods)])
    x = damped_pulses(times, np.ones_like(times), 1.0)
    q = analyse(x, 125.0)
    assert float(q.jitter_local) == pytest.approx(0.025, rel=0.1)
    assert float(q.shimmer_local) < 0.02


def test_known_amplitude_perturbation_gives_the_known_shimmer() -> None:
    # Amplitudes alternate 1 ± 0.1: mean |A_i − A_i+1| / mean A = 0.2.
    times = np.arange(0.001, 1.0, 1 / 125)
    amplitudes = 1.0 + 0.1 * np.where(np.arange(len(times)) % 2 == 0, 1.0, -1.0)
    q = analyse(damped_pulses(times, amplitudes, 1.0), 125.0)
    assert float(q.shimmer_local) == pytest.approx(0.2, rel=0.1)
    assert float(q.jitter_local) < 1e-3


@pytest.mark.parametrize("snr_db", [0.0, 10.0, 20.0])
def test_hnr_of_a_sine_in_noise_is_its_snr(snr_db: float) -> None:
    rng = np.random.default_rng(0)
    t = np.arange(2 * SR) / SR
    sine = np.sin(2 * np.pi * 150 * t)  # power 1/2
    noise = rng.standard_normal(len(t)) * math.sqrt(0.5 / 10 ** (snr_db / 10))
    x = (0.3 * (sine + noise)).astype(np.float32)
    q = analyse(x, 150.0)
    assert float(q.hnr_db) == pytest.approx(snr_db, abs=2.0)


def test_silence_gives_nan_without_crashing() -> None:
    x = torch.zeros(SR)
    f = formants(x, sample_rate=SR, hop_length=HOP)
    assert torch.isnan(f).all()
    frames = 1 + SR // HOP
    for voiced in (torch.zeros(frames, dtype=torch.bool), torch.ones(frames, dtype=torch.bool)):
        q = voice_quality(
            x, sample_rate=SR, f0_hz=torch.full((frames,), 100.0), voiced=voiced, hop_length=HOP
        )
        assert math.isnan(float(q.jitter_local))
        assert math.isnan(float(q.shimmer_local))
        assert math.isnan(float(q.hnr_db))
        assert torch.isnan(q.hnr_frames_db).all()
        assert q.pulses.numel() == 0


def test_unvoiced_frames_have_no_hnr_and_odd_lengths_work() -> None:
    times = np.arange(0.001, 1.0, 1 / 125)
    x = damped_pulses(times, np.ones_like(times), 1.0)[:15999]  # not a multiple of the hop
    f0_hz, voiced = constant_track(x, 125.0)
    voiced[:30] = False
    f0_hz[:30] = 0.0
    q = voice_quality(
        torch.tensor(x, dtype=torch.float32),
        sample_rate=SR,
        f0_hz=f0_hz,
        voiced=voiced,
        hop_length=HOP,
    )
    assert torch.isnan(q.hnr_frames_db[:30]).all()
    assert not torch.isnan(q.hnr_frames_db[31:-1]).any()
    assert float(q.pulses.min()) > 29.5 * HOP


def test_bad_arguments_raise_invalid_options() -> None:
    x = torch.zeros(SR)
    frames = 1 + SR // HOP
    f0_hz, voiced = torch.full((frames,), 100.0), torch.ones(frames, dtype=torch.bool)
    with pytest.raises(InvalidOptions, match="n_formants"):
        formants(x, sample_rate=SR, hop_length=HOP, n_formants=6)
    with pytest.raises(InvalidOptions, match="max_formant_hz"):
        formants(x, sample_rate=SR, hop_length=HOP, max_formant_hz=9000.0)
    with pytest.raises(InvalidOptions, match="hop_length"):
        formants(x, sample_rate=SR, hop_length=0)
    with pytest.raises(InvalidOptions, match=r"shape \(time,\)"):
        formants(x[None], sample_rate=SR, hop_length=HOP)
    with pytest.raises(InvalidOptions, match="voiced"):
        formants(x, sample_rate=SR, hop_length=HOP, voiced=voiced[:-1])
    with pytest.raises(InvalidOptions, match="floating-point"):
        voice_quality(x.long(), sample_rate=SR, f0_hz=f0_hz, voiced=voiced, hop_length=HOP)
    with pytest.raises(InvalidOptions, match=r"f0_hz must have shape \(frame,\) = \(101,\)"):
        voice_quality(x, sample_rate=SR, f0_hz=f0_hz[:-1], voiced=voiced, hop_length=HOP)
    with pytest.raises(InvalidOptions, match="bool"):
        voice_quality(x, sample_rate=SR, f0_hz=f0_hz, voiced=voiced.float(), hop_length=HOP)
    bad = f0_hz.clone()
    bad[7] = 0.0
    with pytest.raises(InvalidOptions, match="frame 7"):
        voice_quality(x, sample_rate=SR, f0_hz=bad, voiced=voiced, hop_length=HOP)
    with pytest.raises(InvalidOptions, match="f_min"):
        voice_quality(x, sample_rate=SR, f0_hz=f0_hz, voiced=voiced, hop_length=HOP, f_min=0.0)


# ---------------------------------------------------------------------------------------------
# Parity with Praat (parselmouth) on real speech

PARITY_FILES = ["speech/198-209-0000.ogg", "speech/5703-47212-0000.ogg", "vad/count.wav"]


def praat_reference(path: Path) -> dict:
    """Praat's analyses of a recording, with its pitch resampled onto our 10 ms frames."""
    parselmouth = pytest.importorskip("parselmouth")
    call = parselmouth.praat.call
    y, sr = sf.read(path, dtype="float64")
    hop = round(0.01 * sr)
    sound = parselmouth.Sound(y, sampling_frequency=sr)
    pitch = sound.to_pitch(pitch_floor=65, pitch_ceiling=400)  # as "To PointProcess" uses
    frame_times = np.arange(1 + len(y) // hop) * hop / sr
    nearest = np.clip(np.round((frame_times - pitch.xs()[0]) / pitch.time_step), 0, None)
    f0 = pitch.selected_array["frequency"][np.minimum(nearest.astype(int), pitch.n_frames - 1)]
    pulses = call(sound, "To PointProcess (periodic, cc)", 65, 400)
    harmonicity = sound.to_harmonicity_cc(time_step=0.01, minimum_pitch=65)
    formant = sound.to_formant_burg(time_step=0.01, max_number_of_formants=5, maximum_formant=5500)
    formant_times = np.array(formant.xs())
    return {
        "samples": y,
        "sample_rate": sr,
        "hop": hop,
        "f0": f0,
        "jitter": call(pulses, "Get jitter (local)", 0, 0, 0.0001, 0.02, 1.3),
        "shimmer": call([sound, pulses], "Get shimmer (local)", 0, 0, 0.0001, 0.02, 1.3, 1.6),
        "hnr_times": np.array(harmonicity.xs()),
        "hnr": harmonicity.values[0],
        "formant_times": formant_times,
        "formants": np.array(
            [[formant.get_value_at_time(k, t) for t in formant_times] for k in (1, 2)]
        ),
        "formant_voiced": np.isfinite([pitch.get_value_at_time(t) for t in formant_times]),
    }


@pytest.fixture(scope="module", params=PARITY_FILES)
def parity(request: pytest.FixtureRequest) -> tuple[dict, object, torch.Tensor]:
    ref = praat_reference(shared_file(request.param))
    x = torch.tensor(ref["samples"], dtype=torch.float32)
    f0_hz = torch.tensor(ref["f0"], dtype=torch.float32)
    voiced = f0_hz > 0
    common = {"sample_rate": ref["sample_rate"], "hop_length": ref["hop"]}
    q = voice_quality(x, f0_hz=f0_hz, voiced=voiced, **common)
    f = formants(x, voiced=voiced, **common)
    return ref, q, f


def test_jitter_and_shimmer_match_praat(parity: tuple) -> None:
    ref, q, _ = parity
    assert float(q.jitter_local) == pytest.approx(ref["jitter"], rel=0.2)
    assert float(q.shimmer_local) == pytest.approx(ref["shimmer"], rel=0.2)


def test_hnr_matches_praat_on_the_frames_both_call_voiced(parity: tuple) -> None:
    ref, q, _ = parity
    ours = q.hnr_frames_db.numpy()
    index = np.round(ref["hnr_times"] * ref["sample_rate"] / ref["hop"]).astype(int)
    ours = ours[np.minimum(index, len(ours) - 1)]
    both = (ref["hnr"] > -200) & np.isfinite(ours)
    assert both.sum() > 200
    assert ours[both].mean() == pytest.approx(ref["hnr"][both].mean(), rel=0.2)
    assert np.median(np.abs(ours[both] - ref["hnr"][both])) < 1.5  # dB, frame by frame


def test_formants_match_praat_on_voiced_frames(parity: tuple) -> None:
    ref, _, f = parity
    ours = f.numpy()
    index = np.round(ref["formant_times"] * ref["sample_rate"] / ref["hop"]).astype(int)
    index = np.minimum(index, ours.shape[1] - 1)
    both = ref["formant_voiced"] & np.isfinite(ours[0, index])
    assert both.sum() > 200
    relative = np.abs(ours[:2, index[both]] - ref["formants"][:, both]) / ref["formants"][:, both]
    assert np.nanmedian(relative[0]) <= 0.10  # F1
    assert np.nanmedian(relative[1]) <= 0.10  # F2
