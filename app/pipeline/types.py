"""The names of every choice the pipeline offers, in one place (one vocabulary everywhere)."""

from __future__ import annotations

from typing import Literal, get_args

#: ``mono`` averages channels, ``keep`` keeps them, an integer picks one (0-based).
ChannelMode = Literal["mono", "keep"] | int
LoudnessMode = Literal["lufs", "peak", "rms", "off"]
SpectrogramScale = Literal["magnitude", "power", "db"]
MelScale = Literal["slaney", "htk"]
PadMode = Literal["reflect", "constant"]
FeatureName = Literal[
    "spectrogram", "log_mel", "mfcc", "energy", "zcr", "pitch", "voice_quality", "formants",
    "spectral", "temporal", "waveform", "egemaps", "vad_prob", "overlap_prob",
]  # fmt: skip
UnvoicedMode = Literal["zero", "nan", "interpolate"]
#: ``auto`` is the decision-directed MMSE log-spectral amplitude estimator with back-off.
DenoiseMethod = Literal["auto", "mmse", "spectral_subtraction", "off"]
#: ``auto`` is the project's own energy/periodicity detector (see app/pipeline/energy_vad.py).
VadChoice = Literal["auto", "energy", "silero", "webrtc", "off"]
FeaturePreset = Literal["default", "librosa", "whisper", "kaldi", "wav2vec2", "egemaps"]
FeatureNormalization = Literal["none", "cmn", "cmvn", "sliding_cmn", "global"]
Functional = Literal[
    "mean", "std", "min", "max", "range", "median", "p05", "p25", "p75", "p95",
    "skewness", "kurtosis", "slope",
]  # fmt: skip

#: Every functional, in a stable order.
FUNCTIONALS: tuple[Functional, ...] = get_args(Functional)
#: The default selection.
DEFAULT_FUNCTIONALS: tuple[Functional, ...] = ("mean", "std", "min", "max")
