"""The index kinds' table: every row's class implements the whole interface, does what its
row declares (trains, removes, keeps vectors, filters), takes exactly its parameters with
their defaults and ranges, and round-trips through a map file. A new kind added to the table
is tested here without a line of its own."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from edgevpr.core.checks import RANGES
from edgevpr.core.errors import EdgeVPRError
from edgevpr.runtime.placemap import PlaceMap
from edgevpr.runtime.placemap.kinds import INDEX_KINDS, FewerThanK, IndexKind, SearchIndex

DIM, PLACES = 16, 200
KINDS = [pytest.param(kind, id=kind.name, marks=pytest.mark.skipif(
    kind.needs is not None and importlib.util.find_spec(kind.needs) is None,
    reason=f"{kind.needs} absent")) for kind in INDEX_KINDS.values()]  # fmt: skip


def vectors(n: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_does_what_its_row_declares(kind: IndexKind) -> None:
    cls = kind.load_class()
    assert issubclass(cls, SearchIndex)
    for storage in kind.storages:
        index = kind.create(DIM, storage, {}, capacity=PLACES)
        assert index.params() == {**kind.defaults, **index.params()}  # the defaults apply
        assert index.trained != kind.trains  # a kind that trains starts untrained
        data, ids = vectors(PLACES), np.arange(PLACES) * 3
        if kind.trains:
            index.train(data)
        index.add(data, ids, 1)
        found, scores = index.search(data[:5], 3)
        assert found.shape == (5, 3) and set(found[:, 0]) <= set(ids.tolist())
        assert np.array_equal(np.sort(index.labels()), ids)
        if kind.filters:
            allowed = np.sort(ids[50:60])
            try:
                only, _ = index.search(data[:5], 3, allowed)
                assert np.isin(only, allowed).all()
            except FewerThanK:
                pass
        if kind.removes:
            index.remove(ids[:4])
            assert not np.isin(ids[:4], index.labels()).any()
        else:
            with pytest.raises(EdgeVPRError, match="cannot remove"):
                index.remove(ids[:4])
        if kind.keeps_vectors:
            assert index.vectors(ids[10:12]).shape == (2, DIM)
        else:
            with pytest.raises(EdgeVPRError, match="keeps no vectors"):
                index.vectors(ids[10:12])
        assert kind.breadth in index.params()
        index.set_search_breadth(7)
        assert index.params()[kind.breadth] == 7


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_takes_exactly_its_parameters_in_their_ranges(kind: IndexKind) -> None:
    for param in kind.params:
        assert param.name in RANGES
        low, high = param.range
        assert low <= param.default <= high
        if not param.settable:
            continue
        with pytest.raises(EdgeVPRError, match=f"{param.name} must be between"):
            PlaceMap.create(DIM, "fp", index=kind.name, **{param.name: high + 1})
    others = {name for k in INDEX_KINDS.values() for name in k.defaults} - set(kind.defaults)
    for name in sorted(others):
        with pytest.raises(EdgeVPRError, match=f"the {kind.name} index takes no {name}"):
            PlaceMap.create(DIM, "fp", index=kind.name, **{name: 1})


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_round_trips_through_a_map_file(kind: IndexKind, tmp_path: Path) -> None:
    own = {p.name: p.default + (2 if p.name != kind.breadth else 3)
           for p in kind.params if p.settable and p.name not in ("nlist", "pq_bytes")}  # fmt: skip
    placemap = PlaceMap.create(DIM, "fp", index=kind.name, **own)
    placemap.add(vectors(PLACES))
    placemap.save(tmp_path / "m.vprmap")
    loaded = PlaceMap.load(tmp_path / "m.vprmap")
    assert {k: loaded.index_params()[k] for k in own} == own  # its own parameters, kept
    queries = vectors(10, seed=1)
    assert np.array_equal(loaded.search(queries, 3)[0], placemap.search(queries, 3)[0])
