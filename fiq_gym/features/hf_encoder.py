"""Image features from a local Hugging Face vision model, for catalogs of real photos.

    fiq-gym features extract CATALOG --encoder hf:/path/to/model

The directory must hold what ``save_pretrained`` writes for a model and its image processor
(``config.json``, the weights, ``preprocessor_config.json``). Nothing is downloaded: both are
loaded with ``local_files_only=True``. The feature of an image is the model's pooled output
(``pooler_output``; for models with separate text and image towers, such as CLIP, the
projected image embedding), or the mean of ``last_hidden_state`` over tokens or positions
when the model has no pooler.

A generic vision model knows nothing of the catalog's attribute vocabulary, so it predicts
no attributes: extraction with it leaves the catalog's attribute scores as they are (from an
attribute network run earlier, or none, in which case agents see the ground-truth labels).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fiq_gym.features.model import CheckpointError

__all__ = ["HF_PREFIX", "HFImageEncoder", "parse_encoder"]

HF_PREFIX = "hf:"
_SAVE_HINT = (
    "save a model and its image processor there with `model.save_pretrained(DIR)` and "
    "`processor.save_pretrained(DIR)` (or copy a downloaded model folder there)"
)


def parse_encoder(spec: str) -> Path:
    """``"hf:/local/path"`` -> the path; anything else is an error that says what is accepted."""
    if not spec.startswith(HF_PREFIX) or not spec[len(HF_PREFIX) :]:
        raise ValueError(
            f"--encoder {spec!r} is not understood; use hf:/path/to/local/model (a folder written by "
            "save_pretrained), or --checkpoint DIR for an attribute network"
        )
    return Path(spec[len(HF_PREFIX) :]).expanduser()


class HFImageEncoder:
    """Pooled features of a local ``transformers`` vision model; no attribute scores."""

    predicts_attributes = False

    def __init__(self, path: str | os.PathLike) -> None:
        path = Path(path).expanduser()
        if not path.is_dir():
            raise CheckpointError(f"--encoder hf:{path}: no such directory; {_SAVE_HINT}")
        if not (path / "config.json").is_file():
            raise CheckpointError(f"{path} holds no Hugging Face model (no config.json); {_SAVE_HINT}")
        from transformers import AutoImageProcessor, AutoModel

        try:
            self.processor = AutoImageProcessor.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError, KeyError) as e:
            raise CheckpointError(f"{path} holds no usable image processor ({e}); {_SAVE_HINT}") from None
        try:
            self.model = AutoModel.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError, KeyError) as e:
            raise CheckpointError(f"{path} holds no loadable model ({e}); {_SAVE_HINT}") from None
        self.model.eval()
        self.path = path
        self.pooling = "unknown"

    @torch.inference_mode()
    def encode(self, images: np.ndarray) -> tuple[np.ndarray, None]:
        """(B, H, W, 3) uint8 images -> ((B, D) float32 features, None)."""
        inputs = self.processor(images=list(images), return_tensors="pt", input_data_format="channels_last")
        pixels = inputs["pixel_values"].to(self.model.dtype)
        if hasattr(self.model, "get_image_features"):
            # Two-tower models (CLIP, SigLIP): the image tower's projected embedding.
            out: Any = self.model.get_image_features(pixel_values=pixels)
        else:
            out = self.model(pixel_values=pixels)
        if isinstance(out, torch.Tensor):
            pooled, self.pooling = out, "image features"
        elif getattr(out, "pooler_output", None) is not None:
            pooled, self.pooling = out.pooler_output, "pooler_output"
        else:
            hidden = out.last_hidden_state
            # (B, tokens, D) for transformers, (B, C, H, W) for convolutional models.
            pooled = hidden.mean(dim=1) if hidden.ndim == 3 else hidden.mean(dim=tuple(range(2, hidden.ndim)))
            self.pooling = "mean of last_hidden_state"
        return pooled.flatten(1).float().numpy(), None

    def provenance(self) -> dict[str, Any]:
        return {
            "encoder": "hf",
            "model": str(self.path.resolve()),
            "model_type": getattr(self.model.config, "model_type", "unknown"),
            "pooling": self.pooling,
        }
