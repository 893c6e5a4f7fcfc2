"""The attribute-prediction network and its checkpoint format.

A small all-convolutional network reads a garment image and predicts its attributes, one
head per attribute type, and (when trained with one) its category. Its penultimate layer is
the item's feature vector (what the environments rank with); its predicted attribute
probabilities are the side information agents see, so agents never read the ground-truth
labels. The category head is trained with the attribute heads so that the features carry
the category (a dress, a shirt and a top differ in a seam or a button placket, which no
attribute head needs to see); its predictions are not part of the side information, so the
agents' observations keep one column per attribute value.

A checkpoint is a directory with two files, written atomically:

    config.json         architecture, feature size, image size, attribute vocabulary and
                        heads, how it was trained, package versions
    model.safetensors   the weights

The network takes raw uint8 images (B, H, W, 3) and normalises them itself, so whoever holds
a checkpoint cannot feed it differently scaled pixels by mistake.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save
from torch import nn
from torch.nn import functional as F

from fiq_gym.catalog.model import Catalog
from fiq_gym.catalog.vocabulary import AttributeVocabulary
from fiq_gym.errors import CheckpointError
from fiq_gym.utils.atomic import atomic_write_bytes, atomic_write_json
from fiq_gym.utils.jsonfile import read_json

__all__ = [
    "CHECKPOINT_FORMAT",
    "DEFAULT_CHECKPOINT",
    "AttributeNet",
    "Checkpoint",
    "CheckpointError",
    "HeadSpec",
    "NetworkConfig",
    "check_fits",
    "head_specs",
    "load_checkpoint",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = "fiq-gym-attribute-net"
CHECKPOINT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
# The network shipped with the package, trained on a synthetic catalog the default catalog
# is held out from; see fiq_gym.features.default_network for the command that made it.
DEFAULT_CHECKPOINT = Path(__file__).parent / "default"

_TRAIN_HINT = "train one for this catalog with `fiq-gym features train CATALOG --out DIR`"


@dataclass(frozen=True)
class HeadSpec:
    """One output head: an attribute type and how its values are predicted.

    ``multilabel`` types (an item may have several values, as in real product annotations)
    get independent sigmoids and a binary cross-entropy loss; the others (exactly one value,
    or none when unlabelled) get a softmax and a cross-entropy loss.
    """

    name: str
    size: int
    multilabel: bool = False


@dataclass(frozen=True)
class NetworkConfig:
    """Everything needed to rebuild an :class:`AttributeNet` before loading its weights."""

    image_size: tuple[int, int]
    heads: tuple[HeadSpec, ...]
    feature_dim: int = 128
    channels: tuple[int, ...] = (32, 48, 96, 128)
    pooled_side: int = 4
    categories: tuple[str, ...] = ()
    """category names the category head predicts, in code order (empty: no category head)"""

    @property
    def num_attributes(self) -> int:
        return sum(h.size for h in self.heads)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": "AttributeNet",
            "image_size": list(self.image_size),
            "feature_dim": self.feature_dim,
            "channels": list(self.channels),
            "pooled_side": self.pooled_side,
            "heads": [{"type": h.name, "size": h.size, "multilabel": h.multilabel} for h in self.heads],
            "categories": list(self.categories),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> NetworkConfig:
        """The config a checkpoint stores, checked by type and range (``ValueError`` naming the
        field): a hand-edited ``"45"`` or ``-3`` must not build a network that fails later."""
        if not isinstance(data, Mapping):
            raise ValueError(f"the architecture is a JSON {type(data).__name__}, not an object")

        def size(value: Any, name: str, low: int = 1) -> int:
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an integer of at least {low}, got {value!r}")
            return value

        def sizes(value: Any, name: str, count: int | None = None) -> tuple[int, ...]:
            if not isinstance(value, list) or not value or (count is not None and len(value) != count):
                expected = f"{count} integers" if count is not None else "a non-empty list of integers"
                raise ValueError(f"{name} must be {expected}, got {value!r}")
            return tuple(size(v, f"{name}[{i}]") for i, v in enumerate(value))

        heads = data["heads"]
        if not isinstance(heads, list) or not all(isinstance(h, Mapping) for h in heads):
            raise ValueError(f"heads must be a list of objects, got {heads!r}")
        for i, h in enumerate(heads):
            if not isinstance(h.get("type"), str) or not isinstance(h.get("multilabel"), bool):
                raise ValueError(f"heads[{i}] needs a string 'type' and a true/false 'multilabel', got {h!r}")
        categories = data.get("categories", ())  # checkpoints before the category head have none
        if not isinstance(categories, list | tuple) or not all(isinstance(c, str) for c in categories):
            raise ValueError(f"categories must be a list of names, got {categories!r}")
        image_size = sizes(data["image_size"], "image_size", 2)
        return cls(
            image_size=(image_size[0], image_size[1]),
            heads=tuple(
                HeadSpec(h["type"], size(h["size"], f"heads[{i}].size"), h["multilabel"])
                for i, h in enumerate(heads)
            ),
            feature_dim=size(data["feature_dim"], "feature_dim"),
            channels=sizes(data["channels"], "channels"),
            pooled_side=size(data["pooled_side"], "pooled_side"),
            categories=tuple(categories),
        )


def head_specs(
    vocabulary: AttributeVocabulary, labels: np.ndarray, chunk: int = 65536
) -> tuple[HeadSpec, ...]:
    """One head per attribute type; a type is multi-label if any item has several of its values.

    Reads the labels in chunks, so a memory-mapped million-row label matrix is not loaded whole.
    """
    multi = np.zeros(len(vocabulary), dtype=bool)
    for start in range(0, len(labels), chunk):
        block = np.asarray(labels[start : start + chunk])
        for k, t in enumerate(vocabulary.types):
            multi[k] |= bool((block[:, vocabulary.slice(t.name)].sum(axis=1) > 1).any())
    return tuple(
        HeadSpec(t.name, len(t.values), bool(m)) for t, m in zip(vocabulary.types, multi, strict=True)
    )


class AttributeNet(nn.Module):
    """Strided convolutions -> fixed-size pooled map -> feature layer -> one linear head per
    type (and a linear category head when ``config.categories`` names categories).

    Strided convolutions rather than pooling layers keep it fast on a CPU: a 64x64 image costs
    about 10 million multiply-adds, so 10,000 items are encoded in a few seconds.
    """

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        c_in = 3
        for i, c_out in enumerate(config.channels):
            # A 4x4 first kernel with stride 2 covers every pixel once per output step.
            kernel = 4 if i == 0 else 3
            layers += [nn.Conv2d(c_in, c_out, kernel, stride=2, padding=1), nn.ReLU(inplace=True)]
            c_in = c_out
        self.trunk = nn.Sequential(*layers)
        # A fixed-size map keeps where things are (hem height, sleeve length), which a global
        # average would throw away, and makes the feature layer independent of the image size.
        self.pool = nn.AdaptiveAvgPool2d(config.pooled_side)
        self.embed = nn.Linear(c_in * config.pooled_side**2, config.feature_dim)
        self.heads = nn.Linear(config.feature_dim, config.num_attributes)
        # A separate layer (not more columns of `heads`) keeps the attribute logits, and so
        # the attribute scores written into catalogs, one column per vocabulary value.
        self.category_head = (
            nn.Linear(config.feature_dim, len(config.categories)) if config.categories else None
        )
        # He initialisation keeps the activations' scale through the ReLU layers; without
        # normalisation layers, PyTorch's default shrinks them and small catalogs learn slowly.
        for layer in [*self.trunk, self.embed]:
            if isinstance(layer, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
                if layer.bias is not None:
                    nn.init.zeros_(layer.bias)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, H, W, 3) uint8 images -> (B, feature_dim) float32 features (the penultimate layer)."""
        x = images.permute(0, 3, 1, 2).float().contiguous(memory_format=torch.channels_last)
        x = (x / 255.0 - 0.5) / 0.25
        x = self.pool(self.trunk(x))
        return F.relu(self.embed(x.flatten(1)))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features (B, feature_dim) and attribute logits (B, A), in vocabulary column order."""
        feats = self.features(images)
        return feats, self.heads(feats)

    def category_logits(self, features: torch.Tensor) -> torch.Tensor:
        """(B, C) category logits from features (B, feature_dim), in ``config.categories`` order."""
        if self.category_head is None:
            raise CheckpointError(
                "this attribute network has no category head (it was trained without one, or on a "
                "catalog with a single category); retrain it with `fiq-gym features train`"
            )
        return self.category_head(features)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Attribute probabilities (B, A): a softmax within each single-label type, a sigmoid
        per value within each multi-label type."""
        parts, start = [], 0
        for head in self.config.heads:
            block = logits[:, start : start + head.size]
            parts.append(torch.sigmoid(block) if head.multilabel else torch.softmax(block, dim=1))
            start += head.size
        return torch.cat(parts, dim=1)


@dataclass
class Checkpoint:
    """A loaded checkpoint: the network (in eval mode), its vocabulary and its config record."""

    network: AttributeNet
    vocabulary: AttributeVocabulary
    path: Path
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> NetworkConfig:
        return self.network.config

    @property
    def weights_sha256(self) -> str:
        return str(self.record.get("weights_sha256", ""))


def _versions() -> dict[str, str]:
    import safetensors

    from fiq_gym import __version__

    return {
        "fiq_gym": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "safetensors": safetensors.__version__,
    }


def save_checkpoint(
    path: str | os.PathLike,
    network: AttributeNet,
    vocabulary: AttributeVocabulary,
    *,
    training: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``network`` to checkpoint directory ``path`` (created if needed).

    Each file is replaced atomically, weights first: the config names the weights' SHA-256,
    so a reader can tell a config from a different save than the weights beside it.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in network.state_dict().items()}
    blob = save(state, metadata={"format": CHECKPOINT_FORMAT})
    atomic_write_bytes(path / WEIGHTS_FILE, blob)
    record = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "architecture": network.config.to_json(),
        "feature_dim": network.config.feature_dim,
        "image_size": list(network.config.image_size),
        "input": "uint8 RGB (B, H, W, 3), scaled inside the network to (x / 255 - 0.5) / 0.25",
        "vocabulary": vocabulary.to_json(),
        "weights_sha256": hashlib.sha256(blob).hexdigest(),
        "training": dict(training or {}),
        "versions": _versions(),
    }
    atomic_write_json(path / CONFIG_FILE, record)
    return path


def load_checkpoint(path: str | os.PathLike | None = None) -> Checkpoint:
    """Load a checkpoint directory (default: the network shipped with fiq-gym).

    Raises :class:`CheckpointError` naming the missing or unreadable file.
    """
    path = Path(path) if path is not None else DEFAULT_CHECKPOINT
    config_file, weights_file = path / CONFIG_FILE, path / WEIGHTS_FILE
    if not path.is_dir():
        raise CheckpointError(f"feature checkpoint directory {path} does not exist; {_TRAIN_HINT}")
    for file in (config_file, weights_file):
        if not file.is_file():
            raise CheckpointError(
                f"{file} is missing: {path} is not a feature checkpoint (it needs {CONFIG_FILE} "
                f"and {WEIGHTS_FILE}); {_TRAIN_HINT}"
            )
    record = read_json(config_file, CheckpointError, _TRAIN_HINT)
    if not isinstance(record, dict) or record.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{config_file} is not a fiq-gym attribute-network config (expected format {CHECKPOINT_FORMAT!r})"
        )
    if record.get("format_version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{config_file} has format_version {record.get('format_version')!r}; this fiq-gym reads "
            f"{CHECKPOINT_VERSION}; retrain it with this version ({_TRAIN_HINT})"
        )
    try:
        config = NetworkConfig.from_json(record["architecture"])
        vocabulary = AttributeVocabulary.from_json(record["vocabulary"])
    except KeyError as e:
        raise CheckpointError(
            f"{config_file} has no {e} field; the checkpoint is damaged; {_TRAIN_HINT}"
        ) from None
    except (TypeError, ValueError, IndexError) as e:
        raise CheckpointError(
            f"{config_file} has an invalid architecture or vocabulary ({e}); the checkpoint is damaged or edited "
            f"by hand; {_TRAIN_HINT}"
        ) from None
    # Building the layers draws their (soon overwritten) initial weights from torch's global
    # generator; fork it so loading features never shifts the caller's seeded stream (a
    # trainer that seeds torch and then builds the default catalog would otherwise initialise
    # its own network differently on a fresh cache than on a warm one).
    with torch.random.fork_rng(devices=[]):
        network = AttributeNet(config)
    try:
        state = load_file(weights_file)
        network.load_state_dict(state, strict=True)
    except (RuntimeError, OSError, ValueError) as e:
        raise CheckpointError(f"{weights_file} does not hold this network's weights ({e})") from None
    network.eval()
    return Checkpoint(network=network, vocabulary=vocabulary, path=path, record=record)


def check_fits(checkpoint: Checkpoint, catalog: Catalog) -> None:
    """Raise :class:`CheckpointError` unless ``checkpoint`` was made for catalogs like ``catalog``:
    the same attribute vocabulary (its heads and columns) and the same image size."""
    where = catalog.provenance.get("path", "the catalog")
    if catalog.images is None:
        raise CheckpointError(
            f"catalog {where} has no images, so there is nothing to compute features from; "
            "open or import the catalog with its images"
        )
    problems = []
    have, want = checkpoint.vocabulary, catalog.vocabulary
    if have != want:
        if have.type_names != want.type_names:
            problems.append(
                f"attribute types {list(have.type_names)} vs the catalog's {list(want.type_names)}"
            )
        else:
            for a, b in zip(have.types, want.types, strict=True):
                if a.values != b.values:
                    problems.append(f"{a.name!r} values {list(a.values)} vs the catalog's {list(b.values)}")
        if not problems:
            problems.append("attribute vocabulary differs (ordering flags)")
    if tuple(checkpoint.config.image_size) != catalog.image_size:
        h, w = checkpoint.config.image_size
        ch, cw = catalog.image_size or (0, 0)
        problems.append(f"image size {h}x{w} vs the catalog's {ch}x{cw}")
    if problems:
        raise CheckpointError(
            f"feature checkpoint {checkpoint.path} does not fit catalog {where}: "
            + "; ".join(problems)
            + f"; {_TRAIN_HINT}, or use a local vision model with --encoder hf:PATH"
        )
