"""The one error type of ``reslab.deploy`` and the import of its optional packages."""

from __future__ import annotations

import importlib
from types import ModuleType


class DeployError(ValueError):
    """Export or quantisation cannot go on; the message names the file or value at fault."""


def require(module: str) -> ModuleType:
    """Import one of the ``deploy`` extra's packages, or say how to install them."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise DeployError(
            f"{module} is not installed ({err}); export and quantisation need it: pip install 'reslab[deploy]'"
        ) from None
