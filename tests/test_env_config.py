"""EnvConfig: one frozen object with every env argument, the envs' signatures equal to it,
its checks, its keyword round trip, pickles (and pickles made before it) and the trainers'
env arguments derived from it by name."""

from __future__ import annotations

import dataclasses
import inspect
import pickle

import gymnasium as gym
import numpy as np
import pytest
from earlier_pickles import earlier_state

import fiq_gym  # noqa: F401  (registers the ids)
from fiq_gym.env_config import EnvConfig, trainer_env_kwargs
from fiq_gym.envs import FashionIQEnv, FashionIQVectorEnv
from fiq_gym.envs.fashion_iq import FashionIQEnv as SingleEnv

# Catalogs without features warn once per catalog.
pytestmark = pytest.mark.filterwarnings("ignore::fiq_gym.errors.FallbackWarning")

#: The vector env's own arguments, not an env's (the config is one env's).
VECTOR_ONLY = ("num_envs", "max_episode_steps", "autoreset_mode", "shards", "shard_mode")


def _parameters(cls: type) -> list[inspect.Parameter]:
    return [p for p in inspect.signature(cls.__init__).parameters.values() if p.name != "self"]


def _fields() -> list[tuple[str, object]]:
    return [(f.name, f.default) for f in dataclasses.fields(EnvConfig)]


# --- adding an argument: the config and its consumer -------------------------------------------
def test_the_single_env_takes_exactly_the_config_fields_in_order_with_their_defaults():
    """An argument added to EnvConfig must be added to the envs' signatures (and only there
    besides its consumer): the envs build their config from their own arguments by name."""
    assert [(p.name, p.default) for p in _parameters(FashionIQEnv)] == _fields()


def test_the_vector_env_takes_the_config_fields_in_order_plus_its_own():
    params = [p for p in _parameters(FashionIQVectorEnv) if p.name not in VECTOR_ONLY]
    expected = dict(_fields())
    # max_turns: None there means the registered max_episode_steps that gym.make_vec passes.
    expected["max_turns"] = None
    assert [(p.name, p.default) for p in params] == list(expected.items())


def test_the_envs_docstring_describes_every_argument():
    arguments = SingleEnv.__doc__.split("## Arguments")[1].split("## Registered")[0]
    missing = [name for name in EnvConfig.names() if f"``{name}``" not in arguments]
    assert not missing, f"the env docstring's Arguments section lacks {missing}"
    undocumented = [f.name for f in dataclasses.fields(EnvConfig) if not _attribute_doc(f.name)]
    assert not undocumented, f"EnvConfig fields without a docstring: {undocumented}"


def _attribute_doc(name: str) -> str:
    """The string literal right after a field's line in EnvConfig's source."""
    lines = inspect.getsource(EnvConfig).splitlines()
    at = next(i for i, line in enumerate(lines) if line.strip().startswith(f"{name}:"))
    return lines[at + 1].strip() if lines[at + 1].strip().startswith('"""') else ""


# --- keyword arguments ------------------------------------------------------------------------
def test_to_kwargs_and_from_kwargs_round_trip():
    default = EnvConfig()
    assert EnvConfig.from_kwargs(**default.to_kwargs()) == default
    assert default.to_kwargs() == dict(_fields())
    custom = EnvConfig.from_kwargs(
        catalog="synthetic:300",
        action_mode="shortlist_slate",
        reward="delta",
        success_bonus=1,
        max_turns=np.int64(7),
        observation_keys="caption",
        render_mode="ansi",
        user_kwargs={"noise": None},
        expose_target=1,
        shortlist="random",
        shortlist_size=6,
        explore=0.5,
        slate_size=3,
        start="annotated",
        start_split="val",
        configuration="terse",
        scoring="exact",
    )
    assert EnvConfig.from_kwargs(**custom.to_kwargs()) == custom
    # Normalised once, as the env always did: a number bonus is a float, one key a tuple, flags bools.
    assert custom.success_bonus == 1.0 and isinstance(custom.success_bonus, float)
    assert custom.observation_keys == ("caption",) and custom.expose_target is True
    assert pickle.loads(pickle.dumps(custom)) == custom


def test_an_unknown_keyword_names_it_and_the_close_match():
    with pytest.raises(
        TypeError, match=r"unexpected keyword argument 'max_turn'; did you mean 'max_turns'\?"
    ):
        EnvConfig.from_kwargs(max_turn=3)
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'zzz'; the arguments are \['catalog'"):
        EnvConfig.from_kwargs(zzz=3)


def test_the_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        EnvConfig().max_turns = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"render_mode": "human"},
            r"^render_mode must be one of \['rgb_array', 'ansi'\] or None, got 'human'$",
        ),
        ({"action_mode": "ranking"}, r"^action_mode must be one of \['index', .*\], got 'ranking'$"),
        ({"success_bonus": float("nan")}, r"^success_bonus must be a finite number, got nan$"),
        ({"max_turns": True}, r"^max_turns must be an integer from 1 to 1000, got True$"),
        ({"shortlist_size": 0}, r"^shortlist_size must be a positive integer, got 0$"),
        ({"slate_size": 1}, r"^slate_size must be an integer of at least 2, got 1$"),
        ({"start": "random"}, r"^start must be one of \['uniform', 'annotated'\], got 'random'$"),
        ({"start_split": ""}, r"^start_split must be a split name such as 'train' or 'val', got ''$"),
        ({"explore": 2}, r"^explore must be a fraction in \[0, 1\], got 2$"),
        ({"caption_text": "yes"}, r"^caption_text must be True or False, got 'yes'$"),
        ({"observation_keys": ()}, r"^observation_keys must be distinct names from \[.*\], got \[\]$"),
        ({"side_info": "auto"}, r"^side_info must be 'predicted' or 'labels', got 'auto'$"),
        (
            {"shortlist": "random"},
            r"^shortlist='random' only applies to action_mode='shortlist' or 'shortlist_slate'",
        ),
    ],
)
def test_bad_values_are_refused_in_one_line_naming_the_allowed_ones(kwargs, message):
    with pytest.raises(ValueError, match=message) as caught:
        EnvConfig(**kwargs)
    assert "\n" not in str(caught.value)


def test_mode_keys_are_checked_against_the_mode():
    assert EnvConfig(action_mode="shortlist", observation_keys=("candidate_mask",)).observation_keys == (
        "candidate_mask",
    )
    with pytest.raises(ValueError, match="observation_keys must be distinct names"):
        EnvConfig(observation_keys=("candidate_mask",))


def test_the_dialog_rules_are_the_shared_fields_with_the_default_keys_resolved():
    config = EnvConfig(action_mode="slate", max_turns=4, slate_size=3)
    rules = config.dialog_config()
    assert (rules.action_mode, rules.max_turns, rules.slate_size) == ("slate", 4, 3)
    assert rules.observation_keys == type(rules).default_keys("slate")
    assert set(f.name for f in dataclasses.fields(rules)) <= set(EnvConfig.names())


# --- the envs hold it -------------------------------------------------------------------------
def test_both_envs_expose_their_config(small_catalog_path):
    kwargs = {
        "catalog": str(small_catalog_path),
        "action_mode": "query",
        "max_turns": 3,
        "render_mode": "ansi",
    }
    env = gym.make("fiq_gym/FashionIQ-v3", max_episode_steps=3, **kwargs)
    assert env.unwrapped.env_config == EnvConfig(**kwargs)
    assert env.unwrapped.config == env.unwrapped.env_config.dialog_config()
    assert FashionIQEnv(**env.unwrapped.env_config.to_kwargs()).env_config == env.unwrapped.env_config
    envs = gym.make_vec("fiq_gym/FashionIQ-v3", num_envs=2, vectorization_mode="vector_entry_point", **kwargs)
    assert envs.unwrapped.env_config == EnvConfig(**kwargs)
    envs.close()
    # The registered max_episode_steps fills in the vector env's max_turns.
    envs = gym.make_vec(
        "fiq_gym/FashionIQ-v3",
        num_envs=2,
        vectorization_mode="vector_entry_point",
        catalog=str(small_catalog_path),
    )
    assert envs.unwrapped.env_config.max_turns == 5
    envs.close()


@pytest.mark.parametrize("action_mode", ["index", "shortlist"])
def test_a_pickle_holds_the_config_and_the_engine_state(small_catalog_path, action_mode):
    first_stage = {"shortlist": "random"} if action_mode == "shortlist" else {}
    env = FashionIQEnv(catalog=str(small_catalog_path), action_mode=action_mode, **first_stage)
    env.reset(seed=4)
    env.step(0)
    state = env.__getstate__()
    assert state["env_config"] is env.env_config and set(state["dialog"]) >= {"target", "shown", "mode"}
    assert "args" not in state and "render_mode" not in state
    copy = pickle.loads(pickle.dumps(env))
    assert copy.env_config == env.env_config
    assert repr(copy.step(1)) == repr(env.step(1))


@pytest.mark.parametrize("action_mode", ["query", "slate"])
def test_a_pickle_made_before_the_config_resumes(small_catalog_path, action_mode):
    env = FashionIQEnv(
        catalog=str(small_catalog_path),
        action_mode=action_mode,
        max_turns=6,
        render_mode="ansi",
        caption_text=False,
    )
    env.action_space.seed(0)
    env.reset(seed=9)
    env.step(env.action_space.sample())
    old = FashionIQEnv.__new__(FashionIQEnv)
    state = earlier_state(env)
    # Pickles of releases before configuration, scoring and split lack them.
    for name in ("configuration", "scoring", "split"):
        del state["args"][name]
    old.__setstate__(pickle.loads(pickle.dumps(state)))  # as unpickled: its own generator
    assert old.env_config == env.env_config.__class__.from_kwargs(
        **{**env.env_config.to_kwargs(), "observation_keys": env.config.observation_keys}
    )
    action = env.action_space.sample()
    assert repr(old.step(action)) == repr(env.step(action))
    assert old.render() == env.render()


# --- trainers ---------------------------------------------------------------------------------
def test_trainers_pass_every_flag_named_as_an_env_argument_where_the_env_reads_it():
    @dataclasses.dataclass
    class Args:
        catalog: str | None = None
        action_mode: str = "query"
        max_turns: int = 4
        shortlist_size: int = 8
        slate_size: int = 3
        start: str = "uniform"
        start_split: str = "train"
        caption_length: int = 16  # an env argument no trainer had: it reaches the env unchanged
        learning_rate: float = 1e-3  # not an env argument

    kwargs = trainer_env_kwargs(Args())
    assert kwargs == {"catalog": None, "action_mode": "query", "max_turns": 4, "caption_length": 16}
    assert trainer_env_kwargs(Args(action_mode="shortlist_slate"))["slate_size"] == 3
    assert "slate_size" not in trainer_env_kwargs(Args(action_mode="shortlist"))
    fixed = trainer_env_kwargs(Args(start="annotated"), action_mode="shortlist", expose_target=True)
    assert fixed["action_mode"] == "shortlist" and fixed["shortlist_size"] == 8 and fixed["expose_target"]
    assert (fixed["start"], fixed["start_split"]) == ("annotated", "train")
    EnvConfig.from_kwargs(**fixed)  # what a trainer passes is a valid config


#: Trainers whose Args take env flags, and the group fields each declares again on purpose.
TRAINERS_WITH_ENV_FLAGS = {
    "ppo": (),
    "dqn": (),
    "policy_gradient": (),
    "supervised": (),
    "policy_improvement": (),
    "recurrent_reinforce": (),
    "rllib_ppo": ("catalog",),  # its help adds that every node of a cluster must see the path
}


@pytest.mark.parametrize("name", sorted(TRAINERS_WITH_ENV_FLAGS))
def test_trainers_take_the_env_flags_from_the_groups_spelled_once(name):
    """A trainer's env flags (catalog, shopper, starts, turns, the first stage) are the groups'
    fields, inherited with their help texts, not spelled again: the flags a trainer shows are
    the groups' and reach its envs by name."""
    import importlib

    from fiq_gym.env_config import DialogFlags, ShortlistFlags
    from fiq_gym.utils.arguments import field_docs

    if name == "rllib_ppo":
        pytest.importorskip("ray")
    args = importlib.import_module(f"fiq_gym.agents.{name}").Args
    assert issubclass(args, DialogFlags)
    groups = [g for g in (DialogFlags, ShortlistFlags) if issubclass(args, g)]
    own = set(inspect.get_annotations(args))
    for group in groups:
        for f in dataclasses.fields(group):
            if f.name in TRAINERS_WITH_ENV_FLAGS[name]:
                assert f.name in own
                continue
            assert f.name not in own, f"{name}.Args spells {f.name} again: inherit it from {group.__name__}"
            assert field_docs(args)[f.name] == field_docs(group)[f.name]
    # The shortlist's flags come as one group or not at all.
    shortlist_fields = {f.name for f in dataclasses.fields(ShortlistFlags)}
    assert (ShortlistFlags in groups) == bool(shortlist_fields & {f.name for f in dataclasses.fields(args)})
    kwargs = trainer_env_kwargs(args(), action_mode="shortlist" if ShortlistFlags in groups else "query")
    assert {f.name for f in dataclasses.fields(DialogFlags)} - {"start", "start_split"} <= set(kwargs)


def test_the_default_and_the_limit_of_turns_have_distinct_names():
    """DEFAULT_MAX_TURNS (5: EnvConfig's default and the registered max_episode_steps) and
    TURN_LIMIT (1,000: the most an env accepts); the earlier MAX_TURNS of each module still
    imports, with its old value."""
    from fiq_gym import dialog_engine
    from fiq_gym.envs import registration

    assert registration.DEFAULT_MAX_TURNS == EnvConfig().max_turns == 5
    assert gym.spec("fiq_gym/FashionIQ-v3").max_episode_steps == registration.DEFAULT_MAX_TURNS
    assert dialog_engine.TURN_LIMIT == 1000
    assert EnvConfig(max_turns=dialog_engine.TURN_LIMIT).max_turns == 1000
    with pytest.raises(ValueError, match="from 1 to 1000"):
        EnvConfig(max_turns=dialog_engine.TURN_LIMIT + 1)
    assert (registration.MAX_TURNS, dialog_engine.MAX_TURNS) == (5, 1000)
