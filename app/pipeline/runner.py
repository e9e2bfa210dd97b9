"""Run the steps an options object asks for, timing each: decode → normalize → features."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from app.errors import AudioprocError, InvalidOptions
from app.models.options import FeatureOptions, ProcessingOptions
from app.pipeline import clean as C
from app.pipeline import diarize as DZ
from app.pipeline import normalize as N
from app.pipeline import segment as S
from app.pipeline.audio import Audio, InputInfo
from app.pipeline.decode import DecodeLimits, decode
from app.pipeline.dynamics import DynamicsReport
from app.pipeline.features import FeatureArray, compute_features
from app.pipeline.features.frames import FrameSpec, pad_signal
from app.pipeline.features.presets import resolve
from app.pipeline.features.spectral import stft_power
from app.pipeline.segment import PauseStatistics, Phrasing, TimeMap


def _source_digest(root: Path) -> str:
    """The first 12 hex digits of SHA-256 over the Python sources under ``root`` (each file's
    relative path and bytes, in path order). Over the pipeline's own package, any change to the
    code gives new result ids, so a cache never serves a result an older pipeline
    computed, even when a change that alters outputs forgets to bump the release."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


#: Part of every result id and recorded in every result: the release (bumped when outputs change
#: on purpose) and the digest of the pipeline's sources (:func:`_source_digest`).
PIPELINE_VERSION = f"3+{_source_digest(Path(__file__).resolve().parent)}"


#: A sample at or above this magnitude counts as clipped.
CLIP_LEVEL = 0.999


@dataclass(frozen=True)
class OutputInfo:
    """The processed audio. Levels are after normalization and compression (LUFS per BS.1770-4,
    dBFS sample peak; ``-inf`` for digital silence); ``dynamics`` says what the compressor and
    limiter did, when they ran."""

    sample_rate: int
    channels: int
    duration_s: float
    loudness_lufs: float
    peak_dbfs: float
    gain_db: float
    dynamics: DynamicsReport | None = None


@dataclass(frozen=True)
class Quality:
    """Properties of the input that matter downstream.

    Attributes:
        clipping_ratio: fraction of input samples at or above 0.999 full scale.
        dc_offset: largest per-channel mean of the input, full scale = 1.
        input_loudness_lufs: BS.1770-4 integrated loudness before any gain, at the output rate.
        silent: the input is below the −70 LUFS absolute gate; it was not amplified.
        cleaning: what the noise stage did (WADA-SNR before/after, gains, wind), if it ran.
    """

    clipping_ratio: float
    dc_offset: float
    input_loudness_lufs: float
    silent: bool
    cleaning: C.CleaningReport | None = None


@dataclass(frozen=True)
class Segment:
    """A stretch of speech (seconds); with diarization, of one speaker and one overlap state.

    Attributes:
        start_s, end_s: bounds, seconds.
        confidence: mean speech probability over the stretch, 0–1.
        speaker: ``"S0"``, ``"S1"``, … with diarization, else ``None``.
        overlap: two or more people talk at once (with overlap detection), else ``None``.
    """

    start_s: float
    end_s: float
    confidence: float
    speaker: str | None = None
    overlap: bool | None = None


@dataclass(frozen=True)
class Segmentation:
    """Voice activity, speakers and phrasing of one result, in the processed audio's timeline.

    Attributes:
        backend: the VAD that ran.
        segments: speech segments.
        speech_ratio: speech time / duration of the processed audio.
        prob: speech probability per feature frame, shape ``(frame,)``.
        overlap_prob: probability of overlapped speech per frame, ``(frame,)``, or ``None``.
        num_speakers: speakers found (with diarization), or ``None``.
        phrasing: phrases and pauses (``None`` when ``segment.phrases`` is off).
        pauses: pause statistics of the input (``None`` without phrases).
        time_map: output → input pieces ``(output_start_s, input_start_s, duration_s)`` when
            audio was cut, else ``None`` (the timelines are the same).
    """

    backend: str
    segments: list[Segment]
    speech_ratio: float
    prob: torch.Tensor
    overlap_prob: torch.Tensor | None
    num_speakers: int | None
    phrasing: Phrasing | None
    pauses: PauseStatistics | None
    time_map: TimeMap | None


@dataclass
class PipelineResult:
    input: InputInfo
    output: OutputInfo
    quality: Quality
    features: dict[str, FeatureArray]
    audio: Audio
    steps: list[tuple[str, float]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    segmentation: Segmentation | None = None


def _spectra(padded: Sequence[torch.Tensor], frames: FrameSpec) -> list[torch.Tensor]:
    """Power spectrogram ``(channel, n_fft // 2 + 1, frame)`` of each signal ``(channel, time)``
    padded by :func:`~app.pipeline.features.frames.pad_signal`, with the frames it has alone.

    On CUDA the signals, zero-extended into one batch, go through one STFT. On the CPU each goes
    through its own: the STFT is memory-bound there, and one 5 s signal's frames and spectrum
    (1 MB each) stay in a 2 MB L2 cache where a batch's do not (in torch.profiler, the FFT of
    4 × 5 s at once took 3× as long per signal as one at a time).
    """
    if padded[0].device.type == "cpu":
        return [stft_power(signal, frames, padded=True) for signal in padded]
    power = stft_power(_stack(padded), frames, padded=True)
    edges = 2 * (frames.n_fft // 2)
    return [
        row[..., : frames.num_frames(signal.shape[-1] - edges)]
        for row, signal in zip(power, padded, strict=True)
    ]


def _stack(rows: Sequence[torch.Tensor], scales: Sequence[float] | None = None) -> torch.Tensor:
    """Zero-extend tensors ``(..., length_i)`` of one shape but the last into one ``(batch, ...,
    longest)``, each multiplied by its ``scales`` entry (default: unscaled) on the way.

    A frame-major spectrogram (the STFT's own layout) stays frame-major, and only the
    extensions are zero-filled: every row is written once, in order.
    """
    first, longest = rows[0], max(row.shape[-1] for row in rows)
    if first.dim() >= 2 and first.stride(-1) != 1:
        stacked = first.new_empty(len(rows), *first.shape[:-2], longest, first.shape[-2])
        stacked = stacked.transpose(-1, -2)
    else:
        stacked = first.new_empty(len(rows), *first.shape[:-1], longest)
    for index, (target, row) in enumerate(zip(stacked, rows, strict=True)):
        length = row.shape[-1]
        if scales is None:
            target[..., :length] = row
        else:
            torch.mul(row, scales[index], out=target[..., :length])
        if length < longest:
            target[..., length:] = 0.0
    return stacked


def _mean_over(track: torch.Tensor, start_s: float, end_s: float, frame_rate_hz: float) -> float:
    """Mean of a frame track over ``[start_s, end_s]`` (at least one frame)."""
    first = min(round(start_s * frame_rate_hz), track.shape[-1] - 1)
    last = max(round(end_s * frame_rate_hz), first + 1)
    return float(track[first:last].mean())


def choose_device(setting: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cuda`` without a GPU falls back to CPU."""
    if setting in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


@dataclass
class _Prepared:
    """One input after decoding and rate/channel normalization, before the batched stages."""

    info: InputInfo
    samples: torch.Tensor  # (channel, time) at the output rate
    # What segmentation analyses: ``samples`` before noise suppression and dereverberation (after
    # echo and clicks), (channel, time); ``samples`` itself when those did not run or
    # ``segment.vad`` is off.
    analysis: torch.Tensor
    clipping_ratio: float
    dc_offset: float
    steps: list[tuple[str, float]]
    cleaning: C.CleaningReport | None


class Pipeline:
    """The processing pipeline on one device.

    Kernels (resampling filters, windows, mel filterbanks, DCT matrices) are built on first use
    per parameter set and cached; :meth:`warmup` builds the defaults ahead of the first request.
    """

    def __init__(
        self, device: torch.device, limits: DecodeLimits, *, batch_size: int | None = None
    ) -> None:
        """
        Args:
            device: where tensors live.
            limits: decoding bounds.
            batch_size: most signals described together by :meth:`run_batch`. Default: 32 on
                CUDA; 8 on the CPU, where the STFT runs one signal at a time (see
                :func:`_spectra`) and larger batches of 5 s clips lost to cache misses and
                page faults of their larger buffers (scripts/bench_batch.py).
        """
        self.device = device
        self.limits = limits
        self.batch_size = batch_size or (32 if device.type == "cuda" else 8)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def _timed(self, timings: list[float]) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self._sync()
        timings.append((time.perf_counter() - start) * 1000.0)

    def run(
        self, data: bytes, options: ProcessingOptions, reference: bytes | None = None
    ) -> PipelineResult:
        """Decode, normalize and describe one recording.

        Args:
            data: the uploaded file's bytes.
            options: what to do.
            reference: a second file holding the far-end (loudspeaker) signal whose echo
                ``denoise.echo`` cancels (see :meth:`run_batch`).

        Raises:
            AudioprocError: subclasses for bad input (see :func:`~app.pipeline.decode.decode`)
                and options that do not fit the input.
        """
        outcome = self.run_batch([data], options, reference)[0]
        if isinstance(outcome, AudioprocError):
            raise outcome
        return outcome

    def run_batch(
        self,
        items: Sequence[bytes],
        options: ProcessingOptions,
        reference: bytes | None = None,
    ) -> list[PipelineResult | AudioprocError]:
        """Process several recordings, batching the spectral and feature stages.

        Each input is decoded and brought to the output rate on its own; inputs with the same
        channel count are then padded, up to ``batch_size`` at a time, into one
        ``(batch, channel, time)`` tensor for the loudness gating and the features (the STFT
        runs per signal on the CPU, on the batch on CUDA; see :func:`_spectra`).
        Results equal :meth:`run` on each input alone (within float tolerance). Batch-stage step
        times are shared equally among the inputs.

        ``reference``, when given, is a file of the far-end signal (any format the inputs may
        have): decoded, DC-removed, mixed to mono, brought to the output rate and cut or
        zero-padded to each input's length, it is what echo cancellation subtracts the echo of
        (``denoise.echo`` must be on, without ``echo_reference_channel``).

        Returns:
            Per input, its result, or the :class:`AudioprocError` that rejected it.
        """
        outcomes: list[PipelineResult | AudioprocError | None] = [None] * len(items)
        prepared: dict[int, _Prepared] = {}
        try:
            far_end = self._far_end(reference, options) if reference is not None else None
        except AudioprocError as error:
            return [error for _ in items]
        for index, data in enumerate(items):
            try:
                prepared[index] = self._prepare(data, options, far_end)
            except AudioprocError as error:
                outcomes[index] = error
        groups: dict[int, list[int]] = {}
        for index, item in prepared.items():
            groups.setdefault(item.samples.shape[0], []).append(index)
        for same_channels in groups.values():
            for start in range(0, len(same_channels), self.batch_size):
                indices = same_channels[start : start + self.batch_size]
                results = self._describe([prepared[i] for i in indices], options)
                for index, result in zip(indices, results, strict=True):
                    outcomes[index] = result
        return [outcome for outcome in outcomes if outcome is not None]

    def _far_end(self, data: bytes, options: ProcessingOptions) -> torch.Tensor:
        """The uploaded far-end reference as ``(time,)`` at the output rate.

        Raises:
            InvalidOptions: echo cancellation is off, or a reference channel is named too.
            AudioprocError: the reference file is not decodable audio (its detail says so).
        """
        choice = options.denoise
        if not choice.echo or choice.echo_reference_channel is not None:
            raise InvalidOptions(
                "A `reference` file was sent, so set denoise.echo to true and leave "
                "denoise.echo_reference_channel unset (the far end comes from one place), or "
                "send no reference."
            )
        try:
            decoded, info = decode(data, self.limits)
        except AudioprocError as error:
            raise type(error)(f"The `reference` file: {error.detail}", **error.extra) from error
        samples, _ = N.remove_dc(decoded.samples.to(self.device, non_blocking=True))
        return N.resample(samples.mean(0), info.sample_rate, options.target_sample_rate)

    def _prepare(
        self, data: bytes, options: ProcessingOptions, far_end: torch.Tensor | None = None
    ) -> _Prepared:
        decode_ms: list[float] = []
        normalize_ms: list[float] = []
        with self._timed(decode_ms):
            decoded, info = decode(data, self.limits)
            samples = decoded.samples.to(self.device, non_blocking=True)
        with self._timed(normalize_ms):
            low, high = samples.aminmax()
            clipping_ratio = (
                float((samples.abs() >= CLIP_LEVEL).float().mean())
                if max(-float(low), float(high)) >= CLIP_LEVEL
                else 0.0
            )
            samples, offsets = N.remove_dc(samples)
            samples, reference = C.split_reference(samples, options.denoise)
            samples = N.select_channels(samples, options.channels)
            rate = options.target_sample_rate
            samples = N.resample(samples, info.sample_rate, rate)
            if reference is not None:
                reference = N.resample(reference, info.sample_rate, rate)
            elif far_end is not None:  # the uploaded reference, aligned to this input's length
                length = samples.shape[-1]
                reference = F.pad(far_end[:length], (0, max(0, length - far_end.shape[-1])))
        steps = [("decode", decode_ms[0]), ("normalize", normalize_ms[0])]
        cleaning = None
        analysis = samples
        choice = options.denoise
        if (
            choice.method != "off"
            or choice.wind
            or choice.declick
            or choice.dereverb
            or (choice.echo)
        ):
            clean_ms: list[float] = []
            with self._timed(clean_ms):
                analysis, cleaning = C.remove_interference(
                    samples, sample_rate=rate, options=choice, reference=reference
                )
                samples, cleaning = C.suppress_noise_and_reverb(
                    analysis, cleaning, sample_rate=rate, options=choice
                )
            if options.segment.vad == "off":
                analysis = samples  # nothing analyses it: not kept
            steps.append(("clean", clean_ms[0]))
        return _Prepared(
            info=info,
            samples=samples,
            analysis=analysis,
            clipping_ratio=clipping_ratio,
            dc_offset=float(offsets.abs().max()),
            steps=steps,
            cleaning=cleaning,
        )

    def _describe(self, items: list[_Prepared], options: ProcessingOptions) -> list[PipelineResult]:
        rate = options.target_sample_rate
        config = resolve(options.features, rate)
        frames = config.frames
        level_ms: list[float] = []
        feature_ms: list[float] = []
        with self._timed(level_ms):
            padded = [pad_signal(item.samples, frames) for item in items]
            spectra = _spectra(padded, frames)
            # Loudness is always measured on the default 25 ms / 10 ms framing, so that it does
            # not depend on the feature preset; the default preset's STFT is reused as it is.
            meter = resolve(FeatureOptions(), rate).frames
            window = meter.window(spectra[0].device)
            mean_squares = [
                N.frame_mean_square(
                    spectra[index] if meter == frames else stft_power(item.samples, meter),
                    n_fft=meter.n_fft,
                    window=window,
                    sample_rate=rate,
                    k_weighted=True,
                )  # fmt: skip
                for index, item in enumerate(items)
            ]
            loudness = N.gated_loudness(mean_squares, sample_rate=rate, hop_length=meter.hop_length)
            measured: list[tuple[float, float, N.GainDecision, list[str]]] = []
            for item, lufs in zip(items, loudness, strict=True):
                peak = N.peak_dbfs(item.samples)
                warnings: list[str] = []
                gain = self._loudness_gain(options, item.samples, lufs, peak, warnings)
                measured.append((lufs, peak, gain, warnings))
            amplitudes = [N.db_to_amplitude(m[2].gain_db) for m in measured]
            signals = [
                item.samples * amplitude for item, amplitude in zip(items, amplitudes, strict=True)
            ]
            # The gains are applied while stacking: no extra pass over the batch.
            batch = _stack(padded, amplitudes)
            power = _stack(spectra, [amplitude**2 for amplitude in amplitudes])
        levels = [(m[0] + m[2].gain_db, m[1] + m[2].gain_db) for m in measured]
        dynamics: list[DynamicsReport | None] = [None] * len(items)
        compress_ms: list[float] = []
        if options.compression.enabled:
            with self._timed(compress_ms):
                for index, signal in enumerate(signals):
                    signals[index], dynamics[index] = C.compress(
                        signal, sample_rate=rate, options=options.compression
                    )
                    levels[index] = self._levels(signals[index], rate)
                padded = [pad_signal(signal, frames) for signal in signals]
                batch, power = _stack(padded), _stack(_spectra(padded, frames))
        segment_ms: list[float] = []
        with self._timed(segment_ms):
            # The detectors model the recording's own noise and levels, which noise suppression
            # and compression reshape (their gain floors, musical noise and level riding moved
            # the energy detector's pause edges: boundary F1 at 5 dB SNR 0.88 → 0.68 with the
            # default denoiser, clean speech 0.98 → 0.79 with the compressor). They analyse the
            # signal before both, at the output's gain; the times are the same.
            segmentations = [
                self._segment(item.analysis, amplitude, frames.hop_length, options)
                for item, amplitude in zip(items, amplitudes, strict=True)
            ]
            if options.segment.trim or options.segment.max_pause_ms is not None:
                for index, seg in enumerate(segmentations):
                    if seg is not None:
                        segmentations[index], signals[index] = self._cut(
                            signals[index], seg, frames.hop_length, options
                        )
                # The features describe the cut audio.
                padded = [pad_signal(signal, frames) for signal in signals]
                batch, power = _stack(padded), _stack(_spectra(padded, frames))
        with self._timed(feature_ms):
            features = compute_features(
                batch,
                power,
                lengths=[s.shape[-1] for s in signals],
                config=config,
                options=options.features,
            )
        shared_level, shared_features = level_ms[0] / len(items), feature_ms[0] / len(items)
        shared_segment = segment_ms[0] / len(items)
        results = []
        for index, item in enumerate(items):
            lufs, peak, gain, warnings = measured[index]
            segmentation = segmentations[index]
            if segmentation is not None:
                features[index] = self._with_tracks(
                    features[index], segmentation, frames.frame_rate_hz, options
                )
            if item.clipping_ratio > 0.001:
                warnings.append(
                    f"{item.clipping_ratio:.2%} of the input samples are clipped; features of "
                    "clipped speech are distorted."
                )
            audio = Audio(signals[index], rate)
            steps = [
                item.steps[0],
                ("normalize", item.steps[1][1] + shared_level),
                *item.steps[2:],
                *([("compress", compress_ms[0] / len(items))] if compress_ms else []),
                *([("segment", shared_segment)] if segmentation is not None else []),
                ("features", shared_features),
            ]
            output = OutputInfo(
                sample_rate=rate,
                channels=audio.num_channels,
                duration_s=round(audio.duration_s, 6),
                loudness_lufs=levels[index][0],
                peak_dbfs=levels[index][1],
                gain_db=round(gain.gain_db, 4),
                dynamics=dynamics[index],
            )
            quality = Quality(
                clipping_ratio=item.clipping_ratio,
                dc_offset=item.dc_offset,
                input_loudness_lufs=lufs,
                silent=gain.silent,
                cleaning=item.cleaning,
            )
            results.append(
                PipelineResult(
                    item.info,
                    output,
                    quality,
                    features[index],
                    audio,
                    steps,
                    warnings,
                    segmentation,
                )  # fmt: skip
            )
        return results

    @staticmethod
    def _levels(samples: torch.Tensor, rate: int) -> tuple[float, float]:
        """BS.1770 integrated loudness (LUFS) and sample peak (dBFS) of ``(channel, time)``."""
        meter = resolve(FeatureOptions(), rate).frames
        lufs = N.integrated_loudness(
            stft_power(samples, meter), sample_rate=rate, hop_length=meter.hop_length,
            n_fft=meter.n_fft, window=meter.window(samples.device),
        )  # fmt: skip
        return lufs, N.peak_dbfs(samples)

    @staticmethod
    def _segment(
        samples: torch.Tensor, gain: float, hop_length: int, options: ProcessingOptions
    ) -> Segmentation | None:
        """Voice activity and phrases of one signal ``(channel, time)`` (channels averaged),
        times ``gain`` (amplitude ratio)."""
        choice = options.segment
        if choice.vad == "off":
            return None
        rate = options.target_sample_rate
        mono = samples.mean(dim=0) * gain
        activity = S.vad(
            mono, sample_rate=rate, hop_length=hop_length, backend=choice.vad,
            threshold=choice.threshold, padding_ms=choice.padding_ms,
            min_speech_ms=choice.min_speech_ms, min_silence_ms=choice.min_silence_ms,
        )  # fmt: skip
        phrasing = pauses = None
        if choice.phrases:
            phrasing = S.phrases(
                activity, f0_hz=activity.f0_hz, energy_db=activity.energy_db,
                min_pause_ms=choice.min_pause_ms, boundary_pause_ms=choice.boundary_pause_ms,
            )  # fmt: skip
            pauses = S.pause_statistics(activity, phrasing)
        segments = [Segment(s.start_s, s.end_s, s.confidence) for s in activity.segments]
        overlap_prob = num_speakers = None
        if choice.diarize or choice.overlap:
            # The diarizer finds its own speech frames: its windows must not cross pauses, and
            # the VAD's finer pauses leave too few windows per speaker (2 of 6 speakers found on
            # diarizationExample2 against 6 of 6). Its turns are then cut at the VAD's segments.
            who = DZ.diarize(
                mono, sample_rate=rate, hop_length=hop_length,
                num_speakers=choice.num_speakers, max_speakers=choice.max_speakers,
            )  # fmt: skip
            pieces = DZ.speaker_segments([(s.start_s, s.end_s) for s in segments], who)
            frame_rate = rate / hop_length
            segments = [
                Segment(
                    p.start_s, p.end_s, _mean_over(activity.prob, p.start_s, p.end_s, frame_rate),
                    speaker=f"S{p.speaker}" if choice.diarize and p.speaker >= 0 else None,
                    overlap=p.overlap if choice.overlap else None,
                )
                for p in pieces
            ]  # fmt: skip
            overlap_prob = who.overlap_prob
            num_speakers = who.num_speakers if choice.diarize else None
        return Segmentation(
            backend=activity.backend, segments=segments, speech_ratio=activity.speech_ratio,
            prob=activity.prob, overlap_prob=overlap_prob, num_speakers=num_speakers,
            phrasing=phrasing, pauses=pauses, time_map=None,
        )  # fmt: skip

    @staticmethod
    def _cut(
        signal: torch.Tensor, seg: Segmentation, hop_length: int, options: ProcessingOptions
    ) -> tuple[Segmentation, torch.Tensor]:
        """Trim and shorten pauses as asked; move every time into the output's timeline."""
        choice, rate = options.segment, options.target_sample_rate
        cut, time_map = S.trim_and_shorten(
            signal, [(s.start_s, s.end_s) for s in seg.segments], sample_rate=rate,
            trim=choice.trim,
            padding_ms=choice.trim_padding_ms, max_pause_ms=choice.max_pause_ms,
        )  # fmt: skip

        def out(t: float) -> float:
            return float(time_map.to_output(t))

        segments = [dataclasses.replace(s, start_s=out(s.start_s), end_s=out(s.end_s))
                    for s in seg.segments]  # fmt: skip
        phrasing = seg.phrasing and S.Phrasing(
            tuple(dataclasses.replace(p, start_s=out(p.start_s), end_s=out(p.end_s))
                  for p in seg.phrasing.phrases),
            tuple(dataclasses.replace(p, start_s=out(p.start_s), end_s=out(p.end_s))
                  for p in seg.phrasing.pauses),
        )  # fmt: skip
        # The probability track, read through the time map at the output's frame centres.
        frame_times = torch.arange(1 + cut.shape[-1] // hop_length, dtype=torch.float64)
        source = torch.as_tensor(time_map.to_input(frame_times * hop_length / rate))
        index = (source * rate / hop_length).round().long().clamp(0, seg.prob.shape[-1] - 1)
        duration = cut.shape[-1] / rate
        index = index.to(seg.prob.device)
        moved = dataclasses.replace(
            seg, segments=segments, phrasing=phrasing, prob=seg.prob[index],
            overlap_prob=None if seg.overlap_prob is None else seg.overlap_prob[index],
            speech_ratio=sum(s.end_s - s.start_s for s in segments) / duration if duration else 0,
            time_map=time_map,
        )  # fmt: skip
        return moved, cut

    @staticmethod
    def _with_tracks(
        features: dict[str, FeatureArray],
        segmentation: Segmentation,
        frame_rate_hz: float,
        options: ProcessingOptions,
    ) -> dict[str, FeatureArray]:
        """Insert the segmentation's frame tracks (``vad_prob``, ``overlap_prob``) among the
        features, in the order of the names."""
        tracks = {"vad_prob": (segmentation.prob, "speech_probability")}
        if segmentation.overlap_prob is not None:
            tracks["overlap_prob"] = (segmentation.overlap_prob, "overlap_probability")
        ordered: dict[str, FeatureArray] = {}
        for name in options.features.resolved_names:
            if name in tracks:
                data, row = tracks[name]
                ordered[name] = FeatureArray(
                    data=data.unsqueeze(0), frame_rate_hz=frame_rate_hz, unit="probability, 0–1",
                    rows=[row],
                )  # fmt: skip
            for key in ("pitch_hz", "voicing") if name == "pitch" else (name,):
                if key in features:
                    ordered[key] = features[key]
        return ordered

    @staticmethod
    def _loudness_gain(
        options: ProcessingOptions,
        samples: torch.Tensor,
        lufs: float,
        peak: float,
        warnings: list[str],
    ) -> N.GainDecision:
        loudness = options.loudness
        if loudness.mode == "off":
            return N.GainDecision(0.0, None, not math.isfinite(lufs))
        if loudness.mode == "lufs":
            level, target, unit = lufs, loudness.target, "LUFS"
        elif loudness.mode == "rms":  # measured only when asked for: a pass over the samples
            level, target, unit = N.rms_dbfs(samples), loudness.target, "dBFS RMS"
        else:
            level, target, unit = peak, loudness.peak_dbfs, "dBFS peak"
        if not math.isfinite(lufs):
            # Below the BS.1770 absolute gate in every block: nothing to normalize.
            warnings.append("The input is silent (below −70 LUFS); it was not amplified.")
            return N.GainDecision(0.0, None, True)
        decision = N.loudness_gain(
            level=level,
            target=target,
            peak=peak,
            peak_ceiling_dbfs=loudness.peak_dbfs,
            max_gain_db=loudness.max_gain_db,
        )
        reached = level + decision.gain_db
        if decision.limited_by == "peak" and loudness.mode != "peak":
            warnings.append(
                f"Loudness reached {reached:.1f} {unit}, not {target:g}: the peak ceiling "
                f"({loudness.peak_dbfs:g} dBFS) bounds the gain."
            )
        elif decision.limited_by == "max_gain":
            warnings.append(
                f"Loudness reached {reached:.1f} {unit}, not {target:g}: the boost is capped at "
                f"{loudness.max_gain_db:g} dB so that a very quiet input is not amplified "
                "into noise."
            )
        return decision

    def warmup(self, options: ProcessingOptions | None = None) -> None:
        """Build the default kernels and run the pipeline once on synthetic audio."""
        import io

        import soundfile as sf

        rng = np.random.default_rng(0)
        for rate in (8000, 16000, 22050, 24000, 32000, 44100, 48000):
            t = np.arange(rate) / rate
            tone = 0.1 * np.sin(2 * np.pi * 220 * t) + 0.01 * rng.standard_normal(rate)
            buffer = io.BytesIO()
            sf.write(buffer, tone.astype(np.float32), rate, format="WAV", subtype="PCM_16")
            self.run(buffer.getvalue(), options or ProcessingOptions())
