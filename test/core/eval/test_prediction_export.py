"""Prediction export round trip: files written in the Cityscapes panoptic format are scored by
cityscapesscripts' own ``evaluatePanoptic`` (not a reimplementation) and give the project evaluator's
PQ/SQ/RQ, per class and overall; labelIds and disparity decode back to what was exported."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from tiny_models import NARROW_MODEL

from panoptic_depthlab_core.data.cityscapes import (
    disparity_to_depth,
    find_records,
    load_gt,
    read_camera,
    read_disparity,
)
from panoptic_depthlab_core.data.synthetic.writer import create_panoptic, write_dataset
from panoptic_depthlab_core.eval.evaluator import Evaluator, semantic_from_panoptic
from panoptic_depthlab_core.eval.prediction_export import (
    PredictionExporter,
    cityscapes_categories,
    depth_to_disparity_png,
    panoptic_to_segment_ids,
    read_exported_panoptic,
    rgb_to_segment_ids,
    segment_ids_to_rgb,
)
from panoptic_depthlab_core.metadata import CITYSCAPES_CLASSES, LABEL_DIVISOR

evaluation = pytest.importorskip("cityscapesscripts.evaluation.evalPanopticSemanticLabeling")

SIZE = (128, 256)
FRAMES = 3
TRAIN_OF_LABEL = {c.label_id: c.train_id for c in CITYSCAPES_CLASSES}
NAME_OF_TRAIN = {c.train_id: c.name for c in CITYSCAPES_CLASSES}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """Synthetic val frames with cityscapesscripts' panoptic GT; one car made a crowd region."""
    root = tmp_path_factory.mktemp("synth")
    write_dataset(root, FRAMES, SIZE, seed=3, split="val")
    inst_path = sorted((root / "gtFine" / "val").glob("*/*_instanceIds.png"))[1]
    inst = cv2.imread(str(inst_path), cv2.IMREAD_UNCHANGED)
    cars = [i for i in np.unique(inst) if i // 1000 == 26]
    assert len(cars) >= 2
    inst[inst == cars[0]] = 26  # Cityscapes stores a group as the bare label id: crowd
    cv2.imwrite(str(inst_path), inst)
    create_panoptic(root, "val")
    gt_json = json.loads((root / "gtFine" / "cityscapes_panoptic_val.json").read_text())
    assert any(s["iscrowd"] for a in gt_json["annotations"] for s in a["segments_info"])
    return root


def perturbed(gt: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A prediction with every kind of PQ event: shifted/dropped/relabelled things, a spurious thing,
    a prediction on the crowd region (thing class, instance 0), mislabelled stuff and void."""
    pred = gt.copy()
    h, w = gt.shape
    things = [i for i in np.unique(gt) if i >= 11 * LABEL_DIVISOR and i % LABEL_DIVISOR]
    for k, seg in enumerate(things):
        mask = gt == seg
        if k % 4 == 0:
            pred[mask] = 0  # dropped -> road
        elif k % 4 == 1:
            pred[mask] = -1
            pred[np.roll(mask, int(rng.integers(1, 4)), axis=1)] = seg  # shifted
        elif k % 4 == 2:
            pred[mask] = 14 * LABEL_DIVISOR + 90 + k  # wrong class
    pred[5:15, 5:25] = 13 * LABEL_DIVISOR + 77  # spurious car
    pred[h - 20 :, w // 2 :] = 1 * LABEL_DIVISOR  # stuff mislabelled as sidewalk
    pred[40:44, :] = -1  # void prediction
    return pred


def cityscapes_pq(gt_root: Path, pred_json: Path, pred_folder: Path, tmp: Path) -> dict:
    gt_json = gt_root / "gtFine" / "cityscapes_panoptic_val.json"
    with contextlib.redirect_stdout(io.StringIO()):
        return evaluation.evaluatePanoptic(
            str(gt_json),
            str(gt_root / "gtFine" / "cityscapes_panoptic_val"),
            str(pred_json),
            str(pred_folder),
            str(tmp / "cs_result.json"),
        )


def assert_same_pq(cs: dict, ours: dict, scale: float) -> None:
    """cityscapesscripts' result (fractions, keyed by label id) == ours (x scale, train ids / names)."""
    for name in ("All", "Things", "Stuff"):
        assert cs[name]["n"] == ours[name]["n"], name
        for k in ("pq", "sq", "rq"):
            assert cs[name][k] * scale == pytest.approx(ours[name][k], abs=1e-6 * scale), (name, k)
    for label_id, vals in cs["per_class"].items():
        train_id = TRAIN_OF_LABEL[int(label_id)]
        key = train_id if train_id in ours["per_class"] else NAME_OF_TRAIN[train_id]
        mine = ours["per_class"].get(key, {"pq": 0.0, "sq": 0.0, "rq": 0.0})
        for k in ("pq", "sq", "rq"):
            assert vals[k] * scale == pytest.approx(mine[k], abs=1e-6 * scale), (label_id, k)


def test_export_round_trip_matches_cityscapesscripts(dataset: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    evaluator = Evaluator()
    records = find_records(dataset, "val")
    out = tmp_path / "pred"
    with PredictionExporter(out, "val", depth_format="disparity") as exporter:
        for rec in records:
            gt = load_gt(rec)
            pred_ids = perturbed(gt.panoptic, rng)
            prediction = {
                "panoptic_ids": pred_ids,
                "semantic": semantic_from_panoptic(pred_ids),
                "depth_m": gt.depth_m,
            }
            evaluator.add_frame(prediction, gt.panoptic, gt.semantic)
            exporter.add(rec.image_id, prediction, gt.camera.baseline, gt.camera.fx, rec.image_path.name)
    pq = evaluator.pq.compute()
    assert pq["Things"]["n"] > 0 and 0 < pq["All"]["pq"] < 1
    assert evaluator.pq.fp.sum() > 0 and evaluator.pq.fn.sum() > 0  # the perturbations did something
    assert_same_pq(cityscapes_pq(dataset, exporter.json_path, exporter.panoptic_dir, tmp_path), pq, 1.0)

    doc = json.loads(exporter.json_path.read_text())
    assert doc["categories"] == json.loads(
        (dataset / "gtFine" / "cityscapes_panoptic_val.json").read_text()
    )["categories"]
    rng = np.random.default_rng(0)
    for rec, ann in zip(records, doc["annotations"], strict=True):
        gt = load_gt(rec)
        pred_ids = perturbed(gt.panoptic, rng)
        assert ann["image_id"] == rec.image_id
        # the id PNG decodes back to exactly the exported ids; areas and boxes agree with it
        back = read_exported_panoptic(out, rec.image_id, "val")
        np.testing.assert_array_equal(back, np.where(pred_ids >= 0, pred_ids, -1))
        seg = rgb_to_segment_ids(cv2.imread(str(out / exporter.name / ann["file_name"]))[:, :, ::-1])
        for s in ann["segments_info"]:
            ys, xs = np.nonzero(seg == s["id"])
            assert s["area"] == xs.size
            assert s["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        # labelIds: Cityscapes label ids, void -> 0
        label_ids = cv2.imread(str(out / "labelIds" / f"{rec.image_id}_labelIds.png"), cv2.IMREAD_UNCHANGED)
        assert label_ids.dtype == np.uint8
        sem = semantic_from_panoptic(pred_ids)
        lut = np.zeros(256, np.uint8)
        for c in CITYSCAPES_CLASSES:
            lut[c.train_id] = c.label_id
        np.testing.assert_array_equal(label_ids, lut[sem])
        # GT depth -> disparity gives back the data set's own disparity PNG (p <= 1 is invalid there)
        exported = cv2.imread(str(out / ann["depth_file"]), cv2.IMREAD_UNCHANGED)
        original = read_disparity(rec.disparity_path)
        assert exported.dtype == np.uint16
        np.testing.assert_array_equal(exported, np.where(original > 1, original, 0))


def test_eval_cli_save_predictions_scored_by_cityscapesscripts(dataset: Path, tmp_path: Path) -> None:
    """``eval --save-predictions``: cityscapesscripts on the files == the PQ in metrics.json."""
    from panoptic_depthlab_core.cli import main
    from panoptic_depthlab_core.config import from_dict
    from panoptic_depthlab_core.model import ModelConfig, build_model
    from panoptic_depthlab_core.weights import save_safetensors

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared 2-core CPU
    try:
        torch.manual_seed(0)
        model = build_model(from_dict(ModelConfig, NARROW_MODEL))
        save_safetensors(model.state_dict(), tmp_path / "w.safetensors")
        (tmp_path / "m.yaml").write_text(
            yaml.safe_dump({"model": NARROW_MODEL, "input": {"height": SIZE[0], "width": SIZE[1]}})
        )
        out, pred = tmp_path / "metrics", tmp_path / "pred"
        argv = ["eval", "--config", str(tmp_path / "m.yaml"), "--weights", str(tmp_path / "w.safetensors"),
                "--data", str(dataset), "--split", "val", "--out", str(out), "--quiet",
                "--save-predictions", str(pred)]  # fmt: skip
        assert main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    metrics = json.loads((out / "metrics.json").read_text())
    pred_json = pred / "cityscapes_panoptic_val.json"
    cs = cityscapes_pq(dataset, pred_json, pred / "cityscapes_panoptic_val", tmp_path)
    panoptic = metrics["panoptic"]
    assert_same_pq(cs, {**panoptic, "per_class": panoptic["per_class"]}, 100.0)
    doc = json.loads(pred_json.read_text())
    assert [a["image_id"] for a in doc["annotations"]] == [r.image_id for r in find_records(dataset, "val")]
    assert all((pred / a["depth_file"]).is_file() for a in doc["annotations"])


def test_infer_cli_export_decodes_to_the_predictor_ids(dataset: Path, tmp_path: Path) -> None:
    """``infer --export-predictions``: the id PNG holds the Predictor's ids (the colour PNG cannot)."""
    from panoptic_depthlab_core.cli import main
    from panoptic_depthlab_core.config import from_dict
    from panoptic_depthlab_core.model import ModelConfig, build_model
    from panoptic_depthlab_core.predictor import Predictor
    from panoptic_depthlab_core.weights import save_safetensors

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(1)
        model = build_model(from_dict(ModelConfig, NARROW_MODEL))
        save_safetensors(model.state_dict(), tmp_path / "w.safetensors")
        cfg = tmp_path / "m.yaml"
        cfg.write_text(yaml.safe_dump({"model": NARROW_MODEL, "input": {"height": SIZE[0], "width": SIZE[1]}}))
        images = sorted((dataset / "leftImg8bit" / "val").glob("*/*.png"))[:2]
        pred = tmp_path / "pred"
        argv = ["infer", *map(str, images), "--out", str(tmp_path / "vis"), "--config", str(cfg),
                "--weights", str(tmp_path / "w.safetensors"), "--export-predictions", str(pred)]  # fmt: skip
        assert main(argv) == 0
        predictor = Predictor.from_config(str(cfg), str(tmp_path / "w.safetensors"))
        doc = json.loads((pred / "cityscapes_panoptic_predictions.json").read_text())
        assert doc["info"]["depth_format"] == "tiff"  # no baseline given: float metres
        for image, ann in zip(images, doc["annotations"], strict=True):
            image_id = image.name[: -len("_leftImg8bit.png")]
            assert ann["image_id"] == image_id
            rgb = cv2.cvtColor(cv2.imread(str(image)), cv2.COLOR_BGR2RGB)
            result = predictor.predict(rgb)
            np.testing.assert_array_equal(read_exported_panoptic(pred, image_id, "predictions"), result.panoptic_ids)
            depth = cv2.imread(str(pred / ann["depth_file"]), cv2.IMREAD_UNCHANGED)
            assert depth.dtype == np.float32
            np.testing.assert_allclose(depth, result.depth_m, rtol=1e-6, equal_nan=True)
    finally:
        torch.set_num_threads(threads)


def test_encoding_helpers() -> None:
    ids = np.array([[-1, 0, 13001], [13001, 11000, 18999], [10000, 99000, 5]], np.int32)
    seg, info = panoptic_to_segment_ids(ids)
    # void and unknown classes -> 0; stuff and instance-less things -> label id; instances -> label*1000+k
    np.testing.assert_array_equal(seg, [[0, 7, 26001], [26001, 24, 33999], [23, 0, 7005]])
    assert [(s["id"], s["category_id"], s["area"]) for s in info] == [
        (7, 7, 1), (23, 23, 1), (24, 24, 1), (7005, 7, 1), (26001, 26, 2), (33999, 33, 1)
    ]  # fmt: skip
    assert next(s for s in info if s["id"] == 26001)["bbox"] == [0, 0, 3, 2]
    rgb = segment_ids_to_rgb(np.array([[0, 255, 256, 33999, (1 << 24) - 1]]))
    np.testing.assert_array_equal(rgb_to_segment_ids(rgb), [[0, 255, 256, 33999, (1 << 24) - 1]])
    with pytest.raises(ValueError, match="2\\^24"):
        segment_ids_to_rgb(np.array([[1 << 24]]))
    # Cityscapes' disparity convention: p = round(d * 256) + 1 with d = baseline * fx / depth
    p = depth_to_disparity_png(np.array([[10.0, np.nan, 0.0, -1.0, 1e-3]]), 0.2, 2000.0)
    np.testing.assert_array_equal(p, [[round(40 * 256) + 1, 0, 0, 0, 65535]])
    with pytest.raises(ValueError, match="baseline"):
        depth_to_disparity_png(np.ones((2, 2)), 0.0, 2000.0)
    assert [c["id"] for c in cityscapes_categories()] == sorted(c.label_id for c in CITYSCAPES_CLASSES)


def test_exporter_rejects_bad_input(tmp_path: Path) -> None:
    pred = {"panoptic_ids": np.zeros((4, 4), np.int32), "depth_m": np.ones((4, 4), np.float32)}
    with PredictionExporter(tmp_path, "val", depth_format="disparity") as exporter:
        with pytest.raises(ValueError, match="baseline"):
            exporter.add("a_000000_000000", pred)
        exporter.add("a_000000_000000", pred, baseline_m=0.2, fx=100.0)
        with pytest.raises(ValueError, match="twice"):
            exporter.add("a_000000_000000", pred, baseline_m=0.2, fx=100.0)
        with pytest.raises(ValueError, match="without '/'"):
            exporter.add("x/y", pred)
        with pytest.raises(ValueError, match="depth_m"):
            exporter.add("b", {"panoptic_ids": np.zeros((4, 4), np.int32)})
    doc = json.loads((tmp_path / "cityscapes_panoptic_val.json").read_text())
    assert [a["image_id"] for a in doc["annotations"]] == ["a_000000_000000"]
    with pytest.raises(ValueError, match="resolve 'auto'"):
        PredictionExporter(tmp_path, "val", depth_format="auto")
    # npy depth round trip, NaN kept
    depth = np.array([[1.5, np.nan], [3.0, 4.0]], np.float32)
    with PredictionExporter(tmp_path / "npy", "val", depth_format="npy") as exporter:
        exporter.add("c", {"panoptic_ids": np.zeros((2, 2), np.int32), "depth_m": depth})
    np.testing.assert_array_equal(np.load(tmp_path / "npy" / "depth" / "c_depth.npy"), depth)
    disp = read_disparity(tmp_path / "disparity" / "a_000000_000000_disparity.png")
    cam_path = tmp_path / "cam.json"
    cam_path.write_text(json.dumps({"extrinsic": {"baseline": 0.2}, "intrinsic": {"fx": 100.0, "fy": 100.0,
                                                                                   "u0": 2, "v0": 2}}))
    back, valid = disparity_to_depth(disp, read_camera(cam_path))
    assert valid.all()
    np.testing.assert_allclose(back, 1.0, rtol=1e-3)
