"""Image features for catalogs: the attribute-prediction network and local vision models.

The papers feed their retriever and user simulator with the penultimate layer of a CNN
trained to predict attributes, and show its predicted attributes as side information. This
package trains that network on a catalog (:mod:`~fiq_gym.features.train`), writes features
and attribute scores into catalog directories (:mod:`~fiq_gym.features.extract`), and for
real photos can use a local Hugging Face vision model instead
(:mod:`~fiq_gym.features.hf_encoder`). The network in ``default/`` is shipped with the package
and gives the default synthetic catalog its features (:mod:`~fiq_gym.features.default_network`).

Names are imported lazily, so ``import fiq_gym.features`` (and the CLI) does not load torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AttributeNet": "fiq_gym.features.model",
    "Checkpoint": "fiq_gym.features.model",
    "CheckpointError": "fiq_gym.features.model",
    "DEFAULT_CHECKPOINT": "fiq_gym.features.model",
    "NetworkConfig": "fiq_gym.features.model",
    "check_fits": "fiq_gym.features.model",
    "load_checkpoint": "fiq_gym.features.model",
    "save_checkpoint": "fiq_gym.features.model",
    "TrainArgs": "fiq_gym.features.train",
    "TrainResult": "fiq_gym.features.train",
    "evaluate": "fiq_gym.features.train",
    "train": "fiq_gym.features.train",
    "ExtractResult": "fiq_gym.features.extract",
    "extract_features": "fiq_gym.features.extract",
    "HFImageEncoder": "fiq_gym.features.hf_encoder",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fiq_gym.features' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
