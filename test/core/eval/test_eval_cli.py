"""``panoptic-depthlab eval`` end to end on a tiny model and synthetic val images; bad paths."""

from __future__ import annotations

import json

import torch
import yaml
from tiny_models import NARROW_MODEL

from panoptic_depthlab_core.cli import main


def test_eval_cli_writes_metrics(tmp_path, capsys):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared 2-core CPU: oversubscribed OpenMP threads are far slower
    try:
        _run_eval_cli(tmp_path, capsys)
    finally:
        torch.set_num_threads(threads)


def _run_eval_cli(tmp_path, capsys):
    from panoptic_depthlab_core.config import from_dict
    from panoptic_depthlab_core.data.synthetic.writer import write_dataset
    from panoptic_depthlab_core.model import ModelConfig, build_model
    from panoptic_depthlab_core.weights import save_safetensors

    data = tmp_path / "data"
    write_dataset(data, 2, (64, 128), seed=11, split="val")
    torch.manual_seed(0)
    model = build_model(from_dict(ModelConfig, NARROW_MODEL))
    save_safetensors(model.state_dict(), tmp_path / "w.safetensors")
    (tmp_path / "m.yaml").write_text(
        yaml.safe_dump({"model": NARROW_MODEL, "input": {"height": 64, "width": 128}})
    )
    out = tmp_path / "out"
    args = ["eval", "--config", str(tmp_path / "m.yaml"), "--weights", str(tmp_path / "w.safetensors"),
            "--data", str(data), "--split", "val", "--out", str(out), "--quiet"]  # fmt: skip
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["frames"] == 2 and metrics["run"]["images"] == 2
    assert {"panoptic", "semantic", "depth", "depth_manydepth", "dpq"} <= metrics.keys()
    assert 0.0 <= metrics["depth"]["abs_rel"] and metrics["depth"]["images"] == 2
    assert "| All |" in (out / "metrics.md").read_text()

    missing = tmp_path / "nowhere"
    assert main([*args[:5], "--data", str(missing), "--out", str(out)]) == 2
    assert str(missing) in capsys.readouterr().err
    assert main([*args[:3], "--weights", str(tmp_path / "nope.safetensors"), "--data", str(data), "--out",
                 str(out)]) == 2  # fmt: skip
    assert "nope.safetensors" in capsys.readouterr().err
