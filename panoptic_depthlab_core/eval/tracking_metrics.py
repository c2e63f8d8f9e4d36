"""Multi-object tracking and video panoptic metrics, as their papers define them.

- HOTA, DetA, AssA, LocA (Luiten et al., IJCV 2021), averaged over the localisation thresholds
  alpha = 0.05 .. 0.95; IDF1 (Ristani et al., 2016) and MOTA (CLEAR MOT) at IoU 0.5. The algorithms
  follow TrackEval (HOTA's authors' code) step by step, so the numbers are the same (tested against
  ``trackeval`` on the same sequences).
- STQ = sqrt(AQ * SQ) (Weber et al., STEP, 2021): SQ the mean IoU of the semantic classes over the
  sequence, AQ the pixel-level association quality of the thing tubes, class-agnostic.

Inputs are per-frame: ground-truth and predicted ids (any hashable ints) and their similarity (mask
IoU for segmentation tracking). :func:`frame_overlaps` makes them from two id maps with one
joint histogram — no per-pixel Python.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from panoptic_depthlab_core.metadata import LABEL_DIVISOR, NUM_CLASSES, THING_TRAIN_IDS

ALPHAS = np.arange(0.05, 0.99, 0.05)  # TrackEval's HOTA thresholds (19 values)
_EPS = np.finfo(float).eps


@dataclass
class FrameMatchData:
    """One frame: ids present and their similarity matrix [gt, pred]."""

    gt_ids: np.ndarray
    pred_ids: np.ndarray
    similarity: np.ndarray


def frame_overlaps(gt_ids: np.ndarray, pred_ids: np.ndarray, gt_objects: np.ndarray | None = None,
                   pred_objects: np.ndarray | None = None, ignore: np.ndarray | None = None) -> FrameMatchData:
    """Mask IoU between every GT and predicted object of one frame.

    ``gt_ids``/``pred_ids``: int id maps of the same shape. ``gt_objects``/``pred_objects``: the ids
    that count as objects (default: every id > 0). ``ignore``: a boolean map of pixels that count
    for neither (e.g. GT void). Pixels of other ids are background."""
    gt = np.asarray(gt_ids).ravel()
    pr = np.asarray(pred_ids).ravel()
    if gt.shape != pr.shape:
        raise ValueError(f"id maps differ in size: {np.shape(gt_ids)} vs {np.shape(pred_ids)}")
    if ignore is not None:
        keep = ~np.asarray(ignore).ravel()
        gt, pr = gt[keep], pr[keep]
    g_objs = np.unique(gt[gt > 0]) if gt_objects is None else np.asarray(sorted(set(gt_objects)), dtype=np.int64)
    p_objs = np.unique(pr[pr > 0]) if pred_objects is None else np.asarray(sorted(set(pred_objects)), dtype=np.int64)
    g_idx = _index_of(gt, g_objs)
    p_idx = _index_of(pr, p_objs)
    ng, npr = len(g_objs), len(p_objs)
    area_g = np.bincount(g_idx[g_idx >= 0], minlength=ng)
    area_p = np.bincount(p_idx[p_idx >= 0], minlength=npr)
    both = (g_idx >= 0) & (p_idx >= 0)
    inter = np.bincount(g_idx[both] * npr + p_idx[both], minlength=ng * npr).reshape(ng, npr)
    union = area_g[:, None] + area_p[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    keep_g, keep_p = area_g > 0, area_p > 0  # objects named but absent from this frame do not count
    return FrameMatchData(g_objs[keep_g], p_objs[keep_p], iou[np.ix_(keep_g, keep_p)])


def _index_of(values: np.ndarray, objects: np.ndarray) -> np.ndarray:
    """Index of each value in sorted ``objects``, -1 if absent."""
    if objects.size == 0:
        return np.full(values.shape, -1, dtype=np.int64)
    pos = np.searchsorted(objects, values)
    pos = np.clip(pos, 0, objects.size - 1)
    return np.where(objects[pos] == values, pos, -1).astype(np.int64)


def _compact(frames: Sequence[FrameMatchData]):
    """Frames with ids -> 0..n-1 per side (TrackEval's data layout)."""
    g_all = np.unique(np.concatenate([f.gt_ids for f in frames] + [np.zeros(0)])).astype(np.int64)
    p_all = np.unique(np.concatenate([f.pred_ids for f in frames] + [np.zeros(0)])).astype(np.int64)
    gt = [np.searchsorted(g_all, f.gt_ids).astype(np.int64) for f in frames]
    pr = [np.searchsorted(p_all, f.pred_ids).astype(np.int64) for f in frames]
    sims = [np.asarray(f.similarity, dtype=np.float64).reshape(len(f.gt_ids), len(f.pred_ids)) for f in frames]
    return gt, pr, sims, len(g_all), len(p_all)


@dataclass
class TrackingScores:
    HOTA: float
    DetA: float
    AssA: float
    LocA: float
    IDF1: float
    IDTP: int
    IDFP: int
    IDFN: int
    MOTA: float
    IDSW: int
    CLR_TP: int
    CLR_FN: int
    CLR_FP: int
    gt_objects: int
    gt_detections: int
    pred_detections: int
    hota_per_alpha: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _hota_parts(frames: Sequence[FrameMatchData]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per alpha: counts [TP, FN, FP], summed localisation similarity of the TPs, and AssA * TP
    (TrackEval's ``HOTA.eval_sequence``, kept as sums so sequences combine as TrackEval combines them)."""
    gt, pr, sims, n_gt, n_pr = _compact(frames)
    na = len(ALPHAS)
    counts = np.zeros((3, na))
    loc = np.zeros(na)
    potential = np.zeros((n_gt, n_pr))
    gt_count = np.zeros((n_gt, 1))
    pr_count = np.zeros((1, n_pr))
    for g, p, s in zip(gt, pr, sims, strict=True):
        denom = s.sum(0)[np.newaxis, :] + s.sum(1)[:, np.newaxis] - s
        sim_iou = np.zeros_like(s)
        mask = denom > 0 + _EPS
        sim_iou[mask] = s[mask] / denom[mask]
        potential[g[:, np.newaxis], p[np.newaxis, :]] += sim_iou
        gt_count[g] += 1
        pr_count[0, p] += 1
    global_score = potential / np.maximum(gt_count + pr_count - potential, _EPS)
    matches = [np.zeros((n_gt, n_pr)) for _ in range(na)]
    for g, p, s in zip(gt, pr, sims, strict=True):
        if len(g) == 0 or len(p) == 0:
            counts[1] += len(g)
            counts[2] += len(p)
            continue
        rows, cols = linear_sum_assignment(-(global_score[g[:, np.newaxis], p[np.newaxis, :]] * s))
        for a, alpha in enumerate(ALPHAS):
            ok = s[rows, cols] >= alpha - _EPS
            r, c = rows[ok], cols[ok]
            counts[0, a] += len(r)
            counts[1, a] += len(g) - len(r)
            counts[2, a] += len(p) - len(r)
            if len(r):
                loc[a] += s[r, c].sum()
                matches[a][g[r], p[c]] += 1
    ass_tp = np.zeros(na)
    for a in range(na):
        m = matches[a]
        ass_tp[a] = np.sum(m * (m / np.maximum(1, gt_count + pr_count - m)))
    return counts, loc, ass_tp


def _hota_from_parts(counts: np.ndarray, loc: np.ndarray, ass_tp: np.ndarray) -> dict[str, np.ndarray | float]:
    tp = counts[0]
    det = tp / np.maximum(1, counts.sum(0))
    ass = ass_tp / np.maximum(1, tp)
    loc_a = np.maximum(1e-10, loc) / np.maximum(1e-10, tp)
    h = np.sqrt(det * ass)
    return {"HOTA": float(h.mean()), "DetA": float(det.mean()), "AssA": float(ass.mean()),
            "LocA": float(loc_a.mean()), "HOTA_alpha": h, "DetA_alpha": det, "AssA_alpha": ass}


def hota(frames: Sequence[FrameMatchData]) -> dict[str, np.ndarray | float]:
    """HOTA/DetA/AssA/LocA per alpha and averaged over alpha (TrackEval's ``HOTA``)."""
    return _hota_from_parts(*_hota_parts(frames))


def identity(frames: Sequence[FrameMatchData], threshold: float = 0.5) -> dict[str, float]:
    """IDF1 with IDTP/IDFP/IDFN (TrackEval's ``Identity``: one global id matching, IoU >= threshold)."""
    gt, pr, sims, n_gt, n_pr = _compact(frames)
    potential = np.zeros((n_gt, n_pr))
    gt_count = np.zeros(n_gt)
    pr_count = np.zeros(n_pr)
    for g, p, s in zip(gt, pr, sims, strict=True):
        rr, cc = np.nonzero(s >= threshold)
        potential[g[rr], p[cc]] += 1
        gt_count[g] += 1
        pr_count[p] += 1
    n = n_gt + n_pr
    fp_mat = np.zeros((n, n))
    fn_mat = np.zeros((n, n))
    fp_mat[n_gt:, :n_pr] = 1e10
    fn_mat[:n_gt, n_pr:] = 1e10
    for i in range(n_gt):
        fn_mat[i, :n_pr] = gt_count[i]
        fn_mat[i, n_pr + i] = gt_count[i]
    for j in range(n_pr):
        fp_mat[:n_gt, j] = pr_count[j]
        fp_mat[j + n_gt, j] = pr_count[j]
    fn_mat[:n_gt, :n_pr] -= potential
    fp_mat[:n_gt, :n_pr] -= potential
    rows, cols = linear_sum_assignment(fn_mat + fp_mat)
    idfn = float(fn_mat[rows, cols].sum())
    idfp = float(fp_mat[rows, cols].sum())
    idtp = float(gt_count.sum()) - idfn
    idf1 = idtp / max(1.0, idtp + 0.5 * idfp + 0.5 * idfn)
    return {"IDF1": idf1, "IDTP": int(round(idtp)), "IDFP": int(round(idfp)), "IDFN": int(round(idfn))}


def clear_mot(frames: Sequence[FrameMatchData], threshold: float = 0.5) -> dict[str, float]:
    """MOTA with TP/FN/FP/IDSW (TrackEval's ``CLEAR``: matches kept from the previous frame first)."""
    gt, pr, sims, n_gt, _ = _compact(frames)
    tp = fn = fp = idsw = 0
    prev_any = np.full(n_gt, np.nan)
    prev_step = np.full(n_gt, np.nan)
    for g, p, s in zip(gt, pr, sims, strict=True):
        if len(g) == 0:
            fp += len(p)
            continue
        if len(p) == 0:
            fn += len(g)
            continue
        score = 1000.0 * (p[np.newaxis, :] == prev_step[g[:, np.newaxis]]) + s
        score[s < threshold - _EPS] = 0
        rows, cols = linear_sum_assignment(-score)
        ok = score[rows, cols] > 0 + _EPS
        rows, cols = rows[ok], cols[ok]
        matched_g, matched_p = g[rows], p[cols]
        before = prev_any[matched_g]
        idsw += int(np.sum(~np.isnan(before) & (matched_p != before)))
        prev_step[:] = np.nan
        prev_step[matched_g] = matched_p
        prev_any[matched_g] = matched_p
        tp += len(rows)
        fn += len(g) - len(rows)
        fp += len(p) - len(rows)
    mota = (tp - fp - idsw) / max(1, tp + fn)
    return {"MOTA": float(mota), "IDSW": idsw, "CLR_TP": tp, "CLR_FN": fn, "CLR_FP": fp}


def tracking_scores(sequences: Iterable[Sequence[FrameMatchData]]) -> TrackingScores:
    """HOTA, IDF1 and MOTA over several sequences, each matched alone and combined as TrackEval
    combines sequences (counts summed; AssA and LocA weighted by the TPs)."""
    na = len(ALPHAS)
    counts, loc, ass_tp = np.zeros((3, na)), np.zeros(na), np.zeros(na)
    idtp = idfp = idfn = ctp = cfn = cfp = sw = 0
    n_obj = n_gtd = n_prd = 0
    for seq in sequences:
        frames = list(seq)
        c, lo, a = _hota_parts(frames)
        counts, loc, ass_tp = counts + c, loc + lo, ass_tp + a
        n_obj += len(np.unique(np.concatenate([f.gt_ids for f in frames] + [np.zeros(0)])))
        n_gtd += sum(len(f.gt_ids) for f in frames)
        n_prd += sum(len(f.pred_ids) for f in frames)
        i = identity(frames)
        idtp, idfp, idfn = idtp + i["IDTP"], idfp + i["IDFP"], idfn + i["IDFN"]
        m = clear_mot(frames)
        ctp, cfn, cfp, sw = ctp + m["CLR_TP"], cfn + m["CLR_FN"], cfp + m["CLR_FP"], sw + m["IDSW"]
    h = _hota_from_parts(counts, loc, ass_tp)
    return TrackingScores(
        HOTA=h["HOTA"], DetA=h["DetA"], AssA=h["AssA"], LocA=h["LocA"],
        IDF1=idtp / max(1.0, idtp + 0.5 * idfp + 0.5 * idfn), IDTP=idtp, IDFP=idfp, IDFN=idfn,
        MOTA=(ctp - cfp - sw) / max(1, ctp + cfn), IDSW=sw, CLR_TP=ctp, CLR_FN=cfn, CLR_FP=cfp,
        gt_objects=n_obj, gt_detections=n_gtd, pred_detections=n_prd,
        hota_per_alpha=[float(v) for v in h["HOTA_alpha"]],
    )


# ------------------------------------------------------------------------------------------ STQ
class STQAccumulator:
    """Segmentation and Tracking Quality over one or more sequences (Weber et al., 2021).

    ``update(gt_panoptic, pred_panoptic, sequence)`` per frame, with panoptic ids
    ``class * label_divisor + instance`` and -1 void (GT void pixels are ignored). SQ: mean IoU of
    the classes over all frames; AQ: for every GT thing tube g, (1/|g|) sum over predicted tubes p
    of TPA(p, g) * IoU(p, g), averaged over the tubes; STQ = sqrt(AQ * SQ)."""

    def __init__(self, num_classes: int = NUM_CLASSES, thing_ids: Sequence[int] = THING_TRAIN_IDS,
                 label_divisor: int = LABEL_DIVISOR) -> None:
        self.num_classes = num_classes
        self.div = label_divisor
        self.thing = np.zeros(max(num_classes, max(thing_ids, default=0) + 1), dtype=bool)
        self.thing[list(thing_ids)] = True
        self.confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
        self.gt_area: dict[tuple[str, int], int] = {}
        self.pred_area: dict[tuple[str, int], int] = {}
        self.inter: dict[tuple[str, int, int], int] = {}

    def update(self, gt_panoptic: np.ndarray, pred_panoptic: np.ndarray, sequence: str = "") -> None:
        gt = np.asarray(gt_panoptic).ravel().astype(np.int64)
        pr = np.asarray(pred_panoptic).ravel().astype(np.int64)
        if gt.shape != pr.shape:
            raise ValueError(f"GT and prediction differ in size: {np.shape(gt_panoptic)} vs {np.shape(pred_panoptic)}")
        valid = gt >= 0
        gt, pr = gt[valid], pr[valid]
        g_cls = gt // self.div
        p_cls = np.where(pr >= 0, pr // self.div, -1)
        ok = (p_cls >= 0) & (p_cls < self.num_classes) & (g_cls < self.num_classes)
        self.confusion += np.bincount(g_cls[ok] * self.num_classes + p_cls[ok],
                                      minlength=self.num_classes**2).reshape(self.num_classes, self.num_classes)
        # predicted void pixels count as a miss for the GT class
        miss = ~ok & (g_cls < self.num_classes)
        self._void_miss = getattr(self, "_void_miss", np.zeros(self.num_classes, dtype=np.int64))
        self._void_miss += np.bincount(g_cls[miss], minlength=self.num_classes)
        g_thing = self.thing[np.minimum(g_cls, self.thing.size - 1)] & (gt % self.div != 0)
        p_thing = (p_cls >= 0) & self.thing[np.clip(p_cls, 0, self.thing.size - 1)] & (pr % self.div != 0)
        for ids, store in ((gt[g_thing], self.gt_area), (pr[p_thing], self.pred_area)):
            u, c = np.unique(ids, return_counts=True)
            for i, n in zip(u.tolist(), c.tolist(), strict=True):
                store[(sequence, i)] = store.get((sequence, i), 0) + n
        both = g_thing & p_thing
        if both.any():
            pairs = np.stack([gt[both], pr[both]], axis=1)
            u, c = np.unique(pairs, axis=0, return_counts=True)
            for (gi, pi), n in zip(u.tolist(), c.tolist(), strict=True):
                self.inter[(sequence, gi, pi)] = self.inter.get((sequence, gi, pi), 0) + n

    def result(self) -> dict[str, float]:
        conf = self.confusion
        tp = np.diag(conf).astype(np.float64)
        void_miss = getattr(self, "_void_miss", np.zeros(self.num_classes, dtype=np.int64))
        union = conf.sum(1) + conf.sum(0) - tp + void_miss
        present = union > 0
        sq = float(np.mean(tp[present] / union[present])) if present.any() else 0.0
        by_gt: dict[tuple[str, int], float] = {}
        for (seq, gi, pi), tpa in self.inter.items():
            g_size = self.gt_area[(seq, gi)]
            p_size = self.pred_area[(seq, pi)]
            iou = tpa / (g_size + p_size - tpa)
            by_gt[(seq, gi)] = by_gt.get((seq, gi), 0.0) + tpa * iou
        tubes = len(self.gt_area)
        aq = sum(by_gt.get(k, 0.0) / size for k, size in self.gt_area.items()) / max(tubes, 1)
        return {"STQ": float(np.sqrt(aq * sq)), "AQ": float(aq), "SQ": sq, "tubes": tubes}
