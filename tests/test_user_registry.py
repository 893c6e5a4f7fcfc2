"""make_user: shopper names map to classes in one place; the env asks shoppers for their tokenizer."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from fiq_gym.users import CaptionBatch, TemplateUser, User
from fiq_gym.users.registry import make_user


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
