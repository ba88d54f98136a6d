"""Inputs as cameras, robots and phones give them: EXIF orientation, pixel encodings,
antialiased downscaling (preprocessing v2, with v1 kept bit-identical), reduced JPEG
decoding, and the Python API failing the way the CLI does."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from edgevpr.core.errors import EdgeVPRError
from edgevpr.core.images import decode_image, read_image, reduction_factor
from edgevpr.core.pixels import DEFAULT_ENCODING, ENCODINGS, to_rgb8
from edgevpr.core.preprocess import PreprocessSpec, normalize, read_for_model, resize_rgb
from edgevpr.runtime.embedder import Embedder

# PIL's own transposes for each EXIF orientation (as ImageOps.exif_transpose applies them):
# an implementation independent of edgevpr's.
UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# What a camera does to upright pixels so that the tag turns them back.
STORED = {**UPRIGHT, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}
FORMATS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "TIFF": ".tif"}


def transposed(pixels: np.ndarray, tag: int, table: dict) -> np.ndarray:
    if tag == 1:
        return pixels
    return np.asarray(Image.fromarray(pixels).transpose(table[tag]))


def write_tagged(folder: Path, upright: np.ndarray, tag: int, fmt: str) -> Path:
    """The photo as a camera would store it: rows turned, the orientation tag set."""
    exif = Image.Exif()
    exif[0x0112] = tag
    options = {"exif": exif.tobytes()}
    if fmt == "WEBP":
        options["lossless"] = True
    path = folder / f"tag{tag}{FORMATS[fmt]}"
    Image.fromarray(transposed(upright, tag, STORED)).save(path, fmt, **options)
    return path


def stored_pixels(path: Path) -> np.ndarray:
    """The file's pixels as stored, by OpenCV told to ignore the orientation."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


# ------------------------------------------------------------------ EXIF orientation
@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_every_exif_orientation_gives_the_pixels_a_viewer_shows(tmp_path: Path, fmt: str) -> None:
    upright = skimage.data.chelsea()  # a real photo, 451 x 300: wider than tall
    for tag in range(1, 9):
        path = write_tagged(tmp_path, upright, tag, fmt)
        decoded = read_image(path)
        if fmt == "JPEG":  # lossy: the stored pixels, physically turned by PIL
            expected = transposed(stored_pixels(path), tag, UPRIGHT)
        else:
            expected = upright
        assert decoded.shape == upright.shape, (fmt, tag)
        assert np.array_equal(decoded, expected), (fmt, tag)


def test_tagged_jpegs_decode_as_cv2_imread_shows_them(tmp_path: Path) -> None:
    upright = skimage.data.coffee()
    for tag in range(1, 9):
        path = write_tagged(tmp_path, upright, tag, "JPEG")
        from_opencv = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        assert np.array_equal(read_image(path), from_opencv), tag


@pytest.mark.parametrize("tag", [3, 6, 8])
def test_a_tagged_file_has_the_descriptor_of_the_upright_pixels(
    embedder: Embedder, tmp_path: Path, tag: int
) -> None:
    upright = skimage.data.astronaut()[::4, ::2]  # 128 x 256: turning it matters
    path = write_tagged(tmp_path, upright, tag, "PNG")
    from_file = embedder.embed_paths([path])
    assert np.array_equal(from_file, embedder.embed_images([upright]))
    sideways = embedder.embed_images([transposed(upright, tag, STORED)])
    assert float(from_file[0] @ sideways[0]) < 0.999


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=64), st.integers(0, 40))
def test_damaged_exif_blocks_never_break_decoding(block: bytes, cut: int) -> None:
    """A JPEG whose APP1 EXIF block is garbage (or a real one cut short) decodes as stored."""
    exif = Image.Exif()
    exif[0x0112] = 6
    real = b"Exif\x00\x00" + exif.tobytes()[6:] if exif.tobytes().startswith(b"Exif") else b""
    payload = (real[:cut] if cut else b"Exif\x00\x00") + block
    ok, jpeg = cv2.imencode(".jpg", np.full((12, 20, 3), 90, np.uint8))
    assert ok
    data = jpeg.tobytes()
    segment = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
    decoded = decode_image(data[:2] + segment + data[2:], "fuzz.jpg")
    assert decoded.shape in ((12, 20, 3), (20, 12, 3))


# ------------------------------------------------------------------ pixel encodings
def encoded_forms(tmp_path: Path) -> dict[str, tuple[Path, np.ndarray]]:
    """For each encoding: a file holding an image of that kind, and the array a camera
    driver or cv2.imread gives for it."""
    bgr = cv2.cvtColor(skimage.data.rocket()[::3, ::3], cv2.COLOR_RGB2BGR)
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    deep = grey.astype(np.uint16) * 257 + 3
    bgra = np.dstack([bgr, np.full(grey.shape, 200, np.uint8)])
    files = {"colour.png": bgr, "grey.png": grey, "deep.png": deep, "alpha.png": bgra}
    for name, pixels in files.items():
        cv2.imwrite(str(tmp_path / name), pixels)
    unchanged = {n: cv2.imread(str(tmp_path / n), cv2.IMREAD_UNCHANGED) for n in files}
    return {
        "rgb8": (tmp_path / "colour.png", cv2.cvtColor(unchanged["colour.png"], cv2.COLOR_BGR2RGB)),
        "bgr8": (tmp_path / "colour.png", cv2.imread(str(tmp_path / "colour.png"))),
        "mono8": (tmp_path / "grey.png", unchanged["grey.png"]),
        "mono16": (tmp_path / "deep.png", unchanged["deep.png"]),
        "16UC1": (tmp_path / "deep.png", unchanged["deep.png"][:, :, None]),
        "rgba8": (
            tmp_path / "alpha.png",
            cv2.cvtColor(unchanged["alpha.png"], cv2.COLOR_BGRA2RGBA),
        ),
        "bgra8": (tmp_path / "alpha.png", unchanged["alpha.png"]),
    }


def test_every_encoding_embeds_like_the_same_image_as_a_file(
    embedder: Embedder, tmp_path: Path
) -> None:
    forms = encoded_forms(tmp_path)
    assert set(forms) == set(ENCODINGS)
    for encoding, (path, pixels) in forms.items():
        from_array = embedder.embed_images([pixels], encoding=encoding)
        assert np.array_equal(from_array, embedder.embed_paths([path])), encoding


def test_the_default_encoding_is_rgb_and_bgr_must_be_named(embedder: Embedder, tmp_path) -> None:
    path, bgr = encoded_forms(tmp_path)["bgr8"]
    assert DEFAULT_ENCODING == "rgb8"
    as_file = embedder.embed_paths([path])[0]
    assert np.array_equal(embedder.embed_image(bgr, encoding="bgr8"), as_file)
    assert not np.array_equal(embedder.embed_image(bgr), as_file)  # taken as RGB


@pytest.mark.parametrize(
    ("pixels", "encoding", "message"),
    [
        (np.zeros((4, 4, 3), np.uint8), "yuv422", "unknown pixel encoding 'yuv422'"),
        (np.zeros((4, 4), np.uint8), "bgr8", r"'bgr8' needs H x W x 3 uint8 pixels, got \(4, 4\)"),
        (np.zeros((4, 4), np.uint8), "mono16", "needs H x W uint16"),
        (np.zeros((4, 4, 3), np.float32), "rgb8", "float32"),
        (np.zeros((0, 4, 3), np.uint8), "rgb8", "is empty"),
        ([[1, 2, 3]], "rgb8", "expected a NumPy array"),
    ],
)
def test_pixels_that_do_not_fit_their_encoding_are_one_line_errors(
    pixels: object, encoding: str, message: str
) -> None:
    with pytest.raises(EdgeVPRError, match=message):
        to_rgb8(pixels, encoding)


# ------------------------------------------------------------------ preprocessing versions
def test_version_1_is_opencv_bilinear_bit_for_bit() -> None:
    photo = skimage.data.hubble_deep_field()
    spec = PreprocessSpec(96, 128, version=1)
    expected = cv2.resize(photo, (128, 96), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(resize_rgb(photo, spec), expected)


@pytest.mark.parametrize("name", ["astronaut", "coffee", "hubble_deep_field", "retina"])
def test_version_2_shrinks_like_torchvision_antialiased_resize(name: str) -> None:
    torch = pytest.importorskip("torch")
    tvf = pytest.importorskip("torchvision.transforms.v2.functional")
    from torchvision.transforms import InterpolationMode

    photo = getattr(skimage.data, name)()
    tensor = torch.from_numpy(photo).permute(2, 0, 1)
    for size in ((96, 128), (320, 320)):
        reference = tvf.resize(tensor, list(size), InterpolationMode.BILINEAR, antialias=True)
        reference = reference.permute(1, 2, 0).numpy().astype(np.int16)
        ours = resize_rgb(photo, PreprocessSpec(*size, version=2)).astype(np.int16)
        aliased = resize_rgb(photo, PreprocessSpec(*size, version=1)).astype(np.int16)
        assert np.abs(ours - reference).mean() < 0.3, size
        assert np.abs(ours - reference).max() <= 8, size
        assert np.abs(aliased - reference).mean() > 3 * np.abs(ours - reference).mean()


def test_version_2_enlarges_like_opencv_bilinear() -> None:
    small = skimage.data.chelsea()[:40, :60]
    spec = PreprocessSpec(64, 96)
    assert spec.version == 2
    expected = cv2.resize(small, (96, 64), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(resize_rgb(small, spec), expected)


def test_new_models_record_version_2_and_old_files_keep_version_1() -> None:
    from edgevpr.model import get_preset

    assert PreprocessSpec().version == 2
    assert get_preset("mixvpr_resnet50_4096").preprocess.to_dict()["version"] == 2
    old = PreprocessSpec(version=1).to_dict()
    assert PreprocessSpec.from_dict(old).version == 1
    del old["version"]  # no version recorded: the only behaviour there was
    assert PreprocessSpec.from_dict(old).version == 1


def test_a_model_exported_with_version_1_gives_bit_identical_descriptors(
    tmp_path: Path, exported: dict[str, Path]
) -> None:
    """A v1 export still decodes files in full and resizes with INTER_LINEAR: its
    descriptors are exactly the network's on those pixels, as before v2 existed."""
    from edgevpr.export.onnx_export import export_onnx
    from edgevpr.model.checkpoint import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(exported["checkpoint"])
    config = ckpt.model.config
    ckpt.model.config = replace(config, preprocess=replace(config.preprocess, version=1))
    save_checkpoint(tmp_path / "v1.pt", ckpt.model)
    export_onnx(load_checkpoint(tmp_path / "v1.pt"), tmp_path / "v1.onnx")
    photo = tmp_path / "big.jpg"
    cv2.imwrite(str(photo), cv2.cvtColor(big_photo(), cv2.COLOR_RGB2BGR))
    pixels = cv2.cvtColor(cv2.imread(str(photo)), cv2.COLOR_BGR2RGB)
    with Embedder(tmp_path / "v1.onnx", providers=["cpu"]) as embedder:
        spec = embedder.spec
        assert spec.version == 1
        resized = cv2.resize(pixels, (spec.width, spec.height), interpolation=cv2.INTER_LINEAR)
        expected = embedder.embed_batch(normalize(resized[None], spec))
        assert np.array_equal(embedder.embed_paths([photo]), expected)


# ------------------------------------------------------------------ reduced JPEG decoding
def big_photo() -> np.ndarray:
    """2400 x 1800 of real photographic detail: photos tiled at their own resolution."""
    tiles = [skimage.data.astronaut(), skimage.data.retina()[:512, :512], skimage.data.coffee()]
    row = np.concatenate([t[:400, :600] for t in tiles] * 2, axis=1)[:, :2400]
    return np.ascontiguousarray(np.concatenate([row] * 5, axis=0)[:1800])


def test_large_jpegs_decode_reduced_within_tolerance(embedder: Embedder, tmp_path: Path) -> None:
    path = tmp_path / "big.jpg"
    cv2.imwrite(str(path), cv2.cvtColor(big_photo(), cv2.COLOR_RGB2BGR))
    spec = embedder.spec  # 64 x 64: 1/8 scale keeps 225 x 300, over twice the input
    reduced = read_for_model(path, spec)
    assert reduced.shape == (225, 300, 3)
    full = read_image(path)
    assert full.shape == (1800, 2400, 3)
    from_file = embedder.embed_paths([path])[0]
    from_full = embedder.embed_image(full)
    assert float(from_file @ from_full) > 0.999
    assert read_for_model(path, replace(spec, version=1)).shape == full.shape


def test_reduction_keeps_twice_the_input_and_follows_the_orientation() -> None:
    assert reduction_factor((3000, 4000), 1, (320, 320)) == 4  # 750 x 1000
    assert reduction_factor((3000, 4000), 1, (96, 128)) == 8
    assert reduction_factor((700, 700), 1, (320, 320)) == 1
    # stored 1000 x 3000, turned upright to 3000 x 1000: the short side limits
    assert reduction_factor((1000, 3000), 6, (240, 120)) == 4
    assert reduction_factor((1000, 3000), 1, (240, 120)) == 2
    assert reduction_factor(None, 1, (64, 64)) == 1
    assert reduction_factor((3000, 4000), 1, None) == 1


def test_a_tagged_large_jpeg_is_reduced_and_turned(tmp_path: Path) -> None:
    upright = big_photo()
    path = write_tagged(tmp_path, upright, 6, "JPEG")
    reduced = read_image(path, min_size=(64, 64))
    assert reduced.shape == (225, 300, 3)
    full = read_image(path)
    shrunk = cv2.resize(full, (300, 225), interpolation=cv2.INTER_AREA).astype(np.int16)
    assert np.abs(reduced.astype(np.int16) - shrunk).mean() < 4


# ------------------------------------------------------------------ embedder lifecycle
def test_a_closed_embedder_says_so(exported: dict[str, Path]) -> None:
    embedder = Embedder(exported["onnx"], providers=["cpu"])
    embedder.warmup()
    embedder.close()
    embedder.close()
    with pytest.raises(EdgeVPRError, match="embedder for lite0.onnx is closed"):
        embedder.embed_image(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(EdgeVPRError, match="closed"):
        embedder.warmup()


def test_recognize_many_streams_an_endless_generator(embedder: Embedder, tmp_path) -> None:
    from edgevpr.runtime.placemap import PlaceMap
    from edgevpr.runtime.recognizer import Recognizer

    photo = skimage.data.chelsea()
    placemap = PlaceMap.create(embedder.descriptor_dim, embedder.fingerprint)
    placemap.add(embedder.embed_images([photo, photo[::-1]]))
    pulled = itertools.count()

    def camera():
        while True:
            next(pulled)
            yield cv2.cvtColor(photo, cv2.COLOR_RGB2BGR)

    recognizer = Recognizer(embedder, placemap)
    results = recognizer.recognize_many(camera(), k=1, encoding="bgr8")
    first = list(itertools.islice(results, 40))
    assert [r.best.id for r in first] == [0] * 40
    assert next(pulled) <= 40 + 2 * embedder.batch_size + 1  # at most two batches ahead
