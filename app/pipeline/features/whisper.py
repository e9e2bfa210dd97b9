"""Whisper's log-mel input features, reproduced without depending on ``openai-whisper``.

:func:`whisper_log_mel` is ``whisper.audio.log_mel_spectrogram``: 16 kHz audio, a 400-sample
periodic Hann window (25 ms) every 160 samples (10 ms), ``torch.stft`` with ``center=True`` and
reflect padding, the last STFT frame dropped, power spectrum, Slaney mel filters (the matrices
whisper ships in ``assets/mel_filters.npz``, rebuilt here bit for bit), ``log10(max(mel, 1e-10))``,
clamped to 8 (= 80 dB) below the maximum, then scaled as ``(x + 4) / 4``.

Frames follow whisper's layout, not :class:`~app.pipeline.features.frames.FrameSpec`'s: frame
``t`` is centred on sample ``t * 160`` like ours, but the final frame is dropped, so ``T`` samples
give ``T // 160`` frames (ours give ``1 + T // 160``).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Literal

import torch
import torch.nn.functional as F

from app.errors import InvalidOptions

WhisperMels = Literal[80, 128]

#: Whisper's fixed analysis parameters (``whisper.audio``).
WHISPER_SAMPLE_RATE = 16000
WHISPER_N_FFT = 400
WHISPER_HOP_LENGTH = 160
#: Frames per second of the log-mel output (10 ms hop).
WHISPER_FRAME_RATE_HZ = WHISPER_SAMPLE_RATE / WHISPER_HOP_LENGTH
#: Samples in whisper's 30 s input window (``whisper.audio.N_SAMPLES``) and its frames.
WHISPER_N_SAMPLES = 30 * WHISPER_SAMPLE_RATE
WHISPER_N_FRAMES = WHISPER_N_SAMPLES // WHISPER_HOP_LENGTH


def whisper_num_frames(num_samples: int, *, pad_to_30s: bool = False) -> int:
    """Number of whisper log-mel frames for ``num_samples`` samples at 16 kHz.

    ``num_samples // 160`` (the centred STFT gives one more frame, which whisper drops), or
    exactly 3000 with ``pad_to_30s``.
    """
    if num_samples < 0:
        raise InvalidOptions(f"num_samples must be ≥ 0, got {num_samples}")
    return WHISPER_N_FRAMES if pad_to_30s else num_samples // WHISPER_HOP_LENGTH


def _hz_to_mel_slaney(hz: torch.Tensor) -> torch.Tensor:
    logstep = math.log(6.4) / 27.0
    linear = hz / (200.0 / 3.0)
    return torch.where(hz >= 1000.0, 15.0 + torch.log(hz / 1000.0) / logstep, linear)


def _mel_to_hz_slaney(mel: torch.Tensor) -> torch.Tensor:
    logstep = math.log(6.4) / 27.0
    linear = mel * (200.0 / 3.0)
    return torch.where(mel >= 15.0, 1000.0 * torch.exp(logstep * (mel - 15.0)), linear)


@lru_cache(maxsize=8)
def whisper_mel_filters(n_mels: int, device: torch.device) -> torch.Tensor:
    """Whisper's mel filterbank, shape ``(n_mels, 201)``, float32, cached per device.

    ``librosa.filters.mel(sr=16000, n_fft=400, n_mels=n_mels)`` (Slaney mel scale, Slaney area
    normalization, 0–8000 Hz), computed in float64 with librosa's float32 rounding steps so the
    result equals whisper's ``assets/mel_filters.npz`` exactly.
    """
    f64 = torch.float64
    fft_hz = torch.arange(WHISPER_N_FFT // 2 + 1, dtype=f64) * (WHISPER_SAMPLE_RATE / WHISPER_N_FFT)
    edges = _hz_to_mel_slaney(torch.tensor([0.0, WHISPER_SAMPLE_RATE / 2], dtype=f64))
    mel_hz = _mel_to_hz_slaney(
        torch.linspace(float(edges[0]), float(edges[1]), n_mels + 2, dtype=f64)
    )
    width = mel_hz.diff()
    ramps = mel_hz[:, None] - fft_hz[None, :]
    lower = -ramps[:-2] / width[:-1, None]
    upper = ramps[2:] / width[1:, None]
    # librosa stores the triangles in float32, then scales them by the float64 area norm.
    triangles = torch.minimum(lower, upper).clamp_min(0.0).float().double()
    area_norm = 2.0 / (mel_hz[2:] - mel_hz[:-2])
    return (triangles * area_norm[:, None]).float().to(device)


def whisper_log_mel(
    samples: torch.Tensor,
    *,
    sample_rate: int,
    n_mels: WhisperMels = 80,
    pad_to_30s: bool = False,
) -> torch.Tensor:
    """Whisper's log-mel spectrogram (``whisper.audio.log_mel_spectrogram``).

    Args:
        samples: audio of shape ``(..., time)`` at 16 kHz, full scale = 1.0 (whisper's
            ``load_audio`` gives int16 / 32768).
        sample_rate: Hz; must be 16000 (whisper's only rate — resample first).
        n_mels: 80 (whisper tiny … large-v2) or 128 (large-v3 and turbo). Default 80.
        pad_to_30s: apply ``whisper.audio.pad_or_trim`` first: zero-pad at the end, or trim,
            to exactly 480 000 samples (30 s), giving exactly 3000 frames — the encoder's
            input. Audio longer than 30 s is cut at 30 s (chunk it beforehand to keep the
            rest). Default ``False``: all of the audio, ``time // 160`` frames.

    Returns:
        Tensor of shape ``(..., n_mels, frame)`` at 100 frames/s (frame ``t`` centred on
        sample ``t * 160``; see :func:`whisper_num_frames`), in whisper's scaled log10 units:
        ``(max(log10(mel), peak − 8) + 4) / 4`` where ``peak`` is the maximum log10 value of
        each ``(n_mels, frame)`` matrix. (Whisper takes the maximum over its whole input
        tensor; for one clip, which is how whisper computes it, the two agree.) Float32 or
        float64 following ``samples``.

    Raises:
        InvalidOptions: ``sample_rate`` is not 16000, ``n_mels`` is not 80 or 128, or
            ``samples`` is not a floating-point tensor.
    """
    if sample_rate != WHISPER_SAMPLE_RATE:
        raise InvalidOptions(
            f"whisper features need 16000 Hz audio, got sample_rate={sample_rate}; resample first"
        )
    if n_mels not in (80, 128):
        raise InvalidOptions(f"whisper n_mels must be 80 or 128, got {n_mels}")
    if not samples.is_floating_point():
        raise InvalidOptions(f"whisper features need float samples, got dtype {samples.dtype}")

    shape = samples.shape
    flat = samples.reshape(math.prod(shape[:-1]), shape[-1])
    if pad_to_30s:
        flat = flat[:, :WHISPER_N_SAMPLES]
        flat = F.pad(flat, (0, WHISPER_N_SAMPLES - flat.shape[-1]))
    count = whisper_num_frames(flat.shape[-1])
    if count == 0:
        return samples.new_zeros(*shape[:-1], n_mels, 0)

    # Whisper's reflect padding needs more than n_fft // 2 samples; shorter clips (160–200
    # samples, which whisper itself rejects) are zero-padded instead.
    pad_mode = "reflect" if flat.shape[-1] > WHISPER_N_FFT // 2 else "constant"
    spec = torch.stft(
        flat,
        n_fft=WHISPER_N_FFT,
        hop_length=WHISPER_HOP_LENGTH,
        window=_hann_window(samples.device, samples.dtype),
        center=True,
        pad_mode=pad_mode,
        return_complex=True,
    )[..., :count]
    power = spec.real.square() + spec.imag.square()
    bank = whisper_mel_filters(n_mels, samples.device).to(samples.dtype)
    log_spec = torch.matmul(bank, power).clamp_min(1e-10).log10()
    peak = log_spec.amax(dim=(-2, -1), keepdim=True)
    log_spec = torch.maximum(log_spec, peak - 8.0)
    out = (log_spec + 4.0) / 4.0
    return out.reshape(*shape[:-1], n_mels, count)


@lru_cache(maxsize=8)
def _hann_window(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.hann_window(WHISPER_N_FFT, periodic=True, device=device, dtype=dtype)
