"""One ament_python ROS 2 package and one pip-installable package.

``pip install .`` installs the two Python packages (``panoptic_depthlab_core`` needs no ROS) and the
``panoptic-depthlab`` command; ``colcon build`` additionally installs launch/config files and the ament
index marker. Run dependencies: package.xml (rosdep keys) and docs/install.md (pip-only ones).
"""

from glob import glob
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.develop import develop
from setuptools.command.install_scripts import install_scripts

PACKAGE = "panoptic_depthlab"
# Commands for people (on PATH), as opposed to the node executable that `ros2 run` and launch files find
# in lib/<package>/ (setup.cfg puts every script there, as ament_python requires).
USER_COMMANDS = ("panoptic-depthlab",)


def _copy_user_commands(command, script_dir: str) -> list[str]:
    """With the ROS layout (scripts in <prefix>/lib/<package>), also put USER_COMMANDS in <prefix>/bin."""
    scripts = Path(script_dir)
    if scripts.name != PACKAGE or scripts.parent.name != "lib":
        return []  # pip/wheel layout: the scripts are in bin already
    bin_dir = scripts.parent.parent / "bin"
    command.mkpath(str(bin_dir))
    copied = []
    for name in USER_COMMANDS:
        if (scripts / name).exists():
            command.copy_file(str(scripts / name), str(bin_dir / name))
            copied.append(str(bin_dir / name))
    return copied


class InstallScripts(install_scripts):
    """``colcon build`` (setup.py install): the node stays in lib/<package>, the CLI also goes to bin."""

    def run(self) -> None:
        super().run()
        self.outfiles += _copy_user_commands(self, self.install_dir)


class Develop(develop):
    """``colcon build --symlink-install`` (setup.py develop): the same for the develop layout."""

    def install_wrapper_scripts(self, dist):
        result = super().install_wrapper_scripts(dist)
        if not self.exclude_scripts:
            _copy_user_commands(self, self.script_dir)
        return result


setup(
    name=PACKAGE,
    version="0.1.0",
    description="Panoptic segmentation + metric depth + per-segment distance; ROS 2 node.",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["panoptic_depthlab_core*", "panoptic_depthlab_ros*"]),
    package_data={
        "panoptic_depthlab_core": [
            "default_model/*.yaml",
            "default_model/*.safetensors",
            "default_model/*.json",
            "default_model/*.md",
        ],
        "panoptic_depthlab_ros": ["msg_defs/vision_msgs/*.msg", "msg_defs/panoptic_depthlab_msgs/*.msg"],
    },
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.rviz") + glob("config/*.xml")),
        (f"share/{PACKAGE}/config/models", glob("config/models/*.yaml")),
    ],
    install_requires=[
        "numpy>=1.26",
        "torch>=2.1",
        "torchvision>=0.16",
        "safetensors>=0.4",
        "pyyaml>=6.0",
        "opencv-python-headless>=4.9",
        "pillow>=10.0",
        "tqdm>=4.66",
        "cityscapesscripts>=2.2.4",  # synth writes its panoptic GT with cityscapesscripts' createPanopticImgs
        "scipy>=1.11",  # tracking: Hungarian assignment
    ],
    extras_require={
        "onnx": ["onnx>=1.16", "onnxruntime>=1.18", "onnxconverter-common>=1.14"],
        "bags": ["rosbags>=0.10", "mcap-ros2-support>=0.5"],
        "train": ["tensorboard>=2.16"],
        # The supported TensorRT range (panoptic_depthlab_core/runtime/tensorrt_backend.py): strongly typed
        # networks from explicit-precision ONNX; JetPack 6 ships 10.3 (use its TensorRT, not this wheel),
        # x86 gets 11.x. Needs an NVIDIA GPU and driver.
        "tensorrt": ["tensorrt>=10.3,<12", "onnx>=1.16"],
        "test": ["pytest>=8.0", "pytest-timeout>=2.3"],
        # bag-eval-fleet --ray (panoptic_depthlab_ros/bags/fleet.py); local worker processes need nothing
        "fleet": ["ray>=2.50"],
    },
    zip_safe=False,
    cmdclass={"install_scripts": InstallScripts, "develop": Develop},
    entry_points={
        "console_scripts": [
            "panoptic-depthlab = panoptic_depthlab_ros.cli:main",
            "panoptic_depthlab_node = panoptic_depthlab_ros.node:main",
        ],
    },
)
