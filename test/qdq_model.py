"""A minimal valid int8 ONNX model (one explicit QuantizeLinear/DequantizeLinear pair) with the
project's network I/O contract ("images" in, every OUTPUT_NAMES out): what the TensorRT builder, the
engine cache and the node's artefact checks need from an int8 file, without a quantization run.

Importable from every test module (pytest puts this folder, the one holding conftest.py, on sys.path).
"""

from __future__ import annotations

from pathlib import Path


def write_qdq_onnx(path: Path, hw: tuple[int, int], precision_metadata: str | None = "int8") -> Path:
    """Write the model for a (1, 3, *hw) input to ``path``; ``precision_metadata`` None leaves out the
    ``panoptic_depthlab.precision`` property (a file made by another tool)."""
    import onnx
    from onnx import TensorProto, helper

    from panoptic_depthlab_core.model import OUTPUT_NAMES

    shape = [1, 3, *hw]
    nodes = [
        helper.make_node("QuantizeLinear", ["images", "scale", "zero"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["dq"]),
    ] + [helper.make_node("Identity", ["dq"], [name]) for name in OUTPUT_NAMES]
    graph = helper.make_graph(
        nodes,
        "qdq",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name in OUTPUT_NAMES],
        [
            helper.make_tensor("scale", TensorProto.FLOAT, [], [1.0]),
            helper.make_tensor("zero", TensorProto.INT8, [], [0]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if precision_metadata:
        helper.set_model_props(model, {"panoptic_depthlab.precision": precision_metadata})
    onnx.save(model, str(path))
    return path
