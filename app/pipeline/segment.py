"""Speech segmentation: voice activity, silence trimming and pause shortening, phrases and pauses.

Voice activity detection (:func:`vad`) has three backends that all produce a speech probability
on the pipeline's frame grid (frame ``t`` centred at sample ``t * hop_length``, ``1 + time //
hop_length`` frames) and go through the same post-processing into speech segments:

* ``"energy"`` — ours, signal-based (:mod:`app.pipeline.energy_vad`): band energy against an
  adaptive noise floor, periodicity and spectral flatness, with a hangover that grows as the
  signal-to-noise ratio falls; the edges of its pauses are then re-placed against the noise
  inside each pause (:mod:`app.pipeline.pause_edges`: a refinement at a 2.5 ms step, detached
  weak sounds next to quiet pauses, a sub-band likelihood-ratio change point next to noisy
  ones, with a foreground-against-babble classifier trained on the recording in babble,
  background blips dropped). It is the ``auto`` default: the most accurate of the three
  on the evaluation recordings and ≈ 20× faster than silero-vad (docs/performance.md). Memory
  beyond the signal is bounded (blocks of frames) plus a few numbers per frame.
* ``"silero"`` — the Silero VAD model shipped in the ``silero-vad`` package (its TorchScript
  weights, loaded from the package, never from a hub), 512-sample chunks at 16 kHz.
* ``"webrtc"`` — the WebRTC VAD (``webrtcvad-wheels``), 10/20/30 ms frames of 16-bit PCM.

(The two models: :mod:`app.pipeline.vad_models`.) All three prepare their input a bounded
stretch at a time, so memory beyond the signal does not grow with its length, apart from a few
numbers per frame.

:func:`trim_and_shorten` cuts leading/trailing silence and shortens long inner pauses, and returns
a :class:`TimeMap` from output times back to input times. :func:`phrases` splits speech into
phrases at pauses, using pitch reset and energy reset to tell phrase ends from hesitations, and
:func:`pause_statistics` summarizes the pauses for fluency scoring.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F

from app.errors import InvalidOptions
from app.pipeline.energy_vad import band_energy_db, energy_speech_probability
from app.pipeline.pause_edges import (
    drop_background_blips,
    place_edges_by_likelihood,
    refine_pause_edges,
    trim_detached_weak_sounds,
)
from app.pipeline.vad_models import silero_speech_probability, webrtc_speech_probability

VadBackend = Literal["auto", "energy", "silero", "webrtc"]
PauseKind = Literal["boundary", "hesitation"]

#: The backend ``"auto"`` selects (the most accurate within the speed budget; see
#: docs/quality.md, "Voice activity").
AUTO_BACKEND: Literal["energy", "silero", "webrtc"] = "energy"


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
    (:func:`place_edges_by_likelihood`; in babble with a foreground-against-babble classifier
    trained on the recording, :mod:`app.pipeline.foreground`), and short segments inside a
    pause that do not stand out from its noise are dropped (:func:`drop_background_blips`).

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
