"""edgevpr: visual place recognition from training to the edge."""

__version__ = "0.1.0"
