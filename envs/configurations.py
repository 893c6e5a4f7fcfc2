"""Named environment configurations: which catalog and which shopper settings an env id uses.

A configuration fills in what a caller leaves at its default: the catalog when ``catalog`` is
None, and the template shopper's settings when ``user="template"`` comes without
``user_kwargs``. Anything passed explicitly wins, so every trainer's ``--catalog`` and
``--user`` flags still work on a configuration's id. Registered ids fix ``configuration=``
(see :mod:`fiq_gym.envs.registration`); every configuration also works on the base id, e.g.
``gym.make("fiq_gym/FashionIQ-v3", configuration="terse")``.

The candidates and the measurements that chose the registered ones are in
``benchmarks/results/configurations.md`` (``python -m fiq_gym.benchmarks.configurations``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from fiq_gym.catalog.model import Catalog
from fiq_gym.users.base import User

__all__ = ["CONFIGURATIONS", "Configuration", "apply_configuration"]


@dataclass(frozen=True)
class Configuration:
    """One named configuration.

    Attributes:
        name: the name ``configuration=`` takes.
        summary: one line for tables and docstrings.
        catalog: the catalog when the caller passes none (a ``"synthetic:SIZE[:SEED]"`` spec,
            so it builds the same on any machine), or None for the default catalog.
        template: the template shopper's keyword arguments (``noise`` as a dict of
            :class:`~fiq_gym.users.TemplateNoise` fields, ``max_differences``) when the caller
            asks for ``user="template"`` without ``user_kwargs``.
    """

    name: str
    summary: str
    catalog: str | None = None
    template: dict[str, Any] = field(default_factory=dict)


# The terse shopper's noise: wrong colour words and dropped words at rates of the order that
# crowd-sourced relative captions show (Fashion IQ reports short, often partial captions).
_TERSE = {"max_differences": 1, "noise": {"wrong_color": 0.1, "drop_word": 0.15}}

CONFIGURATIONS: dict[str, Configuration] = {
    c.name: c
    for c in (
        Configuration("default", "10,000 items, perfect template shopper (up to 3 differences a turn)"),
        Configuration("100k", "100,000 items, perfect template shopper", catalog="synthetic:100000"),
        Configuration(
            "terse",
            "10,000 items, terse noisy shopper (1 difference a turn, 10% wrong colours, 15% dropped words)",
            template=_TERSE,
        ),
        Configuration(
            "terse-100k",
            "100,000 items, terse noisy shopper (1 difference a turn, 10% wrong colours, 15% dropped words)",
            catalog="synthetic:100000",
            template=_TERSE,
        ),
    )
}


def apply_configuration(
    name: str,
    catalog: Catalog | str | os.PathLike | None,
    user: str | User,
    user_kwargs: dict[str, Any] | None,
) -> tuple[Catalog | str | os.PathLike | None, dict[str, Any] | None]:
    """``(catalog, user_kwargs)`` with configuration ``name``'s defaults filled in."""
    configuration = CONFIGURATIONS.get(name)
    if configuration is None:
        raise ValueError(
            f"unknown configuration {name!r}; choose one of {sorted(CONFIGURATIONS)} "
            "(benchmarks/results/configurations.md describes them)"
        )
    if catalog is None:
        catalog = configuration.catalog
    if user_kwargs is None and user == "template" and configuration.template:
        user_kwargs = dict(configuration.template)
    return catalog, user_kwargs
