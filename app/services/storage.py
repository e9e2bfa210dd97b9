"""Result storage beyond the cache's lifetime: a local directory (the embedded default)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Protocol

import anyio


class ResultStorage(Protocol):
    """Content-addressed result bundles by id."""

    backend: str

    async def put(self, key: str, value: bytes) -> None: ...

    async def get(self, key: str) -> bytes | None: ...

    async def delete(self, key: str) -> None: ...


class LocalStorage:
    """Bundles under ``root/<id[:2]>/<id>.npz``; writes go through a temporary file and an atomic
    rename, so no reader ever sees half a file."""

    backend = "local"

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        if not key.isalnum():
            raise ValueError(f"storage keys are alphanumeric, got {key!r}")
        return self.root / key[:2] / f"{key}.npz"

    def _put(self, key: str, value: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(value)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _get(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    async def put(self, key: str, value: bytes) -> None:
        await anyio.to_thread.run_sync(self._put, key, value)

    async def get(self, key: str) -> bytes | None:
        return await anyio.to_thread.run_sync(self._get, key)

    async def delete(self, key: str) -> None:
        await anyio.to_thread.run_sync(lambda: self._path(key).unlink(missing_ok=True))
