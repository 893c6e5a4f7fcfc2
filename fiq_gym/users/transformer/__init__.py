"""The transformer shopper: a learned relative captioner in Hugging Face conventions.

* :class:`RelativeCaptionerConfig` / :class:`RelativeCaptionerModel`: the model
  (``save_pretrained`` / ``from_pretrained`` with local directories).
* :func:`build_caption_tokenizer`: its word-level ``tokenizers`` tokenizer, wrapped as a
  ``PreTrainedTokenizerFast``; :class:`CaptionerTokenizer` adapts it for environments.
* :class:`TransformerUser`: the batched :class:`~fiq_gym.users.User`; ``user="transformer"``
  in the environments loads the checkpoint shipped in ``default/``.
* :mod:`~fiq_gym.users.transformer.train`: ``fiq-gym user train``.

Names load on first access, so importing this package does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "CaptionDataset",
    "CaptionPair",
    "CaptionerTokenizer",
    "CheckpointMismatchError",
    "Decoding",
    "RelativeCaptionerConfig",
    "RelativeCaptionerModel",
    "TrainArgs",
    "TransformerUser",
    "build_caption_tokenizer",
    "load_captioner",
    "train_captioner",
]

_WHERE = {
    "CaptionDataset": "data",
    "CaptionPair": "data",
    "CaptionerTokenizer": "tokenization",
    "CheckpointMismatchError": "user",
    "Decoding": "user",
    "RelativeCaptionerConfig": "configuration_relative_captioner",
    "RelativeCaptionerModel": "modeling_relative_captioner",
    "TrainArgs": "train",
    "TransformerUser": "user",
    "build_caption_tokenizer": "tokenization",
    "load_captioner": "user",
    "train_captioner": "train",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'fiq_gym.users.transformer' has no attribute {name!r}")
    return getattr(importlib.import_module(f"fiq_gym.users.transformer.{module}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
