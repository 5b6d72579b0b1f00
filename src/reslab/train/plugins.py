"""Config sections served by packages above the engine (``resbuilder``, ``analysis``, ``distill``), and the
hooks they ask for: the one place, shared by ``reslab train`` and ``reslab build``, that connects the two.

Each package declares its own section: the module ``PLUGIN_SECTIONS`` names for it defines ``SECTION``, a
dataclass of ``option(default, check, doc)`` fields (``reslab.schema``), and ``make_hook(settings,
config) -> Hook | list[Hook]``. The config loader validates the section against ``SECTION`` like its own ones
(unknown keys and bad values are ``ConfigError``s naming the key), ``--help-config`` lists it, and
``Config.plugins`` holds the typed settings. The module is imported only when a config has its section (or
the schema is described), by name: the engine never imports a plug-in, and a config read without the CLI
still knows every section.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING

from ..schema import ConfigError

if TYPE_CHECKING:  # config.py imports this module
    from .config import Config
    from .hooks import Hook

# Section -> the module that declares it (``SECTION``) and turns it into hooks (``make_hook``).
PLUGIN_SECTIONS: dict[str, str] = {
    "resbuilder": "reslab.builder",
    "analysis": "reslab.analysis",
    "distill": "reslab.deploy.distill",
}


def plugin_module(section: str) -> ModuleType:
    module_name = PLUGIN_SECTIONS[section]
    try:
        return importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"{section}: this section needs {module_name}, which cannot be imported ({err})") from None


def section_type(section: str) -> type:
    """The dataclass that declares ``section`` (its package's ``SECTION``)."""
    cls = getattr(plugin_module(section), "SECTION", None)
    if cls is None:
        raise ConfigError(f"{section}: {PLUGIN_SECTIONS[section]} does not declare the section (SECTION) in this "
                          f"version of reslab")
    return cls


def extra_hooks(config: Config) -> list[Hook]:
    """Hooks from the plug-in sections present in ``config``."""
    hooks: list[Hook] = []
    for section, settings in config.plugins.items():
        make_hook = getattr(plugin_module(section), "make_hook", None)
        if make_hook is None:
            raise ConfigError(f"{section}: {PLUGIN_SECTIONS[section]} does not provide make_hook(settings, "
                              f"config) in this version of reslab")
        made = make_hook(settings, config)
        hooks.extend(made if isinstance(made, list | tuple) else [made])
    return hooks


__all__ = ["PLUGIN_SECTIONS", "extra_hooks", "section_type"]
