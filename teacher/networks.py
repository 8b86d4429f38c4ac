"""The one residual MLP used by the actor, phi(s, a) and psi(g).

    input Dense -> LayerNorm -> act -> depth/4 x [ 4 x (Dense -> LayerNorm -> act) + skip ] -> Dense

"Depth" counts the Dense layers inside the residual blocks. The blocks are one `nn.scan` over
parameters stacked on a leading axis of size depth/4, so the traced program (and XLA compile
time) is the same size at depth 4 and depth 1000.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from crl_distill.teacher.config import NetConfig

ACTIVATIONS = {"swish": nn.swish, "relu": nn.relu}
LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0
# Deeper nets trace as one lax.scan over blocks (one ONNX Loop). Up to here the forward is
# unrolled: with native LayerNormalization it runs ~3x faster in onnxruntime (depth 1000: 28 vs
# 96 ms at batch 1) at the cost of a longer export (65 vs 12 s).
UNROLL_MAX_DEPTH = 1024


def deterministic_policy(head: nn.Module, params: Any) -> Callable[[jax.Array], jax.Array]:
    """The deployed policy of any (mean, log_std) head (teacher actor or student): a jittable
    obs [B, O] -> tanh(mean) [B, A]. The one place the deterministic action is written."""
    return lambda obs: jnp.tanh(head.apply(params, obs)[0])


def squash_log_std(raw: jax.Array) -> jax.Array:
    """Map a raw policy head into [LOG_STD_MIN, LOG_STD_MAX] with tanh (teacher and students)."""
    return LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (jnp.tanh(raw) + 1.0)


def _dense(features: int, dtype: Any, name: str | None = None, scale: float = 1 / 3) -> nn.Dense:
    # Uniform fan-in init with variance scale 1/3, as in the paper's public code.
    init = nn.initializers.variance_scaling(scale, "fan_in", "uniform")
    return nn.Dense(features, dtype=dtype, param_dtype=jnp.float32, name=name, kernel_init=init)


def head_init_scale(n_blocks: int) -> float:
    """Variance scale of the output Dense after `n_blocks` residual blocks.

    Each block adds an O(1) term to the residual stream, so its variance grows with depth; at
    depth 64 an unscaled head starts the actor's pre-tanh outputs at std 2.8, and the policy
    collapses to log_std = -5 within one epoch (entropy -14 against a target of -1, measured).
    Dividing by (1 + n_blocks) keeps the initial outputs O(0.3) at every depth.
    """
    return (1 / 3) / (1 + n_blocks)


LN_EPSILON = 1e-6  # flax's LayerNorm default, which `apply_unrolled` (the export) uses


@jax.custom_vjp
def _layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array) -> jax.Array:
    return _layer_norm_fwd(x, scale, bias)[0]


def _layer_norm_fwd(x, scale, bias):
    # flax's statistics: one pass, var = E[x^2] - E[x]^2 clipped at 0
    mean = jnp.mean(x, -1, keepdims=True)
    var = jnp.maximum(0.0, jnp.mean(x * x, -1, keepdims=True) - mean * mean)
    inv = jax.lax.rsqrt(var + LN_EPSILON)
    xhat = (x - mean) * inv
    return xhat * scale + bias, (xhat, inv, scale)


def _layer_norm_bwd(res, dy):
    # The closed-form gradient: two row means instead of autodiff's chain through mean, var and
    # rsqrt; the CPU SGD step at depth 4 compiles to 643 instead of 723 fusions (LayerNorm was
    # ~20% of that step: benchmarks/sgd_roofline.py).
    xhat, inv, scale = res
    g = dy * scale
    dx = inv * (g - jnp.mean(g, -1, keepdims=True) - xhat * jnp.mean(g * xhat, -1, keepdims=True))
    batch_axes = tuple(range(dy.ndim - 1))
    return dx, jnp.sum(dy * xhat, batch_axes), jnp.sum(dy, batch_axes)


_layer_norm.defvjp(_layer_norm_fwd, _layer_norm_bwd)


class LayerNorm(nn.Module):
    """flax's `nn.LayerNorm` over the last axis (same parameters, statistics in float32, output
    in `dtype`) with a hand-written backward pass; the training networks use it, the export
    (`apply_unrolled`) keeps flax's, which maps to ONNX LayerNormalization."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = (x.shape[-1],)
        scale = self.param("scale", nn.initializers.ones, features, jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, features, jnp.float32)
        stats_dtype = jnp.promote_types(x.dtype, jnp.float32)
        return _layer_norm(x.astype(stats_dtype), scale, bias).astype(self.dtype)


class _Block(nn.Module):
    """layers_per_block x (Dense -> LayerNorm -> act) with an optional skip; a scan body."""

    cfg: NetConfig

    @nn.compact
    def __call__(self, x: jax.Array, _: Any) -> tuple[jax.Array, None]:
        cfg, dtype = self.cfg, jnp.dtype(self.cfg.dtype)
        act = ACTIVATIONS[cfg.activation]
        h = x
        for i in range(cfg.layers_per_block):
            h = _dense(cfg.width, dtype, name=f"dense_{i}")(h)
            if cfg.layer_norm:
                h = LayerNorm(dtype=dtype, name=f"norm_{i}")(h)
            h = act(h)
        return (x + h if cfg.residual else h), None


class ResidualMLP(nn.Module):
    """[..., in] -> [..., out_dim]; parameters: input, blocks (stacked [depth/4, ...]), output."""

    cfg: NetConfig
    out_dim: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg, dtype = self.cfg, jnp.dtype(self.cfg.dtype)
        act = ACTIVATIONS[cfg.activation]
        h = _dense(cfg.width, dtype, name="input")(x)
        if cfg.layer_norm:
            h = LayerNorm(dtype=dtype, name="input_norm")(h)
        h = act(h)
        n_blocks = cfg.depth // cfg.layers_per_block
        if n_blocks:
            block = nn.remat(_Block, prevent_cse=False) if cfg.remat else _Block
            blocks = nn.scan(
                block,
                variable_axes={"params": 0},
                split_rngs={"params": True},
                length=n_blocks,
            )(cfg, name="blocks")
            h, _ = blocks(h, None)
        head = _dense(self.out_dim, jnp.float32, name="output", scale=head_init_scale(n_blocks))
        return head(h.astype(jnp.float32))


def param_count(cfg: NetConfig, in_dim: int, out_dim: int) -> int:
    """Closed-form parameter count of `ResidualMLP(cfg, out_dim)` on inputs of size `in_dim`."""
    w, ln = cfg.width, 2 * cfg.width if cfg.layer_norm else 0
    hidden = cfg.depth * (w * w + w + ln)
    return (in_dim * w + w + ln) + hidden + (w * out_dim + out_dim)


def apply_unrolled(cfg: NetConfig, params: Any, x: jax.Array, scan: bool = False) -> jax.Array:
    """Reference forward pass over the stacked block parameters, without flax's `nn.scan`.

    `scan=False` loops over blocks in Python (tests; small ONNX graphs); `scan=True` runs one
    `lax.scan`, which jax2onnx exports as a single ONNX Loop, so deep exports stay small and
    fast. Both trace with a symbolic batch dimension, which `nn.scan` cannot.
    """
    dtype = jnp.dtype(cfg.dtype)
    act = ACTIVATIONS[cfg.activation]

    def dense(p, h):
        return h.astype(dtype) @ p["kernel"].astype(dtype) + p["bias"].astype(dtype)

    def norm(p, h):
        return nn.LayerNorm(dtype=dtype, param_dtype=jnp.float32).apply({"params": p}, h)

    def block(h, bp):
        g = h
        for i in range(cfg.layers_per_block):
            g = dense(bp[f"dense_{i}"], g)
            if cfg.layer_norm:
                g = norm(bp[f"norm_{i}"], g)
            g = act(g)
        return (h + g if cfg.residual else g), None

    h = dense(params["input"], x)
    if cfg.layer_norm:
        h = norm(params["input_norm"], h)
    h = act(h)
    n_blocks = cfg.depth // cfg.layers_per_block
    if n_blocks and scan:
        h, _ = jax.lax.scan(block, h, params["blocks"])
    else:
        for b in range(n_blocks):
            h, _ = block(h, jax.tree_util.tree_map(lambda a, b=b: a[b], params["blocks"]))
    out = params["output"]
    return h.astype(jnp.float32) @ out["kernel"] + out["bias"]


def traceable_apply(cfg: NetConfig, module_params: Any) -> Callable[[jax.Array], jax.Array]:
    """`ResidualMLP(cfg)` with flax parameters {"params": ...} as a function of its input that
    traces with a symbolic batch (`apply_unrolled`; one Loop past `UNROLL_MAX_DEPTH`)."""
    return lambda x: apply_unrolled(cfg, module_params["params"], x,
                                    scan=cfg.depth > UNROLL_MAX_DEPTH)
