"""Restoration on known-answer signals and real speech: clicks, pops, echo, reverberation, EQ.

The reverberant, click and echo signals are built here with fixed seeds; WPE is compared with
NARA-WPE's own output on a real recording.
"""

from __future__ import annotations

import math

import librosa
import numpy as np
import pytest
import scipy.signal as ss
import soundfile as sf
import torch

from app.errors import InvalidOptions
from app.models.options import DenoiseOptions
from app.pipeline.clean import clean as cleaning_stage
from app.pipeline.restore import (
    _block_lpc,
    _rise_over_running_median,
    _serving_lpc,
    attenuate_pops,
    cancel_echo,
    detect_clicks,
    equalize_long_term_spectrum,
    estimate_rt60,
    levinson,
    long_term_band_levels,
    repair_clicks,
    suppress_late_reflections,
    wpe_dereverb,
    wpe_stft,
)
from scripts.eval_restore import insert_pops
from scripts.evalkit import si_sdr
from tests.conftest import shared_file

SR = 16000


def load(relative: str) -> np.ndarray:
    y, sr = sf.read(shared_file(relative), dtype="float32")
    return librosa.resample(y, orig_sr=sr, target_sr=SR).astype(np.float32)


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return load("speech/198-209-0000.ogg")


@pytest.fixture(scope="module")
def speech2() -> np.ndarray:
    return load("speech/5703-47212-0000.ogg")


def room_response(rt60: float, seed: int = 0, distance_m: float = 1.0) -> np.ndarray:
    """Direct path + exponentially decaying Gaussian tail (Polack), at ``distance_m`` from the
    source in a 60 m³ room (direct-to-reverberant ratio from the critical distance)."""
    rng = np.random.default_rng(seed)
    n = int(1.2 * rt60 * SR)
    t = np.arange(n) / SR
    tail = rng.standard_normal(n) * np.exp(-3 * math.log(10) * t / rt60)
    tail[: int(0.002 * SR)] = 0.0
    critical = 0.057 * math.sqrt(60.0 / rt60)
    tail *= math.sqrt(1.0 / ((critical / distance_m) ** 2 * (tail**2).sum()))
    tail[0] = 1.0
    return tail


def reverberate(x: np.ndarray, rt60: float, seed: int = 0) -> np.ndarray:
    return ss.fftconvolve(x, room_response(rt60, seed))[: len(x)].astype(np.float32)


# --------------------------------------------------------------------------------------------
# LPC
# --------------------------------------------------------------------------------------------


def test_levinson_of_an_ar1_autocorrelation() -> None:
    rho = 0.8
    r = torch.tensor([rho**k for k in range(6)], dtype=torch.float64)
    a, error = levinson(r, 5)
    np.testing.assert_allclose(a.numpy(), [1, -rho, 0, 0, 0, 0], atol=1e-12)
    assert float(error) == pytest.approx(1 - rho**2)


def test_levinson_recovers_an_ar2_process() -> None:
    rng = np.random.default_rng(0)
    true = np.array([1.0, -1.6, 0.81])  # poles at 0.9 e^{±0.48j}
    x = ss.lfilter([1.0], true, rng.standard_normal(200_000))
    r = np.array([x[: len(x) - k] @ x[k:] for k in range(3)]) / len(x)
    a, _ = levinson(torch.tensor(r), 2)
    np.testing.assert_allclose(a.numpy(), true, atol=0.01)


# --------------------------------------------------------------------------------------------
# clicks
# --------------------------------------------------------------------------------------------


def insert_clicks(
    clean: np.ndarray, seed: int, every_s: float = 0.1
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Clicks of 1–5 samples (decaying), −16 to −4 dB re the clip peak, random sign."""
    rng = np.random.default_rng(seed)
    x = clean.copy()
    peak = float(np.abs(clean).max())
    clicks = []
    for start in np.arange(int(0.05 * SR), len(x) - 200, int(every_s * SR)):
        p = int(start + rng.integers(-200, 200))
        length = int(rng.integers(1, 6))
        amplitude = rng.uniform(0.15, 0.6) * peak * rng.choice([-1.0, 1.0])
        x[p : p + length] += amplitude * np.exp(-np.arange(length) / 2.0)
        clicks.append((p, length))
    return x, clicks


def click_scores(mask: np.ndarray, clicks: list[tuple[int, int]]) -> tuple[float, float]:
    """(recall, precision): a click is found when a detected region overlaps it; a detected
    region is right when it overlaps a click."""
    truth = np.zeros(len(mask), dtype=bool)
    for p, length in clicks:
        truth[p : p + length] = True
    recall = np.mean([mask[p : p + length].any() for p, length in clicks])
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    starts, ends = np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]
    precision = np.mean([truth[a:b].any() for a, b in zip(starts, ends, strict=True)])
    return float(recall), float(precision)


@pytest.mark.parametrize("which", ["speech", "speech2"])
def test_click_train_in_speech_is_found_and_repaired(which: str, request) -> None:
    clean = request.getfixturevalue(which)
    noisy, clicks = insert_clicks(clean, seed=3)
    repaired, report = repair_clicks(torch.tensor(noisy), sample_rate=SR)
    mask = report.mask.numpy()
    recall, precision = click_scores(mask, clicks)
    assert recall >= 0.99 and precision >= 0.95, (recall, precision)
    assert report.count == int(report.positions.shape[0]) > 0.9 * len(clicks)
    assert report.skipped == 0  # evident clicks: the back-off repairs the marginal ones too
    # error at the click samples drops a lot
    at = np.zeros(len(clean), dtype=bool)
    for p, length in clicks:
        at[p : p + length] = True
    out = repaired.numpy()
    before = float(((noisy - clean)[at] ** 2).sum())
    after = float(((out - clean)[at] ** 2).sum())
    assert 10 * math.log10(before / after) > 15.0
    # nothing outside the detected clicks moves
    assert np.array_equal(out[~mask], noisy[~mask])


def test_clicks_on_a_sine_are_found_exactly_and_interpolated() -> None:
    t = np.arange(SR) / SR
    clean = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    noisy = clean.copy()
    for p in (4000, 9000, 13000):
        noisy[p] += 0.3
    repaired, report = repair_clicks(torch.tensor(noisy), sample_rate=SR)
    assert report.count == 3
    assert report.positions[:, 0].tolist() == [3999, 8999, 12999]  # one sample of margin
    assert np.abs(repaired.numpy() - clean).max() < 1e-3


def test_lsar_interpolates_a_known_gap_of_a_two_tone_signal() -> None:
    t = np.arange(SR // 2) / SR
    clean = 0.4 * np.sin(2 * np.pi * 300 * t) + 0.2 * np.sin(2 * np.pi * 1250 * t + 1.0)
    gap = np.zeros(len(clean), dtype=bool)
    gap[3000:3020] = True  # 1.25 ms hole
    damaged = np.where(gap, 0.0, clean)
    repaired, report = repair_clicks(torch.tensor(damaged), sample_rate=SR, mask=torch.tensor(gap))
    assert report.count == 1
    assert np.abs(repaired.numpy() - clean)[gap].max() < 1e-3


@pytest.mark.parametrize("which", ["speech", "speech2"])
def test_clean_speech_is_left_untouched_by_the_back_off(which: str, request) -> None:
    """Clean speech gives marginal detections only (onsets, irregular glottal pulses): the
    back-off skips them all and returns the input bit for bit; without it they are repaired."""
    clean = torch.tensor(request.getfixturevalue(which))
    repaired, report = repair_clicks(clean, sample_rate=SR)
    assert report.count == 0 and report.skipped >= 5, (report.count, report.skipped)
    assert torch.equal(repaired, clean) and not bool(report.mask.any())
    assert not bool(detect_clicks(clean, sample_rate=SR).any())
    _, eager = repair_clicks(clean, sample_rate=SR, evidence_db=0.0)
    assert 0 < eager.count <= report.skipped and eager.skipped == 0


def test_a_few_loud_clicks_in_clean_speech_are_repaired(speech: np.ndarray) -> None:
    """Evident clicks are repaired even when there are only three of them (and they unlock the
    marginal detections of their channel)."""
    noisy = speech.copy()
    peak = float(np.abs(speech).max())
    at = [SR, 5 * SR + 123, 9 * SR + 4567]
    for p in at:
        noisy[p : p + 3] += 0.5 * peak * np.array([1.0, 0.6, 0.35], dtype=np.float32)
    repaired, report = repair_clicks(torch.tensor(noisy), sample_rate=SR)
    mask = report.mask.numpy()
    assert all(mask[p : p + 3].all() for p in at)
    assert report.skipped == 0
    error = np.concatenate([(repaired.numpy() - speech)[p : p + 3] for p in at])
    assert float(np.abs(error).max()) < 0.1 * peak


def test_default_cleaning_stage_keeps_clean_speech(speech: np.ndarray, speech2: np.ndarray) -> None:
    """The whole default cleaning stage (declick, then noise) on clean speech: no click repaired,
    no pop attenuated, and the output within 30 dB SNR of the input (the declick steps change
    nothing; the noise stage's own back-off leaves a faint trace: 38 dB on the first clip)."""
    for y in (speech, speech2):
        x = torch.tensor(y).unsqueeze(0)
        out, report = cleaning_stage(x, sample_rate=SR, options=DenoiseOptions())
        assert report.clicks_repaired == 0 and report.pops_attenuated == 0
        assert report.clicks_skipped and report.clicks_skipped >= 5
        assert report.pops_skipped is not None
        change = (out - x).double()
        assert 10 * math.log10(float(x.double().square().sum() / change.square().sum())) > 30.0


def test_click_detection_is_per_channel(speech: np.ndarray) -> None:
    noisy, _ = insert_clicks(speech, seed=5)
    both = torch.tensor(np.stack([noisy, speech]))
    mask = detect_clicks(both, sample_rate=SR)
    assert torch.equal(mask[0], detect_clicks(torch.tensor(noisy), sample_rate=SR))
    assert torch.equal(mask[1], detect_clicks(torch.tensor(speech), sample_rate=SR))
    _, report = repair_clicks(both, sample_rate=SR)
    assert report.positions.shape[1] == 2
    # the back-off is per channel: the clean channel's marginal detections stay skipped
    assert set(report.positions[:, 0].tolist()) == {0} and not bool(mask[1].any())
    assert report.skipped == repair_clicks(torch.tensor(speech), sample_rate=SR)[1].skipped > 0
    eager = detect_clicks(both, sample_rate=SR, evidence_db=0.0)
    assert bool(eager[1].any()) and torch.equal(eager[0], mask[0])


@pytest.mark.parametrize(
    ("which", "regions", "found", "false"),
    [("speech", 140, 138, 2), ("speech2", 155, 148, 7)],
)
def test_click_detection_is_unchanged_by_the_fast_path(
    which: str, regions: int, found: int, false: int, request
) -> None:
    """The figures of the per-block implementation this one replaced (every block modelled
    again on each pass, all samples screened): the same regions are found."""
    noisy, clicks = insert_clicks(request.getfixturevalue(which), seed=3)
    mask = detect_clicks(torch.tensor(noisy), sample_rate=SR).numpy()
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    starts, ends = np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]
    truth = np.zeros(len(mask), dtype=bool)
    for p, length in clicks:
        truth[p : p + length] = True
    assert len(starts) == regions
    assert sum(bool(mask[p : p + length].any()) for p, length in clicks) == found
    assert sum(not truth[a:b].any() for a, b in zip(starts, ends, strict=True)) == false


def test_serving_block_models_equal_the_full_block_models(speech: np.ndarray) -> None:
    """Repair re-models only the blocks that serve clicks: the same filters as modelling all."""
    # float64: float32 Levinson would differ by rounding (≈ 1e-5) between the two batch layouts
    x = torch.tensor(np.stack([speech[:SR], speech[SR : 2 * SR]]), dtype=torch.float64)
    kw = {"win_length": 512, "hop_length": 256, "order": 24, "sample_rate": SR}
    damaged = torch.zeros_like(x, dtype=torch.bool)
    damaged[0, 5000:5004] = damaged[1, 255:260] = damaged[1, SR - 3 :] = True
    flat = torch.tensor([0, 5000, 12345, SR - 1, SR + 255, SR + 8000, 2 * SR - 1])
    full = _block_lpc(x.masked_fill(damaged, 0.0), **kw)
    n = x.shape[-1]
    expected = full[flat // n, (flat % n) // 256]
    served = _serving_lpc(x, flat, zero=damaged, **kw)
    torch.testing.assert_close(served, expected, rtol=0, atol=1e-10)


def test_repair_with_the_detected_mask_equals_repair_with_detection(speech: np.ndarray) -> None:
    noisy, _ = insert_clicks(speech, seed=7)
    x = torch.tensor(noisy)
    found, report = repair_clicks(x, sample_rate=SR)
    given, again = repair_clicks(x, sample_rate=SR, mask=detect_clicks(x, sample_rate=SR))
    assert torch.equal(report.mask, again.mask) and report.count == again.count > 100
    assert torch.equal(report.positions, again.positions)
    assert torch.equal(found, given)


# --------------------------------------------------------------------------------------------
# pops
# --------------------------------------------------------------------------------------------


def low_band(x: np.ndarray) -> np.ndarray:
    b, a = ss.butter(4, 150 / (SR / 2))
    return ss.filtfilt(b, a, x)


def test_pops_are_detected_and_their_low_band_attenuated(speech: np.ndarray) -> None:
    popped, pops = insert_pops(speech, seed=0)
    out, report = attenuate_pops(torch.tensor(popped), sample_rate=SR)
    starts = report.positions[:, 0].numpy()
    found = [any(abs(s - p) < 0.1 * SR for s in starts) for p, _ in pops]
    assert all(found) and report.count <= len(pops) + 2, (found, report.count)
    at = np.zeros(len(speech), dtype=bool)
    for p, length in pops:
        at[p : p + length] = True
    before = (low_band(popped - speech)[at] ** 2).sum()
    after = (low_band(out.numpy() - speech)[at] ** 2).sum()
    assert 10 * math.log10(before / after) > 15.0
    assert report.reduction_db > 10.0


def test_clean_speech_keeps_its_low_band(speech: np.ndarray, speech2: np.ndarray) -> None:
    """The marginal pops of clean speech (single frames just over the thresholds) are skipped
    by the back-off: the output is the input; without it they are attenuated."""
    skipped = 0
    for y in (speech, speech2):  # the second is a low male voice: F0 harmonics near 100 Hz
        x = torch.tensor(y)
        out, report = attenuate_pops(x, sample_rate=SR)
        assert report.count == 0 and torch.equal(out, x)
        eager_out, eager = attenuate_pops(x, sample_rate=SR, evidence_db=0.0)
        assert 0 < eager.count <= report.skipped and eager.skipped == 0
        skipped += report.skipped
        change = (eager_out - x).numpy()
        assert 10 * math.log10(float(y @ y) / max(float(change @ change), 1e-30)) > 30
    assert skipped >= 2


def test_pop_back_off_is_per_channel(speech: np.ndarray) -> None:
    popped, _ = insert_pops(speech, seed=0)
    both = torch.tensor(np.stack([popped, speech]))
    out, report = attenuate_pops(both, sample_rate=SR)
    alone, first = attenuate_pops(torch.tensor(popped), sample_rate=SR)
    torch.testing.assert_close(out[0], alone, rtol=0, atol=1e-6)
    assert torch.equal(out[1], both[1])
    assert report.count == first.count and set(report.positions[:, 0].tolist()) == {0}


@pytest.mark.parametrize("context", [3, 21, 101])
def test_running_median_prescreen_is_exact(speech: np.ndarray, context: int) -> None:
    """Pops compute the running median only where a rise is possible: same answer as
    computing it everywhere."""
    frames = torch.tensor(speech[: len(speech) // 160 * 160]).reshape(-1, 160).square().sum(-1)
    low_db = 10 * torch.log10(frames + 1e-20)
    noise = torch.tensor(np.random.default_rng(0).normal(0, 6, frames.shape[0]), dtype=low_db.dtype)
    values = torch.stack([low_db, low_db + noise]).unsqueeze(0)  # (1, 2, frame)
    rise, excess = _rise_over_running_median(values, context=context, margins=(12.0, 6.0))
    half = context // 2
    padded = torch.nn.functional.pad(values, (half, half), mode="replicate")
    over = values - padded.unfold(-1, context, 1).median(dim=-1).values
    expected = (over > torch.tensor([12.0, 6.0]).view(1, 2, 1)).all(1)
    assert 0 < int(expected.sum()) < values.shape[-1] // 10
    assert torch.equal(rise, expected)
    assert torch.equal(excess[..., expected[0]], over[..., expected[0]])


# --------------------------------------------------------------------------------------------
# echo
# --------------------------------------------------------------------------------------------


def echo_path(delay_ms: float = 40.0, seed: int = 0) -> np.ndarray:
    """Bulk delay, four discrete taps and a short diffuse tail (−26 dB, 30 ms decay)."""
    rng = np.random.default_rng(seed)
    h = np.zeros(int(0.2 * SR))
    d = int(delay_ms * SR / 1000)
    h[d], h[d + 7], h[d + 23], h[d + 51] = 0.6, -0.3, 0.2, -0.1
    t = np.arange(len(h) - d) / SR
    h[d:] += 0.05 * rng.standard_normal(len(h) - d) * np.exp(-t / 0.03)
    return h


@pytest.fixture(scope="module")
def far_end(speech: np.ndarray, speech2: np.ndarray) -> np.ndarray:
    return np.concatenate([speech, speech2])[: 20 * SR].astype(np.float32)


def erle_db(mic: np.ndarray, out: np.ndarray) -> float:
    return 10 * math.log10(float(mic @ mic) / float(out @ out))


def test_known_echo_path_is_cancelled_by_20_db(far_end: np.ndarray) -> None:
    echo = ss.fftconvolve(far_end, echo_path())[: len(far_end)]
    noise = 1e-4 * np.random.default_rng(1).standard_normal(len(far_end))
    mic = (echo + noise).astype(np.float32)
    out, report = cancel_echo(
        torch.tensor(mic), torch.tensor(far_end), sample_rate=SR, residual_suppression=False
    )
    converged = slice(8 * SR, None)  # after convergence
    linear = erle_db(mic[converged], out.numpy()[converged])
    assert linear >= 20.0, linear
    assert report.delay_ms == pytest.approx(40.0, abs=1.0)
    assert report.double_talk < 0.05
    post, _ = cancel_echo(torch.tensor(mic), torch.tensor(far_end), sample_rate=SR)
    assert erle_db(mic[converged], post.numpy()[converged]) > linear  # post-filter adds more


def test_double_talk_keeps_the_near_end_and_the_filter(
    far_end: np.ndarray, speech2: np.ndarray
) -> None:
    echo = ss.fftconvolve(far_end, echo_path())[: len(far_end)]
    near = np.zeros_like(far_end)
    talk = slice(8 * SR, 14 * SR)
    near[talk] = 0.35 * np.roll(speech2, 7000)[: 6 * SR]
    mic = (echo + near).astype(np.float32)
    out, _ = cancel_echo(
        torch.tensor(mic), torch.tensor(far_end), sample_rate=SR, residual_suppression=False
    )
    o = out.numpy()
    assert (
        si_sdr(reference=near[talk], estimate=mic[talk]) < 3.0
    )  # the echo is as loud as the talker
    assert (
        si_sdr(reference=near[talk], estimate=o[talk]) > 15.0
    )  # the talker survives, the echo does not
    after = slice(15 * SR, None)  # the filter was not thrown off by the double talk
    assert erle_db(mic[after], o[after]) >= 20.0


def test_echo_needs_matching_signals() -> None:
    with pytest.raises(InvalidOptions, match="reference has shape"):
        cancel_echo(torch.zeros(100), torch.zeros(99), sample_rate=SR)
    with pytest.raises(InvalidOptions, match="step_size"):
        cancel_echo(torch.zeros(100), torch.zeros(100), sample_rate=SR, step_size=2.0)


# --------------------------------------------------------------------------------------------
# reverberation
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rt60", [0.3, 0.6, 0.9])
def test_rt60_estimate_on_exponential_rooms(speech: np.ndarray, rt60: float) -> None:
    estimate = float(estimate_rt60(torch.tensor(reverberate(speech, rt60)), sample_rate=SR))
    assert estimate == pytest.approx(rt60, abs=0.15)


def test_rt60_of_dry_speech_is_short_and_silence_has_none(speech: np.ndarray) -> None:
    assert float(estimate_rt60(torch.tensor(speech), sample_rate=SR)) < 0.25
    assert math.isnan(float(estimate_rt60(torch.zeros(SR * 3), sample_rate=SR)))


def test_wpe_matches_nara_wpe(speech: np.ndarray) -> None:
    nara = pytest.importorskip("nara_wpe.wpe")
    y = reverberate(speech[: 5 * SR], 0.6)
    spec = torch.stft(
        torch.tensor(y, dtype=torch.float64),
        n_fft=512,
        hop_length=128,
        window=torch.hann_window(512, dtype=torch.float64),
        return_complex=True,
    )
    reference = nara.wpe(spec.numpy()[:, None, :], taps=10, delay=3, iterations=3)[:, 0]
    ours = wpe_stft(spec, taps=10, delay=3, iterations=3).numpy()
    scale = np.abs(reference).max()
    assert np.abs(ours - reference).max() / scale < 1e-6
    single = wpe_stft(spec.to(torch.complex64)).numpy()  # float32: rounding only
    assert np.linalg.norm(single - reference) / np.linalg.norm(reference) < 1e-2
    with_context = nara.wpe(spec.numpy()[:, None, :], psd_context=2)[:, 0]
    ours = wpe_stft(spec, psd_context=2).numpy()
    assert np.abs(ours - with_context).max() / scale < 1e-6


def test_wpe_reduces_reverberation(speech: np.ndarray, speech2: np.ndarray) -> None:
    for clean in (speech, speech2):
        wet = reverberate(clean, 0.6)
        dry_est = wpe_dereverb(torch.tensor(wet), sample_rate=SR)
        assert (
            si_sdr(reference=clean, estimate=dry_est.numpy())
            > si_sdr(reference=clean, estimate=wet) + 0.25
        )
        # with the late-reverberation suppressor after it, the decays shorten too
        chained, used = suppress_late_reflections(dry_est, sample_rate=SR)
        assert used == pytest.approx(0.6, abs=0.15)
        rt_wet = float(estimate_rt60(torch.tensor(wet), sample_rate=SR))
        rt_out = float(estimate_rt60(chained, sample_rate=SR))
        assert rt_out < rt_wet - 0.1
        assert (
            si_sdr(reference=clean, estimate=chained.numpy())
            > si_sdr(reference=clean, estimate=wet) + 0.5
        )


def test_wpe_leaves_dry_speech_alone(speech: np.ndarray) -> None:
    out = wpe_dereverb(torch.tensor(speech), sample_rate=SR).numpy()
    assert si_sdr(reference=speech, estimate=out) > 20.0


# --------------------------------------------------------------------------------------------
# equalization
# --------------------------------------------------------------------------------------------


def test_equalization_undoes_a_spectral_tilt(speech: np.ndarray) -> None:
    tilted = ss.lfilter([1.0, -0.9], [1.0], speech).astype(np.float32)  # +~15 dB at 4 kHz
    _, original = equalize_long_term_spectrum(torch.tensor(speech), sample_rate=SR)
    out, report = equalize_long_term_spectrum(torch.tensor(tilted), sample_rate=SR)
    assert float(report.deviation_db) > float(original.deviation_db) + 3.0
    _, after = equalize_long_term_spectrum(out, sample_rate=SR)
    assert float(after.deviation_db) < float(report.deviation_db) - 3.0
    assert float(report.gains_db.abs().max()) <= 6.0 + 1e-4
    assert float(report.gains_db[0]) > 0 > float(report.gains_db[-1])  # lows up, highs down


def test_equalization_with_zero_strength_is_transparent(speech: np.ndarray) -> None:
    out, report = equalize_long_term_spectrum(torch.tensor(speech), sample_rate=SR, strength=0)
    assert float(report.gains_db.abs().max()) == 0.0
    np.testing.assert_allclose(out.numpy(), speech, atol=1e-5)


def test_band_levels_of_white_noise_are_flat() -> None:
    noise = torch.tensor(np.random.default_rng(0).standard_normal(SR * 4), dtype=torch.float32)
    centres, level = long_term_band_levels(noise, sample_rate=SR)
    assert centres[-1] <= 0.45 * SR
    assert float(level.max() - level.min()) < 1.5  # PSD per Hz, not per band


# --------------------------------------------------------------------------------------------
# silence and bad parameters
# --------------------------------------------------------------------------------------------


def test_silence_stays_silent() -> None:
    zero = torch.zeros(2, SR * 2)
    assert not bool(detect_clicks(zero, sample_rate=SR).any())
    out, report = repair_clicks(zero, sample_rate=SR)
    assert report.count == 0 and not bool(out.any())
    out, pops = attenuate_pops(zero, sample_rate=SR)
    assert pops.count == 0 and not bool(out.any())
    out, echo = cancel_echo(zero, zero, sample_rate=SR)
    assert not bool(out.any()) and math.isnan(echo.erle_db)
    assert not bool(wpe_dereverb(zero, sample_rate=SR).any())
    out, rt60 = suppress_late_reflections(zero, sample_rate=SR)
    assert math.isnan(rt60) and not bool(out.any())
    out, eq = equalize_long_term_spectrum(zero, sample_rate=SR)
    assert not bool(out.any()) and float(eq.gains_db.abs().max()) == 0.0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda x: detect_clicks(x, sample_rate=SR, threshold=1.0), "threshold"),
        (lambda x: detect_clicks(x, sample_rate=SR, order=0), "order"),
        (lambda x: detect_clicks(x, sample_rate=100), "sample_rate"),
        (lambda x: repair_clicks(x, sample_rate=SR, iterations=0), "iterations"),
        (lambda x: repair_clicks(x, sample_rate=SR, mask=torch.zeros(3, dtype=torch.bool)), "mask"),
        (lambda x: attenuate_pops(x, sample_rate=SR, cutoff_hz=10.0), "cutoff_hz"),
        (lambda x: attenuate_pops(x, sample_rate=SR, max_pop_ms=1000.0), "max_pop_ms"),
        (lambda x: attenuate_pops(x, sample_rate=SR, evidence_db=-1.0), "evidence_db"),
        (lambda x: repair_clicks(x, sample_rate=SR, evidence_db=50.0), "evidence_db"),
        (lambda x: wpe_dereverb(x, sample_rate=SR, taps=0), "taps"),
        (lambda x: wpe_dereverb(x, sample_rate=SR, delay=0), "delay"),
        (lambda x: wpe_stft(x, taps=3), "complex"),
        (lambda x: suppress_late_reflections(x, sample_rate=SR, rt60=-1.0), "rt60"),
        (lambda x: equalize_long_term_spectrum(x, sample_rate=SR, max_gain_db=30.0), "max_gain"),
        (lambda x: equalize_long_term_spectrum(x, sample_rate=SR, strength=2.0), "strength"),
        (lambda x: detect_clicks(x.long(), sample_rate=SR), "floating-point"),
    ],
)
def test_bad_parameters_raise(call, message: str) -> None:
    with pytest.raises(InvalidOptions, match=message):
        call(torch.zeros(SR))
