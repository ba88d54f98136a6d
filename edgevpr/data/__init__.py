"""Datasets, torch-free: the common evaluation layout (UTM in file names), GSV-Cities,
places grouped by distance for training, and the synthetic generator.

Nothing in this package imports torch, so evaluation of exported models and dataset tools
run where only the runtime is installed.
"""

from edgevpr.data.layout import EvalSplit, ImageSet, find_within, read_split
from edgevpr.data.places import PlaceSet

__all__ = ["EvalSplit", "ImageSet", "PlaceSet", "find_within", "read_split"]
