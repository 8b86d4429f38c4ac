"""Stage 3: ONNX (and C99) export with parity gates.

>>> from crl_distill.export import export
>>> result = export("runs/pm/students", out="policy.onnx")   # gates run on every export
"""

from __future__ import annotations

from crl_distill.lazy import lazy_exports

__getattr__ = lazy_exports(__name__, {"ExportResult": "onnx_export", "export": "onnx_export",
                                      "GateError": "gates", "run_gates": "gates"})

__all__ = ["ExportResult", "GateError", "export", "run_gates"]
