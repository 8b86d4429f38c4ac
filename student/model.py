"""Shallow students: an MLP or a recurrent (GRU / LSTM) policy and, for MLPs, optionally
shallow encoders phi_s(s, a), psi_s(g).

A spec "2x256" means 2 hidden layers of width 256; "gru64" / "lstm64" one GRU / LSTM cell of
64 units followed by the output Dense. The policy head outputs a tanh-Gaussian's
(mean, log_std) like the teacher's, so action-MSE, pre-tanh MSE and KL losses all apply; the
deployed policy is tanh(mean).

A recurrent student's memory is one flat carry per batch row, [carry_size]: the GRU's h [H],
the LSTM's h then c [2H]. It is zero at an episode's first step (the reset rule every consumer
follows: evaluation, DAgger, the exported file and the C struct).
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
from crl_distill.evaluation import RecurrentPolicy
from crl_distill.obs_spec import ObsSpec
from crl_distill.teacher.networks import deterministic_policy, squash_log_std

STUDENT_FORMAT = "crl-distill-student"
_ACTS = {"relu": nn.relu, "swish": nn.swish, "tanh": nn.tanh}
#: recurrent cells by spec prefix, and how many [H] vectors each carries
CELLS = {"gru": 1, "lstm": 2}


@dataclass(frozen=True)
class StudentConfig:
    """depth x width hidden layers; `encoders` adds phi_s / psi_s of the same shape.

    cell: "" for an MLP, or "gru" / "lstm": one recurrent cell of `width` units (depth 1).
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
    cell: str = ""

    def __post_init__(self) -> None:
        if self.depth < 1 or self.width < 1:
            raise CrlDistillError(f"student depth and width must be >= 1, got {self.name}")
        require_choice("student activation", self.activation, sorted(_ACTS))
        if self.cell:
            require_choice("student cell", self.cell, tuple(CELLS))
            if self.depth != 1 or self.encoders:
                raise CrlDistillError(f"student {self.name}: a recurrent student is one cell "
                                      f"(depth 1) without encoders")
        # Validates, and normalises a list read back from JSON into a tuple.
        object.__setattr__(self, "state_indices", self.obs_spec.state_indices)

    @property
    def obs_spec(self) -> ObsSpec:
        return ObsSpec(self.state_indices, self.history)

    @property
    def name(self) -> str:
        return f"{self.cell}{self.width}" if self.cell else f"{self.depth}x{self.width}"

    @property
    def recurrent(self) -> bool:
        return bool(self.cell)

    @property
    def carry_size(self) -> int:
        """Floats of memory per batch row: 0 for an MLP, H for a GRU, 2H (h, c) for an LSTM."""
        return CELLS[self.cell] * self.width if self.cell else 0


def parse_students(spec: str, **common: Any) -> list[StudentConfig]:
    """"2x64,2x256,gru64,lstm64" -> StudentConfigs; a malformed entry is a one-line error.
    Recurrent students take no encoders (`common["encoders"]` applies to the MLPs)."""
    out = []
    for part in (p.strip() for p in spec.split(",")):
        m = re.fullmatch(r"(\d+)x(\d+)|(gru|lstm)(\d+)", part)
        size = [int(g) for g in (m.groups() if m else ()) if g and g.isdigit()]
        if not m or min(size) < 1:
            raise CrlDistillError(f"bad student spec {part!r} in {spec!r}: expected DEPTHxWIDTH "
                                  f"(e.g. 2x256) or a recurrent cell and its size (gru64, lstm64)")
        if m[3]:
            out.append(StudentConfig(depth=1, width=size[0], cell=m[3],
                                     **{**common, "encoders": False}))
        else:
            out.append(StudentConfig(depth=size[0], width=size[1], **common))
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


class RecurrentStudentPolicy(nn.Module):
    """(carry [B, carry_size], obs [B, O]) -> (carry, (mean [B, A], log_std [B, A])): one
    flax GRU / LSTM cell ("cell") of width units, then Dense(2A) ("output") on its new h."""

    cfg: StudentConfig
    action_size: int

    @nn.compact
    def __call__(self, carry: jax.Array, obs: jax.Array
                 ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        h_size = self.cfg.width
        if self.cfg.cell == "gru":
            h, _ = nn.GRUCell(h_size, name="cell")(carry, obs)
            carry = h
        else:  # flax's LSTM carry is (c, h); ours is flat (h, c), h first as in the exported file
            (c, h), _ = nn.LSTMCell(h_size, name="cell")((carry[..., h_size:], carry[..., :h_size]),
                                                         obs)
            carry = jnp.concatenate([h, c], -1)
        mean, raw = jnp.split(nn.Dense(2 * self.action_size, name="output")(h), 2, axis=-1)
        return carry, (mean, squash_log_std(raw))


def unroll(policy: RecurrentStudentPolicy, params: Any, obs: jax.Array, first: jax.Array,
           carry: jax.Array) -> tuple[jax.Array, jax.Array]:
    """A recurrent student over sequences: obs [S, T, O], first [S, T] (an episode starts at
    that step: the carry is zeroed before it), carry [S, C] before step 0 -> (mean, log_std)
    [S, T, A]. Truncated backpropagation through time runs through this scan."""

    def body(c, xs):
        o, f = xs
        c, out = policy.apply(params, jnp.where(f[:, None], 0.0, c), o)
        return c, out

    _, (mean, log_std) = jax.lax.scan(body, carry, (jnp.swapaxes(obs, 0, 1), jnp.swapaxes(first, 0, 1)))
    return jnp.swapaxes(mean, 0, 1), jnp.swapaxes(log_std, 0, 1)


@dataclass
class StudentModules:
    policy: StudentPolicy | RecurrentStudentPolicy
    phi: MLP | None
    psi: MLP | None


def make_student(cfg: StudentConfig, action_size: int) -> StudentModules:
    enc = cfg.encoders
    return StudentModules(
        policy=(RecurrentStudentPolicy if cfg.recurrent else StudentPolicy)(cfg, action_size),
        phi=MLP(cfg, cfg.repr_dim) if enc else None,
        psi=MLP(cfg, cfg.repr_dim) if enc else None,
    )


def init_student(cfg: StudentConfig, key: jax.Array, obs_size: int, state_size: int,
                 goal_size: int, action_size: int) -> dict:
    """{"policy": params, ["phi": params, "psi": params]} for inputs of the given sizes (the
    student's own: see `ObsSpec.input_size`)."""
    m = make_student(cfg, action_size)
    k1, k2, k3 = jax.random.split(key, 3)
    if cfg.recurrent:
        params = {"policy": m.policy.init(k1, jnp.zeros((1, cfg.carry_size)), jnp.zeros((1, obs_size)))}
    else:
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
    if cfg.recurrent:  # gates x (input and hidden matmuls) + the output Dense
        gates = {"gru": 3, "lstm": 4}[cfg.cell]
        h = cfg.width
        return 2 * gates * (obs_size + h) * h + 2 * h * 2 * action_size
    return mlp_flops(obs_size, cfg, 2 * action_size)


def count_params(tree: Any) -> int:
    return int(sum(x.size for x in jax.tree_util.tree_leaves(tree)))


def recurrent_policy(module: RecurrentStudentPolicy, params: Any) -> RecurrentPolicy:
    """The deterministic recurrent policy, tanh(mean), of `module` with `params`."""

    def step(carry: jax.Array, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        carry, (mean, _) = module.apply(params, carry, obs)
        return carry, jnp.tanh(mean)

    return RecurrentPolicy(step, module.cfg.carry_size)


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
        if self.config.recurrent:
            raise CrlDistillError(f"student {self.config.name} is recurrent: step it with "
                                  f"policy(), carrying its state")
        return deterministic_policy(self.modules.policy, policy_params)(obs)

    def policy(self) -> Callable[[jax.Array], jax.Array] | RecurrentPolicy:
        """The deployed policy closed over the parameters: what evaluation, export and
        latency run. An MLP: a jittable obs [B, O] -> action [B, A]; a recurrent student: a
        `RecurrentPolicy` (carry [B, carry_size], obs) -> (carry, action)."""
        p = self.params["policy"]
        if self.config.recurrent:
            return recurrent_policy(self.modules.policy, p)
        return lambda obs: self.policy_apply(p, obs)

    def encoders(self) -> tuple[Callable[[jax.Array], jax.Array], Callable[[jax.Array], jax.Array]]:
        """(phi: state_action [B, S + A] -> [B, D], psi: goal [B, G] -> [B, D]) closed over the
        parameters (students distilled with encoders)."""
        if not self.config.encoders:
            raise CrlDistillError(f"student {self.config.name} has no encoders")
        m, p = self.modules, self.params
        return (lambda sa: m.phi.apply(p["phi"], sa)), (lambda g: m.psi.apply(p["psi"], g))

    def act(self, obs: Any) -> jax.Array:
        """obs [B, O] (or [O]) -> tanh(mean); MLP students (a recurrent one: `policy()`)."""
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
