"""The relative captioner: item features and attributes in, a relative caption out.

Architecture (Fashion IQ's user simulator, sized for a CPU):

* **Item encoder.** The target's and the shown item's features each become a token (one
  shared projection plus a role embedding), their difference a third; with side information,
  each attribute type adds a token projected from the two items' scores for that type and
  their difference (so "color" is one token that can say "red vs blue"). A small pre-norm
  transformer encoder lets these ~10 tokens exchange information.
* **Caption decoder.** A pre-norm transformer decoder (causal self-attention,
  cross-attention to the item tokens, feed-forward) over word embeddings plus learned
  positions; the output layer shares the word embedding matrix.

The layers are plain ``torch`` modules inside a :class:`~transformers.PreTrainedModel`, so
``save_pretrained`` / ``from_pretrained`` and the config behave as for any Hugging Face model,
while decoding is this module's own: :meth:`RelativeCaptionerModel.generate` runs greedy,
sampling and beam search over a preallocated key/value cache and takes its random numbers
from the caller (one uniform per pair and step), because environments must reproduce their
captions from numpy generators, one per sub-env. (``transformers``' ``GenerationMixin``
draws from torch's global generator, which cannot give per-pair streams.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NotRequired, TypedDict, cast

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedModel
from transformers.utils import ModelOutput

from fiq_gym.users.transformer.configuration_relative_captioner import RelativeCaptionerConfig

__all__ = [
    "DECODING_STRATEGIES",
    "CaptionerInputs",
    "RelativeCaptionerModel",
    "RelativeCaptionerOutput",
    "caption_flops",
]

DECODING_STRATEGIES = ("greedy", "sample", "beam")
#: Greedy and sampled decoding drop ended rows from the batch once this share of the live rows
#: has ended: copying the caches costs about one decoding step, so not after every row.
COMPACT_FRACTION = 0.25


class CaptionerInputs(TypedDict):
    """A batch of pairs' item inputs, as ``model(**inputs)`` and ``model.generate(**inputs)``
    take them; the attribute scores only for a model with ``config.use_attributes``."""

    target_features: torch.Tensor
    shown_features: torch.Tensor
    target_attributes: NotRequired[torch.Tensor]
    shown_attributes: NotRequired[torch.Tensor]


@dataclass
class RelativeCaptionerOutput(ModelOutput):
    """``loss``: mean token cross-entropy (when labels are given); ``logits``: (B, L, V)."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None


class _Attention(nn.Module):
    """Multi-head attention with separate query and key/value projections, so cross-attention
    can project the item tokens once per caption batch and reuse them every decoding step."""

    def __init__(self, d_model: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.q_proj = nn.Linear(d_model, d_model)
        self.kv_proj = nn.Linear(d_model, 2 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.dropout = dropout

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)

    def keys_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, H, N, head_dim) keys and values of ``x`` (B, N, d)."""
        k, v = self.kv_proj(x).chunk(2, dim=-1)
        return self._heads(k), self._heads(v)

    def attend(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False) -> torch.Tensor:
        q = self._heads(self.q_proj(x))
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=causal)
        b, _, n, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, -1))

    def forward(
        self, x: torch.Tensor, source: torch.Tensor | None = None, causal: bool = False
    ) -> torch.Tensor:
        k, v = self.keys_values(x if source is None else source)
        return self.attend(x, k, v, causal)


class _FeedForward(nn.Sequential):
    def __init__(self, d_model: int, ffn_dim: int, dropout: float) -> None:
        super().__init__(
            nn.Linear(d_model, ffn_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn_dim, d_model)
        )


class _EncoderLayer(nn.Module):
    def __init__(self, config: RelativeCaptionerConfig) -> None:
        super().__init__()
        d = config.d_model
        self.norm1 = nn.LayerNorm(d)
        self.attn = _Attention(d, config.num_heads, config.dropout)
        self.norm2 = nn.LayerNorm(d)
        self.ffn = _FeedForward(d, config.ffn_dim, config.dropout)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x)))
        return x + self.drop(self.ffn(self.norm2(x)))


class _DecoderLayer(nn.Module):
    def __init__(self, config: RelativeCaptionerConfig) -> None:
        super().__init__()
        d = config.d_model
        self.norm1 = nn.LayerNorm(d)
        self.self_attn = _Attention(d, config.num_heads, config.dropout)
        self.norm2 = nn.LayerNorm(d)
        self.cross_attn = _Attention(d, config.num_heads, config.dropout)
        self.norm3 = nn.LayerNorm(d)
        self.ffn = _FeedForward(d, config.ffn_dim, config.dropout)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.self_attn(self.norm1(x), causal=True))
        x = x + self.drop(self.cross_attn(self.norm2(x), memory))
        return x + self.drop(self.ffn(self.norm3(x)))

    def step(
        self,
        x: torch.Tensor,
        t: int,
        cache_k: torch.Tensor,
        cache_v: torch.Tensor,
        cross_k: torch.Tensor,
        cross_v: torch.Tensor,
    ) -> torch.Tensor:
        """One decoding step for ``x`` (B, 1, d) at position ``t``: writes this position's
        key and value into the cache and attends over positions ``0..t``."""
        h = self.norm1(x)
        k, v = self.self_attn.keys_values(h)
        cache_k[:, :, t : t + 1] = k
        cache_v[:, :, t : t + 1] = v
        x = x + self.self_attn.attend(h, cache_k[:, :, : t + 1], cache_v[:, :, : t + 1])
        x = x + self.cross_attn.attend(self.norm2(x), cross_k, cross_v)
        return x + self.ffn(self.norm3(x))


class _ItemEncoder(nn.Module):
    """Target, shown, their difference and (optionally) per-attribute-type tokens."""

    def __init__(self, config: RelativeCaptionerConfig) -> None:
        super().__init__()
        d = config.d_model
        self.use_attributes = config.use_attributes
        self.feature_proj = nn.Linear(config.feature_dim, d)
        self.difference_proj = nn.Linear(config.feature_dim, d)
        self.groups = list(config.attribute_group_sizes) if config.use_attributes else []
        self.attribute_projs = nn.ModuleList(nn.Linear(3 * g, d) for g in self.groups)
        self.roles = nn.Embedding(config.num_memory_tokens, d)
        self.drop = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(_EncoderLayer(config) for _ in range(config.num_encoder_layers))
        self.norm = nn.LayerNorm(d)

    def forward(
        self,
        target_features: torch.Tensor,
        shown_features: torch.Tensor,
        target_attributes: torch.Tensor | None,
        shown_attributes: torch.Tensor | None,
    ) -> torch.Tensor:
        tokens = [
            self.feature_proj(target_features),
            self.feature_proj(shown_features),
            self.difference_proj(target_features - shown_features),
        ]
        if self.groups:
            if target_attributes is None or shown_attributes is None:
                raise ValueError(
                    "this captioner uses attributes: pass target_attributes and shown_attributes"
                )
            start = 0
            for proj, size in zip(self.attribute_projs, self.groups, strict=True):
                a = target_attributes[:, start : start + size]
                b = shown_attributes[:, start : start + size]
                tokens.append(proj(torch.cat([a, b, a - b], dim=-1)))
                start += size
        x = torch.stack(tokens, dim=1) + self.roles.weight
        x = self.drop(x)
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)


class RelativeCaptionerPreTrainedModel(PreTrainedModel):
    config_class = RelativeCaptionerConfig
    config: RelativeCaptionerConfig
    base_model_prefix = "captioner"
    main_input_name = "target_features"


class RelativeCaptionerModel(RelativeCaptionerPreTrainedModel):
    """Writes a relative caption about a target item given a shown item.

    Inputs are batches of the items' features (B, feature_dim) and, when
    ``config.use_attributes``, their attribute scores (B, num_attributes); take both from
    :func:`fiq_gym.gallery.gallery_of` so the model sees what the env's agents see.
    """

    def __init__(self, config: RelativeCaptionerConfig) -> None:
        super().__init__(config)
        d = config.d_model
        self.encoder = _ItemEncoder(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, d)
        self.embed_positions = nn.Embedding(config.max_caption_length + 1, d)
        self.drop = nn.Dropout(config.dropout)
        # A ModuleList of _DecoderLayer; typed as their sequence, which it is, so that their
        # attributes are known.
        self.layers = cast(
            "Sequence[_DecoderLayer]",
            nn.ModuleList(_DecoderLayer(config) for _ in range(config.num_decoder_layers)),
        )
        self.norm = nn.LayerNorm(d)
        self.embed_scale = math.sqrt(d)
        self.post_init()

    # --- training / scoring ---------------------------------------------------------------
    def encode(
        self,
        target_features: torch.Tensor,
        shown_features: torch.Tensor,
        target_attributes: torch.Tensor | None = None,
        shown_attributes: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The item tokens the decoder attends to, (B, num_memory_tokens, d_model)."""
        return self.encoder(target_features, shown_features, target_attributes, shown_attributes)

    def _embed(self, input_ids: torch.Tensor, start: int = 0) -> torch.Tensor:
        positions = torch.arange(start, start + input_ids.shape[1], device=input_ids.device)
        return self.embed_tokens(input_ids) * self.embed_scale + self.embed_positions(positions)

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        return F.linear(self.norm(h), self.embed_tokens.weight)

    def forward(
        self,
        target_features: torch.Tensor,
        shown_features: torch.Tensor,
        target_attributes: torch.Tensor | None = None,
        shown_attributes: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> RelativeCaptionerOutput:
        """Teacher-forced logits, and the loss when ``labels`` are given.

        Args:
            input_ids: (B, L) decoder inputs starting with ``<bos>``; if omitted they are
                ``labels`` shifted right behind ``<bos>`` (with -100 read as ``<pad>``).
            labels: (B, L) the caption ids ending with ``<eos>``, -100 where not scored.
        """
        if input_ids is None:
            if labels is None:
                raise ValueError("pass input_ids, labels, or both")
            input_ids = self.shift_right(labels)
        if input_ids.shape[1] > self.config.max_caption_length:
            raise ValueError(
                f"captions of {input_ids.shape[1]} tokens exceed max_caption_length "
                f"{self.config.max_caption_length}"
            )
        memory = self.encode(target_features, shown_features, target_attributes, shown_attributes)
        x = self.drop(self._embed(input_ids))
        for layer in self.layers:
            x = layer(x, memory)
        logits = self._logits(x)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100
            )
        return RelativeCaptionerOutput(loss=loss, logits=logits)

    def shift_right(self, labels: torch.Tensor) -> torch.Tensor:
        """Decoder inputs for ``labels``: ``<bos>`` then the labels minus the last token."""
        shifted = labels.new_full(labels.shape, self.config.pad_token_id)
        shifted[:, 0] = self.config.bos_token_id
        shifted[:, 1:] = labels[:, :-1]
        return shifted.masked_fill(shifted == -100, self.config.pad_token_id)

    # --- decoding ---------------------------------------------------------------------------
    @torch.inference_mode()
    def generate(
        self,
        target_features: torch.Tensor,
        shown_features: torch.Tensor,
        target_attributes: torch.Tensor | None = None,
        shown_attributes: torch.Tensor | None = None,
        *,
        strategy: str = "greedy",
        max_new_tokens: int | None = None,
        uniforms: torch.Tensor | None = None,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        num_beams: int = 4,
        length_penalty: float = 1.0,
    ) -> torch.Tensor:
        """Caption ids for a batch of pairs, (B, max_new_tokens) int64: words, then
        ``<eos>`` (unless cut at the length limit), then ``<pad>``.

        Args:
            strategy: ``"greedy"`` (most likely word each step), ``"sample"`` or ``"beam"``.
            max_new_tokens: longest caption, ``<eos>`` included (default and upper bound:
                ``config.max_caption_length``).
            uniforms: for sampling, (B, max_new_tokens) numbers in [0, 1); step ``t`` of pair
                ``i`` samples by inverse CDF at ``uniforms[i, t]``, so a pair's caption
                depends only on its own row. Required for ``"sample"``, unused otherwise.
            temperature: sampling temperature (> 0).
            top_k: sample among the ``top_k`` most likely words only (0: all).
            top_p: nucleus sampling: among the fewest most likely words whose probability
                sums to at least ``top_p`` (1.0: all).
            num_beams: beams per pair for ``"beam"``.
            length_penalty: beam hypotheses are ranked by log-probability / length ** this
                (0: plain log-probability, which favours short captions).
        """
        if strategy not in DECODING_STRATEGIES:
            raise ValueError(f"strategy must be one of {list(DECODING_STRATEGIES)}, got {strategy!r}")
        limit = self.config.max_caption_length
        length = limit if max_new_tokens is None else int(max_new_tokens)
        if not 1 <= length <= limit:
            raise ValueError(f"max_new_tokens must lie in [1, {limit}], got {max_new_tokens}")
        memory = self.encode(target_features, shown_features, target_attributes, shown_attributes)
        if strategy == "beam":
            if num_beams < 1:
                raise ValueError(f"num_beams must be at least 1, got {num_beams}")
            return self._beam_search(memory, length, num_beams, float(length_penalty))
        if strategy == "sample":
            if not temperature > 0:
                raise ValueError(f"temperature must be positive, got {temperature}")
            if not 0.0 < top_p <= 1.0:
                raise ValueError(f"top_p must lie in (0, 1], got {top_p}")
            if top_k < 0:
                raise ValueError(f"top_k must be >= 0, got {top_k}")
            if uniforms is None or tuple(uniforms.shape) != (memory.shape[0], length):
                got = None if uniforms is None else tuple(uniforms.shape)
                raise ValueError(
                    f"sampling needs uniforms of shape {(memory.shape[0], length)} (one per pair and step), got {got}"
                )
        return self._decode(memory, length, strategy, uniforms, float(temperature), int(top_k), float(top_p))

    def _start(self, memory: torch.Tensor, length: int) -> list[tuple[torch.Tensor, ...]]:
        """Per layer: an empty self-attention cache for ``length`` positions and the item
        tokens' cross-attention keys and values (computed once)."""
        b = memory.shape[0]
        caches: list[tuple[torch.Tensor, ...]] = []
        for layer in self.layers:
            attn = layer.self_attn
            shape = (b, attn.num_heads, length, attn.head_dim)
            cross_k, cross_v = layer.cross_attn.keys_values(memory)
            caches.append((memory.new_empty(shape), memory.new_empty(shape), cross_k, cross_v))
        return caches

    def _step(self, tokens: torch.Tensor, t: int, caches: list[tuple[torch.Tensor, ...]]) -> torch.Tensor:
        """Logits (B, V) for the next word after ``tokens`` (B,) at position ``t``, through the
        layers' modules (:meth:`_DecoderLayer.step`). Decoding runs :class:`_Stepper`, which
        computes the same numbers; this is its readable definition (and the path in training
        mode, where attention dropout applies)."""
        x = self._embed(tokens[:, None], start=t)
        for layer, cache in zip(self.layers, caches, strict=True):
            x = layer.step(x, t, *cache)
        return self._logits(x)[:, 0]

    def _stepper(self) -> _Stepper | RelativeCaptionerModel:
        """What decoding calls for one step's logits (``stepper._step(tokens, t, caches)``):
        the plain-tensor :class:`_Stepper` in eval mode, the modules in training mode."""
        return self if self.training else _Stepper(self)

    def _banned(self) -> list[int]:
        """Tokens never generated: padding, a second ``<bos>``, and ``<unk>`` (which human
        captions with rare words teach, but no shopper should say)."""
        return [self.config.pad_token_id, self.config.bos_token_id, self.config.unk_token_id]

    def _banned_mask(self, device: torch.device) -> torch.Tensor:
        """(V,) True at the :meth:`_banned` tokens."""
        mask = torch.zeros(self.config.vocab_size, dtype=torch.bool, device=device)
        mask[self._banned()] = True
        return mask

    def _decode(
        self,
        memory: torch.Tensor,
        length: int,
        strategy: str,
        uniforms: torch.Tensor | None,
        temperature: float,
        top_k: int,
        top_p: float,
    ) -> torch.Tensor:
        """Greedy or sampled decoding. Rows that have ended drop out of the batch once a
        quarter of the live ones have (their caches are compacted), so a batch costs about its
        average caption length, not its longest; each row's result does not depend on when."""
        cfg = self.config
        b = memory.shape[0]
        out = torch.full((b, length), cfg.pad_token_id, dtype=torch.long, device=memory.device)
        tokens = torch.full((b,), cfg.bos_token_id, dtype=torch.long, device=memory.device)
        live = torch.arange(b, device=memory.device)  # original rows still decoding
        ended = torch.zeros(b, dtype=torch.bool, device=memory.device)  # per live row
        caches = self._start(memory, length)
        stepper = self._stepper()
        banned = self._banned_mask(memory.device)
        pad, eos = cfg.pad_token_id, cfg.eos_token_id
        columns = None if uniforms is None else uniforms.t()  # columns[t]: step t's numbers, by row
        all_live = True  # live is still arange(b): no row has been dropped yet
        for t in range(length):
            logits = stepper._step(tokens, t, caches)
            logits.masked_fill_(banned, -torch.inf)
            if strategy == "greedy":
                tokens = logits.argmax(dim=-1)
            else:
                assert columns is not None
                u = columns[t] if all_live else columns[t].index_select(0, live)
                tokens = _sample(logits, u, temperature, top_k, top_p)
            tokens = tokens.masked_fill(ended, pad)
            if all_live:
                out[:, t] = tokens
            else:
                out[:, t].index_copy_(0, live, tokens)
            ended |= tokens == eos
            n_ended = int(ended.sum())
            if n_ended == len(live):
                break
            if n_ended >= COMPACT_FRACTION * len(live):
                keep = (~ended).nonzero().squeeze(1)
                live, tokens = live.index_select(0, keep), tokens.index_select(0, keep)
                ended = ended.new_zeros(len(keep))
                caches = [_keep_rows(cache, keep, t + 1) for cache in caches]
                all_live = False
        return out

    def _beam_search(self, memory: torch.Tensor, length: int, k: int, alpha: float) -> torch.Tensor:
        """Batched beam search with a pool of the ``k`` best finished hypotheses per pair.

        Live beams extend by their ``2k`` best continuations; those that end (``<eos>``) enter
        the pool, ranked by log-probability / length ** ``alpha``; the ``k`` best others stay
        live. A pair is done once its pool is full and no live beam can still beat the
        pool's worst (scores only fall, so the bound is exact for ``alpha >= 0``).
        """
        cfg = self.config
        b, device = memory.shape[0], memory.device
        memory = memory.repeat_interleave(k, dim=0)
        caches = self._start(memory, length)
        stepper = self._stepper()
        v = cfg.vocab_size
        banned = self._banned_mask(device)
        eos, pad = cfg.eos_token_id, cfg.pad_token_id
        seqs = torch.full((b * k, length), pad, dtype=torch.long, device=device)
        scores = torch.full((b, k), -torch.inf, device=device)
        scores[:, 0] = 0.0  # all beams start identical: expand only the first
        pool_scores = torch.full((b, k), -torch.inf, device=device)
        pool_seqs = torch.full((b, k, length), pad, dtype=torch.long, device=device)
        tokens = torch.full((b * k,), cfg.bos_token_id, dtype=torch.long, device=device)
        base = (torch.arange(b, device=device) * k)[:, None]
        done = torch.zeros(b, dtype=torch.bool, device=device)
        for t in range(length):
            logits = stepper._step(tokens, t, caches).float()
            logits.masked_fill_(banned, -torch.inf)
            logp = torch.log_softmax(logits, dim=-1)
            cand = (scores.reshape(-1, 1) + logp).reshape(b, k * v)
            top_scores, top_idx = cand.topk(2 * k, dim=1)
            beam, word = top_idx // v, top_idx % v
            src = (base + beam).reshape(-1)
            # finished candidates -> pool (normalised score), at most one per source beam
            ended = (word == eos) & torch.isfinite(top_scores) & ~done[:, None]
            norm = (top_scores / float(t + 1) ** alpha).masked_fill(~ended, -torch.inf)
            ended_seqs = seqs[src].reshape(b, 2 * k, length).clone()
            ended_seqs[:, :, t] = eos
            all_scores = torch.cat([pool_scores, norm], dim=1)
            all_seqs = torch.cat([pool_seqs, ended_seqs], dim=1)
            pool_scores, keep = all_scores.topk(k, dim=1)
            pool_seqs = all_seqs.gather(1, keep[:, :, None].expand(-1, -1, length))
            # the k best unfinished candidates stay live
            live_scores = top_scores.masked_fill(word == eos, -torch.inf)
            live_scores, pick = live_scores.topk(k, dim=1)
            chosen = src.reshape(b, 2 * k).gather(1, pick).reshape(-1)
            tokens = word.gather(1, pick).reshape(-1)
            seqs = seqs[chosen]
            seqs[:, t] = tokens
            for cache in caches:
                cache[0].copy_(cache[0][chosen])
                cache[1].copy_(cache[1][chosen])
            scores = live_scores
            bound = scores.max(dim=1).values / float(length) ** alpha
            done |= torch.isfinite(pool_scores[:, -1]) & (bound <= pool_scores[:, -1])
            if bool(done.all()):
                break
        # pairs whose pool is not full by the length limit also consider the cut live beams
        cut = (scores / float(length) ** alpha).masked_fill(done[:, None], -torch.inf)
        all_scores = torch.cat([pool_scores, cut], dim=1)
        all_seqs = torch.cat([pool_seqs, seqs.reshape(b, k, length)], dim=1)
        best = all_scores.argmax(dim=1)
        return all_seqs[torch.arange(b, device=device), best]


def caption_flops(config: RelativeCaptionerConfig, lengths: Sequence[int]) -> float:
    """Mean floating-point operations to write one caption, for captions of ``lengths``
    generated tokens each (``<eos>`` included), with the key/value cache of :meth:`generate`.

    A multiply-add counts 2. Counted: every linear layer and both products of every attention
    (query-key scores and the weighted sum of values). Not counted: norms, GELU, softmax,
    residual sums, embeddings and sampling (a few per cent more, and not matrix work).

    * once per caption: the item encoder (the feature, difference and attribute projections,
      then each encoder layer over the ``M`` item tokens) and each decoder layer's
      cross-attention keys and values of those tokens;
    * per generated token at position ``t``, per decoder layer: its key/value, query and
      output projections, attention over the ``t + 1`` cached positions, the cross-attention's
      query and output projections and attention over the ``M`` item tokens, the
      feed-forward; then the output layer over the vocabulary.
    """
    d, ffn, m = config.d_model, config.ffn_dim, config.num_memory_tokens
    groups = list(config.attribute_group_sizes) if config.use_attributes else []
    encoder = 2 * 3 * config.feature_dim * d + sum(2 * 3 * g * d for g in groups)
    encoder += config.num_encoder_layers * (m * 2 * 4 * d * d + 2 * 2 * m * m * d + m * 2 * 2 * d * ffn)
    encoder += config.num_decoder_layers * m * 2 * 2 * d * d  # cross-attention keys and values
    per_token = (
        config.num_decoder_layers * (2 * 6 * d * d + 2 * 2 * m * d + 2 * 2 * d * ffn)
        + 2 * d * config.vocab_size
    )
    per_position = config.num_decoder_layers * 2 * 2 * d  # self-attention, per cached position
    lengths = [int(n) for n in lengths]
    if not lengths:
        raise ValueError("caption_flops needs at least one caption length")
    total = sum(encoder + n * per_token + per_position * n * (n + 1) // 2 for n in lengths)
    return total / len(lengths)


# ``AutoConfig`` / ``AutoModel.from_pretrained(checkpoint_dir)`` work once this module is imported.
AutoConfig.register(RelativeCaptionerConfig.model_type, RelativeCaptionerConfig, exist_ok=True)
AutoModel.register(RelativeCaptionerConfig, RelativeCaptionerModel, exist_ok=True)


def _keep_rows(cache: tuple[torch.Tensor, ...], keep: torch.Tensor, filled: int) -> tuple[torch.Tensor, ...]:
    """A layer's caches for the rows ``keep`` (indices); only the ``filled`` self-attention
    positions written so far are copied."""
    k, v, cross_k, cross_v = cache
    n = len(keep)
    new_k, new_v = k.new_empty((n, *k.shape[1:])), v.new_empty((n, *v.shape[1:]))
    torch.index_select(k[:, :, :filled], 0, keep, out=new_k[:, :, :filled])
    torch.index_select(v[:, :, :filled], 0, keep, out=new_v[:, :, :filled])
    return new_k, new_v, cross_k.index_select(0, keep), cross_v.index_select(0, keep)


class _Stepper:
    """One decoding step of the whole decoder as plain tensor operations: the computation of
    :meth:`RelativeCaptionerModel._step` (embedding, every :meth:`_DecoderLayer.step`, the
    output layer) in eval mode, op for op on the same shapes, so the logits are bit for bit
    the same (a test compares them), without the modules' call overhead, the (B, 1, d)
    reshapes and a position tensor per step. The parameters are read when it is built (once
    per ``generate`` call)."""

    def __init__(self, model: RelativeCaptionerModel) -> None:
        d = model.config.d_model
        self.d = d
        # fl(w * s) row by row equals the embedding's rows times s, as _embed computes them.
        self.embed = model.embed_tokens.weight * model.embed_scale
        self.positions = model.embed_positions.weight
        self.layers = [_layer_weights(layer) for layer in model.layers]
        self.heads = model.layers[0].self_attn.num_heads if model.layers else 1
        self.norm = (model.norm.weight, model.norm.bias, model.norm.eps)
        self.output = model.embed_tokens.weight

    def _step(self, tokens: torch.Tensor, t: int, caches: list[tuple[torch.Tensor, ...]]) -> torch.Tensor:
        d, h = self.d, self.heads
        shape = (d,)
        x = F.embedding(tokens, self.embed) + self.positions[t]
        b = x.shape[0]
        for w, (cache_k, cache_v, cross_k, cross_v) in zip(self.layers, caches, strict=True):
            hd = cache_k.shape[-1]
            y = F.layer_norm(x, shape, w[0], w[1], w[2])
            kv = F.linear(y, w[3], w[4])
            cache_k[:, :, t] = kv[:, :d].view(b, h, hd)
            cache_v[:, :, t] = kv[:, d:].view(b, h, hd)
            q = F.linear(y, w[5], w[6]).view(b, 1, h, hd).transpose(1, 2)
            a = F.scaled_dot_product_attention(q, cache_k[:, :, : t + 1], cache_v[:, :, : t + 1])
            x = x + F.linear(a.transpose(1, 2).reshape(b, d), w[7], w[8])
            y = F.layer_norm(x, shape, w[9], w[10], w[11])
            q = F.linear(y, w[12], w[13]).view(b, 1, h, hd).transpose(1, 2)
            a = F.scaled_dot_product_attention(q, cross_k, cross_v)
            x = x + F.linear(a.transpose(1, 2).reshape(b, d), w[14], w[15])
            y = F.layer_norm(x, shape, w[16], w[17], w[18])
            x = x + F.linear(F.gelu(F.linear(y, w[19], w[20])), w[21], w[22])
        return F.linear(F.layer_norm(x, shape, *self.norm), self.output)


def _layer_weights(layer: _DecoderLayer) -> tuple:
    """A decoder layer's parameters in the order :meth:`_Stepper._step` reads them."""
    sa, ca, ffn = layer.self_attn, layer.cross_attn, layer.ffn
    if not isinstance(ffn[1], nn.GELU) or ffn[1].approximate != "none":
        raise TypeError("the decoding stepper assumes the feed-forward's exact GELU")
    return (
        *(layer.norm1.weight, layer.norm1.bias, layer.norm1.eps),
        *(sa.kv_proj.weight, sa.kv_proj.bias, sa.q_proj.weight, sa.q_proj.bias),
        *(sa.out_proj.weight, sa.out_proj.bias),
        *(layer.norm2.weight, layer.norm2.bias, layer.norm2.eps),
        *(ca.q_proj.weight, ca.q_proj.bias, ca.out_proj.weight, ca.out_proj.bias),
        *(layer.norm3.weight, layer.norm3.bias, layer.norm3.eps),
        *(ffn[0].weight, ffn[0].bias, ffn[3].weight, ffn[3].bias),
    )


def _sample(
    logits: torch.Tensor, u: torch.Tensor, temperature: float, top_k: int, top_p: float
) -> torch.Tensor:
    """One token per row by inverse CDF at ``u`` over the (filtered) distribution.

    Words are sorted by probability (stable, so ties keep id order); the CDF is accumulated in
    float64 so the same row gives the same token in any batch up to float32 logit rounding.
    """
    probs = torch.softmax(logits.double() / temperature, dim=-1)
    sorted_p, order = probs.sort(dim=-1, descending=True, stable=True)
    if top_k > 0:
        sorted_p[:, top_k:] = 0.0
    if top_p < 1.0:
        before = sorted_p.cumsum(dim=-1) - sorted_p  # mass of strictly more likely words
        sorted_p = sorted_p.masked_fill(before >= top_p, 0.0)
    cdf = sorted_p.cumsum(dim=-1)
    target = (u.to(cdf.dtype) * cdf[:, -1]).unsqueeze(1)
    pick = torch.searchsorted(cdf, target, right=True).clamp_max(cdf.shape[1] - 1)
    return order.gather(1, pick).squeeze(1)
