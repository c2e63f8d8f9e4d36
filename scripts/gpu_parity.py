"""fp16/int8 parity of the deployment artefacts, for scripts/gpu_checks.sh (one JSON).

The shipped default model (trained weights) is exported by the project's own export at fp32, fp16 and
int8 (explicit Q/DQ, synthetic calibration), then run on street-like images by:
- torch fp32 on ``--device`` (the reference),
- ONNX Runtime on the CPU (each file as it is: the runtime the precision was measured with), and
- where TensorRT and CUDA exist, a TensorRT engine built from each file (strongly typed).
For every pair it records the semantic argmax agreement, the depth relative error (AbsRel against the
reference) and the max abs logit difference. The checks that must hold: a TensorRT engine agrees with
ONNX Runtime on the same file (same graph, same precision, same Q/DQ scales) to ``--min-agreement``
of the pixels and ``--max-depth-absrel`` of depth; ONNX Runtime fp16 agrees with torch fp32 likewise.
int8 against fp32 is recorded, not checked here: its accuracy budget (PQ, AbsRel on synthetic val)
is benchmarks/precision.py's. Exit status 1 when a check fails.

    python scripts/gpu_parity.py --device cuda --out parity.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from panoptic_depthlab_core.export.onnx_export import export_onnx, realistic_test_image  # noqa: E402
from panoptic_depthlab_core.predictor import DEFAULT_CONFIG, DEFAULT_WEIGHTS, load_pipeline_config  # noqa: E402


def compare(ref: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> dict[str, float]:
    agreement = float((ref["sem_logits"].argmax(1) == got["sem_logits"].argmax(1)).mean())
    valid = ref["depth"] > 1e-3
    absrel = float((np.abs(got["depth"][valid] - ref["depth"][valid]) / ref["depth"][valid]).mean())
    return {
        "sem_argmax_agreement": round(agreement, 5),
        "depth_absrel": round(absrel, 5),
        "sem_logits_max_abs_diff": round(float(np.abs(ref["sem_logits"] - got["sem_logits"]).max()), 4),
    }


def mean_over(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(float(np.mean([r[k] for r in rows])), 5) for k in rows[0]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--calib-images", type=int, default=32)
    ap.add_argument("--min-agreement", type=float, default=0.98)
    ap.add_argument("--max-depth-absrel", type=float, default=0.02)
    ap.add_argument("--out", default="parity.json")
    args = ap.parse_args()

    from panoptic_depthlab_core.model import build_model
    from panoptic_depthlab_core.runtime.tensorrt_backend import TensorRTNotAvailable, import_tensorrt
    from panoptic_depthlab_core.weights import load_model_weights

    cfg = load_pipeline_config(DEFAULT_CONFIG)
    hw = (cfg.input.height, cfg.input.width)
    model = build_model(cfg.model).eval()
    load_model_weights(model, DEFAULT_WEIGHTS)
    images = [
        torch.from_numpy(realistic_test_image(*hw, seed=s)).permute(2, 0, 1)[None].float() for s in range(args.images)
    ]
    device = torch.device(args.device)
    try:
        import_tensorrt()
        trt_problem = "" if device.type == "cuda" and torch.cuda.is_available() else "no CUDA device"
    except TensorRTNotAvailable as exc:
        trt_problem = str(exc)

    report: dict = {
        "model": str(DEFAULT_CONFIG.name), "input_hw": list(hw), "device": str(device), "images": args.images,
        "tensorrt": trt_problem or "available", "files": {}, "pairs": {}, "checks": {}, "errors": {},
    }  # fmt: skip
    with torch.no_grad():
        ref_model = model.to(device)
        reference = [{k: v.float().cpu().numpy() for k, v in ref_model(im.to(device)).items()} for im in images]
        model.cpu()

    with tempfile.TemporaryDirectory(prefix="pdl_parity_") as tmp:
        for precision in ("fp32", "fp16", "int8"):
            try:
                run_precision(precision, Path(tmp), model, hw, images, reference, device, trt_problem, args, report)
            except Exception as exc:  # e.g. onnxconverter-common missing on the GPU machine: say so, go on
                report["errors"][precision] = f"{type(exc).__name__}: {exc}"
                report["checks"][f"{precision}_ran"] = False
    report["all_checks_pass"] = all(report["checks"].values())
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0 if report["all_checks_pass"] else 1


def run_precision(precision, tmp, model, hw, images, reference, device, trt_problem, args, report) -> None:
    """Export ``model`` at ``precision``, run the file in every runtime here, compare, record in ``report``."""
    from panoptic_depthlab_core.export.calibration import CalibrationDataReader
    from panoptic_depthlab_core.runtime import BackendConfig, create_backend
    from panoptic_depthlab_core.runtime.onnxruntime_backend import OnnxRuntimeBackend

    t0 = time.perf_counter()
    calibration = CalibrationDataReader("synthetic", hw, max_images=args.calib_images) if precision == "int8" else None
    path = export_onnx(model, tmp / f"default_{precision}.onnx", *hw, precision=precision,
                       calibration=calibration)  # fmt: skip
    report["files"][precision] = {"export_s": round(time.perf_counter() - t0, 1), "bytes": path.stat().st_size}
    runners = {"onnxruntime_cpu": BackendConfig(name="onnxruntime", device="cpu", precision=precision,
                                                onnx_path=str(path))}  # fmt: skip
    if not trt_problem:
        engines = str(tmp / "engines")
        runners["tensorrt"] = BackendConfig(name="tensorrt", device=str(device), precision=precision,
                                            onnx_path=str(path), engine_cache_dir=engines)  # fmt: skip
    outputs: dict[str, list[dict[str, np.ndarray]]] = {}
    for name, bcfg in runners.items():
        t0 = time.perf_counter()
        backend = OnnxRuntimeBackend(None, bcfg, hw) if name == "onnxruntime_cpu" else create_backend(bcfg, None, hw)
        with torch.no_grad():
            outputs[name] = [
                {k: v.float().cpu().numpy() for k, v in backend(im.to(backend.device)).items()} for im in images
            ]
        report["files"][precision][f"{name}_s"] = round(time.perf_counter() - t0, 1)
        pair = f"{name}_{precision}_vs_torch_fp32"
        report["pairs"][pair] = mean_over([compare(r, g) for r, g in zip(reference, outputs[name], strict=True)])
    if "tensorrt" in outputs:
        pair = f"tensorrt_vs_onnxruntime_{precision}"
        same_file = mean_over(
            [compare(o, t) for o, t in zip(outputs["onnxruntime_cpu"], outputs["tensorrt"], strict=True)]
        )
        report["pairs"][pair] = same_file
        report["checks"][pair] = bool(same_file["sem_argmax_agreement"] >= args.min_agreement
                                      and same_file["depth_absrel"] <= args.max_depth_absrel)  # fmt: skip
    if precision == "fp16":
        fp16 = report["pairs"]["onnxruntime_cpu_fp16_vs_torch_fp32"]
        report["checks"]["onnxruntime_fp16_vs_torch_fp32"] = bool(
            fp16["sem_argmax_agreement"] >= args.min_agreement and fp16["depth_absrel"] <= args.max_depth_absrel
        )


if __name__ == "__main__":
    sys.exit(main())
