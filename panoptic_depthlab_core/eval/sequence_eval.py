"""Evaluation on driving sequences: tracking (HOTA/DetA/AssA, IDF1, MOTA), video panoptic quality
(STQ), velocity and time-to-collision error against exact motion, and distance error by range band
for the depth decoder, the ground plane and what the node publishes.

The pipeline per frame is the node's: Predictor -> ground distance (``apply_ground_distance``) ->
Tracker. Sequences come from ``synth --sequence`` data sets on disk (:func:`load_sequences`) or
straight from :class:`~panoptic_depthlab_core.data.synthetic.SyntheticDrive` (:func:`drive_sequence`).

Protocol choices (docs/tracking.md):
- Objects are the GT thing instances; tracking metrics are class-agnostic on mask IoU. GT things
  smaller than ``min_object_px`` pixels (32 x 32 by default) are distractors: a prediction matching
  one (IoU >= 0.5) is removed, as MOTChallenge treats its distractor classes. GT void is ignored.
- Velocity: confirmed tracks matched (IoU >= 0.5) to a GT car within 30 m (GT median depth) whose
  track is at least 1 s old; error = |v_track - v_true| (3D, m/s).
- TTC: GT objects in the path (|x| <= the tracker's corridor) closing in with a true TTC <= 10 s.
- Distances against the GT median depth of the GT mask (what ``Segment.distance_m`` estimates).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

from panoptic_depthlab_core.data.synthetic.drive import FrameMotion, SyntheticDrive, panoptic_from_instance_ids
from panoptic_depthlab_core.eval.tracking_metrics import FrameMatchData, STQAccumulator, frame_overlaps, tracking_scores
from panoptic_depthlab_core.ground_distance import (
    CameraMount,
    GroundDistanceConfig,
    apply_ground_distance,
    depth_decoder_trained,
)
from panoptic_depthlab_core.metadata import LABEL_DIVISOR, THING_TRAIN_IDS
from panoptic_depthlab_core.predictor import DEFAULT_WEIGHTS, Predictor
from panoptic_depthlab_core.tracking import Tracker, TrackerConfig, TrackState, load_tracker_config


@dataclass
class SequenceFrame:
    """One frame of a sequence with its ground truth."""

    rgb: np.ndarray  # uint8 (H, W, 3)
    K: np.ndarray | None
    gt_panoptic: np.ndarray  # int32, train_id * 1000 + instance, -1 void
    gt_depth_m: np.ndarray  # float32 z depth, NaN invalid
    stamp_s: float
    mount: CameraMount | None = None
    motion: FrameMotion | None = None


@dataclass
class SequenceMetricsConfig:
    min_object_px: int = 32 * 32  # smaller GT things are distractors in the tracking metrics
    match_iou: float = 0.5  # prediction <-> GT matching for velocity, TTC and distance errors
    velocity_classes: tuple[int, ...] = (13,)  # car
    velocity_max_distance_m: float = 30.0
    velocity_min_track_s: float = 1.0
    ttc_max_s: float = 10.0
    corridor_half_width_m: float = 1.5
    min_closing_speed_mps: float = 0.3
    distance_bands_m: tuple[float, ...] = (0.0, 10.0, 20.0, 40.0, 80.0)
    thing_ids: tuple[int, ...] = THING_TRAIN_IDS


@dataclass
class _Sample:
    gt_distance: float
    decoder: float
    ground: float
    ground_reliable: bool
    published: float
    source: str


@dataclass
class SequenceMetrics:
    """Accumulates every metric over sequences; :meth:`result` gives the summary dict."""

    cfg: SequenceMetricsConfig = field(default_factory=SequenceMetricsConfig)

    def __post_init__(self) -> None:
        self._thing = np.zeros(64, dtype=bool)
        self._thing[list(self.cfg.thing_ids)] = True
        self.sequences: dict[str, list[FrameMatchData]] = {}
        self.stq = STQAccumulator()
        self.velocity_errors: list[float] = []
        self.velocity_z_errors: list[float] = []
        self.ttc_errors: list[tuple[float, float]] = []  # (|error| s, true TTC s)
        self.ttc_missed = 0  # true TTC <= ttc_max_s but the track said not closing / no TTC
        self.distance: list[_Sample] = []
        self._current = ""

    def begin(self, name: str) -> None:
        if name in self.sequences:
            raise ValueError(f"sequence {name!r} was already evaluated")
        self.sequences[name] = []
        self._current = name

    def _things(self, panoptic: np.ndarray) -> np.ndarray:
        cls = np.where(panoptic >= 0, panoptic // LABEL_DIVISOR, 63)
        return self._thing[np.minimum(cls, 63)] & (panoptic % LABEL_DIVISOR != 0)

    def add(self, frame: SequenceFrame, pred_track_map: np.ndarray, pred_panoptic: np.ndarray,
            tracks: dict[int, TrackState], distances: dict[int, dict]) -> None:
        """``pred_track_map``: track id per pixel (0: none); ``pred_panoptic``: the track-consistent
        panoptic ids; ``tracks``/``distances``: by track id (distances: decoder, ground,
        ground_reliable, published, source)."""
        cfg = self.cfg
        gt = np.asarray(frame.gt_panoptic)
        gt_obj = np.where(self._things(gt), gt, 0)
        void = gt < 0
        overlaps = frame_overlaps(gt_obj, pred_track_map, ignore=void)
        areas = {int(i): int(n) for i, n in zip(*np.unique(gt_obj[gt_obj > 0], return_counts=True), strict=True)}
        small = np.array([areas.get(int(g), 0) < cfg.min_object_px for g in overlaps.gt_ids], dtype=bool)
        self.sequences[self._current].append(_without_distractors(overlaps, small))
        self.stq.update(gt, pred_panoptic, self._current)
        # one-to-one matches at IoU >= match_iou for the motion and distance errors
        sim = overlaps.similarity
        if sim.size == 0:
            return
        rows, cols = linear_sum_assignment(-sim)
        truth = frame.motion.by_panoptic_id() if frame.motion is not None else {}
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            if sim[r, c] < cfg.match_iou:
                continue
            gt_id, track_id = int(overlaps.gt_ids[r]), int(overlaps.pred_ids[c])
            gt_depth = frame.gt_depth_m[gt_obj == gt_id]
            gt_depth = gt_depth[np.isfinite(gt_depth)]
            if gt_depth.size == 0:
                continue
            gt_distance = float(np.median(gt_depth))
            d = distances.get(track_id)
            if d is not None:
                self.distance.append(_Sample(gt_distance, d["decoder"], d["ground"], d["ground_reliable"],
                                             d["published"], d["source"]))
            state = tracks.get(track_id)
            motion = truth.get(gt_id)
            if state is None or motion is None or not state.confirmed:
                continue
            if (state.velocity_xyz_mps is not None and gt_id // LABEL_DIVISOR in cfg.velocity_classes
                    and gt_distance <= cfg.velocity_max_distance_m and state.age_s >= cfg.velocity_min_track_s):
                dv = np.subtract(state.velocity_xyz_mps, motion.velocity_xyz_mps)
                self.velocity_errors.append(float(np.linalg.norm(dv)))
                self.velocity_z_errors.append(float(abs(dv[2])))
            closing = -motion.velocity_xyz_mps[2]
            in_path = abs(motion.position_xyz_m[0]) <= cfg.corridor_half_width_m
            if in_path and closing > cfg.min_closing_speed_mps and gt_distance / closing <= cfg.ttc_max_s:
                true_ttc = gt_distance / closing
                if state.ttc_s is None or not math.isfinite(state.ttc_s):
                    self.ttc_missed += 1
                else:
                    self.ttc_errors.append((abs(state.ttc_s - true_ttc), true_ttc))

    def result(self) -> dict:
        cfg = self.cfg
        scores = tracking_scores(self.sequences.values())
        out: dict = {"tracking": scores.to_dict(), "video_panoptic": self.stq.result()}
        v = np.asarray(self.velocity_errors)
        out["velocity"] = {
            "samples": int(v.size),
            "median_error_mps": float(np.median(v)) if v.size else None,
            "mean_error_mps": float(np.mean(v)) if v.size else None,
            "p90_error_mps": float(np.percentile(v, 90)) if v.size else None,
            "median_z_error_mps": float(np.median(self.velocity_z_errors)) if v.size else None,
            "protocol": f"confirmed tracks of classes {list(cfg.velocity_classes)} within "
                        f"{cfg.velocity_max_distance_m:g} m tracked >= {cfg.velocity_min_track_s:g} s",
        }
        t = np.asarray(self.ttc_errors).reshape(-1, 2)
        out["ttc"] = {
            "samples": int(t.shape[0]),
            "missed": self.ttc_missed,
            "median_abs_error_s": float(np.median(t[:, 0])) if t.size else None,
            "median_rel_error": float(np.median(t[:, 0] / t[:, 1])) if t.size else None,
            "protocol": f"GT in the path (|x| <= {cfg.corridor_half_width_m:g} m) closing, true TTC <= "
                        f"{cfg.ttc_max_s:g} s",
        }
        out["distance"] = self._distance_bands()
        out["sequences"] = len(self.sequences)
        out["frames"] = sum(len(s) for s in self.sequences.values())
        return out

    def _distance_bands(self) -> dict:
        bands = self.cfg.distance_bands_m
        rows = {}
        gt = np.array([s.gt_distance for s in self.distance])
        series = {
            "depth_decoder": np.array([s.decoder for s in self.distance]),
            "ground_all": np.array([s.ground for s in self.distance]),
            "ground_reliable": np.array([s.ground if s.ground_reliable else math.nan for s in self.distance]),
            "published": np.array([s.published for s in self.distance]),
        }
        for lo, hi in zip(bands[:-1], bands[1:], strict=True):
            in_band = (gt >= lo) & (gt < hi) if gt.size else np.zeros(0, bool)
            row = {"samples": int(in_band.sum())}
            for name, values in series.items():
                ok = in_band & np.isfinite(values) if values.size else in_band
                rel = np.abs(values[ok] - gt[ok]) / gt[ok]
                row[name] = {"samples": int(ok.sum()), "median_rel_error": float(np.median(rel)) if rel.size else None}
            rows[f"{lo:g}-{hi:g} m"] = row
        within = {}
        for name, values in series.items():
            ok = (gt < 40.0) & np.isfinite(values) if gt.size else np.zeros(0, bool)
            rel = np.abs(values[ok] - gt[ok]) / gt[ok]
            within[name] = {"samples": int(ok.sum()), "median_rel_error": float(np.median(rel)) if rel.size else None}
        sources = {}
        for s in self.distance:
            sources[s.source] = sources.get(s.source, 0) + 1
        return {"by_band": rows, "within_40m": within, "published_sources": sources}


def _without_distractors(f: FrameMatchData, small: np.ndarray) -> FrameMatchData:
    """Drop GT things below the size floor and the predictions that match them (IoU >= 0.5)."""
    if not small.any():
        return f
    drop_pred = np.zeros(len(f.pred_ids), dtype=bool)
    sub = f.similarity[small]
    if sub.size:
        rows, cols = linear_sum_assignment(-sub)
        for r, c in zip(rows, cols, strict=True):
            if sub[r, c] >= 0.5:
                drop_pred[c] = True
    keep_g, keep_p = ~small, ~drop_pred
    return FrameMatchData(f.gt_ids[keep_g], f.pred_ids[keep_p], f.similarity[np.ix_(keep_g, keep_p)])


# --------------------------------------------------------------------------------------- running
def evaluate_sequences(
    predictor,
    sequences: Iterable[tuple[str, Iterable[SequenceFrame]]],
    tracker_cfg: TrackerConfig | None = None,
    ground_cfg: GroundDistanceConfig | None = None,
    depth_trained: bool = True,
    metrics_cfg: SequenceMetricsConfig | None = None,
    on_frame: Callable[[str, int], None] | None = None,
) -> dict:
    """Run Predictor -> ground distance -> Tracker over each sequence and score it (module doc)."""
    tracker_cfg = tracker_cfg or TrackerConfig()
    metrics_cfg = metrics_cfg or SequenceMetricsConfig(corridor_half_width_m=tracker_cfg.corridor_half_width_m)
    metrics = SequenceMetrics(metrics_cfg)
    tracking_ms: list[float] = []
    for name, frames in sequences:
        tracker = Tracker(tracker_cfg)
        metrics.begin(name)
        for index, frame in enumerate(frames):
            result = predictor.predict(frame.rgb, K=frame.K)
            decoder = {s.id: s.distance_m for s in result.segments}
            contacts = {}
            if frame.mount is not None and frame.K is not None:
                contacts = apply_ground_distance(result, frame.mount, depth_trained, ground_cfg)
            t0 = time.perf_counter()
            tracking = tracker.update(result, frame.stamp_s, "camera")
            tracking_ms.append((time.perf_counter() - t0) * 1e3)
            lut = np.zeros(int(tracking.id_lut.size), dtype=np.int64)  # original id -> track id (0 none)
            tracks: dict[int, TrackState] = {}
            distances: dict[int, dict] = {}
            for seg, state in zip(result.segments, tracking.tracks, strict=True):
                if state is None:
                    continue
                lut[seg.id] = state.track_id
                tracks[state.track_id] = state
                contact = contacts.get(seg.id)
                distances[state.track_id] = {
                    "decoder": decoder.get(seg.id, math.nan),
                    "ground": contact.distance_m if contact is not None else math.nan,
                    "ground_reliable": bool(contact is not None and contact.reliable),
                    "published": seg.distance_m,
                    "source": seg.distance_source,
                }
            ids = result.panoptic_ids
            track_map = np.take(lut, ids, mode="wrap")  # -1 (void) wraps to the last entry: 0
            metrics.add(frame, track_map, tracking.remap_ids(ids), tracks, distances)
            if on_frame is not None:
                on_frame(name, index)
    summary = metrics.result()
    t = np.asarray(tracking_ms)
    summary["tracker_ms_per_frame"] = {"median": float(np.median(t)) if t.size else None,
                                       "p90": float(np.percentile(t, 90)) if t.size else None}
    return summary


def drive_sequence(seed: int, num_frames: int, size: tuple[int, int], fps: float = 10.0) -> Iterator[SequenceFrame]:
    """Frames of a synthetic drive with exact GT (panoptic, depth, mount, motion), rendered lazily."""
    drive = SyntheticDrive(seed, num_frames, size, fps)
    mount = CameraMount(drive.camera.height_m, drive.camera.pitch)
    for frame, motion in drive.frames_with_motion():
        yield SequenceFrame(
            rgb=frame.rgb, K=frame.K, gt_panoptic=panoptic_from_instance_ids(frame.instance_ids, frame.label_ids),
            gt_depth_m=frame.depth_m, stamp_s=frame.time_s, mount=mount, motion=motion,
        )


def load_sequences(root: str | Path, split: str) -> list[tuple[str, list[Path]]]:
    """The drives of a ``synth --sequence`` data set: [(name, camera-JSON paths in frame order)]."""
    root = Path(root)
    cams = sorted((root / "camera" / split).glob("*/*_camera.json"))
    if not cams:
        raise FileNotFoundError(f"no camera/{split}/*/*_camera.json under {root} (a synth --sequence data set)")
    by_seq: dict[str, list[Path]] = {}
    for cam in cams:
        stem = cam.name[: -len("_camera.json")]
        city, seq, _frame = stem.rsplit("_", 2)
        by_seq.setdefault(f"{city}_{seq}", []).append(cam)
    return sorted(by_seq.items())


def read_sequence_frames(root: str | Path, split: str, camera_paths: list[Path]) -> Iterator[SequenceFrame]:
    """Frames of one drive from disk: image, GT (labelIds + instanceIds, disparity -> depth), K and
    mount from the camera JSON, motion and stamp from ``motion/*_motion.json`` (needed)."""
    root = Path(root)
    for cam_path in camera_paths:
        city = cam_path.parent.name
        stem = cam_path.name[: -len("_camera.json")]
        cam = json.loads(cam_path.read_text())
        intr = cam["intrinsic"]
        K = np.array([[intr["fx"], 0.0, intr["u0"]], [0.0, intr["fy"], intr["v0"]], [0.0, 0.0, 1.0]])
        motion_path = root / "motion" / split / city / f"{stem}_motion.json"
        if not motion_path.is_file():
            raise FileNotFoundError(f"missing motion ground truth {motion_path} (write it with synth --sequence)")
        motion = FrameMotion.from_dict(json.loads(motion_path.read_text()))
        bgr = cv2.imread(str(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png"), cv2.IMREAD_COLOR)
        labels = cv2.imread(str(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png"), cv2.IMREAD_UNCHANGED)
        inst = cv2.imread(str(root / "gtFine" / split / city / f"{stem}_gtFine_instanceIds.png"),
                          cv2.IMREAD_UNCHANGED)
        disp = cv2.imread(str(root / "disparity" / split / city / f"{stem}_disparity.png"), cv2.IMREAD_UNCHANGED)
        if bgr is None or labels is None or inst is None or disp is None:
            raise FileNotFoundError(f"{stem}: image, labelIds, instanceIds or disparity missing or unreadable")
        d = (disp.astype(np.float64) - 1.0) / 256.0
        with np.errstate(divide="ignore", invalid="ignore"):
            depth = np.where(disp > 0, cam["extrinsic"]["baseline"] * intr["fx"] / d, np.nan).astype(np.float32)
        yield SequenceFrame(
            rgb=cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), K=K,
            gt_panoptic=panoptic_from_instance_ids(inst.astype(np.int32), labels),
            gt_depth_m=depth, stamp_s=motion.time_s, mount=CameraMount.from_cityscapes_json(cam), motion=motion,
        )


# ------------------------------------------------------------------------------------------- CLI
def sequence_markdown(summary: dict) -> str:
    """The summary as a short markdown report."""
    t, v, ttc = summary["tracking"], summary["velocity"], summary["ttc"]
    vp = summary["video_panoptic"]

    def f(x, fmt="{:.3f}"):
        return "—" if x is None else fmt.format(x)

    lines = [
        f"# Sequence evaluation ({summary['sequences']} sequences, {summary['frames']} frames)", "",
        "| HOTA | DetA | AssA | LocA | IDF1 | MOTA | IDSW | STQ | AQ | SQ |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| {t['HOTA']:.3f} | {t['DetA']:.3f} | {t['AssA']:.3f} | {t['LocA']:.3f} | {t['IDF1']:.3f} | "
        f"{t['MOTA']:.3f} | {t['IDSW']} | {vp['STQ']:.3f} | {vp['AQ']:.3f} | {vp['SQ']:.3f} |", "",
        f"Velocity ({v['protocol']}): median error {f(v['median_error_mps'], '{:.2f}')} m/s, "
        f"p90 {f(v['p90_error_mps'], '{:.2f}')} m/s over {v['samples']} samples.", "",
        f"TTC ({ttc['protocol']}): median error {f(ttc['median_abs_error_s'], '{:.2f}')} s "
        f"({f(ttc['median_rel_error'], '{:.1%}')}), {ttc['samples']} samples, {ttc['missed']} without a TTC.", "",
        "| distance band | samples | depth decoder | ground (all) | ground (reliable) | published |",
        "|---|---|---|---|---|---|",
    ]
    for band, row in summary["distance"]["by_band"].items():
        cells = [f(row[k]["median_rel_error"], "{:.1%}") for k in ("depth_decoder", "ground_all", "ground_reliable",
                                                                     "published")]
        lines.append(f"| {band} | {row['samples']} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Median relative distance error against the GT median depth of each matched thing.")
    return "\n".join(lines) + "\n"


def run_cli(args) -> int:
    """``panoptic-depthlab eval --sequences --data DIR``: a ``synth --sequence`` data set."""
    predictor = Predictor.from_config(args.config, args.weights, device=args.device)
    weights = args.weights or (DEFAULT_WEIGHTS if args.config is None else None)
    trained = depth_decoder_trained(weights) if weights is not None else True
    tracker_cfg = load_tracker_config(args.tracker_config) if args.tracker_config else TrackerConfig()
    drives = load_sequences(args.data, args.split)
    if args.limit:
        drives = drives[: args.limit]
    sequences = [(name, read_sequence_frames(args.data, args.split, paths)) for name, paths in drives]
    summary = evaluate_sequences(predictor, sequences, tracker_cfg, depth_trained=trained)
    summary["run"] = {"config": str(args.config or "default model"), "weights": str(args.weights or "default"),
                      "data": str(args.data), "split": args.split, "sequences": [n for n, _ in drives],
                      "depth_decoder_trained": trained}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sequence_metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    report = sequence_markdown(summary)
    (out / "sequence_metrics.md").write_text(report)
    if not args.quiet:
        print(report)
    print(f"wrote {out / 'sequence_metrics.json'} and {out / 'sequence_metrics.md'}")
    return 0
