"""One Recognizer shared by many query threads while other threads add places and save the
map: every query of a place that was there from the start still finds it first, nothing
raises, and what was saved meanwhile loads."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
from corpus import SCENES, GoodFiles, good_files, scene

from edgevpr.core.geo import GeoPrior
from edgevpr.runtime.embedder import Embedder
from edgevpr.runtime.placemap import ADD_CHUNK, PlaceMap
from edgevpr.runtime.recognizer import Recognizer

QUERY_THREADS = 8
ROUNDS = 12
ADDED = 2 * ADD_CHUNK + 37  # several locked chunks, and capacity growth while queries run


@pytest.fixture(scope="session")
def good(tmp_path_factory: pytest.TempPathFactory) -> GoodFiles:
    return good_files(tmp_path_factory.mktemp("hardening-good"))


def other_scenes(count: int) -> list[np.ndarray]:
    """RGB scenes unlike the map's (other seeds, another texture scale)."""
    rng = np.random.default_rng(99)
    return [
        cv2.resize(rng.integers(0, 256, (3, 5, 3), np.uint8), (64, 48), cv2.INTER_LINEAR)
        for _ in range(count)
    ]


def test_queries_stay_right_while_places_are_added_and_saved(
    good: GoodFiles, tmp_path: Path
) -> None:
    embedder = Embedder(good.onnx, providers=["cpu"], threads=1)
    placemap = PlaceMap.load(good.map)
    recognizer = Recognizer(embedder, placemap)
    originals = placemap.ids().tolist()
    queries = [cv2.cvtColor(scene(i), cv2.COLOR_BGR2RGB) for i in range(SCENES)]
    expected = [r.best.id for r in recognizer.recognize_many(queries, k=3)]
    assert sorted(expected) == originals  # each scene finds itself before anything runs
    new_descriptors = embedder.embed_images(other_scenes(ADDED))
    prior = GeoPrior(0.0, 25.0, 1000.0)  # every original place is in range
    start = threading.Barrier(QUERY_THREADS + 2)
    adding_done = threading.Event()
    readers_done = threading.Event()
    saves: list[Path] = []

    def query_loop(worker: int) -> list[tuple[int, list[int]]]:
        start.wait()
        seen = []
        for round_ in range(ROUNDS):
            use_prior = (worker + round_) % 3 == 0
            results = recognizer.recognize_many(queries, k=3, prior=prior if use_prior else None)
            seen.append((len(placemap), [r.best.id for r in results]))
        return seen

    def add_loop() -> None:
        """One batch over several locked chunks, then small ones until the readers are done."""
        start.wait()
        offset = 0
        while offset < ADDED and (offset == 0 or not readers_done.is_set()):
            size = ADD_CHUNK + 3 if offset == 0 else 7
            batch = new_descriptors[offset : offset + size]
            placemap.add(batch, [{"path": f"new{offset + i}.png"} for i in range(len(batch))])
            offset += len(batch)
            time.sleep(0.002)  # let readers in between batches, as a live robot would
        adding_done.set()

    def save_loop() -> None:
        start.wait()
        while not adding_done.is_set():
            target = tmp_path / f"snapshot{len(saves)}.vprmap"
            placemap.save(target)
            saves.append(target)
        placemap.save(tmp_path / "final.vprmap")

    with ThreadPoolExecutor(QUERY_THREADS + 2) as pool:
        writers = [pool.submit(add_loop), pool.submit(save_loop)]
        readers = [pool.submit(query_loop, w) for w in range(QUERY_THREADS)]
        seen = [r.result(timeout=600) for r in readers]
        readers_done.set()
        for w in writers:
            w.result(timeout=600)

    sizes_seen = {size for rounds in seen for size, _ in rounds}
    assert len(sizes_seen) > 1, "no query ran while places were being added"
    for rounds in seen:
        for size, best in rounds:
            assert best == expected, f"wrong top-1 with {size} places in the map"
    added = len(placemap) - SCENES
    assert added > ADD_CHUNK
    final = PlaceMap.load(tmp_path / "final.vprmap")
    assert len(final) == SCENES + added
    assert [r.best.id for r in Recognizer(embedder, final).recognize_many(queries)] == expected
    for snapshot in saves:  # every save made while places were being added is a whole map
        loaded = PlaceMap.load(snapshot)
        assert SCENES <= len(loaded) <= SCENES + added
        assert set(originals) <= set(loaded.ids().tolist())
