"""Result storage beyond the cache's lifetime: a local directory (the embedded default) or S3.

Both backends keep one result as three objects under a content-addressed prefix::

    <root>results/<id[:2]>/<id>/audio.wav       the processed audio, 32-bit float WAV
    <root>results/<id[:2]>/<id>/features.npz    every feature array, plus ``meta`` (UTF-8 JSON)
    <root>results/<id[:2]>/<id>/manifest.json   the result's metadata JSON

``<root>`` is ``STORAGE_DIR/`` locally and ``S3_PREFIX`` in ``S3_BUCKET``. Each object is written
atomically (locally a temporary file renamed over the target; in S3 a single PUT), the manifest
last, and deleted first: a result exists exactly when its manifest does, and a reader that finds
a manifest without the other two treats the result as absent.

:meth:`ResultStorage.entries` lists what is stored with its age, for the retention sweep
(:mod:`app.services.retention`): complete results, and the debris of writes that died before
their manifest.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import anyio

from app.services.s3 import S3Client, S3Error

log = logging.getLogger("audioproc.storage")

AUDIO = "audio.wav"
FEATURES = "features.npz"
MANIFEST = "manifest.json"
#: A result's objects in write order: the manifest last.
RESULT_OBJECTS = (AUDIO, FEATURES, MANIFEST)
CONTENT_TYPES = {AUDIO: "audio/wav", FEATURES: "application/x-npz", MANIFEST: "application/json"}
#: Name prefix of the temporary files of atomic local writes.
TEMP_PREFIX = ".tmp-"


@dataclass(frozen=True)
class StoredEntry:
    """One stored item as listed for the retention sweep.

    Attributes:
        id: the result id (or, for staged uploads, the upload key).
        modified_at: when it was last written, Unix time in seconds (a result: its manifest;
            debris: its newest object).
        size_bytes: total size of its objects, bytes.
        complete: ``False`` for debris: objects of a write that died before the manifest.
    """

    id: str
    modified_at: float
    size_bytes: int
    complete: bool = True


async def _concurrently(*calls: Awaitable[None]) -> list[S3Error]:
    """Await ``calls`` concurrently; the S3 errors they raised (other exceptions propagate)."""
    errors: list[S3Error] = []

    async def guarded(call: Awaitable[None]) -> None:
        try:
            await call
        except S3Error as error:
            errors.append(error)

    async with anyio.create_task_group() as group:
        for call in calls:
            group.start_soon(guarded, call)
    return errors


class StorageError(Exception):
    """The storage backend failed (I/O error, S3 unreachable or refusing); the message says how."""


def result_prefix(result_id: str) -> str:
    """``results/<id[:2]>/<id>/``, the relative prefix of one result's objects."""
    if not result_id.isascii() or not result_id.isalnum():
        raise ValueError(f"result ids are ASCII alphanumeric, got {result_id!r}")
    return f"results/{result_id[:2]}/{result_id}/"


def _check_objects(objects: Mapping[str, bytes]) -> None:
    if set(objects) != set(RESULT_OBJECTS):
        raise ValueError(f"a result has the objects {RESULT_OBJECTS}, got {sorted(objects)}")


class ResultStorage(Protocol):
    """A result's three objects (:data:`RESULT_OBJECTS`) by result id."""

    backend: str

    async def put(self, result_id: str, objects: Mapping[str, bytes]) -> None:
        """Write the objects, the manifest last. Raises :class:`StorageError`."""
        ...

    async def get(self, result_id: str) -> dict[str, bytes] | None:
        """All three objects, or ``None`` when the manifest (or any other object) is missing.
        Raises :class:`StorageError`."""
        ...

    async def delete(self, result_id: str) -> None:
        """Remove the objects, the manifest first; a missing result is not an error. Raises
        :class:`StorageError`."""
        ...

    def entries(self) -> AsyncIterator[StoredEntry]:
        """Every stored result, and the debris of writes that died before their manifest, with
        its age and size (no order promised). Raises :class:`StorageError`."""
        ...

    async def ping(self) -> None:
        """Raise :class:`StorageError` when the backend cannot be used."""
        ...


class LocalStorage:
    """Results in a directory, ``root/results/<id[:2]>/<id>/{audio.wav,features.npz,
    manifest.json}``. Every file is written to a temporary file in the same directory, flushed
    to disk and renamed over the target (``os.replace``), so no reader sees half a file."""

    backend = "local"

    def __init__(self, root: Path) -> None:
        self.root = root

    def _dir(self, result_id: str) -> Path:
        return self.root / result_prefix(result_id)

    @staticmethod
    def _write_atomic(path: Path, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _put(self, result_id: str, objects: Mapping[str, bytes]) -> None:
        _check_objects(objects)
        directory = self._dir(result_id)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            for name in RESULT_OBJECTS:
                self._write_atomic(directory / name, objects[name])
        except OSError as exc:
            raise StorageError(f"writing result {result_id} to {directory} failed: {exc}") from exc

    def _get(self, result_id: str) -> dict[str, bytes] | None:
        directory = self._dir(result_id)
        try:
            objects = {MANIFEST: (directory / MANIFEST).read_bytes()}
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"reading result {result_id} failed: {exc}") from exc
        for name in (AUDIO, FEATURES):
            try:
                objects[name] = (directory / name).read_bytes()
            except FileNotFoundError:
                log.warning(
                    "result %s has a manifest but no %s: treated as absent", result_id, name
                )
                return None
            except OSError as exc:
                raise StorageError(f"reading result {result_id} failed: {exc}") from exc
        return objects

    def _delete(self, result_id: str) -> None:
        directory = self._dir(result_id)
        try:
            for name in reversed(RESULT_OBJECTS):
                (directory / name).unlink(missing_ok=True)
            # The temporary files of writes that died hold the same data: erase them too.
            for leftover in directory.glob(f"{TEMP_PREFIX}*"):
                leftover.unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(f"deleting result {result_id} failed: {exc}") from exc
        for empty in (directory, directory.parent):
            try:
                empty.rmdir()
            except OSError:
                break  # not empty (another result, a concurrent write) or already gone

    def _shard_entries(self, shard: Path) -> list[StoredEntry]:
        """The entries of one ``results/<xx>/`` directory (one ``os.scandir`` per result)."""
        out: list[StoredEntry] = []
        try:
            directories = [d for d in os.scandir(shard) if d.is_dir(follow_symlinks=False)]
        except FileNotFoundError:
            return out
        for directory in directories:
            if not (directory.name.isascii() and directory.name.isalnum()):
                continue
            files: dict[str, os.stat_result] = {}
            try:
                with os.scandir(directory.path) as items:
                    for item in items:
                        if item.is_file(follow_symlinks=False):
                            files[item.name] = item.stat(follow_symlinks=False)
                newest = directory.stat(follow_symlinks=False).st_mtime
            except FileNotFoundError:
                continue  # deleted meanwhile
            size = sum(st.st_size for st in files.values())
            if MANIFEST in files:
                out.append(StoredEntry(directory.name, files[MANIFEST].st_mtime, size))
            else:
                newest = max([newest, *(st.st_mtime for st in files.values())])
                out.append(StoredEntry(directory.name, newest, size, complete=False))
        return out

    async def entries(self) -> AsyncIterator[StoredEntry]:
        """Results by ``results/<xx>/`` shard, each shard scanned in a worker thread."""
        base = self.root / "results"
        try:
            shards = await anyio.to_thread.run_sync(
                lambda: sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
            )
            for shard in shards:
                for entry in await anyio.to_thread.run_sync(self._shard_entries, shard):
                    yield entry
        except OSError as exc:
            raise StorageError(f"listing results in {base} failed: {exc}") from exc

    def _ping(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"{self.root} cannot be created: {exc}") from exc
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StorageError(f"{self.root} is not writable")

    async def put(self, result_id: str, objects: Mapping[str, bytes]) -> None:
        await anyio.to_thread.run_sync(self._put, result_id, objects)

    async def get(self, result_id: str) -> dict[str, bytes] | None:
        return await anyio.to_thread.run_sync(self._get, result_id)

    async def delete(self, result_id: str) -> None:
        await anyio.to_thread.run_sync(self._delete, result_id)

    async def ping(self) -> None:
        await anyio.to_thread.run_sync(self._ping)

    def __str__(self) -> str:
        return f"local:{self.root}"


class S3Storage:
    """Results in an S3 bucket under ``<prefix>results/<id[:2]>/<id>/``.

    A PUT replaces an object atomically; the audio and features are written (concurrently)
    before the manifest, and the manifest is deleted before them. Transient S3 failures are
    retried by :class:`~app.services.s3.S3Client`; what remains becomes :class:`StorageError`.
    """

    backend = "s3"

    def __init__(self, client: S3Client, *, bucket: str, prefix: str = "") -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix

    def key(self, result_id: str, name: str) -> str:
        """The object key of one of a result's objects."""
        return f"{self.prefix}{result_prefix(result_id)}{name}"

    async def put(self, result_id: str, objects: Mapping[str, bytes]) -> None:
        _check_objects(objects)

        async def put(name: str) -> None:
            await self.client.put(
                self.bucket,
                self.key(result_id, name),
                objects[name],
                content_type=CONTENT_TYPES[name],
            )

        errors = await _concurrently(put(AUDIO), put(FEATURES))
        if not errors:
            try:
                await put(MANIFEST)
            except S3Error as error:
                errors = [error]
        if errors:
            raise StorageError(f"writing result {result_id} to S3 failed: {errors[0]}") from errors[
                0
            ]

    async def get(self, result_id: str) -> dict[str, bytes] | None:
        objects: dict[str, bytes] = {}

        async def get(name: str) -> None:
            objects[name] = await self.client.get(self.bucket, self.key(result_id, name))

        try:
            await get(MANIFEST)
        except S3Error as error:
            if error.kind == "not_found":
                return None
            raise StorageError(f"reading result {result_id} from S3 failed: {error}") from error
        errors = await _concurrently(get(AUDIO), get(FEATURES))
        if errors and all(e.kind == "not_found" for e in errors):
            log.warning(
                "result %s has a manifest but not all objects: treated as absent", result_id
            )
            return None
        if errors:
            raise StorageError(
                f"reading result {result_id} from S3 failed: {errors[0]}"
            ) from errors[0]
        return objects

    async def delete(self, result_id: str) -> None:
        try:
            for name in reversed(RESULT_OBJECTS):
                await self.client.delete(self.bucket, self.key(result_id, name))
        except S3Error as error:
            raise StorageError(f"deleting result {result_id} from S3 failed: {error}") from error

    async def entries(self) -> AsyncIterator[StoredEntry]:
        """Results from a paginated listing of ``<prefix>results/``: the listing is in key order,
        so a result's objects arrive together."""
        base = f"{self.prefix}results/"
        current: str | None = None
        objects: dict[str, tuple[int, float]] = {}  # name -> (size, last modified)

        def entry() -> StoredEntry:
            assert current is not None
            size = sum(size for size, _ in objects.values())
            if MANIFEST in objects:
                return StoredEntry(current, objects[MANIFEST][1], size)
            newest = max(modified for _, modified in objects.values())
            return StoredEntry(current, newest, size, complete=False)

        try:
            async for item in self.client.list_objects(self.bucket, base):
                parts = item.key[len(base) :].split("/")
                if len(parts) != 3 or not (parts[1].isascii() and parts[1].isalnum()):
                    continue  # not a result's object
                if parts[1] != current:
                    if current is not None:
                        yield entry()
                    current, objects = parts[1], {}
                objects[parts[2]] = (item.size, item.last_modified)
        except S3Error as error:
            raise StorageError(f"listing results in S3 failed: {error}") from error
        if current is not None:
            yield entry()

    async def ping(self) -> None:
        try:
            await self.client.head_bucket(self.bucket)
        except S3Error as error:
            raise StorageError(f"bucket {self.bucket}: {error.kind} ({error.reason})") from error

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"
