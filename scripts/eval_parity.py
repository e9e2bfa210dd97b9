"""Reference parity of the foundation: log-mel/MFCC against librosa, loudness against pyloudnorm.

On every recording in ``../shared/data`` (resampled to 16 kHz by our pipeline):

- log-mel (dB) and MFCC of the ``default`` and ``librosa`` presets against librosa's own
  ``melspectrogram`` + ``power_to_db`` and ``mfcc`` on the same samples: mean |Δ| dB of the log-mel,
  worst per-coefficient MFCC correlation;
- integrated loudness before the gain against ``pyloudnorm.Meter(16000)``, and after
  normalization to −23 LUFS as pyloudnorm measures the processed audio.

Usage::

    python scripts/eval_parity.py [--markdown PATH]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import librosa
import numpy as np
import pyloudnorm
import torch

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO))

from app.models.options import ProcessingOptions  # noqa: E402
from app.pipeline.decode import DecodeLimits  # noqa: E402
from app.pipeline.runner import Pipeline  # noqa: E402


def librosa_reference(y: np.ndarray, preset: str) -> tuple[np.ndarray, np.ndarray]:
    if preset == "librosa":
        mel = librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=16000))
        return mel, librosa.feature.mfcc(y=y, sr=16000)
    mel = librosa.feature.melspectrogram(
        y=y, sr=16000, n_fft=512, hop_length=160, win_length=400, n_mels=80, pad_mode="reflect"
    )
    mel = librosa.power_to_db(mel, top_db=None)
    return mel, librosa.feature.mfcc(S=mel, n_mfcc=13)


def preset_rows(pipeline: Pipeline, path: Path) -> list[str]:
    """Whisper, Kaldi and spectral-descriptor parity for one recording, as table rows."""
    import kaldi_native_fbank as knf
    import whisper.audio

    rows = []
    for n_mels in (80, 128):
        options = ProcessingOptions.model_validate(
            {"features": {"preset": "whisper", "n_mels": n_mels}}
        )
        run = pipeline.run(path.read_bytes(), options)
        reference = whisper.audio.log_mel_spectrogram(run.audio.samples[0], n_mels=n_mels)
        diff = (run.features["log_mel"].data - reference).abs().max()
        rows.append(
            f"| {path.name} | whisper log-mel, {n_mels} mels | max abs diff {float(diff):.1e} |"
        )
    run = pipeline.run(
        path.read_bytes(), ProcessingOptions.model_validate({"features": {"preset": "kaldi"}})
    )
    fbank_options = knf.FbankOptions()
    fbank_options.frame_opts.dither = 0.0
    fbank_options.mel_opts.num_bins = 80
    fbank = knf.OnlineFbank(fbank_options)
    fbank.accept_waveform(16000, (run.audio.samples[0].numpy() * 32768).tolist())
    fbank.input_finished()
    reference = np.stack([fbank.get_frame(i) for i in range(fbank.num_frames_ready)], axis=1)
    diff = np.abs(run.features["log_mel"].data.numpy() - reference)
    loud = reference >= reference.max(axis=0, keepdims=True) - np.log(1e8)
    rows.append(
        f"| {path.name} | kaldi fbank vs kaldi-native-fbank | max abs diff "
        f"{diff.max():.1e}; bins within 80 dB of the frame peak: max {diff[loud].max():.1e}, "
        f"99.9th percentile {np.percentile(diff[loud], 99.9):.1e} |"
    )
    run = pipeline.run(
        path.read_bytes(), ProcessingOptions.model_validate({"features": {"names": ["spectral"]}})
    )
    y = run.audio.samples[0].numpy()
    spectral = run.features["spectral"]
    names = spectral.rows or []
    magnitude = np.abs(
        librosa.stft(y, n_fft=512, hop_length=160, win_length=400, pad_mode="reflect")
    )
    references = {
        "centroid_hz": librosa.feature.spectral_centroid(S=magnitude, sr=16000)[0],
        "bandwidth_hz": librosa.feature.spectral_bandwidth(S=magnitude, sr=16000)[0],
        "rolloff_hz": librosa.feature.spectral_rolloff(S=magnitude, sr=16000)[0],
        "flatness": librosa.feature.spectral_flatness(S=magnitude)[0],
    }
    for name, reference in references.items():
        ours = spectral.data[names.index(name)].numpy()
        corr = np.corrcoef(ours, reference)[0, 1]
        rows.append(f"| {path.name} | spectral {name} vs librosa | correlation {corr:.6f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    pipeline = Pipeline(torch.device("cpu"), DecodeLimits())
    files = sorted(p for p in DATA.rglob("*") if p.suffix in (".ogg", ".wav"))
    header = (
        "| file | preset | log-mel mean abs diff (dB) | MFCC min corr | LUFS ours | "
        "LUFS pyloudnorm | after −23 (pyloudnorm) |"
    )
    lines = [header, "|" + "---|" * 7]
    for path in files:
        for preset in ("default", "librosa"):
            options = ProcessingOptions.model_validate(
                {
                    "loudness": {"mode": "off"},
                    "features": {"preset": preset, "names": ["log_mel", "mfcc"]},
                }
            )
            run = pipeline.run(path.read_bytes(), options)
            y = run.audio.samples[0].numpy()
            mel, mfcc = librosa_reference(y, preset)
            ours_mel = run.features["log_mel"].data.numpy()
            ours_mfcc = run.features["mfcc"].data.numpy()
            mad = float(np.abs(ours_mel - mel).mean())
            corr = min(np.corrcoef(a, b)[0, 1] for a, b in zip(ours_mfcc, mfcc, strict=True))
            reference_lufs = pyloudnorm.Meter(16000).integrated_loudness(y.astype(np.float64))
            normalized = pipeline.run(path.read_bytes(), ProcessingOptions())
            after = pyloudnorm.Meter(16000).integrated_loudness(
                normalized.audio.samples[0].double().numpy()
            )
            lines.append(
                f"| {path.relative_to(DATA)} | {preset} | {mad:.4f} | {corr:.5f} | "
                f"{run.quality.input_loudness_lufs:.2f} | {reference_lufs:.2f} | {after:.2f} |"
            )
    lines += ["", "| file | what | parity |", "|---|---|---|"]
    for path in files:
        lines += preset_rows(pipeline, path)
    table = "\n".join(lines)
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n")


if __name__ == "__main__":
    main()
