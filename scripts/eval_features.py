"""Evaluate the feature extractors against reference tools: pitch (and voice quality, when present).

Pitch: our tracker (``app.pipeline.features.pitch.track_pitch``), ``librosa.pyin`` and
``torchaudio.functional.detect_pitch_frequency`` are each compared with Praat (parselmouth,
``Sound.to_pitch(time_step=0.01, pitch_floor=65, pitch_ceiling=400)``: the autocorrelation
method with its defaults) on the shared speech clips (``../shared/data/speech/*.ogg`` and
``../shared/data/vad/count.wav``, all resampled to 16 kHz), in the same run, on one CPU thread.

* GPE (gross pitch error): of the frames both call voiced, the fraction with ``|f0 − praat| >
  20 %`` of Praat's value.
* VDE (voicing decision error): the fraction of all frames whose voiced/unvoiced decisions differ.
* fine error: mean ``|1200 · log2(f0 / praat)|`` cents over the voiced-by-both, non-gross frames.
* × real time: audio duration / best-of-N processing time (per clip, and on 60 s of speech).
  Praat (parselmouth) may use more than one thread; the others run on one.

Frames are compared at Praat's frame times. Praat places its frames symmetrically in the signal
(the first one where a whole 46 ms window fits), which generally falls between our 10 ms grid
points; so Praat analyses the clip with a few milliseconds of leading and trailing zeros
(< 10 ms each), chosen so that every Praat frame centre is one of our frame centres (a Praat
frame past our last frame, centred in the padding, is dropped).
``librosa.pyin`` frames are centred like ours. ``detect_pitch_frequency`` frame ``j`` analyses
samples ``[160 j, 160 (j + 1) + lag)``; it is aligned with our frame ``j + 1``; it makes no
voicing decision (every frame is voiced), so its VDE is the fraction of Praat's unvoiced frames.

Overall figures pool the frames of every clip.

If ``scripts/eval_voice_quality.py`` exists (``evaluate() -> list[dict]`` and
``markdown(rows) -> str``), its section is appended.

Usage::

    python scripts/eval_features.py [--markdown PATH] [--repeats N]
"""

from __future__ import annotations

# ruff: noqa: E402  (the thread-count variables must be set before numpy/torch are imported)
import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import importlib
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, fields
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

from app.pipeline.features.pitch import track_pitch
from scripts.evalkit import machine

SAMPLE_RATE = 16000
HOP = 160  # 10 ms
F_MIN, F_MAX = 65.0, 400.0
BENCH_SECONDS = 60

#: (f0 Hz per frame, voiced per frame) on our frame grid (frame t centred at sample t * HOP).
Track = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Clip:
    name: str
    samples: np.ndarray  # float32, 16 kHz, mono

    @property
    def seconds(self) -> float:
        return len(self.samples) / SAMPLE_RATE


def clip_paths() -> list[Path]:
    return [*sorted((DATA / "speech").glob("*.ogg")), DATA / "vad" / "count.wav"]


def load_clip(path: Path) -> Clip:
    import librosa

    y, sr = sf.read(path, dtype="float32", always_2d=True)
    y = y.mean(axis=1)
    if sr != SAMPLE_RATE:
        y = librosa.resample(y, orig_sr=sr, target_sr=SAMPLE_RATE)
    return Clip(path.name, np.ascontiguousarray(y, dtype=np.float32))


# -- Praat, the reference ---------------------------------------------------------------------
def praat_reference(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Praat's F0 (0 = unvoiced) at its frames, and the index of our frame at each of them."""
    import parselmouth

    for total in range(2 * HOP, 2 * HOP + 4):
        n = len(y) + total
        count = int(((n / SAMPLE_RATE) - 3.0 / F_MIN) / (HOP / SAMPLE_RATE)) + 1
        first_centre = (n - 1) // 2 - (count - 1) * HOP // 2  # sample index in the padded signal
        lead = first_centre % HOP
        padded = np.concatenate([np.zeros(lead), y, np.zeros(total - lead)])
        pitch = parselmouth.Sound(padded, SAMPLE_RATE).to_pitch(
            time_step=HOP / SAMPLE_RATE, pitch_floor=F_MIN, pitch_ceiling=F_MAX
        )
        # Praat's sample k (0-based) sits at (k + 0.5) / sample_rate seconds.
        position = (pitch.xs() * SAMPLE_RATE - 0.5 - lead) / HOP
        index = np.round(position).astype(int)
        if np.allclose(position, index, atol=1e-6):
            inside = index <= len(y) // HOP  # the padding may add a frame past our last
            return index[inside], pitch.selected_array["frequency"][inside]
    raise RuntimeError("could not align Praat's frames with ours")


def praat_time(y: np.ndarray) -> None:
    import parselmouth

    parselmouth.Sound(y.astype(np.float64), SAMPLE_RATE).to_pitch(
        time_step=HOP / SAMPLE_RATE, pitch_floor=F_MIN, pitch_ceiling=F_MAX
    )


# -- the trackers -----------------------------------------------------------------------------
def ours(y: np.ndarray) -> Track:
    track = track_pitch(
        torch.from_numpy(y), sample_rate=SAMPLE_RATE, hop_length=HOP, f_min=F_MIN, f_max=F_MAX
    )
    return track.f0_hz.numpy(), track.voiced.numpy()


def pyin(y: np.ndarray) -> Track:
    import librosa

    f0, voiced, _ = librosa.pyin(
        y, fmin=F_MIN, fmax=F_MAX, sr=SAMPLE_RATE, frame_length=1024, hop_length=HOP
    )
    return np.nan_to_num(f0), voiced


def torchaudio_nccf(y: np.ndarray) -> Track:
    import torchaudio.functional as AF

    f0 = AF.detect_pitch_frequency(
        torch.from_numpy(y), SAMPLE_RATE, freq_low=int(F_MIN), freq_high=int(F_MAX)
    ).numpy()
    f0 = np.concatenate([[0.0], f0])  # its frame j ends up centred near our frame j + 1
    return f0, f0 > 0


METHODS: dict[str, Callable[[np.ndarray], Track]] = {
    "ours (track_pitch)": ours,
    "librosa.pyin": pyin,
    "torchaudio detect_pitch_frequency": torchaudio_nccf,
}


# -- scoring ----------------------------------------------------------------------------------
@dataclass
class Counts:
    """Frame counts, summable over clips."""

    frames: int = 0
    voicing_errors: int = 0
    both_voiced: int = 0
    gross: int = 0
    cents_sum: float = 0.0
    seconds: float = 0.0
    time_s: float = 0.0

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            **{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)}
        )

    def row(self, method: str, clip: str) -> dict[str, Any]:
        fine = self.both_voiced - self.gross
        return {
            "method": method,
            "clip": clip,
            "frames": self.frames,
            "gpe": self.gross / max(self.both_voiced, 1),
            "vde": self.voicing_errors / max(self.frames, 1),
            "fine_cents": self.cents_sum / fine if fine else float("nan"),
            "x_realtime": self.seconds / self.time_s if self.time_s else float("nan"),
        }


def compare(track: Track, index: np.ndarray, reference: np.ndarray) -> Counts:
    f0_all, voiced_all = track
    inside = index < len(f0_all)  # frames a method does not reach count as unvoiced
    at = np.clip(index, 0, len(f0_all) - 1)
    f0 = f0_all[at]
    voiced = voiced_all[at].astype(bool) & inside & (f0 > 0)
    ref_voiced = reference > 0
    both = voiced & ref_voiced
    ratio = f0[both] / reference[both]
    gross = np.abs(ratio - 1.0) > 0.2
    return Counts(
        frames=len(reference),
        voicing_errors=int((voiced != ref_voiced).sum()),
        both_voiced=int(both.sum()),
        gross=int(gross.sum()),
        cents_sum=float(np.abs(1200.0 * np.log2(ratio[~gross])).sum()),
    )


def best_time(fn: Callable[[np.ndarray], Any], y: np.ndarray, repeats: int) -> tuple[Any, float]:
    """Result of ``fn(y)`` and the best wall time of ``repeats`` calls after one warm-up, s."""
    result = fn(y)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn(y)
        best = min(best, time.perf_counter() - start)
    return result, best


def repeats_for(method: str, repeats: int) -> int:
    return max(1, min(repeats, 2)) if method == "librosa.pyin" else repeats


def evaluate_pitch(clips: list[Clip], repeats: int) -> list[dict[str, Any]]:
    rows = []
    totals = {name: Counts() for name in METHODS}
    for clip in clips:
        index, reference = praat_reference(clip.samples)
        for name, method in METHODS.items():
            track, seconds = best_time(method, clip.samples, repeats_for(name, repeats))
            counts = compare(track, index, reference)
            counts.seconds, counts.time_s = clip.seconds, seconds
            totals[name] = totals[name] + counts
            rows.append(counts.row(name, clip.name))
            print(format_row(rows[-1]), flush=True)
    for name, counts in totals.items():
        rows.append(counts.row(name, "overall"))
    return rows


def benchmark(clips: list[Clip], repeats: int) -> list[dict[str, Any]]:
    """Each method (and Praat) on 60 s of speech (the clips tiled): ms and × real time."""
    y = np.tile(np.concatenate([c.samples for c in clips]), 8)[: BENCH_SECONDS * SAMPLE_RATE]
    rows = []
    candidates: dict[str, Callable[[np.ndarray], Any]] = {
        **METHODS,
        "Praat (parselmouth)": praat_time,
    }
    for name, method in candidates.items():
        _, seconds = best_time(method, y, repeats_for(name, repeats))
        rows.append(
            {
                "method": name,
                "ms": seconds * 1000,
                "x_realtime": BENCH_SECONDS / seconds,
                "runs": repeats_for(name, repeats),
            }
        )
    return rows


# -- report -----------------------------------------------------------------------------------
def format_row(row: dict[str, Any]) -> str:
    return (
        f"  {row['method']:<34} {row['clip']:<22} frames {row['frames']:>5}  "
        f"GPE {100 * row['gpe']:6.2f} %  VDE {100 * row['vde']:6.2f} %  "
        f"fine {row['fine_cents']:6.2f} c  {row['x_realtime']:8.0f}× RT"
    )


def markdown(rows: list[dict[str, Any]], bench: list[dict[str, Any]], header: str) -> str:
    lines = [
        "## Pitch (F0) against Praat",
        "",
        header,
        "",
        "| method | clip | frames | GPE | VDE | fine error | × real time |",
        "|---|---|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        clip = f"**{r['clip']}**" if r["clip"] == "overall" else r["clip"]
        lines.append(
            f"| {r['method']} | {clip} | {r['frames']} | {100 * r['gpe']:.2f} % | "
            f"{100 * r['vde']:.2f} % | {r['fine_cents']:.2f} cents | {r['x_realtime']:,.0f}× |"
        )
    lines += [
        "",
        f"Speed on {BENCH_SECONDS} s of 16 kHz speech (best of N runs after a warm-up):",
        "",
        "| method | runs | ms | × real time |",
        "|---|--:|--:|--:|",
    ]
    for b in bench:
        lines.append(f"| {b['method']} | {b['runs']} | {b['ms']:.1f} | {b['x_realtime']:,.0f}× |")
    return "\n".join(lines) + "\n"


def voice_quality_module() -> ModuleType | None:
    """``scripts/eval_voice_quality.py`` when it exists (another section of this report)."""
    if not (SCRIPTS / "eval_voice_quality.py").exists():
        return None
    sys.path.insert(0, str(SCRIPTS))
    return importlib.import_module("eval_voice_quality")


#: Where our eGeMAPS-style parameter and openSMILE's differ in definition or scale.
EGEMAPS_NOTES = {
    "loudness": "ours: BS.1770 frame loudness, dB; openSMILE: auditory loudness, sone-like",
    "shimmerLocal": "ours: fraction; openSMILE reports shimmerLocaldB (dB)",
    "equivalentSoundLevel": "ours: dBFS; openSMILE: dBp",
}
EGEMAPS_ALIASES = {
    "shimmerLocal_sma3nz_amean": "shimmerLocaldB_sma3nz_amean",
    "equivalentSoundLevel_dBFS": "equivalentSoundLevel_dBp",
}


def egemaps_section() -> str:
    """Our ``egemaps`` preset against openSMILE ``eGeMAPSv02`` functionals on the same audio."""
    import opensmile

    from app.models.options import ProcessingOptions
    from app.pipeline.decode import DecodeLimits
    from app.pipeline.runner import Pipeline

    smile = opensmile.Smile(
        feature_set=opensmile.FeatureSet.eGeMAPSv02,
        feature_level=opensmile.FeatureLevel.Functionals,
    )
    pipeline = Pipeline(torch.device("cpu"), DecodeLimits())
    options = ProcessingOptions.model_validate(
        {"loudness": {"mode": "off"}, "features": {"preset": "egemaps"}}
    )
    columns: list[tuple[str, dict[str, float], dict[str, float]]] = []
    for path in clip_paths():
        run = pipeline.run(path.read_bytes(), options)
        feature = run.features["egemaps"]
        ours = dict(zip(feature.rows or [], feature.data[:, 0].tolist(), strict=True))
        audio = run.audio.samples[0].numpy()
        reference = smile.process_signal(audio, run.audio.sample_rate).iloc[0].to_dict()
        columns.append((path.name, ours, reference))
    lines = [
        "## eGeMAPS-style functionals against openSMILE eGeMAPSv02",
        "",
        "Our `egemaps` preset and `opensmile.Smile(eGeMAPSv02, Functionals)` on the same "
        "16 kHz audio (loudness normalization off). Each cell: ours / openSMILE.",
        "",
        "| parameter | " + " | ".join(name for name, _, _ in columns) + " | note |",
        "|---|" + "--:|" * len(columns) + "---|",
    ]
    for parameter in columns[0][1]:
        key = EGEMAPS_ALIASES.get(parameter, parameter)
        cells = [
            f"{ours[parameter]:.4g} / {reference.get(key, float('nan')):.4g}"
            for _, ours, reference in columns
        ]
        note = next((v for k, v in EGEMAPS_NOTES.items() if parameter.startswith(k)), "")
        lines.append(f"| {parameter} | " + " | ".join(cells) + f" | {note} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--markdown", type=Path, help="also write the report as markdown here")
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed runs per measurement (default 5; pyin 2)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    from app.runtime import keep_freed_buffers

    keep_freed_buffers()  # as the service's processes do (app/runtime.py)
    warnings.filterwarnings("ignore", category=FutureWarning)

    missing = [p for p in clip_paths() if not p.exists()]
    if missing:
        print(f"missing recordings: {', '.join(map(str, missing))}", file=sys.stderr)
        return 1
    clips = [load_clip(p) for p in clip_paths()]
    header = (
        f"{machine()}; load average {os.getloadavg()[0]:.2f}. Clips at {SAMPLE_RATE} Hz: "
        + ", ".join(f"{c.name} ({c.seconds:.1f} s)" for c in clips)
        + f". Reference: Praat {F_MIN:g}–{F_MAX:g} Hz, 10 ms."
    )
    print(header)
    print("pitch against Praat:")
    rows = evaluate_pitch(clips, args.repeats)
    print("overall:")
    for row in rows[-len(METHODS) :]:
        print(format_row(row))
    print(f"speed on {BENCH_SECONDS} s of speech:")
    bench = benchmark(clips, args.repeats)
    for b in bench:
        print(f"  {b['method']:<34} {b['ms']:9.1f} ms  {b['x_realtime']:8.0f}× RT")
    report = markdown(rows, bench, header)

    voice_quality = voice_quality_module()
    if voice_quality is not None:
        print("voice quality:", flush=True)
        section = voice_quality.markdown(voice_quality.evaluate())
        if not section.lstrip().startswith("#"):
            section = "## Voice quality against Praat\n\n" + section
        print(section)
        report += "\n" + section

    print("eGeMAPS-style functionals against openSMILE:", flush=True)
    section = egemaps_section()
    print(section)
    report += "\n" + section

    if args.markdown:
        args.markdown.write_text(report)
        print(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
