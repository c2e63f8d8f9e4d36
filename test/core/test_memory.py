"""retain_freed_memory: per-frame-sized arrays stop page-faulting once freed memory is kept."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from panoptic_depthlab_core.memory import MAX_MMAP_THRESHOLD_BYTES, _glibc, retain_freed_memory

# A frame-like workload on a worker thread (its own malloc arena, as the node's inference thread):
# 40 arrays of 1-24 MiB, each touched and alive for 0-3 steps, the same sequence every frame; prints
# minor page faults per frame. By default glibc unmaps/trims much of it each frame; with only the
# thresholds raised the thread's emptied heaps are still unmapped (~500 faults here); the top pad
# keeps them too.
_PROBE = textwrap.dedent(
    """
    import resource, sys, threading
    import numpy as np
    if sys.argv[1] == "retain":
        from panoptic_depthlab_core.memory import retain_freed_memory
        assert retain_freed_memory().applied
    rng = np.random.default_rng(0)
    plan = [(int(rng.integers(1, 25)), int(rng.integers(0, 4))) for _ in range(40)]  # (MiB, steps alive)
    def frame():
        alive = []
        for step, (mib, keep) in enumerate(plan):
            alive.append((step + keep, np.ones(mib << 18, np.float32)))
            alive = [(until, a) for until, a in alive if until > step]
    def work(out):
        for it in range(8):
            if it == 3:
                start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            frame()
        out.append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start) / 5)
    out = []
    t = threading.Thread(target=work, args=(out,))
    t.start()
    t.join()
    print(out[0])
    """
)


def _faults_per_frame(mode: str) -> float:
    done = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return float(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(_glibc() is None, reason="mallopt thresholds are a glibc feature; other C libraries keep theirs")
def test_retained_memory_stops_per_frame_page_faults() -> None:
    default = _faults_per_frame("default")
    retained = _faults_per_frame("retain")
    assert default > 200, f"the workload should fault by default (got {default}/frame)"
    assert retained < 50, f"with retention the arrays should reuse mapped pages (got {retained}/frame)"


def test_thresholds_out_of_range_are_refused() -> None:
    with pytest.raises(ValueError, match="mmap_threshold_bytes"):
        retain_freed_memory(mmap_threshold_bytes=MAX_MMAP_THRESHOLD_BYTES + 1)
    with pytest.raises(ValueError, match="mmap_threshold_bytes"):
        retain_freed_memory(mmap_threshold_bytes=0)
    with pytest.raises(ValueError, match="trim_threshold_bytes"):
        retain_freed_memory(trim_threshold_bytes=2**31)


def test_other_c_libraries_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    import panoptic_depthlab_core.memory as memory

    monkeypatch.setattr(memory, "_glibc", lambda: None)
    result = memory.retain_freed_memory()
    assert not result.applied and "not glibc" in result.detail
