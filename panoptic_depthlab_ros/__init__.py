"""ROS 2 side of Panoptic-DepthLab: thin rclpy node plus message conversion.

Importing this package must not import rclpy, so the conversion helpers also serve rosbags
messages on machines without ROS 2.
"""
