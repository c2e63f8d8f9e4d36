"""Parameter table, validation and descriptors (no node process)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from panoptic_depthlab_ros.params import NodeParams, parameter_specs, validate_params, validate_value


def test_defaults_are_valid_and_overrides_map_to_predictor_sections() -> None:
    assert validate_params(NodeParams()) == []
    overrides = NodeParams(input_height=128, input_width=256, center_threshold=0.2).overrides()
    assert overrides["input"] == {"height": 128, "width": 256}
    assert overrides["postprocess"]["center_threshold"] == 0.2
    assert "input" not in NodeParams().overrides()
    # unset post-processing parameters leave the model config's own (tuned) values alone
    assert NodeParams().overrides()["postprocess"] == {}


def test_postprocessing_defaults_to_the_model_config_and_returns_to_it() -> None:
    from panoptic_depthlab_core.predictor import DEFAULT_CONFIG, load_pipeline_config
    from panoptic_depthlab_ros.processing import apply_live_params, load_predictor, model_postprocess

    shipped = load_pipeline_config(DEFAULT_CONFIG).postprocess
    assert shipped.thing_area > 0 and shipped.stuff_area != 2048  # tuned, not detectron2's defaults
    predictor = load_predictor(NodeParams())
    assert predictor.cfg.postprocess == shipped
    model_pp = model_postprocess(NodeParams())
    assert model_pp == shipped
    apply_live_params(predictor, NodeParams(center_threshold=0.1, thing_area=0), model_pp)
    assert predictor.cfg.postprocess == replace(shipped, center_threshold=0.1, thing_area=0)
    apply_live_params(predictor, NodeParams(thing_area=0), model_pp)  # threshold back to the model's
    assert predictor.cfg.postprocess == replace(shipped, thing_area=0)
    apply_live_params(predictor, NodeParams(), model_pp)
    assert predictor.cfg.postprocess == shipped


@pytest.mark.parametrize(
    "name,value,fragment",
    [
        ("backend", "foo", "one of"),
        ("nms_kernel", 4, "multiple of 2"),
        ("nms_kernel", -3, "[-1, 99]"),
        ("top_k", -1, "[0, 1000]"),
        ("input_height", 100, "multiple of 32"),
        ("center_threshold", 1.5, "[-1.0, 1.0]"),
        ("center_threshold", float("nan"), "finite"),
        ("device", "gpu", "cpu, cuda or cuda:N"),
        ("publish_depth", "yes", "must be a bool"),
        ("not_a_parameter", 1, "unknown parameter"),
    ],
)
def test_invalid_values_name_the_problem(name, value, fragment) -> None:
    problem = validate_value(name, value)
    assert problem is not None and fragment in problem


def test_cross_parameter_rules() -> None:
    problems = validate_params(replace(NodeParams(), min_depth_m=90.0, input_height=128))
    assert any("min_depth_m" in p for p in problems)
    assert any("input_height and input_width" in p for p in problems)
    assert validate_value("min_depth_m", 1) is None  # ints are accepted where floats are expected


def test_descriptors_carry_type_range_and_choices() -> None:
    pytest.importorskip("rclpy", reason="rclpy (ROS 2) is not importable in this environment")
    from rcl_interfaces.msg import ParameterType

    from panoptic_depthlab_ros.params import descriptor

    for name in parameter_specs():
        desc = descriptor(name)
        assert desc.description and desc.type != ParameterType.PARAMETER_NOT_SET
    assert descriptor("nms_kernel").integer_range[0].step == 2
    assert descriptor("center_threshold").floating_point_range[0].to_value == 1.0
    assert "model config" in descriptor("thing_area").description
    assert "best_effort" in descriptor("input_reliability").additional_constraints
    assert "next configure" in descriptor("device").additional_constraints
