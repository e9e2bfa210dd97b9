"""The pause-edge stages of the energy backend (app/pipeline/pause_edges.py): the refinement,
detached weak sounds, the likelihood-ratio change point (with its corrections under stationary
noise and its longer search under babble) and background blips, on generated signals."""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest
import scipy.signal
import torch
import torch.nn.functional as F

import app.pipeline.energy_vad as energy_vad
import app.pipeline.pause_edges as pause_edges
import app.pipeline.segment as segment
from app.pipeline.segment import vad
from tests.unit.signals import HOP, SR, babble_noise, band_noise, bursts_in_noise, harmonic_bursts


def keep_edges(
    x: torch.Tensor, start_s: torch.Tensor, end_s: torch.Tensor, **_: object
) -> tuple[torch.Tensor, torch.Tensor]:
    return start_s.clone(), end_s.clone()


@pytest.mark.parametrize("snr_db", [None, 20.0, 10.0])
def test_pause_edges_are_refined_without_the_hangover(
    snr_db: float | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The refinement alone (the likelihood-ratio stage after it is tested below).
    monkeypatch.setattr(segment, "place_edges_by_likelihood", keep_edges)
    spans = [(0.5, 1.3), (1.8, 2.5), (3.0, 3.6)]
    for seed in range(2):
        x = harmonic_bursts(spans, snr_db=snr_db, seed=seed)
        found = vad(x, sample_rate=SR, hop_length=HOP).segments
        assert len(found) == 3
        inner = [found[0].end_s, found[1].start_s, found[1].end_s, found[2].start_s]
        # At 10 dB a run of 60–150 Hz noise inside the refinement's reach can take an edge up
        # to 40 ms early (measured over 6 seeds: 39 ms at worst; the evaluation's tolerance is
        # 50 ms, and that band is worth it on speech, see EnergyVadTuning.edge_bands_hz).
        assert np.allclose(inner, [1.3, 1.8, 2.5, 3.0], atol=0.04 if snr_db == 10.0 else 0.015)
    if snr_db == 10.0:  # the last offset borders no pause: it keeps the SNR-dependent hangover
        assert found[2].end_s > 3.65


#: The likelihood-ratio stage without its corrections for word ends hidden by stationary noise.
CHANGE_POINT_ONLY = dataclasses.replace(
    energy_vad.ENERGY_TUNING, lr_onset_extend_s=0.0, lr_offset_shift_s_per_db=0.0
)


@pytest.mark.parametrize(
    ("colour", "snr_db", "seed", "edge"),
    [("pink", 5.0, 0, 0), ("white", 5.0, 0, 0), ("pink", 10.0, 1, 1), ("pink", 10.0, 4, 2)],
)
def test_likelihood_ratio_stage_places_edges_the_refinement_misses(
    colour: str, snr_db: float, seed: int, edge: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Cases where the level tests of refine_pause_edges leave an edge 60–100 ms off (a noise
    # run taken for speech next to it); the change point of the evidence is within 10 ms. (The
    # corrections for hidden word ends under stationary noise are tested on their own below.)
    monkeypatch.setattr(pause_edges, "ENERGY_TUNING", CHANGE_POINT_ONLY)
    spans = [(0.5, 1.3), (1.8, 2.5), (3.0, 3.6)]
    x = bursts_in_noise(spans, colour, snr_db, seed)

    def inner() -> np.ndarray:
        found = vad(x, sample_rate=SR, hop_length=HOP).segments
        assert len(found) == 3
        return np.array([found[0].end_s, found[1].start_s, found[1].end_s, found[2].start_s])

    truth = np.array([1.3, 1.8, 2.5, 3.0])
    placed = inner()
    monkeypatch.setattr(segment, "place_edges_by_likelihood", keep_edges)
    refined = inner()
    assert abs(refined[edge] - truth[edge]) > 0.05
    assert abs(placed[edge] - truth[edge]) < 0.01
    # The onsets stay within 10 ms; an offset right after a loud, abrupt end can come up to
    # 70 ms late (noise frames whose evidence exceeds lr_eta while the decision-directed SNR
    # decays; measured on these bursts: 32–72 ms in 9 of 24 noise/SNR/seed cases).
    assert np.all(np.abs(placed[[1, 3]] - truth[[1, 3]]) < 0.01)
    assert np.all(np.abs(placed[[0, 2]] - truth[[0, 2]]) < 0.07)


def test_likelihood_ratio_stage_keeps_the_edges_of_quiet_pauses() -> None:
    # Clean bursts (−50 dB noise): the speech stands > 25 dB over the pauses, gated.
    x = harmonic_bursts([(0.5, 1.3), (1.8, 2.5), (3.0, 3.6)])
    start = torch.tensor([0.5, 1.8, 3.0], dtype=torch.float64)
    end = torch.tensor([1.33, 2.5, 3.6], dtype=torch.float64)  # a late offset too
    placed = pause_edges.place_edges_by_likelihood(x, start, end, sample_rate=SR)
    assert torch.equal(placed[0], start) and torch.equal(placed[1], end)
    # Without the gate the same call moves the late offset.
    ungated = dataclasses.replace(energy_vad.ENERGY_TUNING, lr_gate_db=math.inf)
    moved = pause_edges.place_edges_by_likelihood(x, start, end, sample_rate=SR, tuning=ungated)
    assert moved[1][0] == pytest.approx(1.3, abs=0.01)


def test_likelihood_ratio_stage_fills_a_false_gap_inside_a_burst() -> None:
    spans = [(0.5, 1.3), (1.8, 2.5), (3.0, 3.6)]
    x = bursts_in_noise(spans, "pink", 5.0, 0)
    # A 100 ms gap inside the first burst, 0.3 s before the pause; a 100 ms gap in the
    # middle of the pause (noise) between two short segments stays.
    start = torch.tensor([0.5, 1.0, 1.8, 3.0], dtype=torch.float64)
    end = torch.tensor([0.9, 1.3, 2.5, 3.6], dtype=torch.float64)
    placed_start, placed_end = pause_edges.place_edges_by_likelihood(
        x, start, end, sample_rate=SR, tuning=CHANGE_POINT_ONLY
    )
    assert placed_start.tolist() == pytest.approx([0.5, 1.8, 3.0], abs=0.01)
    assert placed_end.tolist() == pytest.approx([1.3, 2.5, 3.6], abs=0.01)
    kept = dataclasses.replace(energy_vad.ENERGY_TUNING, lr_fill_eta=math.inf)
    unfilled = pause_edges.place_edges_by_likelihood(x, start, end, sample_rate=SR, tuning=kept)
    assert unfilled[0].numel() == 4


def bursts_after_a_weak_sound(colour: str, seed: int, lead_db: float = -15.0) -> torch.Tensor:
    """:func:`bursts_in_noise` at 5 dB with 80 ms of 1–5 kHz noise right before the second
    burst (1.72–1.8 s), ``lead_db`` under the bursts' power: the breathy start of a word,
    under the added noise in total."""
    clean = harmonic_bursts([(0.5, 1.3), (1.8, 2.5), (3.0, 3.6)], noise=0.0).numpy()
    power = np.mean(clean[clean != 0].astype(np.float64) ** 2)
    b, a = scipy.signal.butter(4, [1000, 5000], btype="band", fs=SR)
    lead = scipy.signal.lfilter(b, a, np.random.default_rng(100 + seed).standard_normal(len(clean)))
    lo, hi = int(1.72 * SR), int(1.8 * SR)
    lead[:lo], lead[hi:] = 0.0, 0.0
    lead *= np.sqrt(power * 10 ** (lead_db / 10) / np.mean(lead[lo:hi] ** 2))
    x = bursts_in_noise([(0.5, 1.3), (1.8, 2.5), (3.0, 3.6)], colour, 5.0, seed)
    return x + torch.tensor(lead, dtype=torch.float32)


def test_likelihood_ratio_stage_extends_onsets_over_a_weak_sound_under_stationary_noise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The change point alone starts the word at its voiced part (up to 76 ms late here); the
    # extension reaches the weak sound before it. Its cost: a noise draw can pull an onset
    # early (seed 0: 28 ms before the weak sound).
    def onset_errors() -> np.ndarray:
        errors = []
        for colour, seed in itertools.product(("white", "pink"), range(4)):
            found = vad(bursts_after_a_weak_sound(colour, seed), sample_rate=SR, hop_length=HOP)
            assert len(found.segments) == 3
            errors.append(found.segments[1].start_s - 1.72)
        return np.abs(errors)

    extended = onset_errors()
    monkeypatch.setattr(pause_edges, "ENERGY_TUNING", CHANGE_POINT_ONLY)
    change_point = onset_errors()
    assert np.all(extended <= 0.05)  # the evaluation's tolerance
    assert np.sum(change_point > 0.05) >= 2
    assert extended.mean() < change_point.mean() - 0.01


@pytest.mark.parametrize("snr_db", [5.0, 20.0])
def test_likelihood_ratio_stage_puts_offsets_later_under_stationary_noise(snr_db: float) -> None:
    # A word's tail sinks under the noise before the labels' level: under stationary noise
    # moved offsets go lr_offset_shift_s_per_db later per dB of the recording's median speech
    # range under lr_offset_shift_range_db (at 5 dB SNR these bursts stand ≈ 10 dB over the
    # pauses: ≈ 20 ms); onsets keep their places; at 20 dB nothing moves.
    spans = [(0.5, 1.3), (1.8, 2.5), (3.0, 3.6)]
    x = bursts_in_noise(spans, "white", snr_db, 0)
    start = torch.tensor([a - 0.03 for a, _ in spans], dtype=torch.float64)
    end = torch.tensor([b + 0.06 for _, b in spans], dtype=torch.float64)
    unshifted = dataclasses.replace(energy_vad.ENERGY_TUNING, lr_offset_shift_s_per_db=0.0)
    shifted = pause_edges.place_edges_by_likelihood(x, start, end, sample_rate=SR)
    plain = pause_edges.place_edges_by_likelihood(x, start, end, sample_rate=SR, tuning=unshifted)
    assert torch.equal(shifted[0], plain[0])
    later = (shifted[1] - plain[1]).tolist()
    if snr_db == 5.0:
        assert later[1] == pytest.approx(later[0]) and 0.01 < later[0] < 0.03
    else:
        assert later[:2] == [0.0, 0.0]
    assert later[2] == 0.0  # the last offset borders no pause


def test_likelihood_ratio_stage_by_blocks_equals_one_block(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 14 bursts in 20 s of pink noise at 5 dB: pauses pooled across block boundaries.
    spans = [(0.5 + 1.4 * k, 1.3 + 1.4 * k - 0.05 * (k % 3)) for k in range(14)]
    x = bursts_in_noise(spans, "pink", 5.0, 2, seconds=20.0)
    start = torch.tensor([a - 0.03 for a, _ in spans], dtype=torch.float64)
    end = torch.tensor([b + 0.06 for _, b in spans], dtype=torch.float64)
    whole = pause_edges.place_edges_by_likelihood(x, start, end, sample_rate=SR)
    assert not torch.equal(whole[1], end)  # edges moved
    for block in (1, 3):
        monkeypatch.setattr(pause_edges, "_LR_BLOCK", block)
        parts = pause_edges.place_edges_by_likelihood(x, start, end, sample_rate=SR)
        assert torch.allclose(parts[0], whole[0]) and torch.allclose(parts[1], whole[1])


@pytest.mark.parametrize("snr_db", [10.0, 5.0])
def test_likelihood_ratio_stage_reaches_further_back_under_babble(snr_db: float) -> None:
    # The detector joins babble bursts to the speech far into the pause (here: an offset
    # 0.5 s late); bursty pause noise lets the change point search 0.8 s back instead of
    # 0.15 s.
    spans = [(0.5, 1.3), (2.2, 3.0)]
    clean = harmonic_bursts(spans, noise=0.0).numpy().astype(np.float64)
    noise = babble_noise(4.0, 1)
    noise *= np.sqrt(np.mean(clean[clean != 0] ** 2) / 10 ** (snr_db / 10) / np.mean(noise**2))
    x = torch.tensor(clean + noise, dtype=torch.float32)
    start = torch.tensor([0.5, 2.2], dtype=torch.float64)
    late = torch.tensor([1.8, 3.0], dtype=torch.float64)
    geo = pause_edges._lr_geometry(
        late[:1], start[1:], sample_rate=SR, tuning=energy_vad.ENERGY_TUNING
    )
    assert pause_edges._lr_survey(x, geo).bursty(x, geo, energy_vad.ENERGY_TUNING)
    placed = pause_edges.place_edges_by_likelihood(x, start, late, sample_rate=SR)
    assert placed[1][0] == pytest.approx(1.3, abs=0.07)
    steady = dataclasses.replace(energy_vad.ENERGY_TUNING, lr_bursty_spread_db=math.inf)
    held = pause_edges.place_edges_by_likelihood(x, start, late, sample_rate=SR, tuning=steady)
    assert held[1][0] > 1.6


@pytest.mark.parametrize("colour", ["white", "pink"])
def test_stationary_noise_is_not_bursty(colour: str) -> None:
    x = bursts_in_noise([(0.5, 1.3), (2.2, 3.0)], colour, 5.0, 0)
    geo = pause_edges._lr_geometry(
        torch.tensor([1.3]).double(), torch.tensor([2.2]).double(), sample_rate=SR,
        tuning=energy_vad.ENERGY_TUNING,
    )  # fmt: skip
    spread = pause_edges._pause_spread_db(x, geo)
    survey = pause_edges._lr_survey(x, geo)
    assert float(spread[0]) < 1.0 and not survey.bursty(x, geo, energy_vad.ENERGY_TUNING)


def test_differenced_hop_energy_is_the_energy_of_the_difference(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    x = torch.randn(10_007, dtype=torch.float64)
    difference = torch.diff(x, prepend=x.new_zeros(1))
    expected = F.pad(difference, (0, -x.numel() % 128)).view(-1, 128).square().sum(dim=1)
    monkeypatch.setattr(pause_edges, "_LR_STRETCH", 1000)  # stretches meet inside the signal
    got = pause_edges._hop_energy(x, 128, differenced=True)
    assert torch.allclose(got, expected, rtol=1e-5)


def test_refinement_moves_late_edges_to_the_pause_and_keeps_short_gaps() -> None:
    for seed in range(3):  # edges as the hangover at 10 dB SNR leaves them (≈ 60 / 30 ms)
        x = harmonic_bursts([(0.5, 1.3), (1.8, 2.5)], snr_db=10.0, seed=seed)
        late = torch.tensor([0.5, 1.77], dtype=torch.float64), torch.tensor([1.36, 2.5])
        start, end = pause_edges.refine_pause_edges(x, late[0], late[1].double(), sample_rate=SR)
        assert end[0] == pytest.approx(1.3, abs=0.01)
        assert start[1] == pytest.approx(1.8, abs=0.01)
        assert (start[0], end[1]) == (0.5, 2.5)  # edges that border no pause stay
    short = torch.tensor([0.5, 1.35], dtype=torch.float64), torch.tensor([1.3, 2.5])
    start, end = pause_edges.refine_pause_edges(x, short[0], short[1].double(), sample_rate=SR)
    assert torch.equal(start, short[0]) and torch.equal(end, short[1].double())  # 50 ms gap


def test_a_click_in_a_quiet_pause_does_not_move_the_edge() -> None:
    # Room tone: a 300 Hz hum (−53 dB, ≈ 40 dB under the bursts) over faint white noise; 40 ms
    # after the first burst a 3 ms 5 kHz click lifts the 3.5–8 kHz band by ≈ 17 dB.
    t = torch.arange(4 * SR) / SR
    x = harmonic_bursts([(0.5, 1.3), (1.8, 2.5)], noise=1e-4)
    x += 0.003 * torch.sin(2 * torch.pi * 300 * t)
    click = (t >= 1.34) & (t < 1.343)
    x += torch.where(click, 0.002 * torch.sin(2 * torch.pi * 5000 * t), 0.0)
    late = torch.tensor([0.5, 1.77], dtype=torch.float64), torch.tensor([1.36, 2.5]).double()
    start, end = pause_edges.refine_pause_edges(x, *late, sample_rate=SR)
    assert end[0] == pytest.approx(1.3, abs=0.01)
    assert start[1] == pytest.approx(1.8, abs=0.01)
    # Counted as speech (as next to a noisy pause), the click would end the speech.
    clicks_count = dataclasses.replace(energy_vad.ENERGY_TUNING, edge_quiet_range_db=math.inf)
    start, end = pause_edges.refine_pause_edges(x, *late, sample_rate=SR, tuning=clicks_count)
    assert end[0] > 1.34


def test_breaths_next_to_a_quiet_pause_are_not_speech(monkeypatch: pytest.MonkeyPatch) -> None:
    # Room tone mostly under 150 Hz (−50 dB); 60 ms after the first burst and 60 ms before the
    # second, a 260 ms breath: 1.5–6 kHz noise that lifts the total level by only ≈ 3 dB but
    # its bands by > 25 dB, which the detector and the refinement hear.
    x = harmonic_bursts([(0.5, 1.3), (2.2, 3.0)], noise=1e-4) + band_noise((20, 150), 3e-3, 9)
    for seed, span in enumerate([(1.36, 1.62), (1.88, 2.14)]):
        x += band_noise((1500, 6000), 3e-3, seed, span=span)

    def edges() -> tuple[float, float]:
        found = vad(x, sample_rate=SR, hop_length=HOP).segments
        assert len(found) == 2
        return found[0].end_s, found[1].start_s

    offset, onset = edges()
    assert offset == pytest.approx(1.3, abs=0.015) and onset == pytest.approx(2.2, abs=0.015)
    monkeypatch.setattr(segment, "trim_detached_weak_sounds", keep_edges)
    offset, onset = edges()
    assert offset > 1.55 and onset < 1.95  # the breaths were speech


def test_detached_sounds_that_are_loud_or_under_noise_stay_speech() -> None:
    start = torch.tensor([0.5, 2.2], dtype=torch.float64)
    end = torch.tensor([1.5, 3.0], dtype=torch.float64)
    # A loud second syllable 60 ms after the first one, next to a quiet pause: sustained
    # 10 dB over the pause, it is speech.
    x = harmonic_bursts([(0.5, 1.3), (1.36, 1.5), (2.2, 3.0)], noise=1e-4)
    kept = pause_edges.trim_detached_weak_sounds(x, start, end, sample_rate=SR)
    assert torch.equal(kept[0], start) and torch.equal(kept[1], end)
    # A soft one (12 dB under the bursts) in noise 10 dB under them: weak against the pause,
    # but the pause is not quiet (the speech < detached_range_db over it: the noise masks what
    # is weak), so it stays speech; taken for a quiet pause it would be cut off.
    x = harmonic_bursts([(0.5, 1.3), (2.2, 3.0)], snr_db=10.0, seed=3)
    x += 0.25 * harmonic_bursts([(1.36, 1.5)], noise=0.0)
    kept = pause_edges.trim_detached_weak_sounds(x, start, end, sample_rate=SR)
    assert torch.equal(kept[0], start) and torch.equal(kept[1], end)
    ungated = dataclasses.replace(energy_vad.ENERGY_TUNING, detached_range_db=-math.inf)
    trimmed = pause_edges.trim_detached_weak_sounds(x, start, end, sample_rate=SR, tuning=ungated)
    assert trimmed[1][0] == pytest.approx(1.3, abs=0.01)


def test_isolated_transients_are_short_runs_after_a_window_of_nothing() -> None:
    pattern = "11111 000 11 0000 111 0000 11111 0000".replace(" ", "")  # speech side first
    active = torch.tensor([[c == "1" for c in pattern]])
    kept = pause_edges._without_isolated_transients(active, 4)
    # The 2-frame run follows 3 inactive frames (kept), the 3-frame run 4 (dropped), and the
    # 5-frame run is longer than the window (kept); the first run has nothing before it.
    expected = "11111 000 11 0000 000 0000 11111 0000".replace(" ", "")
    assert "".join("1" if v else "0" for v in kept[0].tolist()) == expected


def test_blips_that_do_not_stand_out_from_the_pause_are_dropped() -> None:
    # Bursts at 0.5–1.3 and 2.4–3.0 s, a quiet 150 ms burst at 1.8 s (−14 dB: about 14 dB over
    # the noise in 150–600 Hz), and a 150 ms stretch of the noise itself at 2.1 s.
    x = harmonic_bursts([(0.5, 1.3), (2.4, 3.0)], noise=0.03)
    x += 0.2 * harmonic_bursts([(1.8, 1.95)], noise=0.0)
    start = torch.tensor([0.5, 1.8, 2.1, 2.4], dtype=torch.float64)
    end = torch.tensor([1.3, 1.95, 2.25, 3.0], dtype=torch.float64)
    keep = pause_edges.drop_background_blips(x, start, end, sample_rate=SR)
    assert keep.tolist() == [True, True, False, True]


def test_sample_rows_are_zero_beyond_the_signal_wherever_they_start() -> None:
    # Rows wholly before the start, straddling it, inside, straddling the end, wholly after it,
    # and longer than the signal (the frames the edge stages analyse near a recording's ends).
    x = torch.arange(1.0, 11.0)  # 10 samples: 1 … 10
    padded = torch.cat([torch.zeros(20), x, torch.zeros(20)])
    for span in (4, 14):
        starts = torch.tensor([-12, -9, -2, 0, 3, 8, 10, 15])
        rows = pause_edges._sample_rows(x, starts, span)
        expected = torch.stack([padded[20 + a : 20 + a + span] for a in starts.tolist()])
        assert torch.equal(rows, expected)
    inside = pause_edges._sample_rows(x, torch.tensor([0, 2, 6]), 4)  # the gathered fast path
    assert torch.equal(inside, torch.stack([x[0:4], x[2:6], x[6:10]]))
