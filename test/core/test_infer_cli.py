"""``panoptic-depthlab infer``: every output file per image, depth PNG in millimetres."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from panoptic_depthlab_core.cli import main
from panoptic_depthlab_core.model import build_model
from panoptic_depthlab_core.weights import save_safetensors

TINY_YAML = """
model: {name: tiny, backbone: mobilenet_v3_large, use_dsconv: true, aspp_channels: 16, sem_decoder_channels: 16,
        sem_head_channels: 16, ins_decoder_channels: 16, ins_head_channels: 8, depth_decoder_channels: 16,
        depth_head_channels: 16, pool_kernel: null}
input: {height: 64, width: 128}
"""


@pytest.fixture()
def tiny_model(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_YAML)
    torch.manual_seed(0)
    from panoptic_depthlab_core.model import load_model_config

    weights = tmp_path / "tiny.safetensors"
    save_safetensors(build_model(load_model_config(config)).state_dict(), weights)
    return config, weights


def test_infer_writes_every_output(tmp_path, tiny_model) -> None:
    config, weights = tiny_model
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for name, shape in (("a", (90, 160, 3)), ("b", (75, 131, 3))):
        cv2.imwrite(str(images / f"{name}.png"), rng.integers(0, 256, shape, dtype=np.uint8))
    out = tmp_path / "out"
    rc = main(["infer", str(images), "--out", str(out), "--config", str(config), "--weights", str(weights),
               "--fx", "100", "--fy", "100", "--cx", "80", "--cy", "45"])
    assert rc == 0
    for name, (h, w) in (("a", (90, 160)), ("b", (75, 131))):
        depth = cv2.imread(str(out / f"{name}_depth.png"), cv2.IMREAD_UNCHANGED)
        assert depth.dtype == np.uint16 and depth.shape == (h, w)
        assert depth.max() <= 80_000  # millimetres, capped at the model's 80 m
        for suffix in ("overlay", "panoptic", "depth_color"):
            assert cv2.imread(str(out / f"{name}_{suffix}.png")).shape == (h, w, 3)
        doc = json.loads((out / f"{name}_segments.json").read_text())
        assert (doc["height"], doc["width"]) == (h, w)
        assert doc["K"][0][0] == 100.0
        for seg in doc["segments"]:
            assert {"id", "class_name", "distance_m", "position_xyz_m"} <= set(seg)


def test_infer_bad_input_is_a_clear_error(tmp_path, tiny_model, capsys) -> None:
    config, weights = tiny_model
    assert main(["infer", str(tmp_path / "missing.png"), "--out", str(tmp_path), "--config", str(config)]) == 2
    assert "input not found" in capsys.readouterr().err
    assert main(["infer", str(tmp_path), "--out", str(tmp_path / "o"), "--config", str(config), "--fx", "1"]) == 2
    err = capsys.readouterr().err
    assert "no images found" in err or "--fx, --fy, --cx and --cy" in err
    (tmp_path / "broken.png").write_bytes(b"not an image")
    rc = main(["infer", str(tmp_path / "broken.png"), "--out", str(tmp_path / "o"), "--config", str(config),
               "--weights", str(weights)])
    assert rc == 2
    assert "cannot decode image" in capsys.readouterr().err
