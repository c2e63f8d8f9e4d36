"""Training: losses, schedule, config, trainer (DDP, exact resume) and the ``train`` CLI.

Submodules are imported directly (``from panoptic_depthlab_core.train.trainer import train``) so that
importing the losses does not pull in the data pipeline.
"""
