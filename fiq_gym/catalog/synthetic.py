"""The synthetic garment catalog: attributes sampled from a seed, images rendered from them.

Items are produced in fixed-size chunks, each from its own seeded generator
(``numpy.random.default_rng([seed, chunk])``), so the catalog is the same whatever the
machine, and memory stays flat however many items are asked for: each chunk goes straight
into the memory-mapped arrays of the catalog being written.

``images="lazy"`` stores no images: it stores each garment's shade and pattern offset instead,
from which :class:`~fiq_gym.catalog.lazy_images.LazyImages` renders any image on demand,
identical to the stored one (12 kB an item less at 64x64: 12 GB at a million items).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from fiq_gym.catalog.limits import MAX_IMAGE_SIZE, MIN_SYNTHETIC_IMAGE_SIZE
from fiq_gym.catalog.model import Catalog
from fiq_gym.catalog.render import GarmentSpec, render_garment, shaded_rgb
from fiq_gym.catalog.storage import CatalogWriter, open_catalog
from fiq_gym.catalog.synthetic_spec import (
    CATEGORIES,
    GENERATOR_VERSION,
    LENGTHS_BY_CATEGORY,
    SYNTHETIC_VOCABULARY,
)
from fiq_gym.utils.atomic import atomic_directory
from fiq_gym.utils.workers import WorkerPool

__all__ = [
    "GENERATOR_VERSION",
    "IMAGE_MODES",
    "SyntheticAttributes",
    "build_synthetic_catalog",
    "describe",
    "sample_attributes",
    "write_synthetic_catalog",
]

CHUNK_SIZE = 1024
#: ``"stored"``: images in ``images.npy``; ``"lazy"``: rendered on demand from stored attributes.
IMAGE_MODES = ("stored", "lazy")
_PATTERN_WEIGHTS = np.array([0.36, 0.16, 0.16, 0.16, 0.16])


@dataclass(frozen=True)
class SyntheticAttributes:
    """Attributes of a block of items: per-type value codes, categories, shades, offsets."""

    categories: np.ndarray  # (n,) int16 codes into CATEGORIES
    codes: np.ndarray  # (n, T) int16 codes into SYNTHETIC_VOCABULARY
    shades: np.ndarray  # (n,) float, -1 (darker) .. 1 (lighter)
    pattern_offsets: np.ndarray  # (n, 2) int
    description_draws: np.ndarray  # (n, 3) uniform numbers that pick wordings


def sample_attributes(rng: np.random.Generator, n: int) -> SyntheticAttributes:
    """Sample ``n`` items' attributes: categories, colours and styles uniform, solid a bit
    more common than each print (as in shops), lengths from the category's own set."""
    vocab = SYNTHETIC_VOCABULARY
    categories = rng.integers(0, len(CATEGORIES), size=n).astype(np.int16)
    codes = np.empty((n, len(vocab)), dtype=np.int16)
    codes[:, 0] = rng.integers(0, len(vocab["color"].values), size=n)
    codes[:, 1] = rng.choice(len(vocab["pattern"].values), size=n, p=_PATTERN_WEIGHTS)
    codes[:, 2] = rng.integers(0, len(vocab["sleeve"].values), size=n)
    length_values = vocab["length"].values
    pick = rng.random(n)
    for c, category in enumerate(CATEGORIES):
        allowed = np.array([length_values.index(v) for v in LENGTHS_BY_CATEGORY[category]])
        rows = categories == c
        codes[rows, 3] = allowed[(pick[rows] * len(allowed)).astype(int)]
    codes[:, 4] = rng.integers(0, len(vocab["neckline"].values), size=n)
    codes[:, 5] = rng.integers(0, len(vocab["fit"].values), size=n)
    shades = rng.uniform(-1.0, 1.0, size=n)
    offsets = rng.integers(0, 64, size=(n, 2))
    draws = rng.random((n, 3))
    return SyntheticAttributes(categories, codes, shades, offsets, draws)


_PATTERN_WORDS = {
    "solid": ("", "plain"),
    "stripes": ("striped", "stripe"),
    "polka dots": ("polka-dot", "dotted"),
    "checks": ("checked", "gingham"),
    "floral": ("floral", "floral-print"),
}
_SLEEVE_WORDS = {
    "sleeveless": "sleeveless",
    "short": "short-sleeve",
    "elbow": "elbow-sleeve",
    "long": "long-sleeve",
}
_LENGTH_WORDS = {
    "mini": "mini",
    "knee": "knee-length",
    "midi": "midi",
    "maxi": "maxi",
    "cropped": "cropped",
    "regular": "",
    "long": "longline",
}
_NECK_WORDS = {
    "crew": "crew neck",
    "v-neck": "V-neck",
    "scoop": "scoop neck",
    "square": "square neck",
    "boat": "boat neck",
    "collar": "collar",
}
_NOUNS = {
    "dress": ("dress", "dress"),
    "shirt": ("shirt", "button-up shirt"),
    "toptee": ("top", "tee"),
}


def describe(category: str, values: dict[str, str], shade: float, draws: np.ndarray) -> str:
    """A shop-title description, e.g. "Navy striped long-sleeve midi dress, V-neck, loose fit"."""
    color = values["color"]
    if shade < -0.6 and color not in ("black", "navy"):
        color = f"dark {color}"
    elif shade > 0.6 and color != "white":
        color = f"light {color}"
    pattern = _PATTERN_WORDS[values["pattern"]][int(draws[0] * 2)]
    noun = _NOUNS[category][int(draws[1] * 2)]
    words = [color, pattern, _SLEEVE_WORDS[values["sleeve"]], _LENGTH_WORDS[values["length"]], noun]
    title = " ".join(w for w in words if w)
    neck = _NECK_WORDS[values["neckline"]]
    neck = f"with {neck}" if draws[2] < 0.5 else neck
    fit = "fitted" if values["fit"] == "fitted" else f"{values['fit']} fit"
    return f"{title[0].upper()}{title[1:]}, {neck}, {fit}"


def _chunk_rng(seed: int, chunk: int) -> np.random.Generator:
    return np.random.default_rng([seed, chunk])


def _render_chunk(
    job: tuple[int, int, int, int, int, bool],
) -> tuple[SyntheticAttributes, np.ndarray | None, np.ndarray, list[str]]:
    """Attributes, images (None unless ``render``), colours and descriptions of one chunk
    (runs in a worker process)."""
    seed, chunk, _start, n, image_size, render = job
    # Always draw a full chunk, so an item does not depend on the catalog's size.
    attrs = sample_attributes(_chunk_rng(seed, chunk), CHUNK_SIZE)
    types = SYNTHETIC_VOCABULARY.types
    images = np.empty((n, image_size, image_size, 3), dtype=np.uint8) if render else None
    rgb = np.empty((n, 3), dtype=np.uint8)
    descriptions = []
    for i in range(n):
        values = {t.name: t.values[attrs.codes[i, k]] for k, t in enumerate(types)}
        category = CATEGORIES[attrs.categories[i]]
        spec = GarmentSpec(
            category=category,
            shade=float(attrs.shades[i]),
            pattern_offset=(int(attrs.pattern_offsets[i, 0]), int(attrs.pattern_offsets[i, 1])),
            **values,
        )
        if images is not None:
            images[i] = render_garment(spec, image_size)
        rgb[i] = shaded_rgb(spec.color, spec.shade)
        descriptions.append(describe(category, values, spec.shade, attrs.description_draws[i]))
    return attrs, images, rgb, descriptions


def build_synthetic_catalog(
    out: str | os.PathLike,
    size: int = 10_000,
    seed: int = 0,
    image_size: int = 64,
    *,
    overwrite: bool = False,
    progress: bool = True,
    workers: int | None = None,
    images: str = "stored",
) -> Catalog:
    """Generate a synthetic catalog of ``size`` garments into directory ``out`` and open it.

    Deterministic from ``seed`` (and ``image_size``) on any machine, whatever ``workers``
    (processes rendering chunks in parallel; default: one per CPU, at most 8). Written
    atomically: the directory appears complete or not at all. ``images="lazy"`` stores no
    images (see the module docstring); the opened catalog renders them when read.
    """
    _check_arguments(size, seed, image_size, images)
    with atomic_directory(out, overwrite=overwrite) as tmp:
        write_synthetic_catalog(
            tmp, size, seed, image_size, progress=progress, workers=workers, images=images
        )
    return open_catalog(Path(out))


def _check_arguments(size: int, seed: int, image_size: int, images: str = "stored") -> None:
    if images not in IMAGE_MODES:
        raise ValueError(f"images must be one of {list(IMAGE_MODES)}, got {images!r}")
    if size < 1:
        raise ValueError(f"size must be a positive number of items, got {size}")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    if not MIN_SYNTHETIC_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE:
        raise ValueError(
            f"image_size must be from {MIN_SYNTHETIC_IMAGE_SIZE} (for the garments to be legible) "
            f"to {MAX_IMAGE_SIZE} pixels, got {image_size}"
        )


def write_synthetic_catalog(
    directory: str | os.PathLike,
    size: int = 10_000,
    seed: int = 0,
    image_size: int = 64,
    *,
    progress: bool = True,
    workers: int | None = None,
    images: str = "stored",
) -> None:
    """Render the catalog of :func:`build_synthetic_catalog` into the existing empty
    ``directory``, not atomically: for callers that write it inside their own
    :func:`~fiq_gym.utils.atomic.atomic_directory` together with more files."""
    _check_arguments(size, seed, image_size, images)
    vocab = SYNTHETIC_VOCABULARY
    lazy = images == "lazy"
    jobs = [
        (seed, c, start, min(CHUNK_SIZE, size - start), image_size, not lazy)
        for c, start in enumerate(range(0, size, CHUNK_SIZE))
    ]
    workers = min(workers or min(os.cpu_count() or 1, 8), len(jobs))
    writer = CatalogWriter(Path(directory), size, None if lazy else image_size, vocab, render_arrays=lazy)
    desc = "sampling garments" if lazy else "rendering garments"
    bar = tqdm(total=size, desc=desc, unit="item", disable=not progress)
    # Our own workers, not a multiprocessing pool: they never re-run the caller's main
    # module (an unguarded script works) and die with this process (see fiq_gym.utils.workers).
    pool = WorkerPool(workers) if workers > 1 else None
    try:
        # Ordered map: chunks land in the file in catalog order whichever worker ends first.
        results = pool.map(_render_chunk, jobs) if pool else map(_render_chunk, jobs)
        for (_, _, start, n, _, _), (attrs, block, rgb, descriptions) in zip(jobs, results, strict=True):
            writer.write(
                ids=np.array([f"syn-{j:07d}" for j in range(start, start + n)]),
                categories=attrs.categories[:n],
                labels=vocab.encode(attrs.codes[:n]),
                descriptions=descriptions,
                primary_rgb=rgb,
                images=block,
                shades=attrs.shades[:n] if lazy else None,
                pattern_offsets=attrs.pattern_offsets[:n] if lazy else None,
            )
            bar.update(n)
    finally:
        if pool:
            pool.close()
        bar.close()
    writer.close(
        category_names=CATEGORIES,
        provenance={
            "name": f"synthetic-n{size}-s{seed}",
            "source": "synthetic",
            "generator_version": GENERATOR_VERSION,
            "seed": seed,
            "size": size,
            "image_size": image_size,
            "chunk_size": CHUNK_SIZE,
            **({"images": "lazy"} if lazy else {}),
        },
    )
