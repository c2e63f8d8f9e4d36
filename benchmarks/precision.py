"""What precision costs: fp32 vs fp16 vs int8 ONNX files of the shipped default model in ONNX Runtime.

For each precision: PQ, mIoU, depth AbsRel and per-segment distance error on synthetic val (the
Predictor end to end, as ``panoptic-depthlab eval`` runs it, with the ONNX file as its backend) and
the network time (ONNX Runtime session alone, precisions interleaved round by round so a busy
machine slows them alike). Then ONNX Runtime's profiler per op type for fp32 and int8 (where the
time goes, which ops stayed fp32) and the CPU's int8 dot-product instructions. Writes
benchmarks/results/precision_<machine>.json. ``--levers`` (from the files of an earlier run) measures
instead the int8 levers (per-channel, calibration method and size, excluded nodes, pre-processing,
activation type, graph optimisation level, QOperator vs QDQ): precision_levers_<machine>.json.
``--sensitivity`` (from an earlier run's ``int8-stem-int8`` file) takes the Q/DQ pair off one
activation at a time and measures how much closer to fp32 each tensor alone brings the network:
precision_sensitivity_<machine>.json (why the stem stays fp32 by default).

    .venv/bin/python benchmarks/precision.py --data data/synth256 [--levers | --sensitivity]

``--data`` is a Cityscapes-layout set with a ``val`` split; when it does not exist it is rendered
with the default model's documented val command (``synth --num 100 --size 256x512 --seed 7``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from panoptic_depthlab_core.bench import machine_info, machine_slug  # noqa: E402
from panoptic_depthlab_core.data.cityscapes import find_records, load_gt, read_image  # noqa: E402
from panoptic_depthlab_core.eval.evaluator import Evaluator  # noqa: E402
from panoptic_depthlab_core.export.calibration import CalibrationDataReader  # noqa: E402
from panoptic_depthlab_core.export.onnx_export import export_onnx  # noqa: E402
from panoptic_depthlab_core.export.precision import (  # noqa: E402
    convert_to_fp16,
    default_fp32_nodes,
    input_normalisation_nodes,
    onnx_metadata,
    output_tail_nodes,
    quantize_int8,
    set_onnx_metadata,
    stem_nodes,
)
from panoptic_depthlab_core.predictor import Predictor  # noqa: E402
from panoptic_depthlab_core.preprocess import letterbox_rgb  # noqa: E402

# the int8 file for ONNX Runtime on a CPU: uint8 asymmetric activations (export onnx --precision int8
# --int8-uint8-activations); "int8" is the default, symmetric form TensorRT builds from
INT8_CPU = "int8-uint8act"
# the default int8 file with its stem quantized too (the default before the sensitivity analysis):
# what keeping the stem fp32 buys, measured in the same run
INT8_STEM = "int8-stem-int8"


def cpu_flags() -> dict:
    flags: set[str] = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    wanted = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "avx512_bf16", "f16c")
    return {f: f in flags for f in wanted}


def ensure_val(data: Path) -> None:
    if (data / "leftImg8bit" / "val").is_dir():
        return
    cmd = [sys.executable, "-m", "panoptic_depthlab_core.cli", "synth", "--out", str(data), "--num", "100",
           "--size", "256x512", "--seed", "7", "--split", "val"]  # fmt: skip
    print("rendering synthetic val:", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True)


def evaluate(onnx_path: Path, precision: str, records: list, threads: int) -> dict:
    """The Predictor over ``records`` with ``onnx_path`` as its network; the headline metrics."""
    predictor = Predictor.from_config(
        backend="onnxruntime", precision=precision, onnx_path=str(onnx_path), num_threads=threads
    )
    evaluator = Evaluator(segments=predictor.cfg.segments, depth_cap_m=80.0)
    for rec in records:
        gt = load_gt(rec)
        K = None
        if gt.camera is not None:
            c = gt.camera
            K = np.array([[c.fx, 0.0, c.u0], [0.0, c.fy, c.v0], [0.0, 0.0, 1.0]])
        evaluator.add_frame(predictor.predict(read_image(rec.image_path), K), gt.panoptic, gt.semantic, gt.depth_m)
    s = evaluator.summary()
    dist = s.get("distance", {}).get("all", {})
    return {
        "frames": s["frames"],
        "pq": s["panoptic"]["All"]["pq"],
        "pq_things": s["panoptic"]["Things"]["pq"],
        "pq_stuff": s["panoptic"]["Stuff"]["pq"],
        "miou": s["semantic"]["miou"],
        "abs_rel": s["depth"]["abs_rel"],
        "rmse_m": s["depth"]["rmse"],
        "delta1": s["depth"]["delta1"],
        "distance_mean_abs_m": dist.get("mean_abs_m"),
        "distance_median_rel": dist.get("median_rel"),
        "distance_segments": dist.get("count"),
    }


def network_inputs(records: list, count: int) -> list[np.ndarray]:
    return [letterbox_rgb(read_image(r.image_path), (256, 512))[0].numpy() for r in records[:count]]


def session(path: Path | onnx.ModelProto, threads: int, level: str = "all", profile: str = ""):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as the backend runs it
    if profile:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile
    if isinstance(path, onnx.ModelProto):  # an edited graph (sensitivity): its unused scales are expected
        opts.log_severity_level = 3
        return ort.InferenceSession(path.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def time_sessions(paths: dict[str, Path], inputs: list[np.ndarray], threads: int, rounds: int, level: str = "all"):
    """ms per frame: per precision the median of each round, then min and median over rounds."""
    sessions = {k: session(p, threads, level) for k, p in paths.items()}
    for s in sessions.values():
        for x in inputs[:2]:
            s.run(None, {"images": x})
    per_round: dict[str, list[float]] = defaultdict(list)
    for _ in range(rounds):
        for name, s in sessions.items():
            times = []
            for x in inputs:
                t0 = time.perf_counter()
                s.run(None, {"images": x})
                times.append((time.perf_counter() - t0) * 1e3)
            per_round[name].append(float(np.median(times)))
    return {
        name: {"ms_min_round": min(v), "ms_median_round": float(np.median(v)), "rounds_ms": v}
        for name, v in per_round.items()
    }


def profile_ops(path: Path, inputs: list[np.ndarray], threads: int, tmp: Path) -> dict:
    """ONNX Runtime's profiler: time per op type (the kernels that ran, after fusion) over the
    inputs, and the number of nodes of each type."""
    s = session(path, threads, profile=str(tmp / path.stem))
    for x in inputs:
        s.run(None, {"images": x})
    trace = json.loads(Path(s.end_profiling()).read_text())
    total: dict[str, float] = defaultdict(float)
    nodes: dict[str, set] = defaultdict(set)
    for ev in trace:
        if ev.get("cat") == "Node" and ev.get("name", "").endswith("_kernel_time"):
            op = ev.get("args", {}).get("op_name", "?")
            total[op] += ev["dur"] / 1e3
            nodes[op].add(ev["name"])
    runs = len(inputs)
    all_ms = sum(total.values()) / runs
    return {
        "ms_per_frame_kernels": all_ms,
        "per_op": {
            op: {"ms": ms / runs, "share": ms / runs / all_ms, "nodes": len(nodes[op])}
            for op, ms in sorted(total.items(), key=lambda kv: -kv[1])
        },
    }


def quantized_share(path: Path) -> dict:
    """Convs of the file with int8 weights (a DequantizeLinear gives the weight) vs fp32 ones."""
    model = onnx.load(str(path))
    producers = {o: n for n in model.graph.node for o in n.output}
    q = f = 0
    for n in model.graph.node:
        if n.op_type == "Conv":
            src = producers.get(n.input[1])
            if src is not None and src.op_type == "DequantizeLinear":
                q += 1
            else:
                f += 1
    return {"convs_int8": q, "convs_fp32": f}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REPO / "data" / "synth256"))
    ap.add_argument("--split", default="val")
    ap.add_argument("--limit", type=int, default=0, help="evaluate only the first N frames (0 = all)")
    ap.add_argument("--calib", default="synthetic", help="int8 calibration source (default: synthetic seed 1)")
    ap.add_argument("--calib-images", type=int, default=32, help="int8 calibration images (the export CLI's default)")
    ap.add_argument("--threads", type=int, default=0, help="ORT intra-op threads (0 = usable cores)")
    ap.add_argument("--timing-frames", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument(
        "--levers", action="store_true",
        help="instead: the int8 levers, from an earlier run's files in --work (precision_levers_<machine>.json)",
    )  # fmt: skip
    ap.add_argument(
        "--sensitivity", action="store_true",
        help="instead: per-activation sensitivity of --work's int8-stem-int8 file (precision_sensitivity_*.json)",
    )  # fmt: skip
    ap.add_argument("--work", default="", help="folder for the ONNX files (default: a temporary one)")
    ap.add_argument("--out", default="")
    ap.add_argument("--resume", action="store_true", help="reuse --work's files and --out's accuracy numbers")
    args = ap.parse_args()

    threads = args.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    data = Path(args.data)
    ensure_val(data)
    records = find_records(data, args.split)
    if args.limit:
        records = records[: args.limit]
    info = machine_info("cpu")
    info["cpu_flags"] = cpu_flags()
    report: dict = {"machine": info, "load_average_at_start": os.getloadavg(), "threads": threads,
                    "data": str(data), "split": args.split}  # fmt: skip
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="pdl_precision_"))
    work.mkdir(parents=True, exist_ok=True)

    predictor = Predictor.from_config()  # the shipped default model
    hw = predictor.input_hw
    if args.levers:
        paths = {k: work / f"{k}.onnx" for k in ("fp32", "fp16", "int8")}
        reader = CalibrationDataReader(args.calib, hw, max_images=args.calib_images)
        inputs = network_inputs(records, args.timing_frames)
        name = f"precision_levers_{machine_slug(info)}.json"
        out = Path(args.out) if args.out else REPO / "benchmarks" / "results" / name
        levers(paths, reader, inputs, threads, args, work, out)
        print(f"wrote {out}", file=sys.stderr)
        return 0
    if args.sensitivity:
        name = f"precision_sensitivity_{machine_slug(info)}.json"
        out = Path(args.out) if args.out else REPO / "benchmarks" / "results" / name
        inputs = network_inputs(records, 12)
        stem_int8, default = work / f"{INT8_STEM}.onnx", {"int8 (stem fp32)": work / "int8.onnx"}
        report["sensitivity"] = sensitivity(work / "fp32.onnx", stem_int8, inputs, threads, default)
        report["load_average_at_end"] = os.getloadavg()
        out.write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {out}", file=sys.stderr)
        return 0
    out = Path(args.out) if args.out else REPO / "benchmarks" / "results" / f"precision_{machine_slug(info)}.json"
    # --resume: files in --work and the accuracy of an earlier run (same frames) are reused; the
    # timing is always measured again, all files interleaved in this run
    earlier = json.loads(out.read_text()) if args.resume and out.is_file() else {}
    reader = CalibrationDataReader(args.calib, hw, max_images=args.calib_images)
    makers = {
        "fp32": lambda path: export_onnx(predictor.model, path, *hw),
        "fp16": lambda path: convert_to_fp16(work / "fp32.onnx", path),
        "int8": lambda path: quantize_int8(work / "fp32.onnx", path, reader),
        INT8_CPU: lambda path: quantize_int8(work / "fp32.onnx", path, reader, symmetric_activations=False),
        INT8_STEM: lambda path: quantize_int8(work / "fp32.onnx", path, reader, exclude_nodes=_stem_int8),
    }
    paths, report["export_s"] = {}, dict(earlier.get("export_s", {}))
    for name, make in makers.items():
        path = work / f"{name}.onnx"
        if not (args.resume and path.is_file()):
            t0 = time.perf_counter()
            make(path)
            report["export_s"][name] = time.perf_counter() - t0
        paths[name] = path
    report["files"] = {
        k: {"bytes": p.stat().st_size, "metadata": {m: v for m, v in onnx_metadata(p).items() if "names" not in m}}
        for k, p in paths.items()
    }
    report["fp32_nodes"] = {
        k: onnx_metadata(paths[k]).get("fp32_node_names", "").split(",") for k in ("fp16", "int8", INT8_CPU, INT8_STEM)
    }
    report["int8_convs"] = {k: quantized_share(paths[k]) for k in ("int8", INT8_CPU, INT8_STEM)}

    report["accuracy"] = {}
    for k, p in paths.items():
        if k in earlier.get("accuracy", {}):
            report["accuracy"][k] = earlier["accuracy"][k]
        else:
            print(f"evaluating {k} on {len(records)} frames", file=sys.stderr)
            report["accuracy"][k] = evaluate(p, "int8" if k.startswith("int8") else k, records, threads)
    inputs = network_inputs(records, args.timing_frames)
    report["load_average_before_timing"] = os.getloadavg()
    report["network_time"] = time_sessions(paths, inputs, threads, args.rounds)
    base = report["network_time"]["fp32"]["ms_min_round"]
    report["speedup_vs_fp32"] = {k: base / v["ms_min_round"] for k, v in report["network_time"].items()}
    with tempfile.TemporaryDirectory() as tmp:
        profiled = ("fp32", "int8", INT8_CPU)
        report["profile"] = {k: profile_ops(paths[k], inputs[:10], threads, Path(tmp)) for k in profiled}
    acc = report["accuracy"]
    report["targets"] = {
        k: {
            "pq_loss": acc["fp32"]["pq"] - acc[k]["pq"],
            "pq_loss_ok": acc["fp32"]["pq"] - acc[k]["pq"] <= 1.0,
            "abs_rel_increase": acc[k]["abs_rel"] - acc["fp32"]["abs_rel"],
            "abs_rel_ok": acc[k]["abs_rel"] - acc["fp32"]["abs_rel"] <= 0.01,
            "speedup": report["speedup_vs_fp32"][k],
            "speedup_ok": report["speedup_vs_fp32"][k] >= 1.5,
        }
        for k in ("int8", INT8_CPU, INT8_STEM)
    }
    print(json.dumps({"accuracy": acc, "speedup": report["speedup_vs_fp32"]}, indent=1), file=sys.stderr)
    report["load_average_at_end"] = os.getloadavg()
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}; the README and docs/precision.md tables: scripts/gen_readme_tables.py", file=sys.stderr)
    return 0


def agreement(reference, path: Path | onnx.ModelProto, inputs: list[np.ndarray], threads: int) -> dict:
    """Network outputs of ``path`` against fp32 ONNX's (``reference``: its outputs per input):
    semantic argmax agreement, center heatmap mean abs error, offset mean abs error (px), depth
    relative error."""
    s = session(path, threads)
    sem, center, offset, depth = [], [], [], []
    for x, ref in zip(inputs, reference, strict=True):
        got = s.run(None, {"images": x})
        sem.append(float((got[0].argmax(1) == ref[0].argmax(1)).mean()))
        center.append(float(np.abs(got[1] - ref[1]).mean()))
        offset.append(float(np.abs(got[2] - ref[2]).mean()))
        depth.append(float((np.abs(got[3] - ref[3]) / np.maximum(ref[3], 1e-3)).mean()))
    return {
        "semantic_agreement": float(np.mean(sem)),
        "center_abs": float(np.mean(center)),
        "offset_px": float(np.mean(offset)),
        "depth_rel": float(np.mean(depth)),
    }


def levers(paths, reader, inputs, threads, args, work: Path, out: Path) -> dict:
    """int8 variants, each changed in one lever from the default, scored by agreement with fp32 on
    the network outputs of ``inputs`` (the full metrics are the main table's) and timed together.
    Written to ``out`` after every variant (a lever run is long on a busy machine)."""

    def norm_and_stem(m):  # the tails and the heads' predictor convs int8 too
        return input_normalisation_nodes(m) + stem_nodes(m)

    def predictors_int8(m):  # the tails fp32, the heads' last convs int8
        return input_normalisation_nodes(m) + output_tail_nodes(m) + stem_nodes(m)

    def decoders(m):  # the default's nodes and the three decoders with their heads
        heads = ("/model/sem_seg_head/", "/model/ins_embed_head/", "/model/depth_head/")
        outside = [n.name for n in m.graph.node if n.name.startswith(heads)]
        return list(dict.fromkeys(default_fp32_nodes(m) + outside))

    variants: dict[str, dict] = {
        "default (per-channel, percentile 99.99, 32 images, normalisation+tails+predictors+stem fp32, "
        "pre-processed, int8 symmetric)": {},
        "stem int8 too": {"exclude_nodes": _stem_int8},
        "calibration minmax": {"method": "minmax"},
        "calibration entropy": {"method": "entropy"},
        "calibration percentile 99.999": {"percentile": 99.999},
        "16 calibration images": {"images": 16},
        "uint8 asymmetric activations (CPU only; TensorRT needs symmetric)": {"symmetric_activations": False},
        "per-tensor weights": {"per_channel": False},
        "decoders fp32 too (only the backbone int8)": {"exclude_nodes": decoders},
        "predictors int8 (the tails stay fp32)": {"exclude_nodes": predictors_int8},
        "tails and predictors int8 (normalisation and stem fp32)": {"exclude_nodes": norm_and_stem},
        "op types: Conv only": {"op_types": ["Conv"]},
        "no quant_pre_process": {"preprocess": False},
    }
    ref_session = session(paths["fp32"], threads)
    reference = [ref_session.run(None, {"images": x}) for x in inputs]
    results: dict[str, dict] = {"load_average_at_start": os.getloadavg()}
    for i, (name, opts) in enumerate(variants.items()):
        opts = dict(opts)
        images = opts.pop("images", None)
        r = reader if images is None else CalibrationDataReader(args.calib, reader.input_hw, max_images=images)
        path = work / f"lever_{i}.onnx"
        t0 = time.perf_counter()
        if not opts and images is None:
            path = paths["int8"]  # the default: already made
        else:
            quantize_int8(paths["fp32"], path, r, **opts)
        t = time_sessions({"fp32": paths["fp32"], name: path}, inputs, threads, args.rounds)
        results[name] = {
            "options": {k: v for k, v in opts.items() if not callable(v)} | {"images": r.num_images},
            "quantize_s": time.perf_counter() - t0,
            "agreement_with_fp32": agreement(reference, path, inputs, threads),
            "network_time": t,
            "speedup_vs_fp32": t["fp32"]["ms_min_round"] / t[name]["ms_min_round"],
            "load_average": os.getloadavg(),
        }
        print(name, results[name]["agreement_with_fp32"], results[name]["speedup_vs_fp32"], file=sys.stderr)
        out.write_text(json.dumps(results, indent=1) + "\n")
        if i == 0:
            # QOperator: the same quantization as QLinearConv etc. nodes (what ORT's CPU kernels run;
            # TensorRT cannot build it), to see whether the QDQ form itself costs speed on this CPU
            qop = work / "lever_qoperator.onnx"
            _qoperator(paths["fp32"], qop, reader)
            t = time_sessions({"fp32": paths["fp32"], "qop": qop}, inputs, threads, args.rounds)
            results["QOperator format, uint8 activations (CPU only)"] = {
                "agreement_with_fp32": agreement(reference, qop, inputs, threads),
                "speedup_vs_fp32": t["fp32"]["ms_min_round"] / t["qop"]["ms_min_round"],
                "network_time": t,
            }
            for level in ("basic", "extended"):
                t = time_sessions({"fp32": paths["fp32"], "int8": paths["int8"]}, inputs, threads, args.rounds, level)
                results[f"graph optimisation level {level} (default: all)"] = {
                    "network_time": t,
                    "speedup_vs_fp32": t["fp32"]["ms_min_round"] / t["int8"]["ms_min_round"],
                }
    return results


def _stem_int8(model: onnx.ModelProto) -> list[str]:
    """The default fp32 nodes without the stem's (the stem quantized like the rest)."""
    return default_fp32_nodes(model, stem=False)


def without_activation_qdq(model: onnx.ModelProto, tensors: set[str]) -> onnx.ModelProto:
    """``model`` with the QuantizeLinear/DequantizeLinear pairs of the activations ``tensors``
    taken off (those tensors run fp32; the weights stay int8)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    readers: dict[str, list] = defaultdict(list)
    for node in out.graph.node:
        for name in node.input:
            readers[name].append(node)
    dropped, rewired = set(), {}
    for node in out.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] in tensors:
            dropped.add(node.name)
            for dq in readers[node.output[0]]:
                if dq.op_type == "DequantizeLinear":
                    dropped.add(dq.name)
                    rewired[dq.output[0]] = node.input[0]
    kept = [n for n in out.graph.node if n.name not in dropped]
    for node in kept:
        node.input[:] = [rewired.get(i, i) for i in node.input]
    del out.graph.node[:]
    out.graph.node.extend(kept)
    return out


def sensitivity(
    fp32_path: Path,
    int8_path: Path,
    inputs: list[np.ndarray],
    threads: int,
    compare: dict[str, Path],
    tensors: list[str] | None = None,
) -> dict:
    """Per activation of ``int8_path``: its agreement with fp32 when only that tensor's Q/DQ pair is
    taken off (semantic argmax agreement, center heatmap and offset mean abs error, depth relative
    error), ranked by ``gain``: the summed relative improvement of the first three over the
    unchanged file. The tensors at the top are where int8 costs the most. ``compare``: other
    files scored the same way (the default int8 file). ``tensors``: probe only these (default:
    every quantized activation)."""
    reference = [session(fp32_path, threads).run(None, {"images": x}) for x in inputs]
    model = onnx.load(str(int8_path))
    initializers = {t.name for t in model.graph.initializer}
    activations = tensors or [
        n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in initializers
    ]
    base = agreement(reference, model, inputs, threads)

    def gain(v: dict[str, float]) -> float:
        """Summed relative improvement; a measure already exact (error 0) contributes nothing."""
        errors = (
            (1.0 - base["semantic_agreement"], 1.0 - v["semantic_agreement"]),
            (base["center_abs"], v["center_abs"]),
            (base["offset_px"], v["offset_px"]),
        )
        return sum((before - after) / before for before, after in errors if before > 0)

    per_tensor = {}
    for i, tensor in enumerate(activations):
        v = agreement(reference, without_activation_qdq(model, {tensor}), inputs, threads)
        per_tensor[tensor] = {**v, "gain": gain(v)}
        if i % 25 == 0:
            print(f"sensitivity {i}/{len(activations)}", file=sys.stderr)
    ranked = dict(sorted(per_tensor.items(), key=lambda kv: -kv[1]["gain"]))
    others = {name: agreement(reference, path, inputs, threads) for name, path in compare.items()}
    return {"file": int8_path.name, "frames": len(inputs), "activations": len(activations), "unchanged": base,
            "compared_files": others, "per_tensor": ranked}  # fmt: skip


def _qoperator(src: Path, dst: Path, reader) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from panoptic_depthlab_core.export.precision import _OrtReader, name_unnamed_nodes

    model = onnx.load(str(src))
    name_unnamed_nodes(model)
    exclude = default_fp32_nodes(model)
    with tempfile.TemporaryDirectory() as tmp:
        named = Path(tmp) / "m.onnx"
        onnx.save(model, str(named))
        reader.rewind()
        quantize_static(str(named), str(dst), _OrtReader(reader), quant_format=QuantFormat.QOperator,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=exclude)  # fmt: skip
    m = onnx.load(str(dst))
    set_onnx_metadata(m, {"precision": "int8"})
    onnx.save(m, str(dst))


if __name__ == "__main__":
    raise SystemExit(main())
