"""API keys, scopes and the caller of a request.

Keys are configured only as SHA-256 hashes (``API_KEYS``, a JSON list of
``{"key_sha256", "tenant", "scopes"}``): a presented key is hashed and compared with *every*
configured hash in constant time, so neither the comparison nor an early exit tells an attacker
how close a guess was. A key's id in logs is the first 12 hex digits of its hash, never the key.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field

Scope = Literal["process", "read", "delete", "admin"]
#: Every scope; ``admin`` implies the other three.
SCOPES: tuple[Scope, ...] = ("process", "read", "delete", "admin")

#: Longest key accepted for hashing, characters (longer ones are unknown without being hashed).
MAX_KEY_CHARS = 256


class ApiKeyEntry(BaseModel):
    """One configured key (an element of ``API_KEYS``)."""

    key_sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$",
        description="SHA-256 of the key, 64 lowercase hex digits (`printf %s KEY | sha256sum`).",
    )
    tenant: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        description="The customer the key belongs to; every result and job it creates is theirs.",
    )
    scopes: list[Scope] = Field(
        min_length=1,
        description="`process` (POST /process, /process/batch, /jobs), `read` (GET results, "
        "audio, jobs), `delete` (DELETE /features/{id}), `admin` (all of them).",
    )


@dataclass(frozen=True)
class Principal:
    """The caller of a request.

    Attributes:
        tenant: who owns what the caller creates; ``None`` when the service runs open.
        key_id: first 12 hex digits of the key's SHA-256 (``None`` when open).
        scopes: what the key may do.
    """

    tenant: str | None
    key_id: str | None
    scopes: frozenset[str]

    def allows(self, scope: Scope) -> bool:
        return scope in self.scopes or "admin" in self.scopes


#: The caller when ``API_KEYS`` is unset: everything allowed, no tenant.
OPEN = Principal(tenant=None, key_id=None, scopes=frozenset(SCOPES))


def key_sha256(key: str) -> str:
    """The hex SHA-256 of a key, as ``API_KEYS`` stores it."""
    return hashlib.sha256(key.encode()).hexdigest()


class KeyRing:
    """The configured keys; :meth:`authenticate` finds a presented key's principal."""

    def __init__(self, entries: Iterable[ApiKeyEntry]) -> None:
        self._entries = [
            (
                bytes.fromhex(entry.key_sha256),
                Principal(entry.tenant, entry.key_sha256[:12], frozenset(entry.scopes)),
            )
            for entry in entries
        ]

    def __len__(self) -> int:
        return len(self._entries)

    def authenticate(self, key: str) -> Principal | None:
        """The principal of ``key``, or ``None`` for an unknown key. Takes the same time
        whichever entry matches (every hash is compared, with :func:`hmac.compare_digest`)."""
        if not key or len(key) > MAX_KEY_CHARS:
            return None
        digest = hashlib.sha256(key.encode()).digest()
        found = None
        for stored, principal in self._entries:
            if hmac.compare_digest(stored, digest):
                found = principal
        return found


CredentialError = Literal["missing", "malformed"]


def presented_key(headers: Mapping[bytes, bytes]) -> tuple[str | None, CredentialError | None]:
    """The key a request presents in ``X-API-Key`` or ``Authorization: Bearer``, as
    ``(key, None)``, or ``(None, why)`` when there is none: ``missing`` (neither header) or
    ``malformed`` (another auth scheme, two different keys, bytes that are not printable
    ASCII)."""
    header_key = headers.get(b"x-api-key")
    authorization = headers.get(b"authorization")
    bearer = None
    if authorization is not None:
        scheme, _, credentials = authorization.partition(b" ")
        if scheme.lower() != b"bearer" or not credentials.strip():
            return None, "malformed"
        bearer = credentials.strip()
    if header_key is not None and bearer is not None and header_key != bearer:
        return None, "malformed"
    raw = header_key if header_key is not None else bearer
    if raw is None:
        return None, "missing"
    if not raw.isascii() or not raw.decode().isprintable():
        return None, "malformed"
    return raw.decode(), None
