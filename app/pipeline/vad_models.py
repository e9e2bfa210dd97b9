"""The model backends of voice activity: the Silero VAD and the WebRTC VAD.

Both give a speech probability per frame of the pipeline's grid (frame ``t`` centred at sample
``t * hop_length``) for :func:`~app.pipeline.segment.vad`'s post-processing, and prepare their
input a bounded stretch at a time (resampled and converted per block,
:func:`resample_stretch`), so memory beyond the signal does not grow
with its length, apart from a few numbers per frame.
"""

from __future__ import annotations

import threading
from functools import lru_cache

import torch

from app.pipeline.normalize import resample_stretch

# --------------------------------------------------------------------------------------------
# Backend "silero"
# --------------------------------------------------------------------------------------------
#: Silero's chunk, samples at 16 kHz.
SILERO_CHUNK = 512
SILERO_RATE = 16000
#: Chunks each parallel stream runs before its own part (≈ 1 s), and the shortest own part
#: (≈ 8 s): long signals are cut into parallel streams, one batch row each.
_SILERO_WARMUP = 32
_SILERO_MIN_STREAM = 256
_SILERO_MAX_STREAMS = 64
#: Chunk steps whose audio is prepared at once (bounds the memory: ≤ 64 streams × 32 chunks
#: × 512 samples, 4 MiB).
_SILERO_BLOCK_STEPS = 32
_SILERO_LOCK = threading.Lock()


@lru_cache(maxsize=1)
def silero_model() -> torch.jit.ScriptModule:
    """The Silero VAD TorchScript model shipped in the ``silero-vad`` wheel (loaded once).

    Importing ``silero_vad`` sets torch's thread count to 1; the previous count is restored.
    """
    threads = torch.get_num_threads()
    try:
        import silero_vad

        model = silero_vad.load_silero_vad(onnx=False)
    finally:
        torch.set_num_threads(threads)
    model.eval()
    return model


def silero_speech_probability(
    x: torch.Tensor, *, sample_rate: int, hop_length: int
) -> torch.Tensor:
    """Silero VAD's speech probability, interpolated onto the frame grid.

    The signal is resampled to 16 kHz and cut into 512-sample chunks (the last one zero-padded);
    chunk ``j`` covers ``[512 j, 512 j + 512)`` and its probability is placed at its centre.
    The model is recurrent, so it steps through the chunks in order; to batch it, a signal of
    more than 16 s is split into up to 64 parallel streams (one batch row each, ≥ 8 s apiece),
    each of which first runs over the 1 s of audio before its part so its state is warm. The
    model runs on the CPU (one call per chunk step, under a lock: it keeps state). The audio
    of :data:`_SILERO_BLOCK_STEPS` steps is resampled at a time (:func:`resample_stretch`), so
    memory beyond the signal is bounded plus one probability per chunk and a few numbers per
    frame.

    Args:
        x: signal, shape ``(time,)``, full scale = 1.0.
        sample_rate: Hz.
        hop_length: samples between frames.

    Returns:
        Tensor of shape ``(1 + time // hop_length,)`` on ``x``'s device, in ``[0, 1]``.
    """
    n_frames = 1 + x.shape[-1] // hop_length
    length = -(-x.shape[-1] * SILERO_RATE // sample_rate)  # samples at 16 kHz
    n_chunks = max(1, -(-length // SILERO_CHUNK))
    streams = max(1, min(_SILERO_MAX_STREAMS, n_chunks // _SILERO_MIN_STREAM))
    own = -(-n_chunks // streams)
    warm = _SILERO_WARMUP if streams > 1 else 0
    first = torch.arange(streams) * own - warm
    first[0] = 0  # the first stream starts at the beginning, with a cold state like Silero's
    model = silero_model()
    out = torch.empty(streams, own + warm)
    with _SILERO_LOCK, torch.inference_mode():
        model.reset_states()
        for step in range(0, own + warm, _SILERO_BLOCK_STEPS):
            count = min(_SILERO_BLOCK_STEPS, own + warm - step)
            # Each stream's next chunks (zero before the signal and after its last chunk).
            audio = torch.stack(
                [
                    resample_stretch(
                        x,
                        sample_rate=sample_rate,
                        rate=SILERO_RATE,
                        lo=(start + step) * SILERO_CHUNK,
                        hi=(start + step + count) * SILERO_CHUNK,
                    ).view(count, SILERO_CHUNK)
                    for start in first.tolist()
                ],
                dim=1,
            )  # (step, stream, chunk)
            for j in range(count):
                out[:, step + j] = model(audio[j], SILERO_RATE).reshape(-1)
        model.reset_states()
    offset = torch.full((streams,), warm)
    offset[0] = 0
    take = offset[:, None] + torch.arange(own)[None, :]
    probs = out.gather(1, take).reshape(-1)[:n_chunks]
    # Chunk centres → frame centres (linear interpolation, constant beyond the ends).
    centre = torch.arange(n_frames, dtype=torch.float64) * (hop_length * SILERO_RATE / sample_rate)
    position = ((centre - SILERO_CHUNK / 2) / SILERO_CHUNK).clamp(0, n_chunks - 1)
    lo = position.floor().long()
    hi = (lo + 1).clamp(max=n_chunks - 1)
    frac = (position - lo).float()
    prob = probs[lo] * (1 - frac) + probs[hi] * frac
    return prob.clamp(0.0, 1.0).to(x.device)


# --------------------------------------------------------------------------------------------
# Backend "webrtc"
# --------------------------------------------------------------------------------------------
_WEBRTC_RATES = (8000, 16000, 32000, 48000)
#: WebRTC frames converted to 16-bit PCM at a time (≤ 7.7 s of audio).
_WEBRTC_BLOCK_FRAMES = 256


def webrtc_speech_probability(
    x: torch.Tensor,
    *,
    sample_rate: int,
    hop_length: int,
    mode: int = 2,
    frame_ms: int = 30,
) -> torch.Tensor:
    """WebRTC VAD decisions (0 or 1) on the frame grid.

    The signal is converted to 16-bit PCM (resampled to 16 kHz unless the rate is 8, 16, 32 or
    48 kHz) and cut into ``frame_ms`` frames (the last one zero-padded); each grid frame takes
    the decision of the WebRTC frame holding its centre. The library decides one frame per call
    (one detector, so its state carries from frame to frame); :data:`_WEBRTC_BLOCK_FRAMES`
    frames are converted at a time (:func:`resample_stretch`), so memory beyond the signal is
    bounded plus a few numbers per frame.

    Args:
        x: signal, shape ``(time,)``, full scale = 1.0.
        sample_rate: Hz.
        hop_length: samples between frames.
        mode: aggressiveness 0–3 (3 rejects the most non-speech). Default 2.
        frame_ms: 10, 20 or 30.

    Returns:
        Tensor of shape ``(1 + time // hop_length,)`` on ``x``'s device, values 0.0 or 1.0.
    """
    import webrtcvad

    n_frames = 1 + x.shape[-1] // hop_length
    rate = sample_rate if sample_rate in _WEBRTC_RATES else 16000
    length = rate * frame_ms // 1000  # samples per WebRTC frame
    samples = -(-x.shape[-1] * rate // sample_rate)  # at `rate`
    count = max(1, -(-samples // length))
    detector = webrtcvad.Vad(mode)
    decisions = torch.empty(count)
    for first in range(0, count, _WEBRTC_BLOCK_FRAMES):
        frames = min(_WEBRTC_BLOCK_FRAMES, count - first)
        y = resample_stretch(
            x, sample_rate=sample_rate, rate=rate, lo=first * length, hi=(first + frames) * length
        )
        pcm = (y.clamp(-1, 1) * 32767).round().to(torch.int16).view(frames, length).numpy()
        decisions[first : first + frames] = torch.tensor(
            [detector.is_speech(frame.tobytes(), rate) for frame in pcm], dtype=torch.float32
        )
    centre = torch.arange(n_frames, dtype=torch.float64) * (hop_length * rate / sample_rate)
    index = torch.div(centre, length, rounding_mode="floor").long().clamp(0, count - 1)
    return decisions[index].to(x.device)
