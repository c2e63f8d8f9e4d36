"""detectron2 checkpoint conversion and the restricted unpickler."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import torch

from panoptic_depthlab_core.ground_distance import depth_decoder_trained
from panoptic_depthlab_core.model import ModelConfig, build_model
from panoptic_depthlab_core.weights import (
    UnsafePickleError,
    convert_detectron2,
    load_model_weights,
    restricted_load_pickle,
)


def write_d2_pkl(path, variant: str, protocol: int, drop: str | None = None, extra: dict | None = None):
    torch.manual_seed(0)
    model = build_model(ModelConfig(use_dsconv=variant == "dsconv"))
    weights = {
        k: (v.numpy() + np.float32(0.5)) if v.is_floating_point() else v.numpy()
        for k, v in model.state_dict().items()
        if not k.startswith("depth_head.") and not k.endswith("num_batches_tracked")
    }
    # detectron2 checkpoints may also carry the normalisation constants.
    weights["pixel_mean"] = np.array([[[123.675]], [[116.28]], [[103.53]]], dtype=np.float32)
    weights["pixel_std"] = np.array([[[58.395]], [[57.12]], [[57.375]]], dtype=np.float32)
    if drop:
        del weights[drop]
    weights.update(extra or {})
    with open(path, "wb") as f:
        pickle.dump({"model": weights, "__author__": "Detectron2 Model Zoo", "matching_heuristics": False}, f,
                    protocol=protocol)
    return weights


@pytest.mark.parametrize("variant,protocol", [("regular", 2), ("dsconv", 5)])
def test_convert_round_trip(tmp_path, variant, protocol, caplog):
    pkl = tmp_path / "model_final.pkl"
    weights = write_d2_pkl(pkl, variant, protocol)
    out = tmp_path / "converted.safetensors"
    sidecar = convert_detectron2(pkl, out, variant)
    assert sidecar["variant"] == variant and sidecar["depth_head"] == "fresh_init"
    written = json.loads((tmp_path / "converted.safetensors.json").read_text())
    assert written["source_sha256"] == sidecar["source_sha256"]
    assert "no depth_head" in caplog.text
    # the node reads this flag to use the ground-plane distance (issue 21): sidecar and metadata both say it
    assert written["depth_decoder_trained"] is False and not depth_decoder_trained(out)
    (tmp_path / "converted.safetensors.json").rename(tmp_path / "moved.json")
    assert not depth_decoder_trained(out)  # the safetensors metadata alone
    (tmp_path / "moved.json").rename(tmp_path / "converted.safetensors.json")

    model = build_model(ModelConfig(use_dsconv=variant == "dsconv"))
    load_model_weights(model, out)
    sd = model.state_dict()
    for k, v in weights.items():
        if k in ("pixel_mean", "pixel_std"):
            continue
        assert torch.equal(sd[k], torch.from_numpy(v)), k


def test_convert_reports_missing_and_unexpected_keys_by_name(tmp_path):
    pkl = tmp_path / "bad.pkl"
    write_d2_pkl(pkl, "regular", 2, drop="backbone.res5.2.conv3.norm.bias",
                 extra={"roi_heads.box_predictor.weight": np.zeros((3, 3), np.float32)})
    with pytest.raises(ValueError) as info:
        convert_detectron2(pkl, tmp_path / "x.safetensors", "regular")
    assert "backbone.res5.2.conv3.norm.bias" in str(info.value)
    assert "roi_heads.box_predictor.weight" in str(info.value)
    assert not (tmp_path / "x.safetensors").exists()


def test_wrong_variant_reports_shape_or_key_mismatch(tmp_path):
    pkl = tmp_path / "dsconv.pkl"
    write_d2_pkl(pkl, "dsconv", 2)
    with pytest.raises(ValueError, match="depthwise"):
        convert_detectron2(pkl, tmp_path / "x.safetensors", "regular")


class Evil:
    def __reduce__(self):
        return (os.system, ("touch " + os.environ["EVIL_MARKER"],))


def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("EVIL_MARKER", str(marker))
    pkl = tmp_path / "evil.pkl"
    pkl.write_bytes(pickle.dumps({"model": {"x": np.zeros(2, np.float32)}, "payload": Evil()}))
    with pytest.raises(UnsafePickleError, match=r"(posix|os|nt)\.system"):
        restricted_load_pickle(pkl)
    with pytest.raises(UnsafePickleError):
        convert_detectron2(pkl, tmp_path / "x.safetensors")
    assert not marker.exists()


def test_restricted_unpickler_reads_numpy_arrays(tmp_path):
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    for protocol in (2, 4, 5):
        p = tmp_path / f"a{protocol}.pkl"
        p.write_bytes(pickle.dumps({"model": {"a": arr, "b": np.int64(3)}}, protocol=protocol))
        loaded = restricted_load_pickle(p)
        assert np.array_equal(loaded["model"]["a"], arr)


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    pkl = tmp_path / "t.pkl"
    write_d2_pkl(pkl, "regular", 2)
    pkl.write_bytes(pkl.read_bytes()[:1000])
    with pytest.raises(ValueError, match="not a readable detectron2 checkpoint"):
        convert_detectron2(pkl, tmp_path / "x.safetensors")


def test_load_model_weights_rejects_wrong_file(tmp_path):
    bad = tmp_path / "w.safetensors"
    bad.write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        load_model_weights(build_model(ModelConfig(use_dsconv=True)), bad)
    with pytest.raises(FileNotFoundError):
        load_model_weights(build_model(ModelConfig(use_dsconv=True)), tmp_path / "missing.safetensors")
