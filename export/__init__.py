"""Stage 3: ONNX export with parity gates.

>>> from crl_distill.export import export
>>> result = export("runs/pm/students", out="policy.onnx")   # gates run on every export
"""

from crl_distill.export.onnx_export import (
    Exportable,
    ExportResult,
    GateError,
    export,
    resolve,
    run_gates,
)

__all__ = ["ExportResult", "Exportable", "GateError", "export", "resolve", "run_gates"]
