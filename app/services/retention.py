"""Retention: delete stored results and staged uploads older than ``RETENTION_S``.

Redis entries bound themselves (cached results and job states expire after
``Settings.effective_cache_ttl_s`` / ``effective_job_ttl_s``, both capped at ``RETENTION_S``);
storage does not, so :func:`sweep` lists it (:meth:`ResultStorage.entries`,
:meth:`UploadStore.entries`) and deletes every item last written before ``now - RETENTION_S``:

- a complete result, through :meth:`ResultStorage.delete` (the manifest first, so a concurrent
  reader sees the whole result or none of it);
- debris, the objects of a result write that died before its manifest;
- a staged upload, whether or not its job is still queued: retention bounds everything, and a
  queued job whose input expired fails with ``job_input_gone``.

``audioproc sweep`` runs one sweep; ``audioproc worker`` (and the API's in-process worker) run
:func:`sweep_periodically` every ``SWEEP_INTERVAL_S``. An object lives at most ``RETENTION_S +
SWEEP_INTERVAL_S`` (plus the length of one sweep).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from app import metrics
from app.config import Settings
from app.errors import AudioprocError
from app.services.jobs import UploadStore
from app.services.storage import ResultStorage, StorageError, StoredEntry

log = logging.getLogger("audioproc.retention")


@dataclass
class SweepReport:
    """What one sweep deleted (or, in a dry run, would delete).

    Attributes:
        cutoff: items last written before this Unix time (s) expired.
        results: complete results deleted.
        debris: incomplete results (writes that died before the manifest) deleted.
        uploads: staged uploads deleted.
        bytes: total size of what was deleted, bytes.
        kept_results: results (and young debris) kept.
        kept_uploads: uploads kept.
        errors: deletions that failed (logged; the next sweep tries again).
        seconds: wall time of the sweep, s.
        expired: in a dry run, every expired item as ``(kind, id, age_s, size_bytes)``.
    """

    cutoff: float
    dry_run: bool = False
    results: int = 0
    debris: int = 0
    uploads: int = 0
    bytes: int = 0
    kept_results: int = 0
    kept_uploads: int = 0
    errors: int = 0
    seconds: float = 0.0
    expired: list[tuple[str, str, float, int]] = field(default_factory=list)

    def summary(self) -> str:
        """One line for logs and the CLI."""
        verb = "would delete" if self.dry_run else "deleted"
        text = (
            f"{verb} {self.results} result(s), {self.debris} incomplete result(s) and "
            f"{self.uploads} upload(s), {self.bytes / 2**20:.2f} MiB; kept {self.kept_results} "
            f"result(s) and {self.kept_uploads} upload(s); {self.seconds:.2f} s"
        )
        return text + (f"; {self.errors} deletion(s) failed" if self.errors else "")


async def sweep(
    storage: ResultStorage,
    uploads: UploadStore,
    *,
    retention_s: float,
    now: float | None = None,
    dry_run: bool = False,
) -> SweepReport:
    """Delete results, result debris and uploads last written more than ``retention_s`` seconds
    before ``now`` (Unix time, s; default: the current time).

    A failed deletion is logged and counted in :attr:`SweepReport.errors`; the sweep goes on.

    Raises:
        StorageError, AudioprocError: storage or the uploads could not be listed.
    """
    began = time.perf_counter()
    report = SweepReport(
        cutoff=(time.time() if now is None else now) - retention_s, dry_run=dry_run
    )
    try:
        expired: list[tuple[str, StoredEntry]] = []
        async for entry in storage.entries():
            if entry.modified_at < report.cutoff:
                expired.append(("result" if entry.complete else "debris", entry))
            else:
                report.kept_results += 1
        async for entry in uploads.entries():
            if entry.modified_at < report.cutoff:
                expired.append(("upload", entry))
            else:
                report.kept_uploads += 1
        for kind, entry in expired:
            if dry_run:
                age = report.cutoff + retention_s - entry.modified_at
                report.expired.append((kind, entry.id, age, entry.size_bytes))
            else:
                try:
                    if kind == "upload":
                        await uploads.delete(entry.id)
                    else:
                        await storage.delete(entry.id)
                except (StorageError, AudioprocError, OSError) as exc:
                    report.errors += 1
                    log.warning("retention: deleting %s %s failed: %s", kind, entry.id, exc)
                    continue
                metrics.RETENTION_DELETED.labels(kind).inc()
            report.bytes += entry.size_bytes
            if kind == "result":
                report.results += 1
            elif kind == "debris":
                report.debris += 1
            else:
                report.uploads += 1
    except Exception:
        metrics.RETENTION_SWEEPS.labels("failed").inc()
        raise
    report.seconds = time.perf_counter() - began
    metrics.RETENTION_SWEEPS.labels("failed" if report.errors else "ok").inc()
    return report


async def sweep_periodically(
    storage: ResultStorage, uploads: UploadStore, *, retention_s: float, interval_s: float
) -> None:
    """Run :func:`sweep` now and then every ``interval_s`` seconds until cancelled. A failing
    sweep is logged (and counted by :func:`sweep`) and retried at the next interval. The
    listing and deletions run in worker threads (local files) or as S3 requests in threads, so
    the event loop keeps serving jobs meanwhile."""
    while True:
        try:
            report = await sweep(storage, uploads, retention_s=retention_s)
            log.info("retention sweep: %s", report.summary())
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("retention sweep failed; the next one is in %g s", interval_s)
        await asyncio.sleep(interval_s)


def start_sweeper(
    settings: Settings, storage: ResultStorage, uploads: UploadStore
) -> asyncio.Task[None] | None:
    """:func:`sweep_periodically` as a task, when ``RETENTION_S`` is set and
    ``SWEEP_INTERVAL_S`` is not 0; the caller cancels it on shutdown."""
    if settings.retention_s is None or not settings.sweep_interval_s:
        return None
    log.info(
        "retention: sweeping items older than %d s every %g s",
        settings.retention_s,
        settings.sweep_interval_s,
    )
    return asyncio.create_task(
        sweep_periodically(
            storage,
            uploads,
            retention_s=settings.retention_s,
            interval_s=settings.sweep_interval_s,
        ),
        name="retention-sweep",
    )
