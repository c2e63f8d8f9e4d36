"""Shared fixtures for the data tests: one small synthetic Cityscapes-layout set per session."""

from __future__ import annotations

import pytest

SYNTH_SIZE = (128, 256)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """4 train + 2 val frames at 128x256 written by the real generator (seed 7)."""
    from panoptic_depthlab_core.data.synthetic import write_dataset

    root = tmp_path_factory.mktemp("synth")
    write_dataset(root, 4, SYNTH_SIZE, seed=7, split="train")
    write_dataset(root, 2, SYNTH_SIZE, seed=8, split="val")
    return root
