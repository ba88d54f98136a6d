"""Losses against values worked out by hand (the DW-T-Loss paper's formulas) and against
pytorch-metric-learning, plus in-batch triplet mining."""

from __future__ import annotations

import math

import pytest
import torch
from pytorch_metric_learning import distances, losses, miners

from edgevpr.core.errors import EdgeVPRError
from edgevpr.train.losses import (
    MultiSimilarity,
    TripletFamilyLoss,
    build_loss,
    distance_weight,
    mine_triplets,
)

# One triplet by hand: unit descriptors q = (1, 0), p = (0.6, 0.8), n = (0.8, 0.6);
# the positive was taken 5 m from the query (3-4-5 triangle).
FQ, FP, FN = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.6, 0.8]]), torch.tensor([[0.8, 0.6]])
YQ, YP = torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 4.0]])
D_AP = math.sqrt(0.4**2 + 0.8**2)  # 0.894427
D_AN = math.sqrt(0.2**2 + 0.6**2)  # 0.632456
W = 1.1 / (5.0 / 800.0 + 0.1) - 1.0  # 9.352941
T_LOSS = D_AP - D_AN + 0.1  # 0.361972
CE_LOSS = -math.log(math.exp(D_AN) / (math.exp(D_AP) + math.exp(D_AN)))  # 0.832687


def test_distance_weight_by_hand() -> None:
    positions = torch.tensor([[0.0, 0.0], [0.0, 0.0], [80.0, 0.0], [0.0, 800.0], [3.0, 4.0]])
    weights = distance_weight(torch.zeros(5, 2), positions, eps=0.1, sigma=800.0)
    # 10 at the query's position; 1.1 / 0.2 - 1 = 4.5 at 80 m; 0 at sigma; 9.3529 at 5 m.
    assert weights.tolist() == pytest.approx([10.0, 10.0, 4.5, 0.0, W], abs=1e-6)
    other = distance_weight(torch.zeros(1, 2), torch.tensor([[0.0, 100.0]]), eps=0.5, sigma=200.0)
    assert other.item() == pytest.approx(1.5 / 1.0 - 1.0)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("triplet", T_LOSS), ("wt", W * T_LOSS), ("ce", CE_LOSS), ("dwt", W * CE_LOSS)],
)
def test_triplet_family_by_hand(kind: str, expected: float) -> None:
    loss = TripletFamilyLoss(kind, margin=0.1, eps=0.1, sigma=800.0)
    assert loss.triplet_loss(FQ, FP, FN, YQ, YP).item() == pytest.approx(expected, abs=1e-5)


def test_margin_zeroes_easy_triplets_but_ce_does_not() -> None:
    easy_negative = torch.tensor([[-1.0, 0.0]])  # d = 2, far beyond the positive
    t = TripletFamilyLoss("triplet").triplet_loss(FQ, FP, easy_negative, YQ, YP)
    ce = TripletFamilyLoss("ce").triplet_loss(FQ, FP, easy_negative, YQ, YP)
    assert t.item() == 0.0
    assert ce.item() == pytest.approx(math.log(1 + math.exp(D_AP - 2.0)), abs=1e-6)


def batch():
    """3 places x 2 images. Places 0 and 1 are 10 m apart (too close to be negatives of
    each other at a 25 m radius); place 2 is 1 km away."""
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    positions = torch.tensor(
        [[0.0, 0], [2, 0], [10, 0], [12, 0], [1000, 0], [1001, 0]], dtype=torch.float64
    )
    descriptors = torch.nn.functional.normalize(
        torch.tensor([[1.0, 0], [0.9, 0.1], [0.8, 0.3], [0.7, 0.4], [0, 1], [0.1, 0.9]]), dim=1
    )
    return descriptors, labels, positions


def test_all_triplets_respect_places_radius_and_equation_1() -> None:
    descriptors, labels, positions = batch()
    t = mine_triplets(descriptors, labels, positions, "all", negative_radius=25.0)
    found = set(zip(t.anchor.tolist(), t.positive.tolist(), t.negative.tolist(), strict=True))
    # Every image has 1 positive. Places 0 and 1 are within 25 m of each other, so their
    # only negatives are place 2's two images; place 2's negatives are all four others.
    expected = {(a, a ^ 1, n) for a in range(4) for n in (4, 5)}
    expected |= {(a, a ^ 1, n) for a in (4, 5) for n in range(4)}
    assert found == expected
    without_radius = mine_triplets(descriptors, labels, positions, "all", negative_radius=0.0)
    assert len(without_radius) == 6 * 4


def test_hard_miner_picks_the_nearest_valid_negative() -> None:
    descriptors, labels, positions = batch()
    t = mine_triplets(descriptors, labels, positions, "hard", negative_radius=0.0)
    chosen = {
        (a, p): n
        for a, p, n in zip(t.anchor.tolist(), t.positive.tolist(), t.negative.tolist(), strict=True)
    }
    assert len(chosen) == 6
    assert chosen[(0, 1)] == 2 and chosen[(3, 2)] == 1 and chosen[(4, 5)] == 3


def test_equation_1_drops_negatives_nearer_than_the_positive() -> None:
    labels = torch.tensor([0, 0, 1, 1])
    # The positive (image 1) is 50 m from image 0; image 2 of the other place only 30 m.
    positions = torch.tensor([[0.0, 0], [50, 0], [30, 0], [500, 0]], dtype=torch.float64)
    t = mine_triplets(torch.eye(4), labels, positions, "all", negative_radius=25.0)
    assert (0, 1, 2) not in set(
        zip(t.anchor.tolist(), t.positive.tolist(), t.negative.tolist(), strict=True)
    )
    assert (0, 1, 3) in set(
        zip(t.anchor.tolist(), t.positive.tolist(), t.negative.tolist(), strict=True)
    )


def test_reduction_mean_and_sum_over_mined_triplets() -> None:
    descriptors, labels, positions = batch()
    mean = TripletFamilyLoss("dwt", miner="all", negative_radius=25.0)
    total = TripletFamilyLoss("dwt", miner="all", negative_radius=25.0, reduction="sum")
    m, s = mean(descriptors, labels, positions), total(descriptors, labels, positions)
    assert mean.last_triplets == 16 and s.item() == pytest.approx(16 * m.item(), rel=1e-5)


def test_loss_without_triplets_is_zero_and_still_differentiable() -> None:
    descriptors = torch.randn(4, 8, requires_grad=True)
    loss = TripletFamilyLoss("triplet")(
        descriptors, torch.zeros(4, dtype=torch.long), torch.zeros(4, 2)
    )
    loss.backward()
    assert loss.item() == 0.0 and descriptors.grad is not None


def test_gradients_are_finite_for_identical_descriptors() -> None:
    descriptors = torch.ones(4, 3, requires_grad=True)
    labels, positions = torch.tensor([0, 0, 1, 1]), torch.tensor([[0.0, 0]] * 2 + [[99.0, 0]] * 2)
    TripletFamilyLoss("dwt")(descriptors, labels, positions).backward()
    assert torch.isfinite(descriptors.grad).all()


def test_multi_similarity_by_hand_and_against_pytorch_metric_learning() -> None:
    embeddings = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.8, 0.6], [0.6, 0.8]])
    labels = torch.tensor([0, 0, 1, 1])
    far = torch.tensor([[0.0, 0], [0, 0], [500, 0], [500, 0]])
    ours = MultiSimilarity()(embeddings, labels, far)
    miner = miners.MultiSimilarityMiner(epsilon=0.1, distance=distances.CosineSimilarity())
    reference = losses.MultiSimilarityLoss(
        alpha=1.0, beta=50.0, base=0.0, distance=distances.DotProductSimilarity()
    )
    assert ours.item() == pytest.approx(
        reference(embeddings, labels, miner(embeddings, labels)).item()
    )
    # By hand: the miner keeps the hard positive pairs (0,1),(1,0) (similarity 0 < the
    # negatives' 0.8 - 0.1) and, for anchors 0 and 1, both negatives (similarities 0.8, 0.6).
    # Per anchor: log(1 + e^-0) + (1/50) log(1 + e^(50*0.8) + e^(50*0.6)); anchors 2 and 3
    # mine nothing and add 0; the mean is over the 4 anchors.
    per_anchor = math.log(2.0) + math.log(1 + math.exp(40.0) + math.exp(30.0)) / 50.0
    assert ours.item() == pytest.approx(2 * per_anchor / 4, abs=1e-5)


def test_multi_similarity_ignores_negatives_inside_the_radius() -> None:
    embeddings = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.8, 0.6], [0.6, 0.8]])
    labels = torch.tensor([0, 0, 1, 1])
    near = torch.zeros(4, 2)  # everything at one spot: no pair may be a negative
    loss = MultiSimilarity()(embeddings, labels, near)
    assert loss.item() == pytest.approx(2 * math.log(2.0) / 4, abs=1e-5)


def test_build_loss_and_errors() -> None:
    assert isinstance(build_loss("ms"), MultiSimilarity)
    assert build_loss("wt", sigma=100.0).sigma == 100.0
    with pytest.raises(EdgeVPRError, match="unknown loss"):
        build_loss("arcface")
    with pytest.raises(EdgeVPRError, match="miner"):
        TripletFamilyLoss("dwt", miner="semihard")
