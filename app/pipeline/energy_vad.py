"""The ``energy`` voice activity backend: our signal-based speech probability per frame.

:func:`energy_speech_probability` places the speech-band (200–3600 Hz) energy of each frame
between an adaptive noise floor (minimum tracking of 100 ms block medians) and the local speech
level, and combines it with periodicity (the normalized autocorrelation peak in 65–400 Hz,
:func:`periodicity`) and spectral flatness (300–3000 Hz) into a frame probability; a hangover
whose length grows as the local signal-to-noise ratio falls bridges the weak ends of words that
noise masks. :class:`EnergyVadTuning` holds its constants and those of the pause-edge stages
that follow it (:mod:`app.pipeline.pause_edges`), with what each was measured to do.

The cues are computed a block of frames at a time from the input samples each block needs
(:func:`_analysis_blocks`), so memory beyond the signal is bounded plus a few numbers per frame.
:func:`~app.pipeline.segment.vad` runs the backend and its post-processing.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F

from app.pipeline.normalize import resample, resample_stretch, zero_outside

#: Floor under powers before the logarithm (−100 dB).
_POWER_FLOOR = 1e-10


@dataclass(frozen=True)
class EnergyVadTuning:
    """Constants of the ``energy`` backend (measured choices, see docs/quality.md): the
    detector's (:func:`energy_speech_probability`) and its pause-edge stages' (``edge_*``,
    ``detached_*``, ``blip_*``, ``lr_*``: :mod:`app.pipeline.pause_edges`).

    Attributes:
        band_hz: the speech band whose energy is tracked, Hz (the analysis runs at 8 kHz, so
            the band ends at 3.6 kHz at most).
        flatness_band_hz: the band of the spectral-flatness cue, Hz.
        window_s: analysis window, seconds (Hann; the FFT size is the next power of two).
        smooth_s: moving average of the band energy, seconds.
        block_s: block length of the noise-floor tracker, seconds (the floor is the minimum
            of block medians, so brief dropouts do not drag it down).
        floor_window_s: span of the minimum search, seconds (centred).
        noise_margin_db: frames within this many dB of the floor make up the noise estimate.
        noise_window_s: span of the noise average, seconds (centred).
        level_window_s: span of the speech-level (block maximum) search, seconds (centred).
        min_range_db: smallest speech-to-noise range the energy position is scaled by, dB
            (keeps noise-only stretches from reaching the top of their own small range).
        position_centre: energy position (0 = noise floor, 1 = speech level) at probability ½
            without the other cues.
        position_gain: logistic slope per unit of energy position.
        periodicity_weight: log-odds added per unit of periodicity above ½.
        flatness_weight: log-odds per neper of spectral flatness (the log of the geometric over
            the arithmetic mean of the band's power spectrum, ≤ 0: about −0.6 for white noise,
            −1 to −5 for voiced speech and tonal hum). The positive weight lowers the
            probability of strongly coloured frames whose energy is modest — low-level hum
            and the weak ends of words — which sharpens boundaries; loud speech passes on its
            energy. (Measured on count.wav: frame F1 0.85 without this cue, 0.94 with it.)
        flatness_floor: flatness is clamped at ``−flatness_floor`` nepers, so a pure tone
            (whose flatness is unbounded below) is not rejected on this cue alone.
        hangover_ref_db: no hangover above this speech-to-noise range, dB.
        hangover_ms_per_db: hangover added per dB of range below ``hangover_ref_db``, ms.
        hangover_max_ms: longest hangover, ms.
        preroll_ratio: the hangover before an onset, as a fraction of the one after an offset.
        edge_min_pause_s: the edges of gaps at least this long are refined (see
            ``refine_pause_edges``), seconds.
        edge_bands_hz: the bands whose energies the refinement compares with the pause's, Hz
            (bands above the Nyquist frequency are dropped, the last one is clipped to it).
            The lowest, 60–150 Hz, holds the voice bar of voiced stops (the vocal folds
            vibrating before the release, at a low voice's F0) and the onsets of low voices,
            which the bands above it miss by 40–60 ms (measured: pause-boundary F1 over 8 draws
            of ``scripts/eval_segmentation.py`` clean 0.850 → 0.880, 20 dB 0.835 → 0.860,
            10 dB 0.692 → 0.717, 5 dB 0.571 → 0.595; count.wav unchanged).
        edge_window_s: analysis window of the refinement, seconds (Hann).
        edge_hop_s: the refinement's time step, seconds.
        edge_search_s: how far into the speech an edge may move, seconds (covers the
            hangover).
        edge_reach_s: how far into the pause an edge may move, seconds (at most half the
            pause).
        edge_guard_s: the noise estimate starts this far inside the pause, seconds.
        edge_noise_s: the noise estimate covers at most this much of the pause next to the
            edge (and at most its half), seconds.
        edge_noise_hop_s: step of the frames of the noise estimate, seconds.
        edge_spread: a band is active above its pause median by this many robust standard
            deviations of the pause's energies (from the 90th percentile) ...
        edge_margin_db: ... and at least by this many dB.
        edge_run: active frames in a row that make the speech side of an edge.
        edge_quiet_range_db: next to a pause this far below the speech (total level of the
            bands: the loudest frame of the speech side against the pause's median), isolated
            transients are not speech (see ``refine_pause_edges``), dB.
        detached_lookback_s: how far into the speech ``trim_detached_weak_sounds`` looks
            from an edge, seconds (the breaths the detector took for speech in the evaluation
            last up to about 0.25 s, an inhalation often longer; measured over 8 draws: 0.3
            and 0.4 s alike, 0.25 s clean 0.958 → 0.940).
        detached_range_db: the trimming applies next to quiet pauses: the loudest frame of the
            look-back this far over the pause's median (total levels), dB; under noise a weak
            sound is masked, and what the level tests hear there is speech (measured over 8
            draws, clean / 20 dB: 25 dB 0.940 / 0.891, 20 dB 0.958 / 0.910, 17 dB 0.958 /
            0.914 with white and pink 0.002 lower).
        detached_level_db: a stretch holds speech when its total level stays this far over the
            pause's median ...
        detached_min_s: ... for at least this long (frames of that level in a row), seconds
            (the evaluation's labels count runs ≥ 30 ms; measured 20–30 ms the same, except a
            final release of 25 ms 11 dB over the floor that 20 ms at a 5 ms step keeps) ...
        detached_gap_s: ... and sounds after at least this long without activity that never do
            are detached from it, seconds (measured pause-boundary F1 over 8 draws of
            ``scripts/eval_segmentation.py``, clean / 20 dB: 0.886 / 0.883 without the
            trimming, 0.958 / 0.910 with it; 15–50 ms alike, 80 ms no effect).
        blip_max_s: a segment shorter than this inside a pause is checked against the
            pause's noise (see ``drop_background_blips``), seconds.
        blip_active: ... and kept when at least this fraction of its frames is active.
        lr_hop_s: step of the likelihood-ratio edge placement (``place_edges_by_likelihood``),
            seconds; its Hann frames are two steps long (16 ms).
        lr_bands_hz: edges of its nine bands, Hz (bins from the first to the last edge, below
            Nyquist): narrow bands low, where voicing is, wider ones up to the fricatives; the
            maximum over bands finds the speech in whichever band its noise leaves free.
            Measured (pause-boundary F1, held-out draws 1–7, 10 / 5 dB): 0.815 / 0.696; one
            100–8000 Hz band 0.704 / 0.554.
        lr_alpha: weight of the previous frame's estimate in the decision-directed a-priori SNR.
        lr_xi_min_db: floor of the a-priori SNR, dB.
        lr_warmup_s: frames the recursion runs from zero before each tile, seconds: it forgets
            its state within a few frames (the 8 draws score the same from 0.024 s on; at 0.04
            s every row equals the recursion over whole windows).
        lr_band_quantile: a band's evidence is its mean log likelihood ratio divided by this
            quantile of it over the pause frames (the same false-alarm rate in every band).
        lr_pool_s: the noise and the quantiles are pooled over the pauses whose centres lie
            within this many seconds (a pause alone has few frames; measured without pooling:
            0.799 / 0.680).
        lr_gate_db: pauses whose speech sides stand this far over their median frame (total
            power of rectangular 16 ms frames) are quiet, dB: they keep their edges (in
            clean speech the reference edges are a level over the floor, which the statistical
            test overshoots; measured without the gate: clean pause-boundary F1 0.930 → 0.791
            on draw 0, count.wav frame F1 0.933 → 0.917).
        lr_search_s: how far into the speech an edge may move, seconds (as ``edge_search_s``).
        lr_reach_s: how far into the pause it may move, seconds (at most half the pause): more
            than ``edge_reach_s``, since the level tests stop early at weak word ends.
        lr_eta: what a frame's evidence must exceed on average to count as speech (the change
            point maximizes the running sum of ``evidence − lr_eta``); measured 1.5: 0.778 /
            0.714, 2: 0.815 / 0.696, 2.5: 0.792 / 0.675. With nine bands, noise frames right
            after a loud, abrupt offset (while the a-priori SNR decays) exceed it at times, so
            such an offset can come 30–70 ms late (seen on synthetic bursts; the evaluation's
            offsets gain on the whole).
        lr_clip: the evidence is clipped to ``[0, lr_clip]``, so one loud frame does not carry
            the sum across a stretch of noise.
        lr_fill_span_s: gaps this close to a pause on its speech side are checked, seconds ...
        lr_fill_max_s: ... when shorter than this, seconds (gaps from ``edge_min_pause_s`` up
            are pauses too, filled only on this evidence; 0.15 left a 161 ms gap inside a word
            at 5 dB; 0.2 over 24 draws: 5 / 10 / 20 dB +0.001 / +0.002 / +0.003, clean and
            frame F1 unchanged) ...
        lr_fill_eta: ... and filled when their mean evidence reaches this (measured without
            filling: 0.786 / 0.659).
        lr_bursty_spread_db: the pauses hold bursty noise (babble) when the median over them
            of their frames' spread (90th percentile over median, dB, of the signal's first
            difference in rectangular 16 ms frames) reaches this and the median speech range
            is under ``lr_gate_db`` (measured medians per recording: white 0.4–0.7, pink
            0.5–0.6, babble 2.5–5.3 dB; clean speech 2.5–5.3 dB over a 32–43 dB range).
        lr_bursty_search_s: under bursty noise, ``lr_search_s`` becomes this, seconds: the
            detector joins babble bursts to the speech 0.3–0.9 s into the pause, and the
            change point must reach back past them ...
        lr_bursty_eta: ... and ``lr_eta`` this, so that babble-level evidence does not hold
            the edge out (measured, pause-boundary F1 over 8 draws, babble at 10 / 5 dB:
            0.632 / 0.476 → 0.690 / 0.547; on held-out draws 1–7, as first prototyped,
            0.633 / 0.450 → 0.660 / 0.530; white and pink unchanged, the mode never on).
        lr_onset_extend_s: under stationary noise (the recording's pauses not bursty), step 5
            of ``place_edges_by_likelihood`` extends a moved onset up to this far into the
            pause, over the weak broadband sound a word often starts with (at −6 to −12 dB
            band SNR, under the change point's ``lr_eta``), seconds: per frame, the band
            scores (evidence over its quantile) clipped to ``lr_onset_clip`` and summed over
            the bands, less that sum's median over the pause's frames and less a bias; the
            onset moves to the maximum of the running sum from the change point into the
            pause when it exceeds ``lr_onset_threshold``.
        lr_onset_clip: ... the band scores' clip ...
        lr_onset_bias: ... the bias is this times ``10^((ρ − lr_onset_bias_range_db) / 10)``,
            ``ρ`` the recording's median speech range over its pauses, dB (the pause labels
            of the evaluation, like annotators, follow a level relative to the clean speech:
            the louder the speech over the noise, the louder a sound must be to count: 0.85
            per frame at ρ = 12.5 dB, 8.5 at 22.5 dB) ...
        lr_onset_bias_range_db: ... (dB) ...
        lr_onset_threshold: ... and the running sum must exceed this.
        lr_offset_shift_range_db: under stationary noise, a moved offset is put later by
            ``lr_offset_shift_s_per_db`` seconds per dB that ``ρ`` is under this: the change
            point falls where the decaying tail of the word sinks under the noise, earlier
            the louder the noise, while the labels follow the clean tail (3 ms per dB is a
            tail decaying by about 0.33 dB per ms; at 5 dB SNR, ρ ≈ 12.5 dB, the shift is
            15 ms; abrupt synthetic ends come that much late) ...
        lr_offset_shift_s_per_db: ... seconds per dB. Measured (pause-boundary F1, 8 draws,
            white / pink at 5 dB; in brackets unseen draws 8–15): 0.850 / 0.875 (0.871 /
            0.826) before, 0.904 / 0.935 (0.889 / 0.867) with the onset extension, 0.922 /
            0.935 (0.895 / 0.897) with the offset shift too; 10 and 20 dB, babble, clean
            unchanged; white / pink at 7 dB 0.866 / 0.876 → 0.901 / 0.899 and 0 dB 0.625 /
            0.569 → 0.653 / 0.685.
        fg_pause_margin_s: under bursty noise (babble) a classifier of the foreground talker
            against the babble is trained on the recording (:mod:`app.pipeline.foreground`):
            its babble frames lie at least this far inside the pauses, seconds ...
        fg_speech_margin_s: ... its foreground frames at least this far inside the segments
            (the louder half of them), seconds ...
        fg_train_frames: ... at most this many frames of each class ...
        fg_l2: ... and the L2 penalty of its logistic regression (on standardized features).
        fg_clip: the likelihood-ratio stage adds the classifier's log-odds, clipped to
            ``± fg_clip``, to every frame's ``evidence − lr_eta`` before the change point
            (so a burst of babble no longer carries an edge into the pause, nor does the
            foreground's weak speech end it early) ...
        fg_drop_max_s: ... and afterwards drops a segment shorter than this (seconds) between
            two others ...
        fg_drop_odds: ... whose mean log-odds is under this (a burst of babble) ...
        fg_fill_max_s: ... and fills a gap shorter than this (seconds) ...
        fg_fill_odds: ... whose mean log-odds reaches this (inside a word). Measured
            (pause-boundary F1, babble; prototyped by a research helper): 8 draws at 10 / 5 dB
            0.690 / 0.547 → 0.746 / 0.580; unseen draws 8–15 0.635 / 0.444 → 0.659 / 0.506,
            16–23 0.622 / 0.432 → 0.669 / 0.489, 24–31 (looked at once, at the end) 0.638 /
            0.463 → 0.680 / 0.466; at 15 and 7 dB (never tuned on) 0.759 → 0.806 and 0.488
            → 0.570; babble frame F1 at 10 / 5 dB 0.935 / 0.836 → 0.952 / 0.858. The log-odds
            alone and the dropping and filling alone each give about half; the classifier's
            own change point (edges placed by it alone) is worse: word tails score as babble.
            White and pink noise, clean speech and count.wav unchanged (never bursty). Cost
            ≈ 5 ms per 60 s of babble.
    """

    band_hz: tuple[float, float] = (200.0, 4000.0)
    flatness_band_hz: tuple[float, float] = (300.0, 3000.0)
    window_s: float = 0.025
    smooth_s: float = 0.03
    block_s: float = 0.1
    floor_window_s: float = 1.5
    noise_margin_db: float = 6.0
    noise_window_s: float = 1.5
    level_window_s: float = 3.0
    min_range_db: float = 15.0
    position_centre: float = 0.2
    position_gain: float = 12.0
    periodicity_weight: float = 4.0
    flatness_weight: float = 1.0
    flatness_floor: float = 4.0
    hangover_ref_db: float = 35.0
    hangover_ms_per_db: float = 5.0
    hangover_max_ms: float = 300.0
    preroll_ratio: float = 0.5
    edge_min_pause_s: float = 0.15
    edge_bands_hz: tuple[tuple[float, float], ...] = (
        (60.0, 150.0),
        (150.0, 600.0),
        (600.0, 1500.0),
        (1500.0, 3500.0),
        (3500.0, 8000.0),
    )
    edge_window_s: float = 0.016
    edge_hop_s: float = 0.0025
    edge_search_s: float = 0.15
    edge_reach_s: float = 0.05
    edge_guard_s: float = 0.02
    edge_noise_s: float = 0.3
    edge_noise_hop_s: float = 0.0025
    edge_spread: float = 3.0
    edge_margin_db: float = 1.0
    edge_run: int = 3
    edge_quiet_range_db: float = 35.0
    detached_lookback_s: float = 0.4
    detached_range_db: float = 20.0
    detached_level_db: float = 10.0
    detached_min_s: float = 0.03
    detached_gap_s: float = 0.03
    blip_max_s: float = 0.5
    blip_active: float = 0.5
    lr_hop_s: float = 0.008
    lr_bands_hz: tuple[float, ...] = (
        100.0,
        300.0,
        600.0,
        1000.0,
        1500.0,
        2200.0,
        3000.0,
        4000.0,
        5500.0,
        8000.0,
    )
    lr_alpha: float = 0.95
    lr_xi_min_db: float = -25.0
    lr_warmup_s: float = 0.04
    lr_band_quantile: float = 0.95
    lr_pool_s: float = 3.0
    lr_gate_db: float = 25.0
    lr_search_s: float = 0.15
    lr_reach_s: float = 0.25
    lr_eta: float = 2.0
    lr_clip: float = 5.0
    lr_fill_span_s: float = 0.6
    lr_fill_max_s: float = 0.2
    lr_fill_eta: float = 1.5
    lr_bursty_spread_db: float = 1.5
    lr_bursty_search_s: float = 0.8
    lr_bursty_eta: float = 2.3
    lr_onset_extend_s: float = 0.15
    lr_onset_clip: float = 3.0
    lr_onset_bias: float = 0.85
    lr_onset_bias_range_db: float = 12.5
    lr_onset_threshold: float = 1.0
    lr_offset_shift_range_db: float = 17.5
    lr_offset_shift_s_per_db: float = 0.003
    fg_pause_margin_s: float = 0.1
    fg_speech_margin_s: float = 0.3
    fg_train_frames: int = 600
    fg_l2: float = 30.0
    fg_clip: float = 1.5
    fg_drop_max_s: float = 0.5
    fg_drop_odds: float = -2.0
    fg_fill_max_s: float = 0.15
    fg_fill_odds: float = -2.0


ENERGY_TUNING = EnergyVadTuning()

#: Frames analysed per block (bounds the memory of the spectra on long signals; blocks of
#: 1024 keep each temporary ≤ 1 MB, which malloc reuses: with 2048 the larger ones were
#: mapped and unmapped every block, ≈ 4000 page faults, 6 ms, per 60 s call).
_CHUNK_FRAMES = 1024
#: The cues are measured on the signal resampled to 8 kHz (band energy, flatness: 25 ms frames,
#: 256-point FFT) and 4 kHz (periodicity: 32 ms frames, autocorrelation by a 192-point FFT of
#: 128 samples: exact up to lag 64, beyond the longest period searched, 1/65 Hz = 62 lags).
_ANALYSIS_RATE = 8000
_ANALYSIS_FFT = 256
_PERIODICITY_RATE = 4000
_PERIODICITY_WIN = 128
_PERIODICITY_FFT = 192


@lru_cache(maxsize=32)
def _band_weights(
    sample_rate: int,
    n_fft: int,
    win_length: int,
    bands: tuple[tuple[float, float], ...],
    device: torch.device,
) -> torch.Tensor:
    """Rows of 0/1 bin selectors, one per band, shape ``(band, n_fft // 2 + 1)``, scaled so that
    ``weights @ power`` is the band's mean square (full scale = 1.0; Parseval for a one-sided
    spectrum of a Hann-windowed frame)."""
    freqs = torch.arange(n_fft // 2 + 1, dtype=torch.float64) * sample_rate / n_fft
    window_energy = torch.hann_window(win_length, periodic=True, dtype=torch.float64).square()
    scale = 2.0 / (n_fft * float(window_energy.sum()))
    rows = [((freqs >= lo) & (freqs < hi)).double() * scale for lo, hi in bands]
    return torch.stack(rows).float().to(device)


def _flatness_bins(sample_rate: int, n_fft: int, band: tuple[float, float]) -> slice:
    lo = max(1, int(math.ceil(band[0] * n_fft / sample_rate)))
    hi = max(lo + 1, int(math.floor(band[1] * n_fft / sample_rate)))
    return slice(lo, min(hi, n_fft // 2))


@lru_cache(maxsize=16)
def _hann(length: int, device: torch.device) -> torch.Tensor:
    return torch.hann_window(length, periodic=True, device=device)


@lru_cache(maxsize=8)
def _window_autocorrelation(device: torch.device) -> torch.Tensor:
    """Normalized autocorrelation of the periodicity window, lags ``0 … win − 1``."""
    window = torch.hann_window(_PERIODICITY_WIN, periodic=True, dtype=torch.float64)
    spectrum = torch.fft.rfft(window, n=2 * _PERIODICITY_WIN).abs().square()
    ac = torch.fft.irfft(spectrum, n=2 * _PERIODICITY_WIN)[:_PERIODICITY_WIN]
    return (ac / ac[0]).clamp_min(1e-3).float().to(device)


@lru_cache(maxsize=8)
def _decimator(factor: int) -> tuple[float, ...]:
    """Low-pass FIR for decimation by ``factor`` (Kaiser-windowed sinc, cut-off at 90 % of the
    new Nyquist frequency, 8 taps per output sample), the taps rounded to float32."""
    half = 4 * factor
    n = torch.arange(-half, half + 1, dtype=torch.float64)
    cutoff = 0.9 / factor
    taps = (
        cutoff
        * torch.sinc(cutoff * n)
        * torch.kaiser_window(2 * half + 1, periodic=False, beta=8.0, dtype=torch.float64)
    )
    return tuple((taps / taps.sum()).float().tolist())


def _to_rate(x: torch.Tensor, sample_rate: int, rate: int) -> torch.Tensor:
    """``x`` low-passed and resampled to ``rate`` Hz (a strided FIR when ``sample_rate`` is a
    multiple of ``rate``, the band-limited resampler otherwise)."""
    if sample_rate == rate:
        return x
    if x.shape[-1] == 0:
        return x
    if sample_rate % rate:
        return resample(x, sample_rate, rate)
    return _decimate(x, sample_rate // rate, 0, x.shape[-1])


def _decimate(x: torch.Tensor, factor: int, lo: int, hi: int) -> torch.Tensor:
    """:func:`_to_rate` by an integer ``factor`` of the stretch ``x[lo:hi]`` (``x``: 1-D; zero
    beyond it; ``lo`` may be negative, ``hi`` past the end): the strided FIR
    (:func:`_decimator`) as one multiply-add per tap, in the taps' order, over the polyphase
    components of the zero-padded stretch (rows copied straight from ``x``). The values are
    those of ``F.conv1d(stretch, taps, stride=factor, padding=taps // 2)`` (up to the rounding
    of its kernels: identical on long stretches, measured) without the convolution's scratch
    memory, 2–4 times faster on one CPU thread."""
    weights = _decimator(factor)
    half = len(weights) // 2  # = 4 · factor
    count = -(-(hi - lo) // factor)  # the convolution's output length
    span = count + 2 * half // factor  # samples per phase
    phases = x.new_zeros(factor, span)  # phases[r, i] = padded stretch[r + factor · i]
    a, b = max(lo, 0), min(hi, x.shape[-1])  # the samples of x in the stretch
    for r in range(factor):
        origin = lo - half + r  # the sample of x at phases[r, 0]
        first, stop = max(0, -(-(a - origin) // factor)), -(-(b - origin) // factor)
        if stop > first:
            start = origin + factor * first
            phases[r, first:stop] = x[start : start + factor * (stop - first - 1) + 1 : factor]
    out = phases[0, :count] * weights[0]
    for k in range(1, len(weights)):
        out.add_(phases[k % factor, k // factor : k // factor + count], alpha=weights[k])
    return out


def centred_frames(
    y: torch.Tensor, *, step: float, first: int, count: int, win: int, origin: int = 0
) -> torch.Tensor:
    """Frames ``first … first + count − 1`` of ``win`` samples centred on samples
    ``round(t · step) − origin`` of ``y`` (``y`` is a stretch of a signal starting at its sample
    ``origin``; zero beyond the stretch), shape ``(count, win)``."""
    half = win // 2
    n = y.shape[-1]
    if n == 0:
        return y.new_zeros(count, win)
    if step == int(step):
        lo = first * int(step) - half - origin
        hi = lo + (count - 1) * int(step) + win
        block = y[min(max(lo, 0), n) : min(max(hi, 0), n)]
        block = F.pad(block, (max(0, -lo), max(0, hi - max(lo, 0) - block.shape[-1])))
        return block.unfold(0, win, int(step))
    centre = torch.round(
        torch.arange(first, first + count, device=y.device, dtype=torch.float64) * step
    ).long()
    index = centre[:, None] - half - origin + torch.arange(win, device=y.device)[None, :]
    inside = (index >= 0) & (index < y.shape[-1])
    return torch.where(inside, y[index.clamp(0, max(y.shape[-1] - 1, 0))], 0.0)


def _analysis_blocks(
    x: torch.Tensor, *, sample_rate: int, hop_length: int
) -> Iterator[tuple[int, int, torch.Tensor, int, torch.Tensor, int]]:
    """The signal at 8 and 4 kHz, a block of :data:`_CHUNK_FRAMES` frames at a time.

    Yields ``(first, count, y8, origin8, y4, origin4)``: frames ``first … first + count − 1``
    and the stretches of the 8 kHz and 4 kHz signals (:func:`_to_rate`) that their analysis
    windows need, starting at samples ``origin8`` and ``origin4`` of those signals. Each
    stretch is made from the input samples of its block plus a margin (the filters' and
    windows' reach), with the whole-signal resampling's zero padding at the ends, so the values
    equal the whole-signal ones and memory beyond the signal does not grow with its length:
    decimated when ``sample_rate`` is a multiple of 4 kHz, else resampled to 8 kHz by
    :func:`resample_stretch` and decimated to 4 kHz.
    """
    n = x.shape[-1]
    n_frames = 1 + n // hop_length
    margin8 = 2 * _ANALYSIS_FFT  # 8 kHz samples: ≥ window + filter reach at both rates
    if sample_rate % _PERIODICITY_RATE:
        length8 = -(-n * _ANALYSIS_RATE // sample_rate)
        step8 = hop_length * _ANALYSIS_RATE / sample_rate
        for first in range(0, n_frames, _CHUNK_FRAMES):
            count = min(_CHUNK_FRAMES, n_frames - first)
            lo8 = (math.floor(first * step8) - margin8) // 2 * 2  # even: on the 4 kHz grid
            hi8 = math.ceil((first + count - 1) * step8) + margin8
            y8 = resample_stretch(x, sample_rate=sample_rate, rate=_ANALYSIS_RATE, lo=lo8, hi=hi8)
            y8 = y8.to(device=x.device, dtype=x.dtype)
            y4 = zero_outside(
                _to_rate(y8, _ANALYSIS_RATE, _PERIODICITY_RATE), lo8 // 2, -(-length8 // 2)
            )
            yield first, count, y8, lo8, y4, lo8 // 2
        return
    f8, f4 = sample_rate // _ANALYSIS_RATE, sample_rate // _PERIODICITY_RATE
    length8 = -(-n // f8)  # whole-signal lengths (zero beyond them)
    length4 = -(-length8 // 2)
    margin = margin8 * f4  # input samples
    for first in range(0, n_frames, _CHUNK_FRAMES):
        count = min(_CHUNK_FRAMES, n_frames - first)
        lo = (first * hop_length - margin) // f4 * f4
        hi = (first + count - 1) * hop_length + margin
        origin8, origin4 = lo // f8, lo // f4
        if f8 > 1:
            y8 = zero_outside(_decimate(x, f8, lo, hi), origin8, length8)
        else:  # the signal is at 8 kHz
            y8 = F.pad(x[max(lo, 0) : min(hi, n)], (max(0, -lo), max(0, hi - max(lo, n))))
            y8 = zero_outside(y8, origin8, length8)
        y4 = zero_outside(_to_rate(y8, _ANALYSIS_RATE, _PERIODICITY_RATE), origin4, length4)
        yield first, count, y8, origin8, y4, origin4


def _analyse(
    x: torch.Tensor, *, sample_rate: int, hop_length: int, tuning: EnergyVadTuning
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The frame cues of the ``energy`` backend, in blocks of :data:`_CHUNK_FRAMES` frames
    (:func:`_analysis_blocks`).

    Returns:
        ``(energy, flatness, strength, f0_hz)``, each shape ``(1 + time // hop_length,)``:
        speech-band mean square (full scale = 1), spectral flatness (nepers, ≤ 0), periodicity
        strength in ``[0, 1]`` and its F0 (Hz, 0 where the strength is under ½).
    """
    n_frames = 1 + x.shape[-1] // hop_length
    win = max(16, min(_ANALYSIS_FFT, int(round(tuning.window_s * _ANALYSIS_RATE))))
    weights = _band_weights(_ANALYSIS_RATE, _ANALYSIS_FFT, win, (tuning.band_hz,), x.device)
    flat_bins = _flatness_bins(_ANALYSIS_RATE, _ANALYSIS_FFT, tuning.flatness_band_hz)
    step8 = hop_length * _ANALYSIS_RATE / sample_rate
    step4 = hop_length * _PERIODICITY_RATE / sample_rate
    out = x.new_empty(4, n_frames)  # energy, flatness, strength, f0
    # The windowed frames are written into zero-padded buffers, reused from block to block.
    padded8 = x.new_zeros(min(_CHUNK_FRAMES, n_frames), _ANALYSIS_FFT)
    padded4 = x.new_zeros(min(_CHUNK_FRAMES, n_frames), _PERIODICITY_FFT)
    blocks = _analysis_blocks(x, sample_rate=sample_rate, hop_length=hop_length)
    for first, count, y8, origin8, y4, origin4 in blocks:
        frames = centred_frames(y8, step=step8, first=first, count=count, win=win, origin=origin8)
        torch.mul(frames, _hann(win, x.device).to(frames.dtype), out=padded8[:count, :win])
        spectrum = torch.fft.rfft(padded8[:count])
        power = (spectrum * spectrum.conj()).real  # (count, freq): |X|², as re² + im²
        band = power[:, flat_bins].clamp_min(_POWER_FLOOR)
        part = out[:, first : first + count]
        part[0] = power @ weights[0].to(power.dtype)
        part[1] = band.log().mean(dim=-1) - band.mean(dim=-1).log()
        frames = centred_frames(
            y4, step=step4, first=first, count=count, win=_PERIODICITY_WIN, origin=origin4
        )
        part[2], part[3] = _periodicity_of_frames(frames, padded=padded4[:count])
    return out[0], out[1], out[2], out[3]


def _periodicity_of_frames(
    frames: torch.Tensor,
    f_min: float = 65.0,
    f_max: float = 400.0,
    *,
    padded: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalized autocorrelation peak and its F0 of 4 kHz frames, shape ``(frame, win)``
    (``padded``: a buffer of shape ``(frame, _PERIODICITY_FFT)``, zero beyond ``win``, to
    hold the windowed frames)."""
    window = _hann(_PERIODICITY_WIN, frames.device).to(frames.dtype)
    if padded is None:
        padded = frames.new_zeros(frames.shape[0], _PERIODICITY_FFT)
    centred = frames - frames.mean(dim=-1, keepdim=True)
    torch.mul(centred, window, out=padded[:, :_PERIODICITY_WIN])
    spectrum = torch.fft.rfft(padded)
    # |X|² (its imaginary part is exactly zero), without a real copy for the inverse.
    ac = torch.fft.irfft(spectrum * spectrum.conj(), n=_PERIODICITY_FFT)
    lo = max(2, int(math.floor(_PERIODICITY_RATE / f_max)))
    hi = min(_PERIODICITY_WIN - 2, int(math.ceil(_PERIODICITY_RATE / f_min)))
    scale = _window_autocorrelation(frames.device).to(ac.dtype)[lo - 1 : hi + 2]
    ac = ac[:, lo - 1 : hi + 2] / ac[:, :1].clamp_min(1e-12) / scale  # lags lo − 1 … hi + 1
    peak, index = ac[:, 1:-1].max(dim=-1)
    left = ac.gather(1, index[:, None])[:, 0]
    right = ac.gather(1, (index + 2)[:, None])[:, 0]
    curvature = left - 2 * peak + right
    shift = torch.where(
        curvature < 0, 0.5 * (left - right) / curvature.clamp(max=-1e-9), torch.zeros_like(peak)
    ).clamp(-0.5, 0.5)
    strength = peak.clamp(0.0, 1.0)
    f0 = torch.where(
        strength >= 0.5, _PERIODICITY_RATE / (index + lo + shift), torch.zeros_like(strength)
    )
    return strength, f0


def band_energy_db(x: torch.Tensor, *, sample_rate: int, hop_length: int) -> torch.Tensor:
    """Speech-band (200–3600 Hz) mean square per centred 25 ms frame, dB re full scale.

    Args:
        x: signal, shape ``(time,)``, full scale = 1.0.
        sample_rate: Hz.
        hop_length: samples between frames.

    Returns:
        Tensor of shape ``(1 + time // hop_length,)``, dB (a full-scale 1 kHz sine reads about
        −3 dB, silence −100 dB).
    """
    n_frames = 1 + x.shape[-1] // hop_length
    win = int(round(ENERGY_TUNING.window_s * _ANALYSIS_RATE))
    weights = _band_weights(_ANALYSIS_RATE, _ANALYSIS_FFT, win, (ENERGY_TUNING.band_hz,), x.device)
    step = hop_length * _ANALYSIS_RATE / sample_rate
    energy = x.new_empty(n_frames)
    blocks = _analysis_blocks(x, sample_rate=sample_rate, hop_length=hop_length)
    for first, count, y8, origin8, _, _ in blocks:
        frames = centred_frames(y8, step=step, first=first, count=count, win=win, origin=origin8)
        spectrum = torch.fft.rfft(frames * _hann(win, x.device).to(frames.dtype), n=_ANALYSIS_FFT)
        power = (spectrum * spectrum.conj()).real  # |X|², as re² + im²
        energy[first : first + count] = power @ weights[0].to(power.dtype)
    return 10.0 * torch.log10(energy.clamp_min(_POWER_FLOOR))


def periodicity(
    x: torch.Tensor,
    *,
    sample_rate: int,
    hop_length: int,
    f_min: float = 65.0,
    f_max: float = 400.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalized autocorrelation peak and its F0, per centred frame, on 4 kHz audio.

    The signal is low-passed and resampled to 4 kHz; each 32 ms Hann-windowed frame (mean
    removed) has its autocorrelation computed through a zero-padded FFT and divided by the
    window's own autocorrelation, so a periodic signal scores ≈ 1 at its period. The peak over
    lags ``1/f_max … 1/f_min`` is refined by parabolic interpolation.

    Args:
        x: signal, shape ``(time,)``.
        sample_rate: Hz.
        hop_length: samples between frames (the frame grid of ``x``).
        f_min: lowest F0, Hz (≥ 65, the 32 ms window holds two periods). Default 65.
        f_max: highest F0, Hz (≤ 1000). Default 400.

    Returns:
        ``(strength, f0_hz)``, both shape ``(1 + time // hop_length,)``: the peak in ``[0, 1]``
        and its frequency, Hz (0 where the strength is under ½).
    """
    n_frames = 1 + x.shape[-1] // hop_length
    y4 = _to_rate(x, sample_rate, _PERIODICITY_RATE)
    step = hop_length * _PERIODICITY_RATE / sample_rate
    parts = [
        _periodicity_of_frames(
            centred_frames(
                y4,
                step=step,
                first=first,
                count=min(_CHUNK_FRAMES, n_frames - first),
                win=_PERIODICITY_WIN,
            ),
            f_min,
            f_max,
        )
        for first in range(0, n_frames, _CHUNK_FRAMES)
    ]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def _block_reduce(values: torch.Tensor, block: int, how: str) -> torch.Tensor:
    """Median or maximum over consecutive blocks of ``block`` frames (the last one padded by
    repetition), shape ``(ceil(frame / block),)``."""
    n = values.shape[-1]
    count = -(-n // block)
    padded = F.pad(values[None, None], (0, count * block - n), mode="replicate")[0, 0]
    blocks = padded.view(count, block)
    return blocks.median(dim=-1).values if how == "median" else blocks.amax(dim=-1)


def _sliding_max(values: torch.Tensor, width: int) -> torch.Tensor:
    """Centred running maximum over ``width`` (odd) entries; the ends see fewer entries."""
    return F.max_pool1d(values[None, None], width, stride=1, padding=width // 2)[0, 0]


def _sliding_sum(values: torch.Tensor, width: int) -> torch.Tensor:
    """Centred running sum over ``width`` entries (fewer at the ends)."""
    n = values.shape[-1]
    cumulative = F.pad(torch.cumsum(values.double(), 0), (1, 0))
    index = torch.arange(n, device=values.device)
    hi = (index + width // 2 + 1).clamp(max=n)
    lo = (index - width // 2).clamp(min=0)
    return (cumulative[hi] - cumulative[lo]).to(values.dtype)


def _odd(value: float) -> int:
    return max(1, int(round(value))) | 1


def _dilate(prob: torch.Tensor, after: torch.Tensor, before: torch.Tensor) -> torch.Tensor:
    """Running maximum over ``[t − after[t], t + before[t]]`` frames (per-frame widths).

    The widths are rounded down to a short ladder of sizes, one max-pool per size.
    """
    out = prob
    top = int(max(int(after.max()), int(before.max()), 0)) if prob.numel() else 0
    ladder = sorted({h for h in (1, 2, 3, 4, 6, 8, 11, 15, 20, 25, 30, 40, 50) if h <= top})
    row = prob[None, None]
    for h in ladder:
        past = F.max_pool1d(F.pad(row, (h, 0)), h + 1, stride=1)[0, 0]
        future = F.max_pool1d(F.pad(row, (0, h)), h + 1, stride=1)[0, 0]
        out = torch.where(after >= h, torch.maximum(out, past), out)
        out = torch.where(before >= h, torch.maximum(out, future), out)
    return out


def energy_speech_probability(
    x: torch.Tensor,
    *,
    sample_rate: int,
    hop_length: int,
    tuning: EnergyVadTuning | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Our signal-based speech probability per frame (the ``energy`` backend).

    1. On the signal resampled to 8 kHz: the speech-band (200–3600 Hz) mean square of 25 ms
       Hann frames, smoothed over 30 ms: ``E`` (dB).
    2. Noise floor: the minimum over ±0.75 s of 100 ms block medians; the noise level ``N`` is
       the mean power of the frames within 6 dB of that floor (±0.75 s). Speech level ``S``: the
       maximum over ±1.5 s.
    3. Energy position ``u = (E − N) / max(S − N, 15 dB)``; periodicity ``r`` (autocorrelation
       peak, :func:`periodicity`); spectral flatness ``φ`` in 300–3000 Hz (log of geometric over
       arithmetic mean, ≥ −4). Frame log-odds ``12·(u − 0.2) + 4·(r − ½) + φ`` (see
       :class:`EnergyVadTuning` for why flatness counts positively).
    4. Hangover: each frame's probability is raised to the maximum over the preceding
       ``5 ms × (35 dB − (S − N))`` (0–300 ms) and half as long following it, so the weak word
       ends that noise masks stay speech at low signal-to-noise ratios while clean speech keeps
       sharp boundaries.

    The constants were chosen on count.wav and the LibriSpeech noise mixtures of
    ``scripts/eval_segmentation.py`` (frame F1 and pause-boundary F1). Every step is a tensor
    operation over all frames; the cues are computed in blocks of 1024 frames from the input
    samples of each block (:func:`_analysis_blocks`), so memory beyond the signal is a bounded
    block plus a few numbers per frame (measured: ≈ 9 MB extra peak for 60 s and 12.5 MB for
    1200 s of 16 kHz audio, ``vad`` and ``phrases`` together; docs/performance.md).

    Args:
        x: signal, shape ``(time,)``, full scale = 1.0.
        sample_rate: Hz (≥ 8000).
        hop_length: samples between frames.
        tuning: the constants (default :data:`ENERGY_TUNING`).

    Returns:
        ``(prob, energy_db, f0_hz)``, each shape ``(1 + time // hop_length,)``: the speech
        probability in ``[0, 1]``, ``E`` (dB re full scale) and the periodicity F0 (Hz, 0 where
        aperiodic).
    """
    t = tuning or ENERGY_TUNING
    hop_s = hop_length / sample_rate
    energy, flatness, strength, f0 = _analyse(
        x, sample_rate=sample_rate, hop_length=hop_length, tuning=t
    )
    smooth = _odd(t.smooth_s / hop_s)
    if smooth > 1:
        energy = F.avg_pool1d(
            F.pad(energy[None, None], (smooth // 2, smooth // 2), mode="replicate"), smooth, 1
        )[0, 0]
    energy = energy.clamp_min(_POWER_FLOOR)
    level = 10.0 * torch.log10(energy)
    n = level.shape[-1]
    block = max(1, int(round(t.block_s / hop_s)))
    floor = -_sliding_max(
        -_block_reduce(level, block, "median"), _odd(t.floor_window_s / t.block_s)
    )
    floor = floor.repeat_interleave(block)[:n]
    near = (level < floor + t.noise_margin_db).to(energy.dtype)
    width = _odd(t.noise_window_s / hop_s)
    count = _sliding_sum(near, width)
    noise_power = _sliding_sum(energy * near, width) / count.clamp_min(1.0)
    noise = torch.where(
        count >= 1.0, 10.0 * torch.log10(noise_power.clamp_min(_POWER_FLOOR)), floor
    )
    speech = _sliding_max(_block_reduce(level, block, "max"), _odd(t.level_window_s / t.block_s))
    speech = speech.repeat_interleave(block)[:n]
    span = speech - noise
    position = (level - noise) / span.clamp_min(t.min_range_db)
    log_odds = (
        t.position_gain * (position - t.position_centre)
        + t.periodicity_weight * (strength - 0.5)
        + t.flatness_weight * flatness.clamp_min(-t.flatness_floor)
    )
    prob = torch.sigmoid(log_odds)
    after_ms = (t.hangover_ms_per_db * (t.hangover_ref_db - span)).clamp(0.0, t.hangover_max_ms)
    after = torch.floor(after_ms / (1000.0 * hop_s)).long()
    before = torch.floor(after_ms * t.preroll_ratio / (1000.0 * hop_s)).long()
    return _dilate(prob, after, before), level, f0
