"""Package attributes imported on first use (PEP 562), so ``reslab --help`` does not load torch."""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Mapping, Sequence
from typing import Any


class LazyPackage(types.ModuleType):
    """A package whose exported names are imported from their submodules when first read."""

    _lazy_where: dict[str, str]

    def __getattr__(self, name: str) -> Any:
        where = self.__dict__.get("_lazy_where", {})
        if name not in where:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(where[name], self.__name__), name)
        self.__dict__[name] = value  # later look-ups are plain attribute reads
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        # Importing submodule ``build`` sets the package's ``build``: keep the exported function of that name.
        if isinstance(value, types.ModuleType) and name in self.__dict__.get("_lazy_where", {}):
            return
        super().__setattr__(name, value)

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self.__dict__.get("_lazy_where", {})))


def lazy_exports(package: str, exports: Mapping[str, Sequence[str]]) -> None:
    """Make ``package`` import ``exports`` (relative submodule -> names) on first use."""
    module = sys.modules[package]
    module.__dict__["_lazy_where"] = {name: sub for sub, names in exports.items() for name in names}
    module.__class__ = LazyPackage
