"""Data: the synthetic street generator and the Cityscapes(-format) loader, targets and augmentation.

Heavy modules (torch) are imported from their submodules: ``data.loader``, ``data.targets`` ...
"""
