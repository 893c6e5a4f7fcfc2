"""The settings of ``fiq-gym user train`` (no torch here: the command line reads them to
build its flags, and ``fiq-gym --help`` must stay instant)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fiq_gym.utils.arguments import CatalogArgument, PathArgument, SpecArgument

if TYPE_CHECKING:
    from fiq_gym.users.template import TemplateNoise

__all__ = ["TrainArgs"]


@dataclass
class TrainArgs:
    """Every setting of a training run (saved as ``training_args.json`` beside the model)."""

    catalog: CatalogArgument | None = None
    """catalog directory; None: the default synthetic catalog"""
    out: PathArgument = "runs/transformer-user"
    """where the best model goes (config.json, model.safetensors, tokenizer files)"""
    work_dir: PathArgument | None = None
    """training state and TensorBoard logs; None: ``<out>-training``"""
    captions: SpecArgument = "template"
    """caption source: template (written by the template shopper), catalog (the human captions
    of an imported catalog), fashioniq:ROOT or shoes:ROOT (the caption and split files of a
    release, matched to the catalog by id; no images needed)"""
    captions_per_pair: int = 3
    """template captions per (target, shown) pair, from differently seeded generators"""
    train_pairs: int = 20_000
    """(target, shown) pairs to caption for training"""
    val_pairs: int = 1_000
    """pairs held out for validation"""
    near_fraction: float = 0.5
    """share of pairs whose shown item is one of the target's 32 nearest neighbours"""
    noise_omit: float = 0.0
    """template noise: probability of leaving a difference out"""
    noise_wrong_color: float = 0.0
    """template noise: probability of naming a wrong colour"""
    noise_drop_word: float = 0.0
    """template noise: probability of dropping each word"""
    use_attributes: bool = True
    """feed the attribute scores (side information) to the model"""
    d_model: int = 128
    """transformer width"""
    num_heads: int = 4
    """attention heads"""
    ffn_dim: int = 512
    """feed-forward width"""
    num_encoder_layers: int = 1
    """layers of the item-pair encoder"""
    num_decoder_layers: int = 2
    """layers of the caption decoder"""
    dropout: float = 0.0
    """dropout (0: the data are plentiful)"""
    max_caption_length: int = 32
    """longest caption in tokens"""
    epochs: int = 15
    """most passes over the training pairs"""
    batch_size: int = 64
    """samples per gradient step"""
    learning_rate: float = 1e-3
    """Adam learning rate"""
    weight_decay: float = 0.01
    """AdamW weight decay"""
    warmup_steps: int = 200
    """linear learning-rate warm-up steps"""
    patience: int = 3
    """stop after this many epochs without a lower validation loss"""
    bleu_pairs: int = 300
    """validation pairs captioned (greedy) for the BLEU-4 logged each epoch"""
    seed: int = 0
    """seeds the dialogs, the initial weights and the sampling"""
    threads: int | None = None
    """torch CPU threads (None: torch's default)"""
    progress: bool = True
    """show a progress bar"""
    stop_after: int | None = None
    """train at most this many epochs in this invocation, then stop (resume later)"""

    @property
    def noise(self) -> TemplateNoise:
        from fiq_gym.users.template import TemplateNoise  # numpy only; kept out of the CLI's start

        return TemplateNoise(
            omit=self.noise_omit, wrong_color=self.noise_wrong_color, drop_word=self.noise_drop_word
        )

    @property
    def work_path(self) -> Path:
        return Path(self.work_dir) if self.work_dir else Path(f"{self.out}-training")
