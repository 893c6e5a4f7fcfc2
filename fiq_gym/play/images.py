"""PNG pictures of garments for the play front ends: one garment, or target and shown side by side."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from fiq_gym.catalog.model import Catalog
from fiq_gym.utils.atomic import atomic_write_bytes

__all__ = ["garment_image", "pair_image", "png_bytes", "save_png"]

DISPLAY_SIDE = 192
_LABEL_HEIGHT = 18


def garment_image(catalog: Catalog, row: int, side: int = DISPLAY_SIDE) -> Image.Image:
    """Catalog row ``row`` enlarged to ``side`` x ``side`` (nearest neighbour for small synthetic
    images, so edges stay crisp); a grey card for catalogs without pixels."""
    if catalog.images is None:
        card = Image.new("RGB", (side, side), (220, 220, 220))
        ImageDraw.Draw(card).text(
            (8, side // 2 - 6), "no image", fill=(90, 90, 90), font=ImageFont.load_default()
        )
        return card
    image = Image.fromarray(np.asarray(catalog.images[int(row)]))
    small = max(image.size) <= side
    return image.resize((side, side), Image.Resampling.NEAREST if small else Image.Resampling.LANCZOS)


def pair_image(catalog: Catalog, target_row: int, shown_row: int, shown_label: str = "shown") -> Image.Image:
    """Target (left) and shown garment (right), each labelled above."""
    side, gap = DISPLAY_SIDE, 12
    canvas = Image.new("RGB", (2 * side + 3 * gap, side + _LABEL_HEIGHT + 2 * gap), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for k, (row, label) in enumerate(((target_row, "your target"), (shown_row, shown_label))):
        x = gap + k * (side + gap)
        draw.text((x, gap - 2), label, fill=(40, 40, 40), font=font)
        canvas.paste(garment_image(catalog, row, side), (x, gap + _LABEL_HEIGHT))
    return canvas


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def save_png(image: Image.Image, path: str | os.PathLike) -> Path:
    """Write ``image`` as PNG atomically."""
    atomic_write_bytes(path, png_bytes(image))
    return Path(path)
