"""fp16 and int8 ONNX files: export, metadata, ONNX Runtime parity with torch fp32, the runtime
running them as they are, and the precision check against a configured precision.

Tolerances were measured (benchmarks/precision.py measures the default model's real metrics) on
these random-weight models with trained-like magnitudes at 64x128, three street-like images each:

| | semantic argmax agreement | depth rel. mean | depth rel. p99 | center max abs | offset mean abs |
|---|---|---|---|---|---|
| tiny fp16 | 1.0 | 1e-5 | 2e-5 | 2.6e-4 | 6.6e-4 px |
| small fp16 | 1.0 | 5e-5 | 5e-5 | 2.3e-4 | 3.2e-4 px |
| tiny int8 (4 synthetic calibration frames, MinMax) | 1.0 | 8e-4 | 2.5e-3 | 0.014 | 0.025 px |
| small int8 | 1.0 | 5e-4 | 1.9e-3 | 0.015 | 0.018 px |

The bounds below leave ~10x (fp16: ~20x) room over those: fp16 rounds every activation to 11
significant bits (relative 5e-4 per op; the errors average out over a conv's sum), int8 to 8 bits
of each tensor's calibrated range (0.4 % of the range per tensor). A broken conversion (a wrong
scale, fp16 overflow, a lost normalisation) is off by orders of magnitude, not by these factors.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import yaml
from tiny_models import TINY_MODEL, tiny_model_config

from panoptic_depthlab_core.cli import main
from panoptic_depthlab_core.export.artefacts import onnx_precision
from panoptic_depthlab_core.export.calibration import CalibrationDataReader, SyntheticSource
from panoptic_depthlab_core.export.onnx_export import export_onnx, realistic_test_image, with_trained_like_statistics
from panoptic_depthlab_core.export.precision import (
    check_precision_parity,
    convert_to_fp16,
    input_normalisation_nodes,
    onnx_metadata,
    output_tail_nodes,
    precision_parity,
    quantize_int8,
    stem_nodes,
)
from panoptic_depthlab_core.model import build_model, load_model_config
from panoptic_depthlab_core.runtime.backend import BackendConfig
from panoptic_depthlab_core.runtime.onnxruntime_backend import OnnxRuntimeBackend

CONFIG_DIR = Path(__file__).resolve().parents[3] / "config" / "models"
HW = (64, 128)
BOUNDS = {
    # precision: (min semantic agreement, max depth rel mean, max depth rel p99, center max, offset mean px)
    "fp16": (0.999, 2e-4, 1e-3, 5e-3, 0.01),
    "int8": (0.98, 8e-3, 0.03, 0.15, 0.25),
}


def _trained_like(model: torch.nn.Module) -> torch.nn.Module:
    """BN statistics with spread and predictors with trained-like magnitudes (see test_onnx_export)."""
    torch.manual_seed(0)
    return with_trained_like_statistics(model).eval()


def _tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return _trained_like(build_model(tiny_model_config()))


def _small() -> torch.nn.Module:
    cfg = load_model_config(CONFIG_DIR / "panoptic_depthlab_small.yaml")
    torch.manual_seed(0)
    return _trained_like(build_model(cfg))


def _images(seed: int) -> torch.Tensor:
    return torch.from_numpy(realistic_test_image(*HW, seed)).permute(2, 0, 1)[None].float()


def _calibration(count: int = 4) -> CalibrationDataReader:
    return CalibrationDataReader(SyntheticSource(seed=1, count=count, size=HW), HW)


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory) -> tuple[torch.nn.Module, dict[str, Path]]:
    model = _tiny()
    root = tmp_path_factory.mktemp("tiny_precision")
    fp32 = export_onnx(model, root / "fp32.onnx", *HW)
    files = {
        "fp32": fp32,
        "fp16": convert_to_fp16(fp32, root / "fp16.onnx"),
        "int8": quantize_int8(fp32, root / "int8.onnx", _calibration()),
    }
    return model, files


def _assert_parity(model, path: Path, precision: str) -> None:
    sem, rel_mean, rel_p99, center, offset = BOUNDS[precision]
    for seed in (1, 2):
        p = precision_parity(model, path, _images(seed))
        assert p["finite"] == 1.0, p
        assert p["semantic_agreement"] >= sem, p
        assert p["depth_rel_mean"] <= rel_mean and p["depth_rel_p99"] <= rel_p99, p
        assert p["center_max_abs"] <= center and p["offset_mean_abs_px"] <= offset, p


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_tiny_model_parity_with_torch_fp32(tiny_files, precision: str) -> None:
    model, files = tiny_files
    _assert_parity(model, files[precision], precision)


@pytest.mark.slow
def test_small_model_fp16_and_int8_parity_with_torch_fp32(tmp_path: Path) -> None:
    model = _small()
    fp16 = export_onnx(model, tmp_path / "fp16.onnx", *HW, precision="fp16")
    int8 = export_onnx(model, tmp_path / "int8.onnx", *HW, precision="int8", calibration=_calibration())
    _assert_parity(model, fp16, "fp16")
    _assert_parity(model, int8, "int8")


def test_files_carry_their_precision_and_keep_float32_io(tiny_files) -> None:
    _, files = tiny_files
    for precision, path in files.items():
        proto = onnx.load(str(path))
        assert onnx_precision(proto, path).precision == precision  # metadata and graph agree
        assert onnx_metadata(proto)["precision"] == precision
        for value in list(proto.graph.input) + list(proto.graph.output):
            assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT, (precision, value.name)
    fp16 = onnx.load(str(files["fp16"]))
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in fp16.graph.initializer)
    int8 = onnx.load(str(files["int8"]))
    meta = onnx_metadata(int8)
    assert meta["calibration.source"] == "synthetic:seed=1 size=64x128"
    assert meta["calibration.images"] == "4" and meta["calibration.method"] == "percentile 99.99"
    assert meta["activations"] == "int8 symmetric" and "per-channel" in meta["quantization"]
    assert len(meta["calibration.fingerprint"]) == 64
    # explicit Q/DQ with zero points 0 (symmetric: what TensorRT's explicit quantization takes)
    qdq = [n for n in int8.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert len(qdq) > 50
    inits = {t.name: t for t in int8.graph.initializer}
    zero_points = [onnx.numpy_helper.to_array(inits[n.input[2]]) for n in qdq if n.input[2:] and n.input[2] in inits]
    assert all(np.all(z == 0) for z in zero_points)  # activations and weights int8, biases int32
    assert sum(z.dtype == np.int8 for z in zero_points) > 50
    assert {str(z.dtype) for z in zero_points} <= {"int8", "int32"}


def test_sensitive_parts_stay_fp32(tiny_files) -> None:
    _, files = tiny_files
    fp32 = onnx.load(str(files["fp32"]))
    norm = input_normalisation_nodes(fp32)
    tails = output_tail_nodes(fp32)
    assert {n.split("/")[-1].rstrip("_0123456789") for n in norm} >= {"Sub", "Div"}
    # every output's tail: the upsampling to input size and the crop; depth: sigmoid and scaling
    ops = {n.op_type for n in fp32.graph.node if n.name in tails}
    assert {"Resize", "Slice", "Sigmoid", "Mul"} <= ops
    fp16 = onnx.load(str(files["fp16"]))
    kept = onnx_metadata(fp16)["fp32_node_names"].split(",")
    assert set(norm + tails) == set(kept)
    # a kept node reads and writes float32: the Sigmoid's input is cast up from the fp16 conv
    by_name = {n.name: n for n in fp16.graph.node}
    sigmoid = next(n for n in kept if by_name[n].op_type == "Sigmoid")
    producer = {o: n for n in fp16.graph.node for o in n.output}[by_name[sigmoid].input[0]]
    assert producer.op_type == "Cast" and producer.attribute[0].i == onnx.TensorProto.FLOAT
    int8 = onnx.load(str(files["int8"]))
    excluded = onnx_metadata(int8)["fp32_node_names"].split(",")
    assert sum("predictor" in n for n in excluded) == 4  # the four heads' last convs
    # the backbone's stem and its readers, and the stem's output is never quantized
    assert "/model/backbone/features.0/features.0.0/Conv" in excluded
    assert "/model/backbone/features.1/block/block.0/block.0.0/Conv" in excluded
    stem_out = "/model/backbone/features.0/features.0.2/HardSwish_output_0"
    assert any(stem_out in n.output for n in int8.graph.node)
    assert not [n.name for n in int8.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == stem_out]
    # their weights are float (no DequantizeLinear in front)
    producer8 = {o: n for n in int8.graph.node for o in n.output}
    for node in int8.graph.node:
        if node.name in excluded and node.op_type == "Conv":
            assert node.input[1] not in producer8 or producer8[node.input[1]].op_type != "DequantizeLinear"


def _graph(nodes: list[onnx.NodeProto], output: str) -> onnx.ModelProto:
    """A float graph of ``nodes`` from ``images`` to ``output``, every named weight a constant."""
    known = {o for n in nodes for o in n.output} | {"images"}
    weights = sorted({i for n in nodes for i in n.input if i and i not in known})
    value = onnx.helper.make_tensor_value_info
    graph = onnx.helper.make_graph(
        nodes, "g", [value("images", onnx.TensorProto.FLOAT, None)], [value(output, onnx.TensorProto.FLOAT, None)],
        [onnx.helper.make_tensor(w, onnx.TensorProto.FLOAT, [1], [1.0]) for w in weights],
    )  # fmt: skip
    return onnx.helper.make_model(graph)


def test_stem_nodes_of_mobilenet_and_resnet_stems() -> None:
    node = onnx.helper.make_node
    normalisation = [node("Sub", ["images", "mean"], ["centred"], "sub"), node("Div", ["centred", "std"], ["x"], "div")]
    # MobileNetV3 after ONNX Runtime's pre-processing: HardSwish as HardSigmoid + Mul, a residual
    mobilenet = _graph(
        normalisation + [
            node("Conv", ["x", "w0"], ["c0"], "stem_conv"),
            node("HardSigmoid", ["c0"], ["h0"], "stem_hs"),
            node("Mul", ["c0", "h0"], ["s"], "stem_mul"),
            node("Conv", ["s", "w1"], ["d1"], "dw_conv"),
            node("Relu", ["d1"], ["r1"], "dw_relu"),
            node("Conv", ["r1", "w2"], ["p1"], "pw_conv"),
            node("Add", ["s", "p1"], ["y"], "residual"),
            node("Conv", ["y", "w3"], ["out"], "next_conv"),
        ],
        "out",
    )  # fmt: skip
    assert stem_nodes(mobilenet) == ["stem_conv", "stem_hs", "stem_mul", "dw_conv", "residual"]
    # a torchvision-style ResNet stem: conv, ReLU, max-pool, read by res2's first conv and its shortcut
    resnet = _graph(
        normalisation + [
            node("Conv", ["x", "w0"], ["c0"], "conv1"),
            node("Relu", ["c0"], ["r0"], "relu1"),
            node("MaxPool", ["r0"], ["m0"], "pool", kernel_shape=[3, 3]),
            node("Conv", ["m0", "w1"], ["a"], "res2_conv1"),
            node("Conv", ["m0", "w2"], ["b"], "res2_shortcut"),
            node("Add", ["a", "b"], ["out"], "res2_add"),
        ],
        "out",
    )  # fmt: skip
    assert stem_nodes(resnet) == ["conv1", "relu1", "pool", "res2_conv1", "res2_shortcut"]


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_onnxruntime_backend_runs_the_file_as_is(tiny_files, precision: str) -> None:
    model, files = tiny_files
    backend = OnnxRuntimeBackend(
        None, BackendConfig(name="onnxruntime", precision=precision, onnx_path=str(files[precision])), HW
    )
    assert backend.precision == precision
    out = backend(_images(3))
    with torch.no_grad():
        ref = model(_images(3))
    assert all(v.dtype == torch.float32 for v in out.values())
    agreement = (out["sem_logits"].argmax(1) == ref["sem_logits"].argmax(1)).float().mean().item()
    assert agreement >= BOUNDS[precision][0]


def test_backend_refuses_a_precision_that_disagrees_with_the_file(tiny_files) -> None:
    _, files = tiny_files
    with pytest.raises(ValueError, match=r"int8\.onnx is int8.*precision is fp32"):
        OnnxRuntimeBackend(None, BackendConfig(name="onnxruntime", precision="fp32", onnx_path=str(files["int8"])), HW)
    with pytest.raises(ValueError, match=r"fp32\.onnx is fp32.*precision is fp16"):
        OnnxRuntimeBackend(None, BackendConfig(name="onnxruntime", precision="fp16", onnx_path=str(files["fp32"])), HW)
    # no file given: only fp32 is exported on the fly; int8 needs calibration data
    with pytest.raises(ValueError, match="export onnx --precision int8"):
        OnnxRuntimeBackend(_tiny(), BackendConfig(name="onnxruntime", precision="int8"), HW)


def test_parity_check_catches_a_broken_quantization(tiny_files, tmp_path: Path) -> None:
    model, files = tiny_files
    broken = onnx.load(str(files["int8"]))
    # every activation's quantization range 1/16 of the calibrated one: values clip, outputs go wrong
    inits = {t.name: t for t in broken.graph.initializer}
    scales = {n.input[1] for n in broken.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits}
    for name in scales:
        value = onnx.numpy_helper.to_array(inits[name]) / 16
        inits[name].CopyFrom(onnx.numpy_helper.from_array(value.astype(np.float32), name))
    path = tmp_path / "broken.onnx"
    onnx.save(broken, str(path))
    assert check_precision_parity(model, files["int8"], _images(1), "int8")["semantic_agreement"] >= 0.98
    with pytest.raises(ValueError, match=r"broken\.onnx disagrees with torch fp32"):
        check_precision_parity(model, path, _images(1), "int8")


def test_bad_precision_arguments(tiny_files, tmp_path: Path) -> None:
    model, files = tiny_files
    with pytest.raises(ValueError, match="precision must be one of"):
        export_onnx(model, tmp_path / "m.onnx", *HW, precision="bf16")
    with pytest.raises(ValueError, match="int8 needs calibration data"):
        export_onnx(model, tmp_path / "m.onnx", *HW, precision="int8")
    with pytest.raises(ValueError, match="calibration method"):
        quantize_int8(files["fp32"], tmp_path / "m.onnx", _calibration(), method="mse")
    with pytest.raises(ValueError, match="names no node"):
        convert_to_fp16(files["fp32"], tmp_path / "m.onnx", keep_fp32_nodes=["/no/such/node"])
    assert not (tmp_path / "m.onnx").exists()


def test_export_cli_int8_from_synthetic_calibration(tmp_path: Path, capsys) -> None:
    """`panoptic-depthlab export onnx --precision int8` end to end: metadata and parity in its report."""
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({"model": dict(TINY_MODEL), "input": {"height": HW[0], "width": HW[1]}}))
    out = tmp_path / "tiny_int8.onnx"
    base = ["export", "onnx", "--config", str(config), "--precision", "int8"]
    assert main([*base, "--calib-data", "synthetic:3", "--calib-images", "2", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["metadata"]["precision"] == "int8"
    assert report["metadata"]["calibration.source"] == "synthetic:seed=3 size=64x128"
    assert report["metadata"]["calibration.images"] == "2"
    assert report["agreement_with_torch_fp32"]["semantic_agreement"] >= 0.9
    assert onnx_precision(onnx.load(str(out)), out).precision == "int8"
    assert main([*base, str(tmp_path / "x.onnx")]) != 0
    assert "--calib-data" in capsys.readouterr().err
    assert main([*base, "--calib-data", str(tmp_path / "nowhere"), str(tmp_path / "x.onnx")]) != 0
    assert "nowhere" in capsys.readouterr().err


@pytest.mark.slow
def test_dynamic_fp16_and_int8_files_run_other_sizes(tmp_path: Path) -> None:
    """--dynamic with a precision: calibrated at one size, the file runs at others (the in-graph
    padding follows the input) with the same agreement."""
    model = _tiny()
    fp16 = export_onnx(model, tmp_path / "fp16.onnx", *HW, dynamic=True, precision="fp16")
    int8 = export_onnx(model, tmp_path / "int8.onnx", *HW, dynamic=True, precision="int8", calibration=_calibration(2))
    image = torch.from_numpy(realistic_test_image(96, 96, 3)).permute(2, 0, 1)[None].float()
    for path, precision in ((fp16, "fp16"), (int8, "int8")):
        sem, rel_mean, _, center, offset = BOUNDS[precision]
        p = precision_parity(model, path, image)
        assert p["semantic_agreement"] >= sem and p["depth_rel_mean"] <= rel_mean, (precision, p)
        assert p["center_max_abs"] <= center and p["offset_mean_abs_px"] <= offset, (precision, p)


def test_histogram_calibration_runs_in_chunks(tiny_files, tmp_path: Path, monkeypatch) -> None:
    """Percentile calibration over more frames than one chunk bins chunk by chunk (memory stays
    bounded: 64 frames at 256x512 in one piece exhausted 24 GB) and gives a file as good."""
    from panoptic_depthlab_core.export import precision
    from panoptic_depthlab_core.export.precision import HISTOGRAM_CHUNK, _chunk_size

    assert [_chunk_size(n) for n in (1, 7, 12, 32, 64, 13)] == [1, 7, 6, 8, 8, 1]
    chunks: list[tuple[int, int]] = []
    set_range = precision._OrtReader.set_range

    def recording(self, start_index: int, end_index: int) -> None:
        chunks.append((start_index, end_index))
        set_range(self, start_index, end_index)

    monkeypatch.setattr(precision._OrtReader, "set_range", recording)
    model, files = tiny_files
    reader = _calibration(HISTOGRAM_CHUNK + 4)
    path = quantize_int8(files["fp32"], tmp_path / "chunked.onnx", reader)
    assert chunks == [(0, 6), (6, 12)]  # 12 frames in two equal chunks of at most HISTOGRAM_CHUNK
    meta = onnx_metadata(path)
    assert meta["calibration.images"] == str(HISTOGRAM_CHUNK + 4)
    assert meta["calibration.method"] == "percentile 99.99"  # no silent fallback to minmax
    _assert_parity(model, path, "int8")


def test_sensitivity_probe_takes_one_activation_off_int8(tiny_files) -> None:
    """benchmarks/precision.py --sensitivity's graph edit: the named activation loses its Q/DQ pair
    (it runs fp32), every other pair and the int8 weights stay, and the file still runs; with every
    activation's pair off, only the weights' rounding is left, so the outputs come closer to fp32."""
    import importlib.util

    import onnxruntime as ort

    script = Path(__file__).resolve().parents[3] / "benchmarks" / "precision.py"
    spec = importlib.util.spec_from_file_location("precision_benchmark", script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    model, files = tiny_files
    int8 = onnx.load(str(files["int8"]))
    inits = {t.name for t in int8.graph.initializer}
    activations = [n.input[0] for n in int8.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits]
    one = bench.without_activation_qdq(int8, {activations[0]})

    def quantized(m):
        return sorted(n.input[0] for n in m.graph.node if n.op_type == "QuantizeLinear")

    assert activations[0] not in quantized(one)
    assert len(quantized(one)) == len(quantized(int8)) - 1
    assert sum(n.op_type == "DequantizeLinear" for n in one.graph.node) == sum(
        n.op_type == "DequantizeLinear" for n in int8.graph.node
    ) - 1
    image = _images(1).numpy()
    none = bench.without_activation_qdq(int8, set(activations))
    assert quantized(none) == []  # weights are stored int8 with their DequantizeLinear, no Quantize

    def offsets(m):
        session = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        return session.run(["offset"], {"images": image})[0]

    with torch.no_grad():
        reference = model(torch.from_numpy(image))["offset"].numpy()
    error_int8 = np.abs(offsets(int8) - reference).mean()
    error_weights_only = np.abs(offsets(none) - reference).mean()
    assert np.isfinite(offsets(one)).all()
    assert error_weights_only < 0.7 * error_int8, (error_weights_only, error_int8)  # measured: 0.50x
    # the probe over the first activations (all of them: ~40 s): one entry each, ranked by gain,
    # files compared alike
    probed = activations[:12]
    report = bench.sensitivity(files["fp32"], files["int8"], [image], 1, {"int8": files["int8"]}, probed)
    assert report["activations"] == len(probed) and set(report["per_tensor"]) == set(probed)
    gains = [v["gain"] for v in report["per_tensor"].values()]
    assert gains == sorted(gains, reverse=True) and gains[0] > 0
    assert report["compared_files"]["int8"] == pytest.approx(report["unchanged"])  # scored alike
    assert report["unchanged"]["offset_px"] > 0
