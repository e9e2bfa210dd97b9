"""Framing: how a signal is cut into analysis frames, shared by every frame-level feature."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F

from app.pipeline.types import PadMode


@dataclass(frozen=True)
class FrameSpec:
    """Analysis frames, in samples at ``sample_rate``.

    Frames are centred: frame ``t`` covers the ``win_length`` samples around sample
    ``t * hop_length``, so a signal of ``T`` samples has ``1 + T // hop_length`` frames and the
    frame rate is ``sample_rate / hop_length`` Hz.

    Attributes:
        sample_rate: Hz.
        n_fft: FFT size, samples (≥ ``win_length``; the window is zero-padded to it).
        win_length: window length, samples.
        hop_length: hop between frames, samples.
        pad_mode: how the signal is extended at both ends to centre the first and last frames.
    """

    sample_rate: int
    n_fft: int
    win_length: int
    hop_length: int
    pad_mode: PadMode = "reflect"

    @property
    def frame_rate_hz(self) -> float:
        return self.sample_rate / self.hop_length

    def num_frames(self, num_samples: int) -> int:
        return 1 + num_samples // self.hop_length

    def window(self, device: torch.device) -> torch.Tensor:
        """The periodic Hann window, shape ``(win_length,)``, cached per device."""
        return _hann_window(self.win_length, device)


@lru_cache(maxsize=32)
def _hann_window(win_length: int, device: torch.device) -> torch.Tensor:
    return torch.hann_window(win_length, periodic=True, device=device)


def pad_signal(samples: torch.Tensor, frames: FrameSpec) -> torch.Tensor:
    """Extend ``samples`` by ``n_fft // 2`` at both ends (``frames.pad_mode``), as a centred STFT
    does, so that frame ``t`` of the result starts at sample ``t * hop_length``.

    Signals padded once this way can be zero-extended on the right and stacked into a batch
    without changing any of their frames.

    Args:
        samples: tensor of shape ``(..., time)``.

    Returns:
        Tensor of shape ``(..., time + 2 * (n_fft // 2))``.
    """
    n, pad = samples.shape[-1], frames.n_fft // 2
    mode = frames.pad_mode if pad < n else "constant"
    flat = samples.reshape(-1, n)  # reflect padding needs a batch dimension
    return F.pad(flat, (pad, pad), mode=mode).reshape(*samples.shape[:-1], n + 2 * pad)


def frame_signal(samples: torch.Tensor, frames: FrameSpec, *, padded: bool = False) -> torch.Tensor:
    """Cut a signal into centred frames of ``win_length`` samples (no window applied).

    Args:
        samples: tensor of shape ``(..., time)``; with ``padded=True``, the output of
            :func:`pad_signal` (possibly zero-extended on the right).
        frames: the framing.
        padded: ``samples`` is already padded by :func:`pad_signal`.

    Returns:
        A strided view of shape ``(..., frame, win_length)`` with
        ``frame = frames.num_frames(time)`` (``time`` before padding).
    """
    if not padded:
        samples = pad_signal(samples, frames)
    pad = frames.n_fft // 2
    count = frames.num_frames(samples.shape[-1] - 2 * pad)
    start = pad - frames.win_length // 2
    needed = start + (count - 1) * frames.hop_length + frames.win_length
    if needed > samples.shape[-1]:  # win_length > n_fft never happens; odd sizes may need 1
        samples = F.pad(samples, (0, needed - samples.shape[-1]))
    return samples[..., start:].unfold(-1, frames.win_length, frames.hop_length)[..., :count, :]
