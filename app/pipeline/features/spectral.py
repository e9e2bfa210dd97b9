"""Spectral features: STFT power, linear spectrogram, log-mel spectrogram, MFCC and deltas.

Each feature takes the precomputed power spectrogram (``power=``), so one STFT per request serves
every feature and the loudness measurement.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import torch
import torchaudio.functional as AF

from app.pipeline.features.frames import FrameSpec, pad_signal
from app.pipeline.types import MelScale, SpectrogramScale

#: Floor under power values before the logarithm (−100 dB).
POWER_FLOOR = 1e-10


def stft_power(samples: torch.Tensor, frames: FrameSpec, *, padded: bool = False) -> torch.Tensor:
    """One-sided power spectrogram ``|STFT|²`` with a periodic Hann window, centred frames.

    Args:
        samples: tensor of shape ``(..., time)``, full scale = 1.0; with ``padded=True``, the
            output of :func:`~app.pipeline.features.frames.pad_signal`.
        frames: the framing (``frames.pad_mode`` at the edges).
        padded: ``samples`` is already padded by ``pad_signal``.

    Returns:
        Tensor of shape ``(..., n_fft // 2 + 1, frame)`` with ``frame = 1 + time // hop_length``
        (``time`` before padding), unnormalized (a sine of amplitude 1 peaks at
        ``(sum(window) / 2)²``).
    """
    if not padded:
        samples = pad_signal(samples, frames)
    shape = samples.shape
    spec = torch.stft(
        samples.reshape(-1, shape[-1]),
        n_fft=frames.n_fft,
        hop_length=frames.hop_length,
        win_length=frames.win_length,
        window=frames.window(samples.device),
        center=False,
        return_complex=True,
    )
    power = spec.real.square()
    power.addcmul_(spec.imag, spec.imag)  # |X|² with one temporary: memory-bound on the CPU
    return power.reshape(*shape[:-1], *power.shape[-2:])


def spectrogram(power: torch.Tensor, scale: SpectrogramScale = "db") -> torch.Tensor:
    """Linear-frequency spectrogram from a power spectrogram.

    Args:
        power: power spectrogram, shape ``(..., freq, frame)``.
        scale: ``"magnitude"`` (``|X|``), ``"power"`` (``|X|²``) or ``"db"``
            (``10·log10(max(|X|², 1e-10))``).

    Returns:
        Tensor of the same shape as ``power``.
    """
    if scale == "power":
        return power
    if scale == "magnitude":
        return power.sqrt()
    return power_to_db(power)


def power_to_db(power: torch.Tensor, top_db: float | None = None) -> torch.Tensor:
    """``10·log10(max(power, 1e-10))``, optionally clamped to ``top_db`` below the maximum.

    Args:
        power: tensor of any shape ``(..., freq, frame)``.
        top_db: when set, values more than ``top_db`` dB below the maximum of each
            ``(freq, frame)`` matrix are raised to that floor (librosa's ``power_to_db``).
    """
    db = power.clamp_min(POWER_FLOOR).log10_().mul_(10.0)  # one new tensor, not three
    if top_db is not None:
        peak = db.amax(dim=(-2, -1), keepdim=True)
        db = torch.maximum(db, peak - top_db)
    return db


@lru_cache(maxsize=32)
def mel_filterbank(
    sample_rate: int,
    n_fft: int,
    n_mels: int,
    f_min: float,
    f_max: float,
    mel_scale: MelScale,
    device: torch.device,
) -> torch.Tensor:
    """Triangular mel filters with Slaney area normalization, shape ``(n_mels, n_fft // 2 + 1)``.

    With ``mel_scale="slaney"`` this is ``librosa.filters.mel`` (its defaults), cached per
    parameter set and device.
    """
    bank = AF.melscale_fbanks(
        n_freqs=n_fft // 2 + 1,
        f_min=f_min,
        f_max=f_max,
        n_mels=n_mels,
        sample_rate=sample_rate,
        norm="slaney",
        mel_scale=mel_scale,
    )
    return bank.T.contiguous().to(device)


def log_mel(
    power: torch.Tensor,
    *,
    frames: FrameSpec,
    n_mels: int = 80,
    f_min: float = 0.0,
    f_max: float | None = None,
    mel_scale: MelScale = "slaney",
    top_db: float | None = None,
) -> torch.Tensor:
    """Log-mel spectrogram in dB.

    Args:
        power: power spectrogram from :func:`stft_power`, shape ``(..., n_fft // 2 + 1, frame)``.
        frames: the framing ``power`` was computed with (for ``sample_rate`` and ``n_fft``).
        n_mels: number of mel bands. Default 80.
        f_min: lowest filter edge, Hz. Default 0.
        f_max: highest filter edge, Hz. Default ``sample_rate / 2``.
        mel_scale: ``"slaney"`` (librosa's default) or ``"htk"``.
        top_db: optional dynamic-range clamp, dB below the maximum (librosa uses 80).

    Returns:
        Tensor of shape ``(..., n_mels, frame)``: ``10·log10(max(mel power, 1e-10))``, dB
        relative to a full-scale power of 1.
    """
    groups = _mel_groups(
        frames.sample_rate,
        frames.n_fft,
        n_mels,
        float(f_min),
        float(f_max if f_max is not None else frames.sample_rate / 2),
        mel_scale,
        power.device,
    )
    mel_power = torch.cat(
        [torch.matmul(weights, power[..., first:end, :]) for first, end, weights in groups], dim=-2
    )
    return power_to_db(mel_power, top_db=top_db)


#: Adjacent mel bands multiplied together by :func:`log_mel`. The filterbank is ~2 % non-zero
#: (each bin feeds at most two bands), so each group's product covers only the bins its bands
#: reach: 8 bands per group do a tenth of the dense product's multiplications for 80 bands at
#: 16 kHz, and took a quarter of its time for 8 × 5 s (the dense product is compute-bound).
MEL_GROUP = 8


@lru_cache(maxsize=32)
def _mel_groups(
    sample_rate: int,
    n_fft: int,
    n_mels: int,
    f_min: float,
    f_max: float,
    mel_scale: MelScale,
    device: torch.device,
) -> tuple[tuple[int, int, torch.Tensor], ...]:
    """:func:`mel_filterbank` cut into groups of ``MEL_GROUP`` adjacent bands, each as
    ``(first bin, end bin, weights)``: ``weights`` of shape ``(bands, end − first)`` holds the
    group's filters on the bins ``[first, end)``; every other bin has weight 0 in all of them."""
    bank = mel_filterbank(sample_rate, n_fft, n_mels, f_min, f_max, mel_scale, device)
    groups = []
    for band in range(0, n_mels, MEL_GROUP):
        weights = bank[band : band + MEL_GROUP]
        bins = weights.ne(0).any(dim=0).nonzero()
        first, end = (int(bins.min()), int(bins.max()) + 1) if bins.numel() else (0, 0)
        groups.append((first, end, weights[:, first:end].contiguous()))
    return tuple(groups)


@lru_cache(maxsize=32)
def _dct_matrix(n_mfcc: int, n_mels: int, device: torch.device) -> torch.Tensor:
    return AF.create_dct(n_mfcc, n_mels, norm="ortho").T.contiguous().to(device)


def mfcc(log_mel_db: torch.Tensor, *, n_mfcc: int = 13) -> torch.Tensor:
    """Mel-frequency cepstral coefficients: orthonormal DCT-II of a dB log-mel spectrogram.

    This is ``librosa.feature.mfcc``'s definition (``dct_type=2, norm="ortho"``, no liftering);
    coefficient 0 is kept (it tracks the frame's log energy).

    Args:
        log_mel_db: log-mel spectrogram in dB, shape ``(..., n_mels, frame)``.
        n_mfcc: number of coefficients (≤ ``n_mels``). Default 13.

    Returns:
        Tensor of shape ``(..., n_mfcc, frame)``.
    """
    dct = _dct_matrix(n_mfcc, log_mel_db.shape[-2], log_mel_db.device)
    return torch.matmul(dct, log_mel_db)


def with_deltas(
    features: torch.Tensor,
    order: int,
    win_length: int = 5,
    *,
    lengths: Sequence[int] | None = None,
) -> torch.Tensor:
    """Append Δ (and ΔΔ) regression coefficients along the feature axis.

    The HTK/Kaldi regression formula over ``win_length`` frames (default 5, i.e. ±2),
    ``Δx[t] = Σₙ n·(x[t+n] − x[t−n]) / (2·Σₙ n²)``, with the edge frames replicated
    (``torchaudio.functional.compute_deltas(mode="replicate")``).

    Args:
        features: tensor of shape ``(..., feature, frame)``; with ``lengths``, a batch
            ``(batch, ..., feature, frame)`` of items zero-extended to a common frame count.
        order: 0 (unchanged), 1 (append Δ) or 2 (append Δ and ΔΔ).
        win_length: regression window, frames (odd, ≥ 3).
        lengths: each batch item's own frame count: its last frame is replicated past it, so its
            coefficients are those it would have alone (frames past it are filler). Default:
            every item has all the frames.

    Returns:
        Tensor of shape ``(..., feature * (order + 1), frame)``.
    """
    if order == 0:
        return features
    reach, frames = (win_length - 1) // 2, features.shape[-1]
    # Source frame of every position of the edge-replicated track, per batch item.
    positions = torch.arange(-reach, frames + reach, device=features.device).clamp_min(0)
    if lengths is None:
        index = positions.clamp_max(frames - 1)
    else:
        ends = torch.tensor(list(lengths), device=features.device)
        index = torch.minimum(positions, (ends - 1).view(-1, *[1] * (features.dim() - 1)))
    index = index.expand(*features.shape[:-1], -1)
    scale = 1.0 / (2 * sum(n * n for n in range(1, reach + 1)))
    parts = [features]
    for _ in range(order):
        previous = parts[-1]
        extended = previous.gather(-1, index)
        delta = torch.zeros_like(previous)
        for n in range(1, reach + 1):
            delta.add_(
                extended[..., reach + n : reach + n + frames]
                - extended[..., reach - n : reach - n + frames],
                alpha=n,
            )
        parts.append(delta.mul_(scale))
    return torch.cat(parts, dim=-2)
