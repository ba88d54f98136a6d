"""Property tests of the place-map loader, for every index kind: any change to a valid map
file's bytes is either loaded as the identical map or refused with a one-line EdgeVPRError -
never another exception, never a crash. Also for forgeries, whose checksums are made valid
again after the change: those reach the metadata parser and the index libraries (hnswlib,
faiss, usearch), which trust what they are given; a forged map that loads answers true to
its own content (live places, exact scores). Version-1 files are fuzzed the same way.
``benchmarks/integrity_fuzz.py`` runs the same surfaces at length, in worker processes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgevpr.core.errors import EdgeVPRError
from edgevpr.runtime.placemap import PlaceMap
from edgevpr.runtime.placemap.fileformat.container import HEADER, MapFile, write_sections
from edgevpr.runtime.placemap.kinds import INDEX_KINDS, IndexKind

pytestmark = pytest.mark.slow  # fuzzing

DIM = 16
PLACES = 40
FUZZ = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def _available(kind: IndexKind) -> bool:
    return kind.needs is None or importlib.util.find_spec(kind.needs) is not None


KIND_SPECS = [pytest.param((k.name, storage), id=f"{k.name}-{storage}",
                           marks=pytest.mark.skipif(not _available(k), reason=f"{k.needs} absent"))
              for k in INDEX_KINDS.values() for storage in k.storages]  # fmt: skip


@pytest.fixture(scope="module", params=KIND_SPECS)
def original(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small map with coordinates, a removed place and enough places for upper levels."""
    kind, storage = request.param
    rng = np.random.default_rng(3)
    graph = INDEX_KINDS[kind].own({"M": 4, "ef_construction": 20})
    placemap = PlaceMap.create(DIM, "f" * 64, index=kind, storage=storage, **graph)
    records = [{"path": f"img{i}.jpg", "east": float(i), "north": 2.0 * i} for i in range(PLACES)]
    placemap.add(rng.standard_normal((PLACES, DIM)).astype(np.float32), records)
    placemap.remove([7])
    path = tmp_path_factory.mktemp("mapfuzz") / "places.vprmap"
    placemap.save(path)
    return path


def probe(path: Path) -> np.ndarray:
    """Everything a user does with a map, so that a bad one shows itself; every answer must
    be true to the map as loaded (a live place, its exact score, best first)."""
    loaded = PlaceMap.load(path)
    queries = np.random.default_rng(0).standard_normal((8, loaded.descriptor_dim))
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    ids, scores = loaded.search(queries, k=5)
    live = set(loaded.ids().tolist())
    for row, found in enumerate(ids):
        assert set(found.tolist()) <= live
        assert np.allclose(loaded.descriptors(found) @ queries[row], scores[row], atol=1e-3)
    loaded.query(queries, k=3)
    loaded.add(queries[:2])
    return ids


def load_or_refuse(path: Path) -> np.ndarray | None:
    try:
        return probe(path)
    except EdgeVPRError as exc:
        message = str(exc)
        assert "\n" not in message and message
        return None


@FUZZ
@given(data=st.data())
def test_any_flip_or_cut_is_refused_or_changes_nothing(
    original: Path, tmp_path: Path, data: st.DataObject
) -> None:
    content = bytearray(original.read_bytes())
    kind = data.draw(st.sampled_from(["flip", "cut", "append", "header"]))
    if kind == "cut":
        content = content[: data.draw(st.integers(0, len(content) - 1))]
    elif kind == "append":
        content += data.draw(st.binary(min_size=1, max_size=64))
    else:
        limit = HEADER.size - 1 if kind == "header" else len(content) - 1
        for _ in range(data.draw(st.integers(1, 4))):
            at = data.draw(st.integers(0, limit))
            content[at] ^= data.draw(st.integers(1, 255))
    mutated = tmp_path / "mutated.vprmap"
    mutated.write_bytes(bytes(content))
    found = load_or_refuse(mutated)
    if found is not None:  # loaded: then it must be the very same map
        assert bytes(content) == original.read_bytes()
        assert np.array_equal(found, probe(original))


def forge(original: Path, target: Path, edit_metadata=None, edit_index=None) -> None:
    """Rewrite ``original`` with its metadata and/or the bytes of its index sections edited
    (``edit_index(name, bytearray) -> bytes``) and every checksum valid."""
    mapped = MapFile(original)
    metadata = json.loads(json.dumps(mapped.metadata))
    sections = {n: np.array(a) for n, a in mapped.arrays().items()}
    del mapped
    if edit_metadata is not None:
        edit_metadata(metadata)
    if edit_index is not None:
        for name in [n for n in sections if n.startswith("index.")]:
            raw = edit_index(name, bytearray(sections[name].tobytes()))
            dtype = sections[name].dtype
            sections[name] = np.frombuffer(raw[: len(raw) // dtype.itemsize * dtype.itemsize],
                                           dtype).copy()  # fmt: skip
    write_sections(target, metadata, sections)


@FUZZ
@given(data=st.data())
def test_forged_index_bytes_never_crash_the_loader(
    original: Path, tmp_path: Path, data: st.DataObject
) -> None:
    target = data.draw(st.sampled_from(sorted(n for n in MapFile(original).sections
                                              if n.startswith("index."))))  # fmt: skip

    def edit(name: str, index: bytearray) -> bytes:
        if name != target or not index:
            return bytes(index)
        for _ in range(data.draw(st.integers(1, 6))):
            at = data.draw(st.integers(0, len(index) - 1))
            index[at] = data.draw(st.integers(0, 255))
        if data.draw(st.booleans()):
            index = index[: data.draw(st.integers(0, len(index)))]
        return bytes(index)

    forged = tmp_path / "forged.vprmap"
    forge(original, forged, edit_index=edit)
    load_or_refuse(forged)  # EdgeVPRError or a working map; anything else fails the test


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)
METADATA_KEYS = ["descriptor_dim", "index", "next_id", "fingerprint", "model", "zones", "format",
                 "places", "projection", "store", "rerank", "sources"]


@FUZZ
@given(data=st.data())
def test_forged_metadata_is_refused_or_gives_a_working_map(
    original: Path, tmp_path: Path, data: st.DataObject
) -> None:
    key = data.draw(st.sampled_from(METADATA_KEYS + ["params.M", "params.ef", "index.kind",
                                                     "index.storage"]))  # fmt: skip
    value = data.draw(JSON_VALUES)

    def edit(metadata: dict) -> None:
        if key.startswith("params."):
            metadata["index"]["params"][key.split(".")[1]] = value
        elif key.startswith("index."):
            metadata["index"][key.split(".")[1]] = value
        else:
            metadata[key] = value

    forged = tmp_path / "forged.vprmap"
    forge(original, forged, edit_metadata=edit)
    json.loads(json.dumps(value))  # the value itself is plain JSON
    load_or_refuse(forged)
