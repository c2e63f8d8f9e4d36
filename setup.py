"""One ament_python ROS 2 package and one pip-installable package.

``pip install .`` installs the two Python packages (``panoptic_depthlab_core`` needs no ROS);
``colcon build`` additionally installs launch/config files and the ament index marker.
"""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "panoptic_depthlab"

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
        "panoptic_depthlab_ros": ["msg_defs/vision_msgs/*.msg"],
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
        "scipy>=1.11",  # tracking: Hungarian assignment
    ],
    extras_require={
        "onnx": ["onnx>=1.16", "onnxruntime>=1.18", "onnxconverter-common>=1.14"],
        "bags": ["rosbags>=0.10", "mcap-ros2-support>=0.5"],
        "train": ["tensorboard>=2.16", "cityscapesscripts>=2.2.4"],
        "test": ["pytest>=8.0", "pytest-timeout>=2.3"],
    },
    tests_require=["pytest"],
    zip_safe=False,
    entry_points={
        "console_scripts": [
            "panoptic-depthlab = panoptic_depthlab_ros.cli:main",
            "panoptic_depthlab_node = panoptic_depthlab_ros.node:main",
        ],
    },
)
