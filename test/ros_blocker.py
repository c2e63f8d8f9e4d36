"""An environment in which Python processes cannot import ROS 2, as on a machine without it.

``blocking_env`` writes a ``sitecustomize.py`` that puts a ``sys.meta_path`` finder first; it fails the
import of rclpy, every ``*_msgs``/``*_srvs``/``rosidl*`` package and the extra names given (by default
``panoptic_depthlab_ros``), and appends each attempt to a log file, so an import that a caller
swallows with ``except ImportError`` is still seen. Through ``PYTHONPATH`` it reaches spawned children.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

ROS_TOP_LEVEL = ("rclpy", "rcl_interfaces", "builtin_interfaces", "lifecycle_msgs", "ament_index_python")

_SITECUSTOMIZE = textwrap.dedent(
    """
    import os
    import sys

    BLOCKED = {blocked!r}
    LOG = {log!r}


    def _is_ros(name):
        top = name.partition(".")[0]
        return top in BLOCKED or top.endswith("_msgs") or top.endswith("_srvs") or top.startswith("rosidl")


    class _BlockRos:
        def find_spec(self, name, path=None, target=None):
            if _is_ros(name):
                with open(LOG, "a") as log:
                    log.write(f"{{os.getpid()}} {{name}}\\n")
                message = f"No module named {{name!r}} (blocked: no ROS 2 in this test)"
                raise ModuleNotFoundError(message, name=name)
            return None


    sys.meta_path.insert(0, _BlockRos())
    """
)


def blocking_env(root: Path, also_block: tuple[str, ...] = ("panoptic_depthlab_ros",)) -> tuple[dict[str, str], Path]:
    """(environment for subprocesses, log of blocked import attempts) with files under ``root``."""
    site = root / "no_ros_site"
    site.mkdir(parents=True, exist_ok=True)
    log = root / "blocked_imports.log"
    blocked = ROS_TOP_LEVEL + tuple(also_block)
    (site / "sitecustomize.py").write_text(_SITECUSTOMIZE.format(blocked=blocked, log=str(log)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), *filter(None, [env.get("PYTHONPATH")])])
    return env, log
