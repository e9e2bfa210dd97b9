"""Frame energy: RMS amplitude and log energy."""

from __future__ import annotations

import math

import torch

from app.pipeline.features.frames import FrameSpec, frame_signal

#: Floor under frame energy before the logarithm.
ENERGY_FLOOR = 1e-10


def frame_energy(samples: torch.Tensor, frames: FrameSpec, *, padded: bool = False) -> torch.Tensor:
    """RMS and log energy of each (un-windowed) frame.

    Args:
        samples: tensor of shape ``(..., time)``, full scale = 1.0.
        frames: the framing (``win_length`` samples per frame, centred).
        padded: ``samples`` is already padded by
            :func:`~app.pipeline.features.frames.pad_signal`.

    Returns:
        Tensor of shape ``(..., 2, frame)``: row 0 is the RMS amplitude (full scale = 1.0),
        row 1 the log energy ``ln(max(Σ x², 1e-10))`` of the frame's samples (Kaldi's
        ``log_energy`` without dither or pre-emphasis).
    """
    framed = frame_signal(samples, frames, padded=padded)
    # A norm reduces the strided frames directly; squaring them first would copy every frame.
    norm = torch.linalg.vector_norm(framed, dim=-1)
    rms = norm / math.sqrt(frames.win_length)
    log_energy = norm.square().clamp_min(ENERGY_FLOOR).log()
    return torch.stack([rms, log_energy], dim=-2)
