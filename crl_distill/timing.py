"""Wall-clock measurement shared by every stage (it sits below them: distillation times its
students, export times its files, and neither imports the other for it)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

SINGLE_THREAD_XLA = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def single_thread_xla_flags() -> bool:
    """Make JAX's CPU backend single-threaded (the control-loop case latency is measured for).
    XLA reads its flags when JAX loads, so this works only before `import jax` (it lives here,
    in a module that does not import JAX); returns whether it took effect."""
    if "jax" in sys.modules:
        return False
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + SINGLE_THREAD_XLA).strip()
    return True


def time_calls(fn: Callable[[Any], Any], x: Any, n: int, warmup: int = 50) -> np.ndarray:
    """Seconds per call for `n` calls of fn(x) after `warmup` calls, [n]."""
    for _ in range(warmup):
        fn(x)
    out = np.empty(n)
    for i in range(n):
        t0 = time.perf_counter()
        fn(x)
        out[i] = time.perf_counter() - t0
    return out


def percentiles_us(seconds: np.ndarray) -> dict[str, float]:
    """{"p50_us", "p99_us"} of per-call times given in seconds."""
    return {"p50_us": float(np.median(seconds) * 1e6),
            "p99_us": float(np.quantile(seconds, 0.99) * 1e6)}


__all__ = ["percentiles_us", "time_calls"]
