"""Response schemas (documentation of what the routers return; bodies are serialized directly)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from app.models.options import ProcessingOptions


class InputReport(BaseModel):
    format: str = Field(description="Container detected from the bytes.", examples=["mp3"])
    codec: str = Field(description="Audio codec.", examples=["mp3"])
    sample_rate: int = Field(description="Native sampling rate, Hz.", examples=[44100])
    channels: int = Field(description="Channels in the input.", examples=[2])
    duration_s: float = Field(description="Decoded duration, seconds.", examples=[12.31])


class OutputReport(BaseModel):
    sample_rate: int = Field(description="Output sampling rate, Hz.", examples=[16000])
    channels: int = Field(description="Output channels.", examples=[1])
    duration_s: float = Field(description="Output duration, seconds.", examples=[12.31])
    loudness_lufs: float | None = Field(
        description="BS.1770-4 integrated loudness after normalization, LUFS (null: silence).",
        examples=[-23.0],
    )
    peak_dbfs: float | None = Field(
        description="Sample peak after normalization, dBFS (null: silence).", examples=[-1.0]
    )
    gain_db: float = Field(
        description="Gain applied by loudness normalization, dB.", examples=[4.8]
    )
    compression: dict[str, float] | None = Field(
        default=None,
        description="With compression: max_reduction_db, mean_gain_db, limited_fraction, "
        "true_peak_dbtp (4× oversampled).",
    )


class QualityReport(BaseModel):
    clipping_ratio: float = Field(
        description="Fraction of input samples at or above 0.999 of full scale.", examples=[0.0]
    )
    dc_offset: float = Field(
        description="Largest per-channel mean of the input (removed), full scale = 1.",
        examples=[0.0001],
    )
    input_loudness_lufs: float | None = Field(
        description="Integrated loudness before the gain, LUFS (null: below −70 LUFS).",
        examples=[-27.8],
    )
    silent: bool = Field(description="The input is silent and was not amplified.", examples=[False])
    speech_ratio: float | None = Field(
        default=None, description="Speech time / duration (with a VAD).", examples=[0.74]
    )
    snr_db: float | None = Field(
        default=None, description="WADA-SNR of the input (before cleaning), dB.", examples=[18.2]
    )
    snr_after_db: float | None = Field(
        default=None, description="WADA-SNR after cleaning, dB.", examples=[24.5]
    )
    cleaning: dict[str, dict[str, float | int | str | None]] | None = Field(
        default=None,
        description="What each cleaning step did: `noise` (method, gain_db, noise_floor_dbfs, "
        "strength 0–1 after back-off), `wind` (detected_fraction, mean_score), `declick` "
        "(clicks_repaired, pops_attenuated; clicks_skipped, pops_skipped: marginal detections "
        "left alone because the channel showed no evident click or pop), `echo` (erle_db, "
        "delay_ms, double_talk; or late_reflections_rt60_s), `dereverb` (rt60_before_s, "
        "rt60_after_s).",
    )


class FeatureReport(BaseModel):
    shape: list[int] = Field(
        description="`[features, frames]` (channels first when kept).", examples=[[13, 1231]]
    )
    frame_rate_hz: float = Field(
        description="Frames per second (the sampling rate for `waveform`).", examples=[100.0]
    )
    frame_offset_s: float = Field(
        description="Centre of frame 0, seconds (0 for centred frames; Kaldi's snipped edges: "
        "half a window); frame t is centred at frame_offset_s + t/frame_rate_hz.",
        examples=[0.0],
    )
    unit: str = Field(description="Unit of the values.", examples=["dB"])
    rows: list[str] | None = Field(
        default=None,
        description="Row labels, when rows are named.",
        examples=[["rms", "log_energy"]],
    )
    data: list[list[float]] | None = Field(
        default=None, description="The values, `data[feature][frame]`."
    )
    summary: dict[str, float] | None = Field(
        default=None,
        description="Utterance-level values of the feature (e.g. `temporal`: "
        "speaking_rate_syllables_per_s).",
    )
    stats: dict[str, list[float]] | None = Field(
        default=None, description="Per-row functionals (mean, std, min, max) with `aggregate`."
    )


class SegmentReport(BaseModel):
    start_s: float = Field(
        description="Speech onset, s (processed audio's timeline).", examples=[0.31]
    )
    end_s: float = Field(description="Speech offset, s.", examples=[2.52])
    confidence: float = Field(description="Mean speech probability, 0–1.", examples=[0.93])
    speaker: str | None = Field(
        default=None, description="Speaker label S0, S1, … (segment.diarize).", examples=["S0"]
    )
    overlap: bool | None = Field(
        default=None,
        description="Two or more people talk at once (segment.overlap).",
        examples=[False],
    )


class SegmentationReport(BaseModel):
    vad: str = Field(description="The detector that ran.", examples=["energy"])
    num_speakers: int | None = Field(
        default=None, description="Speakers found (diarization).", examples=[2]
    )
    phrases: list[dict[str, float | int]] | None = Field(
        description="Phrases: start_s, end_s, hesitations (pauses inside that did not end it)."
    )
    pauses: list[dict[str, float | str]] | None = Field(
        description="Pauses ≥ segment.min_pause_ms: start_s, end_s, kind (boundary|hesitation)."
    )
    pause_statistics: dict[str, float | int] | None = Field(
        description="num_pauses, mean/median/longest pause (s), phrases_per_minute, "
        "articulation_time_s, speech_ratio, … (input timeline)."
    )
    time_map: list[list[float]] | None = Field(
        description="When audio was cut: pieces [output_start_s, input_start_s, duration_s]; "
        "an output time t in a piece maps to input_start_s + (t − output_start_s)."
    )


class StepTiming(BaseModel):
    name: str = Field(examples=["decode"])
    ms: float = Field(description="Wall time of the step, ms.", examples=[3.1])


class ProcessResponse(BaseModel):
    """The result of processing one recording."""

    id: str = Field(
        description="Result id: same bytes + same options → same id.",
        examples=["3f9a0c7e5b1d4e2f8a6b9c0d1e2f3a4b"],
    )
    content_sha256: str = Field(description="SHA-256 of the uploaded bytes.")
    reference_sha256: str | None = Field(
        default=None,
        description="SHA-256 of the uploaded echo `reference`, when one was sent.",
    )
    cached: bool = Field(description="Served from the cache without running the pipeline.")
    pipeline_version: str
    input: InputReport
    output: OutputReport
    quality: QualityReport
    segments: list[SegmentReport] | None = Field(
        default=None, description="Speech segments (with segment.vad not off)."
    )
    segmentation: SegmentationReport | None = Field(default=None)
    features: dict[str, FeatureReport]
    steps: list[StepTiming]
    warnings: list[str] = Field(
        description="Anything the client should know: skipped or bounded "
        "steps, clipping, a bypassed cache."
    )
    options: ProcessingOptions = Field(description="The options used, defaults filled in.")


class HealthResponse(BaseModel):
    status: str = Field(examples=["ok"])


class ReadyResponse(BaseModel):
    status: str = Field(
        description="`ok`, or `degraded` when a dependency is down.", examples=["ok"]
    )
    checks: dict[str, str] = Field(
        examples=[
            {
                "cache": "redis: ok",
                "storage": "s3: ok",
                "queue": "rabbitmq: ok, 0 ready",
                "jobs": "redis: ok",
            }
        ]
    )
    down: list[str] = Field(
        default_factory=list, description="Dependencies that do not answer.", examples=[[]]
    )
    device: str = Field(examples=["cpu"])
    auth: Literal["api_keys", "open"] = Field(
        description="`api_keys`: callers need a key (API_KEYS); `open`: anyone may call.",
        examples=["api_keys"],
    )
    warnings: list[str] = Field(
        default_factory=list,
        description="Configuration an operator should fix (e.g. running open).",
        examples=[[]],
    )


class Problem(BaseModel):
    """An RFC 9457 problem detail (media type application/problem+json)."""

    type: str = Field(examples=["https://audioproc.dev/problems/unsupported_format"])
    title: str = Field(examples=["Not a supported audio format"])
    status: int = Field(examples=[415])
    detail: str = Field(examples=["The upload looks like a PNG image, not audio."])
    code: str = Field(examples=["unsupported_format"])


class BatchItem(BaseModel):
    """The outcome for one file of a batch: a result, or the problem that refused it."""

    filename: str | None = Field(description="The uploaded file's name, as sent.")
    status: int = Field(description="200, or the problem's status.", examples=[200])
    result: ProcessResponse | None = Field(default=None, description="The result (status 200).")
    problem: Problem | None = Field(default=None, description="Why the file was refused.")


class BatchResponse(BaseModel):
    """Results per file, in upload order."""

    results: list[BatchItem]
