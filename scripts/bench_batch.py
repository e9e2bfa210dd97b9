"""Batched extraction against one-by-one: 32 clips of 5 s of real speech, one CPU thread.

The clips are cut from ``../shared/data/speech`` (16 kHz PCM16 WAV, each clip different). Both
paths run the same feature extraction, no cleaning, no VAD: with ``--features extraction`` (the
default) log-mel, MFCC with Δ/ΔΔ, energy, ZCR; with ``--features default`` the default feature
options (log-mel, MFCC, pitch, energy):

(a) in-process: ``Pipeline.run_batch`` (the code behind ``POST /process/batch``, default
    ``batch_size``) against ``Pipeline.run`` per clip, interleaved; also the time of each
    pipeline step (``normalize`` includes the loudness measurement, ``features`` the feature
    stage) summed over the clips;
(b) through the API (the ASGI app in-process, no network): one ``POST /process/batch`` with all
    clips against one ``POST /process`` per clip. Each repeat changes the loudness target by
    1e-4 LU so that every request misses the cache.

Prints clips per second for each and their ratio, with the load average before and after (the
machine may be shared). Like the service's processes, the script keeps freed buffers for reuse
(``app.runtime.keep_freed_buffers``: glibc's allocator keeps the batch's buffers instead of
returning them to the OS and page-faulting them in again on every call).

Usage::

    python scripts/bench_batch.py [--clips 32] [--seconds 5] [--repeats 7]
                                  [--features extraction|default] [--no-api]
"""

from __future__ import annotations

# ruff: noqa: E402  (the thread-count variables must be set before numpy/torch are imported)
import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from scipy.signal import resample_poly

REPO = Path(__file__).resolve().parents[1]
SPEECH = REPO.parent / "shared" / "data" / "speech"
sys.path.insert(0, str(REPO))

from app.models.options import ProcessingOptions
from app.pipeline.decode import DecodeLimits
from app.pipeline.runner import Pipeline, PipelineResult

#: Feature extraction only (no cleaning, no VAD): what batching speeds up.
EXTRACTION = {
    "denoise": {"method": "off", "wind": False, "declick": False},
    "segment": {"vad": "off"},
    "features": {"names": ["log_mel", "mfcc", "energy", "zcr"], "deltas": 2},
}
#: The default feature options (pitch included), also without cleaning and VAD.
DEFAULT_FEATURES = {key: value for key, value in EXTRACTION.items() if key != "features"}


def make_clips(count: int, seconds: float) -> list[bytes]:
    speech = []
    for path in sorted(SPEECH.glob("*.ogg")):
        y, sr = sf.read(path, dtype="float32")
        speech.append(resample_poly(y, 160, sr // 100).astype(np.float32))
    signal = np.concatenate(speech)
    length = int(seconds * 16000)
    step = max(1, (len(signal) - length) // count)
    clips = []
    for i in range(count):
        start = (i * step) % (len(signal) - length)
        buffer = io.BytesIO()
        sf.write(buffer, signal[start : start + length], 16000, format="WAV", subtype="PCM_16")
        clips.append(buffer.getvalue())
    return clips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--features", choices=["extraction", "default"], default="extraction")
    parser.add_argument("--no-api", action="store_true", help="skip the API measurement")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from app.runtime import keep_freed_buffers

    kept = keep_freed_buffers()  # as the service's processes do (app/runtime.py)
    config = EXTRACTION if args.features == "extraction" else DEFAULT_FEATURES
    options = ProcessingOptions.model_validate(config)
    pipeline = Pipeline(torch.device("cpu"), DecodeLimits())
    pipeline.warmup(options)
    clips = make_clips(args.clips, args.seconds)
    print(f"load average before: {os.getloadavg()[0]:.2f}; freed buffers kept: {kept}")

    def one_by_one() -> list[PipelineResult]:
        return [pipeline.run(clip, options) for clip in clips]

    def batched() -> list[PipelineResult]:
        return [r for r in pipeline.run_batch(clips, options) if isinstance(r, PipelineResult)]

    times: dict[str, list[float]] = {"one by one": [], "batched": []}
    steps: dict[str, dict[str, list[float]]] = {"one by one": {}, "batched": {}}
    for _ in range(args.repeats):  # interleaved, so drift hits both alike
        for name, run in (("one by one", one_by_one), ("batched", batched)):
            start = time.perf_counter()
            results = run()
            times[name].append(time.perf_counter() - start)
            for step in dict.fromkeys(step for r in results for step, _ in r.steps):
                total = sum(ms for r in results for s, ms in r.steps if s == step)
                steps[name].setdefault(step, []).append(total)
    print(
        f"{args.clips} clips × {args.seconds:g} s, {args.features} features, 1 thread, "
        f"batch_size {pipeline.batch_size}, median of {args.repeats}:"
    )
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, value in medians.items():
        per_step = "  ".join(
            f"{step} {statistics.median(values):.1f}" for step, values in steps[name].items()
        )
        print(
            f"  {name:<11} {value * 1000:8.1f} ms  {args.clips / value:8.1f} clips/s  "
            f"{args.clips * args.seconds / value:8.0f}× real time  (steps, ms: {per_step})"
        )
    print(f"  batched / one-by-one throughput: {medians['one by one'] / medians['batched']:.2f}×")
    if not args.no_api:
        bench_api(clips, config, args)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


def bench_api(clips: list[bytes], config: dict, args: argparse.Namespace) -> None:
    import json
    import tempfile

    from fastapi.testclient import TestClient

    from app.config import Settings
    from app.main import create_app

    settings = Settings(storage_dir=Path(tempfile.mkdtemp()), torch_threads=1)
    times: dict[str, list[float]] = {"one by one": [], "batched": []}
    with TestClient(create_app(settings)) as client:
        for repeat in range(args.repeats + 1):
            options = json.dumps(
                {
                    **config,
                    "loudness": {"target": -23.0 + 1e-4 * repeat},
                }
            )
            start = time.perf_counter()
            for clip in clips:
                response = client.post(
                    "/process", files={"file": ("c.wav", clip)}, data={"options": options}
                )
                assert response.status_code == 200 and not response.json()["cached"]
            one = time.perf_counter() - start
            # Another target again: the batch must not find the one-by-one results cached.
            options = json.dumps({**config, "loudness": {"target": -24.0 + 1e-4 * repeat}})
            start = time.perf_counter()
            response = client.post(
                "/process/batch",
                data={"options": options},
                files=[("files", (f"{i}.wav", c)) for i, c in enumerate(clips)],
            )
            assert response.status_code == 200
            batched = time.perf_counter() - start
            if repeat:  # the first round warms up
                times["one by one"].append(one)
                times["batched"].append(batched)
    medians = {name: statistics.median(values) for name, values in times.items()}
    print("through the API (JSON responses):")
    for name, value in medians.items():
        print(f"  {name:<11} {value * 1000:8.1f} ms  {args.clips / value:8.1f} clips/s")
    print(f"  batched / one-by-one throughput: {medians['one by one'] / medians['batched']:.2f}×")


if __name__ == "__main__":
    main()
