"""Speech segmentation: voice activity, silence trimming and pause shortening, phrases and pauses.

Voice activity detection (:func:`vad`) has three backends that all produce a speech probability
on the pipeline's frame grid (frame ``t`` centred at sample ``t * hop_length``, ``1 + time //
hop_length`` frames) and go through the same post-processing into speech segments:

* ``"energy"`` — ours, signal-based (see :func:`energy_speech_probability`): the speech-band
  (200–3600 Hz) energy of each frame is placed between an adaptive noise floor (minimum
  tracking of 100 ms block medians) and the local speech level, and combined with periodicity
  (the normalized autocorrelation peak in 65–400 Hz) and spectral flatness (300–3000 Hz) into a
  frame probability; a hangover whose length grows as the local signal-to-noise ratio falls
  bridges the weak ends of words that noise masks. The edges of pauses are then refined at a
  2.5 ms step against the noise inside each pause, in five bands from 60 Hz up to 8 kHz
  (:func:`refine_pause_edges`); next to noisy pauses they are then re-placed at the change point
  of a sub-band likelihood-ratio test against the pause's noise, and false gaps near them
  filled (:func:`place_edges_by_likelihood`); short segments that do not stand out from the
  pause around them are dropped (:func:`drop_background_blips`). It is the ``auto`` default:
  the most accurate of the three on the evaluation recordings and > 20× faster than Silero. Memory
  beyond the signal is bounded (blocks of frames) plus a few numbers per frame.
* ``"silero"`` — the Silero VAD model shipped in the ``silero-vad`` package (its TorchScript
  weights, loaded from the package, never from a hub), 512-sample chunks at 16 kHz.
* ``"webrtc"`` — the WebRTC VAD (``webrtcvad-wheels``), 10/20/30 ms frames of 16-bit PCM.

All three prepare their input a bounded stretch at a time (resampled and converted per block),
so memory beyond the signal does not grow with its length, apart from a few numbers per frame.

:func:`trim_and_shorten` cuts leading/trailing silence and shortens long inner pauses, and returns
a :class:`TimeMap` from output times back to input times. :func:`phrases` splits speech into
phrases at pauses, using pitch reset and energy reset to tell phrase ends from hesitations, and
:func:`pause_statistics` summarizes the pauses for fluency scoring.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Literal, Protocol, get_args

import torch
import torch.nn.functional as F

from app.errors import InvalidOptions
from app.pipeline.normalize import resample

VadBackend = Literal["auto", "energy", "silero", "webrtc"]
PauseKind = Literal["boundary", "hesitation"]

#: The backend ``"auto"`` selects (the most accurate within the speed budget; see
#: docs/quality.md, "Voice activity").
AUTO_BACKEND: Literal["energy", "silero", "webrtc"] = "energy"

#: Floor under powers before the logarithm (−100 dB).
_POWER_FLOOR = 1e-10


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SpeechSegment:
    """A stretch of speech.

    Attributes:
        start_s: onset, seconds from the start of the signal.
        end_s: offset, seconds (> ``start_s``).
        confidence: mean speech probability of the segment's frames, in ``[0, 1]``.
    """

    start_s: float
    end_s: float
    confidence: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class VadResult:
    """Voice activity on the pipeline's frame grid.

    Attributes:
        prob: speech probability per frame, shape ``(frame,)``, in ``[0, 1]`` (the ``vad_prob``
            feature), ``frame = 1 + time // hop_length``, frame ``t`` centred at sample
            ``t * hop_length``.
        speech: speech decision per frame after post-processing, bool, shape ``(frame,)``: true
            where the frame centre lies inside a segment.
        segments: the speech segments, in time order, non-overlapping.
        energy_db: speech-band (200–4000 Hz) frame energy, dB re full scale, shape
            ``(frame,)`` (used by :func:`phrases`).
        f0_hz: a coarse F0 estimate per frame, Hz (0 where aperiodic), shape ``(frame,)``, from
            the ``energy`` backend's periodicity analysis; ``None`` for the other backends.
        sample_rate: Hz.
        hop_length: samples between frames.
        duration_s: signal duration, seconds.
        backend: the backend that ran (``"auto"`` resolved).
    """

    prob: torch.Tensor
    speech: torch.Tensor
    segments: tuple[SpeechSegment, ...]
    energy_db: torch.Tensor
    f0_hz: torch.Tensor | None
    sample_rate: int
    hop_length: int
    duration_s: float
    backend: str

    @property
    def frame_rate_hz(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def speech_time_s(self) -> float:
        """Total duration of the segments, seconds."""
        return sum(s.duration_s for s in self.segments)

    @property
    def speech_ratio(self) -> float:
        """Fraction of the signal's duration covered by speech segments, in ``[0, 1]``."""
        return self.speech_time_s / self.duration_s if self.duration_s > 0 else 0.0


# --------------------------------------------------------------------------------------------
# Voice activity detection
# --------------------------------------------------------------------------------------------
def vad(
    samples: torch.Tensor,
    *,
    sample_rate: int,
    hop_length: int,
    backend: VadBackend = "auto",
    threshold: float = 0.5,
    neg_threshold: float | None = None,
    hangover_ms: float = 0.0,
    padding_ms: float = 0.0,
    min_speech_ms: float = 30.0,
    min_silence_ms: float = 80.0,
    max_speech_s: float | None = None,
    webrtc_mode: int = 2,
    webrtc_frame_ms: int = 30,
) -> VadResult:
    """Detect speech: a frame speech probability and speech segments.

    The backend's probability track is put on the frame grid, then post-processed: hysteresis
    (a run of frames with ``prob ≥ neg_threshold`` is speech when it holds a frame with
    ``prob ≥ threshold``), ``hangover_ms`` added after every run, gaps shorter than
    ``min_silence_ms`` filled, runs shorter than ``min_speech_ms`` dropped, runs longer than
    ``max_speech_s`` cut into equal parts, and ``padding_ms`` added on both sides (overlaps
    merged, clipped to the signal). With the ``energy`` backend, before the padding, the edges
    of pauses (gaps ≥ 150 ms) are refined at a 2.5 ms step against the noise measured inside
    each pause (:func:`refine_pause_edges`: the frame analysis and hangover place them tens
    of ms off), the edges of quiet pauses are moved off weak sounds detached from the speech
    (breaths, lip noise: :func:`trim_detached_weak_sounds`), the edges of pauses under noise
    (speech < 25 dB over the pause) are re-placed at the change point of a sub-band
    likelihood-ratio test and short false gaps near them filled
    (:func:`place_edges_by_likelihood`), and short segments inside a pause that do not stand
    out from its noise are dropped (:func:`drop_background_blips`).

    Args:
        samples: mono signal, shape ``(time,)``, full scale = 1.0, on any device.
        sample_rate: Hz (the ``silero`` backend resamples to 16 kHz, ``webrtc`` to 16 kHz unless
            the rate is 8, 16, 32 or 48 kHz; ``energy`` runs at any rate ≥ 8 kHz).
        hop_length: samples between frames (frame ``t`` is centred at ``t * hop_length``).
        backend: ``"energy"``, ``"silero"``, ``"webrtc"`` or ``"auto"`` (:data:`AUTO_BACKEND`).
        threshold: speech probability that starts a segment, in ``(0, 1)``. Default 0.5.
        neg_threshold: probability under which a segment ends, in ``(0, threshold]``. Default
            ``threshold − 0.3`` for ``energy``, ``threshold − 0.15`` (Silero's own convention)
            for the others; at least 0.01.
        hangover_ms: speech kept after every detected run, ms (≥ 0). Default 0 (the ``energy``
            backend has its own SNR-dependent hangover).
        padding_ms: added before and after every segment, ms (≥ 0). Default 0 (the segments
            follow the speech; :func:`trim_and_shorten` pads on its own).
        min_speech_ms: shorter segments are dropped, ms (≥ 0). Default 30.
        min_silence_ms: shorter gaps between segments are filled, ms (≥ 0). Default 80.
        max_speech_s: longer segments are cut into equal parts, seconds (``None``: no limit;
            otherwise ≥ ``min_speech_ms / 1000`` and > 0).
        webrtc_mode: WebRTC aggressiveness, 0–3. Default 2.
        webrtc_frame_ms: WebRTC frame length, 10, 20 or 30 ms. Default 30.

    Returns:
        A :class:`VadResult`; its tensors are on the input's device, ``prob`` and ``energy_db``
        in the input's floating dtype (float32 for integer input).

    Raises:
        InvalidOptions: an option is out of range (the message names it), or the signal is not
            1-D.
    """
    neg = _validate_vad(
        samples,
        sample_rate=sample_rate,
        hop_length=hop_length,
        backend=backend,
        threshold=threshold,
        neg_threshold=neg_threshold,
        durations_ms={
            "hangover_ms": hangover_ms,
            "padding_ms": padding_ms,
            "min_speech_ms": min_speech_ms,
            "min_silence_ms": min_silence_ms,
        },
        max_speech_s=max_speech_s,
        webrtc_mode=webrtc_mode,
        webrtc_frame_ms=webrtc_frame_ms,
    )
    name = AUTO_BACKEND if backend == "auto" else backend
    dtype = samples.dtype if samples.is_floating_point() else torch.float32
    x = samples.to(dtype)
    n_frames = 1 + x.shape[-1] // hop_length
    f0: torch.Tensor | None = None
    if x.shape[-1] == 0:  # one frame of nothing
        prob = x.new_zeros(n_frames)
        energy_db = torch.full_like(prob, -100.0)
        f0 = prob.clone() if name == "energy" else None
    elif name == "energy":
        prob, energy_db, f0 = energy_speech_probability(
            x, sample_rate=sample_rate, hop_length=hop_length
        )
    else:
        if name == "silero":
            prob = silero_speech_probability(x, sample_rate=sample_rate, hop_length=hop_length)
        else:
            prob = webrtc_speech_probability(
                x,
                sample_rate=sample_rate,
                hop_length=hop_length,
                mode=webrtc_mode,
                frame_ms=webrtc_frame_ms,
            )
        energy_db = band_energy_db(x, sample_rate=sample_rate, hop_length=hop_length)
    prob = prob.to(dtype)
    hop_s = hop_length / sample_rate
    starts, ends = postprocess(
        prob,
        threshold=threshold,
        neg_threshold=neg,
        hangover=_frames(hangover_ms, hop_s),
        min_speech=_frames(min_speech_ms, hop_s),
        min_silence=_frames(min_silence_ms, hop_s),
        max_speech=None if max_speech_s is None else max(1, round(max_speech_s / hop_s)),
    )
    duration_s = x.shape[-1] / sample_rate
    # Frame t stands for [(t − ½)·hop, (t + ½)·hop).
    start_s, end_s = ((starts.double().cpu() - 0.5) * hop_s), ((ends.double().cpu() - 0.5) * hop_s)
    if name == "energy":
        start_s, end_s = refine_pause_edges(x, start_s, end_s, sample_rate=sample_rate)
        start_s, end_s = trim_detached_weak_sounds(x, start_s, end_s, sample_rate=sample_rate)
        start_s, end_s = place_edges_by_likelihood(x, start_s, end_s, sample_rate=sample_rate)
        keep = drop_background_blips(x, start_s, end_s, sample_rate=sample_rate)
        start_s, end_s = start_s[keep], end_s[keep]
    segments = _segments_from_times(
        prob,
        start_s,
        end_s,
        hop_s=hop_s,
        duration_s=duration_s,
        padding_s=_frames(padding_ms, hop_s) * hop_s,
    )
    return VadResult(
        prob=prob,
        speech=frames_in_segments(segments, n_frames=n_frames, hop_s=hop_s, device=prob.device),
        segments=segments,
        energy_db=energy_db.to(dtype),
        f0_hz=None if f0 is None else f0.to(dtype),
        sample_rate=sample_rate,
        hop_length=hop_length,
        duration_s=duration_s,
        backend=name,
    )


def _frames(ms: float, hop_s: float) -> int:
    return int(round(ms / 1000.0 / hop_s))


def _validate_vad(
    samples: torch.Tensor,
    *,
    sample_rate: int,
    hop_length: int,
    backend: str,
    threshold: float,
    neg_threshold: float | None,
    durations_ms: dict[str, float],
    max_speech_s: float | None,
    webrtc_mode: int,
    webrtc_frame_ms: int,
) -> float:
    if samples.dim() != 1:
        raise InvalidOptions(
            f"vad expects a mono signal of shape (time,), got shape {tuple(samples.shape)}."
        )
    if backend not in get_args(VadBackend):
        raise InvalidOptions(
            f"vad backend={backend!r} is not one of {', '.join(get_args(VadBackend))}."
        )
    if not sample_rate >= 8000:
        raise InvalidOptions(f"sample_rate={sample_rate} Hz: voice activity needs ≥ 8000 Hz.")
    if not hop_length >= 1:
        raise InvalidOptions(f"hop_length={hop_length} must be ≥ 1 sample.")
    if not 0.0 < threshold < 1.0:
        raise InvalidOptions(f"vad threshold={threshold} must lie in (0, 1).")
    margin = 0.3 if (AUTO_BACKEND if backend == "auto" else backend) == "energy" else 0.15
    neg = max(threshold - margin, 0.01) if neg_threshold is None else neg_threshold
    if not 0.0 < neg <= threshold:
        raise InvalidOptions(
            f"vad neg_threshold={neg_threshold} must lie in (0, threshold={threshold}]."
        )
    for name, value in durations_ms.items():
        if not (math.isfinite(value) and value >= 0):
            raise InvalidOptions(f"vad {name}={value} must be a finite duration ≥ 0 ms.")
    if max_speech_s is not None:
        if not (math.isfinite(max_speech_s) and max_speech_s > 0):
            raise InvalidOptions(f"vad max_speech_s={max_speech_s} must be > 0 s (or None).")
        if durations_ms["min_speech_ms"] > 1000.0 * max_speech_s:
            raise InvalidOptions(
                f"vad min_speech_ms={durations_ms['min_speech_ms']} exceeds max_speech_s="
                f"{max_speech_s} ({1000.0 * max_speech_s:g} ms)."
            )
    if webrtc_mode not in (0, 1, 2, 3):
        raise InvalidOptions(f"webrtc_mode={webrtc_mode} must be 0, 1, 2 or 3.")
    if webrtc_frame_ms not in (10, 20, 30):
        raise InvalidOptions(f"webrtc_frame_ms={webrtc_frame_ms} must be 10, 20 or 30 ms.")
    return neg


# -- post-processing --------------------------------------------------------------------------
def _runs(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Start and end (exclusive) frame indices of the runs of true values of a 1-D mask."""
    padded = F.pad(mask.to(torch.int8), (1, 1))
    change = padded[1:] - padded[:-1]
    return torch.nonzero(change == 1).flatten(), torch.nonzero(change == -1).flatten()


def _fill_gaps(
    starts: torch.Tensor, ends: torch.Tensor, min_gap: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge runs separated by fewer than ``min_gap`` frames (or overlapping)."""
    if starts.numel() < 2:
        return starts, ends
    keep = (starts[1:] - ends[:-1]) >= max(min_gap, 1)  # boundaries that stay
    first = torch.cat([keep.new_ones(1), keep])
    last = torch.cat([keep, keep.new_ones(1)])
    # With overlapping runs (after hangover or padding) the end is the running maximum.
    run_end = torch.cummax(ends, dim=0).values
    return starts[first], run_end[last]


def postprocess(
    prob: torch.Tensor,
    *,
    threshold: float,
    neg_threshold: float,
    hangover: int = 0,
    min_speech: int = 0,
    min_silence: int = 0,
    max_speech: int | None = None,
    padding: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Speech runs from a frame probability track (see :func:`vad` for the steps).

    Args:
        prob: speech probability per frame, shape ``(frame,)``.
        threshold: onset probability.
        neg_threshold: offset probability (≤ ``threshold``).
        hangover: frames added after every run.
        min_speech: runs shorter than this many frames are dropped.
        min_silence: gaps shorter than this many frames are filled.
        max_speech: runs longer than this many frames are cut into equal parts (``None``: no
            limit).
        padding: frames added before and after every run.

    Returns:
        ``(starts, ends)``: int64 tensors of shape ``(segment,)``, frame indices, ends exclusive,
        within ``[0, frame]``, sorted and non-overlapping.
    """
    n = prob.shape[-1]
    low = prob >= neg_threshold
    starts, ends = _runs(low)
    if starts.numel():
        # Hysteresis: keep a low run when it holds a frame above the onset threshold.
        run_id = torch.cumsum(F.pad(low[1:] & ~low[:-1], (1, 0)).long(), 0) + low[:1].long() - 1
        strong = torch.zeros(starts.numel(), dtype=torch.long, device=prob.device)
        hits = low & (prob >= threshold)
        strong.index_add_(0, run_id[hits], torch.ones_like(run_id[hits]))
        keep = strong > 0
        starts, ends = starts[keep], ends[keep]
    if hangover:
        ends = (ends + hangover).clamp(max=n)
    starts, ends = _fill_gaps(starts, ends, min_silence)
    long_enough = (ends - starts) >= max(min_speech, 1)
    starts, ends = starts[long_enough], ends[long_enough]
    if max_speech is not None and starts.numel():
        length = ends - starts
        parts = torch.div(length + max_speech - 1, max_speech, rounding_mode="floor")
        if bool((parts > 1).any()):
            owner = torch.repeat_interleave(torch.arange(parts.numel(), device=prob.device), parts)
            k = (
                torch.arange(owner.numel(), device=prob.device)
                - (torch.cumsum(parts, 0) - parts)[owner]
            )
            base, span, count = starts[owner], length[owner], parts[owner]
            starts = base + torch.div(k * span, count, rounding_mode="floor")
            ends = base + torch.div((k + 1) * span, count, rounding_mode="floor")
    if padding and starts.numel():
        starts = (starts - padding).clamp(min=0)
        ends = (ends + padding).clamp(max=n)
        starts, ends = _fill_gaps(starts, ends, 0)
    return starts, ends


def _segments_from_times(
    prob: torch.Tensor,
    start_s: torch.Tensor,
    end_s: torch.Tensor,
    *,
    hop_s: float,
    duration_s: float,
    padding_s: float,
) -> tuple[SpeechSegment, ...]:
    """Segments from onset/offset times (seconds, float64, shape ``(segment,)``, sorted and
    non-overlapping): widened by ``padding_s`` on both sides, overlapping or touching ones
    merged, clipped to the signal; confidence = mean probability of the frames whose centres
    lie inside (the nearest frame for a segment shorter than a hop)."""
    if start_s.numel() == 0:
        return ()
    if padding_s > 0:
        start_s, end_s = start_s - padding_s, end_s + padding_s
        keep = start_s[1:] > end_s[:-1]  # the gaps that stay open
        first = torch.cat([keep.new_ones(1), keep])
        last = torch.cat([keep, keep.new_ones(1)])
        start_s, end_s = start_s[first], torch.cummax(end_s, dim=0).values[last]
    start_s, end_s = start_s.clamp(0.0, duration_s), end_s.clamp(0.0, duration_s)
    n = prob.shape[-1]
    cumulative = F.pad(torch.cumsum(prob.detach().double().cpu(), 0), (1, 0))
    a = torch.ceil(start_s / hop_s - 1e-9).long().clamp(0, n - 1)
    b = torch.maximum(torch.ceil(end_s / hop_s - 1e-9).long().clamp(0, n), a + 1)
    confidence = (cumulative[b] - cumulative[a]) / (b - a)
    return tuple(
        SpeechSegment(s, e, c)
        for s, e, c in zip(
            start_s.tolist(), end_s.tolist(), confidence.clamp(0, 1).tolist(), strict=True
        )
        if e > s
    )


def frames_in_segments(
    segments: Sequence[SpeechSegment] | Sequence[tuple[float, float]],
    *,
    n_frames: int,
    hop_s: float,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Frame mask of the segments: frame ``t`` is true when ``start ≤ t·hop_s < end``.

    Args:
        segments: :class:`SpeechSegment` or ``(start_s, end_s)`` pairs, seconds.
        n_frames: number of frames.
        hop_s: frame hop, seconds.
        device: where to build the mask.

    Returns:
        Bool tensor of shape ``(n_frames,)``.
    """
    bounds = [_bounds(s) for s in segments]
    mask = torch.zeros(n_frames, dtype=torch.bool, device=device)
    if not bounds:
        return mask
    edges = torch.tensor(bounds, dtype=torch.float64, device=device) / hop_s
    first = torch.ceil(edges[:, 0] - 1e-9).long().clamp(0, n_frames)
    stop = torch.ceil(edges[:, 1] - 1e-9).long().clamp(0, n_frames)
    delta = torch.zeros(n_frames + 1, dtype=torch.long, device=device)
    delta.index_add_(0, first, torch.ones_like(first))
    delta.index_add_(0, stop, -torch.ones_like(stop))
    return torch.cumsum(delta, 0)[:n_frames] > 0


def _bounds(segment: SpeechSegment | tuple[float, float]) -> tuple[float, float]:
    if isinstance(segment, SpeechSegment):
        return segment.start_s, segment.end_s
    return float(segment[0]), float(segment[1])


# --------------------------------------------------------------------------------------------
# Backend "energy": ours
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EnergyVadTuning:
    """Constants of the ``energy`` backend (measured choices, see docs/quality.md).

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
            :func:`refine_pause_edges`), seconds.
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
            transients are not speech (see :func:`refine_pause_edges`), dB.
        detached_lookback_s: how far into the speech :func:`trim_detached_weak_sounds` looks
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
            pause's noise (see :func:`drop_background_blips`), seconds.
        blip_active: ... and kept when at least this fraction of its frames is active.
        lr_hop_s: step of the likelihood-ratio edge placement (:func:`place_edges_by_likelihood`),
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
        lr_fill_max_s: ... when shorter than this (not pauses themselves), seconds ...
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
            of :func:`place_edges_by_likelihood` extends a moved onset up to this far into the
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
    lr_fill_max_s: float = 0.15
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


ENERGY_TUNING = EnergyVadTuning()

#: Frames analysed per block (bounds the memory of the spectra on long signals).
_CHUNK_FRAMES = 2048
#: The cues are measured on the signal resampled to 8 kHz (band energy, flatness: 25 ms frames,
#: 256-point FFT) and 4 kHz (periodicity: 32 ms frames, 256-point FFT of 128 samples).
_ANALYSIS_RATE = 8000
_ANALYSIS_FFT = 256
_PERIODICITY_RATE = 4000
_PERIODICITY_WIN = 128


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
def _decimator(factor: int, device: torch.device) -> torch.Tensor:
    """Low-pass FIR for decimation by ``factor`` (Kaiser-windowed sinc, cut-off at 90 % of the
    new Nyquist frequency, 8 taps per output sample), shape ``(1, 1, taps)``."""
    half = 4 * factor
    n = torch.arange(-half, half + 1, dtype=torch.float64)
    cutoff = 0.9 / factor
    taps = (
        cutoff
        * torch.sinc(cutoff * n)
        * torch.kaiser_window(2 * half + 1, periodic=False, beta=8.0, dtype=torch.float64)
    )
    return (taps / taps.sum()).float().to(device)[None, None]


def _to_rate(x: torch.Tensor, sample_rate: int, rate: int) -> torch.Tensor:
    """``x`` low-passed and resampled to ``rate`` Hz (a strided FIR when ``sample_rate`` is a
    multiple of ``rate``, the band-limited resampler otherwise)."""
    if sample_rate == rate:
        return x
    if x.shape[-1] == 0:
        return x
    if sample_rate % rate:
        return resample(x, sample_rate, rate)
    factor = sample_rate // rate
    taps = _decimator(factor, x.device).to(x.dtype)
    return F.conv1d(x[None, None], taps, stride=factor, padding=taps.shape[-1] // 2)[0, 0]


def _centred_frames(
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
    :func:`_stretch_at_rate` and decimated to 4 kHz.
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
            y8 = _stretch_at_rate(x, sample_rate=sample_rate, rate=_ANALYSIS_RATE, lo=lo8, hi=hi8)
            y8 = y8.to(device=x.device, dtype=x.dtype)
            y4 = _zero_outside(
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
        stretch = F.pad(x[max(lo, 0) : min(hi, n)], (max(0, -lo), max(0, hi - max(lo, n))))
        origin8, origin4 = lo // f8, lo // f4
        y8 = _zero_outside(_to_rate(stretch, sample_rate, _ANALYSIS_RATE), origin8, length8)
        y4 = _zero_outside(_to_rate(y8, _ANALYSIS_RATE, _PERIODICITY_RATE), origin4, length4)
        yield first, count, y8, origin8, y4, origin4


def _zero_outside(y: torch.Tensor, origin: int, length: int) -> torch.Tensor:
    """``y`` (samples ``origin …`` of a signal of ``length`` samples) with the samples before
    0 and from ``length`` on set to zero."""
    lo, hi = max(0, -origin), max(0, min(y.shape[-1], length - origin))
    if lo == 0 and hi == y.shape[-1]:
        return y
    return F.pad(y[lo:hi], (lo, y.shape[-1] - hi))


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
    blocks = _analysis_blocks(x, sample_rate=sample_rate, hop_length=hop_length)
    for first, count, y8, origin8, y4, origin4 in blocks:
        frames = _centred_frames(y8, step=step8, first=first, count=count, win=win, origin=origin8)
        spectrum = torch.fft.rfft(frames * _hann(win, x.device).to(frames.dtype), n=_ANALYSIS_FFT)
        power = spectrum.real.square() + spectrum.imag.square()  # (count, freq)
        band = power[:, flat_bins].clamp_min(_POWER_FLOOR)
        part = out[:, first : first + count]
        part[0] = power @ weights[0].to(power.dtype)
        part[1] = band.log().mean(dim=-1) - band.mean(dim=-1).log()
        frames = _centred_frames(
            y4, step=step4, first=first, count=count, win=_PERIODICITY_WIN, origin=origin4
        )
        part[2], part[3] = _periodicity_of_frames(frames)
    return out[0], out[1], out[2], out[3]


def _periodicity_of_frames(
    frames: torch.Tensor, f_min: float = 65.0, f_max: float = 400.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalized autocorrelation peak and its F0 of 4 kHz frames, shape ``(frame, win)``."""
    window = _hann(_PERIODICITY_WIN, frames.device).to(frames.dtype)
    frames = (frames - frames.mean(dim=-1, keepdim=True)) * window
    spectrum = torch.fft.rfft(frames, n=2 * _PERIODICITY_WIN)
    ac = torch.fft.irfft(spectrum.real.square() + spectrum.imag.square(), n=2 * _PERIODICITY_WIN)
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
        frames = _centred_frames(y8, step=step, first=first, count=count, win=win, origin=origin8)
        spectrum = torch.fft.rfft(frames * _hann(win, x.device).to(frames.dtype), n=_ANALYSIS_FFT)
        power = spectrum.real.square() + spectrum.imag.square()
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
            _centred_frames(
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
    operation over all frames; the cues are computed in blocks of 2048 frames from the input
    samples of each block (:func:`_analysis_blocks`), so memory beyond the signal is a bounded
    block plus a few numbers per frame (measured: ≈ 21 MB extra peak for 60 s and 23 MB for
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


#: Pause edges refined per block (bounds the memory of their spectra).
_EDGE_BLOCK = 32


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
        tuning: the constants (default :data:`ENERGY_TUNING`).

    Returns:
        ``(start_s, end_s)``: refined copies, same shapes; only edges of long gaps move, and a
        segment whose refined edges cross keeps its original ones.
    """
    t = tuning or ENERGY_TUNING
    start_s, end_s = start_s.clone(), end_s.clone()
    *_, pauses = _pauses_between(x, start_s, end_s, t)
    if pauses.numel() == 0:
        return start_s, end_s
    return _move_pause_edges(
        x, start_s, end_s, pauses, _refine_edges, sample_rate=sample_rate, tuning=t
    )


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
    pauses: torch.Tensor,
    move: _EdgeMover,
    *,
    sample_rate: int,
    tuning: EnergyVadTuning,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The segments (``start_s``, ``end_s``: seconds, shape ``(segment,)``) with the edges of
    the gaps ``pauses`` (indices, as :func:`_pauses_between` gives them) moved by ``move``:
    offsets with ``direction`` +1, onsets with −1, each with half its pause (seconds); where a
    segment's new edges cross, its old ones."""
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
        level = _levels_into_pause(
            x, centre, direction, -back, reach, 1, sample_rate=sample_rate, tuning=t
        )
        noise, in_noise = _pause_noise(x, centre, half[:, 0], direction, sample_rate, t)
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
    shape ``(edge, frame, band)`` (with ``total``: whole levels, ``(edge, frame)``), and which
    of them lie within half the pause, bool, shape ``(edge, frame)``."""
    t = tuning
    hop_s = _edge_frame(sample_rate, t)[1] / sample_rate
    stride = max(1, int(round(t.edge_noise_hop_s / hop_s)))
    guard = int(math.ceil(t.edge_guard_s / hop_s - 1e-9))
    steps = torch.arange(guard, int(round(t.edge_noise_s / hop_s)) + 1, stride)
    noise = _levels_into_pause(
        x,
        centre,
        direction,
        int(steps[0]),
        int(steps[-1]),
        stride,
        sample_rate=sample_rate,
        tuning=t,
        total=total,
    )
    in_noise = steps.double() * hop_s <= half_pause_s[:, None].clamp(max=t.edge_noise_s)
    return noise, in_noise


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
) -> torch.Tensor:
    """Band levels (:func:`_edge_band_levels`) of ``count`` frames every ``stride`` hops from
    frame ``first`` (in hops of the edge analysis, one row per entry of ``first``, shape
    ``(row,)``; zero beyond the signal). Returns shape ``(row, count, band)``, dB, or with
    ``total`` each frame's whole level (sum of squares of the rectangular frame, dB re full
    scale, float64 on the CPU), ``(row, count)``."""
    win, hop = _edge_frame(sample_rate, tuning)
    lo = first * hop - win // 2
    if not total:
        frames = _sample_frames(x, lo, count, stride * hop, win)
        return _edge_band_levels(frames, sample_rate=sample_rate, tuning=tuning)
    # Whole levels: sums of squares of rectangular frames, from running sums (no spectra).
    rows = _sample_rows(x, lo, (count - 1) * stride * hop + win).double().cpu()
    running = F.pad(rows.square().cumsum(dim=-1), (1, 0))
    starts = torch.arange(count) * (stride * hop)
    energy = running[:, starts + win] - running[:, starts]
    return 10.0 * torch.log10(energy.clamp_min(_POWER_FLOOR))


def _sample_frames(
    x: torch.Tensor, lo: torch.Tensor, count: int, step: int, win: int
) -> torch.Tensor:
    """``count`` frames of ``win`` samples every ``step`` samples from sample ``lo`` (one row
    per entry of ``lo``, shape ``(row,)``; zero beyond the signal), shape
    ``(row, count, win)``, on ``x``'s device."""
    return _sample_rows(x, lo, (count - 1) * step + win).unfold(-1, win, step)


def _sample_rows(x: torch.Tensor, lo: torch.Tensor, span: int) -> torch.Tensor:
    """``span`` samples from each sample ``lo`` (shape ``(row,)``; zero beyond the signal),
    shape ``(row, span)``, on ``x``'s device."""
    n = x.shape[-1]
    rows = [
        x[a:b]
        if a >= 0 and b <= n
        else F.pad(x[max(a, 0) : min(b, n)], (max(0, -a), max(0, b - max(a, n))))
        for a, b in ((a, a + span) for a in lo.tolist())
    ]
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
    nyquist = sample_rate / 2.0
    bands = tuple((lo, min(hi, nyquist)) for lo, hi in tuning.edge_bands_hz if lo < nyquist)
    weights = _band_weights(sample_rate, win, win, bands, frames.device).to(frames.dtype)
    spectrum = torch.fft.rfft(frames * _hann(win, frames.device).to(frames.dtype), n=win)
    power = (spectrum.real.square() + spectrum.imag.square()) @ weights.T
    return 10.0 * torch.log10(power.clamp_min(_POWER_FLOOR)).double().cpu()


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
        tuning: the constants (default :data:`ENERGY_TUNING`).

    Returns:
        ``(start_s, end_s)``: copies, same shapes; only edges of quiet pauses move (towards
        the speech), and a segment whose new edges cross keeps its old ones.
    """
    t = tuning or ENERGY_TUNING
    start_s, end_s = start_s.clone(), end_s.clone()
    *_, pauses = _pauses_between(x, start_s, end_s, t)
    if pauses.numel() == 0:
        return start_s, end_s
    return _move_pause_edges(
        x, start_s, end_s, pauses, _trim_edges, sample_rate=sample_rate, tuning=t
    )


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
        tuning: the constants (default :data:`ENERGY_TUNING`).

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
        level = _frame_levels(x, first[rows], span, 1, sample_rate=sample_rate, tuning=t)
        step = torch.arange(span)
        time_s = (first[rows, None] + step[None, :]).double() * hop / sample_rate
        valid = step[None, :] < frames[rows, None]
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
#: spectra; see :func:`place_edges_by_likelihood`).
_LR_BLOCK = 48
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
       past them.
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
    6. Filling: a gap shorter than ``lr_fill_max_s`` that starts at most ``lr_fill_span_s``
       before the offset (or ends at most as far after the onset) is filled when the mean
       evidence of that edge's window over the gap's frames (at least 2) reaches
       ``lr_fill_eta`` (a false gap inside a word).

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
        tuning: the constants (default :data:`ENERGY_TUNING`).

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
    if bursty:
        t = replace(t, lr_search_s=t.lr_bursty_search_s, lr_eta=t.lr_bursty_eta)
        geo = _lr_geometry(gap_lo[pauses], gap_hi[pauses], sample_rate=sample_rate, tuning=t)
    noise, count = _lr_noise(x, geo, live, tuning=t)
    short = torch.nonzero(gap_hi - gap_lo < t.lr_fill_max_s).flatten()
    new_end, new_start = end_s.clone(), start_s.clone()
    fill = torch.zeros(gap_lo.numel(), dtype=torch.bool)
    stationary_range_db = None if bursty else survey.median_range_db()
    edges = _LrEdges(geo, live, count, gap_lo[short], gap_hi[short], t, stationary_range_db)
    for placed in edges.run(x, noise):
        index, offset, onset, filled = placed
        new_end[pauses[live[index]]] = offset
        new_start[pauses[live[index]] + 1] = onset
        fill[short[filled]] = True
    start_s, end_s = _unless_crossed(start_s, end_s, new_start, new_end)
    keep_end = torch.cat([~fill, fill.new_ones(1)])
    keep_start = torch.cat([fill.new_ones(1), ~fill])
    return start_s[keep_start], end_s[keep_end]


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
    ) -> None:
        self.geo, self.live, self.count, self.t = geo, live, count, tuning
        # Under stationary noise the recording's median speech range, dB (None: bursty noise).
        self.stationary_range_db = stationary_range_db
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


# --------------------------------------------------------------------------------------------
# Backends "silero" and "webrtc": the signal at their rate, a stretch at a time
# --------------------------------------------------------------------------------------------
#: Reach of :func:`~app.pipeline.normalize.resample`'s kernel, in samples of the lower rate
#: (16 zero crossings / 0.945 roll-off, rounded up with room to spare).
_RESAMPLE_REACH = 32


def _stretch_at_rate(
    x: torch.Tensor, *, sample_rate: int, rate: int, lo: int, hi: int
) -> torch.Tensor:
    """Samples ``lo … hi − 1`` of ``resample(x, sample_rate, rate)``, zero outside its
    ``ceil(time · rate / sample_rate)`` samples; float32 on the CPU, shape ``(hi − lo,)``.

    Only the input samples the stretch needs are resampled: a stretch starting at a multiple
    of the resampler's input period, with a margin of the kernel's reach (zero beyond the
    signal's ends, as the whole-signal resampling pads), so the values equal the whole-signal
    ones and the memory does not grow with the signal's length.

    Args:
        x: signal, shape ``(time,)``, full scale = 1.0, on any device.
        sample_rate: ``x``'s rate, Hz.
        rate: the rate of the stretch, Hz.
        lo: first sample of the stretch, at ``rate`` (may be negative).
        hi: end (exclusive), ``≥ lo``.
    """
    n = x.shape[-1]
    if sample_rate == rate:
        part = x[min(max(lo, 0), n) : min(max(hi, 0), n)].detach().float().cpu()
        before = min(max(0, -lo), hi - lo)
        return F.pad(part, (before, hi - lo - before - part.shape[-1]))
    divisor = math.gcd(sample_rate, rate)
    period_in, period_out = sample_rate // divisor, rate // divisor  # samples per period
    reach = -(-_RESAMPLE_REACH * sample_rate // min(sample_rate, rate) // period_in) + 1
    first = lo // period_out - reach  # in resampler periods
    last = -(-hi // period_out) + reach
    a, b = first * period_in, last * period_in  # input samples
    part = x[min(max(a, 0), n) : min(max(b, 0), n)].detach().float().cpu()
    before = min(max(0, -a), b - a)
    stretch = F.pad(part, (before, b - a - before - part.shape[-1]))
    origin = first * period_out
    y = _zero_outside(resample(stretch, sample_rate, rate), origin, -(-n * rate // sample_rate))
    return y[lo - origin : hi - origin]


# --------------------------------------------------------------------------------------------
# Backend "silero"
# --------------------------------------------------------------------------------------------
#: Silero's chunk, samples at 16 kHz.
SILERO_CHUNK = 512
SILERO_RATE = 16000
#: Chunks each parallel stream runs before its own part (≈ 1 s), and the shortest own part
#: (≈ 8 s): long signals are cut into parallel streams, one batch row each.
_SILERO_WARMUP = 32
_SILERO_MIN_STREAM = 256
_SILERO_MAX_STREAMS = 64
#: Chunk steps whose audio is prepared at once (bounds the memory: ≤ 64 streams × 32 chunks
#: × 512 samples, 4 MiB).
_SILERO_BLOCK_STEPS = 32
_SILERO_LOCK = threading.Lock()


@lru_cache(maxsize=1)
def silero_model() -> torch.jit.ScriptModule:
    """The Silero VAD TorchScript model shipped in the ``silero-vad`` wheel (loaded once).

    Importing ``silero_vad`` sets torch's thread count to 1; the previous count is restored.
    """
    threads = torch.get_num_threads()
    try:
        import silero_vad

        model = silero_vad.load_silero_vad(onnx=False)
    finally:
        torch.set_num_threads(threads)
    model.eval()
    return model


def silero_speech_probability(
    x: torch.Tensor, *, sample_rate: int, hop_length: int
) -> torch.Tensor:
    """Silero VAD's speech probability, interpolated onto the frame grid.

    The signal is resampled to 16 kHz and cut into 512-sample chunks (the last one zero-padded);
    chunk ``j`` covers ``[512 j, 512 j + 512)`` and its probability is placed at its centre.
    The model is recurrent, so it steps through the chunks in order; to batch it, a signal of
    more than 16 s is split into up to 64 parallel streams (one batch row each, ≥ 8 s apiece),
    each of which first runs over the 1 s of audio before its part so its state is warm. The
    model runs on the CPU (one call per chunk step, under a lock: it keeps state). The audio
    of :data:`_SILERO_BLOCK_STEPS` steps is resampled at a time (:func:`_stretch_at_rate`), so
    memory beyond the signal is bounded plus one probability per chunk and a few numbers per
    frame.

    Args:
        x: signal, shape ``(time,)``, full scale = 1.0.
        sample_rate: Hz.
        hop_length: samples between frames.

    Returns:
        Tensor of shape ``(1 + time // hop_length,)`` on ``x``'s device, in ``[0, 1]``.
    """
    n_frames = 1 + x.shape[-1] // hop_length
    length = -(-x.shape[-1] * SILERO_RATE // sample_rate)  # samples at 16 kHz
    n_chunks = max(1, -(-length // SILERO_CHUNK))
    streams = max(1, min(_SILERO_MAX_STREAMS, n_chunks // _SILERO_MIN_STREAM))
    own = -(-n_chunks // streams)
    warm = _SILERO_WARMUP if streams > 1 else 0
    first = torch.arange(streams) * own - warm
    first[0] = 0  # the first stream starts at the beginning, with a cold state like Silero's
    model = silero_model()
    out = torch.empty(streams, own + warm)
    with _SILERO_LOCK, torch.inference_mode():
        model.reset_states()
        for step in range(0, own + warm, _SILERO_BLOCK_STEPS):
            count = min(_SILERO_BLOCK_STEPS, own + warm - step)
            # Each stream's next chunks (zero before the signal and after its last chunk).
            audio = torch.stack(
                [
                    _stretch_at_rate(
                        x,
                        sample_rate=sample_rate,
                        rate=SILERO_RATE,
                        lo=(start + step) * SILERO_CHUNK,
                        hi=(start + step + count) * SILERO_CHUNK,
                    ).view(count, SILERO_CHUNK)
                    for start in first.tolist()
                ],
                dim=1,
            )  # (step, stream, chunk)
            for j in range(count):
                out[:, step + j] = model(audio[j], SILERO_RATE).reshape(-1)
        model.reset_states()
    offset = torch.full((streams,), warm)
    offset[0] = 0
    take = offset[:, None] + torch.arange(own)[None, :]
    probs = out.gather(1, take).reshape(-1)[:n_chunks]
    # Chunk centres → frame centres (linear interpolation, constant beyond the ends).
    centre = torch.arange(n_frames, dtype=torch.float64) * (hop_length * SILERO_RATE / sample_rate)
    position = ((centre - SILERO_CHUNK / 2) / SILERO_CHUNK).clamp(0, n_chunks - 1)
    lo = position.floor().long()
    hi = (lo + 1).clamp(max=n_chunks - 1)
    frac = (position - lo).float()
    prob = probs[lo] * (1 - frac) + probs[hi] * frac
    return prob.clamp(0.0, 1.0).to(x.device)


# --------------------------------------------------------------------------------------------
# Backend "webrtc"
# --------------------------------------------------------------------------------------------
_WEBRTC_RATES = (8000, 16000, 32000, 48000)
#: WebRTC frames converted to 16-bit PCM at a time (≤ 7.7 s of audio).
_WEBRTC_BLOCK_FRAMES = 256


def webrtc_speech_probability(
    x: torch.Tensor,
    *,
    sample_rate: int,
    hop_length: int,
    mode: int = 2,
    frame_ms: int = 30,
) -> torch.Tensor:
    """WebRTC VAD decisions (0 or 1) on the frame grid.

    The signal is converted to 16-bit PCM (resampled to 16 kHz unless the rate is 8, 16, 32 or
    48 kHz) and cut into ``frame_ms`` frames (the last one zero-padded); each grid frame takes
    the decision of the WebRTC frame holding its centre. The library decides one frame per call
    (one detector, so its state carries from frame to frame); :data:`_WEBRTC_BLOCK_FRAMES`
    frames are converted at a time (:func:`_stretch_at_rate`), so memory beyond the signal is
    bounded plus a few numbers per frame.

    Args:
        x: signal, shape ``(time,)``, full scale = 1.0.
        sample_rate: Hz.
        hop_length: samples between frames.
        mode: aggressiveness 0–3 (3 rejects the most non-speech). Default 2.
        frame_ms: 10, 20 or 30.

    Returns:
        Tensor of shape ``(1 + time // hop_length,)`` on ``x``'s device, values 0.0 or 1.0.
    """
    import webrtcvad

    n_frames = 1 + x.shape[-1] // hop_length
    rate = sample_rate if sample_rate in _WEBRTC_RATES else 16000
    length = rate * frame_ms // 1000  # samples per WebRTC frame
    samples = -(-x.shape[-1] * rate // sample_rate)  # at `rate`
    count = max(1, -(-samples // length))
    detector = webrtcvad.Vad(mode)
    decisions = torch.empty(count)
    for first in range(0, count, _WEBRTC_BLOCK_FRAMES):
        frames = min(_WEBRTC_BLOCK_FRAMES, count - first)
        y = _stretch_at_rate(
            x, sample_rate=sample_rate, rate=rate, lo=first * length, hi=(first + frames) * length
        )
        pcm = (y.clamp(-1, 1) * 32767).round().to(torch.int16).view(frames, length).numpy()
        decisions[first : first + frames] = torch.tensor(
            [detector.is_speech(frame.tobytes(), rate) for frame in pcm], dtype=torch.float32
        )
    centre = torch.arange(n_frames, dtype=torch.float64) * (hop_length * rate / sample_rate)
    index = torch.div(centre, length, rounding_mode="floor").long().clamp(0, count - 1)
    return decisions[index].to(x.device)


# --------------------------------------------------------------------------------------------
# Trimming and pause shortening
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TimeMap:
    """Piecewise-linear map between the times of processed (output) and original (input) audio.

    Each piece is a stretch of input copied unchanged to the output; between pieces, input was
    cut out. Pieces are stored in samples (exact) and exposed in seconds.

    Attributes:
        sample_rate: Hz.
        pieces_samples: ``(output_start, input_start, length)`` per piece, samples, in order,
            contiguous in the output (each piece starts where the previous one ends).
        input_samples: length of the input, samples.
    """

    sample_rate: int
    pieces_samples: tuple[tuple[int, int, int], ...]
    input_samples: int

    @classmethod
    def identity(cls, num_samples: int, sample_rate: int) -> TimeMap:
        """The map of unprocessed audio of ``num_samples`` samples."""
        pieces = ((0, 0, num_samples),) if num_samples else ()
        return cls(sample_rate, pieces, num_samples)

    @property
    def pieces(self) -> list[tuple[float, float, float]]:
        """``(output_start_s, input_start_s, duration_s)`` per piece, seconds."""
        sr = self.sample_rate
        return [(o / sr, i / sr, n / sr) for o, i, n in self.pieces_samples]

    @property
    def output_samples(self) -> int:
        return sum(n for _, _, n in self.pieces_samples)

    @property
    def output_duration_s(self) -> float:
        """Duration of the processed audio, seconds (its sample count / ``sample_rate``)."""
        return self.output_samples / self.sample_rate

    @property
    def input_duration_s(self) -> float:
        return self.input_samples / self.sample_rate

    def _table(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        table = torch.tensor(self.pieces_samples or [(0, 0, 0)], dtype=torch.float64)
        return (
            table[:, 0] / self.sample_rate,
            table[:, 1] / self.sample_rate,
            table[:, 2] / (self.sample_rate),
        )

    def to_input(self, t: float | torch.Tensor) -> float | torch.Tensor:
        """Input time of output time ``t`` (seconds; a float or a tensor of any shape).

        Inside a piece the map is a shift; at a cut the time maps to the start of the next
        piece; times past the end extrapolate the last piece.
        """
        out_start, in_start, _ = self._table()
        times = torch.as_tensor(t, dtype=torch.float64)
        k = (torch.searchsorted(out_start, times, right=True) - 1).clamp(min=0)
        mapped = in_start[k] + (times - out_start[k])
        return float(mapped) if not isinstance(t, torch.Tensor) else mapped

    def to_output(self, t: float | torch.Tensor) -> float | torch.Tensor:
        """Output time of input time ``t`` (seconds; a float or a tensor of any shape).

        Times inside cut-out input map to the output point where the cut was joined (the end of
        the previous piece); times before the first piece map to 0, after the last piece to the
        output's end.
        """
        out_start, in_start, length = self._table()
        times = torch.as_tensor(t, dtype=torch.float64)
        k = (torch.searchsorted(in_start, times, right=True) - 1).clamp(min=0)
        offset = (times - in_start[k]).clamp(min=0.0)
        mapped = out_start[k] + torch.minimum(offset, length[k])
        mapped = torch.where(times < in_start[0], torch.zeros_like(mapped), mapped)
        return float(mapped) if not isinstance(t, torch.Tensor) else mapped


def trim_and_shorten(
    samples: torch.Tensor,
    segments: Sequence[SpeechSegment] | Sequence[tuple[float, float]],
    *,
    sample_rate: int,
    trim: bool = True,
    padding_ms: float = 100.0,
    max_pause_ms: float | None = None,
    crossfade_ms: float = 5.0,
) -> tuple[torch.Tensor, TimeMap]:
    """Cut leading/trailing silence and shorten long pauses between speech segments.

    Each segment is widened by ``padding_ms`` on both sides (overlaps merged). With ``trim``,
    audio before the first and after the last widened segment is removed. With ``max_pause_ms``,
    every gap between widened segments longer than that keeps only ``max_pause_ms`` of silence:
    its first and last halves. Joins are smoothed by a ``crossfade_ms`` raised-cosine crossfade
    of the audio on both sides of the cut, which keeps the output length (and the time map)
    exact. With no segments, the signal is returned unchanged.

    Args:
        samples: tensor of shape ``(..., time)`` (channels are cut alike).
        segments: speech segments (:class:`SpeechSegment` or ``(start_s, end_s)`` pairs), in
            seconds of ``samples``.
        sample_rate: Hz.
        trim: remove leading and trailing silence. Default true.
        padding_ms: silence kept around each segment, ms (≥ 0). Default 100.
        max_pause_ms: longest pause kept between segments, ms (≥ 0; ``None``: pauses are kept).
        crossfade_ms: crossfade at each join, ms (≥ 0; at most the audio cut out). Default 5.

    Returns:
        ``(processed, time_map)``: the processed samples, shape ``(..., time')``, and the
        :class:`TimeMap` with ``time_map.output_samples == time'``.

    Raises:
        InvalidOptions: a duration is negative or not finite, or ``sample_rate`` is not positive.
    """
    if not sample_rate > 0:
        raise InvalidOptions(f"sample_rate={sample_rate} must be > 0 Hz.")
    for name, value in (
        ("padding_ms", padding_ms),
        ("max_pause_ms", max_pause_ms),
        ("crossfade_ms", crossfade_ms),
    ):
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise InvalidOptions(f"{name}={value} must be a finite duration ≥ 0 ms.")
    n = samples.shape[-1]
    bounds = sorted(_bounds(s) for s in segments)
    if not bounds or n == 0 or (not trim and max_pause_ms is None):
        return samples, TimeMap.identity(n, sample_rate)
    pad = int(round(padding_ms * sample_rate / 1000.0))
    regions: list[list[int]] = []
    for start_s, end_s in bounds:
        a = max(0, int(math.floor(start_s * sample_rate)) - pad)
        b = min(n, int(math.ceil(end_s * sample_rate)) + pad)
        if b <= a:
            continue
        if regions and a <= regions[-1][1]:
            regions[-1][1] = max(regions[-1][1], b)
        else:
            regions.append([a, b])
    if not regions:
        return samples, TimeMap.identity(n, sample_rate)
    if not trim:
        regions[0][0], regions[-1][1] = 0, n
    # Kept input stretches: the regions plus, between them, the whole gap or its two ends.
    keep: list[tuple[int, int]] = []

    def add(a: int, b: int) -> None:
        if keep and keep[-1][1] == a:
            keep[-1] = (keep[-1][0], b)
        elif b > a:
            keep.append((a, b))

    limit = None if max_pause_ms is None else int(round(max_pause_ms * sample_rate / 1000.0))
    for number, (a, b) in enumerate(regions):
        if number:
            gap_start = regions[number - 1][1]
            if limit is None or a - gap_start <= limit:
                a = gap_start
            else:
                add(gap_start, gap_start + limit // 2)
                a -= limit - limit // 2
        add(a, b)
    pieces, position = [], 0
    for a, b in keep:
        if b > a:
            pieces.append((position, a, b - a))
            position += b - a
    # Slices joined into one new tensor: memory beyond the input is the output alone.
    out = torch.cat([samples[..., i : i + length] for _, i, length in pieces], dim=-1)
    fade = int(round(crossfade_ms * sample_rate / 1000.0))
    if fade:
        _crossfade_joins(samples, out, pieces, fade)
    return out, TimeMap(sample_rate, tuple(pieces), n)


def _crossfade_joins(
    samples: torch.Tensor,
    out: torch.Tensor,
    pieces: list[tuple[int, int, int]],
    fade: int,
) -> None:
    """Crossfade ``out`` (in place) before each join with the input that preceded the next
    piece."""
    for (_, prev_in, prev_len), (out_start, in_start, length) in zip(
        pieces[:-1], pieces[1:], strict=True
    ):
        k = min(fade, in_start - (prev_in + prev_len), prev_len, length)
        if k <= 0:
            continue
        ramp = 0.5 - 0.5 * torch.cos(
            torch.arange(1, k + 1, device=out.device, dtype=torch.float64) * math.pi / (k + 1)
        )
        ramp = ramp.to(out.dtype if out.is_floating_point() else torch.float32)
        tail = out[..., out_start - k : out_start]
        incoming = samples[..., in_start - k : in_start]
        mixed = tail * (1 - ramp) + incoming * ramp
        out[..., out_start - k : out_start] = mixed.to(out.dtype)


# --------------------------------------------------------------------------------------------
# Phrases and pauses
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pause:
    """A silent interval between two speech segments.

    Attributes:
        start_s: end of the speech before it, seconds.
        end_s: start of the speech after it, seconds.
        kind: ``"boundary"`` (a phrase ends here) or ``"hesitation"`` (inside a phrase).
        pitch_reset_st: median F0 just after minus just before, semitones (NaN when either
            side has no voiced frame or no F0 was available).
        energy_reset_db: mean energy just after minus just before, dB.
    """

    start_s: float
    end_s: float
    kind: PauseKind
    pitch_reset_st: float
    energy_reset_db: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class Phrase:
    """Speech between two phrase boundaries.

    Attributes:
        start_s: onset, seconds.
        end_s: offset, seconds.
        speech_s: speech time inside the phrase (its hesitation pauses and shorter gaps
            excluded), seconds.
        hesitations: number of hesitation pauses inside it.
    """

    start_s: float
    end_s: float
    speech_s: float
    hesitations: int

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class Phrasing:
    """Phrases and the pauses (≥ ``min_pause_ms``) between and inside them, in time order."""

    phrases: tuple[Phrase, ...]
    pauses: tuple[Pause, ...]


def phrases(
    vad_result: VadResult,
    *,
    f0_hz: torch.Tensor | None = None,
    energy_db: torch.Tensor | None = None,
    min_pause_ms: float = 200.0,
    boundary_pause_ms: float = 500.0,
    reset_semitones: float = 1.5,
    reset_db: float = 3.0,
    context_ms: float = 300.0,
) -> Phrasing:
    """Split speech into phrases at pauses; tell phrase ends from hesitations.

    Every gap of at least ``min_pause_ms`` between speech segments is a pause. A pause of at
    least ``boundary_pause_ms`` ends a phrase. A shorter one ends a phrase when the speech
    after it resets: its median F0 over the first ``context_ms`` of voiced frames is at least
    ``reset_semitones`` above the median over the last ``context_ms`` before the pause (pitch
    declines through a phrase and resets at the next), or its mean energy is at least
    ``reset_db`` above; otherwise it is a hesitation inside the phrase. Pauses shorter than
    ``min_pause_ms`` are not pauses (they stay inside the phrase, not counted).

    Args:
        vad_result: the voice activity (its segments, frame grid, ``energy_db`` and ``f0_hz``).
        f0_hz: F0 per frame on the same grid, Hz, 0 (or NaN) where unvoiced, shape
            ``(frame,)``; default ``vad_result.f0_hz`` (without either, pitch is not used).
        energy_db: energy per frame, dB, shape ``(frame,)``; default ``vad_result.energy_db``.
        min_pause_ms: shortest pause, ms (≥ 0). Default 200.
        boundary_pause_ms: pauses this long always end a phrase, ms (≥ ``min_pause_ms``).
            Default 500.
        reset_semitones: pitch reset that marks a boundary, semitones (≥ 0). Default 1.5.
        reset_db: energy reset that marks a boundary, dB (≥ 0). Default 3.
        context_ms: span on each side of a pause the resets are measured over, ms (> 0).
            Default 300.

    Returns:
        A :class:`Phrasing`.

    Raises:
        InvalidOptions: a duration is negative, ``min_pause_ms > boundary_pause_ms``, or a track
            does not match the frame grid.
    """
    for name, value in (
        ("min_pause_ms", min_pause_ms),
        ("boundary_pause_ms", boundary_pause_ms),
        ("reset_semitones", reset_semitones),
        ("reset_db", reset_db),
    ):
        if not (math.isfinite(value) and value >= 0):
            raise InvalidOptions(f"phrases {name}={value} must be finite and ≥ 0.")
    if not (math.isfinite(context_ms) and context_ms > 0):
        raise InvalidOptions(f"phrases context_ms={context_ms} must be > 0 ms.")
    if min_pause_ms > boundary_pause_ms:
        raise InvalidOptions(
            f"phrases min_pause_ms={min_pause_ms} exceeds boundary_pause_ms={boundary_pause_ms}."
        )
    n_frames = vad_result.prob.shape[-1]
    f0 = vad_result.f0_hz if f0_hz is None else f0_hz
    energy = vad_result.energy_db if energy_db is None else energy_db
    for name, track in (("f0_hz", f0), ("energy_db", energy)):
        if track is not None and tuple(track.shape) != (n_frames,):
            raise InvalidOptions(
                f"phrases {name} has shape {tuple(track.shape)}; the frame grid has "
                f"({n_frames},) frames."
            )
    segments = vad_result.segments
    if not segments:
        return Phrasing((), ())
    starts = torch.tensor([s.start_s for s in segments], dtype=torch.float64)
    ends = torch.tensor([s.end_s for s in segments], dtype=torch.float64)
    gaps = starts[1:] - ends[:-1]
    is_pause = gaps >= min_pause_ms / 1000.0 - 1e-9
    pause_index = torch.nonzero(is_pause).flatten()
    p_start, p_end = ends[:-1][pause_index], starts[1:][pause_index]
    hop_s = vad_result.hop_length / vad_result.sample_rate
    width = max(1, int(round(context_ms / 1000.0 / hop_s)))
    energy_reset = _side_difference(energy, p_start, p_end, hop_s, width, "mean")
    if f0 is not None:
        semitones = 12.0 * torch.log2(f0.double().clamp_min(1e-3) / 55.0)
        semitones = torch.where(f0.double() > 0, semitones, torch.nan)  # NaN f0 stays NaN
        pitch_reset = _side_difference(semitones, p_start, p_end, hop_s, width, "median")
    else:
        pitch_reset = torch.full_like(p_start, torch.nan)
    duration = p_end - p_start
    boundary = (
        (duration >= boundary_pause_ms / 1000.0 - 1e-9)
        | (pitch_reset >= reset_semitones)
        | (energy_reset >= reset_db)
    )
    pauses = tuple(
        Pause(a, b, "boundary" if k else "hesitation", r, e)
        for a, b, k, r, e in zip(
            p_start.tolist(),
            p_end.tolist(),
            boundary.tolist(),
            pitch_reset.tolist(),
            energy_reset.tolist(),
            strict=True,
        )
    )
    # A phrase runs from a segment after a boundary to the segment before the next boundary.
    cut = torch.zeros(len(segments), dtype=torch.bool)
    cut[pause_index[boundary] + 1] = True
    cut[0] = True
    phrase_id = torch.cumsum(cut.long(), 0) - 1
    count = int(phrase_id[-1]) + 1
    speech = torch.zeros(count, dtype=torch.float64).index_add_(0, phrase_id, ends - starts)
    first = torch.full((count,), math.inf, dtype=torch.float64).scatter_reduce(
        0, phrase_id, starts, "amin"
    )
    last = torch.zeros(count, dtype=torch.float64).scatter_reduce(0, phrase_id, ends, "amax")
    hesitation_count = torch.zeros(count, dtype=torch.long)
    hesitation_count.index_add_(
        0, phrase_id[pause_index[~boundary]], torch.ones_like(pause_index[~boundary])
    )
    phrase_list = tuple(
        Phrase(a, b, s, h)
        for a, b, s, h in zip(
            first.tolist(), last.tolist(), speech.tolist(), hesitation_count.tolist(), strict=True
        )
    )
    return Phrasing(phrase_list, pauses)


def _side_difference(
    track: torch.Tensor | None,
    before_end_s: torch.Tensor,
    after_start_s: torch.Tensor,
    hop_s: float,
    width: int,
    how: str,
) -> torch.Tensor:
    """Statistic of ``track`` over ``width`` frames after each pause minus over ``width`` frames
    before it (NaN values ignored; NaN when a side has none). Shape ``(pause,)``."""
    count = before_end_s.numel()
    if track is None or count == 0:
        return torch.full((count,), torch.nan, dtype=torch.float64)
    values = track.detach().double().cpu()
    n = values.shape[-1]
    steps = torch.arange(width)
    last_before = torch.floor(before_end_s / hop_s).long()  # frame centred before the offset
    first_after = torch.ceil(after_start_s / hop_s).long()
    before = last_before[:, None] - steps[None, :]
    after = first_after[:, None] + steps[None, :]

    def gather(index: torch.Tensor) -> torch.Tensor:
        inside = (index >= 0) & (index < n)
        return torch.where(inside, values[index.clamp(0, n - 1)], torch.nan)

    if how == "median":
        return gather(after).nanmedian(dim=1).values - gather(before).nanmedian(dim=1).values
    return gather(after).nanmean(dim=1) - gather(before).nanmean(dim=1)


@dataclass(frozen=True)
class PauseStatistics:
    """Pause and fluency measures.

    Attributes:
        duration_s: signal duration, seconds.
        speaking_time_s: from the first speech onset to the last offset, seconds.
        articulation_time_s: speech time without pauses (the segments' total), seconds.
        speech_ratio: ``articulation_time_s / duration_s``.
        num_pauses: pauses (≥ ``min_pause_ms``) inside the speaking time, boundaries and
            hesitations.
        num_hesitations: of which hesitations.
        num_phrases: phrases.
        mean_pause_s, median_pause_s, longest_pause_s: over the pauses, seconds (0 without
            pauses).
        pauses_per_minute: ``num_pauses`` per minute of speaking time.
        phrases_per_minute: ``num_phrases`` per minute of speaking time (the speech rate in
            phrases).
        mean_phrase_s: mean phrase duration, seconds (0 without phrases).
    """

    duration_s: float
    speaking_time_s: float
    articulation_time_s: float
    speech_ratio: float
    num_pauses: int
    num_hesitations: int
    num_phrases: int
    mean_pause_s: float
    median_pause_s: float
    longest_pause_s: float
    pauses_per_minute: float
    phrases_per_minute: float
    mean_phrase_s: float


def pause_statistics(vad_result: VadResult, phrasing: Phrasing) -> PauseStatistics:
    """Summarize pauses and phrases for fluency scoring.

    Args:
        vad_result: the voice activity (segments and duration).
        phrasing: :func:`phrases` of the same ``vad_result``.

    Returns:
        A :class:`PauseStatistics`.
    """
    segments = vad_result.segments
    articulation = vad_result.speech_time_s
    speaking = segments[-1].end_s - segments[0].start_s if segments else 0.0
    lengths = torch.tensor([p.duration_s for p in phrasing.pauses], dtype=torch.float64)
    has_pauses = lengths.numel() > 0
    per_minute = 60.0 / speaking if speaking > 0 else 0.0
    return PauseStatistics(
        duration_s=vad_result.duration_s,
        speaking_time_s=speaking,
        articulation_time_s=articulation,
        speech_ratio=articulation / vad_result.duration_s if vad_result.duration_s > 0 else 0.0,
        num_pauses=len(phrasing.pauses),
        num_hesitations=sum(p.kind == "hesitation" for p in phrasing.pauses),
        num_phrases=len(phrasing.phrases),
        mean_pause_s=float(lengths.mean()) if has_pauses else 0.0,
        median_pause_s=float(lengths.quantile(0.5)) if has_pauses else 0.0,
        longest_pause_s=float(lengths.max()) if has_pauses else 0.0,
        pauses_per_minute=len(phrasing.pauses) * per_minute,
        phrases_per_minute=len(phrasing.phrases) * per_minute,
        mean_phrase_s=(
            sum(p.duration_s for p in phrasing.phrases) / len(phrasing.phrases)
            if phrasing.phrases
            else 0.0
        ),
    )
