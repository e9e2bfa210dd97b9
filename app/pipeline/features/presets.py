"""Presets: the frame sizes and conventions each feature family follows.

A preset fixes the conventions (padding, log floor and clamp) and the default sizes; explicit
options (``win_ms``, ``hop_ms``, ``n_mels``, ``n_mfcc``) override the sizes.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.models.options import FeatureOptions
from app.pipeline.features.frames import FrameSpec
from app.pipeline.types import FeatureName, FeaturePreset, PadMode


@dataclass(frozen=True)
class FeatureConfig:
    """Everything the feature functions need, resolved for one sampling rate.

    Attributes:
        frames: analysis framing (samples).
        n_mels: mel bands.
        n_mfcc: cepstral coefficients.
        f_min: lowest mel edge, Hz.
        f_max: highest mel edge, Hz.
        top_db: dynamic-range clamp of the log-mel (and MFCC input), dB; ``None`` for none.
    """

    frames: FrameSpec
    n_mels: int
    n_mfcc: int
    f_min: float
    f_max: float
    top_db: float | None


#: The features each preset computes when ``features.names`` is not given.
DEFAULT_NAMES: dict[FeaturePreset, list[FeatureName]] = {
    "default": ["log_mel", "mfcc", "pitch", "energy"],
    "librosa": ["log_mel", "mfcc"],
    "whisper": ["log_mel"],
    "kaldi": ["log_mel", "mfcc"],
    "wav2vec2": ["waveform"],
    "egemaps": ["egemaps"],
}


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def resolve(options: FeatureOptions, sample_rate: int) -> FeatureConfig:
    """Resolve the preset and explicit options into concrete sizes at ``sample_rate`` (Hz)."""
    pad_mode: PadMode
    if options.preset == "librosa":
        n_fft, win, hop = 2048, 2048, 512
        n_mels, n_mfcc, top_db, pad_mode = 128, 20, 80.0, "constant"
    elif options.preset == "whisper":  # Whisper's own STFT: 400-point FFT, 160 hop at 16 kHz
        n_fft, win, hop = 400, 400, 160
        n_mels, n_mfcc, top_db, pad_mode = 80, 13, None, "reflect"
    else:
        win, hop = round(0.025 * sample_rate), round(0.010 * sample_rate)
        n_fft = _next_pow2(win)
        n_mels, n_mfcc, top_db, pad_mode = 80, 13, None, "reflect"
    if options.win_ms is not None:
        win = max(2, round(options.win_ms * sample_rate / 1000))
        n_fft = win + (win & 1) if options.preset == "librosa" else _next_pow2(win)
    if options.hop_ms is not None:
        hop = max(1, round(options.hop_ms * sample_rate / 1000))
    n_mels = options.n_mels or n_mels
    n_mfcc = min(options.n_mfcc or n_mfcc, n_mels)
    return FeatureConfig(
        frames=FrameSpec(sample_rate, n_fft, win, min(hop, win), pad_mode),
        n_mels=n_mels,
        n_mfcc=n_mfcc,
        f_min=options.f_min,
        f_max=options.f_max if options.f_max is not None else sample_rate / 2,
        top_db=top_db,
    )
