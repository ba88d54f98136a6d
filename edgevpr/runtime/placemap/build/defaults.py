"""What ``edgevpr index build`` makes when given no options: the configuration the
measurements recommend for the descriptor size (benchmarks/results/maps.md).

Wide descriptors are projected: on 100k places of 4096-d (the paper's MixVPR), the default
faiss-ivf index over 8-bit codes answered in 0.85 ms at top-1 agreement 0.995 with exact
float search once projected to 256 dimensions (PCA fitted on the map's own descriptors,
stored descriptors re-ranking the candidates exactly), where the full 4096 dimensions took
6.8 ms (hnswlib 4.6 ms at ef 256); Recall@1 on nordland64 and corridor did not change. Narrow
descriptors (512-d) gain nothing from it. A projection is fitted on the map's own
descriptors, so it needs several times as many places as dimensions.
"""

from __future__ import annotations

PROJECT_FROM_DIM = 1024  # descriptors this wide or wider are projected by default
PROJECTED_DIMS = 256
FIT_ROWS_PER_DIM = 10  # places a fitted projection needs per dimension it keeps
AUTO = "auto"  # --pca's default: this rule


def default_projection(dim: int, places: int) -> int | None:
    """The dimensions ``index build`` projects to by default (None: no projection)."""
    if dim < PROJECT_FROM_DIM or places < FIT_ROWS_PER_DIM * PROJECTED_DIMS:
        return None
    return PROJECTED_DIMS


RULE = (f"default: descriptors of {PROJECT_FROM_DIM} dimensions or more are projected to "
        f"{PROJECTED_DIMS} where the map has at least {FIT_ROWS_PER_DIM * PROJECTED_DIMS} "
        "places (measured 8x faster at the same top-1 on 4096-d); 0: never")  # fmt: skip
