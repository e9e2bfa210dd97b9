"""Encode test signals into compressed formats with PyAV (FFmpeg inside the wheel).

WAV, FLAC and OGG/Vorbis are written with soundfile instead (the wheel's FFmpeg has no Vorbis
encoder).
"""

from __future__ import annotations

import io

import av
import numpy as np

#: format → (PyAV muxer, encoder, sampling rate the encoder runs at; None: the input's)
FORMATS: dict[str, tuple[str, str, int | None]] = {
    "mp3": ("mp3", "libmp3lame", None),
    "m4a": ("ipod", "aac", None),
    "webm": ("webm", "libopus", 48000),
    "opus": ("ogg", "libopus", 48000),
}


def encode(samples: np.ndarray, sample_rate: int, fmt: str, bit_rate: int = 96_000) -> bytes:
    """Encode float samples, shape ``(time,)`` or ``(channel, time)``, as ``fmt``.

    Frames carry explicit timestamps so that muxers write the encoder delay (AAC priming) into the
    container, as real encoders do.
    """
    muxer, codec, codec_rate = FORMATS[fmt]
    planar = np.atleast_2d(samples).astype(np.float32)
    layout = "mono" if planar.shape[0] == 1 else "stereo"
    rate = codec_rate or sample_rate
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=muxer) as container:
        stream = container.add_stream(codec, rate=rate, layout=layout)
        stream.bit_rate = bit_rate
        context = stream.codec_context
        source = av.AudioFrame.from_ndarray(planar, format="fltp", layout=layout)
        source.sample_rate, source.pts = sample_rate, 0
        resampler = av.AudioResampler(format=context.format.name, layout=layout, rate=rate)
        converted = resampler.resample(source) + resampler.resample(None)
        data = np.concatenate([f.to_ndarray() for f in converted], axis=-1)
        step = context.frame_size or 1024
        for start in range(0, data.shape[-1], step):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(data[..., start : start + step]),
                format=context.format.name,
                layout=layout,
            )
            frame.sample_rate, frame.pts = rate, start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()
