"""Frame-level features and their normalization/aggregation.

:func:`compute_features` turns one signal (and its power spectrogram) into the requested
``[features, frames]`` arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

import torch

from app.errors import InvalidOptions
from app.models.options import FeatureOptions
from app.pipeline.features.descriptors import (
    loudness_frames_db,
    speaking_rate,
    spectral_descriptors,
    temporal_descriptors,
)
from app.pipeline.features.egemaps import egemaps_functionals
from app.pipeline.features.energy import frame_energy
from app.pipeline.features.kaldi import kaldi_fbank, kaldi_mfcc
from app.pipeline.features.normalization import aggregate, normalize_frames
from app.pipeline.features.pitch import PitchTrack, fill_unvoiced, hz_to_semitones, track_pitch
from app.pipeline.features.presets import FeatureConfig
from app.pipeline.features.spectral import log_mel, mfcc, spectrogram, with_deltas
from app.pipeline.features.temporal import zero_crossing_rate
from app.pipeline.features.voice_quality import formants, voice_quality
from app.pipeline.features.whisper import whisper_log_mel


@dataclass
class FeatureArray:
    """One feature of one recording.

    Attributes:
        data: tensor of shape ``(feature, frame)`` (``(channel, feature, frame)`` when channels are
            kept).
        frame_rate_hz: frames per second.
        unit: unit of the values.
        rows: label of each row, when rows are named.
        stats: utterance-level functionals per row (see :func:`aggregate`), when requested.
        frame_offset_s: time of frame 0's centre, seconds; frame ``t`` is centred at
            ``frame_offset_s + t / frame_rate_hz``.
    """

    data: torch.Tensor
    frame_rate_hz: float
    unit: str
    rows: list[str] | None = None
    stats: dict[str, torch.Tensor] | None = field(default=None)
    frame_offset_s: float = 0.0
    summary: dict[str, float] | None = None


_UNITS: dict[str, str] = {
    "log_mel": "dB",
    "mfcc": "dB (cepstral)",
    "energy": "rms: full scale = 1; log_energy: ln(sum of squares); loudness_db: K-weighted "
    "frame loudness, dB (LUFS scale)",
    "spectral": "per row: Hz (centroid, bandwidth, rolloff), 0–1 (flatness, entropy), flux "
    "(0–√2), dB (contrast), dB/kHz (slopes)",
    "temporal": "per row: autocorr_peak (−1–1), envelope (full scale = 1), onset_strength (dB)",
    "zcr": "fraction of sample pairs",
    "waveform": "normalized amplitude (zero mean, unit variance)",
    "pitch_hz": "f0_hz: Hz (unvoiced per features.unvoiced); f0_semitones_re_55hz: semitones",
    "voicing": "voicing_probability: 0–1; voiced: 0/1",
    "voice_quality": "hnr_db: harmonics-to-noise ratio, dB (NaN unvoiced)",
    "formants": "Hz (NaN on unvoiced frames)",
    "egemaps": "per row, as its name says (semitones, dB, fraction, Hz, dB/Hz, 1/s, s); one "
    "column for the whole recording",
}

#: Features computed on each signal's own samples rather than on the padded batch.
_PER_SIGNAL = {
    "waveform", "spectral", "temporal", "pitch", "voice_quality", "formants", "egemaps",
}  # fmt: skip
#: Features the runner adds from its segmentation stage.
_FROM_SEGMENTATION = {"vad_prob", "overlap_prob"}
#: Outputs left as they are by ``features.normalize`` (flags, normalized signals, functionals).
_NOT_NORMALIZED = {"voicing", "waveform", "egemaps"}
#: Presets whose log-mel / MFCC follow another toolkit's own framing and scale.
_TOOLKIT_PRESETS = {"whisper", "kaldi"}


@dataclass(frozen=True)
class _Raw:
    data: torch.Tensor
    unit: str
    rows: list[str] | None = None
    frame_rate_hz: float | None = None
    frame_offset_s: float = 0.0
    summary: dict[str, float] | None = None


def compute_features(
    padded: torch.Tensor,
    power: torch.Tensor,
    *,
    lengths: Sequence[int],
    config: FeatureConfig,
    options: FeatureOptions,
) -> list[dict[str, FeatureArray]]:
    """Compute the requested features of a batch of signals.

    Frame-level transforms on the STFT and the samples (log-mel, MFCC with its deltas, energy,
    ZCR) run on the whole batch at once; the pitch track runs once per group of signals of equal
    length (see :class:`_Pitch`); features that follow another toolkit's framing (the whisper and
    kaldi presets) or that need the bare samples run per signal. Normalization and aggregation
    then run per signal on its own frames, so a signal's features do not depend on what it was
    batched with.

    Args:
        padded: signals padded by :func:`~app.pipeline.features.frames.pad_signal` and
            zero-extended to a common length, shape ``(batch, channel, time)``.
        power: their power spectrograms (``stft_power(padded, frames, padded=True)``), shape
            ``(batch, channel, n_fft // 2 + 1, frame)``.
        lengths: each signal's own length, samples (its frames: ``1 + length // hop_length``).
        config: resolved sizes (see :func:`~app.pipeline.features.presets.resolve`).
        options: the client's feature options (names, preset, scale, deltas, normalization,
            aggregation).

    Returns:
        Per signal, ``{name: FeatureArray}`` in the order of the names; with one channel the
        channel axis is dropped, so arrays are ``(feature, frame)``.
    """
    frames = config.frames
    names = options.resolved_names
    toolkit = options.preset in _TOOLKIT_PRESETS
    counts = [frames.num_frames(length) for length in lengths]
    batched: dict[str, _Raw] = {}
    mel_db: torch.Tensor | None = None
    for name in names:
        if (
            name in _PER_SIGNAL
            or name in _FROM_SEGMENTATION
            or (toolkit and name in ("log_mel", "mfcc"))
        ):
            continue
        if name == "spectrogram":
            scale = options.spectrogram_scale
            unit = {"db": "dB", "power": "|X|^2", "magnitude": "|X|"}[scale]
            batched[name] = _Raw(spectrogram(power, scale), unit)
        elif name in ("log_mel", "mfcc"):
            if mel_db is None:
                mel_db = log_mel(
                    power,
                    frames=frames,
                    n_mels=config.n_mels,
                    f_min=config.f_min,
                    f_max=config.f_max,
                    top_db=config.top_db,
                )
            data = (
                mel_db
                if name == "log_mel"
                else with_deltas(mfcc(mel_db, n_mfcc=config.n_mfcc), options.deltas, lengths=counts)
            )
            batched[name] = _Raw(data, _UNITS[name])
        elif name == "energy":
            energy = frame_energy(padded, frames, padded=True)
            loudness = loudness_frames_db(power, frames=frames).unsqueeze(-2)
            batched[name] = _Raw(
                torch.cat([energy, loudness], dim=-2), _UNITS[name],
                ["rms", "log_energy", "loudness_db"],
            )  # fmt: skip
        elif name == "zcr":
            batched[name] = _Raw(zero_crossing_rate(padded, frames, padded=True), _UNITS[name])
    results: list[dict[str, FeatureArray]] = []
    start = frames.n_fft // 2
    signals = [padded[index, :, start : start + length] for index, length in enumerate(lengths)]
    pitch = _Pitch([s[0] if s.shape[0] == 1 else s for s in signals], config, options)
    for index, count in enumerate(counts):
        raw: dict[str, _Raw] = {}
        signal = _Signal(pitch, index, power[index, ..., :count], config, options)
        for name in names:
            if name in _FROM_SEGMENTATION:
                continue
            if name in batched:
                item = batched[name]
                data = item.data[index, ..., :count]
                raw[name] = _Raw(data[0] if data.shape[0] == 1 else data, item.unit, item.rows)
            else:
                raw.update(signal.feature(name))
        features: dict[str, FeatureArray] = {}
        for key, item in raw.items():
            deltas = key == "mfcc" and key not in batched  # the batch has them already
            data = with_deltas(item.data, options.deltas) if deltas else item.data
            rate = item.frame_rate_hz or frames.frame_rate_hz
            normalized = data if key in _NOT_NORMALIZED else _normalize(key, data, options, rate)
            features[key] = FeatureArray(
                data=normalized,
                frame_rate_hz=rate,
                unit=item.unit
                if options.normalize == "none"
                else f"{item.unit}, {options.normalize}",
                rows=item.rows,
                stats=aggregate(normalized, options.functionals, frame_rate_hz=rate)
                if options.aggregate
                else None,
                frame_offset_s=item.frame_offset_s,
                summary=item.summary,
            )
        results.append(features)
    return results


class _Pitch:
    """The pitch tracks of a batch's signals, computed on first use, once, for every feature
    that needs them.

    Signals of the same shape are tracked in one call on their stack (8 × 5 s took 0.57× the
    time of 8 calls). Signals of other lengths are not padded together: the decoder scores
    whole tracks, so frames past a signal's end would change its path.
    """

    def __init__(
        self, signals: Sequence[torch.Tensor], config: FeatureConfig, options: FeatureOptions
    ) -> None:
        self.signals = signals  # each (time,) or (channel, time)
        self.frames = config.frames
        self.options = options

    @cached_property
    def tracks(self) -> list[PitchTrack]:
        groups: dict[tuple[int, ...], list[int]] = {}
        for index, signal in enumerate(self.signals):
            groups.setdefault(tuple(signal.shape), []).append(index)
        tracks: dict[int, PitchTrack] = {}
        for indices in groups.values():
            joint = track_pitch(
                torch.stack([self.signals[i] for i in indices]),
                sample_rate=self.frames.sample_rate, hop_length=self.frames.hop_length,
                f_min=self.options.pitch_f_min, f_max=self.options.pitch_f_max,
            )  # fmt: skip
            for row, index in enumerate(indices):
                tracks[index] = PitchTrack(joint.f0_hz[row], joint.voicing[row], joint.voiced[row])
        return [tracks[index] for index in range(len(self.signals))]


class _Signal:
    """One signal's per-signal features; its pitch track comes from the batch's :class:`_Pitch`."""

    def __init__(
        self, pitch: _Pitch, index: int, power: torch.Tensor, config: FeatureConfig,
        options: FeatureOptions,
    ) -> None:  # fmt: skip
        self._pitch, self._index = pitch, index
        self.samples = pitch.signals[index]  # (time,) or (channel, time)
        self.power = power[0] if power.shape[0] == 1 and self.samples.dim() == 1 else power
        self.frames = config.frames
        self.config = config
        self.options = options

    @property
    def pitch(self) -> PitchTrack:
        return self._pitch.tracks[self._index]

    def _mono(self, name: str) -> torch.Tensor:
        if self.samples.dim() != 1:
            raise InvalidOptions(
                f"features.names {name!r} needs one channel; use channels 'mono' or a channel "
                "index."
            )
        return self.samples

    def feature(self, name: str) -> dict[str, _Raw]:
        """``{output name: raw feature}`` for feature ``name`` (``pitch`` gives two outputs)."""
        options, frames, rate = self.options, self.frames, self.frames.sample_rate
        if name == "pitch":
            track = self.pitch
            f0 = fill_unvoiced(track.f0_hz, track.voiced, options.unvoiced)
            semitones = hz_to_semitones(fill_unvoiced(track.f0_hz, track.voiced, "interpolate"))
            if options.unvoiced != "interpolate":
                semitones = fill_unvoiced(semitones, track.voiced, options.unvoiced)
            return {
                "pitch_hz": _Raw(torch.stack([f0, semitones], dim=-2), _UNITS["pitch_hz"],
                                 ["f0_hz", "f0_semitones_re_55hz"]),
                "voicing": _Raw(torch.stack([track.voicing, track.voiced.to(f0.dtype)], -2),
                                _UNITS["voicing"], ["voicing_probability", "voiced"]),
            }  # fmt: skip
        if name == "voice_quality":
            track = self.pitch
            quality = voice_quality(
                self._mono(name), sample_rate=rate, f0_hz=track.f0_hz, voiced=track.voiced,
                hop_length=frames.hop_length, f_min=options.pitch_f_min,
            )  # fmt: skip
            summary = {
                "jitter_local": float(quality.jitter_local),
                "shimmer_local": float(quality.shimmer_local),
                "hnr_db": float(quality.hnr_db),
            }
            return {name: _Raw(quality.hnr_frames_db.unsqueeze(0), _UNITS[name], ["hnr_db"],
                               summary=summary)}  # fmt: skip
        if name == "formants":
            data = formants(
                self._mono(name), sample_rate=rate, hop_length=frames.hop_length,
                max_formant_hz=min(options.max_formant_hz, rate / 2), voiced=self.pitch.voiced,
            )  # fmt: skip
            return {name: _Raw(data, _UNITS[name], [f"f{i + 1}_hz" for i in range(len(data))])}
        if name == "spectral":
            data, rows = spectral_descriptors(self.power, frames=frames)
            return {name: _Raw(data, _UNITS[name], rows)}
        if name == "temporal":
            data, rows = temporal_descriptors(self.samples, self.power, frames=frames)
            rate_summary: dict[str, float] | None = None
            if self.samples.dim() == 1:
                rate_summary = {"speaking_rate_syllables_per_s": speaking_rate(
                    self.samples, sample_rate=rate, hop_length=frames.hop_length,
                    voiced=self.pitch.voiced)}  # fmt: skip
            return {name: _Raw(data, _UNITS[name], rows, summary=rate_summary)}
        if name == "egemaps":
            return {name: self._egemaps()}
        if name == "waveform":
            centred = self.samples - self.samples.mean(dim=-1, keepdim=True)
            variance = centred.var(dim=-1, unbiased=False, keepdim=True)
            normalized = centred / (variance + 1e-7).sqrt()
            return {name: _Raw(normalized.unsqueeze(-2), _UNITS[name], frame_rate_hz=float(rate))}
        return {name: self._toolkit(name)}

    def _egemaps(self) -> _Raw:
        frames, track = self.frames, self.pitch
        samples = self._mono("egemaps")
        quality = voice_quality(
            samples, sample_rate=frames.sample_rate, f0_hz=track.f0_hz, voiced=track.voiced,
            hop_length=frames.hop_length, f_min=self.options.pitch_f_min,
        )  # fmt: skip
        spectral, rows = spectral_descriptors(self.power, frames=frames)
        formant_tracks = formants(
            samples, sample_rate=frames.sample_rate, hop_length=frames.hop_length,
            max_formant_hz=min(self.options.max_formant_hz, frames.sample_rate / 2),
            voiced=track.voiced,
        )  # fmt: skip
        rms = frame_energy(samples, frames)[0]
        values, names = egemaps_functionals(
            f0_hz=track.f0_hz, voiced=track.voiced,
            loudness_db=loudness_frames_db(self.power, frames=frames), rms=rms,
            flux=spectral[rows.index("flux")], slope_0_500=spectral[rows.index("slope_0_500")],
            slope_500_1500=spectral[rows.index("slope_500_1500")], formants_hz=formant_tracks,
            jitter_local=float(quality.jitter_local), shimmer_local=float(quality.shimmer_local),
            hnr_frames_db=quality.hnr_frames_db, frame_rate_hz=frames.frame_rate_hz,
        )  # fmt: skip
        duration_s = samples.shape[-1] / frames.sample_rate
        return _Raw(
            values.unsqueeze(-1),
            _UNITS["egemaps"],
            names,
            frame_rate_hz=1 / duration_s,
            frame_offset_s=duration_s / 2,
        )

    def _toolkit(self, name: str) -> _Raw:
        """log_mel / mfcc of the whisper and kaldi presets, on the toolkit's own framing."""
        options, rate = self.options, self.frames.sample_rate
        if options.preset == "whisper":
            n_mels: Literal[80, 128] = 128 if options.n_mels == 128 else 80  # validated
            data = whisper_log_mel(
                self.samples, sample_rate=rate, n_mels=n_mels, pad_to_30s=options.whisper_pad_30s
            )
            return _Raw(data, "Whisper log-mel: (max(log10 P, max − 8) + 4) / 4")
        frame_length_ms, frame_shift_ms = options.win_ms or 25.0, options.hop_ms or 10.0
        low_freq = options.f_min if options.f_min > 0 else 20.0
        high_freq = options.f_max or 0.0
        rate_hz = 1000.0 / frame_shift_ms
        offset_s = round(frame_length_ms * rate / 1000) / 2 / rate  # snipped edges: first centre
        if name == "log_mel":
            fbank = kaldi_fbank(
                self.samples, sample_rate=rate, num_mel_bins=self.config.n_mels,
                frame_length_ms=frame_length_ms, frame_shift_ms=frame_shift_ms,
                low_freq=low_freq, high_freq=high_freq,
            )  # fmt: skip
            return _Raw(fbank, "ln mel power (Kaldi fbank, int16 scale)", None, rate_hz, offset_s)
        cepstra = kaldi_mfcc(
            self.samples, sample_rate=rate, num_ceps=self.config.n_mfcc,
            num_mel_bins=options.n_mels or 23, frame_length_ms=frame_length_ms,
            frame_shift_ms=frame_shift_ms, low_freq=low_freq, high_freq=high_freq,
        )  # fmt: skip
        return _Raw(
            cepstra, "Kaldi cepstra (c0 = ln frame energy, lifter 22)", None, rate_hz, offset_s
        )


def _normalize(
    name: str, data: torch.Tensor, options: FeatureOptions, frame_rate_hz: float
) -> torch.Tensor:
    if options.normalize != "global":
        window = max(1, round(options.cmn_window_s * frame_rate_hz))
        return normalize_frames(data, options.normalize, window=window)
    stats = (options.global_stats or {})[name]
    rows = data.shape[-2]
    if len(stats.mean) != rows:
        raise InvalidOptions(
            f"features.global_stats.{name} has {len(stats.mean)} values per statistic but the "
            f"feature has {rows} rows; recompute the statistics with the same feature options."
        )
    mean = torch.tensor(stats.mean, dtype=data.dtype, device=data.device)
    std = torch.tensor(stats.std, dtype=data.dtype, device=data.device)
    return normalize_frames(data, "global", mean=mean, std=std)
