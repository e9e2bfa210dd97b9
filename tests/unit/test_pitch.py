"""Pitch tracking: known-answer signals, the decoder against a plain Viterbi, Praat on speech."""

from __future__ import annotations

import math

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch

from app.errors import InvalidOptions
from app.pipeline.features.pitch import (
    _max_marginals,
    fill_unvoiced,
    hz_to_semitones,
    track_pitch,
)
from tests.conftest import shared_file

SR, HOP = 16000, 160


def sweep(f_start: float, f_end: float, seconds: float, sample_rate: int) -> torch.Tensor:
    """Exponential sine sweep; returns the samples (its F0 at sample n is ``sweep_f0``)."""
    t = torch.arange(int(seconds * sample_rate), dtype=torch.float64) / sample_rate
    rate = math.log(f_end / f_start) / seconds
    phase = 2 * math.pi * f_start * (torch.exp(rate * t) - 1) / rate
    return (0.5 * torch.sin(phase)).float()


def sweep_f0(f_start: float, f_end: float, seconds: float, times_s: torch.Tensor) -> torch.Tensor:
    return f_start * (f_end / f_start) ** (times_s / seconds)


@pytest.mark.parametrize("sample_rate", [8000, 16000, 22050, 44100, 48000])
def test_sine_sweep_is_tracked_within_one_percent(sample_rate: int) -> None:
    hop = sample_rate // 100
    track = track_pitch(sweep(100, 300, 2.0, sample_rate), sample_rate=sample_rate, hop_length=hop)
    times = torch.arange(track.f0_hz.shape[-1]) * hop / sample_rate
    truth = sweep_f0(100, 300, 2.0, times)
    inner = slice(3, -3)  # the outer frames' windows run off the ends of the signal
    assert track.voiced[inner].all()
    error = (track.f0_hz[inner] / truth[inner] - 1).abs()
    assert error.max() < 0.01, error.max()


def test_f0_stays_within_f_min_and_f_max() -> None:
    x = sweep(50, 500, 3.0, SR)
    track = track_pitch(x, sample_rate=SR, hop_length=HOP, f_min=65.0, f_max=400.0)
    f0 = track.f0_hz[track.voiced]
    assert ((f0 >= 65.0) & (f0 < 400.0)).all(), (f0.min(), f0.max())
    times = torch.arange(track.f0_hz.shape[-1]) * HOP / SR
    truth = sweep_f0(50, 500, 3.0, times)
    inside = (truth > 70) & (truth < 380)
    assert track.voiced[inside].all()
    assert ((track.f0_hz[inside] / truth[inside] - 1).abs() < 0.01).all()


def test_harmonic_complex_without_its_fundamental_is_120_hz() -> None:
    t = torch.arange(SR) / SR
    x = sum(torch.sin(2 * math.pi * 120 * k * t + k) / k for k in range(2, 11))
    track = track_pitch(0.2 * x, sample_rate=SR, hop_length=HOP)
    assert track.voiced[3:-3].all()
    assert torch.allclose(track.f0_hz[3:-3], torch.tensor(120.0), rtol=0.005)


def test_silence_is_unvoiced() -> None:
    track = track_pitch(torch.zeros(2, SR), sample_rate=SR, hop_length=HOP)
    assert not track.voiced.any()
    assert torch.equal(track.f0_hz, torch.zeros(2, 101))
    assert torch.equal(track.voicing, torch.zeros(2, 101))


def test_quiet_frames_are_unvoiced_below_the_silence_threshold() -> None:
    # The same tone at full, 1 % and 20 % of the peak amplitude: 1 % < silence_threshold (3 %).
    tone = torch.sin(2 * math.pi * 150 * torch.arange(SR) / SR)
    x = torch.cat([0.5 * tone, 0.005 * tone, 0.1 * tone])
    track = track_pitch(x, sample_rate=SR, hop_length=HOP)
    assert track.voiced[10:90].all() and track.voiced[210:290].all()
    assert not track.voiced[110:190].any()
    everything = track_pitch(x, sample_rate=SR, hop_length=HOP, silence_threshold=0.0)
    assert everything.voiced[10:90].all() and everything.voiced[110:290].all()


def test_white_noise_is_unvoiced() -> None:
    noise = torch.randn(3 * SR, generator=torch.Generator().manual_seed(0)) * 0.3
    track = track_pitch(noise, sample_rate=SR, hop_length=HOP)
    assert track.voiced.float().mean() < 0.02
    assert torch.isfinite(track.voicing).all() and track.voicing.max() < 0.5


@pytest.mark.parametrize("length", [0, 1, 159, 160, 700, 16000, 16161])
def test_frame_count_is_one_plus_time_over_hop(length: int) -> None:
    track = track_pitch(0.1 * torch.randn(2, length), sample_rate=SR, hop_length=HOP)
    frames = 1 + length // HOP
    assert track.f0_hz.shape == track.voicing.shape == track.voiced.shape == (2, frames)
    assert track.voiced.dtype == torch.bool
    assert torch.isfinite(track.f0_hz).all() and torch.isfinite(track.voicing).all()


def test_an_empty_batch_gives_empty_tracks() -> None:
    track = track_pitch(torch.zeros(0, 3, 1600), sample_rate=SR, hop_length=HOP)
    assert track.f0_hz.shape == track.voiced.shape == (0, 3, 11)


def test_frame_t_is_centred_on_sample_t_times_hop() -> None:
    # 150 Hz, then 250 Hz from sample 8080 (phase-continuous): the frames centred before the
    # switch read ≈150 Hz, those after ≈250 Hz, and the crossing is at frame 8080 / 160 = 50.5.
    switch = 8080
    f = torch.where(torch.arange(2 * SR) < switch, 150.0, 250.0).double()
    x = 0.5 * torch.sin(2 * math.pi * torch.cumsum(f, 0) / SR).float()
    track = track_pitch(x, sample_rate=SR, hop_length=HOP)
    f0 = track.f0_hz
    assert torch.allclose(f0[40:48], torch.tensor(150.0), rtol=0.01)
    assert torch.allclose(f0[54:62], torch.tensor(250.0), rtol=0.01)
    above = (f0[40:62] > 200).nonzero()
    assert 50 <= 40 + int(above[0]) <= 51


def test_batch_rows_are_tracked_independently() -> None:
    rows = torch.stack([sweep(100, 300, 1.0, SR), sweep(250, 90, 1.0, SR), torch.zeros(SR)])
    batch = track_pitch(rows.reshape(3, 1, SR), sample_rate=SR, hop_length=HOP)
    assert batch.f0_hz.shape == (3, 1, 101)
    for i in range(3):
        single = track_pitch(rows[i], sample_rate=SR, hop_length=HOP)
        assert torch.allclose(batch.f0_hz[i, 0], single.f0_hz, rtol=1e-5)
        assert torch.equal(batch.voiced[i, 0], single.voiced)


def test_dtypes() -> None:
    x = sweep(120, 180, 1.0, SR)
    as_float64 = track_pitch(x.double(), sample_rate=SR, hop_length=HOP)
    assert as_float64.f0_hz.dtype == torch.float64
    as_int16 = track_pitch((x * 32767).to(torch.int16), sample_rate=SR, hop_length=HOP)
    assert as_int16.f0_hz.dtype == torch.float32
    reference = track_pitch(x, sample_rate=SR, hop_length=HOP)
    assert torch.allclose(as_float64.f0_hz.float(), reference.f0_hz, rtol=1e-4)
    assert torch.allclose(as_int16.f0_hz, reference.f0_hz, rtol=1e-3)


def test_voicing_agrees_with_the_decisions() -> None:
    x = torch.cat([sweep(120, 200, 1.0, SR), 0.01 * torch.randn(SR), sweep(200, 120, 1.0, SR)])
    track = track_pitch(x, sample_rate=SR, hop_length=HOP)
    assert ((track.voicing >= 0) & (track.voicing <= 1)).all()
    assert (track.voicing[track.voiced] >= 0.5).all()
    assert (track.voicing[~track.voiced] <= 0.5).all()
    assert track.voiced[10:90].all() and not track.voiced[110:190].any()


def test_semitones() -> None:
    out = hz_to_semitones(torch.tensor([110.0, 55.0, 27.5, 0.0]))
    assert torch.allclose(out[:3], torch.tensor([12.0, 0.0, -12.0]))
    assert math.isnan(out[3])
    assert torch.allclose(hz_to_semitones(torch.tensor(440.0), reference_hz=440.0), torch.zeros(()))


def test_fill_unvoiced_modes() -> None:
    f0 = torch.tensor([[0.0, 100.0, 0.0, 0.0, 130.0, 0.0], [0.0] * 6])
    voiced = f0 > 0
    assert torch.equal(fill_unvoiced(f0, voiced, "zero"), f0)
    nan = fill_unvoiced(f0, voiced, "nan")
    assert torch.equal(nan.isnan(), ~voiced)
    assert torch.equal(nan[voiced], f0[voiced])
    filled = fill_unvoiced(f0, voiced, "interpolate")
    expected = torch.tensor([[100.0, 100.0, 110.0, 120.0, 130.0, 130.0], [0.0] * 6])
    assert torch.allclose(filled, expected)
    with pytest.raises(InvalidOptions, match="mode='linear'"):
        fill_unvoiced(f0, voiced, "linear")  # type: ignore[arg-type]


def test_decoder_equals_a_sequential_viterbi() -> None:
    gen = torch.Generator().manual_seed(1)
    batch, frames, states = 2, 3000, 5
    scores = torch.rand(batch, frames, states, generator=gen)
    freqs = 80 + 300 * torch.rand(batch, frames, states, generator=gen)
    freqs[..., 0] = 0.0  # state 0 is unvoiced
    jump, switch = 0.35, 0.14
    best = _max_marginals(scores, freqs, jump, switch).argmax(-1)
    for b in range(batch):
        assert best[b].tolist() == viterbi(scores[b].double().numpy(), freqs[b].double().numpy())


def viterbi(scores: np.ndarray, freqs: np.ndarray, jump: float = 0.35, switch: float = 0.14):
    """Praat's path finder, written out frame by frame."""
    voiced = freqs > 0
    log_f = np.log2(np.where(voiced, freqs, 1.0))
    delta = scores[0].copy()
    back = []
    for t in range(1, len(scores)):
        cost = np.abs(log_f[t - 1][:, None] - log_f[t][None, :]) * jump
        both = voiced[t - 1][:, None] & voiced[t][None, :]
        one = voiced[t - 1][:, None] ^ voiced[t][None, :]
        cost = np.where(both, cost, np.where(one, switch, 0.0))
        total = delta[:, None] - cost + scores[t][None, :]
        back.append(total.argmax(0))
        delta = total.max(0)
    path = [int(delta.argmax())]
    for pointers in reversed(back):
        path.append(int(pointers[path[-1]]))
    return path[::-1]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"f_min": 400.0, "f_max": 400.0}, "f_min=400.0 Hz must be below f_max=400.0"),
        ({"f_min": 300.0, "f_max": 200.0}, "f_min=300.0 Hz must be below"),
        ({"f_min": 0.0}, "f_min=0.0 Hz must be > 0"),
        ({"f_min": -50.0}, "f_min=-50.0"),
        ({"f_max": 8000.0}, r"f_max=8000.0 Hz must be below the Nyquist frequency \(8000 Hz\)"),
        ({"f_max": 9000.0}, "f_max=9000.0"),
        ({"hop_length": 0}, "hop_length=0"),
        ({"sample_rate": 0}, "sample_rate=0"),
        ({"max_candidates": 0}, "max_candidates=0"),
        ({"voicing_threshold": 1.5}, "voicing_threshold=1.5"),
        ({"octave_jump_cost": -0.1}, "octave_jump_cost=-0.1"),
        ({"f_min": 3500.0, "f_max": 3900.0, "sample_rate": 8000}, "shorter than 8 samples"),
    ],
)
def test_invalid_options_raise(kwargs: dict, message: str) -> None:
    options = {"sample_rate": SR, "hop_length": HOP, **kwargs}
    with pytest.raises(InvalidOptions, match=message):
        track_pitch(torch.zeros(SR), **options)


def test_invalid_semitone_reference_raises() -> None:
    with pytest.raises(InvalidOptions, match="reference_hz=0"):
        hz_to_semitones(torch.tensor([100.0]), reference_hz=0)


# -- against Praat on real speech -------------------------------------------------------------
def praat_on_our_grid(y: np.ndarray, sample_rate: int, hop: int) -> tuple[np.ndarray, np.ndarray]:
    """Praat's F0 (0 = unvoiced), 65–400 Hz, one frame per ``hop``, and the index of our frame
    at each of its frames.

    Praat centres its frames symmetrically in the signal; a few ms of leading/trailing zeros
    put every Praat frame centre on one of our frame centres.
    """
    parselmouth = pytest.importorskip("parselmouth")
    for total in range(2 * hop, 2 * hop + 4):
        n = len(y) + total
        count = int((n / sample_rate - 3 / 65) / (hop / sample_rate)) + 1
        lead = ((n - 1) // 2 - (count - 1) * hop // 2) % hop
        padded = np.concatenate([np.zeros(lead), y, np.zeros(total - lead)])
        pitch = parselmouth.Sound(padded, sample_rate).to_pitch(
            time_step=hop / sample_rate, pitch_floor=65, pitch_ceiling=400
        )
        # Praat's sample k (0-based) sits at (k + 0.5) / sample_rate seconds.
        position = (pitch.xs() * sample_rate - 0.5 - lead) / hop
        index = np.round(position).astype(int)
        if np.allclose(position, index, atol=1e-6):
            inside = index <= len(y) // hop  # the padding may add a frame past our last
            return index[inside], pitch.selected_array["frequency"][inside]
    raise AssertionError("Praat's frames could not be aligned with ours")


@pytest.mark.parametrize(
    ("clip", "sample_rate", "hop"),
    [
        ("speech/198-209-0000.ogg", 16000, 160),
        ("speech/5703-47212-0000.ogg", 16000, 160),
        ("vad/count.wav", 16000, 160),
        ("speech/198-209-0000.ogg", 8000, 80),
        ("speech/5703-47212-0000.ogg", 44100, 441),
    ],
)
def test_agrees_with_praat_on_speech(clip: str, sample_rate: int, hop: int) -> None:
    y, sr = sf.read(shared_file(clip), dtype="float32")
    if sr != sample_rate:
        y = librosa.resample(y, orig_sr=sr, target_sr=sample_rate)
    index, reference = praat_on_our_grid(y.astype(np.float64), sample_rate, hop)
    track = track_pitch(torch.from_numpy(y), sample_rate=sample_rate, hop_length=hop)
    f0, voiced = track.f0_hz.numpy()[index], track.voiced.numpy()[index]
    both = voiced & (reference > 0)
    gross = np.abs(f0[both] - reference[both]) > 0.2 * reference[both]
    gpe, vde = gross.mean(), (voiced != (reference > 0)).mean()
    fine_cents = np.abs(1200 * np.log2(f0[both][~gross] / reference[both][~gross])).mean()
    assert both.sum() > 200
    assert gpe <= 0.02, gpe
    assert vde <= 0.10, vde
    assert fine_cents <= 5.0, fine_cents
