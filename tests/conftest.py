"""Shared fixtures. Tests never touch the network or the user's cache."""

from __future__ import annotations

import os

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ["FIQ_GYM_CACHE"] = str(tmp_path_factory.mktemp("fiq-gym-cache"))
    # SB3 makes a folder under the system's temporary directory for every learn() run without
    # a log folder of its own; send those under pytest's, so test runs leave nothing behind.
    os.environ["SB3_LOGDIR"] = str(tmp_path_factory.mktemp("sb3-logs"))


@pytest.fixture(scope="session")
def small_catalog_path(tmp_path_factory: pytest.TempPathFactory):
    """A 300-item synthetic catalog on disk (built once per test session)."""
    from fiq_gym.catalog.synthetic import build_synthetic_catalog

    path = tmp_path_factory.mktemp("catalogs") / "small"
    build_synthetic_catalog(path, size=300, seed=7, image_size=48, progress=False)
    return path


@pytest.fixture(scope="session")
def scored_catalog_path(small_catalog_path, tmp_path_factory):
    """The small catalog plus predicted attribute scores from an ideal predictor (its labels):
    side information for learning tests, without the ``side_info="labels"`` opt-in."""
    import shutil

    import numpy as np

    from fiq_gym.catalog.storage import open_catalog, write_catalog_arrays

    path = tmp_path_factory.mktemp("catalogs") / "scored"
    shutil.copytree(small_catalog_path, path)
    labels = np.asarray(open_catalog(path).labels, dtype=np.float32)
    write_catalog_arrays(path, {"attribute_scores": labels})
    return path


@pytest.fixture(scope="session")
def small_catalog(small_catalog_path):
    from fiq_gym.catalog.storage import open_catalog

    return open_catalog(small_catalog_path)


@pytest.fixture(scope="session")
def small_agent_checkpoint(small_catalog_path, tmp_path_factory):
    """An untrained supervised-retriever checkpoint for the small catalog (template shopper,
    4 turns): enough to play dialogs through the real env in play tests."""
    import torch

    from fiq_gym.agents.retriever import RetrieverConfig, RetrieverNet, save_checkpoint
    from fiq_gym.envs.building import build_dialog_parts

    _, tables, _, tokenizer = build_dialog_parts(str(small_catalog_path), None, "template", None, None)
    torch.manual_seed(0)
    net = RetrieverNet(
        RetrieverConfig(
            vocab_size=tokenizer.vocab_size,
            feature_dim=tables.feature_dim,
            attribute_dim=tables.side_info.shape[1],
            num_items=tables.num_items,
            embed_dim=32,
        )
    )
    path = tmp_path_factory.mktemp("agent") / "checkpoint"
    args = {
        "env_id": "fiq_gym/FashionIQ-v3",
        "catalog": str(small_catalog_path),
        "user": "template",
        "max_turns": 4,
    }
    save_checkpoint(path, net, args=args, agent="supervised")
    return path


@pytest.fixture(scope="session")
def tiny_lm(small_catalog, tmp_path_factory):
    """The language-model shopper's test model (``user="lm:DIR"``): a 1-layer, 32-wide GPT-2
    (random weights) and a word-level tokenizer trained on the catalog's descriptions, the
    default prompt and the template words. The tokenizer has an end-of-sequence token but no
    pad token, as many causal LMs' tokenizers do."""
    import torch
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    from fiq_gym.users import TemplateUser
    from fiq_gym.users.language_model import DEFAULT_PROMPT

    words = TemplateUser(small_catalog).caption_words()
    texts = [*small_catalog.descriptions, DEFAULT_PROMPT, " ".join(words), "category color fit : ( ) . ,"]
    backend = Tokenizer(models.WordLevel(unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Split(
        Regex(r"[a-z0-9]+(?:[-'][a-z0-9]+)*|[^ a-z0-9]"), behavior="isolated"
    )
    backend.train_from_iterator(texts, trainer=trainers.WordLevelTrainer(special_tokens=["<unk>", "<eos>"]))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="<eos>")
    assert tokenizer.pad_token is None
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=1,
        n_head=2,
        n_embd=32,
        n_inner=64,
        n_positions=512,
        vocab_size=tokenizer.vocab_size,
        # wide weights: next-token choices depend on the prompt, and are rarely near ties
        initializer_range=0.3,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    path = tmp_path_factory.mktemp("lm") / "tiny-gpt2"
    GPT2LMHeadModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_vit(tmp_path_factory):
    """A randomly initialised 1-layer ViT and its image processor, saved as save_pretrained does."""
    import torch
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    path = tmp_path_factory.mktemp("hf") / "tiny-vit"
    torch.manual_seed(0)
    config = ViTConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
    )
    ViTModel(config).save_pretrained(path)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def featured_catalog_path(tmp_path_factory):
    """A 300-item 64-pixel catalog with the shipped network's features and predicted
    attribute scores: the shortlist's shipped first stage fits it."""
    from fiq_gym.catalog.synthetic import build_synthetic_catalog
    from fiq_gym.features.extract import extract_features

    path = tmp_path_factory.mktemp("catalogs") / "featured"
    build_synthetic_catalog(path, size=300, seed=7, progress=False)
    extract_features(path, threads=1, progress=False)
    return path
