"""Evaluation: PQ/SQ/RQ + mIoU, depth metrics, DPQ, per-segment distance error, and the ``eval`` CLI."""

from panoptic_depthlab_core.eval.evaluator import Evaluator, markdown_report, write_report

__all__ = ["Evaluator", "markdown_report", "write_report"]
