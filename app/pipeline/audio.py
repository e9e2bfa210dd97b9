"""The audio value passed between pipeline steps."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class InputInfo:
    """What the uploaded recording was, as decoded.

    Attributes:
        format: container detected from the bytes (``wav``, ``flac``, ``ogg``, ``mp3``, ``m4a``,
            ``webm``, ...), never from a file name.
        codec: codec of the audio stream (``pcm_s16le``, ``vorbis``, ``opus``, ``aac``, ...).
        sample_rate: native sampling rate, Hz.
        channels: number of channels.
        duration_s: duration of the decoded samples, seconds.
    """

    format: str
    codec: str
    sample_rate: int
    channels: int
    duration_s: float


@dataclass(frozen=True)
class Audio:
    """Samples with their rate.

    Attributes:
        samples: float32 tensor of shape ``(channel, time)``, full scale = 1.0.
        sample_rate: Hz.
    """

    samples: torch.Tensor
    sample_rate: int

    @property
    def num_channels(self) -> int:
        return int(self.samples.shape[0])

    @property
    def num_frames(self) -> int:
        return int(self.samples.shape[-1])

    @property
    def duration_s(self) -> float:
        return self.num_frames / self.sample_rate
