"""Bounds on catalog image sizes, shared by the builders and their command-line options."""

from __future__ import annotations

__all__ = ["MAX_IMAGE_SIZE", "MIN_IMPORT_IMAGE_SIZE", "MIN_SYNTHETIC_IMAGE_SIZE"]

MIN_SYNTHETIC_IMAGE_SIZE = 32  # below this the rendered garments' details are not legible
MIN_IMPORT_IMAGE_SIZE = 8
# A catalog stores N x side x side x 3 bytes of images: 1024 px is already 3 MB per item, and
# a typo such as 100000 would ask for terabytes (a MemoryError deep inside numpy).
MAX_IMAGE_SIZE = 1024
