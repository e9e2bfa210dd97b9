"""Time-domain frame features."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from app.pipeline.features.frames import FrameSpec, frame_signal, pad_signal


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
    if not padded:
        samples = pad_signal(samples, frames)
    # Sign changes between samples i and i + 1, once per sample rather than per frame; a sample
    # past the end is 0 (non-negative), as in frame_signal's zero extension.
    signs = F.pad(samples >= 0, (0, 1), value=True)
    changes = signs[..., 1:] != signs[..., :-1]
    # Each frame holds the win_length − 1 pairs of its samples: drop the pair that leaves it.
    framed = frame_signal(changes, frames, padded=True)[..., :-1]
    crossings = framed.sum(dim=-1, dtype=torch.int32).to(samples.dtype)  # int: 2× faster
    return (crossings / frames.win_length).unsqueeze(-2)
