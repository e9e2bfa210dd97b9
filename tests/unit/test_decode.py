"""Decoding on generated files: formats, layout and header limits."""

from __future__ import annotations

import numpy as np
import pytest

from app.errors import AudioTooLong, InvalidAudioHeader
from app.pipeline.decode import DecodeLimits, decode, sniff_format
from tests.conftest import tone, wav_bytes


@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT"])
def test_wav_decodes_to_contiguous_channel_major_float32(subtype: str) -> None:
    """Reductions over a transposed (non-contiguous) buffer cost 10× more: the decoder must hand
    over a C-contiguous ``(channel, time)`` tensor."""
    left, right = tone(300, 0.5, 16000, 0.5), tone(700, 0.5, 16000, 0.25)
    audio, info = decode(wav_bytes(np.stack([left, right], axis=1), 16000, subtype))
    assert audio.samples.shape == (2, 8000) and audio.samples.is_contiguous()
    assert audio.samples.dtype.is_floating_point and info.channels == 2
    tolerance = 1 / 100 if subtype == "PCM_U8" else 1e-4
    np.testing.assert_allclose(audio.samples[0].numpy(), left, atol=tolerance)
    np.testing.assert_allclose(audio.samples[1].numpy(), right, atol=tolerance)


def test_sniffing_ignores_names_and_reads_bytes() -> None:
    assert sniff_format(wav_bytes(tone(100, 0.1, 8000), 8000)) == "wav"
    assert sniff_format(b"fLaC\x00\x00") == "flac"
    assert sniff_format(b"OggS" + b"\x00" * 30 + b"OpusHead") == "opus"
    assert sniff_format(b"\x00\x00\x00\x20ftypM4A ") == "m4a"
    assert sniff_format(b"\x1a\x45\xdf\xa3") == "webm"
    assert sniff_format(b"ID3\x04") == "mp3"
    assert sniff_format(b"hello") is None


def test_limits_are_checked_from_the_header_before_decoding() -> None:
    data = wav_bytes(np.zeros(16000 * 3, dtype=np.float32), 16000)
    with pytest.raises(AudioTooLong, match="3.0 s"):
        decode(data, DecodeLimits(max_duration_s=2))
    with pytest.raises(InvalidAudioHeader, match="channels"):
        decode(wav_bytes(np.zeros((100, 3), dtype=np.float32), 16000), DecodeLimits(max_channels=2))
