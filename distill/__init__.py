"""Stage 2: distill a deep teacher into shallow students (DAgger or offline).

>>> from crl_distill.distill import distill, DistillConfig
>>> result = distill("runs/pm", students="2x64,2x256", config=DistillConfig(iterations=6))
>>> result.report["students"][0]["retention"]
"""

from crl_distill.distill.dagger import DistillConfig, Distiller
from crl_distill.distill.run import DistillResult, distill, resolve_teacher

__all__ = ["DistillConfig", "DistillResult", "Distiller", "distill", "resolve_teacher"]
