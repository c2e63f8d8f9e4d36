"""The shipped default model still scores what its metrics file says.

``panoptic_depthlab_core/default_model/metrics.json`` is the output of the documented
``panoptic-depthlab eval`` over the 100 held-out synthetic val frames (seed 7, 256x512), plus a
``guard`` section: the same command over the first frames of that set (each synthetic frame depends
only on (seed, index), so they are the same frames), and floors a margin below it. The slow test
renders those frames, runs the real eval command on the shipped model and checks the floors; the
fast tests check that the README and the model card show the metrics file's numbers.
"""

from __future__ import annotations

import json
import re
from argparse import ArgumentParser
from pathlib import Path

import pytest

from panoptic_depthlab_core.data.synthetic.writer import write_dataset
from panoptic_depthlab_core.eval import cli as eval_cli

REPO = Path(__file__).resolve().parents[3]
MODEL_DIR = REPO / "panoptic_depthlab_core" / "default_model"
METRICS = json.loads((MODEL_DIR / "metrics.json").read_text())


def headline(summary: dict) -> dict[str, float]:
    """The three guarded metrics from an eval summary (metrics.json)."""
    return {
        "pq": summary["panoptic"]["All"]["pq"],
        "miou": summary["semantic"]["miou"],
        "abs_rel": summary["depth"]["abs_rel"],
    }


def test_guard_floors_sit_below_the_guard_measurement():
    guard = METRICS["guard"]
    measured, floors = guard["measured"], guard["floors"]
    assert floors["pq"] < measured["pq"] and floors["miou"] < measured["miou"]
    assert floors["abs_rel"] > measured["abs_rel"]  # lower is better
    assert 0 < guard["frames"] < METRICS["frames"] == 100


@pytest.mark.slow
def test_shipped_model_meets_its_floors_on_synthetic_val(tmp_path: Path):
    guard = METRICS["guard"]
    synth = guard["synth"]
    height, width = synth["size_hw"]
    write_dataset(tmp_path / "data", guard["frames"], (height, width), seed=synth["seed"], split=synth["split"])
    parser = ArgumentParser()
    eval_cli.add_arguments(parser)
    data, out = str(tmp_path / "data"), str(tmp_path / "eval")
    args = parser.parse_args(["--data", data, "--split", synth["split"], "--out", out, "--quiet"])
    assert eval_cli.run(args) == 0
    got = headline(json.loads((tmp_path / "eval" / "metrics.json").read_text()))
    floors = guard["floors"]
    assert got["pq"] >= floors["pq"], got
    assert got["miou"] >= floors["miou"], got
    assert got["abs_rel"] <= floors["abs_rel"], got
    # the same frames, weights and code as when the guard was measured: close to it, not just above
    for key, value in guard["measured"].items():
        assert got[key] == pytest.approx(value, rel=0.02, abs=0.5 if key != "abs_rel" else 0.003), (key, got)


@pytest.mark.parametrize("doc", ["README.md", "panoptic_depthlab_core/default_model/MODEL_CARD.md"])
def test_docs_show_the_metrics_files_numbers(doc: str):
    text = (REPO / doc).read_text()
    full = headline(METRICS)
    pan = METRICS["panoptic"]
    triple = f"{pan['All']['pq']:.1f} / {pan['Things']['pq']:.1f} / {pan['Stuff']['pq']:.1f}"
    assert triple in text, f"{doc} does not show PQ {triple} (metrics.json)"
    assert re.search(rf"\b{full['miou']:.1f}\b", text), f"{doc} does not show mIoU {full['miou']:.1f}"
    assert re.search(rf"\b{full['abs_rel']:.3f}\b", text), f"{doc} does not show AbsRel {full['abs_rel']:.3f}"
