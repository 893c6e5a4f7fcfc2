"""``LanguageModelUser``: a local Hugging Face causal language model plays the shopper.

Research on chat-based retrieval (ChatIR, PlugIR) simulates shoppers with large language
models. This shopper prompts any causal LM saved in a local directory (what
``save_pretrained`` writes, or a ``huggingface-cli download ... --local-dir DIR`` folder) with
both garments' descriptions and attributes, and cleans what it writes into a short relative
caption. Nothing is downloaded: the model and tokenizer load with ``local_files_only=True``.
``docs/shoppers.md`` says how to get a model there, what it costs and how deterministic it is.

Randomness and batching. Greedy decoding (the default) captions all pairs of a call in
batches, left-padded; it draws nothing from the caller's generators. Sampling draws one seed
per pair (from ``rng[i]`` when given one generator per pair) and decodes that pair alone
under a torch generator seeded with it: a left-padded batch computes each row's logits with
slightly different rounding (about 1e-7), which can move a sampled token, so sampling in
batches would make a vector env's sub-env differ from a single env. Greedy is exposed to the
same rounding only where the two best next tokens tie within it; ``batch_size=1`` removes
even that.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import string
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from fiq_gym.catalog.model import Catalog
from fiq_gym.errors import CheckpointError
from fiq_gym.users.base import CaptionBatch, User
from fiq_gym.users.caption_metrics import DifferenceOracle
from fiq_gym.users.decoding import decoding_from
from fiq_gym.users.phrasebook import phrasebook
from fiq_gym.users.words import language_model_words
from fiq_gym.utils.threads import torch_threads

__all__ = [
    "DEFAULT_PROMPT",
    "PROMPT_FIELDS",
    "LMDecoding",
    "LanguageModelUser",
    "clean_generation",
    "load_language_model",
]

#: The prompt the shopper's model continues. A base model completes the last line ("the
#: garment I want ...") with the caption; the example wording steers it towards Fashion IQ's
#: style ("is darker and has longer sleeves"), which the faithfulness parser reads.
DEFAULT_PROMPT = (
    "An online shop shows a shopper a garment. The shopper wants a different garment and says "
    "in a few words how the one they want differs from the one shown, like a shopping "
    'assistant would be told: "is darker and has longer sleeves" or "is a dress with a floral '
    'print".\n'
    "Shown garment: {shown}\n"
    "Wanted garment: {target}\n"
    "Feedback: the wanted garment"
)

#: The placeholders a prompt may use: each item in full (``{target}``: description and
#: attributes), or its description or attribute list alone.
PROMPT_FIELDS = (
    "target",
    "shown",
    "target_description",
    "shown_description",
    "target_attributes",
    "shown_attributes",
)

_SAVE_HINT = (
    "put a causal language model there: model.save_pretrained(DIR) and tokenizer.save_pretrained(DIR) "
    "(AutoModelForCausalLM / AutoTokenizer), or on a machine with internet "
    "`huggingface-cli download MODEL --local-dir DIR` and copy DIR here"
)
_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
# Labels a model may put before its answer; removed with the prompt's own last line.
_LABELS = ("feedback:", "answer:", "caption:", "response:", "output:")
# Characters stripped from both ends of the caption, and removed inside it.
_EDGE = " \t\"'`“”‘’«».,;:!?-*"
_QUOTES = re.compile(r"[\"`“”«»]")
# The first sentence ends at a line break or at . ! ? followed by white space: a full stop
# at the very end may still become "3.5", so it counts once the next token shows a space.
_SENTENCE_END = re.compile(r"\n|[.!?](?=\s)")
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class LMDecoding:
    """How the language model's next-token probabilities become a caption.

    Attributes:
        strategy: ``"greedy"`` (default: one fixed caption per pair, batched) or
            ``"sample"`` (varied captions; each pair decoded alone under its own seed, see the
            module docstring).
        temperature, top_p, top_k: sampling settings (``top_k=0``: off).
        max_new_tokens: the most tokens the model writes per caption; generation of a pair
            also stops at the end of its first sentence or line, or at the model's
            end-of-sequence token.
    """

    strategy: str = "greedy"
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 0
    max_new_tokens: int = 24

    def __post_init__(self) -> None:
        if self.strategy not in ("greedy", "sample"):
            raise ValueError(f"decoding strategy must be 'greedy' or 'sample', got {self.strategy!r}")
        if not (isinstance(self.temperature, int | float) and self.temperature > 0):
            raise ValueError(f"temperature must be a positive number, got {self.temperature!r}")
        if not (isinstance(self.top_p, int | float) and 0.0 < self.top_p <= 1.0):
            raise ValueError(f"top_p must lie in (0, 1], got {self.top_p!r}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k must be an integer >= 0 (0: off), got {self.top_k!r}")
        if (
            isinstance(self.max_new_tokens, bool)
            or not isinstance(self.max_new_tokens, int)
            or self.max_new_tokens < 1
        ):
            raise ValueError(f"max_new_tokens must be a positive integer, got {self.max_new_tokens!r}")

    @classmethod
    def of(cls, value: LMDecoding | Mapping[str, Any] | str | None) -> LMDecoding:
        """An :class:`LMDecoding` from itself, a dict of its fields, a strategy name, or None
        (the default), so ``user_kwargs={"decoding": "sample"}`` works."""
        return decoding_from(cls, value, "'greedy' / 'sample'")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- cleaning -----------------------------------------------------------------------------


def _prompt_echoes(prompt: str) -> tuple[str, ...]:
    """Lower-case prefixes a model may repeat before its answer: the prompt's last line (when
    it has no placeholder), the part of it after a colon, and common answer labels."""
    last = prompt.rstrip().rsplit("\n", 1)[-1].strip().lower()
    echoes = list(_LABELS)
    if last and "{" not in last:
        echoes.append(last)
        if ":" in last:
            echoes.append(last.rsplit(":", 1)[1].strip())
    # longest first, so "feedback: the wanted garment" wins over "feedback:"
    return tuple(sorted({e for e in echoes if e}, key=len, reverse=True))


def _first_sentence(text: str, echoes: Sequence[str]) -> tuple[str, bool]:
    """The raw first sentence of generated ``text``, after leading blank lines, punctuation,
    answer labels and prompt echoes; and whether it is complete (more text cannot change it)."""
    rest = text
    while True:
        before = rest
        rest = rest.lstrip(_EDGE + "\n\r")
        low = rest.lower()
        for echo in echoes:
            if low.startswith(echo):
                rest = rest[len(echo) :]
                break
        if rest == before:
            break
    end = _SENTENCE_END.search(rest)
    return (rest[: end.start()], True) if end else (rest, False)


def clean_generation(text: str, prompt: str = DEFAULT_PROMPT, max_words: int = 20) -> str:
    """A language model's continuation as a relative caption.

    Keeps the first sentence of the first non-empty line, drops a repeat of the prompt's last
    line ("Feedback: the wanted garment") and answer labels ("Answer:"), strips quotes and
    edge punctuation, lower-cases, collapses white space, and keeps at most ``max_words``
    words. May return ``""`` when the model wrote nothing usable.
    """
    sentence, _ = _first_sentence(text, _prompt_echoes(prompt))
    caption = _SPACE.sub(" ", _QUOTES.sub("", sentence.lower())).strip(_EDGE)
    words = caption.split(" ")
    if len(words) > max_words:
        caption = " ".join(words[:max_words]).strip(_EDGE)
    return caption


# --- loading ------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """No progress bars while an environment loads its shopper, and the caller's seeded torch
    generator left as it was."""
    from fiq_gym.users.transformer.user import quiet_transformers

    with quiet_transformers(), torch.random.fork_rng(devices=[]):
        yield


def load_language_model(model_dir: str | os.PathLike) -> tuple[Any, Any]:
    """``(model, tokenizer)`` of the causal language model saved in ``model_dir``: the model
    in eval mode, the tokenizer padding on the left and with a pad token.

    Only local files are read. A tokenizer without a pad token pads with its end-of-sequence
    token (or its unknown or first token): padded positions are masked, so the choice only has
    to be a valid id.

    Raises:
        CheckpointError: naming what is missing (the directory, ``config.json``, the weights,
            the tokenizer), a model type this ``transformers`` does not know, or a model that
            is not a causal language model; each with the fix.
        ImportError: when ``transformers`` or a package the tokenizer needs is missing.
    """
    path = Path(model_dir).expanduser()
    where = f"user='lm:{path}'"
    if not path.is_dir():
        raise CheckpointError(f"{where}: no such directory; {_SAVE_HINT}")
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{where}: the directory holds no model (no config.json); {_SAVE_HINT}")
    if not any((path / name).is_file() for name in _WEIGHT_FILES) and not any(path.glob("*.safetensors")):
        raise CheckpointError(
            f"{where}: config.json is there but no weights ({', '.join(_WEIGHT_FILES[::2])}); {_SAVE_HINT}"
        )
    if not any((path / name).is_file() for name in _TOKENIZER_FILES):
        raise CheckpointError(
            f"{where}: the directory holds a model but no tokenizer (none of {', '.join(_TOKENIZER_FILES)}); "
            "save it next to the model: AutoTokenizer.from_pretrained(NAME).save_pretrained(DIR)"
        )
    try:
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    except ImportError as e:
        raise ImportError(
            f"the language-model shopper needs transformers with AutoModelForCausalLM and AutoTokenizer "
            f"({e}); install it: pip install 'transformers>=4.50'"
        ) from e
    import transformers

    version = f"transformers {transformers.__version__}"
    with _quiet_loading():
        try:
            config = AutoConfig.from_pretrained(path, local_files_only=True)
        except (ValueError, KeyError) as e:
            raise CheckpointError(
                f"{where}: {version} cannot read this model's config ({_first_line(e)}); its model type is "
                f"probably newer than this transformers: pip install -U transformers"
            ) from None
        except OSError as e:
            raise CheckpointError(
                f"{where}: config.json is unreadable ({_first_line(e)}); {_SAVE_HINT}"
            ) from None
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        except ImportError as e:
            raise ImportError(
                f"{where}: the tokenizer needs a package that is not installed ({_first_line(e)}); install it "
                "(often: pip install sentencepiece protobuf)"
            ) from e
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CheckpointError(
                f"{where}: the tokenizer does not load ({_first_line(e)}); save a working one there with "
                "tokenizer.save_pretrained(DIR)"
            ) from None
        try:
            # transformers types from_pretrained as returning the model; output_loading_info=True
            # makes it return the model and a dict of the keys it could not match.
            model, loading = cast(
                tuple[Any, dict[str, Any]],
                AutoModelForCausalLM.from_pretrained(path, local_files_only=True, output_loading_info=True),
            )
        except ValueError as e:
            if "Unrecognized configuration class" in str(e) or "AutoModelForCausalLM" in str(e):
                raise CheckpointError(
                    f"{where}: a {config.model_type!r} model is not a causal language model "
                    f"(AutoModelForCausalLM cannot load it); use a text-generation model (GPT-2, Llama, "
                    f"Qwen, SmolLM, ...)"
                ) from None
            raise CheckpointError(
                f"{where}: the model does not load ({_first_line(e)}); {_SAVE_HINT}"
            ) from None
        except ImportError as e:
            raise ImportError(
                f"{where}: the model needs a package that is not installed ({_first_line(e)}); install it"
            ) from e
        except Exception as e:  # safetensors, torch and file errors differ by version
            raise CheckpointError(
                f"{where}: the weights do not load ({type(e).__name__}: {_first_line(e)}): a file is missing, "
                f"truncated or from another model; {_SAVE_HINT}"
            ) from e
    missing = sorted(loading.get("missing_keys") or ())
    if missing:
        raise CheckpointError(
            f"{where}: {len(missing)} of the model's weights are not in the directory (e.g. {missing[:3]}), so "
            f"they would be random: the weights are from another kind of model (is it a causal language "
            f"model?) or incomplete; {_SAVE_HINT}"
        )
    model.eval()
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        fallback = tokenizer.eos_token or tokenizer.unk_token or tokenizer.bos_token
        tokenizer.pad_token = fallback if fallback is not None else tokenizer.convert_ids_to_tokens(0)
    return model, tokenizer


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


def _context_length(config: Any) -> int | None:
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _pair_seeds(rng: np.random.Generator | Sequence[np.random.Generator], n: int) -> list[int]:
    """One seed per pair: ``n`` from one generator in a single call, or one from each
    ``rng[i]``, so seed ``i`` depends only on ``rng[i]``."""
    high = np.iinfo(np.int64).max
    if isinstance(rng, np.random.Generator):
        return rng.integers(0, high, size=n).tolist()
    return [int(g.integers(0, high)) for g in rng]


# --- the user -----------------------------------------------------------------------------


@functools.cache
def _first_sentence_rule() -> type:
    """The stopping rule class (built on first use: transformers is imported lazily)."""
    from transformers import StoppingCriteria

    class FirstSentenceDone(StoppingCriteria):
        """Per row: done once the first sentence is complete (:func:`clean_generation` would
        ignore everything after it), which saves the steps a model spends on a second
        sentence or the next line."""

        def __init__(self, tokenizer: Any, prompt_length: int, echoes: Sequence[str]) -> None:
            self.tokenizer = tokenizer
            self.prompt_length = prompt_length
            self.echoes = echoes

        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
            new = input_ids[:, self.prompt_length :]
            texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
            done = [_first_sentence(text, self.echoes)[1] for text in texts]
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    return FirstSentenceDone


class LanguageModelUser(User):
    """A shopper whose relative captions a local causal language model writes.

    Each pair's prompt is ``prompt`` filled with both items (see :data:`PROMPT_FIELDS`); the
    model's continuation is cleaned by :func:`clean_generation`. The captions' differences
    are read back with the template grammar and judged against the catalog
    (:meth:`~fiq_gym.users.caption_metrics.DifferenceOracle.differences`), so faithfulness is
    measured as for the other shoppers.

    Observations use a word tokenizer (:attr:`tokenizer`): the template shopper's words first,
    in the template shopper's order (the same ids), then every other word of the catalog's
    descriptions. A language model's words outside that vocabulary reach the agent as
    ``<unk>``; its own subword tokenizer would give every LM a different observation space.

    Args:
        catalog: the catalog whose items are described.
        model_dir: a local directory with a causal LM and its tokenizer (``save_pretrained``).
        prompt: the prompt template (:data:`DEFAULT_PROMPT`); ``str.format`` fields from
            :data:`PROMPT_FIELDS`, naming the target and the shown item at least once each
            (literal braces doubled). It is plain text: for a chat model, write its chat markup
            into the template.
        decoding: an :class:`LMDecoding`, a dict of its fields, or ``"greedy"`` / ``"sample"``.
        max_words: the longest caption kept, in words.
        batch_size: the most pairs decoded together in greedy decoding (sampling decodes pair
            by pair). 1 makes greedy captions independent of the batch bit for bit.
        device: torch device for the model.
        threads: torch intra-op threads while captioning (None: torch's setting). One by
            default, as for the transformer shopper: on a machine whose cores are busy (other
            envs, ranking, benchmarks) a second thread made the test model 40x slower. On an
            idle machine a model of hundreds of millions of parameters gains from more.

    Raises:
        CheckpointError: if ``model_dir`` holds no loadable causal LM and tokenizer (the
            message names what is missing and how to put it there).
        ValueError: for a prompt with unknown fields or without both items, and bad settings.
    """

    def __init__(
        self,
        catalog: Catalog,
        model_dir: str | os.PathLike,
        prompt: str = DEFAULT_PROMPT,
        decoding: LMDecoding | Mapping[str, Any] | str | None = None,
        max_words: int = 20,
        batch_size: int = 16,
        device: str | torch.device = "cpu",
        threads: int | None = 1,
    ) -> None:
        super().__init__(catalog)
        for name, value in (("max_words", max_words), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
        _check_prompt(prompt)
        self.prompt = prompt
        self.decoding = LMDecoding.of(decoding)
        self.max_words = max_words
        self.batch_size = batch_size
        self.threads = threads
        self.model_dir = Path(model_dir).expanduser()
        model, self.lm_tokenizer = load_language_model(self.model_dir)
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.context_length = _context_length(model.config)
        self._echoes = _prompt_echoes(prompt)
        self._fields = {f for _, f, _, _ in string.Formatter().parse(prompt) if f}
        book = phrasebook(catalog.vocabulary, tuple(catalog.category_names))
        self._book = book
        self._codes = np.asarray(catalog.attribute_codes())
        self._categories = np.asarray(catalog.categories)
        self._oracle = DifferenceOracle(catalog)

    # --- what the environment needs ---------------------------------------------------------
    def caption_words(self) -> tuple[str, ...]:
        """The observation vocabulary: the template shopper's words (same order, so the same
        ids), then the other words of the catalog's descriptions, sorted. Read once per user."""
        return language_model_words(self.catalog)

    # --- prompts --------------------------------------------------------------------------
    def item_attributes(self, row: int) -> str:
        """``"category: dress, color: red, pattern: solid, ..."``: the item's category and
        known attribute values (unknown ones are left out)."""
        book = self._book
        parts = [f"category: {book.values[0][int(self._categories[row])]}"]
        for k, code in enumerate(self._codes[row].tolist()):
            if code >= 0:
                parts.append(f"{book.type_names[k + 1]}: {book.values[k + 1][code]}")
        return ", ".join(parts)

    def prompt_for(self, target: int, shown: int) -> str:
        """The prompt for catalog rows ``target`` and ``shown``."""
        values: dict[str, str] = {}
        for side, row in (("target", int(target)), ("shown", int(shown))):
            description = self.catalog.descriptions[row].strip() or "no description"
            attributes = self.item_attributes(row)
            values[side] = f"{description} ({attributes})"
            values[f"{side}_description"] = description
            values[f"{side}_attributes"] = attributes
        return self.prompt.format(**{name: values[name] for name in self._fields})

    # --- captioning -----------------------------------------------------------------------
    def generate_texts(
        self,
        targets: np.ndarray,
        shown: np.ndarray,
        rng: np.random.Generator | Sequence[np.random.Generator] | None = None,
    ) -> list[str]:
        """The model's raw continuations (before :func:`clean_generation`) for validated
        catalog rows; ``rng`` is needed for sampling only."""
        prompts = [self.prompt_for(t, s) for t, s in zip(targets.tolist(), shown.tolist(), strict=True)]
        texts: list[str] = []
        with torch_threads(self.threads), torch.inference_mode():
            if self.decoding.strategy == "greedy":
                for start in range(0, len(prompts), self.batch_size):
                    texts += self._generate(prompts[start : start + self.batch_size], seed=None)
            else:
                if rng is None:
                    raise ValueError("sampling needs rng: a numpy Generator or one per pair")
                for prompt, seed in zip(prompts, _pair_seeds(rng, len(prompts)), strict=True):
                    texts += self._generate([prompt], seed=seed)
        return texts

    def _generate(self, prompts: list[str], seed: int | None) -> list[str]:
        from transformers import GenerationConfig, StoppingCriteriaList

        tok, d = self.lm_tokenizer, self.decoding
        encoded = tok(prompts, return_tensors="pt", padding=True)
        # input ids and mask only: a generic tokenizer's token_type_ids would change a GPT-2's input
        batch = {key: encoded[key].to(self.device) for key in ("input_ids", "attention_mask")}
        length = batch["input_ids"].shape[1]
        if self.context_length is not None and length + d.max_new_tokens > self.context_length:
            raise ValueError(
                f"a prompt of {length} tokens plus max_new_tokens={d.max_new_tokens} exceeds the model's "
                f"context of {self.context_length} tokens; shorten the prompt template or lower max_new_tokens"
            )
        settings: dict[str, Any] = {
            "max_new_tokens": d.max_new_tokens,
            "pad_token_id": tok.pad_token_id,
            "eos_token_id": tok.eos_token_id,
            "do_sample": d.strategy == "sample",
        }
        if d.strategy == "sample":
            settings.update(temperature=d.temperature, top_p=d.top_p, top_k=d.top_k)
        stop = StoppingCriteriaList([_first_sentence_rule()(tok, length, self._echoes)])
        with contextlib.ExitStack() as stack:
            if seed is not None:
                devices = [self.device.index or 0] if self.device.type == "cuda" else []
                stack.enter_context(torch.random.fork_rng(devices=devices))
                torch.manual_seed(seed)
            out = self.model.generate(
                **batch,
                generation_config=GenerationConfig(**settings),
                stopping_criteria=stop,
            )
        return tok.batch_decode(out[:, length:], skip_special_tokens=True)

    def _describe(
        self,
        targets: np.ndarray,
        shown: np.ndarray,
        rng: np.random.Generator | Sequence[np.random.Generator],
    ) -> CaptionBatch:
        if targets.size == 0:
            return CaptionBatch([], [])
        raw = self.generate_texts(targets, shown, rng)
        texts = [clean_generation(text, self.prompt, self.max_words) for text in raw]
        oracle = self._oracle
        records = [
            oracle.differences(text, t, s)
            for text, t, s in zip(texts, targets.tolist(), shown.tolist(), strict=True)
        ]
        return CaptionBatch(texts, records)

    def __repr__(self) -> str:
        return (
            f"LanguageModelUser({self.model_dir}, {self.model.config.model_type}, "
            f"decoding={self.decoding.strategy})"
        )


def _check_prompt(prompt: object) -> None:
    """A prompt template must be text whose fields are known and name both items."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"prompt must be a non-empty str.format template, got {prompt!r}")
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(prompt) if f is not None}
    except ValueError as e:
        raise ValueError(
            f"prompt is not a valid str.format template ({e}); double literal braces: {{{{ }}}}"
        ) from None
    unknown = sorted(fields - set(PROMPT_FIELDS))
    if unknown:
        raise ValueError(f"prompt uses unknown fields {unknown}; known: {list(PROMPT_FIELDS)}")
    for side in ("target", "shown"):
        if not any(f.startswith(side) for f in fields):
            raise ValueError(
                f"prompt never shows the {side} item; use {{{side}}} (or {{{side}_description}}, "
                f"{{{side}_attributes}})"
            )
