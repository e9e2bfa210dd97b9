"""The cleaning stage: echo, clicks and pops, wind and noise, reverberation — in that order —
and the optional compressor, each as ``ProcessingOptions`` asks.

Echo comes first (the adaptive filter needs the echo path still linear), then impulsive damage
(clicks would bias the noise tracker), then wind and stationary noise, then reverberation (WPE
works best on a clean signal).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from app.errors import InvalidOptions
from app.models.options import CompressionOptions, DenoiseOptions
from app.pipeline import denoise as D
from app.pipeline import dynamics as DY
from app.pipeline import restore as R

#: The denoiser behind each ``denoise.method`` option.
NOISE_METHODS: dict[str, D.NoiseMethod] = {
    "auto": "mmse_lsa", "mmse": "mmse_lsa", "spectral_subtraction": "spectral_subtraction",
    "off": "none",
}  # fmt: skip


@dataclass(frozen=True)
class CleaningReport:
    """What the cleaning stage did.

    Attributes:
        noise: the noise/wind stage (WADA-SNR before and after, gains), if it ran.
        clicks_repaired: clicks found and interpolated (``None`` without ``declick``).
        pops_attenuated: plosive pops attenuated (``None`` without ``declick``).
        clicks_skipped, pops_skipped: marginal detections left alone by the back-off (their
            channel showed no evident click / pop: clean recordings stay untouched; see
            ``restore.EVIDENCE_DB``); ``None`` without ``declick``.
        echo: ``{"erle_db", "delay_ms", "double_talk"}`` with a reference channel,
            ``{"late_reflections_rt60_s"}`` without one; ``None`` without ``echo``.
        rt60_before_s, rt60_after_s: blind RT60 estimates around dereverberation, seconds
            (``None`` without ``dereverb``; NaN when too few free decays were found).
    """

    noise: D.NoiseStageReport | None = None
    clicks_repaired: int | None = None
    pops_attenuated: int | None = None
    clicks_skipped: int | None = None
    pops_skipped: int | None = None
    echo: dict[str, float] | None = None
    rt60_before_s: float | None = None
    rt60_after_s: float | None = None


def split_reference(
    samples: torch.Tensor, options: DenoiseOptions
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Take the far-end reference channel out of ``(channel, time)`` samples, when one is named.

    Raises:
        InvalidOptions: the channel does not exist, or it is the only one.
    """
    channel = options.echo_reference_channel
    if not options.echo or channel is None:
        return samples, None
    if not 0 <= channel < samples.shape[0] or samples.shape[0] < 2:
        raise InvalidOptions(
            f"denoise.echo_reference_channel={channel}, but the input has {samples.shape[0]} "
            "channel(s): the reference must be one of at least two."
        )
    keep = [c for c in range(samples.shape[0]) if c != channel]
    return samples[keep], samples[channel]


def clean(
    samples: torch.Tensor,
    *,
    sample_rate: int,
    options: DenoiseOptions,
    reference: torch.Tensor | None = None,
) -> tuple[torch.Tensor, CleaningReport]:
    """Run the cleaning steps ``options`` asks for: :func:`remove_interference`, then
    :func:`suppress_noise_and_reverb`.

    Args:
        samples: ``(channel, time)``, full scale = 1.0, at ``sample_rate`` Hz.
        sample_rate: Hz.
        options: which steps, with their parameters.
        reference: the far-end signal ``(time,)`` at ``sample_rate`` for echo cancellation.

    Returns:
        ``(cleaned, report)``: same shape as ``samples``.
    """
    samples, report = remove_interference(
        samples, sample_rate=sample_rate, options=options, reference=reference
    )
    return suppress_noise_and_reverb(samples, report, sample_rate=sample_rate, options=options)


def remove_interference(
    samples: torch.Tensor,
    *,
    sample_rate: int,
    options: DenoiseOptions,
    reference: torch.Tensor | None = None,
) -> tuple[torch.Tensor, CleaningReport]:
    """The first cleaning steps, which remove sounds other than the talker's direct speech: the
    echo (of the far end; without a reference, the room's late reflections) and clicks and pops.
    Segmentation analyses their output, before noise suppression, dereverberation and
    compression (see :meth:`~app.pipeline.runner.Pipeline.run_batch`).

    Args: as :func:`clean`.

    Returns:
        ``(samples, report)``: same shape as ``samples``; the report holds what these steps did.
    """
    report = CleaningReport()
    if options.echo:
        if reference is not None:
            samples, echo = R.cancel_echo(samples, reference, sample_rate=sample_rate)
            report = replace(report, echo={"erle_db": echo.erle_db, "delay_ms": echo.delay_ms,
                                           "double_talk": echo.double_talk})  # fmt: skip
        else:
            samples, rt60 = R.suppress_late_reflections(samples, sample_rate=sample_rate)
            report = replace(report, echo={"late_reflections_rt60_s": rt60})
    if options.declick:
        samples, clicks = R.repair_clicks(samples, sample_rate=sample_rate)
        samples, pops = R.attenuate_pops(samples, sample_rate=sample_rate)
        report = replace(report, clicks_repaired=clicks.count, pops_attenuated=pops.count,
                         clicks_skipped=clicks.skipped, pops_skipped=pops.skipped)  # fmt: skip
    return samples, report


def suppress_noise_and_reverb(
    samples: torch.Tensor,
    report: CleaningReport,
    *,
    sample_rate: int,
    options: DenoiseOptions,
) -> tuple[torch.Tensor, CleaningReport]:
    """The last cleaning steps: wind and noise suppression, then dereverberation.

    Args:
        samples: ``(channel, time)``, full scale = 1.0, at ``sample_rate`` Hz (the output of
            :func:`remove_interference`).
        report: what the earlier steps did; returned with these steps' results added.
        sample_rate: Hz.
        options: which steps, with their parameters.

    Returns:
        ``(cleaned, report)``: same shape as ``samples``.
    """
    if options.method != "off" or options.wind:
        samples, noise = D.denoise(
            samples, sample_rate=sample_rate, method=NOISE_METHODS[options.method],
            wind=options.wind, gain_floor_db=options.gain_floor_db,
            over_subtraction=options.over_subtraction, spectral_floor=options.spectral_floor,
            backoff=options.backoff,
        )  # fmt: skip
        report = replace(report, noise=noise)
    if options.dereverb:
        before = _mean_rt60(samples, sample_rate)
        samples = R.wpe_dereverb(samples, sample_rate=sample_rate)
        samples, _ = R.suppress_late_reflections(samples, sample_rate=sample_rate)
        # Rooms colour the spectrum too: bring its long-term shape back toward speech's (±6 dB).
        samples, _ = R.equalize_long_term_spectrum(samples, sample_rate=sample_rate)
        report = replace(report, rt60_before_s=before,
                         rt60_after_s=_mean_rt60(samples, sample_rate))  # fmt: skip
    return samples, report


def _mean_rt60(samples: torch.Tensor, sample_rate: int) -> float:
    values = R.estimate_rt60(samples, sample_rate=sample_rate)
    value = float(torch.as_tensor(values).double().nanmean())
    return value if math.isfinite(value) else math.nan


def compress(
    samples: torch.Tensor, *, sample_rate: int, options: CompressionOptions
) -> tuple[torch.Tensor, DY.DynamicsReport]:
    """The compressor preset with any overrides, then the true-peak limiter."""
    base = DY.PRESETS[options.preset]
    compressor = base.compressor
    if compressor is not None:

        def pick(override: float | None, preset: float) -> float:
            return preset if override is None else override

        compressor = replace(
            compressor,
            threshold_db=pick(options.threshold_db, compressor.threshold_db),
            ratio=pick(options.ratio, compressor.ratio),
            knee_db=pick(options.knee_db, compressor.knee_db),
            attack_ms=pick(options.attack_ms, compressor.attack_ms),
            release_ms=pick(options.release_ms, compressor.release_ms),
            makeup_db=pick(options.makeup_db, compressor.makeup_db),
        )
    limiter = replace(base.limiter or DY.LimiterSettings(), ceiling_dbtp=options.ceiling_dbtp)
    settings = DY.DynamicsSettings(compressor=compressor, limiter=limiter)
    return DY.apply_dynamics(samples, sample_rate=sample_rate, settings=settings)
