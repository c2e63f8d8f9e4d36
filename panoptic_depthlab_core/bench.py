"""``panoptic-depthlab bench``: per-stage and end-to-end latency per model, size, backend, precision.

Stages: decode (JPEG -> RGB), preprocess (upload + letterbox), network, postprocess (panoptic
grouping + mapping back), segments (per-segment statistics), to_host, and message building when the
caller passes a message builder (``panoptic_depthlab_ros.bench`` does; the core knows no messages).
End to end = decode + predictor total + messages. Weights are freshly initialised: latency does not
depend on weight values, except that post-processing time grows with the number of detected instances
(a trained model finds more). Writes JSON (every sample summarised, machine described) and a markdown
table.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from .config import parse_size
from .export.onnx_export import realistic_test_image
from .memory import retain_freed_memory
from .predictor import InputConfig, Predictor, load_pipeline_config
from .runtime import BackendConfig
from .runtime.gpu_pipeline import decode_image, gpu_jpeg_available
from .runtime.tensorrt_backend import tensorrt_available

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config" / "models"
MODELS = {
    "small": "panoptic_depthlab_small.yaml",
    "r52": "panoptic_deeplab_r52.yaml",
    "r52_dsconv": "panoptic_deeplab_r52_dsconv.yaml",
}
# (FrameResult, rgb image) -> the messages built from them; supplied by the ROS side.
MessageBuilder = Callable[[Any, Any], Any]
NO_MESSAGE_BUILDER = "not measured: the core bench builds no ROS messages (the ROS side's `bench` does)"
STAGES = ("decode", "preprocess", "network", "postprocess", "segments", "to_host", "messages", "end_to_end")


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", default="small,r52", help=f"comma list of {list(MODELS)} or YAML paths")
    parser.add_argument("--sizes", default="512x1024,1024x2048", help="comma list of HxW network sizes")
    parser.add_argument("--backends", default="torch,onnxruntime,tensorrt")
    parser.add_argument(
        "--precisions", default="", help="default: fp32 on cpu; fp32,fp16 on cuda (+int8 for trt)"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--threads", type=int, default=0, help="CPU threads for torch and onnxruntime (0: all)"
    )
    parser.add_argument("--engine-cache-dir", default="", help="ONNX exports / engines (default: user cache)")
    parser.add_argument(
        "--cuda-graph", action="store_true", help="torch backend on cuda: capture a CUDA graph"
    )
    parser.add_argument("--out", default="bench.json", help="JSON results path")
    parser.add_argument("--markdown", default="", help="markdown table path (default: JSON path with .md)")


def machine_info(device: str) -> dict:
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": _cpu_model(),
        "cpu_cores_usable": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    try:
        import onnxruntime as ort

        info["onnxruntime"] = ort.__version__
        info["onnxruntime_providers"] = ort.get_available_providers()
    except ImportError:
        pass
    if tensorrt_available():
        import tensorrt

        info["tensorrt"] = tensorrt.__version__
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.device(device))
        info["gpu"] = props.name
        info["gpu_compute_capability"] = f"{props.major}.{props.minor}"
        info["cuda"] = torch.version.cuda
    return info


def machine_slug(info: dict) -> str:
    name = info.get("gpu") or f"cpu{info['cpu_cores_usable']}-{info['cpu']}"
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:60]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def default_precisions(backend: str, device: str) -> list[str]:
    if device.startswith("cuda"):
        return ["fp32", "fp16", "int8"] if backend == "tensorrt" else ["fp32", "fp16"]
    return ["fp32"]


def skip_reason(backend: str, precision: str, device: str) -> str:
    """Why a combination cannot run here ("" when it can)."""
    cuda = device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        return "CUDA not available"
    if backend == "tensorrt":
        if not tensorrt_available():
            return "TensorRT not importable"
        if not cuda:
            return "tensorrt needs a CUDA device"
        if precision != "fp32":
            return (
                f"a {precision} engine is built from a {precision} ONNX file (export onnx --precision "
                f"{precision}); this bench exports fp32 only (scripts/gpu_parity.py runs fp16/int8 engines)"
            )
    if backend == "torch" and precision == "int8":
        return "torch backend has no int8"
    if backend == "torch" and precision == "fp16" and not cuda:
        return "fp16 needs CUDA"
    if backend == "onnxruntime":
        import onnxruntime as ort

        providers = ort.get_available_providers()
        if precision not in ("fp32", "fp16"):
            return f"onnxruntime has no {precision} path here"
        if not cuda and precision != "fp32":
            return "onnxruntime on the CPU is fp32 only"
        if cuda and "CUDAExecutionProvider" not in providers and "TensorrtExecutionProvider" not in providers:
            return "onnxruntime has no CUDA/TensorRT execution provider (onnxruntime-gpu not installed)"
        if cuda and precision == "fp16" and "TensorrtExecutionProvider" not in providers:
            return "onnxruntime fp16 needs the TensorRT execution provider"
    return ""


def _summary(samples: list[float]) -> dict:
    ordered = sorted(samples)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return {
        "median_ms": statistics.median(ordered),
        "mean_ms": statistics.fmean(ordered),
        "p90_ms": p90,
        "min_ms": ordered[0],
    }


def bench_one(
    model_cfg_path: Path, size: tuple[int, int], backend: str, precision: str, args, message_build
) -> dict:
    cfg = load_pipeline_config(model_cfg_path)
    cfg.input = InputConfig(height=size[0], width=size[1])
    bcfg = BackendConfig(
        name=backend,
        device=args.device,
        precision=precision,
        num_threads=args.threads,
        engine_cache_dir=args.engine_cache_dir,
        cuda_graph=args.cuda_graph and backend == "torch",
    )
    torch.manual_seed(0)
    t0 = time.perf_counter()
    predictor = Predictor(cfg, weights=None, backend=bcfg)
    setup_s = time.perf_counter() - t0

    rgb = realistic_test_image(size[0], size[1], seed=7)
    ok, jpeg = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    jpeg_bytes = jpeg.tobytes()
    samples: dict[str, list[float]] = {s: [] for s in STAGES}
    gpu_decode: list[float] = []
    cuda = torch.device(args.device).type == "cuda"
    for i in range(args.warmup + args.iterations):
        t_start = time.perf_counter()
        image = decode_image(jpeg_bytes, "cpu").numpy()
        t_dec = time.perf_counter()
        result = predictor.predict(image)
        t_msg = time.perf_counter()
        if message_build is not None:
            message_build(result, image)
        t_end = time.perf_counter()
        if cuda and gpu_jpeg_available(args.device):
            g0 = time.perf_counter()
            decode_image(jpeg_bytes, args.device)
            torch.cuda.synchronize(args.device)  # the decoding device, not the current one
            g1 = time.perf_counter()
        if i < args.warmup:
            continue
        samples["decode"].append((t_dec - t_start) * 1e3)
        for stage in ("preprocess", "network", "postprocess", "segments", "to_host"):
            samples[stage].append(float(result.timings_ms.get(stage, float("nan"))))
        if message_build is not None:
            samples["messages"].append((t_end - t_msg) * 1e3)
        samples["end_to_end"].append((t_end - t_start) * 1e3)
        if cuda and gpu_jpeg_available(args.device):
            gpu_decode.append((g1 - g0) * 1e3)
    stages = {k: _summary(v) for k, v in samples.items() if v and not np.isnan(v).all()}
    if gpu_decode:
        stages["decode_gpu"] = _summary(gpu_decode)
    e2e = stages["end_to_end"]["median_ms"]
    return {
        "model": model_cfg_path.stem,
        "model_name": cfg.model.name,
        "size": list(size),
        "backend": backend,
        "precision": precision,
        "device": args.device,
        "providers": getattr(predictor.backend, "providers", None),
        "setup_s": round(setup_s, 2),
        "iterations": args.iterations,
        "instances_found": int(len([s for s in result.segments if s.is_thing])),
        "stages": stages,
        "fps": 1000.0 / e2e if e2e > 0 else None,
    }


def markdown_table(report: dict) -> str:
    cols = [s for s in STAGES if any(s in r.get("stages", {}) for r in report["runs"])]
    header = ["model", "size", "backend", "precision"] + [f"{c} ms" for c in cols] + ["FPS"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in report["runs"]:
        size = "x".join(map(str, r["size"]))
        if "skipped" in r:
            lines.append(
                f"| {r['model']} | {size} | {r['backend']} | {r['precision']} | "
                f"skipped: {r['skipped']} |" + " |" * (len(header) - 5)
            )
            continue
        vals = [f"{r['stages'][c]['median_ms']:.1f}" if c in r["stages"] else "–" for c in cols]
        lines.append(
            f"| {r['model']} | {size} | {r['backend']} | {r['precision']} | "
            + " | ".join(vals)
            + f" | {r['fps']:.2f} |"
        )
    m = report["machine"]
    where = m.get("gpu") or f"{m['cpu']} ({m['cpu_cores_usable']} cores usable)"
    lines.append("")
    lines.append(
        f"Machine: {where}; torch {m['torch']}, onnxruntime {m.get('onnxruntime', '-')}, "
        f"TensorRT {m.get('tensorrt', 'not installed')}. Medians over {report['iterations']} iterations "
        f"after {report['warmup']} warm-up; untrained weights."
    )
    for s in report.get("speedups", []):
        lines.append(
            f"- {s['model']} {s['size']}: onnxruntime fp32 is {s['ort_vs_torch']:.2f}x torch eager "
            f"(network), {s['ort_vs_torch_e2e']:.2f}x end to end"
        )
    return "\n".join(lines) + "\n"


def run_bench(
    args: argparse.Namespace,
    message_build: MessageBuilder | None = None,
    message_reason: str = NO_MESSAGE_BUILDER,
) -> dict:
    """Every model x size x backend x precision; ``message_reason`` says why messages are not timed."""
    if args.iterations < 1 or args.warmup < 0:
        raise ValueError(f"--iterations must be >= 1 and --warmup >= 0, got {args.iterations}, {args.warmup}")
    sizes = [parse_size(s) for s in _csv(args.sizes)]
    model_paths = []
    for m in _csv(args.models):
        path = CONFIG_DIR / MODELS[m] if m in MODELS else Path(m)
        if not path.is_file():
            raise ValueError(f"unknown model {m!r}: use one of {list(MODELS)} or a YAML path")
        model_paths.append(path)
    backends = _csv(args.backends)
    for b in backends:
        if b not in ("torch", "onnxruntime", "tensorrt"):
            raise ValueError(f"unknown backend {b!r}")
    retention = retain_freed_memory()  # as the node and the CLI run: no per-frame page faults
    report = {
        "machine": machine_info(args.device),
        "retain_freed_memory": retention.detail,
        "iterations": args.iterations,
        "warmup": args.warmup,
        "threads": args.threads,
        "message_building": "included" if message_build is not None else message_reason,
        "runs": [],
    }
    for path in model_paths:
        for size in sizes:
            for backend in backends:
                for precision in _csv(args.precisions) or default_precisions(backend, args.device):
                    reason = skip_reason(backend, precision, args.device)
                    entry = {
                        "model": path.stem,
                        "size": list(size),
                        "backend": backend,
                        "precision": precision,
                    }
                    if reason:
                        report["runs"].append({**entry, "skipped": reason})
                        log.info("skip %s: %s", entry, reason)
                        continue
                    log.info("bench %s", entry)
                    run = bench_one(path, size, backend, precision, args, message_build)
                    report["runs"].append(run)
                    log.info(
                        "  end to end %.1f ms (network %.1f ms)",
                        run["stages"]["end_to_end"]["median_ms"],
                        run["stages"]["network"]["median_ms"],
                    )
    report["speedups"] = _speedups(report["runs"])
    return report


def _speedups(runs: list[dict]) -> list[dict]:
    out = []
    done = [r for r in runs if "stages" in r and r["precision"] == "fp32"]
    for r in done:
        if r["backend"] != "onnxruntime":
            continue
        for t in done:
            if t["backend"] == "torch" and t["model"] == r["model"] and t["size"] == r["size"]:
                out.append(
                    {
                        "model": r["model"],
                        "size": "x".join(map(str, r["size"])),
                        "ort_vs_torch": t["stages"]["network"]["median_ms"]
                        / r["stages"]["network"]["median_ms"],
                        "ort_vs_torch_e2e": t["stages"]["end_to_end"]["median_ms"]
                        / r["stages"]["end_to_end"]["median_ms"],
                    }
                )
    return out


def write_report(report: dict, out: str | Path, markdown: str | Path = "") -> tuple[Path, Path]:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    md = Path(markdown) if markdown else out.with_suffix(".md")
    md.write_text(markdown_table(report))
    return out, md


def run(
    args: argparse.Namespace,
    message_build: MessageBuilder | None = None,
    message_reason: str = NO_MESSAGE_BUILDER,
) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    report = run_bench(args, message_build, message_reason)
    out, md = write_report(report, args.out, args.markdown)
    print(md.read_text())
    print(f"wrote {out} and {md}")
    return 0
