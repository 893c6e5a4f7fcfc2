"""Fit a trained captioner to features with fewer (dead) dimensions, without retraining.

When the attribute network loses the feature units that are zero on every image
(``fiq-gym features prune``), a captioner trained on the old features read those inputs as
constant zeros: their columns of the two linear layers that read features contributed
nothing. Dropping exactly those columns gives a captioner whose outputs on the new features
equal the old one's on the old features, bit for bit up to float summation order.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch

from fiq_gym.users.transformer.user import DEFAULT_CHECKPOINT, load_captioner
from fiq_gym.utils.atomic import atomic_directory

__all__ = ["narrow_captioner"]

_KEEP_AS_IS = (
    "metrics.json",
    "training_args.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)


def narrow_captioner(
    checkpoint: str | os.PathLike | None,
    kept_units: Sequence[int],
    out: str | os.PathLike,
    *,
    feature_weights: str | None = None,
) -> Path:
    """Write to ``out`` the captioner ``checkpoint`` (None: the shipped one) reading only the
    feature dimensions ``kept_units`` (indices into its current inputs, in order).

    ``feature_weights`` is the sha256 of the network whose features it now reads (recorded
    in the config, so a catalog with other features is flagged).
    """
    src = Path(checkpoint) if checkpoint is not None else None
    model, _tokenizer = load_captioner(src)
    keep = torch.as_tensor(list(kept_units), dtype=torch.long)
    d = model.config.feature_dim
    if len(keep) == 0 or len(set(keep.tolist())) != len(keep) or keep.min() < 0 or keep.max() >= d:
        raise ValueError(
            f"kept_units must be distinct indices in [0, {d - 1}], got {list(kept_units)[:8]}..."
        )
    encoder = model.encoder
    with torch.no_grad():
        for name in ("feature_proj", "difference_proj"):
            old = getattr(encoder, name)
            new = torch.nn.Linear(len(keep), old.out_features)
            new.weight.copy_(old.weight[:, keep])
            new.bias.copy_(old.bias)
            setattr(encoder, name, new)
    model.config.feature_dim = len(keep)
    if feature_weights is not None:
        model.config.feature_weights = feature_weights
    source_dir = src if src is not None else DEFAULT_CHECKPOINT
    with atomic_directory(out, overwrite=True) as tmp:
        model.save_pretrained(tmp)
        for name in _KEEP_AS_IS:
            if (source_dir / name).is_file():
                shutil.copyfile(source_dir / name, tmp / name)
        note = {"from": str(source_dir), "kept_units": keep.tolist(), "feature_weights": feature_weights}
        (tmp / "narrowed.json").write_text(json.dumps(note, indent=2) + "\n", encoding="utf-8")
    return Path(out)
