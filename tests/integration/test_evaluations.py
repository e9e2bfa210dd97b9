"""The reduced evaluations: each script's ``--quick`` mode asserts its issue's targets on the
shared recordings, so a quality regression fails the build."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, SHARED_DATA

SCRIPTS = {
    "denoise": ["scripts/eval_denoise.py", "--quick"],
    "segmentation": ["scripts/eval_segmentation.py", "--quick"],
}


@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", list(SCRIPTS))
def test_quick_evaluation_meets_its_targets(name: str) -> None:
    if not SHARED_DATA.exists():
        pytest.skip(f"{SHARED_DATA} is absent: the evaluations run on the shared recordings")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, *SCRIPTS[name]], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=880,
    )  # fmt: skip
    assert done.returncode == 0, f"{name}: {done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    if name == "segmentation":  # the pause-boundary F1 is asserted on every condition it runs
        for row in ("clean", "20 dB", "5 dB"):
            assert f"- met: default pause-boundary F1 on {row} " in done.stdout, row


@pytest.mark.parametrize("codec", ["opus:24000", "mp3:64000", "m4a:64000"])
def test_the_codec_option_keeps_the_recordings_length_and_timing(codec: str) -> None:
    """``eval_segmentation.py --codec`` scores the labels of the uncoded clip against the coded
    one, so the round trip must keep every sample where it was: same length, and the decoded
    signal best aligned with the original at lag 0 (the decoders remove the encoders' delay)."""
    import numpy as np

    from scripts.eval_segmentation import SAMPLE_RATE, Case, through_codec

    t = np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE
    bursts = np.where((t % 0.5) < 0.2, 0.3 * np.sin(2 * np.pi * 440 * t), 0.0).astype(np.float32)
    frames = len(bursts) // 160 + 1
    case = Case("bursts", "clean", bursts, np.ones(frames, bool), np.ones(frames, bool))
    coded = through_codec(case, codec).samples
    assert coded.shape == bursts.shape and coded.dtype == np.float32
    lags = range(-64, 65)
    n = len(bursts)
    score = [float(np.dot(bursts[max(0, k) : n + min(0, k)], coded[max(0, -k) : n - max(0, k)]))
             for k in lags]  # fmt: skip
    assert list(lags)[int(np.argmax(score))] == 0
    error = coded - bursts
    assert 10 * np.log10(np.sum(bursts**2) / np.sum(error**2)) > 10.0  # it is the same signal
