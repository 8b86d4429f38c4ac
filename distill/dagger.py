"""Distillation of a deep teacher into shallow students, top to bottom in one file.

    data    iteration 0: the teacher acts; iteration i: each env step the teacher acts with
            probability beta_i = beta0 * beta_decay**i, else the student (DAgger). The teacher
            labels every visited state (its tanh-Gaussian and its embeddings), and the labelled
            states are appended to one device-resident dataset. mode="offline" keeps beta = 1.
    losses  action: MSE(tanh(mu_s), tanh(mu_t))  | pre-tanh MSE(mu_s, mu_t) | KL(teacher||student)
            embed:  MSE(phi_s(s, a), phi_t(s, a)) + MSE(psi_s(g), psi_t(g))
            relational: KL(softmax(teacher logits row) || softmax(student logits row)) over the
                    batch logit matrix, so the student critic ranks goals like the teacher.
    memory  a recurrent student (GRU / LSTM) steps its carry on every collected step, whoever
            acts, zeroed at each episode's first step; each row keeps the carry it entered the
            step with. SGD then draws sequences of `bptt` consecutive steps of one env from one
            round, unrolls the student from the stored carry at the first (zeroed again where
            an episode starts inside) and backpropagates through those steps only: truncated
            BPTT over rollout chunks, batch_size / bptt sequences so a step sees batch_size
            states as an MLP's does.

Collection and SGD are jitted `lax.scan`s; the host syncs once per DAgger iteration.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from crl_distill.envs.base import GoalEnv, auto_reset
from crl_distill.envs.observed import observed
from crl_distill.envs.perturbed import perturbed, teacher_view
from crl_distill.evaluation import RecurrentPolicy, as_recurrent
from crl_distill.student.model import (
    StudentConfig,
    init_student,
    make_student,
    recurrent_policy,
    unroll,
)
from crl_distill.teacher.crl import energy_matrix
from crl_distill.teacher.networks import deterministic_policy

from .config import DistillConfig


@struct.dataclass
class Dataset:
    """Aggregated labelled states, preallocated: rows [0, size) are filled.

    obs [C, O]; action [C, A] the executed action; t_mean, t_log_std [C, A] the teacher's
    Gaussian; t_phi [C, D] = phi_t(s, action); t_psi [C, D] = psi_t(g); first [C] 1.0 at an
    episode's first step; carry [C, K] the student's carry entering the step (K = 0 for an MLP).
    Each round appends steps x num_envs rows, time-major (row t * num_envs + n).
    """

    obs: jax.Array
    action: jax.Array
    t_mean: jax.Array
    t_log_std: jax.Array
    t_phi: jax.Array
    t_psi: jax.Array
    first: jax.Array
    carry: jax.Array
    size: jax.Array

    @classmethod
    def empty(cls, capacity: int, obs_size: int, action_size: int, repr_dim: int,
              carry_size: int = 0) -> Dataset:
        z = lambda *s: jnp.zeros((capacity, *s), jnp.float32)
        return cls(obs=z(obs_size), action=z(action_size), t_mean=z(action_size),
                   t_log_std=z(action_size), t_phi=z(repr_dim), t_psi=z(repr_dim), first=z(),
                   carry=z(carry_size), size=jnp.zeros((), jnp.int32))

    def append(self, rows: dict[str, jax.Array]) -> Dataset:
        n = rows["obs"].shape[0]
        idx = self.size + jnp.arange(n)
        upd = {k: getattr(self, k).at[idx].set(v) for k, v in rows.items()}
        return self.replace(**upd, size=self.size + n)


# ----------------------------------------------------------------------------------------------
# Losses
# ----------------------------------------------------------------------------------------------
def gaussian_kl(mu_p, log_std_p, mu_q, log_std_q) -> jax.Array:
    """KL(N_p || N_q) for diagonal Gaussians, summed over the last axis -> [...].

    tanh is invertible, so this is also the KL between the two tanh-Gaussian policies.
    """
    var_p, var_q = jnp.exp(2 * log_std_p), jnp.exp(2 * log_std_q)
    kl = log_std_q - log_std_p + (var_p + (mu_p - mu_q) ** 2) / (2 * var_q) - 0.5
    return kl.sum(-1)


def relational_kl(teacher_logits: jax.Array, student_logits: jax.Array) -> jax.Array:
    """Mean over rows of KL(softmax(teacher row) || softmax(student row)); logits [B, B]."""
    p = jax.nn.softmax(teacher_logits, axis=1)
    return jnp.mean(jnp.sum(p * (jax.nn.log_softmax(teacher_logits, 1)
                                 - jax.nn.log_softmax(student_logits, 1)), axis=1))


def action_mse(mu: jax.Array, target_mu: jax.Array) -> jax.Array:
    """Mean over rows of ||tanh(mu) - tanh(target_mu)||^2: the error of the executed actions,
    mu and target_mu [B, A] pre-tanh means (student, teacher)."""
    return jnp.mean(jnp.sum((jnp.tanh(mu) - jnp.tanh(target_mu)) ** 2, -1))


def student_outputs(params: dict, batch: dict, scfg: StudentConfig, action_size: int
                    ) -> tuple[jax.Array, jax.Array]:
    """The student's (mean, log_std) [N, A] on a batch of rows (an MLP), or on sequences
    [S, T, ...] flattened to N = S * T rows (a recurrent student, from each sequence's stored
    carry)."""
    policy = make_student(scfg, action_size).policy
    if not scfg.recurrent:
        return policy.apply(params["policy"], batch["obs"])
    mean, log_std = unroll(policy, params["policy"], batch["obs"], batch["first"] > 0,
                           batch["carry"][:, 0])
    return mean.reshape(-1, action_size), log_std.reshape(-1, action_size)


def distill_loss(params: dict, batch: dict, scfg: StudentConfig, dcfg: DistillConfig,
                 env: GoalEnv, energy: str) -> tuple[jax.Array, dict]:
    """Weighted sum of the action, embedding and relational losses; each one is logged.
    `batch`: rows [N, ...], or for a recurrent student sequences [S, T, ...]."""
    m = make_student(scfg, env.action_size)
    mu, log_std = student_outputs(params, batch, scfg, env.action_size)
    if scfg.recurrent:
        batch = jax.tree_util.tree_map(lambda x: x.reshape(-1, *x.shape[2:]), batch)
    if dcfg.action_loss == "mse":
        l_action = action_mse(mu, batch["t_mean"])
    elif dcfg.action_loss == "pre_tanh_mse":
        l_action = jnp.mean(jnp.sum((mu - batch["t_mean"]) ** 2, -1))
    else:
        l_action = jnp.mean(gaussian_kl(batch["t_mean"], batch["t_log_std"], mu, log_std))
    loss = dcfg.w_action * l_action
    metrics = {"loss/action": l_action}
    if scfg.encoders:
        state = batch["obs"][:, : env.state_size]
        goal = batch["obs"][:, env.state_size:]
        phi = m.phi.apply(params["phi"], jnp.concatenate([state, batch["action"]], -1))
        psi = m.psi.apply(params["psi"], goal)
        l_embed = jnp.mean(jnp.sum((phi - batch["t_phi"]) ** 2, -1)) + jnp.mean(
            jnp.sum((psi - batch["t_psi"]) ** 2, -1))
        l_rel = relational_kl(energy_matrix(batch["t_phi"], batch["t_psi"], energy),
                              energy_matrix(phi, psi, energy))
        loss = loss + dcfg.w_embed * l_embed + dcfg.w_relational * l_rel
        metrics.update({"loss/embed": l_embed, "loss/relational": l_rel})
    metrics["loss/total"] = loss
    return loss, metrics


# ----------------------------------------------------------------------------------------------
# The distiller: collection with a beta-mixed policy, teacher labelling, SGD
# ----------------------------------------------------------------------------------------------
@struct.dataclass
class DistillState:
    params: dict
    opt_state: Any
    dataset: Dataset
    env_state: Any
    #: the student's carry per env [num_envs, carry_size] (a recurrent student)
    carry: jax.Array
    key: jax.Array
    iteration: jax.Array


class Distiller:
    """Pure functions for one (teacher, student) pair; jit `init`, `collect` and `train`."""

    def __init__(self, teacher: Any, scfg: StudentConfig, dcfg: DistillConfig):
        self.teacher, self.scfg, self.dcfg = teacher, scfg, dcfg
        self.env: GoalEnv = teacher.env
        #: the env as the student sees it (its observation spec, on a robot perturbed as
        #: `dcfg.perturb` says); the teacher labels from the full, clean observation underneath
        self.senv: GoalEnv = perturbed(observed(teacher.env, scfg.obs_spec), dcfg.perturbation)
        self.modules = make_student(scfg, self.env.action_size)
        #: consecutive steps per training sequence (a recurrent student), within one round
        self.bptt = min(dcfg.bptt, dcfg.steps_per_iter)
        self.optimizer = optax.adam(dcfg.learning_rate)
        self.energy = teacher.config.energy

    def init(self, key: jax.Array) -> DistillState:
        env, d = self.senv, self.dcfg
        k_p, k_env, key = jax.random.split(key, 3)
        params = init_student(self.scfg, k_p, env.observation_size, env.state_size,
                              env.goal_size, env.action_size)
        return DistillState(
            params=params, opt_state=self.optimizer.init(params),
            dataset=Dataset.empty(d.iterations * d.states_per_iter, env.observation_size,
                                  env.action_size, self.teacher.config.repr_dim,
                                  self.scfg.carry_size),
            env_state=jax.vmap(env.reset)(jax.random.split(k_env, d.num_envs)),
            carry=jnp.zeros((d.num_envs, self.scfg.carry_size), jnp.float32), key=key,
            iteration=jnp.zeros((), jnp.int32))

    def teacher_action(self, teacher_params: dict, obs: jax.Array) -> jax.Array:
        """The action the teacher stands for, acting as `dcfg.acting` says (`teacher.acting`):
        the parameters are an argument, so jitted callers do not bake them in as constants."""
        return self.teacher.crl.acting_policy(teacher_params, self.dcfg.acting)(obs)

    def label(self, teacher_params: dict, obs: jax.Array, action: jax.Array,
              student_obs: jax.Array | None = None, teacher_action: jax.Array | None = None
              ) -> dict:
        """Teacher labels for teacher observations obs [B, O] and executed actions [B, A];
        the row keeps `student_obs` (default: obs), the input the student learns from.
        `teacher_action`, when the caller has it, is `self.teacher_action(..., obs)`."""
        crl, env = self.teacher.crl, self.env
        mean, log_std = crl.actor.apply(teacher_params["actor"], obs)
        if self.dcfg.acting.uses_critic:
            # The losses compare tanh(student mean) with tanh(t_mean): store the chosen action's
            # pre-image (kept inside (-1, 1) so that atanh stays finite).
            best = (self.teacher_action(teacher_params, obs) if teacher_action is None
                    else teacher_action)
            mean = jnp.arctanh(jnp.clip(best, -1 + 1e-6, 1 - 1e-6))
        phi, psi = crl.embed(teacher_params["critic"], obs[:, : env.state_size], action,
                             obs[:, env.state_size:])
        return {"obs": obs if student_obs is None else student_obs, "action": action,
                "t_mean": mean, "t_log_std": log_std, "t_phi": phi, "t_psi": psi}

    def student_policy(self, student_params: dict) -> RecurrentPolicy:
        """The student's deterministic policy as a `RecurrentPolicy` (an MLP's carry is empty)."""
        if self.scfg.recurrent:
            return recurrent_policy(self.modules.policy, student_params["policy"])
        return as_recurrent(deterministic_policy(self.modules.policy, student_params["policy"]))

    def rollout(self, teacher_params: dict, student_params: dict, env_state: Any, key: jax.Array,
                beta: jax.Array, steps: int, carry: jax.Array | None = None):
        """`steps` steps of every env with the beta mixture, the student's carry (default:
        zeros) stepping through them; returns the env state, labels [steps*N, ...]
        (time-major), the fraction of steps the teacher acted and the final carry."""
        env, n = self.senv, env_state.obs.shape[0]
        student = self.student_policy(student_params)
        carry = student.initial(n) if carry is None else carry

        def body(sc, k):
            s, c = sc
            k_mix, k_reset = jax.random.split(k)
            full = teacher_view(env, s)
            t_action = self.teacher_action(teacher_params, full)
            first = (s.steps == 0).astype(jnp.float32)
            c = jnp.where(first[:, None] > 0, 0.0, c)  # the reset rule: zero at a first step
            c_next, s_action = student.step(c, s.obs)
            use_teacher = jax.random.bernoulli(k_mix, beta, (n,))
            action = jnp.where(use_teacher[:, None], t_action, s_action)
            rows = {**self.label(teacher_params, full, action, s.obs, t_action),
                    "first": first, "carry": c}
            s = jax.vmap(env.step)(s, action)
            s = jax.vmap(auto_reset, in_axes=(None, 0, 0))(env, s, jax.random.split(k_reset, n))
            return (s, c_next), (rows, use_teacher.mean())

        (env_state, carry), (rows, frac) = jax.lax.scan(body, (env_state, carry),
                                                        jax.random.split(key, steps))
        # explicit sizes: an MLP's carry rows are empty, which -1 cannot infer
        rows = jax.tree_util.tree_map(lambda x: x.reshape(steps * n, *x.shape[2:]), rows)
        return env_state, rows, frac.mean(), carry

    def collect(self, teacher_params: dict, st: DistillState, beta: jax.Array):
        """One DAgger round of data: append `states_per_iter` labelled states."""
        key, k = jax.random.split(st.key)
        env_state, rows, frac, carry = self.rollout(teacher_params, st.params, st.env_state, k,
                                                    beta, self.dcfg.steps_per_iter, st.carry)
        return st.replace(dataset=st.dataset.append(rows), env_state=env_state, carry=carry,
                          key=key), frac

    def sample_rows(self, ds: Dataset, key: jax.Array) -> jax.Array:
        """Dataset row indices of one SGD batch: [batch_size] uniform rows (an MLP), or
        [batch_size // bptt, bptt] runs of consecutive steps of one env in one round."""
        d = self.dcfg
        if not self.scfg.recurrent:
            return jax.random.randint(key, (d.batch_size,), 0, jnp.maximum(ds.size, 1))
        n_seq, t = max(1, d.batch_size // self.bptt), self.bptt
        k_round, k_env, k_start = jax.random.split(key, 3)
        rounds = jnp.maximum(ds.size // d.states_per_iter, 1)
        r = jax.random.randint(k_round, (n_seq, 1), 0, rounds)
        env = jax.random.randint(k_env, (n_seq, 1), 0, d.num_envs)
        t0 = jax.random.randint(k_start, (n_seq, 1), 0, d.steps_per_iter - t + 1)
        return r * d.states_per_iter + (t0 + jnp.arange(t)) * d.num_envs + env

    def train(self, st: DistillState) -> tuple[DistillState, dict]:
        """`sgd_steps_per_iter` Adam steps on batches drawn uniformly from the dataset."""
        d, ds = self.dcfg, st.dataset

        def step(carry, k):
            params, opt_state = carry
            idx = self.sample_rows(ds, k)
            batch = {f.name: getattr(ds, f.name)[idx] for f in dataclasses.fields(ds)
                     if f.name != "size"}
            (_, m), grad = jax.value_and_grad(distill_loss, has_aux=True)(
                params, batch, self.scfg, d, self.senv, self.energy)
            upd, opt_state = self.optimizer.update(grad, opt_state, params)
            return (optax.apply_updates(params, upd), opt_state), m

        key, k = jax.random.split(st.key)
        (params, opt_state), metrics = jax.lax.scan(
            step, (st.params, st.opt_state), jax.random.split(k, d.sgd_steps_per_iter))
        first_last = {f"{name}_first": v[0] for name, v in metrics.items()}
        metrics = {**{n: v[-1] for n, v in metrics.items()}, **first_last}
        return st.replace(params=params, opt_state=opt_state, key=key,
                          iteration=st.iteration + 1), metrics
