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
