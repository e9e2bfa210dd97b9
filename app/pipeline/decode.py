"""Bytes → :class:`Audio`, with the format detected from the bytes and every limit enforced.

WAV, FLAC, OGG/Vorbis, AIFF, AU and CAF go through soundfile (libsndfile); MP3, M4A/AAC,
WebM/Matroska, Ogg/Opus and anything else FFmpeg knows go through PyAV. Limits are checked from the
header before any sample is decoded (a tiny file claiming hours of audio is refused without
decoding it) and again while decoding, which also runs against a wall-clock deadline.
"""

from __future__ import annotations

import io
import struct
import time
from dataclasses import dataclass
from typing import cast

import numpy as np
import soundfile as sf
import torch

from app.errors import (
    AudioTooLong,
    CorruptAudio,
    DecodeTimeout,
    EmptyInput,
    InvalidAudioHeader,
    NoAudio,
    UnsupportedFormat,
)
from app.pipeline.audio import Audio, InputInfo

#: Most trailing samples an encoder may add past the declared duration (a few codec frames).
MAX_CODEC_PADDING = 8192

SOUNDFILE_FORMATS = frozenset({"wav", "flac", "ogg", "aiff", "au", "caf"})
#: Containers whose payload may be a codec libsndfile lacks (MP3 in WAV, exotic ADPCM): when
#: libsndfile fails on them, FFmpeg gets a chance. FLAC and Ogg/Vorbis errors are real damage.
PAYLOAD_CONTAINERS = frozenset({"wav", "aiff", "caf"})
#: A stream that decodes to less than this fraction of its declared duration is damaged.
MIN_DECODED_FRACTION = 0.98

_NOT_AUDIO_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\x7fELF", "an executable"),
    (b"MZ", "an executable"),
    (b"MThd", "a MIDI file (notes, not sound)"),
)


@dataclass(frozen=True)
class DecodeLimits:
    """Bounds applied while decoding.

    Attributes:
        max_duration_s: longest accepted recording, seconds.
        timeout_s: wall-clock budget for decoding, seconds.
        max_channels: most channels accepted.
        min_sample_rate: lowest plausible sampling rate, Hz.
        max_sample_rate: highest plausible sampling rate, Hz.
    """

    max_duration_s: float = 600.0
    timeout_s: float = 30.0
    max_channels: int = 64
    min_sample_rate: int = 1_000
    max_sample_rate: int = 768_000


def sniff_format(data: bytes) -> str | None:
    """Name the container from its leading bytes, or ``None`` when no signature matches.

    Raises:
        UnsupportedFormat: the bytes carry the signature of a known non-audio file type.
    """
    head = data[:64]
    for magic, what in _NOT_AUDIO_MAGIC:
        if head.startswith(magic):
            raise UnsupportedFormat(
                f"The upload looks like {what}, not audio. Send WAV, FLAC, OGG, MP3, M4A/AAC or "
                "WebM/Opus."
            )
    if head[:4] in (b"RIFF", b"RF64", b"BW64") and head[8:12] == b"WAVE":
        return "wav"
    if head.startswith(b"fLaC"):
        return "flac"
    if head.startswith(b"OggS"):
        return "opus" if b"OpusHead" in data[:512] else "ogg"
    if head.startswith(b"FORM") and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if head.startswith(b".snd"):
        return "au"
    if head.startswith(b"caff"):
        return "caf"
    if head[4:8] == b"ftyp":
        return "m4a"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "webm"
    if head.startswith(b"#!AMR"):
        return "amr"
    if head.startswith(b"wvpk"):
        return "wavpack"
    if head.startswith(b"0&\xb2u\x8ef\xcf\x11"):
        return "asf"
    if head.startswith(b"ID3"):
        return "mp3"
    if len(head) >= 2 and head[0] == 0xFF and (head[1] & 0xE0) == 0xE0:
        return "aac" if (head[1] & 0x06) == 0 else "mp3"
    return None


def decode(data: bytes, limits: DecodeLimits | None = None) -> tuple[Audio, InputInfo]:
    """Decode an uploaded recording.

    Args:
        data: the file's bytes.
        limits: bounds on duration, channels, sampling rate and decoding time.

    Returns:
        ``(audio, info)``: samples as a float32 CPU tensor of shape ``(channel, time)`` at the
        native rate, and what the input was.

    Raises:
        EmptyInput, UnsupportedFormat, CorruptAudio, InvalidAudioHeader, NoAudio, AudioTooLong,
        DecodeTimeout: each with a detail that says what was wrong.
    """
    limits = limits or DecodeLimits()
    if not data:
        raise EmptyInput("The upload is empty (0 bytes). Send the recording's bytes.")
    deadline = time.monotonic() + limits.timeout_s
    fmt = sniff_format(data)
    if fmt == "wav":
        _check_wav_header(data, limits)
    if fmt in SOUNDFILE_FORMATS:
        try:
            samples, rate, codec = _decode_soundfile(data, fmt, limits)
        except CorruptAudio as soundfile_error:
            if fmt not in PAYLOAD_CONTAINERS:
                raise
            # libsndfile does not know every payload a known container can carry (MP3 in WAV,
            # exotic ADPCM): FFmpeg gets a chance before the upload is called corrupt.
            try:
                samples, rate, codec, fmt = _decode_pyav(data, fmt, limits, deadline)
            except CorruptAudio:
                raise soundfile_error from None
    else:
        samples, rate, codec, fmt = _decode_pyav(data, fmt, limits, deadline)
    if samples.shape[1] == 0:
        raise NoAudio("The file decodes to zero samples. Send a recording with sound in it.")
    if not np.isfinite(samples).all():
        raise CorruptAudio("The file holds NaN or infinite sample values.")
    audio = Audio(torch.from_numpy(samples), rate)
    info = InputInfo(
        format=fmt,
        codec=codec,
        sample_rate=rate,
        channels=audio.num_channels,
        duration_s=round(audio.duration_s, 6),
    )
    return audio, info


def _check_limits(rate: int, channels: int, frames: int | float, limits: DecodeLimits) -> None:
    if not limits.min_sample_rate <= rate <= limits.max_sample_rate:
        raise InvalidAudioHeader(
            f"The header claims a sampling rate of {rate} Hz; accepted rates are "
            f"{limits.min_sample_rate}–{limits.max_sample_rate} Hz."
        )
    if not 1 <= channels <= limits.max_channels:
        raise InvalidAudioHeader(
            f"The header claims {channels} channels; accepted are 1–{limits.max_channels}."
        )
    duration = frames / rate
    if duration > limits.max_duration_s:
        raise AudioTooLong(
            f"The recording lasts {duration:.1f} s; the limit is {limits.max_duration_s:g} s. "
            "Split it, or submit it as a job.",
            duration_s=round(duration, 3),
            max_duration_s=limits.max_duration_s,
        )


def _check_wav_header(data: bytes, limits: DecodeLimits) -> None:
    """Validate a RIFF/WAVE header by hand, so impossible values get a precise message."""
    pos, fmt_seen = 12, False
    while pos + 8 <= len(data):
        chunk_id, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body = pos + 8
        if chunk_id == b"fmt ":
            if size < 16 or body + 16 > len(data):
                raise CorruptAudio("The WAV 'fmt ' chunk is shorter than 16 bytes.")
            _tag, channels, rate = struct.unpack_from("<HHI", data, body)
            bits = struct.unpack_from("<H", data, body + 14)[0]
            if bits == 0 or bits > 64:
                raise InvalidAudioHeader(f"The WAV header claims {bits} bits per sample.")
            _check_limits(rate, channels, 0, limits)
            fmt_seen = True
        elif chunk_id == b"data":
            if not fmt_seen:
                raise CorruptAudio("The WAV file has a 'data' chunk before its 'fmt ' chunk.")
            available = len(data) - body
            # 0 and 0xFFFFFFFF are the placeholders streaming recorders write for "unknown".
            if size not in (0, 0xFFFFFFFF) and size > available and data[:4] == b"RIFF":
                raise CorruptAudio(
                    f"The WAV file is truncated: its header declares {size} bytes of samples but "
                    f"only {available} are present. Upload the complete file."
                )
            return
        pos = body + size + (size & 1)
    if not fmt_seen:
        raise CorruptAudio("The WAV file has no 'fmt ' chunk.")
    raise NoAudio("The WAV file has no 'data' chunk.")


def _decode_soundfile(data: bytes, fmt: str, limits: DecodeLimits) -> tuple[np.ndarray, int, str]:
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            _check_limits(f.samplerate, f.channels, f.frames, limits)
            expected = f.frames
            codec = "flac" if fmt == "flac" else f.subtype.lower()
            if f.subtype == "PCM_16":  # libsndfile's own int16 → float conversion is slower
                pcm = f.read(dtype="int16", always_2d=True)
                samples = np.multiply(pcm.T, np.float32(1 / 32768), dtype=np.float32, order="C")
            else:
                samples = np.ascontiguousarray(f.read(dtype="float32", always_2d=True).T)
            rate = f.samplerate
    except sf.LibsndfileError as exc:
        reason = exc.error_string.rstrip(". ")
        raise CorruptAudio(f"The {fmt.upper()} file cannot be decoded: {reason}.") from exc
    except (RuntimeError, ValueError, struct.error) as exc:
        raise CorruptAudio(f"The {fmt.upper()} file cannot be decoded.") from exc
    if fmt in ("flac", "ogg") and 0 < expected and samples.shape[1] < expected:
        raise CorruptAudio(
            f"The {fmt.upper()} file is truncated: {samples.shape[1]} of {expected} frames decode."
        )
    return samples, rate, codec


def _decode_pyav(
    data: bytes, fmt: str | None, limits: DecodeLimits, deadline: float
) -> tuple[np.ndarray, int, str, str]:
    import av  # FFmpeg inside the wheel; imported lazily, the soundfile path does not need it

    try:
        container = av.open(io.BytesIO(data), mode="r")
    except (av.FFmpegError, ValueError, UnicodeDecodeError) as exc:
        if fmt is None:
            raise UnsupportedFormat(
                "The bytes are not a recognised audio format. Send WAV, FLAC, OGG, MP3, M4A/AAC "
                "or WebM/Opus."
            ) from exc
        raise CorruptAudio(f"The {fmt.upper()} file cannot be opened: {exc}.") from exc
    with container:
        streams = container.streams.audio
        if not streams:
            if fmt is None:
                raise UnsupportedFormat(
                    "The bytes are not audio. Send WAV, FLAC, OGG, MP3, M4A/AAC or WebM/Opus."
                )
            raise NoAudio(f"The {fmt.upper()} container holds no audio stream.")
        stream = streams[0]
        ctx = stream.codec_context
        rate = int(ctx.sample_rate or 0)
        channels = int(ctx.channels or 0)
        claimed_s = float(container.duration / 1e6) if container.duration else 0.0
        _check_limits(rate, channels, claimed_s * rate, limits)
        max_frames = int(limits.max_duration_s * rate)
        declared = (
            round(float(stream.duration * stream.time_base) * rate)
            if stream.duration and stream.time_base
            else None
        )
        resampler = av.AudioResampler(format="fltp", layout=stream.layout.name, rate=rate)
        chunks: list[np.ndarray] = []
        total = 0
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(cast("av.AudioFrame", frame)):
                    chunk = out.to_ndarray()
                    chunks.append(chunk)
                    total += chunk.shape[1]
                if total > max_frames:
                    _check_limits(rate, channels, total, limits)
                if time.monotonic() > deadline:
                    raise DecodeTimeout(
                        f"Decoding did not finish within {limits.timeout_s:g} s. The file may be "
                        "damaged or built to be slow to decode."
                    )
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray())
        except av.FFmpegError as exc:
            if not chunks:
                raise CorruptAudio(
                    f"The {(fmt or 'audio').upper()} stream cannot be decoded: {exc}."
                ) from exc
            raise CorruptAudio(
                f"The {(fmt or 'audio').upper()} stream is damaged after "
                f"{total / rate:.2f} s of audio: {exc}. Upload the complete file."
            ) from exc
        codec = ctx.name
    if fmt is None:
        fmt = container.format.name.split(",")[0]
    samples = np.concatenate(chunks, axis=1) if chunks else np.zeros((channels, 0), np.float32)
    expected = declared if declared is not None else round(claimed_s * rate)
    if expected and samples.shape[1] < MIN_DECODED_FRACTION * expected - MAX_CODEC_PADDING:
        raise CorruptAudio(
            f"The {fmt.upper()} stream is damaged: {samples.shape[1] / rate:.2f} s of its "
            f"{expected / rate:.2f} s decode. Upload the complete, undamaged file."
        )
    if declared is not None and 0 < samples.shape[1] - declared <= MAX_CODEC_PADDING:
        # Encoders pad the last frame (AAC: up to 1023 samples); the container's duration says
        # where the signal really ends.
        samples = samples[:, :declared]
    return np.ascontiguousarray(samples, dtype=np.float32), rate, codec, fmt
