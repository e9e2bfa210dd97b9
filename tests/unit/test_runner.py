"""The pipeline runner: the padded batch path equals one signal at a time."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from app.errors import CorruptAudio
from app.models.options import ProcessingOptions
from app.pipeline.decode import DecodeLimits
from app.pipeline.runner import Pipeline
from tests.conftest import tone, wav_bytes


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


def test_cpu_default_batch_size_is_one_and_cuda_32() -> None:
    assert Pipeline(torch.device("cpu"), DecodeLimits()).batch_size == 1
    assert Pipeline(torch.device("cuda"), DecodeLimits()).batch_size == 32
