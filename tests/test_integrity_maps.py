"""A map never answers from bytes that changed after they were checked, never loses a
command's work to another, and never trusts what it cannot check: files changed under a
reader, stored descriptors damaged or forged, index places that disagree with the records,
concurrent commands on one map, tampered build chunks, forged tiles, memory bombs."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edgevpr.core.errors import EdgeVPRError
from edgevpr.runtime.placemap import PlaceMap, PlaceRecord
from edgevpr.runtime.placemap.fileformat.container import MapFile, write_sections
from edgevpr.runtime.placemap.fileformat.filerows import row_checks
from edgevpr.runtime.placemap.kinds import INDEX_KINDS
from edgevpr.runtime.placemap.projection import Projection

DIM = 24
PLACES = 300


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def descriptors(seed: int, n: int = PLACES) -> np.ndarray:
    return unit(np.random.default_rng(seed).standard_normal((n, DIM)))


def made(seed: int = 1, kind: str = "hnswlib", storage: str | None = None,
         store: str = "f32") -> PlaceMap:  # fmt: skip
    vectors = descriptors(seed)
    projection = Projection.fit(vectors, 12) if kind != "hnswlib" else None
    placemap = PlaceMap.create(DIM, "fp", index=kind, storage=storage, projection=projection,
                               store=store)  # fmt: skip
    placemap.add(vectors, [PlaceRecord(path=f"{seed}-{i}.jpg", east=float(i), north=0.0)
                           for i in range(PLACES)])  # fmt: skip
    return placemap


def answers(placemap: PlaceMap, seed: int = 9) -> tuple[np.ndarray, np.ndarray]:
    return placemap.search(descriptors(seed, 20), k=5)


def forged(source: Path, target: Path, edit) -> None:
    """``source`` rewritten with its arrays edited and every checksum valid again."""
    mapped = MapFile(source)
    metadata = json.loads(json.dumps(mapped.metadata))
    arrays = {n: np.array(a) for n, a in mapped.arrays().items()}
    del mapped
    edit(metadata, arrays)
    write_sections(target, metadata, arrays)


def section(path: Path, name: str):
    return next(e for e in MapFile(path).entries if e.name == name)


def write_at(path: Path, offset: int, data: bytes) -> None:
    """Write into the file itself (same inode), as a careless tool or a torn copy would."""
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(data)


# ------------------------------------------------------------------ a file changed under a reader
def test_writes_into_small_sections_do_not_reach_a_loaded_map(tmp_path: Path) -> None:
    path = tmp_path / "m.vprmap"
    made().save(path)
    loaded = PlaceMap.load(path)
    before, records = answers(loaded), loaded.records()
    entries = {e.name: e for e in MapFile(path).entries}
    for name in ("records.floats", "records.path.blob", "index.hnsw.data_level0"):
        write_at(path, entries[name].offset, b"\xff" * min(entries[name].length, 4096))
    assert all(np.array_equal(a, b) for a, b in zip(answers(loaded), before, strict=True))
    assert loaded.records() == records  # read into the process at load, checked there


def test_descriptors_rewritten_under_a_reader_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.vprmap"
    made().save(path)
    loaded = PlaceMap.load(path)
    entry = section(path, "vectors")
    write_at(path, entry.offset, descriptors(5).tobytes()[: entry.length])
    with pytest.raises(EdgeVPRError, match="changed on disk") as caught:
        answers(loaded)
    assert "\n" not in str(caught.value)


def test_a_map_copied_over_a_loaded_one_is_refused_or_changes_nothing(tmp_path: Path) -> None:
    path, other = tmp_path / "m.vprmap", tmp_path / "other.vprmap"
    made(1).save(path)
    made(2).save(other)
    loaded = PlaceMap.load(path)
    before = answers(loaded)
    with open(other, "rb") as src, open(path, "r+b") as dst:  # cp: same inode, new bytes
        dst.truncate(0)
        shutil.copyfileobj(src, dst)
    for seed in range(9, 14):
        try:
            found = answers(loaded, seed)
        except EdgeVPRError as exc:
            assert "changed on disk" in str(exc)
            continue
        assert seed != 9 or np.array_equal(found[0], before[0])
        assert all(r.path.startswith("1-") for r in loaded.records())


def test_a_file_truncated_under_a_reader_is_one_line_never_sigbus(tmp_path: Path) -> None:
    path = tmp_path / "m.vprmap"
    made(kind="faiss-ivf").save(path)
    script = f"""
import os, numpy as np
from edgevpr.core.errors import EdgeVPRError
from edgevpr.runtime.placemap import PlaceMap
placemap = PlaceMap.load({str(path)!r})
os.truncate({str(path)!r}, 8192)
try:
    placemap.search(np.ones((3, {DIM}), np.float32), k=5)
    print("answered")
except EdgeVPRError as exc:
    print("refused:", exc)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr  # a SIGBUS would be -7
    assert done.stdout.startswith("refused:") and "changed on disk" in done.stdout


def test_a_rename_over_the_map_leaves_its_reader_on_the_old_one(tmp_path: Path) -> None:
    path = tmp_path / "m.vprmap"
    made(1).save(path)
    loaded = PlaceMap.load(path)
    before = answers(loaded)
    made(2).save(tmp_path / "new.vprmap")
    os.replace(tmp_path / "new.vprmap", path)
    assert all(np.array_equal(a, b) for a, b in zip(answers(loaded), before, strict=True))


# ------------------------------------------------------------------ stored descriptors
def test_a_damaged_row_is_refused_when_read_and_by_index_verify(tmp_path: Path, cli) -> None:
    path = tmp_path / "m.vprmap"
    placemap = made()
    placemap.save(path)
    verified = cli("index", "verify", path)
    assert verified.code == 0 and "ok:" in verified.out
    entry = section(path, "vectors")
    with open(path, "r+b") as fh:  # one bit of row 7
        fh.seek(entry.offset + 7 * DIM * 4 + 5)
        byte = fh.read(1)[0]
        fh.seek(-1, 1)
        fh.write(bytes([byte ^ 0x10]))
    loaded = PlaceMap.load(path)  # the large section is checked a row at a time, as read
    assert np.allclose(loaded.descriptors([3]), placemap.descriptors([3]))
    with pytest.raises(EdgeVPRError, match="row 7 fails its check"):
        loaded.descriptors([7])
    with pytest.raises(EdgeVPRError, match="row 7 fails its check"):
        loaded.search(placemap.descriptors([7]), k=3)
    with pytest.raises(EdgeVPRError):
        loaded.verify()
    verified = cli("index", "verify", path)
    assert verified.code == 2
    err = verified.err.strip()
    assert err.count("\n") == 0 and "row 7" in err


@pytest.mark.parametrize("value", [np.nan, np.inf, 1e30])
def test_a_forged_row_with_valid_checks_is_refused(tmp_path: Path, value: float) -> None:
    """One huge row would win every query; NaN would poison every score."""
    path = tmp_path / "m.vprmap"
    made().save(path)

    def edit(_: dict, arrays: dict) -> None:
        arrays["vectors"][11, 0] = value
        arrays["vectors.check"] = row_checks(arrays["vectors"], np.arange(PLACES))

    forged(path, tmp_path / "forged.vprmap", edit)
    loaded = PlaceMap.load(tmp_path / "forged.vprmap")
    with pytest.raises(EdgeVPRError, match="row 11 is not a unit vector"):
        loaded.descriptors([11])
    with pytest.raises(EdgeVPRError, match="not a unit vector"):
        loaded.verify()


def test_a_map_without_row_checks_is_verified_whole_on_load(tmp_path: Path) -> None:
    """Maps saved before row checks existed: their descriptors' checksum on every load."""
    path = tmp_path / "m.vprmap"
    placemap = made()
    placemap.save(path)
    forged(path, tmp_path / "old.vprmap", lambda _, arrays: arrays.pop("vectors.check"))
    old = PlaceMap.load(tmp_path / "old.vprmap")
    assert np.array_equal(answers(old)[0], answers(placemap)[0])
    old.save(tmp_path / "again.vprmap")  # saving writes the checks
    assert "vectors.check" in MapFile(tmp_path / "again.vprmap").sections or True
    assert any(e.name == "vectors.check" for e in MapFile(tmp_path / "again.vprmap").entries)
    entry = section(tmp_path / "old.vprmap", "vectors")
    write_at(tmp_path / "old.vprmap", entry.offset + 40, b"\x01")
    with pytest.raises(EdgeVPRError, match="checksum mismatch in vectors"):
        PlaceMap.load(tmp_path / "old.vprmap")


KINDS = [pytest.param(k.name, id=k.name, marks=pytest.mark.skipif(
    k.needs is not None and __import__("importlib").util.find_spec(k.needs) is None,
    reason=f"{k.needs} absent")) for k in INDEX_KINDS.values()]  # fmt: skip


@pytest.mark.parametrize("kind", KINDS)
def test_an_index_holding_other_places_than_the_records_is_refused(
    tmp_path: Path, kind: str
) -> None:
    """The index is checked against the records on load (the records renumbered, a place
    dropped from them): otherwise a query could name a place the map does not hold."""
    path = tmp_path / "m.vprmap"
    made(kind=kind).save(path)

    def renumbered(metadata: dict, arrays: dict) -> None:
        arrays["records.ids"] = arrays["records.ids"] + 1
        metadata["next_id"] += 1

    forged(path, tmp_path / "renumbered.vprmap", renumbered)
    with pytest.raises(EdgeVPRError, match="other places than its records"):
        PlaceMap.load(tmp_path / "renumbered.vprmap")


# ------------------------------------------------------------------ two writers
@contextlib.contextmanager
def held_elsewhere(path: Path) -> Iterator[None]:
    """``path``'s lock held by another process for the block."""
    script = ("import sys, time\nfrom edgevpr.core.files import exclusive\n"
              f"with exclusive({str(path)!r}):\n    print('held', flush=True)\n"
              "    sys.stdin.readline()\n")  # fmt: skip
    holder = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        yield
    finally:
        holder.communicate("done\n", timeout=60)

def test_saving_over_a_map_another_command_saved_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.vprmap"
    made().save(path)
    first, second = PlaceMap.load(path), PlaceMap.load(path)
    first.add(descriptors(3, 5))
    first.save(path)
    second.add(descriptors(4, 7))
    with pytest.raises(EdgeVPRError, match="changed on disk since this map was loaded"):
        second.save(path)
    assert len(PlaceMap.load(path)) == PLACES + 5  # the first command's work is kept
    first.add(descriptors(5, 2))
    first.save(path)  # its own save does not count as another's
    assert len(PlaceMap.load(path)) == PLACES + 7


def test_a_command_on_a_locked_map_is_refused_in_one_line(
    tmp_path: Path, exported: dict[str, Path], cli
) -> None:
    images = tmp_path / "images"
    images.mkdir()
    import cv2

    for i in range(3):
        cv2.imwrite(str(images / f"{i}.png"), np.full((64, 64, 3), 40 * i, np.uint8))
    path = tmp_path / "m.vprmap"
    assert cli("index", "build", exported["onnx"], images, "--out", path, "--index",
               "hnswlib", "-q").code == 0  # fmt: skip
    before = path.read_bytes()
    with held_elsewhere(path):
        for args in (("index", "add", path, images / "0.png", "--model", exported["onnx"]),
                     ("index", "remove", path, "0"), ("index", "compact", path),
                     ("index", "build", exported["onnx"], images, "--out", path)):  # fmt: skip
            refused = cli(*args)
            assert refused.code == 2, args
            err = refused.err.strip()
            assert err.count("\n") == 0 and "being changed by another edgevpr command" in err
    assert path.read_bytes() == before and not (tmp_path / "m.vprmap.partial").exists()


@pytest.mark.slow
def test_concurrent_adds_never_lose_a_run_that_succeeded(
    tmp_path: Path, exported: dict[str, Path], cli
) -> None:
    import cv2

    path = tmp_path / "m.vprmap"
    placemap = PlaceMap.create(512, "fp")
    del placemap
    folders = []
    for run in range(2):
        folder = tmp_path / f"run{run}"
        folder.mkdir()
        for i in range(40):
            rng = np.random.default_rng(100 * run + i)
            cv2.imwrite(str(folder / f"{run}-{i}.png"), rng.integers(0, 255, (64, 64, 3),
                                                                     np.uint8))  # fmt: skip
        folders.append(folder)
    assert cli("index", "build", exported["onnx"], folders[0], "--out", path, "-q").code == 0
    extra = []
    for run in range(2):
        folder = tmp_path / f"more{run}"
        shutil.copytree(folders[run], folder)
        for p in folder.iterdir():
            p.rename(folder / f"more-{p.name}")
        extra.append(folder)
    command = [sys.executable, "-m", "edgevpr.cli", "index", "add", str(path), "--model",
               str(exported["onnx"]), "-q"]  # fmt: skip
    runs = [subprocess.Popen([*command, str(f)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for f in extra]  # fmt: skip
    results = [r.communicate(timeout=300) + (r.returncode,) for r in runs]
    held = {Path(r.path).name for r in PlaceMap.load(path).records()}
    for (_, err, code), folder in zip(results, extra, strict=True):
        names = {p.name for p in folder.iterdir()}
        if code == 0:
            assert names <= held, "a run said it added places the map does not hold"
        else:
            assert err.strip().count("\n") == 0 and "another edgevpr command" in err


# ------------------------------------------------------------------ the build's work folder
@pytest.fixture
def interrupted(tmp_path: Path, exported: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                cli) -> dict:  # fmt: skip
    """A build of 12 images stopped after two chunks of 4."""
    import cv2

    from edgevpr.runtime.embedder import Embedder
    from edgevpr.runtime.placemap.build import resumable as mapbuild

    images = tmp_path / "images"
    images.mkdir()
    for i in range(12):
        rng = np.random.default_rng(i)
        cv2.imwrite(str(images / f"{i:02d}.png"), rng.integers(0, 255, (64, 64, 3), np.uint8))
    monkeypatch.setattr(mapbuild, "CHUNK_IMAGES", 4)
    real = Embedder.iter_paths
    seen = {"n": 0}

    def stopping(self, paths, **kwargs):
        if seen["n"] >= 8:
            raise KeyboardInterrupt
        seen["n"] += len(paths)
        return real(self, paths, **kwargs)

    monkeypatch.setattr(Embedder, "iter_paths", stopping)
    out = tmp_path / "m.vprmap"
    assert cli("index", "build", exported["onnx"], images, "--out", out, "-q").code == 130
    monkeypatch.setattr(Embedder, "iter_paths", real)
    partial = tmp_path / "m.vprmap.partial"
    return {"images": images, "out": out, "partial": partial, "onnx": exported["onnx"],
            "chunks": sorted(partial.glob("chunk-*.npz"))}  # fmt: skip


def resume(setup: dict, cli, *more: str) -> tuple[int, str]:
    result = cli("index", "build", setup["onnx"], setup["images"], "--out", setup["out"], "-q",
                 *more)  # fmt: skip
    return result.code, result.err.strip()


def rewrite_chunk(chunk: Path, **arrays: np.ndarray) -> Path:
    """The chunk with some arrays replaced, renamed by its new checksum as a build would."""
    import hashlib
    import io

    with np.load(chunk) as data:
        parts = {name: data[name] for name in data.files}
    parts.update(arrays)
    buffer = io.BytesIO()
    np.savez(buffer, **parts)
    name = chunk.name.rsplit("-", 1)[0] + f"-{hashlib.sha256(buffer.getvalue()).hexdigest()}.npz"
    chunk.unlink()
    (chunk.parent / name).write_bytes(buffer.getvalue())
    return chunk.parent / name


def test_a_changed_chunk_is_refused_by_name(interrupted: dict, cli) -> None:
    chunk = interrupted["chunks"][1]
    data = bytearray(chunk.read_bytes())
    data[-30] ^= 0xFF
    chunk.write_bytes(bytes(data))
    code, err = resume(interrupted, cli)
    assert code == 2 and chunk.name in err and "changed after it was written" in err
    assert not interrupted["out"].exists()


def test_a_duplicated_chunk_is_refused(interrupted: dict, cli) -> None:
    first = interrupted["chunks"][0]
    copy = rewrite_chunk(Path(shutil.copy(first, first.with_name("chunk-9999999999-x.npz"))))
    code, err = resume(interrupted, cli)
    assert code == 2 and "in another chunk" in err and copy.name in err


@pytest.mark.parametrize("edit", ["ok-as-ints", "nan", "symlink"])
def test_malformed_chunks_are_refused_by_name(interrupted: dict, cli, edit: str
                                              ) -> None:  # fmt: skip
    chunk = interrupted["chunks"][0]
    with np.load(chunk) as data:
        ok, descriptors = data["ok"], data["descriptors"]
    if edit == "ok-as-ints":
        chunk = rewrite_chunk(chunk, ok=ok.astype(np.int64))
    elif edit == "nan":
        descriptors[0, 0] = np.nan
        chunk = rewrite_chunk(chunk, descriptors=descriptors)
    else:
        outside = chunk.parent.parent / chunk.name
        chunk.rename(outside)
        chunk.symlink_to(outside)
    code, err = resume(interrupted, cli)
    assert code == 2 and chunk.name in err and err.count("\n") == 0


def test_fresh_clears_a_work_folder_left_half_removed(interrupted: dict, cli) -> None:
    (interrupted["partial"] / "manifest.json").unlink()  # an old build killed while cleaning up
    code, err = resume(interrupted, cli)
    assert code == 2 and "--fresh" in err
    code, err = resume(interrupted, cli, "--fresh")
    assert code == 0, err
    assert len(PlaceMap.load(interrupted["out"])) == 12
    assert not interrupted["partial"].exists()


def test_fresh_never_removes_a_folder_of_other_files(interrupted: dict, cli) -> None:
    (interrupted["partial"] / "notes.txt").write_text("mine")
    code, err = resume(interrupted, cli, "--fresh")
    assert code == 2 and "notes.txt" in err
    assert (interrupted["partial"] / "notes.txt").read_text() == "mine"


# ------------------------------------------------------------------ memory bombs and forged shapes
def header_forged(source: Path, target: Path, header: bytes) -> None:
    import hashlib

    from edgevpr.runtime.placemap.fileformat.container import HEADER, MAGIC

    target.write_bytes(HEADER.pack(MAGIC, 2, len(header), hashlib.sha256(header).digest())
                       + header + source.read_bytes()[HEADER.size + 10:])  # fmt: skip


@pytest.mark.parametrize("header", [
    b"[" * 100_000 + b"]" * 100_000,
    b'{"sections": [' + b"[]," * 300_000 + b"[]]}",
    b'{"sections": [{"name": "x", "dtype": "uint8", "shape": [1180591620717411303424], '
    b'"offset": 4096, "length": 1, "sha256": "0"}]}',
    b'{"sections": [{"name": "x", "dtype": "uint8", "shape": [4294967296, 4294967296], '
    b'"offset": 4096, "length": 1, "sha256": "0"}]}',
], ids=["deep", "wide", "shape-2-70", "shape-2-64"])  # fmt: skip
def test_forged_headers_are_one_line(tmp_path: Path, header: bytes) -> None:
    made().save(tmp_path / "m.vprmap")
    header_forged(tmp_path / "m.vprmap", tmp_path / "bomb.vprmap", header)
    with pytest.raises(EdgeVPRError) as caught:
        PlaceMap.load(tmp_path / "bomb.vprmap")
    assert "\n" not in str(caught.value)


def test_a_header_claiming_a_gigabyte_is_refused_before_reading(tmp_path: Path) -> None:
    from edgevpr.runtime.placemap.fileformat.container import HEADER, MAGIC

    (tmp_path / "bomb.vprmap").write_bytes(HEADER.pack(MAGIC, 2, 1 << 30, b"\0" * 32) + b"{}")
    with pytest.raises(EdgeVPRError, match="a header of 1073741824 bytes"):
        PlaceMap.load(tmp_path / "bomb.vprmap")


def test_a_forged_list_count_allocates_nothing(tmp_path: Path) -> None:
    """A 100 kB faiss-ivf map claiming 2^24 lists took 2.8 GB before it was refused."""
    path = tmp_path / "m.vprmap"
    made(kind="faiss-ivf").save(path)

    def many_lists(_: dict, arrays: dict) -> None:
        raw = bytearray(arrays["index.index"].tobytes())
        offset = 4 + 4 + 8 + 16 + 1 + 4  # fourcc, d, ntotal, two dummies, trained, metric
        raw[offset : offset + 8] = (1 << 24).to_bytes(8, "little")
        arrays["index.index"] = np.frombuffer(bytes(raw), np.uint8)

    forged(path, tmp_path / "bomb.vprmap", many_lists)
    script = f"""
import resource
from edgevpr.core.errors import EdgeVPRError
from edgevpr.runtime.placemap import PlaceMap
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    PlaceMap.load({str(tmp_path / "bomb.vprmap")!r})
    print("loaded")
except EdgeVPRError as exc:
    print("refused", (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024, exc)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    word, grown_mb, *_ = done.stdout.split()
    assert word == "refused" and int(grown_mb) < 100, done.stdout + done.stderr
