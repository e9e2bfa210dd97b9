"""Benchmark the audioproc pipeline on 60 s of real speech, against the librosa equivalent.

Three measurements on the same 60 s, 44.1 kHz stereo PCM16 WAV (built from the speech clips in
``../shared/data/speech``, outside the timed region), all on one CPU thread:

(a) in-process: ``Pipeline(cpu).run(wav, options)`` after ``warmup()``, with the per-step times
    the pipeline reports (decode / normalize / features);
(b) HTTP: ``POST /process?format=npz`` to a real uvicorn server started here on 127.0.0.1
    (``TORCH_THREADS=1``, a temporary ``STORAGE_DIR``); every request carries different bytes
    (one sample's LSB flipped) so the pipeline runs each time, never the cache;
(c) librosa: ``librosa.load(sr=16000, mono=True)`` + pyloudnorm to −23 LUFS + STFT power, mel,
    dB, MFCC + Δ + ΔΔ, RMS and ZCR with the same 25 ms / 10 ms framing.

Our side computes ``log_mel``, ``mfcc`` (13 + Δ + ΔΔ), ``energy`` and ``zcr``, so the work matches.

Usage::

    python scripts/bench_pipeline.py [--repeats N] [--markdown PATH] [--profile]
"""

from __future__ import annotations

# ruff: noqa: E402  (the thread-count variables must be set before numpy/torch are imported)
import os

# One thread everywhere, before numpy / torch / numba are imported.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import cProfile
import io
import json
import pstats
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import soundfile as sf
import torch

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
SPEECH = DATA / "speech"
sys.path.insert(0, str(REPO))

from app.models.options import ProcessingOptions
from app.pipeline.decode import DecodeLimits
from app.pipeline.runner import Pipeline
from app.runtime import keep_freed_buffers
from scripts.evalkit import machine

torch.set_num_threads(1)
keep_freed_buffers()  # as the service's processes do (app/runtime.py)
torch.set_num_interop_threads(1)

RATE = 44_100
DURATION_S = 60.0
HOST = "127.0.0.1"
#: The foundation's work, as the librosa equivalent does it: no cleaning, no VAD.
OPTIONS_JSON = {
    "denoise": {"method": "off", "wind": False, "declick": False},
    "segment": {"vad": "off"},
    "features": {"names": ["log_mel", "mfcc", "energy", "zcr"], "deltas": 2},
}
SERVER_START_TIMEOUT_S = 180.0
REQUEST_TIMEOUT_S = 120.0


# -- input ------------------------------------------------------------------------------------
def build_wav() -> tuple[bytes, int]:
    """60 s of 44.1 kHz stereo PCM16 speech as WAV bytes, and the byte offset of its samples."""
    from scipy.signal import resample_poly

    clips = sorted(SPEECH.glob("*.ogg"))
    if not clips:
        raise SystemExit(f"no speech clips in {SPEECH}")
    parts = []
    for path in clips:
        samples, rate = sf.read(path, dtype="float64", always_2d=True)
        mono = samples.mean(axis=1)
        g = np.gcd(rate, RATE)
        parts.append(resample_poly(mono, RATE // g, rate // g))
    speech = np.concatenate(parts)
    total = int(DURATION_S * RATE)
    speech = np.tile(speech, -(-total // speech.size))[:total]
    delay = int(0.0003 * RATE)  # 0.3 ms, −1.9 dB: a plausible second microphone
    right = 0.8 * np.concatenate([np.zeros(delay), speech[:-delay]])
    stereo = np.stack([speech, right], axis=1)
    stereo *= 0.5 / np.abs(stereo).max()
    buffer = io.BytesIO()
    sf.write(buffer, stereo, RATE, format="WAV", subtype="PCM_16")
    wav = buffer.getvalue()
    return wav, data_offset(wav)


def data_offset(wav: bytes) -> int:
    """Byte offset of the first sample in a RIFF/WAVE file."""
    pos = 12
    while pos + 8 <= len(wav):
        chunk, size = wav[pos : pos + 4], struct.unpack_from("<I", wav, pos + 4)[0]
        if chunk == b"data":
            return pos + 8
        pos += 8 + size + (size & 1)
    raise ValueError("no data chunk")


def variant(wav: bytes, offset: int, k: int) -> bytes:
    """``wav`` with the LSB of sample ``k`` (interleaved) flipped: different content, same sound."""
    data = bytearray(wav)
    data[offset + 2 * k] ^= 1
    return bytes(data)


# -- statistics -------------------------------------------------------------------------------
@dataclass
class Timing:
    name: str
    ms: list[float]

    @property
    def min(self) -> float:
        return float(np.min(self.ms))

    @property
    def median(self) -> float:
        return float(np.median(self.ms))

    @property
    def p95(self) -> float:
        return float(np.percentile(self.ms, 95))

    @property
    def realtime(self) -> float:
        return DURATION_S * 1000.0 / self.median


def time_calls(
    fn: Callable[[Any], object],
    warmup: int,
    repeats: int,
    *,
    prepare: Callable[[int], Any] = lambda i: i,
    pause_s: float = 0.0,
) -> list[float]:
    """Call ``fn(prepare(i))`` ``warmup`` times untimed, then ``repeats`` times timed; ms per
    call. ``prepare`` and ``pause_s`` (idle time before each call) are outside the timing."""
    out = []
    for i in range(warmup + repeats):
        arg = prepare(i)
        time.sleep(pause_s)
        start = time.perf_counter()
        fn(arg)
        if i >= warmup:
            out.append((time.perf_counter() - start) * 1000.0)
    return out


# -- (a) in-process ---------------------------------------------------------------------------
def bench_inprocess(
    wav: bytes, warmup: int, repeats: int
) -> tuple[Timing, list[Timing], Pipeline, ProcessingOptions]:
    pipeline = Pipeline(torch.device("cpu"), DecodeLimits(max_duration_s=3600))
    pipeline.warmup()
    options = ProcessingOptions.model_validate(OPTIONS_JSON)
    steps: dict[str, list[float]] = {}
    totals: list[float] = []
    for i in range(warmup + repeats):
        start = time.perf_counter()
        result = pipeline.run(wav, options)
        elapsed = (time.perf_counter() - start) * 1000.0
        if i < warmup:
            continue
        totals.append(elapsed)
        for name, ms in result.steps:
            steps.setdefault(name, []).append(ms)
    shapes = {k: tuple(v.data.shape) for k, v in result.features.items()}
    print(f"  ours: features {shapes}, output {result.output.loudness_lufs:.2f} LUFS")
    step_timings = [Timing(f"  step: {name}", ms) for name, ms in steps.items()]
    return Timing("in-process pipeline (a)", totals), step_timings, pipeline, options


def profile_inprocess(pipeline: Pipeline, options: ProcessingOptions, wav: bytes) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(5):
        pipeline.run(wav, options)
    profiler.disable()
    for key, title in (("cumulative", "cumulative time"), ("tottime", "own time")):
        stream = io.StringIO()
        stats = pstats.Stats(profiler, stream=stream).strip_dirs().sort_stats(key)
        stats.print_stats(25)
        print(f"\n== cProfile, 5 in-process runs, top 25 by {title} ==")
        text = stream.getvalue()
        print(text[text.find("   ncalls") :].rstrip())


# -- (b) HTTP ---------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def bench_http(
    wav: bytes, offset: int, warmup: int, repeats: int, gap_s: float = 0.0
) -> tuple[Timing, Timing]:
    """Round-trip times, and the pipeline time the server reports in each response's steps."""
    port = free_port()
    base = f"http://{HOST}:{port}"
    with tempfile.TemporaryDirectory(prefix="audioproc-bench-") as tmp:
        env = {
            **os.environ,
            "TORCH_THREADS": "1",
            "STORAGE_DIR": str(Path(tmp) / "results"),
            "MAX_DURATION_S": "3600",
            "PYTHONPATH": str(REPO),
        }
        env.pop("REDIS_URL", None)
        log_path = Path(tmp) / "server.log"
        with open(log_path, "wb") as log:
            server = subprocess.Popen(
                [
                    sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory",
                    "--host", HOST, "--port", str(port), "--log-level", "warning",
                ],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            with httpx.Client(base_url=base, timeout=REQUEST_TIMEOUT_S) as client:
                wait_ready(client, server, log_path)
                options = json.dumps(OPTIONS_JSON)
                responses: list[httpx.Response] = []

                def post(body: bytes) -> None:
                    response = client.post(
                        "/process",
                        params={"format": "npz"},
                        files={"file": ("speech.wav", body, "audio/wav")},
                        data={"options": options},
                    )
                    responses.append(response)

                ms = time_calls(
                    post,
                    warmup,
                    repeats,
                    prepare=lambda k: variant(wav, offset, k),
                    pause_s=gap_s,
                )
            server_ms = check_responses(responses)[warmup:]
        finally:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    return (
        Timing("HTTP POST /process?format=npz (b)", ms),
        Timing("  server: pipeline steps", server_ms),
    )


def wait_ready(client: httpx.Client, server: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(
                f"server exited with {server.returncode}:\n{log_path.read_text()[-3000:]}"
            )
        try:
            if client.get("/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server not ready after {SERVER_START_TIMEOUT_S:g} s")


def check_responses(responses: list[httpx.Response]) -> list[float]:
    """Check every response is a fresh (uncached) NPZ with the four features; return the
    pipeline time (sum of ``meta.steps``) the server reports for each, ms."""
    server_ms = []
    for response in responses:
        if response.status_code != 200:
            raise RuntimeError(
                f"POST /process → {response.status_code}: {response.content[:500]!r}"
            )
        with np.load(io.BytesIO(response.content)) as npz:
            meta = json.loads(npz["meta"].tobytes())
            missing = {"log_mel", "mfcc", "energy", "zcr"} - set(npz.files)
        if meta["cached"] or missing:
            raise RuntimeError(f"unexpected response: cached={meta['cached']} missing={missing}")
        server_ms.append(sum(step["ms"] for step in meta["steps"]))
    return server_ms


# -- (c) librosa ------------------------------------------------------------------------------
def librosa_equivalent(wav: bytes) -> dict[str, np.ndarray]:
    import librosa
    import pyloudnorm

    y, sr = librosa.load(io.BytesIO(wav), sr=16000, mono=True)
    loudness = pyloudnorm.Meter(sr).integrated_loudness(y)
    y = pyloudnorm.normalize.loudness(y, loudness, -23.0)
    S = np.abs(librosa.stft(y, n_fft=512, hop_length=160, win_length=400)) ** 2
    mel = librosa.feature.melspectrogram(S=S, sr=sr, n_mels=80)
    logmel = librosa.power_to_db(mel)
    mfcc = librosa.feature.mfcc(S=logmel, n_mfcc=13)
    d1 = librosa.feature.delta(mfcc, order=1)
    d2 = librosa.feature.delta(mfcc, order=2)
    rms = librosa.feature.rms(y=y, frame_length=400, hop_length=160)
    zcr = librosa.feature.zero_crossing_rate(y, frame_length=400, hop_length=160)
    return {"log_mel": logmel, "mfcc": np.concatenate([mfcc, d1, d2]), "rms": rms, "zcr": zcr}


#: Every frame feature of the service plus voice quality (issue 5's "full feature set").
FULL_OPTIONS_JSON = {
    "denoise": {"method": "off", "wind": False, "declick": False},
    "segment": {"vad": "off"},
    "features": {
        "names": [
            "spectrogram",
            "log_mel",
            "mfcc",
            "energy",
            "zcr",
            "pitch",
            "voice_quality",
            "formants",
            "spectral",
            "temporal",
        ],
        "deltas": 2,
    },
}


def librosa_full_equivalent(wav: bytes) -> dict[str, np.ndarray]:
    """The foundation's librosa equivalent plus librosa's pitch (pYIN), spectral descriptors,
    onset strength and LPC formants on 25 ms frames of voiced speech."""
    import librosa

    out = librosa_equivalent(wav)
    y, sr = librosa.load(io.BytesIO(wav), sr=16000, mono=True)
    S = np.abs(librosa.stft(y, n_fft=512, hop_length=160, win_length=400))
    f0, voiced, _ = librosa.pyin(y, fmin=65, fmax=400, sr=sr, frame_length=1024, hop_length=160)
    out["pitch"] = f0
    out["centroid"] = librosa.feature.spectral_centroid(S=S, sr=sr)
    out["bandwidth"] = librosa.feature.spectral_bandwidth(S=S, sr=sr)
    out["rolloff"] = librosa.feature.spectral_rolloff(S=S, sr=sr)
    out["flatness"] = librosa.feature.spectral_flatness(S=S)
    out["contrast"] = librosa.feature.spectral_contrast(S=S, sr=sr)
    out["onset"] = librosa.onset.onset_strength(y=y, sr=sr, hop_length=160)
    frames = librosa.util.frame(librosa.effects.preemphasis(y), frame_length=400, hop_length=160)
    voiced_frames = frames[:, : voiced.shape[0]][:, voiced[: frames.shape[1]]]
    out["lpc"] = librosa.lpc(
        np.ascontiguousarray(voiced_frames.T * np.hanning(400)), order=10, axis=-1
    )
    return out


def bench_full(wav: bytes, pipeline: Pipeline, warmup: int, repeats: int) -> list[Timing]:
    import warnings

    options = ProcessingOptions.model_validate(FULL_OPTIONS_JSON)
    ours = time_calls(lambda _: pipeline.run(wav, options), warmup, repeats)
    defaults = ProcessingOptions()
    service = time_calls(lambda _: pipeline.run(wav, defaults), warmup, repeats)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = time_calls(lambda _: librosa_full_equivalent(wav), 1, max(2, repeats // 5))
    return [
        Timing("full feature set, in-process (d)", ours),
        Timing("librosa-based full equivalent (e)", reference),
        Timing("service defaults: clean, level, segment, features (f)", service),
    ]


def bench_librosa(wav: bytes, warmup: int, repeats: int) -> Timing:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pyloudnorm warns when a sample would clip
        shapes = {k: v.shape for k, v in librosa_equivalent(wav).items()}
        print(f"  librosa: features {shapes}")
        ms = time_calls(lambda _: librosa_equivalent(wav), warmup, repeats)
    return Timing("librosa + pyloudnorm equivalent (c)", ms)


# -- report -----------------------------------------------------------------------------------
def table(rows: list[Timing]) -> list[list[str]]:
    out = [["measurement", "n", "min ms", "median ms", "p95 ms", "× real time"]]
    for t in rows:
        rt = f"{t.realtime:,.0f}×" if not t.name.startswith("  ") else ""
        out.append([t.name, str(len(t.ms)), f"{t.min:.1f}", f"{t.median:.1f}", f"{t.p95:.1f}", rt])
    return out


def render_text(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_markdown(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "|".join(["---"] + ["--:"] * 5) + "|"]
    for row in rows[1:]:
        name = "↳ " + row[0].strip() if row[0].startswith("  ") else row[0]
        lines.append("| " + " | ".join([name, *row[1:]]) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--repeats", type=int, default=None,
        help="timed repeats for every measurement (default 20 in-process, 20 HTTP, 10 librosa)",
    )  # fmt: skip
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs first (default 3)")
    parser.add_argument("--markdown", type=Path, help="also write the table as markdown here")
    parser.add_argument("--profile", action="store_true", help="cProfile 5 in-process runs")
    parser.add_argument("--skip-http", action="store_true", help="no server, no HTTP timing")
    parser.add_argument(
        "--full", action="store_true",
        help="also time the full feature set against a librosa-based equivalent (pYIN, LPC, ...)",
    )  # fmt: skip
    parser.add_argument(
        "--http-gap",
        type=float,
        default=0.0,
        help="idle seconds between HTTP requests, untimed (default 0: back to back)",
    )
    args = parser.parse_args()
    n_ours = args.repeats or 20
    n_http = args.repeats or 20
    n_librosa = args.repeats or 10

    print(f"machine: {machine()}")
    load_before = os.getloadavg()
    wav, offset = build_wav()
    print(f"input: {DURATION_S:g} s, {RATE} Hz stereo PCM16 WAV, {len(wav) / 2**20:.1f} MiB")

    print("(a) in-process …", flush=True)
    ours, steps, pipeline, options = bench_inprocess(wav, args.warmup, n_ours)
    rows = [ours, *steps]
    http = None
    if not args.skip_http:
        print("(b) HTTP …", flush=True)
        http, server = bench_http(wav, offset, args.warmup, n_http, args.http_gap)
        rows += [http, server]
    print("(c) librosa …", flush=True)
    ref = bench_librosa(wav, args.warmup, n_librosa)
    rows.append(ref)

    full: list[Timing] = []
    if args.full:
        print("(d, e) full feature set and its librosa-based equivalent …", flush=True)
        full = bench_full(wav, pipeline, args.warmup, n_ours)
        rows += full

    load = f"load average (1 min) {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after"
    cells = table(rows)
    ratios = [f"librosa / ours in-process (median): {ref.median / ours.median:.2f}×"]
    if full:
        ratios.append(
            f"librosa-based / ours, full feature set: {full[1].median / full[0].median:.1f}×"
        )
    if http is not None:
        ratios.append(f"librosa / HTTP round trip (median): {ref.median / http.median:.2f}×")
    print()
    print(render_text(cells))
    print()
    print("\n".join(ratios))
    print(load)

    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        text = (
            f"Machine: {machine()}. Input: {DURATION_S:g} s of speech, {RATE} Hz stereo PCM16 "
            f"WAV; {load}.\n\n{render_markdown(cells)}\n\n"
            + "\n".join(f"- {r}" for r in ratios)
            + "\n"
        )
        args.markdown.write_text(text, encoding="utf-8")
        print(f"markdown table written to {args.markdown}")

    if args.profile:
        profile_inprocess(pipeline, options, wav)
    return 0


if __name__ == "__main__":
    sys.exit(main())
