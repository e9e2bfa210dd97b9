"""Speaker diarization (who spoke when) and overlapped-speech detection.

Diarization, in four steps, all on a 10 ms frame grid at 16 kHz:

1. **Windows within speech.** The speech frames (the caller's speech mask, or the whole signal)
   are cut at pauses — runs of at least ``min_pause_s`` of frames quieter than a quarter of the way
   from the signal's noise floor (5th percentile of frame level, dB) to its speech peak (95th
   percentile) — into *units*, and windows of ``window_s`` (hop ``step_s``) are placed inside each
   unit; a unit shorter than a window (but ≥ 0.4 s) is one window by itself. Windows never span a
   pause, where speaker changes mostly happen, so few of them mix two voices.
2. **Speaker embeddings.** Each window's 40-band mel power spectrogram (25 ms Hann, 10 ms hop,
   level normalized to −30 dBFS over the speech) goes through resemblyzer's pretrained speaker
   encoder (GE2E d-vectors: a 3-layer LSTM, 256 dimensions, L2-normalized; the weights ship in
   the ``resemblyzer`` wheel, nothing is downloaded). The encoder is built once per device
   (:class:`SpeakerEncoder`) and runs on the input's device, in batches.
3. **Clustering.** Centroid-linkage agglomerative clustering with the cosine similarity of the
   clusters' mean embeddings: the most similar pair is merged until no pair is more similar than
   ``threshold``. A cluster counts as a speaker when its windows cover at least ``min_speaker_s``
   of speech; smaller clusters (turn fragments, mixed windows) join the speaker whose centroid is
   nearest. With ``num_speakers``, merging stops at the step with exactly that many speakers
   nearest to where the threshold would stop it (so telling the number the threshold finds
   changes nothing); ``max_speakers`` caps the estimate the same way. One pass of
   nearest-centroid reassignment refines the centroids.
4. **Labelling.** Every speech frame gets the speaker whose centroid is most similar to the
   Hann-weighted average of the embeddings of the windows covering it (frames no window covers
   take the nearest covered frame's scores), then a mode filter over ``smooth_s`` of speech
   removes label flicker. Turns change where the two speakers' scores cross, which places them to
   about 0.1–0.25 s.

Overlapped speech (two or more voices at once) is scored per frame from two cues, combined by a
logistic function whose weights (:data:`OVERLAP_WEIGHTS`) were fitted on mixtures of two
LibriSpeech speakers:

* **Two-pitch cancellation** (de Cheveigné's joint cancellation, 1993): the normalized
  autocorrelation ``r(τ)`` of a 40 ms frame (8 kHz, magnitude spectrum 60–3000 Hz) gives the
  power a comb filter at lag ``τ`` leaves, ``1 − r(τ)``, and a cascade of two comb filters at lags
  ``τ₁, τ₂`` leaves ``1 − r(τ₁) − r(τ₂) + ½·(r(τ₁ + τ₂) + r(|τ₁ − τ₂|))``. One voice is cancelled
  by one comb; two voices with different F0 need two. The cue is the power the second comb removes,
  averaged over 0.5 s, minus its median over the speaker's own frames.
* **Speaker ambiguity** (with two or more speakers found): the local voice is nearly as similar to
  the second most similar speaker as to the most similar one.

The ambiguity cue also rises where one speaker follows another without a pause (the embedding
windows then hold both voices, one after the other), so such a change can be flagged as a short
overlap; the two-pitch cue alone is too weak on real speech to tell the two apart.

Frames are centred like every other feature: frame ``t`` of the caller's grid is centred on
sample ``t * hop_length`` at ``sample_rate``.

Memory: the 16 kHz and 8 kHz signals are never made whole. Frame levels and the two-pitch cue
are computed a block of :data:`_BLOCK_FRAMES` frames at a time, and each batch of windows' mel
frames from the input samples it covers, each stretch resampled from the input samples it needs
(:func:`~app.pipeline.normalize.resample_stretch`, the same values as a whole-signal resampling).
Beyond the signal, a call holds a bounded working set (one batch, one block: about 40 MB) plus
a few numbers per 10 ms frame and one embedding per window.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F

from app.errors import InvalidOptions
from app.pipeline.energy_vad import centred_frames
from app.pipeline.features.frames import FrameSpec
from app.pipeline.features.spectral import mel_filterbank
from app.pipeline.normalize import resample_stretch

#: The speaker encoder's sample rate, Hz; its mel frames: 25 ms Hann window, 10 ms hop, 40 bands
#: (librosa's ``melspectrogram`` defaults otherwise, power, Slaney filters).
ENCODER_RATE = 16000
_FRAMES = FrameSpec(ENCODER_RATE, 400, 400, 160, pad_mode="constant")
_FRAME_RATE = 100.0
_N_MELS = 40
#: RMS level of the encoder's training audio, dBFS.
_ENCODER_LEVEL_DBFS = -30.0
#: Embedding size of the encoder.
EMBEDDING_SIZE = 256
#: Windows per encoder batch (bounds the memory of long recordings: the encoder's LSTM takes
#: about 0.5 MB per window).
_BATCH_WINDOWS = 64
#: Frames analysed at a time (20.48 s at 10 ms): the 16 kHz and 8 kHz signals are resampled
#: a block of frames at a time, so memory beyond the signal is bounded plus a few numbers per
#: frame and one embedding per window.
_BLOCK_FRAMES = 2048
#: Rate of the two-pitch analysis, Hz.
_PITCH_RATE = 8000
#: Shortest unit that gets a window of its own, frames (0.4 s).
_MIN_WINDOW_FRAMES = 40
#: Above this many windows, the clustering runs on an evenly strided subset (its similarity
#: matrix is windows², and each merge scans it); every window is then assigned to a centroid.
_MAX_CLUSTER_WINDOWS = 800
#: Weights of the overlap logit (see :func:`overlap_probability`), with two or more speakers …
OVERLAP_WEIGHTS = {"bias": 2.1, "ambiguity": 4.6, "pitch": 15.0}
#: … and with one (no speaker-ambiguity cue).
OVERLAP_WEIGHTS_ONE_SPEAKER = {"bias": -1.5, "pitch": 18.0}


# --------------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpeakerTurn:
    """A maximal run of speech frames of one speaker: ``[start_s, end_s)``, seconds."""

    start_s: float
    end_s: float
    speaker: int


@dataclass(frozen=True)
class SpeakerSegment:
    """A piece of a speech segment with one speaker and one overlap state (seconds)."""

    start_s: float
    end_s: float
    speaker: int
    overlap: bool


@dataclass(frozen=True)
class Diarization:
    """Who spoke when, on the caller's frame grid (frame ``t`` centred at ``t * hop_length``).

    Attributes:
        speaker: speaker index per frame, int64, shape ``(frame,)``; ``-1`` outside speech.
            Speakers are numbered ``0 … num_speakers − 1`` in order of first appearance.
        second_speaker: in overlap frames, the other most likely speaker (int64, ``(frame,)``);
            ``-1`` elsewhere, and when only one speaker was found (overlap then rests on the
            two-pitch cue alone).
        scores: cosine similarity of the local voice (Hann-weighted mean of the embeddings of the
            windows around the frame) to each speaker's centroid, shape
            ``(num_speakers, frame)``, in ``[-1, 1]``; 0 outside speech.
        overlap_prob: probability-like overlapped-speech score in ``[0, 1]``, shape ``(frame,)``;
            0 outside speech.
        overlap: overlap decision per frame (``overlap_prob ≥ overlap_threshold``, regions
            shorter than ``min_overlap_s`` dropped), bool, ``(frame,)``.
        num_speakers: number of speakers found (or given); 0 when there is no speech.
        centroids: mean embedding of each speaker, L2-normalized, ``(num_speakers, 256)``.
        turns: the speaker turns, in time order.
        overlap_regions: ``(start_s, end_s)`` of each overlapped region, seconds.
        frame_rate_hz: frames per second of the tracks (``sample_rate / hop_length``).
    """

    speaker: torch.Tensor
    second_speaker: torch.Tensor
    scores: torch.Tensor
    overlap_prob: torch.Tensor
    overlap: torch.Tensor
    num_speakers: int
    centroids: torch.Tensor
    turns: list[SpeakerTurn]
    overlap_regions: list[tuple[float, float]]
    frame_rate_hz: float


# --------------------------------------------------------------------------------------------------
# The speaker encoder
# --------------------------------------------------------------------------------------------------


class SpeakerEncoder:
    """Resemblyzer's pretrained speaker encoder on one device (built once per device).

    The weights (``pretrained.pt``) ship inside the ``resemblyzer`` wheel; nothing is downloaded.
    """

    def __init__(self, device: torch.device) -> None:
        from resemblyzer import VoiceEncoder

        self.device = device
        self.model = VoiceEncoder(device, verbose=False).eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)

    @staticmethod
    def for_device(device: torch.device | str) -> SpeakerEncoder:
        """The encoder on ``device``, built on first use and cached."""
        return _encoder(torch.device(device))

    @torch.inference_mode()
    def embed(self, mels: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """d-vectors of a batch of mel spectrograms.

        Args:
            mels: mel power spectrograms (not log), shape ``(batch, frame, 40)``, 10 ms frames
                at 16 kHz, level-normalized (−30 dBFS RMS).
            lengths: valid frames of each item, shape ``(batch,)`` (default: all ``frame``);
                the rest is padding.

        Returns:
            L2-normalized embeddings, float32, shape ``(batch, 256)``, on the input's device.
        """
        model = self.model
        x = mels.to(device=self.device, dtype=torch.float32)
        if lengths is None or bool((lengths == x.shape[1]).all()):
            _, (hidden, _) = model.lstm(x)
        else:
            packed = torch.nn.utils.rnn.pack_padded_sequence(
                x, lengths.cpu(), batch_first=True, enforce_sorted=False
            )
            _, (hidden, _) = model.lstm(packed)
        raw = model.relu(model.linear(hidden[-1]))
        return (raw / raw.norm(dim=1, keepdim=True).clamp_min(1e-12)).to(mels.device)


@lru_cache(maxsize=4)
def _encoder(device: torch.device) -> SpeakerEncoder:
    return SpeakerEncoder(device)


# --------------------------------------------------------------------------------------------------
# Diarization
# --------------------------------------------------------------------------------------------------


def diarize(
    samples: torch.Tensor,
    *,
    sample_rate: int,
    hop_length: int,
    speech: torch.Tensor | None = None,
    num_speakers: int | None = None,
    max_speakers: int = 8,
    threshold: float = 0.795,
    window_s: float = 1.5,
    step_s: float = 0.5,
    min_speaker_s: float = 2.0,
    min_pause_s: float = 0.15,
    smooth_s: float = 0.25,
    overlap_threshold: float = 0.5,
    min_overlap_s: float = 0.2,
    encoder: SpeakerEncoder | None = None,
) -> Diarization:
    """Label every speech frame with a speaker, and find overlapped speech.

    Args:
        samples: mono signal, shape ``(time,)``, full scale = 1.0, at ``sample_rate``.
        sample_rate: Hz (resampled to 16 kHz internally).
        hop_length: hop of the output frame grid, samples at ``sample_rate`` (the pipeline's
            10 ms grid: ``sample_rate // 100``).
        speech: speech mask on that grid, bool (or a probability, speech where ≥ 0.5), shape
            ``(1 + time // hop_length,)``, e.g. the voice activity detector's. Default: every
            frame is speech (pauses are still found, for placing windows).
        num_speakers: the number of speakers, when known (≥ 1); otherwise it is estimated.
        max_speakers: upper bound on the estimated number of speakers (≥ 1). Default 8.
        threshold: cosine similarity of two clusters' mean embeddings above which they are the
            same speaker, in ``(0, 1)``. Default 0.795 (the middle of the range, 0.78–0.81, that
            counted the speakers of every evaluation recording right).
        window_s: embedding window, seconds (0.5–4). Default 1.5.
        step_s: hop between windows, seconds (``≤ window_s``). Default 0.5.
        min_speaker_s: speech a cluster must cover to count as a speaker, seconds. Default 2.0.
        min_pause_s: shortest pause that separates two units of speech, seconds. Default 0.15.
        smooth_s: mode filter over the speaker labels, seconds of speech (0 = none).
            Default 0.25.
        overlap_threshold: overlap probability above which a frame is overlapped, in
            ``(0, 1)``. Default 0.5.
        min_overlap_s: shortest overlapped region kept, seconds. Default 0.2.
        encoder: the speaker encoder (default: the cached one on ``samples.device``).

    Returns:
        A :class:`Diarization` on the caller's grid (``1 + time // hop_length`` frames).

    Raises:
        InvalidOptions: a parameter is out of range, or ``speech`` has the wrong length.
    """
    _validate(
        samples=samples,
        sample_rate=sample_rate,
        hop_length=hop_length,
        num_speakers=num_speakers,
        max_speakers=max_speakers,
        threshold=threshold,
        window_s=window_s,
        step_s=step_s,
        durations={
            "min_speaker_s": min_speaker_s,
            "min_pause_s": min_pause_s,
            "smooth_s": smooth_s,
            "min_overlap_s": min_overlap_s,
        },
        overlap_threshold=overlap_threshold,
    )
    device = samples.device
    n_out = 1 + samples.shape[-1] // hop_length
    if speech is not None:
        if speech.shape != (n_out,):
            raise InvalidOptions(
                f"speech has shape {tuple(speech.shape)}, but the signal has {n_out} frames of "
                f"hop_length={hop_length} (expected shape ({n_out},))."
            )
        speech_out = speech >= 0.5 if speech.is_floating_point() else speech.bool()
    else:
        speech_out = torch.ones(n_out, dtype=torch.bool, device=device)

    if samples.shape[-1] < hop_length or not bool(speech_out.any()):
        return _empty(n_out, hop_length, sample_rate, device)
    # Our 10 ms frames at 16 kHz: the resampled signal has ceil(time · 16000 / sample_rate)
    # samples.
    n_in = 1 + -(-samples.shape[-1] * ENCODER_RATE // sample_rate) // _FRAMES.hop_length
    # Our frame j ↔ caller frame round(j · 0.01 s · frame rate) and back.
    to_in = _nearest_index(n_out, hop_length / sample_rate * _FRAME_RATE, n_in, device)
    to_out = _nearest_index(n_in, sample_rate / hop_length / _FRAME_RATE, n_out, device)
    speech_in = speech_out[to_out]

    level_db = _frame_levels_db(samples, sample_rate, n_in)
    units = _speech_units(level_db, speech_in, round(min_pause_s * _FRAME_RATE))
    windows = _windows(
        units,
        speech_in,
        width=round(window_s * _FRAME_RATE),
        step=max(1, round(step_s * _FRAME_RATE)),
    )
    if windows is None:  # no speech at all
        return _empty(n_out, hop_length, sample_rate, device)

    in_units = units if bool(units.any()) else speech_in
    mean_square = (10.0 ** (level_db[in_units] / 10.0)).mean().clamp_min(1e-12)
    gain = 10.0 ** (_ENCODER_LEVEL_DBFS / 10.0) / mean_square
    encoder = encoder or SpeakerEncoder.for_device(device)
    embeddings = _embed_windows(encoder, samples, sample_rate, windows, gain)

    _, centroids = _cluster(
        embeddings,
        owned=windows.owned,
        num_speakers=num_speakers,
        max_speakers=max_speakers,
        threshold=threshold,
        min_frames=min_speaker_s * _FRAME_RATE,
    )
    scores = _frame_scores(embeddings @ centroids.T, windows, speech_in)  # (frame, K)
    speaker_in = _smooth_labels(scores.argmax(dim=1), speech_in, round(smooth_s * _FRAME_RATE))
    # Number the speakers by first appearance.
    order = _first_appearance(speaker_in[speech_in], centroids.shape[0])
    centroids, scores = centroids[order], scores[:, order]
    speaker_in = torch.argsort(order)[speaker_in]

    cue = _two_pitch_frames(
        samples,
        sample_rate=sample_rate,
        step=_FRAMES.hop_length * _PITCH_RATE / ENCODER_RATE,
        count=n_in,
    )
    overlap_prob_in = _overlap_from_cue(
        cue,
        frame_rate=_FRAME_RATE,
        speaker=torch.where(speech_in, speaker_in, -1),
        scores=scores.T,
        centroids=centroids,
    )
    overlap_prob_in = torch.where(speech_in, overlap_prob_in, 0.0)

    # Back on the caller's grid.
    speaker = torch.where(speech_out, speaker_in[to_in], -1)
    scores_out = torch.where(speech_out, scores[to_in].T, 0.0)
    overlap_prob = torch.where(speech_out, overlap_prob_in[to_in], 0.0)
    overlap = _drop_short(
        overlap_prob >= overlap_threshold, min_overlap_s * sample_rate / hop_length
    )
    k = centroids.shape[0]
    if k >= 2:
        top2 = scores_out.topk(2, dim=0).indices
        second = torch.where(top2[0] == speaker, top2[1], top2[0])
        second_speaker = torch.where(overlap, second, -1)
    else:
        second_speaker = torch.full_like(speaker, -1)
    frame_s = hop_length / sample_rate
    return Diarization(
        speaker=speaker,
        second_speaker=second_speaker,
        scores=scores_out,
        overlap_prob=overlap_prob,
        overlap=overlap,
        num_speakers=k,
        centroids=centroids,
        turns=[SpeakerTurn(a * frame_s, b * frame_s, s) for a, b, s in _runs(speaker)],
        overlap_regions=[(a * frame_s, b * frame_s) for a, b, _ in _runs(overlap.long() - 1)],
        frame_rate_hz=sample_rate / hop_length,
    )


def speaker_segments(
    segments: Sequence[tuple[float, float]], diarization: Diarization
) -> list[SpeakerSegment]:
    """Split speech segments where the speaker or the overlap state changes.

    Args:
        segments: ``(start_s, end_s)`` of each speech segment, seconds (e.g. the voice activity
            detector's).
        diarization: the result of :func:`diarize` on the same signal.

    Returns:
        The pieces, in time order; a piece with no labelled frame inside keeps the speaker of the
        nearest labelled frame (``-1`` if there is none).
    """
    rate = diarization.frame_rate_hz
    speaker = diarization.speaker
    n = speaker.shape[0]
    labelled = torch.nonzero(speaker >= 0).flatten()
    out: list[SpeakerSegment] = []
    for start_s, end_s in segments:
        a = min(max(0, round(start_s * rate)), n)
        b = min(max(a, round(end_s * rate)), n)
        if b <= a or labelled.numel() == 0:
            nearest = -1
            if labelled.numel():
                j = labelled[(labelled - a).abs().argmin()]
                nearest = int(speaker[j])
            out.append(SpeakerSegment(start_s, end_s, nearest, False))
            continue
        piece = speaker[a:b].clone()
        if bool((piece < 0).any()):  # unlabelled frames take the nearest labelled one
            index = torch.arange(a, b, device=speaker.device)
            right = torch.searchsorted(labelled, index).clamp_max(labelled.numel() - 1)
            left = (right - 1).clamp_min(0)
            use_left = (index - labelled[left]).abs() <= (labelled[right] - index).abs()
            nearest_index = torch.where(use_left, labelled[left], labelled[right])
            piece = torch.where(piece >= 0, piece, speaker[nearest_index])
        code = piece * 2 + diarization.overlap[a:b].long()
        for s, e, value in _runs(code, keep_negative=True):
            out.append(
                SpeakerSegment(
                    max(start_s, (a + s) / rate),
                    min(end_s, (a + e) / rate),
                    int(value) // 2,
                    bool(value % 2),
                )
            )
    return out


# --------------------------------------------------------------------------------------------------
# Overlapped speech
# --------------------------------------------------------------------------------------------------


def overlap_probability(
    samples: torch.Tensor,
    *,
    sample_rate: int,
    hop_length: int,
    speaker: torch.Tensor | None = None,
    scores: torch.Tensor | None = None,
    centroids: torch.Tensor | None = None,
    f_min: float = 60.0,
    f_max: float = 400.0,
    smooth_s: float = 0.5,
) -> torch.Tensor:
    """Probability-like score of overlapped speech (two or more voices at once) per frame.

    The logit is a weighted sum (:data:`OVERLAP_WEIGHTS`) of

    * the two-pitch cue (:func:`two_pitch_cue`), averaged over ``smooth_s`` and minus its median
      over the frames of the speaker labelled there (over all frames without ``speaker``):
      some voices (low, creaky) leave more for a second comb than others;
    * with ``scores`` of two or more speakers: the speaker ambiguity
      ``(score₂ − score₁) / (1 − cos(centroid₁, centroid₂))`` of the two most similar speakers,
      about −1 inside one speaker's turn and towards 0 where both talk.

    The weights were fitted (logistic regression) on mixtures of two LibriSpeech speakers with
    30 % overlapped speech; ``overlap_threshold`` in :func:`diarize` trades recall for precision.
    Without ``scores`` the two-pitch cue decides alone, which is weak on real speech (frame F1
    0.2–0.35 on those mixtures at a 0.3 threshold, against 0.5–0.8 with both cues): run
    :func:`diarize` for a usable overlap track.

    Args:
        samples: mono signal, shape ``(time,)``, full scale = 1.0.
        sample_rate: Hz (analysed at 8 kHz).
        hop_length: hop of the output frames, samples at ``sample_rate``.
        speaker: speaker label per frame, int64, shape ``(1 + time // hop_length,)`` (``-1``
            outside speech), e.g. :attr:`Diarization.speaker`.
        scores: similarity of the local voice to each speaker, shape ``(K, frame)``
            (:attr:`Diarization.scores`); used when ``K ≥ 2``, with ``centroids``.
        centroids: the speakers' L2-normalized centroids, shape ``(K, D)``.
        f_min: lowest F0 of either voice, Hz. Default 60.
        f_max: highest F0 of either voice, Hz. Default 400.
        smooth_s: moving average of the two-pitch cue, seconds. Default 0.5.

    Returns:
        Tensor of shape ``(1 + time // hop_length,)`` in ``[0, 1]``, float32.

    Raises:
        InvalidOptions: a parameter is out of range or a track has the wrong length.
    """
    if sample_rate <= 0 or hop_length < 1:
        raise InvalidOptions(
            f"sample_rate={sample_rate} Hz and hop_length={hop_length} must be positive."
        )
    if not 0 < f_min < f_max <= 1000:
        raise InvalidOptions(
            f"f_min={f_min} Hz and f_max={f_max} Hz need 0 < f_min < f_max ≤ 1000."
        )
    if smooth_s < 0:
        raise InvalidOptions(f"smooth_s={smooth_s} s must be ≥ 0.")
    n_out = 1 + samples.shape[-1] // hop_length
    for name, track in (("speaker", speaker), ("scores", scores)):
        if track is not None and track.shape[-1] != n_out:
            raise InvalidOptions(
                f"{name} has {track.shape[-1]} frames; the signal has {n_out} frames of "
                f"hop_length={hop_length}."
            )
    cue = two_pitch_cue(
        samples, sample_rate=sample_rate, hop_length=hop_length, f_min=f_min, f_max=f_max
    )
    return _overlap_from_cue(
        cue,
        frame_rate=sample_rate / hop_length,
        speaker=speaker,
        scores=scores,
        centroids=centroids,
        smooth_s=smooth_s,
    )


def _overlap_from_cue(
    cue: torch.Tensor,
    *,
    frame_rate: float,
    speaker: torch.Tensor | None,
    scores: torch.Tensor | None,
    centroids: torch.Tensor | None,
    smooth_s: float = 0.5,
) -> torch.Tensor:
    """:func:`overlap_probability` from the two-pitch cue ``(frame,)`` at ``frame_rate`` Hz and the
    tracks on the same frames (``speaker`` ``(frame,)``, ``scores`` ``(K, frame)``); shape
    ``(frame,)``, in ``[0, 1]``."""
    cue = _moving_average(cue, max(1, round(smooth_s * frame_rate)))
    labels = speaker if speaker is not None else torch.zeros_like(cue, dtype=torch.long)
    baseline = torch.zeros_like(cue)
    for k in range(int(labels.max()) + 1 if labels.numel() else 0):  # a few speakers
        mine = labels == k
        if bool(mine.any()):
            baseline = torch.where(mine, cue[mine].median(), baseline)
    pitch = cue - baseline
    two = scores is not None and centroids is not None and scores.shape[0] >= 2
    if scores is not None and centroids is not None and two:
        top = scores.float().topk(2, dim=0)
        similarity = (centroids.float() @ centroids.float().T)[top.indices[0], top.indices[1]]
        ambiguity = (top.values[1] - top.values[0]) / (1.0 - similarity).clamp_min(0.05)
        w = OVERLAP_WEIGHTS
        logit = w["bias"] + w["ambiguity"] * ambiguity + w["pitch"] * pitch
    else:
        w = OVERLAP_WEIGHTS_ONE_SPEAKER
        logit = w["bias"] + w["pitch"] * pitch
    return torch.sigmoid(logit)


def two_pitch_cue(
    samples: torch.Tensor,
    *,
    sample_rate: int,
    hop_length: int,
    f_min: float = 60.0,
    f_max: float = 400.0,
    candidates: int = 6,
) -> torch.Tensor:
    """Power that a second comb filter removes after the best single one (joint cancellation).

    Each 40 ms frame (at 8 kHz, centred on sample ``t * hop_length``) has its normalized
    autocorrelation ``r`` computed from the magnitude spectrum (60–3000 Hz; magnitude rather than
    power, so a louder voice does not hide a softer one). A comb filter at lag ``τ`` leaves
    ``1 − r(τ)`` of it; two in cascade leave
    ``1 − r(τ₁) − r(τ₂) + ½·(r(τ₁ + τ₂) + r(|τ₁ − τ₂|))``. Lags are searched among the
    ``candidates`` strongest autocorrelation peaks between ``1/f_max`` and ``1/f_min``; pairs
    whose lags are within 6 % of an integer ratio (octaves, the same voice) are not pairs.

    Args:
        samples: mono signal, shape ``(time,)``.
        sample_rate: Hz.
        hop_length: hop, samples at ``sample_rate``.
        f_min: lowest F0, Hz. Default 60.
        f_max: highest F0, Hz. Default 400.
        candidates: autocorrelation peaks searched. Default 6.

    Returns:
        Tensor of shape ``(1 + time // hop_length,)``, float32, in ``[0, 1]``: about 0 for one
        steady voice, up to ~0.3–0.5 for two voices of similar level; noise (and unvoiced speech)
        scores ~0.2 too (some pair of random lags fits it better than one lag), which is why
        :func:`overlap_probability` subtracts each speaker's median.
    """
    return _two_pitch_frames(
        samples,
        sample_rate=sample_rate,
        step=hop_length * _PITCH_RATE / sample_rate,
        count=1 + samples.shape[-1] // hop_length,
        f_min=f_min,
        f_max=f_max,
        candidates=candidates,
    )


def _two_pitch_frames(
    samples: torch.Tensor,
    *,
    sample_rate: int,
    step: float,
    count: int,
    f_min: float = 60.0,
    f_max: float = 400.0,
    candidates: int = 6,
) -> torch.Tensor:
    """:func:`two_pitch_cue` of ``count`` frames centred on samples ``round(t · step)`` of the
    signal at 8 kHz, shape ``(count,)``. The 8 kHz signal is resampled a block of
    :data:`_BLOCK_FRAMES` frames at a time (:func:`~app.pipeline.normalize.resample_stretch`)."""
    win, n_fft = 320, 1024
    device = samples.device
    window, window_acf, band = _two_pitch_constants(win, n_fft, device)
    lo, hi = int(_PITCH_RATE / f_max), min(int(_PITCH_RATE / f_min), n_fft // 4 - 2)
    k = min(candidates, max(1, (hi - lo) // 2))
    cues = []
    for first in range(0, count, _BLOCK_FRAMES):
        rows = min(_BLOCK_FRAMES, count - first)
        # The samples of a whole block (the same length for every block, see _encoder_frames).
        start = math.floor(first * step) - win // 2 - 1
        end = start + math.ceil((_BLOCK_FRAMES - 1) * step) + win + 2
        y = resample_stretch(samples, sample_rate=sample_rate, rate=_PITCH_RATE, lo=start, hi=end)
        frames = centred_frames(
            y.to(device), step=step, first=first, count=rows, win=win, origin=start
        )
        frames = (frames - frames.mean(dim=1, keepdim=True)) * window
        spectrum = torch.fft.rfft(frames, n_fft).abs() * band
        r = torch.fft.irfft(spectrum, n_fft)[:, : 2 * hi + 2]
        r = r / r[:, :1].clamp_min(1e-12) / window_acf[: 2 * hi + 2]
        inner = r[:, lo : hi + 1]
        peak = (inner[:, 1:-1] > inner[:, :-2]) & (inner[:, 1:-1] >= inner[:, 2:])
        top, where = torch.where(peak, inner[:, 1:-1], -1.0).topk(k, dim=1)
        tau = where + lo + 1
        single = 1.0 - top[:, 0]
        ta, tb = tau[:, :, None], tau[:, None, :]
        r_sum = r.gather(1, (ta + tb).reshape(rows, -1)).reshape(rows, k, k)
        r_diff = r.gather(1, (ta - tb).abs().reshape(rows, -1)).reshape(rows, k, k)
        pair = 1.0 - top[:, :, None] - top[:, None, :] + 0.5 * (r_sum + r_diff)
        ratio = ta.float() / tb.float()
        ratio = torch.maximum(ratio, 1.0 / ratio)
        related = (ratio - ratio.round()).abs() < 0.06
        valid = (top[:, :, None] > -1) & (top[:, None, :] > -1) & ~related
        double = torch.where(valid, pair, math.inf).flatten(1).amin(dim=1)
        double = torch.minimum(double, single)
        cues.append((single - double).clamp(0.0, 1.0))
    return torch.cat(cues)  # count ≥ 1: one block at least


@lru_cache(maxsize=8)
def _two_pitch_constants(
    win: int, n_fft: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hann window, its normalized autocorrelation, and the 60–3000 Hz band mask at 8 kHz."""
    window = torch.hann_window(win, periodic=False, dtype=torch.float64)
    spectrum = torch.fft.rfft(window, n_fft)
    acf = torch.fft.irfft(spectrum.abs().square(), n_fft)
    acf = (acf / acf[0]).clamp_min(1e-3)
    freqs = torch.arange(n_fft // 2 + 1, dtype=torch.float64) * 8000 / n_fft
    band = ((freqs >= 60) & (freqs <= 3000)).to(torch.float64)
    return (
        window.float().to(device),
        acf.float().to(device),
        band.float().to(device),
    )


# --------------------------------------------------------------------------------------------------
# Diarization error rate
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiarizationError:
    """Diarization error rate and its parts, as fractions of the scored reference speech.

    Attributes:
        der: ``(missed + false_alarm + confusion) / total``.
        missed: reference speaker-time without a hypothesis speaker.
        false_alarm: hypothesis speaker-time without a reference speaker.
        confusion: speaker-time given to the wrong speaker (after the optimal mapping).
        total_s: scored reference speaker-time, seconds (overlap counts once per speaker).
        mapping: reference row → hypothesis row of the optimal one-to-one mapping.
    """

    der: float
    missed: float
    false_alarm: float
    confusion: float
    total_s: float
    mapping: dict[int, int]


def diarization_error_rate(
    reference: torch.Tensor,
    hypothesis: torch.Tensor,
    *,
    frame_rate_hz: float,
    collar_s: float = 0.25,
) -> DiarizationError:
    """NIST diarization error rate (md-eval's definition, frame-based).

    Per frame, with ``R`` reference and ``H`` hypothesis speakers active and ``C`` of them matched
    by the mapping: missed ``max(R − H, 0)``, false alarm ``max(H − R, 0)``, confusion
    ``min(R, H) − C``. The mapping of reference to hypothesis speakers is the one-to-one mapping
    that maximizes the matched time (Hungarian algorithm, ``scipy.optimize.linear_sum_assignment``).
    Frames within ``collar_s`` of a reference speaker's start or end are not scored (md-eval's
    ``-c 0.25``; pyannote's ``collar=0.5``).

    Args:
        reference: speaker activity, bool, shape ``(reference_speaker, frame)``.
        hypothesis: speaker activity, bool, shape ``(hypothesis_speaker, frame)``; the frame
            count may differ (the shorter is zero-extended).
        frame_rate_hz: frames per second of both.
        collar_s: no-score zone on each side of every reference boundary, seconds (≥ 0).

    Returns:
        A :class:`DiarizationError`.
    """
    from scipy.optimize import linear_sum_assignment

    if reference.dim() != 2 or hypothesis.dim() != 2:
        raise InvalidOptions(
            f"reference {tuple(reference.shape)} and hypothesis {tuple(hypothesis.shape)} must "
            "be (speaker, frame) activity matrices."
        )
    if not frame_rate_hz > 0 or collar_s < 0:
        raise InvalidOptions(
            f"frame_rate_hz={frame_rate_hz} must be > 0 and collar_s={collar_s} ≥ 0."
        )
    n = max(reference.shape[1], hypothesis.shape[1])
    ref = F.pad(reference.bool(), (0, n - reference.shape[1])).float()
    hyp = F.pad(hypothesis.bool().to(reference.device), (0, n - hypothesis.shape[1])).float()
    collar = round(collar_s * frame_rate_hz)
    scored = torch.ones(n, dtype=torch.bool, device=ref.device)
    if collar > 0 and ref.shape[0]:
        edges = F.pad(ref, (1, 1)).diff(dim=1).abs().amax(dim=0)  # (n + 1,): before frame i
        near = F.max_pool1d(edges[None, None], 2 * collar, stride=1, padding=collar)[0, 0]
        scored = near[1 : n + 1] == 0
    ref, hyp = ref[:, scored], hyp[:, scored]
    n_ref, n_hyp = ref.sum(dim=0), hyp.sum(dim=0)
    total = float(n_ref.sum())
    matched = ref @ hyp.T  # (R, H) frames both active
    mapping: dict[int, int] = {}
    correct = 0.0
    if matched.numel():
        rows, cols = linear_sum_assignment(matched.cpu().numpy(), maximize=True)
        mapping = {int(r): int(c) for r, c in zip(rows, cols, strict=True)}
        correct = float(matched[rows, cols].sum())
    missed = float((n_ref - n_hyp).clamp_min(0).sum())
    false_alarm = float((n_hyp - n_ref).clamp_min(0).sum())
    confusion = float(torch.minimum(n_ref, n_hyp).sum()) - correct
    denominator = max(total, 1e-9)
    return DiarizationError(
        der=(missed + false_alarm + confusion) / denominator
        if total
        else float(missed + false_alarm > 0),
        missed=missed / denominator,
        false_alarm=false_alarm / denominator,
        confusion=confusion / denominator,
        total_s=total / frame_rate_hz,
        mapping=mapping,
    )


def activity_matrix(
    turns: Sequence[tuple[float, float, Any]], *, num_frames: int, frame_rate_hz: float
) -> tuple[torch.Tensor, list[Any]]:
    """Speaker activity from ``(start_s, end_s, label)`` turns (labels: any hashable).

    Frame ``t`` (time ``t / frame_rate_hz``) is active for a turn when
    ``round(start_s · rate) ≤ t < round(end_s · rate)``.

    Returns:
        ``(activity, labels)``: bool tensor ``(len(labels), num_frames)`` and the distinct
        labels in order of first appearance (row ``i`` is ``labels[i]``).
    """
    labels: list[Any] = []
    for _, _, label in turns:
        if label not in labels:
            labels.append(label)
    activity = torch.zeros(len(labels), num_frames, dtype=torch.bool)
    for start_s, end_s, label in turns:
        a = max(0, round(start_s * frame_rate_hz))
        b = min(num_frames, round(end_s * frame_rate_hz))
        if b > a:
            activity[labels.index(label), a:b] = True
    return activity, labels


def hypothesis_activity(diarization: Diarization, *, with_overlap: bool = True) -> torch.Tensor:
    """Activity matrix ``(num_speakers, frame)`` of a :class:`Diarization` (for
    :func:`diarization_error_rate`); with ``with_overlap``, overlap frames also activate the
    ``second_speaker``."""
    k = diarization.num_speakers
    n = diarization.speaker.shape[0]
    rows = torch.arange(k, device=diarization.speaker.device)[:, None]
    active = diarization.speaker[None, :] == rows
    if with_overlap:
        active = active | (diarization.second_speaker[None, :] == rows)
    return active.reshape(k, n)


# --------------------------------------------------------------------------------------------------
# Internals
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Windows:
    """Embedding windows: frame indices ``(window, width)`` (padding repeats the last frame),
    valid lengths ``(window,)``, and the speech frames each window stands for (``owned``)."""

    index: torch.Tensor
    lengths: torch.Tensor
    owned: torch.Tensor


def _nearest_index(n: int, ratio: float, limit: int, device: torch.device) -> torch.Tensor:
    """``round(i · ratio)`` for ``i < n``, clamped to ``[0, limit − 1]``."""
    index = torch.round(torch.arange(n, device=device, dtype=torch.float64) * ratio).long()
    return index.clamp(0, limit - 1)


def _run_lengths(mask: torch.Tensor) -> torch.Tensor:
    """For each element, the length of the run of equal values it belongs to."""
    change = torch.ones_like(mask, dtype=torch.bool)
    change[1:] = mask[1:] != mask[:-1]
    run_id = torch.cumsum(change.long(), 0) - 1
    lengths = torch.bincount(run_id)
    return lengths[run_id]


def _runs(labels: torch.Tensor, keep_negative: bool = False) -> list[tuple[int, int, int]]:
    """Maximal runs ``(start, end, value)`` (end exclusive) of a 1-D integer tensor; runs of
    negative values are left out unless ``keep_negative``."""
    n = labels.shape[0]
    if n == 0:
        return []
    change = torch.ones(n, dtype=torch.bool, device=labels.device)
    change[1:] = labels[1:] != labels[:-1]
    starts = torch.nonzero(change).flatten()
    ends = torch.cat([starts[1:], torch.tensor([n], device=labels.device)])
    values = labels[starts]
    keep = torch.ones_like(values, dtype=torch.bool) if keep_negative else values >= 0
    return [
        (int(a), int(b), int(v))
        for a, b, v in zip(
            starts[keep].tolist(), ends[keep].tolist(), values[keep].tolist(), strict=True
        )
    ]


def _speech_units(level_db: torch.Tensor, speech: torch.Tensor, min_pause: int) -> torch.Tensor:
    """Speech frames outside pauses: a pause is a run of ≥ ``min_pause`` frames below a quarter of
    the way from the noise floor (5th percentile of all frames) to the speech peak (95th
    percentile of speech frames)."""
    if not bool(speech.any()):
        return speech
    floor = torch.quantile(level_db, 0.05)
    peak = torch.quantile(level_db[speech], 0.95)
    quiet = level_db < floor + 0.25 * (peak - floor)
    pause = quiet & (_run_lengths(quiet) >= max(1, min_pause))
    return speech & ~pause


def _windows(
    units: torch.Tensor, speech: torch.Tensor, *, width: int, step: int
) -> _Windows | None:
    """Windows of ``width`` frames every ``step`` inside each unit (the last one flush with the
    unit's end); a unit shorter than ``width`` but ≥ 0.4 s is one window. Without any such unit,
    windows run over the concatenated speech frames. ``None`` without speech."""
    device = units.device
    runs = [(a, b) for a, b, v in _runs(units.long()) if v == 1]
    starts = torch.tensor([a for a, _ in runs], dtype=torch.long, device=device)
    lengths = torch.tensor([b - a for a, b in runs], dtype=torch.long, device=device)
    keep = lengths >= min(_MIN_WINDOW_FRAMES, width)
    frames = torch.arange(units.shape[0], device=device)
    if not bool(keep.any()):  # only scraps of speech: use them all, end to end
        frames = torch.nonzero(speech).flatten()
        if frames.numel() == 0:
            return None
        starts = torch.zeros(1, dtype=torch.long, device=device)
        lengths = torch.tensor([frames.numel()], device=device)
    else:
        starts, lengths = starts[keep], lengths[keep]
    count = torch.where(
        lengths > width, torch.div(lengths - width + step - 1, step, rounding_mode="floor") + 1, 1
    )
    unit = torch.repeat_interleave(torch.arange(starts.shape[0], device=device), count)
    first = torch.cumsum(count, 0) - count
    k = torch.arange(unit.shape[0], device=device) - first[unit]
    span = torch.minimum(lengths[unit], torch.full_like(unit, width))
    offset = torch.minimum(k * step, lengths[unit] - span)
    position = (starts[unit] + offset)[:, None] + torch.arange(width, device=device)
    position = torch.minimum(position, (starts[unit] + offset + span - 1)[:, None])
    owned = lengths[unit].float() / count[unit].float()
    return _Windows(index=frames[position], lengths=span, owned=owned)


def _encoder_frames(samples: torch.Tensor, sample_rate: int, first: int) -> torch.Tensor:
    """Frames ``first … first + B − 1`` (``B`` = :data:`_BLOCK_FRAMES`) of the signal at 16 kHz:
    ``(B, 400)`` samples centred on samples ``160 t`` (zero beyond the signal, like ``_FRAMES``'
    constant padding), resampled from the input samples they need
    (:func:`~app.pipeline.normalize.resample_stretch`), on ``samples``' device. Every block has
    the same shape, so the resampler's convolution is planned once (oneDNN caches a primitive
    per input shape)."""
    hop, win = _FRAMES.hop_length, _FRAMES.win_length
    lo = first * hop - win // 2
    hi = lo + (_BLOCK_FRAMES - 1) * hop + win
    y = resample_stretch(samples, sample_rate=sample_rate, rate=ENCODER_RATE, lo=lo, hi=hi)
    return y.to(samples.device).unfold(0, win, hop)


def _frame_levels_db(samples: torch.Tensor, sample_rate: int, count: int) -> torch.Tensor:
    """Mean square of the first ``count`` 25 ms frames at 16 kHz (:func:`_encoder_frames`), dB
    (full scale = 1 is 0 dB), shape ``(count,)``; a block of frames at a time."""
    level_db = torch.empty(count, device=samples.device)
    for first in range(0, count, _BLOCK_FRAMES):
        frames = _encoder_frames(samples, sample_rate, first)[: count - first]
        level_db[first : first + frames.shape[0]] = frames.square().mean(dim=-1)
    return 10.0 * torch.log10(level_db + 1e-12)


def _mel_of_frames(samples: torch.Tensor, sample_rate: int, frames: torch.Tensor) -> torch.Tensor:
    """The encoder's 40-band mel power spectra of some 16 kHz frames (sorted, distinct indices
    ``(n,)``), shape ``(n, 40)``, computed a block of :data:`_BLOCK_FRAMES` frames of the grid
    at a time."""
    device = samples.device
    bank = mel_filterbank(ENCODER_RATE, _FRAMES.n_fft, _N_MELS, 0.0, 8000.0, "slaney", device)
    window = _FRAMES.window(device)
    block = torch.div(frames, _BLOCK_FRAMES, rounding_mode="floor")
    out = []
    for b in torch.unique_consecutive(block).tolist():
        first = b * _BLOCK_FRAMES
        framed = _encoder_frames(samples, sample_rate, first)[frames[block == b] - first]
        spectrum = torch.fft.rfft(framed * window, n=_FRAMES.n_fft)
        power = spectrum.real.square() + spectrum.imag.square()  # (frame, 201)
        out.append(power @ bank.T)
    return torch.cat(out)


def _embed_windows(
    encoder: SpeakerEncoder,
    samples: torch.Tensor,
    sample_rate: int,
    windows: _Windows,
    gain: torch.Tensor,
) -> torch.Tensor:
    """Embeddings ``(window, 256)`` of the windows, in batches of :data:`_BATCH_WINDOWS`; each
    batch's mel frames (scaled by ``gain``, the level normalization) are computed from the
    input samples they need (:func:`_mel_of_frames`)."""
    out = []
    for first in range(0, windows.index.shape[0], _BATCH_WINDOWS):
        index = windows.index[first : first + _BATCH_WINDOWS]
        lengths = windows.lengths[first : first + _BATCH_WINDOWS]
        width = int(lengths.max())
        needed, where = torch.unique(index[:, :width], sorted=True, return_inverse=True)
        batch = _mel_of_frames(samples, sample_rate, needed)[where] * gain
        valid = torch.arange(width, device=batch.device)[None, :] < lengths[:, None]
        out.append(encoder.embed(batch * valid[..., None], lengths))
    return torch.cat(out)


def _cluster(
    embeddings: torch.Tensor,
    *,
    owned: torch.Tensor,
    num_speakers: int | None,
    max_speakers: int,
    threshold: float,
    min_frames: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Centroid-linkage clustering. Returns window labels ``(window,)`` and the speakers'
    L2-normalized centroids ``(K, 256)``."""
    n_all = embeddings.shape[0]
    subset = torch.arange(n_all, device=embeddings.device)
    if n_all > _MAX_CLUSTER_WINDOWS:
        subset = torch.linspace(0, n_all - 1, _MAX_CLUSTER_WINDOWS, device=embeddings.device)
        subset = subset.round().long()
    e = F.normalize(embeddings[subset], dim=1)
    weight = owned[subset] * (n_all / subset.shape[0])  # frames each window stands for
    n = e.shape[0]
    merges = _merge_sequence(e, weight, min_frames=min_frames)
    sims = torch.tensor([m[2] for m in merges])
    big = torch.tensor([_n_big(weight, min_frames)] + [m[3] for m in merges])
    clusters = torch.arange(n, 0, -1)  # clusters before each step (index = steps taken)

    below = torch.nonzero(sims < threshold).flatten()
    steps = int(below[0]) if below.numel() else len(merges)
    if num_speakers is not None:
        steps = _steps_for_count(big, clusters, num_speakers, near=steps)
    elif int(big[steps]) > max_speakers:
        steps = _steps_for_count(big, clusters, max_speakers, near=steps)
    labels = torch.arange(n)
    for i, j, _, _ in merges[:steps]:
        labels[labels == j] = i
    labels = labels.to(e.device)
    ids, labels = torch.unique(labels, return_inverse=True)
    mass = torch.zeros(ids.shape[0], device=e.device).index_add_(0, labels, weight)
    keep = mass >= min_frames
    if num_speakers is not None and int(keep.sum()) != num_speakers:
        keep = torch.zeros_like(keep)
        keep[mass.topk(min(num_speakers, ids.shape[0])).indices] = True
    if not bool(keep.any()):
        keep[mass.argmax()] = True
    sums = torch.zeros(ids.shape[0], e.shape[1], device=e.device).index_add_(0, labels, e)
    centroids = F.normalize(sums[keep], dim=1)
    # Iterate once: every window to its nearest speaker, centroids from their windows.
    all_e = F.normalize(embeddings, dim=1)
    assign = (all_e @ centroids.T).argmax(dim=1)
    sums = torch.zeros_like(centroids).index_add_(0, assign, all_e)
    counts = torch.bincount(assign, minlength=centroids.shape[0])
    centroids = torch.where(counts[:, None] > 0, F.normalize(sums, dim=1), centroids)
    return (all_e @ centroids.T).argmax(dim=1), centroids


def _n_big(weight: torch.Tensor, min_frames: float) -> int:
    return int((weight >= min_frames).sum())


def _merge_sequence(
    e: torch.Tensor, weight: torch.Tensor, *, min_frames: float
) -> list[tuple[int, int, float, int]]:
    """All ``n − 1`` merges of centroid-linkage clustering: ``(kept, absorbed, similarity,
    speakers after)``, where speakers are the clusters with ≥ ``min_frames`` frames."""
    n = e.shape[0]
    sums = e.clone()
    mass = weight.clone()
    sim = e @ e.T
    sim.fill_diagonal_(-math.inf)
    big = int((mass >= min_frames).sum())
    merges: list[tuple[int, int, float, int]] = []
    for _ in range(n - 1):
        flat = int(sim.argmax())
        i, j = divmod(flat, n)
        value = float(sim[i, j])
        big -= int(mass[i] >= min_frames) + int(mass[j] >= min_frames)
        sums[i] += sums[j]
        mass[i] += mass[j]
        big += int(mass[i] >= min_frames)
        row = F.normalize(sums[i], dim=0) @ F.normalize(sums, dim=1).T
        alive = sim[:, i] > -math.inf
        alive[j] = False
        row = torch.where(alive, row, -math.inf)
        row[i] = -math.inf
        sim[i], sim[:, i] = row, row
        sim[j], sim[:, j] = -math.inf, -math.inf
        merges.append((i, j, value, big))
    return merges


def _steps_for_count(big: torch.Tensor, clusters: torch.Tensor, count: int, near: int) -> int:
    """Merges to take so that ``count`` speakers remain: of the steps with exactly ``count``
    big clusters, the one nearest to step ``near`` (where the similarity threshold stops; the
    later one on a tie); without one, the step with ``count`` clusters."""
    exact = torch.nonzero(big == count).flatten()
    if exact.numel():
        distance = (exact - near).abs() * 2 - (exact > near).long()
        return int(exact[int(distance.argmin())])
    return min(max(clusters.shape[0] - count, 0), clusters.shape[0] - 1)


def _frame_scores(sims: torch.Tensor, windows: _Windows, speech: torch.Tensor) -> torch.Tensor:
    """Hann-weighted mean of window similarities ``(window, K)`` per frame ``(frame, K)``;
    frames no window covers take the nearest covered frame's."""
    n = speech.shape[0]
    width = windows.index.shape[1]
    position = torch.arange(width, device=sims.device)[None, :]
    length = windows.lengths[:, None].float()
    hann = torch.sin(math.pi * (position + 0.5) / length).square()
    hann = torch.where(position < windows.lengths[:, None], hann, 0.0)
    flat = windows.index.flatten()
    total = torch.zeros(n, sims.shape[1], device=sims.device)
    total.index_add_(0, flat, (hann[..., None] * sims[:, None, :]).reshape(-1, sims.shape[1]))
    weight = torch.zeros(n, device=sims.device).index_add_(0, flat, hann.flatten())
    covered = weight > 0
    index = torch.arange(n, device=sims.device)
    left = torch.where(covered, index, -1).cummax(dim=0).values
    right = torch.where(covered, index, n).flip(0).cummin(dim=0).values.flip(0)
    use_left = (left >= 0) & ((right >= n) | (index - left <= right - index))
    nearest = torch.where(use_left, left, right).clamp(0, n - 1)
    return total[nearest] / weight[nearest].clamp_min(1e-12)[:, None]


def _smooth_labels(labels: torch.Tensor, speech: torch.Tensor, width: int) -> torch.Tensor:
    """Mode filter over ``width`` speech frames (pauses skipped); non-speech frames keep their
    label (they are masked later)."""
    if width < 2 or not bool(speech.any()):
        return labels
    k = int(labels.max()) + 1
    inside = labels[speech]
    votes = F.one_hot(inside, k).T.float()[None]  # (1, K, speech frames)
    width += 1 - width % 2
    votes = F.avg_pool1d(votes, width, stride=1, padding=width // 2, count_include_pad=False)
    smoothed = labels.clone()
    smoothed[speech] = votes[0].argmax(dim=0)
    return smoothed


def _first_appearance(labels: torch.Tensor, k: int) -> torch.Tensor:
    """Old speaker ids sorted by first frame (never-used speakers last)."""
    n = labels.shape[0]
    first = torch.full((k,), n, dtype=torch.long, device=labels.device)
    if n:
        first.scatter_reduce_(0, labels, torch.arange(n, device=labels.device), "amin")
    return torch.argsort(first, stable=True)


def _moving_average(x: torch.Tensor, width: int) -> torch.Tensor:
    if width < 2:
        return x
    width += 1 - width % 2
    return F.avg_pool1d(x[None, None], width, 1, width // 2, count_include_pad=False)[0, 0]


def _drop_short(mask: torch.Tensor, min_frames: float) -> torch.Tensor:
    """Remove runs of True shorter than ``min_frames``."""
    if not bool(mask.any()):
        return mask
    return mask & (_run_lengths(mask) >= min_frames)


def _empty(n: int, hop_length: int, sample_rate: int, device: torch.device) -> Diarization:
    minus = torch.full((n,), -1, dtype=torch.long, device=device)
    zeros = torch.zeros(n, device=device)
    return Diarization(
        speaker=minus,
        second_speaker=minus.clone(),
        scores=zeros.new_zeros(0, n),
        overlap_prob=zeros,
        overlap=zeros.bool(),
        num_speakers=0,
        centroids=zeros.new_zeros(0, EMBEDDING_SIZE),
        turns=[],
        overlap_regions=[],
        frame_rate_hz=sample_rate / hop_length,
    )


def _validate(
    *,
    samples: torch.Tensor,
    sample_rate: int,
    hop_length: int,
    num_speakers: int | None,
    max_speakers: int,
    threshold: float,
    window_s: float,
    step_s: float,
    durations: dict[str, float],
    overlap_threshold: float,
) -> None:
    if samples.dim() != 1:
        raise InvalidOptions(
            f"samples has shape {tuple(samples.shape)}; diarization takes one mono channel (time,)."
        )
    if sample_rate <= 0:
        raise InvalidOptions(f"sample_rate={sample_rate} must be a positive number of Hz.")
    if hop_length < 1:
        raise InvalidOptions(f"hop_length={hop_length} must be ≥ 1 sample.")
    if max_speakers < 1:
        raise InvalidOptions(f"max_speakers={max_speakers} must be ≥ 1.")
    if num_speakers is not None:
        if num_speakers < 1:
            raise InvalidOptions(f"num_speakers={num_speakers} must be ≥ 1 (or omitted).")
        if num_speakers > max_speakers:
            raise InvalidOptions(
                f"num_speakers={num_speakers} exceeds max_speakers={max_speakers}."
            )
    if not 0 < threshold < 1:
        raise InvalidOptions(f"threshold={threshold} must be in (0, 1).")
    if not 0.5 <= window_s <= 4.0:
        raise InvalidOptions(f"window_s={window_s} s must be between 0.5 and 4 s.")
    if not 0.01 <= step_s <= window_s:
        raise InvalidOptions(f"step_s={step_s} s must be between 0.01 s and window_s={window_s} s.")
    for name, value in durations.items():
        if not value >= 0:
            raise InvalidOptions(f"{name}={value} s must be ≥ 0.")
    if not 0 < overlap_threshold < 1:
        raise InvalidOptions(f"overlap_threshold={overlap_threshold} must be in (0, 1).")
