"""Frames from a stream, ready for a localizer: what a source knows of each frame
(:class:`StreamFrame`), pixels as the model reads them, and the lazy loop that decodes and
embeds the next frames while the current ones are tracked."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgevpr.core.errors import EdgeVPRError
from edgevpr.core.images import decode_image
from edgevpr.core.pixels import DEFAULT_ENCODING, to_rgb8
from edgevpr.core.preprocess import PreprocessSpec, read_for_model
from edgevpr.runtime.embedder import Embedder

# A frame whose grey levels vary less than this (0-255) is blank: a covered lens, a black
# or white frame. It is never accepted, and the trackers skip it.
BLANK_STD = 2.0


@dataclass(frozen=True)
class StreamFrame:
    """A frame with what its source knows about it (for :meth:`Localizer.run`)."""

    image: Any  # pixels (in ``encoding``), a file path, or encoded bytes
    timestamp: float | None = None
    name: str | None = None
    encoding: str = DEFAULT_ENCODING
    odometry: tuple[float, float] | None = None  # metres east, north since the last frame


def prepared_frame(frame: Any, encoding: str, spec: PreprocessSpec) -> tuple[np.ndarray, bool]:
    """A frame as RGB pixels (decoded as the model reads files), and whether it is blank."""
    if isinstance(frame, np.ndarray):
        rgb = to_rgb8(frame, encoding, "frame")
    elif isinstance(frame, (str, os.PathLike)):
        rgb = read_for_model(frame, spec)
    elif isinstance(frame, (bytes, bytearray, memoryview)):
        rgb = decode_image(bytes(frame), "frame", spec.decode_size)
    else:
        raise EdgeVPRError(
            f"a frame must be pixels, a file path or encoded bytes, not {type(frame).__name__}"
        )
    step = max(1, min(rgb.shape[:2]) // 64)
    return rgb, float(rgb[::step, ::step].std()) < BLANK_STD


def embedded_frames(
    embedder: Embedder, frames: Iterable[Any], encoding: str, progress: bool,
    on_unreadable: Callable[[StreamFrame, EdgeVPRError], None] | None,
) -> Iterator[tuple[StreamFrame, bool, np.ndarray]]:  # fmt: skip
    """Each readable frame with whether it is blank and its descriptor, lazily: the next
    batch is decoded and embedded while the caller handles the current one."""
    # what the decoding thread learnt of each frame it passed on, in order
    pending: deque[tuple[StreamFrame, bool]] = deque()

    def prepared() -> Iterator[np.ndarray]:
        for given in frames:
            item = given if isinstance(given, StreamFrame) else StreamFrame(given, None)
            try:
                rgb, blank = prepared_frame(item.image, item.encoding or encoding, embedder.spec)
            except EdgeVPRError as exc:
                if on_unreadable is None:
                    raise
                on_unreadable(item, exc)
                continue
            pending.append((item, blank))
            yield rgb

    for _, descriptors in embedder.stream(prepared(), progress=progress):
        for descriptor in descriptors:
            item, blank = pending.popleft()
            yield item, blank, descriptor


def frame_name(item: StreamFrame) -> str | None:
    """What a frame is called in a fix: its own name, else its file's."""
    if item.name:
        return item.name
    return str(Path(item.image)) if isinstance(item.image, (str, os.PathLike)) else None
