"""The training epoch lowers for CUDA on a CPU-only machine, at depth 4 and at depth 1000.

A GPU window is rare and short (benchmarks/gpu_suite.py); a lowering error found there costs
the window. `jax.export` with platforms=("cuda",) runs JAX's CUDA lowering rules here without a
GPU, so CI catches them. Depth 1000 lowers in about the time depth 4 does because the residual
blocks are one `nn.scan` (teacher/networks.py): the traced program does not grow with depth,
which the size comparison below checks.
"""

import time

import jax
import pytest

from crl_distill.envs import make
from crl_distill.teacher import configure
from crl_distill.teacher.crl import CRL

#: tiny sizes: lowering cost does not depend on them, only on the program's structure
TINY = dict(width=16, platform="cpu", num_envs=4, unroll_length=3, batch_size=4, updates_per_iter=1,
            iters_per_epoch=1, replay_capacity=8, prefill_steps=2, num_eval_envs=2)


def _lower_epoch_for_cuda(depth: int, dtype: str, remat: bool) -> tuple[jax.export.Exported, float]:
    cfg = configure("pointmaze_u", depth=depth, dtype=dtype, remat=remat, **TINY)
    crl = CRL(cfg, make(cfg.env), None)
    shape = jax.eval_shape(crl.init, jax.random.PRNGKey(0))
    t0 = time.perf_counter()
    exp = jax.export.export(jax.jit(crl.epoch, donate_argnums=0), platforms=("cuda",))(shape)
    return exp, time.perf_counter() - t0


@pytest.fixture(scope="module")
def lowered():
    # the GPU runs' settings at each depth (benchmarks/gpu_suite.py): float32 at 4, bf16 + remat at 1000
    return {4: _lower_epoch_for_cuda(4, "float32", False),
            1000: _lower_epoch_for_cuda(1000, "bfloat16", True)}


@pytest.mark.parametrize("depth", [4, 1000])
def test_epoch_lowers_for_cuda(lowered, depth):
    exp, seconds = lowered[depth]
    assert exp.platforms == ("cuda",)
    text = exp.mlir_module()
    assert "stablehlo.while" in text  # the epoch's scans survived as loops
    assert seconds < 60, f"depth {depth}: lowering took {seconds:.1f} s"


def test_depth_1000_program_is_as_small_as_depth_4(lowered):
    small, deep = (len(lowered[d][0].mlir_module()) for d in (4, 1000))
    # nn.scan over the blocks: 250 blocks must not mean 250 copies of a block in the program
    assert deep < 1.5 * small, (small, deep)


def test_cpu_only_compiler_options_stay_off_the_gpu(monkeypatch):
    """env.jit_options turns XLA's CPU fusion emitters off for mjx envs on CPU only: an
    `xla_cpu_*` option must never reach a GPU compile."""
    env = make("reacher:backend=mjx")
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    assert any(k.startswith("xla_cpu") for k in env.jit_options)
    for backend in ("gpu", "cuda"):
        monkeypatch.setattr(jax, "default_backend", lambda b=backend: b)
        assert not any(k.startswith("xla_cpu") for k in env.jit_options), backend
