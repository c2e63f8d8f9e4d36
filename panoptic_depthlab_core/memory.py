"""Keep freed heap memory in the process, so each frame's big arrays reuse pages already mapped.

By default glibc hands big blocks back to the kernel as soon as they are freed (blocks above the
mmap threshold are unmapped; free memory at the heap top above the trim threshold is trimmed; a
worker thread's arena unmaps each of its 64 MiB heaps once it is empty). A frame at 1080p
allocates and frees dozens of multi-megabyte arrays (image tensor, per-pixel ids, depth, segment
statistics, output messages), so every frame page-faults them in again: thousands of minor faults
and a noticeable share of the frame in kernel time (measured in docs/performance.md). Raising the
thresholds alone is not enough: a worker thread's arena still unmaps its emptied heaps, hence the
top pad too. The cost: the process keeps its peak heap instead of returning it between frames —
what a long-running node wants anyway (its memory stays flat at the peak instead of oscillating).

The setting is process-wide and lasts for the process; long-running entry points (the ROS node,
the CLI, the benchmarks) call :func:`retain_freed_memory` once. Elsewhere than glibc it does nothing
and says why.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from dataclasses import dataclass

# mallopt() parameter numbers (glibc malloc.h)
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
# glibc refuses an mmap threshold above HEAP_MAX_SIZE / 2 = 32 MiB on 64-bit; blocks above it are
# always mapped and unmapped (at 1080p no per-frame array is that large)
MAX_MMAP_THRESHOLD_BYTES = 32 << 20
DEFAULT_TRIM_THRESHOLD_BYTES = 1 << 30
# A thread arena deletes an empty heap unless the pad asked for exceeds what that frees, so a pad
# of one whole heap (HEAP_MAX_SIZE, 64 MiB on 64-bit) keeps them; it is address space, not memory
# (pages are only resident once touched)
TOP_PAD_BYTES = 64 << 20


@dataclass(frozen=True)
class MemoryRetention:
    """What :func:`retain_freed_memory` did: ``applied`` and a sentence for the log."""

    applied: bool
    detail: str


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        libc.gnu_get_libc_version()  # absent in musl and other C libraries: AttributeError
        libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        libc.mallopt.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


def retain_freed_memory(
    mmap_threshold_bytes: int = MAX_MMAP_THRESHOLD_BYTES,
    trim_threshold_bytes: int = DEFAULT_TRIM_THRESHOLD_BYTES,
) -> MemoryRetention:
    """Raise glibc's mmap threshold, trim threshold and top pad (``mallopt``) for the rest of the process.

    Blocks up to ``mmap_threshold_bytes`` come from the heap, up to ``trim_threshold_bytes`` of free
    heap stay mapped, and worker threads' heaps are kept once empty. ValueError for a threshold
    glibc cannot take; on another C library nothing changes and ``applied`` is False.
    """
    if not 0 < mmap_threshold_bytes <= MAX_MMAP_THRESHOLD_BYTES:
        raise ValueError(
            f"mmap_threshold_bytes must be in 1..{MAX_MMAP_THRESHOLD_BYTES} (glibc's limit), "
            f"got {mmap_threshold_bytes}"
        )
    if not 0 < trim_threshold_bytes < 2**31:
        raise ValueError(f"trim_threshold_bytes must be in 1..{2**31 - 1}, got {trim_threshold_bytes}")
    libc = _glibc()
    if libc is None:
        return MemoryRetention(False, f"not glibc on {sys.platform}: freed memory is handled by the C library")
    version = libc.gnu_get_libc_version().decode()
    settings = ((_M_MMAP_THRESHOLD, mmap_threshold_bytes), (_M_TRIM_THRESHOLD, trim_threshold_bytes),
                (_M_TOP_PAD, TOP_PAD_BYTES))  # fmt: skip
    if not all(libc.mallopt(param, value) for param, value in settings):
        return MemoryRetention(False, f"glibc {version} refused mallopt thresholds")
    return MemoryRetention(
        True,
        f"glibc {version}: freed blocks up to {mmap_threshold_bytes >> 20} MiB stay in the heap "
        f"(up to {trim_threshold_bytes >> 20} MiB kept): no per-frame page faults",
    )


__all__ = ["MAX_MMAP_THRESHOLD_BYTES", "MemoryRetention", "retain_freed_memory"]
