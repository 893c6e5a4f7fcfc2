"""Procedural garment renderer for the synthetic catalog.

Every attribute must be visible: colour (with shade), pattern, sleeve length, garment length,
neckline and fit, on a plain background with the garment centred. Shapes are drawn at twice
the output size and downsampled, so edges stay smooth at 64x64.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from fiq_gym.catalog.synthetic_spec import COLOR_RGB, HEM_HEIGHT

__all__ = ["BACKGROUND_RGB", "GarmentSpec", "render_garment", "shaded_rgb"]

BACKGROUND_RGB = (228, 230, 233)
_SUPERSAMPLE = 2

# How far a shade may move a colour towards black or white. Near colours (brown / beige,
# black / grey) get less room so that a shade never reads as the neighbouring colour.
_SHADE_AMPLITUDE = {"black": 0.22, "grey": 0.18, "white": 0.06, "brown": 0.18, "beige": 0.15}
_DEFAULT_SHADE_AMPLITUDE = 0.3

_SLEEVE_LENGTH = {"sleeveless": 0.0, "short": 0.09, "elbow": 0.19, "long": 0.33}
_SHOULDER_HALF_WIDTH = {"fitted": 0.15, "regular": 0.17, "loose": 0.20}
_WAIST_HALF_WIDTH = {"fitted": 0.105, "regular": 0.135, "loose": 0.185}
# Skirt flare: extra half-width of the hem per unit of skirt length.
_FLARE = {"fitted": 0.12, "regular": 0.42, "loose": 0.62}
_SHOULDER_Y = 0.17
_WAIST_Y = 0.42


@dataclass(frozen=True)
class GarmentSpec:
    """What to draw; ``shade`` in [-1, 1] darkens (negative) or lightens (positive) the colour."""

    category: str
    color: str
    pattern: str
    sleeve: str
    length: str
    neckline: str
    fit: str
    shade: float = 0.0
    pattern_offset: tuple[int, int] = (0, 0)


def shaded_rgb(color: str, shade: float) -> tuple[int, int, int]:
    """The garment's main colour: the named colour moved towards black or white by ``shade``."""
    base = np.array(COLOR_RGB[color], dtype=np.float64)
    amount = _SHADE_AMPLITUDE.get(color, _DEFAULT_SHADE_AMPLITUDE) * float(shade)
    rgb = base * (1.0 + amount) if amount < 0 else base + (255.0 - base) * amount
    return tuple(round(v) for v in np.clip(rgb, 0, 255))


def _luminance(rgb: tuple[int, int, int]) -> float:
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


def _accent_rgb(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """Second colour of a pattern: light on dark garments, dark on light ones."""
    return (250, 250, 250) if _luminance(rgb) < 150 else (35, 40, 70)


@lru_cache(maxsize=32)
def _pattern_masks(pattern: str, size: int) -> tuple[Image.Image, Image.Image]:
    """(accent mask, centre mask) for a pattern, as 2*size square "L" images.

    Computed once per pattern and size; each item crops a size x size window at its own
    offset, so patterns do not line up identically on every garment.
    """
    full = 2 * size
    yy, xx = np.mgrid[0:full, 0:full].astype(np.float32) + 0.5
    accent = np.zeros((full, full), np.float32)
    centre = np.zeros((full, full), np.float32)
    if pattern == "stripes":
        period = size / 9.0
        accent = ((yy % period) < period * 0.45).astype(np.float32)
    elif pattern == "polka dots":
        period = size / 8.0
        row = np.floor(yy / period)
        shift = (row % 2) * period / 2
        dx = ((xx + shift) % period) - period / 2
        dy = (yy % period) - period / 2
        accent = (dx * dx + dy * dy <= (size / 42.0) ** 2).astype(np.float32)
    elif pattern == "checks":
        period = size / 7.0
        bx = (xx % period) < period / 2
        by = (yy % period) < period / 2
        # Gingham: full accent where bands cross, half where one band runs.
        accent = 0.5 * bx.astype(np.float32) + 0.5 * by.astype(np.float32)
    elif pattern == "floral":
        period = size / 5.0
        row = np.floor(yy / period)
        shift = (row % 2) * period / 2
        dx = ((xx + shift) % period) - period / 2
        dy = (yy % period) - period / 2
        petal_r = size / 40.0
        ring = size / 28.0
        for k in range(5):
            angle = 2 * np.pi * k / 5
            px, py = ring * np.cos(angle), ring * np.sin(angle)
            accent = np.maximum(accent, ((dx - px) ** 2 + (dy - py) ** 2 <= petal_r**2).astype(np.float32))
        centre = (dx * dx + dy * dy <= (size / 55.0) ** 2).astype(np.float32)
        accent = np.clip(accent - centre, 0, 1)
    elif pattern != "solid":
        raise ValueError(f"unknown pattern {pattern!r}")
    as_image = lambda m: Image.fromarray((np.clip(m, 0, 1) * 255).astype(np.uint8), "L")  # noqa: E731
    return as_image(accent), as_image(centre)


def _paint_fabric(canvas: Image.Image, mask: Image.Image, spec: GarmentSpec) -> tuple[int, int, int]:
    """Paint the garment's fabric (colour and pattern) through ``mask``; return its main colour."""
    s = canvas.size[0]
    rgb = shaded_rgb(spec.color, spec.shade)
    fabric = Image.new("RGB", (s, s), rgb)
    if spec.pattern != "solid":
        accent_mask, centre_mask = _pattern_masks(spec.pattern, s)
        oy, ox = (spec.pattern_offset[0] % s, spec.pattern_offset[1] % s)
        box = (ox, oy, ox + s, oy + s)
        accent = _accent_rgb(rgb)
        if spec.pattern == "floral":
            # Flowers get warm petals and a yellow heart so they never read as plain dots.
            accent = (235, 90, 120) if spec.color not in ("red", "pink") else (250, 235, 90)
            heart = (250, 210, 40) if spec.color != "yellow" else (200, 60, 40)
            fabric.paste(heart, mask=centre_mask.crop(box))
        fabric.paste(accent, mask=accent_mask.crop(box))
    canvas.paste(fabric, mask=mask)
    return rgb


def _garment_polygons(spec: GarmentSpec) -> tuple[list[list[tuple[float, float]]], float]:
    """Body and sleeve polygons in unit coordinates, and the hem height."""
    hem = HEM_HEIGHT[spec.length]
    sleeveless = spec.sleeve == "sleeveless"
    shoulder = _SHOULDER_HALF_WIDTH[spec.fit] - (0.035 if sleeveless else 0.0)
    armpit_y = _SHOULDER_Y + 0.12
    chest = _SHOULDER_HALF_WIDTH[spec.fit] - 0.01
    if spec.category == "dress":
        waist = _WAIST_HALF_WIDTH[spec.fit]
        hem_half = min(waist + _FLARE[spec.fit] * (hem - _WAIST_Y), 0.46)
        right = [
            (shoulder, _SHOULDER_Y),
            (chest, armpit_y),
            (waist, _WAIST_Y),
            (hem_half, hem),
        ]
    else:
        # Tops hang straight; loose ones are boxy, fitted ones nip in at the waist.
        waist = {"fitted": 0.12, "regular": 0.15, "loose": 0.2}[spec.fit]
        hem_half = {"fitted": 0.135, "regular": 0.155, "loose": 0.205}[spec.fit]
        mid = min(_WAIST_Y, (armpit_y + hem) / 2)
        right = [(shoulder, _SHOULDER_Y), (chest, armpit_y), (waist, mid), (hem_half, hem)]
    body = [(0.5 + x, y) for x, y in right] + [(0.5 - x, y) for x, y in reversed(right)]
    polygons = [body]
    length = _SLEEVE_LENGTH[spec.sleeve]
    if length > 0:
        angle = np.deg2rad(58.0)
        dx, dy = np.cos(angle) * length, np.sin(angle) * length
        width_top = 0.012 if spec.fit == "fitted" else 0.02 if spec.fit == "regular" else 0.035
        for side in (1, -1):
            sx, sy = 0.5 + side * shoulder, _SHOULDER_Y
            ax, ay = 0.5 + side * chest, armpit_y
            polygons.append(
                [
                    (sx, sy),
                    (sx + side * (dx + width_top), sy + dy - 0.01),
                    (ax + side * (dx * 0.55), ay + dy * 0.8),
                    (ax, ay),
                ]
            )
    return polygons, hem


def _neckline_cut(draw: ImageDraw.ImageDraw, neckline: str, s: float, fill: int) -> None:
    """Cut the neckline out of the garment mask (unit coordinates scaled by ``s``)."""
    cx, top = 0.5 * s, _SHOULDER_Y * s
    if neckline == "crew":
        draw.ellipse([cx - 0.06 * s, top - 0.04 * s, cx + 0.06 * s, top + 0.04 * s], fill=fill)
    elif neckline == "v-neck":
        draw.polygon(
            [
                (cx - 0.075 * s, top - 0.01 * s),
                (cx + 0.075 * s, top - 0.01 * s),
                (cx, top + 0.15 * s),
            ],
            fill=fill,
        )
    elif neckline == "scoop":
        draw.ellipse([cx - 0.095 * s, top - 0.1 * s, cx + 0.095 * s, top + 0.1 * s], fill=fill)
    elif neckline == "square":
        draw.rectangle([cx - 0.08 * s, top - 0.02 * s, cx + 0.08 * s, top + 0.085 * s], fill=fill)
    elif neckline == "boat":
        draw.ellipse([cx - 0.13 * s, top - 0.025 * s, cx + 0.13 * s, top + 0.025 * s], fill=fill)
    elif neckline == "collar":
        draw.ellipse([cx - 0.055 * s, top - 0.035 * s, cx + 0.055 * s, top + 0.035 * s], fill=fill)
    else:
        raise ValueError(f"unknown neckline {neckline!r}")


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary-ish max filter with a square window, separable, on a uint8 array."""
    out = mask.copy()
    for axis in (0, 1):
        src = out.copy()
        for k in range(1, radius + 1):
            if axis == 0:
                np.maximum(out[k:], src[:-k], out=out[k:])
                np.maximum(out[:-k], src[k:], out=out[:-k])
            else:
                np.maximum(out[:, k:], src[:, :-k], out=out[:, k:])
                np.maximum(out[:, :-k], src[:, k:], out=out[:, :-k])
    return out


def render_garment(spec: GarmentSpec, size: int = 64) -> np.ndarray:
    """Render one garment as a (size, size, 3) uint8 image, centred on a plain background."""
    s = size * _SUPERSAMPLE
    polygons, hem = _garment_polygons(spec)
    mask_img = Image.new("L", (s, s), 0)
    draw = ImageDraw.Draw(mask_img)
    for poly in polygons:
        draw.polygon([(x * s, y * s) for x, y in poly], fill=255)
    _neckline_cut(draw, spec.neckline, s, 0)
    # Outline: the ring just outside the garment, so white garments stand off the background.
    mask = np.asarray(mask_img)
    ring = _dilate(mask, _SUPERSAMPLE)
    ring[mask > 0] = 0

    canvas = Image.new("RGB", (s, s), BACKGROUND_RGB)
    rgb = _paint_fabric(canvas, mask_img, spec)
    line = tuple(int(v * 0.55) for v in rgb)
    canvas.paste(line, mask=Image.fromarray(ring, "L"))

    dd = ImageDraw.Draw(canvas)
    lw = max(1, _SUPERSAMPLE)
    cx, top = 0.5 * s, _SHOULDER_Y * s
    if spec.category == "dress":
        # A waist seam tells a dress from a top at a glance.
        half = _WAIST_HALF_WIDTH[spec.fit] * s
        dd.line([(cx - half, _WAIST_Y * s), (cx + half, _WAIST_Y * s)], fill=line, width=lw)
    elif spec.category == "shirt":
        # Shirts carry a button placket from the neckline to the hem.
        start = top + 0.05 * s
        dd.line([(cx, start), (cx, hem * s - 0.01 * s)], fill=line, width=lw)
        for y in np.linspace(start + 0.04 * s, hem * s - 0.05 * s, 4):
            r = 0.012 * s
            dd.ellipse([cx + 0.02 * s - r, y - r, cx + 0.02 * s + r, y + r], fill=line)
    if spec.neckline == "collar":
        light = tuple(int(v) for v in np.clip(np.array(rgb) * 0.75 + 255 * 0.25, 0, 255))
        for side in (1, -1):
            flap = [
                (cx + side * 0.01 * s, top + 0.03 * s),
                (cx + side * 0.075 * s, top - 0.03 * s),
                (cx + side * 0.1 * s, top + 0.06 * s),
            ]
            dd.polygon(flap, fill=light, outline=line)
    # Centre the garment vertically: shift by half the empty space below the hem.
    shift = round((1.0 - hem - (_SHOULDER_Y - 0.05)) / 2 * s)
    if shift > 0:
        centred = Image.new("RGB", (s, s), BACKGROUND_RGB)
        centred.paste(canvas.crop((0, 0, s, s - shift)), (0, shift))
        canvas = centred
    out = canvas.resize((size, size), Image.Resampling.BOX)
    return np.asarray(out, dtype=np.uint8)
