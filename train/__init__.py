"""LVSeg training pipeline (PyTorch Lightning): ``python -m train --help``."""
