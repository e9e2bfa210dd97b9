"""Process-wide tuning for the pipeline's workload (called by the service's entry points and by
the benchmarks, so that they measure what the service runs).

Each pipeline run allocates spectrogram-sized buffers (MBs to tens of MBs) and frees them. By
default glibc serves blocks over 128 KiB–32 MiB with fresh ``mmap``\\s and gives them back on
``free``, and trims the heap as soon as 128 KiB are free at its top: the next run page-faults
the same memory in again. On 60 s of speech that was 15–25 ms of system time per cleaning run
(≈ 7,500 page faults) — 138 → 98 ms for the whole default cleaning stage on noisy speech, and
the batched extraction's buffers likewise (docs/performance.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("audioproc.runtime")

#: ``mallopt`` parameters (glibc ``malloc.h``).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Blocks up to this size come from the heap, and are reused, bytes (glibc's maximum).
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
#: Free memory the heap keeps at its top before it is returned to the system, bytes.
TRIM_THRESHOLD_BYTES = 512 * 1024 * 1024


def keep_freed_buffers() -> bool:
    """Make glibc's malloc keep freed pipeline buffers for reuse (see the module docstring):
    blocks up to :data:`MMAP_THRESHOLD_BYTES` from the heap, and up to
    :data:`TRIM_THRESHOLD_BYTES` of free heap kept. The cost is that much resident memory held
    after a peak. Returns whether it applied (``False`` where the C library is not glibc)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        log.info("malloc tuning skipped: no glibc mallopt (C library %s)", name)
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
