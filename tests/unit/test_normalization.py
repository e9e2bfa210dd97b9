"""Normalization and functionals against numpy, scipy and torchaudio on the same data."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch
import torchaudio.functional as AF

from app.pipeline.features.normalization import aggregate, normalize_frames, sliding_cmn
from app.pipeline.types import FUNCTIONALS


@pytest.fixture
def features() -> torch.Tensor:
    generator = torch.Generator().manual_seed(3)
    ramp = torch.linspace(0, 5, 700)
    return torch.randn(6, 700, generator=generator, dtype=torch.float64) * 2 + ramp + 4


@pytest.mark.parametrize("window", [1, 50, 300, 1000])
def test_sliding_cmn_equals_torchaudio_centered(features: torch.Tensor, window: int) -> None:
    reference = AF.sliding_window_cmn(
        features.T, cmn_window=window, min_cmn_window=window, center=True
    ).T
    np.testing.assert_allclose(sliding_cmn(features, window), reference, atol=1e-9)


def test_sliding_cmn_with_variance(features: torch.Tensor) -> None:
    reference = AF.sliding_window_cmn(
        features.T, cmn_window=300, min_cmn_window=300, center=True, norm_vars=True
    ).T
    np.testing.assert_allclose(
        sliding_cmn(features, 300, normalize_variance=True), reference, atol=1e-6
    )


def test_global_normalization_uses_the_stored_statistics(features: torch.Tensor) -> None:
    mean, std = torch.arange(6.0, dtype=torch.float64), torch.full((6,), 2.0, dtype=torch.float64)
    out = normalize_frames(features, "global", mean=mean, std=std)
    np.testing.assert_allclose(out, (features - mean[:, None]) / 2.0)


def test_functionals_match_numpy_and_scipy(features: torch.Tensor) -> None:
    out = aggregate(features, FUNCTIONALS, frame_rate_hz=100.0)
    x = features.numpy()
    t = np.arange(x.shape[1]) / 100.0
    expected = {
        "mean": x.mean(1), "std": x.std(1), "min": x.min(1), "max": x.max(1),
        "range": np.ptp(x, 1), "median": np.median(x, 1),
        "p05": np.percentile(x, 5, 1), "p25": np.percentile(x, 25, 1),
        "p75": np.percentile(x, 75, 1), "p95": np.percentile(x, 95, 1),
        "skewness": scipy.stats.skew(x, 1), "kurtosis": scipy.stats.kurtosis(x, 1),
        "slope": np.polyfit(t, x.T, 1)[0],
    }  # fmt: skip
    assert list(out) == list(FUNCTIONALS)
    for name, value in expected.items():
        np.testing.assert_allclose(out[name], value, rtol=1e-6, atol=1e-9, err_msg=name)


def test_non_finite_frames_are_ignored() -> None:
    x = torch.tensor([[1.0, float("nan"), 3.0, 5.0], [float("nan")] * 4])
    out = aggregate(x, ("mean", "max", "median", "slope"), frame_rate_hz=1.0)
    assert out["mean"][0] == pytest.approx(3.0) and out["max"][0] == 5.0
    assert out["median"][0] == 3.0
    assert out["slope"][0] == pytest.approx(np.polyfit([0, 2, 3], [1, 3, 5], 1)[0])
    assert torch.isnan(out["mean"][1]) and torch.isnan(out["median"][1])
    normalized = normalize_frames(x, "cmvn")
    assert torch.isnan(normalized[0, 1]) and normalized[0, [0, 2, 3]].mean().abs() < 1e-6
