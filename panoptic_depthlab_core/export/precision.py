"""Precision in the ONNX file: fp16 (mixed, sensitive parts fp32) and int8 (explicit Q/DQ).

TensorRT 10 (strongly typed) and 11 (always strongly typed) take the precision from the graph, not
from builder flags, and ONNX Runtime runs the same files on the CPU. So the precision is decided
here, once, and recorded in the file's metadata (``panoptic_depthlab.precision`` and the calibration
that made it), where the runtime and the TensorRT builder read it back (``artefacts.onnx_precision``,
which also checks the record against the graph).

What stays fp32, and why (measured on the default model over synthetic val, docs/precision.md):
- the input normalisation (cast, ``x - mean``, ``/ std``): the graph input is 0-255 RGB;
  converting these alone also breaks typing (the float16 converter turns the constants, not the
  cast), and int8 would quantize raw pixels before the first conv.
- the output tails: everything after each head's last conv (the bilinear upsampling to input
  resolution, the crop, the offset scaling, the depth ``80 m * sigmoid(x)``). They are a few
  element-wise ops on large maps; in int8 the offsets (pixels, +-hundreds) and the depth (0-80 m)
  would get 256 levels, i.e. errors of a pixel / a third of a metre by construction.
- int8 only: the heads' predictor convs (the last conv of each head), which produce the logits,
  center heatmap, offsets and depth logit; quantizing their outputs costs accuracy for ~nothing.
- int8 only: the backbone's stem (first conv and its activation) and the nodes reading its output.
  Taking the Q/DQ pair off one activation at a time (``benchmarks/precision.py --sensitivity``)
  shows the stem's output as by far the most sensitive tensor of the default model: its rounding
  is inherited by every later layer (a depthwise conv and a residual carry it on; no channel sum
  averages it out), and int8 there costs most of the symmetric file's PQ loss
  (docs/precision.md). In MobileNetV3 that is a 3-channel conv, a depthwise conv and an add:
  little work for int8 to speed up.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import onnx

from .locking import atomic_write_path

log = logging.getLogger(__name__)

META_PREFIX = "panoptic_depthlab."
PRECISION_KEY = META_PREFIX + "precision"
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


# ------------------------------------------------------------------------------------ metadata
def onnx_metadata(model: onnx.ModelProto | str | Path) -> dict[str, str]:
    """The ``panoptic_depthlab.*`` metadata of an ONNX model (keys without the prefix)."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    return {p.key[len(META_PREFIX) :]: p.value for p in model.metadata_props if p.key.startswith(META_PREFIX)}


def set_onnx_metadata(model: onnx.ModelProto, entries: dict[str, Any]) -> None:
    """Set ``panoptic_depthlab.<key>`` entries (values as text), replacing earlier ones."""
    keys = {META_PREFIX + k for k in entries}
    kept = [p for p in model.metadata_props if p.key not in keys]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in entries.items():
        model.metadata_props.add(key=META_PREFIX + key, value=str(value))


# ------------------------------------------------------------------------------- graph regions
def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in graph.node for out in node.output}


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    users: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    return users


def name_unnamed_nodes(model: onnx.ModelProto) -> None:
    """Give every node a unique name: exclusion lists and profiles refer to nodes by name."""
    used = {n.name for n in model.graph.node if n.name}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in used:
                name += "_"
            node.name = name
            used.add(name)


def input_normalisation_nodes(model: onnx.ModelProto) -> list[str]:
    """Nodes between the graph input and the first conv (cast, subtract mean, divide by std)."""
    users = _consumers(model.graph)
    found: list[str] = []
    frontier = [i.name for i in model.graph.input]
    seen: set[str] = set()
    while frontier:
        tensor = frontier.pop()
        for node in users.get(tensor, []):
            if node.op_type == "Conv" or node.name in seen:
                continue
            seen.add(node.name)
            found.append(node.name)
            frontier.extend(node.output)
    return found


def stem_nodes(model: onnx.ModelProto) -> list[str]:
    """The backbone's stem and the nodes that read its output: the first conv(s) after the input
    normalisation, the element-wise/pooling nodes fed only by them (activation, max-pool), and
    every node that consumes the stem's output (the next convs, a residual add). Listing the
    readers too is what keeps the stem's output tensor fp32: ONNX Runtime quantizes a tensor
    whenever any of its consumers is quantized."""
    producers = _producers(model.graph)
    users = _consumers(model.graph)
    initializers = {t.name for t in model.graph.initializer}
    normalisation = set(input_normalisation_nodes(model))
    graph_inputs = {i.name for i in model.graph.input}
    stem: list[str] = []
    inside: set[str] = set()  # tensors produced by the stem
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        data = node.input[0]
        source = producers.get(data)
        if data in graph_inputs or (source is not None and source.name in normalisation):
            stem.append(node.name)
            inside.update(node.output)
    # walk forward through nodes that read only stem tensors (and constants), stopping at convs
    changed = True
    while changed:
        changed = False
        for node in model.graph.node:
            if node.name in stem or node.op_type == "Conv":
                continue
            data = [i for i in node.input if i and i not in initializers]
            if data and all(i in inside for i in data):
                stem.append(node.name)
                inside.update(node.output)
                changed = True
    readers = [n.name for t in sorted(inside) for n in users.get(t, []) if n.name not in stem]
    return stem + list(dict.fromkeys(readers))


def output_tail_nodes(model: onnx.ModelProto, include_predictors: bool = False) -> list[str]:
    """Nodes from each graph output back to (and, with ``include_predictors``, including) the last
    conv that produces it: upsampling, crop, offset scaling, depth sigmoid and scaling."""
    producers = _producers(model.graph)
    initializers = {t.name for t in model.graph.initializer}
    found: list[str] = []
    seen: set[str] = set()
    frontier = [o.name for o in model.graph.output]
    while frontier:
        node = producers.get(frontier.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op_type == "Conv":
            if include_predictors:
                found.append(node.name)
            continue
        found.append(node.name)
        frontier.extend(i for i in node.input if i and i not in initializers)
    return found


# ---------------------------------------------------------------------------------------- fp16
def convert_to_fp16(
    src: str | Path | onnx.ModelProto,
    out_path: str | Path,
    keep_fp32_nodes: Iterable[str] | None = None,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """fp16 weights and activations, fp32 I/O (callers feed and read float32 as before), the input
    normalisation and output tails in fp32 (module docstring). ``keep_fp32_nodes`` None = those."""
    from onnxconverter_common import float16

    model = src if isinstance(src, onnx.ModelProto) else onnx.load(str(src))
    name_unnamed_nodes(model)
    if keep_fp32_nodes is None:
        keep = input_normalisation_nodes(model) + output_tail_nodes(model)
    else:
        keep = list(keep_fp32_nodes)
        unknown = set(keep) - {n.name for n in model.graph.node}
        if unknown:
            raise ValueError(f"keep_fp32_nodes names no node of the graph: {sorted(unknown)}")
    # The converter blocks (keeps in fp32) these op types by default; our graph has none of them
    # apart from what the block list names, so the node list alone decides.
    with warnings.catch_warnings():
        # one "float32 number ... will be truncated" per tiny weight: fp16's range, expected
        warnings.simplefilter("ignore", UserWarning)
        converted = float16.convert_float_to_float16(
            model, keep_io_types=True, node_block_list=keep, disable_shape_infer=False
        )
    _float_outputs(converted)
    set_onnx_metadata(
        converted,
        {"precision": "fp16", "fp32_nodes": len(keep), "fp32_node_names": ",".join(keep), **(metadata or {})},
    )
    return _save(converted, out_path)


def _float_outputs(model: onnx.ModelProto) -> None:
    """Make every graph output float32 again. onnxconverter-common (1.16) ignores keep_io_types for
    outputs produced by a blocked (fp32) node: it casts them to fp16 and declares the output fp16.
    Re-targeting that last cast to float32 keeps the fp32 tail's values exact (no fp16 round trip)."""
    producers = _producers(model.graph)
    for out in model.graph.output:
        if out.type.tensor_type.elem_type != onnx.TensorProto.FLOAT16:
            continue
        node = producers.get(out.name)
        if node is not None and node.op_type == "Cast":
            for attr in node.attribute:
                if attr.name == "to":
                    attr.i = onnx.TensorProto.FLOAT
        else:  # an fp16 op produces the output: cast its result
            inner = out.name + "_fp16"
            if node is not None:
                node.output[list(node.output).index(out.name)] = inner
            for other in model.graph.node:
                other.input[:] = [inner if i == out.name else i for i in other.input]
            fp32 = onnx.TensorProto.FLOAT
            cast = onnx.helper.make_node("Cast", [inner], [out.name], name=out.name + "_fp32", to=fp32)
            model.graph.node.append(cast)
        out.type.tensor_type.elem_type = onnx.TensorProto.FLOAT


# ---------------------------------------------------------------------------------------- int8
def quantize_int8(
    src: str | Path,
    out_path: str | Path,
    reader,
    method: str = "percentile",
    per_channel: bool = True,
    symmetric_activations: bool = True,
    exclude_nodes: Iterable[str] | Callable[[onnx.ModelProto], list[str]] | None = None,
    preprocess: bool = True,
    percentile: float = 99.99,
    op_types: Iterable[str] | None = None,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Static int8 quantization in QDQ format with ONNX Runtime's tools; returns ``out_path``.

    ``reader``: a CalibrationDataReader (``get_next()`` -> ``{"images": batch}`` / None; its
    ``description``, ``num_images`` and ``fingerprint()`` go into the metadata when it has them).
    ``method``: percentile (99.99 % of each activation's histogram) by default: on the default model it
    agrees with fp32 better than MinMax or entropy (docs/precision.md, the lever table), because a
    few outlier activations otherwise stretch the 8-bit range; it calibrates slower (histograms).
    ``symmetric_activations``: int8 activations with zero point 0, the only form TensorRT builds from
    (its explicit quantization is symmetric); False gives uint8 asymmetric activations, which only
    ONNX Runtime on a CPU can use (and runs much faster there: its ReLUs fold into the zero point).
    ``exclude_nodes`` None = the input normalisation, the output tails, the heads' predictor
    convs and the backbone's stem stay fp32 (``default_fp32_nodes``, module docstring); a
    callable gets the graph that is quantized (after pre-processing, which renames and fuses
    nodes). ``preprocess``: ONNX Runtime's ``quant_pre_process`` (shape inference + graph
    optimisation) first. ``op_types``: the op types to quantize (None = every type ONNX Runtime
    can quantize).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if method not in CALIBRATION_METHODS:
        raise ValueError(f"calibration method must be one of {CALIBRATION_METHODS}, got {method!r}")
    calibrate_method = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[method]
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pdl_int8_") as tmp:
        model = onnx.load(str(src))
        name_unnamed_nodes(model)
        named = Path(tmp) / "named.onnx"
        onnx.save(model, str(named))
        if preprocess:
            from onnxruntime.quantization.shape_inference import quant_pre_process

            prepped = Path(tmp) / "prepped.onnx"
            # symbolic shape inference is for transformer-style dynamic graphs; ours is convs
            quant_pre_process(str(named), str(prepped), skip_symbolic_shape=True)
            model = onnx.load(str(prepped))
            name_unnamed_nodes(model)  # the optimiser may add unnamed nodes
            named = Path(tmp) / "named_prepped.onnx"
            onnx.save(model, str(named))
        if exclude_nodes is None:
            exclude = default_fp32_nodes(model)
        elif callable(exclude_nodes):
            exclude = list(exclude_nodes(model))
        else:
            exclude = list(exclude_nodes)
            unknown = set(exclude) - {n.name for n in model.graph.node}
            if unknown:
                raise ValueError(f"exclude_nodes names no node of the graph: {sorted(unknown)}")
        if hasattr(reader, "rewind"):
            reader.rewind()
        quantized = Path(tmp) / "int8.onnx"
        extra = {"ActivationSymmetric": symmetric_activations, "WeightSymmetric": True}
        if method == "percentile":
            extra["CalibPercentile"] = percentile
        if method != "minmax" and hasattr(reader, "__len__") and len(reader) > HISTOGRAM_CHUNK:
            extra["CalibStridedMinMax"] = _chunk_size(len(reader))
        options = dict(
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            activation_type=QuantType.QInt8 if symmetric_activations else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=exclude,
            op_types_to_quantize=list(op_types) if op_types is not None else None,
            extra_options=extra,
        )
        used_method = method + (f" {percentile:g}" if method == "percentile" else "")
        # the histogram calibrators print progress to stdout, where the export CLI writes its JSON report
        with contextlib.redirect_stdout(io.StringIO()) as chatter:
            used_method = _quantize(quantize_static, named, quantized, reader, method, used_method, options,
                                    calibrate_method, CalibrationMethod.MinMax)  # fmt: skip
        log.debug("quantize_static: %s", chatter.getvalue())
        result = onnx.load(str(quantized))
    entries: dict[str, Any] = {
        "precision": "int8",
        "quantization": "static QDQ, int8 weights per-channel" if per_channel else "static QDQ, int8 weights",
        "activations": "int8 symmetric" if symmetric_activations else "uint8 asymmetric",
        "calibration.method": used_method,
        "calibration.source": getattr(reader, "description", type(reader).__name__),
        "calibration.images": getattr(reader, "num_images", ""),
        "fp32_nodes": len(exclude),
        "fp32_node_names": ",".join(exclude),
        "quant_pre_process": preprocess,
    }
    if hasattr(reader, "fingerprint"):
        entries["calibration.fingerprint"] = reader.fingerprint()
    set_onnx_metadata(result, {**entries, **(metadata or {})})
    path = _save(result, out_path)
    log.info("int8 ONNX %s (%s, %.1f s)", path, entries["calibration.source"], time.perf_counter() - start)
    return path


def default_fp32_nodes(model: onnx.ModelProto, stem: bool = True) -> list[str]:
    """What an int8 file keeps in fp32 by default (module docstring): the input normalisation, the
    output tails with the heads' predictor convs, and (``stem``) the backbone's stem with its
    readers. ``stem=False``: the stem quantized too, the default before the sensitivity analysis
    (the benchmark compares the two)."""
    nodes = input_normalisation_nodes(model) + output_tail_nodes(model, include_predictors=True)
    return list(dict.fromkeys(nodes + (stem_nodes(model) if stem else [])))


# ------------------------------------------------------------------------------------- parity
# What a reduced-precision file must keep of torch fp32, checked after every export (a gross
# failure: a broken conversion, a calibration of the wrong data). The tests hold tighter, measured
# bounds per model; these floors are loose enough for any model that quantizes at all.
MIN_SEMANTIC_AGREEMENT = {"fp16": 0.99, "int8": 0.90}
MAX_DEPTH_REL_MEAN = {"fp16": 0.01, "int8": 0.10}


def precision_parity(model, onnx_path: str | Path, images) -> dict[str, float]:
    """How ONNX Runtime (CPU) on ``onnx_path`` agrees with torch fp32 on ``images`` (float32
    [B, 3, H, W] 0-255): semantic argmax agreement (fraction of pixels), depth relative error
    (mean and 99th percentile), center heatmap max abs error, offset mean abs error (pixels)."""
    import numpy as np
    import onnxruntime as ort
    import torch

    from ..model import OUTPUT_NAMES

    images = images.detach().float().cpu()
    with torch.no_grad():
        ref = {k: v.numpy() for k, v in model.eval().float().cpu()(images).items()}
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = dict(zip(OUTPUT_NAMES, session.run(list(OUTPUT_NAMES), {"images": images.numpy()}), strict=True))
    for name, value in got.items():
        if value.dtype != np.float32 or value.shape != ref[name].shape:
            raise ValueError(
                f"{onnx_path}: output {name} is {value.dtype} {value.shape}, expected float32 {ref[name].shape}"
            )
    rel = np.abs(got["depth"] - ref["depth"]) / np.maximum(ref["depth"], 1e-3)
    return {
        "finite": float(all(np.isfinite(v).all() for v in got.values())),
        "semantic_agreement": float((got["sem_logits"].argmax(1) == ref["sem_logits"].argmax(1)).mean()),
        "depth_rel_mean": float(rel.mean()),
        "depth_rel_p99": float(np.percentile(rel, 99)),
        "center_max_abs": float(np.abs(got["center"] - ref["center"]).max()),
        "offset_mean_abs_px": float(np.abs(got["offset"] - ref["offset"]).mean()),
    }


def check_precision_parity(model, onnx_path: str | Path, images, precision: str) -> dict[str, float]:
    """``precision_parity``; ValueError naming the file when it is below the floors above."""
    parity = precision_parity(model, onnx_path, images)
    problems = []
    if not parity["finite"]:
        problems.append("non-finite outputs")
    if parity["semantic_agreement"] < MIN_SEMANTIC_AGREEMENT[precision]:
        problems.append(f"semantic agreement {parity['semantic_agreement']:.4f} < {MIN_SEMANTIC_AGREEMENT[precision]}")
    if parity["depth_rel_mean"] > MAX_DEPTH_REL_MEAN[precision]:
        problems.append(f"depth relative error {parity['depth_rel_mean']:.4f} > {MAX_DEPTH_REL_MEAN[precision]}")
    if problems:
        raise ValueError(f"{precision} ONNX {onnx_path} disagrees with torch fp32: {'; '.join(problems)} ({parity})")
    return parity


def _quantize(quantize_static, src, dst, reader, method, used_method, options, calibrate_method, minmax) -> str:
    """quantize_static with ``calibrate_method``; MinMax when a histogram method cannot bin a
    constant activation. Returns the method that calibrated."""
    try:
        quantize_static(str(src), str(dst), _OrtReader(reader), calibrate_method=calibrate_method, **options)
    except ValueError as exc:
        # ORT's histogram calibrators cannot bin a tensor that is constant over the calibration
        # data (numpy: "Too many bins for data range"), e.g. a dead channel of untrained
        # weights; MinMax has no such limit
        if method == "minmax" or "bins" not in str(exc):
            raise
        log.warning("%s calibration failed (%s); calibrating with minmax", method, exc)
        if hasattr(reader, "rewind"):
            reader.rewind()
        quantize_static(str(src), str(dst), _OrtReader(reader), calibrate_method=minmax, **options)
        return f"minmax ({method} failed: a constant activation)"
    return used_method


# Histogram calibrators (percentile, entropy) keep every activation of every calibration batch in
# memory until they bin them: at 256x512 the default model's activations are ~0.3 GB a frame, and 64
# frames exhausted a 24 GB machine. Calibrating in chunks bins each chunk before the next runs.
HISTOGRAM_CHUNK = 8


def _chunk_size(batches: int, limit: int = HISTOGRAM_CHUNK) -> int:
    """The largest divisor of ``batches`` not above ``limit`` (ONNX Runtime needs equal chunks)."""
    return max(d for d in range(1, min(limit, batches) + 1) if batches % d == 0)


class _OrtReader:
    """ONNX Runtime's reader protocol over ours (onnxruntime stays an optional import elsewhere),
    with ``set_range`` for chunked calibration (``CalibStridedMinMax``, which despite its name
    chunks every calibrator)."""

    def __init__(self, reader) -> None:
        self.reader = reader
        self.count = 0
        self.position = 0  # batches handed out since the last rewind
        self.end: int | None = None

    def __len__(self) -> int:
        return len(self.reader)

    def set_range(self, start_index: int, end_index: int) -> None:
        if start_index != self.position:  # not the next chunk: read again from the start
            if hasattr(self.reader, "rewind"):
                self.reader.rewind()
            self.position = 0
            while self.position < start_index and self.reader.get_next() is not None:
                self.position += 1
        self.end = end_index

    def get_next(self):
        if self.end is not None and self.position >= self.end:
            return None
        feed = self.reader.get_next()
        if feed is None and self.count == 0:
            raise ValueError(f"calibration reader {getattr(self.reader, 'description', '')} gave no images")
        self.count += feed is not None
        self.position += feed is not None
        return feed


def _save(model: onnx.ModelProto, out_path: str | Path) -> Path:
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write_path(out_path) as tmp:
        onnx.save(model, str(tmp))
    onnx.checker.check_model(str(out_path))
    return out_path
