"""Accumulate every evaluation metric frame by frame; write JSON and a markdown table.

The per-frame API (``add_frame``) is what both ``panoptic-depthlab eval`` and the rosbag evaluation use:
give it what the system produced for one frame (a FrameResult or anything with ``panoptic_ids``,
``semantic``, ``depth_m`` and optionally ``segments``) and the GT maps in our encoding.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from panoptic_depthlab_core.eval.depth_metrics import MANYDEPTH, DepthAccumulator, DepthProtocol
from panoptic_depthlab_core.eval.distance import DistanceErrorAccumulator
from panoptic_depthlab_core.eval.dpq import DPQ_LAMBDAS, DPQAccumulator
from panoptic_depthlab_core.eval.panoptic_quality import PQAccumulator, SemanticConfusion
from panoptic_depthlab_core.metadata import (
    CLASS_NAMES,
    IGNORE_LABEL,
    LABEL_DIVISOR,
    NUM_CLASSES,
    THING_TRAIN_IDS,
)
from panoptic_depthlab_core.segments import SegmentsConfig, compute_segments


def segment_distances(panoptic_ids: np.ndarray, depth_m: np.ndarray, cfg: SegmentsConfig) -> dict[int, float]:
    """{segment id: distance_m} with the segments module's statistic (NaN without valid depth)."""
    segs = compute_segments(
        np.asarray(panoptic_ids).astype(np.int64), np.asarray(depth_m, np.float32), cfg=cfg
    )
    return {s.id: s.distance_m for s in segs}


def semantic_from_panoptic(panoptic_ids: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Train-id map from an id map (void and unknown classes -> 255)."""
    ids = np.asarray(panoptic_ids).astype(np.int64)
    cls = np.floor_divide(ids, LABEL_DIVISOR)
    return np.where((ids >= 0) & (cls < num_classes), cls, IGNORE_LABEL).astype(np.uint8)


def _get(pred: Any, name: str) -> Any:
    if isinstance(pred, Mapping):
        return pred.get(name)
    return getattr(pred, name, None)


class Evaluator:
    """PQ/SQ/RQ + mIoU + depth (standard and ManyDepth protocols) + DPQ + per-segment distance error."""

    def __init__(
        self,
        segments: SegmentsConfig | None = None,
        depth_cap_m: float = 80.0,
        min_depth_m: float = 1e-3,
        manydepth: bool = True,
        dpq_lambdas: tuple[float, ...] = DPQ_LAMBDAS,
        num_classes: int = NUM_CLASSES,
        thing_ids: tuple[int, ...] = THING_TRAIN_IDS,
    ) -> None:
        # The distance statistic, valid depth range etc. must be the ones the system under test used.
        self.segments_cfg = segments or SegmentsConfig()
        self.num_classes = num_classes
        self.pq = PQAccumulator(num_classes, thing_ids)
        self.semantic = SemanticConfusion(num_classes)
        self.depth = DepthAccumulator(DepthProtocol("standard", min_depth_m, depth_cap_m))
        self.depth_manydepth = DepthAccumulator(MANYDEPTH) if manydepth else None
        self.dpq = DPQAccumulator(dpq_lambdas, num_classes, thing_ids)
        self.distance = DistanceErrorAccumulator()
        self.depth_cap_m = depth_cap_m
        self.frames = 0

    def add_frame(
        self,
        pred: Any,
        gt_panoptic: np.ndarray,
        gt_semantic: np.ndarray | None = None,
        gt_depth: np.ndarray | None = None,
    ) -> dict[str, float]:
        """Add one frame; returns a few per-frame numbers (PQ counts, AbsRel) for logging."""
        pred_pan = _get(pred, "panoptic_ids")
        if pred_pan is None:
            raise ValueError("add_frame: the prediction has no panoptic_ids")
        pred_pan = np.asarray(pred_pan)
        gt_panoptic = np.asarray(gt_panoptic)
        if pred_pan.shape != gt_panoptic.shape:
            raise ValueError(
                f"add_frame: prediction is {pred_pan.shape[1]}x{pred_pan.shape[0]}, "
                f"GT is {gt_panoptic.shape[1]}x{gt_panoptic.shape[0]} (W x H); resize first"
            )
        pred_sem = _get(pred, "semantic")
        pred_sem = (
            semantic_from_panoptic(pred_pan, self.num_classes) if pred_sem is None else np.asarray(pred_sem)
        )
        if gt_semantic is None:
            gt_semantic = semantic_from_panoptic(gt_panoptic, self.num_classes)
        frame_pq = self.pq.add_frame(gt_panoptic, pred_pan)
        self.semantic.add_frame(gt_semantic, pred_sem)
        out: dict[str, float] = {
            "tp": int(frame_pq.tp.sum()),
            "fp": int(frame_pq.fp.sum()),
            "fn": int(frame_pq.fn.sum()),
        }
        pred_depth = _get(pred, "depth_m")
        if gt_depth is not None:
            gt_depth = np.squeeze(np.asarray(gt_depth, dtype=np.float64))
            if gt_depth.shape != gt_panoptic.shape:
                raise ValueError(
                    f"add_frame: gt_depth shape {gt_depth.shape} != gt_panoptic {gt_panoptic.shape}"
                )
            reported = {}
            for seg in _get(pred, "segments") or []:
                seg_id, dist = _get(seg, "id"), _get(seg, "distance_m")
                if seg_id is not None and dist is not None:
                    reported[int(seg_id)] = float(dist)
            if not reported and pred_depth is not None:  # no segment list given: derive it the same way
                reported = segment_distances(pred_pan, np.squeeze(np.asarray(pred_depth)), self.segments_cfg)
            if pred_depth is not None:
                pred_depth = np.squeeze(np.asarray(pred_depth, dtype=np.float64))
                errs = self.depth.add_frame(pred_depth, gt_depth)
                if errs:
                    out["abs_rel"] = errs["abs_rel"]
                if self.depth_manydepth is not None:
                    self.depth_manydepth.add_frame(pred_depth, gt_depth)
                self.dpq.add_frame(gt_panoptic, pred_pan, pred_depth, gt_depth)
            if frame_pq.matches:
                gt_dist = segment_distances(gt_panoptic, gt_depth, self.segments_cfg)
                self.distance.add_frame(frame_pq.matches, gt_dist, reported)
        self.frames += 1
        return out

    def summary(self) -> dict:
        """Everything, JSON-ready. PQ/SQ/RQ, mIoU and DPQ are in percent (as papers print them);
        depth metrics and relative distance errors are fractions; distances in metres."""
        pq = self.pq.compute()
        sem = self.semantic.compute()

        def pct(x: float) -> float:
            return 100.0 * x

        panoptic = {
            name: {
                "pq": pct(pq[name]["pq"]),
                "sq": pct(pq[name]["sq"]),
                "rq": pct(pq[name]["rq"]),
                "n": pq[name]["n"],
            }
            for name in ("All", "Things", "Stuff")
        }
        panoptic["per_class"] = {
            CLASS_NAMES[c] if c < len(CLASS_NAMES) else str(c): {k: pct(v) for k, v in vals.items()}
            for c, vals in pq["per_class"].items()
            if self.pq.tp[c] + self.pq.fp[c] + self.pq.fn[c] > 0
        }
        out: dict[str, Any] = {
            "frames": self.frames,
            "panoptic": panoptic,
            "semantic": {
                "miou": pct(sem["miou"]),
                "pixel_accuracy": pct(sem["pixel_accuracy"]),
                "per_class_iou": {k: pct(v) for k, v in sem["per_class_iou"].items() if not math.isnan(v)},
            },
        }
        if self.depth.images:
            out["depth"] = {"cap_m": self.depth_cap_m, **self.depth.compute()}
            if self.depth_manydepth is not None:
                out["depth_manydepth"] = self.depth_manydepth.compute()
            dpq = self.dpq.compute()
            out["dpq"] = {
                "dpq": pct(dpq["dpq"]),
                "dpq_things": pct(dpq["dpq_things"]),
                "dpq_stuff": pct(dpq["dpq_stuff"]),
                "per_lambda": {lam: pct(v["All"]["pq"]) for lam, v in dpq["per_lambda"].items()},
            }
        if self.distance.matched:
            out["distance"] = {"statistic": self.segments_cfg.distance_statistic, **self.distance.compute()}
        return out


def _fmt(x: Any, digits: int = 1) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if isinstance(x, int):
        return str(x)
    return f"{x:.{digits}f}"


def markdown_report(summary: dict) -> str:
    """A compact markdown rendering of ``summary()``."""
    lines = [f"Frames: {summary['frames']}", ""]
    p = summary["panoptic"]
    lines += ["| | PQ | SQ | RQ | classes |", "|---|---|---|---|---|"]
    for name in ("All", "Things", "Stuff"):
        lines.append(
            f"| {name} | {_fmt(p[name]['pq'])} | {_fmt(p[name]['sq'])} | {_fmt(p[name]['rq'])} "
            f"| {p[name]['n']} |"
        )
    lines += ["", f"mIoU: {_fmt(summary['semantic']['miou'])}", ""]
    if "dpq" in summary:
        d = summary["dpq"]
        per = ", ".join(f"λ={k}: {_fmt(v)}" for k, v in d["per_lambda"].items())
        lines += [f"DPQ: {_fmt(d['dpq'])} ({per})", ""]
    for key, title in (
        ("depth", "Depth (valid GT ≤ cap)"),
        ("depth_manydepth", "Depth (ManyDepth protocol)"),
    ):
        if key in summary:
            m = summary[key]
            lines += [
                f"{title}:",
                "",
                "| AbsRel | SqRel | RMSE | RMSE log | SILog | δ1 | δ2 | δ3 |",
                "|---|---|---|---|---|---|---|---|",
                f"| {_fmt(m['abs_rel'], 3)} | {_fmt(m['sq_rel'], 3)} | {_fmt(m['rmse'], 3)} "
                f"| {_fmt(m['rmse_log'], 3)} | {_fmt(m['silog'], 2)} | {_fmt(m['delta1'], 3)} "
                f"| {_fmt(m['delta2'], 3)} | {_fmt(m['delta3'], 3)} |",
                "",
            ]
    if "distance" in summary:
        dist = summary["distance"]
        lines += [
            f"Per-segment distance error (statistic: {dist['statistic']}):",
            "",
            "| group | segments | median abs (m) | mean abs (m) | median rel (%) | mean rel (%) |",
            "|---|---|---|---|---|---|",
        ]
        rows = [("all", dist["all"])] + list(dist["per_range"].items()) + list(dist["per_class"].items())
        for name, s in rows:
            lines.append(
                f"| {name} | {s['count']} | {_fmt(s['median_abs_m'], 2)} | {_fmt(s['mean_abs_m'], 2)} "
                f"| {_fmt(100 * s['median_rel'])} | {_fmt(100 * s['mean_rel'])} |"
            )
        lines.append("")
    lines += ["Per-class PQ:", "", "| class | PQ | SQ | RQ |", "|---|---|---|---|"]
    for name, v in p["per_class"].items():
        lines.append(f"| {name} | {_fmt(v['pq'])} | {_fmt(v['sq'])} | {_fmt(v['rq'])} |")
    return "\n".join(lines) + "\n"


def _json_clean(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_clean(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, np.generic):
        return _json_clean(obj.item())
    return obj


def write_report(summary: dict, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``metrics.json`` and ``metrics.md`` into ``out_dir``; returns both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "metrics.json", out / "metrics.md"
    json_path.write_text(json.dumps(_json_clean(summary), indent=2) + "\n")
    md_path.write_text(markdown_report(summary))
    return json_path, md_path
