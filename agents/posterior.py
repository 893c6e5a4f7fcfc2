"""Posterior agents: a Bayesian reader of the template shopper's captions (after PicHunter,
Cox et al. 2000), the reference for how far an agent is from the best possible.

Each dialog keeps a belief over every item in play, uniform at the start. Each turn the
caption about the shown item ``s`` multiplies it by the shopper's own likelihood
``P(caption | target = t, shown = s)`` (:class:`fiq_gym.users.template_likelihood.TemplateLikelihood`,
which reads the rules off :class:`~fiq_gym.users.template.TemplateUser`), and the agent shows
the most probable item not shown yet (``posterior-map``, PicHunter's "most probable display").
In ``shortlist`` mode it shows the most probable of the K candidates offered. The
``posterior-lookahead`` policy plans one step instead: it weighs what each of the few most
probable displays would find now against what the shopper's answer about it would let the agent
find next (:class:`PosteriorAgent`).

What the agent reads is what any evaluated agent may read: the captions, the shown items and
the gallery (``env.unwrapped.gallery``: features and *predicted* attribute scores). The rules
also need each item's category and luma, which agents do not see; a :class:`Readout` predicts
them from the same features and scores (linear maps fitted on a *training* catalog's labels,
like the attribute network itself: the shipped one on the synthetic catalog of seed 1, never on
an evaluated one), and the likelihood treats the luma as Gaussian around its prediction. With
``beliefs="labels"`` the agent reads the evaluated catalog's labels instead: not an evaluable
agent, but the measure of what predicting attributes costs.

    from fiq_gym.agents.posterior import posterior_agent
    from fiq_gym.envs.evaluation import evaluate
    import gymnasium as gym
    venv = gym.make_vec("fiq_gym/FashionIQ-v3", num_envs=16, vectorization_mode="vector_entry_point")
    result = evaluate(posterior_agent(venv), "fiq_gym/FashionIQ-v3", episodes=200)
    planner = evaluate(posterior_agent(venv, "lookahead"), "fiq_gym/FashionIQ-v3", episodes=20)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from fiq_gym.catalog.model import Catalog
from fiq_gym.catalog.vocabulary import AttributeVocabulary
from fiq_gym.envs.evaluation import dialog_turns
from fiq_gym.envs.inner import inner_env
from fiq_gym.errors import CheckpointError
from fiq_gym.gallery import Gallery, gallery_of
from fiq_gym.users.template import LUMA_WEIGHTS, TemplateUser
from fiq_gym.users.template_likelihood import ItemAttributes, TemplateLikelihood
from fiq_gym.utils.atomic import atomic_write_text

__all__ = [
    "DEFAULT_READOUT",
    "POLICIES",
    "PosteriorAgent",
    "Readout",
    "fit_readout",
    "posterior_agent",
    "reader_parts",
]

READOUT_FORMAT = "fiq-gym-posterior-readout"
#: The readout fitted on the synthetic catalog of seed 1 (20,000 items, the attribute network's
#: training catalog), for catalogs with the shipped features; made by
#: ``python -m fiq_gym.agents.posterior fit --size 20000 --seed 1 --out <this file> --overwrite``.
DEFAULT_READOUT = Path(__file__).resolve().parent / "posterior_default" / "readout.json"
POLICIES = ("map", "lookahead")
#: The look-ahead's budget per dialog and turn (see :class:`PosteriorAgent`): candidate displays
#: scored, targets drawn from the belief, and the most probable items a caption is read over.
LOOKAHEAD_CANDIDATES = 6
LOOKAHEAD_SAMPLES = 24
LOOKAHEAD_SUPPORT = 256
#: The likelihood's floor for an agent that predicts attributes (0 with the labels): keeps a
#: target whose attributes were mispredicted (about 0.1% of items) from being ruled out.
PREDICTED_FLOOR = 1e-4


# --- what the rules need and agents do not see ------------------------------------------------


def _inputs(gallery: Gallery) -> np.ndarray:
    """The readout's inputs: gallery features, predicted attribute scores and a constant."""
    n = gallery.num_items
    return np.hstack([gallery.features, gallery.side_info, np.ones((n, 1), dtype=np.float32)]).astype(
        np.float64
    )


def _type_codes(scores: np.ndarray, vocabulary: AttributeVocabulary) -> np.ndarray:
    """(N, T) the most probable value of each attribute type, from attribute scores."""
    return np.stack(
        [np.argmax(scores[:, vocabulary.slice(t.name)], axis=1) for t in vocabulary.types], axis=1
    ).astype(np.int16)


@dataclass(frozen=True)
class Readout:
    """Linear readouts from gallery features and predicted attribute scores to each item's
    category and (per predicted colour) luma, with the luma's held-out error per colour."""

    category_names: tuple[str, ...]
    category_weights: np.ndarray  # (X, C)
    luma_weights: np.ndarray  # (colours, X)
    luma_std: np.ndarray  # (colours,)
    feature_dim: int
    attribute_dim: int
    fitted_on: dict[str, Any]

    def beliefs(self, gallery: Gallery, vocabulary: AttributeVocabulary) -> ItemAttributes:
        """What an agent believes of the gallery's items."""
        if gallery.feature_dim != self.feature_dim or gallery.side_info.shape[1] != self.attribute_dim:
            raise ValueError(
                f"this posterior readout was fitted for {self.feature_dim} features and {self.attribute_dim} "
                f"attribute scores, the env has {gallery.feature_dim} and {gallery.side_info.shape[1]}; fit one "
                "on a labelled training catalog with these features (fit_readout; for synthetic catalogs "
                "`python -m fiq_gym.agents.posterior fit --out FILE`)"
            )
        x = _inputs(gallery)
        codes = _type_codes(gallery.side_info, vocabulary)
        color = vocabulary.type_names.index("color")
        luma = np.einsum("nx,nx->n", x, self.luma_weights[codes[:, color]])
        return ItemAttributes(
            codes=codes,
            categories=np.argmax(x @ self.category_weights, axis=1).astype(np.int16),
            luma=luma.astype(np.float32),
            luma_std=self.luma_std[codes[:, color]],
        )

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the readout as JSON, atomically; an existing file is replaced only with
        ``overwrite``."""
        if Path(path).exists() and not overwrite:
            raise FileExistsError(
                f"{path} already exists; choose another file or pass overwrite=True (--overwrite)"
            )
        record = {
            "format": READOUT_FORMAT,
            "version": 1,
            "category_names": list(self.category_names),
            "feature_dim": self.feature_dim,
            "attribute_dim": self.attribute_dim,
            "category_weights": self.category_weights.tolist(),
            "luma_weights": self.luma_weights.tolist(),
            "luma_std": self.luma_std.tolist(),
            "fitted_on": self.fitted_on,
        }
        atomic_write_text(Path(path), json.dumps(record) + "\n")
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike = DEFAULT_READOUT) -> Readout:
        path = Path(path)
        fix = "fit one with `python -m fiq_gym.agents.posterior fit --out FILE`"
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CheckpointError(f"no posterior readout at {path}; {fix}") from None
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{path} is not a readable posterior readout ({e}); {fix}") from None
        if (
            not isinstance(record, dict)
            or record.get("format") != READOUT_FORMAT
            or record.get("version") != 1
        ):
            raise CheckpointError(
                f"{path} is not a posterior readout (format {READOUT_FORMAT}, version 1); {fix}"
            )
        try:
            return cls(
                category_names=tuple(record["category_names"]),
                category_weights=np.asarray(record["category_weights"], dtype=np.float64),
                luma_weights=np.asarray(record["luma_weights"], dtype=np.float64),
                luma_std=np.asarray(record["luma_std"], dtype=np.float64),
                feature_dim=int(record["feature_dim"]),
                attribute_dim=int(record["attribute_dim"]),
                fitted_on=dict(record.get("fitted_on", {})),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{path} is a damaged posterior readout ({e!r}); {fix}") from None


def fit_readout(catalog: Catalog, ridge: float = 1.0, heldout: float = 0.2, seed: int = 0) -> Readout:
    """Fit a :class:`Readout` on a *training* catalog's labels (categories and the rendered
    colours' luma): ridge regression to the one-hot category, and per colour from the inputs
    to the luma; the luma's error per colour is measured on a held-out ``heldout`` share."""
    if catalog.primary_rgb is None or catalog.features is None or catalog.attribute_scores is None:
        raise ValueError(
            "fitting a readout needs a catalog with rendered colours, features and attribute scores"
        )
    gallery = gallery_of(catalog, side_info="predicted")
    x = _inputs(gallery)
    vocabulary = catalog.vocabulary
    color = vocabulary.type_names.index("color")
    colors = np.asarray(catalog.attribute_codes()[:, color])
    luma = np.asarray(catalog.primary_rgb, dtype=np.float64) @ np.asarray(LUMA_WEIGHTS, dtype=np.float64)
    categories = np.asarray(catalog.categories)
    eye = ridge * np.eye(x.shape[1])
    category_weights = np.linalg.solve(x.T @ x + eye, x.T @ np.eye(len(catalog.category_names))[categories])
    test = np.random.default_rng(seed).random(len(catalog)) < heldout
    num_colors = len(vocabulary.types[color].values)
    # one map for all colours, then one per colour where there are enough items to fit it
    pooled = np.linalg.solve(x[~test].T @ x[~test] + eye, x[~test].T @ luma[~test])
    luma_weights = np.tile(pooled, (num_colors, 1))
    for c in range(num_colors):
        fit = (colors == c) & ~test
        if fit.sum() >= 2 * x.shape[1]:
            luma_weights[c] = np.linalg.solve(x[fit].T @ x[fit] + eye, x[fit].T @ luma[fit])
    error = np.einsum("nx,nx->n", x, luma_weights[colors]) - luma
    overall = float(np.sqrt(np.mean(error[test] ** 2)))
    luma_std = np.array(
        [
            float(np.sqrt(np.mean(error[test & (colors == c)] ** 2)))
            if (test & (colors == c)).sum() >= 10
            else overall
            for c in range(num_colors)
        ]
    )
    accuracy = float(np.mean(np.argmax(x[test] @ category_weights, axis=1) == categories[test]))
    return Readout(
        category_names=tuple(catalog.category_names),
        category_weights=category_weights,
        luma_weights=luma_weights,
        luma_std=luma_std,
        feature_dim=gallery.feature_dim,
        attribute_dim=int(gallery.side_info.shape[1]),
        fitted_on={
            "catalog": catalog.provenance.get("name") or catalog.provenance.get("path"),
            "items": len(catalog),
            "seed": catalog.provenance.get("seed"),
            "heldout_category_accuracy": accuracy,
            "heldout_luma_rmse": float(
                np.sqrt(np.mean((np.einsum("nx,nx->n", x, luma_weights[colors]) - luma)[test] ** 2))
            ),
        },
    )


def label_beliefs(catalog: Catalog, gallery: Gallery) -> ItemAttributes:
    """What the shopper itself knows of the items in play (labels, categories, rendered luma):
    the reference that measures what predicting them costs, not an evaluable agent's input."""
    rows = gallery.rows
    rgb = None if catalog.primary_rgb is None else np.asarray(catalog.primary_rgb, dtype=np.float32)[rows]
    return ItemAttributes(
        codes=np.asarray(catalog.attribute_codes())[rows],
        categories=np.asarray(catalog.categories)[rows],
        luma=None if rgb is None else rgb @ np.asarray(LUMA_WEIGHTS, dtype=np.float32),
    )


# --- the agent ---------------------------------------------------------------------------------


class PosteriorAgent:
    """Batched :class:`~fiq_gym.envs.evaluation.RetrievalAgent` keeping one log-belief per dialog
    over the items in play (see the module docstring).

    Policies:

    * ``"map"``: show the most probable item not shown yet (in ``shortlist`` mode: the most
      probable candidate offered);
    * ``"lookahead"``: a one-step expected-success planner. For each of a few candidate displays
      ``s`` (the :data:`LOOKAHEAD_CANDIDATES` most probable unseen items, or the candidates
      offered) it scores ``P(t = s) + P(t != s) * E[max_t' P(t' | caption about s)]``: the chance
      of finding the target now, or, through what the shopper would answer about ``s``, at the
      next turn with ``map``. The expectation is a Monte Carlo average over
      :data:`LOOKAHEAD_SAMPLES` targets drawn from the belief (the same draws for every
      candidate), each captioned by the shopper's own rules applied to what the agent believes
      of the items (:meth:`~fiq_gym.users.template.TemplateUser.imagining`), and read back
      with the likelihood over the :data:`LOOKAHEAD_SUPPORT` most probable items. At the last
      turn there is nothing left to learn, and it shows what ``map`` shows.

    Args:
        likelihood: the shopper's likelihood (its settings must be the env's shopper's).
        items: what the agent believes of the items in play.
        action_mode: ``"index"`` or ``"shortlist"`` (candidates from ``info["candidates"]``).
        policy: ``"map"`` or ``"lookahead"``.
        shopper: for ``"lookahead"``: the shopper imagining ``items``
            (``user.imagining(items.codes, items.categories, items.luma)``).
        max_turns: the env's turns per dialog (``"lookahead"`` plays ``map`` at the last).
        seed: seeds the look-ahead's draws, so an evaluation is reproducible.
    """

    def __init__(
        self,
        likelihood: TemplateLikelihood,
        items: ItemAttributes,
        action_mode: str,
        policy: str = "map",
        *,
        shopper: TemplateUser | None = None,
        max_turns: int = 5,
        seed: int = 0,
    ) -> None:
        if action_mode not in ("index", "shortlist"):
            raise ValueError(
                f"the posterior agent plays action modes 'index' and 'shortlist', got {action_mode!r}"
            )
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {list(POLICIES)}, got {policy!r}")
        if policy == "lookahead" and (shopper is None or shopper.num_items != len(items)):
            raise ValueError(
                "policy 'lookahead' needs shopper=user.imagining(items.codes, items.categories, items.luma): "
                "the shopper's rules applied to what the agent believes of the items"
            )
        self.likelihood = likelihood
        self.items = items
        self.action_mode = action_mode
        self.policy = policy
        self.shopper = shopper
        self.max_turns = int(max_turns)
        self._rng = np.random.default_rng(seed)
        self.log_belief = np.zeros((0, len(items)))
        self._seen = np.zeros((0, len(items)), dtype=bool)
        self._turns = np.zeros(0, dtype=np.int64)

    def _resize(self, b: int) -> None:
        if len(self.log_belief) != b:
            self.log_belief = np.zeros((b, len(self.items)))
            self._seen = np.zeros((b, len(self.items)), dtype=bool)
            self._turns = np.full(b, -1, dtype=np.int64)

    def belief(self, row: int) -> np.ndarray:
        """(N,) dialog ``row``'s posterior over the items in play (sums to one)."""
        logs = self.log_belief[row]
        p = np.exp(logs - logs.max())
        return p / p.sum()

    def _observe(self, info: dict[str, Any]) -> None:
        """Fold each dialog's new caption into its belief (once per dialog and turn)."""
        shown, turn, texts = dialog_turns(info, "posterior agent")
        self._resize(len(shown))
        for k in range(len(shown)):
            if turn[k] == 0 and self._turns[k] != 0:  # a new dialog (reset or autoreset)
                self.log_belief[k] = 0.0
                self._seen[k] = False
                self._turns[k] = -1
            if turn[k] == self._turns[k]:
                continue
            self._turns[k] = turn[k]
            s = int(shown[k])
            self._seen[k, s] = True
            with np.errstate(divide="ignore"):
                self.log_belief[k] += np.log(self.likelihood.likelihood(str(texts[k]), self.items, s))
            self.log_belief[k] -= self.log_belief[k].max()

    def reset(self, observation: dict[str, np.ndarray], info: dict[str, Any], mask: np.ndarray) -> None:
        self._resize(len(mask))
        self._turns[np.asarray(mask, dtype=bool)] = -1
        self.log_belief[np.asarray(mask, dtype=bool)] = 0.0
        self._seen[np.asarray(mask, dtype=bool)] = False
        self._observe(info)

    def act(self, observation: dict[str, np.ndarray], info: dict[str, Any]) -> np.ndarray:
        self._observe(info)
        if self.action_mode == "shortlist":
            candidates = np.atleast_2d(info["candidates"])
            offered = np.atleast_2d(observation["candidate_mask"]) > 0
            scores = np.take_along_axis(self.log_belief, np.clip(candidates, 0, None), axis=1)
            actions = np.argmax(np.where(offered, scores, -np.inf), axis=1).astype(np.int64)
        else:
            actions = np.argmax(np.where(self._seen, -np.inf, self.log_belief), axis=1).astype(np.int64)
        if self.policy == "lookahead":
            for k in range(len(actions)):
                if self._turns[k] + 1 >= self.max_turns:  # the last display: play map
                    continue
                if self.action_mode == "shortlist":
                    positions = np.flatnonzero(offered[k])
                    if len(positions) > 1:
                        actions[k] = positions[self._plan(k, candidates[k, positions])]
                else:
                    actions[k] = self._plan(k, None)
        return actions

    # --- the look-ahead ------------------------------------------------------------------------
    def _plan(self, row: int, offered: np.ndarray | None) -> int:
        """The look-ahead's choice for dialog ``row``: an item (index mode) or a position in
        ``offered`` (shortlist mode)."""
        assert self.shopper is not None
        p = self.belief(row)
        p[self._seen[row]] = 0.0
        if not p.sum() > 0:  # a finished dialog (its target was shown): nothing to plan
            return 0 if offered is not None else int(np.argmax(np.where(self._seen[row], -np.inf, p)))
        p /= p.sum()
        n = len(p)
        support = (
            np.argpartition(-p, LOOKAHEAD_SUPPORT)[:LOOKAHEAD_SUPPORT]
            if n > LOOKAHEAD_SUPPORT
            else np.arange(n)
        )
        choices = offered
        if choices is None:
            width = min(LOOKAHEAD_CANDIDATES, int((p > 0).sum()))
            choices = support[np.argsort(-p[support], kind="stable")[:width]]
        mass = p[support]
        targets = self._rng.choice(support, size=LOOKAHEAD_SAMPLES, p=mass / mass.sum())
        left = self.max_turns - int(self._turns[row])  # displays left, this one included
        values = np.array([self._display_value(s, p, support, targets, left) for s in choices.tolist()])
        best = int(np.argmax(values))
        return best if offered is not None else int(choices[best])

    def _display_value(
        self, shown: int, p: np.ndarray, support: np.ndarray, targets: np.ndarray, left: int
    ) -> float:
        """The expected number of the ``left`` remaining turns by which the target is found, if
        ``shown`` is shown now and ``map`` next: ``left * P(t = shown) + (left - 1) * P(t !=
        shown) * E[the next turn's map success | the caption about shown]`` (the turns after
        next count only what the next one finds: a lower bound)."""
        assert self.shopper is not None
        others = targets[targets != shown]
        if len(others) == 0:
            return left * float(p[shown])
        captions = self.shopper.describe(others, np.full(len(others), shown), self._rng).texts
        rows = np.append(support, shown)
        items = self.items
        local = ItemAttributes(
            codes=items.codes[rows],
            categories=items.categories[rows],
            luma=None if items.luma is None else items.luma[rows],
            luma_std=None if items.luma_std is None else items.luma_std[rows],
        )
        prior = np.where(support == shown, 0.0, p[support])
        found: dict[tuple[object, ...], float] = {}  # captions that read alike count once
        total = 0.0
        for text in captions:
            reading = self.likelihood.read(text)
            key = self.likelihood.reading_key(reading)
            if key not in found:
                posterior = prior * self.likelihood.likelihood(reading, local, len(support))[:-1]
                norm = float(posterior.sum())
                found[key] = float(posterior.max()) / norm if norm > 0 else 0.0
            total += found[key]
        return left * float(p[shown]) + (left - 1) * (1.0 - float(p[shown])) * total / len(others)


def reader_parts(
    env: gym.Env | gym.vector.VectorEnv,
    *,
    beliefs: str = "predicted",
    readout: str | os.PathLike | Readout = DEFAULT_READOUT,
    rules: TemplateUser | None = None,
    floor: float | None = None,
) -> tuple[TemplateLikelihood, ItemAttributes, TemplateUser]:
    """What a reader of ``env``'s captions needs, whatever it shows: the shopper's caption
    likelihood, the reader's beliefs about the items in play and the template shopper whose
    rules it reads by (arguments as :func:`posterior_agent`'s)."""
    inner = inner_env(env)
    user = rules if rules is not None else inner.user
    if not isinstance(user, TemplateUser):
        raise ValueError(
            f"the posterior agent reads captions by a template shopper's rules; this env's shopper is a "
            f"{type(user).__name__}: make the env with user='template', or pass rules=TemplateUser(catalog) "
            "to read its captions as the noise-free template shopper's (what the learned shopper imitates)"
        )
    catalog, gallery = inner.catalog, inner.gallery
    if beliefs == "labels":
        items, default_floor = label_beliefs(catalog, gallery), 0.0
    elif beliefs == "predicted":
        loaded = readout if isinstance(readout, Readout) else Readout.load(readout)
        items, default_floor = loaded.beliefs(gallery, catalog.vocabulary), PREDICTED_FLOOR
    else:
        raise ValueError(f"beliefs must be 'predicted' or 'labels', got {beliefs!r}")
    likelihood = TemplateLikelihood(
        catalog.vocabulary,
        catalog.category_names,
        noise=user.noise,
        max_differences=user.max_differences,
        shade_threshold=user.shade_threshold,
        floor=default_floor if floor is None else floor,
    )
    return likelihood, items, user


def posterior_agent(
    env: gym.Env | gym.vector.VectorEnv,
    policy: str = "map",
    *,
    beliefs: str = "predicted",
    readout: str | os.PathLike | Readout = DEFAULT_READOUT,
    seed: int = 0,
    rules: TemplateUser | None = None,
    floor: float | None = None,
) -> PosteriorAgent:
    """The posterior agent for ``env`` (its template shopper's settings, its action mode).

    Args:
        policy: ``"map"`` or ``"lookahead"`` (see :class:`PosteriorAgent`; ``seed`` seeds the
            look-ahead's draws).
        beliefs: ``"predicted"`` (what agents see, through ``readout``) or ``"labels"`` (the
            catalog's labels: a reference measurement, not an evaluable agent).
        rules: the template shopper whose rules read the captions; default the env's own, which
            must then be a :class:`~fiq_gym.users.template.TemplateUser`. For the learned
            shopper pass ``TemplateUser(catalog)``: it was trained to imitate the noise-free
            template shopper, and what it says beyond those rules falls to the floor.
        floor: the likelihood's floor (default: 1e-4 with predicted beliefs, 0 with labels).
    """
    inner = inner_env(env)
    likelihood, items, user = reader_parts(env, beliefs=beliefs, readout=readout, rules=rules, floor=floor)
    shopper = user.imagining(items.codes, items.categories, items.luma) if policy == "lookahead" else None
    return PosteriorAgent(
        likelihood,
        items,
        inner.config.action_mode,
        policy,
        shopper=shopper,
        max_turns=inner.config.max_turns,
        seed=seed,
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m fiq_gym.agents.posterior fit --size 20000 --seed 1 --out FILE``: fit a
    readout on a synthetic training catalog (built into the cache like the default one)."""
    import argparse

    from fiq_gym.default_catalog import load_default_catalog

    parser = argparse.ArgumentParser(prog="python -m fiq_gym.agents.posterior")
    sub = parser.add_subparsers(dest="command", required=True)
    fit = sub.add_parser("fit", help="fit a readout on a synthetic training catalog's labels")
    fit.add_argument("--size", type=int, default=20_000)
    fit.add_argument("--seed", type=int, default=1)
    fit.add_argument("--out", required=True, help="the readout file to write (JSON)")
    fit.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    args = parser.parse_args(argv)
    if Path(args.out).exists() and not args.overwrite:
        parser.error(f"{args.out} already exists; choose another file or pass --overwrite")
    catalog = load_default_catalog(size=args.size, seed=args.seed)
    readout = fit_readout(catalog)
    readout.fitted_on["command"] = (
        f"python -m fiq_gym.agents.posterior fit --size {args.size} --seed {args.seed}"
    )
    readout.save(args.out, overwrite=args.overwrite)
    print(f"wrote {args.out}: {json.dumps(readout.fitted_on)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
