"""``fiq-gym catalog import``: real datasets in. Only argparse here; the loaders import when
a command runs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fiq_gym.catalog.limits import MAX_IMAGE_SIZE, MIN_IMPORT_IMAGE_SIZE
from fiq_gym.utils.arguments import int_between, path_arg, spec_arg
from fiq_gym.utils.links import doc_url

__all__ = ["add_commands"]

# The loaders' own constants (tests check they agree); repeated here so that building the
# parser imports nothing heavy.
CATEGORIES = ("dress", "shirt", "toptee")
FIQ_SPLITS = ("train", "val", "test")
SHOES_SPLITS = ("train", "eval")


def _default_out(kind: str, args: argparse.Namespace) -> Path:
    from fiq_gym.utils.cache import cache_dir

    parts = [kind, *(getattr(args, "category", None) or []), *args.split, f"{args.image_size}px"]
    return cache_dir() / "catalogs" / "-".join(parts)


def _import(args: argparse.Namespace) -> int:
    from fiq_gym.catalog.importing import write_import
    from fiq_gym.errors import DatasetError
    from fiq_gym.features.extract import import_extractor

    # `--images lazy` (build's option, parsed here as the folder ./lazy) names no image folder.
    if args.images and Path(args.images).name == "lazy" and not Path(args.images).is_dir():
        raise DatasetError(
            "imported catalogs cannot be lazy: only synthetic garments can be rendered again from their "
            "attributes, real photos must be stored; --images here names the image folder (default: "
            "ROOT/images for Fashion IQ, ROOT for Shoes). `fiq-gym catalog build --images lazy` makes a "
            "lazy synthetic catalog"
        )

    extractor = None if args.features else import_extractor(args.encoder)  # checked before decoding

    if args.dataset == "fashioniq":
        from fiq_gym.catalog.fashioniq import plan_fashioniq

        plan = plan_fashioniq(
            args.root,
            categories=tuple(args.category),
            splits=tuple(args.split),
            images=args.images,
            strict=args.strict,
        )
    else:
        from fiq_gym.catalog.shoes import plan_shoes

        plan = plan_shoes(args.root, splits=tuple(args.split), images=args.images, strict=args.strict)
    out = Path(args.out) if args.out else _default_out(args.dataset, args)
    result = write_import(
        plan,
        out,
        image_size=args.image_size,
        features=args.features,
        feature_ids=args.feature_ids,
        extractor=extractor,
        attributes=args.attributes,
        workers=args.workers,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    print(result.report.summary())
    print(
        f"wrote {result.num_items} items, {result.num_entries} caption entries ({result.num_captions} captions) "
        f"to {result.path}; features: {result.feature_source}"
    )
    print(
        f"next: gym.make('fiq_gym/FashionIQ-v3', catalog='{result.path}', user='dataset', "
        "user_kwargs={'fallback': 'template'}) or `fiq-gym user train --catalog "
        f"{result.path} --captions catalog` (see {doc_url('docs/real_data.md')})"
    )
    return 0


def add_commands(catalog_sub: Any) -> None:
    """Add ``import`` to the ``fiq-gym catalog`` subparsers."""
    imp = catalog_sub.add_parser(
        "import",
        help="import Fashion IQ or Shoes files you have into a catalog directory",
        description="Validate a real dataset and write it as a catalog directory plus its human captions. "
        "Nothing is downloaded: point ROOT at the release's files.",
    )
    kinds = imp.add_subparsers(dest="dataset", required=True)
    for name, splits, default_splits in (
        ("fashioniq", FIQ_SPLITS, ["val"]),
        ("shoes", SHOES_SPLITS, list(SHOES_SPLITS)),
    ):
        p = kinds.add_parser(
            name, help=f"import the {'Fashion IQ' if name == 'fashioniq' else 'Shoes'} release"
        )
        p.add_argument("root", type=path_arg, help="the dataset's root folder")
        if name == "fashioniq":
            p.add_argument(
                "--category",
                nargs="+",
                choices=CATEGORIES,
                default=list(CATEGORIES),
                help="default: all three",
            )
        p.add_argument(
            "--split",
            nargs="+",
            choices=splits,
            default=default_splits,
            help=f"default: {' '.join(default_splits)}",
        )
        p.add_argument(
            "--images",
            type=path_arg,
            help="image folder (default: ROOT/images for Fashion IQ, ROOT for Shoes)",
        )
        p.add_argument(
            "--out", type=path_arg, help="catalog directory to write (default: in the cache folder)"
        )
        p.add_argument(
            "--image-size",
            type=int_between(MIN_IMPORT_IMAGE_SIZE, MAX_IMAGE_SIZE),
            default=64,
            help="stored image side in pixels (default 64)",
        )
        p.add_argument(
            "--features",
            type=path_arg,
            help="precomputed features: a .npy (with --feature-ids) or a .pt file",
        )
        p.add_argument(
            "--feature-ids", type=path_arg, help="the ids of the feature rows: a JSON list or one id per line"
        )
        p.add_argument(
            "--encoder",
            type=spec_arg,
            default="attribute-net",
            help="features computed from the images when --features is not given: attribute-net (the "
            "network shipped with fiq-gym; default), attribute-net:DIR, hf:DIR (a local Hugging Face "
            "vision model) or none (environments rank by image thumbnails)",
        )
        p.add_argument(
            "--attributes",
            type=path_arg,
            help="optional attribute labels, JSON {id: {type: value | [values]}}",
        )
        p.add_argument(
            "--strict", action="store_true", help="stop at the first bad entry instead of skipping it"
        )
        p.add_argument("--workers", type=int, default=0, help="image decoding processes (default: up to 4)")
        p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
        p.add_argument("--no-progress", action="store_true", help="no progress bars")
        p.set_defaults(func=_import)
