"""Generated signals with known speech for the voice activity tests: harmonic bursts (one
voice), white or pink noise at a stated SNR, 8-talker babble, band-limited breath noise."""

from __future__ import annotations

import numpy as np
import torch

SR = 16000
HOP = 160


def harmonic_bursts(
    spans: list[tuple[float, float]],
    *,
    seconds: float = 4.0,
    sample_rate: int = SR,
    snr_db: float | None = None,
    noise: float = 1e-3,
    sine: bool = False,
    seed: int = 0,
) -> torch.Tensor:
    """Speech-like bursts: 150 Hz harmonic complex with 3 Hz vibrato and 4 Hz amplitude
    modulation (or a 440 Hz sine), amplitude 0.3, in white noise (``noise`` RMS, or ``snr_db``
    below the bursts' power)."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    phase = 2 * np.pi * np.cumsum(150 * (1 + 0.03 * np.sin(2 * np.pi * 3 * t))) / sample_rate
    if sine:
        source = np.sin(2 * np.pi * 440 * t)
    else:
        source = sum(np.sin(k * phase) / k for k in range(1, 20))
        source = source * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
    active = np.zeros(len(t), bool)
    for a, b in spans:
        active |= (t >= a) & (t < b)
    y = np.where(active, 0.3 * source, 0.0)
    rng = np.random.default_rng(seed)
    level = noise if snr_db is None else np.sqrt(np.mean(y[active] ** 2) / 10 ** (snr_db / 10))
    return torch.tensor(y + level * rng.standard_normal(len(t)), dtype=torch.float32)


def bursts_in_noise(
    spans: list[tuple[float, float]], colour: str, snr_db: float, seed: int, seconds: float = 4.0
) -> torch.Tensor:
    """:func:`harmonic_bursts` without noise plus white or pink (1/f power) noise ``snr_db``
    below the bursts' power."""
    clean = harmonic_bursts(spans, seconds=seconds, noise=0.0).numpy().astype(np.float64)
    noise = np.random.default_rng(seed).standard_normal(clean.shape[-1])
    if colour == "pink":
        spectrum = np.fft.rfft(noise)
        f = np.arange(len(spectrum), dtype=float)
        f[0] = 1.0
        noise = np.fft.irfft(spectrum / np.sqrt(f), clean.shape[-1])
    power = np.mean(clean[clean != 0] ** 2)
    noise *= np.sqrt(power / 10 ** (snr_db / 10)) / noise.std()
    return torch.tensor(clean + noise, dtype=torch.float32)


def babble_noise(seconds: float, seed: int, talkers: int = 8) -> np.ndarray:
    """Babble-like noise: ``talkers`` harmonic voices (F0 90–260 Hz with vibrato) switched on
    and off at 3–5 Hz (syllables), summed; its level varies from frame to frame."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    out = np.zeros_like(t)
    for _ in range(talkers):
        vibrato = 0.05 * np.sin(2 * np.pi * rng.uniform(2, 5) * t + rng.uniform(0, 6))
        phase = 2 * np.pi * np.cumsum(rng.uniform(90, 260) * (1 + vibrato)) / SR
        voice = sum(np.sin(k * phase) / k for k in range(1, 25))
        on = np.sin(2 * np.pi * rng.uniform(3, 5) * t + rng.uniform(0, 6)) > rng.uniform(-0.2, 0.4)
        out += voice * np.convolve(on.astype(float), np.ones(160) / 160, mode="same")
    return out


def band_noise(
    band_hz: tuple[float, float],
    rms: float,
    seed: int,
    *,
    span: tuple[float, float] | None = None,
    seconds: float = 4.0,
) -> torch.Tensor:
    """White noise limited to ``band_hz`` with ``rms`` (over the whole signal), optionally
    only over ``span`` (seconds, 40 ms linear ramps)."""
    n = int(seconds * SR)
    spectrum = np.fft.rfft(np.random.default_rng(seed).standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SR)
    spectrum[(f < band_hz[0]) | (f > band_hz[1])] = 0
    noise = np.fft.irfft(spectrum, n)
    noise *= rms / noise.std()
    if span is not None:
        t = np.arange(n) / SR
        noise *= np.clip(np.minimum(t - span[0], span[1] - t) / 0.04, 0, 1)
    return torch.tensor(noise, dtype=torch.float32)
