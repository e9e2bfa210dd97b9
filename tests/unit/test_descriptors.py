"""Spectral and temporal descriptors: known-answer signals, and parity with librosa (and a Praat
reimplementation of de Jong & Wempe's syllable nuclei) on real speech.

Tolerances of the librosa comparisons (same framing: n_fft=512, hop 160, win 400, centred, reflect
padding; float32 on both sides):

* every row: Pearson correlation ≥ 0.99 over all frames (measured ≥ 0.99999), except contrast_6,
  checked on its resolvable frames only (see below);
* centroid, bandwidth: relative error ≤ 1e-4 on energetic frames (RMS within 30 dB of the
  recording's peak; measured ≤ 4e-6); rolloff: the same bin on ≥ 99 % of those frames, never more
  than one bin apart (measured: identical everywhere); flatness: relative error ≤ 1e-2 (measured
  ≤ 1.2e-3, the geometric mean of float32 powers down to 1e-10); onset strength: ≤ 1e-3 dB
  absolute (measured ≤ 5e-5).
* contrast: ≤ 0.1 dB absolute where the band's valley magnitude is at least 1e-6 of the recording's
  peak magnitude. Below that the valley (the band's smallest |X|) is float32 FFT round-off, which
  torch and numpy round differently: the LibriSpeech clips, resampled from 22.05 kHz, are empty
  above ~7.6 kHz, so contrast_6 (6.4–8 kHz) there differs by up to 10 dB and correlates at 0.97
  over all frames. On native 16 kHz recordings every contrast row correlates at ≥ 0.99999.
"""

from __future__ import annotations

import math

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch

from app.errors import InvalidOptions
from app.pipeline.features.descriptors import (
    autocorrelation_peak,
    loudness_frames_db,
    speaking_rate,
    spectral_descriptors,
    syllable_nuclei,
    temporal_descriptors,
)
from app.pipeline.features.frames import FrameSpec
from app.pipeline.features.spectral import stft_power
from tests.conftest import shared_file, tone

SR = 16000
FRAMES = FrameSpec(SR, 512, 400, 160)
LIBROSA_FRAMING = {
    "sr": SR,
    "n_fft": 512,
    "hop_length": 160,
    "win_length": 400,
    "center": True,
    "pad_mode": "reflect",
}
EULER_GAMMA = 0.5772156649015329
SPEECH = ["speech/198-209-0000.ogg", "speech/5703-47212-0000.ogg"]
NATIVE_16K = ["vad/count.wav", "diarization/diarizationExample2.wav"]


def load_16k(relative: str) -> np.ndarray:
    y, sr = sf.read(shared_file(relative), dtype="float32")
    return librosa.resample(y, orig_sr=sr, target_sr=SR) if sr != SR else y


def spectral_rows(samples: np.ndarray | torch.Tensor, **kwargs: object) -> dict[str, np.ndarray]:
    x = torch.as_tensor(samples, dtype=torch.float32)
    values, rows = spectral_descriptors(stft_power(x, FRAMES), frames=FRAMES, **kwargs)  # type: ignore[arg-type]
    return dict(zip(rows, values.numpy(), strict=True))


def temporal_rows(samples: np.ndarray | torch.Tensor) -> dict[str, np.ndarray]:
    x = torch.as_tensor(samples, dtype=torch.float32)
    values, rows = temporal_descriptors(x, stft_power(x, FRAMES), frames=FRAMES)
    return dict(zip(rows, values.numpy(), strict=True))


def white_noise(seconds: float, seed: int = 0, amplitude: float = 0.1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (amplitude * rng.standard_normal(int(seconds * SR))).astype(np.float32)


def lowpass(samples: np.ndarray, cutoff_hz: float) -> np.ndarray:
    spectrum = np.fft.rfft(samples)
    spectrum[np.fft.rfftfreq(len(samples), 1 / SR) > cutoff_hz] = 0
    return np.fft.irfft(spectrum, n=len(samples)).astype(np.float32)


def harmonic_tone(f0: float, seconds: float, n_harmonics: int = 8) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    x = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, n_harmonics + 1))
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


# --------------------------------------------------------------------------------------------------
# Shapes, batches, validation
# --------------------------------------------------------------------------------------------------


def test_rows_shapes_and_batch_consistency() -> None:
    x = torch.stack([torch.tensor(white_noise(1.0, seed=1)), torch.tensor(tone(440, 1.0, SR))])
    power = stft_power(x, FRAMES)
    spectral, rows = spectral_descriptors(power, frames=FRAMES)
    temporal, trows = temporal_descriptors(x, power, frames=FRAMES)
    frames = 1 + x.shape[-1] // 160
    assert rows == [
        "centroid_hz",
        "bandwidth_hz",
        "rolloff_hz",
        "flatness",
        "flux",
        *[f"contrast_{k}" for k in range(7)],
        "entropy",
        "slope",
        "slope_0_500",
        "slope_500_1500",
    ]
    assert trows == ["autocorr_peak", "envelope", "onset_strength"]
    assert spectral.shape == (2, 16, frames)
    assert temporal.shape == (2, 3, frames)
    assert loudness_frames_db(power, frames=FRAMES).shape == (2, frames)
    for i in range(2):
        one = stft_power(x[i], FRAMES)
        assert torch.allclose(spectral[i], spectral_descriptors(one, frames=FRAMES)[0], atol=1e-4)
        assert torch.allclose(temporal[i], temporal_descriptors(x[i], one, frames=FRAMES)[0])
    assert torch.isfinite(spectral).all() and torch.isfinite(temporal).all()


def test_short_and_silent_signals_are_finite() -> None:
    for n in (0, 1, 100, 399):
        x = torch.zeros(n)
        power = stft_power(x, FRAMES) if n else torch.zeros(257, 1)
        spectral, _ = spectral_descriptors(power, frames=FRAMES)
        assert spectral.shape == (16, 1 + n // 160)
        assert torch.isfinite(spectral).all()
        if n:
            temporal, _ = temporal_descriptors(x, power, frames=FRAMES)
            assert torch.isfinite(temporal).all()
            assert float(temporal[0].abs().max()) == 0.0  # no periodicity in digital silence
    values, rows = spectral_descriptors(torch.zeros(257, 3), frames=FRAMES)
    silent = dict(zip(rows, values, strict=True))
    assert torch.allclose(silent["flatness"], torch.ones(3))
    assert torch.allclose(silent["entropy"], torch.ones(3))
    assert torch.allclose(silent["flux"], torch.zeros(3))


def test_float64_inputs_give_float64_rows() -> None:
    x = torch.tensor(white_noise(0.5, seed=4), dtype=torch.float64)
    power = stft_power(x.float(), FRAMES).double()
    spectral, _ = spectral_descriptors(power, frames=FRAMES)
    temporal, _ = temporal_descriptors(x, power, frames=FRAMES)
    assert spectral.dtype == temporal.dtype == torch.float64
    assert loudness_frames_db(power, frames=FRAMES).dtype == torch.float64
    single, _ = temporal_descriptors(x.float(), power.float(), frames=FRAMES)
    assert torch.allclose(temporal.float(), single, atol=1e-3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rolloff_percent": 1.0}, "rolloff_percent"),
        ({"n_contrast_bands": 0}, "n_contrast_bands"),
        ({"contrast_f_min": -5.0}, "contrast_f_min"),
        ({"n_contrast_bands": 7}, "Nyquist"),
        ({"contrast_f_min": 10.0}, "holds no FFT bin"),
    ],
)
def test_spectral_options_are_validated(kwargs: dict, match: str) -> None:
    with pytest.raises(InvalidOptions, match=match):
        spectral_descriptors(torch.ones(257, 4), frames=FRAMES, **kwargs)


def test_shape_mismatches_and_ranges_are_rejected() -> None:
    x = torch.zeros(1600)
    with pytest.raises(InvalidOptions, match="n_fft // 2 \\+ 1 = 257"):
        spectral_descriptors(torch.ones(256, 11), frames=FRAMES)
    with pytest.raises(InvalidOptions, match="does not belong"):
        temporal_descriptors(x, torch.ones(257, 5), frames=FRAMES)
    with pytest.raises(InvalidOptions, match="f_min=400"):
        autocorrelation_peak(x, frames=FRAMES, f_min=400.0, f_max=100.0)
    with pytest.raises(InvalidOptions, match="Nyquist"):
        autocorrelation_peak(x, frames=FRAMES, f_max=9000.0)
    with pytest.raises(InvalidOptions, match="voiced must have shape"):
        speaking_rate(x, sample_rate=SR, voiced=torch.ones(3, dtype=torch.bool))


# --------------------------------------------------------------------------------------------------
# Spectral descriptors on known-answer signals
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("freq", [300.0, 1234.0, 3000.0])
def test_tone_centroid_bandwidth_flatness_entropy(freq: float) -> None:
    d = spectral_rows(tone(freq, 1.0, SR))
    inner = slice(3, -3)
    assert np.allclose(d["centroid_hz"][inner], freq, rtol=0.02)
    assert np.all(d["bandwidth_hz"][inner] < 150)  # Hann main lobe ±62.5 Hz, plus leakage
    assert np.all(d["flatness"][inner] < 0.01)
    assert np.all(d["entropy"][inner] < 0.35)
    assert np.all(d["flux"][inner] < 0.01)  # a stationary spectrum does not move


def test_white_noise_flatness_entropy_and_slope() -> None:
    d = spectral_rows(white_noise(5.0))
    # The periodogram of white noise is exponentially distributed: E[ln P] = ln E[P] − γ, so the
    # geometric/arithmetic mean ratio is exp(−γ) ≈ 0.561 per frame (not 1), and the normalized
    # entropy is 1 − (1 − γ)/ln(257) ≈ 0.924.
    assert np.median(d["flatness"]) == pytest.approx(math.exp(-EULER_GAMMA), abs=0.02)
    assert np.median(d["entropy"]) == pytest.approx(1 - (1 - EULER_GAMMA) / math.log(257), abs=0.01)
    assert np.median(d["centroid_hz"]) == pytest.approx(4000, rel=0.02)
    assert abs(np.median(d["slope"])) < 0.1  # dB/kHz
    assert np.median(d["flux"]) > 0.3  # independent periodograms differ frame to frame


def test_flatness_and_slope_match_their_definitions() -> None:
    x = np.cumsum(white_noise(1.0, seed=3)).astype(np.float32)  # brown noise, −6 dB/octave
    x -= x.mean()
    d = spectral_rows(x)
    power = stft_power(torch.tensor(x), FRAMES).double().numpy()
    db = 10 * np.log10(np.maximum(power, 1e-10))
    f_khz = np.arange(257) * SR / 512 / 1000
    for row, (lo, hi) in {
        "slope": (0.0, 8.0),
        "slope_0_500": (0.0, 0.5),
        "slope_500_1500": (0.5, 1.5),
    }.items():
        band = (f_khz >= lo) & (f_khz <= hi)
        expected = np.polyfit(f_khz[band], db[band], 1)[0]
        assert np.allclose(d[row], expected, rtol=1e-3, atol=1e-3), row
    assert np.median(d["slope"]) < -1.0
    floored = np.maximum(power, 1e-10)
    flatness = np.exp(np.log(floored).mean(0)) / floored.mean(0)
    assert np.allclose(d["flatness"], flatness, rtol=1e-3)


def test_rolloff_of_band_limited_noise() -> None:
    x = lowpass(white_noise(3.0, seed=2), 2000.0)
    d = spectral_rows(x)
    # Flat magnitude up to 2 kHz: 85 % of the summed magnitude lies below 0.85 × 2 kHz.
    assert np.median(d["rolloff_hz"]) == pytest.approx(1700, rel=0.05)
    assert np.median(spectral_rows(x, rolloff_percent=0.5)["rolloff_hz"]) == pytest.approx(
        1000, rel=0.05
    )


def test_flux_at_a_frequency_switch_and_an_onset() -> None:
    x = np.concatenate([np.zeros(SR // 2), tone(500, 0.5, SR), tone(3000, 0.5, SR)])
    flux = spectral_rows(x.astype(np.float32))["flux"]
    assert flux[:45].max() == 0.0  # silence to silence
    assert 0.9 <= flux[48:53].max() <= 1.0 + 1e-4  # silence to sound: the zero vector
    assert flux[55:95].max() < 0.01
    # 500 Hz → 3 kHz: disjoint unit spectra are √2 apart; the two frames straddling the switch
    # split the way (triangle inequality), and nothing moves afterwards.
    assert 0.7 < flux[98:103].max() < math.sqrt(2)
    assert flux[98:103].sum() >= math.sqrt(2) - 0.01
    assert flux[105:-3].max() < 0.01


def test_contrast_of_a_tone_exceeds_that_of_noise() -> None:
    tonal = spectral_rows(tone(1000, 1.0, SR) + white_noise(1.0, amplitude=1e-3))
    noisy = spectral_rows(white_noise(1.0))
    # 1 kHz lies in band 3 (800–1600 Hz).
    assert np.median(tonal["contrast_3"]) > np.median(noisy["contrast_3"]) + 15


# --------------------------------------------------------------------------------------------------
# Temporal descriptors on known-answer signals
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("f0", [70.0, 123.0, 390.0])
def test_autocorrelation_peak_of_periodic_signals(f0: float) -> None:
    d = temporal_rows(harmonic_tone(f0, 1.0))
    assert np.all(d["autocorr_peak"][3:-3] > 0.97)


@pytest.mark.parametrize("offset", [0.0, 0.5])
def test_autocorrelation_peak_of_noise_is_low(offset: float) -> None:
    # Each frame's mean is removed: a DC offset (trivially "periodic") must not count.
    periodicity = temporal_rows(white_noise(3.0) + offset)["autocorr_peak"]
    assert np.median(periodicity) < 0.25
    assert periodicity.max() < 0.4


def test_envelope_of_a_sine() -> None:
    envelope = temporal_rows(tone(1000, 1.0, SR, amplitude=0.5))["envelope"]
    assert np.allclose(envelope[3:-3], 0.5, atol=1e-3)


def test_onset_strength_peaks_at_a_tone_burst() -> None:
    x = white_noise(2.0, amplitude=1e-3)
    start = int(1.23 * SR)
    x[start : start + SR // 4] += tone(800, 0.25, SR, amplitude=0.5)
    onset = temporal_rows(x)["onset_strength"]
    assert abs(int(np.argmax(onset)) - round(1.23 * 100)) <= 1
    assert onset.max() > 10 * np.median(onset)


def test_loudness_frames_of_a_full_scale_sine() -> None:
    x = torch.tensor(tone(997, 1.0, SR, amplitude=1.0))
    loudness = loudness_frames_db(stft_power(x, FRAMES), frames=FRAMES)
    assert torch.allclose(loudness[3:-3], torch.full_like(loudness[3:-3], -3.01), atol=0.05)
    silent = loudness_frames_db(torch.zeros(257, 4), frames=FRAMES)
    assert torch.equal(silent, torch.full((4,), -120.0))


# --------------------------------------------------------------------------------------------------
# Speaking rate
# --------------------------------------------------------------------------------------------------


def syllable_train(rate_hz: float, seconds: float, *, voiced: bool) -> np.ndarray:
    """Raised-cosine bursts of 120 ms at ``rate_hz`` (harmonic at 140 Hz, or white noise)."""
    n = int(seconds * SR)
    carrier = harmonic_tone(140, seconds) if voiced else white_noise(seconds, seed=5, amplitude=0.1)
    envelope = np.zeros(n, dtype=np.float32)
    burst = np.hanning(int(0.12 * SR)).astype(np.float32)
    for start in (np.arange(0.1, seconds - 0.15, 1 / rate_hz) * SR).astype(int):
        envelope[start : start + len(burst)] = burst
    return carrier * envelope + white_noise(seconds, seed=6, amplitude=1e-4)


@pytest.mark.parametrize("rate", [3.0, 4.5])
def test_speaking_rate_of_syllable_like_bursts(rate: float) -> None:
    x = torch.tensor(syllable_train(rate, 10.0, voiced=True))
    expected = len(np.arange(0.1, 10.0 - 0.15, 1 / rate)) / 10.0
    assert speaking_rate(x, sample_rate=SR) == pytest.approx(expected, rel=0.1)


def test_unvoiced_bursts_are_not_syllables_unless_declared_voiced() -> None:
    x = torch.tensor(syllable_train(4.0, 10.0, voiced=False))
    assert speaking_rate(x, sample_rate=SR) < 0.5
    voiced = torch.ones(1 + x.shape[-1] // 160, dtype=torch.bool)
    assert speaking_rate(x, sample_rate=SR, voiced=voiced) == pytest.approx(4.0, rel=0.1)


def test_syllable_nuclei_fall_in_labelled_speech() -> None:
    x = torch.tensor(load_16k("vad/count.wav"))
    segments = [
        (float(start), float(end))
        for start, end, label in (
            line.split("\t") for line in shared_file("vad/count.segments").read_text().splitlines()
        )
        if label == "speech"
    ]
    times = syllable_nuclei(x, sample_rate=SR).numpy() * 0.01
    assert all(any(a <= t <= b for a, b in segments) for t in times)  # none in a pause
    assert all(any(a <= t <= b for t in times) for a, b in segments)  # every word has one


def praat_de_jong_count(y: np.ndarray) -> int:
    """de Jong & Wempe (2009) with Praat's own intensity and pitch (parselmouth)."""
    parselmouth = pytest.importorskip("parselmouth")
    sound = parselmouth.Sound(y.astype(np.float64), SR)
    intensity = sound.to_intensity(minimum_pitch=50)
    values, times = intensity.values[0], intensity.xs()
    median = np.median(values)
    peaks = [
        i
        for i in range(1, len(values) - 1)
        if values[i] > values[i - 1] and values[i] >= values[i + 1] and values[i] > median
    ]
    ends = [*peaks[1:], len(values) - 1]
    valid = [a for a, b in zip(peaks, ends, strict=True) if values[a] - values[a:b].min() > 2]
    pitch = sound.to_pitch_ac(0.02, 30, 4, False, 0.03, 0.25, 0.01, 0.35, 0.25, 450)
    return sum(not np.isnan(pitch.get_value_at_time(times[i])) for i in valid)


@pytest.mark.parametrize("relative", SPEECH + NATIVE_16K)
def test_speaking_rate_of_real_speech(relative: str) -> None:
    y = load_16k(relative)
    x = torch.tensor(y)
    rate = speaking_rate(x, sample_rate=SR)
    assert 2.0 <= rate <= 6.0  # measured 3.74, 2.90, 2.39 (counting, with pauses), 4.26
    count = syllable_nuclei(x, sample_rate=SR).numel()
    assert count == pytest.approx(praat_de_jong_count(y), rel=0.1)


# --------------------------------------------------------------------------------------------------
# Parity with librosa on real speech
# --------------------------------------------------------------------------------------------------


def librosa_reference(y: np.ndarray) -> dict[str, np.ndarray]:
    no_sr = {k: v for k, v in LIBROSA_FRAMING.items() if k != "sr"}
    onset_framing = {k: v for k, v in LIBROSA_FRAMING.items() if k != "center"}
    reference = {
        "centroid_hz": librosa.feature.spectral_centroid(y=y, **LIBROSA_FRAMING)[0],
        "bandwidth_hz": librosa.feature.spectral_bandwidth(y=y, **LIBROSA_FRAMING)[0],
        "rolloff_hz": librosa.feature.spectral_rolloff(y=y, **LIBROSA_FRAMING)[0],
        "flatness": librosa.feature.spectral_flatness(y=y, **no_sr)[0],
        # center=False: no extra n_fft/(2·hop) frame delay on top of the centred STFT.
        "onset_strength": librosa.onset.onset_strength(y=y, center=False, **onset_framing),
    }
    contrast = librosa.feature.spectral_contrast(y=y, **LIBROSA_FRAMING)
    reference.update({f"contrast_{k}": contrast[k] for k in range(7)})
    return reference


@pytest.fixture(scope="module", params=SPEECH + NATIVE_16K)
def recording(request: pytest.FixtureRequest) -> np.ndarray:
    return load_16k(request.param)


def test_librosa_parity(recording: np.ndarray) -> None:
    y = recording
    ours = spectral_rows(y) | temporal_rows(y)
    reference = librosa_reference(y)
    magnitude = np.abs(
        librosa.stft(y, n_fft=512, hop_length=160, win_length=400, pad_mode="reflect")
    )
    rms = librosa.feature.rms(y=y, frame_length=400, hop_length=160)[0]
    energetic = rms > rms.max() * 10 ** (-30 / 20)
    for row, expected in reference.items():
        got = ours[row]
        assert got.shape == expected.shape, row
        corr = np.corrcoef(got, expected)[0, 1]
        if row != "contrast_6":
            assert corr >= 0.99, (row, corr)
        relative = np.abs(got - expected) / np.maximum(np.abs(expected), 1e-9)
        if row in ("centroid_hz", "bandwidth_hz"):
            assert relative[energetic].max() <= 1e-4, row
        elif row == "rolloff_hz":
            bins = np.abs(got - expected)[energetic] / (SR / 512)
            assert (bins < 0.5).mean() >= 0.99 and bins.max() <= 1.0 + 1e-6
        elif row == "flatness":
            assert relative[energetic].max() <= 1e-2
        elif row == "onset_strength":
            assert np.abs(got - expected).max() <= 1e-3
        else:
            k = int(row.split("_")[1])
            lo, hi = [(0, 6), (6, 12), (12, 25), (25, 51), (51, 102), (102, 204), (204, 257)][k]
            resolvable = magnitude[lo:hi].min(0) >= 1e-6 * magnitude.max()
            assert np.abs(got - expected)[resolvable].max() <= 0.1, row
            if resolvable.sum() >= 20:
                assert np.corrcoef(got[resolvable], expected[resolvable])[0, 1] >= 0.99, row


def test_librosa_parity_at_librosa_defaults() -> None:
    """librosa's own defaults (22.05 kHz, n_fft = win = 2048, hop 512, zero padding): the contrast
    bands hold up to 9 quantile bins here, and the rolloff/centroid bin grid is 10.8 Hz."""
    y, sr = sf.read(shared_file(SPEECH[0]), dtype="float32")
    frames = FrameSpec(sr, 2048, 2048, 512, "constant")
    values, rows = spectral_descriptors(stft_power(torch.tensor(y), frames), frames=frames)
    ours = dict(zip(rows, values.numpy(), strict=True))
    contrast = librosa.feature.spectral_contrast(y=y, sr=sr)
    for k in range(6):  # band 6 (6.4–11 kHz) holds MP3/Vorbis-empty bins: round-off valleys
        assert np.corrcoef(ours[f"contrast_{k}"], contrast[k])[0, 1] >= 0.999, k
        assert np.abs(ours[f"contrast_{k}"] - contrast[k]).max() <= 0.1, k
    centroid = librosa.feature.spectral_centroid(y=y, sr=sr)[0]
    rolloff = librosa.feature.spectral_rolloff(y=y, sr=sr)[0]
    assert np.corrcoef(ours["centroid_hz"], centroid)[0, 1] >= 0.9999
    assert (ours["rolloff_hz"] == rolloff).mean() >= 0.99
