"""Frame-level features and their normalization/aggregation.

:func:`compute_features` turns one signal (and its power spectrogram) into the requested
``[features, frames]`` arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from app.errors import InvalidOptions
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
    padded: torch.Tensor,
    power: torch.Tensor,
    *,
    lengths: Sequence[int],
    names: Sequence[FeatureName],
    config: FeatureConfig,
    options: FeatureOptions,
) -> list[dict[str, FeatureArray]]:
    """Compute the requested features of a batch of signals.

    Frame-level transforms run on the whole batch at once; deltas, normalization and
    aggregation then run per signal on its own frames, so a signal's features do not depend on
    what it was batched with.

    Args:
        padded: signals padded by :func:`~app.pipeline.features.frames.pad_signal` and
            zero-extended to a common length, shape ``(batch, channel, time)``.
        power: their power spectrograms (``stft_power(padded, frames, padded=True)``), shape
            ``(batch, channel, n_fft // 2 + 1, frame)``.
        lengths: each signal's own length, samples (its frames: ``1 + length // hop_length``).
        names: which features.
        config: resolved sizes (see :func:`~app.pipeline.features.presets.resolve`).
        options: the client's feature options (scale, deltas, normalization, aggregation).

    Returns:
        Per signal, ``{name: FeatureArray}`` in the order of ``names``; with one channel the
        channel axis is dropped, so arrays are ``(feature, frame)``.
    """
    frames = config.frames
    batched: dict[str, tuple[torch.Tensor, str, list[str] | None]] = {}
    mel_db: torch.Tensor | None = None
    for name in names:
        if name == "spectrogram":
            scale = options.spectrogram_scale
            unit = {"db": "dB", "power": "|X|^2", "magnitude": "|X|"}[scale]
            batched[name] = (spectrogram(power, scale), unit, None)
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
                batched[name] = (mel_db, _UNITS[name], None)
            else:
                batched[name] = (mfcc(mel_db, n_mfcc=config.n_mfcc), _UNITS[name], None)
        elif name == "energy":
            energy = frame_energy(padded, frames, padded=True)
            batched[name] = (energy, _UNITS[name], ["rms", "log_energy"])
        elif name == "zcr":
            batched[name] = (zero_crossing_rate(padded, frames, padded=True), _UNITS[name], None)
    results: list[dict[str, FeatureArray]] = []
    for index, length in enumerate(lengths):
        count = frames.num_frames(length)
        features: dict[str, FeatureArray] = {}
        for key, (data, unit, rows) in batched.items():
            item = data[index, ..., :count]
            if item.shape[0] == 1:
                item = item[0]
            if key == "mfcc":
                item = with_deltas(item, options.deltas)
            normalized = _normalize(key, item, options, frames.frame_rate_hz)
            features[key] = FeatureArray(
                data=normalized,
                frame_rate_hz=frames.frame_rate_hz,
                unit=unit if options.normalize == "none" else f"{unit}, {options.normalize}",
                rows=rows,
                stats=aggregate(normalized, options.functionals, frame_rate_hz=frames.frame_rate_hz)
                if options.aggregate
                else None,
            )
        results.append(features)
    return results


def _normalize(
    name: str, data: torch.Tensor, options: FeatureOptions, frame_rate_hz: float
) -> torch.Tensor:
    if options.normalize != "global":
        window = max(1, round(options.cmn_window_s * frame_rate_hz))
        return normalize_frames(data, options.normalize, window=window)
    stats = (options.global_stats or {})[name]
    rows = data.shape[-2]
    if len(stats.mean) != rows:
        raise InvalidOptions(
            f"features.global_stats.{name} has {len(stats.mean)} values per statistic but the "
            f"feature has {rows} rows; recompute the statistics with the same feature options."
        )
    mean = torch.tensor(stats.mean, dtype=data.dtype, device=data.device)
    std = torch.tensor(stats.std, dtype=data.dtype, device=data.device)
    return normalize_frames(data, "global", mean=mean, std=std)
