"""Core features on known-answer signals, and parity with librosa on real speech."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch

from app.models.options import FeatureOptions
from app.pipeline.features import compute_features
from app.pipeline.features.energy import frame_energy
from app.pipeline.features.frames import FrameSpec, pad_signal
from app.pipeline.features.normalization import aggregate, normalize_frames
from app.pipeline.features.presets import resolve
from app.pipeline.features.spectral import log_mel, mfcc, power_to_db, stft_power, with_deltas
from app.pipeline.features.temporal import zero_crossing_rate
from tests.conftest import shared_file, tone

FRAMES = FrameSpec(16000, 512, 400, 160)


def features_of(samples: np.ndarray, sample_rate: int, **options: object) -> dict:
    opts = FeatureOptions(**options)  # type: ignore[arg-type]
    config = resolve(opts, sample_rate)
    padded = pad_signal(torch.as_tensor(samples, dtype=torch.float32)[None, None], config.frames)
    power = stft_power(padded, config.frames, padded=True)
    return compute_features(
        padded,
        power,
        lengths=[len(samples)],
        config=config,
        options=opts,
    )[0]


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    y, sr = sf.read(shared_file("speech/198-209-0000.ogg"), dtype="float32")
    return librosa.resample(y, orig_sr=sr, target_sr=16000)


def test_default_frame_layout() -> None:
    config = resolve(FeatureOptions(), 16000)
    assert (config.frames.win_length, config.frames.hop_length, config.frames.n_fft) == (
        400,
        160,
        512,
    )
    assert (config.n_mels, config.n_mfcc) == (80, 13)
    assert config.frames.frame_rate_hz == 100.0


def test_shapes_and_frame_counts_agree() -> None:
    x = tone(300, 1.234, 16000)
    out = features_of(x, 16000, names=["spectrogram", "log_mel", "mfcc", "energy", "zcr"], deltas=2)
    frames = 1 + len(x) // 160
    assert out["spectrogram"].data.shape == (257, frames)
    assert out["log_mel"].data.shape == (80, frames)
    assert out["mfcc"].data.shape == (39, frames)
    assert out["energy"].data.shape == (3, frames)
    assert out["zcr"].data.shape == (1, frames)
    assert all(f.frame_rate_hz == 100.0 for f in out.values())


def test_energy_of_a_sine() -> None:
    x = torch.tensor(tone(1000, 1.0, 16000, amplitude=0.5))
    rms, log_energy = frame_energy(x, FRAMES)[:, 5:-5]
    assert torch.allclose(rms, torch.full_like(rms, 0.5 / np.sqrt(2)), rtol=1e-3)
    assert torch.allclose(log_energy, torch.log(400 * rms**2), rtol=1e-5)


def test_zero_crossing_rate_of_a_sine() -> None:
    x = torch.tensor(tone(1000, 1.0, 16000))
    zcr = zero_crossing_rate(x, FRAMES)[0, 5:-5]
    # 2 crossings per period: 2000 crossings/s → 2000/16000 per sample pair
    assert torch.allclose(zcr, torch.full_like(zcr, 2000 / 16000), atol=1 / 400)


def test_spectrogram_peak_at_the_tone_bin() -> None:
    x = torch.tensor(tone(1000, 1.0, 16000))[None]
    power = stft_power(x, FRAMES)[0]
    assert int(power[:, 50].argmax()) == round(1000 * 512 / 16000)


def test_log_mel_of_silence_is_the_floor() -> None:
    power = stft_power(torch.zeros(1, 16000), FRAMES)
    assert torch.all(log_mel(power, frames=FRAMES) == -100.0)


def test_deltas_of_a_ramp() -> None:
    ramp = torch.arange(20.0).repeat(3, 1)
    out = with_deltas(ramp, order=2)
    assert out.shape == (9, 20)
    assert torch.allclose(out[3:6, 2:-2], torch.ones(3, 16))
    assert torch.allclose(out[6:9, 4:-4], torch.zeros(3, 12), atol=1e-6)


def test_deltas_of_a_padded_batch_equal_each_item_alone() -> None:
    import torchaudio.functional as AF

    def reference(x: torch.Tensor) -> torch.Tensor:  # torchaudio's conv1d implementation
        delta = AF.compute_deltas(x, win_length=5, mode="replicate")
        return torch.cat([x, delta, AF.compute_deltas(delta, win_length=5, mode="replicate")], -2)

    batch = torch.randn(3, 1, 13, 40, generator=torch.Generator().manual_seed(1))
    lengths = [40, 17, 2]
    torch.testing.assert_close(with_deltas(batch, 2), reference(batch))
    out = with_deltas(batch, 2, lengths=lengths)
    assert out.shape == (3, 1, 39, 40)
    for index, length in enumerate(lengths):
        torch.testing.assert_close(out[index, ..., :length], reference(batch[index, ..., :length]))


def test_log_mel_equals_the_dense_filterbank_product() -> None:
    import torchaudio.functional as AF

    power = stft_power(
        torch.tensor(tone(440, 1.0, 16000))[None]
        + 0.01 * torch.randn(1, 16000, generator=torch.Generator().manual_seed(2)),
        FRAMES,
    )
    for n_mels, f_min, f_max in [(80, 0.0, 8000.0), (23, 20.0, 7600.0), (128, 0.0, 8000.0)]:
        bank = AF.melscale_fbanks(
            257, f_min, f_max, n_mels, 16000, norm="slaney", mel_scale="slaney"
        )
        dense = power_to_db(torch.matmul(bank.T, power))
        grouped = log_mel(power, frames=FRAMES, n_mels=n_mels, f_min=f_min, f_max=f_max)
        torch.testing.assert_close(grouped, dense, atol=1e-4, rtol=0)


@pytest.mark.parametrize("frames", [FRAMES, FrameSpec(8000, 7, 7, 3, "constant")])
def test_energy_and_zcr_of_a_batch_equal_the_framed_definitions(frames: FrameSpec) -> None:
    from app.pipeline.features.frames import frame_signal

    x = torch.randn(2, 1, 1603, generator=torch.Generator().manual_seed(0))
    x[1, :, 800:] = 0.0  # exact zeros count as non-negative
    x[0, :, -1] = -0.5  # the last frame's zero extension (odd sizes) meets a negative sample
    framed = frame_signal(x, frames)
    energy = framed.double().square().sum(-1)
    signs = framed >= 0
    crossings = (signs[..., 1:] != signs[..., :-1]).sum(-1)
    rms, log_energy = frame_energy(x, frames).unbind(-2)
    torch.testing.assert_close(rms.double(), (energy / frames.win_length).sqrt(), rtol=1e-5, atol=0)
    # float32 precision: relative where the log is large, absolute where it is near 0 (energy ≈ 1)
    torch.testing.assert_close(
        log_energy.double(), energy.clamp_min(1e-10).log(), rtol=1e-5, atol=1e-6
    )
    zcr = zero_crossing_rate(x, frames)[..., 0, :]
    torch.testing.assert_close(zcr, crossings.float() / frames.win_length, rtol=0, atol=0)
    # Zero-extended into a longer batch, each signal keeps its frames.
    padded = torch.nn.functional.pad(pad_signal(x, frames), (0, 37))
    count = frames.num_frames(x.shape[-1])
    torch.testing.assert_close(
        zero_crossing_rate(padded, frames, padded=True)[..., :count], zcr[..., None, :]
    )
    torch.testing.assert_close(
        frame_energy(padded, frames, padded=True)[..., :count], frame_energy(x, frames)
    )


def test_cmvn_and_aggregate() -> None:
    x = torch.randn(4, 500, generator=torch.Generator().manual_seed(3)) * 3 + 7
    normalized = normalize_frames(x, "cmvn")
    assert normalized.mean(-1).abs().max() < 1e-5
    assert torch.allclose(normalized.std(-1, unbiased=False), torch.ones(4), atol=1e-4)
    assert normalize_frames(x, "cmn").mean(-1).abs().max() < 1e-4
    stats = aggregate(x)
    assert torch.allclose(stats["mean"], x.mean(-1))
    assert torch.equal(stats["max"], x.amax(-1))


def assert_matches(
    ours: np.ndarray,
    reference: np.ndarray,
    *,
    mad_db: float | None = None,
    min_corr: float | None = None,
) -> None:
    assert ours.shape == reference.shape
    if mad_db is not None:
        assert np.abs(ours - reference).mean() <= mad_db
    if min_corr is not None:
        correlations = [np.corrcoef(a, b)[0, 1] for a, b in zip(ours, reference, strict=True)]
        assert min(correlations) >= min_corr, correlations


def test_librosa_preset_equals_librosa_defaults(speech: np.ndarray) -> None:
    out = features_of(speech, 16000, names=["log_mel", "mfcc"], preset="librosa")
    reference_mel = librosa.power_to_db(librosa.feature.melspectrogram(y=speech, sr=16000))
    reference_mfcc = librosa.feature.mfcc(y=speech, sr=16000)
    assert_matches(out["log_mel"].data.numpy(), reference_mel, mad_db=0.1)
    assert_matches(out["mfcc"].data.numpy(), reference_mfcc, min_corr=0.999)


def test_default_preset_equals_librosa_with_the_same_framing(speech: np.ndarray) -> None:
    out = features_of(speech, 16000, names=["log_mel", "mfcc"])
    mel = librosa.feature.melspectrogram(
        y=speech, sr=16000, n_fft=512, hop_length=160, win_length=400, n_mels=80, pad_mode="reflect"
    )
    reference_mel = librosa.power_to_db(mel, top_db=None)
    reference_mfcc = librosa.feature.mfcc(S=reference_mel, n_mfcc=13)
    assert_matches(out["log_mel"].data.numpy(), reference_mel, mad_db=0.1)
    assert_matches(out["mfcc"].data.numpy(), reference_mfcc, min_corr=0.999)


def test_mfcc_of_librosa_log_mel_is_librosa_mfcc(speech: np.ndarray) -> None:
    reference_mel = librosa.power_to_db(librosa.feature.melspectrogram(y=speech, sr=16000))
    ours = mfcc(torch.tensor(reference_mel), n_mfcc=20).numpy()
    np.testing.assert_allclose(ours, librosa.feature.mfcc(S=reference_mel), atol=2e-3)


def test_power_to_db_top_db_matches_librosa() -> None:
    power = np.abs(np.random.default_rng(0).standard_normal((40, 30))) ** 4
    np.testing.assert_allclose(
        power_to_db(torch.tensor(power), top_db=80.0).numpy(),
        librosa.power_to_db(power, top_db=80.0),
        atol=1e-4,
    )
