"""Stage 2: distill a deep teacher into shallow students (DAgger or offline).

>>> from crl_distill.distill import distill, DistillConfig
>>> result = distill("runs/pm", students="2x64,2x256", config=DistillConfig(iterations=6))
>>> result.report["students"][0]["retention"]

`DistillConfig` imports without JAX (the CLI reads its defaults); the rest loads on first use.
"""

from __future__ import annotations

from crl_distill.distill.config import DistillConfig
from crl_distill.lazy import lazy_exports

__getattr__ = lazy_exports(__name__, {"Distiller": "dagger", "DistillResult": "run",
                                      "distill": "run"})

__all__ = ["DistillConfig", "DistillResult", "Distiller", "distill"]
