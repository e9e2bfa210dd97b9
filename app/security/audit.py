"""The audit log: one JSON line per request and per job, to stdout and to ``AUDIT_LOG``.

A line says who (tenant, key id — never the key), what (action, resource id, status), how much
(bytes in and out, duration) and from where (client address), with the request id that ties it to
the service's other logs and to the job it started. It never holds audio, features or option
values: those can carry personal data.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import orjson

#: The request id of the request (or job) being served, ``-`` outside one.
REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

#: Log line format of the service's own processes (``audioproc serve`` and ``worker``).
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"


class RequestIdFilter(logging.Filter):
    """Gives every log record the ``request_id`` of the request or job it was logged in."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


class AuditLog:
    """Writes audit records as JSON lines (thread-safe; each line one write, flushed). The file
    is opened for appending, line-buffered, for the life of the process."""

    def __init__(self, path: Path | None = None, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self._file = path.open("a", encoding="utf-8", buffering=1) if path else None
        self._lock = threading.Lock()

    def write(self, record: dict[str, Any]) -> None:
        """Write one record; ``time`` (UTC, RFC 3339 with milliseconds) is added first."""
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        line = orjson.dumps({"time": now, **record}).decode() + "\n"
        with self._lock:
            self.stream.write(line)
            self.stream.flush()
            if self._file is not None:
                self._file.write(line)
