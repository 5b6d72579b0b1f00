"""Hooks from a config's optional sections (``resbuilder``, ``analysis``): the one place that turns them
into plug-ins, shared by ``reslab train`` and ``reslab build``.

A section listed in ``reslab.train.config.EXTRA_SECTIONS`` names the module that serves it; that module is
imported only when a config has the section, and its ``make_hook(section: dict, config: Config) -> Hook |
list[Hook]`` supplies the hooks. The engine takes the hooks it is given and never imports a plug-in.
"""

from __future__ import annotations

import importlib

from .config import EXTRA_SECTIONS, Config, ConfigError
from .hooks import Hook


def extra_hooks(config: Config) -> list[Hook]:
    """Hooks from the optional sections present in ``config`` (their packages are imported only then)."""
    hooks: list[Hook] = []
    for section, raw in config.extras.items():
        module_name = EXTRA_SECTIONS[section]
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise ConfigError(
                f"{section}: this section needs {module_name}, which cannot be imported ({err})"
            ) from None
        make_hook = getattr(module, "make_hook", None)
        if make_hook is None:
            raise ConfigError(
                f"{section}: {module_name} does not provide make_hook(section, config) in this "
                f"version of reslab"
            )
        made = make_hook(raw, config)
        hooks.extend(made if isinstance(made, list | tuple) else [made])
    return hooks


__all__ = ["extra_hooks"]
