"""ProcessingOptions: the declarative pipeline configuration a client sends with a recording."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.pipeline.types import (
    DEFAULT_FUNCTIONALS,
    DenoiseMethod,
    FeatureName,
    FeatureNormalization,
    FeaturePreset,
    Functional,
    LoudnessMode,
    SpectrogramScale,
    UnvoicedMode,
    VadChoice,
)


class _Options(BaseModel):
    # Unknown keys are an error, never silently ignored: a typo must not change results quietly.
    model_config = ConfigDict(extra="forbid", frozen=True)


class LoudnessOptions(_Options):
    """Level normalization."""

    mode: LoudnessMode = Field(
        default="lufs",
        description="`lufs`: ITU-R BS.1770-4 gated integrated loudness (EBU R128); `peak`: sample "
        "peak to `peak_dbfs`; `rms`: RMS level to `target` dBFS; `off`: leave the level as is.",
        examples=["lufs"],
    )
    target: float = Field(
        default=-23.0,
        ge=-70.0,
        le=0.0,
        description="Target level: LUFS in `lufs` mode (−23 is EBU R128), dBFS RMS in `rms` mode.",
        examples=[-23.0],
    )
    peak_dbfs: float = Field(
        default=-1.0,
        ge=-60.0,
        le=0.0,
        description="Sample-peak ceiling after the gain, dBFS: the gain is reduced so the output "
        "never clips (a warning says when the target was not reached). The target in `peak` mode.",
        examples=[-1.0],
    )
    max_gain_db: float = Field(
        default=30.0,
        ge=0.0,
        le=80.0,
        description="Largest boost, dB, so near-silent recordings are not amplified into noise.",
        examples=[30.0],
    )


class RowStatistics(_Options):
    """Mean and standard deviation of each row of one feature, over a corpus."""

    mean: list[float] = Field(min_length=1, max_length=4096, description="Per-row mean.")
    std: list[float] = Field(
        min_length=1, max_length=4096, description="Per-row standard deviation (> 0)."
    )

    @model_validator(mode="after")
    def _check(self) -> RowStatistics:
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean has {len(self.mean)} values but std has {len(self.std)}")
        if any(not s > 0 for s in self.std):
            raise ValueError("every std must be positive")
        return self


class FeatureOptions(_Options):
    """Which features to compute and how. `null` sizes take the preset's value."""

    names: list[FeatureName] | None = Field(
        default=None,
        description="Features to compute, each a `[features, frames]` array: `spectrogram` "
        "(linear STFT, `n_fft/2+1` rows), `log_mel` (`n_mels` rows), `mfcc` (`n_mfcc` rows, "
        "×(1+`deltas`)), `energy` (rows `rms`, `log_energy`, `loudness_db`), `zcr` (1 row, "
        "fraction), "
        "`pitch` (two outputs: `pitch_hz` rows f0_hz, f0_semitones_re_55hz and `voicing` rows "
        "voicing_probability, voiced), `voice_quality` (per-frame hnr_db; summary jitter_local, "
        "shimmer_local, hnr_db), `formants` (f1_hz–f3_hz, LPC, NaN unvoiced), `spectral` "
        "(centroid, bandwidth, rolloff, flatness, flux, contrast ×7, entropy, slopes), "
        "`temporal` (autocorr_peak, envelope, onset_strength; summary speaking rate), "
        "`waveform` (the normalized samples, 1 row at the sampling rate). All frame features "
        "share the preset's frame rate (100 Hz by default). null: the preset's (default: "
        "log_mel, mfcc, pitch, energy; librosa, kaldi: log_mel, mfcc; whisper: log_mel; "
        "wav2vec2: waveform).",
        examples=[["log_mel", "mfcc", "energy"]],
        max_length=16,
    )
    preset: FeaturePreset = Field(
        default="default",
        description="`default`: 25 ms Hann window, 10 ms hop (100 frames/s), FFT size the next "
        "power of two, reflect padding, 80 Slaney mel bands 0 Hz–Nyquist, log-mel in dB "
        "(floor −100 dB), 13 MFCC (orthonormal DCT-II of the dB log-mel, c0 kept). `librosa`: "
        "librosa's defaults — n_fft 2048, hop 512, zero padding, 128 mels, `power_to_db` with "
        "top_db 80, 20 MFCC — equal to `librosa.feature.melspectrogram` / `mfcc`. `whisper`: "
        "the log-mel OpenAI Whisper's encoder takes (16 kHz only; 80 or 128 mels; log10, "
        "clamped 8 below the maximum, (x+4)/4; T//160 frames; `whisper_pad_30s` pads to 3000 "
        "frames). `kaldi`: Kaldi's `compute-fbank-feats` / `compute-mfcc-feats` (povey window, "
        "pre-emphasis 0.97, DC removal, edges snipped — frame 0 centred at 12.5 ms —, log mel "
        "energies from 20 Hz; MFCC with 23 bins, lifter 22, c0 = log energy; dither 0). "
        "`wav2vec2`: the zero-mean, unit-variance waveform wav2vec 2.0 / HuBERT models take.",
        examples=["default"],
    )
    whisper_pad_30s: bool = Field(
        default=False,
        description="`whisper` preset: pad (or cut) the audio to Whisper's 30 s window, as "
        "`whisper.pad_or_trim` does, giving exactly 3000 frames.",
        examples=[False],
    )
    win_ms: float | None = Field(
        default=None,
        ge=1.0,
        le=500.0,
        description="Analysis window, ms. null: the preset's (default 25).",
        examples=[25.0],
    )
    hop_ms: float | None = Field(
        default=None,
        ge=1.0,
        le=500.0,
        description="Hop between frames, ms; the frame rate is 1000/hop_ms Hz. null: the "
        "preset's (default 10).",
        examples=[10.0],
    )
    n_mels: int | None = Field(
        default=None,
        ge=1,
        le=512,
        description="Mel bands. null: the preset's (default 80).",
        examples=[80],
    )
    n_mfcc: int | None = Field(
        default=None,
        ge=1,
        le=512,
        description="MFCC coefficients (≤ n_mels). null: the preset's (default 13).",
        examples=[13],
    )
    f_min: float = Field(default=0.0, ge=0.0, description="Lowest mel edge, Hz.", examples=[0.0])
    f_max: float | None = Field(
        default=None,
        gt=0.0,
        description="Highest mel edge, Hz (≤ target_sample_rate/2). null: Nyquist.",
        examples=[8000.0],
    )
    deltas: Literal[0, 1, 2] = Field(
        default=0,
        description="MFCC regression coefficients to append: 0 none, 1 Δ, 2 Δ and ΔΔ "
        "(HTK formula over ±2 frames).",
        examples=[2],
    )
    pitch_f_min: float = Field(
        default=65.0, gt=0.0, le=1000.0, description="Lowest F0 searched, Hz.", examples=[65.0]
    )
    pitch_f_max: float = Field(
        default=400.0,
        gt=0.0,
        le=2000.0,
        description="Highest F0 searched, Hz (below Nyquist).",
        examples=[400.0],
    )
    unvoiced: UnvoicedMode = Field(
        default="zero",
        description="F0 of unvoiced frames in `pitch_hz`: `zero`, `nan` (null in JSON; excluded "
        "from normalization and functionals) or `interpolate` (linear between voiced frames).",
        examples=["zero"],
    )
    max_formant_hz: float = Field(
        default=5500.0,
        ge=1000.0,
        le=20000.0,
        description="Ceiling of the formant search, Hz (Praat: 5000 for men, 5500 for women); "
        "bounded by the Nyquist frequency.",
        examples=[5500.0],
    )
    spectrogram_scale: SpectrogramScale = Field(
        default="db", description="Scale of the `spectrogram` feature.", examples=["db"]
    )
    normalize: FeatureNormalization = Field(
        default="none",
        description="Normalization of every feature row over frames: `cmn` subtracts the "
        "utterance mean, `cmvn` also divides by the standard deviation, `sliding_cmn` subtracts "
        "a moving mean over `cmn_window_s` (Kaldi's centred sliding CMN), `global` applies "
        "`(x − mean) / std` with `global_stats` (from `audioproc stats` over a corpus).",
        examples=["none"],
    )
    cmn_window_s: float = Field(
        default=3.0,
        gt=0.0,
        le=60.0,
        description="Window of `sliding_cmn`, seconds (3 s = Kaldi's 300 frames).",
        examples=[3.0],
    )
    global_stats: dict[str, RowStatistics] | None = Field(
        default=None,
        description="Per-feature row statistics for `normalize: global`, as written by "
        "`audioproc stats`: `{feature: {mean: [...], std: [...]}}`, one value per row.",
        examples=[None],
    )
    aggregate: bool = Field(
        default=False,
        description="Add utterance-level `functionals` of every row as `stats`.",
        examples=[False],
    )
    functionals: list[Functional] = Field(
        default=list(DEFAULT_FUNCTIONALS),
        min_length=1,
        max_length=13,
        description="Functionals computed with `aggregate`, over the finite frames of each row: "
        "mean, std, min, max, range, median, p05/p25/p75/p95 (percentiles), skewness, kurtosis "
        "(excess), slope (units per second).",
        examples=[["mean", "std", "p05", "p95", "slope"]],
    )

    @property
    def resolved_names(self) -> list[FeatureName]:
        """``names``, or the preset's default features when ``names`` is null."""
        from app.pipeline.features.presets import DEFAULT_NAMES

        return list(self.names) if self.names is not None else DEFAULT_NAMES[self.preset]

    @model_validator(mode="after")
    def _check_consistency(self) -> FeatureOptions:
        names = self.resolved_names
        if len(set(names)) != len(names):
            raise ValueError("features.names lists a feature more than once")
        if self.preset == "whisper":
            if "mfcc" in names:
                raise ValueError("the whisper preset provides log_mel, not mfcc")
            if self.n_mels not in (None, 80, 128):
                raise ValueError(f"the whisper preset has 80 or 128 mels, not {self.n_mels}")
            if self.win_ms is not None or self.hop_ms is not None:
                raise ValueError("the whisper preset fixes win_ms (25) and hop_ms (10)")
        if self.win_ms is not None and self.hop_ms is not None and self.hop_ms > self.win_ms:
            raise ValueError(
                f"features.hop_ms ({self.hop_ms}) must not exceed features.win_ms ({self.win_ms})"
            )
        if self.n_mels is not None and self.n_mfcc is not None and self.n_mfcc > self.n_mels:
            raise ValueError(
                f"features.n_mfcc ({self.n_mfcc}) must not exceed features.n_mels ({self.n_mels})"
            )
        if self.normalize == "global":
            missing = [n for n in names if n not in (self.global_stats or {})]
            if missing:
                raise ValueError(
                    "features.normalize 'global' needs features.global_stats for "
                    f"{', '.join(missing)} (compute them with `audioproc stats`)"
                )
        if len(set(self.functionals)) != len(self.functionals):
            raise ValueError("features.functionals lists a functional more than once")
        if self.pitch_f_min >= self.pitch_f_max:
            raise ValueError(
                f"features.pitch_f_min ({self.pitch_f_min} Hz) must be below features.pitch_f_max "
                f"({self.pitch_f_max} Hz)"
            )
        if self.f_max is not None and self.f_min >= self.f_max:
            raise ValueError(
                f"features.f_min ({self.f_min} Hz) must be below features.f_max ({self.f_max} Hz)"
            )
        return self


class DenoiseOptions(_Options):
    """Noise and wind reduction (before loudness normalization)."""

    method: DenoiseMethod = Field(
        default="auto",
        description="`mmse` (`auto`): decision-directed MMSE log-spectral amplitude estimator "
        "with speech-presence weighting and a self-tracking noise PSD (no noise sample needed); "
        "`spectral_subtraction`: Berouti's over-subtraction with a spectral floor; `off`.",
        examples=["auto"],
    )
    declick: bool = Field(
        default=True,
        description="Find impulsive clicks (LPC residuals "
        "against a robust threshold) and repair them by interpolation; "
        "attenuate plosive pops (low-frequency bursts).",
        examples=[True],
    )
    dereverb: bool = Field(
        default=False,
        description="Reduce room reverberation: WPE, then late-reflection suppression and "
        "long-term spectral equalization toward a neutral speech spectrum; reports RT60 before "
        "and after.",
        examples=[False],
    )
    echo: bool = Field(
        default=False,
        description="Cancel echo: with `echo_reference_channel`, "
        "a frequency-domain adaptive filter against that far-end channel plus "
        "residual suppression; without it, late reflections / discrete echoes "
        "are suppressed.",
        examples=[False],
    )
    echo_reference_channel: int | None = Field(
        default=None,
        ge=0,
        le=63,
        description="Input channel (0-based) that carries the far-end (loudspeaker) signal; it "
        "is removed from the audio before channel handling.",
        examples=[None],
    )
    wind: bool = Field(
        default=True,
        description="Detect wind (low-frequency, non-stationary, "
        "poorly correlated energy) and suppress it where it is detected.",
        examples=[True],
    )
    backoff: bool = Field(
        default=True,
        description="Fade the suppression out as the estimated SNR rises past ~12–23 dB, so clean "
        "recordings are left alone (PESQ-WB change < 0.1 on clean speech).",
        examples=[True],
    )
    gain_floor_db: float = Field(
        default=-20.0,
        ge=-60.0,
        le=0.0,
        description="Deepest suppression, dB (`mmse`).",
        examples=[-20.0],
    )
    over_subtraction: float = Field(
        default=2.0,
        ge=1.0,
        le=10.0,
        description="Over-subtraction factor (`spectral_subtraction`).",
        examples=[2.0],
    )
    spectral_floor: float = Field(
        default=0.02,
        gt=0.0,
        le=1.0,
        description="Spectral floor, fraction of the noisy power (`spectral_subtraction`).",
        examples=[0.02],
    )


class CompressionOptions(_Options):
    """Dynamic range compression and a true-peak limiter, after loudness normalization."""

    enabled: bool = Field(default=False, description="Apply compression.", examples=[False])
    preset: Literal["leveling", "speech"] = Field(
        default="leveling",
        description="`leveling`: brings quiet talkers up and loud ones down (slow RMS compressor "
        "from −40 dBFS at 3:1, 10 dB knee, +10 dB make-up); `speech`: a gentler speech "
        "compressor. Then a −1 dBTP true-peak limiter.",
        examples=["leveling"],
    )
    threshold_db: float | None = Field(
        default=None, ge=-80.0, le=0.0, description="Override: threshold, dBFS.", examples=[None]
    )
    ratio: float | None = Field(
        default=None,
        ge=1.0,
        le=100.0,
        description="Override: ratio (input dB per output dB).",
        examples=[None],
    )
    knee_db: float | None = Field(
        default=None, ge=0.0, le=40.0, description="Override: soft knee width, dB.", examples=[None]
    )
    attack_ms: float | None = Field(
        default=None, ge=0.01, le=1000.0, description="Override: attack, ms.", examples=[None]
    )
    release_ms: float | None = Field(
        default=None, ge=1.0, le=10_000.0, description="Override: release, ms.", examples=[None]
    )
    makeup_db: float | None = Field(
        default=None, ge=-40.0, le=40.0, description="Override: make-up gain, dB.", examples=[None]
    )
    ceiling_dbtp: float = Field(
        default=-1.0,
        ge=-40.0,
        le=0.0,
        description="Limiter ceiling, dBTP (4× oversampled true peak).",
        examples=[-1.0],
    )


class SegmentOptions(_Options):
    """Voice activity, trimming, pause shortening and phrases. Segment times are in the
    processed audio's timeline; `time_map` maps them back to the input when audio was cut. They
    are found on the audio before noise suppression, dereverberation and compression (after
    echo and click removal), whose artefacts would move them; the times are the same."""

    vad: VadChoice = Field(
        default="auto",
        description="Voice activity detector: `energy` (ours: band energy, periodicity and "
        "flatness against an adaptive noise floor; `auto`), `silero` (Silero VAD, weights from "
        "the package), `webrtc` (WebRTC VAD, mode 2), `off`.",
        examples=["auto"],
    )
    threshold: float = Field(
        default=0.5,
        gt=0.0,
        lt=1.0,
        description="Speech probability that starts a segment.",
        examples=[0.5],
    )
    min_speech_ms: float = Field(
        default=30.0,
        ge=0.0,
        le=10_000.0,
        description="Shorter speech runs are dropped, ms.",
        examples=[30.0],
    )
    min_silence_ms: float = Field(
        default=80.0,
        ge=0.0,
        le=10_000.0,
        description="Shorter silences inside speech are filled, ms.",
        examples=[80.0],
    )
    padding_ms: float = Field(
        default=0.0,
        ge=0.0,
        le=2_000.0,
        description="Added before and after every segment, ms.",
        examples=[0.0],
    )
    trim: bool = Field(
        default=False,
        description="Cut leading and trailing silence (keeping `trim_padding_ms`).",
        examples=[False],
    )
    trim_padding_ms: float = Field(
        default=100.0,
        ge=0.0,
        le=2_000.0,
        description="Silence kept around speech when cutting, ms.",
        examples=[100.0],
    )
    max_pause_ms: float | None = Field(
        default=None,
        ge=0.0,
        le=60_000.0,
        description="Shorten every inner pause to at most this, ms. null: keep pauses.",
        examples=[None],
    )
    phrases: bool = Field(
        default=True,
        description="Split speech into phrases at pauses (pitch-reset and "
        "energy cues tell phrase ends from hesitations) and report pause "
        "statistics.",
        examples=[True],
    )
    min_pause_ms: float = Field(
        default=200.0,
        ge=0.0,
        le=10_000.0,
        description="Shortest gap counted as a pause, ms.",
        examples=[200.0],
    )
    boundary_pause_ms: float = Field(
        default=500.0,
        ge=0.0,
        le=10_000.0,
        description="A pause at least this long always ends a phrase, ms.",
        examples=[500.0],
    )
    overlap: bool = Field(
        default=False,
        description="Detect overlapping speech: segments get `overlap`, and "
        "the `overlap_prob` feature is available.",
        examples=[False],
    )
    diarize: bool = Field(
        default=False,
        description="Speaker diarization (resemblyzer d-vectors, clustering "
        "that estimates the number of speakers): segments get `speaker`.",
        examples=[False],
    )
    num_speakers: int | None = Field(
        default=None,
        ge=1,
        le=32,
        description="Known number of speakers; null: estimated.",
        examples=[None],
    )
    max_speakers: int = Field(
        default=8,
        ge=1,
        le=32,
        description="Upper bound when the number is estimated.",
        examples=[8],
    )

    @model_validator(mode="after")
    def _check(self) -> SegmentOptions:
        if self.min_pause_ms > self.boundary_pause_ms:
            raise ValueError(
                f"segment.min_pause_ms ({self.min_pause_ms}) must not exceed "
                f"segment.boundary_pause_ms ({self.boundary_pause_ms})"
            )
        if self.vad == "off" and (
            self.trim or self.max_pause_ms is not None or self.diarize or self.overlap
        ):
            raise ValueError(
                "segment.trim, max_pause_ms, diarize and overlap need a VAD (segment.vad)"
            )
        if self.num_speakers is not None and self.num_speakers > self.max_speakers:
            raise ValueError(
                f"segment.num_speakers ({self.num_speakers}) exceeds segment.max_speakers "
                f"({self.max_speakers})"
            )
        return self


ChannelIndex = Annotated[int, Field(ge=0, le=63)]


class ProcessingOptions(_Options):
    """How to process one recording. Every field has a default that suits speech ML; every
    field is part of the result id, so different options never share a cached result."""

    target_sample_rate: int = Field(
        default=16000,
        ge=4000,
        le=192000,
        description="Output sampling rate, Hz (anti-aliased sinc resampling).",
        examples=[16000],
    )
    channels: Literal["mono", "keep"] | ChannelIndex = Field(
        default="mono",
        description="`mono` averages the channels, `keep` keeps them all, an integer picks one "
        "channel (0-based).",
        examples=["mono"],
    )
    denoise: DenoiseOptions = Field(default_factory=DenoiseOptions)
    loudness: LoudnessOptions = Field(default_factory=LoudnessOptions)
    compression: CompressionOptions = Field(default_factory=CompressionOptions)
    segment: SegmentOptions = Field(default_factory=SegmentOptions)
    features: FeatureOptions = Field(default_factory=FeatureOptions)

    @model_validator(mode="after")
    def _check_nyquist(self) -> ProcessingOptions:
        if "vad_prob" in self.features.resolved_names and self.segment.vad == "off":
            raise ValueError("features.names 'vad_prob' needs a VAD (segment.vad is 'off')")
        if "overlap_prob" in self.features.resolved_names and not (
            self.segment.overlap or self.segment.diarize
        ):
            raise ValueError(
                "features.names 'overlap_prob' needs segment.overlap or segment.diarize"
            )
        if self.features.preset == "whisper" and self.target_sample_rate != 16000:
            raise ValueError(
                "the whisper preset needs target_sample_rate 16000 (Whisper's rate), not "
                f"{self.target_sample_rate}"
            )
        nyquist = self.target_sample_rate / 2
        if self.features.f_max is not None and self.features.f_max > nyquist:
            raise ValueError(
                f"features.f_max ({self.features.f_max} Hz) exceeds the Nyquist frequency "
                f"({nyquist:g} Hz) of target_sample_rate {self.target_sample_rate}"
            )
        if self.features.pitch_f_max >= nyquist:
            raise ValueError(
                f"features.pitch_f_max ({self.features.pitch_f_max} Hz) must be below the Nyquist "
                f"frequency ({nyquist:g} Hz)"
            )
        if self.features.f_min >= nyquist:
            raise ValueError(
                f"features.f_min ({self.features.f_min} Hz) must be below the Nyquist frequency "
                f"({nyquist:g} Hz)"
            )
        return self

    def canonical_json(self) -> str:
        """Every option, defaults included, as compact JSON with sorted keys (the cache key)."""
        import json

        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
