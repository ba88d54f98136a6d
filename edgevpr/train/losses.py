"""Metric-learning losses on a place-balanced batch.

Every loss is called as ``loss(descriptors, labels, positions)``: N x D descriptors, N
place labels, N x 2 positions in metres. Two images of one place are a positive pair; two
of different places are a negative pair only if they are farther apart than
``negative_radius`` (the evaluation radius, 25 m): neighbouring places of a route would
otherwise be pushed apart although the evaluation counts them as the same place.

- ``ms``: Multi-Similarity loss with its miner (pytorch-metric-learning), MixVPR's recipe:
  alpha 1, beta 50, base 0 on dot-product similarity; miner epsilon 0.1 on cosine.
- the triplet family of Xiong, Xu & Meng (the DW-T-Loss paper), on Euclidean descriptor
  distances d, with triplets (q, p, n) mined in the batch where |yq - yp| < |yq - yn|:
  ``triplet``  max(0, d(q,p) - d(q,n) + m), m = 0.1
  ``wt``       w * triplet
  ``ce``       -log(dn), dn = softmax(d(q,p), d(q,n))[n] (= softplus(d(q,p) - d(q,n)))
  ``dwt``      -w * log(dn), the paper's DW-T-Loss
  with w = (1 + eps) / (|yq - yp| / sigma + eps) - 1, eps 0.1, sigma 800 m.
  The paper sums over its 4 triplets a batch; here ``reduction='mean'`` (default) divides
  by the number of mined triplets, so the learning rate does not depend on how many
  triplets a batch yields. ``reduction='sum'`` is the paper's Eq. 9 literally.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from edgevpr.core.errors import EdgeVPRError

LOSSES = ("ms", "triplet", "wt", "ce", "dwt")
MINERS = ("hard", "all")
DEFAULT_MARGIN = 0.1
DEFAULT_EPS = 0.1
DEFAULT_SIGMA_M = 800.0
DEFAULT_NEGATIVE_RADIUS_M = 25.0
TRIPLET_BLOCK_ELEMENTS = 1 << 22


def distance_weight(
    query_positions: torch.Tensor,
    positive_positions: torch.Tensor,
    eps: float = DEFAULT_EPS,
    sigma: float = DEFAULT_SIGMA_M,
) -> torch.Tensor:
    """w = (1 + eps) / (|yq - yp| / sigma + eps) - 1: 10 at distance 0 (eps 0.1), falling
    to 0 at sigma metres."""
    gap = torch.linalg.vector_norm((query_positions - positive_positions).double(), dim=-1)
    return ((1.0 + eps) / (gap / sigma + eps) - 1.0).float()


def descriptor_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distance per row; finite gradient even for identical rows."""
    return (a - b).pow(2).sum(dim=-1).clamp_min(1e-12).sqrt()


def triplet_terms(
    kind: str, d_pos: torch.Tensor, d_neg: torch.Tensor, weight: torch.Tensor, margin: float
) -> torch.Tensor:
    """Per-triplet loss values of the triplet family."""
    if kind == "triplet":
        return F.relu(d_pos - d_neg + margin)
    if kind == "wt":
        return weight * F.relu(d_pos - d_neg + margin)
    # -log(dn) with dn = e^dneg / (e^dpos + e^dneg) is log(1 + e^(dpos - dneg)).
    if kind == "ce":
        return F.softplus(d_pos - d_neg)
    if kind == "dwt":
        return weight * F.softplus(d_pos - d_neg)
    raise EdgeVPRError(f"unknown triplet loss '{kind}'")


@dataclass(frozen=True)
class Triplets:
    anchor: torch.Tensor
    positive: torch.Tensor
    negative: torch.Tensor

    def __len__(self) -> int:
        return len(self.anchor)


def pair_masks(
    labels: torch.Tensor, positions: torch.Tensor, negative_radius: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Positive-pair mask, negative-pair mask and metric distances (N x N)."""
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    geo = torch.cdist(positions.double(), positions.double())
    return same & ~eye, ~same & (geo > negative_radius), geo


@torch.no_grad()
def mine_triplets(
    descriptors: torch.Tensor,
    labels: torch.Tensor,
    positions: torch.Tensor,
    strategy: str = "hard",
    negative_radius: float = DEFAULT_NEGATIVE_RADIUS_M,
) -> Triplets:
    """Triplets inside a batch. 'all': every (q, p, n) with p of q's place, n of another
    place beyond ``negative_radius`` and |yq - yp| < |yq - yn| (the paper's Eq. 1);
    'hard': for each (q, p), the valid n nearest to q in descriptor space."""
    if strategy not in MINERS:
        raise EdgeVPRError(f"unknown triplet miner '{strategy}' (choose from {', '.join(MINERS)})")
    positive, negative, geo = pair_masks(labels, positions, negative_radius)
    dist = torch.cdist(descriptors.float(), descriptors.float()) if strategy == "hard" else None
    n_images = len(labels)
    # valid[q, p, n] is N^3: build it a block of queries at a time (480-image batches).
    block = max(1, TRIPLET_BLOCK_ELEMENTS // max(1, n_images * n_images))
    empty = torch.empty(0, dtype=torch.long, device=labels.device)
    parts = [(empty, empty, empty)]
    for start in range(0, n_images, block):
        rows = slice(start, start + block)
        valid = (
            positive[rows, :, None]
            & negative[rows, None, :]
            & (geo[rows, :, None] < geo[rows, None, :])
        )
        if strategy == "all":
            q, p, n = torch.nonzero(valid, as_tuple=True)
        else:
            inf = torch.full_like(dist[rows, None, :], float("inf"))
            best, hardest = torch.where(valid, dist[rows, None, :], inf).min(dim=2)
            q, p = torch.nonzero(torch.isfinite(best), as_tuple=True)
            n = hardest[q, p]
        parts.append((q + start, p, n))
    return Triplets(*(torch.cat(t) for t in zip(*parts, strict=True)))


class TripletFamilyLoss(nn.Module):
    """T-Loss, W-T-Loss, CE-Loss or DW-T-Loss over triplets mined in the batch."""

    def __init__(
        self,
        kind: str = "dwt",
        margin: float = DEFAULT_MARGIN,
        eps: float = DEFAULT_EPS,
        sigma: float = DEFAULT_SIGMA_M,
        miner: str = "hard",
        negative_radius: float = DEFAULT_NEGATIVE_RADIUS_M,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        if kind not in ("triplet", "wt", "ce", "dwt"):
            raise EdgeVPRError(f"unknown triplet loss '{kind}'")
        if reduction not in ("mean", "sum"):
            raise EdgeVPRError(f"reduction must be 'mean' or 'sum', got '{reduction}'")
        if sigma <= 0 or eps <= 0:
            raise EdgeVPRError("sigma and eps must be > 0")
        if miner not in MINERS:
            raise EdgeVPRError(f"unknown triplet miner '{miner}' (choose from {', '.join(MINERS)})")
        self.kind, self.margin, self.eps, self.sigma = kind, margin, eps, sigma
        self.miner, self.negative_radius, self.reduction = miner, negative_radius, reduction
        self.last_triplets = 0

    def triplet_loss(
        self,
        fq: torch.Tensor,
        fp: torch.Tensor,
        fn: torch.Tensor,
        yq: torch.Tensor,
        yp: torch.Tensor,
    ) -> torch.Tensor:
        """Per-triplet values for given descriptors and positions (no mining)."""
        weight = distance_weight(yq, yp, self.eps, self.sigma)
        return triplet_terms(
            self.kind, descriptor_distance(fq, fp), descriptor_distance(fq, fn), weight, self.margin
        )

    def forward(
        self, descriptors: torch.Tensor, labels: torch.Tensor, positions: torch.Tensor
    ) -> torch.Tensor:
        descriptors = descriptors.float()
        triplets = mine_triplets(descriptors, labels, positions, self.miner, self.negative_radius)
        self.last_triplets = len(triplets)
        if len(triplets) == 0:
            return descriptors.sum() * 0.0  # keeps the graph (DDP needs every rank to backward)
        values = self.triplet_loss(
            descriptors[triplets.anchor],
            descriptors[triplets.positive],
            descriptors[triplets.negative],
            positions[triplets.anchor],
            positions[triplets.positive],
        )
        return values.sum() if self.reduction == "sum" else values.mean()


class MultiSimilarity(nn.Module):
    """Multi-Similarity loss + miner (Wang et al. 2019) as MixVPR trains with it, with the
    miner's negative pairs limited to images farther apart than ``negative_radius``."""

    def __init__(
        self,
        alpha: float = 1.0,
        beta: float = 50.0,
        base: float = 0.0,
        epsilon: float = 0.1,
        negative_radius: float = DEFAULT_NEGATIVE_RADIUS_M,
    ) -> None:
        super().__init__()
        from pytorch_metric_learning import distances, losses, miners

        self.loss = losses.MultiSimilarityLoss(
            alpha=alpha, beta=beta, base=base, distance=distances.DotProductSimilarity()
        )
        self.miner = miners.MultiSimilarityMiner(
            epsilon=epsilon, distance=distances.CosineSimilarity()
        )
        self.negative_radius = negative_radius
        self.last_triplets = 0

    def forward(
        self, descriptors: torch.Tensor, labels: torch.Tensor, positions: torch.Tensor | None = None
    ) -> torch.Tensor:
        descriptors = descriptors.float()
        a1, p, a2, n = self.miner(descriptors, labels)
        if positions is not None and self.negative_radius > 0:
            far = torch.linalg.vector_norm((positions[a2] - positions[n]).double(), dim=-1)
            keep = far > self.negative_radius
            a2, n = a2[keep], n[keep]
        self.last_triplets = len(a1) + len(a2)  # mined pairs, for the progress display
        return self.loss(descriptors, labels, (a1, p, a2, n))


def build_loss(
    name: str,
    margin: float = DEFAULT_MARGIN,
    eps: float = DEFAULT_EPS,
    sigma: float = DEFAULT_SIGMA_M,
    miner: str = "hard",
    negative_radius: float = DEFAULT_NEGATIVE_RADIUS_M,
) -> nn.Module:
    if name == "ms":
        return MultiSimilarity(negative_radius=negative_radius)
    if name in LOSSES:
        return TripletFamilyLoss(name, margin, eps, sigma, miner, negative_radius)
    raise EdgeVPRError(f"unknown loss '{name}' (choose from {', '.join(LOSSES)})")
