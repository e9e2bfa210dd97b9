"""Evaluate speaker diarization and overlapped-speech detection on labelled real recordings.

* ``../shared/data/diarization/diarizationExample2.wav`` (16 kHz, six speakers, one turn each) with
  its ``.segments`` labels: DER (NIST definition, ±0.25 s collar around every reference boundary,
  optimal speaker mapping by the Hungarian algorithm), with and without the true number of
  speakers; whether the number found is right; how far each found turn change is from the
  labelled one. Speech regions are derived here, not by the pipeline's detector: "reference" =
  the labelled turns (they cover the file, pauses included), "energy" = frames within 30 dB of the
  file's 95th-percentile frame level, gaps < 0.25 s filled (misses the pauses the labels include).
  A third row runs the product end to end: the WAV's bytes through ``Pipeline.run`` (what
  ``POST /process`` calls) with ``segment.diarize`` on, scored on the speakers of the segments it
  returns (the energy detector's; its pauses between words count as missed speech, as the labels
  cover them).
* Anchor, run in the same script: pyAudioAnalysis ``speaker_diarization(filename, n_speakers,
  mid_window=1.0, mid_step=0.1, short_window=0.1, lda_dim=0)`` (``n_speakers ≤ 0``: estimated).
  On the shared file it raises (its evaluation against the ``.segments`` file next to the WAV
  fails with NumPy 2); the error is reported, then it runs on a copy in a temporary directory
  (no labels beside it), its 0.1 s labels are scored with the same DER. KMeans is seeded.
* Mixtures of the two LibriSpeech speakers (``../shared/data/speech``: 198-209-0000 female,
  5703-47212-0000 male, 16 kHz): each clip is cut at its quietest frame near every 3 s, the pieces
  alternate between the speakers, and each piece starts a known time before the previous one ends
  (0.5, 0 (a change without pause or overlap), 1.0, −0.4 (a pause), 1.5, 0, 0.75, 2.0, −0.2, 1.0 s,
  cycling); the second speaker is scaled
  to 0 or −6 dB against the first (speech RMS). Reference speaker activity: each source's frames
  within 30 dB of its 95th-percentile level (gaps < 0.25 s filled, bursts < 0.1 s dropped);
  overlap = both active. Reported: frame-level overlap precision / recall / F1 (10 ms frames,
  every frame of the mixture), DER with the overlap-aware hypothesis (overlap frames also carry
  the second speaker) with and without the number of speakers, speakers found.
* Speed: :func:`~app.pipeline.diarize.diarize` (embeddings, clustering, labelling and overlap) on
  60 s of speech tiled from the shared clips at 16 kHz, one CPU thread, best of N after a warm-up.

``evaluate(quick=True)`` runs the reduced set (no anchor, one mixture, 3 timed runs) and asserts the
targets: DER ≤ 5 % on diarizationExample2 without the number of speakers, six speakers found,
diarization of 60 s under 2 s.

Usage::

    python scripts/eval_diarization.py [--quick] [--markdown PATH] [--repeats N]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO))

from app.models.options import ProcessingOptions  # noqa: E402
from app.pipeline.decode import DecodeLimits  # noqa: E402
from app.pipeline.diarize import (  # noqa: E402
    activity_matrix,
    diarization_error_rate,
    diarize,
    hypothesis_activity,
)
from app.pipeline.runner import Pipeline  # noqa: E402

RATE = 16000
HOP = 160  # 10 ms
FRAME_RATE = RATE / HOP
COLLAR_S = 0.25
DIARIZATION_WAV = DATA / "diarization" / "diarizationExample2.wav"
FEMALE = DATA / "speech" / "198-209-0000.ogg"
MALE = DATA / "speech" / "5703-47212-0000.ogg"
OVERLAPS_S = (0.5, 0.0, 1.0, -0.4, 1.5, 0.0, 0.75, 2.0, -0.2, 1.0)
BENCH_SECONDS = 60.0

#: Targets (issue 4).
TARGET_DER = 0.05
TARGET_SPEAKERS = 6
TARGET_SECONDS_60 = 2.0
#: Regression limit (not an issue target) for the product end to end: the share of speaker-time in
#: the segments ``POST /process`` returns with a wrong speaker (confusion) or none labelled (false
#: alarm); missed speech is not limited, as the labels cover the pauses between words.
PRODUCT_MAX_WRONG = 0.01


# -- data ------------------------------------------------------------------------------------------


def load(path: Path) -> np.ndarray:
    """Mono float32 at 16 kHz."""
    y, sr = sf.read(path, dtype="float32", always_2d=True)
    y = y.mean(axis=1)
    if sr != RATE:
        import librosa

        y = librosa.resample(y, orig_sr=sr, target_sr=RATE)
    return np.ascontiguousarray(y, dtype=np.float32)


def read_segments(path: Path) -> list[tuple[float, float, str]]:
    """``start<TAB>end<TAB>label`` lines."""
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    return [(float(a), float(b), label) for a, b, label in rows]


def frame_db(y: np.ndarray) -> np.ndarray:
    """Level of centred 25 ms frames every 10 ms, dB."""
    win = 400
    padded = np.pad(y, (win // 2, win // 2))
    n = 1 + len(y) // HOP
    index = np.arange(win)[None, :] + HOP * np.arange(n)[:, None]
    frames = padded[np.minimum(index, len(padded) - 1)]
    return 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)


def energy_activity(y: np.ndarray, drop_db: float = 30.0) -> np.ndarray:
    """Frames within ``drop_db`` of the 95th-percentile level; gaps < 0.25 s filled, bursts
    < 0.1 s dropped (the speech regions of the evaluation, not the pipeline's detector)."""
    from scipy.ndimage import binary_closing, binary_opening

    db = frame_db(y)
    active = db > np.percentile(db, 95) - drop_db
    fill = 25
    padded = np.r_[np.zeros(fill, bool), active, np.zeros(fill, bool)]
    active = binary_closing(padded, np.ones(fill))[fill:-fill]
    return binary_opening(active, np.ones(10))


def pieces(y: np.ndarray, every_s: float = 3.0, search_s: float = 0.7) -> list[tuple[int, int]]:
    """Cut points at the quietest frame within ±``search_s`` of every ``every_s`` seconds."""
    db = frame_db(y)
    cuts, t = [0], every_s
    while t < len(db) / FRAME_RATE - 1.5:
        lo, hi = int((t - search_s) * FRAME_RATE), int((t + search_s) * FRAME_RATE)
        cut = lo + int(np.argmin(db[lo:hi]))
        cuts.append(cut)
        t = cut / FRAME_RATE + every_s
    cuts.append(len(db) - 1)
    return [(cuts[i] * HOP, cuts[i + 1] * HOP) for i in range(len(cuts) - 1)]


def make_mixture(a: np.ndarray, b: np.ndarray, level_db: float) -> tuple[np.ndarray, np.ndarray]:
    """Alternate pieces of ``a`` and ``b``, each starting ``OVERLAPS_S[k]`` before the previous
    one ends; ``b`` at ``level_db`` against ``a``. Returns the mixture and the reference activity
    ``(2, frame)``."""

    def speech_rms(y: np.ndarray) -> float:
        active = np.repeat(energy_activity(y), HOP)[: len(y)]
        return float(np.sqrt(np.mean(y[active] ** 2)))

    b = b * (speech_rms(a) / speech_rms(b)) * 10 ** (level_db / 20)
    sources, activities = [a, b], [energy_activity(a), energy_activity(b)]
    pa, pb = pieces(a), pieces(b)
    order = []
    for i in range(max(len(pa), len(pb))):
        order += [(0, pa[i])] if i < len(pa) else []
        order += [(1, pb[i])] if i < len(pb) else []
    placed, t = [], int(0.5 * RATE)
    for k, (who, (s, e)) in enumerate(order):
        placed.append((who, s, e, t))
        t = t + (e - s) - int(OVERLAPS_S[k % len(OVERLAPS_S)] * RATE)
    total = max(t0 + e - s for _, s, e, t0 in placed) + int(0.5 * RATE)
    mix = np.zeros(total, np.float32)
    act = np.zeros((2, 1 + total // HOP), bool)
    for who, s, e, t0 in placed:
        mix[t0 : t0 + e - s] += sources[who][s:e]
        n = e // HOP - s // HOP
        act[who, t0 // HOP : t0 // HOP + n] |= activities[who][s // HOP : s // HOP + n]
    return mix, act


# -- scoring ---------------------------------------------------------------------------------------


def score(reference: np.ndarray, hypothesis: torch.Tensor | np.ndarray) -> dict[str, float]:
    err = diarization_error_rate(
        torch.as_tensor(reference),
        torch.as_tensor(hypothesis),
        frame_rate_hz=FRAME_RATE,
        collar_s=COLLAR_S,
    )
    return {
        "der": err.der,
        "missed": err.missed,
        "false_alarm": err.false_alarm,
        "confusion": err.confusion,
    }


def boundary_errors(reference: list[tuple[float, float, str]], turns: list[Any]) -> list[float]:
    """Distance from each labelled speaker change to the nearest found one, seconds."""
    truth = [b for (_, b, s), (_, _, s2) in zip(reference, reference[1:], strict=False) if s != s2]
    found = [
        t2.start_s for t1, t2 in zip(turns, turns[1:], strict=False) if t1.speaker != t2.speaker
    ]
    if not found:
        return [float("inf")] * len(truth)
    return [min(abs(b - f) for f in found) for b in truth]


def overlap_scores(reference: np.ndarray, overlap: np.ndarray) -> dict[str, float]:
    truth = reference.sum(axis=0) >= 2
    n = min(len(truth), len(overlap))
    truth, found = truth[:n], overlap[:n]
    tp = float((truth & found).sum())
    precision = tp / max(float(found.sum()), 1.0)
    recall = tp / max(float(truth.sum()), 1.0)
    f1 = 2 * precision * recall / max(precision + recall, 1e-9)
    return {"precision": precision, "recall": recall, "f1": f1, "overlap_s": truth.sum() / 100}


# -- the evaluations -------------------------------------------------------------------------------


def run_ours(y: np.ndarray, speech: np.ndarray | None, num_speakers: int | None) -> Any:
    return diarize(
        torch.from_numpy(y),
        sample_rate=RATE,
        hop_length=HOP,
        speech=None if speech is None else torch.from_numpy(speech[: 1 + len(y) // HOP]),
        num_speakers=num_speakers,
    )


def run_pipeline(path: Path, num_speakers: int | None) -> list[Any]:
    """The segments (with their speakers) that ``POST /process`` returns for the file, with
    ``segment.diarize`` on and default options otherwise."""
    options = ProcessingOptions.model_validate(
        {"segment": {"diarize": True, "num_speakers": num_speakers}}
    )
    result = Pipeline(torch.device("cpu"), DecodeLimits()).run(path.read_bytes(), options)
    assert result.segmentation is not None
    return list(result.segmentation.segments)


def evaluate_example(with_anchor: bool) -> list[dict[str, Any]]:
    y = load(DIARIZATION_WAV)
    segments = read_segments(DIARIZATION_WAV.with_suffix(".segments"))
    n = 1 + len(y) // HOP
    reference, _ = activity_matrix(segments, num_frames=n, frame_rate_hz=FRAME_RATE)
    true_k = reference.shape[0]
    speech_regions = {
        "reference": reference.any(dim=0).numpy(),
        "energy": energy_activity(y),
    }
    rows = []
    for speech_name, speech in speech_regions.items():
        for given in (None, true_k):
            result = run_ours(y, speech, given)
            errors = boundary_errors(segments, result.turns)
            rows.append(
                {
                    "method": "ours",
                    "speech": speech_name,
                    "told": given is not None,
                    "speakers": result.num_speakers,
                    "true_speakers": true_k,
                    "boundary_mean_s": float(np.mean(errors)),
                    "boundary_max_s": float(np.max(errors)),
                    **score(reference.numpy(), hypothesis_activity(result)),
                }
            )
    for given in (None, true_k):
        pieces = run_pipeline(DIARIZATION_WAV, given)
        labelled = [(p.start_s, p.end_s, f"speaker{p.speaker}") for p in pieces]
        hypothesis, _ = activity_matrix(labelled, num_frames=n, frame_rate_hz=FRAME_RATE)
        errors = boundary_errors(segments, pieces)
        missed = reference.any(dim=0).numpy() & ~hypothesis.any(dim=0).numpy()
        level = frame_db(y)[:n]
        rows.append(
            {
                "method": "ours, `POST /process`",
                "speech": "its segments (energy)",
                "told": given is not None,
                "speakers": len({p.speaker for p in pieces}),
                "true_speakers": true_k,
                "boundary_mean_s": float(np.mean(errors)),
                "boundary_max_s": float(np.max(errors)),
                **score(reference.numpy(), hypothesis.numpy()),
                # How much of what it misses is quiet (pauses): > 25 dB under the 95th percentile.
                "missed_quiet": float(np.mean(level[missed] < np.percentile(level, 95) - 25.0)),
            }
        )
    if with_anchor:
        for given in (true_k, 0):
            rows.append(pyaudioanalysis_row(reference.numpy(), given))
    return rows


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def pyaudioanalysis_row(reference: np.ndarray, n_speakers: int) -> dict[str, Any]:
    row: dict[str, Any] = {
        "method": "pyAudioAnalysis",
        "speech": "(its own)",
        "told": n_speakers > 0,
        "true_speakers": reference.shape[0],
    }
    try:
        with quiet():
            from pyAudioAnalysis import audioSegmentation
    except Exception as exc:  # its import needs hmmlearn, imbalanced-learn, plotly, eyed3, pydub
        row["error"] = f"import failed: {type(exc).__name__}: {exc}"
        return row
    errors = []
    np.random.seed(0)
    try:
        with quiet():
            audioSegmentation.speaker_diarization(str(DIARIZATION_WAV), n_speakers)
    except Exception as exc:
        errors.append(f"on the shared file: {type(exc).__name__}: {exc}")
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / DIARIZATION_WAV.name
        shutil.copy(DIARIZATION_WAV, copy)
        np.random.seed(0)
        try:
            start = time.perf_counter()
            with quiet():
                labels, _, _ = audioSegmentation.speaker_diarization(str(copy), n_speakers)
            row["seconds"] = time.perf_counter() - start
        except Exception as exc:
            errors.append(f"on a copy without labels: {type(exc).__name__}: {exc}")
            row["error"] = "; ".join(errors)
            return row
    row["error"] = "; ".join(errors)
    labels = np.asarray(labels).astype(int)
    # Label i covers [0.1 i, 0.1 (i + 1)) s (mid_step = 0.1 s) → 10 frames each.
    frames = np.repeat(labels, 10)[: reference.shape[1]]
    frames = np.pad(frames, (0, reference.shape[1] - len(frames)), mode="edge")
    ids = np.unique(labels)
    hypothesis = frames[None, :] == ids[:, None]
    row["speakers"] = len(ids)
    row.update(score(reference, hypothesis))
    return row


def evaluate_mixtures(quick: bool) -> list[dict[str, Any]]:
    female, male = load(FEMALE), load(MALE)
    cases = [("female → male", female, male, 0.0)]
    if not quick:
        cases += [
            ("male → female", male, female, 0.0),
            ("female → male, −6 dB", female, male, -6.0),
            ("male → female, −6 dB", male, female, -6.0),
        ]
    rows = []
    for name, a, b, level in cases:
        mix, reference = make_mixture(a, b, level)
        speech = reference.any(axis=0)
        found = run_ours(mix, speech, None)
        told = run_ours(mix, speech, 2)
        rows.append(
            {
                "mixture": name,
                "seconds": len(mix) / RATE,
                "speakers": found.num_speakers,
                "der_estimated": score(reference, hypothesis_activity(found))["der"],
                "der_told": score(reference, hypothesis_activity(told))["der"],
                "der_no_overlap": score(reference, hypothesis_activity(found, with_overlap=False))[
                    "der"
                ],
                **overlap_scores(reference, found.overlap.numpy()),
            }
        )
    return rows


def evaluate_overlap_free() -> dict[str, float]:
    """Fraction of speech frames flagged as overlapped in recordings without overlap."""
    out = {}
    for name, path in (
        ("diarizationExample2", DIARIZATION_WAV),
        ("female", FEMALE),
        ("male", MALE),
    ):
        y = load(path)
        speech = energy_activity(y)
        result = run_ours(y, speech, None)
        n = min(len(speech), result.overlap.shape[0])
        out[name] = float(result.overlap.numpy()[:n][speech[:n]].mean())
    return out


def benchmark(repeats: int) -> dict[str, float]:
    clips = [load(DIARIZATION_WAV), load(FEMALE), load(MALE)]
    joined = np.concatenate(clips)
    y = np.tile(joined, int(np.ceil(BENCH_SECONDS * RATE / len(joined))))[
        : int(BENCH_SECONDS * RATE)
    ]
    x = torch.from_numpy(np.ascontiguousarray(y))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = diarize(x, sample_rate=RATE, hop_length=HOP)  # warm-up (builds the encoder)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            diarize(x, sample_rate=RATE, hop_length=HOP)
            best = min(best, time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    return {"seconds": best, "x_realtime": BENCH_SECONDS / best, "speakers": result.num_speakers}


# -- report ----------------------------------------------------------------------------------------


def pct(value: float) -> str:
    return f"{100 * value:.1f} %"


def markdown(
    example: list[dict[str, Any]],
    mixtures: list[dict[str, Any]],
    overlap_free: dict[str, float],
    bench: dict[str, float],
) -> str:
    lines = [
        "## Speaker diarization and overlapped speech",
        "",
        f"{platform.processor() or platform.machine()}, load average "
        f"{os.getloadavg()[0]:.2f}; `python scripts/eval_diarization.py`. DER: NIST definition, "
        f"±{COLLAR_S} s collar, Hungarian speaker mapping, 10 ms frames.",
        "",
        "### diarizationExample2.wav (22.3 s, 6 speakers)",
        "",
        "| method | speech regions | told the number | speakers found | DER | missed | "
        "false alarm | confusion | turn change error mean / max |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    notes = []
    for row in example:
        if "der" not in row:
            lines.append(
                f"| {row['method']} | {row['speech']} | {'yes' if row['told'] else 'no'} | "
                "error | – | – | – | – | – |"
            )
        else:
            boundary = (
                f"{row['boundary_mean_s']:.2f} / {row['boundary_max_s']:.2f} s"
                if "boundary_mean_s" in row
                else "–"
            )
            lines.append(
                f"| {row['method']} | {row['speech']} | {'yes' if row['told'] else 'no'} | "
                f"{row['speakers']} of {row['true_speakers']} | {pct(row['der'])} | "
                f"{pct(row['missed'])} | {pct(row['false_alarm'])} | {pct(row['confusion'])} | "
                f"{boundary} |"
            )
        if row.get("error"):
            told = "told" if row["told"] else "not told"
            notes.append(f"- {row['method']} ({told} the number): {row['error']}")
    product = next(r for r in example if r["method"].startswith("ours, "))
    lines += [
        "",
        "`POST /process` rows: the file's bytes through the pipeline with `segment.diarize` on, "
        "scored on the speakers of the segments it returns. Its missed speech is the pauses "
        "between words: the labelled turns cover them, the detector's segments do not (of the "
        f"labelled frames outside its segments, {pct(product['missed_quiet'])} are more than "
        "25 dB under the file's 95th-percentile frame level).",
    ]
    if notes:
        lines += ["", "Errors raised by the anchor:", "", *notes]
    lines += [
        "",
        "### Mixtures of two LibriSpeech speakers (overlap = both talking)",
        "",
        "| mixture | length | overlapped | speakers found | overlap precision | recall | F1 | "
        "DER (found) | DER (told 2) | DER without the second speaker |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in mixtures:
        lines.append(
            f"| {row['mixture']} | {row['seconds']:.1f} s | {row['overlap_s']:.1f} s | "
            f"{row['speakers']} of 2 | {row['precision']:.2f} | {row['recall']:.2f} | "
            f"{row['f1']:.2f} | {pct(row['der_estimated'])} | {pct(row['der_told'])} | "
            f"{pct(row['der_no_overlap'])} |"
        )
    lines += [
        "",
        "Overlap false alarms on speech without overlap (share of speech frames flagged, "
        "energy speech regions): "
        + ", ".join(f"{name} {pct(value)}" for name, value in overlap_free.items())
        + ".",
    ]
    lines += [
        "",
        f"Speed: diarization of {BENCH_SECONDS:.0f} s (tiled from the shared clips, 16 kHz) in "
        f"{bench['seconds']:.2f} s on one CPU thread ({bench['x_realtime']:.0f}× real time; "
        f"target < {TARGET_SECONDS_60:.0f} s).",
        "",
    ]
    return "\n".join(lines)


def check_targets(example: list[dict[str, Any]], bench: dict[str, float]) -> None:
    row = next(
        r for r in example if r["method"] == "ours" and r["speech"] == "reference" and not r["told"]
    )
    product = next(r for r in example if r["method"].startswith("ours, ") and not r["told"])
    assert product["speakers"] == TARGET_SPEAKERS, (
        f"diarizationExample2 through POST /process: {product['speakers']} speakers, expected "
        f"{TARGET_SPEAKERS}"
    )
    wrong = product["confusion"] + product["false_alarm"]
    assert wrong <= PRODUCT_MAX_WRONG, (
        f"diarizationExample2 through POST /process: {pct(wrong)} of the speech it returns has a "
        f"wrong speaker or no labelled speaker, limit {pct(PRODUCT_MAX_WRONG)}"
    )
    assert row["speakers"] == TARGET_SPEAKERS, (
        f"diarizationExample2: found {row['speakers']} speakers without being told, expected "
        f"{TARGET_SPEAKERS}"
    )
    assert row["der"] <= TARGET_DER, (
        f"diarizationExample2: DER {pct(row['der'])} without the number of speakers, target "
        f"≤ {pct(TARGET_DER)}"
    )
    assert bench["seconds"] < TARGET_SECONDS_60, (
        f"diarization of {BENCH_SECONDS:.0f} s took {bench['seconds']:.2f} s on one thread, "
        f"target < {TARGET_SECONDS_60:.0f} s"
    )


def evaluate(quick: bool = False, repeats: int | None = None) -> str:
    """Run the evaluation and return its markdown section. With ``quick``, a reduced set (no
    anchor, one mixture, 3 timed runs) whose targets are asserted (``AssertionError`` names the
    missed one)."""
    missing = [p for p in (DIARIZATION_WAV, FEMALE, MALE) if not p.exists()]
    if missing:
        raise FileNotFoundError(f"missing recordings: {', '.join(map(str, missing))}")
    example = evaluate_example(with_anchor=not quick)
    mixtures = evaluate_mixtures(quick)
    overlap_free = evaluate_overlap_free()
    bench = benchmark(repeats or (3 if quick else 5))
    report = markdown(example, mixtures, overlap_free, bench)
    if quick:
        check_targets(example, bench)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="reduced set; assert the targets")
    parser.add_argument("--markdown", type=Path, help="also write the section here")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs (default 5; 3 quick)")
    args = parser.parse_args()
    report = evaluate(quick=args.quick, repeats=args.repeats)
    print(report)
    if args.markdown:
        args.markdown.write_text(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
