"""Goal-conditioned contrastive RL (CRL), top to bottom in one file.

    critic   phi(s, a) -> R^64, psi(g) -> R^64, energy f = -||phi - psi||   (or dot, cosine)
    critic   loss: InfoNCE over the batch (positives on the diagonal) + 0.1 * mean(lse(row)^2)
    actor    tanh-Gaussian pi(a | s, g), maximises f(phi(s, pi(s, g)), psi(g)) - alpha * log pi
    alpha    SAC entropy tuning toward -0.5 * |A|
    goals    hindsight: a future state of the same trajectory, offset ~ truncated Geometric(1-gamma)

No reward is used anywhere. One training *iteration* collects `unroll_length` steps in each of
`num_envs` envs, writes them into a device-resident trajectory buffer, then runs
`updates_per_iter` SGD steps on hindsight batches. One *epoch* is `iters_per_epoch` iterations
inside a single jitted `lax.scan`, so the host syncs once per epoch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from crl_distill.envs.base import EnvState, GoalEnv, auto_reset
from crl_distill.evaluation import BatchPolicy, rollout_jax
from crl_distill.teacher.acting import ACTOR, Acting
from crl_distill.teacher.config import NetConfig, TeacherConfig
from crl_distill.teacher.networks import ResidualMLP, squash_log_std, traceable_apply

#: obs [B, O] -> (mean [B, A], log_std [B, A]) and the critic's two encoders, each a function of
#: its input alone (the parameters closed over): how `acting_policy` sees a teacher's networks
ActorFn = Callable[[jax.Array], tuple[jax.Array, jax.Array]]
EncoderFn = Callable[[jax.Array], jax.Array]


# ----------------------------------------------------------------------------------------------
# Networks and the policy
# ----------------------------------------------------------------------------------------------
class Actor(nn.Module):
    """(s, g) -> (mean [.., A], log_std [.., A]); log_std squashed by tanh into [-5, 2]."""

    cfg: NetConfig
    action_size: int

    @nn.compact
    def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        return actor_head(ResidualMLP(self.cfg, 2 * self.action_size, name="net")(obs))


def actor_head(out: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The actor trunk's output [.., 2A] -> (mean [.., A], log_std [.., A])."""
    mean, raw = jnp.split(out, 2, axis=-1)
    return mean, squash_log_std(raw)


def make_networks(cfg: TeacherConfig, env: GoalEnv) -> tuple[Actor, ResidualMLP, ResidualMLP]:
    """Actor on concat(s, g); phi on concat(s, a); psi on g."""
    return (
        Actor(cfg.actor, env.action_size),
        ResidualMLP(cfg.critic, cfg.repr_dim),
        ResidualMLP(cfg.critic, cfg.repr_dim),
    )


def selection_noise(seed: int, k: int, action_size: int) -> jax.Array:
    """A fixed [K, A] set of standard-normal noise rows for acting with the critic; row 0 is
    zero, so the deterministic action is always among the candidates (K = 1: the actor)."""
    noise = jax.random.normal(jax.random.PRNGKey(seed), (k, action_size))
    return noise.at[0].set(0.0)


def best_candidate(mean: jax.Array, log_std: jax.Array, state: jax.Array, goal: jax.Array,
                   noise: jax.Array, phi: Callable, psi: Callable, energy: str) -> jax.Array:
    """The critic's choice among tanh(mean + std * noise_k): mean, log_std [B, A], state [B, S],
    goal [B, G], noise [K, A] (or [B, K, A]); phi maps [B, K, S + A] -> [B, K, D], psi
    [B, G] -> [B, D]. Returns each row's highest-scoring candidate [B, A]. One definition for
    the JAX teacher and its traced export, which pass their own network functions."""
    cand = jnp.tanh(mean[:, None, :] + jnp.exp(log_std)[:, None, :] * noise)  # [B, K, A]
    return critic_choice(cand, state, goal, phi, psi, energy)


def critic_choice(cand: jax.Array, state: jax.Array, goal: jax.Array, phi: Callable,
                  psi: Callable, energy: str) -> jax.Array:
    """Each row's candidate action the critic scores highest: cand [B, K, A], state [B, S],
    goal [B, G] -> [B, A] (phi, psi and energy as in `best_candidate`)."""
    b, k, _ = cand.shape
    sa = jnp.concatenate([jnp.broadcast_to(state[:, None, :], (b, k, state.shape[-1])), cand], -1)
    score = energy_pairs(phi(sa), psi(goal)[:, None, :], energy)  # [B, K]
    return jnp.take_along_axis(cand, jnp.argmax(score, 1)[:, None, None], 1)[:, 0]


def acting_policy(acting: Acting, actor: ActorFn, phi: EncoderFn | None, psi: EncoderFn | None,
                  state_size: int, action_size: int, energy: str) -> BatchPolicy:
    """The teacher as it acts (`teacher.acting`), obs [B, S + G] -> action [B, A]: tanh(mean),
    or the critic's choice among `acting.samples` fixed candidates. The one definition behind
    evaluation, labelling, export and the pipeline's comparison; the caller passes its own
    network functions (flax modules for JAX, the unrolled forward for ONNX tracing)."""
    if not acting.uses_critic:
        return lambda obs: jnp.tanh(actor(obs)[0])
    if phi is None or psi is None:
        raise ValueError("acting with the critic needs phi and psi")
    noise = selection_noise(acting.noise_seed, acting.samples, action_size)

    def policy(obs: jax.Array) -> jax.Array:
        mean, log_std = actor(obs)
        return best_candidate(mean, log_std, obs[:, :state_size], obs[:, state_size:], noise, phi,
                              psi, energy)

    return policy


def sample_action(key: jax.Array, mean: jax.Array, log_std: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Reparameterised tanh-Gaussian sample [B, A] and its log-probability [B]."""
    u = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)
    gauss = -0.5 * (((u - mean) / jnp.exp(log_std)) ** 2 + 2 * log_std + jnp.log(2 * jnp.pi))
    # log(1 - tanh(u)^2), written so it stays finite for large |u|.
    log_det = 2.0 * (jnp.log(2.0) - u - jax.nn.softplus(-2.0 * u))
    return jnp.tanh(u), (gauss - log_det).sum(-1)


# ----------------------------------------------------------------------------------------------
# The contrastive critic
# ----------------------------------------------------------------------------------------------
def _unit(x: jax.Array) -> jax.Array:
    return x / (jnp.linalg.norm(x, axis=-1, keepdims=True) + 1e-6)


def _l2_matrix(phi: jax.Array, psi: jax.Array) -> jax.Array:
    """-||phi_i - psi_j|| [B, B'] from one matmul: ||phi_i||^2 + ||psi_j||^2 - 2 phi_i . psi_j.

    The direct form materialises phi_i - psi_j, [B, B', D] (B = 256, D = 64: 4 M floats forward
    and again backward): ~7 ms of a CPU SGD step, against ~0.5 ms for this one (2 cores). The
    expansion rounds the squared distance to ~eps (||phi_i||^2 + ||psi_j||^2), which matters only
    for nearly coincident pairs: a squared distance below 4x that rounding is noise, so it is
    clamped there, with no gradient (unclamped, the 1 / sqrt(eps) of a ~0 distance would
    multiply the rounding noise). Such a pair reads as a distance of
    ~sqrt(4 eps (||phi_i||^2 + ||psi_j||^2)) (0.015 at norms 14) where the direct form gives ~0;
    +eps keeps value and gradient finite where phi_i == psi_j. Every entry, the diagonal too,
    comes from the one matmul: exactly tied rows (duplicate goals) stay tied, so the argmax
    accuracy breaks ties as before and a batch split over devices scores as one device does.
    """
    n_phi, n_psi = jnp.sum(phi * phi, -1)[:, None], jnp.sum(psi * psi, -1)[None, :]
    sq = n_phi + n_psi - 2.0 * (phi @ psi.T)
    noise = jax.lax.stop_gradient(4 * jnp.finfo(sq.dtype).eps * (n_phi + n_psi))
    return -jnp.sqrt(jnp.maximum(sq, noise) + 1e-12)


def energy_matrix(phi: jax.Array, psi: jax.Array, kind: str) -> jax.Array:
    """phi [B, D], psi [B', D] -> logits [B, B'] with logits[i, j] = f(phi_i, psi_j)."""
    if kind == "l2":
        return _l2_matrix(phi, psi)
    if kind == "dot":
        return phi @ psi.T
    if kind == "cosine":
        # Unit vectors give logits in [-1, 1], too flat for InfoNCE; sqrt(D) restores the scale
        # of a dot product between random unit-variance embeddings.
        return (_unit(phi) @ _unit(psi).T) * jnp.sqrt(phi.shape[-1])
    raise ValueError(kind)


def energy_pairs(phi: jax.Array, psi: jax.Array, kind: str) -> jax.Array:
    """phi [..., D], psi [..., D] (broadcasting) -> [...], f(phi, psi) pairwise (e.g. the
    diagonal of `energy_matrix`)."""
    if kind == "l2":
        return -jnp.sqrt(jnp.sum((phi - psi) ** 2, -1) + 1e-12)
    if kind == "dot":
        return jnp.sum(phi * psi, -1)
    if kind == "cosine":
        return jnp.sum(_unit(phi) * _unit(psi), -1) * jnp.sqrt(phi.shape[-1])
    raise ValueError(kind)


def contrastive_loss(logits: jax.Array, kind: str, logsumexp_penalty: float) -> tuple[jax.Array, dict]:
    """InfoNCE on logits [B, B] whose diagonal holds the positive pairs.

    forward: classify the right goal for each (s, a) (softmax over a row);
    backward: classify the right (s, a) for each goal (softmax over a column);
    symmetric: their mean. The penalty keeps row log-partition functions near 0, which pins
    the otherwise free per-row offset of the logits.
    """
    diag = jnp.diagonal(logits)
    lse_row = jax.nn.logsumexp(logits, axis=1)
    lse_col = jax.nn.logsumexp(logits, axis=0)
    forward = jnp.mean(lse_row - diag)
    backward = jnp.mean(lse_col - diag)
    nce = {"forward": forward, "backward": backward, "symmetric": 0.5 * (forward + backward)}[kind]
    loss = nce + logsumexp_penalty * jnp.mean(lse_row**2)
    n = logits.shape[0]
    metrics = {
        "critic_loss": loss,
        "infonce": nce,
        "accuracy": jnp.mean(jnp.argmax(logits, axis=1) == jnp.arange(n)),
        "logits_pos": jnp.mean(diag),
        "logits_neg": (jnp.sum(logits) - jnp.sum(diag)) / (n * n - n),
    }
    return loss, metrics


# ----------------------------------------------------------------------------------------------
# Device-resident trajectory buffer and hindsight sampling
# ----------------------------------------------------------------------------------------------
@struct.dataclass
class Replay:
    """A time-major ring of `capacity` rows; row r holds every env's step at one time.

    obs [C, N, obs_dim], action [C, N, A], t [C, N] step within the episode, episode [C, N]
    per-env episode counter. `insert` is the next row to write, `size` the rows filled.
    All envs step together, so each column is one contiguous time series.
    """

    obs: jax.Array
    action: jax.Array
    t: jax.Array
    episode: jax.Array
    insert: jax.Array
    size: jax.Array

    @classmethod
    def empty(cls, capacity: int, num_envs: int, obs_size: int, action_size: int) -> Replay:
        return cls(
            obs=jnp.zeros((capacity, num_envs, obs_size), jnp.float32),
            action=jnp.zeros((capacity, num_envs, action_size), jnp.float32),
            t=jnp.zeros((capacity, num_envs), jnp.int32),
            episode=jnp.zeros((capacity, num_envs), jnp.int32),
            insert=jnp.zeros((), jnp.int32),
            size=jnp.zeros((), jnp.int32),
        )

    @property
    def capacity(self) -> int:
        return self.obs.shape[0]


@struct.dataclass
class Transition:
    """A collected step, time-major: [T, N, ...]."""

    obs: jax.Array
    action: jax.Array
    t: jax.Array
    episode: jax.Array


def replay_insert(replay: Replay, tr: Transition) -> Replay:
    """Write T new rows at the ring's head, overwriting the oldest rows when full."""
    n_rows = tr.obs.shape[0]
    rows = (replay.insert + jnp.arange(n_rows)) % replay.capacity
    return replay.replace(
        obs=replay.obs.at[rows].set(tr.obs),
        action=replay.action.at[rows].set(tr.action),
        t=replay.t.at[rows].set(tr.t),
        episode=replay.episode.at[rows].set(tr.episode),
        insert=(replay.insert + n_rows) % replay.capacity,
        size=jnp.minimum(replay.size + n_rows, replay.capacity),
    )


def truncated_geometric(key: jax.Array, gamma: float, max_offset: jax.Array) -> jax.Array:
    """Offsets k in {1..max_offset} with P(k) proportional to gamma^(k-1); max_offset >= 1.

    Exact inverse-CDF sampling: no mass piles up at the truncation point.
    """
    u = jax.random.uniform(key, max_offset.shape)
    top = 1.0 - gamma ** max_offset.astype(jnp.float32)
    k = 1 + jnp.floor(jnp.log1p(-u * top) / jnp.log(gamma)).astype(jnp.int32)
    return jnp.clip(k, 1, max_offset)


def sample_hindsight(
    key: jax.Array, replay: Replay, batch_size: int, env: GoalEnv, gamma: float
) -> dict[str, jax.Array]:
    """A batch of (s, a, g) with g the achieved goal of a future step of the same episode.

    Returns state [B, S], action [B, A], goal [B, G], plus the source and goal rows' episode ids
    and steps (`ep_i`, `ep_j`, `t_i`, `t_j`) so tests can check no sample crosses an episode.
    """
    k_env, k_row, k_off = jax.random.split(key, 3)
    cap, n_envs = replay.capacity, replay.obs.shape[1]
    n = jax.random.randint(k_env, (batch_size,), 0, n_envs)
    oldest = (replay.insert - replay.size) % cap
    # Logical row `lr` counts from the oldest row; the newest row has no future, so lr <= size - 2.
    lr = jax.random.randint(k_row, (batch_size,), 0, jnp.maximum(replay.size - 1, 1))

    def episode_at(lr):
        return replay.episode[(oldest + lr) % cap, n]

    def future_room(lr):
        """Rows after `lr` in the same episode. Episode ids never decrease down a column, so
        those rows are a prefix of the rows after `lr`: binary-search its end. Episodes that
        terminate early are shorter than `episode_length`, so `t` alone cannot tell."""
        ep = episode_at(lr)

        def halve(_, bounds):
            lo, hi = bounds  # the end lies in [lo, hi]; row lo is known to be in the episode
            mid = (lo + hi + 1) // 2
            same = episode_at(mid) == ep
            return jnp.where(same, mid, lo), jnp.where(same, hi, mid - 1)

        hi = jnp.broadcast_to(replay.size - 1, lr.shape).astype(jnp.int32)
        lo, _ = jax.lax.fori_loop(0, max(cap - 1, 1).bit_length(), halve, (lr.astype(jnp.int32), hi))
        return lo - lr

    # An episode's last step has no future in its own episode: use its neighbour instead; a
    # one-step episode has none either, and then the goal is the step's own (as the paper's
    # buffer does when no future exists).
    lr = jnp.where(future_room(lr) > 0, lr, jnp.where(lr > 0, lr - 1, lr + 1))
    room = future_room(lr)
    i = (oldest + lr) % cap
    offset = jnp.where(room > 0, truncated_geometric(k_off, gamma, jnp.maximum(room, 1)), 0)
    j = (i + offset) % cap
    s = env.state_size
    return {
        "state": replay.obs[i, n, :s],
        "action": replay.action[i, n],
        "goal": env.achieved_goal(replay.obs[j, n, :s]),
        "ep_i": replay.episode[i, n],
        "ep_j": replay.episode[j, n],
        "t_i": replay.t[i, n],
        "t_j": replay.t[j, n],
    }


# ----------------------------------------------------------------------------------------------
# Training state and the SGD step
# ----------------------------------------------------------------------------------------------
@struct.dataclass
class TrainState:
    actor: Any
    critic: Any  # {"phi": params, "psi": params}
    log_alpha: jax.Array
    actor_opt: Any
    critic_opt: Any
    alpha_opt: Any
    sgd_steps: jax.Array
    env_steps: jax.Array


@struct.dataclass
class Carry:
    """Everything one epoch reads and writes; the checkpoint is this pytree."""

    train: TrainState
    replay: Replay
    env_state: EnvState
    episode: jax.Array  # [N] episode counter per env
    key: jax.Array


class CRL:
    """The agent's pure functions, bound to one config and one environment.

    Build once, then jit `init`, `epoch` and `evaluate`; all methods are free of side effects.
    """

    def __init__(self, cfg: TeacherConfig, env: GoalEnv, mesh: Mesh | None = None):
        self.cfg, self.env, self.mesh = cfg, env, mesh
        self.actor, self.phi, self.psi = make_networks(cfg, env)
        self.optimizer = optax.adam(cfg.learning_rate)
        self.alpha_optimizer = optax.adam(cfg.alpha_learning_rate)
        self.target_entropy = -cfg.target_entropy_scale * env.action_size

    # -- parameters ---------------------------------------------------------------------------
    def init_train_state(self, key: jax.Array) -> TrainState:
        env = self.env
        k_a, k_phi, k_psi = jax.random.split(key, 3)
        actor = self.actor.init(k_a, jnp.zeros((1, env.observation_size)))
        critic = {
            "phi": self.phi.init(k_phi, jnp.zeros((1, env.state_size + env.action_size))),
            "psi": self.psi.init(k_psi, jnp.zeros((1, env.goal_size))),
        }
        log_alpha = jnp.zeros((), jnp.float32)
        return TrainState(
            actor=actor, critic=critic, log_alpha=log_alpha,
            actor_opt=self.optimizer.init(actor), critic_opt=self.optimizer.init(critic),
            alpha_opt=self.alpha_optimizer.init(log_alpha),
            sgd_steps=jnp.zeros((), jnp.int32), env_steps=jnp.zeros((), jnp.int32),
        )

    def embed(self, critic: Any, state: jax.Array, action: jax.Array, goal: jax.Array):
        """-> phi(s, a) [B, D], psi(g) [B, D]."""
        phi = self.phi.apply(critic["phi"], jnp.concatenate([state, action], -1))
        return phi, self.psi.apply(critic["psi"], goal)

    def networks(self, params: dict, traceable: bool = False
                 ) -> tuple[ActorFn, EncoderFn | None, EncoderFn | None]:
        """The actor, phi and psi as functions of their inputs, closed over `params` =
        {"actor": ..., "critic": {"phi": ..., "psi": ...}} (the critic may be absent).

        `traceable=True`: the same functions over `apply_unrolled`, which traces with a
        symbolic batch for ONNX (flax's nn.scan does not); the default compiles in constant
        time at any depth."""
        critic = params.get("critic")
        if traceable:
            # The actor's trunk is its submodule "net" (Actor above).
            net = traceable_apply(self.cfg.actor, {"params": params["actor"]["params"]["net"]})
            encoders = (None, None) if critic is None else (
                traceable_apply(self.cfg.critic, critic["phi"]),
                traceable_apply(self.cfg.critic, critic["psi"]))
            return (lambda obs: actor_head(net(obs))), *encoders
        return (lambda obs: self.actor.apply(params["actor"], obs),
                None if critic is None else lambda sa: self.phi.apply(critic["phi"], sa),
                None if critic is None else lambda g: self.psi.apply(critic["psi"], g))

    def acting_policy(self, params: dict, acting: Acting = ACTOR, traceable: bool = False
                      ) -> BatchPolicy:
        """The teacher as it acts (`acting_policy` over `networks(params, traceable)`):
        obs [B, O] -> action [B, A]."""
        return acting_policy(acting, *self.networks(params, traceable), self.env.state_size,
                             self.env.action_size, self.cfg.energy)

    # -- losses -------------------------------------------------------------------------------
    def critic_loss(self, critic: Any, batch: dict) -> tuple[jax.Array, dict]:
        phi, psi = self.embed(critic, batch["state"], batch["action"], batch["goal"])
        logits = energy_matrix(phi, psi, self.cfg.energy)
        return contrastive_loss(logits, self.cfg.contrastive_loss, self.cfg.logsumexp_penalty)

    def actor_loss(self, actor: Any, critic: Any, log_alpha: jax.Array, batch: dict, key: jax.Array):
        obs = jnp.concatenate([batch["state"], batch["goal"]], -1)
        mean, log_std = self.actor.apply(actor, obs)
        action, log_prob = sample_action(key, mean, log_std)
        phi, psi = self.embed(critic, batch["state"], action, batch["goal"])
        q = energy_pairs(phi, psi, self.cfg.energy)
        alpha = jnp.exp(log_alpha)
        loss = jnp.mean(jax.lax.stop_gradient(alpha) * log_prob - q)
        return loss, {"actor_loss": loss, "entropy": -jnp.mean(log_prob), "q": jnp.mean(q)}

    def alpha_loss(self, log_alpha: jax.Array, entropy: jax.Array) -> jax.Array:
        # SAC: alpha grows when the policy's entropy falls below the target, shrinks above it.
        return log_alpha * jax.lax.stop_gradient(entropy - self.target_entropy)

    def sgd_step(self, ts: TrainState, batch: dict, key: jax.Array) -> tuple[TrainState, dict]:
        """Critic step, then actor and alpha steps against the updated critic."""
        (_, c_m), c_grad = jax.value_and_grad(self.critic_loss, has_aux=True)(ts.critic, batch)
        c_upd, critic_opt = self.optimizer.update(c_grad, ts.critic_opt, ts.critic)
        critic = optax.apply_updates(ts.critic, c_upd)

        (_, a_m), a_grad = jax.value_and_grad(self.actor_loss, has_aux=True)(
            ts.actor, critic, ts.log_alpha, batch, key)
        a_upd, actor_opt = self.optimizer.update(a_grad, ts.actor_opt, ts.actor)
        actor = optax.apply_updates(ts.actor, a_upd)

        al_grad = jax.grad(self.alpha_loss)(ts.log_alpha, a_m["entropy"])
        al_upd, alpha_opt = self.alpha_optimizer.update(al_grad, ts.alpha_opt, ts.log_alpha)
        log_alpha = optax.apply_updates(ts.log_alpha, al_upd)

        ts = ts.replace(actor=actor, critic=critic, log_alpha=log_alpha, actor_opt=actor_opt,
                        critic_opt=critic_opt, alpha_opt=alpha_opt, sgd_steps=ts.sgd_steps + 1)
        return ts, {**c_m, **a_m, "alpha": jnp.exp(log_alpha)}

    # -- acting -------------------------------------------------------------------------------
    def collect(self, actor: Any, env_state: EnvState, episode: jax.Array, key: jax.Array,
                steps: int, random_actions: bool = False, critic: Any = None):
        """Step all envs `steps` times with the stochastic actor (or uniform random actions;
        with `act_samples` > 1 and a critic, the best of that many actor samples).

        Returns the new env state, episode counters and a time-major Transition [steps, N].
        """
        env, n = self.env, self.cfg.num_envs

        def body(carry, k):
            s, ep = carry
            k_act, k_reset = jax.random.split(k)
            if random_actions:
                a = jax.random.uniform(k_act, (n, env.action_size), minval=-1.0, maxval=1.0)
            elif self.cfg.act_samples > 1 and critic is not None:
                # Fresh noise every step: collection explores, evaluation's Acting does not.
                noise = jax.random.normal(k_act, (n, self.cfg.act_samples, env.action_size))
                mean, log_std = self.actor.apply(actor, s.obs)
                _, phi, psi = self.networks({"actor": actor, "critic": critic})
                a = best_candidate(mean, log_std, s.obs[:, :env.state_size],
                                   s.obs[:, env.state_size:], noise, phi, psi, self.cfg.energy)
            else:
                mean, log_std = self.actor.apply(actor, s.obs)
                a, _ = sample_action(k_act, mean, log_std)
            tr = Transition(obs=s.obs, action=a, t=s.steps, episode=ep)
            s = jax.vmap(env.step)(s, a)
            ep = ep + s.done.astype(jnp.int32)
            s = jax.vmap(auto_reset, in_axes=(None, 0, 0))(env, s, jax.random.split(k_reset, n))
            return (s, ep), tr

        (env_state, episode), tr = jax.lax.scan(body, (env_state, episode),
                                                jax.random.split(key, steps))
        return env_state, episode, tr

    # -- the jitted entry points ----------------------------------------------------------------
    def init(self, key: jax.Array) -> Carry:
        """Fresh parameters, envs, and a replay buffer prefilled with random-action data."""
        cfg, env = self.cfg, self.env
        k_train, k_env, k_fill, key = jax.random.split(key, 4)
        env_state = jax.vmap(env.reset)(jax.random.split(k_env, cfg.num_envs))
        episode = jnp.zeros((cfg.num_envs,), jnp.int32)
        replay = Replay.empty(cfg.replay_capacity, cfg.num_envs, env.observation_size,
                              env.action_size)
        ts = self.init_train_state(k_train)
        prefill = max(cfg.prefill_steps, 2)
        env_state, episode, tr = self.collect(ts.actor, env_state, episode, k_fill, prefill,
                                              random_actions=True)
        replay = replay_insert(replay, jax.tree_util.tree_map(lambda x: x[-cfg.replay_capacity:], tr))
        ts = ts.replace(env_steps=jnp.asarray(prefill * cfg.num_envs, jnp.int32))
        return Carry(train=ts, replay=replay, env_state=env_state, episode=episode, key=key)

    def iteration(self, c: Carry, _: Any = None) -> tuple[Carry, dict]:
        cfg = self.cfg
        key, k_collect, k_sgd = jax.random.split(c.key, 3)
        env_state, episode, tr = self.collect(c.train.actor, c.env_state, c.episode, k_collect,
                                              cfg.unroll_length, critic=c.train.critic)
        replay = replay_insert(c.replay, tr)

        def update(ts, k):
            k_batch, k_actor = jax.random.split(k)
            batch = sample_hindsight(k_batch, replay, cfg.batch_size, self.env, cfg.discount)
            batch = {k: v for k, v in batch.items() if k in ("state", "action", "goal")}
            batch = shard_batch(batch, self.mesh)
            return self.sgd_step(ts, batch, k_actor)

        ts, metrics = jax.lax.scan(update, c.train, jax.random.split(k_sgd, cfg.updates_per_iter))
        ts = ts.replace(env_steps=ts.env_steps + cfg.env_steps_per_iter)
        metrics = jax.tree_util.tree_map(jnp.mean, metrics)
        return Carry(train=ts, replay=replay, env_state=env_state, episode=episode, key=key), metrics

    def epoch(self, c: Carry) -> tuple[Carry, dict]:
        """`iters_per_epoch` iterations in one scan; returns per-epoch mean metrics."""
        c, metrics = jax.lax.scan(self.iteration, c, None, length=self.cfg.iters_per_epoch)
        return c, jax.tree_util.tree_map(jnp.mean, metrics)

    def evaluate(self, actor: Any, key: jax.Array) -> dict[str, jax.Array]:
        """Deterministic actor on `num_eval_envs` fresh episodes: mean eval metrics."""
        keys = jax.random.split(key, self.cfg.num_eval_envs)
        per_ep = rollout_jax(self.env, self.acting_policy({"actor": actor}), keys)
        return jax.tree_util.tree_map(jnp.mean, per_ep)


# ----------------------------------------------------------------------------------------------
# Data parallelism: envs and batches sharded over every device, parameters replicated
# ----------------------------------------------------------------------------------------------
DATA_AXIS = "data"


def make_mesh(devices: list | None = None) -> Mesh:
    return Mesh(np.asarray(devices if devices is not None else jax.devices()), (DATA_AXIS,))


def shard_batch(batch: dict, mesh: Mesh | None) -> dict:
    """Split the batch axis over the mesh's devices (no-op without a multi-device mesh)."""
    if mesh is None or mesh.size == 1:
        return batch
    return jax.tree_util.tree_map(
        lambda x: jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P(DATA_AXIS))), batch)


def carry_shardings(carry: Carry, mesh: Mesh) -> Carry:
    """Env states and episode counters split along envs, the replay along its env axis,
    parameters, optimiser state and keys replicated."""
    rep = NamedSharding(mesh, P())
    env_axis0 = NamedSharding(mesh, P(DATA_AXIS))
    env_axis1 = NamedSharding(mesh, P(None, DATA_AXIS))
    replay = carry.replay
    return Carry(
        train=jax.tree_util.tree_map(lambda _: rep, carry.train),
        replay=Replay(obs=env_axis1, action=env_axis1, t=env_axis1, episode=env_axis1,
                      insert=rep, size=rep) if replay is not None else None,
        env_state=jax.tree_util.tree_map(lambda _: env_axis0, carry.env_state),
        episode=env_axis0,
        key=rep,
    )
