"""Stage 2: distill a deep teacher into shallow students (DAgger or offline).

>>> from crl_distill.distill import distill, DistillConfig
>>> result = distill("runs/pm", students="2x64,2x256", config=DistillConfig(iterations=6))
>>> result.report["students"][0]["retention"]

`DistillConfig` imports without JAX (the CLI reads its defaults); the rest loads on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from crl_distill.distill.config import DistillConfig

_LAZY = {"Distiller": "dagger", "DistillResult": "run", "distill": "run",
         "resolve_teacher": "run", "student_set": None}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{_LAZY[name] or name}")
    return module if _LAZY[name] is None else getattr(module, name)


__all__ = ["DistillConfig", "DistillResult", "Distiller", "distill", "resolve_teacher"]
