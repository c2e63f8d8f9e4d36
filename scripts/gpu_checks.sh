#!/usr/bin/env bash
# The checks of #8 that need an NVIDIA GPU, as ONE device call that ends within ~9 minutes.
#
# Runs with the device image's own python3 (PyTorch, torchvision, onnxruntime (CPU), OpenCV,
# safetensors, PyYAML and pytest are there; ROS and TensorRT are not: those tests skip, each with
# its reason). Nothing is installed. Everything it finds lands in $OUT (or ./gpu_out):
#   gpu.txt            GPU, driver, torch and CUDA as seen
#   pytest_gpu.log     the CUDA tests of the core (runtime, export, segments, predictor)
#   inference_cuda.*   benchmarks/inference.py on the GPU: default (small) and R-52 models,
#                      512x1024 and 1024x2048, fp32 and fp16, eager and CUDA graphs
# From the device tool:  run(command="bash scripts/gpu_checks.sh", timeout_s=600)
# A dry run of the same steps on the CPU:  GPU_CHECKS_DEVICE=cpu PYTHON=.venv/bin/python bash scripts/gpu_checks.sh
set -u -o pipefail
out=${OUT:-gpu_out}
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
device=${GPU_CHECKS_DEVICE:-cuda}
iterations=${GPU_CHECKS_ITERATIONS:-20}
status=0

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || true
  "$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
} | tee "$out/gpu.txt"

echo "== CUDA tests (core)"
timeout 240 "$py" -m pytest test/core/runtime test/core/export test/core/segments \
    test/core/test_predictor.py -q -rs -p no:cacheprovider 2>&1 | tee "$out/pytest_gpu.log" || status=1

echo "== inference benchmark on $device"
precisions=fp32,fp16
[ "$device" = cpu ] && precisions=fp32
timeout 200 "$py" benchmarks/inference.py --device "$device" --models small,r52 --sizes 512x1024,1024x2048 \
    --backends torch --precisions "$precisions" --iterations "$iterations" --warmup 3 \
    --out "$out/inference_$device.json" 2>&1 | tail -30 || status=1
if [ "$device" = cuda ]; then
    timeout 120 "$py" benchmarks/inference.py --device cuda --models r52 --sizes 1024x2048 --backends torch \
        --precisions fp16 --cuda-graph --iterations "$iterations" --warmup 3 \
        --out "$out/inference_cuda_graph.json" 2>&1 | tail -15 || status=1
fi
exit $status
