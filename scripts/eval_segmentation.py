"""Evaluate speech segmentation: voice activity and pauses (and diarization, when present).

Voice activity, for our three backends (``app.pipeline.segment.vad`` with its default
post-processing: ``energy``, ``silero``, ``webrtc``) and three anchors run in the same script on
the same audio:

* ``webrtcvad`` mode 2, raw: one decision per 30 ms frame, no smoothing;
* ``silero-vad`` with its own post-processing: ``get_speech_timestamps(audio, model)`` with its
  defaults (threshold 0.5, 250 ms minimum speech, 100 ms minimum silence, 30 ms padding);
* ``pyAudioAnalysis.audioSegmentation.silence_removal(signal, sr, 0.020, 0.020,
  smooth_window=1.0, weight=0.3)``.

The full run adds a column "POST /process, defaults": the segments the service returns for the
same audio (a float WAV through ``Pipeline.run`` with default options, cleaning and loudness
included), which should equal the ``energy`` column's.

Data (all at 16 kHz, frames every 10 ms; frame ``t`` at ``t · 10 ms`` is speech when it lies
inside a segment):

* ``../shared/data/vad/count.wav`` with its ``count.segments`` labels (frames past the last
  label are not scored).
* The LibriSpeech clips (``../shared/data/speech/*.ogg``) with 5 inserted pauses each (0.2–1.5 s
  of the clip's own room tone, at the lowest-energy points between words, ≥ 1 s apart, seed
  fixed, every join faded out and in over 5 ms) and added noise — white, pink, or babble (8
  overlapping, randomly offset excerpts of the other speakers' recordings) — at 20, 10 and
  5 dB SNR (noise power against the clean clip's active-speech power). Reference labels come
  from the clean clip: frames (25 ms) more than 10 dB above its noise floor (10th percentile of
  frame energies), runs under 30 ms dropped, gaps under 100 ms filled; inserted pauses are
  non-speech.

Measures: frame precision / recall / F1 (counts pooled over the cases of a row; "clean" = the
clips with inserted pauses and no added noise), and pause-boundary F1: around each inserted
pause (its reference pause ± 0.5 s; on count.wav around each labelled pause), the speech offsets
and onsets of the reference and of the method are matched one-to-one within ± 50 ms (an offset
with an offset, an onset with an onset). Speed: 60 s of speech (the clips tiled), best of N runs
after a warm-up (N ≥ 5; fast methods run until 0.5 s, at most 50 runs), one CPU thread; wall
clock and the thread's CPU time. "energy + phrases" times ``vad(backend="energy")`` followed by
``phrases``, also on the same speech with pink noise at 5 dB and babble at 10 dB (under noise
the backend re-places the edges of noisy pauses, which costs more). The "≥ 20× faster than
Silero" target compares CPU times (silero-vad's own ``get_speech_timestamps``), as the machine
may be shared; the 0.05 s budget is wall clock.

If ``scripts/eval_diarization.py`` exists (``evaluate(quick: bool) -> str``), its markdown
section is appended.

Usage::

    python scripts/eval_segmentation.py [--markdown PATH] [--quick] [--repeats N] [--seeds N]
                                        [--first-draw K] [--codec FORMAT:BIT_RATE]

``--seeds N`` pools N draws of the pause places, lengths and noises into every row (draw 0 alone
is the default, the one the targets are stated on): the spread between draws shows how much of a
row's F1 is the luck of the draw. ``--first-draw K`` starts them at draw K: the pause-edge
stages were tuned on draws 0–7, so ``--first-draw 8 --seeds 8`` scores draws they have not seen.

``--codec opus:24000`` (or ``mp3``, ``m4a``, ``webm`` at a bit rate) scores the same recordings
after encoding each with PyAV and decoding it as the service does, as web and mobile clients
upload them: the quality tables only.

``--quick`` (CI) scores count.wav, the clean, 20 dB and 5 dB mixtures, and asserts the quality
targets (the speed targets are reported, not asserted: CI machines and their load differ);
pause-boundary F1 is asserted on every mixture row it scores: ≥ 0.9 where the default backend
meets it (clean, 20 and 10 dB), and, where it does not yet (5 dB), ≥ the floor of
``PAUSE_F1_FLOOR`` (the measured value less about one boundary's worth), so a regression fails.
"""

from __future__ import annotations

# ruff: noqa: E402  (the thread-count variables must be set before numpy/torch are imported)
import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import importlib
import itertools
import sys
import time
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import soundfile as sf
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = Path(__file__).resolve().parent
DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO))

from app.pipeline.segment import AUTO_BACKEND, frames_in_segments, phrases, vad
from scripts.evalkit import machine

SAMPLE_RATE = 16000
HOP = 160  # 10 ms
HOP_S = HOP / SAMPLE_RATE
BENCH_SECONDS = 60
SNRS = (20, 10, 5)
NOISES = ("white", "pink", "babble")
PAUSES_PER_CLIP = 5
JOIN_FADE = 80  # samples (5 ms) faded at each join of clip and inserted room tone
PAUSE_RANGE_S = (0.2, 1.5)
TOLERANCE_S = 0.05
WINDOW_S = 0.5
SEED = 20240

#: Targets (issue 4).
TARGET_COUNT_F1 = 0.93
TARGET_MIX5_F1 = 0.90
TARGET_ENERGY_GAP = 0.03
TARGET_ENERGY_SPEEDUP = 20.0
TARGET_PAUSE_F1 = 0.90
#: Floors of the default backend's pause-boundary F1 on draw 0: the target where it is met
#: (measured: clean 0.977, 20 dB 1.000, 10 dB 0.915), else a regression floor about one
#: boundary under the measured value (5 dB 0.877; docs/quality.md gives the rows over 8 draws).
PAUSE_F1_FLOOR = {
    "clean": TARGET_PAUSE_F1,
    "20 dB": TARGET_PAUSE_F1,
    "10 dB": TARGET_PAUSE_F1,
    "5 dB": 0.86,
}
TARGET_ENERGY_SECONDS = 0.05

Segments = list[tuple[float, float]]


# -- data -------------------------------------------------------------------------------------
def load(path: Path) -> np.ndarray:
    import librosa

    y, sr = sf.read(path, dtype="float32", always_2d=True)
    y = y.mean(axis=1)
    if sr != SAMPLE_RATE:
        y = librosa.resample(y, orig_sr=sr, target_sr=SAMPLE_RATE)
    return np.ascontiguousarray(y, dtype=np.float32)


def n_frames(y: np.ndarray) -> int:
    return 1 + len(y) // HOP


def frame_db(y: np.ndarray) -> np.ndarray:
    """Mean square of centred 25 ms frames every 10 ms, dB."""
    padded = np.pad(y.astype(np.float64), 200)
    frames = np.lib.stride_tricks.sliding_window_view(padded, 400)[::HOP][: n_frames(y)]
    return 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)


def runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive) indices of the true runs of a boolean array."""
    change = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return np.flatnonzero(change == 1), np.flatnonzero(change == -1)


def oracle_labels(y: np.ndarray, floor_db: float | None = None) -> np.ndarray:
    """Speech frames of a clean recording: > 10 dB over its floor (``floor_db``, default the
    10th percentile of its frame levels), runs < 30 ms dropped, gaps < 100 ms filled."""
    level = frame_db(y)
    floor = np.percentile(level, 10) if floor_db is None else floor_db
    mask = level > floor + 10.0
    for a, b in zip(*runs(mask), strict=True):
        if b - a < 3:
            mask[a:b] = False
    for a, b in zip(*runs(~mask), strict=True):
        if a > 0 and b < len(mask) and b - a < 10:
            mask[a:b] = True
    return mask


@dataclass
class Case:
    name: str
    group: str  # the row it is pooled into
    samples: np.ndarray
    labels: np.ndarray  # (frame,) bool
    valid: np.ndarray  # (frame,) bool: scored frames
    pauses: Segments = field(default_factory=list)  # reference pauses around inserted ones


def count_case() -> Case:
    y = load(DATA / "vad" / "count.wav")
    n = n_frames(y)
    t = np.arange(n) * HOP_S
    labels, valid = np.zeros(n, bool), np.zeros(n, bool)
    pauses: Segments = []
    for line in (DATA / "vad" / "count.segments").read_text().splitlines():
        if not line.strip():
            continue
        start, end, kind = line.split()
        inside = (t >= float(start)) & (t < float(end))
        valid |= inside
        labels |= inside & (kind == "speech")
        if kind != "speech" and float(start) > 0:
            pauses.append((float(start), float(end)))
    return Case("count.wav", "count.wav", y, labels, valid, pauses[:-1] if valid[-1] else pauses)


def room_tone(y: np.ndarray, labels: np.ndarray, frames: int = 30, margin: int = 10) -> np.ndarray:
    """0.3 s of the clip's background: the stretch, at least 100 ms from any speech, whose
    loudest frame is the quietest."""
    level = frame_db(y)
    span = frames + 2 * margin
    quiet = np.convolve((~labels).astype(float), np.ones(span), mode="valid") == span
    loudest = np.lib.stride_tricks.sliding_window_view(level, frames).max(axis=1)
    loudest = loudest[margin : margin + len(quiet)]
    start = int(np.argmin(np.where(quiet, loudest, np.inf))) + margin
    return y[start * HOP : (start + frames) * HOP]


def insert_pauses(
    y: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, Segments]:
    """Insert room tone at low-energy points; returns (audio, labels, inserted intervals).

    Every join (clip → tone, tone → clip) is faded out and in over :data:`JOIN_FADE` samples
    (raised cosine): the waveforms do not meet, and a jump there is a click (measured: 5–40×
    the typical sample-to-sample step of the room tone) that a detector rightly hears.

    The labels are :func:`oracle_labels` of the audio with the pauses in (the clip's own floor:
    the room tone does not move the threshold). Labelling the clip first and splicing the
    labels would keep a filled gap (< 100 ms of quiet between two words) labelled speech
    even where a pause now follows it.
    """
    labels = oracle_labels(y)
    level = np.convolve(frame_db(y), np.ones(5) / 5, mode="same")
    onsets, offsets = runs(labels)
    lo, hi = onsets[0] + 50, offsets[-1] - 50
    chosen: list[int] = []
    for frame in np.argsort(level):
        if lo < frame < hi and all(abs(frame - c) > 100 for c in chosen):
            chosen.append(int(frame))
        if len(chosen) == 3 * PAUSES_PER_CLIP:
            break
    points = sorted(rng.choice(chosen, PAUSES_PER_CLIP, replace=False).tolist())
    lengths = rng.uniform(*PAUSE_RANGE_S, PAUSES_PER_CLIP)
    tone = room_tone(y, labels)
    tone = np.concatenate([tone, tone[::-1]])  # mirrored tiling: no jumps at the joins
    audio, inserted, previous, position = [], [], 0, 0
    for frame, length in zip(points, lengths, strict=True):
        size = int(length * SAMPLE_RATE) // HOP * HOP
        audio += [_faded(y[previous * HOP : frame * HOP]), _faded(np.resize(tone, size))]
        position += (frame - previous) * HOP
        inserted.append((position / SAMPLE_RATE, (position + size) / SAMPLE_RATE))
        position += size
        previous = frame
    audio.append(_faded(y[previous * HOP :]))
    out = np.concatenate(audio).astype(np.float32)
    return out, oracle_labels(out, floor_db=float(np.percentile(frame_db(y), 10))), inserted


def _faded(piece: np.ndarray) -> np.ndarray:
    """``piece`` with raised-cosine fades of :data:`JOIN_FADE` samples at both ends."""
    k = min(JOIN_FADE, len(piece) // 2)
    ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(k) + 0.5) / k)
    out = piece.astype(np.float64)
    out[:k] *= ramp
    out[len(out) - k :] *= ramp[::-1]
    return out


def make_noise(kind: str, n: int, rng: np.random.Generator, others: list[np.ndarray]) -> np.ndarray:
    if kind == "white":
        return rng.standard_normal(n)
    if kind == "pink":
        spectrum = np.fft.rfft(rng.standard_normal(n))
        f = np.arange(len(spectrum), dtype=np.float64)
        f[0] = 1.0
        return np.fft.irfft(spectrum / np.sqrt(f), n)
    out = np.zeros(n)
    for _ in range(8):  # babble: 8 overlapping talkers
        source = others[int(rng.integers(len(others)))]
        source = source / np.sqrt(np.mean(source**2))
        out += np.resize(np.roll(source, -int(rng.integers(len(source)))), n)
    return out


def reference_pauses(labels: np.ndarray, inserted: Segments) -> Segments:
    """The reference non-speech runs that hold the inserted pauses, seconds."""
    pauses = []
    for a, b in zip(*runs(~labels), strict=True):
        start, end = (a - 0.5) * HOP_S, (b - 0.5) * HOP_S
        if any(start <= s + HOP_S and e <= end + HOP_S for s, e in inserted):
            pauses.append((start, end))
    return pauses


def mixture_cases(
    snrs: tuple[int, ...] = SNRS,
    noises: tuple[str, ...] = NOISES,
    clean_too: bool = True,
    seeds: int = 1,
    first_draw: int = 0,
) -> list[Case]:
    """The LibriSpeech clips with inserted pauses, with each noise at each SNR (and clean).

    ``seeds`` draws of pause places, lengths and noises from draw ``first_draw`` on (draw ``k``
    > 0 names its cases ``"… sk"``; draw 0 is the one the targets and CI use): more than one
    shows how much a row's F1 depends on the draw, and draws the stages were not tuned on
    (8 and later) show how well they carry over.
    """
    paths = sorted((DATA / "speech").glob("*.ogg"))
    clips = [load(p) for p in paths]
    diarization = DATA / "diarization" / "diarizationExample2.wav"
    babble_sources = [load(diarization)] if diarization.exists() else []
    cases = []
    for draw, (index, (path, y)) in itertools.product(
        range(first_draw, first_draw + seeds), enumerate(zip(paths, clips, strict=True))
    ):
        rng = np.random.default_rng(SEED + index + 7919 * draw)
        stem = path.stem + (f" s{draw}" if draw else "")
        clean, labels, inserted = insert_pauses(y, rng)
        speech_power = np.mean(10 ** (frame_db(clean)[labels] / 10))
        others = [c for j, c in enumerate(clips) if j != index] + babble_sources
        pauses = reference_pauses(labels, inserted)
        if clean_too:
            full = np.ones(len(labels), bool)
            cases.append(Case(f"{stem} clean", "clean", clean, labels, full, pauses))
        for noise_index, kind in enumerate(NOISES):
            if kind not in noises:
                continue
            for snr in snrs:
                noise_rng = np.random.default_rng(
                    SEED + 1000 * index + 100 * noise_index + snr + 100_000 * draw
                )
                noise = make_noise(kind, len(clean), noise_rng, others)
                noise *= np.sqrt(speech_power / np.mean(noise**2) / 10 ** (snr / 10))
                cases.append(
                    Case(
                        f"{stem} {kind} {snr} dB",
                        f"{snr} dB",
                        (clean + noise).astype(np.float32),
                        labels,
                        np.ones(len(labels), bool),
                        pauses,
                    )
                )
    return cases


def through_codec(case: Case, codec: str) -> Case:
    """``case`` with its samples encoded as ``codec`` (``format:bit_rate``, e.g. ``opus:24000``;
    formats of ``tests/encode.py``), then decoded, DC-removed and resampled to 16 kHz as the
    service does (:func:`~app.pipeline.decode.decode`, :func:`~app.pipeline.normalize.resample`);
    the length is kept (the decoders remove the encoders' delay)."""
    from app.pipeline.decode import DecodeLimits, decode
    from app.pipeline.normalize import remove_dc, resample
    from tests.encode import encode

    fmt, _, bit_rate = codec.partition(":")
    data = encode(np.clip(case.samples, -1.0, 1.0), SAMPLE_RATE, fmt, int(bit_rate or 32000))
    decoded, info = decode(data, DecodeLimits())
    samples, _ = remove_dc(decoded.samples)
    y = resample(samples.mean(dim=0), info.sample_rate, SAMPLE_RATE).numpy()
    n = len(case.samples)
    y = np.pad(y[:n], (0, max(0, n - len(y)))).astype(np.float32)
    return replace(case, samples=y)


# -- methods ----------------------------------------------------------------------------------
def ours(backend: str) -> Callable[[np.ndarray], Segments]:
    def run(y: np.ndarray) -> Segments:
        result = vad(torch.from_numpy(y), sample_rate=SAMPLE_RATE, hop_length=HOP, backend=backend)
        return [(s.start_s, s.end_s) for s in result.segments]

    return run


def energy_and_phrases(y: np.ndarray) -> None:
    result = vad(torch.from_numpy(y), sample_rate=SAMPLE_RATE, hop_length=HOP, backend="energy")
    phrases(result)


def webrtc_raw(y: np.ndarray) -> Segments:
    import webrtcvad

    detector = webrtcvad.Vad(2)
    length = SAMPLE_RATE * 30 // 1000
    pcm = (np.clip(y, -1, 1) * 32767).astype(np.int16)
    decisions = np.array(
        [
            detector.is_speech(pcm[i : i + length].tobytes(), SAMPLE_RATE)
            for i in range(0, len(pcm) - length + 1, length)
        ]
    )
    starts, ends = runs(decisions)
    return [(a * 0.03, b * 0.03) for a, b in zip(starts, ends, strict=True)]


def silero_default(y: np.ndarray) -> Segments:
    import silero_vad

    from app.pipeline.vad_models import silero_model

    stamps = silero_vad.get_speech_timestamps(
        torch.from_numpy(y), silero_model(), sampling_rate=SAMPLE_RATE, return_seconds=True
    )
    return [(float(s["start"]), float(s["end"])) for s in stamps]


def pyaudioanalysis_module() -> ModuleType:
    """``pyAudioAnalysis.audioSegmentation``; modules it imports but ``silence_removal`` never
    uses (hmmlearn, eyed3, pydub, imblearn, plotly) are stubbed when they are not installed."""
    for name in (
        "hmmlearn",
        "hmmlearn.hmm",
        "eyed3",
        "pydub",
        "imblearn",
        "imblearn.under_sampling",
        "imblearn.over_sampling",
        "plotly",
        "plotly.subplots",
        "plotly.graph_objs",
    ):
        try:
            importlib.import_module(name)
        except ImportError:
            stub = types.ModuleType(name)
            stub.__getattr__ = lambda attribute: None  # type: ignore[method-assign]
            sys.modules[name] = stub
    return importlib.import_module("pyAudioAnalysis.audioSegmentation")


def pyaudioanalysis(y: np.ndarray) -> Segments:
    segmentation = pyaudioanalysis_module()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        limits = segmentation.silence_removal(
            y.astype(np.float64), SAMPLE_RATE, 0.020, 0.020, smooth_window=1.0, weight=0.3
        )
    return [(float(a), float(b)) for a, b in limits]


def service_defaults(y: np.ndarray) -> Segments:
    """The segments ``POST /process`` returns for ``y`` (a float WAV) with default options: the
    same detector as ``energy (ours)``, after the service's decoding, cleaning and loudness."""
    import io

    from app.models.options import ProcessingOptions
    from app.pipeline.decode import DecodeLimits
    from app.pipeline.runner import Pipeline

    buffer = io.BytesIO()
    sf.write(buffer, y, SAMPLE_RATE, format="WAV", subtype="FLOAT")
    pipeline = Pipeline(torch.device("cpu"), DecodeLimits())
    result = pipeline.run(buffer.getvalue(), ProcessingOptions())
    assert result.segmentation is not None
    return [(s.start_s, s.end_s) for s in result.segmentation.segments]


OURS = {
    "energy (ours)": ours("energy"),
    "silero (ours, batched)": ours("silero"),
    "webrtc mode 2 (ours)": ours("webrtc"),
}
ANCHORS = {
    "webrtcvad mode 2, raw": webrtc_raw,
    "silero-vad get_speech_timestamps": silero_default,
    "pyAudioAnalysis silence_removal": pyaudioanalysis,
}
DEFAULT_METHOD = {
    "energy": "energy (ours)",
    "silero": "silero (ours, batched)",
    "webrtc": "webrtc mode 2 (ours)",
}[AUTO_BACKEND]


# -- scoring ----------------------------------------------------------------------------------
@dataclass
class Score:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    b_tp: int = 0
    b_fp: int = 0
    b_fn: int = 0

    def __add__(self, other: Score) -> Score:
        return Score(
            *(a + b for a, b in zip(vars(self).values(), vars(other).values(), strict=False))
        )

    @property
    def precision(self) -> float:
        return self.tp / max(self.tp + self.fp, 1)

    @property
    def recall(self) -> float:
        return self.tp / max(self.tp + self.fn, 1)

    @property
    def f1(self) -> float:
        return 2 * self.tp / max(2 * self.tp + self.fp + self.fn, 1)

    @property
    def boundary_f1(self) -> float:
        total = 2 * self.b_tp + self.b_fp + self.b_fn
        return 2 * self.b_tp / total if total else float("nan")


def events(segments: Segments, lo: float, hi: float) -> list[tuple[str, float]]:
    found = []
    for start, end in segments:
        if lo <= end <= hi:
            found.append(("offset", end))
        if lo <= start <= hi:
            found.append(("onset", start))
    return found


def match_events(reference: list[tuple[str, float]], hypothesis: list[tuple[str, float]]) -> int:
    """One-to-one matches of same-kind events within the tolerance (closest pairs first)."""
    pairs = sorted(
        (abs(r - h), i, j)
        for i, (kind_r, r) in enumerate(reference)
        for j, (kind_h, h) in enumerate(hypothesis)
        if kind_r == kind_h and abs(r - h) <= TOLERANCE_S
    )
    used_r, used_h, matched = set(), set(), 0
    for _, i, j in pairs:
        if i not in used_r and j not in used_h:
            used_r.add(i)
            used_h.add(j)
            matched += 1
    return matched


def score(case: Case, segments: Segments) -> Score:
    hyp = frames_in_segments(segments, n_frames=len(case.labels), hop_s=HOP_S).numpy()
    ref, valid = case.labels, case.valid
    result = Score(
        tp=int((hyp & ref & valid).sum()),
        fp=int((hyp & ~ref & valid).sum()),
        fn=int((~hyp & ref & valid).sum()),
    )
    if case.pauses:
        ref_segments = [
            ((a - 0.5) * HOP_S, (b - 0.5) * HOP_S) for a, b in zip(*runs(ref), strict=False)
        ]
        windows: Segments = []
        for start, end in case.pauses:  # merge overlapping windows
            lo, hi = start - WINDOW_S, end + WINDOW_S
            if windows and lo <= windows[-1][1]:
                windows[-1] = (windows[-1][0], hi)
            else:
                windows.append((lo, hi))
        for lo, hi in windows:
            reference = events(ref_segments, lo, hi)
            hypothesis = events(segments, lo - TOLERANCE_S, hi + TOLERANCE_S)
            hypothesis = [(k, t) for k, t in hypothesis if lo <= t <= hi or _near(t, reference)]
            matched = match_events(reference, hypothesis)
            result.b_tp += matched
            result.b_fp += len(hypothesis) - matched
            result.b_fn += len(reference) - matched
    return result


def _near(t: float, reference: list[tuple[str, float]]) -> bool:
    return any(abs(t - r) <= TOLERANCE_S for _, r in reference)


def evaluate_vad(
    cases: list[Case], methods: dict[str, Callable[[np.ndarray], Segments]]
) -> dict[str, dict[str, Score]]:
    """Scores per method and row (case group), plus the per-case scores under ``name``."""
    table: dict[str, dict[str, Score]] = {}
    for method, run in methods.items():
        rows: dict[str, Score] = {}
        for case in cases:
            s = score(case, run(case.samples))
            rows[case.group] = rows.get(case.group, Score()) + s
            rows[case.name] = s
            noise = case.name.split()[-3] if case.group.endswith("dB") else None
            if noise:
                key = f"{noise} (all SNR)"
                rows[key] = rows.get(key, Score()) + s
            if case.group.endswith("dB"):
                rows["all noisy mixtures"] = rows.get("all noisy mixtures", Score()) + s
        table[method] = rows
        print(
            f"  {method:<34} "
            + "  ".join(f"{g}: F1 {rows[g].f1:.3f}" for g in dict.fromkeys(c.group for c in cases)),
            flush=True,
        )
    return table


# -- speed ------------------------------------------------------------------------------------
@dataclass
class Timing:
    wall_s: float  # best wall-clock time
    cpu_s: float  # best CPU time of the thread (less sensitive to a busy machine)
    runs: int


def best_time(fn: Callable[[np.ndarray], Any], y: np.ndarray, repeats: int) -> Timing:
    """Best of ``repeats`` runs after a warm-up; fast methods run more often (≥ 0.5 s in all,
    at most 50 runs), so a busy machine spoils fewer of them."""
    fn(y)
    start = time.perf_counter()
    fn(y)
    once = time.perf_counter() - start
    runs = max(repeats, min(50, int(0.5 / max(once, 1e-6))))
    wall, cpu = float("inf"), float("inf")
    for _ in range(runs):
        start, start_cpu = time.perf_counter(), time.thread_time()
        fn(y)
        cpu = min(cpu, time.thread_time() - start_cpu)
        wall = min(wall, time.perf_counter() - start)
    return Timing(wall, cpu, runs)


def benchmark(repeats: int) -> dict[str, Timing]:
    clips = [load(p) for p in sorted((DATA / "speech").glob("*.ogg"))]
    y = np.tile(np.concatenate(clips), 4)[: BENCH_SECONDS * SAMPLE_RATE]
    candidates: dict[str, Callable[[np.ndarray], Any]] = {
        **OURS,
        "energy + phrases (ours)": energy_and_phrases,
        **ANCHORS,
    }
    signals = dict.fromkeys(candidates, y)
    # Under noise the energy backend does more (the likelihood-ratio stage re-places the
    # edges of noisy pauses): the same speech with pink noise at 5 dB and babble at 10 dB.
    labels = oracle_labels(y)
    speech_power = np.mean(10 ** (frame_db(y)[labels] / 10))
    for kind, snr in (("pink", 5), ("babble", 10)):
        noise = make_noise(kind, len(y), np.random.default_rng(SEED), clips)
        noise *= np.sqrt(speech_power / np.mean(noise**2) / 10 ** (snr / 10))
        name = f"energy + phrases (ours), {kind} {snr} dB"
        candidates[name] = energy_and_phrases
        signals[name] = (y + noise).astype(np.float32)
    timings = {}
    for name, fn in candidates.items():
        runs = repeats if "pyAudioAnalysis" not in name else max(1, min(repeats, 2))
        timings[name] = t = best_time(fn, signals[name], runs)
        print(
            f"  {name:<40} {1000 * t.wall_s:9.1f} ms (CPU {1000 * t.cpu_s:7.1f} ms, "
            f"{t.runs} runs)  {BENCH_SECONDS / t.wall_s:8.0f}× RT",
            flush=True,
        )
    return timings


# -- report -----------------------------------------------------------------------------------
def markdown(
    table: dict[str, dict[str, Score]],
    rows: list[str],
    timings: dict[str, Timing] | None,
    quick: bool,
    codec: str | None = None,
) -> str:
    methods = list(table)
    lines = [
        "## Voice activity and pauses" + (f", through {codec}" if codec else ""),
        "",
        machine(load=True) + ("; quick run (count.wav, clean, 20 and 5 dB)" if quick else "") + ".",
        f" `auto` = `{AUTO_BACKEND}`."
        + (
            f" Every recording was encoded as {codec} (PyAV) and decoded and resampled to "
            f"{SAMPLE_RATE} Hz as the service does before the methods ran; the labels are the "
            "uncoded clips'."
            if codec
            else ""
        ),
        "",
        "Frame F1 (precision / recall), 10 ms frames; rows pool their cases' frame counts:",
        "",
        "| data | " + " | ".join(methods) + " |",
        "|---|" + "--:|" * len(methods),
    ]
    for row in rows:
        cells = [
            f"{table[m][row].f1:.3f} ({table[m][row].precision:.2f} / {table[m][row].recall:.2f})"
            for m in methods
        ]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    boundary_rows = rows
    lines += [
        "",
        f"Pause-boundary F1 (± {1000 * TOLERANCE_S:.0f} ms) around the inserted pauses (count.wav:"
        " around its labelled pauses):",
        "",
        "| data | " + " | ".join(methods) + " |",
        "|---|" + "--:|" * len(methods),
    ]
    for row in boundary_rows:
        lines.append(
            f"| {row} | " + " | ".join(f"{table[m][row].boundary_f1:.3f}" for m in methods) + " |"
        )
    if timings is None:
        return "\n".join(lines) + "\n"
    lines += [
        "",
        f"Speed on {BENCH_SECONDS} s of 16 kHz speech, one thread (best of N runs after a "
        "warm-up; CPU = the thread's CPU time):",
        "",
        "| method | runs | ms | CPU ms | × real time |",
        "|---|--:|--:|--:|--:|",
    ]
    for name, t in timings.items():
        lines.append(
            f"| {name} | {t.runs} | {1000 * t.wall_s:.1f} | {1000 * t.cpu_s:.1f} | "
            f"{BENCH_SECONDS / t.wall_s:,.0f}× |"
        )
    return "\n".join(lines) + "\n"


def check_targets(
    table: dict[str, dict[str, Score]], timings: dict[str, Timing]
) -> list[tuple[str, bool, bool]]:
    """``(statement, met, asserted in CI)`` per target."""
    default = table[DEFAULT_METHOD]
    energy, silero = table["energy (ours)"], table["silero (ours, batched)"]
    seconds = {name: t.wall_s for name, t in timings.items()}
    cpu = {name: t.cpu_s for name, t in timings.items()}
    silero_anchor = "silero-vad get_speech_timestamps"
    return [
        (
            f"default ({AUTO_BACKEND}) frame F1 on count.wav {default['count.wav'].f1:.3f} ≥ "
            f"{TARGET_COUNT_F1}",
            default["count.wav"].f1 >= TARGET_COUNT_F1,
            True,
        ),
        (
            f"default ({AUTO_BACKEND}) frame F1 on the 5 dB mixtures {default['5 dB'].f1:.3f} ≥ "
            f"{TARGET_MIX5_F1}",
            default["5 dB"].f1 >= TARGET_MIX5_F1,
            True,
        ),
        *[
            (
                f"energy F1 within {TARGET_ENERGY_GAP} of silero on {row}: "
                f"{energy[row].f1:.3f} vs {silero[row].f1:.3f}",
                energy[row].f1 >= silero[row].f1 - TARGET_ENERGY_GAP,
                True,
            )
            for row in ("count.wav", "5 dB")
        ],
        (
            f"energy ≥ {TARGET_ENERGY_SPEEDUP:g}× faster than silero-vad (CPU time): "
            f"{cpu[silero_anchor] / cpu['energy (ours)']:.0f}× (wall clock "
            f"{seconds[silero_anchor] / seconds['energy (ours)']:.0f}×; than our batched "
            f"silero: {cpu['silero (ours, batched)'] / cpu['energy (ours)']:.0f}×)",
            cpu[silero_anchor] / cpu["energy (ours)"] >= TARGET_ENERGY_SPEEDUP,
            False,  # speed is reported, never asserted in CI (machines and load differ)
        ),
        *[
            (
                f"default pause-boundary F1 on {row} {default[row].boundary_f1:.3f} ≥ "
                f"{TARGET_PAUSE_F1}",
                default[row].boundary_f1 >= TARGET_PAUSE_F1,
                PAUSE_F1_FLOOR[row] >= TARGET_PAUSE_F1,
            )
            for row in PAUSE_F1_FLOOR
            if row in default
        ],
        *[
            (
                f"default pause-boundary F1 on {row} {default[row].boundary_f1:.3f} ≥ "
                f"{PAUSE_F1_FLOOR[row]} (regression floor while the target is missed)",
                default[row].boundary_f1 >= PAUSE_F1_FLOOR[row],
                True,
            )
            for row in PAUSE_F1_FLOOR
            if row in default and PAUSE_F1_FLOOR[row] < TARGET_PAUSE_F1
        ],
        (
            f"energy VAD + phrases on {BENCH_SECONDS} s: "
            f"{seconds['energy + phrases (ours)']:.4f} s < {TARGET_ENERGY_SECONDS} s",
            seconds["energy + phrases (ours)"] < TARGET_ENERGY_SECONDS,
            False,  # speed is reported, never asserted in CI
        ),
        *[
            (
                f"energy VAD + phrases on {BENCH_SECONDS} s, {name.split(', ')[1]}: "
                f"{value:.4f} s < {TARGET_ENERGY_SECONDS} s",
                value < TARGET_ENERGY_SECONDS,
                False,
            )
            for name, value in seconds.items()
            if name.startswith("energy + phrases (ours), ")
        ],
    ]


def diarization_module() -> ModuleType | None:
    """``scripts/eval_diarization.py`` when it exists (another section of this report)."""
    if not (SCRIPTS / "eval_diarization.py").exists():
        return None
    sys.path.insert(0, str(SCRIPTS))
    return importlib.import_module("eval_diarization")


def draws(seeds: int, first_draw: int) -> str:
    """How the report names the draws pooled into the mixture rows."""
    if seeds == 1:
        return f"1 draw (draw {first_draw})"
    return f"{seeds} draws ({first_draw}–{first_draw + seeds - 1})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--markdown", type=Path, help="also write the report as markdown here")
    parser.add_argument("--quick", action="store_true", help="CI: a reduced set; assert targets")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per speed measurement")
    parser.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="draws of pause places and noises pooled into each row (default 1: the draw the "
        "targets are set on; more shows how much a row depends on the draw)",
    )
    parser.add_argument(
        "--first-draw",
        type=int,
        default=0,
        help="the first of the --seeds draws (default 0; the pause-edge stages were tuned on "
        "draws 0–7, so e.g. --first-draw 8 --seeds 8 scores draws they have not seen)",
    )
    parser.add_argument(
        "--codec",
        help="format:bit_rate (mp3, m4a, webm, opus; e.g. opus:24000): score every recording "
        "after encoding it so and decoding it as the service does (quality tables only; no "
        "speed, targets or diarization)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    from app.runtime import keep_freed_buffers

    keep_freed_buffers()  # as the service's processes do (app/runtime.py)
    warnings.filterwarnings("ignore", category=FutureWarning)
    missing = [p for p in (DATA / "vad" / "count.wav", DATA / "speech") if not p.exists()]
    if missing:
        print(f"missing recordings: {', '.join(map(str, missing))}", file=sys.stderr)
        return 1

    snrs = (20, 5) if args.quick else SNRS
    cases = [count_case(), *mixture_cases(snrs, seeds=args.seeds, first_draw=args.first_draw)]
    if args.codec:
        cases = [through_codec(case, args.codec) for case in cases]
    print(machine(load=True))
    print("voice activity, frame F1:", flush=True)
    # The full run also scores what the service returns (POST /process, default options), to
    # show that it is what the energy column measures.
    service = {} if args.quick else {"POST /process, defaults": service_defaults}
    table = evaluate_vad(cases, {**OURS, **service, **ANCHORS})
    rows = ["count.wav", "clean", *[f"{snr} dB" for snr in snrs]]
    if not args.quick:
        rows += [f"{noise} (all SNR)" for noise in NOISES] + ["all noisy mixtures"]
    if args.codec:
        report = markdown(table, rows, None, args.quick, args.codec)
        report += f"\nThe mixture rows pool {draws(args.seeds, args.first_draw)}.\n"
        print(report)
        if args.markdown:
            args.markdown.write_text(report)
        return 0
    print(f"speed on {BENCH_SECONDS} s:", flush=True)
    timings = benchmark(args.repeats)
    report = markdown(table, rows, timings, args.quick)
    targets = check_targets(table, timings)
    report += (
        f"\nTargets (CI asserts those not marked informational; the mixture rows pool "
        f"{draws(args.seeds, args.first_draw)} of pause places and noises):\n\n"
        + "\n".join(
            f"- {'met' if ok else '**missed**'}: {text}{'' if asserted else ' (informational)'}"
            for text, ok, asserted in targets
        )
        + "\n"
    )
    print(report)

    diarization = diarization_module()
    if diarization is not None:
        print("diarization:", flush=True)
        section = diarization.evaluate(args.quick)
        print(section)
        report += "\n" + section

    if args.markdown:
        args.markdown.write_text(report)
        print(f"wrote {args.markdown}")
    if args.quick:
        failed = [text for text, ok, asserted in targets if asserted and not ok]
        assert not failed, "segmentation targets missed:\n" + "\n".join(failed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
