"""Shallow students: a plain MLP policy and, optionally, shallow encoders phi_s(s, a), psi_s(g).

A spec "2x256" means 2 hidden layers of width 256. The policy head outputs a tanh-Gaussian's
(mean, log_std) like the teacher's, so action-MSE, pre-tanh MSE and KL losses all apply; the
deployed policy is tanh(mean).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from crl_distill import __version__
from crl_distill.checkpoint import load_pytree, read_meta, save_pytree
from crl_distill.errors import CrlDistillError, require_choice
from crl_distill.obs_spec import ObsSpec
from crl_distill.teacher.networks import deterministic_policy, squash_log_std

STUDENT_FORMAT = "crl-distill-student"
_ACTS = {"relu": nn.relu, "swish": nn.swish, "tanh": nn.tanh}


@dataclass(frozen=True)
class StudentConfig:
    """depth x width hidden layers; `encoders` adds phi_s / psi_s of the same shape.

    state_indices, history: what the student observes (`crl_distill.obs_spec.ObsSpec`): the
    teacher's state elements it keeps (None: all) and how many past steps of them it stacks.
    """

    depth: int = 2
    width: int = 256
    layer_norm: bool = False
    activation: str = "relu"
    encoders: bool = False
    repr_dim: int = 64
    state_indices: tuple[int, ...] | None = None
    history: int = 0

    def __post_init__(self) -> None:
        if self.depth < 1 or self.width < 1:
            raise CrlDistillError(f"student depth and width must be >= 1, got {self.name}")
        require_choice("student activation", self.activation, sorted(_ACTS))
        # Validates, and normalises a list read back from JSON into a tuple.
        object.__setattr__(self, "state_indices", self.obs_spec.state_indices)

    @property
    def obs_spec(self) -> ObsSpec:
        return ObsSpec(self.state_indices, self.history)

    @property
    def name(self) -> str:
        return f"{self.depth}x{self.width}"


def parse_students(spec: str, **common: Any) -> list[StudentConfig]:
    """"2x64,2x256,4x256" -> StudentConfigs; a malformed entry is a one-line error."""
    out = []
    for part in (p.strip() for p in spec.split(",")):
        m = re.fullmatch(r"(\d+)x(\d+)", part)
        if not m or int(m[1]) < 1 or int(m[2]) < 1:
            raise CrlDistillError(
                f"bad student spec {part!r} in {spec!r}: expected DEPTHxWIDTH, e.g. 2x256")
        out.append(StudentConfig(depth=int(m[1]), width=int(m[2]), **common))
    if len({s.name for s in out}) != len(out):
        raise CrlDistillError(f"duplicate student in {spec!r}")
    return out


class MLP(nn.Module):
    """[..., in] -> [..., out]: depth x (Dense -> [LayerNorm] -> act) -> Dense."""

    cfg: StudentConfig
    out_dim: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = _ACTS[self.cfg.activation]
        for i in range(self.cfg.depth):
            x = nn.Dense(self.cfg.width, name=f"dense_{i}")(x)
            if self.cfg.layer_norm:
                x = nn.LayerNorm(name=f"norm_{i}")(x)
            x = act(x)
        return nn.Dense(self.out_dim, name="output")(x)


class StudentPolicy(nn.Module):
    """obs -> (mean [.., A], log_std [.., A]); log_std squashed into [-5, 2] as the teacher's."""

    cfg: StudentConfig
    action_size: int

    @nn.compact
    def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        mean, raw = jnp.split(MLP(self.cfg, 2 * self.action_size, name="net")(obs), 2, axis=-1)
        return mean, squash_log_std(raw)


@dataclass
class StudentModules:
    policy: StudentPolicy
    phi: MLP | None
    psi: MLP | None


def make_student(cfg: StudentConfig, action_size: int) -> StudentModules:
    enc = cfg.encoders
    return StudentModules(
        policy=StudentPolicy(cfg, action_size),
        phi=MLP(cfg, cfg.repr_dim) if enc else None,
        psi=MLP(cfg, cfg.repr_dim) if enc else None,
    )


def init_student(cfg: StudentConfig, key: jax.Array, obs_size: int, state_size: int,
                 goal_size: int, action_size: int) -> dict:
    """{"policy": params, ["phi": params, "psi": params]} for inputs of the given sizes (the
    student's own: see `ObsSpec.input_size`)."""
    m = make_student(cfg, action_size)
    k1, k2, k3 = jax.random.split(key, 3)
    params = {"policy": m.policy.init(k1, jnp.zeros((1, obs_size)))}
    if cfg.encoders:
        params["phi"] = m.phi.init(k2, jnp.zeros((1, state_size + action_size)))
        params["psi"] = m.psi.init(k3, jnp.zeros((1, goal_size)))
    return params


def mlp_flops(in_dim: int, cfg: StudentConfig, out_dim: int) -> int:
    """Multiply-adds x2 of the Dense layers (activations and norms are lower order)."""
    dims = [in_dim] + [cfg.width] * cfg.depth + [out_dim]
    return sum(2 * a * b for a, b in zip(dims[:-1], dims[1:], strict=True))


def policy_flops(cfg: StudentConfig, obs_size: int, action_size: int) -> int:
    return mlp_flops(obs_size, cfg, 2 * action_size)


def count_params(tree: Any) -> int:
    return int(sum(x.size for x in jax.tree_util.tree_leaves(tree)))


# ----------------------------------------------------------------------------------------------
# Checkpoints and loading
# ----------------------------------------------------------------------------------------------
def save_student(path: str | Path, cfg: StudentConfig, params: dict, info: dict) -> Path:
    """Write one student checkpoint; `info` holds env facts and the teacher's provenance."""
    meta = {"format": STUDENT_FORMAT, "version": 1, "student": dataclasses.asdict(cfg),
            "crl_distill": __version__, **info}
    return save_pytree(path, params, meta)


@dataclass
class Student:
    """A trained student: `act(obs)` is the deterministic policy tanh(mean)."""

    config: StudentConfig
    params: dict
    meta: dict
    source: Path

    def __post_init__(self) -> None:
        self.modules = make_student(self.config, int(self.meta["env_facts"]["action_size"]))
        self._act = jax.jit(self.policy_apply)

    def policy_apply(self, policy_params: Any, obs: jax.Array) -> jax.Array:
        return deterministic_policy(self.modules.policy, policy_params)(obs)

    def policy(self) -> Callable[[jax.Array], jax.Array]:
        """The deployed policy, a jittable obs [B, O] -> action [B, A] closed over the
        parameters: what evaluation, export and latency run."""
        p = self.params["policy"]
        return lambda obs: self.policy_apply(p, obs)

    def encoders(self) -> tuple[Callable[[jax.Array], jax.Array], Callable[[jax.Array], jax.Array]]:
        """(phi: state_action [B, S + A] -> [B, D], psi: goal [B, G] -> [B, D]) closed over the
        parameters (students distilled with encoders)."""
        if not self.config.encoders:
            raise CrlDistillError(f"student {self.config.name} has no encoders")
        m, p = self.modules, self.params
        return (lambda sa: m.phi.apply(p["phi"], sa)), (lambda g: m.psi.apply(p["psi"], g))

    def act(self, obs: Any) -> jax.Array:
        obs = jnp.asarray(obs, jnp.float32)
        single = obs.ndim == 1
        a = self._act(self.params["policy"], obs[None] if single else obs)
        return a[0] if single else a

    def embed(self, state: Any, action: Any, goal: Any) -> tuple[jax.Array, jax.Array]:
        phi, psi = self.encoders()
        return phi(jnp.concatenate([state, action], -1)), psi(goal)

    @property
    def env_name(self) -> str:
        return self.meta["env"]


def load_student(path: str | Path) -> Student:
    """Load one student checkpoint (`student-DxW.npz`) written by `save_student`."""
    path = Path(path)
    meta = read_meta(path, STUDENT_FORMAT)
    try:
        cfg = StudentConfig(**meta["student"])
        facts = meta["env_facts"]
        template = jax.eval_shape(
            lambda: init_student(cfg, jax.random.PRNGKey(0), facts["observation_size"],
                                 facts["state_size"], facts["goal_size"], facts["action_size"]))
    except (KeyError, TypeError) as e:
        raise CrlDistillError(f"{path}: corrupt student header ({e})") from None
    params, _ = load_pytree(path, template, STUDENT_FORMAT)
    return Student(config=cfg, params=jax.device_put(params), meta=meta, source=path)
