"""The teacher's settings: `NetConfig` (one residual MLP) and `TeacherConfig` (a whole run),
with the machine presets. Light on purpose (no JAX): the CLI reads the defaults at import time.

TeacherConfig's defaults are the paper's (the GPU preset); `CPU_PRESET` lists what a CPU run
changes. Each default is written once, here.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from crl_distill.errors import CrlDistillError, require_choice

LAYERS_PER_BLOCK = 4
ACTIVATION_NAMES = ("relu", "swish")


@dataclass(frozen=True)
class NetConfig:
    """Architecture of one residual MLP.

    depth:      Dense layers inside residual blocks; a multiple of `layers_per_block`
                (0 = input and output only).
    width:      hidden width.
    layer_norm: LayerNorm after every hidden Dense (paper ablation: off).
    residual:   skip connection around every block of 4 (paper ablation: off).
    activation: "swish" (paper) or "relu" (ablation).
    dtype:      compute dtype, "float32" or "bfloat16"; parameters always stay float32.
    remat:      rematerialise each block in the backward pass (less memory, ~1/3 more compute).
    layers_per_block: Dense layers between skips; the paper uses 4 (other values exist only to
                load JaxGCRL networks with another skip frequency).
    """

    depth: int = 4
    width: int = 256
    layer_norm: bool = True
    residual: bool = True
    activation: str = "swish"
    dtype: str = "float32"
    remat: bool = False
    layers_per_block: int = LAYERS_PER_BLOCK

    def __post_init__(self) -> None:
        if self.layers_per_block < 1:
            raise CrlDistillError(f"layers_per_block must be >= 1, got {self.layers_per_block}")
        if self.depth < 0 or self.depth % self.layers_per_block:
            raise CrlDistillError(f"depth must be a non-negative multiple of "
                                  f"{self.layers_per_block}, got {self.depth}")
        if self.width < 1:
            raise CrlDistillError(f"width must be positive, got {self.width}")
        require_choice("activation", self.activation, ACTIVATION_NAMES)
        if self.dtype not in ("float32", "bfloat16"):
            raise CrlDistillError(f"dtype must be float32 or bfloat16, got {self.dtype!r}")


ENERGIES = ("l2", "dot", "cosine")
CONTRASTIVE_LOSSES = ("forward", "backward", "symmetric")


# ----------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TeacherConfig:
    """Every setting of a teacher run; saved as config.json and checked on resume."""

    env: str = "pointmaze_u"
    actor: NetConfig = field(default_factory=NetConfig)
    critic: NetConfig = field(default_factory=NetConfig)
    repr_dim: int = 64
    energy: str = "l2"
    contrastive_loss: str = "forward"
    logsumexp_penalty: float = 0.1
    discount: float = 0.99
    target_entropy_scale: float = 0.5
    learning_rate: float = 3e-4
    #: Adam step size of log(alpha), the entropy weight (the paper's code: a separate setting).
    #: alpha starts at 1 and Adam moves log(alpha) by about this much per SGD step, so the
    #: policy stays near-random for ~log(1/alpha_needed) / alpha_learning_rate SGD steps.
    alpha_learning_rate: float = 3e-4
    num_envs: int = 512
    unroll_length: int = 62
    batch_size: int = 256
    updates_per_iter: int = 800
    iters_per_epoch: int = 32
    epochs: int = 50
    replay_capacity: int = 10_000
    prefill_steps: int = 1_000
    num_eval_envs: int = 256
    #: data collection acts with the critic: the best of this many actor samples under f
    #: (1 = the plain stochastic actor, the paper's default)
    act_samples: int = 1
    seed: int = 0
    #: save the replay buffer (and env states) with every Nth epoch's checkpoint and the last;
    #: 0 = only when asked (touch RUN/save-replay). At the paper's sizes the buffer is ~0.8 GB
    #: (ant) to ~5 GB (humanoid): benchmarks/checkpoint_size.py.
    #: Parameters and optimiser states are saved every epoch. A resume without a stored buffer
    #: refills it by random prefill (README, "Checkpoints and resume").
    replay_checkpoint_every: int = 1

    def __post_init__(self) -> None:
        require_choice("energy", self.energy, ENERGIES)
        require_choice("contrastive loss", self.contrastive_loss, CONTRASTIVE_LOSSES)
        for name in ("num_envs", "unroll_length", "batch_size", "updates_per_iter",
                     "iters_per_epoch", "epochs", "num_eval_envs", "repr_dim", "act_samples"):
            if getattr(self, name) < 1:
                raise CrlDistillError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.replay_checkpoint_every < 0:
            raise CrlDistillError(f"replay_checkpoint_every must be >= 0, got "
                                  f"{self.replay_checkpoint_every}")
        if self.replay_capacity < 2 * self.unroll_length:
            raise CrlDistillError("replay_capacity must hold at least two unrolls per env")
        if not 0.0 < self.discount < 1.0:
            raise CrlDistillError(f"discount must be in (0, 1), got {self.discount}")
        for name in ("learning_rate", "alpha_learning_rate"):
            lr = getattr(self, name)
            if not math.isfinite(lr) or lr <= 0:
                raise CrlDistillError(f"{name.replace('_', ' ')} must be a positive number, got {lr}")

    @property
    def env_steps_per_iter(self) -> int:
        return self.num_envs * self.unroll_length

    @property
    def env_steps_per_epoch(self) -> int:
        return self.env_steps_per_iter * self.iters_per_epoch

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TeacherConfig:
        d = dict(d)
        d["actor"] = NetConfig(**d["actor"])
        d["critic"] = NetConfig(**d["critic"])
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise CrlDistillError(f"unknown teacher config keys: {sorted(unknown)}")
        return cls(**d)


#: the paper's settings
PAPER = TeacherConfig()

#: what a CPU run changes from the paper's settings (TeacherConfig's defaults). alpha's learning
#: rate: a CPU run does ~20x fewer SGD steps in its wall-clock budget, and with the paper's
#: 3e-4 the policy stays near-random for ~10k of them (reacher: entropy at its target by 0.27 M
#: env steps, against not yet after 1.3 M; docs/results.md). The replay buffer is small here, so
#: it is saved with every checkpoint (a resume stays byte-identical).
CPU_PRESET: dict[str, Any] = dict(
    num_envs=64, unroll_length=50, updates_per_iter=40, iters_per_epoch=10, epochs=15,
    replay_capacity=2_000, prefill_steps=200, num_eval_envs=128, alpha_learning_rate=3e-3,
    replay_checkpoint_every=1)
#: beyond the paper's settings, on GPU: its buffer is most of a checkpoint's bytes
GPU_PRESET: dict[str, Any] = dict(replay_checkpoint_every=10)


def preset(platform: str) -> dict[str, Any]:
    """The preset settings for "cpu" or "gpu" (the paper's, TeacherConfig's defaults, plus
    GPU_PRESET), as TeacherConfig field overrides."""
    if platform == "cpu":
        return dict(CPU_PRESET)
    return {**{name: getattr(PAPER, name) for name in CPU_PRESET}, **GPU_PRESET}


def preset_help(name: str) -> str:
    """'[CPU 64, GPU 512]' for a field the presets decide."""
    return f"[CPU {preset('cpu')[name]:g}, GPU {preset('gpu')[name]:g}]"
