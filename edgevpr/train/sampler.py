"""Place-balanced batches: P places x K images each, every place at most once an epoch.

Also the DDP sharding (what ``DistributedSampler`` does for plain datasets): every rank
draws the same place permutation for an epoch and takes every world_size-th place from
it, so the ranks see disjoint places and the same number of batches.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler

from edgevpr.core.errors import EdgeVPRError


class PlaceBatchSampler(Sampler[list[int]]):
    """Yields lists of dataset indices: ``places_per_batch`` places x ``images_per_place``.

    Images are drawn without replacement inside a place; a place with fewer than K images
    gives all of them and then repeats some. The batches depend only on (seed, epoch,
    rank, world size), so a resumed run sees the batches an uninterrupted one would.
    """

    def __init__(
        self,
        labels: np.ndarray,
        places_per_batch: int,
        images_per_place: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        labels = np.asarray(labels, dtype=np.int64)
        if places_per_batch < 2:
            raise EdgeVPRError("a batch needs at least 2 places (there are no negatives otherwise)")
        if images_per_place < 2:
            raise EdgeVPRError("a batch needs at least 2 images per place (no positives otherwise)")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of {world_size}")
        order = np.argsort(labels, kind="stable")
        bounds = np.flatnonzero(np.diff(labels[order])) + 1
        self.members = np.split(order, bounds) if len(labels) else []
        self.places_per_batch = places_per_batch
        self.images_per_place = images_per_place
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start_batch = 0
        per_rank = len(self.members) // world_size
        if per_rank < places_per_batch:
            raise EdgeVPRError(
                f"{len(self.members)} places cannot fill one batch of {places_per_batch} "
                f"places{' per process' if world_size > 1 else ''}: lower --batch-places"
            )

    @property
    def num_places(self) -> int:
        return len(self.members)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch's batches; ``start_batch`` skips the ones a resumed run did."""
        self.epoch = epoch
        self.start_batch = start_batch

    def __len__(self) -> int:
        return (len(self.members) // self.world_size) // self.places_per_batch

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """All of this rank's batches for ``epoch``."""
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.members))
        mine = order[self.rank :: self.world_size][: len(self) * self.places_per_batch]
        batches = []
        for b in range(len(self)):
            batch: list[int] = []
            for place in mine[b * self.places_per_batch : (b + 1) * self.places_per_batch]:
                images = self.members[place]
                rng = np.random.default_rng([self.seed, epoch, int(place)])
                # All of a small place's images, then repeats: never fewer distinct views.
                batch += np.resize(rng.permutation(images), self.images_per_place).tolist()
            batches.append(batch)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.epoch_batches(self.epoch)[self.start_batch :]
