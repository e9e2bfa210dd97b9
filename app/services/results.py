"""Results: the stored form of one processed recording, and the service that makes and finds them.

The cache keeps a result as one *bundle*: a zip of ``.npy`` arrays (an NPZ) holding every
feature, the processed audio and a ``meta`` array of UTF-8 JSON. Storage keeps it as three objects
(``audio.wav``, ``features.npz``, ``manifest.json``; see app/services/storage.py). Either can serve
``GET /features/{id}`` and ``GET /features/{id}/audio``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import math
import zipfile
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import anyio
import numpy as np
import orjson
import soundfile as sf

from app import metrics
from app.errors import (
    AudioprocError,
    DependencyUnavailable,
    InvalidRequest,
    NotFound,
    Overloaded,
    StorageUnavailable,
)
from app.models.options import ProcessingOptions
from app.pipeline.clean import CleaningReport
from app.pipeline.runner import PIPELINE_VERSION, Pipeline, PipelineResult
from app.services.cache import CacheUnavailable, ResultCache
from app.services.storage import AUDIO, FEATURES, MANIFEST, ResultStorage, StorageError

log = logging.getLogger("audioproc.results")

AudioEncoding = Literal["pcm16", "float32"]


def result_id(
    content_sha256: str,
    options: ProcessingOptions,
    tenant: str | None = None,
    reference_sha256: str | None = None,
) -> str:
    """The result id: 32 hex digits of SHA-256 over pipeline version, content hash, options,
    the tenant that asked (with API keys; none when the service runs open) and the uploaded
    echo reference, if any. Identical bytes sent by two tenants are two results, so one tenant is
    never served another's from the cache."""
    key = f"{PIPELINE_VERSION}\n{content_sha256}\n{options.canonical_json()}"
    if tenant is not None:
        key += f"\ntenant:{tenant}"
    if reference_sha256 is not None:
        key += f"\nreference:{reference_sha256}"
    return hashlib.sha256(key.encode()).hexdigest()[:32]


async def sha256_hex(data: bytes) -> str:
    """SHA-256 of ``data``, hex, computed in a worker thread (uploads are megabytes)."""
    return await anyio.to_thread.run_sync(lambda: hashlib.sha256(data).hexdigest())


def _finite_or_none(value: float) -> float | None:
    return value if np.isfinite(value) else None


@dataclass
class StoredResult:
    """One processed recording: JSON-able metadata, feature arrays and the processed audio.

    Attributes:
        meta: id, content hash, input/output/quality reports, steps, warnings, options, the
            owning ``tenant`` (never sent to clients) and, per feature,
            ``{shape, frame_rate_hz, unit, rows}``.
        arrays: feature arrays ``[features, frames]`` by name, plus ``<name>_stats``
            (``[features, functionals]``, in the order of ``meta.features[name].functionals``)
            when aggregation was asked for.
        audio: processed samples, float32, shape ``(channel, time)``.
    """

    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]
    audio: np.ndarray

    @property
    def id(self) -> str:
        return str(self.meta["id"])

    def owned_by(self, tenant: str | None) -> bool:
        """Whether ``tenant`` (``None``: the open service) owns this result."""
        return self.meta.get("tenant") == tenant

    def _public_meta(self) -> dict[str, Any]:
        """The metadata clients see: everything but the owner."""
        return {k: v for k, v in self.meta.items() if k != "tenant"}

    @classmethod
    def from_pipeline(
        cls,
        result: PipelineResult,
        *,
        id: str,
        content_sha256: str,
        options: ProcessingOptions,
        tenant: str | None = None,
        reference_sha256: str | None = None,
    ) -> StoredResult:
        arrays: dict[str, np.ndarray] = {}
        features_meta: dict[str, Any] = {}
        for name, feature in result.features.items():
            data = np.ascontiguousarray(feature.data.detach().cpu().numpy(), dtype=np.float32)
            arrays[name] = data
            features_meta[name] = {
                "shape": list(data.shape),
                "frame_rate_hz": feature.frame_rate_hz,
                "frame_offset_s": feature.frame_offset_s,
                "unit": feature.unit,
                **({"rows": feature.rows} if feature.rows else {}),
                **({"summary": feature.summary} if feature.summary else {}),
            }
            if feature.stats is not None:
                stats = np.stack([v.detach().cpu().numpy() for v in feature.stats.values()], -1)
                arrays[f"{name}_stats"] = stats.astype(np.float32, copy=False)
                features_meta[name]["functionals"] = list(feature.stats)
        out, quality = result.output, result.quality
        meta = {
            "id": id,
            "tenant": tenant,
            "content_sha256": content_sha256,
            **({"reference_sha256": reference_sha256} if reference_sha256 else {}),
            "pipeline_version": PIPELINE_VERSION,
            "input": {
                "format": result.input.format,
                "codec": result.input.codec,
                "sample_rate": result.input.sample_rate,
                "channels": result.input.channels,
                "duration_s": result.input.duration_s,
            },
            "output": {
                "sample_rate": out.sample_rate,
                "channels": out.channels,
                "duration_s": out.duration_s,
                "loudness_lufs": _finite_or_none(round(out.loudness_lufs, 3)),
                "peak_dbfs": _finite_or_none(round(out.peak_dbfs, 3)),
                "gain_db": out.gain_db,
                **(
                    {
                        "compression": {
                            "max_reduction_db": round(out.dynamics.max_reduction_db, 2),
                            "mean_gain_db": round(out.dynamics.mean_gain_db, 2),
                            "limited_fraction": round(out.dynamics.limited_fraction, 5),
                            "true_peak_dbtp": round(out.dynamics.true_peak_dbtp, 2),
                        }
                    }
                    if out.dynamics
                    else {}
                ),
            },
            "quality": {
                "clipping_ratio": round(quality.clipping_ratio, 6),
                "dc_offset": round(quality.dc_offset, 6),
                "input_loudness_lufs": _finite_or_none(round(quality.input_loudness_lufs, 3)),
                "silent": quality.silent,
                **_cleaning_meta(quality.cleaning),
                **(
                    {"speech_ratio": round(result.segmentation.speech_ratio, 4)}
                    if result.segmentation
                    else {}
                ),
            },
            **_segmentation_meta(result),
            "features": features_meta,
            "steps": [{"name": name, "ms": round(ms, 3)} for name, ms in result.steps],
            "warnings": list(result.warnings),
            "options": options.model_dump(mode="json"),
        }
        audio = result.audio.samples.detach().cpu().numpy().astype(np.float32, copy=False)
        return cls(meta, arrays, audio)

    # -- selection -------------------------------------------------------------------------
    def select(self, names: Iterable[str] | None) -> list[str]:
        """Feature names to return; ``None`` means all. Unknown names are a 400."""
        available = list(self.meta["features"])
        if names is None:
            return available
        # `pitch` is stored as its two outputs.
        wanted = [o for n in names for o in (("pitch_hz", "voicing") if n == "pitch" else (n,))]
        missing = [n for n in wanted if n not in self.meta["features"]]
        if missing:
            raise InvalidRequest(
                f"Result {self.id} has no feature(s) {', '.join(missing)}; it has "
                f"{', '.join(available) or 'none'}. Ask for those, or process again with the "
                "features you need."
            )
        return wanted

    # -- serializations --------------------------------------------------------------------
    def to_json(self, *, cached: bool, names: Iterable[str] | None = None) -> bytes:
        """The JSON response body; feature data as nested lists, ``[features][frames]``."""
        selected = self.select(names)
        features = {}
        for name in selected:
            entry = dict(self.meta["features"][name])
            entry["data"] = self.arrays[name]
            stats = self.arrays.get(f"{name}_stats")
            if stats is not None:
                entry["stats"] = {
                    k: np.ascontiguousarray(stats[..., i])
                    for i, k in enumerate(entry.pop("functionals"))
                }
            features[name] = entry
        body = {**self._public_meta(), "cached": cached, "features": features}
        return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)

    def to_npz(self, *, cached: bool, names: Iterable[str] | None = None) -> bytes:
        """The NPZ response body: one array per feature (and ``<name>_stats``), plus ``meta``
        (UTF-8 JSON bytes as ``uint8``). Uncompressed: the response favours latency."""
        selected = self.select(names)
        meta = {
            **self._public_meta(),
            "cached": cached,
            "features": {n: self.meta["features"][n] for n in selected},
        }
        arrays = {n: self.arrays[n] for n in selected}
        arrays.update(
            {
                f"{n}_stats": self.arrays[f"{n}_stats"]
                for n in selected
                if f"{n}_stats" in self.arrays
            }
        )
        return _write_npz({**arrays, "meta": _json_array(meta)})

    def to_wav(self, encoding: AudioEncoding = "pcm16") -> bytes:
        """The processed audio as a WAV file (16-bit PCM, or 32-bit float)."""
        buffer = io.BytesIO()
        subtype = "PCM_16" if encoding == "pcm16" else "FLOAT"
        sf.write(
            buffer, self.audio.T, self.meta["output"]["sample_rate"], format="WAV", subtype=subtype
        )
        return buffer.getvalue()

    def to_bundle(self) -> bytes:
        """The storage form: an NPZ of every array, the processed audio and the metadata.

        Stored without compression: deflate saves 8 % on float32 features and audio but takes
        ~140 ms per minute of audio (scripts/bench_pipeline.py), time a busy server lacks.
        """
        return _write_npz({**self.arrays, "audio": self.audio, "meta": _json_array(self.meta)})

    @classmethod
    def from_bundle(cls, data: bytes) -> StoredResult:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        meta = json.loads(arrays.pop("meta").tobytes())
        audio = arrays.pop("audio")
        return cls(meta, arrays, audio)

    def to_objects(self) -> dict[str, bytes]:
        """The storage form (app/services/storage.py): ``audio.wav`` (the processed audio,
        32-bit float WAV, bit-exact), ``features.npz`` (every array, plus ``meta``) and
        ``manifest.json`` (the metadata JSON)."""
        return {
            AUDIO: self.to_wav("float32"),
            FEATURES: _write_npz({**self.arrays, "meta": _json_array(self.meta)}),
            MANIFEST: orjson.dumps(self.meta),
        }

    @classmethod
    def from_objects(cls, objects: Mapping[str, bytes]) -> StoredResult:
        """The inverse of :meth:`to_objects`; the manifest's metadata is authoritative."""
        meta = json.loads(objects[MANIFEST])
        with np.load(io.BytesIO(objects[FEATURES]), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files if k != "meta"}
        samples, _ = sf.read(io.BytesIO(objects[AUDIO]), dtype="float32", always_2d=True)
        return cls(meta, arrays, np.ascontiguousarray(samples.T))


def _cleaning_meta(report: CleaningReport | None) -> dict[str, Any]:
    """``snr_db`` (WADA-SNR before cleaning), ``snr_after_db`` and what each step did."""
    if report is None:
        return {}
    cleaning: dict[str, Any] = {}
    snr: dict[str, Any] = {}
    noise = report.noise
    if noise is not None:
        snr = {
            "snr_db": _finite_or_none(round(noise.snr_before_db, 2)),
            "snr_after_db": _finite_or_none(round(noise.snr_after_db, 2)),
        }
        if noise.noise is not None:
            cleaning["noise"] = {
                "method": noise.noise.method,
                "gain_db": _finite_or_none(round(noise.noise.gain_db, 3)),
                "noise_floor_dbfs": _finite_or_none(round(noise.noise.noise_floor_dbfs, 2)),
                "strength": round(noise.noise.strength, 3),
            }
        if noise.wind is not None:
            cleaning["wind"] = {
                "detected_fraction": round(noise.wind.detected_fraction, 4),
                "mean_score": round(noise.wind.mean_score, 4),
            }
    if report.clicks_repaired is not None:
        cleaning["declick"] = {"clicks_repaired": report.clicks_repaired,
                               "pops_attenuated": report.pops_attenuated,
                               "clicks_skipped": report.clicks_skipped,
                               "pops_skipped": report.pops_skipped}  # fmt: skip
    if report.echo is not None:
        cleaning["echo"] = {k: _finite_or_none(round(v, 3)) for k, v in report.echo.items()}
    if report.rt60_before_s is not None:
        cleaning["dereverb"] = {
            "rt60_before_s": _finite_or_none(round(report.rt60_before_s, 3)),
            "rt60_after_s": _finite_or_none(round(report.rt60_after_s or math.nan, 3)),
        }
    return {**snr, "cleaning": cleaning}


def _segmentation_meta(result: PipelineResult) -> dict[str, Any]:
    """``segments`` and ``segmentation`` of the result JSON (times in the processed audio's
    timeline, seconds; ``time_map`` pieces map them back to the input)."""
    seg = result.segmentation
    if seg is None:
        return {}
    pauses = None
    if seg.pauses is not None:
        pauses = {k: round(v, 4) if isinstance(v, float) else v
                  for k, v in dataclasses.asdict(seg.pauses).items()}  # fmt: skip
    return {
        "segments": [
            {
                "start_s": round(s.start_s, 4),
                "end_s": round(s.end_s, 4),
                "confidence": round(s.confidence, 4),
                "speaker": s.speaker,
                **({} if s.overlap is None else {"overlap": s.overlap}),
            }
            for s in seg.segments
        ],
        "segmentation": {
            "vad": seg.backend,
            "num_speakers": seg.num_speakers,
            "phrases": None
            if seg.phrasing is None
            else [
                {
                    "start_s": round(p.start_s, 4),
                    "end_s": round(p.end_s, 4),
                    "hesitations": p.hesitations,
                }
                for p in seg.phrasing.phrases
            ],
            "pauses": None
            if seg.phrasing is None
            else [
                {"start_s": round(p.start_s, 4), "end_s": round(p.end_s, 4), "kind": p.kind}
                for p in seg.phrasing.pauses
            ],
            "pause_statistics": pauses,
            "time_map": None
            if seg.time_map is None
            else [[round(a, 6), round(b, 6), round(c, 6)] for a, b, c in seg.time_map.pieces],
        },  # fmt: skip
    }


def _json_array(value: Any) -> np.ndarray:
    return np.frombuffer(orjson.dumps(value), dtype=np.uint8)


def _write_npz(arrays: dict[str, np.ndarray]) -> bytes:
    """An uncompressed NPZ (a zip of ``.npy`` files), as ``np.savez`` writes, without temp files."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


class Persist(Protocol):
    """Writes new results to the cache and to storage. A storage failure is logged and counted
    (the cache still serves the result) unless ``strict``: then it raises
    :class:`~app.services.storage.StorageError` (job workers must not call a job done whose
    result only the cache holds)."""

    def __call__(self, *, strict: bool = False) -> Awaitable[None]: ...


@dataclass
class Outcome:
    """What became of one upload: a result (maybe from the cache) or the error that refused it."""

    result: StoredResult | None
    error: AudioprocError | None
    cached: bool


class ResultService:
    """Makes results (cache → storage → pipeline) and finds them again by id."""

    def __init__(
        self,
        *,
        pipeline: Pipeline,
        cache: ResultCache,
        storage: ResultStorage,
        concurrency: int,
        max_waiting: int | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.cache = cache
        self.storage = storage
        self.limiter = anyio.CapacityLimiter(concurrency)
        #: Runs that may wait for a slot (``None``: unbounded; job workers wait their turn).
        self.max_waiting = max_waiting

    async def _cache_get(self, key: str, warnings: list[str]) -> bytes | None:
        try:
            value = await self.cache.get(key)
        except CacheUnavailable as exc:
            metrics.CACHE_ERRORS.labels("get").inc()
            warnings.append(f"The cache is unavailable and was bypassed ({exc}).")
            return None
        return value

    async def process(
        self,
        data: bytes,
        options: ProcessingOptions,
        tenant: str | None = None,
        reference: bytes | None = None,
    ) -> tuple[StoredResult, bool, Persist | None]:
        """Return ``(result, cached, persist)`` for one upload, owned by ``tenant``, with the
        far-end ``reference`` file for echo cancellation if one was sent.

        ``persist`` (``None`` for a cached result) writes a new result to cache and storage; the
        router runs it after the response is sent, so it adds nothing to the latency.

        Raises:
            AudioprocError: the upload or the options were rejected.
        """
        outcomes, persist = await self.process_batch([data], options, tenant, reference)
        outcome = outcomes[0]
        if outcome.error is not None:
            raise outcome.error
        assert outcome.result is not None
        return outcome.result, outcome.cached, persist

    async def process_batch(
        self,
        uploads: Sequence[bytes],
        options: ProcessingOptions,
        tenant: str | None = None,
        reference: bytes | None = None,
    ) -> tuple[list[Outcome], Persist | None]:
        """Results for several uploads (owned by ``tenant``; ``reference``: the far-end file for
        echo cancellation): cached ones are looked up, the rest run as one batch.

        Returns:
            Per upload its :class:`Outcome`, and a ``persist`` callable for the new results.

        Raises:
            Overloaded: more than ``max_waiting`` runs already wait for a pipeline slot.
        """
        hashes = await anyio.to_thread.run_sync(
            lambda: [hashlib.sha256(data).hexdigest() for data in uploads]
        )
        reference_sha256 = await sha256_hex(reference) if reference is not None else None
        keys = [result_id(h, options, tenant, reference_sha256) for h in hashes]
        warnings: list[str] = []
        outcomes: list[Outcome | None] = [None] * len(uploads)
        pending: list[int] = []
        for index, key in enumerate(keys):
            found, lookup = await self._find(key, warnings)
            metrics.CACHE_LOOKUPS.labels(lookup).inc()
            if found is None:
                pending.append(index)
            else:
                outcomes[index] = Outcome(found, None, True)
        if pending:
            self._admit_run()
        runs = await anyio.to_thread.run_sync(
            self.pipeline.run_batch,
            [uploads[i] for i in pending],
            options,
            reference,
            limiter=self.limiter,
        )
        new: list[StoredResult] = []
        for index, run in zip(pending, runs, strict=True):
            if isinstance(run, AudioprocError):
                outcomes[index] = Outcome(None, run, False)
                continue
            for name, ms in run.steps:
                metrics.PIPELINE_STEP_SECONDS.labels(name).observe(ms / 1000.0)
            metrics.AUDIO_SECONDS.inc(run.input.duration_s)
            result = StoredResult.from_pipeline(
                run,
                id=keys[index],
                content_sha256=hashes[index],
                options=options,
                tenant=tenant,
                reference_sha256=reference_sha256,
            )
            result.meta["warnings"].extend(warnings)
            outcomes[index] = Outcome(result, None, False)
            new.append(result)

        async def persist(*, strict: bool = False) -> None:
            for result in new:
                bundle = await anyio.to_thread.run_sync(result.to_bundle)
                try:
                    await self.cache.set(result.id, bundle)
                except CacheUnavailable:
                    metrics.CACHE_ERRORS.labels("set").inc()
                objects = await anyio.to_thread.run_sync(result.to_objects)
                try:
                    await self.storage.put(result.id, objects)
                except StorageError as exc:
                    # After the response: counted and logged; the cache still serves the result.
                    metrics.STORAGE_ERRORS.labels(self.storage.backend, "put").inc()
                    log.error("result %s was not stored: %s", result.id, exc)
                    if strict:
                        raise

        return [o for o in outcomes if o is not None], persist if new else None

    def _admit_run(self) -> None:
        """Refuse a run when too many wait for a slot already (a flood gets 503, not memory)."""
        waiting = self.limiter.statistics().tasks_waiting
        busy = self.limiter.available_tokens < 1
        if self.max_waiting is not None and busy and waiting >= self.max_waiting:
            metrics.OVERLOADED.inc()
            raise Overloaded(
                f"{waiting} requests are already waiting for the pipeline on this instance "
                "(PIPELINE_MAX_WAITING). Retry in a moment, or submit the recording to POST /jobs.",
                headers={"Retry-After": "1"},
            )

    async def _find(
        self, key: str, warnings: list[str] | None = None
    ) -> tuple[StoredResult | None, Literal["hit", "storage", "miss", "error"]]:
        """Result ``key`` from the cache, else from storage, with the lookup's outcome: ``hit``
        (cache), ``storage``, ``miss`` (neither has it) or ``error`` (the cache was unavailable
        and storage does not have it).

        With ``warnings``, an unavailable cache or storage is bypassed with a warning appended;
        without, an unavailable storage raises :class:`StorageUnavailable` (503).
        """
        cache_warnings: list[str] = []
        bundle = await self._cache_get(key, cache_warnings)
        if warnings is not None:
            warnings.extend(w for w in cache_warnings if w not in warnings)
        if bundle is not None:
            return StoredResult.from_bundle(bundle), "hit"
        missing: Literal["miss", "error"] = "error" if cache_warnings else "miss"
        try:
            objects = await self.storage.get(key)
        except StorageError as exc:
            metrics.STORAGE_ERRORS.labels(self.storage.backend, "get").inc()
            log.warning("reading result %s from storage failed: %s", key, exc)
            if warnings is None:
                raise StorageUnavailable(
                    f"Result storage ({self.storage.backend}) cannot be read, so result {key} "
                    "cannot be looked up there. Retry later."
                ) from exc
            warning = f"Result storage ({self.storage.backend}) is unavailable and was bypassed."
            if warning not in warnings:
                warnings.append(warning)
            return None, missing
        if objects is None:
            return None, missing
        return await anyio.to_thread.run_sync(StoredResult.from_objects, objects), "storage"

    async def get(self, key: str, tenant: str | None = None) -> StoredResult:
        """The stored result ``key``, from the cache or else from storage, when ``tenant`` owns
        it; another tenant's result is :class:`NotFound` exactly like a missing one."""
        if not key.isalnum() or len(key) != 32:
            raise NotFound(f"No result has the id {key!r}; ids are 32 hexadecimal digits.")
        found, _ = await self._find(key)
        if found is None or not found.owned_by(tenant):
            raise NotFound(
                f"No result has the id {key}. It may have expired; POST the recording to "
                "/process again."
            )
        return found

    async def delete(self, key: str, tenant: str | None = None) -> None:
        """Erase result ``key`` (owned by ``tenant``) from the cache and from storage."""
        await self.get(key, tenant)
        try:
            await self.cache.delete(key)
        except CacheUnavailable as exc:
            metrics.CACHE_ERRORS.labels("delete").inc()
            raise DependencyUnavailable(
                f"The cache cannot be reached, so result {key} cannot be erased everywhere yet. "
                "Retry the DELETE."
            ) from exc
        try:
            await self.storage.delete(key)
        except StorageError as exc:
            metrics.STORAGE_ERRORS.labels(self.storage.backend, "delete").inc()
            log.warning("deleting result %s from storage failed: %s", key, exc)
            raise StorageUnavailable(
                f"Result storage ({self.storage.backend}) cannot be reached, so result {key} "
                "cannot be erased everywhere yet. Retry the DELETE."
            ) from exc
