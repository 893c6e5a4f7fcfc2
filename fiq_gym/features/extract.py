"""Write image features (and predicted attributes) into a catalog directory.

    fiq-gym features extract CATALOG                          # the network shipped with fiq-gym
    fiq-gym features extract CATALOG --checkpoint runs/features-mycat-s0
    fiq-gym features extract CATALOG --encoder hf:/models/my-vit

Images are read from the catalog's file one batch at a time and the results are appended to
new files, so memory stays at one batch whatever the catalog's size (a lazy synthetic
catalog's images are rendered batch by batch instead, in worker processes while this one
encodes the previous batches); the catalog
switches to the new arrays in one atomic manifest rewrite
(:func:`fiq_gym.catalog.storage.update_catalog_arrays`). The environments then rank with
``features`` and show agents ``attribute_scores`` instead of the ground-truth labels.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from fiq_gym.catalog.lazy_images import LazyImages
from fiq_gym.catalog.model import Catalog
from fiq_gym.catalog.storage import open_catalog, update_catalog_arrays
from fiq_gym.errors import CatalogError
from fiq_gym.features._rows import RowReader
from fiq_gym.features.model import (
    DEFAULT_CHECKPOINT,
    Checkpoint,
    CheckpointError,
    check_fits,
    load_checkpoint,
)
from fiq_gym.utils.threads import torch_threads
from fiq_gym.utils.workers import WorkerPool

__all__ = [
    "AttributeNetEncoder",
    "ExtractResult",
    "ImageEncoder",
    "extract_features",
    "import_extractor",
    "make_encoder",
]


class ImageEncoder(Protocol):
    """Turns a batch of uint8 images into features and, if it can, attribute probabilities."""

    predicts_attributes: bool

    def encode(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]: ...

    def provenance(self) -> dict[str, Any]: ...


class AttributeNetEncoder:
    """Features (the penultimate layer) and attribute probabilities of an attribute network."""

    predicts_attributes = True

    def __init__(self, checkpoint: Checkpoint) -> None:
        self.checkpoint = checkpoint
        self.network = checkpoint.network.eval()

    @torch.inference_mode()
    def encode(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        features, logits = self.network(torch.from_numpy(np.ascontiguousarray(images)))
        return features.numpy(), self.network.probabilities(logits).numpy()

    def provenance(self) -> dict[str, Any]:
        return {
            "encoder": "attribute-net",
            "checkpoint": str(self.checkpoint.path.resolve()),
            "weights_sha256": self.checkpoint.weights_sha256,
            "shipped": self.checkpoint.path.resolve() == DEFAULT_CHECKPOINT.resolve(),
            "feature_dim": self.checkpoint.config.feature_dim,
        }


class FeaturesOnly:
    """An encoder's features without its attribute scores (see ``features_only``)."""

    predicts_attributes = False

    def __init__(self, inner: ImageEncoder) -> None:
        self.inner = inner

    def encode(self, images: np.ndarray) -> tuple[np.ndarray, None]:
        return self.inner.encode(images)[0], None

    def provenance(self) -> dict[str, Any]:
        return {**self.inner.provenance(), "attribute_heads": "not used (features only)"}


@dataclass(frozen=True)
class ExtractResult:
    path: Path
    num_items: int
    feature_dim: int
    num_attributes: int
    """columns of attribute scores written (0: the encoder predicts none)"""
    encoder: dict[str, Any]
    seconds: float


def make_encoder(checkpoint: str | os.PathLike | None = None, encoder: str | None = None) -> ImageEncoder:
    """The encoder named by ``--encoder hf:PATH``, else the attribute network in ``checkpoint``
    (default: the one shipped with fiq-gym)."""
    if encoder is not None and checkpoint is not None:
        raise ValueError("pass either a checkpoint or an --encoder, not both")
    if encoder is not None:
        from fiq_gym.features.hf_encoder import HFImageEncoder, parse_encoder

        return HFImageEncoder(parse_encoder(encoder))
    return AttributeNetEncoder(load_checkpoint(checkpoint))


def extract_features(
    catalog: str | os.PathLike,
    *,
    checkpoint: str | os.PathLike | None = None,
    encoder: str | ImageEncoder | None = None,
    batch_size: int = 256,
    threads: int = 1,
    progress: bool = True,
    features_only: bool | str = False,
    workers: int | None = None,
) -> ExtractResult:
    """Compute features (and, with an attribute network, attribute scores) for every item of
    catalog directory ``catalog`` and write them into it atomically.

    ``threads``: torch CPU threads for the encoder (0: all cores). Keep the default, one:
    on some CPUs (seen on an Intel Xeon) a convolution's last bits depend on the thread
    count, so only a fixed count gives the same features on every machine of a CPU model
    whatever its cores, in every path (the default catalog's first build, ``fiq-gym catalog
    build``, ``fiq-gym features extract``, lazy or stored images). It costs little: a lazy
    catalog's images are rendered in worker processes meanwhile (~0.9 ms an image on one
    core, slower than encoding), and a stored 10,000-item catalog takes 2.6 s on one thread
    against 1.3 s on two (``benchmarks/results/features.md``). Features still differ in the last bits between CPU models; checkpoints compare
    them within a tolerance (:meth:`fiq_gym.catalog.Catalog.features_sketch`). An encoder
    that predicts no attributes (a Hugging Face model) leaves existing attribute scores
    untouched.

    ``features_only``: write the attribute network's features but not its attribute scores
    (True), or do so only when the network was trained for another attribute vocabulary or
    image size than the catalog's (``"auto"``, what ``fiq-gym catalog import`` uses for real
    photos: its penultimate layer is still a usable image descriptor, its heads are not).

    ``workers``: processes rendering a lazy catalog's images (default: one per CPU, at most
    8; 1 renders here); catalogs with stored images are read here.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if encoder is not None and checkpoint is not None:
        raise ValueError("pass either a checkpoint or an encoder, not both")
    started = time.perf_counter()
    path = Path(catalog)
    opened = open_catalog(path)
    if opened.images is None:
        raise CatalogError(
            f"catalog {path} has no images, so there is nothing to compute features from; "
            "open or import the catalog with its images"
        )
    if encoder is None or isinstance(encoder, str):
        encoder = make_encoder(checkpoint, encoder)
    if features_only not in (True, False, "auto"):
        raise ValueError(f"features_only must be True, False or 'auto', got {features_only!r}")
    if isinstance(encoder, AttributeNetEncoder):
        if features_only == "auto":
            try:
                check_fits(encoder.checkpoint, opened)
                features_only = False
            except CheckpointError:
                features_only = True
        if features_only:
            encoder = FeaturesOnly(encoder)
        else:
            check_fits(encoder.checkpoint, opened)
    if workers is None:
        workers = min(os.cpu_count() or 1, 8)
    with torch_threads(threads):
        return _extract(path, opened, encoder, batch_size, progress, started, workers)


def _renders_in_workers(opened: Catalog, batch_size: int, workers: int) -> bool:
    return isinstance(opened.images, LazyImages) and workers > 1 and len(opened) > batch_size


def _image_batches(
    path: Path, opened: Catalog, batch_size: int, workers: int
) -> Generator[np.ndarray, None, None]:
    """The catalog's images, ``batch_size`` rows at a time, in order."""
    n = len(opened)
    if _renders_in_workers(opened, batch_size, workers):
        jobs = [(str(path), start, min(n, start + batch_size)) for start in range(0, n, batch_size)]
        # An ordered map keeps two batches per worker in flight: memory stays flat.
        with WorkerPool(min(workers, len(jobs))) as pool:
            yield from pool.map(_render_batch, jobs)
        return
    with RowReader(opened.images) as reader:  # type: ignore[arg-type]
        for start in range(0, n, batch_size):
            yield reader.slice(start, start + batch_size)


_RENDERING: dict[str, Catalog] = {}


def _render_batch(job: tuple[str, int, int]) -> np.ndarray:
    """Rows ``start:stop`` of a lazy catalog's images (runs in a worker process)."""
    path, start, stop = job
    if path not in _RENDERING:
        _RENDERING.clear()
        _RENDERING[path] = open_catalog(path)
    images = _RENDERING[path].images
    assert images is not None
    return images[start:stop]


def _extract(
    path: Path,
    opened: Catalog,
    encoder: ImageEncoder,
    batch_size: int,
    progress: bool,
    started: float,
    workers: int,
) -> ExtractResult:
    n = len(opened)
    batches = _image_batches(path, opened, batch_size, workers)
    try:
        return _extract_batches(path, opened, encoder, batches, n, progress, started)
    finally:
        batches.close()  # ends rendering workers early on an error


def _extract_batches(
    path: Path,
    opened: Catalog,
    encoder: ImageEncoder,
    batches: Iterator[np.ndarray],
    n: int,
    progress: bool,
    started: float,
) -> ExtractResult:
    # The first batch tells the feature size, which the output files need up front (and how
    # an HF model pools, which its provenance records).
    first_features, first_scores = encoder.encode(next(batches))
    shapes = {"features": (n, first_features.shape[1])}
    if first_scores is not None:
        shapes["attribute_scores"] = (n, opened.vocabulary.size)
    record = {
        **encoder.provenance(),
        "feature_dim": int(first_features.shape[1]),
        # the count the bits depend on (see extract_features's ``threads``)
        "torch_threads": torch.get_num_threads(),
    }
    provenance: dict[str, Any] = {"features": record}
    if first_scores is not None:
        provenance["attribute_scores"] = record
    with (
        update_catalog_arrays(path, shapes, provenance=provenance) as update,
        tqdm(total=n, desc="extracting features", unit="item", disable=not progress) as bar,
    ):
        features, scores = first_features, first_scores
        while True:
            update.append("features", features)
            if scores is not None:
                update.append("attribute_scores", scores)
            bar.update(len(features))
            block = next(batches, None)
            if block is None:
                break
            features, scores = encoder.encode(block)
    return ExtractResult(
        path=path,
        num_items=n,
        feature_dim=int(first_features.shape[1]),
        num_attributes=0 if first_scores is None else opened.vocabulary.size,
        encoder=record,
        seconds=time.perf_counter() - started,
    )


def import_extractor(spec: str | None) -> Callable[[Path, bool], str] | None:
    """The feature step of ``fiq-gym catalog import --encoder SPEC`` for
    :func:`fiq_gym.catalog.importing.write_import`: ``"attribute-net"`` (the network shipped
    with fiq-gym; features only when the catalog's vocabulary or image size is not its own),
    ``"attribute-net:DIR"`` (another attribute-network checkpoint), ``"hf:DIR"`` (a local
    Hugging Face vision model) or ``"none"`` / None (no features). Checked here, before any
    image is decoded."""
    if spec is None or spec == "none":
        return None
    if spec.startswith("hf:"):

        def hugging_face(directory: Path, progress: bool) -> str:
            extract_features(directory, encoder=spec, progress=progress)
            return spec

        return hugging_face
    if spec == "attribute-net" or spec.startswith("attribute-net:"):
        checkpoint = spec.partition(":")[2] or None

        def attribute_net(directory: Path, progress: bool) -> str:
            extract_features(directory, checkpoint=checkpoint, features_only="auto", progress=progress)
            return spec

        return attribute_net
    raise ValueError(f"--encoder must be attribute-net, attribute-net:DIR, hf:DIR or none, got {spec!r}")
