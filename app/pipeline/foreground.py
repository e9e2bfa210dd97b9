"""Foreground talker against background babble: a frame classifier trained on each recording.

In babble the pause-edge stages (:mod:`app.pipeline.pause_edges`) take the bursts of the
background talkers for speech and cut the foreground's weak word ends inside them: level and
band evidence against the pause's noise cannot tell one voice from many. The recording itself
can: its long stretches of speech are mostly the foreground talker, its pauses mostly babble.
:func:`foreground_odds` learns the difference from them, and :class:`ForegroundOdds` gives the
log-odds of foreground over babble per 16 ms frame, which
:func:`~app.pipeline.pause_edges.place_edges_by_likelihood` adds to its change-point evidence
and uses to drop short babble-like segments and fill short gaps that are not babble
(:meth:`ForegroundOdds.drop_and_fill`). It runs only under bursty noise.

1. **Features** per frame (``_HOP_S`` = 16 ms, frame ``j`` centred at sample ``j · hop``, a
   Hann window of one hop, its power spectrum): the logs of 16 mel bands from 100 Hz to
   7.6 kHz (below Nyquist); the depth of their 2–30 Hz modulation in 4 groups of 4 bands
   (the difference of 30 ms and 250 ms moving averages, squared, averaged over each group and
   over 250 ms, half its log), as one talker's syllables modulate deeper than many talkers';
   and the log mel bands averaged over 110 ms and over 310 ms (the context that tells a
   word from a burst). 52 numbers.
2. **Training frames** from the segments (the detector's, as the pause-edge stages left them):
   babble = frames inside pauses (gaps of at least ``edge_min_pause_s``, and the silence before
   the first and after the last segment) more than ``fg_pause_margin_s`` from their edges;
   foreground = frames more than ``fg_speech_margin_s`` inside a segment: of an even
   subsample of ``2 · fg_train_frames`` of them, the louder half over the babble (the log mel
   bands less their medians over the babble frames, summed over the bands); babble frames
   evenly subsampled to ``fg_train_frames``. Features standardized over them.
3. **Model:** logistic regression, the two classes weighted equally, L2 penalty ``fg_l2`` on
   the weights, ``_NEWTON_STEPS`` Newton steps from zero.

The features are computed a block of :data:`_BLOCK_FRAMES` frames at a time (with the margin
their moving averages reach) twice, once for the training frames and once for the log-odds,
so memory beyond the signal is one block plus one number per frame. The second pass runs from
the last block back and reuses the block the first pass ended on: a recording of up to one
block (≈ 33 s) is analysed once.

What it was measured to do: :class:`~app.pipeline.energy_vad.EnergyVadTuning`, ``fg_*``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from app.pipeline.energy_vad import EnergyVadTuning, _hann, centred_frames
from app.pipeline.features.spectral import mel_filterbank

#: Frame step (and window) of the classifier, seconds.
_HOP_S = 0.016
#: Mel bands of the features and their range, Hz.
_MELS = 16
_MEL_RANGE_HZ = (100.0, 7600.0)
#: Modulation depth: moving averages of 30 ms and 250 ms (their difference passes ≈ 2–30 Hz),
#: the bands in 4 groups, the squared difference averaged over 250 ms.
_MODULATION_S = (0.03, 0.25, 0.25)
_MODULATION_GROUPS = 4
#: Context: the log mel bands averaged over these spans, seconds (odd frame counts).
_CONTEXT_S = (0.11, 0.31)
#: Features per frame: the log mel bands, the modulation depths, the bands' two contexts.
_N_FEATURES = _MELS + _MODULATION_GROUPS + _MELS * len(_CONTEXT_S)
#: Newton steps of the logistic regression (from zero; it has converged by then).
_NEWTON_STEPS = 5
#: Frames whose features are computed at once (bounds the memory on long signals).
_BLOCK_FRAMES = 2048
#: Frames computed beyond a block on each side (the nested moving averages of the modulation
#: depth reach 16).
_MARGIN_FRAMES = 32


@dataclass(frozen=True)
class ForegroundOdds:
    """Log-odds of the foreground talker over babble per frame (frame ``j`` centred at
    ``j · hop_s`` seconds), shape ``(frame,)``, float32 on the CPU."""

    log_odds: torch.Tensor
    hop_s: float

    def at(self, time_s: torch.Tensor) -> torch.Tensor:
        """The log-odds of the frames nearest to ``time_s`` (seconds, any shape)."""
        index = torch.round(time_s / self.hop_s).long()
        return self.log_odds[index.clamp(0, self.log_odds.numel() - 1)]

    def mean_over(self, lo_s: float, hi_s: float) -> float:
        """Mean log-odds of the frames centred in ``[lo_s, hi_s]`` (the frame nearest to the
        middle when none is)."""
        first = max(0, math.ceil(lo_s / self.hop_s - 1e-9))
        last = min(self.log_odds.numel() - 1, math.floor(hi_s / self.hop_s + 1e-9))
        if last < first:
            first = last = min(
                self.log_odds.numel() - 1, max(0, round((lo_s + hi_s) / 2 / self.hop_s))
            )
        return float(self.log_odds[first : last + 1].mean())

    def drop_and_fill(
        self, start_s: torch.Tensor, end_s: torch.Tensor, tuning: EnergyVadTuning
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The segments (seconds, float64, shape ``(segment,)``) without those shorter than
        ``fg_drop_max_s`` between two others whose mean log-odds is under ``fg_drop_odds``
        (babble bursts), then with the gaps shorter than ``fg_fill_max_s`` whose mean
        log-odds reaches ``fg_fill_odds`` filled (inside the foreground's words)."""
        t = tuning
        if start_s.numel() >= 3:
            keep = torch.ones(start_s.numel(), dtype=torch.bool)
            for i in range(1, start_s.numel() - 1):
                lo, hi = float(start_s[i]), float(end_s[i])
                keep[i] = hi - lo >= t.fg_drop_max_s or self.mean_over(lo, hi) >= t.fg_drop_odds
            start_s, end_s = start_s[keep], end_s[keep]
        if start_s.numel() >= 2:
            gaps = zip(end_s[:-1].tolist(), start_s[1:].tolist(), strict=True)
            fill = torch.tensor(
                [
                    hi - lo < t.fg_fill_max_s and self.mean_over(lo, hi) >= t.fg_fill_odds
                    for lo, hi in gaps
                ]
            )
            one = fill.new_ones(1)
            start_s, end_s = start_s[torch.cat([one, ~fill])], end_s[torch.cat([~fill, one])]
        return start_s, end_s


def foreground_odds(
    x: torch.Tensor,
    start_s: torch.Tensor,
    end_s: torch.Tensor,
    *,
    sample_rate: int,
    tuning: EnergyVadTuning,
) -> ForegroundOdds | None:
    """Train the classifier on the recording and score every frame (see the module's text).

    Args:
        x: signal, shape ``(time,)``, full scale = 1.0, on any device.
        start_s: segment onsets, seconds, float64, shape ``(segment,)``, sorted.
        end_s: segment offsets, seconds, float64, shape ``(segment,)``.
        sample_rate: Hz.
        tuning: the constants (``edge_min_pause_s``, ``fg_*``).

    Returns:
        The log-odds, or ``None`` without at least 20 training frames of each class (or two
        segments).
    """
    t = tuning
    if start_s.numel() < 2:
        return None
    hop = max(1, round(_HOP_S * sample_rate))
    hop_s = hop / sample_rate
    count = 1 + x.shape[-1] // hop
    gap_lo, gap_hi = end_s[:-1], start_s[1:]
    pauses = torch.nonzero(gap_hi - gap_lo >= t.edge_min_pause_s - 1e-9).flatten()
    before, after = start_s[:1] - math.inf, end_s[-1:] + math.inf
    pause_lo = torch.cat([before, gap_lo[pauses], end_s[-1:]])
    pause_hi = torch.cat([start_s[:1], gap_hi[pauses], after])
    babble = _frame_ranges(count, hop_s, pause_lo, pause_hi, t.fg_pause_margin_s)
    speech = _frame_ranges(count, hop_s, start_s, end_s, t.fg_speech_margin_s)
    if _size(babble) < 20 or _size(speech) < 20:
        return None
    babble_rows = _evenly(babble, t.fg_train_frames)
    speech_rows = _evenly(speech, 2 * t.fg_train_frames)
    features = _Features(x, sample_rate=sample_rate, hop=hop, count=count)
    train, log_mel = features.rows(torch.cat([speech_rows, babble_rows]))
    n = speech_rows.numel()
    # Level over the babble, summed over the bands (the louder half is the foreground's).
    level = torch.logsumexp(log_mel[:n] - log_mel[n:].median(dim=0).values, dim=-1)
    louder = level >= level.median()
    train = torch.cat([train[:n][louder], train[n:]])
    n_speech, n_babble = int(louder.sum()), babble_rows.numel()
    mean, std = train.mean(dim=0), train.std(dim=0) + 1e-6
    target = torch.cat([torch.ones(n_speech), torch.zeros(n_babble)])
    weight = torch.cat(
        [torch.full((n_speech,), 0.5 / n_speech), torch.full((n_babble,), 0.5 / n_babble)]
    )
    beta = _logistic_regression(
        (train - mean) / std, target, weight * (n_speech + n_babble), t.fg_l2
    )
    scale = beta[:-1] / std
    bias = float(beta[-1] - (mean * scale).sum())
    return ForegroundOdds(log_odds=features.project(scale, bias), hop_s=hop_s)


def _frame_ranges(
    count: int, hop_s: float, lo: torch.Tensor, hi: torch.Tensor, margin: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The frames (of ``count``, frame ``j`` centred at ``j · hop_s`` seconds) inside each of
    the sorted, disjoint intervals ``[lo + margin, hi − margin]`` (seconds, shape
    ``(interval,)``): ``(first, stop)``, int64, shape ``(interval,)`` each, empty where
    ``stop ≤ first``."""
    first = torch.ceil((lo + margin) / hop_s - 1e-9).clamp(0, count).long()
    stop = (torch.floor((hi - margin) / hop_s + 1e-9) + 1).clamp(0, count).long()
    return first, torch.maximum(stop, first)


def _size(ranges: tuple[torch.Tensor, torch.Tensor]) -> int:
    """How many frames the ranges (:func:`_frame_ranges`) hold."""
    return int((ranges[1] - ranges[0]).sum())


def _evenly(ranges: tuple[torch.Tensor, torch.Tensor], most: int) -> torch.Tensor:
    """At most ``most`` of the frames of the ranges (:func:`_frame_ranges`), evenly spaced in
    their order, int64, sorted."""
    first, stop = ranges
    lengths = stop - first
    ends = torch.cumsum(lengths, dim=0)  # the rank after each range's last frame
    total = int(ends[-1]) if ends.numel() else 0
    ranks = torch.arange(total) if total <= most else torch.linspace(0, total - 1, most).long()
    index = torch.searchsorted(ends, ranks, right=True)
    return first[index] + ranks - (ends[index] - lengths[index])


def _logistic_regression(
    features: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, l2: float
) -> torch.Tensor:
    """Weighted L2-penalized logistic regression by Newton's method: the weights and, last, the
    bias (not penalized), shape ``(feature + 1,)``."""
    n, d = features.shape
    design = torch.cat([features, features.new_ones(n, 1)], dim=1)
    penalty = features.new_full((d + 1,), l2)
    penalty[-1] = 0.0
    ridge = torch.diag(penalty) + 1e-6 * torch.eye(d + 1)
    beta = features.new_zeros(d + 1)
    for _ in range(_NEWTON_STEPS):
        p = torch.sigmoid(design @ beta)
        gradient = design.T @ (weight * (p - target)) + penalty * beta
        hessian = (design * (weight * p * (1 - p))[:, None]).T @ design + ridge
        beta = beta - torch.linalg.solve(hessian, gradient)
    return beta


class _Features:
    """The classifier's features of a signal, a block of frames at a time."""

    def __init__(self, x: torch.Tensor, *, sample_rate: int, hop: int, count: int) -> None:
        self.x, self.hop, self.count = x, hop, count
        self.n_fft = 1 << (hop - 1).bit_length()
        hi = min(_MEL_RANGE_HZ[1], sample_rate / 2)
        self.mel = mel_filterbank(
            sample_rate, self.n_fft, _MELS, _MEL_RANGE_HZ[0], hi, "htk", torch.device("cpu")
        )
        hop_s = hop / sample_rate
        self.fast, self.slow, self.depth = (max(1, round(s / hop_s)) for s in _MODULATION_S)
        self.context = [max(1, round(s / hop_s)) | 1 for s in _CONTEXT_S]
        self.last: tuple[int, torch.Tensor, torch.Tensor] | None = None

    def rows(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The features of frames ``rows``, shape ``(row, 52)`` (:data:`_N_FEATURES`), and
        their log mel bands, shape ``(row, 16)``, in the order of ``rows``."""
        features = torch.zeros(rows.numel(), _N_FEATURES)
        log_mels = torch.zeros(rows.numel(), _MELS)
        for first, block, log_mel in self._blocks():
            inside = torch.nonzero((rows >= first) & (rows < first + block.shape[0])).flatten()
            features[inside] = block[rows[inside] - first]
            log_mels[inside] = log_mel[rows[inside] - first]
        return features, log_mels

    def project(self, scale: torch.Tensor, bias: float) -> torch.Tensor:
        """``features @ scale + bias`` of every frame, shape ``(frame,)``. The blocks go last
        to first: the last one :meth:`rows` computed is reused (one block in all up to
        :data:`_BLOCK_FRAMES` frames, ≈ 33 s)."""
        out = torch.empty(self.count)
        for first, block, _ in self._blocks(backward=True):
            torch.add(block @ scale, bias, out=out[first : first + block.shape[0]])
        return out

    def _blocks(self, backward: bool = False) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        starts = range(0, self.count, _BLOCK_FRAMES)
        return (self._block(first) for first in (reversed(starts) if backward else starts))

    def _block(self, first: int) -> tuple[int, torch.Tensor, torch.Tensor]:
        """Frames ``first …`` of a block: ``(first, features, log mel)``, the last block
        computed kept for reuse. The moving averages replicate the ends of what they are
        given; computed over the block and a margin beyond their reach, they equal the whole
        signal's (whose ends are replicated)."""
        if self.last is not None and self.last[0] == first:
            return self.last
        self.last = None  # its memory is free before the next block's is taken
        last = min(first + _BLOCK_FRAMES, self.count)
        lo, hi = max(0, first - _MARGIN_FRAMES), min(self.count, last + _MARGIN_FRAMES)
        frames = centred_frames(self.x, step=self.hop, first=lo, count=hi - lo, win=self.hop)
        frames = frames.detach().float().cpu() * _hann(self.hop, torch.device("cpu"))
        spectrum = torch.fft.rfft(frames, n=self.n_fft)
        power = spectrum.real.square() + spectrum.imag.square()
        log_mel = torch.log(power @ self.mel.T + 1e-10)
        change = _moving_average(log_mel, self.fast) - _moving_average(log_mel, self.slow)
        grouped = change.square().view(change.shape[0], _MODULATION_GROUPS, -1).mean(dim=-1)
        depth = 0.5 * torch.log(_moving_average(grouped, self.depth) + 1e-6)
        context = [_moving_average(log_mel, width) for width in self.context]
        features = torch.cat([log_mel, depth, *context], dim=1)
        keep = slice(first - lo, last - lo)
        self.last = first, features[keep], log_mel[keep]
        return self.last


def _replicate(values: torch.Tensor, before: int, after: int) -> torch.Tensor:
    """``values`` ``(frame, feature)`` with its first row repeated ``before`` times and its
    last ``after`` times."""
    return torch.cat([values[:1].expand(before, -1), values, values[-1:].expand(after, -1)])


def _moving_average(values: torch.Tensor, width: int) -> torch.Tensor:
    """Moving mean over ``width`` frames along the first axis of ``(frame, feature)``, centred
    (``width // 2`` frames before, the rest after), the ends replicated."""
    if width <= 1:
        return values
    padded = _replicate(values, width // 2, width - 1 - width // 2)
    running = F.pad(torch.cumsum(padded, dim=0), (0, 0, 1, 0))
    return (running[width:] - running[:-width]) / width
