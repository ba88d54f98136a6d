"""``edgevpr index build`` for big maps: compressed maps from the command line, resuming an
interrupted build, geo tiles, and embedding on a local Ray cluster."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from edgevpr.data.synth import SynthConfig, generate
from edgevpr.runtime.embedder import Embedder
from edgevpr.runtime.placemap import PlaceMap
from edgevpr.runtime.placemap.build import resumable as mapbuild
from edgevpr.runtime.placemap.tiles import TiledMap

PLACES = 40




@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("buildset")
    generate(root, SynthConfig(seed=5, places=PLACES, val_places=0, train_places=0))
    return root / "images/test/database"


def test_a_compressed_map_from_the_command_line(cli,
    exported: dict[str, Path], images: Path, tmp_path: Path
) -> None:
    pytest.importorskip("faiss")
    out = tmp_path / "small.vprmap"
    code, stdout, err = cli("index", "build", exported["onnx"], images, "--out", out,
                            "--index", "faiss-ivf", "--storage", "sq8", "--pca", "32",
                            "--store", "f16", "-q")  # fmt: skip
    assert code == 0, err
    assert "faiss-ivf (sq8)" in stdout and not (tmp_path / "small.vprmap.partial").exists()
    code, stdout, _ = cli("index", "info", out, "--json")
    info = json.loads(stdout)
    assert (info["index"], info["projection"], info["descriptors_stored"]) == (
        "faiss-ivf (sq8)", "pca to 32", "f16")  # fmt: skip
    code, stdout, _ = cli("query", out, "--model", exported["onnx"],
                          sorted(images.iterdir())[3], "--json")  # fmt: skip
    assert code == 0 and json.loads(stdout)[0]["matches"][0]["path"].endswith(
        sorted(images.iterdir())[3].name)  # fmt: skip
    code, _, err = cli("index", "build", exported["onnx"], images, "--out", out,
                       "--whiten", "-q")  # fmt: skip
    assert code == 2 and "--whiten needs --pca" in err


def test_an_interrupted_build_resumes_with_what_it_had_embedded(cli,
    exported: dict[str, Path], images: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setattr(mapbuild, "CHUNK_IMAGES", 8)
    real_iter = Embedder.iter_paths
    seen = {"images": 0, "stop_at": 16}

    def counting(self, paths, **kwargs):
        if seen["stop_at"] is not None and seen["images"] >= seen["stop_at"]:
            raise KeyboardInterrupt  # the third chunk: the power goes out
        seen["images"] += len(paths)
        return real_iter(self, paths, **kwargs)

    monkeypatch.setattr(Embedder, "iter_paths", counting)
    out = tmp_path / "route.vprmap"
    code, _, _ = cli("index", "build", exported["onnx"], images, "--out", out, "-q")
    assert code == 130 and not out.exists()
    assert len(list((tmp_path / "route.vprmap.partial").glob("chunk-*.npz"))) == 2
    seen.update(images=0, stop_at=None)
    code, _, err = cli("index", "build", exported["onnx"], images, "--out", out, "-q")
    assert code == 0 and "resuming: 16 of 40 images" in err
    assert seen["images"] == PLACES - 16 and not (tmp_path / "route.vprmap.partial").exists()
    cli("index", "build", exported["onnx"], images, "--out", tmp_path / "once.vprmap", "-q")
    resumed, once = PlaceMap.load(out), PlaceMap.load(tmp_path / "once.vprmap")
    assert [r.path for r in resumed.records()] == [r.path for r in once.records()]
    assert np.array_equal(resumed.descriptors(resumed.ids()), once.descriptors(once.ids()))


def test_a_tiled_map_from_the_command_line(cli,
    exported: dict[str, Path], images: Path, tmp_path: Path
) -> None:
    out = tmp_path / "city.vprtiles"
    code, stdout, err = cli("index", "build", exported["onnx"], images, "--out", out,
                            "--tile-size", "400", "-q")  # fmt: skip
    assert code == 0, err and "tiles of 400 m" in stdout
    tiled = TiledMap.load(out)
    assert len(tiled) == PLACES and len(tiled.tiles) >= 2
    query = sorted(images.iterdir())[10]
    east, north = (float(v) for v in query.name.split("@")[1:3])
    code, stdout, err = cli("query", out, "--model", exported["onnx"], query,
                            "--prior", f"{east},{north},100", "--json")  # fmt: skip
    assert code == 0, err
    assert json.loads(stdout)[0]["matches"][0]["path"].endswith(query.name)
    code, _, err = cli("query", out, "--model", exported["onnx"], query)
    assert code == 2 and "prior" in err


@pytest.mark.slow  # starts a local Ray cluster
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray absent")
def test_a_build_on_a_local_ray_cluster_gives_the_same_descriptors(cli,
    exported: dict[str, Path], images: Path, tmp_path: Path
) -> None:
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        code, _, err = cli("index", "build", exported["onnx"], images, "--out",
                           tmp_path / "ray.vprmap", "--ray", "local", "--ray-workers", "2",
                           "-q")  # fmt: skip
    finally:
        ray.shutdown()
    assert code == 0, err
    cli("index", "build", exported["onnx"], images, "--out", tmp_path / "here.vprmap", "-q")
    on_ray, here = PlaceMap.load(tmp_path / "ray.vprmap"), PlaceMap.load(tmp_path / "here.vprmap")
    assert [r.path for r in on_ray.records()] == [r.path for r in here.records()]
    assert np.array_equal(on_ray.descriptors(on_ray.ids()), here.descriptors(here.ids()))
