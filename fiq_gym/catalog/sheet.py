"""Contact sheets: a grid of catalog items with their attributes printed beneath."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from fiq_gym.catalog.model import Catalog
from fiq_gym.errors import CatalogError
from fiq_gym.utils.atomic import atomic_write_bytes

__all__ = ["contact_sheet", "save_contact_sheet"]

_ATTRIBUTE_ABBREVIATIONS = {"polka dots": "dots", "sleeveless": "no slv"}


def contact_sheet(catalog: Catalog, indices: np.ndarray, *, columns: int = 8, scale: int = 2) -> Image.Image:
    """Tile the images of ``indices`` with category and attribute values beneath each."""
    if catalog.images is None:
        raise CatalogError("this catalog has no images, so it has no contact sheet")
    indices = np.asarray(indices, dtype=np.int64)
    h, w = catalog.image_size  # type: ignore[misc]
    tile_w, img_h = w * scale, h * scale
    font = ImageFont.load_default()
    line_h = 11
    lines_per_item = 4
    tile_h = img_h + line_h * lines_per_item + 4
    rows = int(np.ceil(len(indices) / columns))
    sheet = Image.new("RGB", (columns * tile_w, rows * tile_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for k, index in enumerate(indices):
        item = catalog.item(int(index))
        x, y = (k % columns) * tile_w, (k // columns) * tile_h
        img = Image.fromarray(np.asarray(item.image)).resize((tile_w, img_h), Image.Resampling.NEAREST)
        sheet.paste(img, (x, y))
        values = [_ATTRIBUTE_ABBREVIATIONS.get(v, v) for v in item.attributes.values()]
        text = [item.category] + [" ".join(values[i : i + 2]) for i in range(0, len(values), 2)]
        for j, line in enumerate(text[:lines_per_item]):
            draw.text((x + 3, y + img_h + 2 + j * line_h), line, fill=(20, 20, 20), font=font)
    return sheet


def save_contact_sheet(
    catalog: Catalog,
    out: str | os.PathLike,
    *,
    count: int = 32,
    seed: int = 0,
    columns: int = 8,
    scale: int = 2,
) -> Path:
    """Write a PNG contact sheet of ``count`` items sampled with ``seed``; return its path."""
    rng = np.random.default_rng(seed)
    count = min(count, len(catalog))
    indices = np.sort(rng.choice(len(catalog), size=count, replace=False))
    image = contact_sheet(catalog, indices, columns=columns, scale=scale)
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    out = Path(out)
    atomic_write_bytes(out, buffer.getvalue())
    return out
