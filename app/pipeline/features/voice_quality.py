"""Voice quality: formant frequencies, jitter, shimmer and harmonics-to-noise ratio.

The definitions follow Praat (Boersma & Weenink), so values can be compared with the numbers
phoneticians already use:

* :func:`formants`: LPC formants per frame — Praat's ``To Formant (burg)`` analysis band
  (0 … ``max_formant_hz``), pre-emphasis from 50 Hz and Gaussian window, but with the
  autocorrelation method (batched Levinson–Durbin) instead of Burg's, computed from the frame's
  spectrum so no resampling is needed. Formants are the roots of the LPC polynomial (eigenvalues of
  its companion matrix).
* :func:`voice_quality`: glottal pulses found in the voiced stretches of a given F0 track, then
  Praat's ``jitter (local)``, ``shimmer (local)`` and the cross-correlation harmonics-to-noise ratio
  (``To Harmonicity (cc)``).

The F0 track is an argument (any tracker with centred frames, frame ``t`` at sample
``t * hop_length``), so this module does not depend on a particular pitch tracker.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch

from app.errors import InvalidOptions
from app.pipeline.features.frames import FrameSpec, frame_signal

#: Pre-emphasis corner frequency of the formant analysis, Hz (Praat's default).
PRE_EMPHASIS_HZ = 50.0
#: Roots closer than this to 0 Hz or to ``max_formant_hz`` are not formants, Hz (Praat's margin).
FORMANT_MARGIN_HZ = 50.0
#: Praat's period bounds for jitter and shimmer: shortest and longest period (s), largest ratio of
#: consecutive periods, largest ratio of consecutive amplitudes.
SHORTEST_PERIOD_S = 1e-4
LONGEST_PERIOD_S = 0.02
MAX_PERIOD_FACTOR = 1.3
MAX_AMPLITUDE_FACTOR = 1.6
#: A period counts when the one-period window at its first pulse correlates better than this with
#: the next period (Praat's ``To PointProcess (periodic, cc)`` threshold) ...
MIN_PULSE_CORRELATION = 0.3
#: ... and the next pulse lies within this fraction of a period of where the correlation puts it.
PULSE_TOLERANCE = 0.5
#: Peak picking: a pulse is the largest sample within ± this many local periods.
PULSE_HALF_WIDTH = 0.6
#: Period search range around the F0 track, as factors of the local period (Praat's 0.8 … 1.25).
PERIOD_RANGE = (0.8, 1.25)
#: Lowest F0 accepted on a voiced frame, Hz (keeps the analysis windows bounded).
MIN_F0_HZ = 10.0
#: HNR is clamped to ±this many dB (Praat's bound for r → 0 and r → 1).
HNR_LIMIT_DB = 150.0


@dataclass(frozen=True)
class VoiceQuality:
    """Utterance-level voice quality of one recording.

    Every scalar is a 0-dimensional tensor, NaN when it is undefined (too few voiced periods).

    Attributes:
        jitter_local: mean absolute difference of consecutive glottal periods divided by the mean
            period, fraction (Praat's ``jitter (local)``; 0.01 = 1 %).
        shimmer_local: mean absolute difference of the amplitudes of consecutive periods divided by
            the mean amplitude, fraction (Praat's ``shimmer (local)``).
        hnr_db: mean of ``hnr_frames_db`` over the voiced frames, dB.
        hnr_frames_db: harmonics-to-noise ratio of each frame, shape ``(frame,)``, dB; NaN on
            unvoiced frames.
        pulses: glottal pulse positions, shape ``(pulse,)``, samples (fractional, ascending).
    """

    jitter_local: torch.Tensor
    shimmer_local: torch.Tensor
    hnr_db: torch.Tensor
    hnr_frames_db: torch.Tensor
    pulses: torch.Tensor


# --------------------------------------------------------------------------------------------
# Validation


def _check_samples(samples: torch.Tensor, sample_rate: int, hop_length: int) -> None:
    if samples.dim() != 1:
        raise InvalidOptions(f"samples must have shape (time,), got {tuple(samples.shape)}")
    if not samples.is_floating_point():
        raise InvalidOptions(f"samples must be a floating-point tensor, got {samples.dtype}")
    if samples.shape[0] == 0:
        raise InvalidOptions("samples is empty")
    if sample_rate <= 0:
        raise InvalidOptions(f"sample_rate must be positive, got {sample_rate}")
    if hop_length < 1:
        raise InvalidOptions(f"hop_length must be ≥ 1 sample, got {hop_length}")


def _check_track(
    f0_hz: torch.Tensor,
    voiced: torch.Tensor,
    num_frames: int,
    num_samples: int,
    hop_length: int,
    sample_rate: int,
) -> None:
    for name, track in (("f0_hz", f0_hz), ("voiced", voiced)):
        if track.shape != (num_frames,):
            raise InvalidOptions(
                f"{name} must have shape (frame,) = ({num_frames},) for {num_samples} samples at "
                f"hop_length {hop_length} (1 + time // hop_length), got {tuple(track.shape)}"
            )
    if voiced.dtype != torch.bool:
        raise InvalidOptions(f"voiced must be a bool tensor, got {voiced.dtype}")
    bad = voiced & ~((f0_hz >= MIN_F0_HZ) & (f0_hz <= sample_rate / 2))
    if bool(bad.any()):
        first = int(bad.nonzero()[0, 0])
        raise InvalidOptions(
            f"f0_hz must be between {MIN_F0_HZ:g} Hz and sample_rate / 2 = {sample_rate / 2:g} Hz "
            f"on voiced frames; frame {first} is voiced with f0_hz = {float(f0_hz[first])}"
        )


# --------------------------------------------------------------------------------------------
# Formants


@lru_cache(maxsize=32)
def _gaussian_window(length: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Praat's Gaussian analysis window of ``length`` samples (zero at the ends)."""
    i = torch.arange(1, length + 1, dtype=torch.float64)
    mid = 0.5 * (length + 1)
    edge = math.exp(-12.0)
    w = (torch.exp(-48.0 * (i - mid) ** 2 / (length + 1) ** 2) - edge) / (1.0 - edge)
    return w.to(device=device, dtype=dtype)


@lru_cache(maxsize=32)
def _autocorrelation_basis(
    sample_rate: int,
    n_fft: int,
    max_formant_hz: float,
    order: int,
    device: torch.device,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Matrix turning a one-sided power spectrum into the autocorrelation of the analysis band.

    Shape ``(n_bins, order + 1)``: column ``k`` evaluates, at lag ``k / (2 · max_formant_hz)``
    seconds, the autocorrelation of the frame low-passed at ``max_formant_hz`` and pre-emphasized
    from 50 Hz at the analysis rate ``2 · max_formant_hz`` — what Praat gets by resampling the
    sound before its LPC.
    """
    analysis_rate = 2.0 * max_formant_hz
    n_bins = min(int(math.floor(max_formant_hz * n_fft / sample_rate)) + 1, n_fft // 2 + 1)
    bins = torch.arange(n_bins, dtype=torch.float64)
    freq = bins * sample_rate / n_fft
    one_sided = torch.where((bins == 0) | (bins == n_fft // 2), 1.0, 2.0)
    a = math.exp(-2.0 * math.pi * PRE_EMPHASIS_HZ / analysis_rate)
    pre_emphasis = 1.0 + a * a - 2.0 * a * torch.cos(2.0 * math.pi * freq / analysis_rate)
    lags = torch.arange(order + 1, dtype=torch.float64)
    cosines = torch.cos(2.0 * math.pi * freq[:, None] * lags[None, :] / analysis_rate)
    return ((one_sided * pre_emphasis)[:, None] * cosines).to(device=device, dtype=dtype)


def _levinson(r: torch.Tensor, order: int) -> torch.Tensor:
    """Batched Levinson–Durbin: autocorrelation ``(batch, order + 1)`` → LPC ``(batch, order + 1)``.

    Returns ``a`` with ``a[:, 0] = 1`` and ``A(z) = Σ a_k z^-k`` the prediction-error filter.
    """
    batch = r.shape[0]
    a = torch.zeros(batch, order + 1, dtype=r.dtype, device=r.device)
    a[:, 0] = 1.0
    err = r[:, 0].clone()
    for i in range(1, order + 1):
        acc = r[:, i] + (a[:, 1:i] * r[:, 1:i].flip(-1)).sum(-1)
        k = -acc / err
        previous = a[:, 1:i].clone()
        a[:, 1:i] = previous + k[:, None] * previous.flip(-1)
        a[:, i] = k
        err = err * (1.0 - k * k)
    return a


def _lpc_roots(a: torch.Tensor) -> torch.Tensor:
    """Roots of ``z^p + a_1 z^(p-1) + … + a_p``, shape ``(batch, p)`` complex."""
    batch, p = a.shape[0], a.shape[1] - 1
    companion = torch.zeros(batch, p, p, dtype=a.dtype, device=a.device)
    companion[:, 0, :] = -a[:, 1:]
    if p > 1:
        companion[:, 1:, :-1] = torch.eye(p - 1, dtype=a.dtype, device=a.device)
    return torch.linalg.eigvals(companion)


def formants(
    samples: torch.Tensor,
    *,
    sample_rate: int,
    hop_length: int,
    win_length: int | None = None,
    n_formants: int = 3,
    max_formant_hz: float = 5500.0,
    lpc_order: int | None = None,
    max_bandwidth_hz: float | None = None,
    voiced: torch.Tensor | None = None,
) -> torch.Tensor:
    """Formant frequencies of each frame by linear prediction.

    Each centred frame (frame ``t`` around sample ``t * hop_length``) is weighted with Praat's
    Gaussian window spanning ``2 * win_length`` samples (as in Praat, ``win_length`` is the
    window's effective length), its power spectrum is pre-emphasized from 50 Hz and restricted to
    ``0 … max_formant_hz``, and the autocorrelation of that band at the analysis rate
    ``2 * max_formant_hz`` gives an order-``lpc_order`` LPC model (Levinson–Durbin, batched over
    frames). The formants are the LPC roots with positive frequency between 50 Hz and
    ``max_formant_hz - 50`` Hz, lowest first.

    Args:
        samples: mono signal, shape ``(time,)``, full scale = 1.0.
        sample_rate: Hz; at least ``2 * max_formant_hz``.
        hop_length: samples between frame centres.
        win_length: effective window length, samples. Default 25 ms (Praat's default ``window
            length``); the Gaussian spans twice this.
        n_formants: how many formants to return (F1 … Fn), at most ``lpc_order // 2``. Default 3.
        max_formant_hz: top of the analysis band, Hz. Default 5500 (Praat's default, suited to
            adult female voices; 5000 is usual for male voices).
        lpc_order: LPC order (number of poles). Default 10: Praat's 5 formants below
            ``max_formant_hz``.
        max_bandwidth_hz: when set, roots with a wider bandwidth (Hz) are not counted as
            formants. Default ``None`` (all roots count, as in Praat).
        voiced: optional bool mask, shape ``(frame,)``; only these frames are analysed, the others
            are NaN. Default: every frame.

    Returns:
        Tensor of shape ``(n_formants, frame)`` with ``frame = 1 + time // hop_length``, Hz; NaN
        where a frame is not analysed, silent, or has fewer formants.

    Raises:
        InvalidOptions: a shape or parameter is out of range.
    """
    _check_samples(samples, sample_rate, hop_length)
    order = 10 if lpc_order is None else lpc_order
    win = round(0.025 * sample_rate) if win_length is None else win_length
    if order < 2:
        raise InvalidOptions(f"lpc_order must be ≥ 2, got {order}")
    if not 1 <= n_formants <= order // 2:
        raise InvalidOptions(
            f"n_formants must be between 1 and lpc_order // 2 = {order // 2}, got {n_formants}"
        )
    if not 2 * FORMANT_MARGIN_HZ < max_formant_hz <= sample_rate / 2:
        raise InvalidOptions(
            f"max_formant_hz must be in ({2 * FORMANT_MARGIN_HZ:g}, sample_rate / 2 = "
            f"{sample_rate / 2:g}] Hz, got {max_formant_hz}"
        )
    if not 2 <= win <= sample_rate:
        raise InvalidOptions(f"win_length must be 2 … sample_rate samples (≤ 1 s), got {win}")
    if max_bandwidth_hz is not None and max_bandwidth_hz <= 0:
        raise InvalidOptions(f"max_bandwidth_hz must be positive, got {max_bandwidth_hz}")
    num_frames = 1 + samples.shape[0] // hop_length
    if voiced is not None:
        if voiced.shape != (num_frames,) or voiced.dtype != torch.bool:
            raise InvalidOptions(
                f"voiced must be a bool tensor of shape ({num_frames},), got "
                f"{voiced.dtype} {tuple(voiced.shape)}"
            )

    device, dtype = samples.device, samples.dtype
    out = torch.full((n_formants, num_frames), math.nan, device=device, dtype=dtype)
    span = 2 * win
    framed = frame_signal(samples, FrameSpec(sample_rate, span, span, hop_length, "constant"))
    if voiced is not None:
        selected = voiced.nonzero().squeeze(1)
        framed = framed.index_select(0, selected)
    else:
        selected = torch.arange(num_frames, device=device)
    if selected.numel() == 0:
        return out
    n_fft = span + span % 2
    # The autocorrelation sums a spectrum of large dynamic range and the LPC step is
    # ill-conditioned: both run in float64 (float32 moves F3 by up to 1 %).
    basis = _autocorrelation_basis(sample_rate, n_fft, max_formant_hz, order, device, torch.float64)
    spectrum = torch.fft.rfft(framed * _gaussian_window(span, device, dtype), n=n_fft)
    spectrum = spectrum[:, : basis.shape[0]]
    r = (spectrum.real.square() + spectrum.imag.square()).double() @ basis
    energetic = r[:, 0] > 0
    r[:, 0] = torch.where(energetic, r[:, 0] * (1.0 + 1e-9), 1.0)  # tiny white-noise floor
    roots = _lpc_roots(_levinson(r, order))
    analysis_rate = 2.0 * max_formant_hz
    freq = roots.angle() * (analysis_rate / (2.0 * math.pi))
    bandwidth = -torch.log(roots.abs().clamp_min(1e-30)) * (analysis_rate / math.pi)
    valid = (
        (roots.imag > 0)
        & (freq >= FORMANT_MARGIN_HZ)
        & (freq <= max_formant_hz - FORMANT_MARGIN_HZ)
        & energetic[:, None]
    )
    if max_bandwidth_hz is not None:
        valid &= bandwidth < max_bandwidth_hz
    ordered = torch.where(valid, freq, math.inf).sort(dim=-1).values[:, :n_formants]
    ordered = torch.where(torch.isinf(ordered), math.nan, ordered)
    out[:, selected] = ordered.T.to(dtype)
    return out


# --------------------------------------------------------------------------------------------
# Normalized cross-correlation


def _windows(padded: torch.Tensor, starts: torch.Tensor, length: int) -> torch.Tensor:
    """Rows ``padded[starts[i] : starts[i] + length]``, shape ``(n, length)`` (a copy)."""
    return padded.unfold(0, length, 1).index_select(0, starts)


def _normalized_xcorr(
    a: torch.Tensor, b: torch.Tensor, win: torch.Tensor, max_lag: int
) -> torch.Tensor:
    """Normalized cross-correlation of windows with their continuation.

    Args:
        a: reference windows, shape ``(n, width)``, zero past each row's ``win``.
        b: the signal from the same start, shape ``(n, ≥ width + max_lag)``.
        win: each row's window length, samples, shape ``(n,)``.
        max_lag: largest lag, samples.

    Returns:
        ``r[i, s] = Σ_j a[i, j] b[i, j + s] / sqrt(Σ_j a[i, j]² · Σ_j b[i, j + s]²)`` for lags
        ``s = 0 … max_lag`` (sums over ``j < win[i]``), shape ``(n, max_lag + 1)``.
    """
    n_fft = 1 << (a.shape[1] + max_lag - 1).bit_length()  # no circular wrap up to max_lag
    product = torch.fft.irfft(
        torch.fft.rfft(b, n=n_fft) * torch.fft.rfft(a, n=n_fft).conj(), n=n_fft
    )[:, : max_lag + 1]
    energy = torch.nn.functional.pad(b.square().cumsum(dim=1), (1, 0))
    lags = torch.arange(max_lag + 1, device=b.device)
    shifted = energy.gather(1, lags[None, :] + win[:, None]) - energy[:, : max_lag + 1]
    reference = a.square().sum(dim=1, keepdim=True)
    return product / (reference * shifted.clamp_min(0)).clamp_min(1e-30).sqrt()


def _best_peak(
    r: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Highest local maximum of each row of ``r`` between lags ``lo`` and ``hi`` (inclusive).

    ``1 ≤ lo`` and ``hi ≤ r.shape[1] - 2`` (each candidate needs both neighbours).

    Returns the parabolically refined lag (samples, fractional) and value, each of shape ``(n,)``;
    the value is ``-inf`` where the range holds no local maximum.
    """
    first = int(lo.min())
    last = max(int(hi.max()), first)
    centre = r[:, first : last + 1]
    left = r[:, first - 1 : last]
    right = r[:, first + 1 : last + 2]
    lags = torch.arange(first, last + 1, device=r.device)[None, :]
    peak = (centre > left) & (centre >= right) & (lags >= lo[:, None]) & (lags <= hi[:, None])
    best = torch.where(peak, centre, -math.inf).max(dim=1)
    i, r0 = best.indices[:, None], best.values
    rl = left.gather(1, i).squeeze(1)
    rr = right.gather(1, i).squeeze(1)
    curvature = 2.0 * r0 - rl - rr
    ok = torch.isfinite(r0) & (curvature > 0)
    slope = 0.5 * (rr - rl)
    safe = torch.where(ok, curvature, 1.0)
    lag = (i.squeeze(1) + first).to(r.dtype) + torch.where(ok, slope / safe, 0.0)
    value = torch.where(ok, r0 + 0.5 * slope * slope / safe, r0)
    return lag, value


# --------------------------------------------------------------------------------------------
# Harmonics-to-noise ratio


def _hnr_window(sample_rate: int, f_min: float) -> int:
    """Praat's cross-correlation window: one period at ``f_min``, an even number of samples."""
    return 2 * (int(sample_rate / f_min) // 2 - 1)


def _hnr_frames(
    padded: torch.Tensor,
    pad: int,
    *,
    sample_rate: int,
    hop_length: int,
    f0_hz: torch.Tensor,
    voiced: torch.Tensor,
    f_min: float,
) -> torch.Tensor:
    """Per-frame cross-correlation HNR, shape ``(frame,)``, dB; NaN on unvoiced frames.

    ``padded`` is the signal with ``pad`` zeros on both sides (``pad ≥ 2 · window + 1``).
    """
    device, dtype = padded.device, padded.dtype
    out = torch.full((voiced.shape[0],), math.nan, device=device, dtype=dtype)
    frames = voiced.nonzero().squeeze(1)
    if frames.numel() == 0:
        return out
    win = _hnr_window(sample_rate, f_min)
    max_lag = win
    span = win + max_lag + 1
    # Praat's frame: the window starts half a span before the frame centre.
    segment = _windows(padded, frames * hop_length + pad - (win + max_lag) // 2, span)
    segment = segment - segment.mean(dim=1, keepdim=True)
    width = torch.full((frames.numel(),), win, device=device)
    r = _normalized_xcorr(segment[:, :win], segment, width, max_lag)
    period = sample_rate / f0_hz[frames]
    lo = torch.floor(period * PERIOD_RANGE[0]).long().clamp(min=2)
    hi = torch.ceil(period * PERIOD_RANGE[1]).long().clamp(max=max_lag - 1)
    _, strength = _best_peak(r, lo, hi)
    strength = torch.where(strength > 1.0, 1.0 / strength, strength)  # Praat: reflect around 1
    hnr = 10.0 * (torch.log10(strength) - torch.log10(1.0 - strength))
    hnr = hnr.nan_to_num(nan=HNR_LIMIT_DB, posinf=HNR_LIMIT_DB).clamp(-HNR_LIMIT_DB, HNR_LIMIT_DB)
    out[frames] = torch.where(strength > 0, hnr, math.nan)
    return out


# --------------------------------------------------------------------------------------------
# Glottal pulses, jitter, shimmer


def _f0_at(
    f0_hz: torch.Tensor, voiced: torch.Tensor, positions: torch.Tensor, hop_length: int
) -> torch.Tensor:
    """F0 (Hz) at sample ``positions``, linear between voiced frame centres, shape ``(n,)``."""
    f0 = torch.where(voiced, f0_hz, math.nan)
    u = positions.to(f0.dtype) / hop_length
    i0 = torch.floor(u).long().clamp(0, f0.shape[0] - 1)
    i1 = (i0 + 1).clamp(max=f0.shape[0] - 1)
    w = u - i0.to(f0.dtype)
    a, b = f0[i0], f0[i1]
    mixed = (1 - w) * a + w * b
    return torch.where(torch.isnan(a), b, torch.where(torch.isnan(b), a, mixed))


def _range_max(y: torch.Tensor, first: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """``max(y[first[i] : last[i] + 1])`` for each ``i`` (sparse-table range maximum).

    Ranges must be non-empty and inside ``y``.
    """
    level = torch.floor(torch.log2((last - first + 1).to(torch.float64))).long()
    result = torch.empty(first.shape, dtype=y.dtype, device=y.device)
    table = y  # table[i] = max(y[i : i + 2^k]), valid for i ≤ len(y) - 2^k
    for k in range(int(level.max()) + 1 if level.numel() else 0):
        if k > 0:
            step = 1 << (k - 1)
            table = torch.maximum(table[:-step], table[step:])
        at = (level == k).nonzero().squeeze(1)
        lo, hi = first[at], last[at] - (1 << k) + 1
        result[at] = torch.maximum(table[lo], table[hi])
    return result


def _pulses(
    samples: torch.Tensor,
    *,
    sample_rate: int,
    hop_length: int,
    f0_hz: torch.Tensor,
    voiced: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Glottal pulses: one waveform peak per period in each voiced stretch.

    Returns ``(position, stretch, f0, time)``, each of shape ``(pulse,)``: integer sample
    positions (ascending), the index of the voiced stretch holding each pulse, the F0 there (Hz)
    and the parabolically refined position (samples, fractional).
    """
    device, dtype = samples.device, samples.dtype
    n, num_frames, hop = samples.shape[0], voiced.shape[0], hop_length
    # Frame t owns samples [t·hop − hop//2, t·hop − hop//2 + hop): a (frame, hop) view of the
    # signal shifted by hop//2, so sample i sits at index i + hop//2 of the flattened blocks.
    shift = hop // 2
    blocks = torch.nn.functional.pad(samples, (shift, num_frames * hop - n - shift))
    blocks = blocks.view(num_frames, hop)
    onsets = voiced & ~torch.nn.functional.pad(voiced[:-1], (1, 0), value=False)
    n_stretches = int(onsets.sum())
    stretch = onsets.long().cumsum(0) - 1
    empty = torch.zeros(0, dtype=torch.long, device=device)
    nothing = (empty, empty, empty.to(dtype), empty.to(dtype))
    if n_stretches == 0:
        return nothing
    # Polarity of each stretch: the sign of its largest excursion (Praat starts its pulse chain at
    # the absolute extremum).
    slot = torch.where(voiced, stretch, n_stretches)
    top = torch.zeros(n_stretches + 1, dtype=dtype, device=device)
    top = top.scatter_reduce(0, slot, blocks.amax(dim=1), reduce="amax")
    bottom = torch.zeros(n_stretches + 1, dtype=dtype, device=device)
    bottom = bottom.scatter_reduce(0, slot, -blocks.amin(dim=1), reduce="amax")
    sign = torch.where(top >= bottom, 1.0, -1.0).to(dtype)[slot]
    sign = torch.where(voiced, sign, 0.0)
    y = (blocks * sign[:, None]).view(-1)  # 0 outside voiced stretches
    # Candidates: positive local maxima of the flipped signal.
    inner = y[1:-1]
    candidate = ((inner > y[:-2]) & (inner >= y[2:]) & (inner > 0)).nonzero().squeeze(1) + 1
    position = candidate - shift
    keep = (position >= 0) & (position < n)
    candidate, position = candidate[keep], position[keep]
    if candidate.numel() == 0:
        return nothing
    f0 = _f0_at(f0_hz, voiced, position, hop)
    half = torch.floor(PULSE_HALF_WIDTH * sample_rate / f0).long().clamp(min=1)
    # The largest within ± half a period; of equal values (clipping) the first wins.
    masked = torch.where(sign.repeat_interleave(hop) != 0, y, -math.inf)
    last = masked.shape[0] - 1
    value = y[candidate]
    first = torch.cat([(candidate - half).clamp(min=0), (candidate + 1).clamp(max=last)])
    final = torch.cat([(candidate - 1).clamp(min=0), (candidate + half).clamp(max=last)])
    before, after = _range_max(masked, first, final).chunk(2)
    keep = (value > before) & (value >= after)
    candidate = candidate[keep]
    frame = torch.div(candidate, hop, rounding_mode="floor")
    return position[keep], stretch[frame], f0[keep], _refine(y, candidate) - shift


def _refine(y: torch.Tensor, peak: torch.Tensor) -> torch.Tensor:
    """Parabolic interpolation of local maxima ``y[peak]``: fractional positions, ``(n,)``."""
    left, centre, right = y[peak - 1], y[peak], y[(peak + 1).clamp(max=y.shape[0] - 1)]
    curvature = left - 2.0 * centre + right
    ok = curvature < 0
    offset = 0.5 * (left - right) / torch.where(ok, curvature, -1.0)
    return peak.to(y.dtype) + torch.where(ok, offset.clamp(-0.5, 0.5), 0.0)


def _periods(
    padded: torch.Tensor, pad: int, position: torch.Tensor, f0: torch.Tensor, sample_rate: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Length of the period starting at each pulse, by cross-correlation (Praat's cc step).

    The window of one local period centred on the pulse is compared with the signal shifted by
    0.8 … 1.25 local periods; the best local maximum, parabolically refined, is the period.

    ``padded`` is the signal with ``pad`` zeros on both sides (``pad > 2.25`` longest periods).

    Returns ``(period, correlation)``, each ``(pulse,)``: samples (fractional) and the normalized
    correlation (``-inf`` when the range holds no maximum).
    """
    device = padded.device
    local = sample_rate / f0
    half = torch.round(local / 2).long()
    win = 2 * half + 1
    lo = torch.floor(PERIOD_RANGE[0] * local).long()
    hi = torch.ceil(PERIOD_RANGE[1] * local).long()
    period = torch.empty_like(local)
    correlation = torch.empty_like(local)
    # Group pulses by FFT size so short periods are not padded to the longest one.
    size = (win + hi + 1).to(torch.float64).log2().ceil().long()
    for bits in size.unique().tolist():
        group = (size == bits).nonzero().squeeze(1)
        width = int(win[group].max())
        max_lag = int(hi[group].max()) + 1
        b = _windows(padded, position[group] - half[group] + pad, width + max_lag + 1)
        inside = torch.arange(width, device=device)[None, :] < win[group, None]
        a = torch.where(inside, b[:, :width], 0.0)
        r = _normalized_xcorr(a, b, win[group], max_lag)
        period[group], correlation[group] = _best_peak(r, lo[group], hi[group])
    return period, correlation


def _windowed_rms(
    padded: torch.Tensor, pad: int, t: torch.Tensor, left: torch.Tensor, right: torch.Tensor
) -> torch.Tensor:
    """Praat's Hann-windowed RMS around times ``t`` with half-widths ``left``/``right`` (samples).

    ``padded`` is the signal with ``pad`` zeros on both sides. ``t``, ``left`` and ``right`` have
    shape ``(n,)``; returns ``(n,)``.
    """
    first = torch.ceil(t - left).long()
    last = torch.floor(t + right).long()
    length = int((last - first).max()) + 1
    values = _windows(padded, first + pad, length)
    pos = first[:, None].to(t.dtype) + torch.arange(length, device=t.device, dtype=t.dtype)
    width = torch.where(pos < t[:, None], left[:, None], right[:, None])
    window = 0.5 + 0.5 * torch.cos(math.pi * (pos - t[:, None]) / width)
    window = torch.where(pos <= last[:, None].to(t.dtype), window, 0.0)
    energy = (values * window).square().sum(dim=1)
    return (energy / window.square().sum(dim=1).clamp_min(1e-30)).sqrt()


def _jitter_shimmer(
    padded: torch.Tensor,
    pad: int,
    position: torch.Tensor,
    stretch: torch.Tensor,
    f0: torch.Tensor,
    time: torch.Tensor,
    sample_rate: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Praat's local jitter and local shimmer (fractions, 0-dim, NaN when undefined).

    Takes the pulses of :func:`_pulses`; ``time`` is their refined position (samples).
    """
    dtype = padded.dtype
    nan = torch.tensor(math.nan, device=padded.device, dtype=dtype)
    if position.numel() < 3:
        return nan, nan
    period, correlation = _periods(padded, pad, position, f0, sample_rate)
    # Period k runs from pulse k to pulse k + 1; it counts when pulse k + 1 is where the
    # correlation puts it, in the same voiced stretch.
    gap = (position[1:] - position[:-1]).to(dtype)
    length = period[:-1]
    seconds = length / sample_rate
    counts = (
        (stretch[1:] == stretch[:-1])
        & (correlation[:-1] > MIN_PULSE_CORRELATION)
        & ((gap - length).abs() <= PULSE_TOLERANCE * length)
        & (seconds >= SHORTEST_PERIOD_S)
        & (seconds <= LONGEST_PERIOD_S)
    )
    p1, p2 = seconds[:-1], seconds[1:]
    pair = counts[:-1] & counts[1:] & (torch.maximum(p1, p2) <= MAX_PERIOD_FACTOR * p1.minimum(p2))
    n_pairs = pair.sum()
    mean_period = torch.where(counts, seconds, 0.0).sum() / counts.sum().clamp_min(1)
    jitter = torch.where(pair, (p1 - p2).abs(), 0.0).sum() / n_pairs.clamp_min(1) / mean_period
    jitter = torch.where(n_pairs > 0, jitter, nan)
    # Shimmer: the amplitude of each pulse between two counted periods (pulse k + 1 of pair k).
    inner = pair.nonzero().squeeze(1)
    if inner.numel() < 2:
        return jitter, nan
    t = time[inner + 1]
    amplitude = _windowed_rms(padded, pad, t, 0.2 * length[inner], 0.2 * length[inner + 1])
    a1, a2 = amplitude[:-1], amplitude[1:]
    spacing = (t[1:] - t[:-1]) / sample_rate
    use = (
        (spacing >= SHORTEST_PERIOD_S)
        & (spacing <= LONGEST_PERIOD_S)
        & (a1 > 0)
        & (torch.maximum(a1, a2) <= MAX_AMPLITUDE_FACTOR * a1.minimum(a2))
    )
    n_used = use.sum()
    numerator = torch.where(use, (a1 - a2).abs(), 0.0).sum() / n_used.clamp_min(1)
    shimmer = torch.where(n_used > 0, numerator / a1.mean(), nan)
    return jitter, shimmer


def voice_quality(
    samples: torch.Tensor,
    *,
    sample_rate: int,
    f0_hz: torch.Tensor,
    voiced: torch.Tensor,
    hop_length: int,
    f_min: float = 65.0,
) -> VoiceQuality:
    """Jitter, shimmer and harmonics-to-noise ratio from a signal and its F0 track.

    Glottal pulses: in each voiced stretch (a run of voiced frames, each frame owning the
    ``hop_length`` samples around its centre) the waveform is flipped to the polarity of its largest
    excursion, and every local maximum that is the largest within ±0.6 local periods (from
    ``f0_hz``) is a pulse. The period starting at each pulse is the lag, 0.8 … 1.25 local periods,
    that best aligns the one-period window around the pulse with the signal after it (normalized
    cross-correlation, parabolic refinement) — the step of Praat's
    ``To PointProcess (periodic, cc)``. A period counts when the correlation exceeds 0.3 and the
    next pulse lies within half a period of where the lag puts it.

    * ``jitter_local`` — Praat's ``Get jitter (local)`` with its defaults: mean ``|T_i − T_i+1|``
      over consecutive counted periods within 0.1 … 20 ms and within a factor 1.3 of each other,
      divided by the mean counted period.
    * ``shimmer_local`` — Praat's ``Get shimmer (local)`` with its defaults: each pulse's amplitude
      is the RMS of the signal under a Hann window from 0.2 periods before to 0.2 periods after it;
      mean absolute difference of consecutive amplitudes (within a factor 1.6), divided by the mean
      amplitude.
    * ``hnr_frames_db`` — Praat's cross-correlation harmonicity (``To Harmonicity (cc)``, one
      period per window): in each voiced frame, the normalized cross-correlation ``r`` of a window
      of one period at ``f_min`` (mean removed) with its continuation, maximized over lags of
      0.8 … 1.25 periods of the frame's F0, gives ``10 · log10(r / (1 − r))`` (clamped to ±150 dB;
      NaN when ``r ≤ 0``).

    Args:
        samples: mono signal, shape ``(time,)``, full scale = 1.0.
        sample_rate: Hz.
        f0_hz: F0 of each frame, shape ``(frame,)`` with ``frame = 1 + time // hop_length``, Hz;
            frame ``t`` is centred on sample ``t * hop_length``. Between 10 Hz and
            ``sample_rate / 2`` where ``voiced``; ignored elsewhere (NaN or 0 are fine there).
        voiced: bool, shape ``(frame,)``.
        hop_length: samples between frame centres of the F0 track.
        f_min: lowest F0 of interest, Hz (Praat's "minimum pitch"): the HNR window is one period
            at ``f_min``. Default 65.

    Returns:
        A :class:`VoiceQuality` (tensors on the device and in the dtype of ``samples``).

    Raises:
        InvalidOptions: a shape or parameter is out of range, or a voiced frame has no valid F0.
    """
    _check_samples(samples, sample_rate, hop_length)
    num_frames = 1 + samples.shape[0] // hop_length
    _check_track(f0_hz, voiced, num_frames, samples.shape[0], hop_length, sample_rate)
    if not 0 < f_min < sample_rate / 8:
        raise InvalidOptions(f"f_min must be in (0, sample_rate / 8) Hz, got {f_min}")
    f0_hz = f0_hz.to(samples.dtype)
    # One zero-padded copy serves every analysis: ≥ 2 HNR windows and > 2.25 longest periods.
    lowest = float(torch.where(voiced, f0_hz, math.inf).min()) if bool(voiced.any()) else f_min
    pad = 3 * int(sample_rate / min(f_min, lowest)) + 4
    padded = torch.nn.functional.pad(samples, (pad, pad))
    hnr_frames = _hnr_frames(
        padded,
        pad,
        sample_rate=sample_rate,
        hop_length=hop_length,
        f0_hz=f0_hz,
        voiced=voiced,
        f_min=f_min,
    )
    defined = ~torch.isnan(hnr_frames)
    hnr_db = torch.nan_to_num(hnr_frames).sum() / defined.sum()  # NaN when no frame is defined
    position, stretch, f0, time = _pulses(
        samples, sample_rate=sample_rate, hop_length=hop_length, f0_hz=f0_hz, voiced=voiced
    )
    jitter, shimmer = _jitter_shimmer(padded, pad, position, stretch, f0, time, sample_rate)
    return VoiceQuality(
        jitter_local=jitter,
        shimmer_local=shimmer,
        hnr_db=hnr_db,
        hnr_frames_db=hnr_frames,
        pulses=time,
    )
