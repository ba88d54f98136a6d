"""A procedural place-recognition set: every place is a random street scene (sky, skyline,
buildings with windows, poles, trees, signs, textured ground), and every image of it is a
new view under changed viewpoint (homography), light (gain, gamma, colour cast, dusk,
shadows) and occlusion (vehicles and pedestrians in front), with sensor noise and blur.

Written in the evaluation layout with UTM in the file names, so every tool reads it like
a real set: ``test`` and ``val`` splits (one database view and one query view per place)
and a ``train`` split (several views per place). Each image depends only on
(seed, split, place, view), so the output is the same on every run and machine, and
asking for more places keeps the existing ones.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from edgevpr.core.errors import EdgeVPRError

SPLIT_CODES = {"train": 1, "val": 2, "test": 3}
ORIGIN_EAST = 500_000.0  # plausible UTM values, so readers meet real magnitudes
ORIGIN_NORTH = 5_000_000.0
SPLIT_GAP_M = 100_000.0  # splits lie on separate stretches, far apart
POSITION_JITTER_M = 4.0  # views of a place are taken within this distance of it
CANVAS_MARGIN = 1.5  # the scene is drawn larger than the view, which is cut from it


@dataclass(frozen=True)
class SynthConfig:
    seed: int = 0
    places: int = 40
    val_places: int = 20
    train_places: int = 80
    train_views: int = 4
    height: int = 96
    width: int = 128
    spacing_m: float = 40.0

    def __post_init__(self) -> None:
        if min(self.places, self.val_places, self.train_places) < 0 or self.places < 1:
            raise EdgeVPRError("place counts must be >= 0 (test places >= 1)")
        if not 2 <= self.train_views <= 64:
            raise EdgeVPRError(f"train views per place must be in [2, 64], got {self.train_views}")
        if not (16 <= self.height <= 2048 and 16 <= self.width <= 2048):
            raise EdgeVPRError(f"image size {self.height}x{self.width} is out of range (16..2048)")
        if not 2 * POSITION_JITTER_M < self.spacing_m < math.inf:
            raise EdgeVPRError(f"place spacing must exceed {2 * POSITION_JITTER_M} m")

    def views(self, split: str) -> int:
        return self.train_views if split == "train" else 2

    def count(self, split: str) -> int:
        return {"train": self.train_places, "val": self.val_places, "test": self.places}[split]


def rng_for(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed, *keys])


def random_color(rng: np.random.Generator, low: int = 0, high: int = 256) -> tuple[int, ...]:
    return tuple(int(c) for c in rng.integers(low, high, size=3))


def gradient(height: int, width: int, top: tuple[int, ...], bottom: tuple[int, ...]) -> np.ndarray:
    t = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    column = (1 - t) * np.array(top, np.float32) + t * np.array(bottom, np.float32)
    return np.repeat(column, width, axis=1)


def draw_building(canvas: np.ndarray, rng: np.random.Generator, x0: int, horizon: int) -> int:
    """A facade standing on the horizon, with a grid of windows; returns its right edge."""
    h, w = canvas.shape[:2]
    width = int(rng.integers(w // 12, w // 4))
    top = int(rng.integers(h // 10, max(h // 10 + 1, horizon - h // 12)))
    right = min(w - 1, x0 + width)
    cv2.rectangle(canvas, (x0, top), (right, horizon + h // 20), random_color(rng), -1)
    if rng.random() < 0.8:
        window = random_color(rng)
        cols, rows = int(rng.integers(2, 6)), int(rng.integers(2, 7))
        cell_w, cell_h = (right - x0) / (cols + 1), (horizon - top) / (rows + 1)
        for i in range(1, cols + 1):
            for j in range(1, rows + 1):
                cx, cy = int(x0 + i * cell_w), int(top + j * cell_h)
                half_w, half_h = max(1, int(cell_w / 4)), max(1, int(cell_h / 4))
                cv2.rectangle(
                    canvas, (cx - half_w, cy - half_h), (cx + half_w, cy + half_h), window, -1
                )
    return right


def draw_scene(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """One place: a random street scene, float32 RGB in [0, 255]."""
    horizon = int(height * rng.uniform(0.4, 0.62))
    sky = gradient(horizon, width, random_color(rng, 90, 256), random_color(rng, 150, 256))
    ground = gradient(
        height - horizon, width, random_color(rng, 40, 200), random_color(rng, 0, 140)
    )
    canvas = np.ascontiguousarray(np.concatenate([sky, ground]))
    # Skyline: a band of far hills, then buildings from left to right with gaps.
    hills = [(x, int(horizon - rng.uniform(0.02, 0.15) * height)) for x in np.linspace(0, width, 9)]
    polygon = np.array([(0, horizon), *hills, (width, horizon)], dtype=np.int32)
    cv2.fillPoly(canvas, [polygon], random_color(rng, 30, 160))
    x = int(rng.integers(0, width // 8))
    while x < width:
        x = draw_building(canvas, rng, x, horizon) + int(rng.integers(0, width // 10))
    for _ in range(int(rng.integers(2, 6))):  # poles and trees
        px = int(rng.integers(0, width))
        base = int(rng.integers(horizon, height))
        top = int(base - rng.uniform(0.2, 0.5) * height)
        cv2.line(canvas, (px, base), (px, top), random_color(rng, 0, 120), max(1, width // 80))
        if rng.random() < 0.5:
            radius = int(rng.uniform(0.04, 0.1) * width)
            cv2.circle(canvas, (px, top), radius, random_color(rng, 0, 160), -1)
    for _ in range(int(rng.integers(1, 4))):  # signs: small saturated landmarks
        cx, cy = int(rng.integers(0, width)), int(rng.integers(height // 5, height - height // 5))
        size = int(rng.uniform(0.02, 0.05) * width) + 2
        color = tuple(int(c) for c in rng.permutation([255, int(rng.integers(0, 256)), 0]))
        if rng.random() < 0.5:
            cv2.circle(canvas, (cx, cy), size, color, -1)
        else:
            triangle = np.array([(cx, cy - size), (cx - size, cy + size), (cx + size, cy + size)])
            cv2.fillPoly(canvas, [triangle.astype(np.int32)], color)
    texture = cv2.resize(rng.normal(0, 14, (8, 10)).astype(np.float32), (width, height))
    return canvas + texture[:, :, None]


def view_homography(
    rng: np.random.Generator, scene_hw: tuple[int, int], out_hw: tuple[int, int], strength: float
) -> np.ndarray:
    """Maps the output view into the scene: a moved, turned, zoomed and tilted camera."""
    (sh, sw), (oh, ow) = scene_hw, out_hw
    scale = math.exp(rng.uniform(-0.15, 0.15) * strength)
    angle = math.radians(rng.uniform(-5, 5) * strength)
    crop_w, crop_h = sw / CANVAS_MARGIN / scale, sh / CANVAS_MARGIN / scale
    cx = sw / 2 + rng.uniform(-0.12, 0.12) * strength * sw
    cy = sh / 2 + rng.uniform(-0.06, 0.06) * strength * sh
    corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float32) * [crop_w / 2, crop_h / 2]
    corners += rng.uniform(-0.05, 0.05, (4, 2)) * strength * [crop_w, crop_h]
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    scene_pts = (corners @ rot.T + [cx, cy]).astype(np.float32)
    view_pts = np.array([[0, 0], [ow, 0], [ow, oh], [0, oh]], np.float32)
    return cv2.getPerspectiveTransform(view_pts, scene_pts)


def relight(image: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Exposure, gamma, colour cast, dusk and a cast shadow."""
    h, w = image.shape[:2]
    out = image / 255.0
    out = np.clip(out, 0, 1) ** math.exp(rng.uniform(-0.45, 0.45) * strength)
    out = out * math.exp(rng.uniform(-0.5, 0.3) * strength)
    out = out * (1 + rng.uniform(-0.15, 0.15, 3) * strength)
    if rng.random() < 0.3 * strength:  # dusk: darker, bluer
        out = out * np.array([0.55, 0.6, 0.85])
    if rng.random() < 0.4 * strength:  # a shadow over one side of a random line
        yy, xx = np.mgrid[0:h, 0:w]
        a, b = rng.normal(size=2)
        side = (xx - w * rng.uniform(0.2, 0.8)) * a + (yy - h * rng.uniform(0.2, 0.8)) * b > 0
        out = np.where(side[:, :, None], out * rng.uniform(0.45, 0.75), out)
    return out * 255.0


def occlude(image: np.ndarray, rng: np.random.Generator, strength: float) -> None:
    """Vehicles and pedestrians between the camera and the place, drawn in place."""
    h, w = image.shape[:2]
    for _ in range(int(rng.integers(0, 3 + 1) * strength)):
        color = random_color(rng)
        cx, cy = int(rng.integers(0, w)), int(rng.integers(h // 2, h))
        if rng.random() < 0.5:  # vehicle
            half_w, half_h = int(rng.uniform(0.08, 0.2) * w), int(rng.uniform(0.05, 0.12) * h)
            cv2.rectangle(image, (cx - half_w, cy - half_h), (cx + half_w, cy + half_h), color, -1)
        else:  # pedestrian
            axes = (
                max(1, int(rng.uniform(0.02, 0.05) * w)),
                max(1, int(rng.uniform(0.1, 0.25) * h)),
            )
            cv2.ellipse(image, (cx, cy), axes, 0, 0, 360, color, -1)


def render_view(
    scene: np.ndarray, rng: np.random.Generator, out_hw: tuple[int, int], strength: float
) -> np.ndarray:
    """One photograph of a place: uint8 RGB of size ``out_hw``."""
    homography = view_homography(rng, scene.shape[:2], out_hw, strength)
    view = cv2.warpPerspective(
        scene,
        homography,
        (out_hw[1], out_hw[0]),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REFLECT,
    )
    view = np.ascontiguousarray(relight(view, rng, strength), dtype=np.float32)
    occlude(view, rng, strength)
    if rng.random() < 0.3 * strength:
        view = cv2.GaussianBlur(view, (0, 0), rng.uniform(0.5, 1.2))
    view = view + rng.normal(0, rng.uniform(0, 5) * strength, view.shape)
    return np.clip(view, 0, 255).astype(np.uint8)


def file_name(east: float, north: float, stem: str) -> str:
    """The evaluation layout's name: @east@north@zone@letter@lat@lon@pano@...@.png"""
    return f"@{east:.2f}@{north:.2f}@@@@@{stem}@@@@@@@@.png"


def write_png(path: Path, rgb: np.ndarray) -> None:
    ok, data = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise EdgeVPRError(f"cannot encode {path}")
    path.write_bytes(data.tobytes())


def write_split(root: Path, split: str, config: SynthConfig) -> dict[str, int]:
    """Draw every place of a split and write its views (half database, half queries)."""
    out_hw = (config.height, config.width)
    scene_hw = (int(config.height * CANVAS_MARGIN), int(config.width * CANVAS_MARGIN))
    views = config.views(split)
    counts = {"database": 0, "queries": 0}
    for folder in counts:
        (root / "images" / split / folder).mkdir(parents=True)
    east0 = ORIGIN_EAST + SPLIT_CODES[split] * SPLIT_GAP_M
    for place in range(config.count(split)):
        code = SPLIT_CODES[split]
        scene = draw_scene(rng_for(config.seed, code, place), *scene_hw)
        for view in range(views):
            rng = rng_for(config.seed, code, place, view + 1)
            folder = "database" if view < views // 2 else "queries"
            # Reference views are taken in daylight from the road's centre; queries vary.
            strength = 0.5 if (folder == "database" and split != "train") else 1.0
            image = render_view(scene, rng, out_hw, strength)
            offset = rng.uniform(-POSITION_JITTER_M, POSITION_JITTER_M, 2) / math.sqrt(2)
            east, north = east0 + offset[0], ORIGIN_NORTH + place * config.spacing_m + offset[1]
            stem = f"synth-{split}-p{place:05d}-v{view:02d}"
            write_png(root / "images" / split / folder / file_name(east, north, stem), image)
            counts[folder] += 1
    return counts


def generate(out: str | os.PathLike[str], config: SynthConfig, overwrite: bool = False) -> dict:
    """Write the set to ``out``; built in a temporary folder beside it and moved into place
    whole, so an interrupted run never leaves a half-written set (or loses an old one)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise EdgeVPRError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise EdgeVPRError(f"{out} exists and is not empty (pass --overwrite to replace it)")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as exc:
        raise EdgeVPRError(f"cannot write {out}: {exc.strerror or exc}") from None
    try:
        summary: dict = {"config": asdict(config), "splits": {}}
        for split in ("train", "val", "test"):
            if config.count(split):
                summary["splits"][split] = write_split(tmp, split, config)
        (tmp / "synth.json").write_text(json.dumps(summary, indent=2) + "\n")
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary
