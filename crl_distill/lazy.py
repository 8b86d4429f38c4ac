"""The one way a stage package defers its heavy modules: `__getattr__ = lazy_exports(...)`.

A stage's settings (`teacher.config`, `distill.config`) import without JAX, because the CLI
reads their defaults when it starts; the training, distillation and export code imports JAX
and loads on first use of a name.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, names: dict[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` that imports `package.<names[name]>` on first use of `name`."""

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{names[name]}"), name)

    return __getattr__
