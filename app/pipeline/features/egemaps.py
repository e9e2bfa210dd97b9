"""Utterance functionals in the spirit of eGeMAPS (Eyben et al. 2016, openSMILE ``eGeMAPSv02``).

Parameters carry openSMILE's names where the definition is the same in intent; values come from
this project's own low-level descriptors (Praat-parity pitch, jitter, shimmer, HNR and formants,
BS.1770 frame loudness), so some scales differ from openSMILE's (see docs/quality.md, where
every parameter is compared with openSMILE on the shared recordings).
"""

from __future__ import annotations

import math

import torch

#: Reference of the F0 semitone scale, Hz (eGeMAPS: 27.5 Hz, A0).
SEMITONE_REFERENCE_HZ = 27.5


def _percentile(values: torch.Tensor, q: float) -> float:
    return float(torch.quantile(values.double(), q)) if values.numel() else math.nan


def _segments(voiced: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Lengths (frames) of the voiced runs and of the unvoiced runs between voiced ones."""
    flags = voiced.to(torch.int8)
    edges = torch.diff(flags, prepend=flags.new_zeros(1), append=flags.new_zeros(1))
    starts = torch.nonzero(edges == 1).flatten()
    ends = torch.nonzero(edges == -1).flatten()
    voiced_runs = ends - starts
    gaps = starts[1:] - ends[:-1]
    return voiced_runs, gaps


def egemaps_functionals(
    *,
    f0_hz: torch.Tensor,
    voiced: torch.Tensor,
    loudness_db: torch.Tensor,
    rms: torch.Tensor,
    flux: torch.Tensor,
    slope_0_500: torch.Tensor,
    slope_500_1500: torch.Tensor,
    formants_hz: torch.Tensor,
    jitter_local: float,
    shimmer_local: float,
    hnr_frames_db: torch.Tensor,
    frame_rate_hz: float,
) -> tuple[torch.Tensor, list[str]]:
    """Compact utterance descriptors of voice, loudness, spectrum and timing.

    Args:
        f0_hz: F0 per frame, Hz, shape ``(frame,)`` (any value on unvoiced frames).
        voiced: voicing decision per frame, bool ``(frame,)``.
        loudness_db: K-weighted frame loudness, dB (LUFS scale), ``(frame,)``.
        rms: frame RMS, full scale = 1, ``(frame,)``.
        flux: spectral flux per frame, ``(frame,)``.
        slope_0_500, slope_500_1500: spectral slopes per frame, dB/kHz, ``(frame,)``.
        formants_hz: ``(3, frame)``, NaN where undefined.
        jitter_local, shimmer_local: utterance jitter and shimmer, fractions.
        hnr_frames_db: HNR per frame, dB, NaN unvoiced, ``(frame,)``.
        frame_rate_hz: frames per second.

    Returns:
        ``(values, names)``: a float tensor of shape ``(parameter,)`` and the parameter names.
        Percentiles and means are over voiced frames where the name says ``nz`` or ``V``.
    """
    out: dict[str, float] = {}
    semitones = 12 * torch.log2(f0_hz[voiced].double() / SEMITONE_REFERENCE_HZ)
    mean = float(semitones.mean()) if semitones.numel() else math.nan
    out["F0semitoneFrom27.5Hz_sma3nz_amean"] = mean
    out["F0semitoneFrom27.5Hz_sma3nz_stddevNorm"] = (
        float(semitones.std(unbiased=False)) / mean if semitones.numel() else math.nan
    )
    p20, p50, p80 = (_percentile(semitones, q) for q in (0.2, 0.5, 0.8))
    out["F0semitoneFrom27.5Hz_sma3nz_percentile20.0"] = p20
    out["F0semitoneFrom27.5Hz_sma3nz_percentile50.0"] = p50
    out["F0semitoneFrom27.5Hz_sma3nz_percentile80.0"] = p80
    out["F0semitoneFrom27.5Hz_sma3nz_pctlrange0-2"] = p80 - p20
    loud = loudness_db.double()
    out["loudness_sma3_amean"] = float(loud.mean())
    out["loudness_sma3_percentile20.0"] = _percentile(loud, 0.2)
    out["loudness_sma3_percentile50.0"] = _percentile(loud, 0.5)
    out["loudness_sma3_percentile80.0"] = _percentile(loud, 0.8)
    out["spectralFlux_sma3_amean"] = float(flux.double().mean())
    out["jitterLocal_sma3nz_amean"] = jitter_local
    out["shimmerLocal_sma3nz_amean"] = shimmer_local
    hnr = hnr_frames_db[torch.isfinite(hnr_frames_db)].double()
    out["HNRdBACF_sma3nz_amean"] = float(hnr.mean()) if hnr.numel() else math.nan
    for i in range(3):
        values = formants_hz[i][voiced & torch.isfinite(formants_hz[i])].double()
        out[f"F{i + 1}frequency_sma3nz_amean"] = (
            float(values.mean()) if values.numel() else math.nan
        )
    for name, slope in (("slopeV0-500", slope_0_500), ("slopeV500-1500", slope_500_1500)):
        values = slope[voiced].double() / 1000.0  # dB/kHz → dB/Hz, openSMILE's unit
        out[f"{name}_sma3nz_amean"] = float(values.mean()) if values.numel() else math.nan
    voiced_runs, gaps = _segments(voiced)
    duration_s = voiced.numel() / frame_rate_hz
    out["VoicedSegmentsPerSec"] = voiced_runs.numel() / duration_s if duration_s else math.nan
    runs_s, gaps_s = voiced_runs.double() / frame_rate_hz, gaps.double() / frame_rate_hz
    out["MeanVoicedSegmentLengthSec"] = float(runs_s.mean()) if runs_s.numel() else math.nan
    out["StddevVoicedSegmentLengthSec"] = (
        float(runs_s.std(unbiased=False)) if runs_s.numel() else math.nan
    )
    out["MeanUnvoicedSegmentLength"] = float(gaps_s.mean()) if gaps_s.numel() else math.nan
    out["StddevUnvoicedSegmentLength"] = (
        float(gaps_s.std(unbiased=False)) if gaps_s.numel() else math.nan
    )
    energy = float(rms.double().square().mean())
    out["equivalentSoundLevel_dBFS"] = 10 * math.log10(energy) if energy > 0 else math.nan
    values = torch.tensor(list(out.values()), dtype=torch.float32, device=f0_hz.device)
    return values, list(out)
