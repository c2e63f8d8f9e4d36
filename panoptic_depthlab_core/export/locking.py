"""Cross-process file lock and atomic file replacement for the export caches.

Two processes (two nodes, a node and the CLI) may build the same engine at once; the lock makes the
second one wait and then reuse the first one's result, and writing to a temporary name in the same
directory followed by ``os.replace`` means a reader never sees a half-written file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def file_lock(lock_path: str | Path, timeout_s: float | None = None, poll_s: float = 0.1) -> Iterator[None]:
    """Exclusive ``fcntl.flock`` on ``lock_path`` (created if needed); ``timeout_s=None`` waits forever.

    The lock file itself is never deleted: removing it while another process waits on it would let a
    third process lock a different inode.
    """
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o666)
    try:
        if timeout_s is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        else:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(
                            f"timed out after {timeout_s}s waiting for lock {lock_path}"
                        ) from None
                    time.sleep(poll_s)
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@contextlib.contextmanager
def atomic_write_path(final_path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final_path``; on success it replaces ``final_path`` atomically,
    on error it is removed and ``final_path`` is untouched."""
    final_path = Path(final_path)
    final_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = final_path.with_name(f".{final_path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    try:
        yield tmp
        if not tmp.is_file():
            raise FileNotFoundError(f"nothing was written to {tmp} for {final_path}")
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final_path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def atomic_write_bytes(final_path: str | Path, data: bytes) -> None:
    with atomic_write_path(final_path) as tmp:
        tmp.write_bytes(data)
