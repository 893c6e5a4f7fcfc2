"""Configuration of the relative captioner (the transformer shopper)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transformers import PretrainedConfig

__all__ = ["RelativeCaptionerConfig"]


class RelativeCaptionerConfig(PretrainedConfig):
    """Size and input layout of a :class:`RelativeCaptionerModel`.

    The default size (d_model 128, 4 heads, feed-forward 512, one encoder layer over the
    item tokens, two decoder layers; about 0.8M parameters, 3 MB) is chosen for this
    project's 2-core CPU rather than copied from the paper (6 layers, d 512, ~40M parameters):
    the captions are short (at most ~20 words) over a vocabulary of about a hundred words, and
    the conditioning is a dozen item tokens, so the paper's size would cost 20-50x the compute
    per step for a task whose difficulty is reading the right attribute token, not language.
    The default trains in about half an hour on one core, and a batch of 64 captions decodes in
    tens of milliseconds, which keeps the vector env fast. ``benchmarks/results/captioning.md``
    reports what this size reaches against the template ceiling.

    Args:
        vocab_size: word vocabulary size, including the special tokens.
        feature_dim: size of the item feature vectors (the env's retrieval features).
        attribute_type_names: the catalog's attribute types, in label-column order.
        attribute_group_sizes: number of values (label columns) of each type.
        attribute_names: every label column as ``"type:value"``; with ``category_names``
            it identifies the attribute vocabulary a checkpoint was trained on.
        category_names: the catalog's category names.
        use_attributes: feed the attribute scores (side information) to the encoder; when
            False the model sees the image features only.
        d_model, num_heads, ffn_dim: transformer width, heads, feed-forward width.
        num_encoder_layers: self-attention layers over the item tokens.
        num_decoder_layers: decoder layers (self-attention, cross-attention, feed-forward).
        dropout: dropout in attention, feed-forward and embeddings during training.
        max_caption_length: longest caption in tokens, ``<eos>`` included; sizes the
            position table and the default decoding length.
        feature_source: where the training features came from (``"catalog"`` features or
            ``"thumbnails"``); recorded so a mismatch can be explained.
        feature_weights: sha256 of the network that extracted the catalog's features, when the
            catalog records it; a catalog whose features came from other weights gets a
            warning (same size, different meaning).
        caption_source: what the captions were (``"template"`` or ``"human"``); template
            models are checked to have a word for every attribute value of a catalog.
        initializer_range: std of the normal initialisation of linear and embedding weights.
    """

    model_type = "fiq_relative_captioner"

    def __init__(
        self,
        vocab_size: int = 4,
        feature_dim: int = 192,
        attribute_type_names: Sequence[str] = (),
        attribute_group_sizes: Sequence[int] = (),
        attribute_names: Sequence[str] = (),
        category_names: Sequence[str] = (),
        use_attributes: bool = True,
        d_model: int = 128,
        num_heads: int = 4,
        ffn_dim: int = 512,
        num_encoder_layers: int = 1,
        num_decoder_layers: int = 2,
        dropout: float = 0.0,
        max_caption_length: int = 32,
        feature_source: str = "unknown",
        feature_weights: str | None = None,
        caption_source: str = "template",
        initializer_range: float = 0.02,
        pad_token_id: int = 0,
        bos_token_id: int = 1,
        eos_token_id: int = 2,
        unk_token_id: int = 3,
        **kwargs: Any,
    ) -> None:
        if d_model % num_heads:
            raise ValueError(f"d_model ({d_model}) must be a multiple of num_heads ({num_heads})")
        if len(attribute_type_names) != len(attribute_group_sizes):
            raise ValueError(
                f"{len(attribute_type_names)} attribute types but {len(attribute_group_sizes)} group sizes"
            )
        if attribute_names and len(attribute_names) != sum(attribute_group_sizes):
            raise ValueError(
                f"{len(attribute_names)} attribute names but the groups hold {sum(attribute_group_sizes)} columns"
            )
        self.vocab_size = int(vocab_size)
        self.feature_dim = int(feature_dim)
        self.attribute_type_names = list(attribute_type_names)
        self.attribute_group_sizes = [int(g) for g in attribute_group_sizes]
        self.attribute_names = list(attribute_names)
        self.category_names = list(category_names)
        self.use_attributes = bool(use_attributes)
        self.d_model = int(d_model)
        self.num_heads = int(num_heads)
        self.ffn_dim = int(ffn_dim)
        self.num_encoder_layers = int(num_encoder_layers)
        self.num_decoder_layers = int(num_decoder_layers)
        self.dropout = float(dropout)
        self.max_caption_length = int(max_caption_length)
        self.feature_source = str(feature_source)
        self.feature_weights = feature_weights
        self.caption_source = str(caption_source)
        self.initializer_range = float(initializer_range)
        self.unk_token_id = int(unk_token_id)
        # transformers 5 types PreTrainedConfig.__init__ as its dataclass fields only; it takes
        # the special token ids through its keyword arguments all the same.
        super().__init__(  # type: ignore[call-arg]
            pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id, **kwargs
        )

    @property
    def num_attributes(self) -> int:
        """Attribute score columns the model reads (all types together)."""
        return sum(self.attribute_group_sizes)

    @property
    def num_memory_tokens(self) -> int:
        """Item tokens the decoder attends to: target, shown, difference, and one per
        attribute type when attributes are used."""
        return 3 + (len(self.attribute_group_sizes) if self.use_attributes else 0)
