"""A corpus of bad (and awkward-but-valid) inputs, generated on the fly, never downloaded.

Each maker writes one file into a folder and returns its path. ``IMAGES_OK`` must decode;
``IMAGES_BAD`` must be refused with a one-line error.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

RNG = np.random.default_rng(7)


def photo(height: int = 48, width: int = 64) -> np.ndarray:
    """A smooth, textured BGR image (not noise)."""
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 4 % 256, y * 5 % 256, (x + y) * 3 % 256], axis=-1)
    return base.astype(np.uint8)


def write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def encode(ext: str, image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(ext, image)
    assert ok
    return buf.tobytes()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload))
    )


def png_with_header(width: int, height: int, body: bytes = b"") -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(body)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def palette_png() -> bytes:
    """An 8-bit indexed-colour PNG, written by hand (OpenCV never writes palettes)."""
    width, height = 16, 8
    palette = bytes(range(0, 48))  # 16 RGB entries
    rows = b"".join(b"\x00" + bytes(x % 16 for x in range(width)) for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"PLTE", palette)
        + png_chunk(b"IDAT", zlib.compress(rows))
        + png_chunk(b"IEND", b"")
    )


def _cut_late(data: bytes) -> bytes:
    """Most of the file: the kind of PNG a copy interrupted near its end leaves."""
    return data[: len(data) * 9 // 10]


def _damaged_idat(data: bytes) -> bytes:
    """One byte of the pixel data changed (what a bad disk or transfer does)."""
    at = data.index(b"IDAT") + 20
    return data[:at] + bytes([data[at] ^ 0x55]) + data[at + 1 :]


def decompression_bomb() -> bytes:
    """A tiny PNG that announces a 60000 x 60000 image (3.6 gigapixels, ~10 GB decoded)."""
    row = b"\x00" + b"\x00" * (60000 * 3)
    compressor = zlib.compressobj(9)
    body = compressor.compress(row * 4) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", body)


IMAGES_OK: dict[str, Callable[[Path], Path]] = {
    "rgb-jpeg": lambda d: write(d, "rgb.jpg", encode(".jpg", photo())),
    "rgb-png": lambda d: write(d, "rgb.png", encode(".png", photo())),
    "grey-png": lambda d: write(d, "grey.png", encode(".png", photo()[:, :, 0])),
    "rgba-png": lambda d: write(
        d, "rgba.png", encode(".png", np.dstack([photo(), np.full((48, 64), 128, np.uint8)]))
    ),
    "16bit-png": lambda d: write(d, "deep.png", encode(".png", photo().astype(np.uint16) * 257)),
    "16bit-grey-png": lambda d: write(
        d, "deepgrey.png", encode(".png", photo()[:, :, 1].astype(np.uint16) * 257)
    ),
    "palette-png": lambda d: write(d, "palette.png", palette_png()),
    "png-named-jpg": lambda d: write(d, "mislabelled.jpg", encode(".png", photo())),
    "tiny-1x1": lambda d: write(d, "tiny.png", encode(".png", photo(1, 1))),
    "bmp": lambda d: write(d, "rgb.bmp", encode(".bmp", photo())),
}

IMAGES_BAD: dict[str, Callable[[Path], Path]] = {
    "zero-byte": lambda d: write(d, "empty.jpg", b""),
    "truncated-jpeg": lambda d: write(d, "cut.jpg", encode(".jpg", photo())[:40]),
    "truncated-png": lambda d: write(d, "cut.png", encode(".png", photo())[:60]),
    "truncated-png-late": lambda d: write(d, "cutlate.png", _cut_late(encode(".png", photo()))),
    "png-bad-crc": lambda d: write(d, "damaged.png", _damaged_idat(encode(".png", photo()))),
    "text-named-jpg": lambda d: write(d, "notes.jpg", b"this is not an image\n" * 10),
    "random-bytes": lambda d: write(d, "noise.png", RNG.integers(0, 256, 4096, np.uint8).tobytes()),
    "decompression-bomb": lambda d: write(d, "bomb.png", decompression_bomb()),
    "absurd-header": lambda d: write(d, "huge.png", png_with_header(2**31 - 1, 2**31 - 1)),
    "zero-size-header": lambda d: write(d, "zero.png", png_with_header(0, 0)),
    "directory": lambda d: (d / "folder.jpg").mkdir() or (d / "folder.jpg"),
    "missing": lambda d: d / "does-not-exist.jpg",
}


# ---------------------------------------------------------------- ONNX models
# Makers below take (folder, good) where ``good`` is a valid edgevpr export to derive from;
# each returns the path of the bad file, written inside ``folder``.
MakerFrom = Callable[[Path, Path], Path]


def _onnx_with(good: Path, edit: Callable[[object], None]):  # -> onnx.ModelProto
    import onnx

    model = onnx.load(str(good))
    edit(model)
    return model


def _set_prop(key: str, value: str) -> Callable[[object], None]:
    def edit(model) -> None:
        for prop in model.metadata_props:
            if prop.key == key:
                prop.value = value

    return edit


def _edited_onnx(folder: Path, good: Path, name: str, edit: Callable[[object], None]) -> Path:
    return write(folder, name, _onnx_with(good, edit).SerializeToString())


def foreign_onnx() -> bytes:
    """A valid ONNX model that edgevpr did not write: one Relu, no edgevpr metadata."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "foreign",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 32, 32])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model)
    return model.SerializeToString()


def custom_op_onnx(good: Path) -> bytes:
    """edgevpr's metadata on a graph whose one node is an operator from an unknown domain:
    a runtime that loaded custom-op libraries named by models would run their code."""
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("Exec", ["images"], ["descriptors"], domain="com.evil.ops")
    graph = helper.make_graph(
        [node],
        "custom",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, 32, 32])],
        [helper.make_tensor_value_info("descriptors", TensorProto.FLOAT, ["batch", 512])],
    )
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid("com.evil.ops", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.metadata_props.extend(onnx.load(str(good), load_external_data=False).metadata_props)
    return model.SerializeToString()


def onnx_with_external_data(folder: Path, good: Path, location: str, name: str) -> Path:
    """``good`` with its weights moved to an external file, then the recorded location
    rewritten to ``location``; the real weights file is left beside the model (so a reader
    that follows the location finds data there when it stays inside the folder)."""
    import onnx

    folder.mkdir(parents=True, exist_ok=True)
    model = onnx.load(str(good))
    staging = folder / f".{name}.staging.onnx"
    onnx.save(
        model,
        str(staging),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=f"{name}.weights",
        size_threshold=1024,
    )
    staged = onnx.load(str(staging), load_external_data=False)
    staging.unlink()
    for tensor in staged.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    return write(folder, name, staged.SerializeToString())


def outside_target(folder: Path) -> Path:
    """A file outside ``folder`` that a path escape would reach (a copy of nothing secret)."""
    target = folder.parent / "outside-secret.bin"
    target.write_bytes(b"\0" * 4096)
    return target


def escaping_symlink(folder: Path, good: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / "linked.weights"
    if not link.is_symlink():
        link.symlink_to(outside_target(folder))
    return onnx_with_external_data(folder, good, "linked.weights", "symlinked.onnx")


ONNX_BAD: dict[str, MakerFrom] = {
    "onnx-zero-byte": lambda d, g: write(d, "empty.onnx", b""),
    "onnx-random-bytes": lambda d, g: write(
        d, "noise.onnx", RNG.integers(0, 256, 4096, np.uint8).tobytes()
    ),
    "onnx-text": lambda d, g: write(d, "readme.onnx", b"ir_version: 8\ngraph { }\n" * 20),
    "onnx-truncated": lambda d, g: write(d, "cut.onnx", g.read_bytes()[: g.stat().st_size // 2]),
    "onnx-foreign": lambda d, g: write(d, "foreign.onnx", foreign_onnx()),
    "onnx-no-metadata": lambda d, g: _edited_onnx(
        d, g, "bare.onnx", lambda m: m.metadata_props.__delitem__(slice(None))
    ),
    "onnx-wrong-descriptor-size": lambda d, g: _edited_onnx(
        d, g, "dim.onnx", _set_prop("edgevpr.descriptor_dim", "4096")
    ),
    "onnx-negative-descriptor-size": lambda d, g: _edited_onnx(
        d, g, "negdim.onnx", _set_prop("edgevpr.descriptor_dim", "-3")
    ),
    "onnx-broken-preprocess-json": lambda d, g: _edited_onnx(
        d, g, "prep.onnx", _set_prop("edgevpr.preprocess", '{"height": 32, "width":')
    ),
    "onnx-preprocess-not-an-object": lambda d, g: _edited_onnx(
        d, g, "preplist.onnx", _set_prop("edgevpr.preprocess", "[32, 32]")
    ),
    "onnx-preprocess-wrong-size": lambda d, g: _edited_onnx(
        d, g, "prepsize.onnx", _set_prop("edgevpr.preprocess", '{"height": 64, "width": 64}')
    ),
    "onnx-preprocess-wrong-types": lambda d, g: _edited_onnx(
        d, g, "preptype.onnx", _set_prop("edgevpr.preprocess", '{"height": "tall", "width": 32}')
    ),
    "onnx-model-config-not-an-object": lambda d, g: _edited_onnx(
        d, g, "config.onnx", _set_prop("edgevpr.model_config", '"resnet"')
    ),
    "onnx-fingerprint-is-a-path": lambda d, g: _edited_onnx(
        d, g, "fingerprint.onnx", _set_prop("edgevpr.checkpoint_sha256", "../../../../../tmp/x")
    ),
    "onnx-custom-op": lambda d, g: write(d, "custom.onnx", custom_op_onnx(g)),
    "onnx-newer-metadata": lambda d, g: _edited_onnx(
        d, g, "newer.onnx", _set_prop("edgevpr.format_version", "99")
    ),
    "onnx-external-parent": lambda d, g: onnx_with_external_data(
        d, g, "../outside-secret.bin", "parent.onnx"
    ),
    "onnx-external-etc-passwd": lambda d, g: onnx_with_external_data(
        d, g, "../../../../../../../../etc/passwd", "passwd.onnx"
    ),
    "onnx-external-absolute": lambda d, g: onnx_with_external_data(
        d, g, str(outside_target(d)), "absolute.onnx"
    ),
    "onnx-external-sneaky-parent": lambda d, g: onnx_with_external_data(
        d, g, "sub/../../outside-secret.bin", "sneaky.onnx"
    ),
    "onnx-external-symlink-out": escaping_symlink,
    "onnx-external-missing": lambda d, g: onnx_with_external_data(
        d, g, "no-such.weights", "missing-weights.onnx"
    ),
    "onnx-directory": lambda d, g: (d / "folder.onnx").mkdir() or (d / "folder.onnx"),
    "onnx-missing": lambda d, g: d / "does-not-exist.onnx",
}

# External data inside the model's own folder is how ONNX stores models over 2 GB: allowed.
ONNX_OK: dict[str, MakerFrom] = {
    "onnx-external-inside": lambda d, g: onnx_with_external_data(
        d, g, "inside.onnx.weights", "inside.onnx"
    ),
}


# ---------------------------------------------------------------- place maps
def _rewritten_map(
    folder: Path, good: Path, name: str, edit: Callable[[dict], None] | None = None,
    edit_sections: Callable[[dict], None] | None = None,
) -> Path:  # fmt: skip
    """``good`` with its metadata (or sections) edited and every checksum made valid again:
    a map that passes the integrity check and lies inside."""
    from edgevpr.runtime.placemap.fileformat.container import MapFile, write_sections

    mapped = MapFile(good)
    metadata = json.loads(json.dumps(mapped.metadata))
    sections = {n: np.array(a) for n, a in mapped.arrays().items()}
    if edit is not None:
        edit(metadata)
    if edit_sections is not None:
        edit_sections(sections)
    del mapped
    write_sections(folder / name, metadata, sections)
    return folder / name


def _append_id(sections: dict) -> None:
    sections["records.ids"] = np.append(sections["records.ids"], 999)


def _east_is_infinite(sections: dict) -> None:
    sections["records.floats"][0, 0] = np.inf


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x40]) + data[at + 1 :]


def _set(key: str, value: object) -> Callable[[dict], None]:
    return lambda metadata: metadata.__setitem__(key, value)


def other_model_map(folder: Path, good: Path) -> Path:
    from edgevpr.runtime.placemap import PlaceMap

    source = PlaceMap.load(good)
    other = PlaceMap.create(source.descriptor_dim, "0" * 64)
    other.add(np.eye(3, source.descriptor_dim, dtype=np.float32))
    other.save(folder / "other-model.vprmap")
    return folder / "other-model.vprmap"


def wrong_dimension_map(folder: Path, good: Path) -> Path:
    """Same fingerprint as the model, but 128-d descriptors."""
    from edgevpr.runtime.placemap import PlaceMap

    source = PlaceMap.load(good)
    other = PlaceMap.create(128, source.fingerprint)
    other.add(np.eye(3, 128, dtype=np.float32))
    other.save(folder / "dim128.vprmap")
    return folder / "dim128.vprmap"


MAPS_BAD: dict[str, MakerFrom] = {
    "map-zero-byte": lambda d, g: write(d, "empty.vprmap", b""),
    "map-random-bytes": lambda d, g: write(
        d, "noise.vprmap", RNG.integers(0, 256, 4096, np.uint8).tobytes()
    ),
    "map-text": lambda d, g: write(d, "notes.vprmap", b"places: 3\n" * 50),
    "map-truncated-header": lambda d, g: write(d, "cuthead.vprmap", g.read_bytes()[:30]),
    "map-truncated-half": lambda d, g: write(
        d, "cut.vprmap", g.read_bytes()[: g.stat().st_size // 2]
    ),
    "map-flipped-byte": lambda d, g: write(
        d, "flipped.vprmap", _flip(g.read_bytes(), g.stat().st_size - 10)
    ),
    "map-newer-version": lambda d, g: write(
        d, "newer.vprmap", g.read_bytes()[:14] + b"\x09\x00" + g.read_bytes()[16:]
    ),
    "map-other-model": other_model_map,
    "map-wrong-dimension": wrong_dimension_map,
    "map-metadata-dimension-lies": lambda d, g: _rewritten_map(
        d, g, "dimlie.vprmap", _set("descriptor_dim", 7)
    ),
    "map-metadata-huge-dimension": lambda d, g: _rewritten_map(
        d, g, "dimhuge.vprmap", _set("descriptor_dim", 2**40)
    ),
    "map-records-disagree": lambda d, g: _rewritten_map(
        d, g, "records.vprmap", edit_sections=_append_id
    ),
    "map-records-not-a-list": lambda d, g: _rewritten_map(
        d, g, "recordtype.vprmap", _set("zones", {"id": 1})
    ),
    "map-record-bad-field": lambda d, g: _rewritten_map(
        d, g, "recordfield.vprmap", edit_sections=_east_is_infinite
    ),
    "map-hnsw-params-out-of-range": lambda d, g: _rewritten_map(
        d, g, "hnsw.vprmap",
        lambda m: m["index"].update(params={"M": 0, "ef_construction": -1, "ef": 0}),
    ),
    "map-metadata-not-an-object": lambda d, g: _rewritten_map(
        d, g, "list.vprmap", lambda m: m.update(model=[1, 2], fingerprint={"a": 1})
    ),
    "map-directory": lambda d, g: (d / "folder.vprmap").mkdir() or (d / "folder.vprmap"),
    "map-missing": lambda d, g: d / "does-not-exist.vprmap",
}


# ---------------------------------------------------------------- checkpoints
class RunsCode:
    """Unpickling this runs a shell command: what a hostile checkpoint looks like."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def pwned_marker(folder: Path) -> Path:
    """The file a hostile checkpoint in ``folder`` would create if its code ran."""
    return folder.parent / "PWNED"


def _torch_file(folder: Path, name: str, obj: object) -> Path:
    import torch

    torch.save(obj, folder / name)
    return folder / name


def _edgevpr_payload(good: Path, **changes: object) -> dict:
    import torch

    payload = torch.load(good, map_location="cpu", weights_only=True)
    payload.update(changes)
    return payload


def _wrong_shapes(good: Path) -> dict:
    payload = _edgevpr_payload(good)
    payload["state_dict"] = {
        k: v[..., :1] if v.ndim else v for k, v in payload["state_dict"].items()
    }
    return payload


def _torn_zip(good: Path) -> bytes:
    """A checkpoint whose zip directory survives but whose tensor data is cut out."""
    data = good.read_bytes()
    middle = len(data) // 3
    return data[:middle] + b"\0" * (len(data) - 2 * middle) + data[-middle:]


CHECKPOINTS_BAD: dict[str, MakerFrom] = {
    "ckpt-runs-code-torch": lambda d, g: _torch_file(
        d, "evil.pt", {"state_dict": {}, "payload": RunsCode(pwned_marker(d))}
    ),
    "ckpt-runs-code-pickle": lambda d, g: write(
        d, "evil-pickle.ckpt", __import__("pickle").dumps(RunsCode(pwned_marker(d)))
    ),
    "ckpt-runs-code-inside-training-state": lambda d, g: _torch_file(
        d,
        "evil-state.pt",
        _edgevpr_payload(g, training_state={"config": RunsCode(pwned_marker(d))}),
    ),
    "ckpt-zero-byte": lambda d, g: write(d, "empty.pt", b""),
    "ckpt-text": lambda d, g: write(d, "notes.pt", b"epoch 3, loss 0.1\n" * 20),
    "ckpt-truncated": lambda d, g: write(d, "cut.pt", g.read_bytes()[: g.stat().st_size // 2]),
    "ckpt-torn-zip": lambda d, g: write(d, "torn.pt", _torn_zip(g)),
    "ckpt-not-a-dict": lambda d, g: _torch_file(d, "list.pt", [1, 2, 3]),
    "ckpt-foreign-state-dict": lambda d, g: _torch_file(
        d, "foreign.pth", {"conv.weight": __import__("torch").zeros(4, 3, 3, 3)}
    ),
    "ckpt-missing-config": lambda d, g: _torch_file(
        d, "noconfig.pt", {k: v for k, v in _edgevpr_payload(g).items() if k != "config"}
    ),
    "ckpt-config-not-an-object": lambda d, g: _torch_file(
        d, "configlist.pt", _edgevpr_payload(g, config=["efficientnet_lite0"])
    ),
    "ckpt-config-out-of-range": lambda d, g: _torch_file(
        d,
        "configrange.pt",
        _edgevpr_payload(
            g,
            config={**_edgevpr_payload(g)["config"], "frozen_stages": 99},
        ),
    ),
    "ckpt-state-dict-not-tensors": lambda d, g: _torch_file(
        d, "statestr.pt", _edgevpr_payload(g, state_dict="weights")
    ),
    "ckpt-wrong-shapes": lambda d, g: _torch_file(d, "shapes.pt", _wrong_shapes(g)),
    "ckpt-newer-format": lambda d, g: _torch_file(
        d, "newer.pt", _edgevpr_payload(g, format_version=99)
    ),
    "ckpt-directory": lambda d, g: (d / "folder.pt").mkdir() or (d / "folder.pt"),
    "ckpt-missing": lambda d, g: d / "does-not-exist.pt",
}


# ---------------------------------------------------------------- TensorRT engine files
# The engine's JSON header is read before TensorRT is imported, so these need no GPU.
def engine_with_header(folder: Path, name: str, header: bytes | None) -> Path:
    engine = write(folder, name, b"\0" * 64)
    if header is not None:
        write(folder, name + ".json", header)
    return engine


ENGINES_BAD: dict[str, Callable[[Path], Path]] = {
    "engine-without-header": lambda d: engine_with_header(d, "bare.engine", None),
    "engine-header-not-json": lambda d: engine_with_header(d, "text.engine", b"{trt: 10"),
    "engine-header-bad-version": lambda d: engine_with_header(
        d, "version.engine", b'{"format_version": "ten"}'
    ),
    "engine-header-bad-extra": lambda d: engine_with_header(
        d, "extra.engine", b'{"extra": [1, 2], "batch_min": 1}'
    ),
}


# ---------------------------------------------------------------- the good files they spoil
@dataclass(frozen=True)
class GoodFiles:
    """A tiny real model and what it made: the valid inputs the bad ones are derived from."""

    root: Path
    checkpoint: Path  # EfficientNet-Lite0 (ImageNet) + MixVPR 512, 32 x 32 input
    onnx: Path  # its FP32 export
    images: Path  # six scenes named in the evaluation layout (place i at north 10 i)
    dataset: Path  # images/test/{database,queries} of those scenes
    map: Path  # the six scenes embedded by ``onnx``
    train: Path  # a tiny training set (edgevpr synth: 6 places x 2 views, 32 x 32)

    @property
    def image(self) -> Path:
        return sorted(self.images.iterdir())[0]


SCENES = 6
_GOOD: dict[str, GoodFiles] = {}


def scene(index: int) -> np.ndarray:
    """A smooth random BGR scene, one per place."""
    rng = np.random.default_rng(1000 + index)
    return cv2.resize(
        rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), (64, 48), interpolation=cv2.INTER_CUBIC
    )


def layout_name(index: int) -> str:
    return f"@0@{10.0 * index:.2f}@@@@@{index:07d}@@@@@@@@.png"


def good_files(root: Path) -> GoodFiles:
    """Build the good files once per process (the ONNX export takes ~10 s)."""
    if "files" in _GOOD:
        return _GOOD["files"]
    from edgevpr.core.images import list_images
    from edgevpr.export.onnx_export import export_onnx
    from edgevpr.model import build_model, get_preset
    from edgevpr.model.checkpoint import load_checkpoint, save_checkpoint
    from edgevpr.runtime.embedder import Embedder
    from edgevpr.runtime.placemap import PlaceMap

    config = get_preset("mixvpr_lite0_512").with_size(32, 32)
    save_checkpoint(root / "lite0.pt", build_model(config, pretrained=True))
    export_onnx(load_checkpoint(root / "lite0.pt"), root / "lite0.onnx")
    images = root / "images"
    images.mkdir()
    for split in ("database", "queries"):
        (root / "dataset" / "images" / "test" / split).mkdir(parents=True)
    for i in range(SCENES):
        cv2.imwrite(str(images / layout_name(i)), scene(i))
        for split in ("database", "queries"):
            cv2.imwrite(
                str(root / "dataset" / "images" / "test" / split / layout_name(i)), scene(i)
            )
    with Embedder(root / "lite0.onnx", providers=["cpu"]) as embedder:
        placemap = PlaceMap.create(embedder.descriptor_dim, embedder.fingerprint)
        paths = list_images(images)
        placemap.add(
            embedder.embed_paths(paths),
            [{"path": p.name, "east": 0.0, "north": 10.0 * i} for i, p in enumerate(paths)],
        )
    placemap.save(root / "places.vprmap")
    from edgevpr.data.synth import SynthConfig, generate

    generate(
        root / "train",
        SynthConfig(places=3, val_places=2, train_places=6, train_views=2, height=32, width=32),
    )
    _GOOD["files"] = GoodFiles(
        root,
        root / "lite0.pt",
        root / "lite0.onnx",
        images,
        root / "dataset",
        root / "places.vprmap",
        root / "train",
    )
    return _GOOD["files"]


# ---------------------------------------------------------------- what a refusal must look like
def snapshot(*roots: Path) -> dict[str, tuple]:
    """Every entry under ``roots``: files by size, mtime and content hash, links by target,
    folders by existence (a temporary file made and removed again is no change)."""
    seen: dict[str, tuple] = {}
    for root in roots:
        for folder, dirs, files in os.walk(root):
            for name in dirs + files:
                path = Path(folder) / name
                if path.is_symlink():
                    seen[str(path)] = ("link", os.readlink(path))
                elif path.is_dir():
                    seen[str(path)] = ("dir",)
                else:
                    stat = path.stat()
                    digest = hashlib.sha256(path.read_bytes()).hexdigest()
                    seen[str(path)] = ("file", stat.st_size, stat.st_mtime_ns, digest)
    return seen


def assert_one_line_refusal(code: int, err: str, what: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code not in (0, 3), f"{what}: exit {code}\n{err}"
    assert "Traceback" not in err and "internal error" not in err, f"{what}:\n{err}"
    assert lines, f"{what}: exit {code} with nothing on stderr"
    assert len(lines) == 1 and lines[0].startswith("error: "), (
        f"{what}: expected exactly one 'error: ' line on stderr, got:\n{err}"
    )
