"""Kaldi-compatible filterbank and MFCC features (``compute-fbank-feats``, ``compute-mfcc-feats``).

The computation follows Kaldi's ``feature-window.cc``, ``mel-computations.cc``,
``feature-fbank.cc`` and ``feature-mfcc.cc`` (as also implemented by ``kaldi-native-fbank`` and
``torchaudio.compliance.kaldi``), vectorized over frames and over leading batch dimensions:

1. frames of ``frame_length`` samples every ``frame_shift`` samples (see :func:`kaldi_frame_count`);
2. per frame: optional Gaussian dither, DC-offset removal, the raw log energy
   ``log(max(Σx², FLT_EPSILON))``, pre-emphasis ``x[i] − c·x[i−1]`` (``x[0] − c·x[0]``), the window;
3. zero-padding to the next power of two, power (or magnitude) spectrum;
4. Kaldi's triangular mel filters (HTK mel scale ``1127·ln(1 + f/700)``, triangles in mel, no
   area normalization, the Nyquist bin unused);
5. natural log with a ``FLT_EPSILON`` floor; for MFCC, an orthonormal DCT-II and sinusoidal
   liftering, and the raw log energy in place of C0.

Input scaling: Kaldi reads WAV files as int16 sample values. Our samples are full-scale floats
(1.0 = int16 32768), so every function here multiplies them by :data:`KALDI_INT16_SCALE` first —
the same convention as feeding ``waveform * 32768`` to ``torchaudio.compliance.kaldi`` or
``kaldi_native_fbank``. The outputs therefore equal Kaldi's on the same 16-bit recording, and
``dither`` is in int16 units (Kaldi's default of 1.0 is one int16 step).

Frame layout differs from :class:`~app.pipeline.features.frames.FrameSpec` (centred frames,
``1 + T // hop``): with ``snip_edges=True`` (Kaldi's default) frame ``t`` covers samples
``[t·shift, t·shift + length)`` and only whole frames are kept, so a signal of ``T`` samples has
``1 + (T − length) // shift`` frames (none when ``T < length``); with ``snip_edges=False``
frame ``t`` is centred on sample ``t·shift + shift // 2``, there are
``(T + shift // 2) // shift`` frames, and the signal is mirrored at both ends (Kaldi's
reflection ``−1 → 0``, ``T → T − 1``).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Literal

import torch

from app.errors import InvalidOptions

KaldiWindow = Literal["povey", "hamming", "hanning", "rectangular", "blackman", "sine"]

#: Full-scale float samples are multiplied by this before Kaldi processing (int16 range).
KALDI_INT16_SCALE = 32768.0
#: ``std::numeric_limits<float>::epsilon()``, Kaldi's floor before every logarithm.
FLT_EPSILON = float(torch.finfo(torch.float32).eps)
_BLACKMAN_COEFF = 0.42
_WINDOWS = ("povey", "hamming", "hanning", "rectangular", "blackman", "sine")


def _frame_sizes(
    sample_rate: int, frame_length_ms: float, frame_shift_ms: float
) -> tuple[int, int]:
    """``(frame_length, frame_shift)`` in samples, truncated like Kaldi, validated."""
    if sample_rate <= 0:
        raise InvalidOptions(f"sample_rate must be > 0 Hz, got {sample_rate}")
    length = int(sample_rate * 0.001 * frame_length_ms)
    shift = int(sample_rate * 0.001 * frame_shift_ms)
    if length < 2:
        raise InvalidOptions(
            f"frame_length_ms={frame_length_ms} gives {length} samples at {sample_rate} Hz; "
            "a frame needs at least 2 samples"
        )
    if shift < 1:
        raise InvalidOptions(
            f"frame_shift_ms={frame_shift_ms} gives {shift} samples at {sample_rate} Hz; "
            "the shift needs at least 1 sample"
        )
    return length, shift


def kaldi_frame_count(
    num_samples: int,
    *,
    sample_rate: int,
    frame_length_ms: float = 25.0,
    frame_shift_ms: float = 10.0,
    snip_edges: bool = True,
) -> int:
    """Number of Kaldi frames for ``num_samples`` samples (Kaldi's ``NumFrames``).

    Args:
        num_samples: signal length, samples.
        sample_rate: Hz.
        frame_length_ms: frame length, ms; ``int(sample_rate · 0.001 · frame_length_ms)``
            samples. Default 25.
        frame_shift_ms: frame shift, ms; truncated to samples the same way. Default 10.
        snip_edges: ``True``: ``1 + (T − length) // shift`` whole frames from sample 0 (0 when
            ``T < length``); ``False``: ``(T + shift // 2) // shift`` centred frames.
    """
    if num_samples < 0:
        raise InvalidOptions(f"num_samples must be ≥ 0, got {num_samples}")
    length, shift = _frame_sizes(sample_rate, frame_length_ms, frame_shift_ms)
    return _count(num_samples, length, shift, snip_edges)


def _count(num_samples: int, length: int, shift: int, snip_edges: bool) -> int:
    if snip_edges:
        return 0 if num_samples < length else 1 + (num_samples - length) // shift
    return (num_samples + shift // 2) // shift


@lru_cache(maxsize=32)
def _window(kind: str, length: int, device: torch.device) -> torch.Tensor:
    """Kaldi's ``FeatureWindowFunction``, shape ``(length,)``, float32."""
    i = torch.arange(length, dtype=torch.float64)
    a = 2 * math.pi / (length - 1)
    if kind == "hanning":
        w = 0.5 - 0.5 * torch.cos(a * i)
    elif kind == "povey":
        w = (0.5 - 0.5 * torch.cos(a * i)).pow(0.85)
    elif kind == "hamming":
        w = 0.54 - 0.46 * torch.cos(a * i)
    elif kind == "sine":
        w = torch.sin(0.5 * a * i)
    elif kind == "blackman":
        c = _BLACKMAN_COEFF
        w = c - 0.5 * torch.cos(a * i) + (0.5 - c) * torch.cos(2 * a * i)
    else:  # rectangular
        w = torch.ones(length, dtype=torch.float64)
    return w.float().to(device)


def _kaldi_mel(freq: torch.Tensor) -> torch.Tensor:
    return 1127.0 * torch.log(1.0 + freq / 700.0)


@lru_cache(maxsize=32)
def kaldi_mel_banks(
    num_mel_bins: int,
    padded_length: int,
    sample_rate: int,
    low_freq: float,
    high_freq: float,
    device: torch.device,
) -> torch.Tensor:
    """Kaldi's mel filterbank (``MelBanks``), shape ``(num_mel_bins, padded_length // 2 + 1)``.

    Triangles equally spaced on the mel scale ``1127·ln(1 + f/700)`` between ``low_freq`` and
    ``high_freq`` (Hz, already resolved: ``0 < high_freq ≤ sample_rate / 2``), peak weight 1,
    no area normalization; the Nyquist column is zero. Computed in float32 like Kaldi, cached
    per parameter set and device.

    Raises:
        InvalidOptions: a filter covers no FFT bin (too many bins for the FFT size).
    """
    f32 = torch.float32
    num_fft_bins = padded_length // 2
    bin_width = torch.tensor(sample_rate / padded_length, dtype=f32)
    mel = _kaldi_mel(bin_width * torch.arange(num_fft_bins, dtype=f32))
    mel_low, mel_high = _kaldi_mel(torch.tensor([low_freq, high_freq], dtype=f32))
    delta = (mel_high - mel_low) / (num_mel_bins + 1)
    index = torch.arange(num_mel_bins, dtype=f32)[:, None]
    left = mel_low + index * delta
    center = mel_low + (index + 1) * delta
    right = mel_low + (index + 2) * delta
    rising = (mel - left) / (center - left)
    falling = (right - mel) / (right - center)
    weights = torch.where(mel <= center, rising, falling)
    weights = torch.where((mel > left) & (mel < right), weights, torch.zeros((), dtype=f32))
    empty = (weights.count_nonzero(dim=1) == 0).nonzero().flatten()
    if empty.numel():
        raise InvalidOptions(
            f"num_mel_bins={num_mel_bins}: mel bin {int(empty[0])} covers no FFT bin between "
            f"{low_freq} and {high_freq} Hz with a {padded_length}-point FFT; use fewer bins"
        )
    bank = torch.cat([weights, torch.zeros(num_mel_bins, 1, dtype=f32)], dim=1)
    return bank.to(device)


@lru_cache(maxsize=16)
def _dct_lifter(
    num_ceps: int, num_mel_bins: int, lifter: float, device: torch.device
) -> torch.Tensor:
    """Kaldi's orthonormal DCT-II rows times the lifter, shape ``(num_ceps, num_mel_bins)``."""
    n = torch.arange(num_mel_bins, dtype=torch.float64)
    k = torch.arange(num_ceps, dtype=torch.float64)[:, None]
    dct = math.sqrt(2.0 / num_mel_bins) * torch.cos(math.pi / num_mel_bins * (n + 0.5) * k)
    dct[0] = math.sqrt(1.0 / num_mel_bins)
    dct = dct.float().double()  # Kaldi stores the DCT matrix in float32
    if lifter != 0.0:
        coeffs = (1.0 + 0.5 * lifter * torch.sin(math.pi * k / lifter)).float().double()
        dct = dct * coeffs
    return dct.float().to(device)


def _check_common(
    samples: torch.Tensor,
    *,
    sample_rate: int,
    num_mel_bins: int,
    frame_length_ms: float,
    frame_shift_ms: float,
    dither: float,
    preemphasis: float,
    window: str,
    low_freq: float,
    high_freq: float,
    energy_floor: float,
) -> tuple[int, int, float]:
    """Validate the shared options; returns ``(frame_length, frame_shift, high_freq in Hz)``."""
    if not samples.is_floating_point():
        raise InvalidOptions(f"Kaldi features need float samples, got dtype {samples.dtype}")
    length, shift = _frame_sizes(sample_rate, frame_length_ms, frame_shift_ms)
    if window not in _WINDOWS:
        raise InvalidOptions(f"window must be one of {', '.join(_WINDOWS)}; got {window!r}")
    if num_mel_bins < 3:
        raise InvalidOptions(f"num_mel_bins must be ≥ 3, got {num_mel_bins}")
    if not 0.0 <= preemphasis <= 1.0:
        raise InvalidOptions(f"preemphasis must be in [0, 1], got {preemphasis}")
    if dither < 0.0:
        raise InvalidOptions(f"dither must be ≥ 0, got {dither}")
    if energy_floor < 0.0:
        raise InvalidOptions(f"energy_floor must be ≥ 0, got {energy_floor}")
    nyquist = sample_rate / 2
    top = high_freq if high_freq > 0.0 else nyquist + high_freq
    if not (0.0 <= low_freq < nyquist and 0.0 < top <= nyquist and top > low_freq):
        raise InvalidOptions(
            f"low_freq={low_freq} Hz and high_freq={high_freq} Hz (resolved to {top} Hz) must "
            f"satisfy 0 ≤ low_freq < high_freq ≤ {nyquist} Hz (Nyquist)"
        )
    return length, shift, top


def _frames(
    flat: torch.Tensor, length: int, shift: int, count: int, snip_edges: bool
) -> torch.Tensor:
    """``(batch, time)`` → frames ``(batch, count, length)`` (a view when ``snip_edges``)."""
    n = flat.shape[-1]
    if not snip_edges:
        # Kaldi mirrors the signal around its ends (−1 → 0, T → T − 1), repeatedly if needed.
        first = shift // 2 - length // 2
        last_end = (count - 1) * shift + shift // 2 - length // 2 + length
        index = torch.arange(min(first, 0), max(last_end, n), device=flat.device) % (2 * n)
        index = torch.where(index >= n, 2 * n - 1 - index, index)
        flat = flat[:, index]
        start = first - min(first, 0)
        flat = flat[:, start:]
    return flat.unfold(-1, length, shift)[:, :count]


def _log_energy_and_spectrum(
    samples: torch.Tensor,
    *,
    length: int,
    shift: int,
    dither: float,
    preemphasis: float,
    remove_dc_offset: bool,
    window: str,
    snip_edges: bool,
    use_power: bool,
    with_energy: bool,
) -> tuple[torch.Tensor | None, torch.Tensor, int]:
    """Frames → ``(raw log energy (batch, frame) or None, spectrum (batch, frame, freq), padded)``.

    The int16 scale (2¹⁵) is folded into the window and the energy: scaling by a power of two is
    exact in floating point, so this equals scaling the samples first.
    """
    n = samples.shape[-1]
    flat = samples.reshape(math.prod(samples.shape[:-1]), n)
    count = _count(n, length, shift, snip_edges)
    padded = 1 << (length - 1).bit_length()
    if count == 0 or n == 0:
        empty = flat.new_zeros(flat.shape[0], 0) if with_energy else None
        return empty, flat.new_zeros(flat.shape[0], 0, padded // 2 + 1), padded
    x = _frames(flat, length, shift, count, snip_edges)  # (batch, frame, length), a view
    if dither > 0.0:
        x = x + (dither / KALDI_INT16_SCALE) * torch.randn_like(x)
    mean = x.mean(dim=-1, keepdim=True) if remove_dc_offset else None

    log_energy = None
    if with_energy:
        centred = x - mean if mean is not None else x
        energy = torch.linalg.vecdot(centred, centred) * KALDI_INT16_SCALE**2
        log_energy = energy.clamp_min(FLT_EPSILON).log()

    # Pre-emphasis, DC removal and window, written straight into the zero-padded FFT buffer.
    # Pre-emphasis is linear, so that of (x − mean) is preemph(x) − (1 − c)·mean.
    buffer = x.new_zeros(*x.shape[:-1], padded)
    frame = buffer[..., :length]
    c = preemphasis
    if c != 0.0:
        torch.sub(x[..., 1:], x[..., :-1], alpha=c, out=buffer[..., 1:length])
        buffer[..., 0] = x[..., 0] * (1.0 - c)
    else:
        frame.copy_(x)
    if mean is not None:
        frame.sub_(mean * (1.0 - c))
    frame.mul_(_window(window, length, samples.device).to(x.dtype) * KALDI_INT16_SCALE)
    spec = torch.fft.rfft(buffer)
    power = spec.real.square() + spec.imag.square()
    return log_energy, power if use_power else power.sqrt(), padded


def kaldi_fbank(
    samples: torch.Tensor,
    *,
    sample_rate: int,
    num_mel_bins: int = 80,
    frame_length_ms: float = 25.0,
    frame_shift_ms: float = 10.0,
    dither: float = 0.0,
    preemphasis: float = 0.97,
    remove_dc_offset: bool = True,
    window: KaldiWindow = "povey",
    snip_edges: bool = True,
    low_freq: float = 20.0,
    high_freq: float = 0.0,
    use_energy: bool = False,
    use_log_fbank: bool = True,
    use_power: bool = True,
    energy_floor: float = 0.0,
) -> torch.Tensor:
    """Kaldi filterbank features (``compute-fbank-feats`` / ``kaldi_native_fbank.OnlineFbank``).

    The options carry Kaldi's names and defaults, except ``num_mel_bins`` (80, the usual ASR
    setting; Kaldi's is 23) and ``dither`` (0 for reproducible output; Kaldi's is 1.0).

    Args:
        samples: audio of shape ``(..., time)``, full scale = 1.0; multiplied by 32768 (int16
            range) before processing, see the module docstring.
        sample_rate: Hz.
        num_mel_bins: mel filters (≥ 3). Default 80.
        frame_length_ms: frame length, ms (``int(sample_rate · 0.001 · ms)`` samples, FFT size
            the next power of two). Default 25.
        frame_shift_ms: frame shift, ms. Default 10.
        dither: standard deviation of Gaussian noise added to each frame, int16 units. Default 0
            (no randomness; Kaldi's default 1.0 makes the output nondeterministic).
        preemphasis: pre-emphasis coefficient in [0, 1]. Default 0.97.
        remove_dc_offset: subtract each frame's mean. Default ``True``.
        window: ``"povey"`` (Hann to the power 0.85), ``"hamming"``, ``"hanning"``,
            ``"rectangular"``, ``"blackman"`` (coefficient 0.42) or ``"sine"``; all symmetric
            over the frame. Default ``"povey"``.
        snip_edges: Kaldi's frame layout (module docstring, :func:`kaldi_frame_count`).
            Default ``True``.
        low_freq: lowest filter edge, Hz. Default 20.
        high_freq: highest filter edge, Hz; ``≤ 0`` means Nyquist plus this value. Default 0
            (Nyquist).
        use_energy: prepend the raw log energy of each frame (after DC removal, before
            pre-emphasis and windowing) as row 0. Default ``False``.
        use_log_fbank: natural log of the filter outputs, floored at ``FLT_EPSILON``
            (1.19e-7). Default ``True``; ``False`` gives the linear filter outputs.
        use_power: filter the power spectrum (``True``, default) or the magnitude.
        energy_floor: floor of the energy row, linear energy in int16² units (0 = none).

    Returns:
        Tensor of shape ``(..., num_mel_bins, frame)`` — ``(..., 1 + num_mel_bins, frame)``
        with ``use_energy`` — with ``frame = kaldi_frame_count(time, ...)`` at
        ``1000 / frame_shift_ms`` frames/s; natural-log units of int16² (power) or int16
        (magnitude) spectral values. The dtype follows ``samples``.

    Raises:
        InvalidOptions: a bad sample rate, frame size, frequency range, window name, or more
            mel bins than the FFT resolves.
    """
    length, shift, top = _check_common(
        samples,
        sample_rate=sample_rate,
        num_mel_bins=num_mel_bins,
        frame_length_ms=frame_length_ms,
        frame_shift_ms=frame_shift_ms,
        dither=dither,
        preemphasis=preemphasis,
        window=window,
        low_freq=low_freq,
        high_freq=high_freq,
        energy_floor=energy_floor,
    )
    log_energy, spectrum, padded = _log_energy_and_spectrum(
        samples,
        length=length,
        shift=shift,
        dither=dither,
        preemphasis=preemphasis,
        remove_dc_offset=remove_dc_offset,
        window=window,
        snip_edges=snip_edges,
        use_power=use_power,
        with_energy=use_energy,
    )
    bank = kaldi_mel_banks(
        num_mel_bins, padded, sample_rate, float(low_freq), float(top), samples.device
    ).to(spectrum.dtype)
    mel = torch.matmul(bank, spectrum.transpose(-1, -2))  # (batch, num_mel_bins, frame)
    if use_log_fbank:
        mel = mel.clamp_min(FLT_EPSILON).log()
    if log_energy is not None:
        if energy_floor > 0.0:
            log_energy = log_energy.clamp_min(math.log(energy_floor))
        mel = torch.cat([log_energy[:, None, :], mel], dim=1)
    return mel.reshape(*samples.shape[:-1], *mel.shape[-2:])


def kaldi_mfcc(
    samples: torch.Tensor,
    *,
    sample_rate: int,
    num_ceps: int = 13,
    num_mel_bins: int = 23,
    frame_length_ms: float = 25.0,
    frame_shift_ms: float = 10.0,
    dither: float = 0.0,
    preemphasis: float = 0.97,
    remove_dc_offset: bool = True,
    window: KaldiWindow = "povey",
    snip_edges: bool = True,
    low_freq: float = 20.0,
    high_freq: float = 0.0,
    cepstral_lifter: float = 22.0,
    use_energy: bool = True,
    energy_floor: float = 0.0,
) -> torch.Tensor:
    """Kaldi MFCCs (``compute-mfcc-feats`` / ``kaldi_native_fbank.OnlineMfcc``).

    Log power mel energies (floored at ``FLT_EPSILON``), Kaldi's orthonormal DCT-II
    (``√(1/N)`` for C0, ``√(2/N)·cos(π/N·(n + ½)·k)`` otherwise), sinusoidal liftering
    ``1 + Q/2·sin(π·k/Q)``, and with ``use_energy`` the raw log frame energy in place of C0.
    Defaults are Kaldi's (23 mel bins, 13 coefficients, lifter 22, energy on), except
    ``dither`` (0).

    Args:
        samples: audio of shape ``(..., time)``, full scale = 1.0 (scaled by 32768 internally).
        sample_rate: Hz.
        num_ceps: coefficients kept, 1 ≤ ``num_ceps`` ≤ ``num_mel_bins``. Default 13.
        num_mel_bins: mel filters. Default 23.
        frame_length_ms, frame_shift_ms, dither, preemphasis, remove_dc_offset, window,
            snip_edges, low_freq, high_freq: as in :func:`kaldi_fbank`.
        cepstral_lifter: lifter coefficient ``Q`` (0 = no liftering). Default 22.
        use_energy: replace C0 with the raw log energy. Default ``True``.
        energy_floor: floor of that energy, linear int16² units (0 = none).

    Returns:
        Tensor of shape ``(..., num_ceps, frame)``, ``frame = kaldi_frame_count(time, ...)``.

    Raises:
        InvalidOptions: as :func:`kaldi_fbank`, or ``num_ceps`` out of range, or a negative
            ``cepstral_lifter``.
    """
    length, shift, top = _check_common(
        samples,
        sample_rate=sample_rate,
        num_mel_bins=num_mel_bins,
        frame_length_ms=frame_length_ms,
        frame_shift_ms=frame_shift_ms,
        dither=dither,
        preemphasis=preemphasis,
        window=window,
        low_freq=low_freq,
        high_freq=high_freq,
        energy_floor=energy_floor,
    )
    if not 1 <= num_ceps <= num_mel_bins:
        raise InvalidOptions(
            f"num_ceps must be in [1, num_mel_bins={num_mel_bins}], got {num_ceps}"
        )
    if cepstral_lifter < 0.0:
        raise InvalidOptions(f"cepstral_lifter must be ≥ 0, got {cepstral_lifter}")
    log_energy, power, padded = _log_energy_and_spectrum(
        samples,
        length=length,
        shift=shift,
        dither=dither,
        preemphasis=preemphasis,
        remove_dc_offset=remove_dc_offset,
        window=window,
        snip_edges=snip_edges,
        use_power=True,
        with_energy=use_energy,
    )
    bank = kaldi_mel_banks(
        num_mel_bins, padded, sample_rate, float(low_freq), float(top), samples.device
    ).to(power.dtype)
    log_mel = torch.matmul(bank, power.transpose(-1, -2)).clamp_min(FLT_EPSILON).log()
    dct = _dct_lifter(num_ceps, num_mel_bins, float(cepstral_lifter), samples.device)
    ceps = torch.matmul(dct.to(log_mel.dtype), log_mel)  # (batch, num_ceps, frame)
    if log_energy is not None:
        if energy_floor > 0.0:
            log_energy = log_energy.clamp_min(math.log(energy_floor))
        ceps = torch.cat([log_energy[:, None, :], ceps[:, 1:]], dim=1)
    return ceps.reshape(*samples.shape[:-1], *ceps.shape[-2:])
