"""P x K batches, their DDP sharding, and the learning-rate schedule."""

from __future__ import annotations

import numpy as np
import pytest

from edgevpr.core.errors import EdgeVPRError
from edgevpr.train.sampler import PlaceBatchSampler
from edgevpr.train.schedule import WarmupStepSchedule

# 10 places with 3..7 images each, interleaved in the dataset.
COUNTS = [3, 4, 5, 6, 7, 3, 4, 5, 6, 7]
LABELS = np.concatenate([np.full(c, p) for p, c in enumerate(COUNTS)])[
    np.random.default_rng(0).permutation(sum(COUNTS))
]


def test_batches_are_p_places_by_k_images() -> None:
    sampler = PlaceBatchSampler(LABELS, places_per_batch=3, images_per_place=4, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 3  # 10 // 3
    used = []
    for batch in batches:
        labels = LABELS[batch]
        places, counts = np.unique(labels, return_counts=True)
        assert len(places) == 3 and counts.tolist() == [4, 4, 4]
        for place in places:  # no repeats unless the place has fewer than K images
            members = [i for i in batch if LABELS[i] == place]
            assert len(set(members)) == min(4, COUNTS[place])
        used += places.tolist()
    assert len(used) == len(set(used))  # each place at most once an epoch


def test_epochs_differ_and_seeds_reproduce() -> None:
    a = PlaceBatchSampler(LABELS, 3, 2, seed=7)
    b = PlaceBatchSampler(LABELS, 3, 2, seed=7)
    assert a.epoch_batches(0) == b.epoch_batches(0)
    assert a.epoch_batches(0) != a.epoch_batches(1)
    assert a.epoch_batches(0) != PlaceBatchSampler(LABELS, 3, 2, seed=8).epoch_batches(0)


def test_resume_skips_the_batches_already_done() -> None:
    sampler = PlaceBatchSampler(LABELS, 2, 2, seed=0)
    full = sampler.epoch_batches(3)
    sampler.set_epoch(3, start_batch=2)
    assert list(sampler) == full[2:]


def test_ranks_get_disjoint_places_and_equal_batch_counts() -> None:
    shards = [PlaceBatchSampler(LABELS, 2, 2, seed=0, rank=r, world_size=2) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 2  # 10 places / 2 ranks / 2 a batch
    places = [{int(LABELS[i]) for batch in s.epoch_batches(0) for i in batch} for s in shards]
    assert places[0].isdisjoint(places[1]) and len(places[0]) == len(places[1]) == 4


def test_impossible_batches_are_explained() -> None:
    with pytest.raises(EdgeVPRError, match="lower --batch-places"):
        PlaceBatchSampler(LABELS, 11, 2)
    with pytest.raises(EdgeVPRError, match="per process"):
        PlaceBatchSampler(LABELS, 6, 2, rank=0, world_size=2)
    with pytest.raises(EdgeVPRError, match="2 images per place"):
        PlaceBatchSampler(LABELS, 2, 1)


def test_warmup_then_step_decay() -> None:
    schedule = WarmupStepSchedule(base_lr=0.05, warmup_steps=650, milestones=(5, 10), gamma=0.3)
    assert schedule.lr(0, 0) == pytest.approx(0.05 / 650)
    assert schedule.lr(324, 0) == pytest.approx(0.025)
    assert schedule.lr(649, 0) == pytest.approx(0.05)
    assert schedule.lr(5000, 4) == pytest.approx(0.05)
    assert schedule.lr(5000, 5) == pytest.approx(0.015)
    assert schedule.lr(5000, 12) == pytest.approx(0.05 * 0.09)
    assert schedule.lr(10, 5) == pytest.approx(0.015 * 11 / 650)  # warm-up and decay compose
    assert WarmupStepSchedule(0.1, warmup_steps=0).lr(0, 0) == 0.1
