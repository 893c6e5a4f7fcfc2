"""make_user: shopper names map to classes in one place; the env asks shoppers for their tokenizer."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from fiq_gym.users import CaptionBatch, TemplateUser, User
from fiq_gym.users.registry import make_user, tokenizer_for


class EchoUser(User):
    """A custom shopper that always says the same thing."""

    def caption_words(self) -> tuple[str, ...]:
        return ("is", "darker")

    def _describe(self, targets, shown, rng) -> CaptionBatch:
        return CaptionBatch(["is darker"] * targets.size, [() for _ in range(targets.size)])


class WordlessUser(EchoUser):
    def caption_words(self) -> tuple[str, ...]:
        return User.caption_words(self)


def test_names_make_shared_shoppers(small_catalog):
    a = make_user("template", small_catalog, noise={"omit": 0.2})
    assert isinstance(a, TemplateUser) and a.noise.omit == 0.2
    assert make_user("template", small_catalog, noise={"omit": 0.2}) is a  # shared per settings
    assert make_user("template", small_catalog) is not a
    with pytest.raises(
        ValueError, match=r"user must be one of \['template', 'transformer', 'dataset', 'lm'\]"
    ):
        make_user("templte", small_catalog)
    with pytest.raises(ValueError, match="user_kwargs only apply"):
        make_user(a, small_catalog, noise={})


def test_a_custom_shopper_brings_its_words(small_catalog_path, small_catalog):
    env = gym.make("fiq_gym/FashionIQ-v3", catalog=str(small_catalog_path), user=EchoUser(small_catalog))
    obs, info = env.reset(seed=0)
    assert info["caption_text"] == "is darker"
    tokenizer = env.unwrapped.tokenizer
    ids = np.asarray(obs["caption"]).ravel()
    assert tokenizer.decode(ids) == "is darker"
    with pytest.raises(NotImplementedError, match="WordlessUser lists no caption words.*tokenizer="):
        gym.make("fiq_gym/FashionIQ-v3", catalog=str(small_catalog_path), user=WordlessUser(small_catalog))
    explicit = gym.make(
        "fiq_gym/FashionIQ-v3",
        catalog=str(small_catalog_path),
        user=WordlessUser(small_catalog),
        tokenizer=tokenizer,
    )
    assert explicit.unwrapped.tokenizer is tokenizer


def _same_ids(a, b) -> bool:
    texts = ["is darker and has longer sleeves", "is a red dress with no words we know", ""]
    ids_a, lengths_a = a.encode_batch(texts, 16)
    ids_b, lengths_b = b.encode_batch(texts, 16)
    return a.vocab_size == b.vocab_size and (ids_a == ids_b).all() and (lengths_a == lengths_b).all()


@pytest.mark.parametrize("spec", ["template", "lm", "transformer"])
def test_tokenizer_for_gives_the_shoppers_ids_without_building_it(spec, small_catalog, tiny_lm, monkeypatch):
    """tokenizer_for(shopper, catalog): the token ids of make_user(...).tokenizer, and no
    shopper (nor a language model's weights) is built for the template and LM shoppers."""
    if spec == "lm":
        spec = f"lm:{tiny_lm}"
    if spec == "transformer":
        from fiq_gym.default_catalog import resolve_catalog

        catalog = resolve_catalog(None)  # the shipped captioner fits the default catalog
    else:
        catalog = small_catalog
    expected = make_user(spec, catalog).tokenizer
    if not spec.startswith("transformer"):

        def refuse(*args, **kwargs):
            raise AssertionError("tokenizer_for built a shopper")

        monkeypatch.setattr(TemplateUser, "__init__", refuse)
        monkeypatch.setattr("fiq_gym.users.language_model.LanguageModelUser.__init__", refuse)
    assert _same_ids(tokenizer_for(spec, catalog), expected)
    assert tokenizer_for(EchoUser(catalog), catalog).words == EchoUser(catalog).tokenizer.words
