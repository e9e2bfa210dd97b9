"""Fundamental frequency (F0): an autocorrelation pitch tracker with a Viterbi path finder.

The analysis is Boersma's (1993) normalized autocorrelation, the method behind Praat's
``To Pitch (ac)``, with Praat's defaults:

1. Each frame (``periods_per_window / f_min`` seconds, centred on sample ``t * hop_length``) has
   its local mean removed (over ``±1 / f_min``), is Hann-windowed, and its autocorrelation is
   computed through the FFT and divided by the window's own autocorrelation, so a periodic
   signal scores ``r(period) ≈ 1``. (For a stationary frame, ``2 · (1 − r(τ))`` is YIN's
   difference function ``d(τ)`` divided by the frame energy.)
2. The local maxima of ``r`` with ``r > ½ · voicing_threshold``, located to a fraction of a
   sample by parabolic interpolation, whose frequency lies in ``[f_min, f_max)`` are the voiced
   candidates; the ``max_candidates`` strongest (with a small bonus for high frequencies, the
   ``octave_cost``) are kept. An unvoiced candidate is always present; its score rises in quiet
   frames (``silence_threshold``, relative to the signal's peak amplitude).
3. A Viterbi decoder picks one candidate per frame, charging ``octave_jump_cost`` per octave of
   F0 change and ``voiced_unvoiced_cost`` per voicing switch (both per 10 ms of hop).

Nothing loops over frames in Python: the FFTs and the candidate search run on batches of
frames (a few hundred at a time, which keeps them in the CPU cache), and the decoder is a parallel
max-plus scan over all frames (a tree of ``log₂(frame)`` levels).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F

from app.errors import InvalidOptions
from app.pipeline.types import UnvoicedMode

#: Score of an impossible decoder state (finite, so max-plus arithmetic never makes NaN).
_IMPOSSIBLE = -1.0e4


@dataclass(frozen=True)
class PitchTrack:
    """A pitch track on the feature frame grid (frame ``t`` centred at sample ``t * hop_length``).

    Attributes:
        f0_hz: fundamental frequency, Hz, shape ``(..., frame)``, in ``[f_min, f_max)`` where
            voiced and ``0.0`` in unvoiced frames (see :func:`fill_unvoiced` for other
            conventions).
        voicing: probability-like voicing confidence in ``[0, 1]``, shape ``(..., frame)``: a
            logistic of the decoder's score margin between the best voiced and the best unvoiced
            path through the frame (in units of ``voiced_unvoiced_cost``); ``≥ 0.5`` where
            ``voiced`` is true, ``≤ 0.5`` elsewhere.
        voiced: voicing decision, bool, shape ``(..., frame)``.
    """

    f0_hz: torch.Tensor
    voicing: torch.Tensor
    voiced: torch.Tensor


def track_pitch(
    samples: torch.Tensor,
    *,
    sample_rate: int,
    hop_length: int,
    f_min: float = 65.0,
    f_max: float = 400.0,
    periods_per_window: float = 3.0,
    max_candidates: int = 6,
    voicing_threshold: float = 0.45,
    silence_threshold: float = 0.03,
    octave_cost: float = 0.01,
    octave_jump_cost: float = 0.35,
    voiced_unvoiced_cost: float = 0.14,
) -> PitchTrack:
    """Track F0 over centred frames (the frames of every other feature).

    The defaults are Praat's ``To Pitch (ac)`` defaults, except that Praat keeps up to 15
    candidates per frame: 6 track our test speech as closely (GPE 0 %, VDE < 0.1 % against
    Praat) with a faster decoder (its cost grows with the cube of the candidate count).

    Args:
        samples: tensor of shape ``(..., time)``, finite, full scale = 1.0 (any scale works:
            the analysis is scale-invariant).
        sample_rate: Hz (8000–48000 are tested).
        hop_length: hop between frames, samples; frame ``t`` is centred at sample
            ``t * hop_length`` and there are ``1 + time // hop_length`` frames.
        f_min: lowest F0, Hz (> 0). Sets the window length: ``periods_per_window / f_min``
            seconds (46 ms for 65 Hz). Default 65.
        f_max: highest F0, Hz (``f_min < f_max < sample_rate / 2``). Default 400.
        periods_per_window: window length in periods of ``f_min`` (≥ 2). Default 3.
        max_candidates: voiced candidates kept per frame (≥ 1). Default 6.
        voicing_threshold: autocorrelation strength, in ``[0, 1]``, a candidate needs to beat
            the unvoiced candidate of a loud frame; higher means fewer voiced frames.
            Default 0.45.
        silence_threshold: frames whose peak amplitude is below this fraction of the signal's
            peak amplitude lean towards unvoiced (≥ 0). Default 0.03.
        octave_cost: score bonus per octave of candidate frequency (favours the highest of
            sub-harmonic candidates). Default 0.01.
        octave_jump_cost: path cost per octave of F0 change between frames 10 ms apart.
            Default 0.35.
        voiced_unvoiced_cost: path cost of a voicing switch between frames 10 ms apart.
            Default 0.14.

    Returns:
        A :class:`PitchTrack` whose tensors have shape ``(..., 1 + time // hop_length)``;
        ``f0_hz`` and ``voicing`` have the input's floating dtype (float32 for integer input).

    Raises:
        InvalidOptions: a parameter is out of range (the message names it).
    """
    _validate(
        sample_rate=sample_rate,
        hop_length=hop_length,
        f_min=f_min,
        f_max=f_max,
        periods_per_window=periods_per_window,
        max_candidates=max_candidates,
        voicing_threshold=voicing_threshold,
        silence_threshold=silence_threshold,
        costs={
            "octave_cost": octave_cost,
            "octave_jump_cost": octave_jump_cost,
            "voiced_unvoiced_cost": voiced_unvoiced_cost,
        },
    )
    dtype = torch.float64 if samples.dtype == torch.float64 else torch.float32
    lead, n = samples.shape[:-1], samples.shape[-1]
    x = samples.to(dtype).reshape(math.prod(lead), n)
    n_frames = 1 + n // hop_length
    out_dtype = samples.dtype if samples.is_floating_point() else dtype
    if x.shape[0] == 0:  # an empty batch
        zeros = torch.zeros(*lead, n_frames, dtype=out_dtype, device=samples.device)
        return PitchTrack(f0_hz=zeros, voicing=zeros, voiced=zeros.bool())

    geometry = _geometry(sample_rate, f_min, f_max, periods_per_window)
    freq, strength, intensity = _analyse(
        x,
        geometry,
        sample_rate=sample_rate,
        hop_length=hop_length,
        f_min=f_min,
        f_max=f_max,
        voicing_threshold=voicing_threshold,
        octave_cost=octave_cost,
        k=max_candidates,
    )

    # Decoder scores: unvoiced state first, then the voiced candidates (0 Hz = empty slot).
    voiced_score = strength - octave_cost * torch.log2(f_max / freq.clamp_min(1e-3))
    voiced_score = torch.where(freq > 0, voiced_score, _IMPOSSIBLE)
    if silence_threshold > 0:
        quiet = 2.0 - intensity * ((1.0 + voicing_threshold) / silence_threshold)
        unvoiced_score = voicing_threshold + quiet.clamp_min(0.0)
    else:
        unvoiced_score = torch.full_like(intensity, voicing_threshold)
    scores = torch.cat([unvoiced_score.unsqueeze(-1), voiced_score], dim=-1)
    freqs = torch.cat([torch.zeros_like(freq[..., :1]), freq], dim=-1)

    per_10ms = 0.01 * sample_rate / hop_length  # the costs are stated per 10 ms of hop
    marginals = _max_marginals(
        scores, freqs, octave_jump_cost * per_10ms, voiced_unvoiced_cost * per_10ms
    )
    best = marginals.argmax(dim=-1, keepdim=True)
    f0 = freqs.gather(-1, best).squeeze(-1).to(out_dtype)
    margin = marginals[..., 1:].amax(dim=-1) - marginals[..., 0]
    voicing = torch.sigmoid(margin / max(voiced_unvoiced_cost, 0.05)).to(out_dtype)
    voiced = f0 > 0
    shape = (*lead, n_frames)
    return PitchTrack(
        f0_hz=f0.reshape(shape), voicing=voicing.reshape(shape), voiced=voiced.reshape(shape)
    )


def hz_to_semitones(f0_hz: torch.Tensor, reference_hz: float = 55.0) -> torch.Tensor:
    """Frequency in semitones above ``reference_hz``: ``12 · log2(f0_hz / reference_hz)``.

    Args:
        f0_hz: frequencies, Hz, any shape; values ≤ 0 (unvoiced) map to NaN.
        reference_hz: the frequency of 0 semitones, Hz (> 0). Default 55 (A1).

    Returns:
        Tensor of the same shape, semitones.
    """
    if not reference_hz > 0:
        raise InvalidOptions(f"reference_hz={reference_hz} must be > 0 Hz.")
    semitones = 12.0 * torch.log2(f0_hz.clamp_min(1e-30) / reference_hz)
    return torch.where(f0_hz > 0, semitones, math.nan)


def fill_unvoiced(f0_hz: torch.Tensor, voiced: torch.Tensor, mode: UnvoicedMode) -> torch.Tensor:
    """Replace the F0 of unvoiced frames.

    Args:
        f0_hz: F0, Hz, shape ``(..., frame)``.
        voiced: voicing decisions, bool, same shape.
        mode: ``"zero"`` (0 Hz), ``"nan"`` (NaN) or ``"interpolate"`` (linear interpolation
            in Hz between the neighbouring voiced frames, held constant before the first and
            after the last; all-unvoiced rows become 0).

    Returns:
        Tensor of the same shape and dtype as ``f0_hz``.
    """
    if mode == "zero":
        return torch.where(voiced, f0_hz, 0.0)
    if mode == "nan":
        return torch.where(voiced, f0_hz, math.nan)
    if mode != "interpolate":
        raise InvalidOptions(f"mode={mode!r} is not one of 'zero', 'nan', 'interpolate'.")
    n = f0_hz.shape[-1]
    index = torch.arange(n, device=f0_hz.device).expand_as(f0_hz)
    # Index of the last voiced frame at or before each frame, and of the first at or after.
    left = torch.where(voiced, index, -1).cummax(dim=-1).values
    right = torch.where(voiced, index, n).flip(-1).cummin(dim=-1).values.flip(-1)
    has_left, has_right = left >= 0, right < n
    f_left = f0_hz.gather(-1, left.clamp_min(0))
    f_right = f0_hz.gather(-1, right.clamp_max(n - 1))
    span = (right - left).clamp_min(1).to(f0_hz.dtype)
    weight = (index - left).to(f0_hz.dtype) / span
    between = f_left + weight * (f_right - f_left)
    filled = torch.where(
        has_left & has_right,
        between,
        torch.where(has_left, f_left, torch.where(has_right, f_right, 0.0)),
    )
    return torch.where(voiced, f0_hz, filled)


# --- analysis ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Geometry:
    """Frame geometry in samples (all derived from sample_rate, f_min, f_max)."""

    win_length: int  # analysis window (even)
    mean_length: int  # local-mean span, 2 longest periods
    peak_half: int  # half-span of the local peak search
    min_lag: int  # shortest lag searched for a maximum
    max_lag: int  # longest lag searched for a maximum
    n_fft: int


@lru_cache(maxsize=64)
def _geometry(sample_rate: int, f_min: float, f_max: float, periods: float) -> _Geometry:
    period = int(sample_rate / f_min)
    win = 2 * (int(periods / f_min * sample_rate) // 2 - 1)
    min_lag = max(2, int(sample_rate / f_max))
    max_lag = min(int(win / periods) + 1, win - 2)
    return _Geometry(
        win_length=win,
        mean_length=min(2 * period, win),
        peak_half=min(period // 2 + 1, win // 2),
        min_lag=min_lag,
        max_lag=max_lag,
        n_fft=1 << (win + max_lag + 1).bit_length(),
    )


@lru_cache(maxsize=32)
def _window_and_its_autocorrelation(
    win_length: int, n_fft: int, n_lags: int, dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Praat's Hann window ``0.5 − 0.5·cos(2πi/(N+1))``, i = 1…N, zero-padded to ``n_fft``, and
    its normalized autocorrelation at lags ``0 … n_lags − 1``."""
    i = torch.arange(1, win_length + 1, dtype=torch.float64)
    window = F.pad(
        0.5 - 0.5 * torch.cos(2 * math.pi * i / (win_length + 1)), (0, n_fft - win_length)
    )
    spectrum = torch.fft.rfft(window)
    acf = torch.fft.irfft(spectrum.real.square() + spectrum.imag.square(), n=n_fft)[:n_lags]
    acf = (acf / acf[0]).clamp_min(1e-6)
    return window.to(device=device, dtype=dtype), acf.to(device=device, dtype=dtype)


#: Samples (frames × n_fft × batch) per FFT batch: small batches stay in the CPU cache (faster
#: than one big batch) and bound the memory of long recordings.
_CHUNK_SAMPLES = 1 << 19


def _analyse(
    x: torch.Tensor,
    g: _Geometry,
    *,
    sample_rate: int,
    hop_length: int,
    f_min: float,
    f_max: float,
    voicing_threshold: float,
    octave_cost: float,
    k: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Candidates of every frame, computed in batches of frames.

    Args:
        x: ``(batch, time)``.

    Returns:
        Candidate frequencies (Hz, 0 for none) and strengths (in ``[0, 1]``), each
        ``(batch, frame, k)``, and each frame's peak amplitude relative to the signal's,
        ``(batch, frame)`` in ``[0, 1]``.
    """
    n = x.shape[-1]
    count = 1 + n // hop_length
    centre = g.win_length // 2
    # Frame t covers n_fft samples from t * hop_length − win_length // 2 (the FrameSpec
    # convention: centred on sample t * hop_length); the window keeps the first win_length.
    padded = F.pad(x, (centre, (count - 1) * hop_length + g.n_fft - centre - n))
    if n:
        global_peak = (x - x.mean(dim=-1, keepdim=True)).abs().amax(dim=-1, keepdim=True)
    else:
        global_peak = x.new_zeros(x.shape[0], 1)
    step = max(1, _CHUNK_SAMPLES // (g.n_fft * max(1, x.shape[0])))
    parts = []
    for first in range(0, count, step):
        last = min(count, first + step)
        chunk = padded[:, first * hop_length : (last - 1) * hop_length + g.n_fft]
        r, local_peak = _normalized_autocorrelation(chunk, g, hop_length)
        freq, strength = _candidates(
            r, g, sample_rate, f_min, f_max, voicing_threshold, octave_cost, k
        )
        parts.append((freq, strength, local_peak))
    freq, strength, local_peak = (torch.cat(p, dim=1) for p in zip(*parts, strict=True))
    intensity = (local_peak / global_peak.clamp_min(1e-30)).clamp_max(1.0)
    # Frames without signal (digital silence, padding beyond the ends) have no candidates.
    freq = torch.where(local_peak.unsqueeze(-1) > 0, freq, 0.0)
    return freq, strength, intensity


def _normalized_autocorrelation(
    chunk: torch.Tensor, g: _Geometry, hop_length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalized autocorrelation and peak amplitude of each frame of a padded chunk.

    Args:
        chunk: ``(batch, time)``, the frames' samples (frame ``j`` starts at ``j * hop_length``
            and spans ``n_fft`` samples).

    Returns:
        ``r`` of shape ``(batch, frame, max_lag + 2)`` (lags 0 … max_lag + 1) and the peak
        absolute value of each windowed frame around its centre, ``(batch, frame)``.
    """
    framed = chunk.unfold(-1, g.n_fft, hop_length)
    centre = g.win_length // 2
    half_mean = g.mean_length // 2
    local_mean = framed[..., centre - half_mean : centre + half_mean].mean(dim=-1, keepdim=True)
    window, window_acf = _window_and_its_autocorrelation(
        g.win_length, g.n_fft, g.max_lag + 2, chunk.dtype, chunk.device
    )
    frames = (framed * window).addcmul_(local_mean, window, value=-1.0)
    local_peak = frames[..., centre - g.peak_half : centre + g.peak_half].abs().amax(dim=-1)

    spectrum = torch.fft.rfft(frames)
    acf = torch.fft.irfft(spectrum * spectrum.conj(), n=g.n_fft)[..., : g.max_lag + 2]
    r = acf / (acf[..., :1].clamp_min(1e-30) * window_acf)
    return r, local_peak


def _candidates(
    r: torch.Tensor,
    g: _Geometry,
    sample_rate: int,
    f_min: float,
    f_max: float,
    voicing_threshold: float,
    octave_cost: float,
    k: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` strongest autocorrelation maxima per frame.

    Returns:
        Frequencies (Hz, 0 for an empty slot) and strengths in ``[0, 1]``, each
        ``(batch, frame, k)``.
    """
    lo, hi = g.min_lag, g.max_lag
    prev, mid, nxt = r[..., lo - 1 : hi], r[..., lo : hi + 1], r[..., lo + 1 : hi + 2]
    is_peak = (mid > 0.5 * voicing_threshold) & (mid > prev) & (mid >= nxt)
    # Rank the maxima on the integer-lag grid, then refine only the k kept.
    bonus = _octave_bonus((lo, hi), sample_rate, f_min, octave_cost, r.dtype, r.device)
    rank = torch.where(is_peak, mid + bonus, -1.0)
    k = min(k, rank.shape[-1])
    top, where = rank.topk(k, dim=-1, sorted=False)
    where = where + lo
    y0, y1, y2 = (r.gather(-1, where + shift) for shift in (-1, 0, 1))
    slope = 0.5 * (y2 - y0)
    curvature = (2.0 * y1 - y0 - y2).clamp_min(1e-12)
    offset = (slope / curvature).clamp(-1.0, 1.0)
    strength = y1 + 0.5 * slope * offset
    strength = torch.where(strength > 1.0, 1.0 / strength, strength)
    freq = sample_rate / (where + offset)
    valid = (top > -1.0) & (freq < f_max) & (freq >= f_min)
    freq = torch.where(valid, freq, 0.0)
    strength = torch.where(valid, strength, 0.0)
    return freq, strength


@lru_cache(maxsize=32)
def _octave_bonus(
    lags: tuple[int, int],
    sample_rate: int,
    f_min: float,
    octave_cost: float,
    dtype: torch.dtype,
    device: torch.device,
) -> torch.Tensor:
    """``octave_cost · log2(f / f_min)`` at each lag of ``lags = (first, last)``, samples."""
    lag = torch.arange(lags[0], lags[1] + 1, dtype=torch.float64)
    bonus = octave_cost * torch.log2(sample_rate / lag / f_min)
    return bonus.to(device=device, dtype=dtype)


# --- decoder ----------------------------------------------------------------------------------


def _max_marginals(
    scores: torch.Tensor, freqs: torch.Tensor, jump_cost: float, switch_cost: float
) -> torch.Tensor:
    """Best total path score through each (frame, state): Viterbi as a parallel max-plus scan.

    Args:
        scores: per-state scores, ``(batch, frame, state)``.
        freqs: per-state frequency, Hz (0 = the unvoiced state), same shape.
        jump_cost: cost per octave between voiced states of adjacent frames.
        switch_cost: cost of a voiced↔unvoiced transition.

    Returns:
        ``(batch, frame, state)``: for each state, the score of the best path through it (up to
        a per-frame constant), so ``argmax`` over states is the Viterbi path.
    """
    batch, n, s = scores.shape
    dtype, device = scores.dtype, scores.device
    # Transition matrices: step t goes from frame t−1 (rows) to frame t (columns).
    log_f = torch.log2(freqs.clamp_min(1e-3))
    voiced = freqs > 0
    jump = (log_f[:, :-1, :, None] - log_f[:, 1:, None, :]).abs() * jump_cost
    both = voiced[:, :-1, :, None] & voiced[:, 1:, None, :]
    one = voiced[:, :-1, :, None] ^ voiced[:, 1:, None, :]
    cost = torch.where(both, jump, torch.where(one, switch_cost, 0.0))
    steps = scores[:, 1:, None, :] - cost
    # Step 0 enters frame 0 from a neutral start state (all rows equal).
    first = scores[:, :1, None, :].expand(batch, 1, s, s)
    steps = torch.cat([first, steps], dim=1)  # (batch, n, s, s)
    # Subtracting each step's maximum changes every path's score by the same constant, and keeps
    # the scores of block products small (float32 stays exact enough over any length).
    steps = steps - steps.amax(dim=(-2, -1), keepdim=True)
    identity = torch.full((batch, 1, s, s), _IMPOSSIBLE, dtype=dtype, device=device)
    identity.diagonal(dim1=-2, dim2=-1).zero_()

    # Up-sweep: max-plus products of adjacent blocks, level by level (odd levels padded with the
    # identity).
    levels = [steps]
    while levels[-1].shape[1] > 1:
        p = levels[-1]
        if p.shape[1] % 2:
            p = levels[-1] = torch.cat([p, identity], dim=1)
        levels.append((p[:, 0::2, :, :, None] + p[:, 1::2, None, :, :]).amax(dim=-2))

    # Down-sweeps: the best score arriving before each step (prefix) and leaving after it (suffix).
    prefix = suffix = torch.zeros(batch, 1, s, dtype=dtype, device=device)
    for p in reversed(levels[:-1]):
        half = p.shape[1] // 2
        prefix, suffix = prefix[:, :half], suffix[:, :half]
        after_left = (prefix[..., :, None] + p[:, 0::2]).amax(dim=-2)
        before_right = (p[:, 1::2] + suffix[..., None, :]).amax(dim=-1)
        prefix = torch.stack([prefix, after_left], dim=2).reshape(batch, 2 * half, s)
        suffix = torch.stack([before_right, suffix], dim=2).reshape(batch, 2 * half, s)

    prefix, suffix = prefix[:, :n], suffix[:, :n]
    forward = (prefix[..., :, None] + steps).amax(dim=-2)  # best path score ending in state
    return forward + suffix


def _validate(
    *,
    sample_rate: int,
    hop_length: int,
    f_min: float,
    f_max: float,
    periods_per_window: float,
    max_candidates: int,
    voicing_threshold: float,
    silence_threshold: float,
    costs: dict[str, float],
) -> None:
    if sample_rate <= 0:
        raise InvalidOptions(f"sample_rate={sample_rate} must be a positive number of Hz.")
    if hop_length < 1:
        raise InvalidOptions(f"hop_length={hop_length} must be ≥ 1 sample.")
    if not f_min > 0:
        raise InvalidOptions(f"f_min={f_min} Hz must be > 0.")
    if not f_min < f_max:
        raise InvalidOptions(f"f_min={f_min} Hz must be below f_max={f_max} Hz.")
    if not f_max < sample_rate / 2:
        raise InvalidOptions(
            f"f_max={f_max} Hz must be below the Nyquist frequency ({sample_rate / 2:g} Hz)."
        )
    if periods_per_window < 2:
        raise InvalidOptions(f"periods_per_window={periods_per_window} must be ≥ 2.")
    if int(periods_per_window / f_min * sample_rate) < 8:
        raise InvalidOptions(
            f"f_min={f_min} Hz and periods_per_window={periods_per_window} give a window "
            f"shorter than 8 samples at sample_rate={sample_rate} Hz."
        )
    if max_candidates < 1:
        raise InvalidOptions(f"max_candidates={max_candidates} must be ≥ 1.")
    if not 0 <= voicing_threshold <= 1:
        raise InvalidOptions(f"voicing_threshold={voicing_threshold} must be in [0, 1].")
    if silence_threshold < 0:
        raise InvalidOptions(f"silence_threshold={silence_threshold} must be ≥ 0.")
    for name, cost in costs.items():
        if cost < 0:
            raise InvalidOptions(f"{name}={cost} must be ≥ 0.")
