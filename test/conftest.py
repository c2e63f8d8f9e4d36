"""Shared pytest fixtures. ROS 2 section: loopback-only discovery and a domain id of our own.

NETWORK RULE: anything that starts ROS 2 runs with ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and a
unique ROS_DOMAIN_ID. Concurrent test sessions on one machine get different ids through a lock
file per id (held for the whole session), so their graphs never see each other.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# ---------------------------------------------------------------------------------------------
# ROS 2
# ---------------------------------------------------------------------------------------------

ROS_DOMAIN_ID_RANGE = range(1, 101)
_ROS_LOCK_DIR = Path(tempfile.gettempdir()) / "panoptic_depthlab_ros_domains"


def _claim_ros_domain_id() -> tuple[int, int]:
    """Lock the first free domain id, starting from the inherited id or one derived from our pid."""
    _ROS_LOCK_DIR.mkdir(parents=True, exist_ok=True)
    ids = list(ROS_DOMAIN_ID_RANGE)
    inherited = os.environ.get("ROS_DOMAIN_ID", "")
    start = int(inherited) if inherited.isdigit() and int(inherited) in ROS_DOMAIN_ID_RANGE else None
    offset = ids.index(start) if start is not None else os.getpid() % len(ids)
    for domain_id in ids[offset:] + ids[:offset]:
        fd = os.open(_ROS_LOCK_DIR / f"{domain_id}.lock", os.O_CREAT | os.O_RDWR, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        return domain_id, fd
    raise RuntimeError(f"every ROS_DOMAIN_ID in {ROS_DOMAIN_ID_RANGE} is in use by another test session")


@pytest.fixture(scope="session")
def ros_domain_id() -> Iterator[int]:
    """A ROS_DOMAIN_ID no other concurrently running test session holds."""
    domain_id, fd = _claim_ros_domain_id()
    try:
        yield domain_id
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@pytest.fixture(scope="session")
def ros_env(ros_domain_id: int) -> Iterator[dict[str, str]]:
    """Full environment for ROS 2 subprocesses (``subprocess.Popen(..., env=ros_env)``).

    The two ROS variables are also set in ``os.environ`` for in-process rclpy (they must be in
    place before ``rclpy.init``) and restored when the session ends.
    """
    ros_vars = {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "ROS_DOMAIN_ID": str(ros_domain_id)}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in ros_vars.items():
            patch.setenv(key, value)
        patch.delenv("ROS_LOCALHOST_ONLY", raising=False)  # deprecated; conflicts with the range setting
        patch.delenv("ROS_STATIC_PEERS", raising=False)
        yield dict(os.environ)


@pytest.fixture
def rclpy_context(ros_env: dict[str, str], ros_domain_id: int):
    """A fresh, initialised rclpy Context on our domain; shut down after the test."""
    rclpy = pytest.importorskip("rclpy", reason="rclpy (ROS 2) is not importable in this environment")
    from rclpy.context import Context

    context = Context()
    rclpy.init(context=context, domain_id=ros_domain_id)
    try:
        yield context
    finally:
        rclpy.try_shutdown(context=context)
