"""The node runs prebuilt artefacts (onnx_path, engine_path) and refuses bad ones at configure, over real rclpy.

One node process (autostart off) with its own export cache ($PANOPTIC_DEPTHLAB_CACHE), walked through
configure/cleanup with different artefact parameters:
- without onnx_path, backend auto exports the model into the cache at configure (one file: the count works);
- with a prebuilt ONNX, onnxruntime runs it as given and nothing is exported (zero files), and the log
  and /diagnostics name the file;
- an int8 ONNX with precision fp32, a truncated ONNX, a TensorRT engine built on another GPU/TensorRT
  with rebuilding disabled (checked through its sidecar: TensorRT is not needed for that), a truncated
  engine: configure fails with an error naming the file and the mismatch, the process stays up, and
  a good configuration configures afterwards.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy (ROS 2) is not importable in this environment")
pytest.importorskip("vision_msgs.msg", reason="vision_msgs is not built (scripts/build_vision_msgs.sh)")

from lifecycle_msgs.msg import State, Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from pdl_ros_harness import (  # noqa: E402
    NodeProcess,
    env_with,
    latest_diagnostics,
    set_parameters,
    wait_until,
    write_params,
)
from qdq_model import write_qdq_onnx  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]  # ~25 s on 2 idle cores, most of it the one export
INPUT_HW = (128, 256)  # write_params' network input


def _engine_from_another_machine(tmp: Path, onnx_path: Path) -> Path:
    """An engine + sidecar as `export tensorrt --engine` writes them on a Jetson Orin with TensorRT 10.3."""
    from panoptic_depthlab_core.export.engine_cache import BuildEnvironment, EngineCache, sidecar_path_for

    orin = BuildEnvironment("NVIDIA Orin", "8.7", "10.3.0.30")
    entry = EngineCache(tmp / "orin_cache").get_or_build(
        onnx_path, "int8", (1, 3, *INPUT_HW), lambda src, dst: dst.write_bytes(b"serialized engine" * 64), orin
    )
    engine = tmp / "orin.engine"
    shutil.copy(entry.engine_path, engine)
    shutil.copy(entry.sidecar_path, sidecar_path_for(engine))
    return engine


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory) -> dict[str, Path]:
    from panoptic_depthlab_core.export.engine_cache import sidecar_path_for

    tmp = tmp_path_factory.mktemp("artefacts")
    int8 = write_qdq_onnx(tmp / "small_int8.onnx", INPUT_HW, precision_metadata=None)
    engine = _engine_from_another_machine(tmp, int8)
    truncated_engine = tmp / "truncated.engine"
    truncated_engine.write_bytes(engine.read_bytes()[:100])
    shutil.copy(sidecar_path_for(engine), sidecar_path_for(truncated_engine))
    return {"dir": tmp, "int8": int8, "engine": engine, "truncated_engine": truncated_engine}


def test_node_runs_prebuilt_artefacts_and_refuses_bad_ones(ros_env, pdl_weights, pdl_client, artefacts, tmp_path):
    """Also the "zero exports" count: the files the export writes into the node's cache."""
    cache = tmp_path / "cache"
    params = write_params(tmp_path / "params.yaml", pdl_weights, autostart=False, warmup_iterations=1)
    env = env_with(ros_env, PANOPTIC_DEPTHLAB_CACHE=str(cache))
    node = NodeProcess(env, params, tmp_path / "node.log", "pdl_artefacts", namespace="/art")
    client = pdl_client
    try:

        def state() -> int:
            return client.call(GetState, f"{node.fqn}/get_state", GetState.Request(), timeout=60).current_state.id

        def change(transition: int) -> bool:
            request = ChangeState.Request()
            request.transition.id = transition
            return client.call(ChangeState, f"{node.fqn}/change_state", request, timeout=120).success

        def configure_with(**values) -> bool:
            results = set_parameters(client, node.fqn, **values)
            assert all(r.successful for r in results), [r.reason for r in results]
            return change(Transition.TRANSITION_CONFIGURE)

        def exports() -> list[Path]:
            return sorted((cache / "onnx").glob("*.onnx")) if (cache / "onnx").is_dir() else []

        def log_since(mark: int) -> str:
            return node.log()[mark:]

        assert state() == State.PRIMARY_STATE_UNCONFIGURED

        # backend auto without onnx_path: the model is exported into the cache at configure (counted)
        assert configure_with(backend="auto")
        assert len(exports()) == 1, exports()
        assert "(exported from the model into the cache)" in node.log()
        assert change(Transition.TRANSITION_CLEANUP)
        # that export is the prebuilt fp32 ONNX of what follows (one export in the whole test)
        artefacts["fp32"] = shutil.move(exports()[0], artefacts["dir"] / "small_fp32.onnx")
        artefacts["truncated_onnx"] = artefacts["dir"] / "small_truncated.onnx"
        artefacts["truncated_onnx"].write_bytes(artefacts["fp32"].read_bytes()[:4096])

        # a prebuilt ONNX: run as given by onnxruntime, zero exports
        mark = len(node.log())
        assert configure_with(onnx_path=str(artefacts["fp32"]))
        assert exports() == []
        assert f"network artefact: onnx {artefacts['fp32']} (given, used as is) fp32" in log_since(mark)
        diag = wait_until(
            lambda: (d := latest_diagnostics(client, node.fqn)).get("state") == "inactive" and "given" in d.get(
                "artefact", "") and d,
            20,
            "diagnostics naming the given ONNX file",
            node,
        )
        assert diag["backend"] == "auto (onnxruntime)" and str(artefacts["fp32"]) in diag["artefact"]
        assert diag["artefact_precision"] == "fp32" and diag["image_decoder"] == "none (raw images)"
        assert change(Transition.TRANSITION_CLEANUP)

        def refused(values: dict, *fragments: str) -> None:
            mark = len(node.log())
            assert not configure_with(**values)
            assert state() == State.PRIMARY_STATE_UNCONFIGURED and node.alive()
            text = log_since(mark)
            assert "configure failed" in text, text
            for fragment in fragments:
                assert fragment in text, f"{fragment!r} not in:\n{text}"

        refused({"onnx_path": str(artefacts["int8"]), "precision": "fp32"},
                f"{artefacts['int8']} is int8", "but precision is fp32")  # fmt: skip
        refused({"onnx_path": str(artefacts["truncated_onnx"])}, f"{artefacts['truncated_onnx']} is corrupt")
        engine_params = {"backend": "tensorrt", "device": "cuda", "precision": "int8", "onnx_path": "",
                         "allow_engine_rebuild": False}  # fmt: skip
        refused({**engine_params, "engine_path": str(artefacts["engine"])},
                f"{artefacts['engine']} cannot be used here", "built on NVIDIA Orin (compute capability 8.7), "
                "TensorRT 10.3.0.30", "allow_engine_rebuild false")  # fmt: skip
        refused({**engine_params, "engine_path": str(artefacts["truncated_engine"])},
                f"{artefacts['truncated_engine']} cannot be used here", "truncated")  # fmt: skip
        assert exports() == []

        # the same process configures again once the parameters are right
        assert configure_with(backend="auto", device="cpu", precision="fp32", engine_path="",
                              onnx_path=str(artefacts["fp32"]))  # fmt: skip
        assert state() == State.PRIMARY_STATE_INACTIVE and exports() == []
        time.sleep(0.1)
    finally:
        node.stop()


def test_artefact_parameters_resolve_backend_and_refuse_impossible_combinations() -> None:
    """Checked at configure (they may be set one at a time before it)."""
    from panoptic_depthlab_ros.params import NodeParams
    from panoptic_depthlab_ros.processing import artefact_backend, artefact_problems

    assert artefact_backend(NodeParams(onnx_path="m.onnx")) == "onnxruntime"
    assert artefact_backend(NodeParams(onnx_path="m.onnx", engine_path="m.engine")) == "tensorrt"
    assert artefact_backend(NodeParams()) == "auto" and artefact_problems(NodeParams()) == []
    assert artefact_problems(NodeParams(precision="int8", onnx_path="m_int8.onnx")) == []
    (problem,) = artefact_problems(NodeParams(precision="int8", backend="onnxruntime"))
    assert "precision int8 runs an int8 ONNX file or engine: set onnx_path" in problem
    engine_for_ort = NodeParams(backend="onnxruntime", engine_path="e.engine")
    assert "backend onnxruntime cannot run it" in artefact_problems(engine_for_ort)[0]
    assert "not used by backend torch" in artefact_problems(NodeParams(backend="torch", onnx_path="m.onnx"))[0]


def test_diagnostics_name_the_engine_its_gpu_and_tensorrt(tmp_path) -> None:
    """What /diagnostics and the configure log show for a TensorRT engine (TensorRT cannot run here: the
    engine is prepared with a fake build environment, as the node's prepare step does on a GPU)."""
    from types import SimpleNamespace

    from panoptic_depthlab_core.export.engine_cache import BuildEnvironment
    from panoptic_depthlab_core.runtime import BackendConfig
    from panoptic_depthlab_core.runtime.tensorrt_backend import prepare_engine
    from panoptic_depthlab_ros.diagnostics import artefact_values

    orin = BuildEnvironment("NVIDIA Orin", "8.7", "10.3.0.30")
    cfg = BackendConfig(name="tensorrt", device="cuda:0", precision="int8", engine_cache_dir=str(tmp_path / "engines"),
                        onnx_path=str(write_qdq_onnx(tmp_path / "m_int8.onnx", INPUT_HW)))  # fmt: skip
    prepared = prepare_engine(cfg, INPUT_HW, env=orin, build_fn=lambda src, dst: dst.write_bytes(b"engine"))
    predictor = SimpleNamespace(backend=SimpleNamespace(artefact=prepared.artefact), backend_cfg=cfg)
    values = artefact_values(predictor, "compressed", "cpu (opencv): nvJPEG probe failed on cuda:0: no nvjpeg")
    assert values["artefact_precision"] == "int8" and values["tensorrt_version"] == "10.3.0.30"
    assert values["artefact_built_on"] == "NVIDIA Orin (compute capability 8.7)"
    assert values["artefact"].startswith("tensorrt engine") and str(prepared.engine_path) in values["artefact"]
    assert "built at configure" in values["artefact"] and "m_int8.onnx" in values["artefact"]
    assert "built on NVIDIA Orin (compute capability 8.7) with TensorRT 10.3.0.30" in values["artefact"]
    assert values["image_decoder"].startswith("cpu (opencv): nvJPEG probe failed")
    assert artefact_values(predictor, "raw", "nvjpeg (cuda:0)")["image_decoder"] == "none (raw images)"
