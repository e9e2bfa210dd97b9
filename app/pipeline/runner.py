"""Run the steps an options object asks for, timing each: decode → normalize → features."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch

from app.models.options import ProcessingOptions
from app.pipeline import normalize as N
from app.pipeline.audio import Audio, InputInfo
from app.pipeline.decode import DecodeLimits, decode
from app.pipeline.features import FeatureArray, compute_features
from app.pipeline.features.presets import resolve
from app.pipeline.features.spectral import stft_power

#: Bumped whenever a change alters any output for the same input and options (part of the id).
PIPELINE_VERSION = "1"

#: A sample at or above this magnitude counts as clipped.
CLIP_LEVEL = 0.999


@dataclass(frozen=True)
class OutputInfo:
    """The processed audio. Levels are after normalization (LUFS per BS.1770-4, dBFS sample peak;
    ``-inf`` for digital silence)."""

    sample_rate: int
    channels: int
    duration_s: float
    loudness_lufs: float
    peak_dbfs: float
    gain_db: float


@dataclass(frozen=True)
class Quality:
    """Properties of the input that matter downstream.

    Attributes:
        clipping_ratio: fraction of input samples at or above 0.999 full scale.
        dc_offset: largest per-channel mean of the input, full scale = 1.
        input_loudness_lufs: BS.1770-4 integrated loudness before any gain, at the output rate.
        silent: the input is below the −70 LUFS absolute gate; it was not amplified.
    """

    clipping_ratio: float
    dc_offset: float
    input_loudness_lufs: float
    silent: bool


@dataclass
class PipelineResult:
    input: InputInfo
    output: OutputInfo
    quality: Quality
    features: dict[str, FeatureArray]
    audio: Audio
    steps: list[tuple[str, float]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def choose_device(setting: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cuda`` without a GPU falls back to CPU."""
    if setting in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


class Pipeline:
    """The processing pipeline on one device.

    Kernels (resampling filters, windows, mel filterbanks, DCT matrices) are built on first use
    per parameter set and cached; :meth:`warmup` builds the defaults ahead of the first request.
    """

    def __init__(self, device: torch.device, limits: DecodeLimits) -> None:
        self.device = device
        self.limits = limits

    @contextmanager
    def _step(self, steps: list[tuple[str, float]], name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        steps.append((name, (time.perf_counter() - start) * 1000.0))

    def run(self, data: bytes, options: ProcessingOptions) -> PipelineResult:
        """Decode, normalize and describe one recording.

        Args:
            data: the uploaded file's bytes.
            options: what to do.

        Raises:
            AudioprocError: subclasses for bad input (see :func:`~app.pipeline.decode.decode`)
                and options that do not fit the input.
        """
        steps: list[tuple[str, float]] = []
        warnings: list[str] = []
        with self._step(steps, "decode"):
            decoded, info = decode(data, self.limits)
            samples = decoded.samples.to(self.device, non_blocking=True)

        with self._step(steps, "normalize"):
            clipping_ratio = float((samples.abs() >= CLIP_LEVEL).float().mean())
            samples, offsets = N.remove_dc(samples)
            samples = N.select_channels(samples, options.channels)
            rate = options.target_sample_rate
            samples = N.resample(samples, info.sample_rate, rate)
            config = resolve(options.features, rate)
            frames = config.frames
            power = stft_power(samples, frames)
            input_lufs = N.integrated_loudness(
                power,
                sample_rate=rate,
                hop_length=frames.hop_length,
                n_fft=frames.n_fft,
                window=frames.window(samples.device),
            )
            peak = N.peak_dbfs(samples)
            gain = self._loudness_gain(options, samples, input_lufs, peak, warnings)
            if gain.gain_db != 0.0:
                amplitude = N.db_to_amplitude(gain.gain_db)
                samples = samples * amplitude
                power = power * amplitude**2

        with self._step(steps, "features"):
            features = compute_features(
                samples,
                power,
                names=options.features.names,
                config=config,
                options=options.features,
            )

        if clipping_ratio > 0.001:
            warnings.append(
                f"{clipping_ratio:.2%} of the input samples are clipped; features of clipped "
                "speech are distorted."
            )
        audio = Audio(samples, rate)
        output = OutputInfo(
            sample_rate=rate,
            channels=audio.num_channels,
            duration_s=round(audio.duration_s, 6),
            loudness_lufs=input_lufs + gain.gain_db,
            peak_dbfs=peak + gain.gain_db,
            gain_db=round(gain.gain_db, 4),
        )
        quality = Quality(
            clipping_ratio=clipping_ratio,
            dc_offset=float(offsets.abs().max()),
            input_loudness_lufs=input_lufs,
            silent=gain.silent,
        )
        return PipelineResult(info, output, quality, features, audio, steps, warnings)

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
        level, target, unit = {
            "lufs": (lufs, loudness.target, "LUFS"),
            "rms": (N.rms_dbfs(samples), loudness.target, "dBFS RMS"),
            "peak": (peak, loudness.peak_dbfs, "dBFS peak"),
        }[loudness.mode]
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
