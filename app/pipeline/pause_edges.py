"""Pause edges of the ``energy`` voice activity backend.

The detector's frames (25 ms), smoothing and SNR-dependent hangover put the edges of pauses tens
of ms off the speech, and under noise it takes bursts for speech and misses weak word ends. Four
stages, run by :func:`~app.pipeline.segment.vad` in this order on the segments' times (seconds),
re-place them against the noise measured inside each pause:

1. :func:`refine_pause_edges`: both edges of every pause at a 2.5 ms step, in five bands from
   60 Hz to 8 kHz, where the speech leaves the pause's own noise;
2. :func:`trim_detached_weak_sounds`: next to quiet pauses, breaths, lip noise and faint sounds
   detached from the word are given to the pause;
3. :func:`place_edges_by_likelihood`: next to noisy pauses, the change point of a sub-band
   likelihood-ratio test against the pause's noise (Sohn, Kim & Sung 1999), with a longer
   search and a foreground-against-babble classifier trained on the recording under bursty
   noise (:mod:`app.pipeline.foreground`), and corrections for the word ends stationary noise
   hides; false gaps near the pauses are filled;
4. :func:`drop_background_blips`: short segments inside a pause that do not stand out from its
   noise are dropped.

The constants are :class:`~app.pipeline.energy_vad.EnergyVadTuning`'s, with what each was
measured to do on the evaluation (``scripts/eval_segmentation.py``). Every stage works on
pauses in blocks, so memory beyond the signal is bounded apart from a few numbers per pause.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Protocol

import torch
import torch.nn.functional as F

from app.pipeline.energy_vad import (
    _POWER_FLOOR,
    ENERGY_TUNING,
    EnergyVadTuning,
    _band_weights,
    _hann,
)
from app.pipeline.foreground import ForegroundOdds, foreground_odds

#: Pause edges refined per block (bounds the memory of their spectra).
_EDGE_BLOCK = 32
#: Frames of the edge analysis whose spectra are computed at a time (bounded memory).
_LEVEL_BATCH = 1024


def refine_pause_edges(
    x: torch.Tensor,
    start_s: torch.Tensor,
    end_s: torch.Tensor,
    *,
    sample_rate: int,
    tuning: EnergyVadTuning | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Move the speech edges next to every pause to where the speech leaves the pause's noise.

    The detector's frames (25 ms windows, 30 ms smoothing, an SNR-dependent hangover) place an
    edge tens of ms away from where the speech ends, and its 200–3600 Hz band misses the
    fricatives above it. For each gap of at least ``edge_min_pause_s`` between segments, and
    each of its two edges: the energies of five bands (60 Hz–8 kHz, up to Nyquist) in 16 ms
    Hann frames every 2.5 ms are measured over ``[edge − edge_search_s, edge + edge_noise_s]``
    (into the speech, into the pause); the pause's own noise per band is the median over its
    frames from ``edge_guard_s`` to ``edge_noise_s`` inside it (at most half the pause), its
    spread the 90th percentile's distance from the median. A frame is active when a band
    exceeds its median by ``edge_spread`` spreads and ``edge_margin_db``. Next to a quiet pause
    (the loudest frame of the speech side, total level of the bands, at least
    ``edge_quiet_range_db`` over the pause's median), a run of active frames no longer than
    the window (what one click excites) after at least a window of inactive ones on its
    speech side is an isolated transient, not speech; under noise (a smaller range) weak word
    ends surface in such short runs between masked frames, so they count. The edge moves to
    the pause side of the last ``edge_run`` active frames in a row within the search span
    (into the pause by at most ``edge_reach_s`` and half the pause). An edge with no such run
    stays. Edges are refined in blocks of 32, so memory does not grow with the signal.

    Args:
        x: signal, shape ``(time,)``, full scale = 1.0.
        start_s: segment onsets, seconds, float64, shape ``(segment,)``, sorted.
        end_s: segment offsets, seconds, float64, shape ``(segment,)`` (``start_s < end_s``
            and ``end_s[i] ≤ start_s[i + 1]``).
        sample_rate: Hz.
        tuning: the constants (default :data:`~app.pipeline.energy_vad.ENERGY_TUNING`).

    Returns:
        ``(start_s, end_s)``: refined copies, same shapes; only edges of long gaps move, and a
        segment whose refined edges cross keeps its original ones.
    """
    t = tuning or ENERGY_TUNING
    return _move_pause_edges(x, start_s, end_s, _refine_edges, sample_rate=sample_rate, tuning=t)


def _pauses_between(
    x: torch.Tensor, start_s: torch.Tensor, end_s: torch.Tensor, tuning: EnergyVadTuning
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The gaps between segments (``start_s``, ``end_s``: seconds, shape ``(segment,)``):
    their edges ``(gap_lo, gap_hi)``, seconds, shape ``(segment − 1,)``, and the indices of
    those at least ``edge_min_pause_s`` long (the pauses whose edges move), int64; no pauses
    with fewer than two segments or an empty signal."""
    gap_lo, gap_hi = end_s[:-1], start_s[1:]
    if start_s.numel() < 2 or x.shape[-1] == 0:
        return gap_lo, gap_hi, torch.zeros(0, dtype=torch.long)
    pauses = torch.nonzero(gap_hi - gap_lo >= tuning.edge_min_pause_s - 1e-9).flatten()
    return gap_lo, gap_hi, pauses


class _EdgeMover(Protocol):
    def __call__(
        self,
        x: torch.Tensor,
        edge_s: torch.Tensor,
        half_pause_s: torch.Tensor,
        direction: int,
        *,
        sample_rate: int,
        tuning: EnergyVadTuning,
    ) -> torch.Tensor: ...


def _move_pause_edges(
    x: torch.Tensor,
    start_s: torch.Tensor,
    end_s: torch.Tensor,
    move: _EdgeMover,
    *,
    sample_rate: int,
    tuning: EnergyVadTuning,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Copies of the segments (``start_s``, ``end_s``: seconds, shape ``(segment,)``) with the
    edges of their pauses (:func:`_pauses_between`) moved by ``move``: offsets with
    ``direction`` +1, onsets with −1, each with half its pause (seconds); where a segment's new
    edges cross, its old ones."""
    start_s, end_s = start_s.clone(), end_s.clone()
    *_, pauses = _pauses_between(x, start_s, end_s, tuning)
    if pauses.numel() == 0:
        return start_s, end_s
    gap_lo, gap_hi = end_s[pauses], start_s[pauses + 1]
    half = (gap_hi - gap_lo) / 2.0
    new_end, new_start = end_s.clone(), start_s.clone()
    new_end[pauses] = move(x, gap_lo, half, 1, sample_rate=sample_rate, tuning=tuning)
    new_start[pauses + 1] = move(x, gap_hi, half, -1, sample_rate=sample_rate, tuning=tuning)
    return _unless_crossed(start_s, end_s, new_start, new_end)


def _unless_crossed(
    start_s: torch.Tensor, end_s: torch.Tensor, new_start: torch.Tensor, new_end: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The new edges of every segment, except where they cross (``new_end ≤ new_start``):
    there the old ones, seconds, shape ``(segment,)`` each."""
    crossed = new_end <= new_start
    return torch.where(crossed, start_s, new_start), torch.where(crossed, end_s, new_end)


def _refine_edges(
    x: torch.Tensor,
    edge_s: torch.Tensor,
    half_pause_s: torch.Tensor,
    direction: int,
    *,
    sample_rate: int,
    tuning: EnergyVadTuning,
) -> torch.Tensor:
    """Refined edge times, seconds, shape ``(edge,)`` (see :func:`refine_pause_edges`);
    ``direction`` is +1 for offsets (the pause follows) and −1 for onsets (it precedes)."""
    t = tuning
    win, hop = _edge_frame(sample_rate, t)
    hop_s = hop / sample_rate
    back = int(round(t.edge_search_s / hop_s))
    reach = int(round(t.edge_reach_s / hop_s))
    into_pause_s = torch.arange(-back, reach + 1).double() * hop_s  # (position,)
    out = []
    for first in range(0, edge_s.numel(), _EDGE_BLOCK):
        edge = edge_s[first : first + _EDGE_BLOCK]
        half = half_pause_s[first : first + _EDGE_BLOCK, None]
        centre = torch.round(edge / hop_s).long()  # edge on the hop grid
        # The speech side's frames and the pause's noise frames (only those within half the
        # pause, which the thresholds use) in one analysis: frames they share are analysed once.
        steps, in_noise = _noise_frames(half[:, 0], sample_rate, t)
        positions = torch.cat([torch.arange(-back, reach + 1), steps])
        need = torch.cat(
            [torch.ones(edge.numel(), back + reach + 1, dtype=torch.bool), in_noise], 1
        )
        levels = _edge_levels(
            x, centre, direction, positions, need, sample_rate=sample_rate, tuning=t
        )
        level, noise = levels[:, : back + reach + 1], levels[:, back + reach + 1 :]
        threshold = _noise_threshold(torch.where(in_noise[..., None], noise, torch.nan), t)
        active = (level >= threshold[:, None, :]).any(dim=-1)
        quiet = _speech_range_db(level[:, :back], noise, in_noise) >= t.edge_quiet_range_db
        steady = _without_isolated_transients(active, math.ceil(win / hop))
        active = torch.where(quiet[:, None], steady, active).double()
        run = t.edge_run
        full = F.avg_pool1d(active[:, None], run, stride=1)[:, 0] > 1.0 - 1e-9
        ok = F.pad(full, (run - 1, 0))  # a run of active frames ends at this position
        ok &= into_pause_s <= half.clamp(max=t.edge_reach_s)
        position = torch.where(ok, torch.arange(ok.shape[1]), -1).amax(dim=1)
        moved = centre.double() + direction * (position - back).double() + 0.5 * direction
        out.append(torch.where(position >= 0, moved * hop_s, edge))
    return torch.cat(out)


def _pause_noise(
    x: torch.Tensor,
    centre: torch.Tensor,
    half_pause_s: torch.Tensor,
    direction: int,
    sample_rate: int,
    tuning: EnergyVadTuning,
    *,
    total: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The pause's noise next to each edge (``centre``: edges in hops of the edge analysis,
    shape ``(edge,)``; ``half_pause_s``: half of each pause, seconds): band levels of frames
    every ``edge_noise_hop_s`` from ``edge_guard_s`` to ``edge_noise_s`` into the pause, dB,
    shape ``(edge, frame, band)`` (NaN for the frames beyond half the pause, which are not
    analysed; with ``total``: whole levels of all of them, ``(edge, frame)``), and which of
    them lie within half the pause, bool, shape ``(edge, frame)``."""
    steps, in_noise = _noise_frames(half_pause_s, sample_rate, tuning)
    if total:
        stride = int(steps[1] - steps[0]) if steps.numel() > 1 else 1
        noise = _levels_into_pause(
            x,
            centre,
            direction,
            int(steps[0]),
            int(steps[-1]),
            stride,
            sample_rate=sample_rate,
            tuning=tuning,
            total=True,
        )
    else:
        noise = _edge_levels(
            x, centre, direction, steps, in_noise, sample_rate=sample_rate, tuning=tuning
        )
    return noise, in_noise


def _noise_frames(
    half_pause_s: torch.Tensor, sample_rate: int, tuning: EnergyVadTuning
) -> tuple[torch.Tensor, torch.Tensor]:
    """The frames of the pause's noise estimate (:func:`_pause_noise`): their positions, hops
    of the edge analysis into the pause, int64, shape ``(frame,)``, and which of them lie within
    half of each pause (``half_pause_s``: seconds, shape ``(edge,)``), bool, ``(edge, frame)``."""
    t = tuning
    hop_s = _edge_frame(sample_rate, t)[1] / sample_rate
    stride = max(1, int(round(t.edge_noise_hop_s / hop_s)))
    guard = int(math.ceil(t.edge_guard_s / hop_s - 1e-9))
    steps = torch.arange(guard, int(round(t.edge_noise_s / hop_s)) + 1, stride)
    in_noise = steps.double() * hop_s <= half_pause_s[:, None].clamp(max=t.edge_noise_s)
    return steps, in_noise


def _edge_levels(
    x: torch.Tensor,
    centre: torch.Tensor,
    direction: int,
    positions: torch.Tensor,
    need: torch.Tensor | None = None,
    *,
    sample_rate: int,
    tuning: EnergyVadTuning,
) -> torch.Tensor:
    """Band levels (:func:`_edge_band_levels`) of the frames ``positions`` hops into the pause
    from each edge (negative: into the speech; int64, shape ``(position,)``), ``centre``
    holding the edges in hops, shape ``(edge,)``: dB, float64, shape
    ``(edge, position, band)``; only where ``need`` (bool, ``(edge, position)``; default all),
    NaN elsewhere, and a frame two of them share is analysed once."""
    hops = centre[:, None] + direction * positions[None, :]
    return _levels_at(x, hops, need, sample_rate=sample_rate, tuning=tuning)


def _levels_at(
    x: torch.Tensor,
    hops: torch.Tensor,
    need: torch.Tensor | None = None,
    *,
    sample_rate: int,
    tuning: EnergyVadTuning,
) -> torch.Tensor:
    """Band levels (:func:`_edge_band_levels`) of the frames centred on ``hops`` (hops of the
    edge analysis, int64, any shape; zero beyond the signal) where ``need`` (bool, same shape;
    default all), NaN elsewhere: dB, float64, shape ``(*hops.shape, band)``. Each distinct
    frame is analysed once, :data:`_LEVEL_BATCH` frames at a time (bounded memory)."""
    win, hop = _edge_frame(sample_rate, tuning)
    wanted = hops[need] if need is not None else hops.flatten()
    unique, inverse = torch.unique(wanted, return_inverse=True)
    starts = unique * hop - win // 2
    parts = [
        _edge_band_levels(
            _sample_rows(x, starts[i : i + _LEVEL_BATCH], win),
            sample_rate=sample_rate,
            tuning=tuning,
        )
        for i in range(0, unique.numel(), _LEVEL_BATCH)
    ]
    bands = len(_edge_bands(sample_rate, tuning))
    values = torch.cat(parts) if parts else torch.zeros(0, bands, dtype=torch.float64)
    if need is None:
        return values[inverse].view(*hops.shape, bands)
    out = torch.full((*hops.shape, bands), torch.nan, dtype=torch.float64)
    out[need] = values[inverse]
    return out


def _speech_range_db(
    speech: torch.Tensor, noise: torch.Tensor, in_noise: torch.Tensor
) -> torch.Tensor:
    """How far the speech next to each edge stands over its pause: the loudest total (all
    bands) level of the speech side minus the pause's median total level, dB, shape
    ``(edge,)``.

    Args:
        speech: band levels on the speech side, dB, shape ``(edge, position, band)``.
        noise: band levels inside the pause, dB, shape ``(edge, frame, band)``.
        in_noise: which of those frames are the pause's noise, bool, shape ``(edge, frame)``.
    """
    to_nepers = math.log(10.0) / 10.0
    loudest = torch.logsumexp(speech * to_nepers, dim=-1).amax(dim=-1)
    pause = torch.where(in_noise, torch.logsumexp(noise * to_nepers, dim=-1), torch.nan)
    return (loudest - pause.nanmedian(dim=-1).values) / to_nepers


def _without_isolated_transients(active: torch.Tensor, window: int) -> torch.Tensor:
    """Activity without isolated transients: runs of active frames no longer than ``window``
    frames (what one impulse excites) after at least ``window`` inactive frames.

    Args:
        active: frame activity, bool, shape ``(edge, position)``, positions from the speech
            side to the pause side.
        window: the analysis window in frames (window length over hop, rounded up).

    Returns:
        Bool tensor of the same shape.
    """
    index = torch.arange(active.shape[-1])

    def since(frames: torch.Tensor) -> torch.Tensor:
        # Frames up to and including each position since the last one outside ``frames``.
        return index - torch.where(~frames, index, -1).cummax(dim=-1).values

    run_so_far, gap_so_far = since(active), since(~active)
    length = run_so_far + since(active.flip(-1)).flip(-1) - 1  # of the run a frame is in
    start = index - run_so_far + 1  # of the run (active frames)
    gap_before = gap_so_far.gather(-1, (start - 1).clamp(0, index.numel() - 1))
    isolated = active & (length <= window) & (start > 0) & (gap_before >= window)
    return active & ~isolated


def _levels_into_pause(
    x: torch.Tensor,
    centre: torch.Tensor,
    direction: int,
    first: int,
    last: int,
    stride: int,
    *,
    sample_rate: int,
    tuning: EnergyVadTuning,
    total: bool = False,
) -> torch.Tensor:
    """Band levels (:func:`_edge_band_levels`) of the frames ``first, first + stride, …, last``
    hops into the pause from each edge (negative: into the speech); ``centre`` holds the edges
    in hops, shape ``(edge,)``. Returns shape ``(edge, position, band)``, dB, or with
    ``total`` each frame's whole level (rectangular frames), ``(edge, position)``."""
    count = (last - first) // stride + 1
    last = first + (count - 1) * stride
    # The earliest frame in time: the last position for onsets (the pause precedes).
    earliest = centre + (first if direction > 0 else -last)
    level = _frame_levels(
        x, earliest, count, stride, sample_rate=sample_rate, tuning=tuning, total=total
    )
    return level if direction > 0 else level.flip(1)


def _frame_levels(
    x: torch.Tensor,
    first: torch.Tensor,
    count: int,
    stride: int,
    *,
    sample_rate: int,
    tuning: EnergyVadTuning,
    total: bool = False,
    need: torch.Tensor | None = None,
) -> torch.Tensor:
    """Band levels (:func:`_edge_band_levels`) of ``count`` frames every ``stride`` hops from
    frame ``first`` (in hops of the edge analysis, one row per entry of ``first``, shape
    ``(row,)``; zero beyond the signal). Returns shape ``(row, count, band)``, dB (only where
    ``need``, bool, ``(row, count)``, if given; NaN elsewhere), or with
    ``total`` each frame's whole level (sum of squares of the rectangular frame, dB re full
    scale, float64 on the CPU), ``(row, count)``."""
    win, hop = _edge_frame(sample_rate, tuning)
    if not total:
        hops = first[:, None] + stride * torch.arange(count)[None, :]
        return _levels_at(x, hops, need, sample_rate=sample_rate, tuning=tuning)
    lo = first * hop - win // 2
    # Whole levels: sums of squares of rectangular frames, from running sums (no spectra).
    rows = _sample_rows(x, lo, (count - 1) * stride * hop + win).double().cpu()
    running = F.pad(rows.square().cumsum(dim=-1), (1, 0))
    starts = torch.arange(count) * (stride * hop)
    energy = running[:, starts + win] - running[:, starts]
    return 10.0 * torch.log10(energy.clamp_min(_POWER_FLOOR))


def _sample_rows(x: torch.Tensor, lo: torch.Tensor, span: int) -> torch.Tensor:
    """``span`` samples from each sample ``lo`` (shape ``(row,)``; zero beyond the signal),
    shape ``(row, span)``, on ``x``'s device."""
    n = x.shape[-1]
    if lo.numel() and span <= n and bool(((lo >= 0) & (lo <= n - span)).all()):
        return x.unfold(0, span, 1).index_select(0, lo.to(x.device))  # a view: rows copied
    rows = []
    for a in lo.tolist():
        part = x[min(max(a, 0), n) : min(max(a + span, 0), n)]  # empty when wholly outside
        before = min(max(-a, 0), span)
        rows.append(F.pad(part, (before, span - before - part.shape[-1])))
    return torch.stack(rows) if rows else x.new_zeros(0, span)


def _edge_frame(sample_rate: int, tuning: EnergyVadTuning) -> tuple[int, int]:
    """``(win, hop)`` of the edge analysis, samples."""
    win = max(16, int(round(tuning.edge_window_s * sample_rate)))
    return win, max(1, int(round(tuning.edge_hop_s * sample_rate)))


def _edge_band_levels(
    frames: torch.Tensor, *, sample_rate: int, tuning: EnergyVadTuning
) -> torch.Tensor:
    """Band energies of frames of shape ``(..., win)``: dB re full scale, float64 on the CPU,
    shape ``(..., band)`` (the bands of ``tuning.edge_bands_hz`` below Nyquist)."""
    win = frames.shape[-1]
    bands = _edge_bands(sample_rate, tuning)
    weights = _band_weights(sample_rate, win, win, bands, frames.device).to(frames.dtype)
    spectrum = torch.fft.rfft(frames * _hann(win, frames.device).to(frames.dtype), n=win)
    power = (spectrum * spectrum.conj()).real @ weights.T  # |X|², as re² + im²
    return 10.0 * torch.log10(power.clamp_min(_POWER_FLOOR)).double().cpu()


def _edge_bands(sample_rate: int, tuning: EnergyVadTuning) -> tuple[tuple[float, float], ...]:
    """The bands of ``tuning.edge_bands_hz`` below Nyquist (the last one clipped to it), Hz."""
    nyquist = sample_rate / 2.0
    return tuple((lo, min(hi, nyquist)) for lo, hi in tuning.edge_bands_hz if lo < nyquist)


def _noise_threshold(noise: torch.Tensor, tuning: EnergyVadTuning) -> torch.Tensor:
    """Per-band activity threshold from noise levels of shape ``(..., frame, band)`` (NaN =
    not noise): the median plus ``edge_spread`` robust standard deviations (from the 90th
    percentile), at least ``edge_margin_db``; shape ``(..., band)``, dB."""
    ordered = noise.sort(dim=-2).values  # NaN last
    valid = (~noise.isnan()).sum(dim=-2, keepdim=True)
    last = (valid - 1).clamp_min(0)

    def at(index: torch.Tensor) -> torch.Tensor:
        return ordered.gather(-2, index.clamp_min(0)).squeeze(-2)

    median = at(last // 2)  # the lower middle value, as torch.nanmedian
    position = 0.9 * last.double()  # the 90th percentile, linear interpolation
    below = position.floor().long()
    upper = at(torch.minimum(below + 1, last))
    q90 = at(below) + (position - below).squeeze(-2).to(ordered.dtype) * (upper - at(below))
    spread = (q90 - median) / 1.2816
    threshold = median + (tuning.edge_spread * spread).clamp_min(tuning.edge_margin_db)
    return torch.where(valid.squeeze(-2) > 0, threshold, torch.nan)


#: Edges :func:`trim_detached_weak_sounds` analyses at a time (bounds the memory of their
#: frames and spectra, under the other stages' peak).
_DETACHED_BLOCK = 32
#: Hops of the edge analysis between the frames of :func:`trim_detached_weak_sounds` (5 ms).
_DETACHED_STEP = 2


def trim_detached_weak_sounds(
    x: torch.Tensor,
    start_s: torch.Tensor,
    end_s: torch.Tensor,
    *,
    sample_rate: int,
    tuning: EnergyVadTuning | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Move the edges of quiet pauses off weak sounds detached from the speech (breaths).

    In a clean recording the detector and :func:`refine_pause_edges` hear what a band lifts
    over the room tone: an inhalation before a phrase, the breath or lip noise after one, a
    faint release 50 ms after a word. Those belong to the pause (the convention of pause
    annotation, and of the evaluation's labels: > 10 dB over the clean floor for ≥ 30 ms),
    and counting them as speech stretches the edges by 50–300 ms. For each edge of a gap of at
    least ``edge_min_pause_s`` (a pause), looking back ``detached_lookback_s`` into the speech
    in 16 ms frames every 5 ms: the total level of each frame (rectangular frames, dB) against
    the median of the pause's (its noise frames as in :func:`refine_pause_edges`). Next to a
    quiet pause (the loudest frame at least ``detached_range_db`` over that median; under
    noise a weak sound is masked, and what the level tests hear there is speech), the speech
    is the last run of ``detached_min_s`` of frames at least ``detached_level_db`` over the
    median. Where a gap and more sound fit after it, the frames' activity is measured as in
    :func:`refine_pause_edges` (band levels of Hann frames against the pause's noise, same
    bands and thresholds); if at least ``detached_gap_s`` of inactive frames follow the speech
    before more activity (the weak, detached sound), the edge moves to the pause side of the
    last active frame before that gap. Other edges stay. Edges are handled in blocks of
    :data:`_DETACHED_BLOCK` (bounded memory).

    Args:
        x: signal, shape ``(time,)``, full scale = 1.0.
        start_s: segment onsets, seconds, float64, shape ``(segment,)``, sorted.
        end_s: segment offsets, seconds, float64, shape ``(segment,)``.
        sample_rate: Hz.
        tuning: the constants (default :data:`~app.pipeline.energy_vad.ENERGY_TUNING`).

    Returns:
        ``(start_s, end_s)``: copies, same shapes; only edges of quiet pauses move (towards
        the speech), and a segment whose new edges cross keeps its old ones.
    """
    t = tuning or ENERGY_TUNING
    return _move_pause_edges(x, start_s, end_s, _trim_edges, sample_rate=sample_rate, tuning=t)


def _trim_edges(
    x: torch.Tensor,
    edge_s: torch.Tensor,
    half_pause_s: torch.Tensor,
    direction: int,
    *,
    sample_rate: int,
    tuning: EnergyVadTuning,
) -> torch.Tensor:
    """Trimmed edge times, seconds, shape ``(edge,)`` (see :func:`trim_detached_weak_sounds`);
    ``direction`` is +1 for offsets (the pause follows) and −1 for onsets (it precedes)."""
    t = tuning
    hop_s = _edge_frame(sample_rate, t)[1] / sample_rate
    step = _DETACHED_STEP
    count = int(round(t.detached_lookback_s / (step * hop_s))) + 1  # frames, the edge's last
    sustained = max(1, int(round(t.detached_min_s / (step * hop_s))))
    gap = max(1, int(round(t.detached_gap_s / (step * hop_s))))
    index = torch.arange(count)
    look_back = (-step * (count - 1), 0, step)  # frames from the speech side to the edge
    out = []
    for first in range(0, edge_s.numel(), _DETACHED_BLOCK):
        edge = edge_s[first : first + _DETACHED_BLOCK]
        centre = torch.round(edge / hop_s).long()  # edge on the hop grid
        half = half_pause_s[first : first + _DETACHED_BLOCK]
        total = _levels_into_pause(
            x, centre, direction, *look_back, sample_rate=sample_rate, tuning=t, total=True
        )
        pause_db, in_noise = _pause_noise(x, centre, half, direction, sample_rate, t, total=True)
        median = torch.where(in_noise, pause_db, torch.nan).nanmedian(dim=-1).values
        loud = (total >= median[:, None] + t.detached_level_db).double()
        held = F.avg_pool1d(loud[:, None], sustained, stride=1)[:, 0] > 1.0 - 1e-9
        speech_end = torch.where(held, torch.arange(held.shape[1]) + sustained - 1, -1)
        speech_end = speech_end.amax(dim=1)  # last frame of the last sustained run
        moved = edge.clone()
        # Only where a gap and more sound fit after the speech is the activity needed.
        quiet = total.amax(dim=1) - median >= t.detached_range_db
        rows = torch.nonzero(quiet & (speech_end >= 0) & (speech_end < count - gap - 1))
        rows = rows.flatten()
        if rows.numel() > 0:
            # Activity matters only after the speech: from the earliest row's speech end on.
            skip = int(speech_end[rows].min()) + 1
            after_speech = (-step * (count - 1 - skip), 0, step)  # frames skip … count − 1
            level = _levels_into_pause(
                x, centre[rows], direction, *after_speech, sample_rate=sample_rate, tuning=t
            )  # (row, frame, band)
            noise, in_noise = _pause_noise(x, centre[rows], half[rows], direction, sample_rate, t)
            threshold = _noise_threshold(torch.where(in_noise[..., None], noise, torch.nan), t)
            active = F.pad((level >= threshold[:, None, :]).any(dim=-1), (skip, 0))
            silent = F.avg_pool1d((~active).double()[:, None], gap, stride=1)[:, 0] > 1 - 1e-9
            gap_start = torch.arange(silent.shape[1])  # first frame of each window of `gap`
            after = silent & (gap_start > speech_end[rows, None])
            first_gap = torch.where(after, gap_start, count).amin(dim=1)
            detached = (active & (index >= first_gap[:, None])).any(dim=1)
            # The pause side of the last active frame before the gap, in hops from the edge.
            into_pause = step * (first_gap - count).double() + 0.5 * step
            trimmed = (centre[rows].double() + direction * into_pause) * hop_s
            moved[rows] = torch.where(detached, trimmed, edge[rows])
        out.append(moved)
    return torch.cat(out)


def drop_background_blips(
    x: torch.Tensor,
    start_s: torch.Tensor,
    end_s: torch.Tensor,
    *,
    sample_rate: int,
    tuning: EnergyVadTuning | None = None,
) -> torch.Tensor:
    """Which segments to keep: short segments inside a pause that do not stand out from it.

    A segment shorter than ``blip_max_s`` with segments on both sides, whose surrounding
    silence (the gaps before and after it) totals at least ``edge_noise_s / 2``, is compared
    with the noise of up to ``edge_noise_s`` of each adjacent gap: its frames are active as
    in :func:`refine_pause_edges` (band levels of 16 ms frames every 2.5 ms against the gaps'
    per-band median plus spreads), and it is kept when at least ``blip_active`` of them are.
    This drops the flutter of room tone and of distant babble that the detector's adaptive
    floor lets through, and keeps short words (which stand out in some band).

    Args:
        x: signal, shape ``(time,)``, full scale = 1.0.
        start_s, end_s: the segments, seconds, float64, shape ``(segment,)``, sorted,
            non-overlapping.
        sample_rate: Hz.
        tuning: the constants (default :data:`~app.pipeline.energy_vad.ENERGY_TUNING`).

    Returns:
        Bool tensor of shape ``(segment,)``: true for the segments to keep.
    """
    t = tuning or ENERGY_TUNING
    keep = torch.ones(start_s.numel(), dtype=torch.bool)
    hop = _edge_frame(sample_rate, t)[1]
    if start_s.numel() < 3:
        return keep
    length = end_s - start_s
    before = start_s[1:-1] - end_s[:-2]
    after = start_s[2:] - end_s[1:-1]
    checked = (length[1:-1] < t.blip_max_s) & (before + after >= t.edge_noise_s / 2)
    candidates = torch.nonzero(checked).flatten() + 1
    if candidates.numel() == 0:
        return keep
    # Frames every hop over each candidate and up to edge_noise_s of each adjacent gap.
    lo = torch.maximum(end_s[candidates - 1], start_s[candidates] - t.edge_noise_s)
    hi = torch.minimum(start_s[candidates + 1], end_s[candidates] + t.edge_noise_s)
    first = torch.ceil(lo * sample_rate / hop - 1e-9).long()
    frames = torch.ceil(hi * sample_rate / hop - 1e-9).long() - first
    for block in range(0, candidates.numel(), _EDGE_BLOCK):
        rows = slice(block, block + _EDGE_BLOCK)
        span = int(frames[rows].max())
        if span < 1:
            continue
        step = torch.arange(span)
        time_s = (first[rows, None] + step[None, :]).double() * hop / sample_rate
        valid = step[None, :] < frames[rows, None]
        level = _frame_levels(
            x, first[rows], span, 1, sample_rate=sample_rate, tuning=t, need=valid
        )
        index = candidates[rows]
        in_segment = valid & (time_s >= start_s[index, None]) & (time_s < end_s[index, None])
        in_noise = valid & ~in_segment
        threshold = _noise_threshold(torch.where(in_noise[..., None], level, torch.nan), t)
        active = ((level >= threshold[:, None, :]).any(dim=-1) & in_segment).sum(dim=1)
        inside = in_segment.sum(dim=1)
        judged = (inside > 0) & (in_noise.sum(dim=1) >= 2)
        keep[index] = ~judged | (active >= t.blip_active * inside)
    return keep


#: Pauses whose likelihood-ratio evidence is computed at a time (bounds the memory of their
#: spectra; see :func:`place_edges_by_likelihood`; at 48 this stage's peak, ≈ 10 MB, was the
#: call's once the analysis blocks shrank).
_LR_BLOCK = 24
#: Samples whose energies are summed at a time (the gate's frame powers).
_LR_STRETCH = 1 << 16
#: Frames of likelihood-ratio evidence per tile of the decision-directed recursion (tiles run
#: side by side, each after its own warm-up, so the loop over frames is short).
_LR_TILE = 32


def place_edges_by_likelihood(
    x: torch.Tensor,
    start_s: torch.Tensor,
    end_s: torch.Tensor,
    *,
    sample_rate: int,
    tuning: EnergyVadTuning | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Re-place the edges of noisy pauses at the change point of a likelihood-ratio test.

    Under noise the level tests of :func:`refine_pause_edges` place an edge where the speech
    first rises a few spreads over the noise, which misses the weak ends of words and takes
    noise bursts for speech. This stage tests every time-frequency bin against the pause's own
    noise with the statistical model of Sohn, Kim & Sung ("A statistical model-based voice
    activity detector", IEEE Signal Processing Letters 6(1), 1999), and places the edge at the
    maximum-likelihood change point of the evidence. For every gap of at least
    ``edge_min_pause_s`` (a pause; its edges ``a`` < ``b``, seconds):

    1. Gate. Rectangular frames of two hops (``lr_hop_s``; 16 ms) every hop on the signal's
       grid (frame ``j`` centred at sample ``j · hop``) cover an offset window ``[a −
       lr_search_s − lr_fill_span_s, a + edge_noise_s]`` and an onset window mirrored at
       ``b``; the pause's frames are those ``edge_guard_s`` inside it and at most
       ``min(edge_noise_s, half the pause)`` from their edge. A pause is re-placed only when
       the loudest frame of its two speech sides stands less than ``lr_gate_db`` over the
       median of its frames (total power, dB), and it has at least 4 frames: next to quieter
       pauses (clean speech) the reference edges are a level (the eval's: 10 dB over the clean
       floor), which the statistical test would overshoot. Bursty noise: when over the pauses
       the median spread of their frames' levels (of the signal's first difference: 90th
       percentile over median) reaches ``lr_bursty_spread_db`` and the median speech range
       is under ``lr_gate_db`` (babble), ``lr_search_s`` and ``lr_eta`` become
       ``lr_bursty_search_s`` and ``lr_bursty_eta`` for the whole signal: the detector joins
       babble bursts to the speech far into the pause, and the change point must reach back
       past them. A classifier of the foreground talker against the babble is then trained
       on the recording (:func:`~app.pipeline.foreground.foreground_odds`; ``fg_*``).
    2. Noise per bin (Hann frames, ``lr_bands_hz`` range, shape ``(bin,)``): the median of the
       powers of every other pause frame (they overlap by half), pooled over the re-placed
       pauses whose centres lie within ``lr_pool_s`` (the mean of their medians weighted by
       their frame counts), divided by ``ln 2``: the mean of an exponential (χ², 2 degrees of
       freedom) variable from its median, robust to speech tails left in the pause.
    3. Per frame ``t`` and bin ``k``, the a-posteriori SNR ``γ = power / noise`` and the
       decision-directed a-priori SNR ``ξ_t = max(α · A_{t−1} + (1 − α) · max(γ_t − 1, 0),
       ξ_min)`` with ``A_t = (ξ_t / (1 + ξ_t))² · γ_t`` (``lr_alpha``, ``lr_xi_min_db``),
       run forward in time from zero; the log likelihood ratio of speech over noise is
       ``γ ξ / (1 + ξ) − ln(1 + ξ)``. Only the frames used below are analysed: each window's
       core (its pause frames and the search span) and the frames of the short gaps near it
       (step 6). The recursion forgets its state within a few frames, so it runs over tiles
       of :data:`_LR_TILE` frames side by side, each from zero ``lr_warmup_s`` earlier (from
       the window's start where that comes first).
    4. Evidence: per band of ``lr_bands_hz`` the mean log likelihood ratio of its bins,
       divided by its ``lr_band_quantile`` quantile over the pause frames of the pooled pauses
       (1 = what the pause's noise reaches 5 % of the time in that band); the frame's evidence
       is the maximum over the bands, clipped to ``[0, lr_clip]``.
    5. Placement: the offset moves to the end of the prefix (from ``lr_search_s`` before it
       up to ``min(lr_reach_s, half the pause)`` after it) with the largest positive sum of
       ``evidence − lr_eta``, i.e. the maximum-likelihood change point of a speech | noise
       model; the onset mirrors it. Without a positive prefix the edge stays. Under
       stationary noise (not bursty), where the recording's median speech range ``ρ`` is low,
       two corrections for the word ends the noise hides: a moved onset extends further into
       the pause over a weak broadband sound (``lr_onset_*``: the band scores summed over the
       bands, their running excess over the pause's median and a bias that falls with ``ρ``),
       and a moved offset goes ``lr_offset_shift_s_per_db`` later per dB of ``ρ`` under
       ``lr_offset_shift_range_db`` (the tail decays under the noise before the labels' level).
       Under bursty noise the foreground classifier's log-odds, clipped to ``± fg_clip``, are
       added to every frame's ``evidence − lr_eta``.
    6. Filling: a gap shorter than ``lr_fill_max_s`` that starts at most ``lr_fill_span_s``
       before the offset (or ends at most as far after the onset) is filled when the mean
       evidence of that edge's window over the gap's frames (at least 2) reaches
       ``lr_fill_eta`` (a false gap inside a word). Under bursty noise, at the end, short
       segments between two others that the classifier calls babble are dropped and short
       gaps it does not are filled (:meth:`~app.pipeline.foreground.ForegroundOdds.drop_and_fill`).

    Pauses are processed in blocks of :data:`_LR_BLOCK`: first the gate and the per-pause
    noise statistics (``(bin,)`` and a frame count per pause, kept for the pooling), then the
    evidence; a block is placed once every pause within ``lr_pool_s`` of it has its evidence,
    and a block's pause-frame evidence is kept while later blocks may pool with it. Memory
    beyond the signal thus stays bounded apart from a few numbers per pause. The block size
    does not change the results.

    Args:
        x: signal, shape ``(time,)``, full scale = 1.0.
        start_s: segment onsets, seconds, float64, shape ``(segment,)``, sorted (as
            :func:`refine_pause_edges` returns them).
        end_s: segment offsets, seconds, float64, shape ``(segment,)``.
        sample_rate: Hz.
        tuning: the constants (default :data:`~app.pipeline.energy_vad.ENERGY_TUNING`).

    Returns:
        ``(start_s, end_s)``: float64, shape ``(segment',)`` with ``segment' ≤ segment``
        (filled gaps merge their segments); only edges of noisy pauses move, and a segment
        whose new edges cross keeps its old ones.
    """
    t = tuning or ENERGY_TUNING
    start_s, end_s = start_s.clone(), end_s.clone()
    gap_lo, gap_hi, pauses = _pauses_between(x, start_s, end_s, t)
    if pauses.numel() == 0:
        return start_s, end_s
    geo = _lr_geometry(gap_lo[pauses], gap_hi[pauses], sample_rate=sample_rate, tuning=t)
    survey = _lr_survey(x, geo)
    live = torch.nonzero(survey.noisy(t)).flatten()
    if live.numel() == 0:
        return start_s, end_s
    bursty = survey.bursty(x, geo, t)
    odds = None
    if bursty:
        t = replace(t, lr_search_s=t.lr_bursty_search_s, lr_eta=t.lr_bursty_eta)
        geo = _lr_geometry(gap_lo[pauses], gap_hi[pauses], sample_rate=sample_rate, tuning=t)
        odds = foreground_odds(x, start_s, end_s, sample_rate=sample_rate, tuning=t)
    noise, count = _lr_noise(x, geo, live, tuning=t)
    short = torch.nonzero(gap_hi - gap_lo < t.lr_fill_max_s).flatten()
    new_end, new_start = end_s.clone(), start_s.clone()
    fill = torch.zeros(gap_lo.numel(), dtype=torch.bool)
    stationary_range_db = None if bursty else survey.median_range_db()
    edges = _LrEdges(geo, live, count, gap_lo[short], gap_hi[short], t, stationary_range_db, odds)
    for placed in edges.run(x, noise):
        index, offset, onset, filled = placed
        new_end[pauses[live[index]]] = offset
        new_start[pauses[live[index]] + 1] = onset
        fill[short[filled]] = True
    start_s, end_s = _unless_crossed(start_s, end_s, new_start, new_end)
    keep_end = torch.cat([~fill, fill.new_ones(1)])
    keep_start = torch.cat([fill.new_ones(1), ~fill])
    start_s, end_s = start_s[keep_start], end_s[keep_end]
    if odds is not None:
        start_s, end_s = odds.drop_and_fill(start_s, end_s, t)
    return start_s, end_s


@dataclass(frozen=True)
class _LrGeometry:
    """The analysis windows of :func:`place_edges_by_likelihood`, per pause (time order).

    Attributes:
        a, b: the pause's edges, seconds, float64, shape ``(pause,)``.
        first: frame index (on the grid ``j · hop``) of each window's first frame, int64,
            shape ``(pause, 2)``: ``[:, 0]`` the offset window, ``[:, 1]`` the onset window.
        in_pause: which frames of the windows are the pause's, bool, ``(pause, 2, frame)``.
        win, hop: frame length and step, samples.
        frames: frames per window.
        pause_frames: the frames that can be in the pause: the last ``pause_frames`` of an
            offset window, the first of an onset window.
        bins: the FFT bins of the bands (consecutive); bands: each band's weights over them
            (the mean over its bins), float32, shape ``(bin, band)``.
        sample_rate: Hz.
    """

    a: torch.Tensor
    b: torch.Tensor
    first: torch.Tensor
    in_pause: torch.Tensor
    win: int
    hop: int
    frames: int
    pause_frames: int
    bins: slice
    bands: torch.Tensor
    sample_rate: int

    @property
    def hop_s(self) -> float:
        return self.hop / self.sample_rate

    def times(self, rows: torch.Tensor) -> torch.Tensor:
        """Frame centres of the windows of pauses ``rows``, seconds, ``(row, 2, frame)``."""
        step = torch.arange(self.frames)
        return (self.first[rows, :, None] + step).double() * self.hop_s


def _lr_geometry(
    a: torch.Tensor, b: torch.Tensor, *, sample_rate: int, tuning: EnergyVadTuning
) -> _LrGeometry:
    """The windows of the pauses with edges ``a`` < ``b`` (seconds, shape ``(pause,)``)."""
    t = tuning
    hop = max(1, int(round(t.lr_hop_s * sample_rate)))
    hop_s = hop / sample_rate
    span = t.lr_search_s + t.lr_fill_span_s
    frames = int(math.ceil((span + t.edge_noise_s) / hop_s - 1e-9)) + 1
    first = torch.stack(
        [torch.round((a - span) / hop_s), torch.round((b + span) / hop_s) - (frames - 1)], dim=1
    ).long()
    step = torch.arange(frames)
    time_s = (first[:, :, None] + step).double() * hop_s
    into = ((b - a) / 2).clamp(max=t.edge_noise_s)
    in_pause = (time_s >= (a + t.edge_guard_s)[:, None, None]) & (
        time_s <= (b - t.edge_guard_s)[:, None, None]
    )
    in_pause[:, 0] &= time_s[:, 0] <= (a + into)[:, None]
    in_pause[:, 1] &= time_s[:, 1] >= (b - into)[:, None]
    lead = max(0, int(math.floor((span + t.edge_guard_s) / hop_s - 0.5 - 1e-9)) - 1)
    pause_frames = frames - lead
    n_fft = 2 * hop
    freqs = torch.arange(n_fft // 2 + 1, dtype=torch.float64) * sample_rate / n_fft
    edges = t.lr_bands_hz
    rows = [
        (freqs >= lo) & (freqs < min(hi, sample_rate / 2.0))
        for lo, hi in zip(edges[:-1], edges[1:], strict=False)
    ]
    rows = [r for r in rows if bool(r.any())]
    selected = torch.stack(rows).any(dim=0)
    weights = torch.stack([r[selected].double() / float(r.sum()) for r in rows], dim=1)
    return _LrGeometry(
        a=a,
        b=b,
        first=first,
        in_pause=in_pause,
        win=n_fft,
        hop=hop,
        frames=frames,
        pause_frames=pause_frames,
        bins=slice(int(selected.nonzero()[0]), int(selected.nonzero()[-1]) + 1),
        bands=weights.float(),
        sample_rate=sample_rate,
    )


def _hop_energy(x: torch.Tensor, hop: int, *, differenced: bool = False) -> torch.Tensor:
    """Sum of squares of each stretch of ``hop`` samples ``[k · hop, (k + 1) · hop)`` (the last
    one partial) of ``x`` or, when ``differenced``, of its first difference ``x[i] − x[i − 1]``
    (``x[−1] = 0``), float64 on the CPU, shape ``(ceil(time / hop),)``; computed a bounded
    stretch at a time."""
    n = x.shape[-1]
    count = -(-n // hop)
    out = torch.empty(count, dtype=torch.float64)
    step = max(1, _LR_STRETCH // hop)
    for k in range(0, count, step):
        lo, hi = k * hop, min(n, (k + step) * hop)
        part = x[lo:hi].detach().float().cpu()
        if differenced:
            before = x[lo - 1 : hi - 1] if lo > 0 else F.pad(x[: hi - 1], (1, 0))
            part = part - before.detach().float().cpu()
        part = F.pad(part, (0, -part.shape[-1] % hop)).view(-1, hop)
        out[k : k + part.shape[0]] = torch.linalg.vecdot(part, part, dim=1)
    return out


@dataclass(frozen=True)
class _LrSurvey:
    """What step 1 of :func:`place_edges_by_likelihood` measures per pause (shape ``(pause,)``
    each).

    Attributes:
        range_db: the loudest frame of the two speech sides over the median of the pause's
            frames (total power of rectangular 16 ms frames), dB.
        enough: at least 4 pause frames.
    """

    range_db: torch.Tensor
    enough: torch.Tensor

    def noisy(self, tuning: EnergyVadTuning) -> torch.Tensor:
        """The pauses whose edges are re-placed: the speech under ``lr_gate_db`` over them."""
        return self.enough & (self.range_db < tuning.lr_gate_db)

    def median_range_db(self) -> float:
        """The median range of the pauses with enough frames, dB (∞ without one)."""
        enough = self.range_db[self.enough]
        return float(enough.median()) if enough.numel() else math.inf

    def mostly_noisy(self, tuning: EnergyVadTuning) -> bool:
        """Whether the median range of the pauses is under ``lr_gate_db``."""
        return self.median_range_db() < tuning.lr_gate_db

    def bursty(self, x: torch.Tensor, geo: _LrGeometry, tuning: EnergyVadTuning) -> bool:
        """Whether the recording's pauses (``geo``'s, in ``x``) hold bursty noise (babble):
        mostly noisy, and the median of their spreads (:func:`_pause_spread_db`, measured only
        then) at least ``lr_bursty_spread_db``."""
        if not self.mostly_noisy(tuning):
            return False
        spread = _pause_spread_db(x, geo)[self.enough]
        return bool(spread.median() >= tuning.lr_bursty_spread_db)


def _lr_survey(x: torch.Tensor, geo: _LrGeometry) -> _LrSurvey:
    """Step 1 of :func:`place_edges_by_likelihood`: the gate's measures."""
    count = geo.a.numel()
    range_db = torch.zeros(count, dtype=torch.float64)
    energy = F.pad(_hop_energy(x, geo.hop), (1, 1))  # entry k + 1: stretch k; zero outside
    for rows, frame in _lr_blocks(geo):
        level = _rectangular_levels(energy, frame, geo.win)
        pause = torch.where(geo.in_pause[rows], level, torch.nan).flatten(1)
        time_s = geo.times(rows)
        speech = torch.stack(
            [time_s[:, 0] < geo.a[rows, None], time_s[:, 1] > geo.b[rows, None]], dim=1
        )
        loudest = torch.where(speech, level, -math.inf).flatten(1).amax(dim=1)
        range_db[rows] = loudest - pause.nanmedian(dim=1).values
    enough = geo.in_pause.flatten(1).sum(dim=1) >= 4
    return _LrSurvey(range_db=range_db, enough=enough)


def _pause_spread_db(x: torch.Tensor, geo: _LrGeometry) -> torch.Tensor:
    """How much the noise of each pause varies: the 90th percentile of its frame levels of the
    signal's first difference over their median (rectangular 16 ms frames), dB, shape
    ``(pause,)``. Stationary noise varies little from frame to frame (white 0.4–0.7 dB); the
    difference whitens pink noise, whose low frequencies would; babble varies by 2.5–5 dB."""
    spread_db = torch.zeros(geo.a.numel(), dtype=torch.float64)
    changes = F.pad(_hop_energy(x, geo.hop, differenced=True), (1, 1))
    for rows, frame in _lr_blocks(geo):
        level = _rectangular_levels(changes, frame, geo.win)
        level = torch.where(geo.in_pause[rows], level, torch.nan).flatten(1)
        spread_db[rows] = _upper_quantile(level, 0.9) - level.nanmedian(dim=1).values
    return spread_db


def _lr_blocks(geo: _LrGeometry) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The pauses :data:`_LR_BLOCK` at a time: their indices, shape ``(row,)``, and the frame
    indices of their windows, shape ``(row, 2, frame)``."""
    step = torch.arange(geo.frames)
    for lo in range(0, geo.a.numel(), _LR_BLOCK):
        rows = torch.arange(lo, min(lo + _LR_BLOCK, geo.a.numel()))
        yield rows, geo.first[rows, :, None] + step


def _rectangular_levels(energy: torch.Tensor, frame: torch.Tensor, win: int) -> torch.Tensor:
    """Levels of rectangular frames of two stretches, dB: ``energy`` holds the sums of squares
    of the stretches (entry ``k + 1`` for stretch ``k``, zero at both ends), frame ``j``
    covers stretches ``j − 1`` and ``j`` (``win`` samples in all); frames outside the signal
    are silent. Same shape as ``frame`` (int64)."""
    last = energy.numel() - 2
    power = energy[frame.clamp(0, last)] + energy[(frame + 1).clamp(0, last + 1)]
    power = torch.where((frame >= 0) & (frame <= last), power, 0.0)
    return 10.0 * torch.log10(power / win + 1e-20)


def _lr_power(
    x: torch.Tensor,
    geo: _LrGeometry,
    first: torch.Tensor,
    count: int,
    stride: int = 1,
    *,
    by_frame: bool = False,
) -> torch.Tensor:
    """Power spectra (bins ``geo.bins``) of ``count`` Hann frames of two hops every ``stride``
    hops from frame ``first`` (centred at sample ``first · hop``; one row per entry of
    ``first``, shape ``(row,)``; zero beyond the signal), float32 on the CPU, shape
    ``(row, count, bin)``, or ``(count, row, bin)`` with ``by_frame``. The spectra are taken
    :data:`_LR_BLOCK` rows at a time (bounds their memory)."""
    rows, size = first.numel(), geo.bands.shape[0]
    out = torch.empty((count, rows, size) if by_frame else (rows, count, size))
    for lo in range(0, rows, _LR_BLOCK):
        part = _lr_power_rows(x, geo, first[lo : lo + _LR_BLOCK], count, stride)
        if by_frame:
            out[:, lo : lo + _LR_BLOCK] = part.transpose(0, 1)
        else:
            out[lo : lo + _LR_BLOCK] = part
    return out


def _lr_power_rows(
    x: torch.Tensor, geo: _LrGeometry, first: torch.Tensor, count: int, stride: int
) -> torch.Tensor:
    hop, n = geo.hop, x.shape[-1]
    whole = n // hop  # complete stretches of a hop; frame j spans stretches j − 1 and j
    index = first[:, None] - 1 + torch.arange((count - 1) * stride + 2)
    if whole:
        stretches = x[: whole * hop].reshape(whole, hop)
        parts = stretches[index.clamp(0, whole - 1).to(x.device)].detach().float().cpu()
    else:
        parts = torch.zeros(*index.shape, hop)
    outside = (index < 0) | (index >= whole)
    if bool(outside.any()):
        tail = F.pad(x[whole * hop :].detach().float().cpu(), (0, hop - n % hop))
        fill = torch.where((index == whole)[..., None], tail, 0.0)
        parts = torch.where(outside[..., None], fill, parts)
    frames = parts.view(parts.shape[0], -1).unfold(-1, geo.win, stride * hop)
    spectrum = torch.fft.rfft(frames * _hann(geo.win, frames.device), n=geo.win)
    spectrum = spectrum[..., geo.bins]
    return spectrum.real.square() + spectrum.imag.square()


def _upper_quantile(values: torch.Tensor, q: float) -> torch.Tensor:
    """The ``q`` quantile (``q`` near 1) along the last dimension ignoring NaN, with linear
    interpolation as :func:`torch.nanquantile` (from the largest values only), NaN where all
    are NaN; shape ``values.shape[:-1]``."""
    count = (~values.isnan()).sum(dim=-1, keepdim=True)
    last = (count - 1).clamp_min(0)
    needed = min(values.shape[-1], int(math.ceil((1.0 - q) * (values.shape[-1] - 1))) + 2)
    top = torch.nan_to_num(values, nan=-math.inf).topk(needed, dim=-1).values  # descending
    position = q * last.to(values.dtype)  # ascending rank
    below = position.floor().long()
    low = top.gather(-1, (last - below).clamp(0, needed - 1))
    high = top.gather(-1, (last - torch.minimum(below + 1, last)).clamp(0, needed - 1))
    out = low + (position - below) * (high - low)
    return torch.where(count > 0, out, torch.nan).squeeze(-1)


def _lr_noise(
    x: torch.Tensor, geo: _LrGeometry, live: torch.Tensor, *, tuning: EnergyVadTuning
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled noise power per bin of the live pauses (step 2 of
    :func:`place_edges_by_likelihood`), shape ``(live, bin)``, and their pause-frame counts,
    shape ``(live,)``."""
    p = geo.pause_frames
    lead = geo.frames - p
    used = (p + 1) // 2  # every other frame of each window's pause part (they overlap by half)
    median = torch.empty(live.numel(), geo.bands.shape[0])
    count = torch.empty(live.numel())
    for lo in range(0, live.numel(), _LR_BLOCK):
        rows = live[lo : lo + _LR_BLOCK]
        first = torch.stack([geo.first[rows, 0] + lead, geo.first[rows, 1]], dim=1)
        power = _lr_power(x, geo, first.flatten(), used, 2).view(rows.numel(), 2 * used, -1)
        mask = torch.cat([geo.in_pause[rows, 0, lead::2], geo.in_pause[rows, 1, :p:2]], dim=1)
        frames = torch.where(mask[..., None], power, torch.nan).transpose(1, 2).contiguous()
        median[lo : lo + rows.numel()] = frames.nanmedian(dim=-1).values
        count[lo : lo + rows.numel()] = mask.sum(dim=1).float()
    pooled = _pool(median, count, _centres(geo, live), tuning.lr_pool_s)
    return pooled / math.log(2.0) + 1e-20, count


def _centres(geo: _LrGeometry, live: torch.Tensor) -> torch.Tensor:
    return ((geo.a + geo.b) / 2)[live]


def _pool(
    values: torch.Tensor, count: torch.Tensor, centre_s: torch.Tensor, pool_s: float
) -> torch.Tensor:
    """Count-weighted mean of ``values`` (shape ``(pause, ...)``) over the pauses whose
    centres (sorted, shape ``(pause,)``) lie within ``pool_s`` of each one's."""
    weighted = (values.double() * count.double().view(-1, *[1] * (values.dim() - 1))).flatten(1)
    total = F.pad(torch.cumsum(weighted, 0), (0, 0, 1, 0))
    counts = F.pad(torch.cumsum(count.double(), 0), (1, 0))
    lo = torch.searchsorted(centre_s, centre_s - pool_s - 1e-9)
    hi = torch.searchsorted(centre_s, centre_s + pool_s + 1e-9, right=True)
    mean = (total[hi] - total[lo]) / (counts[hi] - counts[lo])[:, None]
    return mean.view(values.shape).to(values.dtype)


class _LrEdges:
    """Steps 3–6 of :func:`place_edges_by_likelihood` for the live pauses, a block at a time.

    :meth:`run` yields, per finished block, ``(index, offset_s, onset_s, filled)``: the live
    pauses' indices (into ``live``), their new offsets and onsets (seconds, float64), and the
    indices (into the short gaps) of the gaps to fill.
    """

    def __init__(
        self,
        geo: _LrGeometry,
        live: torch.Tensor,
        count: torch.Tensor,
        short_lo: torch.Tensor,
        short_hi: torch.Tensor,
        tuning: EnergyVadTuning,
        stationary_range_db: float | None,
        odds: ForegroundOdds | None,
    ) -> None:
        self.geo, self.live, self.count, self.t = geo, live, count, tuning
        # Under stationary noise the recording's median speech range, dB (None: bursty noise).
        self.stationary_range_db = stationary_range_db
        # Under bursty noise the foreground's log-odds, if the classifier could be trained.
        self.odds = odds
        self.short_lo, self.short_hi = short_lo, short_hi
        self.centre = _centres(geo, live)
        # Band evidence of the pause frames (NaN elsewhere) of the blocks that later blocks may
        # still pool with, for the quantiles: first live pause → (pause, frame, band).
        self.pause_evidence: dict[int, torch.Tensor] = {}

    def run(
        self, x: torch.Tensor, noise: torch.Tensor
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
        total = self.live.numel()
        pending: list[tuple[int, int, torch.Tensor]] = []
        for lo in range(0, total, _LR_BLOCK):
            hi = min(lo + _LR_BLOCK, total)
            pending.append((lo, hi, self._evidence(x, noise, lo, hi)))
            frontier = float(self.centre[hi]) if hi < total else math.inf
            # A block is placed once every pause within lr_pool_s of it has its evidence.
            while pending and self._reach(pending[0][1] - 1) < frontier:
                yield self._place(*pending.pop(0))

    def _reach(self, index: int) -> float:
        """The latest centre a live pause pools with, seconds."""
        return float(self.centre[index]) + self.t.lr_pool_s + 1e-9

    def _gaps_near(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Short gaps within reach of each window: bool ``(row, 2, gap)`` and the gaps'
        indices ``(gap,)`` (those in the block's time span)."""
        geo, t = self.geo, self.t
        a, b = geo.a[rows], geo.b[rows]
        lo = int(torch.searchsorted(self.short_lo, a[0] - t.lr_fill_span_s - 1e-9))
        hi = int(torch.searchsorted(self.short_lo, b[-1] + t.lr_fill_span_s + 1e-9))
        gaps = torch.arange(lo, hi)
        g_lo, g_hi = self.short_lo[gaps], self.short_hi[gaps]
        before = (g_lo[None, :] >= (a - t.lr_fill_span_s - 1e-9)[:, None]) & (
            g_lo[None, :] < a[:, None]
        )
        after = (g_hi[None, :] <= (b + t.lr_fill_span_s + 1e-9)[:, None]) & (
            g_hi[None, :] > b[:, None]
        )
        return torch.stack([before, after], dim=1), gaps

    def _gap_frames(
        self, rows: torch.Tensor, gaps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The frames of each short gap in each window of pauses ``rows`` (centres in
        ``[start, end)``): first and end frame, clamped to the window, ``(pause, 2, gap)``."""
        geo = self.geo
        first = geo.first[rows].double()[..., None]

        def frame(time_s: torch.Tensor) -> torch.Tensor:
            position = time_s[gaps].double() / geo.hop_s - first
            return torch.ceil(position - 1e-9).long().clamp(0, geo.frames)

        return frame(self.short_lo), frame(self.short_hi)

    def _evidence(self, x: torch.Tensor, noise: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        """Band evidence of the windows of live pauses ``lo … hi − 1`` (not yet divided by the
        quantiles), ``(pause, 2, frame, band)``, in time order, NaN at frames not needed; stores
        their pause frames' evidence.

        Each window needs its core (the pause frames and the search span: the last ``core``
        frames of an offset window, the first of an onset window) and the frames of the short
        gaps near it; they are cut into tiles of :data:`_LR_TILE` frames (one per gap outside
        the core), each analysed after ``lr_warmup_s`` of warm-up.
        """
        geo, t = self.geo, self.t
        rows = self.live[lo:hi]
        m, w, p = rows.numel(), geo.frames, geo.pause_frames
        core = min(w, p + int(math.ceil(t.lr_search_s / geo.hop_s)) + 2)
        core_lo, core_hi = torch.tensor([w - core, 0]), torch.tensor([w, core])  # per side
        size = max(_LR_TILE, int(math.ceil(t.lr_fill_max_s / geo.hop_s)) + 1)
        per = -(-core // size)
        tile_window = torch.arange(2 * m).repeat_interleave(per)  # window = 2 · pause + side
        tile_start = (
            core_lo.repeat(m).repeat_interleave(per) + torch.arange(per).repeat(2 * m) * size
        )
        step = torch.arange(size)
        side = tile_window % 2
        keep = (tile_start[:, None] + step) < core_hi[side][:, None]
        near, gaps = self._gaps_near(rows)
        if gaps.numel():
            g_lo, g_hi = self._gap_frames(rows, gaps)
            outside = torch.stack([g_lo[:, 0] < w - core, g_hi[:, 1] > core], dim=1)
            pause, gap_side, gap = torch.nonzero(near & outside, as_tuple=True)
            start, stop = g_lo[pause, gap_side, gap], g_hi[pause, gap_side, gap]
            position = start[:, None] + step
            in_core = (position >= core_lo[gap_side][:, None]) & (
                position < core_hi[gap_side][:, None]
            )
            tile_window = torch.cat([tile_window, 2 * pause + gap_side])
            tile_start = torch.cat([tile_start, start])
            keep = torch.cat([keep, (position < stop[:, None]) & ~in_core])
        warm = int(math.ceil(t.lr_warmup_s / geo.hop_s - 1e-9))
        first = geo.first[rows].flatten()[tile_window] + tile_start - warm
        gamma = _lr_power(x, geo, first, warm + size, by_frame=True)  # (frame, tile, bin)
        gamma /= noise[lo:hi].repeat_interleave(2, dim=0)[tile_window]
        # Zero before the window: the recursion starts there from a zero state.
        before = (tile_start - warm + torch.arange(warm)[:, None]) < 0  # (frame, tile)
        gamma[:warm] = torch.where(before[..., None], 0.0, gamma[:warm])
        alpha, xi_min = t.lr_alpha, 10.0 ** (t.lr_xi_min_db / 10.0)
        llr = _sohn_llr(gamma, alpha=alpha, xi_min=xi_min)
        band = (llr[warm:] @ geo.bands).transpose(0, 1)  # (tile, size, band)
        evidence = torch.full((2 * m, w, geo.bands.shape[1]), torch.nan)
        window = tile_window[:, None].expand(-1, size)
        evidence[window[keep], (tile_start[:, None] + step)[keep]] = band[keep]
        evidence = evidence.view(m, 2, w, -1)
        lead = w - p
        mask = torch.cat([geo.in_pause[rows, 0, lead:], geo.in_pause[rows, 1, :p]], dim=1)
        pause_frames = torch.cat([evidence[:, 0, lead:], evidence[:, 1, :p]], dim=1)
        self.pause_evidence[lo] = torch.where(mask[..., None], pause_frames, torch.nan)
        return evidence

    def _quantile(self, lo: int, hi: int) -> torch.Tensor:
        """Per band, the ``lr_band_quantile`` quantile of the pause frames' evidence of the
        live pauses within ``lr_pool_s`` of each of ``lo … hi − 1``, shape ``(pause, band)``."""
        centre, pool = self.centre, self.t.lr_pool_s
        first = torch.searchsorted(centre, centre[lo:hi] - pool - 1e-9)
        last = torch.searchsorted(centre, centre[lo:hi] + pool + 1e-9, right=True)
        start = int(first.min())
        for block in [k for k in self.pause_evidence if k + _LR_BLOCK <= start]:
            del self.pause_evidence[block]  # later blocks pool from ``start`` on, at the earliest
        kept = min(self.pause_evidence)
        stored = torch.cat([self.pause_evidence[k] for k in sorted(self.pause_evidence)])
        width = int((last - first).max())
        index = first[:, None] + torch.arange(width)
        valid = index < last[:, None]
        frames = stored[(index - kept).clamp(0, stored.shape[0] - 1)]
        frames = torch.where(valid[..., None, None], frames, torch.nan)
        frames = frames.flatten(1, 2).transpose(1, 2)  # (pause, band, neighbour × frame)
        return _upper_quantile(frames, self.t.lr_band_quantile)

    def _place(
        self, lo: int, hi: int, evidence: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        geo, t = self.geo, self.t
        rows = self.live[lo:hi]
        quantile = self._quantile(lo, hi).clamp_min(1e-3)
        band_score = evidence / quantile[:, None, None, :]  # (pause, 2, frame, band)
        score = band_score.amax(dim=-1).clamp(0.0, t.lr_clip)
        score = torch.nan_to_num(score, nan=0.0)  # (pause, 2, frame), frames in time order
        time_s = geo.times(rows)
        a, b = geo.a[rows], geo.b[rows]
        reach = ((b - a) / 2).clamp(max=t.lr_reach_s)
        # Both windows from the speech side into the pause: the onset window reversed.
        into = torch.stack([time_s[:, 0] - a[:, None], b[:, None] - time_s[:, 1].flip(-1)], 1)
        drive = torch.stack([score[:, 0], score[:, 1].flip(-1)], 1) - t.lr_eta
        if self.odds is not None:
            foreground = self.odds.at(time_s).clamp(-t.fg_clip, t.fg_clip).to(drive.dtype)
            drive = drive + torch.stack([foreground[:, 0], foreground[:, 1].flip(-1)], 1)
        search = (into >= -t.lr_search_s - 1e-9) & (into <= reach[:, None, None] + 1e-9)
        prefix = torch.cumsum(torch.where(search, drive, 0.0), dim=-1)
        candidates = torch.where(search, prefix, -math.inf)
        position = candidates.argmax(dim=-1, keepdim=True)  # the first of equal maxima
        best = candidates.gather(-1, position)[..., 0]
        position = position[..., 0]
        moved = best > 0
        shift_s = 0.0
        if self.stationary_range_db is not None:
            range_db = self.stationary_range_db
            onset = self._extend_onset(band_score, position[:, 1], search[:, 1], rows, range_db)
            position[:, 1] = torch.where(moved[:, 1], onset, position[:, 1])
            shift_s = t.lr_offset_shift_s_per_db * max(0.0, t.lr_offset_shift_range_db - range_db)
        half_hop = geo.hop_s / 2
        offset_s = time_s[:, 0].gather(1, position[:, :1])[:, 0] + half_hop + shift_s
        onset_s = time_s[:, 1].flip(-1).gather(1, position[:, 1:])[:, 0] - half_hop
        offset_s = torch.where(moved[:, 0], offset_s, a)
        onset_s = torch.where(moved[:, 1], onset_s, b)
        # Gap filling: mean score of each window over each short gap near it.
        near, gaps = self._gaps_near(rows)
        filled = torch.zeros(0, dtype=torch.long)
        if gaps.numel():
            running = F.pad(torch.cumsum(score.double(), dim=-1), (1, 0))  # (pause, 2, frame+1)
            i_lo, i_hi = self._gap_frames(rows, gaps)
            frames = i_hi - i_lo
            mean = (running.gather(-1, i_hi) - running.gather(-1, i_lo)) / frames.clamp_min(1)
            hit = near & (frames >= 2) & (mean >= t.lr_fill_eta)
            filled = gaps[hit.any(dim=1).any(dim=0)]
        return torch.arange(lo, hi), offset_s, onset_s, filled

    def _extend_onset(
        self,
        band_score: torch.Tensor,
        position: torch.Tensor,
        search: torch.Tensor,
        rows: torch.Tensor,
        range_db: float,
    ) -> torch.Tensor:
        """Step 5's onset extension under stationary noise: ``band_score`` ``(pause, 2, frame,
        band)`` (evidence over its quantile, frames in time order), ``position`` the onsets'
        change points and ``search`` their searched frames ``(pause, frame)``, both counted
        from the speech side into the pause, ``range_db`` the recording's median speech range;
        returns the new positions (``≥ position``)."""
        geo, t = self.geo, self.t
        summed = torch.nan_to_num(band_score, nan=0.0).clamp(0.0, t.lr_onset_clip).sum(dim=-1)
        pause = torch.where(geo.in_pause[rows], summed, torch.nan).flatten(1)
        level = summed[:, 1].flip(-1) - pause.nanmedian(dim=1).values[:, None]
        bias = t.lr_onset_bias * 10.0 ** ((range_db - t.lr_onset_bias_range_db) / 10.0)
        span = int(round(t.lr_onset_extend_s / geo.hop_s))
        if span == 0:
            return position
        index = position[:, None] + 1 + torch.arange(span)
        inside = index < geo.frames
        index = index.clamp(max=geo.frames - 1)
        usable = inside & search.gather(1, index)
        drive = torch.where(usable, level.gather(1, index) - bias, -math.inf)
        running = torch.cumsum(drive, dim=1)
        best, step = running.max(dim=1)
        return torch.where(best > t.lr_onset_threshold, position + 1 + step, position)


def _sohn_llr(gamma: torch.Tensor, *, alpha: float, xi_min: float) -> torch.Tensor:
    """Sohn–Kim–Sung log likelihood ratio per frame and bin with the decision-directed
    a-priori SNR (step 3 of :func:`place_edges_by_likelihood`).

    Args:
        gamma: a-posteriori SNR (power over noise power), shape ``(frame, row, bin)``; the
            recursion runs along ``frame`` from a zero state (a loop over frames, vectorized
            over rows and bins). Overwritten with the result.
        alpha: weight of the previous frame's amplitude estimate.
        xi_min: floor of the a-priori SNR (power ratio).

    Returns:
        ``γ ξ / (1 + ξ) − ln(1 + ξ)``: ``gamma`` itself.
    """
    state = torch.zeros_like(gamma[0])  # α · A_{t−1}
    for k in range(gamma.shape[0]):
        now = gamma[k]  # γ_t, overwritten with the log likelihood ratio
        xi = torch.add(state, (now - 1.0).clamp_min_(0.0), alpha=1.0 - alpha).clamp_min_(xi_min)
        ratio = xi / (xi + 1.0)
        state = (ratio * ratio).mul_(now).mul_(alpha)
        now.mul_(ratio).sub_(xi.log1p_())
    return gamma
