"""Speaker diarization and overlap detection: synthetic voices with known turns, the DER on
hand-made pairs, parity of the encoder's front end with resemblyzer's, block processing and peak
memory on long signals, and the targets on the shared recordings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.signal
import soundfile as sf
import torch

import app.pipeline.diarize as diarize_module
from app.errors import InvalidOptions
from app.pipeline.diarize import (
    Diarization,
    SpeakerEncoder,
    activity_matrix,
    diarization_error_rate,
    diarize,
    hypothesis_activity,
    overlap_probability,
    speaker_segments,
    two_pitch_cue,
)
from tests.conftest import ROOT, shared_file

RATE = 16000
HOP = 160
#: Two synthetic voices: a low one with /a/-like formants, a high one with /i/-like formants,
#: and a third in between.
VOICES = [
    {"f0": 110.0, "formants": [(700, 90), (1200, 110), (2500, 160)]},
    {"f0": 230.0, "formants": [(350, 70), (2100, 120), (3000, 200)]},
    {"f0": 160.0, "formants": [(500, 80), (1700, 100), (2700, 180)]},
]


def voice(seconds: float, who: int, seed: int) -> np.ndarray:
    """A harmonic voice: F0 with vibrato and drift, 1/k harmonics up to 4 kHz, three formant
    resonators, a 4 Hz syllable envelope; RMS 0.1."""
    rng = np.random.default_rng(seed)
    f0, formants = VOICES[who]["f0"], VOICES[who]["formants"]
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    f = f0 * (
        1 + 0.03 * np.sin(2 * np.pi * 5 * t) + 0.08 * np.sin(1.4 * np.pi * t + rng.uniform(0, 6))
    )
    phase = 2 * np.pi * np.cumsum(f) / RATE
    y = sum(np.sin(k * phase) / k for k in range(1, int(4000 / f0)))
    y = y + 0.02 * rng.standard_normal(n)
    for centre, bandwidth in formants:
        r = np.exp(-np.pi * bandwidth / RATE)
        theta = 2 * np.pi * centre / RATE
        y = scipy.signal.lfilter([1 - r], [1, -2 * r * np.cos(theta), r * r], y)
    y = y * (0.55 + 0.45 * np.sin(2 * np.pi * 4 * t + rng.uniform(0, 6)))
    return (0.1 * y / np.sqrt(np.mean(y**2))).astype(np.float32)


def conversation(
    turns: list[tuple[int, float]], gap_s: float = 0.4, seed: int = 0
) -> tuple[np.ndarray, list[tuple[float, float, int]]]:
    """Turns ``(voice, seconds)`` separated by ``gap_s`` of silence; returns the signal and the
    reference turns ``(start_s, end_s, voice)``."""
    parts, truth, t = [], [], 0.0
    for i, (who, seconds) in enumerate(turns):
        parts += [voice(seconds, who, seed + i), np.zeros(int(gap_s * RATE), np.float32)]
        truth.append((t, t + seconds, who))
        t += seconds + gap_s
    return np.concatenate(parts), truth


def speech_mask(truth: list[tuple[float, float, int]], samples: np.ndarray) -> torch.Tensor:
    reference, _ = activity_matrix(truth, num_frames=1 + len(samples) // HOP, frame_rate_hz=100)
    return reference.any(dim=0)


def run(samples: np.ndarray, **options: object):  # type: ignore[no-untyped-def]
    return diarize(torch.from_numpy(samples), sample_rate=RATE, hop_length=HOP, **options)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def two_voices() -> tuple[np.ndarray, list[tuple[float, float, int]]]:
    return conversation([(0, 3.0), (1, 3.0), (0, 2.5), (1, 3.5), (0, 3.0)])


@pytest.fixture(scope="module")
def three_voices() -> tuple[np.ndarray, list[tuple[float, float, int]]]:
    return conversation([(0, 3.0), (1, 3.0), (2, 3.0), (0, 3.0), (1, 3.0), (2, 3.0)], seed=40)


# -- clustering and turns ------------------------------------------------------------------------


def test_two_alternating_voices_give_two_speakers_with_turns_at_the_right_times(
    two_voices: tuple[np.ndarray, list[tuple[float, float, int]]],
) -> None:
    samples, truth = two_voices
    result = run(samples, speech=speech_mask(truth, samples))
    assert result.num_speakers == 2
    assert [t.speaker for t in result.turns] == [0, 1, 0, 1, 0]
    for turn, (start, end, who) in zip(result.turns, truth, strict=True):
        assert turn.speaker == who  # numbered by first appearance, voice 0 speaks first
        assert abs(turn.start_s - start) <= 0.1 and abs(turn.end_s - end) <= 0.1
    reference, _ = activity_matrix(truth, num_frames=result.speaker.shape[0], frame_rate_hz=100)
    error = diarization_error_rate(reference, hypothesis_activity(result), frame_rate_hz=100)
    assert error.der < 0.01
    assert result.speaker.shape == (1 + len(samples) // HOP,)
    assert result.scores.shape == (2, result.speaker.shape[0])
    assert result.centroids.shape == (2, 256)
    assert torch.allclose(result.centroids.norm(dim=1), torch.ones(2), atol=1e-5)


def test_turns_without_a_speech_mask_change_inside_the_pauses(
    two_voices: tuple[np.ndarray, list[tuple[float, float, int]]],
) -> None:
    samples, truth = two_voices
    result = run(samples)
    assert result.num_speakers == 2
    changes = [t.start_s for t in result.turns[1:]]
    pauses = [
        (end, next_start) for (_, end, _), (next_start, _, _) in zip(truth, truth[1:], strict=False)
    ]
    assert len(changes) == len(pauses)
    for change, (a, b) in zip(changes, pauses, strict=True):
        assert a - 0.1 <= change <= b + 0.1


def test_a_single_voice_is_one_speaker() -> None:
    samples = voice(12.0, 0, seed=5)
    result = run(samples)
    assert result.num_speakers == 1
    assert bool((result.speaker == 0).all())
    assert not bool(result.overlap.any())
    assert [(t.start_s, t.speaker) for t in result.turns] == [(0.0, 0)]


def test_three_voices_are_three_speakers(
    three_voices: tuple[np.ndarray, list[tuple[float, float, int]]],
) -> None:
    samples, truth = three_voices
    result = run(samples, speech=speech_mask(truth, samples))
    assert result.num_speakers == 3
    assert [t.speaker for t in result.turns] == [0, 1, 2, 0, 1, 2]


@pytest.mark.parametrize("count", [1, 2, 3, 4])
def test_num_speakers_is_respected(
    three_voices: tuple[np.ndarray, list[tuple[float, float, int]]], count: int
) -> None:
    samples, truth = three_voices
    result = run(samples, speech=speech_mask(truth, samples), num_speakers=count)
    assert result.num_speakers == count
    assert set(result.speaker[result.speaker >= 0].tolist()) == set(range(count))


def test_max_speakers_bounds_the_estimate(
    three_voices: tuple[np.ndarray, list[tuple[float, float, int]]],
    two_voices: tuple[np.ndarray, list[tuple[float, float, int]]],
) -> None:
    samples, truth = three_voices
    assert run(samples, speech=speech_mask(truth, samples), max_speakers=2).num_speakers == 2
    samples, _ = two_voices
    result = run(samples, max_speakers=1)
    assert result.num_speakers == 1
    assert not bool(result.overlap.any())  # no second speaker to overlap with


def test_no_speech_gives_no_speakers() -> None:
    samples = np.zeros(3 * RATE, np.float32)
    result = run(samples, speech=torch.zeros(1 + len(samples) // HOP, dtype=torch.bool))
    assert result.num_speakers == 0
    assert bool((result.speaker == -1).all())
    assert result.turns == [] and result.overlap_regions == []


def test_any_sample_rate_and_frame_grid(
    two_voices: tuple[np.ndarray, list[tuple[float, float, int]]],
) -> None:
    samples, truth = two_voices
    rate, hop = 22050, 220  # the output grid: 220 / 22050 s ≈ 9.98 ms
    up = scipy.signal.resample_poly(samples, 441, 320).astype(np.float32)
    result = diarize(torch.from_numpy(up), sample_rate=rate, hop_length=hop)
    assert result.speaker.shape == (1 + len(up) // hop,)
    assert result.frame_rate_hz == pytest.approx(rate / hop)
    assert result.num_speakers == 2
    for turn, (start, _, who) in zip(result.turns[1:], truth[1:], strict=True):
        assert turn.speaker == who and abs(turn.start_s - (start - 0.2)) <= 0.3


def test_speaker_segments_split_speech_segments_at_speaker_changes(
    two_voices: tuple[np.ndarray, list[tuple[float, float, int]]],
) -> None:
    samples, truth = two_voices
    result = run(samples, speech=speech_mask(truth, samples))
    # One segment spanning the first two turns (as a detector that bridges the pause would give).
    pieces = speaker_segments([(truth[0][0], truth[1][1]), (truth[2][0], truth[2][1])], result)
    assert [p.speaker for p in pieces] == [0, 1, 0]
    assert pieces[0].start_s == truth[0][0] and pieces[-1].end_s == pytest.approx(truth[2][1])
    assert abs(pieces[1].start_s - truth[1][0]) <= 0.25
    assert not any(p.overlap for p in pieces)


# -- overlap ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def overlapped() -> np.ndarray:
    """Voice 0 for 0–5 s, voice 1 for 3.5–8.5 s (both at once 3.5–5 s), voice 0 again 8.9–12.9 s."""
    y = np.zeros(int(13.0 * RATE), np.float32)
    y[: 5 * RATE] += voice(5.0, 0, seed=11)
    y[int(3.5 * RATE) : int(8.5 * RATE)] += voice(5.0, 1, seed=12)
    y[int(8.9 * RATE) : int(12.9 * RATE)] += voice(4.0, 0, seed=13)
    return y


def test_overlap_is_flagged_where_both_voices_sound(overlapped: np.ndarray) -> None:
    result = run(overlapped)
    assert result.num_speakers == 2
    frames = result.overlap
    assert frames.shape == (1 + len(overlapped) // HOP,)
    inside = frames[370:480].float().mean()  # 3.7–4.8 s: both voices
    assert inside >= 0.8
    assert not bool(frames[:300].any()) and not bool(frames[560:840].any())
    assert not bool(frames[940:].any())
    assert len(result.overlap_regions) == 1
    start, end = result.overlap_regions[0]
    assert abs(start - 3.5) <= 0.3 and abs(end - 5.0) <= 0.3
    # The second speaker in the overlap is the other voice.
    assert bool((result.second_speaker[frames] == 1 - result.speaker[frames]).all())
    assert bool((result.second_speaker[~frames] == -1).all())
    # The overlap-aware hypothesis scores the overlap better than one speaker per frame.
    truth = [(0.0, 5.0, 0), (3.5, 8.5, 1), (8.9, 12.9, 0)]
    reference, _ = activity_matrix(truth, num_frames=frames.shape[0], frame_rate_hz=100)
    with_second = diarization_error_rate(reference, hypothesis_activity(result), frame_rate_hz=100)
    without = diarization_error_rate(
        reference, hypothesis_activity(result, with_overlap=False), frame_rate_hz=100
    )
    assert with_second.der < without.der - 0.05


def test_two_pitch_cue_separates_one_voice_from_two() -> None:
    a, b = voice(2.0, 0, seed=1), voice(2.0, 1, seed=2)
    one = two_pitch_cue(torch.from_numpy(a), sample_rate=RATE, hop_length=HOP)
    two = two_pitch_cue(torch.from_numpy(a + b), sample_rate=RATE, hop_length=HOP)
    assert one.shape == two.shape == (1 + len(a) // HOP,)
    one, two = one[10:-10], two[10:-10]
    assert float(one.median()) < 0.05
    assert float(two.mean()) > 3 * float(one.mean())  # the levels of the two voices vary
    assert float((two > 0.05).float().mean()) > 0.5 > float((one > 0.05).float().mean())


def test_overlap_probability_without_speakers_uses_the_pitch_cue_alone() -> None:
    a, b = voice(3.0, 0, seed=3), voice(3.0, 1, seed=4)
    y = np.concatenate([a, a + b])
    prob = overlap_probability(torch.from_numpy(y), sample_rate=RATE, hop_length=HOP)
    assert prob.shape == (1 + len(y) // HOP,)
    single, both = float(prob[50:250].mean()), float(prob[350:550].mean())
    assert single < 0.2 and both > 0.5


# -- memory: blocks of frames ----------------------------------------------------------------------


@pytest.mark.parametrize("rate", [RATE, 44100])
def test_block_processing_does_not_change_the_diarization(
    overlapped: np.ndarray, rate: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    samples = torch.from_numpy(scipy.signal.resample_poly(overlapped, rate // 100, 160))
    samples = samples.float()

    def run_at_rate() -> Diarization:
        return diarize(samples, sample_rate=rate, hop_length=rate // 100)

    whole = run_at_rate()  # blocks of 2048 frames: one block for this 13 s signal
    assert whole.num_speakers == 2 and whole.overlap_regions  # something to compare
    monkeypatch.setattr(diarize_module, "_BLOCK_FRAMES", 37)
    monkeypatch.setattr(diarize_module, "_BATCH_WINDOWS", 5)
    blocks = run_at_rate()
    assert blocks.num_speakers == whole.num_speakers
    for name in ("speaker", "second_speaker", "overlap"):
        assert torch.equal(getattr(blocks, name), getattr(whole, name)), name
    for name in ("scores", "overlap_prob", "centroids"):
        assert torch.allclose(getattr(blocks, name), getattr(whole, name), atol=1e-5), name
    assert blocks.turns == whole.turns and blocks.overlap_regions == whole.overlap_regions


_PEAK_MEMORY = """
import re, sys, torch
from app.pipeline.diarize import diarize
from tests.unit.test_diarize import conversation
torch.set_num_threads(1)
def status(key):
    text = open("/proc/self/status").read()
    return int(re.search(key + r":\\s+(\\d+) kB", text).group(1)) * 1024
turns = [(0, 3.0), (1, 3.0), (2, 3.0), (0, 2.0), (1, 2.5), (2, 3.5)]  # 19.4 s with the pauses
tile = torch.from_numpy(conversation(turns, seed=3)[0])
def signal(seconds):
    n = int(seconds * 16000)
    return tile.repeat(-(-n // tile.shape[0]))[:n].clone()
diarize(signal(5), sample_rate=16000, hop_length=160)
for seconds in map(float, sys.argv[1:]):
    x = signal(seconds)
    open("/proc/self/clear_refs", "w").write("5")  # reset the peak resident size
    base = status("VmRSS")
    result = diarize(x, sample_rate=16000, hop_length=160)
    print(seconds, status("VmHWM") - base, result.num_speakers)
    del result, x
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_peak_memory_beyond_the_signal_does_not_grow_with_its_length() -> None:
    # Large allocations are mmapped (and returned on free), so the peak resident size over the
    # call is the peak of what it allocates.
    env = {"MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", _PEAK_MEMORY, "60", "600"],
        cwd=Path(ROOT), env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    lines = [line.split() for line in out.stdout.strip().splitlines()]
    extra = {float(s): int(b) for s, b, _ in lines}
    assert [int(n) for *_, n in lines] == [3, 3]
    signal_600 = 600 * 16000 * 4
    # Measured (MB, 60 s → 600 s): 37.8 → 40.0, one encoder batch and one block of frames plus
    # a few numbers per frame (was 57.9 → 430.6 with the whole signal resampled, framed and
    # its mel spectrogram kept); the signal is 38.4.
    assert extra[600.0] < 1.5 * signal_600
    assert extra[600.0] - extra[60.0] < 0.15 * signal_600  # frame tracks, embeddings


# -- DER -------------------------------------------------------------------------------------------


def activity(*rows: str) -> torch.Tensor:
    """Activity rows from strings: '1' = active, one character per frame."""
    return torch.tensor([[c == "1" for c in row] for row in rows])


def test_der_perfect_hypothesis_is_zero() -> None:
    ref = activity("1111100000", "0000011111")
    error = diarization_error_rate(ref, ref.clone(), frame_rate_hz=1.0, collar_s=0)
    assert error.der == 0 and error.missed == 0 and error.confusion == 0
    assert error.total_s == 10


def test_der_all_missed_is_one() -> None:
    ref = activity("1111100000", "0000011111")
    error = diarization_error_rate(
        ref, torch.zeros(0, 10, dtype=torch.bool), frame_rate_hz=1.0, collar_s=0
    )
    assert error.der == 1 and error.missed == 1 and error.false_alarm == 0


def test_der_swapped_labels_are_mapped_away() -> None:
    ref = activity("1111100000", "0000011111")
    hyp = activity("0000011111", "1111100000")
    error = diarization_error_rate(ref, hyp, frame_rate_hz=1.0, collar_s=0)
    assert error.der == 0 and error.mapping == {0: 1, 1: 0}


def test_der_counts_confusion_false_alarm_and_overlap_by_hand() -> None:
    ref = activity("1111111100", "0000001111")  # 12 speaker-frames, overlap at frames 6–7
    hyp = activity("1111000000", "0000111111", "0000000001")
    # Mapping ref0→hyp0 (4 frames), ref1→hyp1 (4 frames). Per frame (R, H, correct):
    # 0–3 (1,1,1); 4–5 (1,1,0) confusion 2; 6–7 (2,1,1) miss 2; 8 (1,1,1); 9 (1,2,1) FA 1.
    error = diarization_error_rate(ref, hyp, frame_rate_hz=1.0, collar_s=0)
    assert error.confusion == pytest.approx(2 / 12)
    assert error.missed == pytest.approx(2 / 12)
    assert error.false_alarm == pytest.approx(1 / 12)
    assert error.der == pytest.approx(5 / 12)


def test_der_collar_removes_frames_around_reference_boundaries() -> None:
    ref = activity("1111100000", "0000011111")
    hyp = activity("1111110000", "0000001111")  # one frame late at the change (frame 5)
    assert diarization_error_rate(ref, hyp, frame_rate_hz=1.0, collar_s=0).der == pytest.approx(0.1)
    # A 1-frame collar drops frame 0 (the start), 4 and 5 (around the change) and 9 (the end).
    error = diarization_error_rate(ref, hyp, frame_rate_hz=1.0, collar_s=1.0)
    assert error.der == 0 and error.total_s == 6


def test_activity_matrix_from_turns() -> None:
    act, labels = activity_matrix(
        [(0.0, 0.5, "b"), (0.5, 1.0, "a"), (0.8, 1.2, "b")], num_frames=12, frame_rate_hz=10
    )
    assert labels == ["b", "a"]
    assert act.int().tolist() == [
        [1, 1, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1],
        [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 0],
    ]


# -- the encoder against resemblyzer's own front end ----------------------------------------------


def test_embeddings_match_resemblyzer_on_real_speech() -> None:
    import librosa
    from resemblyzer import audio as resemblyzer_audio

    y, sr = sf.read(shared_file("speech/198-209-0000.ogg"), dtype="float32")
    y = librosa.resample(y, orig_sr=sr, target_sr=RATE)[: 3 * RATE]
    y = resemblyzer_audio.normalize_volume(y, -30, increase_only=True)
    theirs_mel = resemblyzer_audio.wav_to_mel_spectrogram(y)  # (frame, 40)
    from app.pipeline.diarize import _FRAMES, _N_MELS
    from app.pipeline.features.spectral import mel_filterbank, stft_power

    bank = mel_filterbank(RATE, _FRAMES.n_fft, _N_MELS, 0.0, 8000.0, "slaney", torch.device("cpu"))
    ours_mel = (bank @ stft_power(torch.from_numpy(y), _FRAMES)).T
    assert ours_mel.shape == theirs_mel.shape
    np.testing.assert_allclose(ours_mel.numpy(), theirs_mel, rtol=1e-3, atol=1e-6)
    encoder = SpeakerEncoder.for_device("cpu")
    assert SpeakerEncoder.for_device(torch.device("cpu")) is encoder  # built once
    with torch.inference_mode():
        theirs = encoder.model(torch.from_numpy(theirs_mel[None, :160]))
    ours = encoder.embed(ours_mel[None, :160])
    assert float((ours * theirs).sum()) > 0.9999
    # Padding with a shorter length gives the embedding of the unpadded window.
    padded = torch.cat([ours_mel[None, :120], torch.zeros(1, 40, 40)], dim=1)
    short = encoder.embed(padded, torch.tensor([120]))
    assert torch.allclose(short, encoder.embed(ours_mel[None, :120]), atol=1e-5)


# -- the shared recordings -------------------------------------------------------------------------


def diarization_example() -> tuple[np.ndarray, torch.Tensor]:
    path = shared_file("diarization/diarizationExample2.wav")
    y, sr = sf.read(path, dtype="float32")
    assert sr == RATE
    rows = [
        line.split()
        for line in path.with_suffix(".segments").read_text().splitlines()
        if line.strip()
    ]
    reference, _ = activity_matrix(
        [(float(a), float(b), s) for a, b, s in rows],
        num_frames=1 + len(y) // HOP,
        frame_rate_hz=100,
    )
    return y, reference


def test_diarization_example_target_without_the_number_of_speakers() -> None:
    y, reference = diarization_example()
    result = run(y, speech=reference.any(dim=0))
    assert result.num_speakers == 6
    error = diarization_error_rate(reference, hypothesis_activity(result), frame_rate_hz=100)
    assert error.der <= 0.05
    told = run(y, speech=reference.any(dim=0), num_speakers=6)
    error_told = diarization_error_rate(reference, hypothesis_activity(told), frame_rate_hz=100)
    assert error_told.der <= 0.05


def test_diarization_example_beats_pyaudioanalysis() -> None:
    y, reference = diarization_example()
    audio_segmentation = pytest.importorskip("pyAudioAnalysis.audioSegmentation")
    import shutil
    import tempfile
    import warnings
    from pathlib import Path

    source = shared_file("diarization/diarizationExample2.wav")
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        copy = Path(tmp) / source.name  # without the .segments beside it (its scoring fails)
        shutil.copy(source, copy)
        np.random.seed(0)
        labels, _, _ = audio_segmentation.speaker_diarization(str(copy), 6)
    frames = np.repeat(np.asarray(labels, dtype=int), 10)[: reference.shape[1]]
    frames = np.pad(frames, (0, reference.shape[1] - len(frames)), mode="edge")
    theirs = torch.from_numpy(frames[None, :] == np.unique(frames)[:, None])
    their_der = diarization_error_rate(reference, theirs, frame_rate_hz=100).der
    ours = run(y, speech=reference.any(dim=0), num_speakers=6)
    our_der = diarization_error_rate(reference, hypothesis_activity(ours), frame_rate_hz=100).der
    assert our_der < their_der - 0.1


# -- options ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"num_speakers": 0}, "num_speakers=0"),
        ({"max_speakers": 0}, "max_speakers=0"),
        ({"num_speakers": 5, "max_speakers": 4}, "num_speakers=5 exceeds max_speakers=4"),
        ({"threshold": 1.5}, "threshold=1.5"),
        ({"window_s": 0.1}, "window_s=0.1"),
        ({"step_s": 2.0}, "step_s=2.0"),
        ({"min_speaker_s": -1.0}, "min_speaker_s=-1.0"),
        ({"min_pause_s": -0.1}, "min_pause_s=-0.1"),
        ({"overlap_threshold": 0.0}, "overlap_threshold=0.0"),
        ({"sample_rate": 0}, "sample_rate=0"),
        ({"hop_length": 0}, "hop_length=0"),
        ({"speech": torch.ones(7, dtype=torch.bool)}, "speech has shape"),
    ],
)
def test_bad_options_raise_invalid_options(options: dict[str, object], match: str) -> None:
    arguments: dict[str, object] = {"sample_rate": RATE, "hop_length": HOP, **options}
    with pytest.raises(InvalidOptions, match=match):
        diarize(torch.zeros(RATE), **arguments)  # type: ignore[arg-type]


def test_stereo_input_is_rejected() -> None:
    with pytest.raises(InvalidOptions, match="mono"):
        diarize(torch.zeros(2, RATE), sample_rate=RATE, hop_length=HOP)


def test_bad_der_inputs_raise_invalid_options() -> None:
    with pytest.raises(InvalidOptions, match="activity matrices"):
        diarization_error_rate(torch.ones(5, dtype=torch.bool), torch.ones(1, 5), frame_rate_hz=1.0)
    with pytest.raises(InvalidOptions, match="collar_s=-1"):
        diarization_error_rate(torch.ones(1, 5), torch.ones(1, 5), frame_rate_hz=1.0, collar_s=-1)


def test_bad_overlap_options_raise_invalid_options() -> None:
    x = torch.zeros(RATE)
    with pytest.raises(InvalidOptions, match="f_min=500"):
        overlap_probability(x, sample_rate=RATE, hop_length=HOP, f_min=500, f_max=400)
    with pytest.raises(InvalidOptions, match="scores has 3 frames"):
        overlap_probability(x, sample_rate=RATE, hop_length=HOP, scores=torch.zeros(2, 3))


def test_telling_the_number_the_threshold_finds_changes_nothing() -> None:
    """On a real two-speaker mixture (the evaluation's female → male, 0 dB) where the threshold
    finds both speakers, ``num_speakers=2`` must stop the clustering at the same step: before,
    it merged on past the threshold (fragments of mixed windows into one speaker), which moved
    that speaker's centroid and raised the DER from 3.2 % to 4.8 %."""
    from scripts.eval_diarization import FEMALE, MALE, load, make_mixture

    mix, reference = make_mixture(load(FEMALE), load(MALE), 0.0)
    speech = torch.from_numpy(reference.any(axis=0)[: 1 + len(mix) // HOP])
    found = run(mix, speech=speech)
    told = run(mix, speech=speech, num_speakers=2)
    assert found.num_speakers == 2
    assert torch.equal(found.speaker, told.speaker)
    torch.testing.assert_close(found.centroids, told.centroids)
