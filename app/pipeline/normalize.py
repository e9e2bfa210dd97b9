"""Level and format normalization: DC offset, channels, resampling, loudness (ITU-R BS.1770).

All functions take and return torch tensors on any device; kernels (resampling filters, K-weighting
responses) are built once per parameter set and cached.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio

from app.errors import InvalidOptions
from app.pipeline.types import ChannelMode

#: BS.1770 gating block length and step, seconds.
LOUDNESS_BLOCK_S = 0.4
LOUDNESS_STEP_S = 0.1
#: BS.1770 absolute gate, LUFS, and relative gate, LU below the ungated level.
ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0


def remove_dc(samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Subtract each channel's mean.

    Args:
        samples: tensor of shape ``(..., channel, time)``.

    Returns:
        ``(centred, offset)``: the centred samples, same shape, and the removed offset per channel,
        shape ``(..., channel)``, in full-scale units.
    """
    offset = samples.mean(dim=-1)
    return samples - offset.unsqueeze(-1), offset


def select_channels(samples: torch.Tensor, mode: ChannelMode) -> torch.Tensor:
    """Downmix, keep, or pick channels.

    Args:
        samples: tensor of shape ``(channel, time)``.
        mode: ``"mono"`` averages the channels; ``"keep"`` returns them unchanged; an integer picks
            that channel (0-based).

    Returns:
        Tensor of shape ``(channel', time)`` with ``channel' = 1`` unless ``mode == "keep"``.

    Raises:
        InvalidOptions: the channel index does not exist in the input.
    """
    if mode == "keep":
        return samples
    if mode == "mono":
        return samples if samples.shape[0] == 1 else samples.mean(dim=0, keepdim=True)
    if not 0 <= mode < samples.shape[0]:
        raise InvalidOptions(
            f"channels={mode} asks for channel {mode}, but the input has {samples.shape[0]} "
            f"channel(s) (0-based index 0–{samples.shape[0] - 1})."
        )
    return samples[mode : mode + 1]


@lru_cache(maxsize=32)
def _resampler(
    orig_freq: int, new_freq: int, device: torch.device
) -> torchaudio.transforms.Resample:
    return torchaudio.transforms.Resample(
        orig_freq,
        new_freq,
        resampling_method="sinc_interp_kaiser",
        lowpass_filter_width=16,
        rolloff=0.945,
        beta=8.555,
    ).to(device)


def resample(samples: torch.Tensor, orig_freq: int, new_freq: int) -> torch.Tensor:
    """Band-limited (anti-aliased) sinc resampling.

    A Kaiser-windowed sinc (16 zero crossings, β = 8.555, cut-off at 94.5 % of the lower Nyquist
    frequency) is built once per rate pair and device.

    Args:
        samples: tensor of shape ``(..., time)``.
        orig_freq: input rate, Hz.
        new_freq: output rate, Hz.

    Returns:
        Tensor of shape ``(..., ceil(time * new_freq / orig_freq))``.
    """
    if orig_freq == new_freq:
        return samples
    return _resampler(orig_freq, new_freq, samples.device)(samples)


def zero_outside(y: torch.Tensor, origin: int, length: int) -> torch.Tensor:
    """``y`` (samples ``origin …`` of a signal of ``length`` samples) with the samples before
    0 and from ``length`` on set to zero."""
    lo, hi = max(0, -origin), max(0, min(y.shape[-1], length - origin))
    if lo == 0 and hi == y.shape[-1]:
        return y
    return F.pad(y[lo:hi], (lo, y.shape[-1] - hi))


#: Reach of :func:`~app.pipeline.normalize.resample`'s kernel, in samples of the lower rate
#: (16 zero crossings / 0.945 roll-off, rounded up with room to spare).
_RESAMPLE_REACH = 32


def resample_stretch(
    x: torch.Tensor, *, sample_rate: int, rate: int, lo: int, hi: int
) -> torch.Tensor:
    """Samples ``lo … hi − 1`` of ``resample(x, sample_rate, rate)``, zero outside its
    ``ceil(time · rate / sample_rate)`` samples; float32 on the CPU, shape ``(hi − lo,)``.

    Only the input samples the stretch needs are resampled: a stretch starting at a multiple
    of the resampler's input period, with a margin of the kernel's reach (zero beyond the
    signal's ends, as the whole-signal resampling pads), so the values equal the whole-signal
    ones and the memory does not grow with the signal's length.

    Args:
        x: signal, shape ``(time,)``, full scale = 1.0, on any device.
        sample_rate: ``x``'s rate, Hz.
        rate: the rate of the stretch, Hz.
        lo: first sample of the stretch, at ``rate`` (may be negative).
        hi: end (exclusive), ``≥ lo``.
    """
    n = x.shape[-1]
    if sample_rate == rate:
        part = x[min(max(lo, 0), n) : min(max(hi, 0), n)].detach().float().cpu()
        before = min(max(0, -lo), hi - lo)
        return F.pad(part, (before, hi - lo - before - part.shape[-1]))
    divisor = math.gcd(sample_rate, rate)
    period_in, period_out = sample_rate // divisor, rate // divisor  # samples per period
    reach = -(-_RESAMPLE_REACH * sample_rate // min(sample_rate, rate) // period_in) + 1
    first = lo // period_out - reach  # in resampler periods
    last = -(-hi // period_out) + reach
    a, b = first * period_in, last * period_in  # input samples
    part = x[min(max(a, 0), n) : min(max(b, 0), n)].detach().float().cpu()
    before = min(max(0, -a), b - a)
    stretch = F.pad(part, (before, b - a - before - part.shape[-1]))
    origin = first * period_out
    y = zero_outside(resample(stretch, sample_rate, rate), origin, -(-n * rate // sample_rate))
    return y[lo - origin : hi - origin]


def _biquad_response(b: np.ndarray, a: np.ndarray, omega: np.ndarray) -> np.ndarray:
    z = np.exp(-1j * omega)
    return (b[0] + b[1] * z + b[2] * z**2) / (a[0] + a[1] * z + a[2] * z**2)


def k_weighting_coefficients(sample_rate: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The two BS.1770 K-weighting biquads (high shelf, then RLB high-pass) at ``sample_rate``.

    Designed from the analog prototypes (as libebur128 does), which reproduce the standard's 48 kHz
    coefficients exactly at 48 kHz. Returns ``[(b, a), (b, a)]``, ``a[0] == 1``.
    """
    stages = []
    # Stage 1: high shelf, +4 dB above ~1.5 kHz (head acoustics).
    gain_db, q, fc = 3.999843853973347, 0.7071752369554196, 1681.974450955533
    k = math.tan(math.pi * fc / sample_rate)
    vh = 10 ** (gain_db / 20)
    vb = vh**0.4996667741545416
    a0 = 1.0 + k / q + k * k
    b = np.array(
        [(vh + vb * k / q + k * k) / a0, 2.0 * (k * k - vh) / a0, (vh - vb * k / q + k * k) / a0]
    )
    a = np.array([1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0])
    stages.append((b, a))
    # Stage 2: RLB high-pass at ~38 Hz.
    q, fc = 0.5003270373238773, 38.13547087602444
    k = math.tan(math.pi * fc / sample_rate)
    a0 = 1.0 + k / q + k * k
    b = np.array([1.0, -2.0, 1.0])
    a = np.array([1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0])
    stages.append((b, a))
    return stages


@lru_cache(maxsize=32)
def _k_weighting_power(sample_rate: int, n_fft: int, device: torch.device) -> torch.Tensor:
    omega = 2 * np.pi * np.arange(n_fft // 2 + 1) / n_fft
    response = np.ones_like(omega, dtype=np.complex128)
    for b, a in k_weighting_coefficients(sample_rate):
        response *= _biquad_response(b, a, omega)
    return torch.tensor(np.abs(response) ** 2, dtype=torch.float32, device=device)


def frame_mean_square(
    power: torch.Tensor,
    *,
    n_fft: int,
    window: torch.Tensor,
    sample_rate: int,
    k_weighted: bool = False,
) -> torch.Tensor:
    """Mean square of the signal under each STFT frame, from its power spectrogram (Parseval).

    Args:
        power: one-sided power spectrogram ``|X|²`` of shape ``(..., n_fft // 2 + 1, frame)``.
        n_fft: FFT size used for ``power``.
        window: the analysis window, shape ``(win_length,)``.
        sample_rate: Hz.
        k_weighted: apply the BS.1770 K-weighting magnitude response first.

    Returns:
        Tensor of shape ``(..., frame)``: window-weighted mean square, full scale = 1.0.
    """
    weights = torch.full((n_fft // 2 + 1,), 2.0, device=power.device)
    weights[0] = 1.0
    if n_fft % 2 == 0:
        weights[-1] = 1.0
    if k_weighted:
        weights = weights * _k_weighting_power(sample_rate, n_fft, power.device)
    scale = 1.0 / (n_fft * float(window.pow(2).sum()))
    return torch.einsum("f,...ft->...t", weights * scale, power)


def integrated_loudness(
    power: torch.Tensor, *, sample_rate: int, hop_length: int, n_fft: int, window: torch.Tensor
) -> float:
    """ITU-R BS.1770-4 gated integrated loudness from a centred power spectrogram.

    The K-weighting filter is applied as its exact magnitude response on the STFT bins, and the
    mean square of each 400 ms gating block (75 % overlap) is the average of the Parseval frame
    energies whose centres fall in the block. Channel weights are 1 (mono, stereo, L/R/C).
    Absolute gate −70 LUFS, relative gate −10 LU.

    Args:
        power: power spectrogram of shape ``(channel, n_fft // 2 + 1, frame)`` computed with
            ``center=True`` and hop ``hop_length``.
        sample_rate: Hz.
        hop_length: STFT hop, samples.
        n_fft: FFT size, samples.
        window: analysis window, shape ``(win_length,)``.

    Returns:
        Integrated loudness in LUFS; ``-inf`` when every block is below the absolute gate
        (silence).
    """
    ms = frame_mean_square(
        power, n_fft=n_fft, window=window, sample_rate=sample_rate, k_weighted=True
    )  # (channel, frame)
    return gated_loudness([ms], sample_rate=sample_rate, hop_length=hop_length)[0]


def gated_loudness(
    mean_squares: Sequence[torch.Tensor], *, sample_rate: int, hop_length: int
) -> list[float]:
    """BS.1770-4 gating of several signals at once (one set of tensor operations for all).

    Args:
        mean_squares: per signal, the K-weighted frame mean squares ``(channel, frame_i)``
            (:func:`frame_mean_square`) of a centred STFT with hop ``hop_length``; the signals
            have the same channel count and may differ in length.
        sample_rate: Hz.
        hop_length: STFT hop, samples.

    Returns:
        Per signal, its integrated loudness in LUFS (``-inf`` when every 400 ms block is below
        the absolute gate): what :func:`integrated_loudness` gives for it alone.
    """
    device = mean_squares[0].device
    block, step = LOUDNESS_BLOCK_S * sample_rate, LOUDNESS_STEP_S * sample_rate
    frames = [ms.shape[-1] for ms in mean_squares]
    counts = [max(1, int(((n - 1) * hop_length - block) // step) + 1) for n in frames]
    longest, most = max(frames), max(counts)
    # Cumulative frame energies, zero-extended: (signal, channel, 1 + longest frame).
    cumulative = torch.zeros(len(frames), mean_squares[0].shape[0], longest + 1,
                             dtype=torch.float64, device=device)  # fmt: skip
    for row, ms, n in zip(cumulative, mean_squares, frames, strict=True):
        torch.cumsum(ms.double(), -1, out=row[:, 1 : n + 1])
        row[:, n + 1 :] = row[:, n : n + 1]
    n_frames = torch.tensor(frames, device=device)[:, None]
    valid = torch.arange(most, device=device) < torch.tensor(counts, device=device)[:, None]
    starts = torch.arange(most, device=device, dtype=torch.float64) * step
    first = torch.minimum(torch.ceil(starts / hop_length).long(), n_frames - 1)
    last = torch.maximum(torch.minimum(torch.ceil((starts + block) / hop_length).long(),
                                       n_frames), first + 1)  # fmt: skip
    energy = cumulative.gather(2, last[:, None].expand(-1, cumulative.shape[1], -1))
    energy -= cumulative.gather(2, first[:, None].expand(-1, cumulative.shape[1], -1))
    block_power = (energy / (last - first)[:, None]).sum(1)  # (signal, block)
    block_loudness = -0.691 + 10 * torch.log10(block_power.clamp_min(1e-30))
    gated = valid & (block_loudness > ABSOLUTE_GATE_LUFS)

    def gated_mean(mask: torch.Tensor) -> torch.Tensor:
        return (block_power * mask).sum(-1) / mask.sum(-1).clamp_min(1)

    relative = -0.691 + 10 * torch.log10(gated_mean(gated).clamp_min(1e-30)) + RELATIVE_GATE_LU
    gated &= block_loudness > relative[:, None]
    loudness = -0.691 + 10 * torch.log10(gated_mean(gated).clamp_min(1e-30))
    found = gated.any(-1).tolist()
    return [
        float(v) if ok else float("-inf") for v, ok in zip(loudness.tolist(), found, strict=True)
    ]


def peak_dbfs(samples: torch.Tensor) -> float:
    """Sample peak of ``samples`` (any shape), dBFS; ``-inf`` for digital silence."""
    peak = float(samples.abs().max()) if samples.numel() else 0.0
    return 20 * math.log10(peak) if peak > 0 else float("-inf")


def rms_dbfs(samples: torch.Tensor) -> float:
    """RMS level of ``samples`` (any shape) in dBFS (full-scale sine = −3.01 dBFS)."""
    ms = float(samples.double().pow(2).mean()) if samples.numel() else 0.0
    return 10 * math.log10(ms) if ms > 0 else float("-inf")


@dataclass(frozen=True)
class GainDecision:
    """Gain chosen by :func:`loudness_gain`.

    Attributes:
        gain_db: gain to apply, dB (0 when nothing is to be done).
        limited_by: ``None``, ``"peak"`` (the peak ceiling bound the gain) or ``"max_gain"``.
        silent: the input was below the measurement floor and was left untouched.
    """

    gain_db: float
    limited_by: Literal["peak", "max_gain"] | None
    silent: bool


def loudness_gain(
    *, level: float, target: float, peak: float, peak_ceiling_dbfs: float, max_gain_db: float
) -> GainDecision:
    """Gain that moves ``level`` to ``target`` without the peak crossing the ceiling.

    Args:
        level: measured level (LUFS, or dBFS for RMS/peak modes); ``-inf`` for silence.
        target: wanted level, same unit as ``level``.
        peak: the sample peak, dBFS.
        peak_ceiling_dbfs: highest allowed sample peak after the gain, dBFS.
        max_gain_db: largest boost allowed, dB, so that near-silent input is not amplified
            into noise.
    """
    if not math.isfinite(level) or not math.isfinite(peak):
        return GainDecision(0.0, None, True)
    gain = target - level
    limited_by: Literal["peak", "max_gain"] | None = None
    if gain > max_gain_db:
        gain, limited_by = max_gain_db, "max_gain"
    if peak + gain > peak_ceiling_dbfs:
        gain, limited_by = peak_ceiling_dbfs - peak, "peak"
    return GainDecision(gain, limited_by, False)


def db_to_amplitude(gain_db: float) -> float:
    """Linear amplitude factor of a gain in dB."""
    return 10 ** (gain_db / 20)
