"""Encryption at rest: AES-256-GCM envelopes, and adapters that seal what the service stores.

With ``ENCRYPTION_KEY`` set, every object written to result storage (local or S3), every staged
job upload and (unless ``CACHE_ENCRYPT=false``) every cache entry is one *envelope*::

    offset  size  field
         0     4  magic  b"\\x89APE"
         4     1  version (1)
         5     8  key id: SHA-256(b"audioproc key id\\n" + key)[:8]
        13    12  nonce, random per envelope (96 bits)
        25   n+16 AES-256-GCM ciphertext of the n plaintext bytes, then the 16-byte tag

The associated data is the 25-byte header followed by the object's *context*, its place in the
service (``result/<id>/audio.wav``, ``cache/<key>``, ``upload/<key>``): the tag covers the
header, so a changed version or key id fails, and the context, so an object copied or moved to
another id fails to open instead of serving another recording's data.

Keys rotate: the key id names the key that sealed an envelope, ``ENCRYPTION_KEY`` seals new
writes, and ``ENCRYPTION_KEYS_OLD`` lists keys that only open. Anything that does not open —
altered, truncated, sealed for another place, by a key not configured, or never sealed — raises
:class:`~app.errors.StoredDataCorrupt`; no plaintext is returned unless the tag verified.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING

import anyio
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from app import metrics
from app.errors import StoredDataCorrupt
from app.services.cache import ResultCache
from app.services.storage import ResultStorage, StoredEntry

if TYPE_CHECKING:
    from app.config import Settings
    from app.services.jobs import UploadStore

log = logging.getLogger("audioproc.crypto")

MAGIC = b"\x89APE"
VERSION = 1
KEY_BYTES = 32
KEY_ID_BYTES = 8
NONCE_BYTES = 12
TAG_BYTES = 16
#: Bytes before the ciphertext: magic, version, key id, nonce.
HEADER_BYTES = len(MAGIC) + 1 + KEY_ID_BYTES + NONCE_BYTES


def decode_key(text: str, *, name: str) -> bytes:
    """The 32-byte key that ``text`` (standard or URL-safe base64) encodes.

    Raises:
        ValueError: not base64, or not 32 bytes; the message names the setting ``name``, never
            the value.
    """
    cleaned = text.strip()
    try:
        key = base64.b64decode(cleaned.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(
            f"{name} is not base64; make a key with "
            "`python -c 'import os, base64; print(base64.b64encode(os.urandom(32)).decode())'`"
        ) from None
    if len(key) != KEY_BYTES:
        raise ValueError(f"{name} must encode {KEY_BYTES} bytes (AES-256), got {len(key)}")
    return key


def key_id(key: bytes) -> bytes:
    """The 8-byte id of ``key`` written in each envelope (a hash prefix: reveals nothing usable)."""
    return hashlib.sha256(b"audioproc key id\n" + key).digest()[:KEY_ID_BYTES]


class Sealer:
    """Seals bytes with one key and opens them with it or any of the old keys.

    Args:
        key: the 32-byte key new envelopes are sealed with.
        old_keys: 32-byte keys that only open envelopes (a rotation's previous keys).
    """

    def __init__(self, key: bytes, old_keys: Sequence[bytes] = ()) -> None:
        self.key_id = key_id(key)
        self._sealing = AESGCM(key)
        self._opening = {key_id(k): AESGCM(k) for k in (*old_keys, key)}

    @classmethod
    def from_settings(cls, settings: Settings) -> Sealer | None:
        """The sealer of ``ENCRYPTION_KEY`` and ``ENCRYPTION_KEYS_OLD``; ``None`` without a key."""
        if settings.encryption_key is None:
            return None
        old = settings.encryption_keys_old.get_secret_value().split(",")
        return cls(
            decode_key(settings.encryption_key.get_secret_value(), name="ENCRYPTION_KEY"),
            [decode_key(k, name="ENCRYPTION_KEYS_OLD") for k in old if k.strip()],
        )

    def seal(self, data: bytes, *, context: str) -> bytes:
        """The envelope of ``data`` for the place ``context`` (``HEADER_BYTES + len(data) + 16``
        bytes)."""
        header = MAGIC + bytes([VERSION]) + self.key_id + os.urandom(NONCE_BYTES)
        nonce = header[-NONCE_BYTES:]
        return header + self._sealing.encrypt(nonce, data, header + context.encode())

    def open(self, envelope: bytes, *, context: str) -> bytes:
        """The plaintext sealed in ``envelope`` for ``context``.

        Raises:
            StoredDataCorrupt: not an envelope, an unknown version or key, or authentication
                failed (altered, truncated, or sealed for another context).
        """
        if len(envelope) < HEADER_BYTES + TAG_BYTES or not envelope.startswith(MAGIC):
            raise _corrupt(context, "it is not an encrypted envelope (stored without encryption?)")
        version = envelope[len(MAGIC)]
        if version != VERSION:
            raise _corrupt(context, f"its envelope version {version} is unknown")
        header = envelope[:HEADER_BYTES]
        kid = header[len(MAGIC) + 1 : len(MAGIC) + 1 + KEY_ID_BYTES]
        aead = self._opening.get(kid)
        if aead is None:
            raise _corrupt(
                context,
                f"it was sealed with key id {kid.hex()}, which is neither ENCRYPTION_KEY nor in "
                "ENCRYPTION_KEYS_OLD",
            )
        try:
            return aead.decrypt(
                header[-NONCE_BYTES:], envelope[HEADER_BYTES:], header + context.encode()
            )
        except InvalidTag:
            raise _corrupt(
                context, "authentication failed: it was altered, truncated or belongs elsewhere"
            ) from None


def _corrupt(context: str, reason: str) -> StoredDataCorrupt:
    return StoredDataCorrupt(
        f"The stored object {context} cannot be opened: {reason}. It is not served; restore it "
        "from a backup, or erase it and process the recording again.",
        object=context,
    )


class SealedStorage:
    """A :class:`~app.services.storage.ResultStorage` whose objects are sealed envelopes with
    the context ``result/<id>/<name>``. Reads that do not open raise
    :class:`~app.errors.StoredDataCorrupt` (500), not :class:`StorageError` (503, retry)."""

    def __init__(self, inner: ResultStorage, sealer: Sealer) -> None:
        self.inner = inner
        self.sealer = sealer
        self.backend = inner.backend

    def _seal(self, result_id: str, objects: Mapping[str, bytes]) -> dict[str, bytes]:
        return {
            name: self.sealer.seal(data, context=f"result/{result_id}/{name}")
            for name, data in objects.items()
        }

    def _open(self, result_id: str, objects: Mapping[str, bytes]) -> dict[str, bytes]:
        return {
            name: self.sealer.open(data, context=f"result/{result_id}/{name}")
            for name, data in objects.items()
        }

    async def put(self, result_id: str, objects: Mapping[str, bytes]) -> None:
        sealed = await anyio.to_thread.run_sync(self._seal, result_id, objects)
        await self.inner.put(result_id, sealed)

    async def get(self, result_id: str) -> dict[str, bytes] | None:
        objects = await self.inner.get(result_id)
        if objects is None:
            return None
        try:
            return await anyio.to_thread.run_sync(self._open, result_id, objects)
        except StoredDataCorrupt as exc:
            log.error("%s", exc.detail)
            raise

    async def delete(self, result_id: str) -> None:
        await self.inner.delete(result_id)

    def entries(self) -> AsyncIterator[StoredEntry]:
        """The inner storage's listing (ids, ages and sealed sizes need no key)."""
        return self.inner.entries()

    async def ping(self) -> None:
        await self.inner.ping()

    def __str__(self) -> str:
        return str(self.inner)


class SealedCache:
    """A :class:`~app.services.cache.ResultCache` of sealed values (context ``cache/<key>``).

    A value that does not open is a miss: it is deleted, logged and counted
    (``audioproc_cache_unreadable_total``), and the result is looked up in storage or computed.
    """

    def __init__(self, inner: ResultCache, sealer: Sealer) -> None:
        self.inner = inner
        self.sealer = sealer
        self.backend = inner.backend

    async def get(self, key: str) -> bytes | None:
        value = await self.inner.get(key)
        if value is None:
            return None
        try:
            return await anyio.to_thread.run_sync(
                lambda: self.sealer.open(value, context=f"cache/{key}")
            )
        except StoredDataCorrupt as exc:
            metrics.CACHE_UNREADABLE.inc()
            log.warning("cache entry dropped: %s", exc.detail)
            await self.inner.delete(key)
            return None

    async def set(self, key: str, value: bytes) -> None:
        sealed = await anyio.to_thread.run_sync(
            lambda: self.sealer.seal(value, context=f"cache/{key}")
        )
        await self.inner.set(key, sealed)

    async def delete(self, key: str) -> None:
        await self.inner.delete(key)

    async def ping(self) -> None:
        await self.inner.ping()

    async def close(self) -> None:
        await self.inner.close()


class SealedUploads:
    """An :class:`~app.services.jobs.UploadStore` of sealed job inputs (context
    ``upload/<key>``); an input that does not open raises :class:`~app.errors.StoredDataCorrupt`
    (the job fails instead of processing altered audio)."""

    def __init__(self, inner: UploadStore, sealer: Sealer) -> None:
        self.inner = inner
        self.sealer = sealer
        self.backend = inner.backend

    async def put(self, key: str, data: bytes) -> None:
        sealed = await anyio.to_thread.run_sync(
            lambda: self.sealer.seal(data, context=f"upload/{key}")
        )
        await self.inner.put(key, sealed)

    async def get(self, key: str) -> bytes | None:
        data = await self.inner.get(key)
        if data is None:
            return None
        try:
            return await anyio.to_thread.run_sync(
                lambda: self.sealer.open(data, context=f"upload/{key}")
            )
        except StoredDataCorrupt as exc:
            log.error("%s", exc.detail)
            raise

    async def delete(self, key: str) -> None:
        await self.inner.delete(key)

    def entries(self) -> AsyncIterator[StoredEntry]:
        """The inner store's listing (keys, ages and sealed sizes need no key)."""
        return self.inner.entries()
