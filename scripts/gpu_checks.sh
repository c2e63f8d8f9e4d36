#!/usr/bin/env bash
# Every check that needs an NVIDIA GPU (and TensorRT where installed), as ONE device call that ends
# within 9 minutes. Each step has its own time limit; the whole run is bounded by their sum (530 s).
#
# Runs with the machine's python3 (PYTHON=... to choose): PyTorch, torchvision, onnx, onnxruntime,
# OpenCV, safetensors, PyYAML and pytest are expected; ROS and TensorRT may be missing: those tests
# skip, each with its reason (pytest -rs lists them in pytest_gpu.log). Nothing is installed.
# Everything lands in $OUT (or ./gpu_out):
#   gpu.txt              GPU, driver, torch, CUDA, onnxruntime providers, TensorRT as seen
#   pytest_gpu.log       the CUDA/TensorRT tests of the core (runtime, export, predictor, segments)
#   parity.json          fp16/int8 parity: scripts/gpu_parity.py (ORT on each file, TensorRT engines
#                        from the same files when TensorRT is here, against torch fp32 on the GPU)
#   inference_cuda.json  benchmarks/inference.py on the GPU: default (small) and R-52 at 512x1024 and
#                        1024x2048, fp32 and fp16 (torch); per-stage table (decode, preprocess, network, postprocess, segments, to_host, end_to_end)
#   inference_cuda_graph.json  R-52 1024x2048 fp16 with a CUDA graph
#   inference_cuda_tensorrt.json  R-52 1024x2048 TensorRT fp32 engine (when TensorRT is here)
#   gpu_checks.json      summary: each step's exit status and seconds, the R-52 1024x2048 end-to-end
#                        FPS (target >= 30 with post-processing and segment statistics) and whether met
# From the device tool:  run(command="bash scripts/gpu_checks.sh", timeout_s=600)
# A dry run of the same steps on the CPU (small sizes, 1 iteration; GPU_CHECKS_LIMIT_SCALE multiplies
# every step's time limit for a slow or busy machine):
#   GPU_CHECKS_DEVICE=cpu GPU_CHECKS_LIMIT_SCALE=4 PYTHON=.venv/bin/python bash scripts/gpu_checks.sh
set -u -o pipefail
out=${OUT:-gpu_out}
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export PANOPTIC_DEPTHLAB_CACHE="${PANOPTIC_DEPTHLAB_CACHE:-$out/cache}"  # exports/engines of this run only
py=${PYTHON:-python3}
device=${GPU_CHECKS_DEVICE:-cuda}
iterations=${GPU_CHECKS_ITERATIONS:-20}
if [ "$device" = cpu ]; then
    models=${GPU_CHECKS_MODELS:-small}; sizes=${GPU_CHECKS_SIZES:-256x512}; iterations=${GPU_CHECKS_ITERATIONS:-1}
    precisions=fp32
else
    models=${GPU_CHECKS_MODELS:-small,r52}; sizes=${GPU_CHECKS_SIZES:-512x1024,1024x2048}
    precisions=fp32,fp16
fi
has_trt=$("$py" -c "from panoptic_depthlab_core.runtime.tensorrt_backend import tensorrt_available as a; print(int(a()))" 2>/dev/null || echo 0)
steps_json=""
started=$(date +%s)

step() {  # step NAME LIMIT_S COMMAND...: run with a time limit, record status and seconds
    local name=$1 limit=$(( $2 * ${GPU_CHECKS_LIMIT_SCALE:-1} )); shift 2
    local t0 rc
    t0=$(date +%s)
    echo "== $name (limit ${limit} s)"
    timeout "$limit" "$@"
    rc=$?
    steps_json="$steps_json{\"step\": \"$name\", \"rc\": $rc, \"seconds\": $(( $(date +%s) - t0 )), \"limit_s\": $limit},"
    return 0
}

{ nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv 2>&1 || true
  "$py" - <<'EOF'
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(),
      "devices", torch.cuda.device_count())
try:
    import onnxruntime as ort
    print("onnxruntime", ort.__version__, ort.get_available_providers())
except ImportError as exc:
    print("onnxruntime missing:", exc)
from panoptic_depthlab_core.runtime.tensorrt_backend import TensorRTNotAvailable, import_tensorrt
try:
    print("tensorrt", import_tensorrt().__version__)
except TensorRTNotAvailable as exc:
    print("tensorrt:", exc)
from panoptic_depthlab_core.runtime.gpu_pipeline import jpeg_decoder
print("jpeg decoder:", jpeg_decoder("cuda" if torch.cuda.is_available() else "cpu"))
EOF
} 2>&1 | tee "$out/gpu.txt"

# every core test file with a CUDA or TensorRT case (found, not listed: files move)
gpu_tests=$(grep -rlE "cuda|tensorrt" test/core --include='test_*.py' | sort | tr '\n' ' ')
step pytest 150 bash -c "'$py' -m pytest $gpu_tests -q -rs -p no:cacheprovider -m 'not slow' 2>&1 \
    | tee '$out/pytest_gpu.log' | tail -25"

step parity 150 "$py" scripts/gpu_parity.py --device "$device" --images 4 --calib-images 32 --out "$out/parity.json"

step inference 130 bash -c "'$py' benchmarks/inference.py --device '$device' --models '$models' --sizes '$sizes' \
    --backends torch --precisions '$precisions' --iterations '$iterations' --warmup 3 \
    --out '$out/inference_$device.json' 2>&1 | tail -30"

if [ "$device" != cpu ]; then
    step cuda_graph 50 bash -c "'$py' benchmarks/inference.py --device cuda --models r52 --sizes 1024x2048 \
        --backends torch --precisions fp16 --cuda-graph --iterations '$iterations' --warmup 3 \
        --out '$out/inference_cuda_graph.json' 2>&1 | tail -15"
    if [ "$has_trt" = 1 ]; then  # fp32 engine from the exported model; fp16/int8 engines: parity.json
        step tensorrt 50 bash -c "'$py' benchmarks/inference.py --device cuda --models r52 --sizes 1024x2048 \
            --backends tensorrt --precisions fp32 --iterations '$iterations' --warmup 3 \
            --out '$out/inference_cuda_tensorrt.json' 2>&1 | tail -15"
    fi
fi

STEPS="[${steps_json%,}]" OUT_DIR="$out" DEVICE="$device" TOTAL_S=$(( $(date +%s) - started )) "$py" - <<'EOF'
import json, os
from pathlib import Path

out = Path(os.environ["OUT_DIR"])
steps = json.loads(os.environ["STEPS"])
best = None
for path in sorted(out.glob("inference_*.json")):
    for row in json.loads(path.read_text()).get("runs", []):
        if "r52" not in str(row.get("model")) or list(row.get("size", [])) != [1024, 2048] or not row.get("fps"):
            continue
        if best is None or row["fps"] > best["fps"]:
            best = {"file": path.name, "backend": row.get("backend"), "precision": row.get("precision"),
                    "fps": round(row["fps"], 1), "stages": row.get("stages")}
parity = json.loads((out / "parity.json").read_text()) if (out / "parity.json").is_file() else {}
summary = {
    "device": os.environ["DEVICE"],
    "total_s": int(os.environ["TOTAL_S"]),
    "steps": steps,
    "parity_checks": parity.get("checks"),
    "r52_1024x2048_best": best,
    "r52_1024x2048_target_fps": 30,
    "r52_1024x2048_target_met": None if best is None else best["fps"] >= 30,
}
(out / "gpu_checks.json").write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps(summary, indent=2))
EOF
grep -q '"rc": [1-9]' <<<"$steps_json" && exit 1
exit 0
