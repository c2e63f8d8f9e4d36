"""How far ONNX Runtime (CPU, fp32) is from torch fp32, per output, at the sizes the models run at.

The unit tests check parity at 64x128 (fast); this measures what the README states: the shipped
default model with its weights at its 256x512 input, and the Cityscapes R-52 architectures at their
1024x2048 input with their real ASPP pooling window (random weights with trained-like magnitudes,
as in test/core/export/test_onnx_export.py). Writes benchmarks/results/onnx_parity_<machine>.json.

    .venv/bin/python benchmarks/onnx_parity.py [--models default,panoptic_deeplab_r52,...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from panoptic_depthlab_core.export.onnx_export import (  # noqa: E402
    export_onnx,
    onnx_parity,
    realistic_test_image,
    with_trained_like_statistics,
)
from panoptic_depthlab_core.model import build_model, load_model_config  # noqa: E402
from panoptic_depthlab_core.predictor import DEFAULT_CONFIG, DEFAULT_WEIGHTS  # noqa: E402
from panoptic_depthlab_core.weights import load_model_weights  # noqa: E402


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def build(name: str) -> tuple[torch.nn.Module, tuple[int, int], str]:
    torch.manual_seed(0)
    if name == "default":
        cfg = load_model_config(DEFAULT_CONFIG)
        model = build_model(cfg)
        load_model_weights(model, DEFAULT_WEIGHTS)
        weights = "shipped default model weights"
    else:
        cfg = load_model_config(REPO / "config" / "models" / f"{name}.yaml")
        model = with_trained_like_statistics(build_model(cfg))
        weights = "random, trained-like magnitudes"
    config_path = DEFAULT_CONFIG if name == "default" else REPO / "config" / "models" / f"{name}.yaml"
    raw = yaml.safe_load(Path(config_path).read_text())
    hw = (int(raw["input"]["height"]), int(raw["input"]["width"]))
    return model.eval(), hw, weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="default,panoptic_deeplab_r52,panoptic_deeplab_r52_dsconv")
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    machine = {"cpu": cpu_name(), "cpu_cores_usable": len(os.sched_getaffinity(0)), "torch": torch.__version__}
    import onnxruntime as ort

    machine["onnxruntime"] = ort.__version__
    runs = []
    for name in args.models.split(","):
        model, (h, w), weights = build(name)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            path = export_onnx(model, Path(tmp) / f"{name}.onnx", h, w)
            export_s = time.perf_counter() - t0
            per_image = []
            for seed in range(args.images):
                image = torch.from_numpy(realistic_test_image(h, w, seed)).permute(2, 0, 1)[None].float()
                with torch.no_grad():
                    ref = model(image)
                diffs = onnx_parity(model, path, image)
                per_image.append(
                    {
                        out: {"max_abs_diff": diffs[out], "max_abs_torch": float(ref[out].abs().max())}
                        for out in diffs
                    }
                )
        worst = {
            out: {
                "max_abs_diff": max(p[out]["max_abs_diff"] for p in per_image),
                "max_abs_torch": max(p[out]["max_abs_torch"] for p in per_image),
            }
            for out in per_image[0]
        }
        runs.append(
            {"model": name, "weights": weights, "input_hw": [h, w], "export_s": export_s, "worst": worst,
             "per_image": per_image}
        )
        print(name, (h, w), {k: f"{v['max_abs_diff']:.2e} (of {v['max_abs_torch']:.3g})" for k, v in worst.items()},
              flush=True)
    slug = re.sub(r"[^a-z0-9]+", "-", f"cpu{machine['cpu_cores_usable']}-{machine['cpu']}".lower()).strip("-")
    out = args.out or REPO / "benchmarks" / "results" / f"onnx_parity_{slug}.json"
    report = {
        "what": "max |ONNX Runtime CPU fp32 - torch fp32| per output over realistic_test_image frames",
        "machine": machine,
        "load_average_1m_at_end": os.getloadavg()[0],
        "date": time.strftime("%Y-%m-%d"),
        "runs": runs,
    }
    out.write_text(json.dumps(report, indent=2) + "\n")
    print("wrote", out)


if __name__ == "__main__":
    main()
