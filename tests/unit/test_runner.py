"""The pipeline runner: the padded batch path equals one signal at a time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from app.errors import CorruptAudio
from app.models.options import ProcessingOptions
from app.pipeline.decode import DecodeLimits
from app.pipeline.runner import Pipeline
from tests.conftest import tone, wav_bytes
from tests.unit.signals import SR, bursts_in_noise


@pytest.mark.parametrize("preset", ["default", "librosa"])
def test_padded_batches_equal_single_runs(preset: str) -> None:
    rng = np.random.default_rng(11)
    clips = [
        wav_bytes(
            tone(120 + 50 * i, seconds, rate, 0.3)
            + 0.02 * rng.standard_normal(int(seconds * rate)).astype(np.float32),
            rate,
        )
        for i, (seconds, rate) in enumerate(
            [(0.3, 16000), (1.7, 44100), (0.9, 8000), (2.2, 48000), (0.05, 16000)]
        )
    ]
    clips.insert(2, b"RIFF\x00\x00\x00\x00WAVEnonsense")
    options = ProcessingOptions.model_validate(
        {
            "features": {
                "preset": preset,
                "names": ["spectrogram", "log_mel", "mfcc", "energy", "zcr"],
                "deltas": 2,
                "normalize": "cmvn",
                "aggregate": True,
            }
        }
    )
    single = Pipeline(torch.device("cpu"), DecodeLimits())
    batched = Pipeline(torch.device("cpu"), DecodeLimits(), batch_size=16)
    outcomes = batched.run_batch(clips, options)
    assert isinstance(outcomes[2], CorruptAudio)
    for data, outcome in zip(clips, outcomes, strict=True):
        if data.startswith(b"RIFF\x00"):
            continue
        alone = single.run(data, options)
        assert not isinstance(outcome, Exception)
        assert outcome.output.loudness_lufs == pytest.approx(alone.output.loudness_lufs, abs=1e-4)
        torch.testing.assert_close(outcome.audio.samples, alone.audio.samples)
        for name, feature in alone.features.items():
            torch.testing.assert_close(
                outcome.features[name].data, feature.data, atol=2e-3, rtol=1e-4, msg=name
            )
            assert outcome.features[name].stats is not None and feature.stats is not None
            for key, value in feature.stats.items():
                torch.testing.assert_close(
                    outcome.features[name].stats[key], value, atol=2e-3, rtol=1e-4
                )


def test_batched_pitch_and_deltas_equal_single_runs() -> None:
    """Default features (pitch tracked jointly for clips of one length) with Δ/ΔΔ, on clips of
    equal and of different lengths, in one batch."""
    rng = np.random.default_rng(5)

    def clip(f0_hz: float, seconds: float) -> bytes:
        voiced = tone(f0_hz, seconds, 16000, 0.3) + tone(3 * f0_hz, seconds, 16000, 0.1)
        voiced[: int(0.4 * 16000)] = 0.0  # a silent (unvoiced) start
        noise = 0.01 * rng.standard_normal(voiced.shape[0]).astype(np.float32)
        return wav_bytes(voiced + noise, 16000)

    clips = [clip(110, 1.5), clip(180, 1.5), clip(240, 1.1), clip(150, 1.5), clip(95, 0.7)]
    options = ProcessingOptions.model_validate(
        {"features": {"deltas": 2}, "denoise": {"method": "off"}, "segment": {"vad": "off"}}
    )
    single = Pipeline(torch.device("cpu"), DecodeLimits())
    outcomes = Pipeline(torch.device("cpu"), DecodeLimits(), batch_size=8).run_batch(clips, options)
    for data, outcome in zip(clips, outcomes, strict=True):
        alone = single.run_batch([data], options)[0]
        assert not isinstance(outcome, Exception) and not isinstance(alone, Exception)
        assert list(outcome.features) == ["log_mel", "mfcc", "pitch_hz", "voicing", "energy"]
        assert bool(alone.features["voicing"].data[1].any())  # the tones are tracked as voiced
        assert not bool(alone.features["voicing"].data[1, :30].any())  # the silence is not
        for name, feature in alone.features.items():
            torch.testing.assert_close(
                outcome.features[name].data, feature.data, atol=2e-3, rtol=1e-4,
                equal_nan=True, msg=name,
            )  # fmt: skip


def test_default_batch_sizes() -> None:
    assert Pipeline(torch.device("cpu"), DecodeLimits()).batch_size == 8
    assert Pipeline(torch.device("cuda"), DecodeLimits()).batch_size == 32


def test_the_pipeline_version_follows_the_pipeline_sources(tmp_path: Path) -> None:
    # Result ids include the version: a change to any pipeline source must change it, so a
    # cache never serves what an older pipeline computed.
    from app.pipeline.runner import PIPELINE_VERSION, _source_digest

    (tmp_path / "features").mkdir()
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "features" / "b.py").write_text("y = 2\n")
    (tmp_path / "notes.txt").write_text("not a source")
    before = _source_digest(tmp_path)
    assert _source_digest(tmp_path) == before  # deterministic
    (tmp_path / "notes.txt").write_text("changed")
    assert _source_digest(tmp_path) == before
    (tmp_path / "features" / "b.py").write_text("y = 3\n")
    assert _source_digest(tmp_path) != before
    assert PIPELINE_VERSION.startswith("3+") and len(PIPELINE_VERSION) == 2 + 12


def test_segments_do_not_depend_on_noise_suppression_or_compression() -> None:
    """Segmentation analyses the signal before noise suppression and compression (their gain
    floors and level riding moved the energy detector's pause edges: 5 dB boundary F1 0.88 →
    0.68 with the default denoiser), so the segments of a noisy recording are the same whether
    the output is denoised, compressed or neither, while the audio itself differs."""
    spans = [(0.3, 1.1), (1.5, 2.0), (2.6, 3.6), (4.1, 4.5), (5.0, 5.7)]
    noisy = bursts_in_noise(spans, "pink", 5.0, seed=3, seconds=6.0).numpy()
    data = wav_bytes(noisy, SR, subtype="FLOAT")
    pipeline = Pipeline(torch.device("cpu"), DecodeLimits())

    def run(**options: object) -> tuple[list[tuple[float, float]], np.ndarray]:
        result = pipeline.run(data, ProcessingOptions.model_validate(options))
        assert result.segmentation is not None
        segments = [(s.start_s, s.end_s) for s in result.segmentation.segments]
        return segments, result.audio.samples[0].numpy()

    plain, plain_audio = run(denoise={"method": "off", "wind": False})
    assert len(plain) == len(spans)
    for options in ({}, {"compression": {"enabled": True}}):
        segments, audio = run(**options)
        np.testing.assert_allclose(segments, plain, rtol=0.0, atol=1e-9)
        change_db = 10 * np.log10(np.mean((audio - plain_audio) ** 2) / np.mean(plain_audio**2))
        assert change_db > -20.0  # the output audio did change
