"""The place map: an index of one kind (``kinds``: hnswlib, usearch, faiss) over the
descriptors or a projection of them (``projection``), a store of the full-precision
descriptors (``vectors``), the records as columns (``records``), searched by ``search`` and
composed by ``core``; its file (``fileformat``), geo tiles (``tiles``) and big builds
(``build``)."""

from edgevpr.runtime.placemap.core import (
    ADD_CHUNK,
    DEFAULT_K,
    INITIAL_CAPACITY,
    Neighbours,
    PlaceMap,
)
from edgevpr.runtime.placemap.place_record import PlaceRecord

__all__ = ["ADD_CHUNK", "DEFAULT_K", "INITIAL_CAPACITY", "Neighbours", "PlaceMap", "PlaceRecord"]
