"""Time-domain frame features."""

from __future__ import annotations

import torch

from app.pipeline.features.frames import FrameSpec, frame_signal


def zero_crossing_rate(
    samples: torch.Tensor, frames: FrameSpec, *, padded: bool = False
) -> torch.Tensor:
    """Fraction of adjacent sample pairs in each frame whose signs differ.

    Args:
        samples: tensor of shape ``(..., time)``.
        frames: the framing (``win_length`` samples per frame, centred).
        padded: ``samples`` is already padded by
            :func:`~app.pipeline.features.frames.pad_signal`.

    Returns:
        Tensor of shape ``(..., 1, frame)`` with values in ``[0, 1]`` (multiply by
        ``sample_rate / 2`` for crossings per second of a sinusoid's frequency, Hz).
    """
    framed = frame_signal(samples, frames, padded=padded)
    signs = framed >= 0
    crossings = (signs[..., 1:] != signs[..., :-1]).sum(dim=-1, dtype=samples.dtype)
    return (crossings / frames.win_length).unsqueeze(-2)
