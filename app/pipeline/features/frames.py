"""Framing: how a signal is cut into analysis frames, shared by every frame-level feature."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import torch
import torch.nn.functional as F

PadMode = Literal["reflect", "constant"]


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


def frame_signal(samples: torch.Tensor, frames: FrameSpec) -> torch.Tensor:
    """Cut ``samples`` into centred frames of ``win_length`` samples (no window applied).

    Args:
        samples: tensor of shape ``(..., time)``.
        frames: the framing.

    Returns:
        A strided view of shape ``(..., frame, win_length)`` with
        ``frame = frames.num_frames(time)``.
    """
    n = samples.shape[-1]
    count = frames.num_frames(n)
    left = frames.win_length // 2
    right = (count - 1) * frames.hop_length + frames.win_length - left - n
    mode = frames.pad_mode if max(left, right) < n else "constant"
    flat = samples.reshape(-1, n)  # reflect padding needs a batch dimension
    padded = F.pad(flat, (left, max(right, 0)), mode=mode).reshape(*samples.shape[:-1], -1)
    return padded.unfold(-1, frames.win_length, frames.hop_length)[..., :count, :]
