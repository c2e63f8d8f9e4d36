"""rosbag2 tools that work without the ``ros2`` CLI: make bags, evaluate on bags, play and record.

Reading and writing bags uses rosbags (sqlite3 and MCAP storage, pure Python); live transport
(play/record) uses rclpy. Nothing here imports rclpy at module import time, so the core CLI can list
these subcommands on a machine without ROS.
"""
