"""Launch the Panoptic-DepthLab node (lifecycle node; autostart walks it to active) and optionally RViz.

    ros2 launch panoptic_depthlab panoptic_depthlab.launch.py image:=/camera/image_raw \
        camera_info:=/camera/camera_info device:=cuda use_rviz:=true

Without the ``launch`` packages the same node runs as
``panoptic_depthlab_node --ros-args --params-file config/panoptic_depthlab.yaml -r image:=/camera/image_raw``.
"""

from pathlib import Path

from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node

# Launch arguments that are passed straight through as node parameters (a test checks that each one
# names a declared parameter). Empty values leave the params file's value alone.
PARAMETER_ARGUMENTS = (
    "weights", "backend", "device", "autostart", "model_config", "precision", "onnx_path", "engine_path",
    "camera_height_m", "camera_pitch_rad", "distance_source", "tracking",
)  # fmt: skip
FLOAT_ARGUMENTS = ("camera_height_m", "camera_pitch_rad")  # ROS 2 parameters are strictly typed
# Launch arguments that are not parameters.
OTHER_ARGUMENTS = ("namespace", "image", "camera_info", "params_file", "use_rviz", "rviz_config")

_CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"


def _share_dir() -> Path:
    """The installed share/ directory, or the source tree when run from a checkout."""
    try:
        return Path(get_package_share_directory("panoptic_depthlab"))
    except PackageNotFoundError:  # not installed with colcon: use the checkout
        return _CONFIG_DIR.parent


def _node_action(context):
    """The node, with only the non-empty pass-through arguments overriding the params file."""
    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    overrides = {}
    for name in PARAMETER_ARGUMENTS:
        value = arg(name)
        if name == "autostart":
            overrides[name] = value.strip().lower() in ("true", "1", "yes")
        elif name == "tracking" and value:
            overrides[name] = value.strip().lower() in ("true", "1", "yes")
        elif name in FLOAT_ARGUMENTS and value:
            overrides[name] = float(value)
        elif value:
            overrides[name] = value
    image = arg("image")
    return [
        LifecycleNode(
            package="panoptic_depthlab",
            executable="panoptic_depthlab_node",
            name="panoptic_depthlab",
            namespace=arg("namespace"),
            output="screen",
            parameters=[arg("params_file"), overrides],
            remappings=[
                ("image", image),
                ("image/compressed", image.rstrip("/") + "/compressed"),
                ("camera_info", arg("camera_info")),
            ],
        )
    ]


def generate_launch_description():
    share = _share_dir()
    arguments = [
        DeclareLaunchArgument("namespace", default_value="", description="Namespace of the node"),
        DeclareLaunchArgument(
            "image",
            default_value="/camera/image_raw",
            description="Input image topic (image/compressed is derived from it)",
        ),
        DeclareLaunchArgument(
            "camera_info", default_value="/camera/camera_info", description="CameraInfo topic"
        ),
        DeclareLaunchArgument(
            "params_file",
            default_value=str(share / "config" / "panoptic_depthlab.yaml"),
            description="Parameters YAML",
        ),
        DeclareLaunchArgument(
            "model_config", default_value="", description="Model YAML; empty = params file"
        ),
        DeclareLaunchArgument(
            "weights", default_value="", description="Weights .safetensors; empty = params file"
        ),
        DeclareLaunchArgument(
            "backend", default_value="", description="auto | torch | onnxruntime | tensorrt; empty = params file"
        ),
        DeclareLaunchArgument(
            "device", default_value="", description="cpu | cuda | cuda:N; empty = params file"
        ),
        DeclareLaunchArgument(
            "precision", default_value="", description="fp32 | fp16 | bf16 | int8 (the file's); empty = params file"
        ),
        DeclareLaunchArgument(
            "onnx_path", default_value="", description="Prebuilt ONNX file (export onnx); empty = params file"
        ),
        DeclareLaunchArgument(
            "engine_path", default_value="", description="Prebuilt TensorRT engine + .json sidecar; empty = params file"
        ),
        DeclareLaunchArgument(
            "camera_height_m",
            default_value="",
            description="Camera height above the road (m) for ground-plane distances; empty = params file",
        ),
        DeclareLaunchArgument(
            "camera_pitch_rad",
            default_value="",
            description="Camera pitch (rad, > 0 looks down); empty = params file",
        ),
        DeclareLaunchArgument(
            "distance_source", default_value="", description="auto | depth | ground | fused; empty = params file"
        ),
        DeclareLaunchArgument("tracking", default_value="", description="true | false; empty = params file"),
        DeclareLaunchArgument("autostart", default_value="true", description="Configure + activate on start"),
        DeclareLaunchArgument(
            "use_rviz", default_value="false", description="Start RViz with the shipped config"
        ),
        DeclareLaunchArgument(
            "rviz_config",
            default_value=str(share / "config" / "panoptic_depthlab.rviz"),
            description="RViz config",
        ),
    ]

    node = OpaqueFunction(function=_node_action)
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        arguments=["-d", LaunchConfiguration("rviz_config")],
        condition=IfCondition(LaunchConfiguration("use_rviz")),
        output="log",
    )
    return LaunchDescription([*arguments, node, rviz])
