"""``FashionIQEnv``: one dialog-based image retrieval episode at a time."""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import fields
from types import FrameType
from typing import Any

import gymnasium as gym
import numpy as np

from fiq_gym.catalog.model import Catalog
from fiq_gym.dialog_engine import DialogConfig, Transition
from fiq_gym.env_config import RENDER_MODES, EnvConfig
from fiq_gym.envs.building import build_dialog
from fiq_gym.envs.registration import (
    EARLIER_RELEASE,
    EARLIER_VERSION,
    ENV_VERSION,
    OLDEST_SUPPORTED_VERSION,
    refuse_earlier_spec,
)
from fiq_gym.envs.rendering import render_frame
from fiq_gym.gallery import Gallery
from fiq_gym.shortlist import FirstStage
from fiq_gym.text import CaptionTokenizer
from fiq_gym.users.base import User

__all__ = ["FashionIQEnv"]


def _time_limit_of_make(spec: gym.envs.registration.EnvSpec) -> tuple[int | None, str]:
    """The ``max_episode_steps`` of the TimeLimit that ``gym.make`` adds right after setting
    ``spec`` on the env (None: no TimeLimit), and where it comes from.

    ``gym.make`` hands the env a spec with ``max_episode_steps=None`` and applies its own
    ``max_episode_steps`` argument (or, without one, the spec's it was made from; -1: none)
    only afterwards, so they are read from its frame. Outside ``gym.make``: the registered value.
    """
    make_code = gym.envs.registration.make.__code__
    frame: FrameType | None = sys._getframe(1)
    for _ in range(4):  # the spec setter, gym.make (a frame or two up)
        if frame is None:
            break
        if frame.f_code is make_code:
            argument = frame.f_locals.get("max_episode_steps")
            if argument == -1:
                return None, ""
            if argument is not None:
                return int(argument), "is made with"
            made_from = frame.f_locals.get("env_spec")
            return getattr(made_from, "max_episode_steps", None), "is registered with"
        frame = frame.f_back
    registered = gym.registry.get(spec.id)
    return getattr(registered, "max_episode_steps", None), "is registered with"


class FashionIQEnv(gym.Env[dict[str, np.ndarray], Any]):
    """Dialog-based interactive image retrieval over a garment catalog.

    ## Description

    A simulated shopper has a *target* garment in mind. Each turn the agent shows one garment
    of the catalog; the shopper answers with a *relative caption* that says how the target
    differs from what was shown ("is darker and has longer sleeves"). The agent reads the
    caption and shows another garment. The task follows Fashion IQ (Wu et al., CVPR 2021)
    and "Dialog-based Interactive Image Retrieval" (Guo et al., NeurIPS 2018).

    ## Action Space

    Set by ``action_mode``:

    | mode              | space                       | the action                                   |
    |-------------------|-----------------------------|----------------------------------------------|
    | `index`           | `Discrete(N)`               | the agent names the item to show             |
    | `query`           | `Box(-1, 1, (D,), float32)` | a query vector; the unseen item most similar |
    |                   |                             | to it is shown                               |
    | `scores`          | `Box(-1, 1, (N,), float32)` | the agent's scores are the ranking; the best |
    |                   |                             | unseen item is shown                         |
    | `shortlist`       | `Discrete(K)`               | a slot among the K candidates a first stage  |
    |                   |                             | proposes each turn                           |
    | `slate`           | `MultiDiscrete([N] * K)`    | K items shown at once; the shopper picks one |
    |                   |                             | and captions it                              |
    | `shortlist_slate` | `MultiDiscrete([M] * K)`    | a slate of K candidate slots among M a first |
    |                   |                             | stage proposes                               |

    N is the number of items in play (the chosen category), D the feature size; a `query`
    scores every item by its dot product with it (cosine up to scale). In `query`
    and `scores` modes the env shows the best-scoring item *not yet shown* in the episode
    (ties: the lowest index). In `index` mode the agent may show an item again; that turn
    earns nothing new (see Rewards). Malformed actions (wrong shape or dtype, out of range,
    NaN or inf) raise ``ValueError`` naming the space and the value.

    **Shortlist** (``action_mode="shortlist"``): every observation also proposes K =
    ``shortlist_size`` (default 32) candidates, all items not shown yet in the dialog. A
    *first stage* (``shortlist=``) that reads only the dialog so far (captions and shown items,
    :class:`fiq_gym.shortlist.DialogView`; never the target) scores every item; the candidates
    are its K best unseen items (ties: the lower index), of which a fraction ``explore``
    (default 0) is replaced by uniform random unseen items, in an order shuffled by the
    dialog's own seeded stream (slot position carries no information). The action picks a
    slot; the env shows that candidate, and rank, rewards, success and episode end are exactly
    those of `index` mode showing the same item. Picking a slot whose ``candidate_mask`` is 0
    raises ``ValueError``; with the built-in first stages every slot is valid (the env needs
    N >= K + T + 1). ``info["candidates"]`` gives the K item indices (for logging). First
    stages: `"retriever"` (default: the supervised dialog retriever shipped in
    ``fiq_gym/shortlist/default/``, first stage version 2, trained on the default catalog; it
    fits catalogs with the shipped features, D = 45), `"retriever:DIR"` (any fiq-gym
    retriever checkpoint), `"random"` (uniform random scores, as RecSim's candidate documents)
    or a callable ``f(view) -> (B, N) scores`` (items scored -inf are never proposed).

    **Slate** (``action_mode="slate"``): each turn shows K = ``slate_size`` (default 4) items
    at once, as a shop's results grid does. If the target is among them the dialog is won
    (the shopper picks it). Otherwise the shopper picks the slate item most like its target
    by its own rule on attribute differences (the least salience-weighted differences, ties
    to the earliest position: :meth:`fiq_gym.users.template.TemplateUser.pick`; shoppers
    without a pick rule of their own, such as the transformer shopper, pick by the template
    shopper's rule with its default salience) and captions the target against that item.
    The picked item is the turn's *shown* item: `info["shown"]`, the ``shown_*`` and history
    keys, the caption and the rank (by similarity to it, as in `index` mode) are about it.
    An item repeated within one slate counts once, at its first position; its later positions
    are empty (``slate_mask`` 0) and never picked. Items of earlier turns may be shown again
    (`info["repeated"]` flags a pick picked before). The reset shows one item, as in every
    mode: its slate holds that item at position 0 alone. ``info["slate"]`` gives the K item
    indices shown (-1 for an empty position) and ``info["slate_pick"]`` the picked position.

    **Shortlist slate** (``action_mode="shortlist_slate"``): the slate rules over the shortlist's
    candidates, for agents that need a small action space: each observation proposes M =
    ``shortlist_size`` candidates as in `shortlist` mode (none that an earlier slate of the
    dialog showed), and the action names K = ``slate_size`` of their slots (K <= M; the env
    needs N >= M + T * K + 1). A slot named twice counts once; an empty slot raises
    ``ValueError``. The observation has both the `candidate_*` and the `slate_*` keys.

    ## Observation Space

    A `Dict` of fixed-shape spaces (keys selectable with ``observation_keys``; every key is
    one-dimensional, so SB3's `MultiInputPolicy`, RLlib and TorchRL take it as it is):

    | key                       | space                             | meaning                      |
    |---------------------------|-----------------------------------|------------------------------|
    | `caption`                 | `MultiDiscrete([V] * L)`          | this turn's caption token    |
    |                           |                                   | ids, padded with 0           |
    | `caption_length`          | `Box(0, L, (1,), int64)`          | number of real tokens (<= L) |
    | `shown_features`          | `Box(-1, 1, (D,), float32)`       | unit-norm features of the    |
    |                           |                                   | item shown this turn         |
    | `shown_attributes`        | `Box(0, 1, (A,), float32)`        | its attribute scores         |
    | `turn`                    | `Box(0, T, (1,), int64)`          | turns taken so far, 0 at     |
    |                           |                                   | reset                        |
    | `history_features`        | `Box(-1, 1, ((T+1)*D,), float32)` | row t: the features of the   |
    |                           |                                   | item shown at turn t         |
    | `history_attributes`      | `Box(0, 1, ((T+1)*A,), float32)`  | row t: its attribute scores  |
    | `history_captions`        | `MultiDiscrete([V] * (T+1)*L)`    | row t: turn t's caption ids  |
    | `history_caption_lengths` | `Box(0, L, (T+1,), int64)`        | row t: its length            |
    | `history_mask`            | `MultiBinary(T+1)`                | 1 for the turns played so    |
    |                           |                                   | far                          |
    | `shown_mask` (opt-in)     | `MultiBinary(N)`                  | 1 for every item shown so    |
    |                           |                                   | far (asked for by name only) |
    | `candidate_features`      | `Box(-1, 1, (K*D,), float32)`     | row k: the features of       |
    |                           |                                   | candidate slot k (modes      |
    |                           |                                   | `shortlist`,                 |
    |                           |                                   | `shortlist_slate`)           |
    | `candidate_attributes`    | `Box(0, 1, (K*A,), float32)`      | row k: its attribute scores  |
    |                           |                                   | (modes `shortlist`,          |
    |                           |                                   | `shortlist_slate`)           |
    | `candidate_scores`        | `Box(-1, 1, (K,), float32)`       | row k: its first-stage score |
    |                           |                                   | (clipped to [-1, 1]) (modes  |
    |                           |                                   | `shortlist`,                 |
    |                           |                                   | `shortlist_slate`)           |
    | `candidate_mask`          | `MultiBinary(K)`                  | 1 for a real candidate, 0    |
    |                           |                                   | for an empty slot (modes     |
    |                           |                                   | `shortlist`,                 |
    |                           |                                   | `shortlist_slate`)           |
    | `slate_features`          | `Box(-1, 1, (K*D,), float32)`     | row k: the features of the   |
    |                           |                                   | last slate's position k      |
    |                           |                                   | (modes `slate`,              |
    |                           |                                   | `shortlist_slate`)           |
    | `slate_attributes`        | `Box(0, 1, (K*A,), float32)`      | row k: its attribute scores  |
    |                           |                                   | (modes `slate`,              |
    |                           |                                   | `shortlist_slate`)           |
    | `slate_mask`              | `MultiBinary(K)`                  | 1 where a position held an   |
    |                           |                                   | item (0: empty or a repeat)  |
    |                           |                                   | (modes `slate`,              |
    |                           |                                   | `shortlist_slate`)           |
    | `slate_pick`              | `Box(0, K-1, (1,), int64)`        | the position the shopper     |
    |                           |                                   | picked (modes `slate`,       |
    |                           |                                   | `shortlist_slate`)           |

    T is ``max_turns``, L ``caption_length``, V the tokenizer's vocabulary size, D the
    feature size, A the number of attribute columns. History rows are flat, row t after row
    t - 1 (``obs["history_features"].reshape(T + 1, D)``); row 0 is the reset's item and
    caption, row t (t <= the current turn) turn t's, later rows are zeros with mask 0.
    ``shown_mask`` is returned only when asked for in ``observation_keys`` (catalogs of at
    most 65,536 items in play); the default keys are all the others. The `candidate_*` keys
    exist in `shortlist` mode only (and are in its default keys); empty slots are zeros. The
    `slate_*` keys exist in the slate modes only (and are in their default keys), K there
    being ``slate_size``; `shortlist_slate` has the `candidate_*` keys too.

    Token ids come from ``env.unwrapped.tokenizer`` (a
    :class:`~fiq_gym.text.CaptionTokenizer`): id 0 is padding, and for the template
    shopper's word vocabulary id 1 is ``<unk>`` and ``tokenizer.words`` lists the words;
    ``tokenizer.decode(ids)`` turns ids back into text. The learned shopper brings its own
    tokenizer (also with padding at 0).

    Features are the catalog's (centred, unit-norm; the default catalog's come from the
    shipped attribute network, D = 45). A catalog without features falls back to 8x8 colour
    thumbnails (D = 192) and warns once (:class:`~fiq_gym.errors.FallbackWarning`) naming
    the command that extracts features. Attribute scores are the catalog's predicted ones
    (``side_info="predicted"``); on a catalog without predictions they are zeros, with the
    same one-time warning. Ground-truth labels are shown only with ``side_info="labels"``.

    ## Info

    | key             | type         | meaning                                                 |
    |-----------------|--------------|---------------------------------------------------------|
    | `caption_text`  | `str`        | this turn's caption as text (left out with              |
    |                 |              | ``caption_text=False``)                                 |
    | `shown`         | `int`        | index of the item shown this turn                       |
    | `dialog_turn`   | `int`        | turns taken so far, 0 at reset (as the `turn`           |
    |                 |              | observation, but present whatever ``observation_keys``  |
    |                 |              | says)                                                   |
    | `rank`          | `int`        | the target's rank (training and logging only)           |
    | `percentile`    | `float`      | ``1 - rank / (N - 1)`` (training and logging only)      |
    | `is_success`    | `bool`       | the target was shown this turn                          |
    | `repeated`      | `bool`       | the item shown had been shown before in this dialog     |
    | `human_caption` | `bool`       | ``user="dataset"`` only: the caption is recorded human  |
    |                 |              | text (not the fallback's; see Starting State)           |
    | `target`        | `int`        | only with the training-only ``expose_target=True``      |
    | `candidates`    | `int64 (K,)` | the item index in each candidate slot (modes            |
    |                 |              | `shortlist`, `shortlist_slate`)                         |
    | `slate`         | `int64 (K,)` | the items shown, -1 where a position is empty (a repeat |
    |                 |              | within the slate) (modes `slate`, `shortlist_slate`)    |
    | `slate_pick`    | `int`        | the position the shopper picked (modes `slate`,         |
    |                 |              | `shortlist_slate`)                                      |

    No key has the name of an observation key, so libraries that put both in one namespace
    (TorchRL) take them as they are. ``info`` never holds the target's index or id unless the
    training-only ``expose_target=True`` opt-in adds `info["target"]` (for supervised
    losses; the evaluation harness refuses such an env).

    Agents may read the gallery they retrieve from, never the target: ``env.unwrapped.gallery``
    holds the read-only features and attribute scores of every item in play (a retrieval
    system knows its own catalog).

    ## Evaluation Integrity (threat model)

    An *evaluated* agent may read the observations, `info`'s `caption_text`, `shown`,
    `dialog_turn`, `is_success`, (`shortlist` mode) `candidates`, (`slate` mode) `slate` and
    `slate_pick`, and the gallery. It may not read `rank`, `percentile` or the reward (with
    the gallery, the rank of the shown item's neighbours singles out the target), `render()`
    frames (they show the rank), `info["human_caption"]`, or the env object (its private state,
    pickles, deep copies, its generators, which predict the next reset's target; with
    ``start="annotated"`` its ``start_pairs``, and likewise the catalog's
    ``human_captions.json``, pair each first item with its target). Training may use all of them and
    the two opt-ins below. ``fiq_gym.envs.evaluation.evaluate`` enforces this: it filters
    `info` and, sealed by default, runs the env in another process; for agents that set out to
    cheat (reading the caller's frames, patching the harness), ``isolation="process"`` (the
    default of `fiq-gym eval`) runs the agent in a process of its own, on a held-out set if
    the seed is secret (docs/agents.md, the threat model).

    ## Rewards

    The target's **rank** is its 0-based position among all N items in play: by the agent's
    scores (`query`, `scores`) or by cosine similarity to the shown item (`index`,
    `shortlist`, `slate`'s picked item, and at reset). Ties count against the agent: every other item scoring at least as high as the
    target comes first. When the target is shown, the rank is 0. The **percentile** is
    ``p_t = 1 - rank_t / (N - 1)``.

    The benchmark (:func:`fiq_gym.envs.evaluation.evaluate`) scores a dialog by the rank after
    every turn 1..T and counts the target found (rank 0) for every turn after it was shown.
    Every reward's return is that score, so the return orders policies exactly as the
    metric does: the episode still ends when the target is shown (nothing is left to find),
    and that turn also pays the remaining ``T - t`` turns at the value of rank 0. Hence
    showing the target earlier never earns less than hovering next to it. With ``reward=``:

    * `"percentile"` (default): per turn ``p_t = 1 - rank_t / (N - 1)``; return sum of the per-turn
      percentile, at most T; it follows the mean-percentile curve;
    * `"delta"`: per turn ``p_t - p_{t-1}`` (``p_0`` the reset's); return ``p_T - p_0`` (``p_T = 1``
      after a success); it follows the last turn's percentile;
    * `"success"`: per turn 1 on the turn the target is shown; return the number of turns the target
      counts as found; it follows the success-rate curve;
    * `"reciprocal_rank"`: per turn ``1 / (1 + rank_t)``; return at most T; rank 1 pays 1/2, rank 9
      pays 1/10; it follows the top of the ranking (R@1, R@5);

    plus ``success_bonus`` once when the target is shown. A repeated `index` action shows
    nothing new and earns what the metric counts for it (the same rank as before);
    `info["repeated"]` flags it. ``tests/test_rewards.py`` proves these properties for
    random policies and for the two oracle policies (show the target at turn 1; keep it at
    rank >= 1 without showing it).

    ## Starting State

    A target and a different first item, both uniform over the items in play, drawn from
    ``self.np_random``; ``reset(options={"target": i, "shown": j})`` fixes either, as an
    evaluation set does; a target equal to the first item is refused (``ValueError``), and a
    drawn target never equals a given first item. The first observation holds the caption for
    that pair.

    **Annotated starts** (``start="annotated"``, for catalogs imported with ``fiq-gym catalog
    import``): the reset draws, uniformly from ``self.np_random``, one (target, candidate) pair
    of the human captions of split ``start_split`` (default: the env's ``split`` if it has one,
    else `"train"`; `"val"` to evaluate, as
    both papers do; in a category env, that category's caption files) among the pairs with
    both items in play, and shows the candidate; with
    ``user="dataset"`` turn 0's caption is then the annotators' own. Later turns show what
    the agent picks, pairs nobody annotated, so the dataset shopper's ``fallback`` answers
    them (e.g. a transformer shopper trained on the captions, ``"transformer:DIR"``).
    ``info["human_caption"]`` says which captions are human, and the evaluation harness
    reports their share by turn (``result.meta["human_captions"]``). The pairs are
    ``env.unwrapped.start_pairs`` (indices in play); evaluation sets of such an env are drawn
    from them, each pair once in a seeded order (:meth:`EvaluationSet.for_env
    <fiq_gym.envs.evaluation.EvaluationSet.for_env>`). Reset options win over the draw: given
    either, the reset follows the uniform rule above. A dataset shopper that replays another
    split than ``start_split`` is refused (``ValueError`` naming ``user_kwargs["split"]``), as
    are a catalog without human captions and a split without targets (Fashion IQ's `test`).
    The default, `"uniform"`, is the start of every earlier release, draw for draw. (Named
    after what it does to ``reset``, as Gymnasium's options are; a split argument of its own
    because the start split and the shopper's replayed split are different choices: a
    transformer shopper has no split.)

    Reset options are **indices in play** (0..N-1), the one index space of everything the env
    says and takes (actions, ``info["shown"]``, ``info["candidates"]``, evaluation sets), so a
    dialog can be restarted from what it showed. What describes the catalog is in **catalog
    rows** (:meth:`DatasetUser.annotated_pairs <fiq_gym.users.DatasetUser.annotated_pairs>`,
    :meth:`HumanCaptions.rows <fiq_gym.catalog.captions.HumanCaptions.rows>`,
    ``catalog.ids[row]``). The two coincide in an env over all items, not in a category env
    (item i of the shirt env is catalog row ``gallery.rows[i]``): convert with
    ``env.unwrapped.index_of_row(row)`` (a row not in play, e.g. of another category, is a
    ``ValueError`` naming it) and back with ``env.unwrapped.row_of_index(i)``:

    ```python
    targets, shown = env.unwrapped.user.annotated_pairs()  # catalog rows (user="dataset")
    env.reset(options={"target": env.unwrapped.index_of_row(int(targets[0])),
                       "shown": env.unwrapped.index_of_row(int(shown[0]))})
    ```

    ## Episode End

    * Termination: the target is shown (`info["is_success"]` is True; that turn's reward pays
      the turns left, see Rewards), or ``max_turns`` steps were played (5 by default, as in
      both papers) without it. The dialog is then over by its rules: the turn is in the
      observation and nothing more can be earned, so the value after it is 0 and no library
      should bootstrap there. Success is `info["is_success"]`, never `terminated` alone.
    * Truncation: never by the env itself (since -v3; -v2 reported the end at ``max_turns``
      as truncated, which made libraries that bootstrap on truncation add a value guess to
      every failed dialog). The ids are registered with ``max_episode_steps=5``, so
      ``gym.make`` adds a ``TimeLimit`` that also sets ``truncated`` on that last step, beside
      ``terminated``; when you change ``max_turns`` through ``gym.make`` pass the same
      ``max_episode_steps`` (the env warns when the cap gym.make applies would end its dialogs early).

    ## Arguments

    ```python
    gym.make("fiq_gym/FashionIQ-v3", catalog=None, category=None, user="template",
             action_mode="index", reward="percentile", success_bonus=0.0, max_turns=5,
             caption_length=32, observation_keys=None, render_mode=None, user_kwargs=None,
             tokenizer=None, expose_target=False, lookahead=False, side_info="predicted",
             shortlist_size=32, shortlist="retriever", explore=0.0, caption_text=True, slate_size=4,
             start="uniform", start_split=None, split=None, configuration="default",
             scoring="float32")
    ```

    The env keeps them as one frozen, checked object, ``env.unwrapped.env_config`` (a
    :class:`~fiq_gym.env_config.EnvConfig`; a pickle holds it): ``FashionIQEnv(**config.to_kwargs())``
    makes the same env again, and ``EnvConfig.from_kwargs(**kwargs)`` checks arguments without
    building one. ``env.unwrapped.config`` is the dialog rules' part of it (a
    :class:`~fiq_gym.dialog_engine.DialogConfig`, its observation keys resolved). The block
    above and the list below are written from ``EnvConfig``'s fields and their docstrings
    (``python tools/spec_docs.py``), which are the source: edit those.

    * ``catalog``: a catalog directory, a :class:`~fiq_gym.catalog.Catalog`, a synthetic catalog
      spec ``"synthetic:SIZE[:SEED]"`` (built on first use into the cache, the same on any machine),
      or None for the configuration's catalog (by default the 10,000-item synthetic catalog).
    * ``category``: ``"dress"``, ``"shirt"``, ``"toptee"`` (or the catalog's own), None for all. On
      a catalog imported with ``fiq-gym catalog import`` a category holds every image that any of
      its image split files lists, so an image listed by shirt and toptee (the Fashion IQ release
      lists 3,302 such) is in play in both envs; elsewhere, the items of the category.
    * ``user``: the shopper: ``"template"`` (rule-based), ``"transformer"`` (the learned relative
      captioner, :class:`~fiq_gym.users.TransformerUser`, whose own word tokenizer then gives the
      caption token ids; ``"transformer:DIR"`` is short for one with ``{"checkpoint": DIR}``),
      ``"dataset"`` (the human captions of a catalog imported with ``fiq-gym catalog import``,
      :class:`~fiq_gym.users.DatasetUser`; ``"dataset:SHOPPER"`` is short for a ``fallback`` of
      SHOPPER, e.g. ``"dataset:transformer:DIR"``, a shopper trained on the human captions),
      ``"lm:DIR"`` (a local Hugging Face causal language model saved in DIR) or a
      :class:`~fiq_gym.users.User` instance (docs/shoppers.md).
    * ``action_mode``: what an action is: ``"index"``, ``"query"``, ``"scores"``, ``"shortlist"``,
      ``"slate"`` or ``"shortlist_slate"`` (:mod:`fiq_gym.action_modes`; the env's Action Space).
    * ``reward``: ``"percentile"``, ``"delta"``, ``"success"`` or ``"reciprocal_rank"``; every
      reward's return is the benchmark's score of the dialog (the env's Rewards).
    * ``success_bonus``: added once, on the turn the target is shown.
    * ``max_turns``: T, the turns of a dialog (1 to ``TURN_LIMIT``, 1,000); the dialog ends after T
      turns without success, or when the target is shown.
    * ``caption_length``: L, the number of token ids in the caption observation.
    * ``observation_keys``: the observation keys to return (None: the action mode's default keys,
      all but ``shown_mask``); one key may be given as a string.
    * ``render_mode``: ``"rgb_array"`` (the shown garment, the caption and the turn), ``"ansi"`` (a
      text line per turn) or None.
    * ``user_kwargs``: arguments of the named shopper. Template: e.g. ``{"noise":
      TemplateNoise(omit=0.2)}``; transformer: ``{"checkpoint": DIR, "decoding": {"strategy":
      "greedy"}}`` (defaults: the checkpoint shipped with the package, nucleus sampling; a
      checkpoint that does not fit the catalog fails with a message naming the mismatch); dataset:
      ``split``, ``mode`` (``"random"`` or ``"joined"``) and ``fallback`` (``"template"``,
      ``"transformer"``, ``"transformer:DIR"``, ``"lm:DIR"`` or None, which raises on pairs nobody
      annotated).
    * ``tokenizer``: a :class:`~fiq_gym.text.CaptionTokenizer` to use instead of the shopper's.
    * ``expose_target``: training-only opt-in that adds ``info["target"]`` (refused by the
      evaluation harness).
    * ``lookahead``: training-only opt-in that enables ``preview_captions(candidates)``, what the
      shopper would say about candidate items (for model-based policy improvement; refused by the
      evaluation harness). Previews draw from their own generator and never change the episode.
    * ``side_info``: the attribute scores agents see: ``"predicted"`` (the catalog's predictions) or
      ``"labels"`` (ground truth; an explicit opt-in).
    * ``shortlist_size``: shortlist modes: K (``shortlist_slate``: M), the candidates each
      observation proposes.
    * ``shortlist``: shortlist modes: the first stage that proposes the candidates (``"retriever"``,
      ``"retriever:DIR"``, ``"random"`` or a callable ``f(view) -> (B, N) scores``); another than
      the default outside those modes is refused.
    * ``explore``: shortlist modes: the fraction of the candidates that are uniform random unseen
      items.
    * ``caption_text``: put the caption text in ``info["caption_text"]``; False for libraries whose
      info readers take numbers only (TorchRL's ``GymEnv(..., num_envs=n)`` and ``GymWrapper`` with
      an info reader). The text is still in ``render()``, and the caption's token ids are in the
      observation either way.
    * ``slate_size``: slate modes: K, the items (or candidate slots) each turn shows at once, from 2
      to N - 1 (the env's Action Space).
    * ``start``: where a reset starts: ``"uniform"`` (a random target and first item) or
      ``"annotated"`` (a pair of the human captions of ``start_split``, on an imported catalog; the
      env's Starting State).
    * ``start_split``: with ``start="annotated"``: the split whose annotated pairs start the dialogs
      (None: the env's ``split``, else ``"train"``).
    * ``split``: on an imported catalog, only the images of that image split (e.g. ``"val"``; with
      ``category``, that category's split file): the official protocol's gallery of each category,
      where the papers evaluate. None: every item. Refused, in one line, on a catalog that is no
      import or for a split it lacks.
    * ``configuration``: a named configuration (:mod:`fiq_gym.envs.configurations`, the env's
      Registered Configurations), which fills in the catalog and the template shopper's settings
      left at their defaults.
    * ``scoring``: how items are scored for the rank and the shown item (:mod:`fiq_gym.ranking`).
      ``"float32"``: numpy float32 products, as in every release. ``"exact"``: comparisons of exact
      dot products (a float32 scan plus a recheck of the items within a proven error band of the
      target's score), the same ranks however the gallery is split or batched, which the vector
      env's ``shards=`` needs; they differ from ``"float32"`` only where BLAS rounding decides a
      near-tie. ``"float16"``: the exact ranks again, scanning a float16 copy of the features.

    ## Registered Configurations

    * `fiq_gym/FashionIQ-v3`: all categories.
    * `fiq_gym/FashionIQDress-v3`, `fiq_gym/FashionIQShirt-v3`,
      `fiq_gym/FashionIQToptee-v3`: one category each.
    * `fiq_gym/FashionIQ100k-v3`: a 100,000-item synthetic catalog (``"synthetic:100000"``,
      built into the cache on first use: about two minutes and 1.2 GB).
    * `fiq_gym/FashionIQTerse-v3`: a terse, noisy template shopper: one difference a turn,
      10% of colour words wrong, 15% of words dropped.
    * `fiq_gym/FashionIQTerse100k-v3`: both.

    The last three fix ``configuration=`` (:mod:`fiq_gym.envs.configurations`), which fills
    in ``catalog`` when none is passed and the template shopper's settings when
    ``user="template"`` comes without ``user_kwargs``: explicit arguments win. How hard each
    is, measured: ``benchmarks/results/configurations.md``.

    Each is registered with ``max_episode_steps=5`` and a native vector entry point
    (``gym.make_vec(id, num_envs=n, vectorization_mode="vector_entry_point")``).

    ## Version History

    * v3 (extended, not bumped: the default's dynamics are unchanged): ``start="annotated"``
      and ``start_split`` (resets from the annotated pairs of an imported catalog, see
      Starting State); dataset-shopper envs add `info["human_caption"]`; ``split`` (one image
      split of an import). Changed on imported catalogs only: a category env holds every image
      its split files list, not only the images listed first under it (the toptee env lacked
      the images it shares with shirt); episodes of such envs differ from before, those of
      every other catalog are unchanged.
    * v3: a dialog that reaches ``max_turns`` without success ends with ``terminated=True``
      (it is over by its rules); -v2 reported it as ``truncated=True``, so libraries that
      bootstrap on truncation added a value guess to every failed dialog. Success is
      ``info["is_success"]``. Observations, actions, rewards and the shopper are unchanged;
      the -v2 ids stay registered (``fiq_gym.envs.version2``) so that work made on them
      reproduces.
    * v2 (fiq-gym 0.2.0): the rules, the observation keys and the rewards are unchanged from
      v1; the shipped data changed. The attribute network gained a category head (the default
      catalogs' features now carry each item's category, D = 45 instead of 60, so the feature
      keys' shapes change with it), and the transformer shopper (with its own caption
      vocabulary ids) and the shortlist first stage were retrained on the new features.
      The -v1 and -v0 ids are no longer registered (Gymnasium's ``DeprecatedEnv`` names the
      current id; agent checkpoints, datasets and pickles that recorded them are refused); to
      reproduce them, install fiq-gym 0.1.0.
    * v1 (extended, not bumped: the default's dynamics are unchanged): ``scoring="exact"``
      and ``"float16"``, opt-in scorings that rank by exact dot products.
    * v1 (not bumped: observations, rewards and episodes are unchanged): `info["caption"]`
      is now `info["caption_text"]` and `info["turn"]` is `info["dialog_turn"]` (the old
      names clashed with observation keys; they read, with a warning, until fiq-gym 0.2.0
      removed them); ``caption_text=False`` leaves the text out of `info`.
    * v1 (extended, not bumped: the dynamics of the existing modes are unchanged): the
      `shortlist` action mode with the `candidate_*` observation keys and
      ``info["candidates"]``; its dynamics depend on the first stage, so replacing the shipped
      first-stage weights will bump the version.
    * v1: the return equals the benchmark's metric (the turn that shows the target pays the
      turns left; repeats earn what the metric counts); `reciprocal_rank` reward; dialog
      history keys and the opt-in `shown_mask`; caption ids as `MultiDiscrete`; no silent
      fallbacks (a warning for catalogs without features or predicted attributes, zeros
      instead of ground-truth labels unless ``side_info="labels"``); features without dead
      dimensions; ``max_episode_steps`` registered. In both versions, with unchanged
      dynamics otherwise: ``reset`` refuses ``target == shown`` and, with only ``shown``
      given, draws the target among the other items (before, the dialog could start on its
      target); the Evaluation Integrity section.
    * v0: initial release (deprecated by v1; removed in 0.2.0).
    """

    metadata = {"render_modes": list(RENDER_MODES), "render_fps": 1}

    def __init__(
        self,
        # EnvConfig's fields, written from fiq_gym/env_config.py by tools/spec_docs.py:
        catalog: Catalog | str | os.PathLike | None = None,
        category: str | None = None,
        user: str | User = "template",
        action_mode: str = "index",
        reward: str = "percentile",
        success_bonus: float = 0.0,
        max_turns: int = 5,
        caption_length: int = 32,
        observation_keys: tuple[str, ...] | None = None,
        render_mode: str | None = None,
        user_kwargs: dict[str, Any] | None = None,
        tokenizer: CaptionTokenizer | None = None,
        expose_target: bool = False,
        lookahead: bool = False,
        side_info: str = "predicted",
        shortlist_size: int = 32,
        shortlist: str | FirstStage = "retriever",
        explore: float = 0.0,
        caption_text: bool = True,
        slate_size: int = 4,
        start: str = "uniform",
        start_split: str | None = None,
        split: str | None = None,
        configuration: str = "default",
        scoring: str = "float32",
    ) -> None:
        # Every argument above is an EnvConfig field (tools/spec_docs.py writes them; adding
        # one is adding a field there): the config checks them and is all the builder reads.
        config = EnvConfig.from_arguments(locals())
        self.env_config = config
        self._preview_rng = np.random.default_rng([0x9E71E3, 0])
        parts = build_dialog(config)
        self.catalog, self.user, self.tokenizer = parts.catalog, parts.user, parts.tokenizer
        self.first_stage, self._dialog = parts.first_stage, parts.dialog
        self.category = config.category
        self.configuration = config.configuration
        # gymnasium types a spaces.Dict as a Space of dicts of spaces, not of their samples.
        self.observation_space = self._dialog.observation_space()  # type: ignore[assignment]
        self.action_space = self._dialog.action_space()
        self.render_mode = config.render_mode
        self._needs_reset = True
        self._last: dict[str, Any] | None = None
        self._log: list[str] = []

    @property
    def config(self) -> DialogConfig:
        """The dialog rules the engine runs (``env_config.dialog_config()``, its observation
        keys resolved). ``env_config`` holds every argument of the env."""
        return self._dialog.config

    @property
    def spec(self) -> gym.envs.registration.EnvSpec | None:
        return getattr(self, "_spec", None)

    @spec.setter
    def spec(self, value: gym.envs.registration.EnvSpec | None) -> None:
        # gym.make sets the spec, then wraps the env in TimeLimit (its max_episode_steps
        # argument, else the registered value): say so when that cap would end episodes
        # before max_turns.
        refuse_earlier_spec(value)
        self._spec = value
        if value is None:
            return
        steps, source = _time_limit_of_make(value)
        turns = self.config.max_turns
        if steps is not None and steps < turns:
            warnings.warn(
                f"max_turns={turns} but {value.id} {source} max_episode_steps={steps}: pass "
                f"max_episode_steps={turns} to gym.make as well, or TimeLimit ends episodes after {steps} turns",
                stacklevel=3,
            )

    @property
    def num_items(self) -> int:
        """Items in play (the size of the index action space)."""
        return self._dialog.tables.num_items

    def preview_captions(self, candidates: Any) -> tuple[np.ndarray, np.ndarray]:
        """Training-only (``lookahead=True``): the caption token ids (K, L) and lengths (K,)
        the shopper would give for each of K candidate items, without changing the episode."""
        ids, lengths = self._dialog.preview(np.asarray(candidates)[None], self._preview_rng)
        return ids[0], lengths[0]

    @property
    def gallery(self) -> Gallery:
        """Read-only features and attribute scores of the items in play (no target in it)."""
        return self._dialog.tables

    def index_of_row(self, row: Any) -> Any:
        """The index in play (what reset options take) of a catalog row (an int, or an array
        of them); ``ValueError`` for a row not in play. See Starting State."""
        return self._dialog.tables.index_of_row(row)

    def row_of_index(self, index: Any) -> Any:
        """The catalog row of an index in play (an int, or an array of them)."""
        return self._dialog.tables.row_of_index(index)

    @property
    def start_pairs(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``start="annotated"``: the (targets, shown) indices in play that resets draw from
        (copies; evaluation sets of this env are drawn from them too); None otherwise."""
        starts = self._dialog.starts
        return None if starts is None else (starts[0].copy(), starts[1].copy())

    # --- gymnasium API ---------------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None:
            self._preview_rng = np.random.default_rng([0x9E71E3, seed])
        targets = shown = None
        if options:
            unknown = set(options) - {"target", "shown"}
            if unknown:
                raise ValueError(f"unknown reset options {sorted(unknown)}; allowed: ['target', 'shown']")
            n = self.num_items
            for key in ("target", "shown"):
                if key in options:
                    value = options[key]
                    if (
                        isinstance(value, bool)
                        or not isinstance(value, int | np.integer)
                        or not 0 <= value < n
                    ):
                        raise ValueError(
                            f"options[{key!r}] must be an item index in [0, {n - 1}], got {value!r} "
                            "(an index in play; convert a catalog row with env.unwrapped.index_of_row(row))"
                        )
            if "target" in options:
                targets = np.array([options["target"]])
            if "shown" in options:
                shown = np.array([options["shown"]])
        out = self._dialog.reset(np.array([0]), [self.np_random], targets, shown)
        self._needs_reset = False
        self._log = []
        obs, info = self._unbatch(out)
        self._remember(info)
        return obs, info

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        if self._needs_reset:
            raise RuntimeError("call reset() before step(): the episode has ended or not started")
        actions = self._dialog.check_actions(action, batched=False)
        out = self._dialog.step(actions, [self.np_random])
        obs, info = self._unbatch(out)
        terminated, truncated = bool(out.terminated[0]), bool(out.truncated[0])
        self._needs_reset = terminated or truncated
        self._remember(info)
        return obs, float(out.reward[0]), terminated, truncated, info

    def render(self) -> str | np.ndarray | None:
        if self.render_mode is None or self._last is None:
            return None
        if self.render_mode == "ansi":
            return "\n".join(self._log) + "\n"
        row = int(self._dialog.tables.rows[self._last["shown"]])
        image = None if self.catalog.images is None else np.asarray(self.catalog.images[row])
        return render_frame(
            image,
            self._last["text"],
            self._last["dialog_turn"],
            self.config.max_turns,
            rank=self._last["rank"],
            num_items=self.num_items,
        )

    def close(self) -> None:
        # Nothing to release: catalogs are memory maps shared with other environments.
        self._last = None

    # --- helpers ---------------------------------------------------------------------------
    @staticmethod
    def _unbatch(out: Transition) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        obs = {k: v[0] for k, v in out.observation.items()}
        info: dict[str, Any] = {}
        for k, v in out.info.items():
            x = v[0]
            info[k] = x.item() if isinstance(x, np.generic) else x
        return obs, info

    def _remember(self, info: dict[str, Any]) -> None:
        # What render() shows; the caption text comes from the dialog, as info may leave it out.
        self._last = {**info, "text": str(self._dialog.last_caption[0])}
        flag = " SUCCESS" if info["is_success"] else ""
        self._log.append(
            f"turn {info['dialog_turn']}: shown {info['shown']:>6}  rank {info['rank']:>6}/{self.num_items - 1}  "
            f'p={info["percentile"]:.3f}{flag}  "{self._last["text"]}"'
        )

    def __getstate__(self) -> dict[str, Any]:
        # Pickle the arguments and the engine's state, not the tables: the catalog reopens as
        # a memory map.
        return {
            "env_version": ENV_VERSION,
            "env_config": self.env_config,
            "dialog": self._dialog.state_dict(),
            "np_random": self._np_random,
            "needs_reset": self._needs_reset,
            "log": self._log,
            "last": self._last,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        version = state.get("env_version")
        if not isinstance(version, int) or not OLDEST_SUPPORTED_VERSION <= version <= ENV_VERSION:
            # Pickles of fiq-gym 0.1.0 hold no env_version (their config held the rules' version).
            # A -v2 pickle holds the same state as a -v3 one (only the end signal differs, and it
            # is the class's: FashionIQEnvV2 unpickles as itself).
            old = state.get("env_version", getattr(state.get("args", {}).get("config"), "version", "?"))
            raise _earlier_pickle_error(
                f"this FashionIQEnv was pickled by fiq-gym 0.1.0, with the v{old} environment"
            )
        config = state["env_config"] if "env_config" in state else _config_of_earlier_pickle(state)
        type(self).__init__(self, **config.to_kwargs())
        self._dialog.load_state_dict(state["dialog"])
        self._np_random = state["np_random"]
        self._needs_reset, self._log, self._last = state["needs_reset"], state["log"], state["last"]


def _config_of_earlier_pickle(state: dict[str, Any]) -> EnvConfig:
    """The config of a pickle made before ``EnvConfig`` (fiq-gym 0.2.0 up to 38's item 1): its
    constructor arguments (``args``) held the dialog rules as a ``DialogConfig`` and the
    others by name, the render mode beside them; arguments added since take their defaults."""
    args = state["args"]
    rules: DialogConfig = args["config"]
    names = set(EnvConfig.names())
    # A DialogConfig of an earlier release reads its class's default for a field it lacks.
    shared = {f.name: getattr(rules, f.name) for f in fields(DialogConfig) if f.name in names}
    others = {k: v for k, v in args.items() if k in names}
    return EnvConfig.from_kwargs(**others, **shared, render_mode=state["render_mode"])


class _RemovedEnvV0:
    """What ``fiq_gym.envs.fashion_iq.FashionIQEnvV0`` (fiq-gym 0.1.0's v0 env, removed in 0.2.0)
    resolves to, so that unpickling a 0.1.0 pickle of one, or making one, names the fix instead
    of failing on a missing attribute."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        raise _earlier_pickle_error("FashionIQEnvV0 is the v0 environment of fiq-gym 0.1.0")


def _earlier_pickle_error(what: str) -> ValueError:
    """The refusal of an env pickled by an earlier release, after ``what`` says which."""
    return ValueError(
        f"{what}, {EARLIER_VERSION}: its dialog cannot continue here. Make a new env "
        f"(gym.make('fiq_gym/FashionIQ-v{ENV_VERSION}', ...)), or unpickle it with {EARLIER_RELEASE}"
    )


def __getattr__(name: str) -> Any:
    if name == "FashionIQEnvV0":
        return _RemovedEnvV0
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
