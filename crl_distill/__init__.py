"""crl-distill: deep contrastive-RL teachers, shallow students, ONNX export.

Stages live in subpackages (`crl_distill.envs`, `.teacher`, `.distill`, `.student`, `.export`);
importing this package is cheap and does not import JAX.
"""

__version__ = "0.1.0"

from crl_distill.errors import CrlDistillError

__all__ = ["CrlDistillError", "__version__"]
