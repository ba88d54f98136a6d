"""The place map, in parts: the records as columns (``records``), the hnswlib index
(``hnsw``, its file layout checked in ``hnsw_file``), the one module that owns the file
format (``mapfile``), and the map that composes them (``core``)."""

from edgevpr.runtime.placemap.core import (
    ADD_CHUNK,
    DEFAULT_K,
    INITIAL_CAPACITY,
    Neighbours,
    PlaceMap,
)
from edgevpr.runtime.placemap.hnsw import DEFAULT_EF, DEFAULT_EF_CONSTRUCTION, DEFAULT_M
from edgevpr.runtime.placemap.place_record import PlaceRecord

__all__ = [
    "ADD_CHUNK",
    "DEFAULT_EF",
    "DEFAULT_EF_CONSTRUCTION",
    "DEFAULT_K",
    "DEFAULT_M",
    "INITIAL_CAPACITY",
    "Neighbours",
    "PlaceMap",
    "PlaceRecord",
]
