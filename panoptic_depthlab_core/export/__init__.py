"""Export for fast inference: ONNX, TensorRT engines and their cache, INT8 calibration data.

Nothing here imports TensorRT at module level: the cache logic and the calibration reader work (and
are tested) on machines without it. Names are resolved lazily so ``panoptic-depthlab --help`` (which
imports ``export.cli``) does not pay for importing torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "BuildEnvironment": "engine_cache",
    "EngineCache": "engine_cache",
    "EngineCacheError": "engine_cache",
    "EngineKey": "engine_cache",
    "make_engine_key": "engine_cache",
    "INPUT_NAME": "onnx_export",
    "cached_onnx_for_model": "onnx_export",
    "check_onnx_file": "onnx_export",
    "check_parity": "onnx_export",
    "export_onnx": "onnx_export",
    "onnx_parity": "onnx_export",
    "realistic_test_image": "onnx_export",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
