"""Per-utterance normalization and aggregation (functionals) of frame features."""

from __future__ import annotations

from typing import Literal

import torch

FeatureNormalization = Literal["none", "cmn", "cmvn"]

#: The functionals :func:`aggregate` computes, in this order.
FUNCTIONALS = ("mean", "std", "min", "max")


def normalize_frames(
    features: torch.Tensor, method: FeatureNormalization, eps: float = 1e-8
) -> torch.Tensor:
    """Per-utterance cepstral mean (and variance) normalization over frames.

    Args:
        features: tensor of shape ``(..., feature, frame)``.
        method: ``"none"``; ``"cmn"`` subtracts each row's mean over frames; ``"cmvn"`` also
            divides by its standard deviation (population, floored at ``eps``).

    Returns:
        Tensor of the same shape.
    """
    if method == "none":
        return features
    centred = features - features.mean(dim=-1, keepdim=True)
    if method == "cmn":
        return centred
    return centred / features.std(dim=-1, unbiased=False, keepdim=True).clamp_min(eps)


def aggregate(features: torch.Tensor) -> dict[str, torch.Tensor]:
    """Utterance-level functionals of each feature row over frames.

    Args:
        features: tensor of shape ``(..., feature, frame)``.

    Returns:
        ``{"mean", "std", "min", "max"}``, each of shape ``(..., feature)``; ``std`` is the
        population standard deviation.
    """
    return {
        "mean": features.mean(dim=-1),
        "std": features.std(dim=-1, unbiased=False),
        "min": features.amin(dim=-1),
        "max": features.amax(dim=-1),
    }
