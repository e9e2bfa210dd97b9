"""Restoration: clicks and pops, echo, room reverberation and long-term equalization.

Pure torch functions, on the input's device and dtype. Signals are ``(..., time)`` tensors at
``sample_rate`` Hz, full scale = 1.0; every leading dimension is an independent channel.

* clicks: :func:`detect_clicks`, :func:`repair_clicks` (LPC matched filter, LSAR interpolation);
* pops: :func:`attenuate_pops`;
* echo: :func:`cancel_echo` (with a far-end reference: PBFDAF + post-filter),
  :func:`suppress_late_reflections` (without one);
* reverberation: :func:`estimate_rt60`, :func:`wpe_stft` / :func:`wpe_dereverb`;
* spectrum: :func:`long_term_band_levels`, :func:`equalize_long_term_spectrum`.

Figures and speeds quoted in the docstrings come from ``scripts/eval_restore.py`` (one CPU
thread, 60 s at 16 kHz).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache

import torch
import torch.nn.functional as F

from app.errors import InvalidOptions
from app.pipeline.dynamics import one_pole

# --------------------------------------------------------------------------------------------
# validation and small helpers
# --------------------------------------------------------------------------------------------


def _check_signal(samples: torch.Tensor, name: str = "samples") -> None:
    if not isinstance(samples, torch.Tensor) or samples.dim() < 1:
        raise InvalidOptions(f"{name} must be a tensor of shape (..., time)")
    if not samples.is_floating_point():
        raise InvalidOptions(f"{name} must be a floating-point tensor, not {samples.dtype}")


def _check_rate(sample_rate: int) -> None:
    if not isinstance(sample_rate, int) or isinstance(sample_rate, bool) or sample_rate < 4000:
        raise InvalidOptions(f"sample_rate={sample_rate!r} must be an integer ≥ 4000 Hz")


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise InvalidOptions(f"{name}={value!r} must lie in [{low:g}, {high:g}]")


def _check_int(name: str, value: int, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InvalidOptions(f"{name}={value!r} must be an integer in [{low}, {high}]")


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


@lru_cache(maxsize=32)
def _hann(win_length: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.hann_window(win_length, periodic=True, device=device, dtype=dtype)


def _flat(samples: torch.Tensor) -> torch.Tensor:
    """``(..., time)`` → ``(batch, time)``."""
    return samples.reshape(-1, samples.shape[-1])


def levinson(autocorr: torch.Tensor, order: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Levinson–Durbin recursion, batched.

    Args:
        autocorr: autocorrelation sequences, shape ``(..., lag)`` with ``lag ≥ order + 1``
            (lag 0 first).
        order: predictor order ``p``.

    Returns:
        ``(a, error)``: prediction-error filters ``[1, a_1, …, a_p]`` of shape
        ``(..., order + 1)`` (``e[n] = Σ_k a_k x[n − k]``), and the final prediction-error power,
        shape ``(...)``. An all-zero autocorrelation gives ``a = [1, 0, …]``.
    """
    # lag-major layout: every step works on contiguous rows of the whole batch
    r = autocorr[..., : order + 1].movedim(-1, 0).contiguous()
    reversed_r = r.flip(0)  # reversed_r[j] = r[order − j]
    a = torch.zeros_like(r)
    a[0] = 1.0
    error = r[0].clone()
    tiny = torch.finfo(r.dtype).tiny
    for i in range(1, order + 1):
        acc = (a[:i] * reversed_r[order - i : order]).sum(0)
        k = -acc / error.clamp_min(tiny)
        a[1 : i + 1] += k * a[:i].flip(0)
        error = error * (1.0 - k * k)
    return a.movedim(0, -1), error.clamp_min(0.0)


# --------------------------------------------------------------------------------------------
# clicks
# --------------------------------------------------------------------------------------------

#: Pitch periods (s) searched for a repeating excitation next to a candidate click.
PITCH_PERIOD_S = (0.0025, 0.020)
#: A click must exceed the largest detection statistic one pitch period before or after it by
#: this factor (glottal pulses repeat, clicks do not).
PERIODIC_RATIO = 2.0
#: Samples of a click below this fraction of its peak detection statistic are spread, not damage.
SPREAD_FRACTION = 0.4
#: Samples added before and after each detected click (its onset and decaying tail).
CLICK_MARGIN = (1, 4)
#: Back-off of click repair and pop attenuation, dB: a detection this far above its detection
#: threshold is *evident* damage and always acted on; the *marginal* ones below it are acted on
#: only in a channel that has at least one evident detection of the same kind. Clean speech
#: produces marginal detections only (the largest measured on the shared LibriSpeech clips:
#: clicks 8.4 dB, pops 1.5 dB above their thresholds), recordings with damage evident ones.
EVIDENCE_DB = 12.0


@dataclass(frozen=True)
class ClickReport:
    """What click detection/repair found.

    Attributes:
        mask: damaged samples, bool, same shape as the input.
        positions: first sample of each click, shape ``(click, input.dim())`` (index rows as
            :func:`torch.nonzero` gives them; the last column is the sample index).
        count: number of clicks (separate damaged regions).
        skipped: marginal detections left alone because their channel had no evident click
            (see :data:`EVIDENCE_DB`).
    """

    mask: torch.Tensor
    positions: torch.Tensor
    count: int
    skipped: int = 0


def _autocorrelation(frames: torch.Tensor, max_lag: int) -> torch.Tensor:
    """``r[..., k] = Σ_n frames[..., n] · frames[..., n + k]`` for ``k = 0 … max_lag``.

    Args:
        frames: ``(..., length)``.

    Returns:
        ``(..., max_lag + 1)``, lag 0 first.
    """
    length = frames.shape[-1]
    return torch.stack(
        [
            torch.linalg.vecdot(frames[..., : length - k], frames[..., k:])
            for k in range(max_lag + 1)
        ],
        dim=-1,
    )


def _lpc(frames: torch.Tensor, *, order: int, sample_rate: int) -> torch.Tensor:
    """LPC (autocorrelation method) of Hann-windowed frames.

    Args:
        frames: signal frames, ``(..., win_length)``; the periodic Hann window is applied here.
        order: predictor order.
        sample_rate: Hz (sets the lag window).

    Returns:
        Prediction-error filters ``[1, a_1, …, a_order]``, ``(..., order + 1)``.
    """
    window = _hann(frames.shape[-1], frames.device, frames.dtype)
    autocorr = _autocorrelation((frames * window).contiguous(), order)
    # white-noise correction (−50 dB) and a mild lag window keep the recursion well conditioned
    lags = torch.arange(order + 1, device=frames.device, dtype=frames.dtype)
    autocorr = autocorr * torch.exp(-0.5 * (2 * math.pi * 40.0 / sample_rate * lags) ** 2)
    autocorr[..., 0] = autocorr[..., 0] * (1.0 + 1e-5) + 1e-12
    return levinson(autocorr, order)[0]


def _block_lpc(
    x: torch.Tensor, *, win_length: int, hop_length: int, order: int, sample_rate: int
) -> torch.Tensor:
    """LPC of Hann-windowed blocks centred on ``b * hop_length`` (see :func:`_lpc`).

    Args:
        x: ``(batch, time)``.

    Returns:
        ``(batch, block, order + 1)`` with ``block = ceil(time / hop_length)``; block ``b``
        serves samples ``[b * hop, (b + 1) * hop)``.
    """
    n = x.shape[-1]
    n_blocks = -(-n // hop_length)
    centre_pad = (win_length - hop_length) // 2
    padded = F.pad(x, (centre_pad, n_blocks * hop_length - n + win_length))
    blocks = padded.unfold(-1, win_length, hop_length)[:, :n_blocks]
    return _lpc(blocks, order=order, sample_rate=sample_rate)


def _gather(x: torch.Tensor, row: torch.Tensor, start: torch.Tensor, length: int) -> torch.Tensor:
    """Stretches of the rows of ``x`` (``(batch, time)``): ``out[k, j] = x[row[k], start[k] + j]``,
    zero (``False``) outside the signal. ``row``, ``start``: ``(k,)``, with ``−length ≤ start ≤
    time``; returns ``(k, length)``. (Indexing a strided view of the padded rows: far faster on
    the CPU than gathering ``k × length`` computed indices.)"""
    padded = F.pad(x, (length, length))
    return padded.unfold(-1, length, 1)[row, start + length]


def _serving_lpc(
    x: torch.Tensor,
    flat_index: torch.Tensor,
    *,
    win_length: int,
    hop_length: int,
    order: int,
    sample_rate: int,
    zero: torch.Tensor | None = None,
) -> torch.Tensor:
    """The :func:`_block_lpc` model of the block serving each sample in ``flat_index``
    (``(k,)``, row-major indices into ``x``, ``(batch, time)``), computed for those blocks only;
    samples where ``zero`` (bool, like ``x``) is set count as 0. Returns ``(k, order + 1)``."""
    n = x.shape[-1]
    row, col = flat_index // n, flat_index % n
    start = (col // hop_length) * hop_length - (win_length - hop_length) // 2
    frames = _gather(x, row, start, win_length)
    if zero is not None:
        frames = frames.masked_fill(_gather(zero, row, start, win_length), 0.0)
    return _lpc(frames, order=order, sample_rate=sample_rate)


def _block_filter(x: torch.Tensor, a: torch.Tensor, hop_length: int, lead: int = 0) -> torch.Tensor:
    """Apply each block's FIR ``a`` (``(batch, block, taps)``) to the hop of ``x`` (``(batch,
    time)``) it serves: ``out[n] = Σ_k a_k x[n + lead − k]`` for ``n`` in ``[b * hop, (b + 1) *
    hop)``, zeros outside the signal (one grouped convolution). Returns ``(batch, block, hop)``
    (past the end of ``x``, the filtered zero padding)."""
    batch, n_blocks, taps = a.shape
    segments = _segments(x, n_blocks, hop_length, taps - 1 - lead, lead)
    out = F.conv1d(
        segments.reshape(1, batch * n_blocks, -1),
        a.flip(-1).reshape(batch * n_blocks, 1, taps),
        groups=batch * n_blocks,
    )
    return out.reshape(batch, n_blocks, hop_length)


def _coefficient_autocorrelation(a: torch.Tensor) -> torch.Tensor:
    """``r[..., j] = Σ_k a_k a_{k+j}`` for ``j = 0 … order`` (``a``: ``(..., order + 1)``)."""
    taps = a.shape[-1]
    n_fft = _next_pow2(2 * taps)
    spec = torch.fft.rfft(a, n=n_fft)
    return torch.fft.irfft(spec.real.square() + spec.imag.square(), n=n_fft)[..., :taps]


def _runs(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Start and end (exclusive) flat indices of the runs of ``True`` in each row of ``mask``
    (``(batch, time)``), in row-major order."""
    padded = F.pad(mask.to(torch.int8), (1, 1))
    edges = padded[:, 1:] - padded[:, :-1]
    width = mask.shape[-1]
    start = torch.nonzero(edges == 1)
    end = torch.nonzero(edges == -1)
    return start[:, 0] * width + start[:, 1], end[:, 0] * width + end[:, 1]


def _runs_mask(starts: torch.Tensor, ends: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Bool mask of shape ``shape`` (``(batch, time)``) that is set on the runs ``[starts,
    ends)`` (``(run,)`` flat row-major indices; short runs: the work is ``run × longest``)."""
    mask = torch.zeros(shape.numel(), dtype=torch.bool, device=starts.device)
    if starts.numel():
        pos = starts.unsqueeze(-1) + torch.arange(int((ends - starts).max()), device=starts.device)
        mask[pos[pos < ends.unsqueeze(-1)]] = True
    return mask.reshape(shape)


def _index_rows(flat_rows: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Flat batch rows ``(k,)`` → index rows ``(k, len(shape))`` of the leading dimensions."""
    if len(shape) == 0:
        return flat_rows.new_zeros(flat_rows.shape[0], 0)
    return torch.stack(torch.unravel_index(flat_rows, shape), dim=-1)


def _click_params(
    sample_rate: int, order: int, threshold: float, max_click_ms: float, evidence_db: float
) -> tuple[int, int, int]:
    _check_rate(sample_rate)
    _check_int("order", order, 2, 64)
    _check_range("threshold", threshold, 2.0, 100.0)
    _check_range("max_click_ms", max_click_ms, 0.1, 20.0)
    _check_range("evidence_db", evidence_db, 0.0, 40.0)
    win = _next_pow2(round(0.032 * sample_rate))
    win = max(win, 8 * order)
    max_len = max(1, round(max_click_ms * sample_rate / 1000))
    return win, win // 2, max_len


def detect_clicks(
    samples: torch.Tensor,
    *,
    sample_rate: int,
    order: int = 24,
    threshold: float = 10.0,
    max_click_ms: float = 2.0,
    evidence_db: float = EVIDENCE_DB,
) -> torch.Tensor:
    """Find impulsive clicks: samples a short-term linear predictor cannot explain.

    1. Each 32 ms Hann block (50 % overlap; block ``b`` serves the hop around its centre) gets
       an order-``order`` LPC model ``A(z)`` (autocorrelation method, batched Levinson–Durbin
       over all blocks at once).
    2. Matched filter (Vaseghi & Rayner): the prediction error ``e = A(z) x`` filtered by
       ``A(1/z)`` and divided by ``Σ a_k²`` is the least-squares amplitude of an additive
       impulse at each sample. An impulse in the signal passes through the whole predictor
       and keeps its amplitude, while an impulse of the *excitation* (a glottal pulse) is
       divided by ``Σ a_k²``, so this statistic separates clicks from voiced speech far better
       than the prediction error itself. Applied as one grouped convolution (each hop by its
       block's kernel).
    3. A sample is a candidate when the statistic exceeds ``threshold`` robust standard
       deviations (1.4826 × its median absolute value over the block's 2-hop window) *and*
       ``PERIODIC_RATIO`` (2) times its largest value 2.5–20 ms before or after (excitation
       pulses repeat at the pitch period, clicks do not), keeping the samples within 8 dB
       (:data:`SPREAD_FRACTION`) of their local maximum. The threshold is checked on every
       sample; the periodicity and spread checks only on the (few) samples above it.
    4. The first and last ``order`` samples are not examined (nothing to predict them from).
       Candidates closer than ``order // 2`` samples form one click; clicks longer than
       ``max_click_ms`` are dropped (plosive bursts, onsets); each click is widened by
       :data:`CLICK_MARGIN` (1 sample before, 4 after: the onset and the decaying tail).
    5. Back-off (:data:`EVIDENCE_DB`): a click whose peak statistic is at least
       ``evidence_db`` above the threshold (× 3.98 at 12 dB: ≥ 39.8 robust standard
       deviations by default) is evident and always kept; the marginal ones are kept only in a
       channel that has an evident click. On clean speech the detections are all marginal
       (21 in 29 s of the shared clips, 10–26 robust standard deviations, where inserted
       clicks reach a median of 89–213): half are glottal pulses of voiced stretches just
       irregular enough to pass the periodicity check (ratio 2.1–5), a third are onsets after
       a pause (no earlier pulse to compare with), the rest voicing offsets and quiet unvoiced
       sounds. Interpolating over them cost 0.10–0.13 PESQ-WB, so the back-off leaves a
       recording without evident clicks untouched. ``0`` turns it off (every detection kept).

    Measured (``scripts/eval_restore.py``) on the LibriSpeech clips at 16 kHz with a click every
    100 ms (1–5 samples, −16 to −4 dB re the clip peak): recall 0.998, precision 0.965 (worst
    clip 0.993 / 0.955). Clean speech: 21 marginal detections in 29 s, all skipped by the
    back-off (without it they are repaired and PESQ-WB drops by 0.10–0.13). Quieter clicks,
    below the glottal pulses of loud vowels, are missed more often (−26 to −14 dB: recall
    ≈ 0.82–0.97). Cost: ≈ 23 ms for 60 s at 16 kHz on one CPU thread (a shared machine; see
    ``docs/performance.md``).

    Args:
        samples: tensor of shape ``(..., time)``, full scale = 1.0.
        sample_rate: Hz.
        order: LPC order (2–64). Default 24.
        threshold: detection threshold in robust residual standard deviations (2–100).
            Default 10.
        max_click_ms: longest click, ms (0.1–20). Default 2.
        evidence_db: back-off margin over the threshold, dB (0–40; 0: no back-off). Default
            :data:`EVIDENCE_DB` (12).

    Returns:
        Bool mask of the damaged samples, same shape as ``samples``.

    Raises:
        InvalidOptions: a parameter is out of range or ``samples`` is not a float tensor.
    """
    _check_signal(samples)
    win, hop, max_len = _click_params(sample_rate, order, threshold, max_click_ms, evidence_db)
    x = _flat(samples)
    starts, ends, _ = _find_clicks(
        x, win=win, hop=hop, order=order, threshold=threshold, max_len=max_len,
        sample_rate=sample_rate, evidence_db=evidence_db,
    )  # fmt: skip
    return _runs_mask(starts, ends, x.shape).reshape(samples.shape)


def _find_clicks(
    x: torch.Tensor,
    *,
    win: int,
    hop: int,
    order: int,
    threshold: float,
    max_len: int,
    sample_rate: int,
    evidence_db: float,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Block LPC of ``x`` ``(channel, time)`` and :func:`_detect` on it: the clicks' run
    starts and ends (flat sample indices) and the number of marginal detections skipped."""
    a = _block_lpc(x, win_length=win, hop_length=hop, order=order, sample_rate=sample_rate)
    return _detect(
        x, a, hop=hop, threshold=threshold, max_len=max_len, order=order,
        sample_rate=sample_rate, evidence_db=evidence_db,
    )  # fmt: skip


def _segments(x: torch.Tensor, n_blocks: int, hop: int, before: int, after: int) -> torch.Tensor:
    """``(batch, time)`` → ``(batch, block, before + hop + after)``: block ``b`` holds samples
    ``[b * hop - before, (b + 1) * hop + after)`` (zeros outside the signal)."""
    n = x.shape[-1]
    padded = F.pad(x, (before, n_blocks * hop - n + after))
    return padded.unfold(-1, before + hop + after, hop)[:, :n_blocks]


def _detect(
    x: torch.Tensor,
    a: torch.Tensor,
    *,
    hop: int,
    threshold: float,
    max_len: int,
    order: int,
    sample_rate: int,
    evidence_db: float,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Clicks of ``x`` (``(batch, time)``) given the block LPC ``a`` (see :func:`detect_clicks`).

    Returns:
        ``(starts, ends, skipped)``: first and one-past-last flat (row-major) sample index of
        each damaged region, ``(click,)`` each, in order (regions never touch), and the number
        of marginal clicks the back-off dropped.
    """
    batch, n = x.shape
    n_blocks = a.shape[1]
    nothing = torch.zeros(0, dtype=torch.long, device=x.device)
    # matched filter: d[n] = Σ_k a_k e[n + k] / Σ_k a_k² with e the prediction error, i.e. the
    # least-squares amplitude of an additive impulse at n; A(1/z)·A(z) is the zero-phase kernel
    # of the autocorrelation of the coefficients, applied in one pass
    ra = _coefficient_autocorrelation(a)  # (batch, block, order + 1)
    kernel = torch.cat([ra.flip(-1)[..., :-1], ra], dim=-1) / ra[..., :1]
    stat_blocks = _block_filter(x, kernel, hop, lead=order).abs()  # (batch, block, hop)
    stat = stat_blocks.reshape(batch, -1)[:, :n]
    # robust scale per block: 1.4826 × median |d| over the block's 2-hop window
    windows = _segments(stat, n_blocks, hop, hop // 2, hop // 2)
    scale = 1.4826 * windows[..., ::8].median(dim=-1).values
    floor = 1e-6 * stat.amax(dim=-1, keepdim=True).clamp_min(1e-12)
    scale = torch.maximum(scale, floor)
    above = (stat_blocks > threshold * scale.unsqueeze(-1)).reshape(batch, -1)[:, :n]
    above[:, :order] = False  # no history or future to predict from at the ends
    above[:, max(0, n - order) :] = False
    candidates = torch.nonzero(above.reshape(-1)).squeeze(-1)
    if candidates.numel() == 0:
        return nothing, nothing, 0
    # the rest works on the (few) candidates only
    lo, hi = round(PITCH_PERIOD_S[0] * sample_rate), round(PITCH_PERIOD_S[1] * sample_rate)
    reach = max(hi, max_len)
    row = candidates // n
    around_of = _gather(stat, row, candidates % n - reach, 2 * reach + 1)  # centre at ``reach``
    value = around_of[:, reach]
    # periodic excitation (glottal pulses) repeats one pitch period earlier or later; a click
    # does not
    around = torch.maximum(
        around_of[:, reach - hi : reach - lo + 1].amax(-1),
        around_of[:, reach + lo : reach + hi + 1].amax(-1),
    )
    # the matched filter spreads a strong click over its neighbours: keep the samples within
    # 8 dB of the local maximum
    local = around_of[:, reach - max_len : reach + max_len + 1].amax(-1)
    is_hit = (value > PERIODIC_RATIO * around) & (value >= SPREAD_FRACTION * local)
    hits = candidates[is_hit]
    if hits.numel() == 0:
        return nothing, nothing, 0
    # hits closer than order / 2 samples (same channel) are one click
    row = hits // n
    new = torch.ones_like(hits, dtype=torch.bool)
    new[1:] = (hits[1:] - hits[:-1] > order // 2) | (row[1:] != row[:-1])
    last = torch.ones_like(new)
    last[:-1] = new[1:]
    # each click's score: its largest statistic in robust standard deviations
    hit_score = value[is_hit] / scale[row, (hits % n) // hop]
    score = torch.zeros(int(new.sum()), dtype=x.dtype, device=x.device).scatter_reduce(
        0, new.cumsum(0) - 1, hit_score, reduce="amax", include_self=False
    )
    starts, ends, row = hits[new], hits[last] + 1, row[new]
    keep = ends - starts <= max_len
    starts, ends, row, score = starts[keep], ends[keep], row[keep], score[keep]
    # back-off: marginal clicks only in channels with an evident one
    evident = torch.zeros(batch, dtype=torch.bool, device=x.device)
    evident[row[score >= threshold * 10 ** (evidence_db / 20)]] = True
    accept = evident[row]
    skipped = int((~accept).sum())
    row = row[accept]
    starts = torch.maximum(starts[accept] - CLICK_MARGIN[0], row * n)
    ends = torch.minimum(ends[accept] + CLICK_MARGIN[1], (row + 1) * n)
    if starts.numel() == 0:
        return nothing, nothing, skipped
    # widened clicks that touch or overlap are one damaged region (ends grow with starts)
    first = torch.ones_like(starts, dtype=torch.bool)
    first[1:] = (starts[1:] > ends[:-1]) | (row[1:] != row[:-1])
    final = torch.ones_like(first)
    final[:-1] = first[1:]
    return starts[first], ends[final], skipped


def _interpolate_lsar(
    x: torch.Tensor,
    damaged: torch.Tensor,
    starts: torch.Tensor,
    ends: torch.Tensor,
    coeffs: torch.Tensor,
    order: int,
) -> torch.Tensor:
    """Least-squares AR interpolation of the damaged samples.

    Args:
        x: signal, ``(batch, time)``.
        damaged: bool mask of the samples to replace, ``(batch, time)``.
        starts, ends: flat (row-major) bounds of its runs, ``(click,)`` each (:func:`_runs`).
        coeffs: the AR model ``[1, a_1, …, a_order]`` serving each run, ``(click, order + 1)``.
        order: AR order.

    Returns:
        ``x`` with the damaged samples interpolated, ``(batch, time)`` (a new tensor).
    """
    n = x.shape[-1]
    context = 2 * order
    seg = int((ends - starts).max()) + 2 * context
    row = starts // n
    first = starts % n - context  # segment start in the row
    y = _gather(x, row, first, seg)  # (click, seg)
    interior = torch.zeros(seg, dtype=torch.bool, device=x.device)
    interior[order : seg - order] = True
    unknown = _gather(damaged, row, first, seg) & interior  # (click, seg)
    # M = AᵀA restricted to the unknowns is Toeplitz in the autocorrelation of the coefficients
    ra = _coefficient_autocorrelation(coeffs)  # (click, order + 1)
    count = unknown.sum(-1)
    n_unknown = int(count.max())
    positions = torch.arange(seg, device=x.device).expand_as(unknown)
    order_idx = torch.where(unknown, positions, positions + seg).sort(dim=-1).values
    u = order_idx[:, :n_unknown] % seg  # (click, n_unknown) positions in the segment
    valid = torch.arange(n_unknown, device=x.device) < count.unsqueeze(-1)
    lag = (u.unsqueeze(-1) - u.unsqueeze(-2)).abs()
    m_uu = torch.where(
        (lag <= order) & valid.unsqueeze(-1) & valid.unsqueeze(-2),
        torch.gather(ra, 1, lag.clamp(max=order).reshape(lag.shape[0], -1)).reshape(lag.shape),
        torch.zeros((), device=x.device, dtype=x.dtype),
    )
    m_uu = m_uu + torch.diag_embed((~valid).to(x.dtype))
    # right-hand side: −(AᵀA y_known) at the unknowns; A y = forward residual, Aᵀ = correlation
    known = y * (~unknown)
    res = F.conv1d(known.unsqueeze(0), coeffs.flip(-1).unsqueeze(1), groups=known.shape[0])
    back = F.conv_transpose1d(res, coeffs.flip(-1).unsqueeze(1), groups=known.shape[0])[0]
    rhs = -torch.gather(back, 1, u) * valid
    diag = ra[:, :1]
    solution = torch.linalg.solve(
        m_uu + 1e-9 * diag.unsqueeze(-1) * torch.eye(n_unknown, device=x.device, dtype=x.dtype),
        rhs.unsqueeze(-1),
    ).squeeze(-1)
    out = x.clone()
    rows = row.unsqueeze(-1).expand_as(u)
    out[rows[valid], (first.unsqueeze(-1) + u)[valid]] = solution[valid]
    return out


def repair_clicks(
    samples: torch.Tensor,
    *,
    sample_rate: int,
    order: int = 24,
    threshold: float = 10.0,
    max_click_ms: float = 2.0,
    evidence_db: float = EVIDENCE_DB,
    iterations: int = 2,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, ClickReport]:
    """Detect clicks (:func:`detect_clicks`) and replace the damaged samples by least-squares
    AR interpolation.

    The damaged samples of each click are the values that minimize the energy of the
    order-``order`` prediction error over the click and ``2 · order`` samples of context on
    either side (Vaseghi & Rayner's LSAR interpolation; a ``(unknown, unknown)`` Toeplitz
    system per click, all clicks solved in one batched :func:`torch.linalg.solve`). The AR
    model is estimated with the damaged samples zeroed, then, as in Janssen's method,
    re-estimated on the repaired signal and the interpolation repeated (``iterations`` passes
    in all); only the blocks that serve a click are modelled again, so the passes cost little
    next to detection. Samples away from the clicks are returned unchanged, and so is a channel
    with marginal detections only (the back-off of :func:`detect_clicks`; clean speech stays
    bit-exact: ``report.skipped`` counts what was left). Measured: the SNR
    over the click samples goes from −6.1 to +17.8 dB (``scripts/eval_restore.py``); ≈ 30 ms
    for 60 s of speech at 16 kHz on one CPU thread (detection included, ≈ 400 clicks found and
    repaired).

    Args:
        samples: tensor of shape ``(..., time)``, full scale = 1.0.
        sample_rate: Hz.
        order: LPC order (2–64). Default 24.
        threshold: detection threshold in robust residual standard deviations. Default 10.
        max_click_ms: longest click, ms. Default 2.
        evidence_db: back-off margin over the threshold, dB (0: none). Default 12.
        iterations: detection/interpolation passes (1–5). Default 2.
        mask: optional bool mask of known damaged samples (shape of ``samples``); when given,
            detection is skipped and only these samples are interpolated.

    Returns:
        ``(repaired, report)``: the repaired signal, same shape and dtype as ``samples``, and a
        :class:`ClickReport` over all passes.

    Raises:
        InvalidOptions: a parameter is out of range.
    """
    _check_signal(samples)
    win, hop, max_len = _click_params(sample_rate, order, threshold, max_click_ms, evidence_db)
    _check_int("iterations", iterations, 1, 5)
    if mask is not None and (mask.shape != samples.shape or mask.dtype != torch.bool):
        raise InvalidOptions(
            f"mask must be a bool tensor of shape {tuple(samples.shape)}, got {mask.dtype} "
            f"{tuple(mask.shape)}"
        )
    x = _flat(samples)
    skipped = 0
    if mask is None:
        starts, ends, skipped = _find_clicks(
            x, win=win, hop=hop, order=order, threshold=threshold, max_len=max_len,
            sample_rate=sample_rate, evidence_db=evidence_db,
        )  # fmt: skip
        damaged = _runs_mask(starts, ends, x.shape)
    else:
        damaged = mask.reshape(x.shape)
        starts, ends = _runs(damaged)
    current = x
    if starts.numel():
        # the AR model of the block serving each click, estimated without the damaged samples
        # (zeroed on the first pass, interpolated afterwards), then least-squares interpolation
        # of the damaged samples; only the blocks serving clicks are modelled again
        source = x
        zero: torch.Tensor | None = damaged
        for _ in range(iterations):
            coeffs = _serving_lpc(
                source,
                starts,
                win_length=win,
                hop_length=hop,
                order=order,
                sample_rate=sample_rate,
                zero=zero,
            )
            current = _interpolate_lsar(x, damaged, starts, ends, coeffs, order)
            source, zero = current, None
    n = x.shape[-1]
    positions = torch.cat(
        [_index_rows(starts // n, samples.shape[:-1]), (starts % n).unsqueeze(-1)], dim=-1
    )
    report = ClickReport(
        mask=damaged.reshape(samples.shape),
        positions=positions,
        count=int(starts.shape[0]),
        skipped=skipped,
    )
    return current.reshape(samples.shape), report


# --------------------------------------------------------------------------------------------
# pops
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PopReport:
    """What pop detection/attenuation found.

    Attributes:
        positions: first sample of each pop, shape ``(pop, input.dim())`` (index rows, the last
            column is the sample index).
        lengths: duration of each pop, samples, shape ``(pop,)``.
        count: number of pops.
        reduction_db: low-band energy removed over all pops, dB (0 when none).
        skipped: marginal pops left alone because their channel had no evident pop (see
            :data:`EVIDENCE_DB`).
    """

    positions: torch.Tensor
    lengths: torch.Tensor
    count: int
    reduction_db: float
    skipped: int = 0


@lru_cache(maxsize=16)
def _low_band_dft(
    win_length: int, f_max: float, sample_rate: int, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """Hann-windowed DFT basis (cos and sin rows) of the bins at or below ``f_max`` Hz, as
    convolution weights ``(2 * bins, 1, win_length)``, scaled so that the squared outputs sum to
    the bins' share of the windowed frame energy (Parseval: bin 0 once, the others twice, over
    ``win_length``)."""
    bins = int(f_max * win_length / sample_rate) + 1
    n = torch.arange(win_length, dtype=torch.float64)
    k = torch.arange(bins, dtype=torch.float64)
    phase = 2 * math.pi * n.unsqueeze(-1) * k / win_length
    weight = torch.full((bins,), 2.0 / win_length, dtype=torch.float64)
    weight[0] = 1.0 / win_length
    window = torch.hann_window(win_length, periodic=True, dtype=torch.float64).unsqueeze(-1)
    basis = torch.cat([torch.cos(phase), torch.sin(phase)], dim=-1) * window
    basis = basis * weight.sqrt().repeat(2)
    return basis.T.unsqueeze(1).contiguous().to(device=device, dtype=dtype)


@lru_cache(maxsize=16)
def _lowpass_fir(
    cutoff: float, sample_rate: int, taps: int, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """Linear-phase (odd length) Blackman-windowed sinc low-pass with unit DC gain."""
    n = torch.arange(taps, dtype=torch.float64) - taps // 2
    fc = cutoff / sample_rate
    window = torch.blackman_window(taps, periodic=False, dtype=torch.float64)
    h = 2 * fc * torch.sinc(2 * fc * n) * window
    return (h / h.sum()).to(device=device, dtype=dtype)


def _rise_over_running_median(
    values: torch.Tensor, *, context: int, margins: tuple[float, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Where every channel of ``values`` rises more than its margin above its running median.

    The running median of frame ``t`` is the median of frames ``t − context // 2 … t + context
    // 2`` (edges replicated). It is computed exactly only at the frames that can qualify: a
    group of ``g`` consecutive frames shares ``context − g + 1`` frames of window, whose
    ``(context // 2 + 1)``-th largest value bounds every one of their medians from below; frames
    whose rise over that bound is within a margin cannot qualify.

    Args:
        values: ``(batch, channel, frame)``, e.g. levels in dB.
        context: window length, frames (odd, ≥ 3).
        margins: the rise required in each channel, same unit as ``values``, ``channel`` floats.

    Returns:
        ``(rise, excess)``: bool ``(batch, frame)``, and ``values`` minus the running median,
        ``(batch, channel, frame)``, at the frames that can qualify (0 elsewhere).
    """
    batch, channels, n_frames = values.shape
    half = context // 2
    padded = F.pad(values, (half, half), mode="replicate")
    windows = padded.unfold(-1, context, 1)  # (batch, channel, frame, context), a view
    group = min(10, half + 1)
    shared = padded[..., group - 1 :].unfold(-1, context - group + 1, group)
    bound = shared.kthvalue(half - group + 2, dim=-1).values.repeat_interleave(group, dim=-1)
    margin = torch.tensor(margins, device=values.device, dtype=values.dtype).view(1, -1, 1)
    maybe = torch.nonzero(((values - bound[..., :n_frames]) > margin).all(1))  # (k, 2)
    row, frame = maybe[:, 0], maybe[:, 1]
    over = values[row, :, frame] - windows[row, :, frame].median(dim=-1).values  # (k, channel)
    excess = torch.zeros_like(values)
    excess[row, :, frame] = over
    rise = torch.zeros(batch, n_frames, dtype=torch.bool, device=values.device)
    rise[row, frame] = (over > margin.view(1, -1)).all(-1)
    return rise, excess


def attenuate_pops(
    samples: torch.Tensor,
    *,
    sample_rate: int,
    cutoff_hz: float = 120.0,
    jump_db: float = 12.0,
    tilt_jump_db: float = 6.0,
    max_pop_ms: float = 150.0,
    evidence_db: float = EVIDENCE_DB,
) -> tuple[torch.Tensor, PopReport]:
    """Detect plosive pops (low-frequency bursts) and attenuate their low band.

    Per 32 ms Hann frame (hop 10 ms, centred), the energy below ``cutoff_hz`` and its ratio to
    the energy above are compared with their running medians over the surrounding second. A pop
    is a run of at most ``max_pop_ms`` of frames whose low band rises at least ``jump_db`` above
    its median *and* whose low-to-high ratio rises at least ``tilt_jump_db`` above its median: a
    puff of air on the membrane lifts the low band alone, while voiced speech (even a low male
    voice, whose first harmonic sits in the band) lifts both bands together. The low band of
    each pop (zero-phase Blackman-windowed-sinc low-pass at ``cutoff_hz``) is scaled down to
    its running median, with 10 ms raised-cosine ramps; every sample away from the pops is left
    exactly as it was. Back-off (:data:`EVIDENCE_DB`): a pop whose low band rises at least
    ``jump_db + evidence_db`` (24 dB) above its median is evident and always attenuated; the
    marginal ones only in a channel with an evident pop. On clean speech the detections are
    single 10 ms frames just over both thresholds (low band +12.2 to +13.5 dB, ratio +7 to
    +12 dB), and attenuating one cost 0.04–0.06 PESQ-WB; the inserted pops rise 14–45 dB
    (35 dB and more on the female voice). The frame energies are strided convolutions; the
    running medians are computed exactly, but only at the frames where a pop is still possible
    (:func:`_rise_over_running_median`).

    Measured (``scripts/eval_restore.py``, 20–60 Hz bursts of 30–80 ms added once a second to
    the LibriSpeech clips): 26 of 27 found, the error below 150 Hz over the pops 13 dB lower
    (31 dB on the female voice; a pop on top of a low male vowel is only partly removed);
    3 marginal detections in 29 s of clean speech, all skipped by the back-off. ≈ 6 ms for
    60 s at 16 kHz on one CPU thread.

    Args:
        samples: tensor of shape ``(..., time)``, full scale = 1.0.
        sample_rate: Hz.
        cutoff_hz: upper edge of the pop band, Hz (50–500). Default 120.
        jump_db: rise of the low band over its running median that marks a pop, dB (3–40).
            Default 12.
        tilt_jump_db: rise of the low-to-high energy ratio over its running median, dB
            (0–40). Default 6.
        max_pop_ms: longest pop, ms (20–500); longer low-frequency events (hum, rumble, wind)
            are left to the noise and wind stages. Default 150.
        evidence_db: back-off margin over ``jump_db``, dB (0–40; 0: no back-off). Default
            :data:`EVIDENCE_DB` (12).

    Returns:
        ``(output, report)``: the output, same shape as ``samples``, and a :class:`PopReport`.

    Raises:
        InvalidOptions: a parameter is out of range.
    """
    _check_signal(samples)
    _check_rate(sample_rate)
    _check_range("cutoff_hz", cutoff_hz, 50.0, 500.0)
    _check_range("jump_db", jump_db, 3.0, 40.0)
    _check_range("tilt_jump_db", tilt_jump_db, 0.0, 40.0)
    _check_range("max_pop_ms", max_pop_ms, 20.0, 500.0)
    _check_range("evidence_db", evidence_db, 0.0, 40.0)
    hop = round(0.010 * sample_rate)
    win = _next_pow2(round(0.032 * sample_rate))
    x = _flat(samples)
    batch, n = x.shape
    device, dtype = x.device, x.dtype
    nothing = PopReport(
        positions=torch.zeros(0, samples.dim(), dtype=torch.long, device=device),
        lengths=torch.zeros(0, dtype=torch.long, device=device),
        count=0,
        reduction_db=0.0,
    )
    n_frames = 1 + n // hop
    # frame t: the Hann-windowed win samples centred on sample t * hop (strided convolutions)
    padded = F.pad(x, (win // 2, win // 2)).unsqueeze(1)  # (batch, 1, time + win)
    window = _hann(win, device, dtype).square().view(1, 1, -1)
    total = F.conv1d(padded.square(), window, stride=hop).squeeze(1)  # windowed frame energy
    basis = _low_band_dft(win, cutoff_hz, sample_rate, device, dtype)
    low = F.conv1d(padded, basis, stride=hop).square().sum(1)
    low_db = 10 * torch.log10(low + 1e-20)
    tilt_db = low_db - 10 * torch.log10((total - low).clamp_min(0.0) + 1e-20)
    context = max(3, round(1.0 * sample_rate / hop)) | 1
    rise, excess = _rise_over_running_median(
        torch.stack([low_db, tilt_db], 1), context=context, margins=(jump_db, tilt_jump_db)
    )
    audible = total > 1e-8 * total.amax(-1, keepdim=True).clamp_min(1e-20)
    pop = rise & audible
    # runs of pop frames no longer than max_pop_ms
    padded = F.pad(pop.to(torch.int8), (1, 1))
    edges = padded[:, 1:] - padded[:, :-1]
    start, end = torch.nonzero(edges == 1), torch.nonzero(edges == -1)  # (run, 2): row, frame
    keep = (end[:, 1] - start[:, 1]) * hop <= max_pop_ms * sample_rate / 1000
    start, end = start[keep], end[keep]
    if start.shape[0] == 0:
        return samples, nothing
    # back-off: marginal pops only in channels with an evident one (peak rise of the low band)
    span = end[:, 1] - start[:, 1]
    rises = _gather(excess[:, 0], start[:, 0], start[:, 1], int(span.max()))
    inside = torch.arange(rises.shape[-1], device=device) < span.unsqueeze(-1)
    peak = rises.masked_fill(~inside, -math.inf).amax(-1)
    evident = torch.zeros(batch, dtype=torch.bool, device=device)
    evident[start[peak >= jump_db + evidence_db, 0]] = True
    accept = evident[start[:, 0]]
    skipped = int((~accept).sum())
    start, end = start[accept], end[accept]
    if start.shape[0] == 0:
        return samples, replace(nothing, skipped=skipped)
    marks = torch.zeros(batch * (n_frames + 1), dtype=torch.int32, device=device)
    ones = torch.ones(start.shape[0], dtype=torch.int32, device=device)
    marks.index_add_(0, start[:, 0] * (n_frames + 1) + start[:, 1], ones)
    marks.index_add_(0, end[:, 0] * (n_frames + 1) + end[:, 1], -ones)
    in_pop = marks.reshape(batch, n_frames + 1).cumsum(-1)[:, :n_frames] > 0
    # frame gains: the low band down to its running median; widened by ±10 ms, then smoothed
    frame_gain = torch.where(in_pop, 10 ** (-excess[:, 0] / 20), torch.ones_like(low_db))
    ramp = max(1, round(0.010 * sample_rate / hop))
    frame_gain = -F.max_pool1d(-frame_gain.unsqueeze(1), 2 * ramp + 1, stride=1, padding=ramp)
    kernel = torch.hann_window(2 * ramp + 3, periodic=False, device=device, dtype=dtype)[1:-1]
    frame_gain = F.conv1d(
        F.pad(frame_gain, (ramp, ramp), mode="replicate"), (kernel / kernel.sum()).view(1, 1, -1)
    )
    frame_gain = F.pad(frame_gain, (0, 1), mode="replicate").squeeze(1)  # (batch, frame + 1)
    # low band of the affected stretches only: one segment per group of nearby pops
    taps = (4 * round(sample_rate / cutoff_hz)) | 1
    reach = (2 * ramp + 2) * hop  # how far the smoothed gain extends past a pop's frames
    first = (start[:, 1] * hop - reach).clamp_min(0)
    last = (end[:, 1] * hop + reach).clamp_max(n)
    row = start[:, 0]
    group = torch.ones_like(row, dtype=torch.bool)
    group[1:] = (first[1:] > last[:-1]) | (row[1:] != row[:-1])
    group_id = group.cumsum(0) - 1
    n_groups = int(group_id[-1]) + 1
    g_first = first[group]
    g_last = torch.zeros(n_groups, dtype=last.dtype, device=device).scatter_reduce(
        0, group_id, last, reduce="amax", include_self=False
    )
    g_row = row[group]
    length = int((g_last - g_first).max()) + 2 * taps
    offsets = torch.arange(length, device=device) - taps
    pos = g_first.unsqueeze(-1) + offsets  # (group, length) sample positions
    valid = (pos >= 0) & (pos < n)
    flat_pos = g_row.unsqueeze(-1) * n + pos.clamp(0, n - 1)
    segment = x.reshape(-1)[flat_pos] * valid
    h = _lowpass_fir(cutoff_hz, sample_rate, taps, device, dtype)
    n_fft = _next_pow2(length + taps)
    low_band = torch.fft.irfft(
        torch.fft.rfft(segment, n=n_fft) * torch.fft.rfft(h, n=n_fft), n=n_fft
    )[:, taps // 2 : taps // 2 + length]
    own = valid & (pos >= g_first.unsqueeze(-1)) & (pos < g_last.unsqueeze(-1))
    # the gain at each sample: linear between the frames around it (frame t sits at t * hop)
    at = pos.clamp(0, n - 1)
    frame, frac = at // hop, (at % hop).to(dtype) / hop
    rows = g_row.unsqueeze(-1)
    gain = frame_gain[rows, frame] * (1 - frac) + frame_gain[rows, frame + 1] * frac
    correction = (1.0 - gain) * low_band * own
    out = x.reshape(-1).clone()
    out.index_add_(0, flat_pos.reshape(-1), -correction.reshape(-1))
    before = float((low_band * own).square().sum())
    after = float(((low_band - correction) * own).square().sum())
    reduction = 10 * math.log10(before / after) if before > 0 and after > 0 else 0.0
    pop_start = (start[:, 1] * hop - win // 2).clamp_min(0)
    positions = torch.cat([_index_rows(row, samples.shape[:-1]), pop_start.unsqueeze(-1)], dim=-1)
    report = PopReport(
        positions=positions,
        lengths=(end[:, 1] - start[:, 1]) * hop,
        count=int(start.shape[0]),
        reduction_db=reduction,
        skipped=skipped,
    )
    return out.reshape(samples.shape), report


# --------------------------------------------------------------------------------------------
# STFT helpers (dereverberation, echo, equalization)
# --------------------------------------------------------------------------------------------


def _stft_sizes(sample_rate: int) -> tuple[int, int]:
    """32 ms window (a power of two), 8 ms hop: 512/128 at 16 kHz, as NARA-WPE recommends."""
    n_fft = _next_pow2(round(0.032 * sample_rate))
    return n_fft, n_fft // 4


def _stft(x: torch.Tensor, n_fft: int, hop_length: int) -> torch.Tensor:
    """``(batch, time)`` → complex ``(batch, n_fft // 2 + 1, frame)``, periodic Hann, centred."""
    return torch.stft(
        x,
        n_fft=n_fft,
        hop_length=hop_length,
        window=_hann(n_fft, x.device, x.dtype),
        center=True,
        pad_mode="constant",
        return_complex=True,
    )


def _istft(spec: torch.Tensor, n_fft: int, hop_length: int, length: int) -> torch.Tensor:
    window = _hann(n_fft, spec.device, spec.real.dtype)
    return torch.istft(
        spec, n_fft=n_fft, hop_length=hop_length, window=window, center=True, length=length
    )


# --------------------------------------------------------------------------------------------
# reverberation: blind RT60, WPE, late-reverberation suppression
# --------------------------------------------------------------------------------------------


#: Octave bands (centre, Hz) whose energy envelopes :func:`estimate_rt60` follows.
RT60_BANDS_HZ = (500.0, 1000.0, 2000.0, 4000.0)
#: Linear calibration of the decay statistic to RT60, s (see :func:`estimate_rt60`).
RT60_CALIBRATION = (1.46, -0.23)


def estimate_rt60(samples: torch.Tensor, *, sample_rate: int) -> torch.Tensor:
    """Blind reverberation time (RT60) from the free decays of the speech energy envelope.

    Method (decay-slope distribution, after Vieira and Löllmann et al.): the energy envelopes
    of the 500, 1000, 2000 and 4000 Hz octave bands (32 ms Hann STFT, 10 ms hop) are cut into
    150 ms windows; a window is a *free decay* when a straight line fits its dB envelope
    (R² ≥ 0.9), falls by more than 5 dB, starts within 50 dB of the band's maximum and ends
    5 dB above the band's noise floor (10th percentile). Reverberation is the slowest a sound
    can die away once its source stops, but speech stops abruptly only at some offsets, so the
    fast end of the decay times ``−60 dB / slope`` (their 20th percentile) tracks the room;
    a linear calibration (``1.46 · q20 − 0.23`` s, :data:`RT60_CALIBRATION`) maps it to RT60.

    Accuracy: calibrated on four recordings (the two LibriSpeech clips, count.wav and the
    diarization example) convolved with exponential-decay responses of RT60 0.2–1.2 s (direct
    path + Gaussian tail, 1 m from the source in a 60 m³ room): mean absolute error 0.05 s, worst
    0.14 s (in-sample; real rooms, with their early reflections and non-exponential decays,
    were not measured). Dry speech reads 0.05–0.15 s. Noise, music or very little speech
    (fewer than 5 free decays) make it unreliable; it returns NaN for the latter. ≈ 9 ms for
    60 s at 16 kHz.

    Args:
        samples: tensor of shape ``(..., time)``, full scale = 1.0, at least ~2 s of speech.
        sample_rate: Hz (≥ 11025, so that the 4 kHz band exists; below, the bands that fit).

    Returns:
        Tensor of shape ``(...)``: RT60 per channel, seconds (≥ 0), NaN when undetermined.
    """
    _check_signal(samples)
    _check_rate(sample_rate)
    x = _flat(samples)
    hop = round(0.010 * sample_rate)
    n_fft = _next_pow2(round(0.032 * sample_rate))
    width = 15  # frames: 150 ms
    if x.shape[-1] < (width + 1) * hop:
        return torch.full(samples.shape[:-1], float("nan"), device=x.device, dtype=x.dtype)
    spec = _stft(x, n_fft, hop)
    power = spec.real.square() + spec.imag.square()  # (batch, freq, frame)
    freqs = torch.arange(power.shape[1], device=x.device) * sample_rate / n_fft
    edges = [(c / math.sqrt(2), c * math.sqrt(2)) for c in RT60_BANDS_HZ]
    bands = [
        power[:, (freqs >= lo) & (freqs < hi)].sum(1) for lo, hi in edges if hi < sample_rate / 2
    ]
    db = 10 * torch.log10(torch.stack(bands, 1) + 1e-12)  # (batch, band, frame)
    ramp = torch.arange(width, device=x.device, dtype=x.dtype) - (width - 1) / 2
    seg = db.unfold(-1, width, 1)  # (batch, band, window, width)
    mean = seg.mean(-1, keepdim=True)
    slope = (seg * ramp).sum(-1) / ramp.square().sum()  # dB per frame
    residual = (seg - mean - slope.unsqueeze(-1) * ramp).square().sum(-1)
    r2 = 1 - residual / (seg - mean).square().sum(-1).clamp_min(1e-12)
    peak = db.amax(-1, keepdim=True)
    floor = torch.quantile(db, 0.1, dim=-1, keepdim=True)
    free = (
        (r2 >= 0.9)
        & (-slope * (width - 1) > 5.0)
        & (seg[..., 0] > peak - 50.0)
        & (seg[..., -1] > floor + 5.0)
    )
    decay_s = -60.0 / (slope * sample_rate / hop)
    decay_s = torch.where(free, decay_s, torch.full_like(decay_s, float("nan"))).flatten(1)
    q20 = torch.nanquantile(decay_s, 0.2, dim=-1)
    scale, offset = RT60_CALIBRATION
    rt60 = (scale * q20 + offset).clamp_min(0.0)
    rt60 = torch.where(free.flatten(1).sum(-1) >= 5, rt60, torch.full_like(rt60, float("nan")))
    return rt60.reshape(samples.shape[:-1])


def wpe_stft(
    spec: torch.Tensor,
    *,
    taps: int = 10,
    delay: int = 3,
    iterations: int = 3,
    psd_context: int = 0,
) -> torch.Tensor:
    """Single-channel weighted prediction error (WPE) dereverberation of an STFT.

    For every frequency ``f`` the late reverberation of frame ``t`` is predicted from frames
    ``t − delay − k`` (``k = 0 … taps − 1``) by the filter ``g_f`` that minimizes the
    prediction error weighted by the inverse power of the current estimate (Nakatani et al.
    2010; Yoshioka & Nakatani 2012): ``R = Σ_t ỹ_t ỹ_tᴴ / λ_t``, ``p = Σ_t ỹ_t y_t* / λ_t``,
    ``g = R⁻¹ p``, ``x_t = y_t − gᴴ ỹ_t``, ``λ_t = max(|x_t|², 1e-10 · max|x|²)``, repeated
    ``iterations`` times. All frequencies are solved at once (``torch.linalg.solve`` on the
    ``(freq, taps, taps)`` correlation matrices). It is NARA-WPE's ``wpe`` (``wpe_v7``,
    ``statistics_mode="full"``) for one channel: equal to 1e-8 in float64.

    ``R`` is built from the lag products ``y[t] · y*[t − m]`` (real ``(taps, frame) @ (frame,
    taps)`` products, half the work of the complex product of the lagged frames; they are kept
    across iterations when they fit in 256 MB) and solved in double precision.

    Args:
        spec: complex STFT of shape ``(..., freq, frame)``.
        taps: prediction filter length, frames (1–64). Default 10.
        delay: prediction delay, frames (≥ 1; keeps the direct sound and early reflections).
            Default 3.
        iterations: re-estimations of the power (1–20). Default 3.
        psd_context: frames averaged on either side for the power estimate (0–10). Default 0.

    Returns:
        Complex tensor of the same shape: the dereverberated STFT.

    Raises:
        InvalidOptions: a parameter is out of range or ``spec`` is not complex.
    """
    if not isinstance(spec, torch.Tensor) or not spec.is_complex() or spec.dim() < 2:
        raise InvalidOptions("spec must be a complex tensor of shape (..., freq, frame)")
    _check_int("taps", taps, 1, 64)
    _check_int("delay", delay, 1, 64)
    _check_int("iterations", iterations, 1, 20)
    _check_int("psd_context", psd_context, 0, 10)
    shape = spec.shape
    y = spec.reshape(-1, shape[-2], shape[-1])  # (batch, freq, frame)
    n_frames = y.shape[-1]
    chunk = max(1, (1 << 22) // max(1, n_frames * (taps + delay)))  # bins per pass: ~32 MB
    bins = [slice(f, f + chunk) for f in range(0, y.shape[1], chunk)]
    # the lag products do not change between iterations: keep them when they fit in 256 MB
    size = y.shape[0] * y.shape[1] * (taps + delay) * n_frames * 2 * y.real.element_size()
    cached = None
    if size <= 1 << 28:
        cached = [_lag_products(y[:, sel], taps + delay) for sel in bins]
    x = y
    for _ in range(iterations):
        power = x.real.square() + x.imag.square()
        if psd_context > 0:
            width = 2 * psd_context + 1
            power = F.avg_pool1d(
                power, width, stride=1, padding=psd_context, count_include_pad=False
            )
        floor = 1e-10 * power.amax(dim=(-2, -1), keepdim=True)
        # digital silence: the weighting does not matter, take 1
        weight = torch.where(floor > 0, 1.0 / power.clamp_min(floor.clamp_min(1e-38)), 1.0)
        x = torch.cat(
            [
                _wpe_step(y[:, sel], weight[:, sel], taps, delay, cached[i] if cached else None)
                for i, sel in enumerate(bins)
            ],
            dim=1,
        )
    return x.reshape(shape)


def _lag_products(y: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Lag products in reversed lag order: ``z[..., j, t] = y[t] · conj(y[t − m])`` with
    ``m = count − 1 − j`` (zero for ``t < m``), as real and imaginary parts, each ``(batch,
    freq, count, frame)``. (Reversed, because the lagged copies are then plain strided views.)"""
    n_frames = y.shape[-1]
    re, im = y.real.contiguous(), y.imag.contiguous()
    past_re = F.pad(re, (count - 1, 0)).unfold(-1, n_frames, 1)  # [..., j, t] = y[t − m]
    past_im = F.pad(im, (count - 1, 0)).unfold(-1, n_frames, 1)
    re, im = re.unsqueeze(-2), im.unsqueeze(-2)
    return re * past_re + im * past_im, im * past_re - re * past_im


def _wpe_step(
    y: torch.Tensor,
    weight: torch.Tensor,
    taps: int,
    delay: int,
    lags: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """One WPE update of ``y`` (complex ``(batch, freq, frame)``) for the inverse-power weights
    ``weight`` (``(batch, freq, frame)``), through its lag products (:func:`_lag_products`,
    computed here unless given).

    ``R[k, l] = Σ_t w_t y[t−d−k] y*[t−d−l] = Σ_s w[s+d+k] z_{l−k}[s]`` for ``l ≥ k``: a real
    ``(taps, frame) @ (frame, taps)`` product per part instead of a complex one of the lagged
    observations; the lower triangle follows by Hermitian symmetry. ``p[k] = Σ_t w_t y[t−d−k]
    y*[t] = conj(Σ_t w_t z_{d+k}[t])``.
    """
    n_frames = y.shape[-1]
    count = taps + delay
    z_re, z_im = lags if lags is not None else _lag_products(y, count)
    # shifted[..., k, s] = w[s + d + k] (zero past the end)
    shifted = F.pad(weight, (0, delay + taps))[..., delay:].unfold(-1, n_frames, 1)
    shifted = shifted[..., :taps, :].contiguous()
    # reversed lag order: lag m sits at index count − 1 − m; lags taps − 1 … 0 are the last
    # ``taps`` rows, so column i of the product is lag taps − 1 − i
    first = count - taps
    upper = torch.complex(
        shifted @ z_re[..., first:, :].transpose(-1, -2),
        shifted @ z_im[..., first:, :].transpose(-1, -2),
    ).flip(-1)  # upper[..., k, m] = R[k, k + m]
    k = torch.arange(taps, device=y.device)
    diff = k.unsqueeze(0) - k.unsqueeze(1)  # l − k
    low = torch.minimum(k.unsqueeze(1), k.unsqueeze(0))
    corr = upper[..., low, diff.abs()]
    corr = torch.where(diff >= 0, corr, corr.conj())
    # cross: lags d … d + taps − 1 are rows count − 1 − d … count − taps − d (reversed)
    w = weight.unsqueeze(-2)
    cross = torch.complex(
        (w * z_re[..., : count - delay, :]).sum(-1),
        -(w * z_im[..., : count - delay, :]).sum(-1),
    ).flip(-1)
    # the (taps, taps) systems are solved in double precision: R is often ill-conditioned
    corr, cross = corr.to(torch.complex128), cross.to(torch.complex128)
    load = corr.diagonal(dim1=-2, dim2=-1).real.mean(-1) * 1e-12 + 1e-30
    eye = torch.eye(taps, device=y.device, dtype=corr.dtype)
    g = torch.linalg.solve(corr + load[..., None, None] * eye, cross).conj().to(y.dtype)
    out = y.clone()
    for lag in range(taps):  # x[t] = y[t] − Σ_k conj(g_k) y[t − d − k]
        shift = delay + lag
        if shift < n_frames:
            out[..., shift:] -= g[..., lag : lag + 1] * y[..., : n_frames - shift]
    return out


def wpe_dereverb(
    samples: torch.Tensor,
    *,
    sample_rate: int,
    taps: int = 10,
    delay: int = 3,
    iterations: int = 3,
    n_fft: int | None = None,
    hop_length: int | None = None,
) -> torch.Tensor:
    """Dereverberate speech with single-channel WPE (see :func:`wpe_stft`) in the STFT domain.

    Single-channel WPE removes part of the late reverberation: on speech in exponential-decay
    rooms (RT60 0.3/0.6/0.9 s, ``scripts/eval_restore.py``) it raises SI-SDR against the dry
    speech by 0.4–0.5 dB and STOI by 0.02–0.03, PESQ-WB by up to 0.07; it hardly steepens the
    free decays, so :func:`estimate_rt60` barely moves (follow it with
    :func:`suppress_late_reflections` for that: together +0.5–1.2 dB SI-SDR, +0.04–0.07 STOI,
    RT60 estimate 0.64 → 0.37 s at 0.6 s). Dry speech passes with ≥ 20 dB SI-SDR. Cost:
    ≈ 0.35 s for 60 s at 16 kHz on one CPU thread (an optional step).

    Args:
        samples: tensor of shape ``(..., time)``, full scale = 1.0.
        sample_rate: Hz.
        taps: prediction filter length, frames. Default 10.
        delay: prediction delay, frames. Default 3 (24 ms at the default hop).
        iterations: power re-estimations. Default 3.
        n_fft: FFT size, samples. Default 32 ms rounded up to a power of two (512 at 16 kHz).
        hop_length: STFT hop, samples. Default ``n_fft // 4`` (128 at 16 kHz).

    Returns:
        Tensor of the same shape and dtype as ``samples``.

    Raises:
        InvalidOptions: a parameter is out of range.
    """
    _check_signal(samples)
    _check_rate(sample_rate)
    default_fft, default_hop = _stft_sizes(sample_rate)
    n_fft = n_fft if n_fft is not None else default_fft
    _check_int("n_fft", n_fft, 16, 1 << 16)
    hop = hop_length if hop_length is not None else n_fft // 4
    _check_int("hop_length", hop, 1, n_fft)
    x = _flat(samples)
    spec = _stft(x, n_fft, hop)
    clean = wpe_stft(spec, taps=taps, delay=delay, iterations=iterations)
    return _istft(clean, n_fft, hop, x.shape[-1]).reshape(samples.shape)


def suppress_late_reflections(
    samples: torch.Tensor,
    *,
    sample_rate: int,
    rt60: float | None = None,
    late_ms: float = 50.0,
    max_attenuation_db: float = 12.0,
    over_subtraction: float = 1.0,
) -> tuple[torch.Tensor, float]:
    """Suppress late reverberation (and the echoes it carries) without a reference signal.

    Statistical model of Lebart et al. (2001) / Habets (2007): in a diffuse field the late
    reverberation power of frame ``t`` is the power ``late_ms`` earlier decayed by the room:
    ``λ_r(t, f) = e^{−2 δ T_l} · P(t − T_l, f)`` with ``δ = 3 ln 10 / RT60``; each STFT bin gets
    the spectral-subtraction gain ``max(1 − β λ_r / P, g_min)`` (``P`` smoothed over three
    frames), which keeps the direct sound and early reflections. RT60 comes from
    :func:`estimate_rt60` unless given. On speech in exponential-decay rooms (RT60 0.3–0.9 s)
    it raises STOI by 0.02–0.06 and SI-SDR by 0.3–1.0 dB, moves PESQ-WB by −0.03 to +0.06,
    and shortens the estimated RT60 by 30–45 %; dry speech passes almost untouched (49 dB
    SI-SDR). ≈ 40 ms for 60 s at 16 kHz.

    Args:
        samples: tensor of shape ``(..., time)``, full scale = 1.0.
        sample_rate: Hz.
        rt60: reverberation time, s (0.05–5); ``None`` estimates it (channels averaged).
        late_ms: where late reverberation starts, ms (10–200). Default 50.
        max_attenuation_db: deepest attenuation of a bin, dB (0–40). Default 12.
        over_subtraction: ``β`` (0.5–4). Default 1.

    Returns:
        ``(output, rt60)``: the output, same shape as ``samples``, and the RT60 used, s. When
        the RT60 cannot be estimated (NaN) the input is returned unchanged.

    Raises:
        InvalidOptions: a parameter is out of range.
    """
    _check_signal(samples)
    _check_rate(sample_rate)
    if rt60 is not None:
        _check_range("rt60", rt60, 0.05, 5.0)
    _check_range("late_ms", late_ms, 10.0, 200.0)
    _check_range("max_attenuation_db", max_attenuation_db, 0.0, 40.0)
    _check_range("over_subtraction", over_subtraction, 0.5, 4.0)
    if rt60 is None:
        estimate = estimate_rt60(samples, sample_rate=sample_rate)
        rt60 = float(estimate.nanmean()) if bool(estimate.isfinite().any()) else float("nan")
    if not math.isfinite(rt60) or rt60 <= 0.0:
        return samples, rt60
    n_fft, hop = _stft_sizes(sample_rate)
    x = _flat(samples)
    spec = _stft(x, n_fft, hop)
    power = spec.real.square() + spec.imag.square()
    smooth = F.avg_pool1d(power, 3, stride=1, padding=1, count_include_pad=False)
    lag = max(1, round(late_ms * sample_rate / 1000 / hop))
    decay = math.exp(-2 * 3 * math.log(10) / rt60 * lag * hop / sample_rate)
    late = decay * F.pad(smooth, (lag, 0))[..., : power.shape[-1]]
    floor = 10 ** (-max_attenuation_db / 20)
    gain = (1.0 - over_subtraction * late / smooth.clamp_min(1e-20)).clamp(min=floor, max=1.0)
    out = _istft(spec * gain, n_fft, hop, x.shape[-1])
    return out.reshape(samples.shape), rt60


# --------------------------------------------------------------------------------------------
# echo
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EchoReport:
    """What :func:`cancel_echo` did.

    Attributes:
        erle_db: echo return loss enhancement of the adaptive filter, dB: mic power over its
            output power on the blocks where the far end is active (initial convergence and any
            near-end speech included, so it understates the converged ERLE); NaN when the far
            end is silent.
        double_talk: fraction of the far-end-active blocks in which the background filter
            was thrown off (its error 3 dB above the foreground's): a rough measure of double
            talk (or of echo-path changes) (0–1).
        delay_ms: bulk delay of the estimated echo path (its largest tap), ms.
    """

    erle_db: float
    double_talk: float
    delay_ms: float


def cancel_echo(
    mic: torch.Tensor,
    reference: torch.Tensor,
    *,
    sample_rate: int,
    filter_ms: float = 256.0,
    block_length: int | None = None,
    step_size: float = 1.0,
    residual_suppression: bool = True,
    max_suppression_db: float = 20.0,
) -> tuple[torch.Tensor, EchoReport]:
    """Cancel the echo of a far-end ``reference`` in ``mic``: adaptive filter + post-filter.

    1. A partitioned-block frequency-domain adaptive filter (PBFDAF / MDF: ``filter_ms`` of
       echo path in ``P`` partitions of ``block_length`` samples, FFT size ``2 · block_length``,
       overlap-save, gradient constraint) with NLMS step normalisation per bin: the step is
       ``step_size / (P · (P_x(f) + δ))`` with ``P_x`` the far-end power smoothed over ``P``
       blocks and ``δ`` 1 % of its mean.
    2. Double talk: Ochiai's two-path structure. A background filter adapts on every block
       (with a Huber-clipped error, 3× its running RMS, so that near-end bursts move it
       little); the foreground filter, whose output is used, copies it whenever its error
       energy (smoothed over ~10 blocks) is 1 dB lower than the foreground's and below the
       mic's; when the background is 6 dB worse (thrown off by near-end speech), it restarts
       from the foreground. No double-talk threshold to tune, and the echo path may change.
    3. Residual echo suppression: per STFT bin, the residual echo power is ``η(f) · |Ŷ|²``
       (``Ŷ`` the echo estimate; the leakage ``η`` is the regression of the error power's
       fluctuations on the echo estimate's, so that uncorrelated near-end speech does not
       inflate it), and the bin gets ``max(1 − 2 η |Ŷ|² / |E|², g_min)``.

    The adaptive filter is a recursion over blocks (a Python loop of ``time / block_length``
    iterations of batched tensor operations; all the rest is vectorized): ≈ 0.27 s for 60 s at
    16 kHz on one CPU thread, 0.30 s with the post-filter (an optional step). Measured on a
    known echo path (40 ms delay, four taps, a short tail; ``scripts/eval_restore.py``): ERLE
    18 dB after 2–4 s, 28 dB after 4–6 s, 50 dB after convergence (53 dB with the
    post-filter); through 6 s of double talk the near end comes out at PESQ-WB 3.7 (1.1 in
    the mic) and the filter holds.

    Args:
        mic: near-end microphone signal, shape ``(..., time)``, full scale = 1.0.
        reference: far-end signal played by the loudspeaker, same shape as ``mic`` (or
            ``(time,)``, shared by every channel), same sample rate, time-aligned (the echo
            path delay must fit in ``filter_ms``).
        sample_rate: Hz.
        filter_ms: echo path length covered, ms (10–2000). Default 256.
        block_length: block size, samples (16–8192). Default 32 ms rounded up to a power of
            two (512 at 16 kHz).
        step_size: normalized step ``μ`` (0.01–1). Default 1.
        residual_suppression: apply the post-filter. Default true.
        max_suppression_db: deepest post-filter attenuation, dB (0–60). Default 20.

    Returns:
        ``(output, report)``: the echo-cancelled signal, same shape as ``mic``, and an
        :class:`EchoReport`.

    Raises:
        InvalidOptions: shapes differ or a parameter is out of range.
    """
    _check_signal(mic, "mic")
    _check_signal(reference, "reference")
    _check_rate(sample_rate)
    if reference.shape != mic.shape:
        if reference.dim() == 1 and reference.shape[-1] == mic.shape[-1]:
            reference = reference.expand_as(mic)
        else:
            raise InvalidOptions(
                f"reference has shape {tuple(reference.shape)}, mic {tuple(mic.shape)}: they "
                "must match (same length at the same sample rate)"
            )
    _check_range("filter_ms", filter_ms, 10.0, 2000.0)
    _check_range("step_size", step_size, 0.01, 1.0)
    _check_range("max_suppression_db", max_suppression_db, 0.0, 60.0)
    n_block = block_length if block_length is not None else _next_pow2(round(0.032 * sample_rate))
    _check_int("block_length", n_block, 16, 8192)
    d = _flat(mic)
    x = _flat(reference).to(d.dtype)
    batch, n = d.shape
    n_fft = 2 * n_block
    partitions = max(1, math.ceil(filter_ms * sample_rate / 1000 / n_block))
    n_blocks = -(-n // n_block)
    total = n_blocks * n_block
    d_blocks = F.pad(d, (0, total - n)).reshape(batch, n_blocks, n_block)
    # far-end spectra of the 2N samples ending with each block, after P − 1 silent blocks
    x_pad = F.pad(x, (n_block, total - n))
    x_spec = torch.fft.rfft(x_pad.unfold(-1, n_fft, n_block)[:, :n_blocks], n=n_fft)
    x_spec = F.pad(x_spec, (0, 0, partitions - 1, 0))  # (batch, P − 1 + block, freq)
    power = x_spec.real.square() + x_spec.imag.square()
    smooth = _one_pole(power, 1.0 - 1.0 / max(2, partitions), dim=1)
    regular = 1e-2 * power.mean(dim=(1, 2), keepdim=True) + 1e-10
    norm = step_size / (partitions * (smooth + regular))
    # two-path structure (see above)
    background = torch.zeros(
        batch, partitions, x_spec.shape[-1], device=d.device, dtype=x_spec.dtype
    )
    foreground = background.clone()
    out = torch.empty_like(d_blocks)
    echo = torch.empty_like(d_blocks)
    disturbed = torch.zeros(batch, n_blocks, dtype=torch.bool, device=d.device)
    scale = d.square().mean(-1, keepdim=True).sqrt() + 1e-9
    energy_bg = torch.zeros(batch, 1, 1, device=d.device, dtype=d.dtype)
    energy_fg = torch.zeros_like(energy_bg)
    energy_d = torch.zeros_like(energy_bg)
    for k in range(n_blocks):
        xs = x_spec[:, k : k + partitions].flip(1)  # partition p ↔ block k − p
        both = torch.stack([(background * xs).sum(1), (foreground * xs).sum(1)], 1)
        y_bg, y_fg = torch.fft.irfft(both, n=n_fft)[..., n_block:].unbind(1)
        block = d_blocks[:, k]
        e_bg = block - y_bg
        e_fg = block - y_fg
        out[:, k] = e_fg
        echo[:, k] = y_fg
        energy_bg = 0.9 * energy_bg + 0.1 * e_bg.square().sum(-1)[:, None, None]
        energy_fg = 0.9 * energy_fg + 0.1 * e_fg.square().sum(-1)[:, None, None]
        energy_d = 0.9 * energy_d + 0.1 * block.square().sum(-1)[:, None, None]
        better = (energy_bg < 0.8 * energy_fg) & (energy_bg < energy_d)
        foreground = torch.where(better, background, foreground)
        worse = energy_bg > 4.0 * energy_fg
        disturbed[:, k] = (energy_bg > 2.0 * energy_fg)[:, 0, 0]
        background = torch.where(worse, foreground, background)
        energy_bg = torch.where(worse, energy_fg, energy_bg)
        limit = 3.0 * scale
        clipped = torch.maximum(torch.minimum(e_bg, limit), -limit)
        rms = e_bg.square().mean(-1, keepdim=True).sqrt()
        scale = 0.99 * scale + 0.01 * torch.minimum(rms, 2 * scale)
        err_spec = torch.fft.rfft(F.pad(clipped, (n_block, 0)), n=n_fft)
        grad = xs.conj() * (err_spec * norm[:, partitions - 1 + k]).unsqueeze(1)
        grad = torch.fft.irfft(grad, n=n_fft)[..., :n_block]  # gradient constraint
        background = background + torch.fft.rfft(grad, n=n_fft)
    residual = out.reshape(batch, total)[:, :n]
    estimate = echo.reshape(batch, total)[:, :n]
    # report: ERLE over the far-end-active blocks, double talk, bulk delay
    x_level = F.pad(x, (0, total - n)).reshape(batch, n_blocks, n_block).square().mean(-1)
    active = x_level > 1e-4 * x_level.amax(-1, keepdim=True).clamp_min(1e-20)
    mic_power = (d_blocks.square().mean(-1) * active).sum()
    res_power = (out.square().mean(-1) * active).sum()
    erle = (
        10 * math.log10(float(mic_power) / float(res_power)) if float(res_power) > 0 else math.nan
    )
    taps = torch.fft.irfft(foreground, n=n_fft)[..., :n_block].reshape(batch, -1)
    delay_ms = float(taps.abs().argmax(-1).double().mean()) * 1000 / sample_rate
    n_active = int(active.sum())
    report = EchoReport(
        erle_db=erle if n_active else math.nan,
        double_talk=float((disturbed & active).sum()) / n_active if n_active else 0.0,
        delay_ms=delay_ms,
    )
    if residual_suppression:
        residual = _suppress_residual_echo(
            residual, estimate, sample_rate=sample_rate, max_suppression_db=max_suppression_db
        )
    return residual.reshape(mic.shape), report


def _suppress_residual_echo(
    residual: torch.Tensor, estimate: torch.Tensor, *, sample_rate: int, max_suppression_db: float
) -> torch.Tensor:
    """Wiener-like post-filter of the AEC output ``residual`` given the echo ``estimate``
    (both ``(batch, time)``); see :func:`cancel_echo`."""
    n_fft, hop = _stft_sizes(sample_rate)
    err = _stft(residual, n_fft, hop)
    est = _stft(estimate, n_fft, hop)
    p_err = F.avg_pool1d(err.real.square() + err.imag.square(), 3, 1, 1, count_include_pad=False)
    p_est = F.avg_pool1d(est.real.square() + est.imag.square(), 3, 1, 1, count_include_pad=False)
    # leakage: regression of the error power's fluctuations on the echo estimate's
    centred_est = p_est - p_est.mean(-1, keepdim=True)
    centred_err = p_err - p_err.mean(-1, keepdim=True)
    leak = (centred_err * centred_est).sum(-1) / centred_est.square().sum(-1).clamp_min(1e-20)
    leak = F.avg_pool1d(leak.clamp(0.0, 1.0).unsqueeze(1), 5, 1, 2, count_include_pad=False)
    floor = 10 ** (-max_suppression_db / 20)
    gain = (1.0 - 2.0 * leak.squeeze(1).unsqueeze(-1) * p_est / p_err.clamp_min(1e-20)).clamp(
        min=floor, max=1.0
    )
    return _istft(err * gain, n_fft, hop, residual.shape[-1])


def _one_pole(x: torch.Tensor, alpha: float, dim: int) -> torch.Tensor:
    """``y[t] = α y[t−1] + (1 − α) x[t]`` along ``dim`` (real ``x``), started at ``x[0]``."""
    moved = x.movedim(dim, -1)
    start = moved[..., :1]
    return (one_pole(moved - start, alpha=alpha) + start).movedim(-1, dim)


# --------------------------------------------------------------------------------------------
# long-term spectral equalization
# --------------------------------------------------------------------------------------------

#: One-third-octave band centres, Hz, and the standard speech spectrum level for normal vocal
#: effort, dB re 20 µPa per Hz (ANSI S3.5-1997, table 3).
SPEECH_BANDS_HZ = (
    160.0, 200.0, 250.0, 315.0, 400.0, 500.0, 630.0, 800.0, 1000.0, 1250.0, 1600.0, 2000.0,
    2500.0, 3150.0, 4000.0, 5000.0, 6300.0, 8000.0,
)  # fmt: skip
SPEECH_SPECTRUM_DB = (
    32.41, 34.48, 34.75, 33.98, 34.59, 34.27, 32.06, 28.30, 25.01, 23.00, 20.15, 17.32, 13.18,
    11.55, 9.33, 5.31, 2.59, 1.13,
)  # fmt: skip


@dataclass(frozen=True)
class EqualizationReport:
    """What :func:`equalize_long_term_spectrum` applied.

    Attributes:
        band_hz: centres of the one-third-octave bands used, Hz, shape ``(band,)``.
        gains_db: gain applied in each band, dB, shape ``(..., band)`` (0 where nothing was
            measured).
        deviation_db: RMS deviation of the input's long-term spectrum from the target over the
            bands (level removed), dB, shape ``(...)``.
    """

    band_hz: torch.Tensor
    gains_db: torch.Tensor
    deviation_db: torch.Tensor


def long_term_band_levels(
    samples: torch.Tensor, *, sample_rate: int, active_range_db: float = 30.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Long-term average spectrum of the active frames in one-third-octave bands.

    Args:
        samples: tensor of shape ``(..., time)``, full scale = 1.0.
        sample_rate: Hz.
        active_range_db: frames more than this below the loudest (95th percentile) frame
            energy are left out (pauses), dB. Default 30.

    Returns:
        ``(band_hz, level_db)``: the centres of the bands below ``0.45 · sample_rate``
        (``(band,)``, Hz) and each band's mean power spectral density, dB (arbitrary reference,
        ``(..., band)``).
    """
    _check_signal(samples)
    _check_rate(sample_rate)
    n_fft, hop = _stft_sizes(sample_rate)
    x = _flat(samples)
    spec = _stft(x, n_fft, hop)
    power = spec.real.square() + spec.imag.square()  # (batch, freq, frame)
    energy = power.sum(1)
    loud = torch.quantile(energy, 0.95, dim=-1, keepdim=True)
    active = (energy > loud * 10 ** (-active_range_db / 10)) & (energy > 0)
    ltas = (power * active.unsqueeze(1)).sum(-1) / active.sum(-1, keepdim=True).clamp_min(1)
    centres = torch.tensor(
        [c for c in SPEECH_BANDS_HZ if c * 2 ** (1 / 6) < 0.45 * sample_rate], dtype=x.dtype
    )
    freqs = torch.arange(power.shape[1], dtype=x.dtype) * sample_rate / n_fft
    lower, upper = centres * 2 ** (-1 / 6), centres * 2 ** (1 / 6)
    member = ((freqs >= lower.unsqueeze(-1)) & (freqs < upper.unsqueeze(-1))).to(x.dtype)
    member = member / member.sum(-1, keepdim=True).clamp_min(1)  # mean over the band's bins
    level = 10 * torch.log10(ltas @ member.T.to(x.device) + 1e-30)
    return centres.to(x.device), level.reshape(*samples.shape[:-1], -1)


def equalize_long_term_spectrum(
    samples: torch.Tensor,
    *,
    sample_rate: int,
    max_gain_db: float = 6.0,
    strength: float = 1.0,
    f_min: float = 150.0,
    f_max: float | None = None,
) -> tuple[torch.Tensor, EqualizationReport]:
    """Equalize the long-term spectrum of speech toward the standard speech spectrum.

    The long-term average spectrum of the active frames (:func:`long_term_band_levels`) is
    compared, band by band (one-third octaves, 160 Hz – 8 kHz, within ``[f_min, f_max]``), with
    the ANSI S3.5 standard speech spectrum (normal effort) after removing the level difference;
    ``strength`` of the difference, smoothed over three bands and bounded to ``±max_gain_db``,
    becomes a static zero-phase gain curve (interpolated on a log-frequency axis, 0 dB outside
    the bands), applied in the STFT domain. The gains average 0 dB over the bands, so the
    level changes little. ≈ 25 ms for 60 s at 16 kHz.

    Args:
        samples: tensor of shape ``(..., time)``, full scale = 1.0.
        sample_rate: Hz.
        max_gain_db: largest boost or cut, dB (0–20). Default 6.
        strength: fraction of the deviation corrected (0–1). Default 1.
        f_min: lowest band centre equalized, Hz. Default 150.
        f_max: highest band centre equalized, Hz. Default ``0.45 · sample_rate`` (≤ 8 kHz).

    Returns:
        ``(output, report)``: same shape as ``samples``, and an :class:`EqualizationReport`.

    Raises:
        InvalidOptions: a parameter is out of range.
    """
    _check_signal(samples)
    _check_rate(sample_rate)
    _check_range("max_gain_db", max_gain_db, 0.0, 20.0)
    _check_range("strength", strength, 0.0, 1.0)
    top = 0.45 * sample_rate if f_max is None else f_max
    _check_range("f_min", f_min, 0.0, 0.45 * sample_rate)
    _check_range("f_max", top, f_min, 0.45 * sample_rate)
    x = _flat(samples)
    centres, level = long_term_band_levels(x, sample_rate=sample_rate)
    target = torch.tensor(SPEECH_SPECTRUM_DB[: centres.shape[0]], device=x.device, dtype=x.dtype)
    used = (centres >= f_min) & (centres <= top)
    finite = torch.isfinite(level) & (level > -250) & used
    diff = torch.where(finite, target - level, torch.zeros_like(level))
    count = finite.sum(-1, keepdim=True).clamp_min(1)
    diff = torch.where(finite, diff - diff.sum(-1, keepdim=True) / count, diff)
    deviation = (diff.square() * finite).sum(-1).div(count.squeeze(-1)).sqrt()
    smoothed = F.avg_pool1d(
        (diff * finite).unsqueeze(1), 3, stride=1, padding=1, count_include_pad=False
    ).squeeze(1)
    gains = (strength * smoothed).clamp(-max_gain_db, max_gain_db) * finite
    # gain per FFT bin: linear in log-frequency between band centres, 0 dB outside
    n_fft, hop = _stft_sizes(sample_rate)
    freqs = torch.arange(n_fft // 2 + 1, device=x.device, dtype=x.dtype) * sample_rate / n_fft
    logf = torch.log2(freqs.clamp_min(1.0))
    logc = torch.log2(centres)
    knots = torch.cat([logc[:1] - 1 / 3, logc, logc[-1:] + 1 / 3])  # taper over a third
    values = F.pad(gains, (1, 1))
    idx = torch.searchsorted(knots, logf).clamp(1, knots.shape[0] - 1)
    left, right = knots[idx - 1], knots[idx]
    frac = ((logf - left) / (right - left)).clamp(0.0, 1.0)
    curve_db = values[:, idx - 1] * (1 - frac) + values[:, idx] * frac  # (batch, freq)
    gain = 10 ** (curve_db / 20)
    out = _istft(_stft(x, n_fft, hop) * gain.unsqueeze(-1), n_fft, hop, x.shape[-1])
    lead = samples.shape[:-1]
    report = EqualizationReport(
        band_hz=centres,
        gains_db=gains.reshape(*lead, -1),
        deviation_db=deviation.reshape(lead),
    )
    return out.reshape(samples.shape), report
