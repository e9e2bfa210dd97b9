"""Frame-level features and their normalization/aggregation.

:func:`compute_features` turns one signal (and its power spectrogram) into the requested
``[features, frames]`` arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from app.models.options import FeatureName, FeatureOptions
from app.pipeline.features.energy import frame_energy
from app.pipeline.features.normalization import aggregate, normalize_frames
from app.pipeline.features.presets import FeatureConfig
from app.pipeline.features.spectral import log_mel, mfcc, spectrogram, with_deltas
from app.pipeline.features.temporal import zero_crossing_rate


@dataclass
class FeatureArray:
    """One feature of one recording.

    Attributes:
        data: tensor of shape ``(feature, frame)`` (``(channel, feature, frame)`` when channels are
            kept).
        frame_rate_hz: frames per second; frame ``t`` is centred at ``t / frame_rate_hz`` s.
        unit: unit of the values.
        rows: label of each row, when rows are named.
        stats: utterance-level functionals per row (see :func:`aggregate`), when requested.
    """

    data: torch.Tensor
    frame_rate_hz: float
    unit: str
    rows: list[str] | None = None
    stats: dict[str, torch.Tensor] | None = field(default=None)


_UNITS: dict[str, str] = {
    "log_mel": "dB",
    "mfcc": "dB (cepstral)",
    "energy": "rms: full scale = 1; log_energy: ln(sum of squares)",
    "zcr": "fraction of sample pairs",
}


def compute_features(
    samples: torch.Tensor,
    power: torch.Tensor,
    *,
    names: Sequence[FeatureName],
    config: FeatureConfig,
    options: FeatureOptions,
) -> dict[str, FeatureArray]:
    """Compute the requested features of one signal.

    Args:
        samples: the processed signal, shape ``(channel, time)``; a single channel is squeezed so
            mono features have shape ``(feature, frame)``.
        power: its power spectrogram from :func:`~app.pipeline.features.spectral.stft_power`
            with ``config.frames``, shape ``(channel, n_fft // 2 + 1, frame)``.
        names: which features.
        config: resolved sizes (see :func:`~app.pipeline.features.presets.resolve`).
        options: the client's feature options (scale, deltas, normalization, aggregation).

    Returns:
        ``{name: FeatureArray}`` in the order of ``names``.
    """
    if samples.shape[0] == 1:
        samples, power = samples[0], power[0]
    frames = config.frames
    raw: dict[str, tuple[torch.Tensor, str, list[str] | None]] = {}
    mel_db: torch.Tensor | None = None
    for name in names:
        if name == "spectrogram":
            scale = options.spectrogram_scale
            unit = {"db": "dB", "power": "|X|^2", "magnitude": "|X|"}[scale]
            raw[name] = (spectrogram(power, scale), unit, None)
        elif name in ("log_mel", "mfcc"):
            if mel_db is None:
                mel_db = log_mel(
                    power,
                    frames=frames,
                    n_mels=config.n_mels,
                    f_min=config.f_min,
                    f_max=config.f_max,
                    top_db=config.top_db,
                )
            if name == "log_mel":
                raw[name] = (mel_db, _UNITS[name], None)
            else:
                coefficients = with_deltas(mfcc(mel_db, n_mfcc=config.n_mfcc), options.deltas)
                raw[name] = (coefficients, _UNITS[name], None)
        elif name == "energy":
            raw[name] = (frame_energy(samples, frames), _UNITS[name], ["rms", "log_energy"])
        elif name == "zcr":
            raw[name] = (zero_crossing_rate(samples, frames), _UNITS[name], None)
    result: dict[str, FeatureArray] = {}
    for key, (data, unit, rows) in raw.items():
        normalized = normalize_frames(data, options.normalize)
        result[key] = FeatureArray(
            data=normalized,
            frame_rate_hz=frames.frame_rate_hz,
            unit=unit if options.normalize == "none" else f"{unit}, {options.normalize}",
            rows=rows,
            stats=aggregate(normalized) if options.aggregate else None,
        )
    return result
