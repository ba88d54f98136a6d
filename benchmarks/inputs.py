"""Inputs as cameras and phones give them: resizing, reduced JPEG decoding, EXIF orientation
and colour order, measured on real photos.

Usage: python benchmarks/inputs.py [--out benchmarks/results/inputs.md] [--runs 15]

Photos: scikit-image's real photographs (300x451 to 1411x1411) and two 12-megapixel
(4000x3000) mosaics of those photos at their native resolution, so that a 12 MP frame
carries real photographic detail at every pixel (no upscaling). Descriptors come from
MixVPR-Lite0 512 (the real ImageNet EfficientNet-Lite0, an untrained MixVPR head, seed 0) at
96x128 and 320x320, in PyTorch FP32. The corridor rows need ../shared/data.

1. Which resize is closest to torchvision's ``Resize(antialias=True)`` (bilinear), the resize
   the MixVPR authors trained with: OpenCV paths and edgevpr's preprocessing v1 and v2.
2. 12 MP JPEG (quality 90): full decode vs libjpeg's reduced decoding (1/2, 1/4, 1/8) at
   different margins over the model input, time and descriptor cosine to the full decode.
3. EXIF orientation: cosine of the descriptor of the pixels as stored (what v1 embedded for a
   tagged phone photo) to the upright one.
4. Colour order: corridor Recall@1 with cv2.imread frames given as BGR (encoding="bgr8")
   and wrongly as RGB (how much this costs depends on the model: the untrained head here
   barely uses colour).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import skimage.data
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as tvf

from edgevpr.bench.machine import describe_cpu, machine_info
from edgevpr.core.images import decode_image
from edgevpr.core.orientation import apply_orientation
from edgevpr.core.pixels import to_rgb8
from edgevpr.core.preprocess import PreprocessSpec, normalize, resize_rgb
from edgevpr.model import build_model, get_preset

PHOTOS = ("chelsea", "coffee", "rocket", "astronaut", "hubble_deep_field", "retina")
SIZES = ((96, 128), (320, 320))
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def photos() -> dict[str, np.ndarray]:
    found = {name: getattr(skimage.data, name)() for name in PHOTOS}
    for seed in (0, 1):
        found[f"mosaic 12MP #{seed + 1}"] = mosaic(found, 3000, 4000, seed)
    return found


def mosaic(sources: dict[str, np.ndarray], height: int, width: int, seed: int) -> np.ndarray:
    """A ``height`` x ``width`` frame tiled with real photos at their own resolution."""
    rng = np.random.default_rng(seed)
    names = [n for n in sources if not n.startswith("mosaic")]
    out = np.zeros((height, width, 3), np.uint8)
    top = 0
    while top < height:
        left, row_height = 0, 0
        while left < width:
            photo = sources[names[rng.integers(len(names))]]
            piece = photo[: height - top, : width - left]
            out[top : top + piece.shape[0], left : left + piece.shape[1]] = piece
            left += piece.shape[1]
            row_height = max(row_height, piece.shape[0])
        top += row_height
    return out


def torchvision_resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    out = tvf.resize(tensor, list(size), interpolation=InterpolationMode.BILINEAR, antialias=True)
    return out.permute(1, 2, 0).numpy()


def opencv(interpolation: int) -> Callable[[np.ndarray, tuple[int, int]], np.ndarray]:
    return lambda image, size: cv2.resize(image, size[::-1], interpolation=interpolation)


def gaussian_then_linear(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Blur with the Gaussian whose variance makes up a triangle filter's, then bilinear."""
    sy, sx = image.shape[0] / size[0], image.shape[1] / size[1]
    sigma = [max(max(s * s - 1, 0) / 6, 1e-6) ** 0.5 for s in (sx, sy)]
    blurred = cv2.GaussianBlur(image, (0, 0), sigmaX=sigma[0], sigmaY=sigma[1])
    return cv2.resize(blurred, size[::-1], interpolation=cv2.INTER_LINEAR)


def pyramid_then_area(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    while image.shape[0] >= 2 * size[0] and image.shape[1] >= 2 * size[1]:
        image = cv2.pyrDown(image)
    return cv2.resize(image, size[::-1], interpolation=cv2.INTER_AREA)


def edgevpr(version: int) -> Callable[[np.ndarray, tuple[int, int]], np.ndarray]:
    return lambda image, size: resize_rgb(image, PreprocessSpec(*size, version=version))


RESIZES = {
    "OpenCV INTER_LINEAR (edgevpr preprocessing v1)": edgevpr(1),
    "OpenCV INTER_AREA": opencv(cv2.INTER_AREA),
    "OpenCV INTER_CUBIC": opencv(cv2.INTER_CUBIC),
    "OpenCV GaussianBlur + INTER_LINEAR": gaussian_then_linear,
    "OpenCV pyrDown + INTER_AREA": pyramid_then_area,
    "edgevpr preprocessing v2 (box pre-reduction + antialiased bilinear)": edgevpr(2),
}


class Describer:
    """Descriptors of resized images by MixVPR-Lite0 512 at one input size."""

    def __init__(self, size: tuple[int, int]) -> None:
        torch.manual_seed(0)
        config = get_preset("mixvpr_lite0_512").with_size(*size)
        self.model = build_model(config, pretrained=True).eval()
        self.spec = config.preprocess
        self.size = size

    def __call__(self, resized: list[np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            return self.model(torch.from_numpy(normalize(np.stack(resized), self.spec))).numpy()

    def of(self, images: list[np.ndarray]) -> np.ndarray:
        return self([resize_rgb(i, self.spec) for i in images])


def median_ms(fn: Callable[[], object], runs: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def resize_table(
    images: dict[str, np.ndarray], describers: list[Describer], runs: int
) -> list[str]:
    lines = [
        "| resize | input | cosine to torchvision: min / mean | pixel MAE max | "
        "ms for a 12 MP frame |",
        "|---|---|---|---|---|",
    ]
    big = images["mosaic 12MP #1"]
    for describer in describers:
        size = describer.size
        reference = describer([torchvision_resize(i, size) for i in images.values()])
        for name, resize in RESIZES.items():
            resized = [resize(i, size) for i in images.values()]
            cosine = np.sum(describer(resized) * reference, axis=1)
            mae = max(
                np.abs(r.astype(np.int16) - torchvision_resize(i, size)).mean()
                for r, i in zip(resized, images.values(), strict=True)
            )
            ms = median_ms(lambda resize=resize, size=size: resize(big, size), runs)
            lines.append(
                f"| {name} | {size[1]}x{size[0]} | {cosine.min():.4f} / {cosine.mean():.4f} "
                f"| {mae:.2f} | {ms:.1f} |"
            )
    ms = median_ms(lambda: torchvision_resize(big, SIZES[1]), runs)
    lines.append(
        f"| torchvision Resize(antialias=True), the reference | 320x320 | 1 | 0 | {ms:.1f} |"
    )
    return lines


def per_photo_table(images: dict[str, np.ndarray], describer: Describer) -> list[str]:
    size = describer.size
    reference = describer([torchvision_resize(i, size) for i in images.values()])
    v1 = describer([edgevpr(1)(i, size) for i in images.values()])
    v2 = describer([edgevpr(2)(i, size) for i in images.values()])
    lines = [
        f"| photo | size | v1 cosine to torchvision | v2 cosine to torchvision "
        f"(input {size[1]}x{size[0]}) |",
        "|---|---|---|---|",
    ]
    for row, (name, image) in enumerate(images.items()):
        lines.append(
            f"| {name} | {image.shape[1]}x{image.shape[0]} | {v1[row] @ reference[row]:.4f} "
            f"| {v2[row] @ reference[row]:.4f} |"
        )
    return lines


def reduced_decode_table(
    images: dict[str, np.ndarray], describers: list[Describer], runs: int
) -> list[str]:
    lines = [
        "| input | decode | margin | decoded size | decode ms (median) | cosine to full decode |",
        "|---|---|---|---|---|---|",
    ]
    encoded = {
        name: cv2.imencode(
            ".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90]
        )[1].tobytes()
        for name, image in images.items()
        if name.startswith("mosaic")
    }
    import edgevpr.core.images as images_module

    kept = images_module.REDUCED_DECODE_MARGIN
    for describer in describers:
        size = describer.size
        full = [decode_image(data) for data in encoded.values()]
        reference = describer.of(full)
        ms = median_ms(lambda: decode_image(next(iter(encoded.values()))), runs)
        lines.append(
            f"| {size[1]}x{size[0]} | full | - | {full[0].shape[1]}x{full[0].shape[0]} "
            f"| {ms:.1f} | 1 |"
        )
        for margin in (1, 2, 3, 4):
            images_module.REDUCED_DECODE_MARGIN = margin
            try:
                reduced = [decode_image(data, min_size=size) for data in encoded.values()]
                first = next(iter(encoded.values()))
                ms = median_ms(
                    lambda first=first, size=size: decode_image(first, min_size=size), runs
                )
            finally:
                images_module.REDUCED_DECODE_MARGIN = kept
            cosine = np.sum(describer.of(reduced) * reference, axis=1)
            lines.append(
                f"| {size[1]}x{size[0]} | reduced | {margin} "
                f"| {reduced[0].shape[1]}x{reduced[0].shape[0]} | {ms:.1f} "
                f"| {cosine.min():.5f} |"
            )
    lines += ["", "| input | decode + resize of a 12 MP JPEG, as the runtime does it | ms |"]
    lines.append("|---|---|---|")
    first = next(iter(encoded.values()))
    for size in SIZES:
        for version in (1, 2):
            spec = PreprocessSpec(*size, version=version)
            ms = median_ms(
                lambda spec=spec: resize_rgb(decode_image(first, min_size=spec.decode_size), spec),
                runs,
            )
            lines.append(f"| {size[1]}x{size[0]} | preprocessing v{version} | {ms:.1f} |")
    return lines


def orientation_table(images: dict[str, np.ndarray], describer: Describer) -> list[str]:
    upright = [images[n] for n in PHOTOS]
    reference = describer.of(upright)
    lines = ["| EXIF orientation | cosine of the stored pixels' descriptor to the upright one |"]
    lines.append("|---|---|")
    # A camera stores rows so that applying the tag turns them upright; undo each tag here.
    undo = {2: 2, 3: 3, 4: 4, 5: 5, 6: 8, 7: 7, 8: 6}
    for tag, inverse in undo.items():
        stored = [apply_orientation(image, inverse) for image in upright]
        cosine = np.sum(describer.of(stored) * reference, axis=1)
        lines.append(f"| {tag} | {cosine.min():.3f} - {cosine.max():.3f} |")
    return lines


def colour_order_lines(describer: Describer) -> list[str]:
    from edgevpr.data.layout import read_split
    from edgevpr.eval.recall import nearest, recall_at_n

    if not (SHARED / "corridor").is_dir():
        return ["(corridor not found beside the repository: skipped)"]
    split = read_split(SHARED / "corridor", "test")
    positives = split.positives(25.0)
    lines = ["| frames from cv2.imread given as | corridor R@1 |", "|---|---|"]
    for label, encoding in (
        ("BGR, encoding='bgr8' (converted)", "bgr8"),
        ("BGR, taken as RGB (the old silent mistake)", "rgb8"),
    ):

        def embed(paths, encoding=encoding):
            return describer.of([to_rgb8(cv2.imread(str(p)), encoding) for p in paths])

        found, _ = nearest(embed(split.database.paths), embed(split.queries.paths), 1)
        recall = recall_at_n(found, positives, (1,)).values[1]
        lines.append(f"| {label} | {recall:.1f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/inputs.md"))
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(2)
    images = photos()
    describers = [Describer(size) for size in SIZES]
    cpu = describe_cpu(machine_info())
    sections = [
        "# Inputs: resizing, reduced JPEG decoding, orientation, colour order",
        "",
        f"Generated by `python benchmarks/inputs.py` on {cpu}, {torch.get_num_threads()} "
        "threads; times are medians. Model: MixVPR-Lite0 512 (ImageNet EfficientNet-Lite0, "
        "untrained MixVPR head, seed 0), PyTorch FP32.",
        "",
        "## 1. Resize against torchvision's Resize(antialias=True)",
        "",
        *resize_table(images, describers, args.runs),
        "",
        *per_photo_table(images, describers[0]),
        "",
        "## 2. Reduced JPEG decoding of 12 MP photos",
        "",
        *reduced_decode_table(images, describers, args.runs),
        "",
        "## 3. EXIF orientation ignored",
        "",
        *orientation_table(images, describers[0]),
        "",
        "## 4. Colour order",
        "",
        *colour_order_lines(describers[0]),
        "",
    ]
    args.out.write_text("\n".join(sections))
    print("\n".join(sections))


if __name__ == "__main__":
    main()
