"""fiq-gym: Gymnasium environments for dialog-based interactive fashion image retrieval.

``import fiq_gym`` registers the environment ids (``fiq_gym/FashionIQ-v3`` and the
per-category ids); see :mod:`fiq_gym.envs.registration`.
"""

__version__ = "0.2.0"

# The one upward reference of the core: registration is a table of strings and imports no
# environment code, so the layers below stay importable on their own.
from fiq_gym.envs.registration import register_envs as _register_envs

_register_envs()

__all__ = ["__version__", "configure_threads"]


def __getattr__(name: str) -> object:
    # fiq_gym.configure_threads, imported on first use: `import fiq_gym` stays free of torch.
    if name == "configure_threads":
        from fiq_gym.utils.threads import configure_threads

        return configure_threads
    raise AttributeError(f"module 'fiq_gym' has no attribute {name!r}")
