"""Normalization of frame features (per utterance, sliding window, global statistics) and their
aggregation into utterance-level functionals.

Every function ignores non-finite values (NaN marks frames where a feature is undefined, e.g. the
pitch of unvoiced frames).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from app.pipeline.types import DEFAULT_FUNCTIONALS, FeatureNormalization, Functional


def _masked(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    valid = torch.isfinite(features)
    count = valid.sum(dim=-1, keepdim=True)
    zeroed = torch.where(valid, features, torch.zeros_like(features))
    return valid, count, zeroed


def _mean_std(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    valid, count, zeroed = _masked(features)
    n = count.clamp_min(1)
    mean = zeroed.sum(dim=-1, keepdim=True) / n
    centred = torch.where(valid, features - mean, torch.zeros_like(features))
    std = (centred.square().sum(dim=-1, keepdim=True) / n).sqrt()
    nan = torch.full_like(mean, float("nan"))
    return torch.where(count > 0, mean, nan), torch.where(count > 0, std, nan)


def sliding_cmn(
    features: torch.Tensor, window: int, *, normalize_variance: bool = False, eps: float = 1e-8
) -> torch.Tensor:
    """Sliding-window cepstral mean (and variance) normalization, Kaldi's centred mode.

    Each frame has the mean of a ``window``-frame window subtracted; the window is centred on the
    frame and shifted to stay inside the utterance (Kaldi ``apply-cmvn-sliding --center=true``,
    torchaudio ``sliding_window_cmn(center=True)``); an utterance shorter than the window uses
    its global mean.

    Args:
        features: tensor of shape ``(..., feature, frame)``.
        window: window length, frames (≥ 1).
        normalize_variance: also divide by the window's standard deviation.

    Returns:
        Tensor of the same shape.
    """
    n = features.shape[-1]
    width = min(window, n)
    t = torch.arange(n, device=features.device)
    start = (t - width // 2).clamp(min=0, max=n - width)
    end = start + width
    cumulative = torch.nn.functional.pad(features.double().cumsum(dim=-1), (1, 0))
    mean = ((cumulative[..., end] - cumulative[..., start]) / width).to(features.dtype)
    out = features - mean
    if normalize_variance:
        squares = torch.nn.functional.pad(features.double().square().cumsum(dim=-1), (1, 0))
        second = ((squares[..., end] - squares[..., start]) / width).to(features.dtype)
        out = out / (second - mean.square()).clamp_min(0).sqrt().clamp_min(eps)
    return out


def normalize_frames(
    features: torch.Tensor,
    method: FeatureNormalization,
    *,
    window: int = 300,
    mean: torch.Tensor | None = None,
    std: torch.Tensor | None = None,
    eps: float = 1e-8,
) -> torch.Tensor:
    """Normalize each feature row over frames.

    Args:
        features: tensor of shape ``(..., feature, frame)``.
        method: ``"none"``; ``"cmn"`` subtracts each row's utterance mean; ``"cmvn"`` also divides
            by its (population) standard deviation; ``"sliding_cmn"`` subtracts a ``window``-frame
            moving mean (:func:`sliding_cmn`); ``"global"`` applies ``(x - mean) / std`` with
            stored statistics.
        window: sliding window, frames (``sliding_cmn`` only).
        mean, std: per-row statistics, shape ``(feature,)`` (``global`` only).

    Returns:
        Tensor of the same shape.
    """
    if method == "none":
        return features
    if method == "sliding_cmn":
        return sliding_cmn(features, window)
    if method == "global":
        if mean is None or std is None:
            raise ValueError("global normalization needs mean and std")
        return (features - mean.unsqueeze(-1)) / std.clamp_min(eps).unsqueeze(-1)
    utterance_mean, utterance_std = _mean_std(features)
    centred = features - utterance_mean
    if method == "cmn":
        return centred
    return centred / utterance_std.clamp_min(eps)


def aggregate(
    features: torch.Tensor,
    functionals: Sequence[Functional] = DEFAULT_FUNCTIONALS,
    *,
    frame_rate_hz: float = 100.0,
) -> dict[str, torch.Tensor]:
    """Utterance-level functionals of each feature row over its finite frames.

    Args:
        features: tensor of shape ``(..., feature, frame)``.
        functionals: which to compute: ``mean``, ``std`` (population), ``min``, ``max``,
            ``range``, ``median``, ``p05``/``p25``/``p75``/``p95`` (percentiles, linear
            interpolation), ``skewness`` (Fisher–Pearson g1), ``kurtosis`` (excess, g2),
            ``slope`` (least-squares trend, units per second).
        frame_rate_hz: frames per second, for ``slope``.

    Returns:
        ``{functional: Tensor (..., feature)}``; NaN for rows without a finite frame.
    """
    valid, count, zeroed = _masked(features)
    mean, std = _mean_std(features)
    out: dict[str, torch.Tensor] = {}
    inf = torch.tensor(float("inf"), device=features.device, dtype=features.dtype)
    for name in functionals:
        if name == "mean":
            value = mean
        elif name == "std":
            value = std
        elif name in ("min", "max", "range"):
            low = torch.where(valid, features, inf).amin(dim=-1, keepdim=True)
            high = torch.where(valid, features, -inf).amax(dim=-1, keepdim=True)
            value = {"min": low, "max": high, "range": high - low}[name]
        elif name == "median" or name.startswith("p"):
            q = 0.5 if name == "median" else int(name[1:]) / 100
            masked = torch.where(valid, features, torch.full_like(features, float("nan")))
            value = torch.nanquantile(masked.double(), q, dim=-1, keepdim=True).to(features.dtype)
        elif name in ("skewness", "kurtosis"):
            centred = torch.where(valid, features - mean, torch.zeros_like(features))
            n = count.clamp_min(1)
            m2 = centred.square().sum(-1, keepdim=True) / n
            if name == "skewness":
                value = (centred.pow(3).sum(-1, keepdim=True) / n) / m2.pow(1.5)
            else:
                value = (centred.pow(4).sum(-1, keepdim=True) / n) / m2.square() - 3.0
        else:  # slope
            t = (
                torch.arange(features.shape[-1], device=features.device, dtype=features.dtype)
                / frame_rate_hz
            )
            t = torch.where(valid, t.expand_as(features), torch.zeros_like(features))
            n = count.clamp_min(1)
            t_mean = t.sum(-1, keepdim=True) / n
            dt = torch.where(valid, t - t_mean, torch.zeros_like(t))
            dx = torch.where(valid, features - mean, torch.zeros_like(features))
            value = (dt * dx).sum(-1, keepdim=True) / dt.square().sum(-1, keepdim=True)
        out[name] = value.squeeze(-1)
    return out
