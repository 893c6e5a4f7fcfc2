"""Frames for ``render_mode="rgb_array"`` and GIF dumps of dialogs."""

from __future__ import annotations

import io
import os
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from fiq_gym.utils.atomic import atomic_write_bytes

__all__ = ["render_frame", "save_gif"]

FRAME_SIZE = 256
_TEXT_HEIGHT = 64


def render_frame(
    image: np.ndarray | None,
    caption: str,
    turn: int,
    max_turns: int,
    *,
    rank: int | None = None,
    num_items: int | None = None,
) -> np.ndarray:
    """The shown garment enlarged, with the turn, the target's rank and the caption beneath."""
    frame = Image.new("RGB", (FRAME_SIZE, FRAME_SIZE + _TEXT_HEIGHT), (255, 255, 255))
    if image is not None:
        garment = Image.fromarray(np.asarray(image)).resize(
            (FRAME_SIZE, FRAME_SIZE), Image.Resampling.NEAREST
        )
        frame.paste(garment, (0, 0))
    draw = ImageDraw.Draw(frame)
    font = ImageFont.load_default()
    header = f"turn {turn}/{max_turns}"
    if rank is not None and num_items is not None:
        header += f"   target rank {rank}/{num_items - 1}"
    draw.text((6, FRAME_SIZE + 4), header, fill=(90, 90, 90), font=font)
    for k, line in enumerate(textwrap.wrap(f'"{caption}"', width=40)[:3]):
        draw.text((6, FRAME_SIZE + 18 + 14 * k), line, fill=(10, 10, 10), font=font)
    return np.asarray(frame, dtype=np.uint8)


def save_gif(
    frames: Sequence[np.ndarray], path: str | os.PathLike, *, seconds_per_frame: float = 1.2
) -> Path:
    """Write ``frames`` (H x W x 3 uint8) as a looping GIF, atomically."""
    if not frames:
        raise ValueError("no frames to save: render with render_mode='rgb_array' during the dialog")
    images = [Image.fromarray(np.asarray(f, dtype=np.uint8)) for f in frames]
    buffer = io.BytesIO()
    images[0].save(
        buffer,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=int(seconds_per_frame * 1000),
        loop=0,
    )
    path = Path(path)
    atomic_write_bytes(path, buffer.getvalue())
    return path
