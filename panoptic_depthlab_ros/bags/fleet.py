"""``panoptic-depthlab bag-eval-fleet BAGS... --out-dir DIR``: ``bag-eval`` over many bags at once.

BAGS are bags (a rosbag2 directory, or a bare .mcap/.db3 file), directories searched for bags,
glob patterns, or list files (``@bags.txt`` or ``*.txt``: one path per line, ``#`` comments).
Every bag is evaluated exactly as ``bag-eval`` does it (the same ``BagEvaluator``, the same
options), by N local worker processes (``--workers``, default one per core) or by tasks on a Ray
cluster (``--ray ADDRESS``; GPU workers through Ray's ``num_gpus`` resource when the device is cuda).

Per bag, ``DIR/<name>/`` holds ``output/`` (the output bag), ``metrics/`` (bag-eval's metrics),
``predictions/`` (with ``--export-predictions``) and ``done.json``, the marker that says the bag is
finished: the input's files (size, mtime), its sha256, the model id (hash of config + weights) and
the options id. ``DIR/fleet_report.json`` / ``.md`` aggregate every bag: status, frames, frames/s,
metrics, failures with their reasons, and the overall numbers.

Resumable and safe to kill: a worker writes into ``DIR/.work/<name>.<host>.<pid>.<id>/`` and, only
when the bag is finished, renames that folder to ``DIR/<name>`` (one atomic rename; a stale result
is moved aside first). So ``DIR/<name>`` is always either complete or absent, a rerun skips every bag
whose marker matches its input, model and options, and a bag whose worker died is simply run again
(``--retries`` times in the same run, and by the next run). One driver per output folder (a lock).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import glob
import hashlib
import json
import math
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import time
import traceback
import uuid
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from multiprocessing.connection import wait as wait_connections
from pathlib import Path
from typing import Any

import cv2
import torch

from panoptic_depthlab_core.predictor import DEFAULT_CONFIG, DEFAULT_WEIGHTS, Predictor
from panoptic_depthlab_ros.processing import FrameProcessor, make_distance_tracking, message_options

from . import bag_eval
from .common import cli_main
from .prediction_export import BagPredictionExport, ExportSettings
from .transport import sigterm_as_interrupt

MARKER = "done.json"
MARKER_VERSION = 1
WORK_DIR = ".work"
TRASH_DIR = ".trash"
LOCK_FILE = ".fleet.lock"
REPORT_NAME = "fleet_report"
BAG_FILE_SUFFIXES = (".mcap", ".db3")
# bag-eval options the fleet sets per bag (or that make no sense for a fleet)
PER_BAG_DESTS = frozenset({"in_bag", "out", "metrics_out", "no_progress", "export_predictions", "help"})
# bag-eval options that change nothing in the outputs (left out of the options id)
NEUTRAL_DESTS = frozenset({"no_progress"})
STATUS_DONE, STATUS_PARTIAL, STATUS_FAILED, STATUS_SKIPPED = "done", "partial", "failed", "skipped"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs",
        nargs="+",
        help="bags (rosbag2 directory or .mcap/.db3 file), directories to search, globs, or list files "
        "(@list.txt or *.txt, one path per line)",
    )
    parser.add_argument("--out-dir", type=Path, required=True, help="folder for every bag's outputs + report")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="local worker processes (default: one per core; 0 = in this process, for debugging); "
        "with --ray: most bags in flight (default: all)",
    )
    parser.add_argument(
        "--ray",
        default=None,
        metavar="ADDRESS",
        help="run on a Ray cluster: 'auto', HOST:PORT of the head (ray start --head) or ray://HOST:10001",
    )
    parser.add_argument("--cpus-per-bag", type=float, default=1.0, help="Ray: CPUs a bag's task asks for")
    parser.add_argument(
        "--gpus-per-bag",
        type=float,
        default=None,
        help="Ray: GPUs a bag's task asks for (default 1 when --device is cuda, else 0; 0.5 = two per GPU)",
    )
    parser.add_argument(
        "--threads-per-worker",
        type=int,
        default=None,
        help="CPU threads of each worker's model (default: cores / workers locally, --cpus-per-bag on Ray)",
    )
    parser.add_argument(
        "--retries", type=int, default=1, help="re-run a bag whose worker died this many times (default 1)"
    )
    parser.add_argument(
        "--retry-failed", action="store_true", help="also re-run bags that ended with an error last time"
    )
    parser.add_argument(
        "--verify-inputs",
        action="store_true",
        help="skip a finished bag only if its input's sha256 still matches (reads every input again)",
    )
    parser.add_argument(
        "--export-predictions",
        action="store_true",
        help="also write each bag's predictions (Cityscapes panoptic format) under DIR/<name>/predictions",
    )
    # Every per-bag option of bag-eval, with its own help and defaults (one source of truth).
    per_bag = argparse.ArgumentParser(add_help=False)
    bag_eval.add_arguments(per_bag)
    group = parser.add_argument_group("bag-eval options (applied to every bag)")
    for action in per_bag._actions:
        if action.dest not in PER_BAG_DESTS:
            group._add_action(action)


# ------------------------------------------------------------------------------------------ bags


def is_bag(path: Path) -> bool:
    """A rosbag2 directory (metadata.yaml) or a bare storage file."""
    if path.is_dir():
        return (path / "metadata.yaml").is_file()
    return path.is_file() and path.suffix in BAG_FILE_SUFFIXES


def _bags_under(root: Path) -> list[Path]:
    """Bags below a directory: bag directories (not entered) and storage files outside them."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if "metadata.yaml" in filenames:
            found.append(here)
            dirnames.clear()
            continue
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(here / f for f in sorted(filenames) if Path(f).suffix in BAG_FILE_SUFFIXES)
    return found


def _read_list_file(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"bag list file not found: {path}")
    entries = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            entries.append(line if os.path.isabs(line) else str(path.parent / line))
    return entries


def collect_bags(inputs: list[str]) -> list[Path]:
    """Every bag the inputs name, resolved, de-duplicated, sorted; errors name the input."""
    bags: dict[Path, None] = {}
    queue = deque(inputs)
    while queue:
        item = str(queue.popleft())
        if item.startswith("@"):
            queue.extend(_read_list_file(Path(item[1:])))
            continue
        path = Path(item)
        if any(ch in item for ch in "*?["):
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                raise FileNotFoundError(f"no bag matches the pattern {item!r}")
            for match in matches:
                found = [Path(match)] if is_bag(Path(match)) else _bags_under(Path(match)) if Path(
                    match
                ).is_dir() else []
                bags.update(dict.fromkeys(p.resolve() for p in found))
            continue
        if path.suffix == ".txt" and path.is_file():
            queue.extend(_read_list_file(path))
        elif is_bag(path):
            bags[path.resolve()] = None
        elif path.is_dir():
            found = _bags_under(path)
            if not found:
                raise FileNotFoundError(f"no bags (metadata.yaml, *.mcap, *.db3) under {path}")
            bags.update(dict.fromkeys(p.resolve() for p in found))
        elif path.exists():
            raise ValueError(f"{path} is not a bag (a rosbag2 directory, .mcap or .db3 file) nor a list file")
        else:
            raise FileNotFoundError(f"bag not found: {path}")
    if not bags:
        raise FileNotFoundError(f"no bags found in {' '.join(inputs)}")
    return sorted(bags)


def bag_files(bag: Path) -> list[Path]:
    """The files that make up a bag (the file itself, or the bag directory's files)."""
    if bag.is_file():
        return [bag]
    return sorted(p for p in bag.iterdir() if p.is_file())


def input_fingerprint(bag: Path) -> list[list[Any]]:
    """[[file name, size, mtime_ns], ...]: cheap to compare on every run."""
    return [[p.name, st.st_size, st.st_mtime_ns] for p in bag_files(bag) for st in (p.stat(),)]


def input_sha256(bag: Path) -> str:
    """sha256 over the bag's files (name and content, in name order)."""
    digest = hashlib.sha256()
    for path in bag_files(bag):
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def output_names(bags: list[Path]) -> list[str]:
    """One folder name per bag: its name, made unique with a hash of its path where names clash."""
    base = [b.name if b.is_dir() else b.stem for b in bags]
    counts: dict[str, int] = {}
    for name in base:
        counts[name] = counts.get(name, 0) + 1
    names = []
    for bag, name in zip(bags, base, strict=True):
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).lstrip(".") or "bag"
        if counts[name] > 1:
            safe += "-" + hashlib.sha256(str(bag).encode()).hexdigest()[:8]
        names.append(safe)
    return names


# ------------------------------------------------------------------------------------------ identity


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def model_id(params: Any) -> str:
    """sha256 of the model config and weights files the parameters name (the default model's when
    empty); random initialisation (a config without weights) is named as such."""
    config = Path(params.model_config) if params.model_config else DEFAULT_CONFIG
    weights = Path(params.weights) if params.weights else (None if params.model_config else DEFAULT_WEIGHTS)
    digest = hashlib.sha256()
    for what, path in (("config", config), ("weights", weights)):
        if path is None:
            digest.update(f"{what}:random-init\0".encode())
            continue
        if not path.is_file():
            raise FileNotFoundError(f"model {what} file not found: {path}")
        digest.update(f"{what}:{_file_sha256(path)}\0".encode())
    return digest.hexdigest()[:16]


def options_id(options: Any, export: dict | None) -> str:
    """Hash of everything else that shapes a bag's outputs: bag-eval's options (node parameters
    included) and the export settings."""
    doc = {k: v for k, v in asdict(options).items() if k not in ("metrics_out", "progress")}
    doc["export"] = export
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------ jobs


@dataclass(frozen=True)
class BagJob:
    """One bag to evaluate; plain data, sent to a worker process or a Ray task."""

    index: int
    input: str
    name: str
    out_dir: str
    fingerprint: list
    options: Any  # bag_eval.BagEvalOptions (node parameters included)
    model_id: str
    options_id: str
    export: dict | None = None  # ExportSettings fields but out_dir (each bag exports into its folder)
    threads: int = 0  # model CPU threads; 0 = the library's default

    @property
    def final_dir(self) -> Path:
        return Path(self.out_dir) / self.name


@dataclass
class BagOutcome:
    """What happened to one bag (a row of the report)."""

    name: str
    input: str
    status: str  # done | partial (stopped at damage, frames before it kept) | failed | skipped
    frames: int = 0
    frames_with_gt: int = 0
    seconds: float = 0.0
    frames_per_second: float | None = None
    error: str | None = None
    metrics: dict | None = None
    rejected: dict = field(default_factory=dict)
    worker: str | None = None
    attempts: int = 0
    output_dir: str | None = None


def read_marker(final_dir: Path) -> dict | None:
    try:
        marker = json.loads((final_dir / MARKER).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return marker if isinstance(marker, dict) and marker.get("version") == MARKER_VERSION else None


def finished(job: BagJob, retry_failed: bool, verify_inputs: bool) -> dict | None:
    """The marker when ``job``'s bag is finished for this input, model and options; else None."""
    marker = read_marker(job.final_dir)
    if marker is None:
        return None
    if (
        marker.get("input_files") != job.fingerprint
        or marker.get("model_id") != job.model_id
        or marker.get("options_id") != job.options_id
    ):
        return None
    if retry_failed and marker.get("status") != STATUS_DONE:
        return None
    if verify_inputs and marker.get("input_sha256") != input_sha256(Path(job.input)):
        return None
    return marker


def _metrics_digest(report: Any) -> dict | None:
    """The headline numbers of a bag's metrics (all of them stay in its folder): one camera's, or,
    for several, their frame-weighted mean plus each camera's under ``cameras``."""
    per_camera = {}
    for topic, camera in report.cameras.items():
        summary = camera.summary
        if not summary:
            continue
        out: dict[str, Any] = {"frames": summary.get("frames")}
        panoptic = summary.get("panoptic", {})
        for group in ("All", "Things", "Stuff"):
            if group in panoptic:
                out[f"pq_{group.lower()}"] = panoptic[group].get("pq")
        if "semantic" in summary:
            out["miou"] = summary["semantic"].get("miou")
        for key in ("abs_rel", "rmse", "delta1"):
            if key in summary.get("depth", {}):
                out[key] = summary["depth"][key]
        if "dpq" in summary:
            out["dpq"] = summary["dpq"].get("dpq")
        per_camera[topic] = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}
    if not per_camera:
        return None
    if len(per_camera) == 1:
        return next(iter(per_camera.values()))
    rows = list(per_camera.values())
    merged: dict[str, Any] = {"frames": sum(r.get("frames") or 0 for r in rows)}
    for key in sorted({k for r in rows for k in r} - {"frames"}):
        merged[key] = _weighted_mean([(r.get(key), r.get("frames") or 0) for r in rows])
    merged["cameras"] = per_camera
    return merged


def _weighted_mean(pairs: list[tuple[Any, float]]) -> float | None:
    pairs = [(v, w) for v, w in pairs if v is not None and w > 0]
    total = sum(w for _, w in pairs)
    return sum(v * w for v, w in pairs) / total if total else None


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _publish(work: Path, job: BagJob) -> bool:
    """Rename the finished work folder to the bag's final folder, replacing a stale result (another
    input, model or options, or an earlier partial one); False when the same complete result is
    already there (a duplicate run: ours is dropped, never two copies)."""
    final, out_dir = job.final_dir, Path(job.out_dir)
    if final.exists():
        if finished(job, retry_failed=True, verify_inputs=False) is not None:  # the same, complete
            shutil.rmtree(work, ignore_errors=True)
            return False
        trash = out_dir / TRASH_DIR
        trash.mkdir(parents=True, exist_ok=True)
        stale = trash / f"{final.name}.{uuid.uuid4().hex[:8]}"
        with contextlib.suppress(FileNotFoundError):
            os.rename(final, stale)
        shutil.rmtree(stale, ignore_errors=True)
    try:
        os.rename(work, final)
    except OSError:  # someone else's result landed in between: keep theirs
        shutil.rmtree(work, ignore_errors=True)
        return False
    _fsync_dir(out_dir)
    return True


class ProcessorCache:
    """One FrameProcessor per (model, options) in a worker process: a worker evaluates many bags,
    and loading the model for each would cost seconds per bag."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._processor: Any = None

    def get(self, job: BagJob, params: Any) -> Any:
        key = (job.model_id, job.options_id, job.threads)
        if self._key != key:
            if self._processor is not None:
                self._processor.close()
            self._processor = build_processor(params, job.threads)
            self._key = key
        return self._processor


def build_processor(params: Any, threads: int = 0) -> Any:
    """``bag_eval.make_processor(params)``, with the model's CPU threads set when ``threads`` > 0:
    workers share the cores, and both torch and ONNX Runtime would otherwise each take them all."""
    if threads <= 0:
        return bag_eval.make_processor(params)
    torch.set_num_threads(threads)  # the post-processing runs in torch too
    cv2.setNumThreads(threads)  # image decoding and resizing
    predictor = Predictor.from_config(
        config=params.model_config or None,
        weights=params.weights or None,
        backend=params.backend,
        device=params.device,
        precision=params.precision,
        overrides=params.overrides(),
        num_threads=threads,
    )
    return FrameProcessor(
        predictor,
        message_options(params),
        prefer_rectified=params.prefer_rectified,
        max_pixels=params.max_input_pixels,
        tracking=make_distance_tracking(params),  # as bag_eval.make_processor: the node's tracker
    )


def process_bag(job: BagJob, cache: ProcessorCache) -> BagOutcome:
    """Evaluate one bag into a private work folder and publish it atomically. Runs in a worker."""
    out_dir = Path(job.out_dir)
    host, pid = socket.gethostname(), os.getpid()
    work = out_dir / WORK_DIR / f"{job.name}.{host}.{pid}.{uuid.uuid4().hex[:8]}"
    work.mkdir(parents=True)
    outcome = BagOutcome(job.name, job.input, STATUS_FAILED, worker=f"{host}:{pid}")
    try:
        options = replace(job.options, metrics_out=work / "metrics", progress=False)
        processor = cache.get(job, options.params)
        export = None
        if job.export is not None:
            export = BagPredictionExport(ExportSettings(work / "predictions", **job.export))
        try:
            report = bag_eval.evaluate_bag(
                job.input, work / "output", options, processor=processor,
                on_frame=export.on_frame if export is not None else None,
            )  # fmt: skip
        finally:
            if export is not None:
                export.close()
        if report.interrupted:
            raise KeyboardInterrupt
        outcome.frames = report.frames
        outcome.frames_with_gt = report.frames_with_gt
        outcome.seconds = round(report.seconds, 3)
        outcome.frames_per_second = round(report.frames_per_second, 3) if report.frames_per_second else None
        outcome.rejected = dict(report.rejected)
        outcome.metrics = _metrics_digest(report)
        outcome.error = report.error
        outcome.status = STATUS_DONE if report.error is None else STATUS_PARTIAL
        marker = {
            "version": MARKER_VERSION,
            "input": job.input,
            "input_files": job.fingerprint,
            "input_sha256": input_sha256(Path(job.input)),
            "model_id": job.model_id,
            "options_id": job.options_id,
            "finished_unix": time.time(),
            "output_messages": report.output_counts,
            **{k: v for k, v in asdict(outcome).items() if k not in ("input", "attempts", "output_dir")},
        }
        with (work / MARKER).open("w") as f:
            f.write(json.dumps(marker, indent=2, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())
        if not _publish(work, job):
            outcome.error = "another worker finished this bag first; its result was kept"
        outcome.output_dir = str(job.final_dir)
    except KeyboardInterrupt:
        shutil.rmtree(work, ignore_errors=True)
        raise
    except Exception as exc:  # reported per bag: one bad bag never stops the fleet
        shutil.rmtree(work, ignore_errors=True)
        outcome.status = STATUS_FAILED
        last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
        where = f" ({Path(last[0].filename).name}:{last[0].lineno})" if last else ""
        outcome.error = f"{type(exc).__name__}: {exc}{where}"
    return outcome


# ------------------------------------------------------------------------------------------ local pool


def _worker_main(conn: Any, gpu: str | None) -> None:
    """A local worker: evaluate the jobs it is sent until it receives None."""
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    cache = ProcessorCache()
    with contextlib.suppress(EOFError, KeyboardInterrupt):
        while (job := conn.recv()) is not None:
            conn.send(process_bag(job, cache))


@dataclass
class _Slot:
    process: Any
    conn: Any
    job: BagJob | None = None


def _died(job: BagJob, attempts: int, reason: str) -> BagOutcome:
    return BagOutcome(job.name, job.input, STATUS_FAILED, error=reason, attempts=attempts)


THREAD_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@contextlib.contextmanager
def _worker_thread_env(threads: int):
    """The thread-count variables a spawned worker starts with (what the user set wins).

    They must be in place before the worker imports numpy/torch: OpenBLAS and OpenMP size their
    pools then, one thread per core each, and N workers x all cores of spinning threads on a shared
    machine cost several times the work itself (Ray sets OMP_NUM_THREADS for its workers likewise)."""
    saved = {name: os.environ.get(name) for name in THREAD_ENV_VARS}
    try:
        if threads > 0:
            for name in THREAD_ENV_VARS:
                os.environ.setdefault(name, str(threads))
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run_local(jobs: list[BagJob], workers: int, retries: int, gpus: list[str] | None = None,
              on_outcome: Any = None) -> list[BagOutcome]:
    """Evaluate ``jobs`` with ``workers`` spawned processes; a worker that dies is replaced and its
    bag re-run up to ``retries`` times."""
    ctx = multiprocessing.get_context("spawn")  # no forked copies of torch/ROS state
    pending = deque(jobs)
    attempts: dict[int, int] = {}
    outcomes: list[BagOutcome] = []
    slots: list[_Slot] = []
    started = 0

    def start_slot() -> _Slot:
        nonlocal started
        parent, child = ctx.Pipe()
        gpu = gpus[started % len(gpus)] if gpus else None
        process = ctx.Process(target=_worker_main, args=(child, gpu), daemon=True, name=f"bag-worker-{started}")
        with _worker_thread_env(jobs[0].threads if jobs else 0):
            process.start()
        child.close()
        started += 1
        return _Slot(process, parent)

    def finish(outcome: BagOutcome) -> None:
        outcomes.append(outcome)
        if on_outcome is not None:
            on_outcome(outcome)

    try:
        for _ in range(min(workers, len(jobs))):
            slots.append(start_slot())
        while pending or any(s.job is not None for s in slots):
            for slot in slots:
                if slot.job is None and pending:
                    slot.job = pending.popleft()
                    attempts[slot.job.index] = attempts.get(slot.job.index, 0) + 1
                    slot.conn.send(slot.job)
            busy = [s for s in slots if s.job is not None]
            ready = wait_connections([s.conn for s in busy] + [s.process.sentinel for s in busy])
            for slot in list(busy):
                job = slot.job
                assert job is not None
                if slot.conn in ready:
                    try:
                        outcome = slot.conn.recv()
                    except (EOFError, OSError):  # the worker is gone (its end of the pipe closed)
                        outcome = None
                    if outcome is not None:
                        outcome.attempts = attempts[job.index]
                        slot.job = None
                        finish(outcome)
                        continue
                if slot.conn in ready or slot.process.sentinel in ready:
                    slot.process.join(timeout=10)
                    code = slot.process.exitcode
                    reason = f"worker {slot.process.pid} died ({_exit_reason(code)}) while evaluating the bag"
                    slot.conn.close()
                    if attempts[job.index] <= retries:
                        print(f"bag-eval-fleet: {job.name}: {reason}; running it again", file=sys.stderr)
                        pending.appendleft(job)
                    else:
                        finish(_died(job, attempts[job.index], reason))
                    if pending:  # a fresh worker takes its place
                        slots[slots.index(slot)] = start_slot()
                    else:
                        slots.remove(slot)
    finally:
        for slot in slots:
            with contextlib.suppress(OSError, BrokenPipeError):
                slot.conn.send(None)
        for slot in slots:
            slot.process.join(timeout=10)
            if slot.process.is_alive():
                slot.process.terminate()
                slot.process.join(timeout=5)
    return outcomes


def run_inline(jobs: list[BagJob], on_outcome: Any = None) -> list[BagOutcome]:
    """Evaluate ``jobs`` one after the other in this process (``--workers 0``): no isolation from a
    crash, but a debugger and a profiler see everything."""
    cache = ProcessorCache()
    outcomes = []
    for job in jobs:
        outcome = process_bag(job, cache)
        outcome.attempts = 1
        outcomes.append(outcome)
        if on_outcome is not None:
            on_outcome(outcome)
    return outcomes


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


# ------------------------------------------------------------------------------------------ Ray


class _RayWorkerState:
    """Per Ray worker process: the processor cache (a worker process runs many of our tasks)."""

    cache: ProcessorCache | None = None


def _ray_process_bag(job: BagJob) -> BagOutcome:
    if _RayWorkerState.cache is None:
        _RayWorkerState.cache = ProcessorCache()
    return process_bag(job, _RayWorkerState.cache)


def check_ray_address(address: str, timeout_s: float = 10.0) -> None:
    """A HOST:PORT head must accept a connection: ``ray.init`` would otherwise wait minutes."""
    if address == "auto" or "://" in address:
        return
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"--ray {address!r}: expected 'auto', HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ValueError(
            f"--ray {address}: cannot reach the Ray head there ({exc}); is `ray start --head` running?"
        ) from exc


def run_ray(jobs: list[BagJob], address: str, cpus_per_bag: float, gpus_per_bag: float,
            retries: int, max_in_flight: int | None = None, on_outcome: Any = None) -> list[BagOutcome]:
    """Evaluate ``jobs`` as Ray tasks on the cluster at ``address``; Ray re-runs a task whose worker
    died up to ``retries`` times. Inputs and --out-dir must be on storage every node mounts at
    the same path (our files never travel through Ray's object store)."""
    try:
        import ray
    except ImportError as exc:
        raise ValueError("--ray needs Ray: pip install 'panoptic_depthlab[fleet]' (or ray)") from exc

    if not ray.is_initialized():
        check_ray_address(address)
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    task = ray.remote(_ray_process_bag).options(
        num_cpus=cpus_per_bag, num_gpus=gpus_per_bag, max_retries=retries, retry_exceptions=False
    )
    pending = deque(jobs)
    in_flight: dict[Any, BagJob] = {}
    outcomes: list[BagOutcome] = []
    limit = max_in_flight or len(jobs)
    while pending or in_flight:
        while pending and len(in_flight) < limit:
            job = pending.popleft()
            in_flight[task.remote(job)] = job
        done, _ = ray.wait(list(in_flight), num_returns=1)
        for ref in done:
            job = in_flight.pop(ref)
            try:
                outcome = ray.get(ref)
                outcome.attempts = max(outcome.attempts, 1)
            except ray.exceptions.RayError as exc:  # worker or node died more often than retries allow
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                outcome = _died(job, retries + 1, f"{type(exc).__name__}: {reason}")
            outcomes.append(outcome)
            if on_outcome is not None:
                on_outcome(outcome)
    return outcomes


# ------------------------------------------------------------------------------------------ report


def _weighted(rows: list[BagOutcome], key: str) -> float | None:
    values = [
        (r.metrics[key], r.metrics.get("frames") or 0)
        for r in rows
        if r.metrics and r.metrics.get(key) is not None
    ]
    total = sum(w for _, w in values)
    return sum(v * w for v, w in values) / total if total else None


def build_report(outcomes: list[BagOutcome], wall_seconds: float, meta: dict) -> dict:
    """Per bag and overall: status, frames, frames/s, metrics, failures with reasons."""
    rows = sorted(outcomes, key=lambda o: o.name)
    ran = [o for o in rows if o.status in (STATUS_DONE, STATUS_PARTIAL)]
    counted = [o for o in rows if o.status != STATUS_FAILED]
    frames_now = sum(o.frames for o in ran)
    overall_metrics = {}
    for key in ("pq_all", "pq_things", "pq_stuff", "miou", "abs_rel", "rmse", "delta1", "dpq"):
        value = _weighted(counted, key)
        if value is not None:
            overall_metrics[key] = value
    return {
        **meta,
        "overall": {
            "bags": len(rows),
            "done": sum(o.status == STATUS_DONE for o in rows),
            "partial": sum(o.status == STATUS_PARTIAL for o in rows),
            "skipped": sum(o.status == STATUS_SKIPPED for o in rows),
            "failed": sum(o.status == STATUS_FAILED for o in rows),
            "frames": sum(o.frames for o in counted),
            "frames_this_run": frames_now,
            "wall_seconds": round(wall_seconds, 3),
            # fleet throughput: frames evaluated in this run over its wall time (all workers together)
            "frames_per_second": round(frames_now / wall_seconds, 3) if wall_seconds > 0 and frames_now else None,
            "bag_seconds": round(sum(o.seconds for o in ran), 3),
            # a frame-weighted mean of the per-bag numbers (PQ is not pooled over bags)
            "metrics_frame_weighted": overall_metrics or None,
        },
        "failures": [{"bag": o.name, "input": o.input, "status": o.status, "reason": o.error}
                     for o in rows if o.status in (STATUS_FAILED, STATUS_PARTIAL)],
        "bags": [asdict(o) for o in rows],
    }


def markdown(report: dict) -> str:
    o = report["overall"]
    lines = [
        f"# bag-eval fleet: {o['bags']} bag(s)",
        "",
        f"done {o['done']}, skipped (finished earlier) {o['skipped']}, partial {o['partial']}, "
        f"failed {o['failed']}; {o['frames']} frame(s); this run {o['frames_this_run']} frame(s) in "
        f"{o['wall_seconds']:.1f} s = {o['frames_per_second'] or 0:.2f} frames/s",
        "",
        "| bag | status | frames | frames/s | PQ | mIoU | AbsRel | worker | error |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def fmt(x: Any, digits: int = 1) -> str:
        return "–" if x is None else f"{x:.{digits}f}"

    for b in report["bags"]:
        m = b.get("metrics") or {}
        lines.append(
            f"| {b['name']} | {b['status']} | {b['frames']} | {fmt(b['frames_per_second'], 2)} "
            f"| {fmt(m.get('pq_all'))} | {fmt(m.get('miou'))} | {fmt(m.get('abs_rel'), 3)} "
            f"| {b.get('worker') or ''} | {(b.get('error') or '').replace('|', '/')} |"
        )
    return "\n".join(lines) + "\n"


def write_report(report: dict, out_dir: Path) -> Path:
    path = out_dir / f"{REPORT_NAME}.json"
    for target, text in ((path, json.dumps(report, indent=2, default=str) + "\n"),
                         (out_dir / f"{REPORT_NAME}.md", markdown(report))):
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, target)
    return path


# ------------------------------------------------------------------------------------------ driver


@contextlib.contextmanager
def fleet_lock(out_dir: Path):
    """One driver per output folder; leftovers of killed runs are removed under the lock."""
    out_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(out_dir / LOCK_FILE, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            raise ValueError(f"another bag-eval-fleet run is using {out_dir} (lock {LOCK_FILE})") from exc
        for leftover in (WORK_DIR, TRASH_DIR):
            shutil.rmtree(out_dir / leftover, ignore_errors=True)
        yield
    finally:
        os.close(fd)


def _local_gpus(device: str, workers: int) -> list[str] | None:
    """cuda without an index: workers are spread over the visible GPUs (CUDA_VISIBLE_DEVICES)."""
    if device != "cuda":
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        ids = [v for v in visible.split(",") if v.strip()]
    else:
        ids = [str(i) for i in range(torch.cuda.device_count())]
    return ids or None


def plan_jobs(args: argparse.Namespace) -> tuple[list[BagJob], dict]:
    """Bags, names, identities: everything the driver decides before any bag runs."""
    bags = collect_bags(args.inputs)
    per_bag = argparse.Namespace(
        **{k: v for k, v in vars(args).items() if k not in _FLEET_DESTS and not k.startswith("_")}
    )
    per_bag.in_bag, per_bag.out, per_bag.metrics_out, per_bag.no_progress = bags[0], Path("out"), None, True
    options = bag_eval.options_from_args(per_bag)
    export = None
    if args.export_predictions:
        settings = ExportSettings(Path("predictions"), args.export_depth_format, args.stereo_baseline)
        export = {"depth_format": settings.depth_format, "stereo_baseline_m": settings.stereo_baseline_m}
    mid = model_id(options.params)
    oid = options_id(options, export)
    jobs = [
        BagJob(i, str(bag), name, str(args.out_dir), input_fingerprint(bag), options, mid, oid, export,
               args.threads_per_worker or 0)
        for i, (bag, name) in enumerate(zip(bags, output_names(bags), strict=True))
    ]  # fmt: skip
    meta = {"model_id": mid, "options_id": oid, "device": options.params.device, "backend": options.params.backend}
    return jobs, meta


_FLEET_DESTS = frozenset({
    "inputs", "out_dir", "workers", "ray", "cpus_per_bag", "gpus_per_bag", "threads_per_worker", "retries",
    "retry_failed", "verify_inputs", "export_predictions", "command",
})  # fmt: skip


def run_fleet(args: argparse.Namespace) -> dict:
    """Plan, skip finished bags, run the rest (local processes or Ray), write the report."""
    if args.retries < 0:
        raise ValueError(f"--retries must be >= 0, got {args.retries}")
    if args.workers is not None and args.workers < 0:
        raise ValueError(f"--workers must be >= 0, got {args.workers}")
    out_dir = Path(args.out_dir).resolve()
    args.out_dir = out_dir
    t0 = time.perf_counter()
    with fleet_lock(out_dir):
        jobs, meta = plan_jobs(args)
        outcomes: list[BagOutcome] = []
        todo: list[BagJob] = []
        for job in jobs:
            marker = finished(job, args.retry_failed, args.verify_inputs)
            if marker is None:
                todo.append(job)
                continue
            outcomes.append(BagOutcome(
                job.name, job.input, STATUS_SKIPPED, frames=marker.get("frames", 0),
                frames_with_gt=marker.get("frames_with_gt", 0), seconds=marker.get("seconds", 0.0),
                frames_per_second=marker.get("frames_per_second"), error=marker.get("error"),
                metrics=marker.get("metrics"), rejected=marker.get("rejected", {}), worker=marker.get("worker"),
                output_dir=str(job.final_dir),
            ))  # fmt: skip
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        print(f"bag-eval-fleet: {len(jobs)} bag(s), {len(jobs) - len(todo)} finished earlier, {len(todo)} to run",
              file=sys.stderr)

        def progress(outcome: BagOutcome) -> None:
            print(f"bag-eval-fleet: {outcome.name}: {outcome.status}, {outcome.frames} frame(s)"
                  + (f" ({outcome.error})" if outcome.error else ""), file=sys.stderr)

        interrupted = False
        try:
            if todo and args.ray:
                device = str(jobs[0].options.params.device or "cpu")
                gpus = args.gpus_per_bag
                if gpus is None:
                    gpus = 1.0 if device.startswith("cuda") else 0.0
                threads = args.threads_per_worker or max(1, int(args.cpus_per_bag))
                todo = [_with_threads(j, threads) for j in todo]
                meta.update(executor="ray", ray_address=args.ray, gpus_per_bag=gpus, cpus_per_bag=args.cpus_per_bag)
                outcomes += run_ray(todo, args.ray, args.cpus_per_bag, gpus, args.retries, args.workers, progress)
            elif todo and args.workers == 0:
                threads = args.threads_per_worker or 0
                meta.update(executor="inline", workers=0, threads_per_worker=threads)
                outcomes += run_inline([_with_threads(j, threads) for j in todo], progress)
            elif todo:
                workers = min(args.workers or cores, len(todo))
                threads = args.threads_per_worker or max(1, cores // workers)
                todo = [_with_threads(j, threads) for j in todo]
                device = str(jobs[0].options.params.device or "cpu")
                meta.update(executor="local", workers=workers, threads_per_worker=threads)
                outcomes += run_local(todo, workers, args.retries, _local_gpus(device, workers), progress)
        except KeyboardInterrupt:
            interrupted = True
        wall = time.perf_counter() - t0
        meta.update(out_dir=str(out_dir), interrupted=interrupted, loadavg=list(os.getloadavg()))
        report = build_report(outcomes, wall, meta)
        write_report(report, out_dir)
    return report


def _with_threads(job: BagJob, threads: int) -> BagJob:
    return replace(job, threads=threads)


def run(args: argparse.Namespace) -> int:
    with sigterm_as_interrupt():  # SIGTERM stops like Ctrl-C: finished bags kept, the report written
        report = run_fleet(args)
    o = report["overall"]
    print(markdown(report), end="")
    print(f"bag-eval-fleet: report {Path(args.out_dir) / (REPORT_NAME + '.json')}")
    if report.get("interrupted"):
        print("bag-eval-fleet: interrupted; finished bags are kept, rerun to complete", file=sys.stderr)
        return 130
    return 1 if o["failed"] or o["partial"] else 0


if __name__ == "__main__":
    sys.exit(cli_main(add_arguments, run, "panoptic-depthlab bag-eval-fleet"))
