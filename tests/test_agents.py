"""Retriever agents: training moves the loss, checkpoints round-trip and resume exactly."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from fiq_gym.agents.evaluate_checkpoint import evaluate_checkpoint
from fiq_gym.agents.retriever import gallery_tensors, load_checkpoint, observation_tensors
from fiq_gym.agents.supervised import Args, make_envs, play_round, train, triplet_loss
from fiq_gym.checkpoint import read_training_state


def tiny_args(catalog, out, **overrides) -> Args:
    base = Args(
        catalog=str(catalog),
        num_envs=8,
        rounds=4,
        eval_every=2,
        eval_episodes=16,
        out=str(out),
        threads=1,
        negatives=16,
    )
    return dataclasses.replace(base, **overrides)


def _fixed_round_loss(net, args) -> float:
    envs = make_envs(args, training=True, num_envs=16)
    turns, alive, targets = play_round(net, envs, seed=424242)
    items = net.encode_items(*gallery_tensors(envs.unwrapped.gallery))
    state = net.initial_state(16)
    generator = torch.Generator().manual_seed(0)
    total = 0.0
    with torch.no_grad():
        for t, tensors in enumerate(turns):
            state, query = net.step(state, *tensors)
            negatives = torch.randint(0, items.shape[0], (16, 32), generator=generator)
            mask = torch.as_tensor(alive[t], dtype=torch.float32)
            per_row = triplet_loss(query, items, torch.as_tensor(targets), args.margin, negatives)
            total += float((per_row * mask).sum() / mask.sum().clamp_min(1))
    return total


def test_supervised_training_lowers_the_loss(scored_catalog_path, tmp_path):
    # Predicted attribute scores: the env shows zeros, not the labels, on a catalog without them.
    args = tiny_args(scored_catalog_path, tmp_path / "run", rounds=1)
    untrained, _ = train(args, progress=False)
    before = _fixed_round_loss(untrained, args)
    # 32 dialogs x 64 negatives per round: smaller batches sit on the initial plateau longer.
    longer = dataclasses.replace(
        args,
        rounds=40,
        eval_every=40,
        num_envs=32,
        negatives=64,
        eval_episodes=64,
        out=str(tmp_path / "run2"),
    )
    trained, result = train(longer, progress=False)
    assert _fixed_round_loss(trained, args) < 0.8 * before
    assert result is not None and result.per_turn()[-1]["R@10"] > result.per_turn()[0]["R@10"]
    events = list((tmp_path / "run2" / "tb").glob("events.out.tfevents.*"))
    assert events, "TensorBoard event files are written"


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(small_catalog_path, tmp_path):
    straight, _ = train(tiny_args(small_catalog_path, tmp_path / "a", rounds=4), progress=False)
    train(tiny_args(small_catalog_path, tmp_path / "b", rounds=2), progress=False)
    resumed, _ = train(tiny_args(small_catalog_path, tmp_path / "b", rounds=4, resume=True), progress=False)
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def _saved_round(checkpoint):
    record, _ = read_training_state(checkpoint, rng=False)
    return record["round"]


def test_checkpoint_round_trip_and_deterministic_evaluation(small_catalog_path, tmp_path):
    net, _ = train(tiny_args(small_catalog_path, tmp_path / "run", rounds=2), progress=False)
    loaded, meta = load_checkpoint(tmp_path / "run" / "checkpoint")
    assert meta["agent"] == "supervised" and _saved_round(tmp_path / "run" / "checkpoint") == 2
    for a, b in zip(net.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    first = evaluate_checkpoint(tmp_path / "run" / "checkpoint", episodes=24, seed=1)
    second = evaluate_checkpoint(tmp_path / "run" / "checkpoint", episodes=24, seed=1)
    np.testing.assert_array_equal(first.ranks, second.ranks)


def test_checkpoint_from_another_catalog_is_refused(small_catalog_path, tmp_path):
    from fiq_gym.catalog.synthetic import build_synthetic_catalog

    train(tiny_args(small_catalog_path, tmp_path / "run", rounds=2), progress=False)
    other = tmp_path / "other"
    build_synthetic_catalog(other, size=120, seed=3, image_size=48, progress=False)
    with pytest.raises(ValueError, match=r"does not fit the environment: catalog size 300 != the env's 120"):
        evaluate_checkpoint(tmp_path / "run" / "checkpoint", episodes=8, catalog=str(other))


def test_cli_train_and_eval(small_catalog_path, tmp_path, capsys):
    from fiq_gym.cli import main

    out = tmp_path / "cli"
    assert (
        main(
            [
                "train",
                "supervised",
                "--catalog",
                str(small_catalog_path),
                "--rounds",
                "2",
                "--num-envs",
                "4",
                "--eval-every",
                "2",
                "--eval-episodes",
                "8",
                "--out",
                str(out),
                "--threads",
                "1",
            ]
        )
        == 0
    )
    assert main(["eval", str(out / "checkpoint"), "--episodes", "8", "--out", str(tmp_path / "r.json")]) == 0
    assert "| turn | R@1 |" in capsys.readouterr().out
    assert main(["eval", str(tmp_path / "nowhere")]) == 2


# --- policy gradient -------------------------------------------------------------------------


def pg_args(catalog, out, **overrides):
    from fiq_gym.agents.policy_gradient import Args as PGArgs

    base = PGArgs(
        catalog=str(catalog), num_envs=8, rounds=4, eval_every=2, eval_episodes=16, out=str(out), threads=1
    )
    return dataclasses.replace(base, **overrides)


def test_action_returns_credit_later_turns_and_own_success():
    from fiq_gym.agents.policy_gradient import action_returns

    rewards = np.array([[0.1], [0.2], [0.7]])
    success = np.array([[False], [False], [True]])
    np.testing.assert_allclose(action_returns(rewards, success, 1.0)[:, 0], [0.9, 0.7, 0.7])
    np.testing.assert_allclose(action_returns(rewards, success, 0.5)[:, 0], [0.1 + 0.25 * 0.7, 0.35, 0.7])


def test_policy_gradient_changes_the_network_and_resumes_exactly(small_catalog_path, tmp_path):
    from fiq_gym.agents.policy_gradient import train as pg_train

    init_net, _ = train(tiny_args(small_catalog_path, tmp_path / "sup", rounds=2), progress=False)
    init = str(tmp_path / "sup" / "checkpoint")
    straight, result = pg_train(pg_args(small_catalog_path, tmp_path / "a", init=init), progress=False)
    assert any(
        not torch.equal(a, b)
        for a, b in zip(init_net.state_dict().values(), straight.state_dict().values(), strict=True)
    )
    assert result is not None and result.agent == "policy gradient"
    pg_train(pg_args(small_catalog_path, tmp_path / "b", init=init, rounds=2), progress=False)
    resumed, _ = pg_train(pg_args(small_catalog_path, tmp_path / "b", init=init, resume=True), progress=False)
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)


# --- model-based policy improvement ------------------------------------------------------------


def test_lookahead_choice_prefers_the_target_and_is_batched(small_catalog_path):
    import gymnasium as gym

    from fiq_gym.agents.policy_improvement import lookahead_choice
    from fiq_gym.agents.retriever import RetrieverConfig, RetrieverNet

    envs = gym.make_vec(
        "fiq_gym/FashionIQ-v3",
        num_envs=3,
        vectorization_mode="vector_entry_point",
        catalog=small_catalog_path,
        action_mode="scores",
        expose_target=True,
        lookahead=True,
    )
    obs, info = envs.reset(seed=0)
    gallery = envs.unwrapped.gallery
    net = RetrieverNet(RetrieverConfig.for_env(envs))
    features, attributes = gallery_tensors(gallery)
    items = net.encode_items(features, attributes)
    state, _ = net.step(net.initial_state(3), *observation_tensors(obs))
    targets = torch.as_tensor(info["target"])
    candidates = torch.stack([torch.tensor([(t + 1) % 300, t, (t + 2) % 300]) for t in info["target"]])
    best, ranks = lookahead_choice(net, envs, state, items, features, attributes, candidates, targets)
    assert ranks.shape == (3, 3) and (ranks[:, 1] == 0).all()
    assert (best == 1).all()  # the target's own position among the candidates


def test_policy_improvement_trains_and_checkpoints(small_catalog_path, tmp_path):
    from fiq_gym.agents.policy_improvement import Args as MBPIArgs
    from fiq_gym.agents.policy_improvement import train as mbpi_train

    train(tiny_args(small_catalog_path, tmp_path / "sup", rounds=2), progress=False)
    args = MBPIArgs(
        catalog=str(small_catalog_path),
        init=str(tmp_path / "sup" / "checkpoint"),
        num_envs=8,
        rounds=2,
        eval_every=2,
        eval_episodes=16,
        out=str(tmp_path / "mbpi"),
        threads=1,
        negatives=16,
    )
    _, result = mbpi_train(args, progress=False)
    assert result.agent == "policy improvement"
    _, meta = load_checkpoint(tmp_path / "mbpi" / "checkpoint")
    assert meta["agent"] == "policy improvement" and _saved_round(tmp_path / "mbpi" / "checkpoint") == 2


# --- SB3 PPO -------------------------------------------------------------------------------------


def test_ppo_trains_saves_and_evaluates(small_catalog_path, tmp_path):
    from stable_baselines3 import PPO

    from fiq_gym.agents.ppo import Args as PPOArgs
    from fiq_gym.agents.ppo import PPOAgent
    from fiq_gym.agents.ppo import train as ppo_train

    args = PPOArgs(
        catalog=str(small_catalog_path),
        num_envs=4,
        timesteps=128,
        n_steps=16,
        batch_size=32,
        n_epochs=1,
        eval_episodes=8,
        out=str(tmp_path / "ppo"),
        threads=1,
    )
    model, result = ppo_train(args, progress=False)
    checkpoint = tmp_path / "ppo" / "checkpoint"
    assert {p.name for p in checkpoint.iterdir()} == {"model.zip", "policy.safetensors", "config.json"}
    assert list((tmp_path / "ppo" / "tb").rglob("events.out.tfevents.*"))
    assert result.agent == "PPO" and len(result.per_turn()) == 6
    loaded = PPOAgent(PPO.load(checkpoint / "model.zip", device="cpu"))
    obs = {k: np.zeros((2, *s.shape), dtype=s.dtype) for k, s in model.observation_space.spaces.items()}
    np.testing.assert_array_equal(loaded.act(obs, {}), PPOAgent(model).act(obs, {}))
    # `fiq-gym eval` takes PPO checkpoints too.
    evaluated = evaluate_checkpoint(checkpoint, episodes=8, seed=0)
    assert evaluated.agent == "PPO" and evaluated.ranks.shape == (8, 6)


def test_checkpoint_on_another_catalog_of_the_same_shape_is_refused(small_catalog, tmp_path):
    """Same size and vocabulary, different garments (synthetic ids do not name the seed, so the
    ids match too): the shapes fit, the catalog
    fingerprint recorded at training time does not."""
    from fiq_gym.agents.retriever import (
        RetrieverConfig,
        RetrieverNet,
        check_catalog,
        load_checkpoint,
        save_checkpoint,
    )
    from fiq_gym.catalog.synthetic import build_synthetic_catalog

    other = build_synthetic_catalog(tmp_path / "other", size=300, seed=8, image_size=48, progress=False)
    net = RetrieverNet(RetrieverConfig(vocab_size=10, feature_dim=4, attribute_dim=3, num_items=300))
    save_checkpoint(tmp_path / "ckpt", net, args={}, catalog=small_catalog)
    _, meta = load_checkpoint(tmp_path / "ckpt")
    check_catalog(meta, small_catalog)  # the training catalog passes
    with pytest.raises(ValueError, match=r"another catalog .*other attribute labels.*retrain it"):
        check_catalog(meta, other, tmp_path / "ckpt")
    meta.pop("catalog")
    check_catalog(meta, other)  # checkpoints from before fingerprints load as before


def test_update_items_of_a_large_gallery_give_the_whole_gallerys_loss_and_gradients(
    small_catalog_path, monkeypatch
):
    """Above WHOLE_GALLERY_ITEMS an update encodes only the rows its loss reads: same loss,
    same gradients (to float rounding) as encoding every item."""
    import fiq_gym.agents.retriever as retriever_module
    from fiq_gym.agents.retriever import UpdateItems

    args = tiny_args(small_catalog_path, "unused")
    envs = make_envs(args, training=True, num_envs=8)
    gallery = envs.unwrapped.gallery
    torch.manual_seed(0)
    from fiq_gym.agents.retriever import RetrieverConfig, RetrieverNet

    net = RetrieverNet(RetrieverConfig.for_env(envs))
    turns, _, targets = play_round(net, envs, seed=7)
    envs.close()
    target_t = torch.as_tensor(targets)
    generator = torch.Generator().manual_seed(1)
    negatives = [torch.randint(0, len(gallery.features), (8, 16), generator=generator) for _ in turns]

    def loss_and_grads(whole_limit: int):
        monkeypatch.setattr(retriever_module, "WHOLE_GALLERY_ITEMS", whole_limit)
        net.zero_grad()
        items = UpdateItems(net, gallery, [target_t, *negatives])
        state = net.initial_state(8)
        loss = torch.zeros(())
        for t, tensors in enumerate(turns):
            state, query = net.step(state, *tensors)
            loss = loss + triplet_loss(query, items, target_t, 0.2, negatives[t]).mean()
        loss.backward()
        return loss.item(), [p.grad.clone() for p in net.parameters() if p.grad is not None]

    whole_loss, whole_grads = loss_and_grads(10**9)
    part_loss, part_grads = loss_and_grads(0)
    assert part_loss == pytest.approx(whole_loss, rel=1e-5)
    assert len(part_grads) == len(whole_grads)
    for a, b in zip(part_grads, whole_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)

    monkeypatch.setattr(retriever_module, "WHOLE_GALLERY_ITEMS", 0)
    items = UpdateItems(net, gallery, [target_t])
    unused = next(i for i in range(len(gallery.features)) if i not in set(targets.tolist()))
    with pytest.raises(IndexError, match="did not declare"):
        items[torch.tensor([unused])]
