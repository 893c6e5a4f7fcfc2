"""The settings of ``fiq-gym features train`` (no torch here: the command line reads them
to build its flags, and ``fiq-gym --help`` must stay instant)."""

from __future__ import annotations

from dataclasses import dataclass

from fiq_gym.utils.arguments import CatalogArgument, PathArgument

__all__ = ["TrainArgs"]


@dataclass
class TrainArgs:
    catalog: CatalogArgument
    """catalog directory with images and attribute labels"""
    out: PathArgument = ""
    """checkpoint directory (default: runs/features-<catalog folder name>-s<seed>)"""
    epochs: int = 30
    """most passes over the training items"""
    batch_size: int = 128
    """samples per gradient step"""
    learning_rate: float = 2e-3
    """peak AdamW learning rate; it decays to zero on a cosine over all epochs"""
    weight_decay: float = 1e-4
    """AdamW weight decay"""
    feature_dim: int = 128
    """size of the feature layer (the penultimate layer), i.e. of the item features"""
    channels: tuple[int, ...] = (32, 48, 96, 128)
    """output channels of the strided convolutions"""
    category_head: bool = True
    """also predict each item's category (trained with the attribute heads, so the features
    carry it); ignored for a catalog with a single category"""
    heldout_fraction: float = 0.1
    """share of items held out to measure accuracy and stop early"""
    heldout_max: int = 10_000
    """at most this many held-out items (keeps each evaluation short on huge catalogs)"""
    patience: int = 5
    """stop after this many epochs without a lower held-out loss"""
    seed: int = 0
    """seeds the split, the initial weights and the order of the items"""
    threads: int = 0
    """torch CPU threads (0: all cores)"""
    resume: bool = False
    """continue from OUT/train_state instead of starting afresh"""
    overwrite: bool = False
    """start afresh even if OUT holds an earlier run (its checkpoint, logs and state are replaced)"""
    export: str = ""
    """also copy the finished checkpoint (config.json, model.safetensors) into this directory"""
    progress: bool = True
    """show a progress bar"""
    tensorboard: bool = True
    """write TensorBoard scalars"""
