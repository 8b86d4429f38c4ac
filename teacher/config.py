"""The teacher's settings: `NetConfig` (one residual MLP) and `TeacherConfig` (a whole run),
with the machine presets. Light on purpose (no JAX): the CLI reads the defaults at import time.

TeacherConfig's defaults are the paper's (the GPU preset); `CPU_PRESET` lists what a CPU run
changes. Each default and each field's help is written once, here (`crl_distill.settings`);
`crl-distill teacher` builds its options from these fields.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from crl_distill.errors import CrlDistillError, require_choice
from crl_distill.perturb import parse_perturbation
from crl_distill.settings import help_of, setting

LAYERS_PER_BLOCK = 4
ACTIVATION_NAMES = ("relu", "swish")


@dataclass(frozen=True)
class NetConfig:
    """Architecture of one residual MLP (each field's help: the `setting` below)."""

    depth: int = setting(4, f"Dense layers in residual blocks, a multiple of {LAYERS_PER_BLOCK} "
                            "(0 = input and output layers only).")
    width: int = setting(256, "Hidden width.")
    layer_norm: bool = setting(True, "LayerNorm after every hidden Dense (paper ablation: off).",
                               flag="--layer-norm/--no-layer-norm")
    residual: bool = setting(True, f"Skip connection around every block of {LAYERS_PER_BLOCK} "
                                   "(paper ablation: off).", flag="--residual/--no-residual")
    activation: str = setting("swish", "swish (paper) | relu (ablation).")
    dtype: str = setting("float32", "Compute in bfloat16, not float32 (GPU speed and memory); "
                                    "parameters always stay float32.", flag="--bf16",
                         switch="bfloat16")
    remat: bool = setting(False, "Rematerialise each block in the backward pass (less memory, "
                                 "~1/3 more compute).", flag="--remat")
    layers_per_block: int = setting(
        LAYERS_PER_BLOCK, "Dense layers between skips (the paper's 4).",
        no_cli="other values exist only to load JaxGCRL networks with another skip frequency "
               "(`crl-distill import --skip-connections`)")

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


# Why some fields have no `crl-distill teacher` option (Python: configure(field=...)).
_NETS = "set for both networks by the NetConfig options (--depth, --width, ...) and --actor-depth"
_PAPER_ONLY = "the paper's value, not an ablation this project runs from the command line"
_PRESET_ONLY = "the machine preset sizes it with num_envs and the run's length"


# ----------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TeacherConfig:
    """Every setting of a teacher run; saved as config.json and checked on resume.

    Each field's help is its `setting`; `crl-distill teacher` builds its options from them.
    """

    env: str = setting("pointmaze_u", "Environment name (see `crl-distill envs`).")
    actor: NetConfig = setting(help="The actor's network.", factory=NetConfig, no_cli=_NETS)
    critic: NetConfig = setting(help="The network of each critic encoder (phi and psi).",
                                factory=NetConfig, no_cli=_NETS)
    repr_dim: int = setting(64, "Size of the phi and psi embeddings the energy compares.",
                            no_cli=_PAPER_ONLY)
    energy: str = setting("l2", "Critic energy: l2 | dot | cosine.")
    contrastive_loss: str = setting("forward", "InfoNCE direction: forward | backward | symmetric.")
    logsumexp_penalty: float = setting(0.1, "Weight of mean(logsumexp^2).")
    discount: float = setting(0.99, "Discount of the geometric future offset at which hindsight "
                                    "goals are sampled.", no_cli=_PAPER_ONLY)
    target_entropy_scale: float = setting(0.5, "Target entropy, in units of -action size.",
                                          no_cli=_PAPER_ONLY)
    learning_rate: float = setting(3e-4, "Adam learning rate of actor and critic.", flag="--lr")
    # alpha starts at 1 and Adam moves log(alpha) by about this much per SGD step, so the policy
    # stays near-random for ~log(1/alpha_needed) / alpha_learning_rate SGD steps; the paper's
    # code has it as a setting of its own.
    alpha_learning_rate: float = setting(3e-4, "Adam learning rate of log(alpha), the entropy "
                                               "weight.", flag="--alpha-lr")
    num_envs: int = setting(512, "Parallel envs.")
    unroll_length: int = setting(62, "Env steps per env per iteration.")
    batch_size: int = setting(256, "SGD batch (transitions).")
    updates_per_iter: int = setting(800, "SGD steps per iteration.")
    iters_per_epoch: int = setting(32, "Iterations per epoch.")
    epochs: int = setting(50, "Epochs (eval + checkpoint after each).")
    replay_capacity: int = setting(10_000, "Replay buffer length, env steps per env.",
                                   no_cli=_PRESET_ONLY)
    prefill_steps: int = setting(1_000, "Random-action env steps per env before training.",
                                 no_cli=_PRESET_ONLY)
    num_eval_envs: int = setting(256, "Evaluation episodes per epoch.")
    act_samples: int = setting(1, "Collect data acting with the critic: the best of K actor "
                                  "samples (1 = the plain stochastic actor, the paper's).")
    seed: int = setting(0, "Random seed of the run (networks, envs, sampling).")
    perturb: str = setting("", "Train under a robot's model error and action latency and noise "
                               "(domain randomization; a preset or fields, as `crl-distill eval "
                               "--perturb`, model error on backend=mjx). The teacher still sees "
                               "the true state: sensor noise and observation latency are for "
                               "students.")
    # At the paper's sizes the buffer is ~0.8 GB (ant) to ~5 GB (humanoid):
    # benchmarks/checkpoint_size.py. Parameters and optimiser states are saved every epoch; a
    # resume without a stored buffer refills it by random prefill (README, "Checkpoints and resume").
    replay_checkpoint_every: int = setting(
        1, "Save the replay buffer with every Nth epoch's checkpoint and the last (`touch "
           "RUN/save-replay` asks for the next); 0 = only when asked.")

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
        parse_perturbation(self.perturb)  # a bad spec: one line, here
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
#: what a CPU run changes beyond CPU_PRESET for one env, by the env's name before its options
#: ("reacher" covers reacher:backend=mjx). The robots' episodes are 1,000 steps, so the
#: preset's 10-iteration epochs would spend as long evaluating 128 episodes as training;
#: longer epochs and 64 episodes keep evaluation near a quarter of an epoch. The reacher's 35
#: epochs are ~30 min on 2 cores; its alpha learning rate is the paper's 3e-4: on 3 seeds side
#: by side (MJX) CPU_PRESET's 3e-3 leads for the first ~0.5 M env steps, then plateaus at
#: ~260 time at goal while 3e-4 passes it from ~0.8 M on. The ant's settings are those of its
#: robot runs (docs/results.md, "Per-env CPU presets").
ENV_CPU_PRESETS: dict[str, dict[str, Any]] = {
    "reacher": dict(iters_per_epoch=20, num_eval_envs=64, epochs=35, alpha_learning_rate=3e-4),
    "ant": dict(iters_per_epoch=40, updates_per_iter=80, num_eval_envs=64),
}
#: beyond the paper's settings, on GPU: its buffer is most of a checkpoint's bytes
GPU_PRESET: dict[str, Any] = dict(replay_checkpoint_every=10)


def env_base(env: str) -> str:
    """The env's name without its options: "reacher" for "reacher:backend=mjx"."""
    return env.split(":", 1)[0]


def preset(platform: str, env: str | None = None) -> dict[str, Any]:
    """The preset settings for "cpu" or "gpu", as TeacherConfig field overrides: on CPU,
    CPU_PRESET and `env`'s entry in ENV_CPU_PRESETS; on GPU the paper's (TeacherConfig's
    defaults) for every field a CPU preset sets, plus GPU_PRESET."""
    if platform == "cpu":
        return {**CPU_PRESET, **ENV_CPU_PRESETS.get(env_base(env or PAPER.env), {})}
    fields = set(CPU_PRESET).union(*ENV_CPU_PRESETS.values())
    return {**{name: getattr(PAPER, name) for name in sorted(fields)}, **GPU_PRESET}


def preset_help(name: str) -> str:
    """'[CPU 10 (reacher 20, ant 40), GPU 32]' for a field the presets decide."""
    per_env = ", ".join(f"{env} {p[name]:g}" for env, p in ENV_CPU_PRESETS.items() if name in p)
    return (f"[CPU {CPU_PRESET.get(name, getattr(PAPER, name)):g}{f' ({per_env})' if per_env else ''}, "
            f"GPU {preset('gpu')[name]:g}]")


#: the fields whose default the machine preset decides (the CLI leaves them unset: None)
PRESET_FIELDS: frozenset[str] = frozenset(preset("gpu"))


def field_help(name: str) -> str:
    """The one description of TeacherConfig or NetConfig field `name` (the names are disjoint),
    with both presets' values when the preset decides its default: 'Parallel envs [CPU 64,
    GPU 512].'"""
    cls = NetConfig if name in {f.name for f in dataclasses.fields(NetConfig)} else TeacherConfig
    text = help_of(cls, name)
    if name in PRESET_FIELDS:
        text = f"{text.removesuffix('.')} {preset_help(name)}."
    return text
