"""What a deployment artefact (ONNX file, TensorRT engine) holds, and what runs.

Precision lives in the ONNX file (strongly typed networks, the direction TensorRT 10 and 11 share):
an int8 file carries QuantizeLinear/DequantizeLinear pairs, an fp16 file fp16 weights and casts.
A runtime never chooses the precision by a flag; it reads it from the file and refuses a
``precision`` setting that disagrees, naming the file and both values, so a vehicle never runs an
fp32 network while its configuration says int8 (or the reverse).

The export records the precision in the file's metadata (``metadata_props``); files made
elsewhere (ModelOpt, onnxconverter-common, a hand-made Q/DQ graph) are recognised from the graph
itself, which is also the check that the metadata tells the truth.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# metadata_props keys an export may use for the precision, most specific first
PRECISION_METADATA_KEYS = ("panoptic_depthlab.precision", "panoptic_depthlab_precision", "precision")
ONNX_PRECISIONS = ("fp32", "fp16", "int8")
_QDQ_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"}
_FLOAT16 = 10  # onnx.TensorProto.FLOAT16
_BFLOAT16 = 16  # onnx.TensorProto.BFLOAT16


@dataclass(frozen=True)
class OnnxPrecision:
    precision: str  # fp32 | fp16 | int8
    evidence: str  # what in the file says so, for error messages and diagnostics


def graph_precision(proto: Any) -> OnnxPrecision:
    """The precision the graph itself computes in: Q/DQ (or integer ops) -> int8, fp16 weights or
    casts to fp16 -> fp16, else fp32. Subgraphs (If/Loop bodies) are not searched: exports here
    have none."""
    graph = proto.graph
    qdq = sum(1 for n in graph.node if n.op_type in _QDQ_OPS)
    if qdq:
        return OnnxPrecision("int8", f"{qdq} quantize/dequantize node(s)")
    fp16_weights = sum(1 for t in graph.initializer if t.data_type in (_FLOAT16, _BFLOAT16))
    fp16_casts = 0
    for node in graph.node:
        if node.op_type == "Cast":
            for attr in node.attribute:
                if attr.name == "to" and attr.i in (_FLOAT16, _BFLOAT16):
                    fp16_casts += 1
    if fp16_weights or fp16_casts:
        return OnnxPrecision("fp16", f"{fp16_weights} fp16 initializer(s), {fp16_casts} cast(s) to fp16")
    return OnnxPrecision("fp32", "no quantize/dequantize nodes, no fp16 weights or casts")


def metadata_precision(proto: Any) -> str | None:
    """The precision recorded in the file's metadata by the export, if any."""
    props = {p.key: p.value for p in proto.metadata_props}
    for key in PRECISION_METADATA_KEYS:
        if key in props:
            return props[key].strip().lower()
    return None


def onnx_precision(proto: Any, path: str | Path = "") -> OnnxPrecision:
    """The file's precision; ValueError when its metadata and its graph disagree."""
    from_graph = graph_precision(proto)
    recorded = metadata_precision(proto)
    if recorded is None:
        return from_graph
    if recorded not in ONNX_PRECISIONS:
        raise ValueError(f"ONNX model {path} records precision {recorded!r}; expected one of {list(ONNX_PRECISIONS)}")
    if recorded != from_graph.precision:
        raise ValueError(
            f"ONNX model {path} records precision {recorded} in its metadata, but its graph is "
            f"{from_graph.precision} ({from_graph.evidence}); re-export it"
        )
    return OnnxPrecision(recorded, f"metadata says {recorded}; graph has {from_graph.evidence}")


def check_precision(proto: Any, path: str | Path, wanted: str) -> OnnxPrecision:
    """The file's precision when it is ``wanted``; ValueError naming the file and both otherwise."""
    found = onnx_precision(proto, path)
    if found.precision != wanted:
        raise ValueError(
            f"ONNX model {path} is {found.precision} ({found.evidence}), but precision is {wanted}: "
            f"set precision to {found.precision}, or give a {wanted} ONNX file "
            f"(panoptic-depthlab export onnx --precision {wanted} ...)"
        )
    return found


@dataclass
class ArtefactInfo:
    """Which artefact a backend runs, where it came from and what it was built on (log, /diagnostics)."""

    kind: str  # "torch model" | "onnx" | "tensorrt engine"
    path: str = ""
    origin: str = ""  # given | exported at configure | cached export | cache hit | built at configure | prebuilt
    precision: str = ""
    built_on: str = ""  # GPU name and compute capability (TensorRT engines)
    tensorrt_version: str = ""  # the TensorRT the engine was built with
    providers: str = ""  # ONNX Runtime execution providers
    detail: str = ""  # e.g. why an engine was rebuilt

    def summary(self) -> str:
        parts = [self.kind]
        if self.path:
            parts.append(self.path)
        if self.origin:
            parts.append(f"({self.origin})")
        if self.precision:
            parts.append(self.precision)
        if self.built_on:
            parts.append(f"built on {self.built_on}")
        if self.tensorrt_version:
            parts.append(f"with TensorRT {self.tensorrt_version}")
        if self.providers:
            parts.append(f"providers {self.providers}")
        if self.detail:
            parts.append(f"[{self.detail}]")
        return " ".join(parts)

    def to_dict(self) -> dict[str, str]:
        return {k: v for k, v in asdict(self).items() if v}
