"""The foreground-against-babble classifier of the pause-edge stages: it separates one voice
from many on a generated recording, its block processing equals one block, its dropping and
filling rules by hand, when it declines to train, and that only bursty noise calls it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import app.pipeline.foreground as foreground
import app.pipeline.pause_edges as pause_edges
from app.pipeline.energy_vad import ENERGY_TUNING
from app.pipeline.foreground import ForegroundOdds, foreground_odds
from tests.unit.signals import SR, babble_noise, bursts_in_noise, harmonic_bursts

SPANS = [(0.5, 2.0), (2.8, 4.3), (5.0, 6.5), (7.3, 8.8)]


def voice_in_babble(snr_db: float = 10.0, seed: int = 2) -> torch.Tensor:
    """One voice (:func:`harmonic_bursts` over :data:`SPANS`) in 8-voice babble ``snr_db``
    under its power, 10 s."""
    clean = harmonic_bursts(SPANS, seconds=10.0, noise=0.0).numpy().astype(np.float64)
    noise = babble_noise(10.0, seed)
    noise *= np.sqrt(np.mean(clean[clean != 0] ** 2) / 10 ** (snr_db / 10) / np.mean(noise**2))
    return torch.tensor(clean + noise, dtype=torch.float32)


def spans_as_tensors(spans: list[tuple[float, float]]) -> tuple[torch.Tensor, torch.Tensor]:
    start = torch.tensor([a for a, _ in spans], dtype=torch.float64)
    end = torch.tensor([b for _, b in spans], dtype=torch.float64)
    return start, end


def test_the_classifier_tells_the_voice_from_the_babble() -> None:
    x = voice_in_babble()
    odds = foreground_odds(x, *spans_as_tensors(SPANS), sample_rate=SR, tuning=ENERGY_TUNING)
    assert odds is not None
    times = torch.arange(odds.log_odds.numel()) * odds.hop_s
    voice = torch.zeros_like(times, dtype=torch.bool)
    for a, b in SPANS:
        voice |= (times >= a + 0.05) & (times <= b - 0.05)
    pause = ~voice
    for a, b in SPANS:  # the frames around the edges are neither
        pause &= (times < a - 0.05) | (times > b + 0.05)
    assert float(odds.log_odds[voice].median()) > 2.0
    assert float(odds.log_odds[pause].median()) < -2.0
    # Frame by frame: the share of (voice, pause) pairs ordered right (the AUC).
    ordered = odds.log_odds[voice][:, None] > odds.log_odds[pause][None, :]
    assert float(ordered.float().mean()) > 0.95


def test_the_features_by_blocks_equal_one_block(monkeypatch: pytest.MonkeyPatch) -> None:
    x = voice_in_babble()
    segments = spans_as_tensors(SPANS)
    whole = foreground_odds(x, *segments, sample_rate=SR, tuning=ENERGY_TUNING)
    monkeypatch.setattr(foreground, "_BLOCK_FRAMES", 37)
    blocks = foreground_odds(x, *segments, sample_rate=SR, tuning=ENERGY_TUNING)
    assert whole is not None and blocks is not None
    torch.testing.assert_close(blocks.log_odds, whole.log_odds, atol=1e-4, rtol=0)


def test_drop_and_fill_by_hand() -> None:
    # 10 ms frames: babble-like (−3) in a short segment and in one gap, foreground-like (+1)
    # elsewhere.
    log_odds = torch.ones(500)
    log_odds[120:141] = -3.0  # the segment 1.2–1.4 s: short and babble-like, dropped
    log_odds[362:375] = -3.0  # the gap 3.62–3.74 s: short but babble-like, kept
    odds = ForegroundOdds(log_odds=log_odds, hop_s=0.01)
    start, end = spans_as_tensors(
        [(0.0, 1.0), (1.2, 1.4), (1.6, 2.5), (2.6, 3.62), (3.74, 3.9), (4.0, 4.3)]
    )
    # (2.5–2.6 s: a short gap with foreground-like frames, filled; 3.9–4.0 s as well; the last
    # segment is short but has no segment after it, so it is kept.)
    new_start, new_end = odds.drop_and_fill(start, end, ENERGY_TUNING)
    assert new_start.tolist() == [0.0, 1.6, 3.74]
    assert new_end.tolist() == [1.0, 3.62, 4.3]


def test_the_mean_of_a_span_between_two_frames_is_the_nearest_frame() -> None:
    odds = ForegroundOdds(log_odds=torch.tensor([0.0, 1.0, 2.0, 3.0]), hop_s=0.01)
    assert odds.mean_over(0.012, 0.018) == 2.0  # no centre inside: the one nearest 0.015
    assert odds.mean_over(0.0, 0.02) == 1.0
    assert odds.at(torch.tensor([0.004, 0.006, 0.5])).tolist() == [0.0, 1.0, 3.0]


def test_too_few_frames_to_train_on_give_no_odds() -> None:
    x = voice_in_babble()
    one = spans_as_tensors([(0.5, 8.8)])
    assert foreground_odds(x, *one, sample_rate=SR, tuning=ENERGY_TUNING) is None
    # Segments too short for frames 0.3 s inside them.
    short = spans_as_tensors([(0.5 + k, 0.9 + k) for k in range(9)])
    assert foreground_odds(x, *short, sample_rate=SR, tuning=ENERGY_TUNING) is None


def test_only_bursty_noise_trains_the_classifier(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def counting(*args: object, **kwargs: object) -> ForegroundOdds | None:
        calls.append(1)
        return foreground_odds(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pause_edges, "foreground_odds", counting)
    spans = [(0.5, 1.3), (1.8, 2.5), (3.0, 3.6)]
    start, end = spans_as_tensors([(a - 0.03, b + 0.06) for a, b in spans])
    pause_edges.place_edges_by_likelihood(
        bursts_in_noise(spans, "pink", 5.0, 0), start, end, sample_rate=SR
    )
    assert calls == []
    start, end = spans_as_tensors([(a - 0.03, b + 0.3) for a, b in SPANS])
    pause_edges.place_edges_by_likelihood(voice_in_babble(), start, end, sample_rate=SR)
    assert calls == [1]
