"""The runtime with a real exported model: embedder parity with PyTorch, torch-free operation,
retrieval on the real sets, the recognizer, and the ``index`` / ``query`` commands.

One small pretrained model (EfficientNet-Lite0 + MixVPR 512 at 64x64: the real ImageNet
weights, cheap enough for two CPU cores) is exported once per session (conftest.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgevpr.cli import main as edgevpr_main
from edgevpr.core.errors import EdgeVPRError
from edgevpr.core.geo import GeoPrior
from edgevpr.core.images import list_images, read_image
from edgevpr.core.preprocess import preprocess, resize_rgb
from edgevpr.runtime.embedder import Embedder
from edgevpr.runtime.placemap import PlaceMap
from edgevpr.runtime.recognizer import Recognizer

REPO = Path(__file__).resolve().parents[1]


def torch_descriptors(model, images: list[np.ndarray], spec) -> np.ndarray:
    import torch

    out = []
    with torch.inference_mode():
        for start in range(0, len(images), 32):
            batch = torch.from_numpy(preprocess(images[start : start + 32], spec))
            out.append(model(batch).numpy())
    return np.concatenate(out)


def textures(count: int, seed: int = 0) -> list[np.ndarray]:
    """Distinct smooth random scenes (120 x 160 RGB), one per place."""
    rng = np.random.default_rng(seed)
    return [
        cv2.resize(
            rng.integers(0, 256, (6, 8, 3), dtype=np.uint8),
            (160, 120),
            interpolation=cv2.INTER_CUBIC,
        )
        for _ in range(count)
    ]


def revisit(image: np.ndarray, seed: int) -> np.ndarray:
    """The same place seen again: brighter and noisier."""
    rng = np.random.default_rng(seed)
    noisy = image.astype(np.int16) + 12 + rng.integers(-10, 11, image.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def write_place_folder(folder: Path, images: list[np.ndarray]) -> list[Path]:
    """Images named in the evaluation layout: place i at east 0, north 10 i."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(images):
        path = folder / f"@0@{10.0 * i:.2f}@@@@@{i:07d}@@@@@@@@.png"
        cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    root = tmp_path_factory.mktemp("places")
    scenes = textures(24)
    database = write_place_folder(root / "database", scenes)
    queries = write_place_folder(root / "queries", [revisit(s, i) for i, s in enumerate(scenes)])
    return {"database": database, "queries": queries}


# ------------------------------------------------------------------ embedder
def test_embedder_reads_everything_from_the_model(embedder: Embedder, torch_model) -> None:
    assert embedder.fingerprint == torch_model.sha256
    assert embedder.descriptor_dim == 512
    assert embedder.spec == torch_model.config.preprocess
    assert "CPUExecutionProvider" in embedder.backend
    assert embedder.model_summary()["backbone"] == "efficientnet_lite0"


@pytest.fixture(scope="module")
def corridor(shared_data: Path, embedder: Embedder, torch_model) -> dict:
    """The corridor test split with PyTorch and runtime descriptors of every image."""
    from edgevpr.data.layout import read_split

    split = read_split(shared_data / "corridor", "test")
    paths = list(split.database.paths + split.queries.paths)
    reference = torch_descriptors(torch_model.model, [read_image(p) for p in paths], embedder.spec)
    runtime = embedder.embed_paths(paths)
    n = len(split.database)
    return {
        "split": split,
        "torch": (reference[:n], reference[n:]),
        "runtime": (runtime[:n], runtime[n:]),
    }


def assert_parity(ours: np.ndarray, reference: np.ndarray) -> None:
    cosine = np.sum(ours * reference, axis=1) / (
        np.linalg.norm(ours, axis=1) * np.linalg.norm(reference, axis=1)
    )
    assert cosine.min() >= 0.9999
    assert np.abs(ours - reference).max() < 1e-4


@pytest.mark.slow
def test_onnx_descriptors_match_pytorch_on_real_images(
    shared_data: Path, embedder: Embedder, torch_model, corridor: dict
) -> None:
    assert_parity(np.concatenate(corridor["runtime"]), np.concatenate(corridor["torch"]))
    nordland = list_images(shared_data / "nordland64/images/test/queries")[::20]  # 59 images
    reference = torch_descriptors(
        torch_model.model, [read_image(p) for p in nordland], embedder.spec
    )
    assert_parity(embedder.embed_paths(nordland), reference)


def test_paths_images_and_batches_give_the_same_descriptors(
    exported: dict[str, Path], places: dict[str, list[Path]]
) -> None:
    paths = places["database"][:11]
    images = [read_image(p) for p in paths]
    by_path = Embedder(exported["onnx"], batch_size=4).embed_paths(paths)
    one_by_one = Embedder(exported["onnx"], batch_size=1, threads=1)
    assert np.allclose(one_by_one.embed_images(images), by_path, atol=1e-5)
    batch = preprocess(images, one_by_one.spec)
    assert np.allclose(
        Embedder(exported["onnx"], batch_size=16).embed_batch(batch), by_path, atol=1e-5
    )
    assert np.allclose(one_by_one.embed_image(images[3]), by_path[3], atol=1e-5)
    assert by_path.dtype == np.float32 and by_path.shape == (11, 512)


def test_images_of_any_size_are_resized(embedder: Embedder) -> None:
    rng = np.random.default_rng(3)
    images = [
        rng.integers(0, 256, shape, dtype=np.uint8)
        for shape in [(17, 301, 3), (64, 64, 3), (480, 640, 3)]
    ]
    out = embedder.embed_images(images)
    resized = embedder.embed_images([resize_rgb(img, embedder.spec) for img in images])
    assert np.array_equal(out, resized)
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-4)


@pytest.mark.parametrize(
    "bad, message",
    [
        (
            np.zeros((2, 3, 32, 32), np.float32),
            r"shape \(2, 3, 32, 32\); this model takes N x 3 x 64 x 64",
        ),
        (np.zeros((3, 64, 64), np.float32), r"shape \(3, 64, 64\)"),
        (np.zeros((1, 3, 64, 64), np.int32), "must be float32"),
    ],
)
def test_wrong_preprocessed_batch_is_a_one_line_error(
    embedder: Embedder, bad: np.ndarray, message: str
) -> None:
    with pytest.raises(EdgeVPRError, match=message) as caught:
        embedder.embed_batch(bad)
    assert "\n" not in str(caught.value)


def test_non_rgb_images_are_refused(embedder: Embedder) -> None:
    with pytest.raises(EdgeVPRError, match=r"image 1: encoding 'rgb8' needs H x W x 3 uint8"):
        embedder.embed_images([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8)])
    with pytest.raises(EdgeVPRError, match=r"image 0: .* got \(8, 8, 3\) float32"):
        embedder.embed_images([np.zeros((8, 8, 3), np.float32)])


def test_unreadable_image_names_the_file(
    embedder: Embedder, tmp_path: Path, places: dict[str, list[Path]]
) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(EdgeVPRError, match=f"cannot read image {broken}"):
        embedder.embed_paths([places["database"][0], broken])
    skipped: list[Path] = []
    batches = list(
        embedder.iter_paths(
            [broken, places["database"][0]], on_unreadable=lambda p, e: skipped.append(p)
        )
    )
    assert skipped == [broken] and batches[0][0] == [places["database"][0]]


def test_execution_providers_can_be_chosen(exported: dict[str, Path]) -> None:
    import onnxruntime as ort

    assert (
        "CPUExecutionProvider"
        in Embedder(exported["onnx"], providers=["CPUExecutionProvider"]).backend
    )
    with pytest.raises(EdgeVPRError, match="not available in this onnxruntime"):
        Embedder(exported["onnx"], providers=["nonsense"])
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(
            EdgeVPRError, match="CUDAExecutionProvider is not available.*onnxruntime-gpu"
        ):
            Embedder(exported["onnx"], providers=["cuda"])


def test_broken_and_foreign_model_files(tmp_path: Path, exported: dict[str, Path]) -> None:
    import onnx

    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(exported["onnx"].read_bytes()[:5000])
    with pytest.raises(EdgeVPRError, match=f"cannot load ONNX model {truncated}"):
        Embedder(truncated)
    bare = onnx.load(str(exported["onnx"]))
    del bare.metadata_props[:]
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    with pytest.raises(EdgeVPRError, match="carries no edgevpr metadata"):
        Embedder(tmp_path / "bare.onnx")
    with pytest.raises(EdgeVPRError, match="export a checkpoint with 'edgevpr export'"):
        Embedder(exported["checkpoint"])
    with pytest.raises(EdgeVPRError, match="does not exist"):
        Embedder(tmp_path / "missing.onnx")


def test_concurrent_embedding_equals_serial(
    embedder: Embedder, places: dict[str, list[Path]]
) -> None:
    images = [read_image(p) for p in places["queries"]]
    serial = embedder.embed_images(images)
    barrier = threading.Barrier(4)

    def work(offset: int) -> np.ndarray:
        barrier.wait()
        order = np.roll(np.arange(len(images)), offset * 5)
        out = np.empty_like(serial)
        for start in range(0, len(order), 3):
            rows = order[start : start + 3]
            out[rows] = embedder.embed_images([images[i] for i in rows])
        return out

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(work, range(4)))
    assert all(np.allclose(r, serial, atol=1e-5) for r in results)


# ------------------------------------------------------------------ torch-free
TORCH_FREE_SCRIPT = """
import json, sys
sys.modules["torch"] = None          # "import torch" now raises ImportError
sys.modules["torchvision"] = None
sys.modules["onnx"] = None           # not a runtime dependency either
from pathlib import Path
import edgevpr.core.preprocess   # what training imports: must stay light
assert "onnxruntime" not in sys.modules and "hnswlib" not in sys.modules
import edgevpr.runtime.commands.query, edgevpr.runtime.commands.index, edgevpr.runtime.describe
from edgevpr.runtime import Embedder, PlaceMap, Recognizer
from edgevpr.cli import main

model, database, queries, out = (Path(a) for a in sys.argv[1:5])
embedder = Embedder(model)
paths = sorted(database.iterdir())
placemap = PlaceMap.create(embedder.descriptor_dim, embedder.fingerprint)
placemap.add(embedder.embed_paths(paths))
placemap.save(out / "api.vprmap")
recognizer = Recognizer(embedder, PlaceMap.load(out / "api.vprmap"))
best = [r.best.id for r in recognizer.recognize_many(sorted(queries.iterdir()), k=3)]
info = edgevpr.runtime.describe.describe_artifact(model)
for argv in (["index", "build", str(model), str(database), "--out", str(out / "cli.vprmap"), "-q"],
             ["query", str(out / "cli.vprmap"), "--model", str(model), str(queries), "--json"]):
    try:
        main(argv)
    except SystemExit as exc:
        assert exc.code == 0, exc.code
assert sys.modules.get("torch") is None and sys.modules.get("onnx") is None
print(json.dumps({"best": best, "opset": info["opset"]}))
"""


def test_runtime_runs_where_torch_cannot_be_imported(
    exported: dict[str, Path], places: dict[str, list[Path]], tmp_path: Path
) -> None:
    script = tmp_path / "torch_free.py"
    script.write_text(TORCH_FREE_SCRIPT)
    database, queries = places["database"][0].parent, places["queries"][0].parent
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [
            sys.executable,
            str(script),
            str(exported["onnx"]),
            str(database),
            str(queries),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stdout.strip().splitlines() if not line.startswith("wrote ")]
    cli_results = json.loads("\n".join(lines[:-1]))
    summary = json.loads(lines[-1])
    assert summary["opset"] == 18
    assert np.mean(np.array(summary["best"]) == np.arange(24)) >= 0.9
    assert [r["best"]["id"] for r in cli_results] == summary["best"]


# ------------------------------------------------------------------ real sets
@pytest.mark.parametrize(
    "dataset", ["corridor", pytest.param("nordland64", marks=pytest.mark.slow)]
)
def test_onnx_and_hnswlib_keep_exact_search_recall(
    shared_data: Path, embedder: Embedder, dataset: str
) -> None:
    from edgevpr.data.layout import read_split
    from edgevpr.eval.recall import recall_at_n

    split = read_split(shared_data / dataset, "test")
    database = embedder.embed_paths(list(split.database.paths))
    queries = embedder.embed_paths(list(split.queries.paths))
    positives = split.positives(25.0)
    exact = np.argmax(queries @ database.T, axis=1)
    placemap = PlaceMap.create(embedder.descriptor_dim, embedder.fingerprint)
    placemap.add(database)
    ids, _ = placemap.search(queries, k=1)
    agreement = np.mean(ids[:, 0] == exact)
    hnsw_recall = recall_at_n(ids, positives, (1,)).values[1]
    exact_recall = recall_at_n(exact[:, None], positives, (1,)).values[1]
    assert agreement >= 0.99, f"top-1 agreement {agreement:.4f}"
    assert abs(hnsw_recall - exact_recall) <= 0.5, (hnsw_recall, exact_recall)

    serial = [placemap.query(q, k=5)[0].ids.tolist() for q in queries[:200]]
    with ThreadPoolExecutor(8) as pool:
        parallel = list(pool.map(lambda q: placemap.query(q, k=5)[0].ids.tolist(), queries[:200]))
    assert parallel == serial


@pytest.mark.slow
def test_pytorch_exact_recall_equals_runtime_recall_on_corridor(
    embedder: Embedder, corridor: dict
) -> None:
    """What `edgevpr eval` measures on the checkpoint (PyTorch, exact search) is what the
    runtime (ONNX Runtime, hnswlib at default settings) delivers."""
    from edgevpr.eval.recall import recall_at_n

    ref_db, ref_q = corridor["torch"]
    torch_top1 = np.argmax(ref_q @ ref_db.T, axis=1)[:, None]
    database, queries = corridor["runtime"]
    placemap = PlaceMap.create(embedder.descriptor_dim, embedder.fingerprint)
    placemap.add(database)
    ids, _ = placemap.search(queries, k=1)
    positives = corridor["split"].positives(25.0)
    torch_recall = recall_at_n(torch_top1, positives, (1,)).values[1]
    runtime_recall = recall_at_n(ids, positives, (1,)).values[1]
    assert abs(torch_recall - runtime_recall) <= 0.5


# ------------------------------------------------------------------ recognizer
@pytest.fixture(scope="module")
def placemap(embedder: Embedder, places: dict[str, list[Path]]) -> PlaceMap:
    from edgevpr.runtime.placemap.place_record import record_for

    built = PlaceMap.create(embedder.descriptor_dim, embedder.fingerprint)
    built.add(embedder.embed_paths(places["database"]), [record_for(p) for p in places["database"]])
    return built


def test_recognizer_finds_revisited_places(
    embedder: Embedder, placemap: PlaceMap, places: dict[str, list[Path]]
) -> None:
    recognizer = Recognizer(embedder, placemap)
    results = list(recognizer.recognize_many(places["queries"], k=3))
    best = np.array([r.best.id for r in results])
    assert np.mean(best == np.arange(24)) >= 0.9
    first = results[0]
    assert first.query == str(places["queries"][0]) and len(first.matches) == 3
    assert first.coordinates == (0.0, 10.0 * first.best.id)
    assert json.loads(json.dumps(first.to_dict()))["best"]["id"] == first.best.id


def test_recognizer_accepts_arrays_paths_and_bytes(
    embedder: Embedder, placemap: PlaceMap, places: dict[str, list[Path]]
) -> None:
    recognizer = Recognizer(embedder, placemap)
    path = places["queries"][5]
    by_path = recognizer.recognize(path, k=4)
    by_array = recognizer.recognize(read_image(path), k=4)
    by_bytes = recognizer.recognize(path.read_bytes(), k=4)
    assert (
        [m.id for m in by_path.matches]
        == [m.id for m in by_array.matches]
        == [m.id for m in by_bytes.matches]
    )
    assert by_path.score == pytest.approx(by_bytes.score, abs=1e-5)


def test_recognizer_prior_limits_candidates(
    embedder: Embedder, placemap: PlaceMap, places: dict[str, list[Path]]
) -> None:
    recognizer = Recognizer(embedder, placemap)
    result = recognizer.recognize(places["queries"][3], k=10, prior=GeoPrior(0.0, 150.0, 25.0))
    assert sorted(m.id for m in result.matches) == [13, 14, 15, 16, 17]
    assert all(m.distance_m <= 25.0 for m in result.matches)
    nothing = recognizer.recognize(places["queries"][3], prior=GeoPrior(5000.0, 0.0, 10.0))
    assert nothing.best is None and nothing.matches == [] and nothing.to_dict()["best"] is None


def test_recognizer_refuses_a_map_of_another_model(embedder: Embedder) -> None:
    other = PlaceMap.create(embedder.descriptor_dim, "f" * 64)
    with pytest.raises(
        EdgeVPRError, match=r"built by model ffffffffffff, not by lite0.onnx.*edgevpr index build"
    ):
        Recognizer(embedder, other)
    smaller = PlaceMap.create(256, embedder.fingerprint)
    with pytest.raises(EdgeVPRError, match="256-d descriptors"):
        Recognizer(embedder, smaller)


# ------------------------------------------------------------------ CLI


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def cli_map(
    exported: dict[str, Path],
    places: dict[str, list[Path]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    out = tmp_path_factory.mktemp("cli") / "places.vprmap"
    database = places["database"][0].parent
    edgevpr_main_quiet(
        [
            "index",
            "build",
            str(exported["onnx"]),
            str(database),
            "--out",
            str(out),
            "-q",
            "--index",
            "hnswlib",
            "--M",
            "12",
            "--ef",
            "48",
        ]
    )
    return out


def edgevpr_main_quiet(argv: list[str]) -> None:
    try:
        edgevpr_main(argv)
    except SystemExit as exc:
        assert exc.code == 0, exc.code


def test_index_build_and_info(cli, cli_map: Path) -> None:
    code, out, _ = cli("index", "info", cli_map, "--json")
    info = json.loads(out)
    assert code == 0
    params = info["index_params"]
    assert (info["places"], info["descriptor_dim"], params["M"], params["ef"]) == (24, 512, 12, 48)
    assert info["coordinates"] == "east/north" and info["integrity"].startswith("ok")
    code, out, _ = cli("info", cli_map)
    assert code == 0 and "place map" in out


def test_query_json_and_text(cli,
    cli_map: Path,
    exported: dict[str, Path],
    places: dict[str, list[Path]],

) -> None:
    query = places["queries"][7]
    code, out, _ = cli("query", cli_map, "--model", exported["onnx"], query, "--k", 3, "--json"
    )
    assert code == 0
    (result,) = json.loads(out)
    assert result["query"] == str(query) and len(result["matches"]) == 3
    # ids follow the sorted file names, so places are checked by their coordinates
    assert result["best"]["north"] == 70.0 and result["best"]["east"] == 0.0
    assert result["best"]["path"].endswith("@0@70.00@@@@@0000007@@@@@@@@.png")
    code, out, _ = cli("query", cli_map, "--model", exported["onnx"], query, "--k", 2)
    assert code == 0 and out.splitlines()[1].split()[:2] == ["1", "place"]
    assert "north 70.00" in out.splitlines()[1]


def test_query_with_prior(cli,
    cli_map: Path,
    exported: dict[str, Path],
    places: dict[str, list[Path]],

) -> None:
    code, out, _ = cli("query",
        cli_map,
        "--model",
        exported["onnx"],
        places["queries"][2],
        "--prior",
        "0,200,15",
        "--json",
    )
    assert code == 0
    norths = [m["north"] for m in json.loads(out)[0]["matches"]]
    assert sorted(norths) == [190.0, 200.0, 210.0]
    code, _, err = cli("query",
        cli_map,
        "--model",
        exported["onnx"],
        places["queries"][2],
        "--prior",
        "0,200",
    )
    assert code == 2 and "takes three numbers" in err


def test_query_failures_are_one_line_and_leave_the_map_alone(cli,
    cli_map: Path,
    exported: dict[str, Path],
    places: dict[str, list[Path]],
    tmp_path: Path,

) -> None:
    before = digest(cli_map)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg at all")
    cases = {
        "unreadable": (
            [cli_map, "--model", exported["onnx"], broken],
            f"cannot read image {broken}",
        ),
        "missing": (
            [cli_map, "--model", exported["onnx"], tmp_path / "nope.png"],
            "does not exist",
        ),
        "not a map": (
            [exported["onnx"], "--model", exported["onnx"], places["queries"][0]],
            "not an edgevpr place map",
        ),
    }
    for name, (args, expected) in cases.items():
        code, out, err = cli("query", *args)
        assert code == 2, name
        assert err.startswith("error: ") and expected in err and err.count("\n") == 1, (name, err)
        assert out == ""
    assert digest(cli_map) == before


def test_wrong_size_query_image_is_simply_resized(cli,
    cli_map: Path, exported: dict[str, Path], tmp_path: Path
) -> None:
    odd = tmp_path / "odd.png"
    cv2.imwrite(str(odd), np.full((7, 500, 3), 128, np.uint8))
    code, out, _ = cli("query", cli_map, "--model", exported["onnx"], odd, "--json")
    assert code == 0 and len(json.loads(out)[0]["matches"]) == 5


def test_map_of_another_model_and_truncated_map(cli,
    embedder: Embedder,
    cli_map: Path,
    exported: dict[str, Path],
    places: dict[str, list[Path]],
    tmp_path: Path,

) -> None:
    foreign = tmp_path / "foreign.vprmap"
    other = PlaceMap.create(embedder.descriptor_dim, "0" * 64)
    other.add(np.eye(3, embedder.descriptor_dim, dtype=np.float32))
    other.save(foreign)
    code, _, err = cli("query", foreign, "--model", exported["onnx"], places["queries"][0]
    )
    assert code == 2 and "was built by model 000000000000" in err and err.count("\n") == 1
    truncated = tmp_path / "truncated.vprmap"
    truncated.write_bytes(cli_map.read_bytes()[:-100])
    code, _, err = cli("query", truncated, "--model", exported["onnx"], places["queries"][0]
    )
    assert code == 2 and "is truncated" in err and err.count("\n") == 1


def test_failed_build_leaves_the_previous_map(cli,
    cli_map: Path,
    exported: dict[str, Path],
    places: dict[str, list[Path]],
    tmp_path: Path,

) -> None:
    target = tmp_path / "m.vprmap"
    target.write_bytes(cli_map.read_bytes())
    folder = tmp_path / "images"
    write_place_folder(folder, [read_image(p) for p in places["database"][:5]])
    (folder / "zz_broken.png").write_bytes(b"\x89PNG truncated")
    code, _, err = cli("index", "build", exported["onnx"], folder, "--out", target, "-q"
    )
    assert code == 2 and "zz_broken.png" in err
    assert digest(target) == digest(cli_map)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "m.vprmap"]  # no temporaries

    code, out, err = cli("index",
        "build",
        exported["onnx"],
        folder,
        "--out",
        target,
        "-q",
        "--skip-unreadable",
    )
    assert code == 0 and "5 places (1 unreadable skipped)" in out and "warning: skipped" in err
    assert len(PlaceMap.load(target)) == 5

    precious = tmp_path / "model-copy.onnx"
    precious.write_bytes(b"weights")
    code, _, err = cli("index", "build", exported["onnx"], folder, "--out", precious, "-q"
    )
    assert code == 2 and "refusing to overwrite" in err and precious.read_bytes() == b"weights"


def test_index_add_and_remove(cli,
    cli_map: Path,
    exported: dict[str, Path],
    places: dict[str, list[Path]],
    tmp_path: Path,

) -> None:
    target = tmp_path / "m.vprmap"
    target.write_bytes(cli_map.read_bytes())
    code, out, _ = cli("index",
        "add",
        target,
        "--model",
        exported["onnx"],
        places["queries"][0],
        places["queries"][1],
        "-q",
    )
    assert code == 0 and "added 2 places" in out and "ids 24..25" in out
    code, out, _ = cli("index", "remove", target, 0, 24)
    assert code == 0 and "it now has 24" in out
    loaded = PlaceMap.load(target)
    assert 0 not in loaded and 25 in loaded and loaded.ef == 48
    code, _, err = cli("index", "remove", target, 999)
    assert code == 2 and "no place with id 999" in err
    assert len(PlaceMap.load(target)) == 24


def test_info_describes_onnx_models(cli,
    exported: dict[str, Path]
) -> None:
    code, out, _ = cli("info", exported["onnx"], "--json")
    info = json.loads(out)
    assert code == 0 and info["kind"] == "onnx model"
    assert info["opset"] == 18 and info["descriptor_dim"] == 512
    assert info["input"].startswith("images ['batch', 3, 64, 64]")
    assert info["fingerprint"] == hashlib.sha256(exported["checkpoint"].read_bytes()).hexdigest()
